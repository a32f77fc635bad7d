//! A package's visibility (`GET /orgs/{org}/packages/container/{package}`, or the user's
//! form): `public`, `private` or `internal`, and the settings page where a person changes it
//! (GitHub has no API that does).

use reqwest::Method;
use serde::Deserialize;
use url::Url;

use super::{encode, split_repository, Ghcr, Owner, PackagesApi};
use crate::reference::names;
use crate::registry::error::{RegistryError, Result};
use crate::registry::transport::body::{read_limited, MAX_TOKEN_ANSWER};
use crate::registry::visibility::{RepoVisibility, Visibility};

/// What the package endpoint answers that ferry reads.
#[derive(Deserialize)]
struct Package {
    visibility: String,
    html_url: Option<String>,
}

impl PackagesApi {
    fn package_path(kind: Owner, owner: &str, package: &str) -> String {
        match kind {
            Owner::Org => format!("/orgs/{owner}/packages/container/{}", encode(package)),
            Owner::Me => format!("/user/packages/container/{}", encode(package)),
            Owner::OtherUser => format!("/users/{owner}/packages/container/{}", encode(package)),
        }
    }

    /// The package's visibility: the organisation's endpoint first, then the user's, as
    /// [`PackagesApi::versions`] finds the owner.
    pub async fn visibility(&self, owner: &str, package: &str) -> Result<RepoVisibility> {
        let mut last_err = None;
        for kind in self.owner_kinds(owner).await {
            let kind = match kind {
                Owner::Me => self.user_kind(owner).await?,
                k => k,
            };
            let url = self.url(&Self::package_path(kind, owner, package))?;
            let (resp, _) = self.send(Method::GET, &url).await?;
            if !resp.status().is_success() {
                match self.error(&Method::GET, &url, resp).await {
                    e if e.is_not_found() => last_err = Some(e),
                    e => return Err(e),
                }
                continue;
            }
            self.owners.lock().await.insert(owner.to_string(), kind);
            let body =
                read_limited(resp, &Method::GET, &url, MAX_TOKEN_ANSWER, super::API_STALL).await?;
            let unexpected = |reason: String| RegistryError::Protocol {
                url: url.to_string(),
                reason,
            };
            let p: Package = serde_json::from_slice(&body)
                .map_err(|e| unexpected(format!("unexpected answer from the GitHub API: {e}")))?;
            let visibility = Visibility::parse(&p.visibility).ok_or_else(|| {
                let shown = names::printable(&p.visibility, 40);
                unexpected(format!("unknown package visibility {shown:?}"))
            })?;
            let web = web_origin(p.html_url.as_deref(), &self.base);
            let owner_path = match kind {
                Owner::Org => format!("orgs/{owner}"),
                Owner::Me | Owner::OtherUser => format!("users/{owner}"),
            };
            return Ok(RepoVisibility {
                visibility,
                settings: Some(format!(
                    "{web}/{owner_path}/packages/container/{}/settings",
                    encode(package)
                )),
            });
        }
        Err(last_err.expect("tried at least one owner kind"))
    }
}

/// Where GitHub's web pages are: the origin of the package's `html_url`, else the API's
/// (`api.github.com` is `github.com`; an enterprise server's API is under `/api/v3`).
fn web_origin(html_url: Option<&str>, api: &Url) -> String {
    let from = html_url.and_then(|u| Url::parse(u).ok());
    let url = from.as_ref().unwrap_or(api);
    let origin = url.origin().ascii_serialization();
    match from {
        Some(_) => origin,
        None => origin.replacen("://api.github.com", "://github.com", 1),
    }
}

impl Ghcr {
    /// The package `repo` names (`OWNER/PACKAGE`); `Ok(None)` without a token.
    pub(super) async fn package_visibility(&self, repo: &str) -> Result<Option<RepoVisibility>> {
        if self.api().is_err() {
            return Ok(None);
        }
        names::repository(repo)?;
        let Some((owner, package)) = split_repository(repo) else {
            return Ok(None);
        };
        let api = &self.api;
        self.retry
            .run("read package visibility", || api.visibility(owner, package))
            .await
            .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settings_page_is_on_the_web_host() {
        let api = Url::parse("https://api.github.com").unwrap();
        let html = "https://github.com/orgs/acme/packages/container/package/app";
        assert_eq!(web_origin(Some(html), &api), "https://github.com");
        assert_eq!(web_origin(None, &api), "https://github.com");
        let ghes = Url::parse("https://ghe.example/api/v3/").unwrap();
        assert_eq!(web_origin(None, &ghes), "https://ghe.example");
    }
}
