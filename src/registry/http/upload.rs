//! Blob uploads: one streamed POST or PUT for small blobs (see `single.rs`), chunked PATCHes
//! for large ones (falling back to one PUT when a registry refuses chunks), retried by
//! reopening the source, and resumed from the offset the registry confirms for an upload
//! session.

use std::sync::Mutex;

use bytes::Bytes;
use futures::{stream, StreamExt, TryStreamExt};
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use url::Url;

use super::chunks::{self, Chunk, Cut};
use super::client::HttpRegistry;
use super::send::Body;
use super::single::Posted;
use super::upload_source::{guarded, source_failed, source_url, whole_blob};
use crate::reference::Digest;
use crate::reference::Midstate;
use crate::registry::auth::Scope;
use crate::registry::error::{RegistryError, Result};
use crate::registry::transport::retry::Origin;
use crate::registry::transport::wire::{check_reported_digest, upload_offset};
use crate::registry::{BlobStream, BlobUpload, Parked, UploadProgress};

/// Blobs up to this size are uploaded in one streamed PUT; larger ones in chunks, so a
/// broken connection costs one chunk and the upload can resume.
pub const MONOLITHIC_MAX: u64 = 16 * 1024 * 1024;

/// Size of one PATCH of a chunked upload; at most one chunk per in-flight upload is held in
/// memory (Harbor uses 10 MiB).
pub const CHUNK_SIZE: usize = 8 * 1024 * 1024;

