//! Docker Hub's [`HostedApi`], its API (hub.docker.com): the namespace listing behind `docker.io/NAMESPACE/*`
//! (Hub has no catalog), the tag listing that retention reads instead of pulling manifests
//! (every manifest GET counts against the pull limit) and that a run reads instead of a HEAD
//! per tag, and tag deletion (every tag of an
//! image, or one tag alone). Logs in with the registry credentials (a personal access token)
//! for private repositories and deletes, taking them from the registry's credential source at
//! each login; a refused login or JWT reads the source again and logs in once more. Waits out
//! the API's own `X-RateLimit-*` budget and 429s. `hub_pages` reads its listings page by page;
//! `hub_visibility` reads whether a repository is private.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{self, HeaderValue};
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use super::{reread, Context, HostedApi, RecordCache};
use crate::reference::Digest;
use crate::reference::{names, DOCKER_HUB};
use crate::registry::capabilities::RecordStyle;
use crate::registry::credential_source::CredentialSource;
use crate::registry::credentials::Credential;
use crate::registry::error::{RegistryError, Result};
use crate::registry::error_body::Service;
use crate::registry::reasons::CredentialsError;
use crate::registry::tag_digests::TagDigests;
use crate::registry::transport::body::{read_limited, status_error, MAX_TOKEN_ANSWER};
use crate::registry::transport::retry::RetryPolicy;
use crate::registry::transport::throttle::{self, Event, Throttle};
use crate::registry::visibility::RepoVisibility;
use crate::registry::ManifestRecord;

mod hub_pages;
mod hub_visibility;

/// Docker Hub's API, for `docker.io` unless the plan names another.
const DOCKER_HUB_API: &str = "https://hub.docker.com";

/// Tags asked per page of the tags API (Docker Hub's maximum).
const HUB_PAGE_SIZE: usize = 100;

/// A page of a Hub API listing.
#[derive(Deserialize)]
struct Page<T> {
    /// How many items the whole listing has.
    count: Option<u64>,
    next: Option<String>,
    #[serde(default = "Vec::new")]
    results: Vec<T>,
}

/// A login to the Hub API for one operation: its JWT (`None`: anonymous), and the credential
/// it was had with.
struct Login {
    jwt: Option<SecretString>,
    with: Credential,
}

/// Docker Hub's API as its [`HostedApi`].
pub struct DockerHub {
    /// The registry's host (`docker.io`).
    name: String,
    /// The API's base URL: `None` for a registry of Docker Hub's flavor that names none.
    api: Option<Url>,
    client: reqwest::Client,
    /// The registry's credential source, asked at each login.
    credentials: Arc<dyn CredentialSource>,
    throttle: Arc<Throttle>,
    retry: RetryPolicy,
    stall: Duration,
    records: RecordCache,
}

impl DockerHub {
    pub fn new(cx: Context) -> DockerHub {
        let api = cx.api.clone().or_else(|| {
            (cx.registry == DOCKER_HUB).then(|| Url::parse(DOCKER_HUB_API).expect("static URL"))
        });
        DockerHub {
            name: cx.registry,
            api,
            client: cx.client,
            credentials: cx.credentials,
            throttle: cx.throttle,
            retry: cx.retry,
            stall: cx.stall,
            records: RecordCache::default(),
        }
    }

    fn hub_api(&self) -> Result<&Url> {
        self.api.as_ref().ok_or_else(|| RegistryError::Protocol {
            url: self.name.clone(),
            reason: "no Docker Hub API URL (set `api` for this registry)".into(),
        })
    }

    /// An error answer of the Hub API.
    async fn hub_error(
        &self,
        method: &Method,
        url: &Url,
        resp: reqwest::Response,
    ) -> RegistryError {
        let service = Service::DockerHubApi {
            registry: self.name.clone(),
            credentials: !self.credentials.current().is_anonymous(),
        };
        status_error(resp, method, url, self.stall, service).await
    }

    fn hub_url(&self, api: &Url, path: &str) -> Result<Url> {
        api.join(path).map_err(|e| RegistryError::Protocol {
            url: api.to_string(),
            reason: format!("cannot build URL: {e}"),
        })
    }

