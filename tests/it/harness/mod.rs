//! Integration-test harness: real `docker-registry` processes, a bearer-token
//! server of our own, in-process fakes (Docker Hub and GitHub APIs, an OCI v1.1
//! registry with the referrers API, a Kubernetes API server), a real Pushgateway and
//! Prometheus, and in-memory image fixtures pushed by a minimal client that is
//! independent of the code under test.

// Not every test uses every helper, and each test binary compiles the whole
// harness, so unused-item warnings here would only be noise.
#![allow(dead_code)]

pub mod fixtures;
pub mod github;
pub mod hub;
pub mod kube;
pub mod ocireg;
pub mod prometheus;
pub mod proxy;
pub mod registry;
pub mod tls;
pub mod token;

// Flat re-exports so tests can `use crate::harness::*`; a test binary that
// uses only some modules must not warn about the others.
#[allow(unused_imports)]
pub use fixtures::*;
#[allow(unused_imports)]
pub use github::*;
#[allow(unused_imports)]
pub use hub::*;
#[allow(unused_imports)]
pub use kube::*;
#[allow(unused_imports)]
pub use ocireg::*;
#[allow(unused_imports)]
pub use prometheus::*;
#[allow(unused_imports)]
pub use proxy::*;
#[allow(unused_imports)]
pub use registry::*;
#[allow(unused_imports)]
pub use tls::*;
#[allow(unused_imports)]
pub use token::*;
