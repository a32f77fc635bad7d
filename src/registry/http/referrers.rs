//! The OCI 1.1 referrers API: `GET /v2/<repo>/referrers/<subject>`, every page, and whether a
//! registry has the API at all (asked once, remembered). Registries without it keep referrers
//! under the `sha256-<hex>` fallback tag, which the copy engine reads and writes.

use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, Response, StatusCode};
use url::Url;

use super::client::HttpRegistry;
use super::send::Body;
use crate::reference::Digest;
use crate::registry::auth::Scope;
use crate::registry::error::{RegistryError, Result};
use crate::registry::manifest::{self, MAX_MANIFEST_SIZE};
use crate::registry::referrer_lists;
use crate::registry::transport::pager::Pager;
use crate::registry::{ReferrerList, Registry};

impl HttpRegistry {
    /// Does the registry answer the referrers API? What its hosted API knows, else what an
    /// earlier request told, else one request: a registry with the API answers 200 and an
    /// empty index even for a subject it does not hold.
    pub(super) async fn has_referrers_api(&self, repo: &str) -> Result<bool> {
        if let Some(known) = self.hosted.as_ref().and_then(|v| v.referrers_api()) {
            return Ok(known);
        }
        if let Some(known) = self.referrers_api.get() {
            return Ok(*known);
        }
        // One probe at a time: whoever waited finds the answer the probe before it cached.
        let _probing = self.referrers_probe.lock().await;
        if let Some(known) = self.referrers_api.get() {
            return Ok(*known);
        }
        let nothing = Digest::parse(&format!("sha256:{}", "0".repeat(64))).expect("digest");
        Ok(self.referrers(repo, &nothing, None).await?.is_some())
    }

    /// Every page of `GET /v2/<repo>/referrers/<subject>`; `None` when the registry answers
    /// 404 (it has no referrers API: the spec forbids a 404 from one that has).
    pub(super) async fn referrers_once(
        &self,
        repo: &str,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Option<ReferrerList>> {
        if self.referrers_api.get() == Some(&false) {
            return Ok(None);
        }
        let mut url = self.repo_url(repo, &format!("referrers/{subject}")).await?;
        if let Some(t) = artifact_type {
            url.query_pairs_mut().append_pair("artifactType", t);
        }
        let mut out = ReferrerList::default();
        let mut pager = Pager::new(url);
        while let Some(url) = pager.next_page()? {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::ACCEPT,
                HeaderValue::from_static(manifest::OCI_INDEX),
            );
            let (resp, _permit) = self
                .send(Method::GET, &url, &Scope::pull(repo), headers, Body::Empty)
                .await?;
            if pager.pages() == 1 && no_referrers_api(resp.status()) {
                tracing::debug!(registry = %self.name, status = %resp.status(), "no referrers API");
                let _ = self.referrers_api.set(false);
                return Ok(None);
            }
            if !resp.status().is_success() {
                return Err(self.status_error(&Method::GET, &url, resp).await);
            }
            let _ = self.referrers_api.set(true);
            pager.follow_link(&url, resp.headers())?;
            let page = self.referrers_page(resp, &url).await?;
            out.found.extend(page.found);
            out.refused.extend(page.refused);
        }
        // A registry that does not apply the filter (no `OCI-Filters-Applied`) returns
        // everything; filtering again here is harmless where it did.
        if let Some(t) = artifact_type {
            out.found.retain(|r| r.artifact_type.as_deref() == Some(t));
        }
        out.found.dedup_by(|a, b| a.digest == b.digest);
        Ok(Some(out))
    }

    /// One page of referrers: an index, no bigger than a manifest may be.
    async fn referrers_page(&self, resp: Response, url: &Url) -> Result<ReferrerList> {
        let body =
            self.read_manifest_sized(resp, url)
                .await?
                .ok_or_else(|| RegistryError::Protocol {
                    url: url.to_string(),
                    reason: format!("a referrers page over the {MAX_MANIFEST_SIZE}-byte limit"),
                })?;
        referrer_lists::referrer_list(&body).map_err(|e| RegistryError::Protocol {
            url: url.to_string(),
            reason: format!("not a referrers index: {e}"),
        })
    }
}

/// A registry without the API answers 404 (the spec forbids it of one with the API); some
/// proxies and older registries answer an unknown route otherwise.
fn no_referrers_api(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::NOT_FOUND
            | StatusCode::METHOD_NOT_ALLOWED
            | StatusCode::BAD_REQUEST
            | StatusCode::NOT_ACCEPTABLE
            | StatusCode::NOT_IMPLEMENTED
    )
}
