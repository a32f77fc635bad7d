//! [`HttpRegistry`]: the distribution API over reqwest (rustls).
//!
//! Every request goes through `HttpRegistry::send`, which takes a connection permit for the
//! host, attaches the right `Authorization` for the request's scope and answers a 401 by
//! following the registry's challenge once. Error bodies are decoded into the message users
//! read. Blob bodies are streamed both ways and verified while they flow.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, Response, StatusCode};
use secrecy::ExposeSecret;
use serde::Deserialize;
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore};
use url::Url;

mod hub;
mod upload;
mod wire;

/// An error body as messages show it (kept here for the header proptests).
pub use crate::registry::status::decode_error_body;
use wire::{
    check_reported_digest, stalled, tracked, verify_manifest_digest, watched_body, BodyProgress,
};
pub use wire::{
    next_link, read_limited, status_error, MAX_ERROR_BODY, MAX_LISTING, MAX_TOKEN_ANSWER,
    MIN_PROGRESS,
};

use super::auth::{Authenticator, Scope};
use super::credentials::{self, Credential, CredentialsError};
use super::digest::{Digest, VerifyingStream};
use super::error::{RegistryError, Result};
use super::github::{split_repository, PackagesApi};
use super::manifest::{self, ManifestError, MAX_MANIFEST_SIZE};
use super::retry;
use super::status::{rendered, Service};
use super::throttle::{self, Kind, Observer, Throttle};
use super::tls;
use super::ManifestRecord;
use super::{BlobStream, BlobUpload, Manifest, ManifestHead, Pushed, ReferrerList, Registry};
use crate::reference::names;
use crate::reference::DOCKER_HUB;
use crate::registry::config::{Flavor, RegistrySettings};

/// Blobs up to this size are uploaded in one streamed PUT; larger ones in chunks, so a
/// broken connection costs one chunk and the upload can resume.
pub const MONOLITHIC_MAX: u64 = 16 * 1024 * 1024;

/// Size of one PATCH of a chunked upload; at most one chunk per in-flight upload is held in
/// memory (Harbor uses 10 MiB).
pub const CHUNK_SIZE: usize = 8 * 1024 * 1024;

/// Page size asked of tag lists and catalogs (distribution caps catalogs at 1000).
const PAGE_SIZE: usize = 1000;

/// More pages than this means a registry that loops its `Link` header.
const MAX_PAGES: usize = 10_000;

/// Docker Hub's registry endpoint and repository API.
const DOCKER_HUB_REGISTRY: &str = "https://registry-1.docker.io";
const DOCKER_HUB_API: &str = "https://hub.docker.com";
const GITHUB_API: &str = "https://api.github.com";

const USER_AGENT: &str = concat!("ferry/", env!("CARGO_PKG_VERSION"));

/// A request body that can be sent again after a 401 (bytes), or only once (a stream).
enum Body {
    Empty,
    Bytes(Bytes),
    Stream(Option<BlobStream>),
}

/// A registry spoken to over HTTP(S).
pub struct HttpRegistry {
    name: String,
    /// The endpoint: configured, Docker Hub's, or decided at first use for insecure hosts.
    base: OnceCell<Url>,
    configured: Option<Url>,
    insecure: bool,
    api: Option<Url>,
    client: reqwest::Client,
    /// The same client without a read timeout, for requests with a body: reqwest's read
    /// timeout runs from the start of a request until its answer, which would cut off every
    /// upload slower than `stall`; `send` watches those bodies' progress instead.
    upload_client: reqwest::Client,
    auth: Authenticator,
    credential: Credential,
    connections: Arc<Semaphore>,
    throttle: Arc<Throttle>,
    retries: u32,
    /// GHCR's Packages API, for listing packages and deleting versions.
    packages: Option<PackagesApi>,
    flavor: Flavor,
    /// The records `manifest_records` last read per repository: deletions right after the
    /// inventory look ids and tags up here instead of listing the repository again.
    records: std::sync::Mutex<HashMap<String, Vec<ManifestRecord>>>,
    stall: std::time::Duration,
    /// Whether the registry answers the OCI 1.1 referrers API, once a request told.
    referrers_api: std::sync::OnceLock<bool>,
}

/// The next page a listing's `Link` header names, on the same host: the request's
/// credentials would follow a link to another, so one is refused.
fn next_page(resp: &Response, url: &Url) -> Result<Option<Url>> {
    let next = next_link(resp.headers(), url).filter(|n| n != url);
    if let Some(n) = next.as_ref().filter(|n| n.origin() != url.origin()) {
        return Err(RegistryError::Protocol {
            url: url.to_string(),
            reason: format!("refusing to follow a `Link` to another host: {n}"),
        });
    }
    Ok(next)
}

/// Redirects followed for one request at most (a loop ends here).
const MAX_REDIRECTS: usize = 10;

