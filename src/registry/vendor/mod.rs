//! What some registries do only through an API of their own: listing a namespace's
//! repositories where there is no catalog, reading every manifest as the registry records it
//! (with ids, tags, push times), deleting, and checking beforehand that deleting will be
//! allowed. [`VendorApi`] is that API; GitHub Packages ([`github`]) and Docker Hub ([`hub`])
//! implement it. The HTTP client picks one once, from the registry's [`Flavor`], when it is
//! built ([`for_flavor`]), and asks it instead of the distribution API for these operations.

pub mod github;
pub mod hub;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use url::Url;

use super::config::Flavor;
use super::credentials::Credential;
use super::error::Result;
use super::retry::RetryPolicy;
use super::throttle::Throttle;
use super::{Digest, ManifestRecord, RecordStyle};

/// A registry's own API, for what the distribution API does not do (see the module docs).
#[async_trait]
pub trait VendorApi: Send + Sync {
    /// How [`VendorApi::manifest_records`] describes a repository.
    fn record_style(&self) -> RecordStyle;

    /// What is known of the registry's OCI referrers API without asking it: `Some(false)` to
    /// find referrers by their tags only. `None`: ask the registry.
    fn referrers_api(&self) -> Option<bool> {
        None
    }

    /// Check, without deleting, that `repo` may be deleted from; says how it was checked.
    async fn check_delete(&self, repo: &str) -> Result<Option<String>>;

    /// Repositories whose path starts with `prefix`, as the API lists them (untrusted).
    async fn list_repositories(&self, prefix: &str) -> Result<Vec<String>>;

    /// Every manifest of `repo` as the API records it (see
    /// [`super::Registry::manifest_records`]).
    async fn manifest_records(&self, repo: &str) -> Result<Vec<ManifestRecord>>;

    /// Delete the manifest `digest` of `repo` the API's way; its id or tags, for the audit.
    async fn delete_manifest(&self, repo: &str, digest: &Digest) -> Result<Option<String>>;
}

/// What a vendor API client is built from: the registry's client and settings.
pub struct Context {
    /// The registry's host, as the plan names it.
    pub registry: String,
    /// The registry's HTTP client (with its read timeout and trusted roots).
    pub client: reqwest::Client,
    pub credential: Credential,
    /// The plan's `api` for the registry; each vendor has its default.
    pub api: Option<Url>,
    pub throttle: Arc<Throttle>,
    pub retry: RetryPolicy,
    pub stall: Duration,
}

/// The vendor API a registry of this flavor has, if any.
pub fn for_flavor(flavor: Flavor, cx: Context) -> Option<Box<dyn VendorApi>> {
    match flavor {
        Flavor::Distribution => None,
        Flavor::Ghcr => Some(Box::new(github::Ghcr::new(cx))),
        Flavor::Dockerhub => Some(Box::new(hub::DockerHub::new(cx))),
    }
}

/// The records [`VendorApi::manifest_records`] last read per repository: deletions right
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

    /// The record of `digest` in `repo`: from the last read of the repository when there was
    /// one, else from `read` (which lists it now).
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
            .map(|rs| rs.iter().find(|r| &r.digest == digest).cloned());
        match cached {
            Some(found) => Ok(found),
            None => Ok(read.await?.into_iter().find(|r| &r.digest == digest)),
        }
    }
}