/// The rest of a chunk channel as a stream.
fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Chunk>>,
) -> impl futures::Stream<Item = Result<Chunk>> {
    stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// The upload session to continue: a previous run's, then the one the last attempt left. Set
/// after each confirmed chunk, taken at the start of each attempt (never held across an
/// await).
type Session = Mutex<Option<Parked>>;

/// Where an attempt starts: an open session, and the hash of the bytes it holds.
struct Start {
    location: Url,
    from: Midstate,
    fresh: bool,
}

impl HttpRegistry {
    /// `put_blob`: attempts under the retry policy until success, a permanent failure, or
    /// the retries are spent. Each attempt reopens the source, continuing the session the
    /// last one left from the offset the registry confirms.
    pub(super) async fn upload(&self, repo: &str, up: BlobUpload<'_>) -> Result<()> {
        let session: Session = Mutex::new(up.resume.clone());
        let what = format!("upload of {}", up.digest.short());
        // A failure reading the source is the source registry's, not a pushback from here.
        let origin = up.source.origin();
        self.retry
            .run_from(&what, origin.as_ref().map(|o| o as &dyn Origin), || async {
                let result = self.upload_attempt(repo, &up, &session).await;
                if let Err(e) = &result {
                    if e.is_mismatch() {
                        // The bytes (or a stored hash) were not the blob's: what the session
                        // holds cannot be trusted either. Start over.
                        session.lock().expect("upload session").take();
                    }
                }
                result
            })
            .await?;
        (up.progress)(UploadProgress::Finished);
        Ok(())
    }

    async fn upload_attempt(
        &self,
        repo: &str,
        up: &BlobUpload<'_>,
        session: &Session,
    ) -> Result<()> {
        let left = session.lock().expect("upload session").take();
        let resumed = match left {
            Some(parked) => self.continue_session(repo, up, parked).await,
            None => None,
        };
        if resumed.is_none() && up.size <= MONOLITHIC_MAX {
            // A declined mount's session, else the whole blob in one POST where the registry
            // takes it, else a session of its own.
            let (location, held) = match self.take_declined(repo, up.digest) {
                Some(session) => (session, None),
                None => match self.post_whole(repo, up).await? {
                    Posted::Stored => return Ok(()),
                    Posted::Session(session, held) => (session, held),
                    Posted::Not(held) => (self.start_upload(repo).await?, held),
                },
            };
            return match held {
                Some(bytes) => {
                    let len = bytes.len() as u64;
                    let body = Body::Bytes(bytes);
                    self.finish_upload(repo, location, up.digest, body, len)
                        .await
                }
                None => self.put_monolithic(repo, up, location).await,
            };
        }
        if resumed.is_none() && (up.park)() {
            // Stopping: a large blob not begun is not begun.
            return Err(RegistryError::Parked {
                offset: 0,
                size: up.size,
            });
        }
        let start = match resumed {
            Some(s) => s,
            None => Start {
                location: match self.take_declined(repo, up.digest) {
                    Some(session) => session,
                    None => self.start_upload(repo).await?,
                },
                from: Midstate::new(),
                fresh: true,
            },
        };
        self.put_chunked(repo, up, start, session).await
    }

    /// A session a previous attempt or run left, if the registry still holds it at the offset
    /// the checkpoint's hash covers; else `None` (start over).
    async fn continue_session(
        &self,
        repo: &str,
        up: &BlobUpload<'_>,
        parked: Parked,
    ) -> Option<Start> {
        let at = parked.state.offset();
        match self.upload_status(repo, &parked.url).await {
            Ok(Some((location, offset))) if offset == at && at <= up.size => Some(Start {
                location,
                from: parked.state,
                fresh: false,
            }),
            Ok(Some((_, offset))) => {
                tracing::debug!(registry = %self.name, digest = %up.digest, offset, at, "upload session holds other bytes than the checkpoint's hash covers; starting over");
                None
            }
            Ok(None) => {
                tracing::debug!(registry = %self.name, digest = %up.digest, "upload session expired; starting over");
                None
            }
            Err(e) => {
                tracing::debug!(registry = %self.name, error = %e, "upload session unreadable; starting over");
                None
            }
        }
    }

    /// Where an upload session stands: its (new) Location and the bytes the registry holds,
    /// or `None` when the session is gone.
    async fn upload_status(&self, repo: &str, url: &str) -> Result<Option<(Url, u64)>> {
        let url = self
            .base()
            .await?
            .join(url)
            .map_err(|e| RegistryError::Protocol {
                url: url.to_string(),
                reason: format!("invalid upload URL: {e}"),
            })?;
        let (resp, _permit) = self
            .send(
                Method::GET,
                &url,
                &Scope::push(repo),
                HeaderMap::new(),
                Body::Empty,
            )
            .await?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => {
                let offset = resp
                    .headers()
                    .get(header::RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(upload_offset)
                    .unwrap_or(0);
                let location = match resp.headers().get(header::LOCATION) {
                    Some(_) => self.location(&url, &resp).await?,
                    None => url,
                };
                Ok(Some((location, offset)))
            }
            _ => Err(self.status_error(&Method::GET, &url, resp).await),
        }
    }

    /// One streamed PUT of the whole blob (`send` watches its progress and the answer).
    async fn put_monolithic(&self, repo: &str, up: &BlobUpload<'_>, location: Url) -> Result<()> {
        let data = whole_blob(up).await?;
        self.put_stream(repo, up, location, data).await
    }

    /// Close the session at `location` with one streamed PUT of `data` (the whole blob); a
    /// failure of the source while it streams is the error, not the target's complaint.
    async fn put_stream(
        &self,
        repo: &str,
        up: &BlobUpload<'_>,
        location: Url,
        data: BlobStream,
    ) -> Result<()> {
        let (data, failure) = guarded(data);
        let body = Body::Stream(Some(data));
        let result = self
            .finish_upload(repo, location, up.digest, body, up.size)
            .await;
        if let Some(e) = failure.lock().expect("failure slot").take() {
            return Err(source_failed(e));
        }
        result
    }

    /// Chunked upload from `start`: PATCH one chunk at a time, recording the confirmed
    /// session and hash after each. The next chunk is read from the source while the current
    /// one is sent (two chunks in hand at most), so reading and sending overlap. If the
    /// registry refuses the first PATCH of a fresh session, fall back to one streamed PUT of
    /// the chunk in hand followed by the rest.
    async fn put_chunked(
        &self,
        repo: &str,
        up: &BlobUpload<'_>,
        start: Start,
        session: &Session,
    ) -> Result<()> {
        let data = up.source.open(&start.from).await.map_err(source_failed)?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Chunk>>(1);
        let cut = Cut {
            digest: up.digest,
            size: up.size,
            from: start.from.clone(),
            chunk_size: CHUNK_SIZE,
            what: source_url(up),
        };
        let producer = chunks::produce(data, cut, tx);
        let consumer = self.send_chunks(repo, up, start, session, rx);
        let ((), result) = futures::join!(producer, consumer);
        result
    }

    async fn send_chunks(
        &self,
        repo: &str,
        up: &BlobUpload<'_>,
        start: Start,
        session: &Session,
        mut chunks: tokio::sync::mpsc::Receiver<Result<Chunk>>,
    ) -> Result<()> {
        let Start {
            mut location,
            from,
            fresh,
        } = start;
        let mut offset = from.offset();
        let mut first = fresh;
        while let Some(chunk) = chunks.recv().await {
            let chunk = chunk?;
            let sent = self.patch(repo, &location, offset, &chunk.bytes).await;
            // A registry that does not take chunks may answer 4xx, or answer early and close
            // the connection while the chunk is still being written.
            let refused = match &sent {
                Ok((resp, _)) => {
                    matches!(resp.status().as_u16(), 400 | 404 | 405 | 413 | 416 | 501)
                }
                Err(RegistryError::Transport { .. }) => true,
                Err(_) => false,
            };
            if first && refused {
                tracing::debug!(registry = %self.name, "chunked upload refused; falling back to one PUT");
                return self.put_rest(repo, up, chunk.bytes, chunks).await;
            }
            first = false;
            let (resp, _permit) = sent?;
            let status = resp.status();
            if status != StatusCode::ACCEPTED && status != StatusCode::NO_CONTENT {
                return Err(self.status_error(&Method::PATCH, &location, resp).await);
            }
            location = self.location(&location, &resp).await?;
            offset = chunk.end;
            if let Some(state) = chunk.state {
                let parked = Parked {
                    url: location.to_string(),
                    state,
                };
                *session.lock().expect("upload session") = Some(parked.clone());
                (up.progress)(UploadProgress::Session {
                    url: parked.url,
                    state: parked.state,
                });
                if (up.park)() {
                    return Err(RegistryError::Parked {
                        offset,
                        size: up.size,
                    });
                }
            }
        }
        self.finish_upload(repo, location, up.digest, Body::Empty, 0)
            .await
    }

    /// One PATCH of the bytes from `offset`.
    async fn patch(
        &self,
        repo: &str,
        location: &Url,
        offset: u64,
        bytes: &Bytes,
    ) -> Result<super::send::Answer> {
        let end = offset + bytes.len() as u64 - 1;
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        headers.insert(
            header::CONTENT_LENGTH,
            HeaderValue::from(bytes.len() as u64),
        );
        headers.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&format!("{offset}-{end}")).expect("digits"),
        );
        self.send(
            Method::PATCH,
            location,
            &Scope::push(repo),
            headers,
            Body::Bytes(bytes.clone()),
        )
        .await
    }

    /// The fallback for a registry that refuses chunks: a new session, closed by one streamed
    /// PUT of the chunk in hand and the rest.
    async fn put_rest(
        &self,
        repo: &str,
        up: &BlobUpload<'_>,
        first: Bytes,
        chunks: tokio::sync::mpsc::Receiver<Result<Chunk>>,
    ) -> Result<()> {
        let rest =
            stream::once(async { Ok(first) }).chain(tokio_stream_from(chunks).map_ok(|c| c.bytes));
        let location = self.start_upload(repo).await?;
        self.put_stream(repo, up, location, Box::pin(rest)).await
    }

    /// Cancel an upload session nothing will use, so it does not linger until the registry's
    /// purge (best effort: a session the registry has dropped already is no error).
    pub(super) async fn cancel_session(&self, repo: &str, session: &Url) {
        let _ = self
            .send(
                Method::DELETE,
                session,
                &Scope::push(repo),
                HeaderMap::new(),
                Body::Empty,
            )
            .await;
    }

    /// Open an upload session (`POST …/blobs/uploads/`) and return its Location.
    pub(super) async fn start_upload(&self, repo: &str) -> Result<Url> {
        let url = self.repo_url(repo, "blobs/uploads/").await?;
        let (resp, _permit) = self
            .send(
                Method::POST,
                &url,
                &Scope::push(repo),
                HeaderMap::new(),
                Body::Empty,
            )
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(self.status_error(&Method::POST, &url, resp).await);
        }
        self.location(&url, &resp).await
    }

    /// Close an upload: `PUT <location>&digest=…` with the last bytes (or none).
    pub(super) async fn finish_upload(
        &self,
        repo: &str,
        mut location: Url,
        digest: &Digest,
        body: Body,
        length: u64,
    ) -> Result<()> {
        location
            .query_pairs_mut()
            .append_pair("digest", digest.as_str());
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        let (resp, _permit) = self
            .send(Method::PUT, &location, &Scope::push(repo), headers, body)
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(self.status_error(&Method::PUT, &location, resp).await);
        }
        check_reported_digest(&location, &resp, digest)
    }
}
