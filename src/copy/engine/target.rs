//! What a target repository held when the run first looked, so that a cold copy into a new
//! or partly filled repository sends no existence check whose answer is already known: a tag
//! the listing lacks needs no manifest `HEAD`, and a repository that did not exist holds no
//! blob this run did not put there. Listed once per repository, only for items the
//! checkpoint knows nothing of; a failed listing just means checking everything.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::OnceCell;

use super::Engine;
use crate::copy::item::{Endpoint, Item};
use crate::copy::outcome::CopyError;
use crate::copy::platform;
use crate::reference::Digest;
use crate::registry::Manifest;

/// A target repository as the run first saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Seen {
    /// Not listed, or the listing failed: check everything.
    Unknown,
    /// It did not exist: it holds only what this run puts there.
    Missing,
    /// It existed, with these tags.
    Tags(HashSet<String>),
}

impl Seen {
    /// The target is known not to have held `tag` (nothing else of this run writes it:
    /// one item per target tag).
    pub(super) fn lacks_tag(&self, tag: &str) -> bool {
        match self {
            Seen::Unknown => false,
            Seen::Missing => true,
            Seen::Tags(tags) => !tags.contains(tag),
        }
    }
}

/// One cell per target repository, filled by the first listing.
pub(super) type Targets =
    std::sync::Mutex<std::collections::HashMap<(String, String), Arc<OnceCell<Seen>>>>;

impl Engine {
    fn target_cell(&self, dst: &Endpoint) -> Arc<OnceCell<Seen>> {
        self.targets
            .lock()
            .expect("targets map")
            .entry((dst.registry.name().to_string(), dst.repo.clone()))
            .or_default()
            .clone()
    }

    /// The target repository as first listed (listing it now if nobody has).
    pub(super) async fn target_seen(&self, dst: &Endpoint) -> Seen {
        let cell = self.target_cell(dst);
        // Boxed: the listing's future is large, and an image's copy future holds it.
        Box::pin(cell.get_or_init(|| async {
                match dst.registry.list_tags(&dst.repo).await {
                    Ok(tags) => Seen::Tags(tags.into_iter().collect()),
                    Err(e) if e.is_not_found() => Seen::Missing,
                    Err(e) => {
                        tracing::debug!(error = %e, repo = %dst.repo, "target not listed; checking each item");
                        Seen::Unknown
                    }
                }
            }))
            .await
            .clone()
    }

    /// Is manifest `digest` known to be in the target repository: put there, or found
    /// there, earlier in this run?
    pub(super) fn manifest_placed(&self, dst: &Endpoint, digest: &Digest) -> bool {
        let placed = self.placed.lock().expect("placed manifests");
        placed.contains(&repo_digest_key(dst, digest))
    }

    /// Remember that manifest `digest` is in the target repository.
    pub(super) fn placed_manifest(&self, dst: &Endpoint, digest: &Digest) {
        let mut placed = self.placed.lock().expect("placed manifests");
        placed.insert(repo_digest_key(dst, digest));
    }

    /// Is blob `digest` known to be in the target repository (placed there in this run)?
    pub(super) fn blob_placed(&self, dst: &Endpoint, digest: &Digest) -> bool {
        let placed = self.placed_blobs.lock().expect("placed blobs");
        placed.contains(&repo_digest_key(dst, digest))
    }

    /// Remember that blob `digest` is in the target repository.
    pub(super) fn placed_blob(&self, dst: &Endpoint, digest: &Digest) {
        let mut placed = self.placed_blobs.lock().expect("placed blobs");
        placed.insert(repo_digest_key(dst, digest));
    }

    /// Is the target repository fresh: the registry listed no tags of it when the run first
    /// looked (without listing it now), and no earlier run recorded writing into it (one
    /// stopped before its manifests leaves blobs and no tag)? Then it holds only what this
    /// run put there.
    pub(super) fn target_is_fresh(&self, dst: &Endpoint) -> bool {
        self.target_cell(dst).get() == Some(&Seen::Missing)
            && !self.journal.knows_target(dst.registry.name(), &dst.repo)
    }
}

/// What the target gets for an item whose source digest is `digest`.
pub(super) struct Destined {
    /// The source index, when a platform list made it be read first.
    pub(super) source_manifest: Option<Manifest>,
    /// What a platform list chose (`None` without one, or for a single-platform image).
    pub(super) chosen: Option<platform::Chosen>,
    /// The digest the target ends up with: the source's, or a rewritten index's.
    pub(super) push_digest: Digest,
    /// The target tag, or `push_digest` for a copy by digest.
    pub(super) reference: String,
}

/// With a platform list the source index is read first (unless `fetched` is it already):
/// what the target gets (and so the digest to look for there) depends on it. Without one
/// nothing is read.
pub(super) async fn destined(
    item: &Item,
    digest: &Digest,
    fetched: Option<Manifest>,
) -> Result<Destined, CopyError> {
    let mut source_manifest = fetched;
    let mut chosen = None;
    if let Some(platforms) = &item.platforms {
        let m = match source_manifest.take() {
            Some(m) => m,
            None => source_by_digest(item, digest).await?,
        };
        chosen = platform::choose(&m, platforms).map_err(|source| CopyError::Platforms {
            reference: item.source_display(),
            source,
        })?;
        source_manifest = Some(m);
    }
    let push_digest = chosen
        .as_ref()
        .map_or(digest, |c| &c.manifest.digest)
        .clone();
    let reference = item
        .target_tag
        .clone()
        .unwrap_or_else(|| push_digest.to_string());
    Ok(Destined {
        source_manifest,
        chosen,
        push_digest,
        reference,
    })
}

/// (target registry, repository, digest): a manifest or blob in one target repository.
pub(super) fn repo_digest_key(dst: &Endpoint, digest: &Digest) -> super::ManifestKey {
    (
        dst.registry.name().to_string(),
        dst.repo.clone(),
        digest.clone(),
    )
}

/// The item's source manifest `digest`, read (and verified) by digest.
pub(super) async fn source_by_digest(item: &Item, digest: &Digest) -> Result<Manifest, CopyError> {
    source_at(item, digest.as_str()).await
}

/// The item's source manifest by `reference` (a tag or digest), verified.
pub(super) async fn source_at(item: &Item, reference: &str) -> Result<Manifest, CopyError> {
    let src = &item.source;
    src.registry
        .get_manifest(&src.repo, reference)
        .await
        .map_err(|e| CopyError::Source {
            reference: item.source_display(),
            source: e,
        })
}
