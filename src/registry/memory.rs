//! [`MemoryRegistry`]: a registry held in memory, behind the same [`Registry`] trait, so the
//! engine and retention are tested in-process in milliseconds. It keeps the rules of CNCF
//! distribution that ferry relies on: a manifest's digest is its bytes' digest, an image
//! manifest is refused while a blob it names is missing, a blob is stored only when its bytes
//! match its digest, a mount works only from a repository holding the blob, deleting a manifest
//! removes every tag pointing at it (deleting a tag, that tag alone), tags list sorted. What
//! only a real server proves (auth, uploads over HTTP, faults) stays with the integration
//! tests and the real docker-registry.
//!
//! Every call is counted by kind ([`MemoryRegistry::calls`]), so a test can say how many
//! requests a copy cost.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use super::capabilities::Capabilities;
use super::manifest::{self, Parsed};
use super::tag_digests::TagDigests;
use super::verifying::VerifyingStream;
use super::{
    BlobStream, BlobUpload, Manifest, ManifestHead, Pushed, Registry, RegistryError, Result,
    UploadProgress,
};
use crate::reference::Digest;

#[derive(Default)]
struct Repo {
    tags: BTreeMap<String, Digest>,
    manifests: HashMap<Digest, Manifest>,
    blobs: BTreeSet<Digest>,
}

#[derive(Default)]
struct Inner {
    repos: BTreeMap<String, Repo>,
    /// Blob bytes, by digest (shared by every repository that links the blob).
    bytes: HashMap<Digest, Bytes>,
    calls: BTreeMap<&'static str, usize>,
    /// Manifests whose deletion is refused for good, and the registry's words.
    refused: HashMap<Digest, (super::error::Refusal, String)>,
    /// [`Registry::tag_digests`] answers an error (see [`MemoryRegistry::fail_tag_listings`]).
    listings_fail: bool,
}

/// Tags a page of [`Registry::tag_digests`] lists, as Docker Hub's and GitHub's APIs do.
const LISTED_PER_PAGE: usize = 100;

/// See the module docs.
pub struct MemoryRegistry {
    name: String,
    capabilities: Capabilities,
    inner: Mutex<Inner>,
}

