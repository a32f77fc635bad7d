//! The hosted registries' own APIs, for what some registries do only through them: listing a
//! namespace's repositories where there is no catalog, reading every manifest as the registry
//! records it (with ids, tags, push times), listing every tag with its digest a page at a time
//! (so that a run asks no question per tag), deleting (a manifest; on Docker Hub, one tag too),
//! and checking beforehand that deleting will be allowed. [`HostedApi`] is that API; the
//! GitHub Packages API ([`github_packages`], for GHCR) and the Docker Hub API ([`docker_hub`])
//! implement it. The HTTP client picks one once, from the registry's
//! [`Flavor`](super::config::Flavor), when it is built, and asks it instead of the
//! distribution API for these operations.
//!
//! This module stands on [`auth`](super::auth)'s credentials and the
//! [`transport`](super::transport) floor; this file holds what both clients share (the trait,
//! [`Context`], [`RecordCache`]) and calls neither.

pub mod docker_hub;
pub mod github_packages;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use url::Url;

use super::capabilities::RecordStyle;
use super::credential_source::CredentialSource;
use super::credentials::Credential;
use super::error::Result;
use super::tag_digests::TagDigests;
use super::transport::retry::RetryPolicy;
use super::transport::throttle::Throttle;
use super::visibility::RepoVisibility;
use super::ManifestRecord;
use crate::reference::Digest;

/// A registry's own API, for what the distribution API does not do (see the module docs).
#[async_trait]
pub trait HostedApi: Send + Sync {
    /// How [`HostedApi::manifest_records`] describes a repository.
    fn record_style(&self) -> RecordStyle;

    /// What is known of the registry's OCI referrers API without asking it: `Some(false)` to
    /// find referrers by their tags only. `None`: ask the registry.
    fn referrers_api(&self) -> Option<bool> {
        None
    }

    /// Does the registry count each manifest GET as a pull against a limit (a HEAD not)?
    fn counts_pulls(&self) -> bool {
        false
    }

    /// Check, without deleting, that `repo` may be deleted from; says how it was checked.
    async fn check_delete(&self, repo: &str) -> Result<Option<String>>;

    /// Repositories whose path starts with `prefix`, as the API lists them (untrusted).
    async fn list_repositories(&self, prefix: &str) -> Result<Vec<String>>;

    /// Every manifest of `repo` as the API records it (see
    /// [`super::Registry::manifest_records`]).
    async fn manifest_records(&self, repo: &str) -> Result<Vec<ManifestRecord>>;

    /// Does [`HostedApi::tag_digests`] list anything here?
    fn lists_tag_digests(&self) -> bool {
        false
    }

    /// Every tag of `repo` with its digest, from one paged listing, when it takes at most
    /// `max_pages` pages (see [`super::Registry::tag_digests`]). `Ok(None)` where the API
    /// cannot list them now, and where the listing is longer.
    async fn tag_digests(&self, _repo: &str, _max_pages: usize) -> Result<Option<TagDigests>> {
        Ok(None)
    }

    /// Take the place of the next [`HostedApi::delete_manifest`] in the API's own pace now,
    /// so that it goes without waiting for it (see [`super::Registry::reserve`]); nothing
    /// where the API paces nothing.
    async fn reserve_delete(&self) {}

    /// Delete the manifest `digest` of `repo` the API's way; its id or tags, for the audit.
    async fn delete_manifest(&self, repo: &str, digest: &Digest) -> Result<Option<String>>;

    /// Delete the one tag `tag` of `repo` (already checked to point at the manifest it is
    /// removed from) the API's way: what it deleted, for the audit, or `Ok(None)` when the tag
    /// was gone. `None` when this API does not delete single tags: the client then moves the
    /// tag onto a placeholder and deletes that ([`super::placeholder`]).
    async fn delete_tag(&self, _repo: &str, _tag: &str) -> Option<Result<Option<String>>> {
        None
    }

    /// Who may pull `repo` (see [`super::Registry::visibility`]); `Ok(None)` where this API
    /// cannot say.
    async fn visibility(&self, _repo: &str) -> Result<Option<RepoVisibility>> {
        Ok(None)
    }

    /// Restore the manifest `repo` had under the API's id `id` (see
    /// [`super::Registry::restore_version`]). `None` when this API restores nothing.
    async fn restore_version(&self, _repo: &str, _id: &str) -> Option<Result<()>> {
        None
    }
}

/// What a hosted API client is built from: the registry's client and settings.
pub struct Context {
    /// The registry's host, as the plan names it.
    pub registry: String,
    /// The registry's HTTP client (with its read timeout and trusted roots).
    pub client: reqwest::Client,
    /// The registry's credential source (the one its distribution client asks): each request
    /// (GitHub) or login (Docker Hub) takes the credential it gives then.
    pub credentials: Arc<dyn CredentialSource>,
    /// The plan's `api` for the registry; each hosted API has its default.
    pub api: Option<Url>,
    pub throttle: Arc<Throttle>,
    pub retry: RetryPolicy,
    pub stall: Duration,
}

