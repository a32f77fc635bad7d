//! [`LayoutRegistry`]: OCI image layout directories behind the same [`Registry`] trait, for
//! air-gapped moves and the demo. A "repository" is a layout directory path; tags are the
//! `org.opencontainers.image.ref.name` annotations of `index.json` entries.
//!
//! Writes are crash-safe: blobs go to a temporary file that is verified and then renamed into
//! place, and `index.json` is rewritten to a temporary file and renamed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;
use tokio_util::io::ReaderStream;

use super::capabilities::Capabilities;
use super::error::{RegistryError, Result};
use super::manifest::{self, ManifestError, MAX_MANIFEST_SIZE};
use super::transport::retry::{self, Origin};
use super::transport::throttle::Throttle;
use super::verifying::VerifyingStream;
use super::{BlobStream, BlobUpload, Manifest, ManifestHead, Pushed, Registry, UploadProgress};
use crate::reference::names;
use crate::reference::Digest;

const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// How deep a wildcard looks for layouts under its directory.
const MAX_WALK_DEPTH: usize = 6;

/// All OCI layouts on this machine, addressed by directory path.
#[derive(Default)]
pub struct LayoutRegistry {
    /// One lock per layout directory: `index.json` updates are read-modify-write.
    index_locks: Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>,
}

impl LayoutRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    fn blob_path(repo: &str, digest: &Digest) -> PathBuf {
        Path::new(repo)
            .join("blobs")
            .join(digest.algorithm())
            .join(digest.hex())
    }

    async fn index_lock(&self, repo: &str) -> Arc<Mutex<()>> {
        self.index_locks
            .lock()
            .await
            .entry(PathBuf::from(repo))
            .or_default()
            .clone()
    }

    async fn read_index(repo: &str) -> Result<Value> {
        let path = Path::new(repo).join("index.json");
        let text = tokio::fs::read(&path).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                RegistryError::NotFound {
                    what: format!("OCI layout (no index.json in {repo})"),
                    url: format!("oci:{repo}"),
                }
            } else {
                RegistryError::io(&path, e)
            }
        })?;
        serde_json::from_slice(&text).map_err(|e| RegistryError::InvalidManifest {
            url: path.display().to_string(),
            reason: ManifestError::LayoutIndex {
                message: e.to_string(),
            },
        })
    }

    /// Create the layout skeleton if the directory is not one yet, and only where a layout
    /// may be written ([`writable::check`]).
    async fn ensure_layout(repo: &str) -> Result<()> {
        let dir = Path::new(repo);
        if !dir.join("oci-layout").is_file() {
            writable::check(repo)?;
        }
        tokio::fs::create_dir_all(dir.join("blobs"))
            .await
            .map_err(|e| RegistryError::io(dir, e))?;
        let marker = dir.join("oci-layout");
        if !marker.exists() {
            create_if_missing(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#).await?;
        }
        let index = dir.join("index.json");
        if !index.exists() {
            let empty =
                json!({"schemaVersion": 2, "mediaType": manifest::OCI_INDEX, "manifests": []});
            create_if_missing(&index, &serde_json::to_vec_pretty(&empty).expect("json")).await?;
        }
        Ok(())
    }

    /// Find the index.json descriptor for a tag.
    async fn tagged(repo: &str, tag: &str) -> Result<Option<(Digest, Option<String>)>> {
        let index = Self::read_index(repo).await?;
        let entries = index["manifests"].as_array().cloned().unwrap_or_default();
        for d in entries {
            if d["annotations"][REF_NAME].as_str() == Some(tag) {
                let digest = Self::entry_digest(repo, tag, &d)?;
                return Ok(Some((digest, d["mediaType"].as_str().map(str::to_string))));
            }
        }
        Ok(None)
    }

    /// The digest of the `index.json` entry `d`, which names `tag`.
    fn entry_digest(repo: &str, tag: &str, d: &Value) -> Result<Digest> {
        d["digest"]
            .as_str()
            .and_then(Digest::parse)
            .ok_or_else(|| RegistryError::InvalidManifest {
                url: format!("oci:{repo}/index.json"),
                reason: ManifestError::LayoutTag {
                    tag: tag.to_string(),
                },
            })
    }

    /// Replace `index.json` whole (callers hold the index lock).
    async fn write_index(repo: &str, index: &Value) -> Result<()> {
        let path = Path::new(repo).join("index.json");
        write_atomic(&path, &serde_json::to_vec_pretty(index).expect("json")).await
    }

    /// Write a blob from a stream: verified, to a temporary file, renamed into place.
    /// Errors of the stream (including a digest mismatch) are the source's.
    async fn write_blob(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
        data: BlobStream,
    ) -> Result<()> {
        Self::ensure_layout(repo).await?;
        let path = Self::blob_path(repo, digest);
        if path.exists() {
            return Ok(());
        }
        let parent = path.parent().expect("blob paths have a parent");
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| RegistryError::io(parent, e))?;
        let tmp = tmp_path(&path);
        let result = async {
            let mut file = tokio::fs::File::create(&tmp)
                .await
                .map_err(|e| RegistryError::io(&tmp, e))?;
            // Verified here too, whatever the stream's origin: nothing unverified is renamed
            // into place.
            let mut data =
                VerifyingStream::new(data, path.display().to_string(), digest.clone(), size);
            while let Some(chunk) = data.next().await {
                let chunk = chunk.map_err(|e| match e {
                    e @ RegistryError::SourceFailed { .. } => e,
                    e => RegistryError::SourceFailed {
                        source: Box::new(e),
                    },
                })?;
                file.write_all(&chunk)
                    .await
                    .map_err(|e| RegistryError::io(&tmp, e))?;
            }
            file.flush().await.map_err(|e| RegistryError::io(&tmp, e))?;
            tokio::fs::rename(&tmp, &path)
                .await
                .map_err(|e| RegistryError::io(&path, e))
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }

    async fn write_blob_bytes(repo: &str, digest: &Digest, bytes: &[u8]) -> Result<()> {
        let path = Self::blob_path(repo, digest);
        if path.exists() {
            return Ok(());
        }
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| RegistryError::io(parent, e))?;
        }
        write_atomic(&path, bytes).await
    }
}

