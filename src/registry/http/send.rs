//! Sending one request: the host's rate limit and connection permit first, the
//! `Authorization` its scope needs (credentials go to the registry's own host only), a 401
//! answered once with the challenge's credentials, a 429 slowing the whole host, and request
//! bodies watched for stalls.

use bytes::Bytes;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, Response, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::OwnedSemaphorePermit;
use url::Url;

use super::client::HttpRegistry;
use crate::registry::auth::{Retry, Scope};
use crate::registry::error::{RegistryError, Result};
use crate::registry::transport::body::{stalled, tracked, BodyProgress};
use crate::registry::transport::throttle::{self, Kind};
use crate::registry::BlobStream;

/// A request body that can be sent again after a 401 (bytes), or only once (a stream).
pub(super) enum Body {
    Empty,
    Bytes(Bytes),
    Stream(Option<BlobStream>),
}

impl Body {
    /// Can the request be sent again (after a 401)? A stream is read once.
    fn replayable(&self) -> bool {
        !matches!(self, Body::Stream(_))
    }
}

/// An answer, with the connection permit it holds until its body is read.
pub(super) type Answer = (Response, OwnedSemaphorePermit);

impl HttpRegistry {
    /// Send one request with auth, retrying once after a 401 with the challenge's credentials.
    pub(super) async fn send(
        &self,
        method: Method,
        url: &Url,
        scope: &Scope,
        headers: HeaderMap,
        mut body: Body,
    ) -> Result<Answer> {
        // Credentials go to the registry's own host only. A URL the registry hands out on
        // another host (an upload `Location` at storage, say) gets none, as docker does; a
        // redirect elsewhere loses them in reqwest's redirect policy.
        let own_host = self.is_own_host(url).await?;
        let mut auth = match own_host {
            true => self.auth.header(&self.client, scope).await?,
            false => None,
        };
        // One try again after a 401, and one more when the credential read again after a
        // refusal is not the one refused (a rotated password); never more.
        let (mut retried, mut retried_fresh) = (false, false);
        loop {
            let (resp, permit) = self
                .send_once(&method, url, &headers, &mut body, auth.as_ref())
                .await?;
            if resp.status() != StatusCode::UNAUTHORIZED {
                return Ok((resp, permit));
            }
            if !own_host {
                return Err(self.foreign_unauthorized(url));
            }
            if retried_fresh || !body.replayable() {
                return Ok((resp, permit));
            }
            match self
                .reauthorize(&resp, scope, auth.as_ref(), retried)
                .await?
            {
                Some(r) if !retried || r.fresh => {
                    retried_fresh |= retried;
                    retried = true;
                    auth = Some(r.header);
                }
                _ => return Ok((resp, permit)),
            }
        }
    }

    /// One try: wait for the host, take a connection slot, send, note what the answer says
    /// about rate limits.
    async fn send_once(
        &self,
        method: &Method,
        url: &Url,
        headers: &HeaderMap,
        body: &mut Body,
        auth: Option<&SecretString>,
    ) -> Result<Answer> {
        // Manifest GETs are what Docker Hub counts as pulls.
        let kind = match *method == Method::GET && url.path().contains("/manifests/") {
            true => Kind::Pull,
            false => Kind::Other,
        };
        // Wait for the host's rate limit and any pause before taking a connection slot.
        self.throttle.ready(kind).await;
        let permit = self
            .connections
            .clone()
            .acquire_owned()
            .await
            .expect("connection semaphore is never closed");
        let client = match body {
            Body::Empty => &self.client,
            Body::Bytes(_) | Body::Stream(_) => &self.upload_client,
        };
        let mut req = client
            .request(method.clone(), url.clone())
            .headers(headers.clone());
        if let Some(h) = auth {
            req = req.header(header::AUTHORIZATION, authorization(h, url)?);
        }
        let resp = self.dispatch(req, method, url, headers, body).await?;
        self.observe(&resp, method, url);
        Ok((resp, permit))
    }

    /// Attach the body and send; a request with a body fails as stalled when the body stops
    /// moving or, once sent, no answer comes within the stall timeout.
    async fn dispatch(
        &self,
        req: reqwest::RequestBuilder,
        method: &Method,
        url: &Url,
        headers: &HeaderMap,
        body: &mut Body,
    ) -> Result<Response> {
        let progress = BodyProgress::new();
        let req = match body {
            Body::Empty => return self.transport(method, url, req.send().await),
            Body::Bytes(b) => {
                let mut req = req;
                // A stream body has no length of its own: say it, as the bytes did.
                if !headers.contains_key(header::CONTENT_LENGTH) {
                    req = req.header(header::CONTENT_LENGTH, b.len());
                }
                let whole = futures::stream::once(std::future::ready(Ok(b.clone())));
                req.body(tracked(whole, progress.clone()))
            }
            Body::Stream(s) => match s.take() {
                Some(s) => req.body(tracked(s, progress.clone())),
                None => req,
            },
        };
        tokio::select! {
            r = req.send() => self.transport(method, url, r),
            () = stalled(&progress, self.stall) => Err(RegistryError::Stalled {
                url: url.to_string(),
                seconds: self.stall.as_secs(),
            }),
        }
    }

    fn transport(
        &self,
        method: &Method,
        url: &Url,
        sent: reqwest::Result<Response>,
    ) -> Result<Response> {
        sent.map_err(|e| RegistryError::transport(method, url, e))
    }

    /// Count the request, take in the rate-limit headers, and on a 429 slow the whole host
    /// down, not just this request.
    fn observe(&self, resp: &Response, method: &Method, url: &Url) {
        self.throttle.observe(resp.headers());
        let throttled = resp.status() == StatusCode::TOO_MANY_REQUESTS;
        let kind = throttle::request_kind(method.as_str(), url.path());
        self.throttle.sent(kind, throttled);
        if throttled {
            let wait = throttle::retry_after(resp.headers())
                .unwrap_or(throttle::DEFAULT_429_WAIT)
                .min(throttle::MAX_WAIT);
            self.throttle.pause(
                wait,
                &format!("{} answered 429 Too Many Requests", self.name),
            );
        }
    }

    /// After a 401: the header to try again with, from the challenge, or `None`.
    async fn reauthorize(
        &self,
        resp: &Response,
        scope: &Scope,
        sent: Option<&SecretString>,
        only_fresh: bool,
    ) -> Result<Option<Retry>> {
        let www = resp
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok());
        self.auth
            .unauthorized(&self.client, www, scope, sent, only_fresh)
            .await
    }

    /// A 401 from a host the registry sent a request to: ferry's credentials are not for it.
    fn foreign_unauthorized(&self, url: &Url) -> RegistryError {
        RegistryError::Auth {
            url: url.to_string(),
            reason: format!(
                "{} sent this request to another host, which asks for credentials; ferry sends the credentials for {} to {} only",
                self.name, self.name, self.name
            ),
        }
    }
}

/// An `Authorization` value, marked sensitive (never indexed by HTTP/2 header compression,
/// shown as "Sensitive" by reqwest's own Debug).
fn authorization(h: &SecretString, url: &Url) -> Result<HeaderValue> {
    let mut value = HeaderValue::from_str(h.expose_secret()).map_err(|_| RegistryError::Auth {
        url: url.to_string(),
        reason: "the credential contains characters not allowed in a header".into(),
    })?;
    value.set_sensitive(true);
    Ok(value)
}
