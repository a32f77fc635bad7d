//! GHCR's [`HostedApi`]: the GitHub Packages REST API, for what GHCR's registry API does not
//! do: list a namespace's container packages, list package versions (id, digest, tags, push
//! time, untagged ones included; or just each tag's digest, for a run: `version_pages`) and
//! delete versions. Honours GitHub's rate limits as its docs
//! say (`limits`: every request to the API waits), paces deletions below its secondary limit
//! and tells its refusals for good apart ([`deletes`]), checks the token's scopes before the
//! first deletion, and reads a package's visibility (`package_visibility`). The token comes
//! from the registry's credential source for each request, and is read again after a 401 (a
//! GitHub App installation token lasts an hour).

pub mod deletes;
mod limits;
mod package_visibility;
mod version_pages;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use reqwest::header::{self, HeaderValue};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::Mutex;
use url::Url;

use super::{reread, Context, HostedApi, RecordCache};
use crate::reference::{names, Digest};
use crate::registry::capabilities::RecordStyle;
use crate::registry::credential_source::CredentialSource;
use crate::registry::credentials::{lacking, Credential};
use crate::registry::error::{RegistryError, Result};
use crate::registry::error_body::Service;
use crate::registry::reasons::CredentialsError;
use crate::registry::tag_digests::TagDigests;
use crate::registry::transport::body::{read_limited, status_error, MAX_TOKEN_ANSWER};
use crate::registry::transport::retry::RetryPolicy;
use crate::registry::transport::throttle::{pace::Pace, Throttle};
use crate::registry::visibility::RepoVisibility;
use crate::registry::ManifestRecord;

/// The REST API GHCR's packages are managed through, unless the plan names another (GitHub
/// Enterprise).
const GITHUB_API: &str = "https://api.github.com";

/// Versions asked per page (GitHub's maximum).
const PER_PAGE: usize = 100;

/// How long an answer may make no progress: the registry's default `stall_timeout`.
const API_STALL: Duration = crate::registry::config::DEFAULT_STALL_TIMEOUT;

/// One package version: a manifest as GitHub records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub id: u64,
    pub digest: Digest,
    pub tags: Vec<String>,
    pub created: Option<SystemTime>,
}

/// Whose package: an organisation's, the token owner's, or another user's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    Org,
    Me,
    OtherUser,
}

/// Its `Debug` names the API and the registry; the token is never shown.
pub struct PackagesApi {
    base: Url,
    /// Where the token comes from: the registry's password, asked for each request.
    credentials: Arc<dyn CredentialSource>,
    client: reqwest::Client,
    registry: String,
    throttle: Arc<Throttle>,
    /// The API's own pause, and the pace of version DELETEs ([`deletes`]).
    pace: Pace,
    retries: u32,
    /// Which kind of owner each namespace turned out to be.
    owners: Mutex<HashMap<String, Owner>>,
    /// A token, and its login and scopes from `GET /user`, read once per token.
    user: Mutex<Option<(SecretString, String, Vec<String>)>>,
}

impl std::fmt::Debug for PackagesApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackagesApi")
            .field("base", &self.base.as_str())
            .field("registry", &self.registry)
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

/// `myorg/team/app` -> (`myorg`, `team/app`): GHCR packages are named after the owner.
pub fn split_repository(repo: &str) -> Option<(&str, &str)> {
    repo.split_once('/')
}

fn encode(package: &str) -> String {
    url::form_urlencoded::byte_serialize(package.as_bytes()).collect()
}

impl PackagesApi {
    pub fn new(
        base: Url,
        credentials: Arc<dyn CredentialSource>,
        client: reqwest::Client,
        registry: &str,
        throttle: Arc<Throttle>,
        retries: u32,
    ) -> Self {
        let service = base.host_str().unwrap_or("the GitHub API").to_string();
        PackagesApi {
            pace: Pace::new(
                &service,
                deletes::DELETES_PER_MINUTE,
                deletes::DELETES_IN_FLIGHT,
            ),
            base,
            credentials,
            client,
            registry: registry.to_string(),
            throttle,
            retries,
            owners: Mutex::new(HashMap::new()),
            user: Mutex::new(None),
        }
    }

