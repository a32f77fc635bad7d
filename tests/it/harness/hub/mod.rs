//! An in-process fake of the Docker Hub repository API (`hub.docker.com/v2`), written from
//! its public documentation: the namespace listing paged by `next`, one repository with its
//! `is_private` (`/v2/namespaces/{namespace}/repositories/{repo}`), JWT login at
//! `/v2/users/login`, private repositories visible only when logged in, `X-RateLimit-*`
//! headers on every answer and 429 with `Retry-After` once the budget is spent, 404
//! `object not found` for an unknown namespace. It fails the way the real service fails.
//!
//! For tests that push and delete, `registry_front` stands in for Docker Hub's registry side
//! (registry-1.docker.io): a proxy in front of a real registry, with the Hub API describing
//! what that registry holds, as the real Hub does. A push creates the repository and the tag
//! (its push time is what the tag API says); the tag API lists the registry's tags with their
//! digests and an index's platform manifests; the tag DELETE removes the tag from the registry
//! (the manifest stays, untagged, and with it any other tag on it); the registry's own
//! manifest DELETE answers 405 UNSUPPORTED, as Docker Hub's does (deletion is the Hub API's).
//! With `limit_pulls`, the front counts manifest GETs against a pull budget (see `pulls`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

mod auth;
mod front;
mod pulls;
mod repositories;

#[allow(unused_imports)]
pub use auth::*;
#[allow(unused_imports)]
pub use front::*;
#[allow(unused_imports)]
pub use repositories::*;

/// Docker Hub caps `page_size` at 100.
pub const HUB_MAX_PAGE_SIZE: usize = 100;

struct Inner {
    base: String,
    /// namespace -> [(repository name, private?)]; a push through `registry_front` adds one.
    repos: Mutex<BTreeMap<String, Vec<(String, bool)>>>,
    users: Vec<(String, String)>,
    page_cap: usize,
    /// A fixed window as Hub's: `limit` requests per `window`, counted from `window_start`.
    limit: u64,
    window: std::time::Duration,
    used: Mutex<(std::time::Instant, std::time::SystemTime, u64)>,
    requests: Mutex<Vec<String>>,
    /// "ns/repo" -> tags, as Hub's tag API shows them (without `registry_front`).
    tags: Mutex<BTreeMap<String, Vec<HubTag>>>,
    /// The registry behind `registry_front`, whose tags the tag API describes.
    upstream: Mutex<Option<Upstream>>,
    /// ("ns/repo", tag) -> when it was last pushed through `registry_front`.
    pushed: Mutex<BTreeMap<(String, String), String>>,
    /// Manifest digest -> its platforms, as read from the registry behind `registry_front`.
    platforms: Mutex<std::collections::HashMap<String, Platforms>>,
    /// A password change the test scheduled (`change_password_after`), and whether it
    /// happened.
    change: Mutex<Option<PasswordChange>>,
    /// The registry front's pull budget (`limit_pulls`), none unless a test sets one.
    pulls: Mutex<Option<pulls::Pulls>>,
}

/// The real registry behind `registry_front`: its URL, and its storage, where a tag the Hub
/// API deletes is removed as distribution removes one (its `_manifests/tags/<tag>` entry).
#[derive(Clone)]
struct Upstream {
    url: String,
    storage: std::path::PathBuf,
}

/// (digest, os, architecture) of each platform manifest of an index.
type Platforms = Vec<(String, String, String)>;

/// A tag as Hub's API shows it: the digest it points at, when it was pushed, and for a
/// multi-platform image the per-platform manifests (`images`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubTag {
    pub name: String,
    pub digest: String,
    pub last_pushed: String,
    /// (digest, os, architecture) of each platform manifest of an index; empty for a
    /// single-platform image (Hub then lists the image itself).
    pub platforms: Vec<(String, String, String)>,
}

