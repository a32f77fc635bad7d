//! A package's versions: listing by `state`, deleting (with GitHub's refusals) and restoring.

use super::*;

#[derive(Deserialize)]
pub(super) struct ListQuery {
    pub(super) per_page: Option<String>,
    pub(super) page: Option<String>,
    pub(super) state: Option<String>,
}

pub(super) async fn list(
    State(inner): State<Arc<Inner>>,
    Path(params): Path<HashMap<String, String>>,
    Query(q): Query<ListQuery>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Response {
    const ACCEPTED: &str = LIST_SCOPES;
    let caller = match begin_listing(&inner, &method, &uri, &headers) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let c = Some(&caller);
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

pub(super) async fn delete_version(
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
pub(super) async fn delete_checked(
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
pub(super) fn refuse_or_delete(
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

pub(super) async fn restore_version(
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
pub(super) async fn not_found(
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
