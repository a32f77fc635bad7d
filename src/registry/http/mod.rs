//! [`HttpRegistry`]: the distribution API over reqwest (rustls), split by resource as
//! regclient splits `scheme/reg`:
//!
//! - `client.rs`: the type, how it is built from a registry's settings, its URLs;
//! - `send.rs`: every request, with the host's throttle and connection permit, auth (a 401
//!   answered once with the challenge's credentials) and 429 pauses;
//! - `manifests.rs`, `blobs.rs` and `upload.rs`, `tags.rs` (tags and catalog),
//!   `referrers.rs`: one file per resource;
//! - `single.rs` and `single_post.rs`: the single-request upload and what the run knows of
//!   it; `upload_source.rs`: an upload's source bytes and their failures;
//! - below, in [`transport`](crate::registry::transport): the one
//!   [`Pager`](crate::registry::transport::pager::Pager) of every paged listing, bounded and
//!   watched bodies and error answers (`body.rs`), digest checks and upload offsets
//!   (`wire.rs`).
//!
//! Every operation runs under the registry's one [`RetryPolicy`], uploads included. What the
//! distribution API does not do (listing a namespace, deleting on GHCR and Docker Hub, deleting
//! one tag on Docker Hub) the registry's [`HostedApi`], chosen once when the client is built,
//! does; one tag elsewhere is removed the [`placeholder`](crate::registry::placeholder) way.
//! Blob bodies are streamed both ways and verified while they flow.
//!
//! [`RetryPolicy`]: crate::registry::transport::retry::RetryPolicy
//! [`HostedApi`]: crate::registry::hosted::HostedApi

use async_trait::async_trait;

mod blobs;
mod chunks;
mod client;
mod manifests;
mod referrers;
mod send;
mod single;
mod single_post;
mod tags;
mod upload;
mod upload_source;

pub use client::HttpRegistry;
pub use single_post::PROBE_MAX;
pub use upload::{CHUNK_SIZE, MONOLITHIC_MAX};

use super::capabilities::{Capabilities, RecordStyle};
use super::error::Result;
use super::tag_digests::TagDigests;
use super::transport::throttle::RegistryStats;
use super::visibility::RepoVisibility;
use super::{
    BlobStream, BlobTail, BlobUpload, Manifest, ManifestHead, ManifestRecord, Pushed, ReferrerList,
    Registry,
};
use crate::reference::names;
use crate::reference::Digest;

/// The trait, each operation under the retry policy; the hosted API where the registry has
/// one for it.
#[async_trait]
impl Registry for HttpRegistry {
    fn name(&self) -> &str {
        &self.name
    }

    /// Uploads resume across runs; the registry's hosted API, where it has one, tells how it
    /// records manifests, whether it counts pulls and whether it lists tags with digests.
    fn capabilities(&self) -> Capabilities {
        let hosted = self.hosted.as_ref();
        Capabilities {
            record_style: hosted.map_or(RecordStyle::None, |v| v.record_style()),
            resumable_uploads: true,
            counts_pulls: hosted.is_some_and(|v| v.counts_pulls()),
            can_mount: true,
            lists_tag_digests: hosted.is_some_and(|v| v.lists_tag_digests()),
        }
    }

    fn stats(&self) -> Option<RegistryStats> {
        let mut stats = self.throttle.stats();
        stats.single_post = self.single_post.known();
        Some(stats)
    }

    async fn reserve(&self, requests: u32) -> super::transport::throttle::Turns {
        let turns = self.throttle.reserve(requests).await;
        if let Some(v) = &self.hosted {
            v.reserve_delete().await;
        }
        turns
    }

    fn charge_retry(&self, event: &super::transport::throttle::Event) -> bool {
        self.throttle.notify(event.clone());
        true
    }

    async fn check_push(&self, repo: &str) -> Result<()> {
        let location = self.start_upload(repo).await?;
        // Cancel the session: the check leaves nothing behind.
        self.cancel_session(repo, &location).await;
        Ok(())
    }

    async fn check_delete(&self, repo: &str) -> Result<Option<String>> {
        match &self.hosted {
            Some(v) => v.check_delete(repo).await,
            None => self
                .retry
                .run("check delete", || self.probe_delete_once(repo))
                .await
                .map(Some),
        }
    }

    async fn list_repositories(&self, prefix: &str) -> Result<Vec<String>> {
        let mut repos = match &self.hosted {
            Some(v) => v.list_repositories(prefix).await,
            None => {
                self.retry
                    .run("list repositories", || self.catalog_once(prefix))
                    .await
            }
        }?;
        // ferry's own run leases are no rule's to copy or judge.
        repos.retain(|r| !crate::registry::lease::is_lease_repository(r));
        Ok(repos)
    }

