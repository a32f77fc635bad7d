//! One request per new blob where the registry allows it, and no session opened twice:
//!
//! - the single-request monolithic upload (`POST …/blobs/uploads/?digest=<d>` with the whole
//!   blob; the OCI distribution spec's "single POST"). A registry that does not take it
//!   answers 202 with an ordinary session, which the upload then uses; ferry remembers that
//!   answer for the run and asks with an empty POST from then on. While it does not know, one
//!   small blob at a time asks (at most [`PROBE_MAX`](super::single_post::PROBE_MAX) bytes, held in memory), so a registry
//!   that drops the body costs that much upload once, and no second read of the source.
//! - the session a declined cross-repository mount opens (202): kept for the upload of that
//!   blob, and cancelled only if the repository turns out to hold the blob after all.

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use url::Url;

use super::client::HttpRegistry;
use super::send::Body;
use super::upload_source::{guarded, source_failed, whole_blob};
use crate::reference::Digest;
use crate::registry::auth::Scope;
use crate::registry::error::{RegistryError, Result};
use crate::registry::transport::wire::check_reported_digest;
use crate::registry::{BlobStream, BlobUpload};

/// How a single-request upload went; the bytes sent, when they were read whole, to send
/// again.
pub(super) enum Posted {
    /// The blob is stored.
    Stored,
    /// The registry opened an ordinary session instead (and dropped the bytes).
    Session(Url, Option<Bytes>),
    /// Not tried, or refused outright: open a session the ordinary way.
    Not(Option<Bytes>),
}

/// A small blob's bytes, read whole (and verified as they came).
async fn read_all(mut data: BlobStream, size: u64) -> Result<Bytes> {
    let mut out = BytesMut::with_capacity(usize::try_from(size).unwrap_or(0));
    while let Some(chunk) = data.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out.freeze())
}

impl HttpRegistry {
    /// Keep the session a declined mount of `digest` into `repo` opened.
    pub(super) fn keep_declined(&self, repo: &str, digest: &Digest, session: Url) {
        let mut held = self.declined.lock().expect("declined sessions");
        if let Some(old) = held.insert((repo.to_string(), digest.clone()), session) {
            tracing::debug!(registry = %self.name, %old, "replaced a declined mount's session");
        }
    }

    /// The session a declined mount of `digest` into `repo` left, if any (taken: used once).
    pub(super) fn take_declined(&self, repo: &str, digest: &Digest) -> Option<Url> {
        self.declined
            .lock()
            .expect("declined sessions")
            .remove(&(repo.to_string(), digest.clone()))
    }

    /// Cancel a session nothing will use (the blob was there after all).
    pub(super) async fn cancel_declined(&self, repo: &str, digest: &Digest) {
        if let Some(session) = self.take_declined(repo, digest) {
            self.cancel_session(repo, &session).await;
        }
    }

    /// The whole blob in one `POST ?digest=`, where the registry takes it (or may). The blob
    /// that asks is small and read whole first, so that what a refusing registry dropped is
    /// sent again without reading the source twice (and a 401 can be answered).
    pub(super) async fn post_whole(&self, repo: &str, up: &BlobUpload<'_>) -> Result<Posted> {
        let Some(asking) = self.single_post.try_for(up.size) else {
            return Ok(Posted::Not(None));
        };
        let mut url = self.repo_url(repo, "blobs/uploads/").await?;
        url.query_pairs_mut()
            .append_pair("digest", up.digest.as_str());
        let data = whole_blob(up).await?;
        let (held, body, failure) = match asking.probe {
            true => {
                let bytes = read_all(data, up.size).await.map_err(source_failed)?;
                (Some(bytes.clone()), Body::Bytes(bytes), None)
            }
            false => {
                let (data, failure) = guarded(data);
                (None, Body::Stream(Some(data)), Some(failure))
            }
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(up.size));
        let sent = self
            .send(Method::POST, &url, &Scope::push(repo), headers, body)
            .await;
        if let Some(e) = failure.and_then(|f| f.lock().expect("failure slot").take()) {
            return Err(source_failed(e));
        }
        let (resp, _permit) = match sent {
            Ok(answer) => answer,
            // A registry that answers before reading a body it does not want may close the
            // connection under it: ask the ordinary way, and from now on.
            Err(RegistryError::Transport { .. }) if asking.probe => {
                tracing::debug!(registry = %self.name, "single-request upload cut off; uploading in two requests from now on");
                asking.answer(false);
                return Ok(Posted::Not(held));
            }
            Err(e) => return Err(e),
        };
        match resp.status() {
            StatusCode::CREATED => {
                check_reported_digest(&url, &resp, up.digest)?;
                asking.answer(true);
                Ok(Posted::Stored)
            }
            StatusCode::ACCEPTED => {
                tracing::debug!(registry = %self.name, "single-request upload answered with a session; uploading in two requests from now on");
                let session = self.location(&url, &resp).await?;
                asking.answer(false);
                Ok(Posted::Session(session, held))
            }
            // Refused as a request (a digest the registry will not take in a POST, a body it
            // will not read): the ordinary way says what is wrong, if anything is.
            StatusCode::BAD_REQUEST
            | StatusCode::METHOD_NOT_ALLOWED
            | StatusCode::LENGTH_REQUIRED
            | StatusCode::PAYLOAD_TOO_LARGE
            | StatusCode::UNSUPPORTED_MEDIA_TYPE
            | StatusCode::NOT_IMPLEMENTED => {
                if asking.probe {
                    tracing::debug!(registry = %self.name, status = %resp.status(), "single-request upload refused; uploading in two requests from now on");
                    asking.answer(false);
                }
                Ok(Posted::Not(held))
            }
            // A 401 could not be answered with a body sent once: the ordinary way asks again.
            StatusCode::UNAUTHORIZED => Ok(Posted::Not(held)),
            _ => Err(self.status_error(&Method::POST, &url, resp).await),
        }
    }
}
