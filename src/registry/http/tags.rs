//! Tags and the catalog: `GET /v2/<repo>/tags/list` and `GET /v2/_catalog`, every page (see
//! [`Pager`](crate::registry::transport::pager::Pager)).

use reqwest::header::HeaderMap;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use url::Url;

use super::client::HttpRegistry;
use super::send::Body;
use crate::registry::auth::Scope;
use crate::registry::error::{RegistryError, Result};
use crate::registry::error_body::rendered;
use crate::registry::transport::body::{read_limited, MAX_LISTING};
use crate::registry::transport::pager::Pager;

/// Page size asked of tag lists and catalogs (distribution caps catalogs at 1000).
const PAGE_SIZE: usize = 1000;

impl HttpRegistry {
    /// Every tag of a repository, sorted, once each.
    pub(super) async fn list_tags_once(&self, repo: &str) -> Result<Vec<String>> {
        #[derive(Deserialize)]
        struct Tags {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let url = self
            .repo_url(repo, &format!("tags/list?n={PAGE_SIZE}"))
            .await?;
        let pages = self.get_pages::<Tags>(url, &Scope::pull(repo)).await?;
        let mut tags: Vec<String> = pages
            .into_iter()
            .flat_map(|t| t.tags.unwrap_or_default())
            .collect();
        tags.sort();
        tags.dedup();
        Ok(tags)
    }

    /// The catalog's repositories that start with `prefix`. A registry that will not show its
    /// catalog (401, 403, 404, 405) has none for ferry: [`RegistryError::NoCatalog`].
    pub(super) async fn catalog_once(&self, prefix: &str) -> Result<Vec<String>> {
        #[derive(Deserialize)]
        struct Catalog {
            #[serde(default)]
            repositories: Option<Vec<String>>,
        }
        let url = self.url(&format!("/v2/_catalog?n={PAGE_SIZE}")).await?;
        let pages = match self.get_pages::<Catalog>(url, &Scope::catalog()).await {
            Ok(p) => p,
            Err(RegistryError::Status { status, errors, .. })
                if matches!(status, 401 | 403 | 404 | 405) =>
            {
                return Err(RegistryError::NoCatalog {
                    registry: self.name.clone(),
                    reason: format!("GET /v2/_catalog answered {status}{}", rendered(&errors)),
                })
            }
            Err(e) => return Err(e),
        };
        let mut repos: Vec<String> = pages
            .into_iter()
            .flat_map(|c| c.repositories.unwrap_or_default())
            .filter(|r| r.starts_with(prefix))
            .collect();
        repos.sort();
        repos.dedup();
        Ok(repos)
    }

    /// GET every page of a JSON listing paged by `Link`.
    async fn get_pages<T: DeserializeOwned>(&self, first: Url, scope: &Scope) -> Result<Vec<T>> {
        let mut pages = Vec::new();
        let mut pager = Pager::new(first);
        while let Some(url) = pager.next_page()? {
            let (resp, _permit) = self
                .send(Method::GET, &url, scope, HeaderMap::new(), Body::Empty)
                .await?;
            if !resp.status().is_success() {
                return Err(self.status_error(&Method::GET, &url, resp).await);
            }
            pager.follow_link(&url, resp.headers())?;
            let body = read_limited(resp, &Method::GET, &url, MAX_LISTING, self.stall).await?;
            let parsed: T = serde_json::from_slice(&body).map_err(|e| RegistryError::Protocol {
                url: url.to_string(),
                reason: format!("unexpected answer: {e}"),
            })?;
            pages.push(parsed);
        }
        Ok(pages)
    }
}
