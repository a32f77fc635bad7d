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

// ---------------------------------------------------------------------------------------
// Blobs and uploads

fn blob_get(req: &Req, name: &str, digest: &str) -> Response {
    if let Some(r) = digest_error(digest) {
        return r;
    }
    let bytes = {
        let store = req.inner.store.lock().expect("store");
        let linked = store
            .repos
            .get(name)
            .is_some_and(|r| r.blobs.contains(digest));
        linked.then(|| store.blobs.get(digest).cloned()).flatten()
    };
    let Some(bytes) = bytes else {
        return error(
            StatusCode::NOT_FOUND,
            "BLOB_UNKNOWN",
            "blob unknown to registry",
            json!({"digest": digest}),
        );
    };
    let total = bytes.len();
    let (status, part, content_range) =
        match req.header("range").and_then(|r| parse_range(r, total)) {
            Some(Ok((start, end))) => (
                StatusCode::PARTIAL_CONTENT,
                bytes.slice(start..=end),
                Some(format!("bytes {start}-{end}/{total}")),
            ),
            Some(Err(())) => {
                return (
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    [(header::CONTENT_RANGE, format!("bytes */{total}"))],
                )
                    .into_response()
            }
            None => (StatusCode::OK, bytes, None),
        };
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, part.len())
        .header(header::ACCEPT_RANGES, "bytes")
        .header("docker-content-digest", digest);
    if let Some(cr) = content_range {
        builder = builder.header(header::CONTENT_RANGE, cr);
    }
    let body = if *req.method == Method::HEAD {
        Body::empty()
    } else {
        Body::from(part)
    };
    builder.body(body).expect("blob response")
}

/// `bytes=a-b`, `bytes=a-` or `bytes=-n` (one range only) as inclusive offsets; `None` when
/// the header is not a single byte range (ignored, whole blob served), `Err` when it cannot
/// be satisfied.
fn parse_range(value: &str, total: usize) -> Option<Result<(usize, usize), ()>> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", suffix) => {
            let n: usize = suffix.parse().ok()?;
            if n == 0 || total == 0 {
                return Some(Err(()));
            }
            (total.saturating_sub(n), total - 1)
        }
        (a, "") => (a.parse().ok()?, total.saturating_sub(1)),
        (a, b) => (
            a.parse().ok()?,
            b.parse::<usize>().ok()?.min(total.saturating_sub(1)),
        ),
    };
    if start >= total || start > end {
        return Some(Err(()));
    }
    Some(Ok((start, end)))
}

fn blob_delete(req: &Req, name: &str, digest: &str) -> Response {
    if let Some(r) = digest_error(digest) {
        return r;
    }
    let mut store = req.inner.store.lock().expect("store");
    let removed = store
        .repos
        .get_mut(name)
        .is_some_and(|r| r.blobs.remove(digest));
    if !removed {
        return error(
            StatusCode::NOT_FOUND,
            "BLOB_UNKNOWN",
            "blob unknown to registry",
            json!({"digest": digest}),
        );
    }
    (StatusCode::ACCEPTED, [(header::CONTENT_LENGTH, "0")]).into_response()
}

fn upload_start(req: &Req, name: &str) -> Response {
    // Cross-repository mount: 201 when `from` has the blob, else an ordinary session.
    if let (Some(digest), Some(from)) = (req.param("mount"), req.param("from")) {
        if let Some(r) = digest_error(digest) {
            return r;
        }
        let mut store = req.inner.store.lock().expect("store");
        let in_from = store
            .repos
            .get(from)
            .is_some_and(|r| r.blobs.contains(digest));
        if in_from {
            store
                .repos
                .entry(name.to_string())
                .or_default()
                .blobs
                .insert(digest.to_string());
            return blob_created(name, digest);
        }
    } else if let Some(digest) = req.param("digest") {
        // Single-request monolithic upload.
        if let Some(r) = digest_error(digest) {
            return r;
        }
        if let Some(len) = req
            .header("content-length")
            .and_then(|v| v.parse::<usize>().ok())
        {
            if len != req.body.len() {
                return error(
                    StatusCode::BAD_REQUEST,
                    "SIZE_INVALID",
                    "Content-Length does not match the body",
                    Value::Null,
                );
            }
        }
        if compute_digest(digest, &[&req.body]).as_deref() != Some(digest) {
            return error(
                StatusCode::BAD_REQUEST,
                "DIGEST_INVALID",
                "provided digest did not match uploaded content",
                json!({"digest": digest}),
            );
        }
        let mut store = req.inner.store.lock().expect("store");
        store_blob(&mut store, name, digest, req.body.clone());
        return blob_created(name, digest);
    }
    // UUID-shaped (version 4 layout) from the clock and a counter: unique per registry.
    let n = req.inner.next_upload.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let id = format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        (t >> 32) as u32,
        (t >> 16) & 0xffff,
        t & 0xfff,
        (n >> 48) & 0xfff,
        n & 0xffff_ffff_ffff
    );
    let mut store = req.inner.store.lock().expect("store");
    store.repos.entry(name.to_string()).or_default();
    store.uploads.insert(
        id.clone(),
        Upload {
            name: name.to_string(),
            data: Vec::new(),
        },
    );
    upload_progress(StatusCode::ACCEPTED, name, &id, 0)
}