/// Why a redirect from `from` to `to` (after `hops` earlier ones) is not followed: a loop, or
/// a step down from HTTPS to plain HTTP, which only a registry marked `insecure` may take.
fn redirect_refusal(from: &Url, to: &Url, hops: usize, insecure: bool) -> Option<String> {
    if hops > MAX_REDIRECTS {
        return Some(format!(
            "more than {MAX_REDIRECTS} redirects (a redirect loop?)"
        ));
    }
    if from.scheme() == "https" && to.scheme() != "https" && !insecure {
        return Some(format!(
            "refusing a redirect from HTTPS to {}://{}: mark the registry `insecure = true` only if plain HTTP is acceptable",
            to.scheme(),
            to.host_str().unwrap_or("?")
        ));
    }
    None
}

impl HttpRegistry {
    /// A client for `host` as the plan configures it; resolves credentials now so a missing
    /// secret is reported before any work starts.
    pub fn new(
        host: &str,
        settings: &RegistrySettings,
        observer: Option<Observer>,
    ) -> Result<HttpRegistry> {
        let credential = credentials::resolve(host, &settings.auth)?;
        let roots = match &settings.ca_file {
            // Besides the system roots, not instead of them: a mirror behind a private CA may
            // still redirect blob downloads to a public CDN.
            Some(path) => {
                tls::read_root_certificates(path).map_err(|reason| RegistryError::CaFile {
                    registry: host.to_string(),
                    reason,
                })?
            }
            None => Vec::new(),
        };
        let insecure = settings.insecure;
        let builder = || {
            let mut b = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                    let from = attempt.previous().last().cloned();
                    match from.map(|from| {
                        redirect_refusal(&from, attempt.url(), attempt.previous().len(), insecure)
                    }) {
                        Some(Some(reason)) => attempt.error(reason),
                        _ => attempt.follow(),
                    }
                }))
                .user_agent(USER_AGENT)
                .danger_accept_invalid_certs(settings.insecure)
                .connect_timeout(std::time::Duration::from_secs(30))
                .pool_max_idle_per_host(settings.max_connections);
            for cert in &roots {
                b = b.add_root_certificate(cert.clone());
            }
            b
        };
        let upload_client = builder()
            .build()
            .map_err(|e| RegistryError::transport("INIT", host, e))?;
        let client = builder()
            // For requests without a body: the answer's headers must come within this
            // time, and each read of its body must make progress (bodies are also watched
            // for too little progress: `wire::Watched`).
            .read_timeout(settings.stall_timeout)
            .build()
            .map_err(|e| RegistryError::transport("INIT", host, e))?;
        let configured = settings.endpoint.clone().or_else(|| {
            (host == DOCKER_HUB).then(|| Url::parse(DOCKER_HUB_REGISTRY).expect("static URL"))
        });
        let api = settings.api.clone().or_else(|| {
            (host == DOCKER_HUB).then(|| Url::parse(DOCKER_HUB_API).expect("static URL"))
        });
        let throttle = Arc::new(Throttle::new(host, settings.rate_limit, observer));
        let packages = match (settings.flavor, &credential) {
            (Flavor::Ghcr, Credential::Basic { password, .. }) => Some(PackagesApi::new(
                settings
                    .api
                    .clone()
                    .unwrap_or_else(|| Url::parse(GITHUB_API).expect("static URL")),
                password.clone(),
                client.clone(),
                host,
                throttle.clone(),
                settings.retries,
            )),
            _ => None,
        };
        Ok(HttpRegistry {
            name: host.to_string(),
            base: OnceCell::new(),
            configured,
            insecure: settings.insecure,
            api,
            client,
            upload_client,
            auth: Authenticator::new(host, credential.clone(), settings.insecure),
            credential,
            connections: Arc::new(Semaphore::new(settings.max_connections)),
            packages,
            flavor: settings.flavor,
            records: std::sync::Mutex::new(HashMap::new()),
            throttle,
            retries: settings.retries,
            stall: settings.stall_timeout,
            referrers_api: std::sync::OnceLock::new(),
        })
    }

    /// The registry's base URL. For an insecure host without an endpoint, HTTPS (without
    /// verification) is tried first and plain HTTP used only when TLS cannot be spoken, as
    /// docker and skopeo do for insecure registries.
    async fn base(&self) -> Result<&Url> {
        self.base
            .get_or_try_init(|| async {
                if let Some(u) = &self.configured {
                    return Ok(u.clone());
                }
                let https = Url::parse(&format!("https://{}", self.name)).map_err(|e| {
                    RegistryError::Protocol {
                        url: self.name.clone(),
                        reason: format!("not a usable host: {e}"),
                    }
                })?;
                if !self.insecure {
                    return Ok(https);
                }
                let probe = self
                    .client
                    .get(https.join("/v2/").expect("static path"))
                    .send()
                    .await;
                match probe {
                    Ok(_) => Ok(https),
                    Err(e) if e.is_connect() || e.is_request() => {
                        let http =
                            Url::parse(&format!("http://{}", self.name)).expect("valid host");
                        tracing::info!(registry = %self.name, "using plain HTTP (insecure = true)");
                        Ok(http)
                    }
                    Err(e) => Err(RegistryError::transport("GET", &https, e)),
                }
            })
            .await
    }

    async fn url(&self, path: &str) -> Result<Url> {
        let base = self.base().await?;
        base.join(path).map_err(|e| RegistryError::Protocol {
            url: format!("{base}{path}"),
            reason: format!("cannot build URL: {e}"),
        })
    }

    /// `/v2/<repo>/<rest>`, built only from a repository name that follows the distribution
    /// grammar: `org/../../x` (which a hostile catalog may list) would become `/v2/x/…` once
    /// the URL is normalised, a request about a repository nobody asked for. The scope of the
    /// request's token is built from the same name. Every request about a repository goes
    /// through here (or [`Self::manifest_url`]).
    async fn repo_url(&self, repo: &str, rest: &str) -> Result<Url> {
        names::repository(repo)?;
        self.url(&format!("/v2/{repo}/{rest}")).await
    }

    /// `/v2/<repo>/manifests/<reference>`, the reference a valid tag or digest.
    async fn manifest_url(&self, repo: &str, reference: &str) -> Result<Url> {
        names::reference(reference)?;
        self.repo_url(repo, &format!("manifests/{reference}")).await
    }

    /// Run an operation with this registry's retry policy.
    async fn retry<T, F, Fut>(&self, what: &str, op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        retry::retrying(&self.throttle, &self.name, what, self.retries, op).await
    }

    /// Send one request with auth, retrying once after a 401 with the challenge's credentials.
    async fn send(
        &self,
        method: Method,
        url: &Url,
        scope: &Scope,
        headers: HeaderMap,
        mut body: Body,
    ) -> Result<(Response, OwnedSemaphorePermit)> {
        // Manifest GETs are what Docker Hub counts as pulls.
        let kind = if method == Method::GET && url.path().contains("/manifests/") {
            Kind::Pull
        } else {
            Kind::Other
        };
        // Credentials go to the registry's own host only. A URL the registry hands out on
        // another host (an upload `Location` at storage, say) gets none, as docker does; a
        // redirect elsewhere loses them in reqwest's redirect policy.
        let own_host = self.is_own_host(url).await?;
        let mut auth = match own_host {
            true => self.auth.header(&self.client, scope).await?,
            false => None,
        };
        let mut retried = false;
        loop {
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
            if let Some(h) = &auth {
                let mut value =
                    HeaderValue::from_str(h.expose_secret()).map_err(|_| RegistryError::Auth {
                        url: url.to_string(),
                        reason: "the credential contains characters not allowed in a header".into(),
                    })?;
                value.set_sensitive(true);
                req = req.header(header::AUTHORIZATION, value);
            }
            let progress = BodyProgress::new();
            req = match &mut body {
                Body::Empty => req,
                Body::Bytes(b) => {
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
            let resp = match body {
                Body::Empty => req.send().await,
                Body::Bytes(_) | Body::Stream(_) => tokio::select! {
                    r = req.send() => r,
                    () = stalled(&progress, self.stall) => {
                        return Err(RegistryError::Stalled {
                            url: url.to_string(),
                            seconds: self.stall.as_secs(),
                        })
                    }
                },
            }
            .map_err(|e| RegistryError::transport(&method, url, e))?;
            self.throttle.observe(resp.headers());
            self.throttle
                .sent(resp.status() == StatusCode::TOO_MANY_REQUESTS);
            if resp.status() == StatusCode::TOO_MANY_REQUESTS {
                // Slow the whole host down, not just this request.
                let wait = throttle::retry_after(resp.headers())
                    .unwrap_or(throttle::DEFAULT_429_WAIT)
                    .min(throttle::MAX_WAIT);
                self.throttle.pause(
                    wait,
                    &format!("{} answered 429 Too Many Requests", self.name),
                );
            }
            if resp.status() == StatusCode::UNAUTHORIZED && !own_host {
                return Err(RegistryError::Auth {
                    url: url.to_string(),
                    reason: format!(
                        "{} sent this request to another host, which asks for credentials; ferry sends the credentials for {} to {} only",
                        self.name, self.name, self.name
                    ),
                });
            }
            let replayable = !matches!(body, Body::Stream(_));
            if resp.status() == StatusCode::UNAUTHORIZED && !retried && replayable {
                retried = true;
                let www = resp
                    .headers()
                    .get(header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                match self
                    .auth
                    .unauthorized(&self.client, www.as_deref(), scope, auth.is_some())
                    .await?
                {
                    Some(h) => {
                        auth = Some(h);
                        continue;
                    }
                    None => return Ok((resp, permit)),
                }
            }
            return Ok((resp, permit));
        }
    }

    /// Is `url` on the registry's own endpoint (host and port), where its credentials belong?
    async fn is_own_host(&self, url: &Url) -> Result<bool> {
        let base = self.base().await?;
        Ok(url.host_str() == base.host_str()
            && url.port_or_known_default() == base.port_or_known_default())
    }

    /// Turn an unsuccessful response into an error with the decoded body.
    async fn status_error(&self, method: &Method, url: &Url, resp: Response) -> RegistryError {
        status_error(resp, method, url, self.stall, self.service()).await
    }

    /// This registry, as error answers name it for their hints.
    fn service(&self) -> Service {
        Service::Registry {
            name: self.name.clone(),
            credentials: !self.credential.is_anonymous(),
        }
    }

    /// Resolve an upload `Location` (often relative) against the base.
    async fn location(&self, url: &Url, resp: &Response) -> Result<Url> {
        let loc = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| RegistryError::Protocol {
                url: url.to_string(),
                reason: "the registry answered without an upload Location".into(),
            })?;
        self.base()
            .await?
            .join(loc)
            .map_err(|e| RegistryError::Protocol {
                url: url.to_string(),
                reason: format!("invalid upload Location {loc:?}: {e}"),
            })
    }

    /// GET every page of a paged list (`Link: <…>; rel="next"`).
    async fn get_pages<T: for<'de> Deserialize<'de>>(
        &self,
        first: Url,
        scope: &Scope,
    ) -> Result<Vec<(T, Url)>> {
        let mut pages = Vec::new();
        let mut next = Some(first);
        while let Some(url) = next.take() {
            if pages.len() >= MAX_PAGES {
                return Err(RegistryError::Protocol {
                    url: url.to_string(),
                    reason: format!("more than {MAX_PAGES} pages: the registry's paging loops"),
                });
            }
            let (resp, _permit) = self
                .send(Method::GET, &url, scope, HeaderMap::new(), Body::Empty)
                .await?;
            if !resp.status().is_success() {
                return Err(self.status_error(&Method::GET, &url, resp).await);
            }
            next = next_page(&resp, &url)?;
            let body = read_limited(resp, &Method::GET, &url, MAX_LISTING, self.stall).await?;
            let parsed: T = serde_json::from_slice(&body).map_err(|e| RegistryError::Protocol {
                url: url.to_string(),
                reason: format!("unexpected answer: {e}"),
            })?;
            pages.push((parsed, url));
        }
        Ok(pages)
    }
}

impl HttpRegistry {
    fn cache_records(&self, repo: &str, records: &[ManifestRecord]) {
        self.records
            .lock()
            .expect("records cache")
            .insert(repo.to_string(), records.to_vec());
    }

    fn no_packages_api(&self) -> RegistryError {
        RegistryError::Credentials {
            registry: self.name.clone(),
            reason: CredentialsError::PackagesToken,
        }
    }

    fn packages_for<'a>(&'a self, repo: &'a str) -> Result<(&'a PackagesApi, &'a str, &'a str)> {
        // The owner and package become parts of GitHub API paths.
        names::repository(repo)?;
        let api = self
            .packages
            .as_ref()
            .ok_or_else(|| self.no_packages_api())?;
        let (owner, package) = split_repository(repo).ok_or_else(|| RegistryError::Protocol {
            url: format!("{}/{repo}", self.name),
            reason: "a GHCR repository is OWNER/PACKAGE".into(),
        })?;
        Ok((api, owner, package))
    }

    /// GHCR: find the package version holding this digest and delete it.
    /// The record of a manifest: from the inventory's read when there was one, else read now.
    pub(super) async fn record_of(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> Result<Option<ManifestRecord>> {
        let cached = self
            .records
            .lock()
            .expect("records cache")
            .get(repo)
            .map(|rs| rs.iter().find(|r| &r.digest == digest).cloned());
        match cached {
            Some(found) => Ok(found),
            None => Ok(self
                .manifest_records(repo)
                .await?
                .unwrap_or_default()
                .into_iter()
                .find(|r| &r.digest == digest)),
        }
    }

    async fn delete_version(&self, repo: &str, digest: &Digest) -> Result<Option<String>> {
        let (api, owner, package) = self.packages_for(repo)?;
        let Some(version) = self.record_of(repo, digest).await? else {
            // Already gone: the decision holds.
            return Ok(None);
        };
        let id: u64 = version.id.parse().map_err(|_| RegistryError::Protocol {
            url: format!("{}/{repo}@{digest}", self.name),
            reason: format!("package version id {:?} is not a number", version.id),
        })?;
        api.delete(owner, package, id).await?;
        Ok(Some(version.id))
    }
}

/// The operations, each tried once; the trait implementation below wraps them in retries.
impl HttpRegistry {
    async fn delete_manifest_once(&self, repo: &str, digest: &Digest) -> Result<()> {
        let url = self.manifest_url(repo, digest.as_str()).await?;
        let (resp, _permit) = self
            .send(
                Method::DELETE,
                &url,
                &Scope::delete(repo),
                HeaderMap::new(),
                Body::Empty,
            )
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(()),
            // Already gone: the decision holds.
            StatusCode::NOT_FOUND => Ok(()),
            _ => Err(self.status_error(&Method::DELETE, &url, resp).await),
        }
    }

    async fn list_repositories_once(&self, prefix: &str) -> Result<Vec<String>> {
        if self.flavor == Flavor::Dockerhub {
            let api = self.hub_api()?.clone();
            return self.hub_repositories(&api, prefix).await;
        }
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
            .flat_map(|(c, _)| c.repositories.unwrap_or_default())
            .filter(|r| r.starts_with(prefix))
            .collect();
        repos.sort();
        repos.dedup();
        Ok(repos)
    }

    async fn list_tags_once(&self, repo: &str) -> Result<Vec<String>> {
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
            .flat_map(|(t, _)| t.tags.unwrap_or_default())
            .collect();
        tags.sort();
        tags.dedup();
        Ok(tags)
    }

    async fn head_manifest_once(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<ManifestHead>> {
        let url = self.manifest_url(repo, reference).await?;
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static(manifest::ACCEPT));
        let (resp, permit) = self
            .send(Method::HEAD, &url, &Scope::pull(repo), headers, Body::Empty)
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(self.status_error(&Method::HEAD, &url, resp).await);
        }
        let digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(Digest::parse);
        let media_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        drop(permit);
        match digest {
            Some(digest) => Ok(Some(ManifestHead { digest, media_type })),
            // Without the header the only way to know the digest is to read the manifest.
            None => {
                let m = self.get_manifest(repo, reference).await?;
                Ok(Some(ManifestHead {
                    digest: m.digest,
                    media_type: Some(m.media_type),
                }))
            }
        }
    }

    async fn get_manifest_once(&self, repo: &str, reference: &str) -> Result<Manifest> {
        let url = self.manifest_url(repo, reference).await?;
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static(manifest::ACCEPT));
        let (resp, _permit) = self
            .send(Method::GET, &url, &Scope::pull(repo), headers, Body::Empty)
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(RegistryError::NotFound {
                what: format!("manifest {}/{repo}:{reference}", self.name),
                url: url.to_string(),
            });
        }
        if !resp.status().is_success() {
            return Err(self.status_error(&Method::GET, &url, resp).await);
        }
        let served_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let header_digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if resp.content_length().unwrap_or(0) > MAX_MANIFEST_SIZE {
            return Err(RegistryError::InvalidManifest {
                url: url.to_string(),
                reason: ManifestError::OverLimit,
            });
        }
        let bytes = self.read_manifest_sized(resp, &url).await?.ok_or_else(|| {
            RegistryError::InvalidManifest {
                url: url.to_string(),
                reason: ManifestError::OverLimit,
            }
        })?;
        let digest = verify_manifest_digest(&url, &bytes, reference, header_digest.as_deref())?;
        let media_type =
            manifest::media_type_of(&bytes, served_type.as_deref()).ok_or_else(|| {
                RegistryError::InvalidManifest {
                    url: url.to_string(),
                    reason: ManifestError::NoMediaType {
                        besides: "the Content-Type header",
                    },
                }
            })?;
        Ok(Manifest {
            media_type,
            bytes,
            digest,
        })
    }

    async fn put_manifest_once(&self, repo: &str, reference: &str, m: &Manifest) -> Result<Pushed> {
        let url = self.manifest_url(repo, reference).await?;
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(&m.media_type).map_err(|_| RegistryError::InvalidManifest {
                url: url.to_string(),
                reason: ManifestError::MediaTypeHeader {
                    media_type: m.media_type.clone(),
                },
            })?,
        );
        let (resp, _permit) = self
            .send(
                Method::PUT,
                &url,
                &Scope::push(repo),
                headers,
                Body::Bytes(m.bytes.clone()),
            )
            .await?;
        if resp.status() != StatusCode::CREATED && !resp.status().is_success() {
            return Err(self.status_error(&Method::PUT, &url, resp).await);
        }
        check_reported_digest(&url, &resp, &m.digest)?;
        Ok(Pushed {
            subject_indexed: resp.headers().contains_key("oci-subject"),
        })
    }

    /// A manifest-sized body (a manifest, a referrers page), or `None` when it is over the
    /// limit. Stops reading one byte past it: an endless body costs 4 MiB, no more.
    async fn read_manifest_sized(&self, resp: Response, url: &Url) -> Result<Option<Bytes>> {
        let bytes = read_limited(
            resp,
            &Method::GET,
            url,
            MAX_MANIFEST_SIZE as usize,
            self.stall,
        )
        .await?;
        Ok((bytes.len() as u64 <= MAX_MANIFEST_SIZE).then_some(bytes))
    }

    /// Every page of `GET /v2/<repo>/referrers/<subject>`; `None` when the registry answers
    /// 404 (it has no referrers API: the spec forbids a 404 from one that has).
    async fn referrers_once(
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
        let mut next = Some(url);
        let mut pages = 0;
        while let Some(url) = next.take() {
            pages += 1;
            if pages > MAX_PAGES {
                return Err(RegistryError::Protocol {
                    url: url.to_string(),
                    reason: format!("more than {MAX_PAGES} pages: the registry's paging loops"),
                });
            }
            let mut headers = HeaderMap::new();
            headers.insert(
                header::ACCEPT,
                HeaderValue::from_static(manifest::OCI_INDEX),
            );
            let (resp, _permit) = self
                .send(Method::GET, &url, &Scope::pull(repo), headers, Body::Empty)
                .await?;
            // A registry without the API answers 404 (the spec forbids it of one with the
            // API); some proxies and older registries answer an unknown route otherwise.
            if pages == 1
                && matches!(
                    resp.status(),
                    StatusCode::NOT_FOUND
                        | StatusCode::METHOD_NOT_ALLOWED
                        | StatusCode::BAD_REQUEST
                        | StatusCode::NOT_ACCEPTABLE
                        | StatusCode::NOT_IMPLEMENTED
                )
            {
                tracing::debug!(registry = %self.name, status = %resp.status(), "no referrers API");
                let _ = self.referrers_api.set(false);
                return Ok(None);
            }
            if !resp.status().is_success() {
                return Err(self.status_error(&Method::GET, &url, resp).await);
            }
            let _ = self.referrers_api.set(true);
            next = next_page(&resp, &url)?;
            let body = self.read_manifest_sized(resp, &url).await?.ok_or_else(|| {
                RegistryError::Protocol {
                    url: url.to_string(),
                    reason: format!("a referrers page over the {MAX_MANIFEST_SIZE}-byte limit"),
                }
            })?;
            let page = manifest::referrer_list(&body).map_err(|e| RegistryError::Protocol {
                url: url.to_string(),
                reason: format!("not a referrers index: {e}"),
            })?;
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

    async fn blob_exists_once(&self, repo: &str, digest: &Digest) -> Result<bool> {
        let url = self.repo_url(repo, &format!("blobs/{digest}")).await?;
        let (resp, _permit) = self
            .send(
                Method::HEAD,
                &url,
                &Scope::pull(repo),
                HeaderMap::new(),
                Body::Empty,
            )
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.status_error(&Method::HEAD, &url, resp).await),
        }
    }

    async fn get_blob_once(&self, repo: &str, digest: &Digest, size: u64) -> Result<BlobStream> {
        let url = self.repo_url(repo, &format!("blobs/{digest}")).await?;
        let (resp, permit) = self
            .send(
                Method::GET,
                &url,
                &Scope::pull(repo),
                HeaderMap::new(),
                Body::Empty,
            )
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(RegistryError::NotFound {
                what: format!("blob {digest} in {}/{repo}", self.name),
                url: url.to_string(),
            });
        }
        if !resp.status().is_success() {
            return Err(self.status_error(&Method::GET, &url, resp).await);
        }
        // The permit travels with the stream: the connection is busy until the body is read.
        let body = watched_body(resp, &Method::GET, &url, self.stall).map(move |r| {
            let _hold = &permit;
            r
        });
        Ok(Box::pin(VerifyingStream::new(
            Box::pin(body),
            url.to_string(),
            digest.clone(),
            size,
        )))
    }

    async fn mount_blob_once(&self, repo: &str, digest: &Digest, from: &str) -> Result<bool> {
        // `from` goes into the token scope as well as the query.
        names::repository(from)?;
        let mut url = self.repo_url(repo, "blobs/uploads/").await?;
        url.query_pairs_mut()
            .append_pair("mount", digest.as_str())
            .append_pair("from", from);
        let (resp, _permit) = self
            .send(
                Method::POST,
                &url,
                &Scope::mount(repo, from),
                HeaderMap::new(),
                Body::Empty,
            )
            .await?;
        match resp.status() {
            StatusCode::CREATED => Ok(true),
            StatusCode::ACCEPTED => {
                // The registry opened an ordinary upload instead; close it so it does not
                // linger until the registry's upload purge.
                if let Ok(loc) = self.location(&url, &resp).await {
                    let _ = self
                        .send(
                            Method::DELETE,
                            &loc,
                            &Scope::push(repo),
                            HeaderMap::new(),
                            Body::Empty,
                        )
                        .await;
                }
                Ok(false)
            }
            _ => Err(self.status_error(&Method::POST, &url, resp).await),
        }
    }
}

