//! [`Guarded`]: a registry that deletes only while the run holds its lease there. Retention and
//! pruning delete through it, so a lease lost to another run, or not renewed in time, stops
//! their deletions without either engine knowing of leases. Everything else passes through.
//!
//! Every method of [`Registry`] is forwarded here, defaults included: a method added to the
//! trait must be forwarded too, or the guarded registry would answer with the default.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;

use crate::reference::Digest;
use crate::registry::capabilities::Capabilities;
use crate::registry::tag_digests::TagDigests;
use crate::registry::transport::throttle;
use crate::registry::visibility::RepoVisibility;
use crate::registry::{
    BlobStream, BlobTail, BlobUpload, Manifest, ManifestHead, ManifestRecord, Pushed, ReferrerList,
    Registry, RegistryError, Result,
};

/// Whether the run may delete under one lease: until when (as renewals extend it), and why
/// not any more when it was lost.
pub struct Hold {
    /// `HOST/team/ferry-lease:lease`, for messages.
    spot: String,
    state: Mutex<HoldState>,
}

struct HoldState {
    until: Instant,
    lost: Option<String>,
}

impl Hold {
    /// Deletions allowed until `until`.
    pub fn new(spot: String, until: Instant) -> Hold {
        Hold {
            spot,
            state: Mutex::new(HoldState { until, lost: None }),
        }
    }

    /// A renewal went through: deletions allowed until `until`.
    pub fn extend(&self, until: Instant) {
        let mut s = self.state.lock().expect("lease hold");
        s.until = s.until.max(until);
    }

    /// No more deletions, because `why`.
    pub fn lose(&self, why: String) {
        let mut s = self.state.lock().expect("lease hold");
        s.lost.get_or_insert(why);
    }

    /// Why no more deletions are made, if that is so.
    pub fn stopped(&self) -> Option<String> {
        let s = self.state.lock().expect("lease hold");
        if let Some(why) = &s.lost {
            return Some(why.clone());
        }
        (Instant::now() >= s.until).then(|| {
            format!(
                "the run lease {} could not be renewed in time, so this run deletes no more",
                self.spot
            )
        })
    }
}

/// A registry whose deletions wait for nothing but are refused once the [`Hold`] says so.
pub struct Guarded {
    inner: Arc<dyn Registry>,
    hold: Arc<Hold>,
}

impl Guarded {
    pub fn new(inner: Arc<dyn Registry>, hold: Arc<Hold>) -> Guarded {
        Guarded { inner, hold }
    }

    /// Refused, naming what would have been deleted, when the hold says so.
    fn allowed(&self, what: impl FnOnce() -> String) -> Result<()> {
        match self.hold.stopped() {
            None => Ok(()),
            Some(why) => Err(RegistryError::Protocol {
                url: what(),
                reason: format!("not deleted: {why}"),
            }),
        }
    }
}

#[async_trait]
impl Registry for Guarded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn check_push(&self, repo: &str) -> Result<()> {
        self.inner.check_push(repo).await
    }

    async fn check_delete(&self, repo: &str) -> Result<Option<String>> {
        self.inner.check_delete(repo).await
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn stats(&self) -> Option<throttle::RegistryStats> {
        self.inner.stats()
    }

    fn charge_retry(&self, event: &throttle::Event) -> bool {
        self.inner.charge_retry(event)
    }

    async fn reserve(&self, requests: u32) -> throttle::Turns {
        self.inner.reserve(requests).await
    }

    async fn list_repositories(&self, prefix: &str) -> Result<Vec<String>> {
        self.inner.list_repositories(prefix).await
    }

    async fn list_tags(&self, repo: &str) -> Result<Vec<String>> {
        self.inner.list_tags(repo).await
    }

    async fn tag_digests(&self, repo: &str, max_pages: usize) -> Result<Option<TagDigests>> {
        self.inner.tag_digests(repo, max_pages).await
    }

    async fn head_manifest(&self, repo: &str, reference: &str) -> Result<Option<ManifestHead>> {
        self.inner.head_manifest(repo, reference).await
    }

    async fn get_manifest(&self, repo: &str, reference: &str) -> Result<Manifest> {
        self.inner.get_manifest(repo, reference).await
    }

    async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        manifest: &Manifest,
    ) -> Result<Pushed> {
        self.inner.put_manifest(repo, reference, manifest).await
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
        self.inner.referrers(repo, subject, artifact_type).await
    }

    async fn blob_exists(&self, repo: &str, digest: &Digest) -> Result<bool> {
        self.inner.blob_exists(repo, digest).await
    }

    async fn get_blob(&self, repo: &str, digest: &Digest, size: u64) -> Result<BlobStream> {
        self.inner.get_blob(repo, digest, size).await
    }

    async fn get_blob_from(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
        offset: u64,
    ) -> Result<BlobTail> {
        self.inner.get_blob_from(repo, digest, size, offset).await
    }

    async fn put_blob(&self, repo: &str, upload: BlobUpload<'_>) -> Result<()> {
        self.inner.put_blob(repo, upload).await
    }

    async fn delete_manifest(&self, repo: &str, digest: &Digest) -> Result<Option<String>> {
        self.allowed(|| format!("{}/{repo}@{digest}", self.name()))?;
        self.inner.delete_manifest(repo, digest).await
    }

    async fn delete_tag(&self, repo: &str, tag: &str, digest: &Digest) -> Result<Option<String>> {
        self.allowed(|| format!("{}/{repo}:{tag}", self.name()))?;
        self.inner.delete_tag(repo, tag, digest).await
    }

    async fn manifest_records(&self, repo: &str) -> Result<Option<Vec<ManifestRecord>>> {
        self.inner.manifest_records(repo).await
    }

    /// Putting back is not deleting: no lease is needed for it.
    async fn restore_version(&self, repo: &str, id: &str) -> Result<bool> {
        self.inner.restore_version(repo, id).await
    }

    async fn visibility(&self, repo: &str) -> Result<Option<RepoVisibility>> {
        self.inner.visibility(repo).await
    }

    async fn mount_blob(&self, repo: &str, digest: &Digest, from: &str) -> Result<bool> {
        self.inner.mount_blob(repo, digest, from).await
    }
}
