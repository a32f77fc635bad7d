//! An in-process fake of the GitHub Packages REST API for container packages (what GHCR's
//! retention goes through), written from GitHub's public "Packages" documentation: version
//! listing paged by `per_page`/`page` with a `Link` header, `state=active|deleted`, version
//! deletion and restore (204 within 30 days of the deletion; 404 after that, and for an id it
//! does not hold as deleted), an owner's container packages (`GET /orgs/{org}/packages`,
//! `/user/packages`), `GET /user` to check a token, classic-PAT scopes reported in
//! `X-OAuth-Scopes` and enforced (`read:packages` to list; `read:packages` + `delete:packages`
//! to delete; `read:packages` + `write:packages` to restore), `X-RateLimit-*` headers on every
//! answer, 403 once the primary budget is spent, and GitHub's secondary limit on DELETEs (900
//! points a minute per endpoint at 5 points a DELETE: 180 in any minute), answered 403 (or
//! 429, see `set_secondary`) with `Retry-After`. Package names may contain `/` and arrive
//! percent-encoded (`team%2Fapp`). It refuses what GitHub refuses: deleting a public version
//! with more than 5,000 downloads (403, the endpoint's documented refusal, with the docs'
//! sentence as its message), and deleting the last tagged version of a package (400, "You
//! cannot delete the last tagged version of a package. You must delete the package
//! instead."). It keeps when each DELETE of a version arrived and what it answered
//! (`deletes`), so tests measure ferry's pace.
//!
//! For tests that push and delete, `registry_front` stands in for GHCR's registry side: a
//! proxy in front of a real registry that keeps the packages in step as GHCR does (each
//! manifest pushed is a version, a tag moves to the version pushed under it, the registry's own
//! manifest DELETE answers 405 UNSUPPORTED), and deleting a version then deletes its manifest,
//! and so its tags, in that registry; restoring it puts the manifest back there, with the tags
//! no other version took since (or untagged: `set_restore_tags(false)`, as GitHub does not say
//! which it does).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

/// GitHub's default and maximum `per_page`.
pub const GITHUB_DEFAULT_PER_PAGE: usize = 30;
pub const GITHUB_MAX_PER_PAGE: usize = 100;
/// Versions with more downloads than this cannot be deleted while the package is public.
pub const GITHUB_DOWNLOAD_DELETE_CAP: u64 = 5000;
/// How long GitHub keeps a deleted package version restorable.
pub const GITHUB_RESTORE_WINDOW: Duration = Duration::from_secs(30 * 86_400);
/// A version's downloads when a test wants it popular: GitHub refuses to delete it while its
/// package is public.
pub const POPULAR: u64 = GITHUB_DOWNLOAD_DELETE_CAP + 1;
/// GitHub's secondary limit on DELETEs: 900 points a minute per endpoint, 5 points each.
pub const GITHUB_DELETES_PER_MINUTE: u64 = 180;
/// The documented refusals of a version DELETE (the message of the first is the REST docs'
/// own sentence; the endpoint documents 403 as its refusal).
pub const REFUSED_DOWNLOADS: &str = "If the package is public and the package version has more than 5,000 downloads, you cannot delete the package version. In this scenario, contact GitHub support for further assistance.";
pub const REFUSED_LAST_TAGGED: &str =
    "You cannot delete the last tagged version of a package. You must delete the package instead.";

const DOCS: &str = "https://docs.github.com/rest";
const DOCS_PACKAGES: &str = "https://docs.github.com/rest/packages/packages";
const DOCS_RATE: &str =
    "https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api";

/// A package version as the fake holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeVersion {
    pub id: u64,
    /// The manifest digest (`sha256:…`), which GitHub calls the version's `name`.
    pub digest: String,
    pub created_at: String,
    pub tags: Vec<String>,
    pub downloads: u64,
    /// Deleted through the API (and not restored since).
    pub deleted: bool,
    /// When it was deleted: GitHub restores a version for 30 days after.
    pub deleted_at: Option<SystemTime>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum OwnerKind {
    Org,
    User,
}

struct Package {
    id: u64,
    public: bool,
    versions: Vec<FakeVersion>,
}

/// The primary limit, a fixed window, and the secondary (DELETE) limit, a sliding one: at
/// most `deletes` DELETEs accepted in any `delete_window`. Counters are per login
/// (unauthenticated requests count under "").
struct Limits {
    requests: u64,
    deletes: u64,
    window: Duration,
    delete_window: Duration,
    /// What a DELETE over the secondary limit is answered (403 or 429).
    secondary_status: StatusCode,
    start: Instant,
    start_wall: SystemTime,
    used: HashMap<String, u64>,
    /// When each accepted DELETE arrived, per login, within the last `delete_window`.
    deletes_at: HashMap<String, std::collections::VecDeque<Instant>>,
}

impl Limits {
    fn roll(&mut self) {
        if self.start.elapsed() >= self.window {
            self.start = Instant::now();
            self.start_wall = SystemTime::now();
            self.used.clear();
        }
    }

    /// Take one DELETE of `login` under the secondary limit: `None` when accepted, else the
    /// whole seconds until the oldest DELETE in the window leaves it (at least 1).
    fn take_delete(&mut self, login: &str) -> Option<u64> {
        let now = Instant::now();
        let window = self.delete_window;
        let seen = self.deletes_at.entry(login.to_string()).or_default();
        while seen
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            seen.pop_front();
        }
        if (seen.len() as u64) < self.deletes {
            seen.push_back(now);
            return None;
        }
        let left = window.saturating_sub(now.duration_since(seen[0]));
        Some((left.as_secs() + u64::from(left.subsec_nanos() > 0)).max(1))
    }

    /// Unix seconds at which the current window ends (rounded up).
    fn reset_unix(&self) -> u64 {
        let end = (self.start_wall + self.window)
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        end.as_secs() + u64::from(end.subsec_nanos() > 0)
    }

    /// Whole seconds until the window ends, at least 1.
    fn retry_after(&self) -> u64 {
        let left = self.window.saturating_sub(self.start.elapsed());
        (left.as_secs() + u64::from(left.subsec_nanos() > 0)).max(1)
    }
}

struct Data {
    packages: BTreeMap<(OwnerKind, String, String), Package>,
    next_id: u64,
    limits: Limits,
}

struct Token {
    token: String,
    login: String,
    user_id: u64,
    scopes: Vec<String>,
}

struct Inner {
    base: String,
    tokens: Vec<Token>,
    data: Mutex<Data>,
    requests: Mutex<Vec<String>>,
    /// Every DELETE of a version: when it arrived, its id and the status answered.
    deletes: Mutex<Vec<FakeDelete>>,
    /// The registry behind `registry_front`, where deleting a version deletes its manifest.
    upstream: Mutex<Option<String>>,
    /// What deleting a version took from that registry, by `OWNER/PACKAGE@DIGEST`: its
    /// media type and bytes, which restoring the version puts back (GitHub keeps them).
    kept: Mutex<HashMap<String, (String, Vec<u8>)>>,
    /// Does a restored version get its tags back (those no other version took since)? GitHub
    /// does not say; `false` restores it untagged.
    restore_tags: Mutex<bool>,
}

