//! An owner's container packages (`GET /orgs/{org}/packages`, `/user/packages`), one package
//! (`GET /orgs/{org}/packages/container/{package}`), `GET /user`, and the paging (`per_page`, `page`, `Link`) every listing shares.

use super::*;

/// Which package a route names: the owner from `{org}`, `{username}` or the caller.
pub(super) fn package_key(
    params: &HashMap<String, String>,
    caller: &Caller,
) -> (OwnerKind, String, String) {
    let name = params.get("package").cloned().unwrap_or_default();
    if let Some(org) = params.get("org") {
        (OwnerKind::Org, org.clone(), name)
    } else if let Some(user) = params.get("username") {
        (OwnerKind::User, user.clone(), name)
    } else {
        (OwnerKind::User, caller.login.clone(), name)
    }
}

pub(super) fn parse_num(s: &Option<String>) -> Option<usize> {
    s.as_deref().and_then(|s| s.parse().ok())
}

/// The requested page of `items` (`per_page` defaults to 30, at most 100; the first page
/// is page 1) and, when there is more than one page, GitHub's `Link` header (`prev`, `next`, `last`,
/// `first`) with absolute URLs on the fake's base; `keep` is appended to each URL's query.
pub(super) fn page_of<T: Clone>(
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

pub(super) async fn get_user(
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

#[derive(Deserialize)]
pub(super) struct PackagesQuery {
    pub(super) package_type: Option<String>,
    pub(super) per_page: Option<String>,
    pub(super) page: Option<String>,
}

/// `GET /orgs/{org}/packages?package_type=container` and `/user/packages?...`: the owner's
/// container packages by name. An organisation is known to the fake once it has a package;
/// an unknown one is 404 `Not Found`, as GitHub answers for a name that is not an org.
pub(super) async fn list_packages(
    State(inner): State<Arc<Inner>>,
    Path(params): Path<HashMap<String, String>>,
    Query(q): Query<PackagesQuery>,
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
    let packages: Vec<(u64, String, &'static str, usize, String)> = {
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
                (p.id, name.clone(), p.visibility(), active.len(), created)
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
        .map(|(id, name, visibility, count, created)| {
            let enc = name.replace('/', "%2F");
            json!({
                "id": id,
                "name": name,
                "package_type": "container",
                "owner": {"login": owner},
                "version_count": count,
                "visibility": visibility,
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

/// `GET /orgs/{org}/packages/container/{package}` (and the user forms): the package with its
/// `visibility`, as GitHub's "Get a package for an organization" answers; 404 "Package not
/// found." for one it does not hold, 403 without `read:packages`, 401 without a token.
pub(super) async fn get_package(
    State(inner): State<Arc<Inner>>,
    Path(params): Path<HashMap<String, String>>,
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
    let key = package_key(&params, &caller);
    let found = {
        let data = inner.data.lock().expect("github data");
        data.packages.get(&key).map(|p| {
            let active = p.versions.iter().filter(|v| !v.deleted).count();
            let created = p.versions.iter().map(|v| v.created_at.clone()).min();
            (p.id, p.visibility(), active, created.unwrap_or_default())
        })
    };
    let Some((id, visibility, count, created)) = found else {
        return message(
            &inner,
            c,
            ACCEPTED,
            StatusCode::NOT_FOUND,
            "Package not found.",
            DOCS_PACKAGES,
        );
    };
    let (kind, owner, name) = &key;
    let enc = name.replace('/', "%2F");
    let (api_owner, html_owner) = match kind {
        OwnerKind::Org => (format!("orgs/{owner}"), format!("orgs/{owner}")),
        OwnerKind::User => (format!("users/{owner}"), format!("users/{owner}")),
    };
    let body = json!({
        "id": id,
        "name": name,
        "package_type": "container",
        "owner": {"login": owner},
        "version_count": count,
        "visibility": visibility,
        "url": format!("{}/{api_owner}/packages/container/{enc}", inner.base),
        "html_url": format!("{}/{html_owner}/packages/container/package/{enc}", inner.base),
        "created_at": created,
        "updated_at": created,
    });
    answer(&inner, c, ACCEPTED, StatusCode::OK, Vec::new(), Some(body))
}