    async fn list_tags(&self, repo: &str) -> Result<Vec<String>> {
        self.retry
            .run("list tags", || self.list_tags_once(repo))
            .await
    }

    async fn visibility(&self, repo: &str) -> Result<Option<RepoVisibility>> {
        match &self.hosted {
            Some(v) => v.visibility(repo).await,
            None => Ok(None),
        }
    }

    async fn tag_digests(&self, repo: &str, max_pages: usize) -> Result<Option<TagDigests>> {
        match &self.hosted {
            Some(v) => v.tag_digests(repo, max_pages).await,
            None => Ok(None),
        }
    }

    async fn head_manifest(&self, repo: &str, reference: &str) -> Result<Option<ManifestHead>> {
        self.retry
            .run("HEAD manifest", || self.head_manifest_once(repo, reference))
            .await
    }

    async fn get_manifest(&self, repo: &str, reference: &str) -> Result<Manifest> {
        self.retry
            .run("GET manifest", || self.get_manifest_once(repo, reference))
            .await
    }

    async fn put_manifest(&self, repo: &str, reference: &str, m: &Manifest) -> Result<Pushed> {
        self.retry
            .run("PUT manifest", || {
                self.put_manifest_once(repo, reference, m)
            })
            .await
    }

    async fn supports_referrers(&self, repo: &str) -> Result<bool> {
        self.has_referrers_api(repo).await
    }

    async fn referrers(
        &self,
        repo: &str,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Option<ReferrerList>> {
        self.retry
            .run("GET referrers", || {
                self.referrers_once(repo, subject, artifact_type)
            })
            .await
    }

    async fn blob_exists(&self, repo: &str, digest: &Digest) -> Result<bool> {
        let there = self
            .retry
            .run("HEAD blob", || self.blob_exists_once(repo, digest))
            .await?;
        if there {
            // No upload follows: a declined mount's session goes.
            self.cancel_declined(repo, digest).await;
        }
        Ok(there)
    }

    async fn get_blob(&self, repo: &str, digest: &Digest, size: u64) -> Result<BlobStream> {
        self.retry
            .run("GET blob", || self.get_blob_once(repo, digest, size))
            .await
    }

    async fn get_blob_from(
        &self,
        repo: &str,
        digest: &Digest,
        _size: u64,
        offset: u64,
    ) -> Result<BlobTail> {
        self.retry
            .run("GET blob", || self.get_blob_from_once(repo, digest, offset))
            .await
    }

    async fn put_blob(&self, repo: &str, upload: BlobUpload<'_>) -> Result<()> {
        self.upload(repo, upload).await
    }

    async fn delete_manifest(&self, repo: &str, digest: &Digest) -> Result<Option<String>> {
        if let Some(v) = &self.hosted {
            return v.delete_manifest(repo, digest).await;
        }
        self.retry
            .run("DELETE manifest", || {
                self.delete_manifest_once(repo, digest)
            })
            .await?;
        Ok(None)
    }

    /// Checked first with a HEAD (no pull on Docker Hub); then the hosted API where it deletes
    /// tags (Docker Hub), else the [`placeholder`](crate::registry::placeholder) way, which
    /// looks again right before it moves the tag.
    async fn delete_tag(&self, repo: &str, tag: &str, digest: &Digest) -> Result<Option<String>> {
        names::tag(tag)?;
        if !self.tag_is_at(repo, tag, digest).await? {
            return Ok(None);
        }
        let by_hosted = match &self.hosted {
            Some(v) => v.delete_tag(repo, tag).await,
            None => None,
        };
        match by_hosted {
            Some(done) => done,
            None => self.untag_by_placeholder(repo, tag, digest).await,
        }
    }

    async fn restore_version(&self, repo: &str, id: &str) -> Result<bool> {
        let restored = match &self.hosted {
            Some(v) => v.restore_version(repo, id).await,
            None => None,
        };
        restored.transpose().map(|r| r.is_some())
    }

    async fn manifest_records(&self, repo: &str) -> Result<Option<Vec<ManifestRecord>>> {
        match &self.hosted {
            Some(v) => Ok(Some(v.manifest_records(repo).await?)),
            None => Ok(None),
        }
    }

    async fn mount_blob(&self, repo: &str, digest: &Digest, from: &str) -> Result<bool> {
        self.retry
            .run("mount blob", || self.mount_blob_once(repo, digest, from))
            .await
    }
}

#[cfg(test)]
mod tests;