    /// One Hub API request, waiting out its rate limit (at most `retries` times for a 429).
    /// A 401 to a request with a JWT (expired, or its credential replaced) reads the credential
    /// source again and logs in anew into `login`, and the request goes once more.
    async fn hub_send(
        &self,
        method: Method,
        url: &Url,
        login: &mut Login,
    ) -> Result<reqwest::Response> {
        let api_host = url.host_str().unwrap_or("the Docker Hub API").to_string();
        let mut waits_left = self.retry.retries();
        let mut logged_in_again = false;
        loop {
            let mut req = self.client.request(method.clone(), url.clone());
            if let Some(b) = &login.jwt {
                let mut v = HeaderValue::from_str(&format!("Bearer {}", b.expose_secret()))
                    .map_err(|_| RegistryError::Auth {
                        url: url.to_string(),
                        reason: "the Hub token is not a valid header value".into(),
                    })?;
                v.set_sensitive(true);
                req = req.header(header::AUTHORIZATION, v);
            }
            let resp = req
                .send()
                .await
                .map_err(|e| RegistryError::transport(&method, url, e))?;
            if let Some(wait) = hub_wait(resp.headers(), resp.status()) {
                if resp.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
                    if waits_left == 0 {
                        return Err(self.hub_error(&method, url, resp).await);
                    }
                    waits_left -= 1;
                    self.throttle.notify(Event::Waiting {
                        registry: api_host.clone(),
                        duration: wait,
                        reason: "Docker Hub API rate limit".into(),
                    });
                    tokio::time::sleep(wait).await;
                    continue;
                }
                // A successful answer that spent the budget: the next request waits.
                self.throttle.notify(Event::Waiting {
                    registry: api_host.clone(),
                    duration: wait,
                    reason: "Docker Hub API rate limit reached".into(),
                });
                tokio::time::sleep(wait).await;
            }
            let refused = resp.status() == reqwest::StatusCode::UNAUTHORIZED;
            if refused && login.jwt.is_some() && !logged_in_again {
                logged_in_again = true;
                reread(&self.credentials, &login.with).await?;
                *login = self.hub_login(self.hub_api()?).await?;
                continue;
            }
            return Ok(resp);
        }
    }

    /// Docker Hub has no catalog: list a namespace's repositories through the Hub API.
    async fn hub_repositories(&self, prefix: &str) -> Result<Vec<String>> {
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
        let api = self.hub_api()?;
        let mut login = self.hub_login(api).await?;
        let first = self.hub_url(api, &format!("/v2/repositories/{namespace}/?page_size=100"))?;
        let repos: Vec<Repo> = self.hub_pages(first, &mut login).await?;
        Ok(repos
            .into_iter()
            .map(|r| {
                let ns = r.namespace.unwrap_or_else(|| namespace.to_string());
                format!("{ns}/{}", r.name)
            })
            .collect())
    }

    /// Every tag of a repository from the Hub API, grouped by digest, with the per-platform
    /// manifests of multi-platform images: retention's inventory without a single pull.
    async fn hub_records(&self, repo: &str) -> Result<Vec<ManifestRecord>> {
        #[derive(Deserialize)]
        struct Tag {
            name: String,
            digest: Option<String>,
            tag_last_pushed: Option<String>,
            last_updated: Option<String>,
            #[serde(default)]
            images: Vec<Platform>,
        }
        #[derive(Deserialize)]
        struct Platform {
            digest: Option<String>,
            os: Option<String>,
            architecture: Option<String>,
            variant: Option<String>,
        }
        names::repository(repo)?;
        let api = self.hub_api()?;
        let mut login = self.hub_login(api).await?;
        let first = self.hub_url(
            api,
            &format!("/v2/repositories/{repo}/tags/?page_size={HUB_PAGE_SIZE}"),
        )?;
        let tags: Vec<Tag> = self.hub_pages(first, &mut login).await?;
        let mut by_digest: BTreeMap<Digest, ManifestRecord> = BTreeMap::new();
        for t in tags {
            // Retention reads these, and deletion builds API paths from the tags: a name that
            // fails its check fails the repository's listing (see `manifest_records`).
            names::tag(&t.name)?;
            // A tag without a digest (the Hub has some from long ago) points at nothing
            // retention could keep or delete.
            let Some(digest) = t.digest.as_deref().map(Digest::checked).transpose()? else {
                continue;
            };
            let pushed = t
                .tag_last_pushed
                .or(t.last_updated)
                .and_then(|p| humantime::parse_rfc3339_weak(p.trim_end_matches('Z')).ok());
            // Hub lists a single-platform image as its own one entry; an index, its children.
            let mut children: Vec<(Digest, Option<String>)> = Vec::new();
            for i in &t.images {
                let Some(d) = i.digest.as_deref().map(Digest::checked).transpose()? else {
                    continue;
                };
                let platform = match (&i.os, &i.architecture) {
                    (Some(os), Some(arch)) => Some(match &i.variant {
                        Some(v) if !v.is_empty() => format!("{os}/{arch}/{v}"),
                        _ => format!("{os}/{arch}"),
                    }),
                    _ => None,
                };
                if d != digest {
                    children.push((d, platform));
                }
            }
            let record = by_digest.entry(digest.clone()).or_insert(ManifestRecord {
                id: String::new(),
                digest,
                tags: Vec::new(),
                created: pushed,
                children: Some(children),
            });
            record.tags.push(t.name);
            record.created = record.created.max(pushed);
        }
        Ok(by_digest.into_values().collect())
    }

    /// Delete every tag pointing at `digest` through the Hub API (Hub deletes tags, and an
    /// image goes with its last tag). Returns the tags deleted, for the audit.
    async fn hub_delete(&self, repo: &str, digest: &Digest) -> Result<Option<String>> {
        let api = self.hub_api()?;
        let mut login = self.hub_login_for_writes(api).await?;
        let read = self.manifest_records(repo);
        let Some(record) = self.records.record_of(repo, digest, read).await? else {
            // No tag points at it (a platform manifest of an index): Docker Hub removes it
            // with the image whose tags are deleted.
            return Ok(None);
        };
        for tag in &record.tags {
            self.hub_delete_tag(api, &mut login, repo, tag).await?;
        }
        Ok(Some(format!("tags {}", record.tags.join(", "))))
    }

    /// A login that may delete: an anonymous one may not, and says so.
    async fn hub_login_for_writes(&self, api: &Url) -> Result<Login> {
        let login = self.hub_login(api).await?;
        if login.jwt.is_none() {
            return Err(RegistryError::Credentials {
                registry: self.name.clone(),
                reason: CredentialsError::HubLogin,
            });
        }
        Ok(login)
    }

    /// Delete one tag through the Hub API (`Ok(false)`: it was gone already).
    async fn hub_delete_tag(
        &self,
        api: &Url,
        login: &mut Login,
        repo: &str,
        tag: &str,
    ) -> Result<bool> {
        names::repository(repo)?;
        names::tag(tag)?;
        let url = self.hub_url(api, &format!("/v2/repositories/{repo}/tags/{tag}/"))?;
        let resp = self.hub_send(Method::DELETE, &url, login).await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            reqwest::StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.hub_error(&Method::DELETE, &url, resp).await),
        }
    }

    /// Delete the one tag `tag` (Hub deletes tags; the image stays while another tag names
    /// it). Returns `tag <name>` for the audit, `None` when it was gone.
    async fn hub_untag(&self, repo: &str, tag: &str) -> Result<Option<String>> {
        let api = self.hub_api()?;
        let mut login = self.hub_login_for_writes(api).await?;
        let deleted = self.hub_delete_tag(api, &mut login, repo, tag).await?;
        self.records.forget_tag(repo, tag);
        Ok(deleted.then(|| format!("tag {tag}")))
    }

    /// Log in to the Hub API with the registry credentials as the source gives them now
    /// (private repositories are listed only then); anonymous listing shows public
    /// repositories. A refused login reads the source again and, when that gives another
    /// credential, logs in once more.
    async fn hub_login(&self, api: &Url) -> Result<Login> {
        let with = self.credentials.current();
        match self.hub_login_with(api, &with).await {
            Err(e) if e.http_status() == Some(401) => {
                let Some(with) = reread(&self.credentials, &with).await? else {
                    return Err(e);
                };
                let jwt = self.hub_login_with(api, &with).await?;
                Ok(Login { jwt, with })
            }
            jwt => Ok(Login { jwt: jwt?, with }),
        }
    }

    /// Log in to the Hub API with `credential`: its JWT, `None` for no credential.
    async fn hub_login_with(
        &self,
        api: &Url,
        credential: &Credential,
    ) -> Result<Option<SecretString>> {
        let Credential::Basic { username, password } = credential else {
            return Ok(None);
        };
        let url = api
            .join("/v2/users/login")
            .map_err(|e| RegistryError::Protocol {
                url: api.to_string(),
                reason: format!("cannot build URL: {e}"),
            })?;
        #[derive(Debug, Deserialize)]
        struct Answer {
            token: Option<SecretString>,
            access_token: Option<SecretString>,
        }
        let resp = self
            .client
            .post(url.clone())
            .json(&serde_json::json!({"username": username, "password": password.expose_secret()}))
            .send()
            .await
            .map_err(|e| RegistryError::transport("POST", &url, e))?;
        if !resp.status().is_success() {
            return Err(self.hub_error(&Method::POST, &url, resp).await);
        }
        let body = read_limited(resp, &Method::POST, &url, MAX_TOKEN_ANSWER, self.stall).await?;
        let answer: Answer =
            serde_json::from_slice(&body).map_err(|e| RegistryError::Protocol {
                url: url.to_string(),
                reason: format!("unexpected login answer: {e}"),
            })?;
        Ok(answer.token.or(answer.access_token))
    }
}