/// 202/204 with `Location`, `Range: 0-<end>` and the session id.
fn upload_progress(status: StatusCode, name: &str, id: &str, len: usize) -> Response {
    (
        status,
        [
            (header::LOCATION, format!("/v2/{name}/blobs/uploads/{id}")),
            (header::RANGE, format!("0-{}", len.saturating_sub(1))),
            (header::CONTENT_LENGTH, "0".to_string()),
            (
                header::HeaderName::from_static("docker-upload-uuid"),
                id.to_string(),
            ),
        ],
    )
        .into_response()
}

fn blob_created(name: &str, digest: &str) -> Response {
    (
        StatusCode::CREATED,
        [
            (header::LOCATION, format!("/v2/{name}/blobs/{digest}")),
            (header::CONTENT_LENGTH, "0".to_string()),
            (
                header::HeaderName::from_static("docker-content-digest"),
                digest.to_string(),
            ),
        ],
    )
        .into_response()
}

fn upload_unknown(id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "BLOB_UPLOAD_UNKNOWN",
        "blob upload unknown to registry",
        json!({"session": id}),
    )
}

fn upload_status(req: &Req, name: &str, id: &str) -> Response {
    let store = req.inner.store.lock().expect("store");
    match store.uploads.get(id) {
        Some(u) if u.name == name => {
            upload_progress(StatusCode::NO_CONTENT, name, id, u.data.len())
        }
        _ => upload_unknown(id),
    }
}

/// Checks a chunk's `Content-Range` (`<start>-<end>`, inclusive) against the bytes already
/// received and the chunk's length; `Some` is the response to send instead.
fn chunk_error(req: &Req, name: &str, id: &str, have: usize) -> Option<Response> {
    // Without Content-Range the chunk is simply appended.
    let range = req.header("content-range")?;
    let spec = range.trim();
    let spec = spec
        .strip_prefix("bytes=")
        .or_else(|| spec.strip_prefix("bytes "))
        .unwrap_or(spec);
    let spec = spec.split('/').next().unwrap_or(spec);
    let parsed = spec
        .split_once('-')
        .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)));
    let Some((start, end)) = parsed else {
        return Some(error(
            StatusCode::BAD_REQUEST,
            "BLOB_UPLOAD_INVALID",
            "malformed Content-Range",
            json!({"range": range}),
        ));
    };
    if start != have || end < start {
        // Out of order: 416, with where the session really is.
        let mut r = upload_progress(StatusCode::RANGE_NOT_SATISFIABLE, name, id, have);
        *r.body_mut() = Body::from(error_body(
            "BLOB_UPLOAD_INVALID",
            "chunk out of order",
            json!({"range": range, "offset": have}),
        ));
        r.headers_mut().remove(header::CONTENT_LENGTH);
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        return Some(r);
    }
    if end - start + 1 != req.body.len() {
        return Some(error(
            StatusCode::BAD_REQUEST,
            "SIZE_INVALID",
            "Content-Range does not match the chunk's length",
            json!({"range": range, "length": req.body.len()}),
        ));
    }
    None
}

