//! What the run first saw of each target repository, before it wrote there: its tags as
//! first listed ([`Seen`], one cell per repository in [`Targets`]; filled by `target`), and
//! each manifest and blob as first looked at ([`Sighting`], [`BlobState`], in [`Graphs`];
//! filled by `graph`), with what that makes of an item at the target ([`AtTarget`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::OnceCell;

use super::keys::ManifestKey;
use crate::copy::outcome::Gap;
use crate::reference::Digest;
use crate::registry::Manifest;

/// A target repository as the run first saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Seen {
    /// Not listed, or the listing failed: check everything.
    Unknown,
    /// It did not exist: it holds only what this run puts there.
    Missing,
    /// It existed, with these tags, each kept as a 64-bit hash (a repository of 100,000
    /// tags is 1 MiB, not 6, and each item reads it without a copy). Two tags that share a
    /// hash only cost the `HEAD` a tag the listing holds gets anyway.
    Tags(Arc<HashSet<u64>>),
}

impl Seen {
    /// A repository listed with `tags`.
    pub(super) fn listed(tags: Vec<String>) -> Seen {
        Seen::Tags(Arc::new(tags.iter().map(|t| tag_hash(t)).collect()))
    }

    /// The target is known not to have held `tag` (nothing else of this run writes it:
    /// one item per target tag).
    pub(super) fn lacks_tag(&self, tag: &str) -> bool {
        match self {
            Seen::Unknown => false,
            Seen::Missing => true,
            Seen::Tags(tags) => !tags.contains(&tag_hash(tag)),
        }
    }
}

/// A tag's hash, the same in every run (SipHash with fixed keys).
fn tag_hash(tag: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    tag.hash(&mut h);
    h.finish()
}

/// One cell per target repository, filled by the first listing.
pub(super) type Targets =
    std::sync::Mutex<std::collections::HashMap<(String, String), Arc<OnceCell<Seen>>>>;

/// What the target holds for an item.
#[derive(Debug)]
pub(super) enum AtTarget {
    /// The reference points at the digest the item puts there, and everything it reaches is
    /// there.
    Whole,
    /// It points there, but these are missing.
    Gaps(Vec<Gap>),
    /// The reference does not exist there (`None`), or points at this other digest.
    Elsewhere(Option<Digest>),
}

/// A manifest of a target repository as the run first saw it.
#[derive(Clone, Debug)]
pub(super) enum Sighting {
    Missing,
    /// There, with its body when the look read it (a `GET`; a `HEAD` does not).
    There(Option<Manifest>),
}

/// A blob of a target repository as the run first saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BlobState {
    There,
    Missing,
    /// Read whole, its bytes do not hash to its digest.
    Damaged,
}

/// The run's first looks at target repositories' manifests and blobs.
#[derive(Default)]
pub(super) struct Graphs {
    manifests: std::sync::Mutex<HashMap<ManifestKey, Arc<OnceCell<Sighting>>>>,
    blobs: std::sync::Mutex<HashMap<ManifestKey, Arc<OnceCell<BlobState>>>>,
    /// Manifests whose whole graph the first looks found there (a memo of a walk).
    whole: std::sync::Mutex<HashSet<ManifestKey>>,
}

impl Graphs {
    pub(super) fn manifest(&self, key: &ManifestKey) -> Arc<OnceCell<Sighting>> {
        let mut cells = self.manifests.lock().expect("manifest sightings");
        cells.entry(key.clone()).or_default().clone()
    }

    pub(super) fn blob(&self, key: &ManifestKey) -> Arc<OnceCell<BlobState>> {
        let mut cells = self.blobs.lock().expect("blob sightings");
        cells.entry(key.clone()).or_default().clone()
    }

    pub(super) fn is_whole(&self, key: &ManifestKey) -> bool {
        self.whole.lock().expect("whole graphs").contains(key)
    }

    pub(super) fn found_whole(&self, key: ManifestKey) {
        self.whole.lock().expect("whole graphs").insert(key);
    }
}