/// One DELETE of a package version, as the fake saw it.
#[derive(Clone, Debug)]
pub struct FakeDelete {
    pub at: Instant,
    pub id: u64,
    pub status: u16,
}

/// A running fake; dropped with the test.
pub struct GitHubFake {
    /// The REST API base (`http://127.0.0.1:PORT`), standing in for `https://api.github.com`.
    pub url: String,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GitHubFake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GitHubFake {
    /// `tokens`: (token, login, scopes). Limits start at GitHub's: 5000 requests an hour, and
    /// 180 DELETEs in any minute; see `set_limits` and `set_secondary`.
    pub async fn start(tokens: &[(&str, &str, &[&str])]) -> GitHubFake {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind github fake");
        let url = format!("http://{}", listener.local_addr().expect("github addr"));
        let mut ids: Vec<&str> = Vec::new();
        let tokens = tokens
            .iter()
            .map(|(token, login, scopes)| {
                let user_id = match ids.iter().position(|l| l == login) {
                    Some(i) => i,
                    None => {
                        ids.push(login);
                        ids.len() - 1
                    }
                } as u64
                    + 1;
                Token {
                    token: token.to_string(),
                    login: login.to_string(),
                    user_id,
                    scopes: scopes.iter().map(|s| s.to_string()).collect(),
                }
            })
            .collect();
        let inner = Arc::new(Inner {
            base: url.clone(),
            tokens,
            data: Mutex::new(Data {
                packages: BTreeMap::new(),
                next_id: 1_000_001,
                limits: Limits {
                    requests: 5000,
                    deletes: GITHUB_DELETES_PER_MINUTE,
                    window: Duration::from_secs(3600),
                    delete_window: Duration::from_secs(60),
                    secondary_status: StatusCode::FORBIDDEN,
                    start: Instant::now(),
                    start_wall: SystemTime::now(),
                    used: HashMap::new(),
                    deletes_at: HashMap::new(),
                },
            }),
            requests: Mutex::new(Vec::new()),
            deletes: Mutex::new(Vec::new()),
            upstream: Mutex::new(None),
            kept: Mutex::new(HashMap::new()),
            restore_tags: Mutex::new(true),
        });
        let app = Router::new()
            .route("/user", get(get_user))
            .route("/orgs/{org}/packages", get(list_packages))
            .route("/user/packages", get(list_packages))
            .route(
                "/orgs/{org}/packages/container/{package}/versions",
                get(list),
            )
            .route("/user/packages/container/{package}/versions", get(list))
            .route(
                "/users/{username}/packages/container/{package}/versions",
                get(list),
            )
            .route(
                "/orgs/{org}/packages/container/{package}/versions/{id}",
                delete(delete_version),
            )
            .route(
                "/user/packages/container/{package}/versions/{id}",
                delete(delete_version),
            )
            .route(
                "/users/{username}/packages/container/{package}/versions/{id}",
                delete(delete_version),
            )
            .route(
                "/orgs/{org}/packages/container/{package}/versions/{id}/restore",
                post(restore_version),
            )
            .route(
                "/user/packages/container/{package}/versions/{id}/restore",
                post(restore_version),
            )
            .route(
                "/users/{username}/packages/container/{package}/versions/{id}/restore",
                post(restore_version),
            )
            .fallback(not_found)
            .with_state(inner.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        GitHubFake { url, inner, task }
    }

    fn key(&self, org: Option<&str>, name: &str) -> (OwnerKind, String, String) {
        match org {
            Some(org) => (OwnerKind::Org, org.to_string(), name.to_string()),
            None => (
                OwnerKind::User,
                self.inner
                    .tokens
                    .first()
                    .expect("a user package needs at least one token")
                    .login
                    .clone(),
                name.to_string(),
            ),
        }
    }

    /// Adds versions (digest, created_at RFC 3339, tags, downloads) to the package `name` of
    /// `org`, or of the first token's user when `org` is None, creating it if needed (and
    /// setting its visibility). Returns the new versions' ids, in order; ids grow.
    pub fn add_package(
        &self,
        org: Option<&str>,
        name: &str,
        public: bool,
        versions: &[(&str, &str, &[&str], u64)],
    ) -> Vec<u64> {
        let key = self.key(org, name);
        let mut data = self.inner.data.lock().expect("github data");
        let mut ids = Vec::new();
        let mut added = Vec::new();
        for (digest, created_at, tags, downloads) in versions {
            let id = data.next_id;
            data.next_id += 1;
            ids.push(id);
            added.push(FakeVersion {
                id,
                digest: digest.to_string(),
                created_at: created_at.to_string(),
                tags: tags.iter().map(|t| t.to_string()).collect(),
                downloads: *downloads,
                deleted: false,
                deleted_at: None,
            });
        }
        if !data.packages.contains_key(&key) {
            let id = data.next_id;
            data.next_id += 1;
            data.packages.insert(
                key.clone(),
                Package {
                    id,
                    public,
                    versions: Vec::new(),
                },
            );
        }
        let package = data.packages.get_mut(&key).expect("package just added");
        package.public = public;
        package.versions.extend(added);
        ids
    }

    /// Primary budget per window per login, DELETEs allowed in any such window per login, and
    /// the window; starts afresh.
    pub fn set_limits(&self, requests_per_window: u64, deletes_per_window: u64, window: Duration) {
        {
            let mut data = self.inner.data.lock().expect("github data");
            let l = &mut data.limits;
            l.requests = requests_per_window;
            l.window = window;
            l.start = Instant::now();
            l.start_wall = SystemTime::now();
            l.used.clear();
        }
        self.set_secondary(deletes_per_window, window, StatusCode::FORBIDDEN);
    }

    /// The secondary limit: at most `deletes` DELETEs per login in any `window`, a DELETE over
    /// it answered `status` (GitHub answers 403 or 429) with `Retry-After`; starts afresh.
    pub fn set_secondary(&self, deletes: u64, window: Duration, status: StatusCode) {
        let mut data = self.inner.data.lock().expect("github data");
        let l = &mut data.limits;
        l.deletes = deletes;
        l.delete_window = window;
        l.secondary_status = status;
        l.deletes_at.clear();
    }

    /// Every DELETE of a version so far, in the order they arrived.
    pub fn deletes(&self) -> Vec<FakeDelete> {
        self.inner.deletes.lock().expect("github deletes").clone()
    }

    /// Whether a restored version gets back the tags no other version took since (the
    /// default), or comes back untagged.
    pub fn set_restore_tags(&self, tags: bool) {
        *self.inner.restore_tags.lock().expect("github restore_tags") = tags;
    }

    /// Move the deletion of version `id` of package `name` back in time by `by` (past
    /// [`GITHUB_RESTORE_WINDOW`], it can no longer be restored).
    pub fn age_deletion(&self, org: Option<&str>, name: &str, id: u64, by: Duration) {
        let key = self.key(org, name);
        let mut data = self.inner.data.lock().expect("github data");
        let p = data.packages.get_mut(&key).expect("a package");
        let v = p
            .versions
            .iter_mut()
            .find(|v| v.id == id)
            .expect("a version");
        v.deleted_at = v.deleted_at.map(|at| at - by);
    }

    /// The package's versions in insertion (id) order; deleted ones only if asked. Empty for
    /// an unknown package.
    pub fn versions(
        &self,
        org: Option<&str>,
        name: &str,
        include_deleted: bool,
    ) -> Vec<FakeVersion> {
        let key = self.key(org, name);
        let data = self.inner.data.lock().expect("github data");
        data.packages
            .get(&key)
            .map(|p| {
                p.versions
                    .iter()
                    .filter(|v| include_deleted || !v.deleted)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// GHCR's registry side (see the module docs): a proxy in front of the real registry at
    /// `upstream`. A manifest pushed to `OWNER/PACKAGE` becomes a version of organisation
    /// OWNER's package PACKAGE (one per digest, as GHCR keeps them), and a tag pushed moves to
    /// that version; the registry's manifest DELETE answers 405 UNSUPPORTED, as GHCR's does.
    pub async fn registry_front(&self, upstream: &str) -> super::Proxy {
        *self.inner.upstream.lock().expect("github upstream") =
            Some(upstream.trim_end_matches('/').to_string());
        let hook = super::proxy::manifest_delete_unsupported();
        let inner = self.inner.clone();
        let answered: super::Answered = Arc::new(move |method, uri, status, headers| {
            if *method != Method::PUT || status != StatusCode::CREATED {
                return;
            }
            let pushed = uri
                .strip_prefix("/v2/")
                .and_then(|p| p.split_once("/manifests/"));
            let digest = headers
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok());
            if let (Some((name, reference)), Some(digest)) = (pushed, digest) {
                let tag = (!reference.starts_with("sha256:")).then_some(reference);
                record_push(&inner, name, digest, tag);
            }
        });
        super::Proxy::start_observed(upstream, hook, answered).await
    }

    /// Every request seen: `METHOD path?query token=<login|none>`, the path as sent (still
    /// percent-encoded).
    pub fn requests(&self) -> Vec<String> {
        self.inner.requests.lock().expect("github requests").clone()
    }
}

/// The authenticated caller of one request.
struct Caller {
    login: String,
    user_id: u64,
    scopes: Vec<String>,
}

impl Caller {
    /// `write:packages` implies `read:packages`, as in GitHub's scope hierarchy.
    fn has(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
            || (scope == "read:packages" && self.scopes.iter().any(|s| s == "write:packages"))
    }
}

/// Builds every answer: rate headers for the caller's bucket, the scope headers when
/// authenticated, a JSON body (or none for 204).
fn answer(
    inner: &Inner,
    caller: Option<&Caller>,
    accepted: &str,
    status: StatusCode,
    extra: Vec<(&'static str, String)>,
    body: Option<Value>,
) -> Response {
    let mut headers = HeaderMap::new();
    {
        let mut data = inner.data.lock().expect("github data");
        let l = &mut data.limits;
        l.roll();
        let used = l
            .used
            .get(caller.map(|c| c.login.as_str()).unwrap_or(""))
            .copied()
            .unwrap_or(0);
        let mut set = |k: &'static str, v: String| {
            headers.insert(k, v.parse().expect("header value"));
        };
        set("x-ratelimit-limit", l.requests.to_string());
        set(
            "x-ratelimit-remaining",
            l.requests.saturating_sub(used).to_string(),
        );
        set("x-ratelimit-reset", l.reset_unix().to_string());
        set("x-ratelimit-used", used.to_string());
        set("x-ratelimit-resource", "core".to_string());
        set("x-github-api-version-selected", "2022-11-28".to_string());
        if let Some(c) = caller {
            set("x-oauth-scopes", c.scopes.join(", "));
            set("x-accepted-oauth-scopes", accepted.to_string());
        }
        for (k, v) in extra {
            set(k, v);
        }
    }
    match body {
        Some(b) => (status, headers, Json(b)).into_response(),
        None => (status, headers).into_response(),
    }
}

fn message(
    inner: &Inner,
    caller: Option<&Caller>,
    accepted: &str,
    status: StatusCode,
    msg: &str,
    doc: &str,
) -> Response {
    answer(
        inner,
        caller,
        accepted,
        status,
        Vec::new(),
        Some(json!({"message": msg, "documentation_url": doc})),
    )
}

/// Logs the request, spends one unit of the primary budget, and authenticates. Rate
/// limiting is checked before credentials; a request over the budget is not counted.
fn begin(
    inner: &Inner,
    method: &Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
) -> Result<Caller, Box<Response>> {
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|a| {
            a.strip_prefix("Bearer ")
                .or_else(|| a.strip_prefix("bearer "))
                .or_else(|| a.strip_prefix("token "))
        })
        .map(str::trim);
    let caller = presented.and_then(|p| {
        inner.tokens.iter().find(|t| t.token == p).map(|t| Caller {
            login: t.login.clone(),
            user_id: t.user_id,
            scopes: t.scopes.clone(),
        })
    });
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    inner
        .requests
        .lock()
        .expect("github requests")
        .push(format!(
            "{method} {path} token={}",
            caller.as_ref().map(|c| c.login.as_str()).unwrap_or("none")
        ));
    let exhausted = {
        let mut data = inner.data.lock().expect("github data");
        let l = &mut data.limits;
        l.roll();
        let bucket = caller.as_ref().map(|c| c.login.clone()).unwrap_or_default();
        let used = l.used.entry(bucket).or_insert(0);
        if *used >= l.requests {
            true
        } else {
            *used += 1;
            false
        }
    };
    if exhausted {
        let msg = match &caller {
            Some(c) => format!(
                "API rate limit exceeded for user ID {}. If you reach out to GitHub Support for help, please include the request ID.",
                c.user_id
            ),
            None => "API rate limit exceeded for 127.0.0.1. (But here's the good news: Authenticated requests get a higher rate limit. Check out the documentation for more details.)".to_string(),
        };
        return Err(Box::new(message(
            inner,
            caller.as_ref(),
            "",
            StatusCode::FORBIDDEN,
            &msg,
            DOCS_RATE,
        )));
    }
    caller.ok_or_else(|| {
        Box::new(message(
            inner,
            None,
            "",
            StatusCode::UNAUTHORIZED,
            "Bad credentials",
            DOCS,
        ))
    })
}

/// A manifest `digest` pushed to `name` (`OWNER/PACKAGE`) through `registry_front`, under
/// `tag` or untagged: the version of that digest (new unless an active one has it) takes the
/// tag from whichever version had it.
fn record_push(inner: &Inner, name: &str, digest: &str, tag: Option<&str>) {
    let Some((owner, package)) = name.split_once('/') else {
        return;
    };
    let mut guard = inner.data.lock().expect("github data");
    let data = &mut *guard;
    let key = (OwnerKind::Org, owner.to_string(), package.to_string());
    if !data.packages.contains_key(&key) {
        let id = data.next_id;
        data.next_id += 1;
        let package = Package {
            id,
            public: false,
            versions: Vec::new(),
        };
        data.packages.insert(key.clone(), package);
    }
    let p = data.packages.get_mut(&key).expect("package just added");
    if let Some(tag) = tag {
        for v in &mut p.versions {
            v.tags.retain(|t| t != tag);
        }
    }
    let at = match p
        .versions
        .iter()
        .position(|v| v.digest == digest && !v.deleted)
    {
        Some(at) => at,
        None => {
            p.versions.push(FakeVersion {
                id: data.next_id,
                digest: digest.to_string(),
                created_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
                tags: Vec::new(),
                downloads: 0,
                deleted: false,
                deleted_at: None,
            });
            data.next_id += 1;
            p.versions.len() - 1
        }
    };
    p.versions[at].tags.extend(tag.map(str::to_string));
}

/// What deleting a version does in the registry behind `registry_front`: its manifest goes,
/// and with it every tag pointing at it (GHCR's deletion removes the digest and its tags).
async fn delete_upstream(inner: &Inner, key: &(OwnerKind, String, String), digest: &str) {
    let upstream = inner.upstream.lock().expect("github upstream").clone();
    let Some(upstream) = upstream else {
        return;
    };
    let (_, owner, package) = key;
    let url = format!("{upstream}/v2/{owner}/{package}/manifests/{digest}");
    // What GitHub keeps of a deleted version, so that restoring it brings it back.
    let got = reqwest::Client::new()
        .get(&url)
        .header("accept", MANIFEST_TYPES)
        .send()
        .await
        .expect("read the manifest behind the GHCR front");
    if got.status().is_success() {
        let media_type = got
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let bytes = got.bytes().await.expect("manifest bytes").to_vec();
        let at = format!("{owner}/{package}@{digest}");
        inner
            .kept
            .lock()
            .expect("kept")
            .insert(at, (media_type, bytes));
    }
    let resp = reqwest::Client::new()
        .delete(&url)
        .send()
        .await
        .expect("delete in the registry behind the GHCR front");
    assert!(
        resp.status().is_success(),
        "DELETE {url}: {}",
        resp.status()
    );
}

/// Every manifest media type, for reading one back from the registry behind the front.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// What restoring a version does in the registry behind `registry_front`: the manifest its
/// deletion took comes back, by digest and under `tags`.
async fn restore_upstream(
    inner: &Inner,
    key: &(OwnerKind, String, String),
    digest: &str,
    tags: &[String],
) {
    let upstream = inner.upstream.lock().expect("github upstream").clone();
    let Some(upstream) = upstream else {
        return;
    };
    let (_, owner, package) = key;
    let at = format!("{owner}/{package}@{digest}");
    let Some((media_type, bytes)) = inner.kept.lock().expect("kept").get(&at).cloned() else {
        return;
    };
    for reference in std::iter::once(digest).chain(tags.iter().map(String::as_str)) {
        let url = format!("{upstream}/v2/{owner}/{package}/manifests/{reference}");
        let resp = reqwest::Client::new()
            .put(&url)
            .header("content-type", &media_type)
            .body(bytes.clone())
            .send()
            .await
            .expect("put back in the registry behind the GHCR front");
        assert!(resp.status().is_success(), "PUT {url}: {}", resp.status());
    }
}

/// Which package a route names: the owner from `{org}`, `{username}` or the caller.
fn package_key(params: &HashMap<String, String>, caller: &Caller) -> (OwnerKind, String, String) {
    let name = params.get("package").cloned().unwrap_or_default();
    if let Some(org) = params.get("org") {
        (OwnerKind::Org, org.clone(), name)
    } else if let Some(user) = params.get("username") {
        (OwnerKind::User, user.clone(), name)
    } else {
        (OwnerKind::User, caller.login.clone(), name)
    }
}

fn parse_num(s: &Option<String>) -> Option<usize> {
    s.as_deref().and_then(|s| s.parse().ok())
}

/// The requested page of `items` (`per_page` defaults to 30, at most 100; the first page
/// is page 1) and, when there is more than one page, GitHub's `Link` header (`prev`, `next`, `last`,
/// `first`) with absolute URLs on the fake's base; `keep` is appended to each URL's query.
fn page_of<T: Clone>(
    items: &[T],
    per_page: &Option<String>,
    page: &Option<String>,
    base: &str,
    path: &str,
    keep: &str,
) -> (Vec<T>, Option<String>) {
    let per_page = match parse_num(per_page) {
        None | Some(0) => GITHUB_DEFAULT_PER_PAGE,
        Some(n) => n.min(GITHUB_MAX_PER_PAGE),
    };
    let page = parse_num(page).unwrap_or(1).max(1);
    let pages = items.len().div_ceil(per_page).max(1);
    let chunk = items
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .cloned()
        .collect();
    if pages == 1 {
        return (chunk, None);
    }
    let link = |p: usize, rel: &str| {
        format!("<{base}{path}?per_page={per_page}&page={p}{keep}>; rel=\"{rel}\"")
    };
    let mut rels = Vec::new();
    if page > 1 {
        rels.push(link((page - 1).min(pages), "prev"));
    }
    if page < pages {
        rels.push(link(page + 1, "next"));
        rels.push(link(pages, "last"));
    }
    if page > 1 {
        rels.push(link(1, "first"));
    }
    (chunk, Some(rels.join(", ")))
}

#[derive(Deserialize)]
struct ListQuery {
    per_page: Option<String>,
    page: Option<String>,
    state: Option<String>,
}

async fn get_user(
    State(inner): State<Arc<Inner>>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Response {
    let caller = match begin(&inner, &method, &uri, &headers) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let body = json!({"login": caller.login, "id": caller.user_id, "type": "User",
                      "url": format!("{}/users/{}", inner.base, caller.login)});
    answer(
        &inner,
        Some(&caller),
        "",
        StatusCode::OK,
        Vec::new(),
        Some(body),
    )
}

async fn list(
    State(inner): State<Arc<Inner>>,
    Path(params): Path<HashMap<String, String>>,
    Query(q): Query<ListQuery>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Response {
    const ACCEPTED: &str = "read:packages";
    let caller = match begin(&inner, &method, &uri, &headers) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let c = Some(&caller);
    if !caller.has("read:packages") {
        return message(
            &inner,
            c,
            ACCEPTED,
            StatusCode::FORBIDDEN,
            "You need at least read:packages scope to list packages.",
            DOCS_PACKAGES,
        );
    }
    let deleted = match q.state.as_deref() {
        None | Some("active") => false,
        Some("deleted") => true,
        Some(_) => {
            return message(
                &inner,
                c,
                ACCEPTED,
                StatusCode::UNPROCESSABLE_ENTITY,
                "Validation Failed",
                DOCS_PACKAGES,
            )
        }
    };
    let key = package_key(&params, &caller);
    let found: Option<Vec<FakeVersion>> = {
        let data = inner.data.lock().expect("github data");
        data.packages.get(&key).map(|p| {
            p.versions
                .iter()
                .filter(|v| v.deleted == deleted)
                .cloned()
                .collect()
        })
    };
    let Some(mut versions) = found else {
        return message(
            &inner,
            c,
            ACCEPTED,
            StatusCode::NOT_FOUND,
            "Package not found.",
            DOCS_PACKAGES,
        );
    };
    // Newest first, as GitHub lists them.
    versions.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));

    let (kind, owner, name) = &key;
    let enc_name = name.replace('/', "%2F");
    let (api_owner, html_owner) = match kind {
        OwnerKind::Org => (format!("orgs/{owner}"), format!("orgs/{owner}")),
        OwnerKind::User => (format!("users/{owner}"), owner.clone()),
    };
    let keep = q
        .state
        .as_deref()
        .map(|s| format!("&state={s}"))
        .unwrap_or_default();
    let (versions, link) = page_of(
        &versions,
        &q.per_page,
        &q.page,
        &inner.base,
        uri.path(),
        &keep,
    );
    let body: Vec<Value> = versions
        .iter()
        .map(|v| {
            json!({
                "id": v.id,
                "name": v.digest,
                "url": format!("{}/{api_owner}/packages/container/{enc_name}/versions/{}", inner.base, v.id),
                "package_html_url": format!("{}/{html_owner}/packages/container/package/{enc_name}", inner.base),
                "created_at": v.created_at,
                "updated_at": v.created_at,
                "html_url": format!("{}/{html_owner}/packages/container/{enc_name}/{}", inner.base, v.id),
                "metadata": {"package_type": "container", "container": {"tags": v.tags}},
            })
        })
        .collect();

    let extra = link.map(|l| ("link", l)).into_iter().collect();
    answer(
        &inner,
        c,
        ACCEPTED,
        StatusCode::OK,
        extra,
        Some(Value::Array(body)),
    )
}

#[derive(Deserialize)]
struct PackagesQuery {
    package_type: Option<String>,
    per_page: Option<String>,
    page: Option<String>,
}

/// `GET /orgs/{org}/packages?package_type=container` and `/user/packages?...`: the owner's
/// container packages by name. An organisation is known to the fake once it has a package;
/// an unknown one is 404 `Not Found`, as GitHub answers for a name that is not an org.
async fn list_packages(
    State(inner): State<Arc<Inner>>,
    Path(params): Path<HashMap<String, String>>,
    Query(q): Query<PackagesQuery>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Response {
    const ACCEPTED: &str = "read:packages";
    let caller = match begin(&inner, &method, &uri, &headers) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let c = Some(&caller);
    if !caller.has("read:packages") {
        return message(
            &inner,
            c,
            ACCEPTED,
            StatusCode::FORBIDDEN,
            "You need at least read:packages scope to list packages.",
            DOCS_PACKAGES,
        );
    }
    match q.package_type.as_deref() {
        Some("container") => {}
        Some(_) => {
            return answer(
                &inner,
                c,
                ACCEPTED,
                StatusCode::OK,
                Vec::new(),
                Some(json!([])),
            )
        }
        None => {
            return message(
                &inner,
                c,
                ACCEPTED,
                StatusCode::BAD_REQUEST,
                "package_type is a required parameter",
                DOCS_PACKAGES,
            )
        }
    }
    let (kind, owner) = match params.get("org") {
        Some(org) => (OwnerKind::Org, org.clone()),
        None => (OwnerKind::User, caller.login.clone()),
    };
    let packages: Vec<(u64, String, bool, usize, String)> = {
        let data = inner.data.lock().expect("github data");
        data.packages
            .iter()
            .filter(|((k, o, _), _)| *k == kind && *o == owner)
            .map(|((_, _, name), p)| {
                let active: Vec<&FakeVersion> = p.versions.iter().filter(|v| !v.deleted).collect();
                let created = p
                    .versions
                    .iter()
                    .map(|v| v.created_at.clone())
                    .min()
                    .unwrap_or_default();
                (p.id, name.clone(), p.public, active.len(), created)
            })
            .collect()
    };
    if packages.is_empty() && kind == OwnerKind::Org {
        return message(
            &inner,
            c,
            ACCEPTED,
            StatusCode::NOT_FOUND,
            "Not Found",
            DOCS_PACKAGES,
        );
    }
    let (chunk, link) = page_of(
        &packages,
        &q.per_page,
        &q.page,
        &inner.base,
        uri.path(),
        "&package_type=container",
    );
    let (api_owner, html_owner) = match kind {
        OwnerKind::Org => (format!("orgs/{owner}"), format!("orgs/{owner}")),
        OwnerKind::User => (format!("users/{owner}"), owner.clone()),
    };
    let body: Vec<Value> = chunk
        .iter()
        .map(|(id, name, public, count, created)| {
            let enc = name.replace('/', "%2F");
            json!({
                "id": id,
                "name": name,
                "package_type": "container",
                "owner": {"login": owner},
                "version_count": count,
                "visibility": if *public { "public" } else { "private" },
                "url": format!("{}/{api_owner}/packages/container/{enc}", inner.base),
                "html_url": format!("{}/{html_owner}/packages/container/package/{enc}", inner.base),
                "created_at": created,
                "updated_at": created,
            })
        })
        .collect();
    let extra = link.map(|l| ("link", l)).into_iter().collect();
    answer(
        &inner,
        c,
        ACCEPTED,
        StatusCode::OK,
        extra,
        Some(Value::Array(body)),
    )
}

async fn delete_version(
    State(inner): State<Arc<Inner>>,
    Path(params): Path<HashMap<String, String>>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Response {
    const ACCEPTED: &str = "delete:packages, read:packages";
    let arrived = Instant::now();
    let caller = match begin(&inner, &method, &uri, &headers) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let c = Some(&caller);
    let owner_mismatch = params.get("username").is_some_and(|u| *u != caller.login);
    if !caller.has("read:packages") || !caller.has("delete:packages") || owner_mismatch {
        return message(&inner, c, ACCEPTED, StatusCode::FORBIDDEN,
            "You must have admin permissions on the package and the read:packages and delete:packages scopes to delete a package version.",
            DOCS_PACKAGES);
    }
    let id: Option<u64> = params.get("id").and_then(|s| s.parse().ok());
    let response = delete_checked(&inner, &caller, &params, id).await;
    inner
        .deletes
        .lock()
        .expect("github deletes")
        .push(FakeDelete {
            at: arrived,
            id: id.unwrap_or(0),
            status: response.status().as_u16(),
        });
    response
}

/// A version DELETE from a caller allowed to delete: the secondary limit, then what GitHub
/// refuses, then the deletion.
async fn delete_checked(
    inner: &Inner,
    caller: &Caller,
    params: &HashMap<String, String>,
    id: Option<u64>,
) -> Response {
    const ACCEPTED: &str = "delete:packages, read:packages";
    let c = Some(caller);
    let retry = {
        let mut data = inner.data.lock().expect("github data");
        let l = &mut data.limits;
        l.take_delete(&caller.login)
            .map(|s| (s, l.secondary_status))
    };
    if let Some((secs, status)) = retry {
        return answer(
            inner,
            c,
            ACCEPTED,
            status,
            vec![("retry-after", secs.to_string())],
            Some(
                json!({"message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you reach out to GitHub Support for help, please include the request ID.",
                        "documentation_url": DOCS_RATE}),
            ),
        );
    }
    let key = package_key(params, caller);
    let outcome: Result<String, (StatusCode, &str)> = {
        let mut data = inner.data.lock().expect("github data");
        match data.packages.get_mut(&key) {
            None => Err((StatusCode::NOT_FOUND, "Package not found.")),
            Some(p) => refuse_or_delete(p, id),
        }
    };
    match outcome {
        Ok(digest) => {
            delete_upstream(inner, &key, &digest).await;
            answer(inner, c, ACCEPTED, StatusCode::NO_CONTENT, Vec::new(), None)
        }
        Err((status, msg)) => message(inner, c, ACCEPTED, status, msg, DOCS_PACKAGES),
    }
}

/// What GitHub refuses of a version DELETE, else the version deleted (its digest): a public
/// version with more than 5,000 downloads, and the last tagged version of the package (or
/// its last version at all).
fn refuse_or_delete(
    p: &mut Package,
    id: Option<u64>,
) -> Result<String, (StatusCode, &'static str)> {
    let active = p.versions.iter().filter(|v| !v.deleted).count();
    let tagged_others = p
        .versions
        .iter()
        .filter(|v| !v.deleted && Some(v.id) != id && !v.tags.is_empty())
        .count();
    let public = p.public;
    match p
        .versions
        .iter_mut()
        .find(|v| Some(v.id) == id && !v.deleted)
    {
        None => Err((StatusCode::NOT_FOUND, "Not Found")),
        Some(v) if public && v.downloads > GITHUB_DOWNLOAD_DELETE_CAP => {
            Err((StatusCode::FORBIDDEN, REFUSED_DOWNLOADS))
        }
        Some(v) if active <= 1 || (!v.tags.is_empty() && tagged_others == 0) => {
            Err((StatusCode::BAD_REQUEST, REFUSED_LAST_TAGGED))
        }
        Some(v) => {
            v.deleted = true;
            v.deleted_at = Some(SystemTime::now());
            Ok(v.digest.clone())
        }
    }
}

async fn restore_version(
    State(inner): State<Arc<Inner>>,
    Path(params): Path<HashMap<String, String>>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Response {
    const ACCEPTED: &str = "read:packages, write:packages";
    let caller = match begin(&inner, &method, &uri, &headers) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let c = Some(&caller);
    let owner_mismatch = params.get("username").is_some_and(|u| *u != caller.login);
    if !caller.has("read:packages") || !caller.has("write:packages") || owner_mismatch {
        return message(&inner, c, ACCEPTED, StatusCode::FORBIDDEN,
            "You must have admin permissions on the package and the read:packages and write:packages scopes to restore a package version.",
            DOCS_PACKAGES);
    }
    let key = package_key(&params, &caller);
    let id: Option<u64> = params.get("id").and_then(|s| s.parse().ok());
    let with_tags = *inner.restore_tags.lock().expect("github restore_tags");
    let outcome = {
        let mut data = inner.data.lock().expect("github data");
        match data.packages.get_mut(&key) {
            None => Err("Package not found."),
            Some(p) => {
                // Tags another version took since stay with it.
                let held: Vec<String> = p
                    .versions
                    .iter()
                    .filter(|v| !v.deleted)
                    .flat_map(|v| v.tags.clone())
                    .collect();
                let restorable = |v: &FakeVersion| {
                    v.deleted
                        && v.deleted_at.is_none_or(|at| {
                            at.elapsed().unwrap_or_default() < GITHUB_RESTORE_WINDOW
                        })
                };
                match p
                    .versions
                    .iter_mut()
                    .find(|v| Some(v.id) == id && restorable(v))
                {
                    None => Err("Not Found"),
                    Some(v) => {
                        v.deleted = false;
                        v.deleted_at = None;
                        v.tags.retain(|t| with_tags && !held.contains(t));
                        Ok((v.digest.clone(), v.tags.clone()))
                    }
                }
            }
        }
    };
    if let Ok((digest, tags)) = &outcome {
        restore_upstream(&inner, &key, digest, tags).await;
    }
    match outcome {
        Ok(_) => answer(
            &inner,
            c,
            ACCEPTED,
            StatusCode::NO_CONTENT,
            Vec::new(),
            None,
        ),
        Err(msg) => message(
            &inner,
            c,
            ACCEPTED,
            StatusCode::NOT_FOUND,
            msg,
            DOCS_PACKAGES,
        ),
    }
}

/// Any other path: GitHub's plain 404 (after the same auth and rate accounting).
async fn not_found(
    State(inner): State<Arc<Inner>>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Response {
    let caller = match begin(&inner, &method, &uri, &headers) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    message(
        &inner,
        Some(&caller),
        "",
        StatusCode::NOT_FOUND,
        "Not Found",
        DOCS,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &[&str] = &["read:packages", "write:packages", "delete:packages"];

    fn digest(n: u32) -> String {
        format!("sha256:{n:064x}")
    }

    async fn fake_with(n: u32, public: bool, downloads: u64) -> (GitHubFake, Vec<u64>) {
        let gh = GitHubFake::start(&[
            ("tok-admin", "octo", ALL),
            ("tok-read", "reader", &["read:packages"]),
            ("tok-none", "nobody", &["repo"]),
        ])
        .await;
        let digests: Vec<String> = (0..n).map(digest).collect();
        let created: Vec<String> = (0..n)
            .map(|i| format!("2026-01-{:02}T00:00:00Z", i + 1))
            .collect();
        let rows: Vec<(&str, &str, &[&str], u64)> = (0..n as usize)
            .map(|i| {
                (
                    digests[i].as_str(),
                    created[i].as_str(),
                    &["v"][..],
                    downloads,
                )
            })
            .collect();
        let ids = gh.add_package(Some("acme"), "team/app", public, &rows);
        (gh, ids)
    }

    async fn call(
        method: reqwest::Method,
        url: &str,
        token: Option<&str>,
    ) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
        let mut req = reqwest::Client::new().request(method, url);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = req.send().await.expect("request github fake");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).expect("json body")
        };
        (status, headers, body)
    }

    fn header(h: &reqwest::header::HeaderMap, k: &str) -> String {
        h.get(k)
            .map(|v| v.to_str().expect("ascii header").to_string())
            .unwrap_or_default()
    }

    fn next_link(h: &reqwest::header::HeaderMap) -> Option<String> {
        header(h, "link").split(", ").find_map(|part| {
            part.strip_suffix("; rel=\"next\"")
                .map(|u| u.trim_start_matches('<').trim_end_matches('>').to_string())
        })
    }

    fn ids_of(body: &Value) -> Vec<u64> {
        body.as_array()
            .expect("array")
            .iter()
            .map(|v| v["id"].as_u64().expect("id"))
            .collect()
    }

    #[tokio::test]
    async fn pages_with_link_headers_newest_first() {
        let (gh, ids) = fake_with(7, false, 0).await;
        let mut url = Some(format!(
            "{}/orgs/acme/packages/container/team%2Fapp/versions?per_page=3",
            gh.url
        ));
        let mut pages = Vec::new();
        while let Some(u) = url {
            assert!(u.starts_with(&gh.url), "{u}");
            let (status, h, body) = call(reqwest::Method::GET, &u, Some("tok-admin")).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(header(&h, "x-oauth-scopes"), ALL.join(", "));
            assert_eq!(header(&h, "x-ratelimit-limit"), "5000");
            assert_eq!(header(&h, "x-ratelimit-resource"), "core");
            if pages.is_empty() {
                assert!(
                    header(&h, "link").contains("page=3>; rel=\"last\""),
                    "{h:?}"
                );
                let first = &body[0];
                assert_eq!(first["name"], digest(6));
                assert_eq!(first["metadata"]["package_type"], "container");
                assert_eq!(first["metadata"]["container"]["tags"], json!(["v"]));
                assert!(first["url"].as_str().unwrap().ends_with(&format!(
                    "/orgs/acme/packages/container/team%2Fapp/versions/{}",
                    ids[6]
                )));
            }
            pages.push(ids_of(&body));
            url = next_link(&h);
        }
        assert_eq!(
            pages.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![3, 3, 1]
        );
        let mut all: Vec<u64> = pages.concat();
        let mut want = ids.clone();
        want.reverse();
        assert_eq!(all, want, "newest first");
        all.sort();
        assert_eq!(all, ids);
        let log = gh.requests();
        assert_eq!(log.len(), 3);
        assert!(
            log[0].starts_with(
                "GET /orgs/acme/packages/container/team%2Fapp/versions?per_page=3 token=octo"
            ),
            "{log:?}"
        );
    }

    #[tokio::test]
    async fn user_packages_and_unknown_packages() {
        let gh = GitHubFake::start(&[("t", "octo", &["read:packages"])]).await;
        let d = digest(1);
        let ids = gh.add_package(
            None,
            "tools/cli",
            true,
            &[(&d, "2026-01-01T00:00:00Z", &["latest"], 1)],
        );
        let (status, h, body) = call(
            reqwest::Method::GET,
            &format!("{}/user/packages/container/tools%2Fcli/versions", gh.url),
            Some("t"),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(ids_of(&body), ids);
        assert_eq!(header(&h, "link"), "");
        let (status, _, body) = call(
            reqwest::Method::GET,
            &format!(
                "{}/orgs/acme/packages/container/tools%2Fcli/versions",
                gh.url
            ),
            Some("t"),
        )
        .await;
        assert_eq!(status, 404);
        assert_eq!(body["message"], "Package not found.");
        let (status, h, body) =
            call(reqwest::Method::GET, &format!("{}/user", gh.url), Some("t")).await;
        assert_eq!(status, 200);
        assert_eq!(body["login"], "octo");
        assert_eq!(header(&h, "x-oauth-scopes"), "read:packages");
    }

    #[tokio::test]
    async fn delete_moves_a_version_to_the_deleted_state_and_restore_brings_it_back() {
        let (gh, ids) = fake_with(3, true, 10).await;
        let base = format!(
            "{}/orgs/acme/packages/container/team%2Fapp/versions",
            gh.url
        );
        let (status, h, body) = call(
            reqwest::Method::DELETE,
            &format!("{base}/{}", ids[0]),
            Some("tok-admin"),
        )
        .await;
        assert_eq!(status, 204, "{body}");
        assert_eq!(body, Value::Null);
        assert!(!header(&h, "x-ratelimit-remaining").is_empty());
        let (_, _, active) = call(reqwest::Method::GET, &base, Some("tok-admin")).await;
        assert_eq!(ids_of(&active), vec![ids[2], ids[1]]);
        let (_, _, deleted) = call(
            reqwest::Method::GET,
            &format!("{base}?state=deleted"),
            Some("tok-admin"),
        )
        .await;
        assert_eq!(ids_of(&deleted), vec![ids[0]]);
        assert!(gh.versions(Some("acme"), "team/app", true)[0].deleted);
        assert_eq!(gh.versions(Some("acme"), "team/app", false).len(), 2);

        // Deleting it again, or an unknown id: 404.
        for id in [ids[0], 42] {
            let (status, _, body) = call(
                reqwest::Method::DELETE,
                &format!("{base}/{id}"),
                Some("tok-admin"),
            )
            .await;
            assert_eq!(status, 404);
            assert_eq!(body["message"], "Not Found");
        }

        let restore = format!("{base}/{}/restore", ids[0]);
        let (status, _, _) = call(reqwest::Method::POST, &restore, Some("tok-admin")).await;
        assert_eq!(status, 204);
        assert_eq!(gh.versions(Some("acme"), "team/app", false).len(), 3);
        let (status, _, _) = call(reqwest::Method::POST, &restore, Some("tok-admin")).await;
        assert_eq!(status, 404, "not deleted any more");

        // GitHub restores a version for 30 days after its deletion, and never an unknown id.
        let delete = format!("{base}/{}", ids[1]);
        let (status, _, _) = call(reqwest::Method::DELETE, &delete, Some("tok-admin")).await;
        assert_eq!(status, 204);
        let day = Duration::from_secs(86_400);
        gh.age_deletion(Some("acme"), "team/app", ids[1], 29 * day);
        let restore = format!("{base}/{}/restore", ids[1]);
        let (status, _, _) = call(reqwest::Method::POST, &restore, Some("tok-admin")).await;
        assert_eq!(status, 204, "29 days after");
        let (status, _, _) = call(reqwest::Method::DELETE, &delete, Some("tok-admin")).await;
        assert_eq!(status, 204);
        gh.age_deletion(Some("acme"), "team/app", ids[1], 31 * day);
        let (status, _, body) = call(reqwest::Method::POST, &restore, Some("tok-admin")).await;
        assert_eq!(status, 404, "31 days after");
        assert_eq!(body["message"], "Not Found");
        let unknown = format!("{base}/42/restore");
        let (status, _, _) = call(reqwest::Method::POST, &unknown, Some("tok-admin")).await;
        assert_eq!(status, 404);
    }

    #[tokio::test]
    async fn refuses_popular_public_versions_and_the_last_version() {
        let (gh, ids) = fake_with(2, true, 5001).await;
        let base = format!(
            "{}/orgs/acme/packages/container/team%2Fapp/versions",
            gh.url
        );
        let (status, _, body) = call(
            reqwest::Method::DELETE,
            &format!("{base}/{}", ids[0]),
            Some("tok-admin"),
        )
        .await;
        assert_eq!(status, 403);
        assert_eq!(body["message"], REFUSED_DOWNLOADS);
        assert!(body["documentation_url"].is_string());

        // The same downloads on a private package are fine, until one version is left.
        let d1 = digest(1);
        let d2 = digest(2);
        let ids = gh.add_package(
            Some("acme"),
            "private",
            false,
            &[
                (&d1, "2026-01-01T00:00:00Z", &[], 9000),
                (&d2, "2026-01-02T00:00:00Z", &["v2"], 9000),
            ],
        );
        let base = format!("{}/orgs/acme/packages/container/private/versions", gh.url);
        let (status, _, _) = call(
            reqwest::Method::DELETE,
            &format!("{base}/{}", ids[0]),
            Some("tok-admin"),
        )
        .await;
        assert_eq!(status, 204);
        let (status, _, body) = call(
            reqwest::Method::DELETE,
            &format!("{base}/{}", ids[1]),
            Some("tok-admin"),
        )
        .await;
        assert_eq!(status, 400);
        assert_eq!(body["message"], REFUSED_LAST_TAGGED);
        assert_eq!(gh.versions(Some("acme"), "private", false).len(), 1);

        // The last tagged version is refused while untagged ones remain; they go.
        let (d3, d4, d5) = (digest(3), digest(4), digest(5));
        let ids = gh.add_package(
            Some("acme"),
            "tagged",
            false,
            &[
                (&d3, "2026-01-01T00:00:00Z", &["a"], 0),
                (&d4, "2026-01-02T00:00:00Z", &["b"], 0),
                (&d5, "2026-01-03T00:00:00Z", &[], 0),
            ],
        );
        let base = format!("{}/orgs/acme/packages/container/tagged/versions", gh.url);
        let statuses = [ids[0], ids[1], ids[2]].map(|id| {
            let url = format!("{base}/{id}");
            async move {
                call(reqwest::Method::DELETE, &url, Some("tok-admin"))
                    .await
                    .0
            }
        });
        let mut got = Vec::new();
        for s in statuses {
            got.push(s.await);
        }
        assert_eq!(got, [204, 400, 204]);
        let left = gh.versions(Some("acme"), "tagged", false);
        assert_eq!(
            (left.len(), left[0].tags.clone()),
            (1, vec!["b".to_string()])
        );
        let seen: Vec<(u64, u16)> = gh.deletes().iter().map(|d| (d.id, d.status)).collect();
        assert_eq!(
            &seen[seen.len() - 3..],
            [(ids[0], 204), (ids[1], 400), (ids[2], 204)]
        );
    }

    #[tokio::test]
    async fn the_secondary_limit_is_a_sliding_window_answered_as_set() {
        let (gh, ids) = fake_with(5, false, 0).await;
        gh.set_secondary(
            2,
            Duration::from_millis(1500),
            StatusCode::TOO_MANY_REQUESTS,
        );
        let base = format!(
            "{}/orgs/acme/packages/container/team%2Fapp/versions",
            gh.url
        );
        let delete = |id: u64| {
            let url = format!("{base}/{id}");
            async move { call(reqwest::Method::DELETE, &url, Some("tok-admin")).await }
        };
        assert_eq!(delete(ids[0]).await.0, 204);
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(delete(ids[1]).await.0, 204);
        let (status, h, _) = delete(ids[2]).await;
        assert_eq!(status, 429);
        assert_eq!(
            header(&h, "retry-after"),
            "1",
            "the first leaves the window in 0.7 s"
        );
        tokio::time::sleep(Duration::from_millis(800)).await;
        // The first left the window, the second is still in it.
        assert_eq!(delete(ids[2]).await.0, 204);
        assert_eq!(delete(ids[3]).await.0, 429);
    }

    #[tokio::test]
    async fn credentials_and_scopes() {
        let (gh, ids) = fake_with(3, false, 0).await;
        let base = format!(
            "{}/orgs/acme/packages/container/team%2Fapp/versions",
            gh.url
        );
        for token in [None, Some("wrong")] {
            let (status, h, body) = call(reqwest::Method::GET, &base, token).await;
            assert_eq!(status, 401);
            assert_eq!(body["message"], "Bad credentials");
            assert_eq!(header(&h, "x-ratelimit-limit"), "5000");
        }
        // `token <t>` works as well as `Bearer <t>`.
        let resp = reqwest::Client::new()
            .get(&base)
            .header("authorization", "token tok-read")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);

        let (status, _, body) = call(reqwest::Method::GET, &base, Some("tok-none")).await;
        assert_eq!(status, 403);
        assert!(
            body["message"].as_str().unwrap().contains("read:packages"),
            "{body}"
        );
        let (status, h, body) = call(
            reqwest::Method::DELETE,
            &format!("{base}/{}", ids[0]),
            Some("tok-read"),
        )
        .await;
        assert_eq!(status, 403);
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("delete:packages"),
            "{body}"
        );
        assert_eq!(header(&h, "x-oauth-scopes"), "read:packages");
        assert_eq!(gh.versions(Some("acme"), "team/app", false).len(), 3);
        let log = gh.requests();
        assert!(log[0].ends_with("token=none"), "{log:?}");
        assert!(
            log.last().unwrap().starts_with("DELETE ")
                && log.last().unwrap().ends_with("token=reader")
        );
    }

    #[tokio::test]
    async fn secondary_delete_limit_then_primary_limit() {
        let (gh, ids) = fake_with(6, false, 0).await;
        gh.set_limits(1000, 2, Duration::from_secs(2));
        let base = format!(
            "{}/orgs/acme/packages/container/team%2Fapp/versions",
            gh.url
        );
        for id in &ids[..2] {
            let (status, _, _) = call(
                reqwest::Method::DELETE,
                &format!("{base}/{id}"),
                Some("tok-admin"),
            )
            .await;
            assert_eq!(status, 204);
        }
        let (status, h, body) = call(
            reqwest::Method::DELETE,
            &format!("{base}/{}", ids[2]),
            Some("tok-admin"),
        )
        .await;
        assert_eq!(status, 403);
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("secondary rate limit"),
            "{body}"
        );
        let retry: u64 = header(&h, "retry-after").parse().expect("retry-after");
        assert!((1..=2).contains(&retry), "{retry}");
        assert_ne!(header(&h, "x-ratelimit-remaining"), "0");
        assert_eq!(gh.versions(Some("acme"), "team/app", false).len(), 4);
        tokio::time::sleep(Duration::from_secs(retry)).await;
        let (status, _, _) = call(
            reqwest::Method::DELETE,
            &format!("{base}/{}", ids[2]),
            Some("tok-admin"),
        )
        .await;
        assert_eq!(status, 204, "a new window");

        gh.set_limits(2, 100, Duration::from_secs(60));
        for _ in 0..2 {
            let (status, _, _) = call(reqwest::Method::GET, &base, Some("tok-admin")).await;
            assert_eq!(status, 200);
        }
        let (status, h, body) = call(reqwest::Method::GET, &base, Some("tok-admin")).await;
        assert_eq!(status, 403);
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .starts_with("API rate limit exceeded for user ID 1."),
            "{body}"
        );
        assert_eq!(header(&h, "x-ratelimit-remaining"), "0");
        assert_eq!(header(&h, "x-ratelimit-used"), "2");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let reset: u64 = header(&h, "x-ratelimit-reset").parse().unwrap();
        assert!(reset > now && reset <= now + 61, "{reset} vs {now}");
        // Budgets are per user: another token still gets through.
        let (status, _, _) = call(reqwest::Method::GET, &base, Some("tok-read")).await;
        assert_eq!(status, 200);
    }

    #[tokio::test]
    async fn lists_an_owners_container_packages() {
        let (gh, _) = fake_with(2, false, 0).await;
        let d = digest(9);
        gh.add_package(
            Some("acme"),
            "base",
            true,
            &[(&d, "2026-02-01T00:00:00Z", &["1"], 0)],
        );
        gh.add_package(
            None,
            "mine",
            false,
            &[(&d, "2026-02-01T00:00:00Z", &["1"], 0)],
        );
        let mut url = Some(format!(
            "{}/orgs/acme/packages?package_type=container&per_page=1",
            gh.url
        ));
        let mut names = Vec::new();
        while let Some(u) = url {
            let (status, h, body) = call(reqwest::Method::GET, &u, Some("tok-read")).await;
            assert_eq!(status, 200, "{body}");
            names.extend(body.as_array().unwrap().iter().map(|p| p["name"].clone()));
            url = next_link(&h);
        }
        assert_eq!(names, vec![json!("base"), json!("team/app")]);
        let (status, _, body) = call(
            reqwest::Method::GET,
            &format!("{}/user/packages?package_type=container", gh.url),
            Some("tok-admin"),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(body[0]["name"], "mine");
        assert_eq!(body[0]["visibility"], "private");
        assert_eq!(body[0]["version_count"], 1);
        let (status, _, body) = call(
            reqwest::Method::GET,
            &format!("{}/orgs/octo/packages?package_type=container", gh.url),
            Some("tok-admin"),
        )
        .await;
        assert_eq!(status, 404, "{body}");
    }
}
