//! Docker Hub's pull budget on the registry front, as its docs describe it: each manifest GET
//! counts as a pull, a HEAD does not; manifest responses carry `ratelimit-limit: L;w=W` and
//! `ratelimit-remaining: R;w=W` (and `docker-ratelimit-source`); past the budget a manifest GET
//! gets 429 `TOOMANYREQUESTS`. A GET the registry does not answer 200 is not counted (a pull is
//! a manifest served). The window is fixed here and a test may end it at once
//! (`reset_pull_window`), so a re-run need not wait for it.

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};

use super::super::proxy::{Action, Hook};
use super::{HubFake, Inner};

/// The budget of the registry front: `limit` pulls per `window`, counted from `start`.
pub(super) struct Pulls {
    limit: u64,
    window: Duration,
    start: Instant,
    used: u64,
    /// Every manifest GET served (`GET /v2/ns/repo/manifests/ref`), in order, across windows.
    served: Vec<String>,
}

impl HubFake {
    /// Count manifest GETs through `registry_front` against `limit` pulls per `window`.
    pub fn limit_pulls(&self, limit: u64, window: Duration) {
        *self.inner.pulls.lock().expect("hub pulls") = Some(Pulls {
            limit,
            window,
            start: Instant::now(),
            used: 0,
            served: Vec::new(),
        });
    }

    /// End the current window now: the whole budget is back.
    pub fn reset_pull_window(&self) {
        if let Some(p) = self.inner.pulls.lock().expect("hub pulls").as_mut() {
            p.start = Instant::now();
            p.used = 0;
        }
    }

    /// Every pull served so far, in order (`GET /v2/ns/repo/manifests/ref`).
    pub fn pulls(&self) -> Vec<String> {
        let pulls = self.inner.pulls.lock().expect("hub pulls");
        pulls.as_ref().map(|p| p.served.clone()).unwrap_or_default()
    }
}

fn is_manifest(uri: &str) -> bool {
    uri.starts_with("/v2/") && uri.contains("/manifests/")
}

/// The headers of a manifest response with `remaining` pulls left.
fn headers(p: &Pulls, remaining: u64) -> Vec<(&'static str, String)> {
    let w = p.window.as_secs().max(1);
    vec![
        ("ratelimit-limit", format!("{};w={w}", p.limit)),
        ("ratelimit-remaining", format!("{remaining};w={w}")),
        ("docker-ratelimit-source", "127.0.0.1".to_string()),
    ]
}

/// The front's hook: the budget on manifest GETs and HEADs, then `rest` (what Hub does with
/// a manifest DELETE).
pub(super) fn hook(inner: std::sync::Arc<Inner>, rest: Hook) -> Hook {
    std::sync::Arc::new(move |method, uri, h| {
        let get = *method == Method::GET;
        if !(get || *method == Method::HEAD) || !is_manifest(uri) {
            return rest(method, uri, h);
        }
        let mut guard = inner.pulls.lock().expect("hub pulls");
        let Some(p) = guard.as_mut() else {
            return rest(method, uri, h);
        };
        if p.start.elapsed() >= p.window {
            p.start = Instant::now();
            p.used = 0;
        }
        if !get {
            return Action::Headers(headers(p, p.limit - p.used));
        }
        if p.used >= p.limit {
            let body = serde_json::json!({"errors": [{"code": "TOOMANYREQUESTS",
                "message": "You have reached your pull rate limit. You may increase the limit by authenticating and upgrading: https://www.docker.com/increase-rate-limit"}]});
            let mut hdrs = headers(p, 0);
            hdrs.push(("content-type", "application/json".into()));
            return Action::Respond(StatusCode::TOO_MANY_REQUESTS, hdrs, body.to_string().into());
        }
        p.used += 1;
        Action::Headers(headers(p, p.limit - p.used))
    })
}

/// Told of each forwarded answer: a manifest GET served is a pull; one not served is given
/// back.
pub(super) fn answered(inner: &Inner, method: &Method, uri: &str, status: StatusCode) {
    if *method != Method::GET || !is_manifest(uri) {
        return;
    }
    if let Some(p) = inner.pulls.lock().expect("hub pulls").as_mut() {
        match status {
            StatusCode::OK => p.served.push(format!("GET {uri}")),
            _ => p.used = p.used.saturating_sub(1),
        }
    }
}
