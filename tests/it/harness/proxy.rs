//! A fault-injecting reverse proxy in front of a real registry. Each request is shown to a
//! hook that decides what happens: forward it (optionally to another URI), answer it
//! directly (5xx, 405, 429…), corrupt the body that comes back, or redirect it elsewhere.
//! The proxy forwards the client's `Host`, so the registry's absolute upload `Location`s
//! point back through the proxy.

use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;

/// What the proxy does with one request.
pub enum Action {
    Forward,
    /// Forward with this path and query instead.
    Rewrite(String),
    /// Answer directly.
    Respond(StatusCode, Vec<(&'static str, String)>, Vec<u8>),
    /// Forward, then flip one byte in the middle of the response body.
    Corrupt,
    /// Forward, then replace a response header.
    SetHeader(&'static str, String),
}

impl Action {
    /// Answer with a registry error body, as distribution does.
    pub fn registry_error(status: StatusCode, code: &str, message: &str) -> Action {
        let body = serde_json::json!({"errors": [{"code": code, "message": message}]});
        Action::Respond(
            status,
            vec![("content-type", "application/json".into())],
            body.to_string().into_bytes(),
        )
    }
}

/// The hook: method, path with query, request headers -> action.
pub type Hook = Arc<dyn Fn(&Method, &str, &HeaderMap) -> Action + Send + Sync>;

/// One request as the proxy saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub authorization: Option<String>,
}

struct Inner {
    upstream: String,
    hook: Hook,
    client: reqwest::Client,
    seen: Mutex<Vec<Seen>>,
}

/// A running proxy; `addr` is what plans name as the registry host.
pub struct Proxy {
    pub addr: String,
    pub url: String,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// Proxy to `upstream` (`http://127.0.0.1:PORT`).
    pub async fn start(upstream: &str, hook: Hook) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr").to_string();
        let inner = Arc::new(Inner {
            upstream: upstream.trim_end_matches('/').to_string(),
            hook,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("proxy client"),
            seen: Mutex::new(Vec::new()),
        });
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Proxy {
            url: format!("http://{addr}"),
            addr,
            inner,
            task,
        }
    }

    /// A proxy that forwards everything (a second loopback host, e.g. blob storage).
    pub async fn transparent(upstream: &str) -> Proxy {
        Proxy::start(upstream, Arc::new(|_, _, _| Action::Forward)).await
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.inner.seen.lock().expect("proxy log").clone()
    }
}

async fn handle(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let method = req.method().clone();
    let uri = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let headers = req.headers().clone();
    inner.seen.lock().expect("proxy log").push(Seen {
        method: method.to_string(),
        uri: uri.clone(),
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    });
    let action = (inner.hook)(&method, &uri, &headers);
    let target_uri = match &action {
        Action::Respond(status, hdrs, body) => {
            let mut resp = (*status, body.clone()).into_response();
            for (k, v) in hdrs {
                resp.headers_mut().insert(
                    HeaderName::from_static(k),
                    HeaderValue::from_str(v).expect("header value"),
                );
            }
            return resp;
        }
        Action::Rewrite(u) => u.clone(),
        _ => uri.clone(),
    };
    let body: Bytes = match axum::body::to_bytes(req.into_body(), usize::MAX).await {
        Ok(b) => b,
        Err(_) => return StatusCode::BAD_REQUEST.into_response(),
    };
    let mut fwd = inner
        .client
        .request(method.clone(), format!("{}{target_uri}", inner.upstream))
        .body(body);
    for (k, v) in headers.iter() {
        // Host is forwarded as the client sent it, so absolute Locations come back here.
        if k == "content-length" || k == "transfer-encoding" || k == "connection" {
            continue;
        }
        fwd = fwd.header(k, v);
    }
    let upstream = match fwd.send().await {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = upstream.status();
    let mut out_headers = upstream.headers().clone();
    let mut bytes = upstream.bytes().await.unwrap_or_default().to_vec();
    match action {
        Action::Corrupt if !bytes.is_empty() => {
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0xff;
        }
        Action::SetHeader(k, v) => {
            out_headers.insert(
                HeaderName::from_static(k),
                HeaderValue::from_str(&v).expect("header"),
            );
        }
        _ => {}
    }
    out_headers.remove("transfer-encoding");
    out_headers.remove("content-length");
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = status;
    *resp.headers_mut() = out_headers;
    resp
}