    fn url(&self, path: &str) -> Result<Url> {
        self.base.join(path).map_err(|e| RegistryError::Protocol {
            url: format!("{}{path}", self.base),
            reason: format!("cannot build URL: {e}"),
        })
    }

    /// The token in `credential`: the password of a user name and a classic token.
    fn token(&self, credential: &Credential) -> Result<SecretString> {
        match credential {
            Credential::Basic { password, .. } => Ok(password.clone()),
            _ => Err(RegistryError::Credentials {
                registry: self.registry.clone(),
                reason: CredentialsError::PackagesToken,
            }),
        }
    }

    /// One request with the token, and the token it went with; waits out GitHub's rate limits
    /// (bounded by `retries`), and has every other request to the API wait with it. After a
    /// 401 (GitHub did nothing) the credential source is read again, and the request sent once
    /// more when that gives another token.
    async fn send(&self, method: Method, url: &Url) -> Result<(reqwest::Response, SecretString)> {
        let mut waits = 0;
        let mut credential = self.credentials.current();
        let mut refused = false;
        loop {
            let token = self.token(&credential)?;
            self.throttle.held(&self.pace).await;
            let mut auth = HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
                .map_err(|_| RegistryError::Auth {
                    url: url.to_string(),
                    reason: "the token is not a valid header value".into(),
                })?;
            auth.set_sensitive(true);
            let resp = self
                .client
                .request(method.clone(), url.clone())
                .header(header::AUTHORIZATION, auth)
                .header(header::ACCEPT, "application/vnd.github+json")
                .header("x-github-api-version", "2022-11-28")
                .send()
                .await
                .map_err(|e| RegistryError::transport(&method, url, e))?;
            let limited = limits::rate_limited(resp.status(), resp.headers());
            if let Some(wait) = limited.filter(|_| waits < self.retries) {
                waits += 1;
                self.throttle
                    .pause_service(&self.pace, wait, "GitHub API rate limit");
                continue;
            }
            if resp.status() == StatusCode::UNAUTHORIZED && !refused {
                refused = true;
                if let Some(again) = reread(&self.credentials, &credential).await? {
                    credential = again;
                    continue;
                }
            }
            return Ok((resp, token));
        }
    }

    async fn error(&self, method: &Method, url: &Url, resp: reqwest::Response) -> RegistryError {
        status_error(resp, method, url, API_STALL, Service::GitHubApi).await
    }

    /// The token's login and scopes (`GET /user`, `X-OAuth-Scopes`), read once per token: a
    /// new token may have other scopes.
    async fn user(&self) -> Result<(String, Vec<String>)> {
        let mut user = self.user.lock().await;
        let now = self.token(&self.credentials.current())?;
        if let Some((token, login, scopes)) = user.as_ref() {
            if token.expose_secret() == now.expose_secret() {
                return Ok((login.clone(), scopes.clone()));
            }
        }
        #[derive(Deserialize)]
        struct Me {
            login: String,
        }
        let url = self.url("/user")?;
        let (resp, token) = self.send(Method::GET, &url).await?;
        if !resp.status().is_success() {
            return Err(self.error(&Method::GET, &url, resp).await);
        }
        let scopes: Vec<String> = resp
            .headers()
            .get("x-oauth-scopes")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        let body = read_limited(resp, &Method::GET, &url, MAX_TOKEN_ANSWER, API_STALL).await?;
        let me: Me = serde_json::from_slice(&body).map_err(|e| RegistryError::Protocol {
            url: url.to_string(),
            reason: format!("unexpected answer from the GitHub API: {e}"),
        })?;
        *user = Some((token, me.login.clone(), scopes.clone()));
        Ok((me.login, scopes))
    }