impl MemoryRegistry {
    pub fn new(name: &str) -> MemoryRegistry {
        MemoryRegistry {
            name: name.to_string(),
            capabilities: Capabilities::default(),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The same registry answering [`Registry::capabilities`] with `capabilities`; one that
    /// cannot mount declines every mount.
    pub fn with_capabilities(self, capabilities: Capabilities) -> MemoryRegistry {
        MemoryRegistry {
            capabilities,
            ..self
        }
    }

    fn with<T>(&self, call: &'static str, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut inner = self.inner.lock().expect("memory registry");
        *inner.calls.entry(call).or_default() += 1;
        f(&mut inner)
    }

    fn not_found(&self, what: String, repo: &str) -> RegistryError {
        RegistryError::NotFound {
            what,
            url: format!("{}/{repo}", self.name),
        }
    }

    /// Refuse for good to delete `digest` (as GHCR refuses a package's last tagged version or
    /// a popular one), saying `message`.
    pub fn refuse_delete(&self, digest: &Digest, refusal: super::error::Refusal, message: &str) {
        let mut inner = self.inner.lock().expect("memory registry");
        inner
            .refused
            .insert(digest.clone(), (refusal, message.to_string()));
    }

    /// Have every [`Registry::tag_digests`] from now on answer an error, as an API refusing
    /// a token would (a registry whose capabilities list tags with digests).
    pub fn fail_tag_listings(&self) {
        self.inner.lock().expect("memory registry").listings_fail = true;
    }

    /// Store a blob's bytes in `repo`, as a test fixture.
    pub fn add_blob(&self, repo: &str, bytes: &[u8]) -> Digest {
        let digest = Digest::sha256_of(bytes);
        let mut inner = self.inner.lock().expect("memory registry");
        inner
            .bytes
            .insert(digest.clone(), Bytes::copy_from_slice(bytes));
        inner
            .repos
            .entry(repo.to_string())
            .or_default()
            .blobs
            .insert(digest.clone());
        digest
    }

    /// Store a manifest under `reference` (a tag; its digest, or `""`: untagged), as a test
    /// fixture: no check.
    pub fn add_manifest(&self, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) {
        let m = Manifest {
            media_type: media_type.to_string(),
            digest: Digest::sha256_of(bytes),
            bytes: Bytes::copy_from_slice(bytes),
        };
        let mut inner = self.inner.lock().expect("memory registry");
        let r = inner.repos.entry(repo.to_string()).or_default();
        if !reference.is_empty() && Digest::parse(reference).is_none() {
            r.tags.insert(reference.to_string(), m.digest.clone());
        }
        r.manifests.insert(m.digest.clone(), m);
    }

    /// The tags of `repo` and the digests they point at.
    pub fn tags(&self, repo: &str) -> BTreeMap<String, Digest> {
        let inner = self.inner.lock().expect("memory registry");
        inner
            .repos
            .get(repo)
            .map(|r| r.tags.clone())
            .unwrap_or_default()
    }

    /// Take a blob out of `repo`, as a registry's garbage collection does once nothing names
    /// it.
    pub fn collect_blob(&self, repo: &str, digest: &Digest) {
        let mut inner = self.inner.lock().expect("memory registry");
        if let Some(r) = inner.repos.get_mut(repo) {
            r.blobs.remove(digest);
        }
    }

    /// Does `repo` hold this manifest?
    pub fn has_manifest(&self, repo: &str, digest: &Digest) -> bool {
        let inner = self.inner.lock().expect("memory registry");
        inner
            .repos
            .get(repo)
            .is_some_and(|r| r.manifests.contains_key(digest))
    }

    /// How many calls of each kind (`head_manifest`, `put_blob`, …) were made.
    pub fn calls(&self) -> BTreeMap<&'static str, usize> {
        self.inner.lock().expect("memory registry").calls.clone()
    }

    /// Every call made, of any kind.
    pub fn total_calls(&self) -> usize {
        self.calls().values().sum()
    }
}

/// Building test content: images, indexes and cosign signatures, pushed as a client would
/// (blobs first), each returning its manifest's digest.
impl MemoryRegistry {
    /// A single-platform OCI image of `layers` (its config names the platform and `created`),
    /// tagged `tag` (`""`: untagged, as an index's child).
    pub fn push_image(&self, repo: &str, tag: &str, layers: &[&[u8]], platform: &str) -> Digest {
        let (os, arch) = platform.split_once('/').unwrap_or(("linux", platform));
        let config = format!(
            r#"{{"architecture":"{arch}","os":"{os}","created":"2024-01-01T00:00:00Z","rootfs":{{"type":"layers","diff_ids":[]}}}}"#
        );
        let config = self.add_blob(repo, config.as_bytes());
        let descriptors: Vec<String> = layers
            .iter()
            .map(|l| {
                let d = self.add_blob(repo, l);
                format!(
                    r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{d}","size":{}}}"#,
                    l.len()
                )
            })
            .collect();
        let size = self.manifest_bytes(repo, config.as_str()).len();
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":{size}}},"layers":[{}]}}"#,
            manifest::OCI_MANIFEST,
            descriptors.join(",")
        );
        self.add_manifest(repo, tag, manifest::OCI_MANIFEST, body.as_bytes());
        Digest::sha256_of(body.as_bytes())
    }

    /// An OCI index of `children` (digests of images in `repo`, with their platforms).
    pub fn push_index(&self, repo: &str, tag: &str, children: &[(&Digest, &str)]) -> Digest {
        let entries: Vec<String> = children
            .iter()
            .map(|(d, platform)| {
                let (os, arch) = platform.split_once('/').unwrap_or(("linux", platform));
                let size = self.manifest_bytes(repo, d.as_str()).len();
                format!(
                    r#"{{"mediaType":"{}","digest":"{d}","size":{size},"platform":{{"os":"{os}","architecture":"{arch}"}}}}"#,
                    manifest::OCI_MANIFEST
                )
            })
            .collect();
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{}]}}"#,
            manifest::OCI_INDEX,
            entries.join(",")
        );
        self.add_manifest(repo, tag, manifest::OCI_INDEX, body.as_bytes());
        Digest::sha256_of(body.as_bytes())
    }

    /// A cosign-style signature of `subject`, under its `sha256-<hex>.sig` tag.
    pub fn push_signature(&self, repo: &str, subject: &Digest) -> (String, Digest) {
        let payload =
            format!(r#"{{"critical":{{"image":{{"docker-manifest-digest":"{subject}"}}}}}}"#);
        let tag = format!("{}-{}.sig", subject.algorithm(), subject.hex());
        (
            tag.clone(),
            self.push_image(repo, &tag, &[payload.as_bytes()], "linux/amd64"),
        )
    }

    /// A manifest's or blob's bytes (empty when absent).
    fn manifest_bytes(&self, repo: &str, digest: &str) -> Bytes {
        let inner = self.inner.lock().expect("memory registry");
        let d = Digest::parse(digest).expect("a digest");
        inner
            .repos
            .get(repo)
            .and_then(|r| r.manifests.get(&d).map(|m| m.bytes.clone()))
            .or_else(|| inner.bytes.get(&d).cloned())
            .unwrap_or_default()
    }
}

