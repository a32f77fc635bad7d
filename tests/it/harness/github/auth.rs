//! Who a request comes from (the token, its login and scopes), the budget it spends, and the
//! headers every answer carries.

use super::*;

/// The authenticated caller of one request.
pub(super) struct Caller {
    pub(super) login: String,
    pub(super) user_id: u64,
    pub(super) scopes: Vec<String>,
}

impl Caller {
    /// `write:packages` implies `read:packages`, as in GitHub's scope hierarchy.
    pub(super) fn has(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
            || (scope == "read:packages" && self.scopes.iter().any(|s| s == "write:packages"))
    }
}

/// A token to be revoked after `left` more requests (see `GitHubFake::revoke_after`).
pub(super) struct Revocation {
    pub(super) token: String,
    pub(super) left: usize,
    /// Run when the token is revoked; `None` once it has run.
    pub(super) then: Option<Box<dyn FnOnce() + Send>>,
}

/// Counts one request against a scheduled revocation: whether `presented` is revoked now.
fn revoked(inner: &Inner, presented: Option<&str>) -> bool {
    let mut revocation = inner.revocation.lock().expect("github revocation");
    let Some(r) = revocation.as_mut() else {
        return false;
    };
    if r.left > 0 {
        r.left -= 1;
        return false;
    }
    if let Some(then) = r.then.take() {
        then();
    }
    presented == Some(r.token.as_str())
}

/// Builds every answer: rate headers for the caller's bucket, the scope headers when
/// authenticated, a JSON body (or none for 204).
pub(super) fn answer(
    inner: &Inner,
    caller: Option<&Caller>,
    accepted: &str,
    status: StatusCode,
    extra: Vec<(&'static str, String)>,
    body: Option<Value>,
) -> Response {
    let mut headers = HeaderMap::new();
    {
        let mut data = inner.data.lock().expect("github data");
        let l = &mut data.limits;
        l.roll();
        let used = l
            .used
            .get(caller.map(|c| c.login.as_str()).unwrap_or(""))
            .copied()
            .unwrap_or(0);
        let mut set = |k: &'static str, v: String| {
            headers.insert(k, v.parse().expect("header value"));
        };
        set("x-ratelimit-limit", l.requests.to_string());
        set(
            "x-ratelimit-remaining",
            l.requests.saturating_sub(used).to_string(),
        );
        set("x-ratelimit-reset", l.reset_unix().to_string());
        set("x-ratelimit-used", used.to_string());
        set("x-ratelimit-resource", "core".to_string());
        set("x-github-api-version-selected", "2022-11-28".to_string());
        if let Some(c) = caller {
            set("x-oauth-scopes", c.scopes.join(", "));
            set("x-accepted-oauth-scopes", accepted.to_string());
        }
        for (k, v) in extra {
            set(k, v);
        }
    }
    match body {
        Some(b) => (status, headers, Json(b)).into_response(),
        None => (status, headers).into_response(),
    }
}

pub(super) fn message(
    inner: &Inner,
    caller: Option<&Caller>,
    accepted: &str,
    status: StatusCode,
    msg: &str,
    doc: &str,
) -> Response {
    answer(
        inner,
        caller,
        accepted,
        status,
        Vec::new(),
        Some(json!({"message": msg, "documentation_url": doc})),
    )
}

/// Logs the request, spends one unit of the primary budget, and authenticates. Rate
/// limiting is checked before credentials; a request over the budget is not counted.
pub(super) fn begin(
    inner: &Inner,
    method: &Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
) -> Result<Caller, Box<Response>> {
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|a| {
            a.strip_prefix("Bearer ")
                .or_else(|| a.strip_prefix("bearer "))
                .or_else(|| a.strip_prefix("token "))
        })
        .map(str::trim);
    // Counted whoever asks; a revoked token is no token.
    let refused = revoked(inner, presented);
    let presented = presented.filter(|_| !refused);
    let caller = presented.and_then(|p| {
        inner.tokens.iter().find(|t| t.token == p).map(|t| Caller {
            login: t.login.clone(),
            user_id: t.user_id,
            scopes: t.scopes.clone(),
        })
    });
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    inner
        .requests
        .lock()
        .expect("github requests")
        .push(format!(
            "{method} {path} token={}",
            caller.as_ref().map(|c| c.login.as_str()).unwrap_or("none")
        ));
    let exhausted = {
        let mut data = inner.data.lock().expect("github data");
        let l = &mut data.limits;
        l.roll();
        let bucket = caller.as_ref().map(|c| c.login.clone()).unwrap_or_default();
        let used = l.used.entry(bucket).or_insert(0);
        if *used >= l.requests {
            true
        } else {
            *used += 1;
            false
        }
    };
    if exhausted {
        let msg = match &caller {
            Some(c) => format!(
                "API rate limit exceeded for user ID {}. If you reach out to GitHub Support for help, please include the request ID.",
                c.user_id
            ),
            None => "API rate limit exceeded for 127.0.0.1. (But here's the good news: Authenticated requests get a higher rate limit. Check out the documentation for more details.)".to_string(),
        };
        return Err(Box::new(message(
            inner,
            caller.as_ref(),
            "",
            StatusCode::FORBIDDEN,
            &msg,
            DOCS_RATE,
        )));
    }
    caller.ok_or_else(|| {
        Box::new(message(
            inner,
            None,
            "",
            StatusCode::UNAUTHORIZED,
            "Bad credentials",
            DOCS,
        ))
    })
}

/// The scopes a listing (of packages or of a package's versions) needs.
pub(super) const LIST_SCOPES: &str = "read:packages";

/// [`begin`] for a listing: the caller, who must also hold `read:packages` (a 403 worded as
/// GitHub words it otherwise).
pub(super) fn begin_listing(
    inner: &Inner,
    method: &Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
) -> Result<Caller, Box<Response>> {
    let caller = begin(inner, method, uri, headers)?;
    if !caller.has("read:packages") {
        return Err(Box::new(message(
            inner,
            Some(&caller),
            LIST_SCOPES,
            StatusCode::FORBIDDEN,
            "You need at least read:packages scope to list packages.",
            DOCS_PACKAGES,
        )));
    }
    Ok(caller)
}
