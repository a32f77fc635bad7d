//! What retention reads and decides: the images of a repository, and for each one a decision
//! with the reason people read. A leaf of `retention`: every step shares these.

use std::time::SystemTime;

use crate::reference::Digest;

/// One manifest of a repository, as the inventory found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub digest: Digest,
    /// Tags pointing at this digest (empty: untagged).
    pub tags: Vec<String>,
    /// Creation time: the config's `created`, or the registry's own push time. `None` when
    /// unknown (an index without it, an artifact).
    pub created: Option<SystemTime>,
    /// Child manifests of an index, with their platform (`linux/arm64`) when given.
    pub children: Vec<(Digest, Option<String>)>,
    /// What this manifest refers to: the `subject` of an OCI 1.1 referrer, or the digest in a
    /// `sha256-<hex>.sig/.att/.sbom` (or plain `sha256-<hex>`) tag.
    pub subject: Option<Digest>,
}

/// Keep or delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Keep,
    Delete,
}

/// The decision for one image, with the reason people read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub digest: Digest,
    pub tags: Vec<String>,
    pub action: Action,
    /// e.g. "kept: newest 3 of 10", "kept: child of v1.2.0 (linux/arm64)",
    /// "delete: matches ^pr-\d+$, 41 days old".
    pub reason: String,
}

/// The decisions for one repository, or why nothing there is deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoDecisions {
    /// One per image of the inventory, in a stable order: kept first, newest first.
    pub decisions: Vec<Decision>,
    /// Set when the repository deletes nothing because of the `max_deletions` valve; the
    /// would-be deletions are then Keep decisions carrying this reason.
    pub held_back: Option<String>,
    /// Pinned images the rule alone would delete (kept; each is an error of the run).
    pub conflicts: Vec<Conflict>,
    /// Images kept because they are in use (`[in_use]`), which the rule alone would delete.
    pub in_use: usize,
}

/// What the `max_deletions` valve's `held_back` reasons say, and only they.
const VALVE: &str = " exceed max_deletions = ";

/// The `held_back` reason of a `max_deletions` valve: `what` (e.g. "3 deletions") exceed
/// `max`, so nothing is deleted `scope` (e.g. "in this repository"). Built here only, so
/// [`held_by_valve`] knows it.
pub fn valve_reason(what: &str, max: usize, scope: &str) -> String {
    format!("{what}{VALVE}{max}; nothing is {scope}")
}

/// Whether a `held_back` reason (a repository's, or a prune rule's) is the `max_deletions`
/// valve's ([`valve_reason`]), not a failed `[in_use]` source's. The metrics count these
/// apart, for the alert that a valve held deletions back.
pub fn held_by_valve(why: &str) -> bool {
    why.contains(VALVE)
}

/// An image the rule would delete that a pin keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub digest: Digest,
    pub tags: Vec<String>,
    /// The rule's own decision, e.g. "delete: not kept by any rule".
    pub would: String,
    /// Who needs it, e.g. "copy #1 (plan.toml:3) writes it".
    pub pinned_by: String,
}
