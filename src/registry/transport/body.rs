//! Response and request bodies: bounded reads, progress watched both ways (a slow-loris
//! answer, a stalled upload), and error answers decoded.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{Stream, TryStreamExt};
use reqwest::Response;
use tokio::time::{Instant, Sleep};
use url::Url;

use crate::registry::error::{RegistryError, Result};
use crate::registry::error_body::{OciError, Service};

/// A response body must bring at least this many bytes, or its end, in every `stall_timeout`
/// spent waiting for it. A server that dribbles a few bytes at a time (a slow-loris response)
/// defeats a plain read timeout, which any single byte resets; 16 KiB a minute (the default
/// stall timeout) is far below any real link, so only such a server is cut off.
pub const MIN_PROGRESS: u64 = 16 * 1024;

/// The most of an error body ferry reads: enough for any `{"errors":[…]}`.
pub const MAX_ERROR_BODY: usize = 64 * 1024;

/// The most of one page of a listing (tags, catalog, API pages) ferry reads.
pub const MAX_LISTING: usize = 64 * 1024 * 1024;

/// The most of a token or login answer ferry reads (tokens are a few KiB).
pub const MAX_TOKEN_ANSWER: usize = 1024 * 1024;

/// A response body that fails with [`RegistryError::TooSlow`] when the server makes less
/// than [`MIN_PROGRESS`] per `stall` of waiting. Only time spent waiting for the server
/// counts: a consumer that pauses (an upload busy at the target) never makes it fail.
pub struct Watched<S> {
    inner: S,
    method: String,
    url: String,
    stall: Duration,
    /// Bytes in the current window, and the time spent waiting in it.
    window_bytes: u64,
    waited: Duration,
    /// When the inner stream last answered `Pending`, until it answers again.
    pending_since: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
    done: bool,
}

impl<S> Watched<S> {
    pub fn new(inner: S, method: impl ToString, url: impl ToString, stall: Duration) -> Self {
        Watched {
            inner,
            method: method.to_string(),
            url: url.to_string(),
            stall,
            window_bytes: 0,
            waited: Duration::ZERO,
            pending_since: None,
            timer: None,
            done: false,
        }
    }
}

impl<S> Stream for Watched<S>
where
    S: Stream<Item = std::result::Result<Bytes, reqwest::Error>> + Unpin,
{
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                if let Some(since) = this.pending_since.take() {
                    this.waited += since.elapsed();
                }
                this.window_bytes += chunk.len() as u64;
                if this.window_bytes >= MIN_PROGRESS {
                    this.window_bytes = 0;
                    this.waited = Duration::ZERO;
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.done = true;
                Poll::Ready(Some(Err(RegistryError::transport(
                    &this.method,
                    &this.url,
                    e,
                ))))
            }
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                let since = *this.pending_since.get_or_insert_with(Instant::now);
                let deadline = since + this.stall.saturating_sub(this.waited);
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.done = true;
                Poll::Ready(Some(Err(RegistryError::TooSlow {
                    url: this.url.clone(),
                    detail: format!(
                        "the body brought {} bytes in {} s of waiting; at least {MIN_PROGRESS} are needed per stall_timeout",
                        this.window_bytes,
                        this.stall.as_secs_f64()
                    ),
                })))
            }
        }
    }
}

/// How a request body is moving, for [`stalled`].
pub struct BodyProgress {
    start: Instant,
    /// Milliseconds from `start` to the last chunk handed to the connection.
    last_ms: AtomicU64,
    /// Milliseconds from `start` to the end of the body; `u64::MAX` until then.
    done_ms: AtomicU64,
}

