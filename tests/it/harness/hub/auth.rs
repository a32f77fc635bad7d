//! JWT login, the caller of a request, and the rate limit every answer reports.

use super::*;

/// The JWT a login gives `user`: a new one once the password changed (the old one is then
/// refused).
pub(super) fn token_for(inner: &Inner, user: &str) -> String {
    match &*inner.change.lock().expect("hub password change") {
        Some(c) if c.then.is_none() && c.user == user => format!("hubjwt.{user}.2"),
        _ => format!("hubjwt.{user}"),
    }
}

/// A scheduled password change (see `HubFake::change_password_after`).
pub(super) struct PasswordChange {
    pub(super) user: String,
    pub(super) password: String,
    pub(super) left: usize,
    /// Run when the password changes; `None` once it has.
    pub(super) then: Option<Box<dyn FnOnce() + Send>>,
}

/// Every request passes here first: counts it against a scheduled password change, and
/// makes the change when its time has come.
pub(super) fn arrived(inner: &Inner) {
    let mut change = inner.change.lock().expect("hub password change");
    let Some(c) = change.as_mut() else {
        return;
    };
    if c.left > 0 {
        c.left -= 1;
    } else if let Some(then) = c.then.take() {
        then();
    }
}

/// Whether `user` logs in with `password`, as things stand (see `arrived`).
fn password_ok(inner: &Inner, user: &str, password: &str) -> bool {
    if let Some(c) = &*inner.change.lock().expect("hub password change") {
        if c.then.is_none() && c.user == user {
            return c.password == password;
        }
    }
    inner.users.iter().any(|(u, p)| u == user && p == password)
}

/// Roll the window over when it has passed; returns (remaining, reset as unix seconds).
pub(super) fn window_state(inner: &Inner) -> (u64, u64) {
    let mut used = inner.used.lock().expect("hub window");
    if used.0.elapsed() >= inner.window {
        *used = (std::time::Instant::now(), std::time::SystemTime::now(), 0);
    }
    let reset = (used.1 + inner.window)
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    (inner.limit.saturating_sub(used.2), reset)
}

pub(super) fn rate_headers(inner: &Inner) -> [(&'static str, String); 3] {
    let (remaining, reset) = window_state(inner);
    [
        ("x-ratelimit-limit", inner.limit.to_string()),
        ("x-ratelimit-remaining", remaining.to_string()),
        ("x-ratelimit-reset", reset.to_string()),
    ]
}

/// Spend one unit of the budget, or answer 429 with Retry-After as Hub does.
pub(super) fn spend(inner: &Inner) -> Option<Response> {
    let (remaining, reset) = window_state(inner);
    if remaining == 0 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        return Some(
            (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", reset.saturating_sub(now).max(1).to_string())],
                rate_headers(inner),
                Json(json!({"message": "Rate limit exceeded", "errinfo": {}})),
            )
                .into_response(),
        );
    }
    inner.used.lock().expect("hub window").2 += 1;
    None
}

#[derive(Deserialize)]
pub(super) struct LoginBody {
    pub(super) username: String,
    pub(super) password: String,
}

pub(super) async fn login(
    State(inner): State<Arc<Inner>>,
    Json(body): Json<LoginBody>,
) -> Response {
    arrived(&inner);
    inner
        .requests
        .lock()
        .expect("hub requests")
        .push(format!("POST /v2/users/login user={}", body.username));
    if let Some(r) = spend(&inner) {
        return r;
    }
    let ok = password_ok(&inner, &body.username, &body.password);
    if !ok {
        return (
            StatusCode::UNAUTHORIZED,
            rate_headers(&inner),
            Json(json!({"detail": "Incorrect authentication credentials."})),
        )
            .into_response();
    }
    (
        StatusCode::OK,
        rate_headers(&inner),
        Json(json!({"token": token_for(&inner, &body.username)})),
    )
        .into_response()
}

/// The user a `Authorization: Bearer` header logs in as, if valid.
pub(super) fn bearer_user(inner: &Inner, headers: &HeaderMap) -> Option<String> {
    let auth = headers.get("authorization")?.to_str().ok()?;
    inner
        .users
        .iter()
        .find(|(u, _)| auth == format!("Bearer {}", token_for(inner, u)))
        .map(|(u, _)| u.clone())
}