fn upload_patch(req: &Req, name: &str, id: &str) -> Response {
    let mut store = req.inner.store.lock().expect("store");
    let Some(upload) = store.uploads.get_mut(id).filter(|u| u.name == name) else {
        return upload_unknown(id);
    };
    if let Some(r) = chunk_error(req, name, id, upload.data.len()) {
        return r;
    }
    upload.data.extend_from_slice(&req.body);
    upload_progress(StatusCode::ACCEPTED, name, id, upload.data.len())
}

fn upload_finish(req: &Req, name: &str, id: &str) -> Response {
    let mut store = req.inner.store.lock().expect("store");
    let Some(upload) = store.uploads.get_mut(id).filter(|u| u.name == name) else {
        return upload_unknown(id);
    };
    let Some(digest) = req.param("digest").map(str::to_string) else {
        return error(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            "closing PUT needs ?digest=",
            Value::Null,
        );
    };
    if let Some(r) = digest_error(&digest) {
        return r;
    }
    if !req.body.is_empty() {
        if let Some(r) = chunk_error(req, name, id, upload.data.len()) {
            return r;
        }
    }
    // The final chunk joins the upload only if the whole blob checks out, so the session
    // is left as it was after a refused PUT.
    if compute_digest(&digest, &[&upload.data, &req.body]).as_deref() != Some(digest.as_str()) {
        return error(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            "provided digest did not match uploaded content",
            json!({"digest": digest, "received": upload.data.len() + req.body.len()}),
        );
    }
    let mut upload = store.uploads.remove(id).expect("upload checked above");
    upload.data.extend_from_slice(&req.body);
    store_blob(&mut store, name, &digest, Bytes::from(upload.data));
    blob_created(name, &digest)
}

fn upload_cancel(req: &Req, name: &str, id: &str) -> Response {
    let mut store = req.inner.store.lock().expect("store");
    if store.uploads.get(id).is_none_or(|u| u.name != name) {
        return upload_unknown(id);
    }
    store.uploads.remove(id);
    (StatusCode::NO_CONTENT, [(header::CONTENT_LENGTH, "0")]).into_response()
}

fn store_blob(store: &mut Store, name: &str, digest: &str, bytes: Bytes) {
    store.blobs.entry(digest.to_string()).or_insert(bytes);
    store
        .repos
        .entry(name.to_string())
        .or_default()
        .blobs
        .insert(digest.to_string());
}

// ---------------------------------------------------------------------------------------
// Manifests

fn resolve(repo: &Repo, reference: &str) -> Option<String> {
    if reference.contains(':') {
        repo.manifests
            .contains_key(reference)
            .then(|| reference.to_string())
    } else {
        repo.tags.get(reference).cloned()
    }
}

fn manifest_get(req: &Req, name: &str, reference: &str) -> Response {
    if reference.contains(':') {
        if let Some(r) = digest_error(reference) {
            return r;
        }
    }
    let found = {
        let store = req.inner.store.lock().expect("store");
        store.repos.get(name).and_then(|repo| {
            let digest = resolve(repo, reference)?;
            let m = repo.manifests.get(&digest)?;
            Some((digest, m.media_type.clone(), m.bytes.clone()))
        })
    };
    let Some((digest, media_type, bytes)) = found else {
        return error(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            "manifest unknown to registry",
            json!({"name": name, "reference": reference}),
        );
    };
    let builder = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, media_type)
        .header(header::CONTENT_LENGTH, bytes.len())
        .header("docker-content-digest", &digest)
        .header(header::ETAG, format!("\"{digest}\""));
    let body = if *req.method == Method::HEAD {
        Body::empty()
    } else {
        Body::from(bytes)
    };
    builder.body(body).expect("manifest response")
}

fn manifest_invalid(message: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "MANIFEST_INVALID",
        message,
        Value::Null,
    )
}

