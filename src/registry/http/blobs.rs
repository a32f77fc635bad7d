//! Blobs: whether a repository holds one, streaming one out (verified as it flows), and
//! mounting one from another repository. Uploads are in `upload.rs`.

use futures::StreamExt;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};

use super::client::HttpRegistry;
use super::send::Body;
use crate::reference::names;
use crate::reference::Digest;
use crate::registry::auth::Scope;
use crate::registry::error::{RegistryError, Result};
use crate::registry::transport::body::watched_body;
use crate::registry::verifying::VerifyingStream;
use crate::registry::{BlobStream, BlobTail};

/// The first byte of a `Content-Range: bytes <first>-<last>/<size>` answer.
fn content_range_start(v: &str) -> Option<u64> {
    let range = v.trim().strip_prefix("bytes ")?;
    range.split(['-', '/']).next()?.trim().parse().ok()
}

impl HttpRegistry {
    pub(super) async fn blob_exists_once(&self, repo: &str, digest: &Digest) -> Result<bool> {
        let url = self.repo_url(repo, &format!("blobs/{digest}")).await?;
        let (resp, _permit) = self
            .send(
                Method::HEAD,
                &url,
                &Scope::pull(repo),
                HeaderMap::new(),
                Body::Empty,
            )
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.status_error(&Method::HEAD, &url, resp).await),
        }
    }

    pub(super) async fn get_blob_once(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<BlobStream> {
        let url = self.repo_url(repo, &format!("blobs/{digest}")).await?;
        let (resp, permit) = self
            .send(
                Method::GET,
                &url,
                &Scope::pull(repo),
                HeaderMap::new(),
                Body::Empty,
            )
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(RegistryError::NotFound {
                what: format!("blob {digest} in {}/{repo}", self.name),
                url: url.to_string(),
            });
        }
        if !resp.status().is_success() {
            return Err(self.status_error(&Method::GET, &url, resp).await);
        }
        // The permit travels with the stream: the connection is busy until the body is read.
        let body = watched_body(resp, &Method::GET, &url, self.stall).map(move |r| {
            let _hold = &permit;
            r
        });
        Ok(Box::pin(VerifyingStream::new(
            Box::pin(body),
            url.to_string(),
            digest.clone(),
            size,
        )))
    }

    /// The blob from byte `offset` on (`Range: bytes=<offset>-`), raw: the caller verifies it,
    /// continuing the hash of the bytes before. A registry (or the storage a redirect leads
    /// to) that answers 200 sends the whole blob: `start` is then 0 and the caller skips.
    pub(super) async fn get_blob_from_once(
        &self,
        repo: &str,
        digest: &Digest,
        offset: u64,
    ) -> Result<BlobTail> {
        let url = self.repo_url(repo, &format!("blobs/{digest}")).await?;
        let mut headers = HeaderMap::new();
        if offset > 0 {
            headers.insert(
                header::RANGE,
                HeaderValue::from_str(&format!("bytes={offset}-")).expect("digits"),
            );
        }
        let (resp, permit) = self
            .send(Method::GET, &url, &Scope::pull(repo), headers, Body::Empty)
            .await?;
        let start = match resp.status() {
            StatusCode::PARTIAL_CONTENT => {
                let range = resp
                    .headers()
                    .get(header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(content_range_start);
                if range != Some(offset) {
                    return Err(RegistryError::Protocol {
                        url: url.to_string(),
                        reason: format!(
                            "asked for bytes from {offset}, the 206 answer's Content-Range starts at {}",
                            range.map_or("an unreadable offset".to_string(), |r| r.to_string())
                        ),
                    });
                }
                offset
            }
            s if s.is_success() => 0,
            StatusCode::NOT_FOUND => {
                return Err(RegistryError::NotFound {
                    what: format!("blob {digest} in {}/{repo}", self.name),
                    url: url.to_string(),
                })
            }
            // 416: the range is past the end; the blob is not what its descriptor says.
            _ => return Err(self.status_error(&Method::GET, &url, resp).await),
        };
        let body = watched_body(resp, &Method::GET, &url, self.stall).map(move |r| {
            let _hold = &permit;
            r
        });
        Ok(BlobTail {
            stream: Box::pin(body),
            start,
            url: url.to_string(),
        })
    }

    pub(super) async fn mount_blob_once(
        &self,
        repo: &str,
        digest: &Digest,
        from: &str,
    ) -> Result<bool> {
        // `from` goes into the token scope as well as the query.
        names::repository(from)?;
        let mut url = self.repo_url(repo, "blobs/uploads/").await?;
        url.query_pairs_mut()
            .append_pair("mount", digest.as_str())
            .append_pair("from", from);
        let (resp, _permit) = self
            .send(
                Method::POST,
                &url,
                &Scope::mount(repo, from),
                HeaderMap::new(),
                Body::Empty,
            )
            .await?;
        match resp.status() {
            StatusCode::CREATED => Ok(true),
            StatusCode::ACCEPTED => {
                // The registry opened an ordinary upload instead: the upload of this blob
                // uses it (or it is cancelled when the repository holds the blob already).
                if let Ok(session) = self.location(&url, &resp).await {
                    self.keep_declined(repo, digest, session);
                }
                Ok(false)
            }
            _ => Err(self.status_error(&Method::POST, &url, resp).await),
        }
    }
}
