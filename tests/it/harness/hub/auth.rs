//! JWT login, the caller of a request, and the rate limit every answer reports.

use super::*;

pub(super) fn token_for(user: &str) -> String {
    format!("hubjwt.{user}")
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
    inner
        .requests
        .lock()
        .expect("hub requests")
        .push(format!("POST /v2/users/login user={}", body.username));
    if let Some(r) = spend(&inner) {
        return r;
    }
    let ok = inner
        .users
        .iter()
        .any(|(u, p)| *u == body.username && *p == body.password);
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
        Json(json!({"token": token_for(&body.username)})),
    )
        .into_response()
}

/// The user a `Authorization: Bearer` header logs in as, if valid.
pub(super) fn bearer_user(inner: &Inner, headers: &HeaderMap) -> Option<String> {
    let auth = headers.get("authorization")?.to_str().ok()?;
    inner
        .users
        .iter()
        .find(|(u, _)| auth == format!("Bearer {}", token_for(u)))
        .map(|(u, _)| u.clone())
}
