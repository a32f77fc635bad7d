//! [`Overlay`]: a registry as it will be once a run's writes are made, without making them.
//!
//! `ferry plan` runs the very stages `ferry run` runs (copies in stage order, then retention),
//! through the same engine, against an overlay of every registry of the plan. Reads go to the
//! registry underneath unless the simulation has written or deleted what they ask for; writes
//! stay in memory. So a staged promotion reads, in its second stage, the images its first stage
//! would have copied, and a `[[retain]]` on a copy target sees what the copies would have put
//! there: what `plan` prints is what `run` does, given unchanged registries, because it is the
//! same code deciding.
//!
//! The overlay models what each backend does with a write, no more: a tag points at the last
//! manifest put under it; deleting a manifest removes every tag pointing at it (as
//! distribution, GHCR versions, Docker Hub tags and layout `index.json` entries all do);
//! deleting a tag removes that tag alone (the placeholder a registry may need is not shown); a
//! registry's own records ([`RecordStyle`]) gain a version (GHCR) or a tag entry (Docker Hub)
//! per write, pushed "now". Blob bytes are never read: a blob put here remembers where its
//! bytes are ([`BlobOrigin`](super::BlobOrigin)), so retention can still read a copied image's config.
//!
//! What it cannot know it does not pretend to: whether a registry will refuse a write it would
//! accept here (an index with missing children on CNCF distribution, a quota, a permission) is
//! only learned by writing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;

use super::capabilities::{Capabilities, RecordStyle};
use super::manifest::{self, Parsed};
use super::tag_digests::TagDigests;
use super::{
    BlobStream, BlobUpload, Manifest, ManifestHead, ManifestRecord, Pushed, Referrer, ReferrerList,
    Registry, RegistryError, Result, UploadProgress,
};
use crate::reference::Digest;

mod repo_view;

use repo_view::{BlobBytes, RepoView, Written};

/// See the module docs.
pub struct Overlay {
    inner: Arc<dyn Registry>,
    repos: Mutex<HashMap<String, RepoView>>,
    /// Requests the run would send: reads made through, and writes simulated.
    requests: AtomicU64,
    /// Manifest GETs the run would send (Docker Hub counts each as a pull).
    pulls: AtomicU64,
    /// Remember what each tag read underneath pointed at (`seen`)? Only a deletion needs it.
    remembers: bool,
}

impl Overlay {
    pub fn new(inner: Arc<dyn Registry>) -> Overlay {
        Overlay {
            inner,
            repos: Mutex::new(HashMap::new()),
            requests: AtomicU64::new(0),
            pulls: AtomicU64::new(0),
            remembers: true,
        }
    }

    /// The plan deletes nothing here: `seen` is not kept, so a plan of 100,000 tags keeps
    /// nothing per tag (a deletion all the same still reads right: listings ask underneath).
    pub fn deletes_nothing(mut self) -> Overlay {
        self.remembers = false;
        self
    }

    fn saw(&self, v: &mut RepoView, tag: &str, digest: &Digest) {
        if self.remembers {
            v.seen.insert(tag.to_string(), digest.clone());
        }
    }

    /// About how many requests the simulated run sends to this registry.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// How many manifest GETs the simulated run sends to this registry: where it counts
    /// pulls ([`Capabilities::counts_pulls`]), the pulls the run needs.
    pub fn pulls(&self) -> u64 {
        self.pulls.load(Ordering::Relaxed)
    }

    /// The registry underneath, for what its responses showed (its pull budget).
    pub fn inner(&self) -> &Arc<dyn Registry> {
        &self.inner
    }

    fn count(&self, n: u64) {
        self.requests.fetch_add(n, Ordering::Relaxed);
    }

    /// Layout paths name one directory in several ways (`./out/a`, `out/a`): one key each.
    fn key(&self, repo: &str) -> String {
        match self.inner.name() {
            "oci:" => crate::reference::names::canonical_layout_path(repo),
            _ => repo.to_string(),
        }
    }

    fn with<T>(&self, repo: &str, f: impl FnOnce(&mut RepoView) -> T) -> T {
        let mut repos = self.repos.lock().expect("overlay");
        f(repos.entry(self.key(repo)).or_default())
    }

