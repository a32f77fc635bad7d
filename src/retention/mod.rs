//! Retention: decide, per image (digest), what a policy keeps and what it deletes, then
//! delete through the [`crate::registry::Registry`] trait.
//!
//! Three steps, each its own module: `inventory` reads a repository (tags, digests, children,
//! creation times, signature tags) through the registry trait; `select` is pure (inventory +
//! rule + now -> decisions with human-readable reasons) and protects everything a kept image
//! reaches; `apply` carries the decisions out, looking at the repository again right before
//! each DELETE (`recheck`), so a tag pushed since the inventory keeps its image. [`run()`]
//! strings them together for every policy
//! of a plan and records each deletion through retention's own [`Journal`]; `ferry plan` and
//! `ferry run` both call it (against overlays or the registries), so the dry run cannot lie.
//!
//! Retention does not use the copy engine: what the copies need kept comes in as [`Pins`],
//! and what the registry will not delete as [`refusals::Refusals`] with them.

pub mod apply;
pub mod decisions;
pub mod deletions;
pub mod inventory;
pub mod pins;
pub mod policies;
pub mod prune;
pub mod recheck;
pub mod refusals;
pub mod repo_plan;
pub mod retain_rule;
pub mod select;
pub mod undo;

#[cfg(test)]
mod tests;

pub use decisions::{Action, Conflict, Decision, Image, RepoDecisions};
pub use deletions::{Deletion, Journal, Refused};
pub use pins::{InUsePins, Pins};
pub use policies::{run, run_each, Context, PinMap, Retained};
pub use repo_plan::{plan_repository, policy_repositories, RepoPlan};
