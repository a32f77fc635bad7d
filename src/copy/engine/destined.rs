//! What the target gets for an item: the source manifest, read by digest where a platform
//! list needs it, and what that list chose from it.

use super::pulled::Pulled;
use crate::copy::item::Item;
use crate::copy::outcome::CopyError;
use crate::copy::platform;
use crate::reference::Digest;
use crate::registry::Manifest;

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
    pulled: &Pulled,
) -> Result<Destined, CopyError> {
    let mut source_manifest = fetched;
    let mut chosen = None;
    if let Some(platforms) = &item.platforms {
        let m = match source_manifest.take() {
            Some(m) => m,
            None => source_by_digest(item, digest, pulled).await?,
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

/// The item's source manifest `digest`, read (and verified) by digest: once per run where
/// a GET counts as a pull (see [`Pulled`]).
pub(super) async fn source_by_digest(
    item: &Item,
    digest: &Digest,
    pulled: &Pulled,
) -> Result<Manifest, CopyError> {
    pulled
        .get(item, digest, source_at(item, digest.as_str()))
        .await
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
