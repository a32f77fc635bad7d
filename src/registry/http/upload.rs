//! Blob uploads: monolithic streamed PUT for small blobs, chunked PATCH for large ones
//! (falling back to one PUT when a registry refuses chunks).

use bytes::BytesMut;
use futures::{stream, StreamExt};
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use url::Url;

use super::wire::check_reported_digest;
use super::{Body, HttpRegistry, CHUNK_SIZE};
use crate::registry::auth::Scope;
use crate::registry::digest::Digest;
use crate::registry::error::{RegistryError, Result};
use crate::registry::BlobStream;

impl HttpRegistry {
    /// Open an upload session (`POST …/blobs/uploads/`) and return its Location.
    pub(super) async fn start_upload(&self, repo: &str) -> Result<Url> {
        let url = self.url(&format!("/v2/{repo}/blobs/uploads/")).await?;
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

    /// Chunked upload: PATCH one chunk at a time. If the registry refuses the first PATCH,
    /// fall back to one streamed PUT of the chunk already read followed by the rest.
    pub(super) async fn put_chunked(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
        mut location: Url,
        mut data: BlobStream,
    ) -> Result<()> {
        let mut offset: u64 = 0;
        let mut pending = BytesMut::new();
        loop {
            // Fill one chunk (or take what remains).
            while pending.len() < CHUNK_SIZE {
                match data.next().await {
                    Some(chunk) => pending.extend_from_slice(&chunk?),
                    None => break,
                }
            }
            if pending.is_empty() {
                break;
            }
            let take = pending.len().min(CHUNK_SIZE);
            let chunk = pending.split_to(take).freeze();
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
            // the connection while the chunk is still being written. Either way, on the first
            // chunk, fall back to one streamed PUT: the chunk is still in hand.
            let refused = match &sent {
                Ok((resp, _)) => {
                    matches!(resp.status().as_u16(), 400 | 404 | 405 | 413 | 416 | 501)
                }
                Err(RegistryError::Transport { .. }) => true,
                Err(_) => false,
            };
            if offset == 0 && refused {
                tracing::debug!(registry = %self.name, "chunked upload refused; falling back to one PUT");
                let rest = stream::iter([Ok(chunk), Ok(pending.split().freeze())]).chain(data);
                let location = self.start_upload(repo).await?;
                let body = Body::Stream(Some(reqwest::Body::wrap_stream(rest)));
                return self.finish_upload(repo, location, digest, body, size).await;
            }
            let (resp, _permit) = sent?;
            let status = resp.status();
            if status == StatusCode::ACCEPTED || status == StatusCode::NO_CONTENT {
                location = self.location(&location, &resp).await?;
                offset = end + 1;
                continue;
            }
            return Err(self.status_error(&Method::PATCH, &location, resp).await);
        }
        self.finish_upload(repo, location, digest, Body::Empty, 0)
            .await
    }
}
