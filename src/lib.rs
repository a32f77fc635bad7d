//! ferry: copy container images between OCI registries (and OCI layouts), byte for byte, and
//! enforce retention policies on them, resumably, with a dry run that runs the run's own code.
//!
//! # Layout
//! Dependencies point down this diagram and never back up (`tests/it/structure.rs` fails on a
//! cycle between these modules):
//!
//! ```text
//!   cli ── app                  (one module per subcommand)
//!           └── execute ──┬── report, state      (implement the engines' Reporter and Journal)
//!                         ├── copy, retention, inuse (the engines; they never speak HTTP)
//!                         ├── plan               (TOML -> validated rules)
//!                         └── registry           (the Registry trait and what implements it)
//!                               └── reference, error   (leaves)
//! ```
//!
//! - [`cli`]: clap types only.
//! - [`app`]: one module per subcommand; composition, `anyhow`, exit codes.
//! - [`execute`]: the run's core, shared by the subcommands: runs a plan's copy stages and
//!   retention for `run` and `plan` alike, and the copy stages alone, changing nothing, for
//!   `verify`; the checkpoint as the engines' journals ([`execute::checkpoint`]), the run
//!   lease, the scopes of `prune` rules, `--shard`.
//! - [`report`]: plain log lines, indicatif bars, the JSON report and metrics; implements
//!   [`copy::Reporter`].
//! - [`state`]: the SQLite checkpoint behind one owner thread; [`state::State`] is its handle.
//! - [`copy`]: rule resolution and the idempotent, concurrent copy engine (which also checks
//!   an image at its target whole); the [`copy::Journal`] and [`copy::Reporter`] traits it
//!   calls.
//! - [`retention`]: inventory, pure selection with graph protection, top-down deletion.
//! - [`inuse`]: the images in use, from the plan's `[in_use]` sources (Kubernetes, GitOps
//!   files), that retention and pruning keep.
//! - [`plan`]: TOML to a validated [`plan::Plan`]; errors name file, line, column and field,
//!   never a value from the plan.
//! - [`registry`]: the [`registry::Registry`] trait and its implementations (HTTP, OCI layouts,
//!   the overlay `ferry plan` runs against, and an in-memory one for tests); the only code that
//!   speaks the distribution API. [`registry::config`] holds per-registry settings.
//! - [`reference`](mod@reference): references, digests and the names grammar; [`error`]: error
//!   chains and their hints, shown after the chain.

pub mod app;
pub mod cli;
pub mod copy;
pub mod error;
pub mod execute;
pub mod inuse;
pub mod plan;
pub mod reference;
pub mod registry;
pub mod report;
pub mod retention;
pub mod state;

#[cfg(test)]
mod proptests;