/// Write a file through a temporary sibling and a rename, so readers and crashes never see
/// half a file.
async fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    tokio::fs::write(&tmp, bytes)
        .await
        .map_err(|e| RegistryError::io(&tmp, e))?;
    tokio::fs::rename(&tmp, path)
        .await
        .map_err(|e| RegistryError::io(path, e))
}

/// Write `path` whole unless it exists, never replacing it: two copies starting on one new
/// layout at once must not have the second blank the index the first has already tagged.
async fn create_if_missing(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    tokio::fs::write(&tmp, bytes)
        .await
        .map_err(|e| RegistryError::io(&tmp, e))?;
    // A hard link appears whole or not at all, and fails where the name is taken.
    let linked = tokio::fs::hard_link(&tmp, path).await;
    let _ = tokio::fs::remove_file(&tmp).await;
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(RegistryError::io(path, e)),
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

/// The layout directory `rel` below `root` (a wildcard target's prefix, as in
/// `oci:/data/out/*`), refused unless it stays under `root`: `rel` (a repository a registry
/// listed, or a directory a layout walk found) must be a relative path of plain names (no
/// `..`, nothing absolute, no control characters), and no directory of it that already exists
/// may be a symbolic link (which could lead anywhere). `root` itself is the plan's, and
/// trusted. Returns the joined path in the plan's own spelling (`root` + `rel`).
pub fn join_under(root: &str, rel: &str) -> Result<String> {
    names::layout_path(rel)?;
    let joined = if root.is_empty() || root.ends_with('/') {
        format!("{root}{rel}")
    } else {
        format!("{root}/{rel}")
    };
    let outside = |path: &Path, reason: String| RegistryError::OutsideRoot {
        path: path.to_path_buf(),
        root: PathBuf::from(root),
        reason,
    };
    // Checked again on the joined path, as the file system will read it: every component
    // after the root's a plain name.
    let base = Path::new(if root.is_empty() { "." } else { root });
    let below = Path::new(&joined)
        .strip_prefix(base)
        .or_else(|_| Path::new(&joined).strip_prefix(root))
        .map_err(|_| outside(Path::new(&joined), "not a path below it".into()))?;
    let mut at = base.to_path_buf();
    for component in below.components() {
        let std::path::Component::Normal(name) = component else {
            return Err(outside(
                Path::new(&joined),
                format!("{component:?} is not a plain directory name"),
            ));
        };
        at.push(name);
        match std::fs::symlink_metadata(&at) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(outside(
                    Path::new(&joined),
                    format!("{} is a symbolic link", at.display()),
                ))
            }
            Ok(_) => {}
            // Not there yet: nothing below it exists either.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) => return Err(RegistryError::io(&at, e)),
        }
    }
    Ok(joined)
}

fn walk_layouts(dir: &Path, depth: usize, out: &mut Vec<String>) {
    if dir.join("oci-layout").is_file() {
        out.push(dir.display().to_string());
        return;
    }
    if depth == 0 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            walk_layouts(&e.path(), depth - 1, out);
        }
    }
}

#[async_trait]
impl Registry for LayoutRegistry {
    fn name(&self) -> &str {
        "oci:"
    }