/// A running fake; dropped with the test.
pub struct HubFake {
    pub url: String,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HubFake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HubFake {
    /// `repos`: (namespace, name, private). `page_cap` below 100 makes paging visible with
    /// few repositories; `budget` is the number of requests before 429s start.
    pub async fn start(
        repos: &[(&str, &str, bool)],
        users: &[(&str, &str)],
        page_cap: usize,
        budget: u64,
    ) -> HubFake {
        Self::start_with_window(
            repos,
            users,
            page_cap,
            budget,
            std::time::Duration::from_secs(3600),
        )
        .await
    }

    /// As `start`, with the budget coming back every `window`.
    pub async fn start_with_window(
        repos: &[(&str, &str, bool)],
        users: &[(&str, &str)],
        page_cap: usize,
        budget: u64,
        window: std::time::Duration,
    ) -> HubFake {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind hub fake");
        let url = format!("http://{}", listener.local_addr().expect("hub addr"));
        let mut map: BTreeMap<String, Vec<(String, bool)>> = BTreeMap::new();
        for (ns, name, private) in repos {
            map.entry(ns.to_string())
                .or_default()
                .push((name.to_string(), *private));
        }
        let inner = Arc::new(Inner {
            base: url.clone(),
            repos: Mutex::new(map),
            users: users
                .iter()
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .collect(),
            page_cap: page_cap.min(HUB_MAX_PAGE_SIZE),
            limit: budget,
            window,
            used: Mutex::new((std::time::Instant::now(), std::time::SystemTime::now(), 0)),
            requests: Mutex::new(Vec::new()),
            tags: Mutex::new(BTreeMap::new()),
            upstream: Mutex::new(None),
            pushed: Mutex::new(BTreeMap::new()),
            platforms: Mutex::new(std::collections::HashMap::new()),
            change: Mutex::new(None),
            pulls: Mutex::new(None),
        });
        let app = Router::new()
            .route("/v2/users/login", post(login))
            .route("/v2/repositories/{namespace}/", get(list))
            .route(
                "/v2/namespaces/{namespace}/repositories/{repo}",
                get(get_repository),
            )
            .route("/v2/repositories/{namespace}/{repo}/tags/", get(list_tags))
            .route(
                "/v2/repositories/{namespace}/{repo}/tags/{tag}/",
                axum::routing::delete(delete_tag),
            )
            .with_state(inner.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        HubFake { url, inner, task }
    }

    /// Make `ns/repo` private or public (adding it to the namespace if need be), as its
    /// owner does in Hub's settings.
    pub fn set_private(&self, repository: &str, private: bool) {
        let (ns, name) = repository.split_once('/').expect("NAMESPACE/REPOSITORY");
        let mut repos = self.inner.repos.lock().expect("hub repos");
        let list = repos.entry(ns.to_string()).or_default();
        match list.iter_mut().find(|(r, _)| r == name) {
            Some(r) => r.1 = private,
            None => list.push((name.to_string(), private)),
        }
    }

    /// Give `ns/repo` these tags in the tag API.
    pub fn set_tags(&self, repository: &str, tags: Vec<HubTag>) {
        self.inner
            .tags
            .lock()
            .expect("hub tags")
            .insert(repository.to_string(), tags);
    }

    /// Docker Hub's registry side (see the module docs): a proxy in front of the real
    /// registry `upstream`, which the tag API then describes.
    pub async fn registry_front(&self, upstream: &super::Registry) -> super::Proxy {
        *self.inner.upstream.lock().expect("hub upstream") = Some(Upstream {
            url: upstream.url.trim_end_matches('/').to_string(),
            storage: upstream.storage_dir().to_path_buf(),
        });
        let hook = pulls::hook(
            self.inner.clone(),
            super::proxy::manifest_delete_unsupported(),
        );
        let inner = self.inner.clone();
        let answered: super::Answered = Arc::new(move |method, uri, status, _| {
            pulls::answered(&inner, method, uri, status);
            if *method != Method::PUT || status != StatusCode::CREATED {
                return;
            }
            let pushed = uri
                .strip_prefix("/v2/")
                .and_then(|p| p.split_once("/manifests/"));
            if let Some((name, reference)) = pushed {
                record_push(&inner, name, reference);
            }
        });
        super::Proxy::start_observed(&upstream.url, hook, answered).await
    }

    /// The tags `ns/repo` still has (without `registry_front`: what `set_tags` gave it).
    pub fn tags(&self, repository: &str) -> Vec<String> {
        self.inner
            .tags
            .lock()
            .expect("hub tags")
            .get(repository)
            .map(|t| t.iter().map(|t| t.name.clone()).collect())
            .unwrap_or_default()
    }

    /// Change `user`'s password to `password` once `requests` more requests have been
    /// answered, as a personal access token regenerated on Docker Hub: from the next request
    /// on, login takes only the new one (the old one gets Hub's 401), and the JWTs logged in
    /// before are refused. `then` runs at that moment, before that request is answered (a
    /// test writes the new password where the plan reads it).
    pub fn change_password_after(
        &self,
        user: &str,
        password: &str,
        requests: usize,
        then: impl FnOnce() + Send + 'static,
    ) {
        *self.inner.change.lock().expect("hub password change") = Some(PasswordChange {
            user: user.to_string(),
            password: password.to_string(),
            left: requests,
            then: Some(Box::new(then)),
        });
    }

    /// Every request line seen (`GET /v2/...?query auth=yes|no`).
    pub fn requests(&self) -> Vec<String> {
        self.inner.requests.lock().expect("hub requests").clone()
    }
}
