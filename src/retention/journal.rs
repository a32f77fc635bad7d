//! What retention records as it deletes: the [`Journal`] trait, owned here as the copy engine
//! owns its own. The SQLite checkpoint implements it (in `app`, over `state`); retention never
//! learns how a deletion is stored.

use crate::registry::Digest;

pub trait Journal: Send + Sync {
    /// Retention deleted `digest` from `repo` of registry `registry`, and with it `tags`:
    /// recorded for the audit, and every record that would let a later run trust what is gone
    /// is forgotten.
    fn deleted(&self, _deletion: &Deletion<'_>) {}
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
}
