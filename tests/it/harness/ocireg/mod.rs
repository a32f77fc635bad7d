//! An in-process registry written from the OCI distribution spec v1.1, everything held in
//! memory, on a loopback port of its own. Unlike [`super::registry::Registry`] (CNCF
//! distribution 2.8, no referrers API) it serves `GET /v2/<name>/referrers/<digest>` and
//! answers a manifest push carrying a `subject` with `OCI-Subject`; with
//! [`OciOptions::referrers_api`] off it behaves like a registry without the API (404 on the
//! referrers route, no `OCI-Subject`), so the same fake serves both paths of a client.
//!
//! What it implements, as the spec words it:
//! - `GET /v2/` → 200 with `Docker-Distribution-API-Version: registry/2.0`;
//! - blobs: HEAD/GET (with `Range: bytes=` parts → 206), DELETE; uploads by POST (plain → 202
//!   session, `?digest=` single-request monolithic → 201, `?mount=&from=` → 201 when `from`
//!   has the blob, else a 202 session), PATCH chunks (`Content-Range` checked when given, 416
//!   on a wrong offset), GET status (204), PUT `?digest=` to close (the whole upload is
//!   hashed; 400 DIGEST_INVALID on mismatch), DELETE to cancel;
//! - manifests: HEAD/GET/PUT/DELETE by tag or digest; PUT keeps the exact bytes and the
//!   request's `Content-Type`, refuses a body whose `mediaType` disagrees with it, refuses
//!   references to blobs the repository lacks (MANIFEST_BLOB_UNKNOWN) but accepts an index
//!   whose child manifests are missing ("sparse"), unless [`OciOptions::refuse_sparse_index`];
//!   a `subject` never has to exist;
//! - `GET /v2/<name>/tags/list` and `/v2/_catalog` with `n`/`last` and `Link: <…>; rel="next"`;
//! - the referrers API: 200 always (an empty index for an unknown subject or repository),
//!   descriptors with `artifactType` (the manifest's own, else its config's media type; none
//!   for an index without one) and the manifest's annotations, `?artifactType=` filtering
//!   with `OCI-Filters-Applied: artifactType`, pages of [`OciOptions::referrers_page_size`]
//!   linked by `Link: <…&last=…>; rel="next"`.
//!
//! Errors carry the spec's body `{"errors":[{"code","message","detail"}]}`. Names with
//! slashes work: every request goes through one handler that parses the path itself.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use regex::Regex;
use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256, Sha512};

use super::fixtures::{Credentials, Pusher};

mod blobs;
mod listing;
mod manifests;
mod uploads;
mod wire;

#[allow(unused_imports)]
pub use blobs::*;
#[allow(unused_imports)]
pub use listing::*;
#[allow(unused_imports)]
pub use manifests::*;
#[allow(unused_imports)]
pub use uploads::*;
#[allow(unused_imports)]
pub use wire::*;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// The spec asks registries to take manifests of at least 4 MiB; larger ones get 413.
const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// `<name>` as the spec defines it.
static NAME_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$")
        .expect("name regex")
});
/// A tag `<reference>`.
static TAG_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$").expect("tag regex"));

/// Switches; `OciOptions::default()` is a full v1.1 registry.
#[derive(Clone, Debug)]
pub struct OciOptions {
    /// Serve the referrers API and answer `OCI-Subject` (default true). Off: 404 on
    /// `/v2/<name>/referrers/…` and no `OCI-Subject`, like a registry predating v1.1.
    pub referrers_api: bool,
    /// Refuse an index whose child manifests are not in the repository (400
    /// MANIFEST_BLOB_UNKNOWN). Default false: the spec lets a registry accept it.
    pub refuse_sparse_index: bool,
    /// Referrers per page; a client's `n` may lower it (default 10 000).
    pub referrers_page_size: usize,
    /// Tags (and catalog entries) per page when the client gives no smaller `n` (default
    /// 10 000).
    pub tags_page_size: usize,
}

impl Default for OciOptions {
    fn default() -> Self {
        OciOptions {
            referrers_api: true,
            refuse_sparse_index: false,
            referrers_page_size: 10_000,
            tags_page_size: 10_000,
        }
    }
}

/// A manifest as stored: exact bytes, the media type it was pushed with, and what the
/// referrers API needs.
struct Stored {
    media_type: String,
    bytes: Bytes,
    subject: Option<String>,
    /// The descriptor the referrers API lists for this manifest.
    referrer: Value,
}

#[derive(Default)]
struct Repo {
    /// Digests of the blobs linked into this repository.
    blobs: BTreeSet<String>,
    /// digest → manifest.
    manifests: BTreeMap<String, Stored>,
    /// tag → digest.
    tags: BTreeMap<String, String>,
}

struct Upload {
    name: String,
    data: Vec<u8>,
}

