//! An in-process fake of the Docker Hub repository API (`hub.docker.com/v2`), written from
//! its public documentation: the namespace listing paged by `next`, JWT login at
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

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

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
}

/// The real registry behind `registry_front`: its URL, and its storage, where a tag the Hub
/// API deletes is removed as distribution removes one (its `_manifests/tags/<tag>` entry).
#[derive(Clone)]
struct Upstream {
    url: String,
    storage: std::path::PathBuf,
}

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
        });
        let app = Router::new()
            .route("/v2/users/login", post(login))
            .route("/v2/repositories/{namespace}/", get(list))
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
        let hook = super::proxy::manifest_delete_unsupported();
        let inner = self.inner.clone();
        let answered: super::Answered = Arc::new(move |method, uri, status, _| {
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

    /// Every request line seen (`GET /v2/...?query auth=yes|no`).
    pub fn requests(&self) -> Vec<String> {
        self.inner.requests.lock().expect("hub requests").clone()
    }
}

/// A manifest pushed through `registry_front`: Hub creates the repository (public, as an
/// account's default visibility is) and, for a tag, records when it was pushed.
fn record_push(inner: &Inner, name: &str, reference: &str) {
    let Some((namespace, repo)) = name.split_once('/') else {
        return;
    };
    {
        let mut repos = inner.repos.lock().expect("hub repos");
        let list = repos.entry(namespace.to_string()).or_default();
        if !list.iter().any(|(r, _)| r == repo) {
            list.push((repo.to_string(), false));
        }
    }
    if !reference.starts_with("sha256:") {
        let now = humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string();
        inner
            .pushed
            .lock()
            .expect("hub pushed")
            .insert((name.to_string(), reference.to_string()), now);
    }
}

/// The manifest types a tag may name, for reading them from the registry.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// The tags of `repository` in the registry behind `registry_front`, as the tag API shows
/// them; `None` when the registry does not know the repository.
async fn upstream_tags(inner: &Inner, up: &Upstream, repository: &str) -> Option<Vec<HubTag>> {
    let client = reqwest::Client::new();
    let resp = client
        .get(format!("{}/v2/{repository}/tags/list", up.url))
        .send()
        .await
        .expect("list tags behind the Hub front");
    if resp.status() == StatusCode::NOT_FOUND {
        return None;
    }
    let listed: serde_json::Value = resp.json().await.expect("a tag list");
    let names: Vec<String> = listed["tags"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    for name in names {
        let resp = client
            .get(format!("{}/v2/{repository}/manifests/{name}", up.url))
            .header("accept", MANIFEST_TYPES)
            .send()
            .await
            .expect("read a manifest behind the Hub front");
        if !resp.status().is_success() {
            continue;
        }
        let digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .expect("the registry names the digest")
            .to_string();
        let doc: serde_json::Value = resp.json().await.expect("a manifest");
        let platforms = doc["manifests"]
            .as_array()
            .map(|m| {
                m.iter()
                    .map(|c| {
                        let field =
                            |k: &str| c["platform"][k].as_str().unwrap_or("unknown").to_string();
                        (
                            c["digest"].as_str().unwrap_or_default().to_string(),
                            field("os"),
                            field("architecture"),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let last_pushed = inner
            .pushed
            .lock()
            .expect("hub pushed")
            .get(&(repository.to_string(), name.clone()))
            .cloned()
            .unwrap_or_else(|| "2026-01-01T00:00:00Z".into());
        out.push(HubTag {
            name,
            digest,
            last_pushed,
            platforms,
        });
    }
    Some(out)
}

/// What `set_tags` gave `repository`.
fn set_tags_of(inner: &Inner, repository: &str) -> Option<Vec<HubTag>> {
    inner
        .tags
        .lock()
        .expect("hub tags")
        .get(repository)
        .cloned()
}

fn upstream(inner: &Inner) -> Option<Upstream> {
    inner.upstream.lock().expect("hub upstream").clone()
}

/// Removes `tag` of `repository` from the registry behind `registry_front`, as distribution
/// removes a tag; or Hub's 404 message when there is no such repository or tag.
async fn delete_upstream_tag(
    inner: &Inner,
    up: &Upstream,
    repository: &str,
    tag: &str,
) -> Result<(), &'static str> {
    let listed = upstream_tags(inner, up, repository)
        .await
        .ok_or("object not found")?;
    if !listed.iter().any(|t| t.name == tag) {
        return Err("tag not found");
    }
    let dir = up
        .storage
        .join("docker/registry/v2/repositories")
        .join(repository)
        .join("_manifests/tags")
        .join(tag);
    std::fs::remove_dir_all(&dir).expect("remove the tag behind the Hub front");
    Ok(())
}

fn token_for(user: &str) -> String {
    format!("hubjwt.{user}")
}

/// Roll the window over when it has passed; returns (remaining, reset as unix seconds).
fn window_state(inner: &Inner) -> (u64, u64) {
    let mut used = inner.used.lock().expect("hub window");
    if used.0.elapsed() >= inner.window {
        *used = (std::time::Instant::now(), std::time::SystemTime::now(), 0);
    }
    let reset = (used.1 + inner.window)
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    (inner.limit.saturating_sub(used.2), reset)
}

fn rate_headers(inner: &Inner) -> [(&'static str, String); 3] {
    let (remaining, reset) = window_state(inner);
    [
        ("x-ratelimit-limit", inner.limit.to_string()),
        ("x-ratelimit-remaining", remaining.to_string()),
        ("x-ratelimit-reset", reset.to_string()),
    ]
}

/// Spend one unit of the budget, or answer 429 with Retry-After as Hub does.
fn spend(inner: &Inner) -> Option<Response> {
    let (remaining, reset) = window_state(inner);
    if remaining == 0 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        return Some(
            (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", reset.saturating_sub(now).max(1).to_string())],
                rate_headers(inner),
                Json(json!({"message": "Rate limit exceeded", "errinfo": {}})),
            )
                .into_response(),
        );
    }
    inner.used.lock().expect("hub window").2 += 1;
    None
}

#[derive(Deserialize)]
struct LoginBody {
    username: String,
    password: String,
}

async fn login(State(inner): State<Arc<Inner>>, Json(body): Json<LoginBody>) -> Response {
    inner
        .requests
        .lock()
        .expect("hub requests")
        .push(format!("POST /v2/users/login user={}", body.username));
    if let Some(r) = spend(&inner) {
        return r;
    }
    let ok = inner
        .users
        .iter()
        .any(|(u, p)| *u == body.username && *p == body.password);
    if !ok {
        return (
            StatusCode::UNAUTHORIZED,
            rate_headers(&inner),
            Json(json!({"detail": "Incorrect authentication credentials."})),
        )
            .into_response();
    }
    (
        StatusCode::OK,
        rate_headers(&inner),
        Json(json!({"token": token_for(&body.username)})),
    )
        .into_response()
}

#[derive(Deserialize)]
struct ListQuery {
    page_size: Option<usize>,
    page: Option<usize>,
}

async fn list(
    State(inner): State<Arc<Inner>>,
    Path(namespace): Path<String>,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    inner.requests.lock().expect("hub requests").push(format!(
        "GET /v2/repositories/{namespace}/ page={:?} auth={}",
        q.page,
        if auth.is_some() { "yes" } else { "no" }
    ));
    if let Some(r) = spend(&inner) {
        return r;
    }
    let logged_in = match &auth {
        None => false,
        Some(a) => {
            let valid = inner
                .users
                .iter()
                .any(|(u, _)| *a == format!("Bearer {}", token_for(u)));
            if !valid {
                return (
                    StatusCode::UNAUTHORIZED,
                    rate_headers(&inner),
                    Json(json!({"detail": "Invalid token."})),
                )
                    .into_response();
            }
            true
        }
    };
    let all = inner
        .repos
        .lock()
        .expect("hub repos")
        .get(&namespace)
        .cloned();
    let Some(all) = all else {
        return (
            StatusCode::NOT_FOUND,
            rate_headers(&inner),
            Json(json!({"message": "object not found", "errinfo": {}})),
        )
            .into_response();
    };
    let visible: Vec<&(String, bool)> = all.iter().filter(|(_, p)| !*p || logged_in).collect();
    let size = q.page_size.unwrap_or(10).clamp(1, inner.page_cap);
    let page = q.page.unwrap_or(1).max(1);
    let start = (page - 1) * size;
    let results: Vec<serde_json::Value> = visible
        .iter()
        .skip(start)
        .take(size)
        .map(|(name, private)| {
            json!({"name": name, "namespace": namespace, "repository_type": "image",
                   "is_private": private, "last_updated": "2026-11-01T00:00:00Z"})
        })
        .collect();
    let next = (start + size < visible.len()).then(|| {
        format!(
            "{}/v2/repositories/{namespace}/?page={}&page_size={size}",
            inner.base,
            page + 1
        )
    });
    (
        StatusCode::OK,
        rate_headers(&inner),
        Json(json!({"count": visible.len(), "next": next, "previous": null, "results": results})),
    )
        .into_response()
}

/// The user a `Authorization: Bearer` header logs in as, if valid.
fn bearer_user(inner: &Inner, headers: &HeaderMap) -> Option<String> {
    let auth = headers.get("authorization")?.to_str().ok()?;
    inner
        .users
        .iter()
        .find(|(u, _)| auth == format!("Bearer {}", token_for(u)))
        .map(|(u, _)| u.clone())
}

#[derive(Deserialize)]
struct PageQuery {
    page_size: Option<usize>,
    page: Option<usize>,
}

/// `GET /v2/repositories/{namespace}/{repo}/tags/`: paged by `next`, each tag with its digest,
/// `tag_last_pushed` and `images` (one per platform).
async fn list_tags(
    State(inner): State<Arc<Inner>>,
    Path((namespace, repo)): Path<(String, String)>,
    Query(q): Query<PageQuery>,
    headers: HeaderMap,
) -> Response {
    inner.requests.lock().expect("hub requests").push(format!(
        "GET /v2/repositories/{namespace}/{repo}/tags/ page={:?} auth={}",
        q.page,
        if bearer_user(&inner, &headers).is_some() {
            "yes"
        } else {
            "no"
        }
    ));
    if let Some(r) = spend(&inner) {
        return r;
    }
    let key = format!("{namespace}/{repo}");
    let all = match upstream(&inner) {
        Some(up) => upstream_tags(&inner, &up, &key).await,
        None => set_tags_of(&inner, &key),
    };
    let Some(all) = all else {
        return (
            StatusCode::NOT_FOUND,
            rate_headers(&inner),
            Json(json!({"message": "object not found", "errinfo": {}})),
        )
            .into_response();
    };
    let size = q.page_size.unwrap_or(10).clamp(1, inner.page_cap);
    let page = q.page.unwrap_or(1).max(1);
    let start = (page - 1) * size;
    let results: Vec<serde_json::Value> = all
        .iter()
        .skip(start)
        .take(size)
        .map(|t| {
            let images: Vec<serde_json::Value> = if t.platforms.is_empty() {
                vec![json!({"architecture": "amd64", "os": "linux", "digest": t.digest, "size": 1024, "status": "active"})]
            } else {
                t.platforms
                    .iter()
                    .map(|(d, os, arch)| json!({"architecture": arch, "os": os, "digest": d, "size": 1024, "status": "active"}))
                    .collect()
            };
            json!({"name": t.name, "digest": t.digest, "last_updated": t.last_pushed,
                   "tag_last_pushed": t.last_pushed, "tag_last_pulled": t.last_pushed,
                   "tag_status": "active", "media_type": if t.platforms.is_empty() { "application/vnd.oci.image.manifest.v1+json" } else { "application/vnd.oci.image.index.v1+json" },
                   "images": images})
        })
        .collect();
    let next = (start + size < all.len()).then(|| {
        format!(
            "{}/v2/repositories/{namespace}/{repo}/tags/?page={}&page_size={size}",
            inner.base,
            page + 1
        )
    });
    (
        StatusCode::OK,
        rate_headers(&inner),
        Json(json!({"count": all.len(), "next": next, "previous": null, "results": results})),
    )
        .into_response()
}

/// `DELETE /v2/repositories/{namespace}/{repo}/tags/{tag}/`: 204, with a JWT from the login.
async fn delete_tag(
    State(inner): State<Arc<Inner>>,
    Path((namespace, repo, tag)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let user = bearer_user(&inner, &headers);
    inner.requests.lock().expect("hub requests").push(format!(
        "DELETE /v2/repositories/{namespace}/{repo}/tags/{tag}/ auth={}",
        if user.is_some() { "yes" } else { "no" }
    ));
    if let Some(r) = spend(&inner) {
        return r;
    }
    if user.is_none() {
        return (
            StatusCode::UNAUTHORIZED,
            rate_headers(&inner),
            Json(json!({"detail": "Authentication credentials were not provided."})),
        )
            .into_response();
    }
    let key = format!("{namespace}/{repo}");
    if let Some(up) = upstream(&inner) {
        return match delete_upstream_tag(&inner, &up, &key, &tag).await {
            Ok(()) => (StatusCode::NO_CONTENT, rate_headers(&inner)).into_response(),
            Err(message) => (
                StatusCode::NOT_FOUND,
                Json(json!({"message": message, "errinfo": {}})),
            )
                .into_response(),
        };
    }
    let mut tags = inner.tags.lock().expect("hub tags");
    let Some(list) = tags.get_mut(&key) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"message": "object not found", "errinfo": {}})),
        )
            .into_response();
    };
    let before = list.len();
    list.retain(|t| t.name != tag);
    if list.len() == before {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"message": "tag not found", "errinfo": {}})),
        )
            .into_response();
    }
    (StatusCode::NO_CONTENT, rate_headers(&inner)).into_response()
}
