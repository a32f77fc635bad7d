//! Docker Hub's repository API: the namespace listing behind `docker.io/NAMESPACE/*`
//! (Hub has no catalog), with a login for private repositories.

use reqwest::header::{self, HeaderValue};
use reqwest::Method;
use secrecy::ExposeSecret;
use serde::Deserialize;
use url::Url;

use super::{HttpRegistry, MAX_PAGES};
use crate::registry::credentials::Credential;
use crate::registry::error::{RegistryError, Result};
use crate::registry::throttle::{self, Event};

impl HttpRegistry {
    /// Docker Hub has no catalog: list a namespace's repositories through the Hub API.
    pub(super) async fn hub_repositories(&self, api: &Url, prefix: &str) -> Result<Vec<String>> {
        #[derive(Deserialize)]
        struct Page {
            next: Option<String>,
            #[serde(default)]
            results: Vec<Repo>,
        }
        #[derive(Deserialize)]
        struct Repo {
            name: String,
            namespace: Option<String>,
        }
        let namespace = prefix.trim_end_matches('/');
        if namespace.is_empty() || namespace.contains('/') {
            return Err(RegistryError::NoCatalog {
                registry: self.name.clone(),
                reason: format!("Docker Hub lists repositories per namespace, and `{prefix}` is not one namespace"),
            });
        }
        let bearer = self.hub_login(api).await?;
        let mut url = api
            .join(&format!("/v2/repositories/{namespace}/?page_size=100"))
            .map_err(|e| RegistryError::Protocol {
                url: api.to_string(),
                reason: format!("cannot build URL: {e}"),
            })?;
        let mut repos = Vec::new();
        let mut waits_left = self.retries;
        for _ in 0..MAX_PAGES {
            let mut req = self.client.get(url.clone());
            if let Some(b) = &bearer {
                let mut v = HeaderValue::from_str(&format!("Bearer {}", b.expose_secret()))
                    .map_err(|_| RegistryError::Auth {
                        url: api.to_string(),
                        reason: "the Hub token is not a valid header value".into(),
                    })?;
                v.set_sensitive(true);
                req = req.header(header::AUTHORIZATION, v);
            }
            let resp = req
                .send()
                .await
                .map_err(|e| RegistryError::transport("GET", &url, e))?;
            // The Hub API has its own budget (X-RateLimit-*): wait it out, as the registry's.
            if let Some(wait) = hub_wait(resp.headers(), resp.status()) {
                let api_host = api.host_str().unwrap_or("the Docker Hub API").to_string();
                if resp.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
                    if waits_left == 0 {
                        return Err(self.status_error(&Method::GET, &url, resp).await);
                    }
                    waits_left -= 1;
                    self.throttle.notify(Event::Waiting {
                        registry: api_host,
                        duration: wait,
                        reason: "Docker Hub API rate limit".into(),
                    });
                    tokio::time::sleep(wait).await;
                    continue;
                }
                // A successful page that spent the budget: the next one waits.
                self.throttle.notify(Event::Waiting {
                    registry: api_host,
                    duration: wait,
                    reason: "Docker Hub API rate limit reached".into(),
                });
                tokio::time::sleep(wait).await;
            }
            if !resp.status().is_success() {
                return Err(self.status_error(&Method::GET, &url, resp).await);
            }
            let page: Page = resp.json().await.map_err(|e| RegistryError::Protocol {
                url: url.to_string(),
                reason: format!("unexpected answer from the Docker Hub API: {e}"),
            })?;
            for r in page.results {
                let ns = r.namespace.unwrap_or_else(|| namespace.to_string());
                repos.push(format!("{ns}/{}", r.name));
            }
            match page.next.filter(|n| !n.is_empty()) {
                None => return Ok(repos),
                Some(n) => {
                    let next = url.join(&n).map_err(|e| RegistryError::Protocol {
                        url: url.to_string(),
                        reason: format!("invalid `next` link {n:?}: {e}"),
                    })?;
                    // Credentials go only to the API host the plan names.
                    if next.origin() != api.origin() || next == url {
                        return Err(RegistryError::Protocol {
                            url: url.to_string(),
                            reason: format!("refusing to follow `next` to {next}"),
                        });
                    }
                    url = next;
                }
            }
        }
        Err(RegistryError::Protocol {
            url: url.to_string(),
            reason: format!("more than {MAX_PAGES} pages: the API's paging loops"),
        })
    }

    /// Log in to the Hub API with the registry credentials (private repositories are listed
    /// only then); anonymous listing shows public repositories.
    async fn hub_login(&self, api: &Url) -> Result<Option<secrecy::SecretString>> {
        let Credential::Basic { username, password } = &self.credential else {
            return Ok(None);
        };
        let url = api
            .join("/v2/users/login")
            .map_err(|e| RegistryError::Protocol {
                url: api.to_string(),
                reason: format!("cannot build URL: {e}"),
            })?;
        #[derive(Deserialize)]
        struct Login {
            token: Option<String>,
            access_token: Option<String>,
        }
        let resp = self
            .client
            .post(url.clone())
            .json(&serde_json::json!({"username": username, "password": password.expose_secret()}))
            .send()
            .await
            .map_err(|e| RegistryError::transport("POST", &url, e))?;
        if !resp.status().is_success() {
            return Err(self.status_error(&Method::POST, &url, resp).await);
        }
        let login: Login = resp.json().await.map_err(|e| RegistryError::Protocol {
            url: url.to_string(),
            reason: format!("unexpected login answer: {e}"),
        })?;
        Ok(login
            .token
            .or(login.access_token)
            .map(secrecy::SecretString::from))
    }
}

/// How long the Hub API asks to wait: on a 429, its `Retry-After` (or until
/// `X-RateLimit-Reset`); after a page that left `X-RateLimit-Remaining: 0`, until the reset.
fn hub_wait(
    headers: &reqwest::header::HeaderMap,
    status: reqwest::StatusCode,
) -> Option<std::time::Duration> {
    let until_reset = || {
        let reset: u64 = headers
            .get("x-ratelimit-reset")?
            .to_str()
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs();
        Some(std::time::Duration::from_secs(reset.saturating_sub(now)))
    };
    let wait = if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        throttle::retry_after(headers)
            .or_else(until_reset)
            .unwrap_or(throttle::DEFAULT_429_WAIT)
    } else {
        let remaining: u64 = headers
            .get("x-ratelimit-remaining")?
            .to_str()
            .ok()?
            .trim()
            .parse()
            .ok()?;
        if remaining > 0 {
            return None;
        }
        until_reset()?
    };
    Some(wait.min(throttle::MAX_WAIT))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};
    use reqwest::StatusCode;
    use std::time::Duration;

    #[test]
    fn hub_waits() {
        let mut h = HeaderMap::new();
        assert_eq!(hub_wait(&h, StatusCode::OK), None);
        assert_eq!(
            hub_wait(&h, StatusCode::TOO_MANY_REQUESTS),
            Some(throttle::DEFAULT_429_WAIT)
        );
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(
            hub_wait(&h, StatusCode::TOO_MANY_REQUESTS),
            Some(Duration::from_secs(7))
        );
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("3"));
        assert_eq!(hub_wait(&h, StatusCode::OK), None);
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        h.insert("x-ratelimit-reset", HeaderValue::from_static("1000"));
        assert_eq!(hub_wait(&h, StatusCode::OK), Some(Duration::ZERO));
    }
}