#[async_trait]
impl HostedApi for DockerHub {
    fn record_style(&self) -> RecordStyle {
        RecordStyle::Tags
    }

    /// Docker Hub's referrers API has listed incompletely (docker/hub-feedback#2372), and
    /// every index read there to find children's referrers would count as a pull: on the Hub,
    /// referrers are found by their tags (cosign's default there).
    fn referrers_api(&self) -> Option<bool> {
        Some(false)
    }

    /// Docker Hub's pull limit counts manifest GETs; HEADs are free.
    fn counts_pulls(&self) -> bool {
        true
    }

    /// Where the API is known (`docker.io`, or the plan's `api`).
    fn lists_tag_digests(&self) -> bool {
        self.api.is_some()
    }

    async fn tag_digests(&self, repo: &str, max_pages: usize) -> Result<Option<TagDigests>> {
        self.retry
            .run("list Docker Hub tags", || {
                self.hub_tag_digests(repo, max_pages)
            })
            .await
    }

    async fn check_delete(&self, _repo: &str) -> Result<Option<String>> {
        match self.hub_login(self.hub_api()?).await?.jwt {
            Some(_) => Ok(Some("logged in to the Docker Hub API".into())),
            None => Err(RegistryError::Credentials {
                registry: self.name.clone(),
                reason: CredentialsError::HubLogin,
            }),
        }
    }

