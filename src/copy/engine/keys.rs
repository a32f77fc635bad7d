//! How the engine keys what it knows of target registries during a run: blobs, manifests
//! and tags, by registry and repository.

use crate::copy::item::Endpoint;
use crate::reference::Digest;

/// Where a blob is known to exist in a target registry during this run.
pub(super) type BlobKey = (String, Digest);

/// A manifest in a repository of a target registry.
pub(super) type ManifestKey = (String, String, Digest);

/// A tag in a repository of a target registry.
pub(super) type TagKey = (String, String, String);

/// (target registry, repository, digest): a manifest or blob in one target repository.
pub(super) fn repo_digest_key(dst: &Endpoint, digest: &Digest) -> ManifestKey {
    (
        dst.registry.name().to_string(),
        dst.repo.clone(),
        digest.clone(),
    )
}