    /// A layout never mounts.
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            can_mount: false,
            ..Capabilities::default()
        }
    }

    async fn list_repositories(&self, prefix: &str) -> Result<Vec<String>> {
        let root = if prefix.is_empty() { "." } else { prefix };
        let root = Path::new(root).to_path_buf();
        if !root.is_dir() {
            return Err(RegistryError::NotFound {
                what: "directory of OCI layouts".into(),
                url: format!("oci:{}", root.display()),
            });
        }
        let mut out = Vec::new();
        let entries = std::fs::read_dir(&root).map_err(|e| RegistryError::io(&root, e))?;
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk_layouts(&e.path(), MAX_WALK_DEPTH, &mut out);
            }
        }
        // Present them as `prefix` + relative path, so the target mapping strips the prefix.
        let mut repos: Vec<String> = out
            .into_iter()
            // ferry's own run leases are no rule's to copy or judge.
            .filter(|p| !super::lease::is_lease_repository(p))
            .map(|p| {
                let rel = Path::new(&p)
                    .strip_prefix(&root)
                    .map(|r| r.display().to_string())
                    .unwrap_or(p);
                format!("{prefix}{rel}")
            })
            .collect();
        repos.sort();
        Ok(repos)
    }

    async fn list_tags(&self, repo: &str) -> Result<Vec<String>> {
        let index = Self::read_index(repo).await?;
        let mut tags: Vec<String> = index["manifests"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|d| d["annotations"][REF_NAME].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        tags.sort();
        tags.dedup();
        Ok(tags)
    }

    async fn head_manifest(&self, repo: &str, reference: &str) -> Result<Option<ManifestHead>> {
        names::reference(reference)?;
        if !Path::new(repo).join("index.json").exists() {
            return Ok(None);
        }
        if let Some(d) = Digest::parse(reference) {
            return Ok(Self::blob_path(repo, &d).exists().then_some(ManifestHead {
                digest: d,
                media_type: None,
            }));
        }
        // A tag whose manifest blob is gone (a file deleted by hand) points at nothing there.
        Ok(Self::tagged(repo, reference)
            .await?
            .filter(|(digest, _)| Self::blob_path(repo, digest).exists())
            .map(|(digest, media_type)| ManifestHead { digest, media_type }))
    }

    async fn get_manifest(&self, repo: &str, reference: &str) -> Result<Manifest> {
        names::reference(reference)?;
        let (digest, listed_type) = match Digest::parse(reference) {
            Some(d) => (d, None),
            None => {
                Self::tagged(repo, reference)
                    .await?
                    .ok_or_else(|| RegistryError::NotFound {
                        what: format!("tag {reference}"),
                        url: format!("oci:{repo}"),
                    })?
            }
        };
        let path = Self::blob_path(repo, &digest);
        let meta = tokio::fs::metadata(&path).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                RegistryError::NotFound {
                    what: format!("manifest {digest}"),
                    url: format!("oci:{repo}"),
                }
            } else {
                RegistryError::io(&path, e)
            }
        })?;
        if meta.len() > MAX_MANIFEST_SIZE {
            return Err(RegistryError::InvalidManifest {
                url: path.display().to_string(),
                reason: ManifestError::OverLimit,
            });
        }
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|e| RegistryError::io(&path, e))?;
        let actual = digest.recompute(&bytes);
        if actual != digest {
            return Err(RegistryError::DigestMismatch {
                url: path.display().to_string(),
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        let media_type =
            manifest::media_type_of(&bytes, listed_type.as_deref()).ok_or_else(|| {
                RegistryError::InvalidManifest {
                    url: path.display().to_string(),
                    reason: ManifestError::NoMediaType {
                        besides: "its index.json entry",
                    },
                }
            })?;
        Ok(Manifest {
            media_type,
            bytes: Bytes::from(bytes),
            digest,
        })
    }

    async fn put_manifest(&self, repo: &str, reference: &str, m: &Manifest) -> Result<Pushed> {
        // A tag goes into index.json, where the next reader takes it for a name.
        names::reference(reference)?;
        Self::ensure_layout(repo).await?;
        Self::write_blob_bytes(repo, &m.digest, &m.bytes).await?;
        if Digest::parse(reference).is_some() {
            // By digest: a child of an index, reachable through its parent (or a referrer,
            // reachable through the fallback tag the engine maintains: a layout has no
            // referrers API).
            return Ok(Pushed::default());
        }
        let lock = self.index_lock(repo).await;
        let _guard = lock.lock().await;
        let mut index = Self::read_index(repo).await?;
        let mut entries: Vec<Value> = index["manifests"].as_array().cloned().unwrap_or_default();
        entries.retain(|d| d["annotations"][REF_NAME].as_str() != Some(reference));
        entries.push(json!({
            "mediaType": m.media_type,
            "digest": m.digest.as_str(),
            "size": m.bytes.len(),
            "annotations": { REF_NAME: reference },
        }));
        index["manifests"] = Value::Array(entries);
        Self::write_index(repo, &index).await?;
        Ok(Pushed::default())
    }

    async fn blob_exists(&self, repo: &str, digest: &Digest) -> Result<bool> {
        Ok(Self::blob_path(repo, digest).is_file())
    }

    async fn get_blob(&self, repo: &str, digest: &Digest, size: u64) -> Result<BlobStream> {
        let path = Self::blob_path(repo, digest);
        let file = tokio::fs::File::open(&path).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                RegistryError::NotFound {
                    what: format!("blob {digest}"),
                    url: format!("oci:{repo}"),
                }
            } else {
                RegistryError::io(&path, e)
            }
        })?;
        let err_path = path.clone();
        let stream = ReaderStream::with_capacity(file, 256 * 1024)
            .map(move |r| r.map_err(|e| RegistryError::io(&err_path, e)));
        Ok(Box::pin(VerifyingStream::new(
            Box::pin(stream),
            path.display().to_string(),
            digest.clone(),
            size,
        )))
    }

    async fn put_blob(&self, repo: &str, up: BlobUpload<'_>) -> Result<()> {
        // Local writes do not fail transiently; a remote source may, so attempts reopen it.
        let throttle = Throttle::new("oci:", None, None);
        let origin = up.source.origin();
        retry::retrying_from(
            &throttle,
            "oci:",
            "write blob",
            retry::DEFAULT_RETRIES,
            origin.as_ref().map(|o| o as &dyn Origin),
            || async {
                let data = up
                    .source
                    .open(&crate::reference::Midstate::new())
                    .await
                    .map_err(|e| RegistryError::SourceFailed {
                        source: Box::new(e),
                    })?;
                self.write_blob(repo, up.digest, up.size, data).await
            },
        )
        .await?;
        (up.progress)(UploadProgress::Finished);
        Ok(())
    }
    async fn check_push(&self, repo: &str) -> Result<()> {
        Self::ensure_layout(repo).await?;
        let probe = tmp_path(&Path::new(repo).join("blobs").join("probe"));
        tokio::fs::write(&probe, b"")
            .await
            .map_err(|e| RegistryError::io(&probe, e))?;
        let _ = tokio::fs::remove_file(&probe).await;
        Ok(())
    }

    async fn delete_manifest(&self, repo: &str, digest: &Digest) -> Result<Option<String>> {
        // As a registry does: the tags go, the blobs stay until a garbage collection.
        let lock = self.index_lock(repo).await;
        let _guard = lock.lock().await;
        let mut index = Self::read_index(repo).await?;
        let mut entries: Vec<Value> = index["manifests"].as_array().cloned().unwrap_or_default();
        entries.retain(|d| d["digest"].as_str() != Some(digest.as_str()));
        index["manifests"] = Value::Array(entries);
        Self::write_index(repo, &index).await?;
        Ok(None)
    }

    /// The `index.json` entry naming the tag goes; other entries (other tags of the digest)
    /// and the blobs stay. Under the index lock, rewritten atomically, as every index update.
    async fn delete_tag(&self, repo: &str, tag: &str, digest: &Digest) -> Result<Option<String>> {
        names::tag(tag)?;
        let lock = self.index_lock(repo).await;
        let _guard = lock.lock().await;
        let mut index = match Self::read_index(repo).await {
            // No layout: no tag to remove, as a registry answers of a missing repository.
            Err(e) if e.is_not_found() => return Ok(None),
            r => r?,
        };
        let mut entries: Vec<Value> = index["manifests"].as_array().cloned().unwrap_or_default();
        let names_tag = |d: &Value| d["annotations"][REF_NAME].as_str() == Some(tag);
        // Every entry naming the tag (an index.json written elsewhere may name one twice).
        for d in entries.iter().filter(|d| names_tag(d)) {
            let actual = Self::entry_digest(repo, tag, d)?;
            if actual != *digest {
                let url = format!("oci:{repo}:{tag}");
                return Err(RegistryError::tag_moved(url, tag, digest, &actual));
            }
        }
        let before = entries.len();
        entries.retain(|d| !names_tag(d));
        if entries.len() < before {
            index["manifests"] = Value::Array(entries);
            Self::write_index(repo, &index).await?;
        }
        Ok(None)
    }

    /// Layouts have no mounts: declining makes the engine stream the blob through digest
    /// verification, so a corrupt file in one layout is never propagated into another.
    async fn mount_blob(&self, _repo: &str, _digest: &Digest, _from: &str) -> Result<bool> {
        Ok(false)
    }
}

pub mod writable;

#[cfg(test)]
mod tests;
