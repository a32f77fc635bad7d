//! The only code that speaks the distribution API (or reads an OCI layout).
//!
//! [`Registry`] is the edge the copy engine and retention work through; it has two
//! implementations: [`http::HttpRegistry`] (any OCI distribution registry: auth, per-host
//! connection limits, streaming digest checks) and [`layout::LayoutRegistry`] (local OCI image
//! layout directories), and [`overlay::Overlay`] simulates writes over either. This module
//! knows nothing of plans' rules, SQLite or terminals, and never prints.
//!
//! Beside them: [`hosted`], the APIs of GHCR and Docker Hub behind their own trait, for what
//! the distribution API does not do; [`auth`], [`credentials`] and [`credential_source`]
//! (credentials read again when their files change or a registry refuses them);
//! [`transport`], the floor every request stands on (the per-host throttle, the one retry
//! policy, bodies read within limits, paging, wire headers, TLS); [`error`], [`reasons`] and
//! [`error_body`], errors that keep what the registry answered as data; [`manifest`],
//! [`referrer_lists`] and [`verifying`], what is read is checked; [`placeholder`], how one
//! tag is removed where a registry deletes only manifests; [`lease`], the run lease two runs
//! deleting at one registry tell each other apart by; [`capabilities`], what a registry can do,
//! known without a request; [`tag_digests`], a repository's tags with their digests from one
//! paged listing of a registry's own API; [`visibility`], who may pull a repository, as a
//! hosted registry's API says.
//!
//! Arrows point down the floors and never back up: `http` and `hosted` import `auth` and
//! `transport`; `auth` imports `transport`; `transport` imports only the leaves (`error`,
//! `reasons`, `error_body`, `manifest`), which import nothing above them.

pub mod auth;
pub mod capabilities;
pub mod config;
pub mod credential_source;
pub mod credentials;
pub mod error;
pub mod error_body;
pub mod hosted;
pub mod http;
pub mod layout;
pub mod lease;
pub mod manifest;
#[cfg(test)]
pub mod memory;
pub mod overlay;
pub mod placeholder;
pub mod reasons;
pub mod referrer_lists;
pub mod tag_digests;
pub mod transport;
pub mod verifying;
pub mod visibility;

use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

use crate::reference::names::NameError;
use crate::reference::{Digest, Midstate};
use capabilities::Capabilities;
use tag_digests::TagDigests;

pub use error::{RegistryError, Result};
use transport::throttle;

/// A stream of blob bytes. Streams returned by [`Registry::get_blob`] are already verified:
/// they end with an error instead of a last chunk when size or digest is wrong.
pub type BlobStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// Where the bytes of a blob being uploaded come from. Reopened for every attempt.
#[async_trait]
pub trait BlobSource: Send + Sync {
    /// The blob's bytes from `from.offset()` on (the target has the ones before), not yet
    /// verified: [`Registry::put_blob`] verifies them, continuing the hash `from` holds of
    /// the bytes before, and commits nothing unless the whole blob matches its digest.
    async fn open(&self, from: &Midstate) -> Result<BlobStream>;

    /// Where the last [`BlobSource::open`] read from (a URL), for errors about its bytes.
    fn url(&self) -> Option<String> {
        None
    }

    /// The registry and repository the bytes are read from, when they are one: a simulated
    /// upload ([`overlay::Overlay`]) remembers it instead of reading them.
    fn origin(&self) -> Option<BlobOrigin> {
        None
    }
}

/// A blob held in memory, as a [`BlobSource`] (the `{}` config of
/// [`placeholder::manifest`]).
pub struct BytesSource(pub Bytes);

#[async_trait]
impl BlobSource for BytesSource {
    async fn open(&self, from: &Midstate) -> Result<BlobStream> {
        let start = usize::try_from(from.offset()).map_or(self.0.len(), |o| o.min(self.0.len()));
        let rest = self.0.slice(start..);
        Ok(Box::pin(futures::stream::iter([Ok(rest)])))
    }
}

/// A repository of a registry that holds a blob's bytes.
#[derive(Clone)]
pub struct BlobOrigin {
    pub registry: std::sync::Arc<dyn Registry>,
    pub repo: String,
}

/// A failed read of an upload's bytes is charged to the registry they come from.
impl transport::retry::Origin for BlobOrigin {
    fn name(&self) -> &str {
        self.registry.name()
    }

    fn charge_retry(&self, event: &throttle::Event) -> bool {
        self.registry.charge_retry(event)
    }
}