    /// The user kind for an owner that is not an organisation.
    async fn user_kind(&self, owner: &str) -> Result<Owner> {
        let (login, _) = self.user().await?;
        Ok(if login.eq_ignore_ascii_case(owner) {
            Owner::Me
        } else {
            Owner::OtherUser
        })
    }

    /// Check once that the token may list and delete packages, from `X-OAuth-Scopes`.
    pub async fn check_delete_scopes(&self) -> Result<()> {
        self.check_scopes(["read:packages", "delete:packages"], |missing, have| {
            CredentialsError::PackagesScopes { missing, have }
        })
        .await
    }

    /// Check that the token has the scopes of `need`, from `X-OAuth-Scopes` (once per token).
    async fn check_scopes(
        &self,
        need: [&'static str; 2],
        lacks: impl FnOnce(Vec<&'static str>, Vec<String>) -> CredentialsError,
    ) -> Result<()> {
        let (_, have) = self.user().await?;
        match lacking(&have, need) {
            missing if missing.is_empty() => Ok(()),
            missing => Err(RegistryError::Credentials {
                registry: self.registry.clone(),
                reason: lacks(missing, have),
            }),
        }
    }

    fn versions_path(owner_kind: Owner, owner: &str, package: &str) -> String {
        match owner_kind {
            Owner::Org => format!(
                "/orgs/{owner}/packages/container/{}/versions",
                encode(package)
            ),
            Owner::Me => format!("/user/packages/container/{}/versions", encode(package)),
            Owner::OtherUser => format!(
                "/users/{owner}/packages/container/{}/versions",
                encode(package)
            ),
        }
    }

    /// The kinds `owner` may be, in the order to try: the one found before, else org, then user.
    async fn owner_kinds(&self, owner: &str) -> Vec<Owner> {
        match self.owners.lock().await.get(owner).copied() {
            Some(k) => vec![k],
            None => vec![Owner::Org, Owner::Me],
        }
    }

    /// Every version of a package (paged by `Link`), trying the organisation endpoint first
    /// and the authenticated user's packages when `owner` is not an organisation.
    pub async fn versions(&self, owner: &str, package: &str) -> Result<Vec<Version>> {
        self.by_owner(owner, package, |first| self.pages(first))
            .await
    }

    /// The package's tags with their digests, when its versions take at most `max_pages`
    /// pages (see [`HostedApi::tag_digests`]).
    pub async fn tag_digests(
        &self,
        owner: &str,
        package: &str,
        max_pages: usize,
    ) -> Result<Option<TagDigests>> {
        self.by_owner(owner, package, |first| self.tag_pages(first, max_pages))
            .await
    }

    /// `list` the package's versions from their first page: the organisation's endpoint first,
    /// then the authenticated user's packages when `owner` is not an organisation (the kind
    /// found is remembered).
    async fn by_owner<T, F>(&self, owner: &str, package: &str, list: impl Fn(Url) -> F) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        let mut last_err = None;
        for kind in self.owner_kinds(owner).await {
            let kind = match kind {
                Owner::Me => self.user_kind(owner).await?,
                k => k,
            };
            let first = self.url(&format!(
                "{}?per_page={PER_PAGE}",
                Self::versions_path(kind, owner, package)
            ))?;
            match list(first).await {
                Ok(v) => {
                    self.owners.lock().await.insert(owner.to_string(), kind);
                    return Ok(v);
                }
                Err(e) if e.is_not_found() => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.expect("tried at least one owner kind"))
    }

    /// Delete one version, at the pace GitHub's secondary limit allows; a refusal for good is
    /// [`RegistryError::Refused`].
    pub async fn delete(&self, owner: &str, package: &str, id: u64) -> Result<()> {
        self.check_delete_scopes().await?;
        let kind = self
            .owners
            .lock()
            .await
            .get(owner)
            .copied()
            .unwrap_or(Owner::Org);
        let url = self.url(&format!(
            "{}/{id}",
            Self::versions_path(kind, owner, package)
        ))?;
        let _slot = self.throttle.paced(&self.pace).await;
        let (resp, _) = self.send(Method::DELETE, &url).await?;
        match resp.status() {
            s if s.is_success() => Ok(()),
            StatusCode::NOT_FOUND => Ok(()),
            _ => Err(deletes::refused(
                self.error(&Method::DELETE, &url, resp).await,
                id,
            )),
        }
    }

    /// Take the next version DELETE's place in the pace now (see [`Throttle::prepay`]).
    pub async fn prepay_delete(&self) {
        self.throttle.prepay(&self.pace).await
    }

    /// Restore a deleted version (GitHub keeps one 30 days), through the owner's endpoint as
    /// [`PackagesApi::versions`] finds it: the organisation's, else the token user's.
    pub async fn restore(&self, owner: &str, package: &str, id: u64) -> Result<()> {
        // GitHub asks for write:packages: a token that may only delete is told so by name,
        // and no restore is asked.
        let lacks = |missing, have| CredentialsError::RestoreScopes { missing, have };
        self.check_scopes(["read:packages", "write:packages"], lacks)
            .await?;
        let mut last_err = None;
        for kind in self.owner_kinds(owner).await {
            let kind = match kind {
                Owner::Me => self.user_kind(owner).await?,
                k => k,
            };
            let path = Self::versions_path(kind, owner, package);
            let url = self.url(&format!("{path}/{id}/restore"))?;
            let (resp, _) = self.send(Method::POST, &url).await?;
            if resp.status().is_success() {
                self.owners.lock().await.insert(owner.to_string(), kind);
                return Ok(());
            }
            match self.error(&Method::POST, &url, resp).await {
                e if e.is_not_found() => last_err = Some(e),
                e => return Err(e),
            }
        }
        Err(last_err.expect("tried at least one owner kind"))
    }

    /// The container packages of an organisation (or of the token's user), as repository
    /// paths (`owner/package`): GHCR has no catalog.
    pub async fn packages(&self, owner: &str) -> Result<Vec<String>> {
        #[derive(Deserialize)]
        struct Raw {
            name: String,
        }
        let mut last_err = None;
        let user_path = match self.user_kind(owner).await? {
            Owner::Me => format!("/user/packages?package_type=container&per_page={PER_PAGE}"),
            _ => format!("/users/{owner}/packages?package_type=container&per_page={PER_PAGE}"),
        };
        for path in [
            format!("/orgs/{owner}/packages?package_type=container&per_page={PER_PAGE}"),
            user_path,
        ] {
            match self.list::<Raw>(self.url(&path)?).await {
                Ok(raw) => {
                    return Ok(raw
                        .into_iter()
                        .map(|r| format!("{owner}/{}", r.name))
                        .collect())
                }
                Err(e) if e.is_not_found() => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.expect("tried both owner kinds"))
    }
}

/// GHCR: the GitHub Packages API as its [`HostedApi`].
pub struct Ghcr {
    registry: String,
    /// Usable while the credential source gives a token (a user name and a classic PAT).
    api: PackagesApi,
    retry: RetryPolicy,
    records: RecordCache,
}

impl Ghcr {
    pub fn new(cx: Context) -> Ghcr {
        let api = PackagesApi::new(
            cx.api
                .clone()
                .unwrap_or_else(|| Url::parse(GITHUB_API).expect("static URL")),
            cx.credentials.clone(),
            cx.client.clone(),
            &cx.registry,
            cx.throttle.clone(),
            cx.retry.retries(),
        );
        Ghcr {
            registry: cx.registry,
            api,
            retry: cx.retry,
            records: RecordCache::default(),
        }
    }

    /// The API, when the credential source gives a token now.
    fn api(&self) -> Result<&PackagesApi> {
        self.api.token(&self.api.credentials.current())?;
        Ok(&self.api)
    }

    /// The API, the owner and the package of a repository (`OWNER/PACKAGE`).
    fn package<'a>(&'a self, repo: &'a str) -> Result<(&'a PackagesApi, &'a str, &'a str)> {
        // The owner and package become parts of GitHub API paths.
        names::repository(repo)?;
        let api = self.api()?;
        let (owner, package) = split_repository(repo).ok_or_else(|| RegistryError::Protocol {
            url: format!("{}/{repo}", self.registry),
            reason: "a GHCR repository is OWNER/PACKAGE".into(),
        })?;
        Ok((api, owner, package))
    }
}

#[async_trait]
impl HostedApi for Ghcr {
    fn record_style(&self) -> RecordStyle {
        RecordStyle::Versions
    }

    async fn check_delete(&self, repo: &str) -> Result<Option<String>> {
        let (api, _, _) = self.package(repo)?;
        api.check_delete_scopes().await?;
        Ok(Some(
            "the token has read:packages and delete:packages".into(),
        ))
    }

    async fn list_repositories(&self, prefix: &str) -> Result<Vec<String>> {
        let owner = prefix.split('/').next().unwrap_or("");
        let api = self.api()?;
        let mut repos = self
            .retry
            .run("list packages", || api.packages(owner))
            .await?;
        repos.retain(|r| r.starts_with(prefix));
        repos.sort();
        Ok(repos)
    }

    fn lists_tag_digests(&self) -> bool {
        true
    }

    /// A version's `name` is the manifest digest its tags point at. Without a token (GHCR
    /// pulls public images anonymously, the API lists nothing) there is no listing.
    async fn tag_digests(&self, repo: &str, max_pages: usize) -> Result<Option<TagDigests>> {
        if self.api().is_err() {
            return Ok(None);
        }
        let (api, owner, package) = self.package(repo)?;
        self.retry
            .run("list package versions", || {
                api.tag_digests(owner, package, max_pages)
            })
            .await
    }

    async fn manifest_records(&self, repo: &str) -> Result<Vec<ManifestRecord>> {
        let (api, owner, package) = self.package(repo)?;
        let versions = self
            .retry
            .run("list package versions", || api.versions(owner, package))
            .await?;
        let records: Vec<ManifestRecord> = versions
            .into_iter()
            .map(|v| ManifestRecord {
                id: v.id.to_string(),
                digest: v.digest,
                tags: v.tags,
                created: v.created,
                children: None,
            })
            .collect();
        self.records.keep(repo, &records);
        Ok(records)
    }

    async fn visibility(&self, repo: &str) -> Result<Option<RepoVisibility>> {
        self.package_visibility(repo).await
    }

    async fn reserve_delete(&self) {
        if let Ok(api) = self.api() {
            api.prepay_delete().await;
        }
    }

    /// Find the package version holding this digest and delete it.
    async fn delete_manifest(&self, repo: &str, digest: &Digest) -> Result<Option<String>> {
        let (api, owner, package) = self.package(repo)?;
        let read = self.manifest_records(repo);
        let Some(version) = self.records.record_of(repo, digest, read).await? else {
            // Already gone: the decision holds.
            return Ok(None);
        };
        let id: u64 = version.id.parse().map_err(|_| RegistryError::Protocol {
            url: format!("{}/{repo}@{digest}", self.registry),
            reason: format!("package version id {:?} is not a number", version.id),
        })?;
        api.delete(owner, package, id).await?;
        Ok(Some(version.id))
    }

    /// `POST …/versions/{id}/restore`: not retried, as a restore that went through answers
    /// 404 the second time.
    async fn restore_version(&self, repo: &str, id: &str) -> Option<Result<()>> {
        let restore = async {
            let (api, owner, package) = self.package(repo)?;
            let number: u64 = id.parse().map_err(|_| RegistryError::Protocol {
                url: format!("{}/{repo}", self.registry),
                reason: format!("package version id {id:?} is not a number"),
            })?;
            api.restore(owner, package, number).await
        };
        Some(restore.await)
    }
}

#[cfg(test)]
mod tests;
