//! What retention records as it deletes: the [`Journal`] trait, owned here as the copy engine
//! owns its own. The SQLite checkpoint implements it (in `app`, over `state`); retention never
//! learns how a deletion is stored.

use std::collections::HashMap;
use std::time::SystemTime;

use crate::reference::Digest;
use crate::registry::Manifest;

pub trait Journal: Send + Sync {
    /// Retention deleted `digest` from `repo` of registry `registry`, and with it `tags`:
    /// recorded for the audit, and every record that would let a later run trust what is gone
    /// is forgotten.
    fn deleted(&self, _deletion: &Deletion<'_>) {}

    /// Does this journal keep what [`Journal::deleted`] is given (a checkpoint that
    /// `ferry restore` reads)? Only then is a manifest the inventory did not read (Docker
    /// Hub's, described by its tag API) read before it is deleted, so it can be kept.
    fn keeps_manifests(&self) -> bool {
        false
    }

    /// What the checkpoint recorded that pruning judges ownership by (none: prune nothing).
    fn ledger(&self) -> Ledger {
        Ledger::default()
    }

    /// Pruning found `tags` of `repo` missing from what their rule selects, first at `since`.
    fn missing(&self, _registry: &str, _repo: &str, _tags: &[String], _since: SystemTime) {}

    /// `tags` of `repo` are no longer missing (selected again, not ours, or gone).
    fn not_missing(&self, _registry: &str, _repo: &str, _tags: &[String]) {}

    /// The deletions `registry` refused for good in `repo` on earlier runs, which selection
    /// keeps without asking again (none: ask).
    fn refusals(&self, _registry: &str, _repo: &str) -> Vec<Refused> {
        Vec::new()
    }

    /// `registry` refused for good to delete a manifest of `repo`, now or again: remembered
    /// (when first and last), so later runs keep it without asking.
    fn refused(&self, _registry: &str, _repo: &str, _refused: &Refused) {}
}

/// A deletion a registry refused for good (see [`Journal::refused`]): a public GHCR version
/// with more than 5,000 downloads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    pub digest: Digest,
    /// The registry's own id of what it would not delete (the package version).
    pub version_id: Option<String>,
    /// Why, in the registry's own words.
    pub reason: String,
    /// When it first refused.
    pub at: SystemTime,
}

/// One manifest deleted (see [`Journal::deleted`]).
#[derive(Clone, Copy, Debug)]
pub struct Deletion<'a> {
    pub registry: &'a str,
    pub repo: &'a str,
    pub digest: &'a Digest,
    pub tags: &'a [String],
    pub reason: &'a str,
    /// The registry's own id of what it deleted (a GHCR package version).
    pub version_id: Option<&'a str>,
    /// Only `tags` were removed; the manifest stays (pruning a tag an image kept shares).
    pub tags_only: bool,
    /// The manifest as it was (media type and exact bytes), kept so `ferry restore` can put
    /// it back; `None` where it could not be read.
    pub manifest: Option<&'a Manifest>,
}

/// What ferry put at a target reference, as the checkpoint recorded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Copied {
    /// The source repository it was copied from, as people write it (`docker.io/org/app`).
    pub source: String,
    /// The digest ferry wrote there.
    pub digest: Digest,
}

/// What the checkpoint knows that pruning needs, by target repository.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    /// `(registry, repo)` -> reference (tag, or digest of an untagged copy) -> what ferry
    /// wrote there.
    pub copied: HashMap<(String, String), HashMap<String, Copied>>,
    /// `(registry, repo)` -> tag -> when pruning first found the tag missing.
    pub missing: HashMap<(String, String), HashMap<String, SystemTime>>,
}

impl Ledger {
    /// The references of `repo` at `registry` ferry copied from `source`.
    pub fn copied_from(&self, registry: &str, repo: &str, source: &str) -> HashMap<String, Copied> {
        self.copied
            .get(&(registry.to_string(), repo.to_string()))
            .map(|refs| {
                refs.iter()
                    .filter(|(_, c)| c.source == source)
                    .map(|(r, c)| (r.clone(), c.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
}
