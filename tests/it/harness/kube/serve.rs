//! The request handler: routing, discovery documents, `SelfSubjectAccessReview`, and the
//! `Status` bodies of refusals worded as kube-apiserver words them.

use super::*;

pub(super) fn respond(inner: &Inner, code: StatusCode, body: Vec<u8>) -> Response {
    let n = inner.audit.fetch_add(1, Ordering::Relaxed);
    let audit = format!("{:08x}-0000-4000-8000-{:012x}", std::process::id(), n);
    let mut r = (code, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    h.insert("audit-id", HeaderValue::from_str(&audit).expect("audit id"));
    r
}

pub(super) fn json_response(inner: &Inner, code: StatusCode, body: &Value) -> Response {
    respond(inner, code, serde_json::to_vec(body).expect("serialize"))
}

/// A failure `Status` (meta/v1) as kube-apiserver writes it.
pub(super) fn status_value(
    code: StatusCode,
    reason: &str,
    message: &str,
    details: Option<Value>,
) -> Value {
    let mut s = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    if let Some(d) = details {
        s["details"] = d;
    }
    s
}

pub(super) fn status(
    inner: &Inner,
    code: StatusCode,
    reason: &str,
    message: &str,
    details: Option<Value>,
) -> Response {
    json_response(inner, code, &status_value(code, reason, message, details))
}

pub(super) fn bad_request(inner: &Inner, message: &str) -> Response {
    status(inner, StatusCode::BAD_REQUEST, "BadRequest", message, None)
}

pub(super) fn not_found(inner: &Inner) -> Response {
    status(
        inner,
        StatusCode::NOT_FOUND,
        "NotFound",
        NOT_FOUND,
        Some(json!({})),
    )
}

pub(super) fn method_not_allowed(inner: &Inner) -> Response {
    status(
        inner,
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        NOT_ALLOWED,
        Some(json!({})),
    )
}

pub(super) fn forbidden(
    inner: &Inner,
    user: &str,
    verb: &str,
    res: Res,
    namespace: Option<&str>,
    name: Option<&str>,
) -> Response {
    let scope = match namespace {
        Some(ns) => format!("in the namespace {}", go_quote(ns)),
        None => "at the cluster scope".to_string(),
    };
    let why = format!(
        "User {} cannot {verb} resource {} in API group {} {scope}",
        go_quote(user),
        go_quote(res.resource()),
        go_quote(res.group()),
    );
    let message = match name {
        Some(n) => format!("{} {} is forbidden: {why}", res.qualified(), go_quote(n)),
        None => format!("{} is forbidden: {why}", res.qualified()),
    };
    status(
        inner,
        StatusCode::FORBIDDEN,
        "Forbidden",
        &message,
        Some(res.details(name)),
    )
}

/// Go's `%q` for the strings that occur here.
pub(super) fn go_quote(s: &str) -> String {
    serde_json::to_string(s).expect("quote")
}

pub(super) async fn handle(
    State(inner): State<Arc<Inner>>,
    ConnectInfo(info): ConnectInfo<ConnInfo>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path_and_query = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| uri.path().to_string());
    let continued = {
        let mut requests = inner.requests.lock().expect("kube requests");
        requests.push((
            method.to_string(),
            path_and_query,
            headers.contains_key(header::AUTHORIZATION),
        ));
        requests
            .iter()
            .filter(|r| r.1.contains("continue="))
            .count()
    };
    {
        let mut at = inner.expire_at.lock().expect("expire at");
        if let Some(i) = at.iter().position(|&n| n == continued) {
            at.remove(i);
            let mut data = inner.data.lock().expect("kube data");
            data.rv += 1;
            data.compacted = data.rv;
        }
    }
    let unauthorized = inner.data.lock().expect("kube data").unauthorized;
    let user = match authenticate(&inner, &info, &headers, unauthorized) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let segs: Vec<&str> = uri.path().trim_start_matches('/').split('/').collect();
    let get = method == Method::GET;

    match segs.as_slice() {
        ["version"] if get => json_response(&inner, StatusCode::OK, &version()),
        ["api"] if get => json_response(
            &inner,
            StatusCode::OK,
            &json!({
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": inner.host},
                ],
            }),
        ),
        ["apis"] if get => json_response(
            &inner,
            StatusCode::OK,
            &json!({
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": GROUPS.iter().map(|g| api_group(g)).collect::<Vec<_>>(),
            }),
        ),
        ["apis", g] if get && GROUPS.contains(g) => {
            let mut doc = api_group(g);
            doc["kind"] = json!("APIGroup");
            doc["apiVersion"] = json!("v1");
            json_response(&inner, StatusCode::OK, &doc)
        }
        ["api", "v1"] if get => json_response(&inner, StatusCode::OK, &resource_list("")),
        ["apis", g, v] if get && GROUPS.contains(g) && *v == group_version(g) => {
            json_response(&inner, StatusCode::OK, &resource_list(g))
        }
        ["apis", "authorization.k8s.io", "v1", "selfsubjectaccessreviews"] => {
            if method == Method::POST {
                access_review(&inner, &body)
            } else {
                method_not_allowed(&inner)
            }
        }
        // Namespaces (cluster-scoped): list and get.
        ["api", "v1", "namespaces"] => {
            collection(&inner, &method, &user, Res::Namespaces, None, &query)
        }
        ["api", "v1", "namespaces", name] => {
            object(&inner, &method, &user, Res::Namespaces, None, name)
        }
        ["api", "v1", r] => match Res::from_path("", r) {
            Some(res) => collection(&inner, &method, &user, res, None, &query),
            None => not_found(&inner),
        },
        ["api", "v1", "namespaces", ns, r] => match Res::from_path("", r) {
            Some(res) if res.namespaced() => {
                collection(&inner, &method, &user, res, Some(ns), &query)
            }
            _ => not_found(&inner),
        },
        ["api", "v1", "namespaces", ns, r, name] => match Res::from_path("", r) {
            Some(res) if res.namespaced() => object(&inner, &method, &user, res, Some(ns), name),
            _ => not_found(&inner),
        },
        ["apis", g, v, r] => match apis_res(g, v, r) {
            Some(res) => collection(&inner, &method, &user, res, None, &query),
            None => not_found(&inner),
        },
        ["apis", g, v, "namespaces", ns, r] => match apis_res(g, v, r) {
            Some(res) => collection(&inner, &method, &user, res, Some(ns), &query),
            None => not_found(&inner),
        },
        ["apis", g, v, "namespaces", ns, r, name] => match apis_res(g, v, r) {
            Some(res) => object(&inner, &method, &user, res, Some(ns), name),
            None => not_found(&inner),
        },
        ["version"] | ["api"] | ["apis"] | ["api", "v1"] => method_not_allowed(&inner),
        _ => not_found(&inner),
    }
}