#[async_trait]
impl Registry for HttpRegistry {
    fn name(&self) -> &str {
        &self.name
    }

    fn record_style(&self) -> super::RecordStyle {
        match self.flavor {
            Flavor::Distribution => super::RecordStyle::None,
            Flavor::Ghcr => super::RecordStyle::Versions,
            Flavor::Dockerhub => super::RecordStyle::Tags,
        }
    }

    fn stats(&self) -> Option<super::throttle::RegistryStats> {
        Some(self.throttle.stats())
    }

    async fn check_push(&self, repo: &str) -> Result<()> {
        let location = self.start_upload(repo).await?;
        // Cancel the session: the check leaves nothing behind.
        let _ = self
            .send(
                Method::DELETE,
                &location,
                &Scope::push(repo),
                HeaderMap::new(),
                Body::Empty,
            )
            .await;
        Ok(())
    }

    async fn check_delete(&self, repo: &str) -> Result<Option<String>> {
        match self.flavor {
            Flavor::Ghcr => {
                let (api, _, _) = self.packages_for(repo)?;
                api.check_delete_scopes().await?;
                Ok(Some(
                    "the token has read:packages and delete:packages".into(),
                ))
            }
            Flavor::Dockerhub => {
                let api = self.hub_api()?.clone();
                match self.hub_login(&api).await? {
                    Some(_) => Ok(Some("logged in to the Docker Hub API".into())),
                    None => Err(RegistryError::Credentials {
                        registry: self.name.clone(),
                        reason: CredentialsError::HubLogin,
                    }),
                }
            }
            Flavor::Distribution => Ok(None),
        }
    }