/// A blob read from an offset ([`Registry::get_blob_from`]): raw bytes from `start` on.
pub struct BlobTail {
    pub stream: BlobStream,
    /// Where `stream` begins: the offset asked for, or 0 where the registry sent the whole
    /// blob instead of the range.
    pub start: u64,
    /// Where the bytes come from, for errors about them.
    pub url: String,
}

/// Drop the first `skip` bytes of a stream (they still flow through any verification that
/// wraps the stream underneath).
pub fn skip_bytes(data: BlobStream, skip: u64) -> BlobStream {
    if skip == 0 {
        return data;
    }
    let mut left = skip;
    Box::pin(futures::StreamExt::filter_map(data, move |item| {
        let out = match item {
            Err(e) => Some(Err(e)),
            Ok(mut chunk) => {
                if left >= chunk.len() as u64 {
                    left -= chunk.len() as u64;
                    None
                } else {
                    let rest = chunk.split_off(left as usize);
                    left = 0;
                    Some(Ok(rest))
                }
            }
        };
        std::future::ready(out)
    }))
}

/// Progress of an upload, for the checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UploadProgress {
    /// The registry confirmed the bytes `state` hashed (`state.offset()` of them) in the
    /// session at `url`.
    Session { url: String, state: Midstate },
    /// The blob is complete at the target.
    Finished,
}

/// Everything [`Registry::put_blob`] needs.
pub struct BlobUpload<'a> {
    pub digest: &'a Digest,
    pub size: u64,
    pub source: &'a dyn BlobSource,
    /// An upload session a previous run left open for this blob.
    pub resume: Option<Parked>,
    /// Told about confirmed progress (chunked uploads) and completion.
    pub progress: &'a (dyn Fn(UploadProgress) + Send + Sync),
    /// Asked after each confirmed chunk: true when the run is stopping. The upload then
    /// stops there ([`RegistryError::Parked`]), its session and hash in the checkpoint, so
    /// no request body is ever cut.
    pub park: &'a (dyn Fn() -> bool + Send + Sync),
}

/// An upload session left open: where it is and the hash of the bytes it confirmed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parked {
    pub url: String,
    pub state: Midstate,
}

/// A manifest exactly as stored: its bytes are never re-serialised.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub media_type: String,
    pub bytes: Bytes,
    pub digest: Digest,
}

/// A manifest as a registry's own API records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestRecord {
    pub id: String,
    pub digest: Digest,
    pub tags: Vec<String>,
    pub created: Option<std::time::SystemTime>,
    /// The child manifests (with platforms) when the API tells them (Docker Hub's `images`),
    /// so the inventory needs no manifest reads; `None` when they must be read.
    pub children: Option<Vec<(Digest, Option<String>)>>,
}

/// A manifest that names another as its `subject` (OCI 1.1): a signature, an attestation, an
/// SBOM. As a referrers index lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Referrer {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    /// The manifest's `artifactType`, else its config's media type.
    pub artifact_type: Option<String>,
}

/// What a referrers list (the referrers API's pages, or a `sha256-<hex>` fallback index)
/// names: the referrers, and an error for each entry whose digest ferry cannot verify, so one
/// bad entry costs itself and not the others.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReferrerList {
    pub found: Vec<Referrer>,
    pub refused: Vec<NameError>,
}