fn manifest_put(req: &Req, name: &str, reference: &str) -> Response {
    let bytes = req.body.clone();
    if bytes.len() > MAX_MANIFEST_BYTES {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "SIZE_INVALID",
            "manifest too large",
            json!({"size": bytes.len(), "limit": MAX_MANIFEST_BYTES}),
        );
    }
    let Ok(doc) = serde_json::from_slice::<Value>(&bytes) else {
        return manifest_invalid("manifest is not JSON");
    };
    if !doc.is_object() {
        return manifest_invalid("manifest is not a JSON object");
    }
    let body_type = doc.get("mediaType").and_then(Value::as_str);
    // Parameters on Content-Type are ignored, as the spec asks.
    let header_type = req
        .header("content-type")
        .map(|v| v.split(';').next().unwrap_or("").trim().to_string())
        .filter(|v| !v.is_empty());
    let media_type = match (header_type, body_type) {
        (Some(h), Some(b)) if h != b => {
            return manifest_invalid(&format!(
                "Content-Type {h} does not match the manifest's mediaType {b}"
            ))
        }
        (Some(h), _) => h,
        (None, Some(b)) => b.to_string(),
        (None, None) => return manifest_invalid("no Content-Type and no mediaType"),
    };

    let digest = if reference.contains(':') {
        if let Some(r) = digest_error(reference) {
            return r;
        }
        if compute_digest(reference, &[&bytes]).as_deref() != Some(reference) {
            return error(
                StatusCode::BAD_REQUEST,
                "DIGEST_INVALID",
                "provided digest did not match uploaded content",
                json!({"digest": reference}),
            );
        }
        reference.to_string()
    } else {
        if !TAG_RE.is_match(reference) {
            return manifest_invalid(&format!("invalid tag {reference:?}"));
        }
        sha256_digest(&bytes)
    };

    let subject = match doc.get("subject") {
        None | Some(Value::Null) => None,
        Some(s) => match s.get("digest").and_then(Value::as_str) {
            Some(d) if digest_error(d).is_none() => Some(d.to_string()),
            _ => return manifest_invalid("subject has no valid digest"),
        },
    };

    let mut store = req.inner.store.lock().expect("store");
    // Every descriptor except `subject` must be in the repository, but an index's missing
    // child manifests are accepted unless refuse_sparse_index.
    let mut missing = Vec::new();
    {
        let repo = store.repos.get(name);
        let has_blob = |d: &str| repo.is_some_and(|r| r.blobs.contains(d));
        let has_manifest = |d: &str| repo.is_some_and(|r| r.manifests.contains_key(d));
        let config = doc.get("config").into_iter();
        let layers = ["layers", "blobs"]
            .into_iter()
            .filter_map(|k| doc.get(k).and_then(Value::as_array))
            .flatten();
        for desc in config.chain(layers) {
            let Some(d) = desc.get("digest").and_then(Value::as_str) else {
                return manifest_invalid("descriptor without digest");
            };
            // Foreign layers live at their `urls`, not in the registry.
            let foreign = desc
                .get("urls")
                .and_then(Value::as_array)
                .is_some_and(|u| !u.is_empty());
            if !foreign && !has_blob(d) {
                missing.push(d.to_string());
            }
        }
        if req.inner.options.refuse_sparse_index {
            for desc in doc
                .get("manifests")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(d) = desc.get("digest").and_then(Value::as_str) else {
                    return manifest_invalid("descriptor without digest");
                };
                if !has_manifest(d) {
                    missing.push(d.to_string());
                }
            }
        }
    }
    if !missing.is_empty() {
        let errors: Vec<Value> = missing
            .iter()
            .map(|d| {
                json!({"code": "MANIFEST_BLOB_UNKNOWN",
                       "message": "manifest references a manifest or blob unknown to registry",
                       "detail": {"digest": d}})
            })
            .collect();
        return (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "application/json")],
            json!({ "errors": errors }).to_string(),
        )
            .into_response();
    }

    let referrer = referrer_descriptor(&doc, &media_type, &digest, bytes.len());
    let repo = store.repos.entry(name.to_string()).or_default();
    repo.manifests.insert(
        digest.clone(),
        Stored {
            media_type,
            bytes,
            subject: subject.clone(),
            referrer,
        },
    );
    if !reference.contains(':') {
        repo.tags.insert(reference.to_string(), digest.clone());
    }
    let mut response = (
        StatusCode::CREATED,
        [
            (header::LOCATION, format!("/v2/{name}/manifests/{digest}")),
            (header::CONTENT_LENGTH, "0".to_string()),
            (
                header::HeaderName::from_static("docker-content-digest"),
                digest.clone(),
            ),
        ],
    )
        .into_response();
    if let Some(subject) = subject {
        if req.inner.referrers_api.load(Ordering::SeqCst) {
            response.headers_mut().insert(
                "oci-subject",
                header::HeaderValue::from_str(&subject).expect("digest is a header value"),
            );
        }
    }
    response
}