    async fn list_repositories(&self, prefix: &str) -> Result<Vec<String>> {
        if self.flavor == Flavor::Ghcr {
            let owner = prefix.split('/').next().unwrap_or("");
            let api = self
                .packages
                .as_ref()
                .ok_or_else(|| self.no_packages_api())?;
            let mut repos = self.retry("list packages", || api.packages(owner)).await?;
            repos.retain(|r| r.starts_with(prefix));
            repos.sort();
            return Ok(repos);
        }
        self.retry("list repositories", || self.list_repositories_once(prefix))
            .await
    }

    async fn list_tags(&self, repo: &str) -> Result<Vec<String>> {
        self.retry("list tags", || self.list_tags_once(repo)).await
    }

    async fn head_manifest(&self, repo: &str, reference: &str) -> Result<Option<ManifestHead>> {
        self.retry("HEAD manifest", || self.head_manifest_once(repo, reference))
            .await
    }

    async fn get_manifest(&self, repo: &str, reference: &str) -> Result<Manifest> {
        self.retry("GET manifest", || self.get_manifest_once(repo, reference))
            .await
    }

    async fn put_manifest(&self, repo: &str, reference: &str, m: &Manifest) -> Result<Pushed> {
        self.retry("PUT manifest", || {
            self.put_manifest_once(repo, reference, m)
        })
        .await
    }

