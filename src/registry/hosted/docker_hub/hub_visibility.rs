//! A Docker Hub repository's visibility: `is_private` of
//! `GET /v2/namespaces/{namespace}/repositories/{repository}`.

use reqwest::Method;
use serde::Deserialize;

use super::DockerHub;
use crate::reference::names;
use crate::registry::error::{RegistryError, Result};
use crate::registry::transport::body::{read_limited, MAX_TOKEN_ANSWER};
use crate::registry::visibility::{RepoVisibility, Visibility};

impl DockerHub {
    /// Public or private, logged in with the registry credentials where there are some (Hub
    /// shows a private repository only to those who may see it: to others it is not found).
    /// `Ok(None)` for a registry of Docker Hub's flavor that names no API.
    pub(super) async fn hub_visibility(&self, repo: &str) -> Result<Option<RepoVisibility>> {
        #[derive(Deserialize)]
        struct Repository {
            is_private: bool,
        }
        let Ok(api) = self.hub_api() else {
            return Ok(None);
        };
        names::repository(repo)?;
        let Some((namespace, name)) = repo.split_once('/') else {
            return Ok(None);
        };
        let url = self.hub_url(
            api,
            &format!("/v2/namespaces/{namespace}/repositories/{name}"),
        )?;
        let read = || async {
            let mut login = self.hub_login(api).await?;
            let resp = self.hub_send(Method::GET, &url, &mut login).await?;
            if !resp.status().is_success() {
                return Err(self.hub_error(&Method::GET, &url, resp).await);
            }
            read_limited(resp, &Method::GET, &url, MAX_TOKEN_ANSWER, self.stall).await
        };
        let body = self.retry.run("read repository visibility", read).await?;
        let r: Repository = serde_json::from_slice(&body).map_err(|e| RegistryError::Protocol {
            url: url.to_string(),
            reason: format!("unexpected answer from the Docker Hub API: {e}"),
        })?;
        Ok(Some(RepoVisibility {
            visibility: match r.is_private {
                true => Visibility::Private,
                false => Visibility::Public,
            },
            settings: None,
        }))
    }
}
