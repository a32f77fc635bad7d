//! ferry: copy container images between OCI registries, byte for byte, and (in later
//! versions) enforce retention policies on them.
//!
//! # Layout
//! - [`cli`]: clap types only.
//! - [`app`]: one module per subcommand; composition, `anyhow`, exit codes.
//! - [`plan`]: TOML to a validated [`plan::Plan`]; errors name file, line, column and
//!   field, never a value from the plan.
//! - [`registry`]: the [`registry::Registry`] trait and its HTTP and OCI-layout
//!   implementations; the only code that speaks the distribution API.
//! - [`copy`]: rule resolution and the idempotent, concurrent copy engine.
//! - [`retention`]: retention inventory, pure selection with graph protection, deletion.
//! - [`report`]: the [`report::Reporter`] trait and its terminal and log implementations.
//! - [`state`]: the SQLite checkpoint behind one owner thread; [`state::State`] is its handle.

pub mod app;
pub mod cli;
pub mod copy;
pub mod error;
pub mod plan;
pub mod reference;
pub mod registry;
pub mod report;
pub mod retention;
pub mod state;

#[cfg(test)]
mod proptests;