/// Why a manifest cannot be stored in `repo`: a blob or child it names is missing.
fn missing(repo: &Repo, m: &Manifest) -> Option<String> {
    match manifest::parse(&m.media_type, &m.bytes) {
        Err(reason) => Some(format!("MANIFEST_INVALID: {reason}")),
        Ok(Parsed::Image { config, layers }) => std::iter::once(config)
            .chain(layers)
            .find(|b| !b.is_foreign() && !repo.blobs.contains(&b.digest))
            .map(|b| {
                format!(
                    "MANIFEST_BLOB_UNKNOWN: blob unknown to registry: {}",
                    b.digest
                )
            }),
        Ok(Parsed::Index { children }) => children
            .iter()
            .find(|c| !repo.manifests.contains_key(&c.digest))
            .map(|c| format!("MANIFEST_BLOB_UNKNOWN: manifest unknown: {}", c.digest)),
    }
}

#[async_trait]
impl Registry for MemoryRegistry {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    async fn check_push(&self, _repo: &str) -> Result<()> {
        Ok(())
    }

    async fn list_repositories(&self, prefix: &str) -> Result<Vec<String>> {
        Ok(self.with("list_repositories", |i| {
            i.repos
                .keys()
                .filter(|r| r.starts_with(prefix))
                .cloned()
                .collect()
        }))
    }

    async fn list_tags(&self, repo: &str) -> Result<Vec<String>> {
        self.with("list_tags", |i| {
            i.repos.get(repo).map(|r| r.tags.keys().cloned().collect())
        })
        .ok_or_else(|| self.not_found("repository".into(), repo))
    }

    /// Where its capabilities say it lists tags with digests: its tags, one call per listing
    /// (counted as `tag_digests`), 100 to a page.
    async fn tag_digests(&self, repo: &str, max_pages: usize) -> Result<Option<TagDigests>> {
        if !self.capabilities.lists_tag_digests {
            return Ok(None);
        }
        let url = format!("{}/{repo}", self.name);
        self.with("tag_digests", |i| {
            if i.listings_fail {
                let reason = "the listing is refused".into();
                return Err(RegistryError::Protocol { url, reason });
            }
            let tags = i.repos.get(repo).map(|r| &r.tags);
            let tags = tags.ok_or_else(|| self.not_found("repository".into(), repo))?;
            let pages = tags.len().div_ceil(LISTED_PER_PAGE).max(1);
            if pages > max_pages {
                return Ok(None);
            }
            let mut listing = TagDigests::default();
            tags.iter().for_each(|(t, d)| listing.listed(t, d.as_str()));
            listing.requests = pages as u64;
            Ok(Some(listing))
        })
    }

    async fn head_manifest(&self, repo: &str, reference: &str) -> Result<Option<ManifestHead>> {
        Ok(self.with("head_manifest", |i| {
            let r = i.repos.get(repo)?;
            let digest = Digest::parse(reference).or_else(|| r.tags.get(reference).cloned())?;
            r.manifests.get(&digest).map(|m| ManifestHead {
                digest: m.digest.clone(),
                media_type: Some(m.media_type.clone()),
            })
        }))
    }

    async fn get_manifest(&self, repo: &str, reference: &str) -> Result<Manifest> {
        self.with("get_manifest", |i| {
            let r = i.repos.get(repo)?;
            let digest = Digest::parse(reference).or_else(|| r.tags.get(reference).cloned())?;
            r.manifests.get(&digest).cloned()
        })
        .ok_or_else(|| self.not_found(format!("manifest {reference}"), repo))
    }

    async fn put_manifest(&self, repo: &str, reference: &str, m: &Manifest) -> Result<Pushed> {
        let url = format!("{}/{repo}:{reference}", self.name);
        if m.digest.recompute(&m.bytes) != m.digest {
            return Err(RegistryError::DigestMismatch {
                url,
                expected: m.digest.to_string(),
                actual: m.digest.recompute(&m.bytes).to_string(),
            });
        }
        self.with("put_manifest", |i| {
            let r = i.repos.entry(repo.to_string()).or_default();
            if let Some(reason) = missing(r, m) {
                return Err(RegistryError::Protocol { url, reason });
            }
            r.manifests.insert(m.digest.clone(), m.clone());
            if Digest::parse(reference).is_none() {
                r.tags.insert(reference.to_string(), m.digest.clone());
            }
            Ok(Pushed::default())
        })
    }

    async fn blob_exists(&self, repo: &str, digest: &Digest) -> Result<bool> {
        Ok(self.with("blob_exists", |i| {
            i.repos.get(repo).is_some_and(|r| r.blobs.contains(digest))
        }))
    }

