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
pub mod deletions;
pub mod inventory;
pub mod policies;
pub mod prune;
pub mod recheck;
pub mod refusals;
pub mod retain_rule;
pub mod select;
pub mod undo;

#[cfg(test)]
mod tests;

use std::time::SystemTime;

use crate::reference::Digest;

pub use deletions::{Deletion, Journal, Refused};
pub use policies::{run, Context, PinMap, Retained};

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

/// Images a policy must keep whatever its rule says, and who needs them: what a `[[copy]]`
/// rule of the same plan writes into the repository (deleting it would have the next run copy
/// it again, and the report call a deleted tag copied).
#[derive(Clone, Debug, Default)]
pub struct Pins {
    /// Tag -> who needs it.
    pub tags: std::collections::HashMap<String, String>,
    /// Digest -> who needs it.
    pub digests: std::collections::HashMap<Digest, String>,
    /// What runs or is about to (`[in_use]`): kept with all it reaches, never a conflict.
    pub in_use: InUsePins,
    /// Set when an `[in_use]` source could not be read whole: nothing is deleted, and this
    /// says why (protection fails closed).
    pub hold: Option<String>,
    /// What the registry will not delete: kept, never a conflict.
    pub refusals: refusals::Refusals,
}

/// Images in use, by tag and by digest, each with who uses it.
#[derive(Clone, Debug, Default)]
pub struct InUsePins {
    pub tags: std::collections::HashMap<String, String>,
    pub digests: std::collections::HashMap<Digest, String>,
}

impl Pins {
    /// Who uses `image`, if anything does (the first use that names it).
    pub fn in_use_by(&self, image: &Image) -> Option<String> {
        let mut tags: Vec<&String> = image.tags.iter().collect();
        tags.sort();
        self.in_use
            .digests
            .get(&image.digest)
            .or_else(|| tags.into_iter().find_map(|t| self.in_use.tags.get(t)))
            .cloned()
    }

    /// Why `image` is pinned (the first pin that names it), if it is.
    pub fn reason_for(&self, image: &Image) -> Option<String> {
        let mut tags: Vec<&String> = image.tags.iter().collect();
        tags.sort();
        tags.into_iter()
            .find_map(|t| self.tags.get(t))
            .or_else(|| self.digests.get(&image.digest))
            .cloned()
    }

    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
            && self.digests.is_empty()
            && self.in_use.tags.is_empty()
            && self.in_use.digests.is_empty()
            && self.hold.is_none()
            && self.refusals.is_empty()
    }
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

/// The decisions for one repository of a `[[retain]]` policy, or why it could not be read.
pub struct RepoPlan {
    /// `registry/repo`, for people.
    pub repository: String,
    pub repo: String,
    pub images: Vec<Image>,
    /// The manifests the inventory read, for the deletions to keep ([`Deletion::manifest`]).
    pub manifests: inventory::Manifests,
    pub decisions: Result<RepoDecisions, crate::registry::RegistryError>,
}

/// Read and decide every repository a policy names (a wildcard expands through the catalog).
/// Pure but for the reads: nothing is deleted here.
pub async fn plan_policy(
    policy: &retain_rule::RetainPolicy,
    registry: &dyn crate::registry::Registry,
    now: SystemTime,
    owns: &(dyn Fn(&str) -> bool + Sync),
    pins: &(dyn Fn(&str) -> Pins + Sync),
) -> Vec<RepoPlan> {
    use crate::reference::{display_repo, Selector};
    let location = &policy.repository.location;
    let mut out = Vec::new();
    let repos = match &policy.repository.selector {
        Selector::Wildcard => match registry
            .list_repositories(&policy.repository.repository)
            .await
        {
            // A name the catalog lists that fails the grammar is that repository's error:
            // nothing is read or deleted under it, and the others go on.
            Ok(r) if matches!(location, crate::reference::Location::Registry(_)) => {
                use crate::reference::names;
                let (good, bad) = names::sort_out(r, names::repository);
                let bad = bad
                    .into_iter()
                    .filter(|e| owns(&display_repo(location, &e.name)));
                out.extend(bad.map(|e| RepoPlan {
                    repository: policy.repository.to_string(),
                    repo: e.name.clone(),
                    images: Vec::new(),
                    manifests: Default::default(),
                    decisions: Err(e.into()),
                }));
                good
            }
            Ok(r) => r,
            Err(e) => {
                return vec![RepoPlan {
                    repository: policy.repository.to_string(),
                    repo: policy.repository.repository.clone(),
                    images: Vec::new(),
                    manifests: Default::default(),
                    decisions: Err(e),
                }]
            }
        },
        _ => vec![policy.repository.repository.clone()],
    };
    for repo in repos {
        let repository = display_repo(location, &repo);
        if !owns(&repository) {
            continue;
        }
        match inventory::read_keeping(registry, &repo).await {
            Ok((images, manifests)) => {
                let decisions = select::select_pinned(&images, &policy.rule, now, &pins(&repo));
                out.push(RepoPlan {
                    repository,
                    repo,
                    images,
                    manifests,
                    decisions: Ok(decisions),
                });
            }
            Err(e) => out.push(RepoPlan {
                repository,
                repo,
                images: Vec::new(),
                manifests: Default::default(),
                decisions: Err(e),
            }),
        }
    }
    out
}