    async fn supports_referrers(&self, repo: &str) -> Result<bool> {
        // Docker Hub's referrers API has listed incompletely (docker/hub-feedback#2372), and
        // every index read there to find children's referrers would count as a pull: on the
        // Hub, referrers are found by their tags (cosign's default there).
        if self.flavor == Flavor::Dockerhub {
            return Ok(false);
        }
        if let Some(known) = self.referrers_api.get() {
            return Ok(*known);
        }
        // A registry with the API answers 200 and an empty index even for a subject it does
        // not hold.
        let nothing = Digest::parse(&format!("sha256:{}", "0".repeat(64))).expect("digest");
        Ok(self.referrers(repo, &nothing, None).await?.is_some())
    }

    async fn referrers(
        &self,
        repo: &str,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Option<ReferrerList>> {
        self.retry("GET referrers", || {
            self.referrers_once(repo, subject, artifact_type)
        })
        .await
    }

    async fn blob_exists(&self, repo: &str, digest: &Digest) -> Result<bool> {
        self.retry("HEAD blob", || self.blob_exists_once(repo, digest))
            .await
    }

    async fn get_blob(&self, repo: &str, digest: &Digest, size: u64) -> Result<BlobStream> {
        self.retry("GET blob", || self.get_blob_once(repo, digest, size))
            .await
    }

    async fn put_blob(&self, repo: &str, upload: BlobUpload<'_>) -> Result<()> {
        self.upload(repo, upload).await
    }

    async fn delete_manifest(&self, repo: &str, digest: &Digest) -> Result<Option<String>> {
        match self.flavor {
            Flavor::Ghcr => return self.delete_version(repo, digest).await,
            Flavor::Dockerhub => return self.hub_delete(repo, digest).await,
            Flavor::Distribution => {}
        }
        self.retry("DELETE manifest", || {
            self.delete_manifest_once(repo, digest)
        })
        .await?;
        Ok(None)
    }

    async fn manifest_records(&self, repo: &str) -> Result<Option<Vec<ManifestRecord>>> {
        match self.flavor {
            Flavor::Distribution => return Ok(None),
            Flavor::Dockerhub => {
                let records = self
                    .retry("list Docker Hub tags", || self.hub_records(repo))
                    .await?;
                self.cache_records(repo, &records);
                return Ok(Some(records));
            }
            Flavor::Ghcr => {}
        }
        let (api, owner, package) = self.packages_for(repo)?;
        let versions = self
            .retry("list package versions", || api.versions(owner, package))
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
        self.cache_records(repo, &records);
        Ok(Some(records))
    }

    async fn mount_blob(&self, repo: &str, digest: &Digest, from: &str) -> Result<bool> {
        self.retry("mount blob", || self.mount_blob_once(repo, digest, from))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A registry that counts the connections made to it and answers none of them.
    async fn silent_registry() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = count.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(sock);
            }
        });
        (addr, count)
    }

    #[tokio::test]
    async fn no_request_is_built_from_a_name_outside_the_grammar() {
        let (addr, connections) = silent_registry().await;
        let settings = RegistrySettings {
            auth: crate::registry::config::AuthSettings::Anonymous,
            endpoint: Some(Url::parse(&format!("http://{addr}")).unwrap()),
            insecure: true,
            retries: 0,
            ..RegistrySettings::default()
        };
        let reg = HttpRegistry::new(&addr, &settings, None).unwrap();
        let good = Digest::sha256_of(b"x");
        let refused = |r: Result<(), RegistryError>, what: &str| match r {
            Err(RegistryError::InvalidName(e)) => e,
            other => panic!("{what}: {other:?}"),
        };
        for repo in ["org/../../escaped", "/abs", "Org/app", "a b", "a\u{1b}[2J"] {
            let e = refused(reg.list_tags(repo).await.map(|_| ()), repo);
            assert_eq!(e.kind, names::Kind::Repository);
            refused(reg.head_manifest(repo, "v1").await.map(|_| ()), repo);
            refused(reg.get_manifest(repo, "v1").await.map(|_| ()), repo);
            refused(reg.blob_exists(repo, &good).await.map(|_| ()), repo);
            refused(reg.get_blob(repo, &good, 1).await.map(|_| ()), repo);
            refused(reg.referrers(repo, &good, None).await.map(|_| ()), repo);
            refused(reg.check_push(repo).await, repo);
            refused(reg.delete_manifest(repo, &good).await.map(|_| ()), repo);
            refused(
                reg.mount_blob("org/ok", &good, repo).await.map(|_| ()),
                repo,
            );
            refused(
                reg.mount_blob(repo, &good, "org/ok").await.map(|_| ()),
                repo,
            );
        }
        for reference in ["../x", "..", "bad\ntag", "sha256:../../x", "-rm", ""] {
            let e = refused(
                reg.get_manifest("org/ok", reference).await.map(|_| ()),
                reference,
            );
            assert!(matches!(e.kind, names::Kind::Tag | names::Kind::Digest));
            refused(
                reg.head_manifest("org/ok", reference).await.map(|_| ()),
                reference,
            );
        }
        // Nothing above reached the registry.
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 0);
        // A valid name does (and fails there, which is not the point).
        assert!(reg.list_tags("org/ok").await.is_err());
        assert!(connections.load(std::sync::atomic::Ordering::SeqCst) > 0);
    }

    #[test]
    fn redirects_never_step_down_to_plain_http_unless_insecure_and_loops_end() {
        let u = |s: &str| Url::parse(s).unwrap();
        let (tls, plain) = (
            u("https://registry.test/v2/a/blobs/sha256:x"),
            u("http://cdn.test/blob"),
        );
        let refusal = redirect_refusal(&tls, &plain, 1, false).unwrap();
        assert!(
            refusal.contains("http://cdn.test") && refusal.contains("insecure"),
            "{refusal}"
        );
        assert_eq!(redirect_refusal(&tls, &plain, 1, true), None);
        assert_eq!(
            redirect_refusal(&tls, &u("https://cdn.test/b"), 1, false),
            None
        );
        assert_eq!(redirect_refusal(&plain, &plain, 1, false), None);
        assert!(redirect_refusal(&tls, &tls, MAX_REDIRECTS + 1, true)
            .unwrap()
            .contains("redirect loop"));
    }
}
