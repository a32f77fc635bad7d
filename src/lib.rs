//! ferry: copy container images between OCI registries (and OCI layouts), byte for byte, and
//! enforce retention policies on them, resumably, with a dry run that runs the run's own code.
//!
//! # Layout
//! A row per layer, from the top down: each module uses only modules on rows below its own,
//! and modules on one row are siblings, neither using the other (`tests/it/structure.rs`
//! reads this diagram and the README's and fails when the code does not match them):
//!
//! ```text
//! app/                      one module per subcommand
//! execute/  cli.rs          the run's core; clap types
//! plan/  state/  report/    TOML -> the engines' own rule types, validated; the checkpoint;
//!                           what people see
//! copy/  retention/  inuse/ the engines, with their own rule types; they never speak HTTP
//! registry/                 the Registry trait and what implements it
//! reference/  error.rs      leaves
//! ```
//!
//! - [`app`]: one module per subcommand; composition, `anyhow`, exit codes.
//! - [`execute`]: the run's core, shared by the subcommands: runs a plan's copy stages and
//!   retention for `run` and `plan` alike, and the copy stages alone, changing nothing, for
//!   `verify`; the checkpoint as the engines' journals ([`execute::checkpoint`]), the run
//!   lease, the scopes of `prune` rules, `--shard`.
//! - [`cli`]: clap types only.
//! - [`plan`]: TOML to a validated [`plan::Plan`], which holds the engines' own rule types;
//!   errors name file, line, column and field, never a value from the plan. No engine imports
//!   it.
//! - [`state`]: the SQLite checkpoint behind one owner thread; [`state::State`] is its handle.
//! - [`report`]: plain log lines, indicatif bars, the JSON report and metrics, error chains
//!   with their hints after them ([`report::hints`]), Markdown for review on GitHub
//!   ([`report::markdown`]); implements [`copy::Reporter`].
//! - [`copy`]: its rule ([`copy::copy_rule::CopyRule`], [`copy::tag_filter::TagFilter`]), rule
//!   resolution and the idempotent, concurrent copy engine (which also checks an image at its
//!   target whole); the [`copy::Journal`] and [`copy::Reporter`] traits it calls.
//! - [`retention`]: its policies ([`retention::retain_rule`]) and prune settings
//!   ([`retention::prune::Prune`]); inventory, pure selection with graph protection, top-down
//!   deletion.
//! - [`inuse`]: the images in use, from the sources a plan's `[in_use]` names
//!   ([`inuse::sources`]: Kubernetes, GitOps files, ArgoCD and its Image Updater, git
//!   history), that retention and pruning keep.
//! - [`registry`]: the [`registry::Registry`] trait and its implementations (HTTP, OCI layouts,
//!   the overlay `ferry plan` runs against, and an in-memory one for tests); the only code that
//!   speaks the distribution API. In floors: [`registry::http`] and [`registry::hosted`] (the
//!   GitHub Packages and Docker Hub APIs) over [`registry::auth`] over
//!   [`registry::transport`] (throttle, retry, bodies, paging, TLS) over the leaves
//!   ([`registry::error`], [`registry::reasons`]). [`registry::config`] holds per-registry
//!   settings.
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
