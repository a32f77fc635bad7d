//! Manifests: GET, HEAD, PUT (with the checks OCI v1.1 asks for) and DELETE.

use super::*;

pub(super) fn resolve(repo: &Repo, reference: &str) -> Option<String> {
    if reference.contains(':') {
        repo.manifests
            .contains_key(reference)
            .then(|| reference.to_string())
    } else {
        repo.tags.get(reference).cloned()
    }
}

pub(super) fn manifest_get(req: &Req, name: &str, reference: &str) -> Response {
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

pub(super) fn manifest_invalid(message: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "MANIFEST_INVALID",
        message,
        Value::Null,
    )
}

pub(super) fn manifest_put(req: &Req, name: &str, reference: &str) -> Response {
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
pub(super) fn referrer_descriptor(
    doc: &Value,
    media_type: &str,
    digest: &str,
    size: usize,
) -> Value {
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

pub(super) fn manifest_delete(req: &Req, name: &str, reference: &str) -> Response {
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