    async fn get_blob(&self, repo: &str, digest: &Digest, size: u64) -> Result<BlobStream> {
        let data = self
            .with("get_blob", |i| {
                let linked = i.repos.get(repo).is_some_and(|r| r.blobs.contains(digest));
                linked.then(|| i.bytes.get(digest).cloned()).flatten()
            })
            .ok_or_else(|| self.not_found(format!("blob {digest}"), repo))?;
        let url = format!("{}/{repo}@{digest}", self.name);
        let chunks = futures::stream::iter([Ok(data)]);
        Ok(Box::pin(VerifyingStream::new(
            chunks,
            url,
            digest.clone(),
            size,
        )))
    }

    async fn put_blob(&self, repo: &str, upload: BlobUpload<'_>) -> Result<()> {
        // Verified here too, whatever the source: only matching bytes are stored.
        let url = format!("{}/{repo}@{}", self.name, upload.digest);
        let source = upload
            .source
            .open(&crate::reference::Midstate::new())
            .await
            .map_err(|e| RegistryError::SourceFailed {
                source: Box::new(e),
            })?;
        let mut data = VerifyingStream::new(source, url, upload.digest.clone(), upload.size);
        let mut bytes = Vec::with_capacity(upload.size as usize);
        while let Some(chunk) = data.next().await {
            bytes.extend_from_slice(&chunk.map_err(|e| RegistryError::SourceFailed {
                source: Box::new(e),
            })?);
        }
        self.with("put_blob", |i| {
            i.bytes.insert(upload.digest.clone(), Bytes::from(bytes));
            i.repos
                .entry(repo.to_string())
                .or_default()
                .blobs
                .insert(upload.digest.clone());
        });
        (upload.progress)(UploadProgress::Finished);
        Ok(())
    }

    async fn delete_manifest(&self, repo: &str, digest: &Digest) -> Result<Option<String>> {
        let url = format!("{}/{repo}@{digest}", self.name);
        self.with("delete_manifest", |i| {
            if let Some((refusal, message)) = i.refused.get(digest) {
                return Err(RegistryError::Refused {
                    url,
                    refusal: *refusal,
                    message: message.clone(),
                    id: None,
                });
            }
            if let Some(r) = i.repos.get_mut(repo) {
                r.manifests.remove(digest);
                r.tags.retain(|_, d| d != digest);
            }
            Ok(None)
        })
    }

    async fn delete_tag(&self, repo: &str, tag: &str, digest: &Digest) -> Result<Option<String>> {
        let url = format!("{}/{repo}:{tag}", self.name);
        self.with("delete_tag", |i| {
            let Some(r) = i.repos.get_mut(repo) else {
                return Ok(None);
            };
            match r.tags.get(tag) {
                Some(actual) if actual != digest => {
                    Err(RegistryError::tag_moved(url, tag, digest, actual))
                }
                Some(_) => {
                    r.tags.remove(tag);
                    Ok(None)
                }
                None => Ok(None),
            }
        })
    }

    async fn mount_blob(&self, repo: &str, digest: &Digest, from: &str) -> Result<bool> {
        let can = self.capabilities.can_mount;
        Ok(self.with("mount_blob", |i| {
            let there = can && i.repos.get(from).is_some_and(|r| r.blobs.contains(digest));
            if there {
                i.repos
                    .entry(repo.to_string())
                    .or_default()
                    .blobs
                    .insert(digest.clone());
            }
            there
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn deleting_a_tag_keeps_the_manifest_and_its_other_tags() {
        let reg = MemoryRegistry::new("memory.test");
        let one = reg.push_image("team/app", "a", &[b"layer"], "linux/amd64");
        reg.add_manifest(
            "team/app",
            "b",
            manifest::OCI_MANIFEST,
            &reg.manifest_bytes("team/app", one.as_str()),
        );
        let two = reg.push_image("team/app", "c", &[b"other"], "linux/amd64");
        assert_eq!(reg.delete_tag("team/app", "b", &one).await.unwrap(), None);
        let tags = reg.tags("team/app");
        assert_eq!(tags.keys().collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(tags["a"], one);
        assert!(reg.has_manifest("team/app", &one));
        // Gone already, or in no repository: nothing to do.
        assert_eq!(reg.delete_tag("team/app", "b", &one).await.unwrap(), None);
        assert_eq!(reg.delete_tag("nowhere", "b", &one).await.unwrap(), None);
        // Pointing elsewhere: left alone.
        match reg.delete_tag("team/app", "c", &one).await {
            Err(RegistryError::TagMoved { actual, .. }) => assert_eq!(actual, two.to_string()),
            other => panic!("{other:?}"),
        }
        assert_eq!(reg.tags("team/app")["c"], two);
        assert_eq!(reg.calls()["delete_tag"], 4);
    }
}