impl BodyProgress {
    pub fn new() -> Arc<BodyProgress> {
        Arc::new(BodyProgress {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            done_ms: AtomicU64::new(u64::MAX),
        })
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
}

/// Request bodies are handed to the connection in pieces of this size, so their progress is
/// seen while they are written, not once per chunk of 8 MiB.
const BODY_PIECE: usize = 64 * 1024;

/// A request body that reports its progress (and its end) to `progress`.
pub fn tracked<S>(body: S, progress: Arc<BodyProgress>) -> reqwest::Body
where
    S: Stream<Item = Result<Bytes>> + Send + 'static,
{
    use futures::StreamExt;
    let seen = progress.clone();
    let pieces = body.flat_map(|item| {
        let pieces: Vec<Result<Bytes>> = match item {
            Ok(b) => (0..b.len())
                .step_by(BODY_PIECE)
                .map(|i| Ok(b.slice(i..(i + BODY_PIECE).min(b.len()))))
                .collect(),
            Err(e) => vec![Err(e)],
        };
        futures::stream::iter(pieces)
    });
    let watched = pieces
        .inspect(move |_| seen.last_ms.store(seen.now_ms(), Ordering::Relaxed))
        .chain(futures::stream::once(async move {
            // The body is complete: from here the answer is awaited.
            progress.done_ms.store(progress.now_ms(), Ordering::Relaxed);
            Ok(Bytes::new())
        }));
    reqwest::Body::wrap_stream(watched)
}

/// Resolves when a request with a body is stalled: the body has not moved for `stall`, or it
/// is complete and no answer came within `stall`. (reqwest's read timeout cannot do this: it
/// runs from the start of a request to its answer, so it would cut off any upload that takes
/// longer than `stall`, however well it moves.)
pub async fn stalled(progress: &BodyProgress, stall: Duration) {
    let tick = (stall / 4).max(Duration::from_millis(50));
    loop {
        tokio::time::sleep(tick).await;
        let now = progress.now_ms();
        let since = match progress.done_ms.load(Ordering::Relaxed) {
            u64::MAX => progress.last_ms.load(Ordering::Relaxed),
            done => done,
        };
        if now.saturating_sub(since) > stall.as_millis() as u64 {
            return;
        }
    }
}

/// A response's body as a [`Watched`] stream; errors name `url`, the URL requested (not
/// where a redirect led, which may carry a storage signature).
pub fn watched_body(
    resp: Response,
    method: &reqwest::Method,
    url: &Url,
    stall: Duration,
) -> Watched<impl Stream<Item = std::result::Result<Bytes, reqwest::Error>> + Unpin> {
    Watched::new(Box::pin(resp.bytes_stream()), method, url, stall)
}

/// Read a response body up to `limit` bytes (one more byte tells the caller it was over),
/// then stop reading: an endless body costs `limit` bytes of memory, no more. The body is
/// watched for progress (see [`MIN_PROGRESS`]).
pub async fn read_limited(
    resp: Response,
    method: &reqwest::Method,
    url: &Url,
    limit: usize,
    stall: Duration,
) -> Result<Bytes> {
    let mut out = BytesMut::new();
    let mut body = watched_body(resp, method, url, stall);
    while let Some(chunk) = body.try_next().await? {
        let room = limit + 1 - out.len().min(limit + 1);
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() > limit {
            break;
        }
    }
    Ok(out.freeze())
}

/// An error answer as [`RegistryError::Status`]: its body (up to [`MAX_ERROR_BODY`]) decoded,
/// and `service` for the hint it gets when shown.
pub async fn status_error(
    resp: Response,
    method: &reqwest::Method,
    url: &Url,
    stall: Duration,
    service: Service,
) -> RegistryError {
    let status = resp.status().as_u16();
    let body = read_limited(resp, method, url, MAX_ERROR_BODY, stall)
        .await
        .unwrap_or_default();
    RegistryError::Status {
        method: method.to_string(),
        url: url.to_string(),
        status,
        errors: OciError::decode(&body),
        service,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A loopback server answering every connection with `head`, then `chunk` (in HTTP
    /// chunked encoding) every `every`, forever; counts the body bytes it got out.
    async fn endless_server(
        head: &'static str,
        chunk: Vec<u8>,
        every: Duration,
    ) -> (Url, Arc<AtomicU64>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/v2/", listener.local_addr().unwrap())).unwrap();
        let sent = Arc::new(AtomicU64::new(0));
        let counter = sent.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let counter = counter.clone();
                let chunk = chunk.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = sock.read(&mut buf).await;
                    if sock.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    let framed = [
                        format!("{:x}\r\n", chunk.len()).into_bytes(),
                        chunk.clone(),
                        b"\r\n".to_vec(),
                    ]
                    .concat();
                    loop {
                        if sock.write_all(&framed).await.is_err() {
                            return;
                        }
                        counter.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                        if !every.is_zero() {
                            tokio::time::sleep(every).await;
                        }
                    }
                });
            }
        });
        (url, sent)
    }

    const CHUNKED: &str =
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";

    #[tokio::test]
    async fn an_endless_body_is_read_up_to_the_limit_and_no_further() {
        let (url, sent) = endless_server(CHUNKED, vec![b' '; 64 * 1024], Duration::ZERO).await;
        let resp = reqwest::get(url.clone()).await.unwrap();
        let limit = 4 * 1024 * 1024;
        let body = tokio::time::timeout(
            Duration::from_secs(20),
            read_limited(
                resp,
                &reqwest::Method::GET,
                &url,
                limit,
                Duration::from_secs(5),
            ),
        )
        .await
        .expect("no hang")
        .unwrap();
        assert_eq!(body.len(), limit + 1);
        // The connection is dropped with the body: the server soon cannot write any more.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = sent.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(sent.load(Ordering::SeqCst), after, "the server still sends");
        assert!(after < 3 * limit as u64, "{after} bytes left the server");
    }

    #[tokio::test]
    async fn a_dribbled_body_is_stalled_although_bytes_keep_coming() {
        // 8 bytes every 20 ms: a read timeout alone would never fire.
        let (url, _) =
            endless_server(CHUNKED, b"{\"a\": 1,".to_vec(), Duration::from_millis(20)).await;
        let resp = reqwest::get(url.clone()).await.unwrap();
        let started = std::time::Instant::now();
        let e = tokio::time::timeout(
            Duration::from_secs(20),
            read_limited(
                resp,
                &reqwest::Method::GET,
                &url,
                1 << 20,
                Duration::from_secs(1),
            ),
        )
        .await
        .expect("no hang")
        .unwrap_err();
        assert!(matches!(e, RegistryError::TooSlow { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.starts_with(url.as_str()) && msg.contains("stalled"),
            "{msg}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn progress_counts_only_time_spent_waiting_for_the_server() {
        // A consumer that takes longer between reads than the stall timeout, from a server
        // that has every byte ready, is not stalled.
        let chunks = (0..5).map(|_| Ok(Bytes::from_static(b"0123456789")));
        let stall = Duration::from_millis(100);
        let mut w = Watched::new(futures::stream::iter(chunks), "GET", "http://r/b", stall);
        let mut n = 0;
        while let Some(c) = w.next().await {
            n += c.unwrap().len();
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        assert_eq!(n, 50);
        // A server that sends 10 bytes every 30 ms: stalled once 100 ms of waiting brought
        // less than MIN_PROGRESS.
        let slow = futures::stream::unfold((), |()| async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            Some((
                Ok::<_, reqwest::Error>(Bytes::from_static(b"0123456789")),
                (),
            ))
        });
        let mut w = Watched::new(Box::pin(slow), "GET", "http://r/b", stall);
        let started = Instant::now();
        let mut got = 0;
        let err = loop {
            match w.next().await.expect("ends with an error") {
                Ok(c) => got += c.len(),
                Err(e) => break e,
            }
        };
        assert!(matches!(err, RegistryError::TooSlow { .. }), "{err}");
        assert!(got < 100, "{got}");
        let took = started.elapsed();
        assert!(took >= stall && took < Duration::from_secs(1), "{took:?}");
        assert!(w.next().await.is_none(), "over after the error");
    }
}
