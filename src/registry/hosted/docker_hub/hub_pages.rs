//! The Hub API's listings, page by page (paged by a `next` URL in the body, with the whole
//! listing's `count`): read whole (repositories, retention's tags), or as each tag's digest
//! for a run, up to a number of pages.

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use url::Url;

use super::{DockerHub, Login, Page, HUB_PAGE_SIZE};
use crate::reference::names;
use crate::registry::error::{RegistryError, Result};
use crate::registry::tag_digests::TagDigests;
use crate::registry::transport::body::{read_limited, MAX_LISTING};
use crate::registry::transport::pager::Pager;

impl DockerHub {
    /// Every item of a listing paged by `next` (see [`Pager`]).
    pub(super) async fn hub_pages<T: DeserializeOwned>(
        &self,
        first: Url,
        login: &mut Login,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        self.hub_walk(first, login, usize::MAX, |page| out.extend(page))
            .await?;
        Ok(out)
    }

    /// Every page of a listing paged by `next`, each handed to `each` as it arrives;
    /// `Ok(false)`, having stopped, when it is longer than `max_pages` pages (its first page's
    /// `count` says so).
    async fn hub_walk<T: DeserializeOwned>(
        &self,
        first: Url,
        login: &mut Login,
        max_pages: usize,
        mut each: impl FnMut(Vec<T>),
    ) -> Result<bool> {
        let mut pager = Pager::new(first);
        while let Some(url) = pager.next_page()? {
            if pager.pages() > max_pages {
                return Ok(false);
            }
            let resp = self.hub_send(Method::GET, &url, login).await?;
            if !resp.status().is_success() {
                return Err(self.hub_error(&Method::GET, &url, resp).await);
            }
            let body = read_limited(resp, &Method::GET, &url, MAX_LISTING, self.stall).await?;
            let page: Page<T> =
                serde_json::from_slice(&body).map_err(|e| RegistryError::Protocol {
                    url: url.to_string(),
                    reason: format!("unexpected answer from the Docker Hub API: {e}"),
                })?;
            if pager.pages() == 1 && longer(page.count, page.results.len(), max_pages) {
                return Ok(false);
            }
            each(page.results);
            let next = match page.next.filter(|n| !n.is_empty()) {
                None => None,
                Some(n) => Some(url.join(&n).map_err(|e| RegistryError::Protocol {
                    url: url.to_string(),
                    reason: format!("invalid `next` link {n:?}: {e}"),
                })?),
            };
            pager.follow(&url, next)?;
        }
        Ok(true)
    }

    /// Every tag of `repo` with its digest, from the tags API (see
    /// [`HostedApi::tag_digests`](crate::registry::hosted::HostedApi::tag_digests)).
    /// A tag's `digest` is the manifest (or index) it points at, what a `HEAD` of the tag
    /// answers; `images[]`, an index's platforms, are not needed for that. A tag without a
    /// digest (the Hub has some from long ago) is left out, to be asked about on its own.
    pub(super) async fn hub_tag_digests(
        &self,
        repo: &str,
        max_pages: usize,
    ) -> Result<Option<TagDigests>> {
        #[derive(Deserialize)]
        struct Tag {
            name: String,
            digest: Option<String>,
        }
        names::repository(repo)?;
        let Some(api) = self.api.as_ref() else {
            return Ok(None);
        };
        let mut login = self.hub_login(api).await?;
        let mut listing = TagDigests::default();
        listing.requests = u64::from(login.jwt.is_some());
        let path = format!("/v2/repositories/{repo}/tags/?page_size={HUB_PAGE_SIZE}");
        let first = self.hub_url(api, &path)?;
        let whole = self
            .hub_walk(first, &mut login, max_pages, |page: Vec<Tag>| {
                listing.requests += 1;
                for t in page {
                    if let Some(d) = t.digest {
                        listing.listed(&t.name, &d);
                    }
                }
            })
            .await?;
        Ok(whole.then_some(listing))
    }
}

/// Is a listing of `count` items whose first page held `first` of them longer than
/// `max_pages` pages? (Only the first page tells the page size: the last holds the rest.)
fn longer(count: Option<u64>, first: usize, max_pages: usize) -> bool {
    let per_page = first.max(1) as u64;
    count.is_some_and(|n| n.div_ceil(per_page) > max_pages as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 24: the first page's `count` tells a listing too long to read, before a second
    /// page is asked; a listing that does not say is read up to the limit.
    #[test]
    fn the_first_page_tells_how_long_the_listing_is() {
        assert!(longer(Some(5000), 100, 49));
        assert!(!longer(Some(5000), 100, 50));
        assert!(!longer(Some(5001), 100, 51));
        assert!(longer(Some(5001), 100, 50));
        // One page holds the whole listing.
        assert!(!longer(Some(7), 7, 1));
        assert!(!longer(Some(0), 0, 1));
        assert!(!longer(None, 100, 1));
    }
}
