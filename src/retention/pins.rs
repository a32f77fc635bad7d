//! What a policy keeps whatever its rule says: the images a copy of the same plan writes, the
//! images in use, and what the registry refused to delete.

use super::decisions::Image;
use super::refusals::Refusals;
use crate::reference::Digest;

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
    pub refusals: Refusals,
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