/// What a registry said when it stored a manifest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pushed {
    /// The registry indexed the manifest's `subject` for its referrers API (it answered with
    /// `OCI-Subject`). When a manifest with a subject is pushed and this is false, the client
    /// maintains the `sha256-<hex>` fallback tag itself.
    pub subject_indexed: bool,
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

    /// Check that `repo` may be written, without writing anything that stays: a registry
    /// opens an upload session and cancels it.
    async fn check_push(&self, repo: &str) -> Result<()>;

    /// Check, where the registry allows it without deleting, that `repo` may be deleted from.
    /// `Ok(None)` when it cannot be checked this way; `Ok(Some(how))` when it was; the
    /// registry's refusal (a 405 where deletes are disabled, a 401 or 403) as an error.
    async fn check_delete(&self, _repo: &str) -> Result<Option<String>> {
        Ok(None)
    }

    /// What this registry can do, known without asking it (see [`Capabilities`]).
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    /// Take `requests` places in this registry's rate budget now, waiting for them as a
    /// request waits for its turn, for requests that must go out the moment the work before
    /// them ends: sent inside [`throttle::Turns::spend`], they do not wait for the rate limit
    /// again (a 429 pause still holds them). Retention takes the place of each DELETE before
    /// it looks at the repository again, so the look and the DELETE go back to back. Where
    /// the registry deletes through a hosted API with a pace of its own (GHCR's version
    /// DELETEs), the next deletion's place in that pace is taken too. Where nothing is
    /// throttled (layouts, overlays), no turns.
    async fn reserve(&self, _requests: u32) -> throttle::Turns {
        throttle::Turns::none()
    }

    /// What this registry cost the run so far (requests, 429s, retries, waits).
    fn stats(&self) -> Option<throttle::RegistryStats> {
        None
    }

    /// Count a retry that this registry caused in another's upload (the bytes read from here
    /// failed: a reset, a cut or wrong body), and tell of it as this registry's (`event`
    /// names it). False where this registry keeps no count (a layout).
    fn charge_retry(&self, _event: &throttle::Event) -> bool {
        false
    }

    /// Repositories whose path starts with `prefix` (for wildcard rules), as the registry
    /// listed them: untrusted, each to be checked ([`crate::reference::names::repository`], or for layouts
    /// [`layout::join_under`]) before it is used. A request about one that fails the grammar
    /// is refused anyway ([`RegistryError::InvalidName`]).
    async fn list_repositories(&self, prefix: &str) -> Result<Vec<String>>;

    /// Every tag of a repository, as the registry listed them: untrusted, each to be checked
    /// ([`crate::reference::names::tag`], [`crate::reference::names::sort_out`]) before it is used.
    async fn list_tags(&self, repo: &str) -> Result<Vec<String>>;

    /// Every tag of `repo` with the digest it points at, from the registry's own listing, a
    /// page at a time ([`Capabilities::lists_tag_digests`]: Docker Hub's tags API, GHCR's
    /// package versions), when reading it takes at most `max_pages` pages. `Ok(None)` where
    /// the registry has no such listing or cannot read it now (no token for it), and where the
    /// listing is longer (known from its first page where the API says how long it is, else
    /// by stopping there): the caller then asks tag by tag. A snapshot of the time its pages
    /// were read, untrusted: see [`TagDigests`].
    async fn tag_digests(&self, _repo: &str, _max_pages: usize) -> Result<Option<TagDigests>> {
        Ok(None)
    }

    /// The digest a tag or digest resolves to, or `None` when the manifest does not exist.
    async fn head_manifest(&self, repo: &str, reference: &str) -> Result<Option<ManifestHead>>;

    /// A manifest, its digest verified against the reference or the registry's header.
    async fn get_manifest(&self, repo: &str, reference: &str) -> Result<Manifest>;

    /// Store a manifest under a tag or (`reference` = its digest) untagged. The registry's
    /// reported digest is checked against `manifest.digest`.
    async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        manifest: &Manifest,
    ) -> Result<Pushed>;

    /// Does this registry answer the OCI 1.1 referrers API? Asked once per registry (a
    /// registry without it answers 404) and remembered; `repo` is where to ask. Not one of
    /// the [`Capabilities`]: learning it may take a request.
    async fn supports_referrers(&self, _repo: &str) -> Result<bool> {
        Ok(false)
    }

    /// What refers to `subject` by the OCI 1.1 referrers API, every page, filtered to
    /// `artifact_type` when given (by the registry where it applies the filter, else here).
    /// `None` where the registry has no referrers API: the caller then reads the
    /// `sha256-<hex>` fallback tag. Entries whose digest ferry cannot verify are in `refused`.
    async fn referrers(
        &self,
        _repo: &str,
        _subject: &Digest,
        _artifact_type: Option<&str>,
    ) -> Result<Option<ReferrerList>> {
        Ok(None)
    }

    /// Does the repository hold this blob?
    async fn blob_exists(&self, repo: &str, digest: &Digest) -> Result<bool>;

    /// Stream a blob; the stream verifies `size` and `digest` as bytes arrive.
    async fn get_blob(&self, repo: &str, digest: &Digest, size: u64) -> Result<BlobStream>;

    /// A blob's bytes from `offset` on, unverified (the caller continues the hash of the
    /// bytes before). Where the registry cannot serve a range, the whole blob from 0, still
    /// verified: the caller skips what it does not need.
    async fn get_blob_from(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
        _offset: u64,
    ) -> Result<BlobTail> {
        Ok(BlobTail {
            stream: self.get_blob(repo, digest, size).await?,
            start: 0,
            url: format!("{}/{repo}@{digest}", self.name()),
        })
    }

    /// Store a blob read from `upload.source`; nothing is committed unless the bytes match
    /// the digest. Transient failures are retried by reopening the source (skipping what the
    /// target already confirmed, for a chunked upload); an upload session a previous run left
    /// (`upload.resume`) is continued from the offset the registry reports.
    async fn put_blob(&self, repo: &str, upload: BlobUpload<'_>) -> Result<()>;

    /// Delete a manifest by digest. On distribution this removes every tag pointing at it,
    /// which is why retention decides per image, never per tag. Returns the registry's own
    /// id of what it deleted where it has one (a GHCR package version id), for the audit.
    async fn delete_manifest(&self, repo: &str, digest: &Digest) -> Result<Option<String>>;

    /// Remove the tag `tag` of `repo`, which points at `digest`, and nothing else: the manifest
    /// and its other tags stay. Returns the registry's own id of what it deleted, for the audit
    /// (the placeholder's GHCR package version id, "tag v1" on Docker Hub), where it has one.
    /// A tag that no longer points at `digest` is left alone ([`RegistryError::TagMoved`]); a
    /// tag already gone is `Ok(None)`. Where the registry deletes only manifests (CNCF
    /// distribution, GHCR), the tag is first moved onto a throw-away manifest
    /// ([`placeholder`]), which is then deleted.
    async fn delete_tag(&self, repo: &str, tag: &str, digest: &Digest) -> Result<Option<String>>;

    /// Put back a manifest its registry's own API deleted, by the id it recorded for it
    /// ([`Registry::delete_manifest`]'s: a GHCR package version, which GitHub keeps restorable
    /// for 30 days). `Ok(false)` where the registry has no such API: push the manifest's
    /// bytes back instead. A version the registry no longer has is an error that
    /// [`RegistryError::is_not_found`].
    async fn restore_version(&self, _repo: &str, _id: &str) -> Result<bool> {
        Ok(false)
    }

    /// What the registry records beyond the distribution API: every manifest of a repository
    /// with its own id, tags and push time, untagged ones included (GHCR's package versions).
    /// `None` where the registry has no such API.
    /// A record with a tag or digest that fails its check fails the whole listing: only
    /// retention reads records, and it must not judge a repository it cannot read whole.
    async fn manifest_records(&self, _repo: &str) -> Result<Option<Vec<ManifestRecord>>> {
        Ok(None)
    }

    /// Who may pull `repo`, as the registry's own API says (a GHCR package's `visibility`, a
    /// Docker Hub repository's `is_private`). `Ok(None)`: this registry cannot say (no such
    /// API, or no token for it). A repository the API does not know is an error that
    /// [`RegistryError::is_not_found`]; a refusal (a token without `read:packages`) an error.
    async fn visibility(&self, _repo: &str) -> Result<Option<visibility::RepoVisibility>> {
        Ok(None)
    }

    /// Make a blob that `from` (a repository of this same registry) holds available in `repo`
    /// without transferring it. `Ok(false)` when the registry declined.
    async fn mount_blob(&self, repo: &str, digest: &Digest, from: &str) -> Result<bool>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{stream, StreamExt};

    #[tokio::test]
    async fn a_bytes_source_opens_at_the_offset_asked() {
        let source = BytesSource(Bytes::from_static(b"abcdef"));
        let mut from = Midstate::new();
        for (skip, expected) in [(0, "abcdef"), (2, "cdef"), (6, "")] {
            from.update(&b"abcdef"[from.offset() as usize..skip]);
            let got: Vec<u8> = source
                .open(&from)
                .await
                .unwrap()
                .map(|c| c.unwrap().to_vec())
                .concat()
                .await;
            assert_eq!(String::from_utf8(got).unwrap(), expected, "from {skip}");
        }
    }

    #[tokio::test]
    async fn skip_bytes_drops_a_prefix_across_chunks() {
        let chunks = || ["abc", "defg", "hij"].map(|c| Ok(Bytes::from_static(c.as_bytes())));
        for (skip, expected) in [
            (0, "abcdefghij"),
            (2, "cdefghij"),
            (3, "defghij"),
            (5, "fghij"),
            (10, ""),
            (11, ""),
        ] {
            let s: BlobStream = Box::pin(stream::iter(chunks()));
            let got: Vec<u8> = skip_bytes(s, skip)
                .map(|c| c.unwrap().to_vec())
                .concat()
                .await;
            assert_eq!(String::from_utf8(got).unwrap(), expected, "skip {skip}");
        }
    }
}
