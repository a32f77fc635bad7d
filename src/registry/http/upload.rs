//! Blob uploads: one streamed PUT for small blobs, chunked PATCHes for large ones (falling
//! back to one PUT when a registry refuses chunks), retried by reopening the source, and
//! resumed from the offset the registry confirms for an upload session.

use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures::{stream, StreamExt, TryStreamExt};
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use url::Url;

use super::send::Body;
use super::wire::{check_reported_digest, upload_offset};
use super::{HttpRegistry, CHUNK_SIZE, MONOLITHIC_MAX};
use crate::registry::auth::Scope;
use crate::registry::digest::Digest;
use crate::registry::error::{RegistryError, Result};
use crate::registry::{BlobStream, BlobUpload, UploadProgress};

/// The rest of a chunk channel as a byte stream.
fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Bytes>>,
) -> impl futures::Stream<Item = Result<Bytes>> {
    stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn source_failed(e: RegistryError) -> RegistryError {
    match e {
        e @ RegistryError::SourceFailed { .. } => e,
        e => RegistryError::SourceFailed {
            source: Box::new(e),
        },
    }
}

/// The upload session to continue: a previous run's, then the one the last attempt left. Set
/// after each confirmed chunk, taken at the start of each attempt (never held across an
/// await).
type Session = Mutex<Option<String>>;

/// Keeps a source stream's error aside: when the source fails mid-upload the target's
/// complaint (a reset, a 400) is not the cause, and the retry policy must know it was the
/// source.
type FailureSlot = Arc<Mutex<Option<RegistryError>>>;

fn guarded(data: BlobStream) -> (BlobStream, FailureSlot) {
    let slot: FailureSlot = Arc::default();
    let keep = slot.clone();
    let stream = data.map_err(move |e| {
        let note = RegistryError::Protocol {
            url: "blob source".into(),
            reason: format!("upload aborted: {e}"),
        };
        *keep.lock().expect("failure slot") = Some(e);
        note
    });
    (Box::pin(stream), slot)
}

impl HttpRegistry {
    /// `put_blob`: attempts under the retry policy until success, a permanent failure, or
    /// the retries are spent. Each attempt reopens the source, continuing the session the
    /// last one left from the offset the registry confirms.
    pub(super) async fn upload(&self, repo: &str, up: BlobUpload<'_>) -> Result<()> {
        let session: Session = Mutex::new(up.resume.clone());
        let what = format!("upload of {}", up.digest.short());
        self.retry
            .run(&what, || self.upload_attempt(repo, &up, &session))
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
        // Continue a session the registry still holds, from the offset it confirms.
        let mut resumed = None;
        let left = session.lock().expect("upload session").take();
        if let Some(url) = left {
            match self.upload_status(repo, &url).await {
                Ok(Some(found)) if found.1 <= up.size => resumed = Some(found),
                Ok(Some((_, offset))) => {
                    tracing::debug!(registry = %self.name, digest = %up.digest, offset, "upload session claims more bytes than the blob has; starting over")
                }
                Ok(None) => {
                    tracing::debug!(registry = %self.name, digest = %up.digest, "upload session expired; starting over")
                }
                Err(e) => {
                    tracing::debug!(registry = %self.name, error = %e, "upload session unreadable; starting over")
                }
            }
        }
        let fresh = resumed.is_none();
        let (location, offset) = match resumed {
            Some(found) => found,
            None => (self.start_upload(repo).await?, 0),
        };
        if fresh && up.size <= MONOLITHIC_MAX {
            return self.put_monolithic(repo, up, location).await;
        }
        self.put_chunked(repo, up, location, offset, fresh, session)
            .await
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
        let data = up.source.open(0).await.map_err(source_failed)?;
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

    /// Chunked upload from `offset`: PATCH one chunk at a time, recording the confirmed
    /// session after each. The next chunk is read from the source while the current one is
    /// sent (two chunks in hand at most), so reading and sending overlap. If the registry
    /// refuses the first PATCH of a fresh session, fall back to one streamed PUT of the chunk
    /// in hand followed by the rest.
    async fn put_chunked(
        &self,
        repo: &str,
        up: &BlobUpload<'_>,
        location: Url,
        offset: u64,
        fresh: bool,
        session: &Session,
    ) -> Result<()> {
        let data = up.source.open(offset).await.map_err(source_failed)?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes>>(1);
        let producer = async move {
            let mut data = data;
            let mut pending = BytesMut::with_capacity(CHUNK_SIZE);
            loop {
                match data.next().await {
                    Some(Ok(mut c)) => {
                        // Fill chunks exactly, so each is one allocation of CHUNK_SIZE
                        // (overfilling would make the buffer double in size).
                        while !c.is_empty() {
                            let take = (CHUNK_SIZE - pending.len()).min(c.len());
                            pending.extend_from_slice(&c.split_to(take));
                            if pending.len() == CHUNK_SIZE {
                                let full = std::mem::replace(
                                    &mut pending,
                                    BytesMut::with_capacity(CHUNK_SIZE),
                                );
                                if tx.send(Ok(full.freeze())).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    Some(Err(e)) => {
                        let _ = tx.send(Err(source_failed(e))).await;
                        return;
                    }
                    None => {
                        if !pending.is_empty() {
                            let _ = tx.send(Ok(pending.freeze())).await;
                        }
                        return;
                    }
                }
            }
        };
        let consumer = self.send_chunks(repo, up, location, offset, fresh, session, rx);
        let ((), result) = futures::join!(producer, consumer);
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn send_chunks(
        &self,
        repo: &str,
        up: &BlobUpload<'_>,
        mut location: Url,
        mut offset: u64,
        fresh: bool,
        session: &Session,
        mut chunks: tokio::sync::mpsc::Receiver<Result<Bytes>>,
    ) -> Result<()> {
        let mut first = fresh;
        while let Some(chunk) = chunks.recv().await {
            let chunk = chunk?;
            let end = offset + chunk.len() as u64 - 1;
            let mut headers = HeaderMap::new();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            headers.insert(
                header::CONTENT_LENGTH,
                HeaderValue::from(chunk.len() as u64),
            );
            headers.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("{offset}-{end}")).expect("digits"),
            );
            let sent = self
                .send(
                    Method::PATCH,
                    &location,
                    &Scope::push(repo),
                    headers,
                    Body::Bytes(chunk.clone()),
                )
                .await;
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
                let rest = stream::once(async { Ok(chunk) }).chain(tokio_stream_from(chunks));
                let (rest, failure) = guarded(Box::pin(rest));
                let location = self.start_upload(repo).await?;
                let body = Body::Stream(Some(rest));
                let result = self
                    .finish_upload(repo, location, up.digest, body, up.size)
                    .await;
                if let Some(e) = failure.lock().expect("failure slot").take() {
                    return Err(source_failed(e));
                }
                return result;
            }
            first = false;
            let (resp, _permit) = sent?;
            let status = resp.status();
            if status != StatusCode::ACCEPTED && status != StatusCode::NO_CONTENT {
                return Err(self.status_error(&Method::PATCH, &location, resp).await);
            }
            location = self.location(&location, &resp).await?;
            offset = end + 1;
            *session.lock().expect("upload session") = Some(location.to_string());
            (up.progress)(UploadProgress::Session {
                url: location.to_string(),
                offset,
            });
        }
        self.finish_upload(repo, location, up.digest, Body::Empty, 0)
            .await
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