/// A resource under `/apis/{group}/{version}` (named groups only, at the version they serve).
pub(super) fn apis_res(group: &str, version: &str, resource: &str) -> Option<Res> {
    Res::from_path(group, resource).filter(|_| !group.is_empty() && version == group_version(group))
}

pub(super) fn version() -> Value {
    json!({
        "major": "1",
        "minor": "31",
        "gitVersion": KUBE_GIT_VERSION,
        "gitCommit": "a78aa47129b8539636eb86a9d00e31b2720fe06b",
        "gitTreeState": "clean",
        "buildDate": "2024-12-10T11:38:19Z",
        "goVersion": "go1.22.9",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

pub(super) const GROUPS: [&str; 5] = [
    "apps",
    "batch",
    "authorization.k8s.io",
    "argoproj.io",
    "argocd-image-updater.argoproj.io",
];

pub(super) fn api_group(g: &str) -> Value {
    let v = group_version(g);
    let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
    json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
}

pub(super) fn resource_list(group: &str) -> Value {
    let verbs = json!([
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch"
    ]);
    let mut resources: Vec<Value> = Kind::ALL
        .into_iter()
        .chain(Kind::ARGO)
        .filter(|k| k.group() == group)
        .map(|k| {
            let mut r = json!({
                "name": k.resource(),
                "singularName": k.singular(),
                "namespaced": true,
                "kind": k.name(),
                "verbs": verbs,
            });
            if !k.short_names().is_empty() {
                r["shortNames"] = json!(k.short_names());
            }
            if !matches!(k, Kind::ControllerRevision | Kind::ImageUpdater) {
                r["categories"] = json!(["all"]);
            }
            if k == Kind::Application {
                r["categories"] = json!(["argoproj"]);
            }
            r
        })
        .collect();
    let group_version = if group.is_empty() {
        "v1".to_string()
    } else {
        format!("{group}/{}", group_version(group))
    };
    match group {
        "" => resources.insert(
            0,
            json!({
                "name": "namespaces",
                "singularName": "namespace",
                "namespaced": false,
                "kind": "Namespace",
                "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
                "shortNames": ["ns"],
            }),
        ),
        "authorization.k8s.io" => resources.push(json!({
            "name": "selfsubjectaccessreviews",
            "singularName": "selfsubjectaccessreview",
            "namespaced": false,
            "kind": "SelfSubjectAccessReview",
            "verbs": ["create"],
        })),
        _ => {}
    }
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    })
}

/// `GET` of one object.
pub(super) fn object(
    inner: &Inner,
    method: &Method,
    user: &str,
    res: Res,
    namespace: Option<&str>,
    name: &str,
) -> Response {
    if method != Method::GET {
        return method_not_allowed(inner);
    }
    let found = {
        let data = inner.data.lock().expect("kube data");
        if !data.access(res).allows(namespace) {
            drop(data);
            return forbidden(inner, user, "get", res, namespace, Some(name));
        }
        let key = match namespace {
            Some(ns) => format!("{ns}/{name}"),
            None => name.to_string(),
        };
        data.latest(res, &key)
    };
    match found {
        Some(o) => json_response(inner, StatusCode::OK, &o),
        None => status(
            inner,
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("{} {} not found", res.qualified(), go_quote(name)),
            Some(res.details(Some(name))),
        ),
    }
}

/// Non-resource paths every authenticated user may GET (system:discovery and
/// system:public-info-viewer).
pub(super) fn public_path(path: &str) -> bool {
    const EXACT: [&str; 8] = [
        "/api",
        "/apis",
        "/healthz",
        "/livez",
        "/readyz",
        "/version",
        "/version/",
        "/openapi",
    ];
    EXACT.contains(&path)
        || ["/api/", "/apis/", "/openapi/"]
            .iter()
            .any(|p| path.starts_with(p))
}

/// `POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews`.
pub(super) fn access_review(inner: &Inner, body: &[u8]) -> Response {
    let review: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return bad_request(
                inner,
                &format!("the object provided is unrecognized (must be of type SelfSubjectAccessReview): couldn't get version/kind; json parse error: {e}"),
            )
        }
    };
    let spec = review.get("spec").cloned().unwrap_or_else(|| json!({}));
    let resource = spec.get("resourceAttributes").filter(|v| v.is_object());
    let non_resource = spec.get("nonResourceAttributes").filter(|v| v.is_object());
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let allowed = match (resource, non_resource) {
        (Some(r), None) => {
            let res = Res::from_path(&s(r, "group"), &s(r, "resource"));
            let ns = s(r, "namespace");
            let verb = s(r, "verb");
            match res {
                Some(res) if s(r, "subresource").is_empty() => {
                    let scope = if ns.is_empty() || !res.namespaced() {
                        None
                    } else {
                        Some(ns.as_str())
                    };
                    ["get", "list", "watch"].contains(&verb.as_str())
                        && inner
                            .data
                            .lock()
                            .expect("kube data")
                            .access(res)
                            .allows(scope)
                }
                _ => false,
            }
        }
        (None, Some(n)) => s(n, "verb") == "get" && public_path(&s(n, "path")),
        _ => {
            return status(
                inner,
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                "SelfSubjectAccessReview.authorization.k8s.io \"\" is invalid: spec.resourceAttributes: Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified",
                Some(json!({
                    "group": "authorization.k8s.io",
                    "kind": "SelfSubjectAccessReview",
                    "causes": [{
                        "reason": "FieldValueInvalid",
                        "message": "Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified",
                        "field": "spec.resourceAttributes",
                    }],
                })),
            )
        }
    };
    let mut st = json!({"allowed": allowed});
    if allowed {
        st["reason"] = json!(
            "RBAC: allowed by ClusterRoleBinding \"ferry\" of ClusterRole \"ferry\" to ServiceAccount \"ferry/ferry\""
        );
    }
    json_response(
        inner,
        StatusCode::CREATED,
        &json!({
            "kind": "SelfSubjectAccessReview",
            "apiVersion": "authorization.k8s.io/v1",
            "metadata": {"creationTimestamp": null},
            "spec": spec,
            "status": st,
        }),
    )
}