    fn exists(&self, repo: &str) -> bool {
        self.with(repo, |v| v.exists())
    }

    fn not_found(&self, repo: &str, reference: &str) -> RegistryError {
        let sep = if Digest::parse(reference).is_some() {
            "@"
        } else {
            ":"
        };
        RegistryError::NotFound {
            what: "manifest".into(),
            url: format!("{}/{repo}{sep}{reference}", self.inner.name()),
        }
    }

    /// Requests a tag deletion sends after its check: one where the registry deletes tags
    /// (Docker Hub's API, a layout's index), else the placeholder's config check, push and
    /// deletion.
    fn untag_requests(&self) -> u64 {
        match (self.inner.name(), self.inner.capabilities().record_style) {
            ("oci:", _) | (_, RecordStyle::Tags) => 1,
            _ => 3,
        }
    }

    /// What a layout refuses before its first write to a directory (one of other files),
    /// the overlay refuses too; what it has written there it may write again.
    fn writable(&self, repo: &str) -> Result<()> {
        match self.inner.name() == "oci:" && !self.exists(repo) {
            true => super::layout::writable::check(repo),
            false => Ok(()),
        }
    }

    /// A read of the registry underneath, where "not found" means "empty" for a repository
    /// the simulation created.
    fn absent_is_empty<T>(&self, repo: &str, r: Result<T>, empty: T) -> Result<T> {
        match r {
            Err(e) if e.is_not_found() && self.exists(repo) => Ok(empty),
            r => r,
        }
    }
}

/// The children of an index as Docker Hub's tag API lists them (platform `os/arch[/variant]`).
fn hub_children(m: &Manifest) -> Vec<(Digest, Option<String>)> {
    match manifest::parse(&m.media_type, &m.bytes) {
        Ok(Parsed::Index { children }) => children
            .into_iter()
            .filter(|c| c.digest != m.digest)
            .map(|c| (c.digest, c.platform))
            .collect(),
        _ => Vec::new(),
    }
}

#[async_trait]
impl Registry for Overlay {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn check_push(&self, repo: &str) -> Result<()> {
        self.inner.check_push(repo).await
    }

    async fn check_delete(&self, repo: &str) -> Result<Option<String>> {
        self.inner.check_delete(repo).await
    }

