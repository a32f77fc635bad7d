//! The namespace's repositories and their tags: listing paged by `next`, tag deletion.

use super::*;

pub(super) async fn list(
    State(inner): State<Arc<Inner>>,
    Path(namespace): Path<String>,
    Query(q): Query<PageQuery>,
    headers: HeaderMap,
) -> Response {
    arrived(&inner);
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
                .any(|(u, _)| *a == format!("Bearer {}", token_for(&inner, u)));
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

/// `page` and `page_size`, as both listings take them.
#[derive(Deserialize)]
pub(super) struct PageQuery {
    pub(super) page_size: Option<usize>,
    pub(super) page: Option<usize>,
}

/// `GET /v2/repositories/{namespace}/{repo}/tags/`: paged by `next`, each tag with its digest,
/// `tag_last_pushed` and `images` (one per platform).
pub(super) async fn list_tags(
    State(inner): State<Arc<Inner>>,
    Path((namespace, repo)): Path<(String, String)>,
    Query(q): Query<PageQuery>,
    headers: HeaderMap,
) -> Response {
    arrived(&inner);
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
    let size = q.page_size.unwrap_or(10).clamp(1, inner.page_cap);
    let page = q.page.unwrap_or(1).max(1);
    let start = (page - 1) * size;
    let Some((count, tags)) = tags_page(&inner, &key, start, size).await else {
        return (
            StatusCode::NOT_FOUND,
            rate_headers(&inner),
            Json(json!({"message": "object not found", "errinfo": {}})),
        )
            .into_response();
    };
    let results: Vec<serde_json::Value> = tags
        .iter()
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
    let next = (start + size < count).then(|| {
        format!(
            "{}/v2/repositories/{namespace}/{repo}/tags/?page={}&page_size={size}",
            inner.base,
            page + 1
        )
    });
    (
        StatusCode::OK,
        rate_headers(&inner),
        Json(json!({"count": count, "next": next, "previous": null, "results": results})),
    )
        .into_response()
}

/// `DELETE /v2/repositories/{namespace}/{repo}/tags/{tag}/`: 204, with a JWT from the login.
pub(super) async fn delete_tag(
    State(inner): State<Arc<Inner>>,
    Path((namespace, repo, tag)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    arrived(&inner);
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
        return match delete_upstream_tag(&up, &key, &tag) {
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

/// `GET /v2/namespaces/{namespace}/repositories/{repo}`: the repository with `is_private`. A
/// private one is shown only to a logged-in user (to anyone else it is `object not found`, as
/// one that does not exist); a JWT that is not one of the fake's is 401.
pub(super) async fn get_repository(
    State(inner): State<Arc<Inner>>,
    Path((namespace, repo)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    arrived(&inner);
    let user = bearer_user(&inner, &headers);
    let presented = headers.contains_key("authorization");
    inner.requests.lock().expect("hub requests").push(format!(
        "GET /v2/namespaces/{namespace}/repositories/{repo} auth={}",
        if presented { "yes" } else { "no" }
    ));
    if let Some(r) = spend(&inner) {
        return r;
    }
    if presented && user.is_none() {
        return (
            StatusCode::UNAUTHORIZED,
            rate_headers(&inner),
            Json(json!({"detail": "Invalid token."})),
        )
            .into_response();
    }
    let private = inner
        .repos
        .lock()
        .expect("hub repos")
        .get(&namespace)
        .and_then(|list| list.iter().find(|(r, _)| *r == repo).map(|(_, p)| *p));
    match private {
        Some(private) if !private || user.is_some() => (
            StatusCode::OK,
            rate_headers(&inner),
            Json(
                json!({"name": repo, "namespace": namespace, "repository_type": "image",
                        "status": 1, "is_private": private, "star_count": 0, "pull_count": 0,
                        "last_updated": "2026-11-01T00:00:00Z"}),
            ),
        )
            .into_response(),
        _ => (
            StatusCode::NOT_FOUND,
            rate_headers(&inner),
            Json(json!({"message": "object not found", "errinfo": {}})),
        )
            .into_response(),
    }
}
