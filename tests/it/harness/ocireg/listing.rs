//! Listings: tags and the catalog paged by `n` and `last` with a `Link` header, and the
//! referrers API.

use super::*;

/// One page of `items` (sorted) after `last`, of at most `cap` or the client's `n`; the
/// second value is the last item returned when more remain.
pub(super) fn page<'a>(
    req: &Req,
    items: &'a [String],
    cap: usize,
) -> (&'a [String], Option<&'a String>) {
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

pub(super) fn link_next(path: &str, pairs: &[(&str, &str)]) -> String {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    format!("<{path}?{query}>; rel=\"next\"")
}

pub(super) fn tags_list(req: &Req, name: &str) -> Response {
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

pub(super) fn catalog(req: &Req) -> Response {
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
pub(super) fn referrers_of(repo: &Repo, subject: &str, artifact_type: Option<&str>) -> Vec<Value> {
    repo.manifests
        .values()
        .filter(|m| m.subject.as_deref() == Some(subject))
        .filter(|m| artifact_type.is_none_or(|t| m.referrer["artifactType"].as_str() == Some(t)))
        .map(|m| m.referrer.clone())
        .collect()
}

pub(super) fn referrers(req: &Req, name: &str, digest: &str) -> Response {
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
