//! The only code that speaks the distribution API (or reads an OCI layout).
//!
//! [`Registry`] is the edge the copy engine and retention work through; it has two
//! implementations: [`http::HttpRegistry`] (any OCI distribution registry: auth, per-host
//! connection limits, streaming digest checks) and [`layout::LayoutRegistry`] (local OCI image
//! layout directories). This module knows nothing of plans' rules, SQLite or terminals, and
//! never prints.

pub mod auth;
pub mod credentials;
pub mod digest;
pub mod error;
pub mod http;
pub mod layout;
pub mod manifest;
pub mod retry;
pub mod throttle;

use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

pub use digest::Digest;
pub use error::{RegistryError, Result};

/// A stream of blob bytes. Streams returned by [`Registry::get_blob`] are already verified:
/// they end with an error instead of a last chunk when size or digest is wrong.
pub type BlobStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// A manifest exactly as stored: its bytes are never re-serialised.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub media_type: String,
    pub bytes: Bytes,
    pub digest: Digest,
}

/// What a manifest `HEAD` tells: enough to decide whether a copy is needed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestHead {
    pub digest: Digest,
    pub media_type: Option<String>,
}

/// A registry (or a set of OCI layouts) holding repositories.
#[async_trait]
pub trait Registry: Send + Sync {
    /// The name users know it by: the plan's host, or `oci:` for layouts.
    fn name(&self) -> &str;

    /// Repositories whose path starts with `prefix` (for wildcard rules).
    async fn list_repositories(&self, prefix: &str) -> Result<Vec<String>>;

    /// Every tag of a repository.
    async fn list_tags(&self, repo: &str) -> Result<Vec<String>>;

    /// The digest a tag or digest resolves to, or `None` when the manifest does not exist.
    async fn head_manifest(&self, repo: &str, reference: &str) -> Result<Option<ManifestHead>>;

    /// A manifest, its digest verified against the reference or the registry's header.
    async fn get_manifest(&self, repo: &str, reference: &str) -> Result<Manifest>;

    /// Store a manifest under a tag or (`reference` = its digest) untagged. The registry's
    /// reported digest is checked against `manifest.digest`.
    async fn put_manifest(&self, repo: &str, reference: &str, manifest: &Manifest) -> Result<()>;

    /// Does the repository hold this blob?
    async fn blob_exists(&self, repo: &str, digest: &Digest) -> Result<bool>;

    /// Stream a blob; the stream verifies `size` and `digest` as bytes arrive.
    async fn get_blob(&self, repo: &str, digest: &Digest, size: u64) -> Result<BlobStream>;

    /// Store a blob from a stream; nothing is committed unless the bytes match `digest`.
    async fn put_blob(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
        data: BlobStream,
    ) -> Result<()>;

    /// Make a blob that `from` (a repository of this same registry) holds available in `repo`
    /// without transferring it. `Ok(false)` when the registry declined.
    async fn mount_blob(&self, repo: &str, digest: &Digest, from: &str) -> Result<bool>;
}
