//! Blob uploads: monolithic, chunked and cross-repository mounts, their status and errors.

use super::*;

pub(super) fn upload_start(req: &Req, name: &str) -> Response {
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
pub(super) fn upload_progress(status: StatusCode, name: &str, id: &str, len: usize) -> Response {
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

pub(super) fn blob_created(name: &str, digest: &str) -> Response {
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

pub(super) fn upload_unknown(id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "BLOB_UPLOAD_UNKNOWN",
        "blob upload unknown to registry",
        json!({"session": id}),
    )
}

pub(super) fn upload_status(req: &Req, name: &str, id: &str) -> Response {
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
pub(super) fn chunk_error(req: &Req, name: &str, id: &str, have: usize) -> Option<Response> {
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

pub(super) fn upload_patch(req: &Req, name: &str, id: &str) -> Response {
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

pub(super) fn upload_finish(req: &Req, name: &str, id: &str) -> Response {
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

pub(super) fn upload_cancel(req: &Req, name: &str, id: &str) -> Response {
    let mut store = req.inner.store.lock().expect("store");
    if store.uploads.get(id).is_none_or(|u| u.name != name) {
        return upload_unknown(id);
    }
    store.uploads.remove(id);
    (StatusCode::NO_CONTENT, [(header::CONTENT_LENGTH, "0")]).into_response()
}

pub(super) fn store_blob(store: &mut Store, name: &str, digest: &str, bytes: Bytes) {
    store.blobs.entry(digest.to_string()).or_insert(bytes);
    store
        .repos
        .entry(name.to_string())
        .or_default()
        .blobs
        .insert(digest.to_string());
}
