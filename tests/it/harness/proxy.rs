//! A fault-injecting reverse proxy in front of a real registry. Each request is shown to a
//! hook that decides what happens: forward it (optionally to another URI), answer it
//! directly (5xx, 405, 429…), corrupt, lengthen, shorten or dribble the body that comes back,
//! send a body that never ends, or redirect it elsewhere.
//! The proxy forwards the client's `Host`, so the registry's absolute upload `Location`s
//! point back through the proxy.

use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures::StreamExt;

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
    /// Forward, then set several response headers.
    Headers(Vec<(&'static str, String)>),
    /// Forward, then send half the response body and drop the connection.
    Truncate,
    /// Read nothing of the request, wait this long, then answer 503: the request never
    /// reaches the registry (a chunk lost in the network).
    Hold(std::time::Duration),
    /// Answer directly with this status and headers, and a body that never ends.
    Endless(StatusCode, Vec<(&'static str, String)>),
    /// Forward, then send more after the real body: some bytes, or bytes without end.
    Append(Tail),
    /// Forward, and send the body without its last `n` bytes (a complete, shorter answer).
    Shorten(usize),
    /// Forward, then send the body one byte per interval, and after it spaces, forever: a
    /// slow-loris response that never lets a read time out.
    Dribble(std::time::Duration),
    /// Forward, then point the answer's `Location` at this base URL instead (same path and
    /// query): a registry that sends uploads to another host.
    MoveLocation(String),
    /// Forward without the request's `Range` header: a server that ignores ranges (200 with
    /// the whole body).
    IgnoreRange,
}

/// What [`Action::Append`] adds to a body.
pub enum Tail {
    Bytes(Vec<u8>),
    Endless,
}

/// 64 KiB of JSON whitespace, over and over, counted into `sent` as it goes out.
fn endless(sent: Arc<Inner>) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    let chunk = Bytes::from(vec![b' '; 64 * 1024]);
    futures::stream::repeat(chunk).map(move |c| {
        sent.bytes_out
            .fetch_add(c.len() as u64, std::sync::atomic::Ordering::SeqCst);
        Ok(c)
    })
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

/// A hook for a vendor's registry front (GHCR, Docker Hub): a manifest DELETE answers 405
/// UNSUPPORTED, as theirs do (deletion goes through their own APIs); the rest goes through.
pub fn manifest_delete_unsupported() -> Hook {
    Arc::new(|method, uri, _| {
        if *method == Method::DELETE && uri.contains("/manifests/") {
            let message = "The operation is unsupported.";
            Action::registry_error(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED", message)
        } else {
            Action::Forward
        }
    })
}

/// Told of each answer the registry gave to a forwarded request (method, path with query,
/// status, response headers) before it goes back to the client: a fake that must keep in step
/// with what the registry stored (see `GitHubFake::registry_front`).
pub type Answered = Arc<dyn Fn(&Method, &str, StatusCode, &HeaderMap) + Send + Sync>;

/// One request as the proxy saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub authorization: Option<String>,
    pub content_range: Option<String>,
    /// The request's `Range` header.
    pub range: Option<String>,
    pub at: std::time::Instant,
}

struct Inner {
    upstream: String,
    hook: Hook,
    answered: Option<Answered>,
    client: reqwest::Client,
    seen: Mutex<Vec<Seen>>,
    /// Request body bytes received (uploads), counted as they stream through.
    bytes_in: std::sync::atomic::AtomicU64,
    /// Body bytes the proxy made up (endless, appended and dribbled bodies) that went out.
    bytes_out: std::sync::atomic::AtomicU64,
    shaping: Option<Shaping>,
}

/// A wide-area link, emulated per request: a round trip of delay before the request goes on,
/// and both bodies paced to a bandwidth cap (per request, i.e. per connection in use).
#[derive(Clone, Copy, Debug)]
pub struct Shaping {
    pub round_trip: std::time::Duration,
    pub bytes_per_second: u64,
}

/// Pace a body stream to `rate` bytes per second.
fn paced<S, E>(body: S, rate: u64) -> impl futures::Stream<Item = Result<Bytes, E>>
where
    S: futures::Stream<Item = Result<Bytes, E>>,
{
    let start = std::time::Instant::now();
    let mut sent = 0u64;
    body.then(move |chunk| {
        if let Ok(c) = &chunk {
            sent += c.len() as u64;
        }
        let due = start + std::time::Duration::from_secs_f64(sent as f64 / rate as f64);
        async move {
            tokio::time::sleep_until(due.into()).await;
            chunk
        }
    })
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
        Proxy::start_with(upstream, hook, None, None).await
    }

    /// Proxy to `upstream`, telling `answered` of each answer the registry gave.
    pub async fn start_observed(upstream: &str, hook: Hook, answered: Answered) -> Proxy {
        Proxy::start_with(upstream, hook, Some(answered), None).await
    }

    /// A transparent proxy that behaves like a wide-area link.
    pub async fn wan(upstream: &str, shaping: Shaping) -> Proxy {
        let hook: Hook = Arc::new(|_, _, _| Action::Forward);
        Proxy::start_with(upstream, hook, None, Some(shaping)).await
    }

    async fn start_with(
        upstream: &str,
        hook: Hook,
        answered: Option<Answered>,
        shaping: Option<Shaping>,
    ) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr").to_string();
        let inner = Arc::new(Inner {
            upstream: upstream.trim_end_matches('/').to_string(),
            hook,
            answered,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("proxy client"),
            seen: Mutex::new(Vec::new()),
            bytes_in: std::sync::atomic::AtomicU64::new(0),
            bytes_out: std::sync::atomic::AtomicU64::new(0),
            shaping,
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

    /// Request body bytes that reached the proxy so far (what a client sent).
    pub fn bytes_in(&self) -> u64 {
        self.inner
            .bytes_in
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Response body bytes that left the proxy so far, forwarded or made up (endless,
    /// appended, dribbled): what a client read, even of a body without end.
    pub fn bytes_out(&self) -> u64 {
        self.inner
            .bytes_out
            .load(std::sync::atomic::Ordering::SeqCst)
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
        content_range: headers
            .get("content-range")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        range: headers
            .get("range")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        at: std::time::Instant::now(),
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
        Action::Hold(d) => {
            tokio::time::sleep(*d).await;
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        Action::Endless(status, hdrs) => {
            let mut resp = Response::new(Body::from_stream(endless(inner.clone())));
            *resp.status_mut() = *status;
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
    // The request body streams through (and is counted as it arrives), so a client killed
    // mid-upload leaves exactly the bytes it sent at the registry.
    let counter = inner.clone();
    let body = req.into_body().into_data_stream().inspect(move |chunk| {
        if let Ok(c) = chunk {
            counter
                .bytes_in
                .fetch_add(c.len() as u64, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let body = match inner.shaping {
        Some(sh) => {
            tokio::time::sleep(sh.round_trip).await;
            reqwest::Body::wrap_stream(paced(body, sh.bytes_per_second))
        }
        None => reqwest::Body::wrap_stream(body),
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
        if k == "range" && matches!(action, Action::IgnoreRange) {
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
    out_headers.remove("transfer-encoding");
    if let Some(answered) = &inner.answered {
        answered(&method, &uri, status, &out_headers);
    }
    let body = match action {
        Action::Corrupt | Action::Truncate => {
            let mut bytes = upstream.bytes().await.unwrap_or_default().to_vec();
            out_headers.remove("content-length");
            if matches!(action, Action::Corrupt) {
                if !bytes.is_empty() {
                    let mid = bytes.len() / 2;
                    bytes[mid] ^= 0xff;
                }
                Body::from(bytes)
            } else {
                // Half the bytes, then an error: the connection is cut mid-body.
                out_headers.insert(
                    "content-length",
                    HeaderValue::from_str(&bytes.len().to_string()).expect("digits"),
                );
                let half = Bytes::from(bytes[..bytes.len() / 2].to_vec());
                let parts: Vec<Result<Bytes, std::io::Error>> = vec![
                    Ok(half),
                    Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "cut",
                    )),
                ];
                Body::from_stream(futures::stream::iter(parts))
            }
        }
        Action::SetHeader(k, v) => {
            out_headers.insert(
                HeaderName::from_static(k),
                HeaderValue::from_str(&v).expect("header"),
            );
            Body::from_stream(upstream.bytes_stream())
        }
        Action::Append(tail) => {
            out_headers.remove("content-length");
            let counter = inner.clone();
            let extra: futures::stream::BoxStream<'static, Result<Bytes, std::io::Error>> =
                match tail {
                    Tail::Bytes(b) => {
                        let n = b.len() as u64;
                        Box::pin(futures::stream::once(async move {
                            counter
                                .bytes_out
                                .fetch_add(n, std::sync::atomic::Ordering::SeqCst);
                            Ok(Bytes::from(b))
                        }))
                    }
                    Tail::Endless => Box::pin(endless(counter)),
                };
            let real = upstream
                .bytes_stream()
                .map(|r| r.map_err(std::io::Error::other));
            Body::from_stream(real.chain(extra))
        }
        Action::Shorten(n) => {
            let bytes = upstream.bytes().await.unwrap_or_default();
            let short = bytes.slice(..bytes.len().saturating_sub(n));
            out_headers.insert(
                "content-length",
                HeaderValue::from_str(&short.len().to_string()).expect("digits"),
            );
            Body::from(short)
        }
        Action::Dribble(every) => {
            out_headers.remove("content-length");
            let bytes = upstream.bytes().await.unwrap_or_default().to_vec();
            let counter = inner.clone();
            let body = futures::stream::iter(bytes.into_iter().chain(std::iter::repeat(b' ')))
                .then(move |b| {
                    let counter = counter.clone();
                    async move {
                        tokio::time::sleep(every).await;
                        counter
                            .bytes_out
                            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        Ok::<_, std::io::Error>(Bytes::from(vec![b]))
                    }
                });
            Body::from_stream(body)
        }
        Action::MoveLocation(base) => {
            if let Some(loc) = out_headers
                .get("location")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
            {
                let path = match loc.find("://") {
                    Some(i) => loc[i + 3..]
                        .find('/')
                        .map_or("/".to_string(), |j| loc[i + 3 + j..].to_string()),
                    None => loc,
                };
                out_headers.insert(
                    "location",
                    HeaderValue::from_str(&format!("{}{path}", base.trim_end_matches('/')))
                        .expect("location"),
                );
            }
            Body::from_stream(upstream.bytes_stream())
        }
        Action::Headers(list) => {
            for (k, v) in list {
                out_headers.insert(
                    HeaderName::from_static(k),
                    HeaderValue::from_str(&v).expect("header"),
                );
            }
            Body::from_stream(upstream.bytes_stream())
        }
        _ => {
            // Counted as it goes out, so a test knows how much of each body a client read.
            let counter = inner.clone();
            let body = upstream.bytes_stream().inspect(move |chunk| {
                if let Ok(c) = chunk {
                    counter
                        .bytes_out
                        .fetch_add(c.len() as u64, std::sync::atomic::Ordering::SeqCst);
                }
            });
            match inner.shaping {
                Some(sh) => Body::from_stream(paced(body, sh.bytes_per_second)),
                None => Body::from_stream(body),
            }
        }
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = out_headers;
    resp
}
