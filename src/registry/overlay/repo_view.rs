//! What the simulation changed in one repository ([`RepoView`]), for the [`super::Overlay`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::SystemTime;

use crate::reference::Digest;
use crate::registry::{BlobOrigin, Manifest};

/// A manifest written by the simulation.
#[derive(Clone)]
pub(super) struct Written {
    pub(super) manifest: Manifest,
    pub(super) pushed: SystemTime,
}

/// Where a simulated blob's bytes can be read.
#[derive(Clone)]
pub(super) enum BlobBytes {
    /// Put from another registry or repository (the copy's source).
    From(BlobOrigin),
    /// Mounted from another repository of this same registry.
    Mounted(String),
    /// Put by a source that cannot be reopened: present, bytes unavailable.
    Unknown,
}

/// What the simulation changed in one repository.
#[derive(Default)]
pub(super) struct RepoView {
    pub(super) manifests: HashMap<Digest, Written>,
    /// Tags the simulation put (`Some`) or removed with a deleted manifest (`None`).
    pub(super) tags: BTreeMap<String, Option<Digest>>,
    pub(super) deleted: HashSet<Digest>,
    /// Every digest the simulation deleted, even if put again since: what the registry
    /// underneath says of it (its tags, its records, its referrers entries) is gone, and only
    /// what the simulation wrote again counts.
    pub(super) wiped: HashSet<Digest>,
    pub(super) blobs: HashMap<Digest, BlobBytes>,
    /// Digests of tags read underneath, to hide a deleted manifest's tags from later listings.
    pub(super) seen: HashMap<String, Digest>,
}

impl RepoView {
    /// Has the simulation created anything here (a repository that may not exist yet)?
    pub(super) fn exists(&self) -> bool {
        !self.manifests.is_empty()
            || !self.blobs.is_empty()
            || self.tags.values().any(Option::is_some)
    }
}