#[derive(Default)]
struct Store {
    /// Blob content by digest, shared by every repository that links it.
    blobs: HashMap<String, Bytes>,
    repos: BTreeMap<String, Repo>,
    /// Open upload sessions by id.
    uploads: HashMap<String, Upload>,
}

struct Inner {
    options: OciOptions,
    referrers_api: AtomicBool,
    store: Mutex<Store>,
    requests: Mutex<Vec<String>>,
    next_upload: AtomicU64,
}

/// A running fake registry; stopped when dropped.
pub struct OciRegistry {
    addr: String,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for OciRegistry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl OciRegistry {
    /// Binds a free port on 127.0.0.1 and serves until dropped.
    pub async fn start(options: OciOptions) -> OciRegistry {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind OCI registry fake");
        let addr = listener.local_addr().expect("OCI fake addr").to_string();
        let inner = Arc::new(Inner {
            referrers_api: AtomicBool::new(options.referrers_api),
            options,
            store: Mutex::new(Store::default()),
            requests: Mutex::new(Vec::new()),
            next_upload: AtomicU64::new(1),
        });
        let app = Router::new()
            .fallback(handle)
            .layer(DefaultBodyLimit::disable())
            .with_state(inner.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        OciRegistry { addr, inner, task }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Same as [`OciRegistry::addr`]: the registry host as image references name it.
    pub fn host(&self) -> &str {
        &self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A fixture client for this registry (no auth).
    pub fn pusher(&self) -> Pusher {
        Pusher::with_credentials(&self.url(), Credentials::Anonymous)
    }

    /// Turns the referrers API on or off from now on, as a registry upgrade would.
    pub fn set_referrers_api(&self, on: bool) {
        self.inner.referrers_api.store(on, Ordering::SeqCst);
    }

    /// Every request so far, oldest first, as `METHOD /path` or `METHOD /path?query`
    /// (path and query as sent).
    pub fn requests(&self) -> Vec<String> {
        self.inner.requests.lock().expect("requests").clone()
    }

    /// Requests with `method` whose logged line contains `contains`.
    pub fn count_requests(&self, method: &str, contains: &str) -> usize {
        let prefix = format!("{} ", method.to_ascii_uppercase());
        self.requests()
            .iter()
            .filter(|r| r.starts_with(&prefix) && r.contains(contains))
            .count()
    }

    pub fn clear_requests(&self) {
        self.inner.requests.lock().expect("requests").clear();
    }

    /// `(media type, exact bytes)` of a manifest by tag or digest.
    pub fn manifest(&self, name: &str, reference: &str) -> Option<(String, Vec<u8>)> {
        let store = self.inner.store.lock().expect("store");
        let repo = store.repos.get(name)?;
        let digest = resolve(repo, reference)?;
        let m = repo.manifests.get(&digest)?;
        Some((m.media_type.clone(), m.bytes.to_vec()))
    }

    /// Point `tag` of `name` at the manifest `digest` already stored there, as a push of
    /// that manifest under the tag would: a tag costs no request (many-tag corpora).
    pub fn tag(&self, name: &str, tag: &str, digest: &str) {
        let mut store = self.inner.store.lock().expect("store");
        let repo = store.repos.get_mut(name).expect("a pushed repository");
        assert!(
            repo.manifests.contains_key(digest),
            "{name}@{digest} not stored"
        );
        repo.tags.insert(tag.to_string(), digest.to_string());
    }

    /// Tags of `name`, sorted; empty for an unknown repository.
    pub fn tags(&self, name: &str) -> Vec<String> {
        let store = self.inner.store.lock().expect("store");
        store
            .repos
            .get(name)
            .map(|r| r.tags.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Digests of every manifest stored in `name`, sorted.
    pub fn manifest_digests(&self, name: &str) -> Vec<String> {
        let store = self.inner.store.lock().expect("store");
        store
            .repos
            .get(name)
            .map(|r| r.manifests.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The descriptors the referrers API would list for `digest` in `name` (all pages,
    /// unfiltered), sorted by digest; served whatever [`OciOptions::referrers_api`] says.
    pub fn referrers(&self, name: &str, digest: &str) -> Vec<Value> {
        let store = self.inner.store.lock().expect("store");
        store
            .repos
            .get(name)
            .map(|r| referrers_of(r, digest, None))
            .unwrap_or_default()
    }

    /// Content of a blob linked into `name`.
    pub fn blob(&self, name: &str, digest: &str) -> Option<Vec<u8>> {
        let store = self.inner.store.lock().expect("store");
        if !store.repos.get(name)?.blobs.contains(digest) {
            return None;
        }
        store.blobs.get(digest).map(|b| b.to_vec())
    }

    /// Repository names, sorted.
    pub fn repositories(&self) -> Vec<String> {
        let store = self.inner.store.lock().expect("store");
        store.repos.keys().cloned().collect()
    }

    /// Upload sessions opened and neither closed nor cancelled.
    pub fn open_uploads(&self) -> usize {
        self.inner.store.lock().expect("store").uploads.len()
    }
}

/// The one handler: logs the request, parses `/v2/<name>/…` and dispatches.
async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let line = match uri.query() {
        Some(q) => format!("{method} {}?{q}", uri.path()),
        None => format!("{method} {}", uri.path()),
    };
    inner.requests.lock().expect("requests").push(line);
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let req = Req {
        inner: &inner,
        method: &method,
        query: &query,
        headers: &headers,
        body,
    };
    let path = percent_decode(uri.path());
    let mut response = route(&req, &path);
    response.headers_mut().insert(
        "docker-distribution-api-version",
        header::HeaderValue::from_static("registry/2.0"),
    );
    response
}

struct Req<'a> {
    inner: &'a Inner,
    method: &'a Method,
    query: &'a [(String, String)],
    headers: &'a HeaderMap,
    body: Bytes,
}

impl Req<'_> {
    fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

fn route(req: &Req, path: &str) -> Response {
    if path == "/v2/" || path == "/v2" {
        return match *req.method {
            Method::GET | Method::HEAD => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                "{}",
            )
                .into_response(),
            _ => not_found_page(),
        };
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return not_found_page();
    };
    if rest == "_catalog" && *req.method == Method::GET {
        return catalog(req);
    }
    let parts: Vec<&str> = rest.split('/').collect();
    let n = parts.len();
    // The endpoint is told by the path's tail; whatever precedes it is the name. Upload
    // routes first: no digest is called "uploads".
    let (name_parts, endpoint) = if n >= 3 && parts[n - 3] == "blobs" && parts[n - 2] == "uploads" {
        if parts[n - 1].is_empty() {
            (&parts[..n - 3], Endpoint::UploadStart)
        } else {
            (&parts[..n - 3], Endpoint::Upload(parts[n - 1]))
        }
    } else if n >= 3 && parts[n - 2] == "blobs" && parts[n - 1] == "uploads" {
        (&parts[..n - 2], Endpoint::UploadStart)
    } else if n >= 3 && parts[n - 2] == "blobs" {
        (&parts[..n - 2], Endpoint::Blob(parts[n - 1]))
    } else if n >= 3 && parts[n - 2] == "manifests" {
        (&parts[..n - 2], Endpoint::Manifest(parts[n - 1]))
    } else if n >= 3 && parts[n - 2] == "tags" && parts[n - 1] == "list" {
        (&parts[..n - 2], Endpoint::Tags)
    } else if n >= 3 && parts[n - 2] == "referrers" {
        (&parts[..n - 2], Endpoint::Referrers(parts[n - 1]))
    } else {
        return not_found_page();
    };
    let name = name_parts.join("/");
    if !NAME_RE.is_match(&name) || name.len() >= 256 {
        return error(
            StatusCode::BAD_REQUEST,
            "NAME_INVALID",
            "invalid repository name",
            json!({"name": name}),
        );
    }
    let m = req.method;
    match endpoint {
        Endpoint::UploadStart if *m == Method::POST => upload_start(req, &name),
        Endpoint::Upload(id) if *m == Method::GET => upload_status(req, &name, id),
        Endpoint::Upload(id) if *m == Method::PATCH => upload_patch(req, &name, id),
        Endpoint::Upload(id) if *m == Method::PUT => upload_finish(req, &name, id),
        Endpoint::Upload(id) if *m == Method::DELETE => upload_cancel(req, &name, id),
        Endpoint::Blob(d) if *m == Method::GET || *m == Method::HEAD => blob_get(req, &name, d),
        Endpoint::Blob(d) if *m == Method::DELETE => blob_delete(req, &name, d),
        Endpoint::Manifest(r) if *m == Method::GET || *m == Method::HEAD => {
            manifest_get(req, &name, r)
        }
        Endpoint::Manifest(r) if *m == Method::PUT => manifest_put(req, &name, r),
        Endpoint::Manifest(r) if *m == Method::DELETE => manifest_delete(req, &name, r),
        Endpoint::Tags if *m == Method::GET => tags_list(req, &name),
        Endpoint::Referrers(d) if *m == Method::GET => referrers(req, &name, d),
        Endpoint::Referrers(_) if !req.inner.referrers_api.load(Ordering::SeqCst) => {
            not_found_page()
        }
        _ => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "the operation is unsupported",
            Value::Null,
        ),
    }
}

enum Endpoint<'a> {
    UploadStart,
    Upload(&'a str),
    Blob(&'a str),
    Manifest(&'a str),
    Tags,
    Referrers(&'a str),
}
