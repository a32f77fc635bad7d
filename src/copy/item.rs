//! What the engine copies: an [`Item`] (one image, from a source [`Endpoint`] to a target),
//! the key it writes under, and what it waits for ([`After`], [`Contest`]). Plain data that
//! the rest of `copy` shares; it imports nothing of its siblings.

use std::fmt;
use std::sync::Arc;

use crate::reference::Digest;
use crate::registry::Registry;

/// One side of a copy: a registry and a repository in it.
#[derive(Clone)]
pub struct Endpoint {
    pub registry: Arc<dyn Registry>,
    pub repo: String,
}

impl Endpoint {
    /// `ghcr.io/org/app`, `oci:dir`.
    pub fn display(&self) -> String {
        match self.registry.name() {
            "oci:" => format!("oci:{}", self.repo),
            host => format!("{host}/{}", self.repo),
        }
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display())
    }
}

/// One image to copy: a tag or digest at the source, a tag (or none: by digest) at the target.
#[derive(Clone, Debug)]
pub struct Item {
    pub source: Endpoint,
    /// A tag or a digest.
    pub source_ref: String,
    pub target: Endpoint,
    /// `None` copies by digest, untagged.
    pub target_tag: Option<String>,
    /// For a referrer found by the referrers API or a fallback index: the image it refers to.
    /// A target without the referrers API gets it listed under the subject's fallback tag.
    pub subject: Option<Digest>,
    /// Only these platforms of an index (`None`: all of them, the index as is).
    pub platforms: Option<Arc<super::copy_rule::Platforms>>,
    /// The `[[copy]]` rule it comes from (1-based; 0 for none).
    pub rule: usize,
    /// For a referrer (a signature, an attestation, an SBOM, by tag or by digest): the item
    /// that carries what it refers to. It is copied after that item, and only when that item
    /// put its subject at the target with the digest it names.
    pub after: Option<After>,
    /// The digest selection read for this tag at the source moments ago (finding what refers
    /// to it), so the copy does not ask again.
    pub seen: Option<Digest>,
    /// The whole manifest selection read for this tag moments ago (where the copy would read
    /// it anyway), so the copy reads it no more.
    pub read: Option<crate::registry::Manifest>,
    /// Another rule's item writes this target first, from another source: this one is a
    /// duplicate or a conflict, told once that one is done (see [`Contest`]).
    pub contest: Option<Contest>,
}

/// Where an item writes: target registry, repository, and tag (or digest). Two items with one
/// key write the same thing; the checkpoint keys its records by it.
pub type ItemKey = (String, String, String);

/// What a referrer waits for: see [`Item::after`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct After {
    /// The key of the item whose copy places the subject at the target.
    pub parent: ItemKey,
    /// The digest the referrer names.
    pub subject: Digest,
}

/// An item whose target another rule's item (the *winner*: the first to claim it, in this run)
/// writes from another source, with the same platforms. It copies nothing: once the winner is
/// done, its own source digest is compared with the one the winner placed. The same digest is
/// a duplicate, which succeeds as the winner did (`present`, or `unchanged`); another is a
/// conflict, which fails with [`Contest::conflict`], as does a winner that placed nothing to
/// compare with ([`Contest::unknown`]). Its referrers follow it, not the winner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contest {
    /// The `[[copy]]` rule of the winner (the key is the item's own).
    pub winner_rule: usize,
    /// Why it fails when the digests differ: two rules fight over one tag.
    pub conflict: String,
    /// Why it fails when the winner failed or was skipped: it cannot be compared.
    pub unknown: String,
}

pub(crate) fn join_ref(repo: &str, reference: &str) -> String {
    if reference.contains(':') {
        format!("{repo}@{reference}")
    } else {
        format!("{repo}:{reference}")
    }
}

impl Item {
    /// Where this item writes (a layout path in one spelling).
    pub fn key(&self) -> ItemKey {
        let registry = self.target.registry.name();
        (
            registry.to_string(),
            match registry {
                "oci:" => crate::reference::names::canonical_layout_path(&self.target.repo),
                _ => self.target.repo.clone(),
            },
            self.target_tag
                .clone()
                .unwrap_or_else(|| self.source_ref.clone()),
        )
    }

    pub fn source_display(&self) -> String {
        join_ref(&self.source.display(), &self.source_ref)
    }
    pub fn target_display(&self) -> String {
        match &self.target_tag {
            Some(t) => join_ref(&self.target.display(), t),
            None => join_ref(&self.target.display(), &self.source_ref),
        }
    }
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.source_display(), self.target_display())
    }
}