    /// The registry underneath's, but no upload outlives the process: the simulation keeps
    /// nothing.
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            resumable_uploads: false,
            ..self.inner.capabilities()
        }
    }

    async fn list_repositories(&self, prefix: &str) -> Result<Vec<String>> {
        self.count(1);
        // Named as the registry underneath names them: the prefix as given, then the rest. A
        // layout prefix is a directory: what is under it, not what merely starts like it.
        let layouts = self.inner.name() == "oci:";
        let key_prefix = match self.key(prefix) {
            k if layouts && !k.is_empty() && !k.ends_with('/') => format!("{k}/"),
            k => k,
        };
        let created: Vec<String> = {
            let repos = self.repos.lock().expect("overlay");
            repos
                .iter()
                .filter(|(k, v)| v.exists() && k.starts_with(&key_prefix))
                .map(|(k, _)| {
                    let rest = &k[key_prefix.len()..];
                    match layouts && !prefix.is_empty() && !prefix.ends_with('/') {
                        true => format!("{prefix}/{rest}"),
                        false => format!("{prefix}{rest}"),
                    }
                })
                .collect()
        };
        let mut repos = match self.inner.list_repositories(prefix).await {
            Ok(r) => r,
            Err(e) if e.is_not_found() && !created.is_empty() => Vec::new(),
            Err(e) => return Err(e),
        };
        let known: HashSet<String> = repos.iter().map(|r| self.key(r)).collect();
        repos.extend(
            created
                .into_iter()
                .filter(|r| !known.contains(&self.key(r))),
        );
        repos.sort();
        Ok(repos)
    }

    async fn list_tags(&self, repo: &str) -> Result<Vec<String>> {
        self.count(1);
        let listed = self.inner.list_tags(repo).await;
        let listed = self.absent_is_empty(repo, listed, Vec::new())?;
        let (changed, deleted, seen) =
            self.with(repo, |v| (v.tags.clone(), v.wiped.clone(), v.seen.clone()));
        let mut tags = Vec::with_capacity(listed.len() + changed.len());
        for tag in listed {
            if changed.contains_key(&tag) {
                continue;
            }
            if !deleted.is_empty() {
                // A tag of a manifest the simulation deleted is gone with it.
                let digest = match seen.get(&tag) {
                    Some(d) => Some(d.clone()),
                    // Asked underneath: this overlay's own answer hides a deleted digest.
                    None => {
                        self.count(1);
                        let head = self.inner.head_manifest(repo, &tag).await?;
                        if let Some(h) = &head {
                            self.with(repo, |v| self.saw(v, &tag, &h.digest));
                        }
                        head.map(|h| h.digest)
                    }
                };
                if digest.is_some_and(|d| deleted.contains(&d)) {
                    continue;
                }
            }
            tags.push(tag);
        }
        tags.extend(changed.into_iter().filter_map(|(t, d)| d.map(|_| t)));
        tags.sort();
        tags.dedup();
        Ok(tags)
    }

    /// The listing underneath as the run's writes would leave it (as `list_tags` does).
    async fn tag_digests(&self, repo: &str, max_pages: usize) -> Result<Option<TagDigests>> {
        let listed = self.inner.tag_digests(repo, max_pages).await;
        let empty = Some(TagDigests::default());
        let Some(mut listing) = self.absent_is_empty(repo, listed, empty)? else {
            return Ok(None);
        };
        self.count(listing.requests.max(1));
        let (tags, wiped) = self.with(repo, |v| (v.tags.clone(), v.wiped.clone()));
        listing.forget_digests(|d| wiped.contains(d));
        tags.iter().for_each(|(t, d)| listing.set(t, d.as_ref()));
        Ok(Some(listing))
    }

    async fn head_manifest(&self, repo: &str, reference: &str) -> Result<Option<ManifestHead>> {
        self.count(1);
        let digest = match Digest::parse(reference) {
            Some(d) => d,
            None => match self.with(repo, |v| v.tags.get(reference).cloned()) {
                Some(Some(d)) => d,
                Some(None) => return Ok(None),
                None => {
                    let head = self.inner.head_manifest(repo, reference).await?;
                    return Ok(match head {
                        Some(h) => self.with(repo, |v| {
                            self.saw(v, reference, &h.digest);
                            (!v.wiped.contains(&h.digest)).then_some(h)
                        }),
                        None => None,
                    });
                }
            },
        };
        let local = self.with(repo, |v| {
            if v.deleted.contains(&digest) {
                Some(None)
            } else {
                v.manifests.get(&digest).map(|w| {
                    Some(ManifestHead {
                        digest: digest.clone(),
                        media_type: Some(w.manifest.media_type.clone()),
                    })
                })
            }
        });
        match local {
            Some(head) => Ok(head),
            None => self.inner.head_manifest(repo, digest.as_str()).await,
        }
    }

    async fn get_manifest(&self, repo: &str, reference: &str) -> Result<Manifest> {
        self.count(1);
        self.pulls.fetch_add(1, Ordering::Relaxed);
        let digest = match Digest::parse(reference) {
            Some(d) => d,
            None => match self.with(repo, |v| v.tags.get(reference).cloned()) {
                Some(Some(d)) => d,
                Some(None) => return Err(self.not_found(repo, reference)),
                None => {
                    let m = self.inner.get_manifest(repo, reference).await?;
                    let deleted = self.with(repo, |v| {
                        self.saw(v, reference, &m.digest);
                        v.wiped.contains(&m.digest)
                    });
                    return match deleted {
                        true => Err(self.not_found(repo, reference)),
                        false => Ok(m),
                    };
                }
            },
        };
        let local = self.with(repo, |v| {
            if v.deleted.contains(&digest) {
                Some(None)
            } else {
                v.manifests.get(&digest).map(|w| Some(w.manifest.clone()))
            }
        });
        match local {
            Some(Some(m)) => Ok(m),
            Some(None) => Err(self.not_found(repo, reference)),
            None => self.inner.get_manifest(repo, digest.as_str()).await,
        }
    }

    async fn put_manifest(&self, repo: &str, reference: &str, m: &Manifest) -> Result<Pushed> {
        self.count(1);
        self.writable(repo)?;
        // A registry with the referrers API indexes a manifest's subject itself.
        let subject_indexed = manifest::subject_of(&m.bytes).is_some()
            && self.inner.supports_referrers(repo).await.unwrap_or(false);
        self.with(repo, |v| {
            v.deleted.remove(&m.digest);
            v.manifests.insert(
                m.digest.clone(),
                Written {
                    manifest: m.clone(),
                    pushed: SystemTime::now(),
                },
            );
            if Digest::parse(reference).is_none() {
                v.tags.insert(reference.to_string(), Some(m.digest.clone()));
            }
        });
        Ok(Pushed { subject_indexed })
    }

    async fn supports_referrers(&self, repo: &str) -> Result<bool> {
        self.inner.supports_referrers(repo).await
    }

    async fn referrers(
        &self,
        repo: &str,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Option<ReferrerList>> {
        self.count(1);
        let listed = self.inner.referrers(repo, subject, artifact_type).await;
        let Some(mut list) = self.absent_is_empty(repo, listed, Some(ReferrerList::default()))?
        else {
            return Ok(None);
        };
        let listed = &mut list.found;
        let (written, deleted) = self.with(repo, |v| {
            let written: Vec<Manifest> = v.manifests.values().map(|w| w.manifest.clone()).collect();
            (written, v.wiped.clone())
        });
        listed.retain(|r| !deleted.contains(&r.digest));
        for m in written {
            if manifest::subject_of(&m.bytes).as_ref() != Some(subject)
                || listed.iter().any(|r| r.digest == m.digest)
            {
                continue;
            }
            let kind = manifest::artifact_type_of(&m.bytes);
            if artifact_type.is_some_and(|t| kind.as_deref() != Some(t)) {
                continue;
            }
            listed.push(Referrer {
                digest: m.digest.clone(),
                media_type: m.media_type.clone(),
                size: m.bytes.len() as u64,
                artifact_type: kind,
            });
        }
        Ok(Some(list))
    }

    async fn blob_exists(&self, repo: &str, digest: &Digest) -> Result<bool> {
        self.count(1);
        if self.with(repo, |v| v.blobs.contains_key(digest)) {
            return Ok(true);
        }
        match self.inner.blob_exists(repo, digest).await {
            Err(e) if e.is_not_found() => Ok(false),
            r => r,
        }
    }

    async fn get_blob(&self, repo: &str, digest: &Digest, size: u64) -> Result<BlobStream> {
        self.count(1);
        match self.with(repo, |v| v.blobs.get(digest).cloned()) {
            None => self.inner.get_blob(repo, digest, size).await,
            Some(BlobBytes::From(origin)) => origin.registry.get_blob(&origin.repo, digest, size).await,
            Some(BlobBytes::Mounted(from)) => self.get_blob(&from, digest, size).await,
            Some(BlobBytes::Unknown) => Err(RegistryError::Protocol {
                url: format!("{}/{repo}@{digest}", self.name()),
                reason: "`ferry plan` cannot read this blob: the run would write it from a source it cannot reopen".into(),
            }),
        }
    }

    async fn put_blob(&self, repo: &str, upload: BlobUpload<'_>) -> Result<()> {
        // The POST that opens the session and the PUT that closes it.
        self.count(2);
        // The bytes are not read, but a blob missing at the source fails the run: ask.
        if let Some(origin) = upload.source.origin() {
            if !origin
                .registry
                .blob_exists(&origin.repo, upload.digest)
                .await?
            {
                return Err(RegistryError::SourceFailed {
                    source: Box::new(RegistryError::NotFound {
                        what: format!("blob {}", upload.digest),
                        url: format!("{}/{}", origin.registry.name(), origin.repo),
                    }),
                });
            }
        }
        self.writable(repo)?;
        let bytes = upload
            .source
            .origin()
            .map_or(BlobBytes::Unknown, BlobBytes::From);
        self.with(repo, |v| v.blobs.insert(upload.digest.clone(), bytes));
        (upload.progress)(UploadProgress::Finished);
        Ok(())
    }

    async fn delete_manifest(&self, repo: &str, digest: &Digest) -> Result<Option<String>> {
        self.count(1);
        self.with(repo, |v| {
            v.deleted.insert(digest.clone());
            v.wiped.insert(digest.clone());
            v.manifests.remove(digest);
            for d in v.tags.values_mut() {
                if d.as_ref() == Some(digest) {
                    *d = None;
                }
            }
            let gone: Vec<String> = v
                .seen
                .iter()
                .filter(|(_, d)| *d == digest)
                .map(|(t, _)| t.clone())
                .collect();
            for t in gone {
                v.tags.insert(t, None);
            }
        });
        Ok(None)
    }

    /// The tag reads as absent from then on; the manifest and its other tags stay readable.
    async fn delete_tag(&self, repo: &str, tag: &str, digest: &Digest) -> Result<Option<String>> {
        // The check a real deletion makes first, as this simulation now sees the tag.
        match self.head_manifest(repo, tag).await? {
            None => return Ok(None),
            Some(h) if h.digest != *digest => {
                let url = format!("{}/{repo}:{tag}", self.name());
                return Err(RegistryError::tag_moved(url, tag, digest, &h.digest));
            }
            Some(_) => {}
        }
        self.count(self.untag_requests());
        self.with(repo, |v| v.tags.insert(tag.to_string(), None));
        Ok(None)
    }

    async fn manifest_records(&self, repo: &str) -> Result<Option<Vec<ManifestRecord>>> {
        self.count(1);
        let style = self.inner.capabilities().record_style;
        let listed = self.inner.manifest_records(repo).await;
        let empty = (style != RecordStyle::None).then(Vec::new);
        let Some(mut records) = self.absent_is_empty(repo, listed, empty)? else {
            return Ok(None);
        };
        let (written, tags, deleted) = self.with(repo, |v| {
            (v.manifests.clone(), v.tags.clone(), v.wiped.clone())
        });
        records.retain(|r| !deleted.contains(&r.digest));
        for r in &mut records {
            r.tags.retain(|t| !tags.contains_key(t));
        }
        let mut by_digest: BTreeMap<Digest, ManifestRecord> =
            records.into_iter().map(|r| (r.digest.clone(), r)).collect();
        match style {
            RecordStyle::None => {}
            RecordStyle::Versions => {
                // GHCR: every manifest pushed is a package version, tagged or not.
                for (digest, w) in &written {
                    by_digest.entry(digest.clone()).or_insert(ManifestRecord {
                        id: String::new(),
                        digest: digest.clone(),
                        tags: Vec::new(),
                        created: Some(w.pushed),
                        children: None,
                    });
                }
                for (tag, digest) in &tags {
                    if let Some(r) = digest.as_ref().and_then(|d| by_digest.get_mut(d)) {
                        r.tags.push(tag.clone());
                    }
                }
            }
            RecordStyle::Tags => {
                // Docker Hub: one entry per tag, with the platforms of an index; a digest no
                // tag names is not listed.
                for (tag, digest) in &tags {
                    let Some(w) = digest.as_ref().and_then(|d| written.get(d)) else {
                        continue;
                    };
                    let r = by_digest
                        .entry(w.manifest.digest.clone())
                        .or_insert_with(|| ManifestRecord {
                            id: String::new(),
                            digest: w.manifest.digest.clone(),
                            tags: Vec::new(),
                            created: Some(w.pushed),
                            children: Some(hub_children(&w.manifest)),
                        });
                    r.tags.push(tag.clone());
                    r.created = r.created.max(Some(w.pushed));
                }
                by_digest.retain(|_, r| !r.tags.is_empty());
            }
        }
        for r in by_digest.values_mut() {
            r.tags.sort();
        }
        Ok(Some(by_digest.into_values().collect()))
    }

    async fn mount_blob(&self, repo: &str, digest: &Digest, from: &str) -> Result<bool> {
        self.count(1);
        if !self.inner.capabilities().can_mount || !self.blob_exists(from, digest).await? {
            return Ok(false);
        }
        // A repository that holds the blob already keeps what it has (a registry answers 201
        // too): recording it as mounted from a repository that got it from here would make
        // a cycle that no read could follow.
        self.with(repo, |v| {
            v.blobs
                .entry(digest.clone())
                .or_insert_with(|| BlobBytes::Mounted(from.to_string()));
        });
        Ok(true)
    }
}

#[cfg(test)]
mod tests;
