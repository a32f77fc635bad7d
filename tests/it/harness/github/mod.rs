//! An in-process fake of the GitHub Packages REST API for container packages (what GHCR's
//! retention goes through), written from GitHub's public "Packages" documentation: version
//! listing paged by `per_page`/`page` with a `Link` header, `state=active|deleted`, version
//! deletion and restore (204 within 30 days of the deletion; 404 after that, and for an id it
//! does not hold as deleted), an owner's container packages (`GET /orgs/{org}/packages`,
//! `/user/packages`), one package with its `visibility` (`GET /orgs/{org}/packages/container/
//! {package}`, 404 "Package not found." for one it does not hold), `GET /user` to check a token, classic-PAT scopes reported in
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

mod auth;
mod front;
mod limits;
mod packages;
mod versions;

#[allow(unused_imports)]
pub use auth::*;
#[allow(unused_imports)]
pub use front::*;
#[allow(unused_imports)]
pub use limits::*;
#[allow(unused_imports)]
pub use packages::*;
#[allow(unused_imports)]
pub use versions::*;

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
    /// GitHub Enterprise's third visibility (members of the enterprise); wins over `public`.
    internal: bool,
    versions: Vec<FakeVersion>,
}

impl Package {
    /// As the package endpoint spells it.
    fn visibility(&self) -> &'static str {
        match (self.internal, self.public) {
            (true, _) => "internal",
            (false, true) => "public",
            (false, false) => "private",
        }
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
    /// A token the test has the fake revoke mid-run (`revoke_after`).
    revocation: Mutex<Option<Revocation>>,
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
            revocation: Mutex::new(None),
        });
        let app = Router::new()
            .route("/user", get(get_user))
            .route("/orgs/{org}/packages", get(list_packages))
            .route("/user/packages", get(list_packages))
            .route(
                "/orgs/{org}/packages/container/{package}/versions",
                get(list),
            )
            .route("/orgs/{org}/packages/container/{package}", get(get_package))
            .route("/user/packages/container/{package}", get(get_package))
            .route(
                "/users/{username}/packages/container/{package}",
                get(get_package),
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
                    internal: false,
                    versions: Vec::new(),
                },
            );
        }
        let package = data.packages.get_mut(&key).expect("package just added");
        package.public = public;
        package.versions.extend(added);
        ids
    }

    /// Set the visibility of an existing package (`public`, `private` or `internal`), as
    /// someone does on its settings page (GitHub has no API for it).
    pub fn set_visibility(&self, org: Option<&str>, name: &str, visibility: &str) {
        let key = self.key(org, name);
        let mut data = self.inner.data.lock().expect("github data");
        let p = data.packages.get_mut(&key).expect("a package");
        p.public = visibility == "public";
        p.internal = visibility == "internal";
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

    /// `tags` of `name` (`OWNER/PACKAGE`), written straight into the storage of the registry
    /// behind `registry_front`, now point at `digest`: the packages learn it as GHCR would from
    /// pushes of those tags (see `record_tags`).
    pub fn tagged(&self, name: &str, digest: &str, tags: &[String]) {
        record_tags(&self.inner, name, digest, tags);
    }

    /// Revoke `token` once `requests` more requests have been answered, as GitHub does when a
    /// GitHub App installation token expires or a personal access token is regenerated: from
    /// the next request on it is refused with 401 "Bad credentials". `then` runs at that
    /// moment, before that request is answered (a test writes the new token where the plan
    /// reads it).
    pub fn revoke_after(&self, token: &str, requests: usize, then: impl FnOnce() + Send + 'static) {
        *self.inner.revocation.lock().expect("github revocation") = Some(Revocation {
            token: token.to_string(),
            left: requests,
            then: Some(Box::new(then)),
        });
    }

    /// Every request seen: `METHOD path?query token=<login|none>`, the path as sent (still
    /// percent-encoded).
    pub fn requests(&self) -> Vec<String> {
        self.inner.requests.lock().expect("github requests").clone()
    }
}

#[cfg(test)]
mod tests;
