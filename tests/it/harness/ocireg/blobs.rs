//! Blobs: GET and HEAD with ranges, DELETE.

use super::*;

pub(super) fn blob_get(req: &Req, name: &str, digest: &str) -> Response {
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
pub(super) fn parse_range(value: &str, total: usize) -> Option<Result<(usize, usize), ()>> {
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

pub(super) fn blob_delete(req: &Req, name: &str, digest: &str) -> Response {
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