    async fn visibility(&self, repo: &str) -> Result<Option<RepoVisibility>> {
        self.hub_visibility(repo).await
    }

    async fn list_repositories(&self, prefix: &str) -> Result<Vec<String>> {
        self.retry
            .run("list repositories", || self.hub_repositories(prefix))
            .await
    }

    async fn manifest_records(&self, repo: &str) -> Result<Vec<ManifestRecord>> {
        let records = self
            .retry
            .run("list Docker Hub tags", || self.hub_records(repo))
            .await?;
        self.records.keep(repo, &records);
        Ok(records)
    }

    async fn delete_manifest(&self, repo: &str, digest: &Digest) -> Result<Option<String>> {
        self.hub_delete(repo, digest).await
    }

    async fn delete_tag(&self, repo: &str, tag: &str) -> Option<Result<Option<String>>> {
        Some(self.hub_untag(repo, tag).await)
    }
}

/// How long the Hub API asks to wait: on a 429, its `Retry-After` (or until
/// `X-RateLimit-Reset`); after a page that left `X-RateLimit-Remaining: 0`, until the reset.
fn hub_wait(
    headers: &reqwest::header::HeaderMap,
    status: reqwest::StatusCode,
) -> Option<std::time::Duration> {
    let until_reset = || throttle::until_reset(headers);
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