/// The descriptor the referrers API lists for a manifest: `artifactType` is the manifest's
/// own, else (for an image manifest) its config's media type; an index without one gets
/// none. Annotations are the manifest's.
fn referrer_descriptor(doc: &Value, media_type: &str, digest: &str, size: usize) -> Value {
    let mut desc = Map::new();
    desc.insert("mediaType".into(), json!(media_type));
    desc.insert("digest".into(), json!(digest));
    desc.insert("size".into(), json!(size));
    let is_index = media_type == OCI_INDEX
        || media_type == DOCKER_MANIFEST_LIST
        || doc.get("manifests").is_some();
    let own = doc
        .get("artifactType")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    let from_config = (!is_index)
        .then(|| doc.pointer("/config/mediaType").and_then(Value::as_str))
        .flatten();
    if let Some(t) = own.or(from_config) {
        desc.insert("artifactType".into(), json!(t));
    }
    if let Some(a) = doc
        .get("annotations")
        .filter(|a| a.as_object().is_some_and(|o| !o.is_empty()))
    {
        desc.insert("annotations".into(), a.clone());
    }
    Value::Object(desc)
}

fn manifest_delete(req: &Req, name: &str, reference: &str) -> Response {
    if reference.contains(':') {
        if let Some(r) = digest_error(reference) {
            return r;
        }
    }
    let mut store = req.inner.store.lock().expect("store");
    let deleted = store.repos.get_mut(name).is_some_and(|repo| {
        if reference.contains(':') {
            // The manifest and every tag pointing at it.
            let existed = repo.manifests.remove(reference).is_some();
            repo.tags.retain(|_, d| d != reference);
            existed
        } else {
            repo.tags.remove(reference).is_some()
        }
    });
    if !deleted {
        return error(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            "manifest unknown to registry",
            json!({"name": name, "reference": reference}),
        );
    }
    (StatusCode::ACCEPTED, [(header::CONTENT_LENGTH, "0")]).into_response()
}

// ---------------------------------------------------------------------------------------
// Listings

/// One page of `items` (sorted) after `last`, of at most `cap` or the client's `n`; the
/// second value is the last item returned when more remain.
fn page<'a>(req: &Req, items: &'a [String], cap: usize) -> (&'a [String], Option<&'a String>) {
    let n = req.param("n").and_then(|n| n.parse::<usize>().ok());
    let size = n.map_or(cap, |n| n.min(cap));
    let start = match req.param("last") {
        Some(last) => items.partition_point(|t| t.as_str() <= last),
        None => 0,
    };
    let end = (start + size).min(items.len());
    let page = &items[start..end];
    let more = size > 0 && end < items.len();
    (page, more.then(|| page.last()).flatten())
}

fn link_next(path: &str, pairs: &[(&str, &str)]) -> String {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    format!("<{path}?{query}>; rel=\"next\"")
}

fn tags_list(req: &Req, name: &str) -> Response {
    let tags: Vec<String> = {
        let store = req.inner.store.lock().expect("store");
        match store.repos.get(name) {
            Some(r) => r.tags.keys().cloned().collect(),
            None => {
                return error(
                    StatusCode::NOT_FOUND,
                    "NAME_UNKNOWN",
                    "repository name not known to registry",
                    json!({"name": name}),
                )
            }
        }
    };
    let (page, next) = page(req, &tags, req.inner.options.tags_page_size);
    let mut response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"name": name, "tags": page}).to_string(),
    )
        .into_response();
    if let Some(last) = next {
        let n = page.len().to_string();
        let link = link_next(
            &format!("/v2/{name}/tags/list"),
            &[("n", &n), ("last", last)],
        );
        response.headers_mut().insert(
            header::LINK,
            header::HeaderValue::from_str(&link).expect("link header"),
        );
    }
    response
}

fn catalog(req: &Req) -> Response {
    let repos: Vec<String> = req
        .inner
        .store
        .lock()
        .expect("store")
        .repos
        .keys()
        .cloned()
        .collect();
    let (page, next) = page(req, &repos, req.inner.options.tags_page_size);
    let mut response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        json!({ "repositories": page }).to_string(),
    )
        .into_response();
    if let Some(last) = next {
        let n = page.len().to_string();
        let link = link_next("/v2/_catalog", &[("n", &n), ("last", last)]);
        response.headers_mut().insert(
            header::LINK,
            header::HeaderValue::from_str(&link).expect("link header"),
        );
    }
    response
}