/// The credential `source` gives after the API refused `refused`: the source read again (a
/// file re-read, a helper run: off the async threads). `None` when that gives the same
/// credential, so that a refusal is sent again only with a credential that changed.
pub async fn reread(
    source: &Arc<dyn CredentialSource>,
    refused: &Credential,
) -> Result<Option<Credential>> {
    let source = source.clone();
    let again = tokio::task::spawn_blocking(move || source.refresh())
        .await
        .expect("reading the credential source does not panic")?;
    Ok((!again.same(refused)).then_some(again))
}

/// The records [`HostedApi::manifest_records`] last read per repository: deletions right
/// after the inventory look ids and tags up here instead of listing the repository again.
#[derive(Default)]
pub struct RecordCache(std::sync::Mutex<HashMap<String, Vec<ManifestRecord>>>);

impl RecordCache {
    pub fn keep(&self, repo: &str, records: &[ManifestRecord]) {
        self.0
            .lock()
            .expect("records cache")
            .insert(repo.to_string(), records.to_vec());
    }

    /// The record of `digest` in `repo`: from the last read of the repository when it has
    /// the digest, else from `read` (which lists it now: a manifest pushed since, such as a
    /// [`super::placeholder`], is found). A digest the last read names as a child of a record
    /// (Docker Hub lists an index's platforms with it) has no record of its own: `None`,
    /// without listing again.
    pub async fn record_of(
        &self,
        repo: &str,
        digest: &Digest,
        read: impl std::future::Future<Output = Result<Vec<ManifestRecord>>>,
    ) -> Result<Option<ManifestRecord>> {
        let cached = self
            .0
            .lock()
            .expect("records cache")
            .get(repo)
            .and_then(|rs| {
                if let Some(r) = rs.iter().find(|r| &r.digest == digest) {
                    return Some(Some(r.clone()));
                }
                let child = |r: &ManifestRecord| {
                    r.children
                        .as_ref()
                        .is_some_and(|cs| cs.iter().any(|(c, _)| c == digest))
                };
                rs.iter().any(child).then_some(None)
            });
        match cached {
            Some(found) => Ok(found),
            None => Ok(read.await?.into_iter().find(|r| &r.digest == digest)),
        }
    }

    /// Forget `tag` in the last read of `repo`: it was deleted. A record left without tags
    /// goes too, as from a listing of tags (Docker Hub's), which names no digest without one.
    pub fn forget_tag(&self, repo: &str, tag: &str) {
        if let Some(rs) = self.0.lock().expect("records cache").get_mut(repo) {
            rs.iter_mut().for_each(|r| r.tags.retain(|t| t != tag));
            rs.retain(|r| !r.tags.is_empty());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn record(n: u8, tags: &[&str], children: &[u8]) -> ManifestRecord {
        ManifestRecord {
            id: n.to_string(),
            digest: Digest::sha256_of(&[n]),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            created: None,
            children: Some(
                children
                    .iter()
                    .map(|c| (Digest::sha256_of(&[*c]), None))
                    .collect(),
            ),
        }
    }

    /// `record_of` with a listing that counts how often it is read.
    async fn lookup(
        cache: &RecordCache,
        n: u8,
        listing: &[ManifestRecord],
        reads: &AtomicUsize,
    ) -> Option<String> {
        let read = async {
            reads.fetch_add(1, Ordering::SeqCst);
            Ok(listing.to_vec())
        };
        let digest = Digest::sha256_of(&[n]);
        let found = cache.record_of("o/p", &digest, read).await;
        found.unwrap().map(|r| r.id)
    }

    #[tokio::test]
    async fn a_digest_the_cached_listing_lacks_is_listed_again() {
        let cache = RecordCache::default();
        let reads = AtomicUsize::new(0);
        cache.keep("o/p", &[record(1, &["v1"], &[2])]);
        // Pushed since the cache was filled (a placeholder): the listing is read again.
        let now = [record(1, &["v1"], &[2]), record(3, &["v2"], &[])];
        assert_eq!(lookup(&cache, 3, &now, &reads).await.as_deref(), Some("3"));
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        // In the cache: no listing.
        assert_eq!(lookup(&cache, 1, &now, &reads).await.as_deref(), Some("1"));
        // A child of a cached record has no record of its own, and costs no listing.
        assert_eq!(lookup(&cache, 2, &now, &reads).await, None);
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        // Gone everywhere: listed, and not found.
        assert_eq!(lookup(&cache, 9, &now, &reads).await, None);
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_forgotten_tag_leaves_its_records_other_tags() {
        let cache = RecordCache::default();
        let reads = AtomicUsize::new(0);
        cache.keep(
            "o/p",
            &[record(1, &["a", "b"], &[]), record(2, &["c"], &[])],
        );
        cache.forget_tag("o/p", "b");
        cache.forget_tag("o/p", "c");
        // From the cache (the listing read instead would be empty).
        let digest = Digest::sha256_of(&[1]);
        let one = cache
            .record_of("o/p", &digest, async { Ok(Vec::new()) })
            .await;
        assert_eq!(one.unwrap().unwrap().tags, vec!["a".to_string()]);
        // Its last tag gone, a record leaves a listing of tags: asked, it is listed again.
        assert_eq!(lookup(&cache, 2, &[], &reads).await, None);
        assert_eq!(reads.load(Ordering::SeqCst), 1);
    }
}
