//! ferry's integration tests: one binary, a module per topic. Every test talks to real
//! CNCF distribution registries started by the harness on loopback ports.

mod auth;
mod bench;
mod bench_interrupt;
mod bench_many;
mod bench_many_wan;
mod common;
mod copy;
mod crash;
mod differential;
mod dockerhub;
mod duplicates;
mod faults;
mod harness;
mod harness_smoke;
mod hostile;
mod inuse;
mod large;
mod layout;
mod limits;
mod ocireg;
mod plans;
mod prune;
mod referrers;
mod report;
mod resume;
mod retention;
mod secrets;
mod snapshots;
mod structure;
mod tls;
mod trust;
mod untag;
mod uploads;