/// Referrer descriptors of `subject` in `repo`, sorted by digest, filtered by artifact type.
fn referrers_of(repo: &Repo, subject: &str, artifact_type: Option<&str>) -> Vec<Value> {
    repo.manifests
        .values()
        .filter(|m| m.subject.as_deref() == Some(subject))
        .filter(|m| artifact_type.is_none_or(|t| m.referrer["artifactType"].as_str() == Some(t)))
        .map(|m| m.referrer.clone())
        .collect()
}

fn referrers(req: &Req, name: &str, digest: &str) -> Response {
    if !req.inner.referrers_api.load(Ordering::SeqCst) {
        return not_found_page();
    }
    if let Some(r) = digest_error(digest) {
        return r;
    }
    let filter = req.param("artifactType").filter(|t| !t.is_empty());
    let all = {
        let store = req.inner.store.lock().expect("store");
        store
            .repos
            .get(name)
            .map(|r| referrers_of(r, digest, filter))
            .unwrap_or_default()
    };
    let digests: Vec<String> = all
        .iter()
        .map(|d| d["digest"].as_str().unwrap_or_default().to_string())
        .collect();
    let (page_digests, next) = page(req, &digests, req.inner.options.referrers_page_size.max(1));
    let manifests: Vec<&Value> = all
        .iter()
        .filter(|d| {
            page_digests
                .iter()
                .any(|p| d["digest"].as_str() == Some(p.as_str()))
        })
        .collect();
    let body = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
    let mut response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, OCI_INDEX)],
        body.to_string(),
    )
        .into_response();
    if filter.is_some() {
        response.headers_mut().insert(
            "oci-filters-applied",
            header::HeaderValue::from_static("artifactType"),
        );
    }
    if let Some(last) = next {
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        if let Some(t) = filter {
            pairs.push(("artifactType", t));
        }
        if let Some(n) = req.param("n") {
            pairs.push(("n", n));
        }
        pairs.push(("last", last));
        let link = link_next(&format!("/v2/{name}/referrers/{digest}"), &pairs);
        response.headers_mut().insert(
            header::LINK,
            header::HeaderValue::from_str(&link).expect("link header"),
        );
    }
    response
}

// ---------------------------------------------------------------------------------------
// Digests, errors, paths

fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The digest of `parts` (concatenated) in the algorithm `like` names (sha256 or sha512).
fn compute_digest(like: &str, parts: &[&[u8]]) -> Option<String> {
    fn hash<D: sha2::Digest>(parts: &[&[u8]]) -> String {
        let mut d = D::new();
        for p in parts {
            d.update(p);
        }
        hex::encode(d.finalize())
    }
    match like.split_once(':')?.0 {
        "sha256" => Some(format!("sha256:{}", hash::<Sha256>(parts))),
        "sha512" => Some(format!("sha512:{}", hash::<Sha512>(parts))),
        _ => None,
    }
}

/// `None` for a well-formed sha256 or sha512 digest, else the 400 DIGEST_INVALID to send.
fn digest_error(digest: &str) -> Option<Response> {
    let lower_hex = |h: &str| h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let ok = match digest.split_once(':') {
        Some(("sha256", hex)) => hex.len() == 64 && lower_hex(hex),
        Some(("sha512", hex)) => hex.len() == 128 && lower_hex(hex),
        _ => false,
    };
    if ok {
        None
    } else {
        Some(error(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            "invalid or unsupported digest",
            json!({"digest": digest}),
        ))
    }
}

fn error_body(code: &str, message: &str, detail: Value) -> String {
    let mut e = json!({"code": code, "message": message});
    if !detail.is_null() {
        e["detail"] = detail;
    }
    json!({ "errors": [e] }).to_string()
}

fn error(status: StatusCode, code: &str, message: &str, detail: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        error_body(code, message, detail),
    )
        .into_response()
}

/// What a router without the route answers (and what distribution sends for unknown paths).
fn not_found_page() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "404 page not found\n",
    )
        .into_response()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
