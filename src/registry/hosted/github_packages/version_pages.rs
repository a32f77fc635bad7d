//! The GitHub API's listings, page by page (paged by `Link`): a package's versions whole, for
//! retention, which must not judge a package it cannot read whole; the same versions as a
//! package's tags with their digests ([`TagDigests`]), for a run that would otherwise ask
//! the registry about each tag; and an owner's packages.

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use url::Url;

use super::{PackagesApi, Version, API_STALL};
use crate::reference::{names, Digest};
use crate::registry::error::{RegistryError, Result};
use crate::registry::tag_digests::TagDigests;
use crate::registry::transport::body::{read_limited, MAX_LISTING};
use crate::registry::transport::pager::{last_page, Pager};

/// A package version as the API lists it: `name` is the manifest digest.
#[derive(Deserialize)]
struct Listed {
    id: u64,
    name: String,
    created_at: Option<String>,
    metadata: Option<Meta>,
}

#[derive(Deserialize)]
struct Meta {
    container: Option<Container>,
}

#[derive(Deserialize)]
struct Container {
    #[serde(default)]
    tags: Vec<String>,
}

impl Listed {
    fn tags(self) -> Vec<String> {
        self.metadata
            .and_then(|m| m.container)
            .map(|c| c.tags)
            .unwrap_or_default()
    }
}

impl PackagesApi {
    /// Every item of a listing paged by `Link` (see [`Pager`]).
    pub(super) async fn list<T: DeserializeOwned>(&self, first: Url) -> Result<Vec<T>> {
        let mut out = Vec::new();
        self.walk(first, usize::MAX, |page| out.extend(page))
            .await?;
        Ok(out)
    }

    /// Every page of a listing paged by `Link`, each handed to `each` as it arrives;
    /// `Ok(false)`, having stopped, when it is longer than `max_pages` pages (its first page's
    /// `rel="last"` link says so).
    async fn walk<T: DeserializeOwned>(
        &self,
        first: Url,
        max_pages: usize,
        mut each: impl FnMut(Vec<T>),
    ) -> Result<bool> {
        let mut pager = Pager::new(first);
        while let Some(url) = pager.next_page()? {
            if pager.pages() > max_pages {
                return Ok(false);
            }
            let (resp, _) = self.send(Method::GET, &url).await?;
            if !resp.status().is_success() {
                return Err(self.error(&Method::GET, &url, resp).await);
            }
            if last_page(resp.headers(), &url).is_some_and(|n| n > max_pages) {
                return Ok(false);
            }
            pager.follow_link(&url, resp.headers())?;
            let body = read_limited(resp, &Method::GET, &url, MAX_LISTING, API_STALL).await?;
            let page: Vec<T> =
                serde_json::from_slice(&body).map_err(|e| RegistryError::Protocol {
                    url: url.to_string(),
                    reason: format!("unexpected answer from the GitHub API: {e}"),
                })?;
            each(page);
        }
        Ok(true)
    }

    /// Every version of the listing at `first`, whole.
    pub(super) async fn pages(&self, first: Url) -> Result<Vec<Version>> {
        let raw: Vec<Listed> = self.list(first).await?;
        // Only retention reads versions, and it must not judge a package it cannot read whole:
        // a version whose digest or tag fails its check fails the listing.
        raw.into_iter()
            .map(|r| {
                let (id, name) = (r.id, r.name.clone());
                let created = r
                    .created_at
                    .as_deref()
                    .and_then(|t| humantime::parse_rfc3339_weak(t.trim_end_matches('Z')).ok());
                let tags = r.tags();
                for t in &tags {
                    names::tag(t)?;
                }
                Ok(Version {
                    id,
                    digest: Digest::checked(&name)?,
                    tags,
                    created,
                })
            })
            .collect()
    }

    /// The tags of the listing at `first` with the digest of the version each is on, when it
    /// has at most `max_pages` pages: one page of versions names every tag of up to 100
    /// manifests. A version that fails its check costs only its own tags (they are asked
    /// about on their own).
    pub(super) async fn tag_pages(
        &self,
        first: Url,
        max_pages: usize,
    ) -> Result<Option<TagDigests>> {
        let mut listing = TagDigests::default();
        let whole = self
            .walk(first, max_pages, |page: Vec<Listed>| {
                listing.requests += 1;
                for v in page {
                    let digest = v.name.clone();
                    for t in v.tags() {
                        listing.listed(&t, &digest);
                    }
                }
            })
            .await?;
        Ok(whole.then_some(listing))
    }
}
