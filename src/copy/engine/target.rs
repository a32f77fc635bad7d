//! What a target repository held when the run first looked, so that a cold copy into a new
//! or partly filled repository sends no existence check whose answer is already known: a tag
//! the listing lacks needs no manifest `HEAD`, and a repository that did not exist holds no
//! blob this run did not put there. Listed once per repository, only for items the
//! checkpoint knows nothing of; a failed listing just means checking everything.

use std::sync::Arc;

use tokio::sync::OnceCell;

use super::keys::repo_digest_key;
use super::sightings::Seen;
use super::Engine;
use crate::copy::item::Endpoint;
use crate::reference::Digest;

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
                    Ok(tags) => Seen::listed(tags),
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
