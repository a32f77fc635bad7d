//! An in-process fake of the Docker Hub repository API (`hub.docker.com/v2`), written from
//! its public documentation: the namespace listing paged by `next`, JWT login at
//! `/v2/users/login`, private repositories visible only when logged in, `X-RateLimit-*`
//! headers on every answer and 429 with `Retry-After` once the budget is spent, 404
//! `object not found` for an unknown namespace. It fails the way the real service fails.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

/// Docker Hub caps `page_size` at 100.
pub const HUB_MAX_PAGE_SIZE: usize = 100;

struct Inner {
    base: String,
    /// namespace -> [(repository name, private?)]
    repos: BTreeMap<String, Vec<(String, bool)>>,
    users: Vec<(String, String)>,
    page_cap: usize,
    /// A fixed window as Hub's: `limit` requests per `window`, counted from `window_start`.
    limit: u64,
    window: std::time::Duration,
    used: Mutex<(std::time::Instant, std::time::SystemTime, u64)>,
    requests: Mutex<Vec<String>>,
}

/// A running fake; dropped with the test.
pub struct HubFake {
    pub url: String,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HubFake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HubFake {
    /// `repos`: (namespace, name, private). `page_cap` below 100 makes paging visible with
    /// few repositories; `budget` is the number of requests before 429s start.
    pub async fn start(
        repos: &[(&str, &str, bool)],
        users: &[(&str, &str)],
        page_cap: usize,
        budget: u64,
    ) -> HubFake {
        Self::start_with_window(
            repos,
            users,
            page_cap,
            budget,
            std::time::Duration::from_secs(3600),
        )
        .await
    }

    /// As `start`, with the budget coming back every `window`.
    pub async fn start_with_window(
        repos: &[(&str, &str, bool)],
        users: &[(&str, &str)],
        page_cap: usize,
        budget: u64,
        window: std::time::Duration,
    ) -> HubFake {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind hub fake");
        let url = format!("http://{}", listener.local_addr().expect("hub addr"));
        let mut map: BTreeMap<String, Vec<(String, bool)>> = BTreeMap::new();
        for (ns, name, private) in repos {
            map.entry(ns.to_string())
                .or_default()
                .push((name.to_string(), *private));
        }
        let inner = Arc::new(Inner {
            base: url.clone(),
            repos: map,
            users: users
                .iter()
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .collect(),
            page_cap: page_cap.min(HUB_MAX_PAGE_SIZE),
            limit: budget,
            window,
            used: Mutex::new((std::time::Instant::now(), std::time::SystemTime::now(), 0)),
            requests: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/v2/users/login", post(login))
            .route("/v2/repositories/{namespace}/", get(list))
            .with_state(inner.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        HubFake { url, inner, task }
    }

    /// Every request line seen (`GET /v2/...?query auth=yes|no`).
    pub fn requests(&self) -> Vec<String> {
        self.inner.requests.lock().expect("hub requests").clone()
    }
}

fn token_for(user: &str) -> String {
    format!("hubjwt.{user}")
}

/// Roll the window over when it has passed; returns (remaining, reset as unix seconds).
fn window_state(inner: &Inner) -> (u64, u64) {
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

fn rate_headers(inner: &Inner) -> [(&'static str, String); 3] {
    let (remaining, reset) = window_state(inner);
    [
        ("x-ratelimit-limit", inner.limit.to_string()),
        ("x-ratelimit-remaining", remaining.to_string()),
        ("x-ratelimit-reset", reset.to_string()),
    ]
}

/// Spend one unit of the budget, or answer 429 with Retry-After as Hub does.
fn spend(inner: &Inner) -> Option<Response> {
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
struct LoginBody {
    username: String,
    password: String,
}

async fn login(State(inner): State<Arc<Inner>>, Json(body): Json<LoginBody>) -> Response {
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

#[derive(Deserialize)]
struct ListQuery {
    page_size: Option<usize>,
    page: Option<usize>,
}

async fn list(
    State(inner): State<Arc<Inner>>,
    Path(namespace): Path<String>,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
) -> Response {
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
                .any(|(u, _)| *a == format!("Bearer {}", token_for(u)));
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
    let Some(all) = inner.repos.get(&namespace) else {
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
