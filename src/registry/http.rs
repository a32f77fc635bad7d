//! [`HttpRegistry`]: the distribution API over reqwest (rustls).
//!
//! Every request goes through `HttpRegistry::send`, which takes a connection permit for the
//! host, attaches the right `Authorization` for the request's scope and answers a 401 by
//! following the registry's challenge once. Error bodies are decoded into the message users
//! read. Blob bodies are streamed both ways and verified while they flow.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::{stream, StreamExt, TryStreamExt};
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, Response, StatusCode};
use secrecy::ExposeSecret;
use serde::Deserialize;
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore};
use url::Url;

use super::auth::{Authenticator, Scope};
use super::credentials::{self, Credential};
use super::digest::{Digest, VerifyingStream};
use super::error::{RegistryError, Result};
use super::manifest::{self, MAX_MANIFEST_SIZE};
use super::{BlobStream, Manifest, ManifestHead, Registry};
use crate::plan::reference::DOCKER_HUB;
use crate::plan::RegistrySettings;

/// Blobs up to this size are uploaded in one streamed PUT; larger ones in chunks, so a
/// broken connection costs one chunk and the upload can resume.
pub const MONOLITHIC_MAX: u64 = 32 * 1024 * 1024;

/// Size of one PATCH of a chunked upload; at most one chunk per in-flight upload is held in
/// memory (Harbor uses 10 MiB).
pub const CHUNK_SIZE: usize = 16 * 1024 * 1024;

/// Page size asked of tag lists and catalogs (distribution caps catalogs at 1000).
const PAGE_SIZE: usize = 1000;

/// More pages than this means a registry that loops its `Link` header.
const MAX_PAGES: usize = 10_000;

/// Docker Hub's registry endpoint and repository API.
const DOCKER_HUB_REGISTRY: &str = "https://registry-1.docker.io";
const DOCKER_HUB_API: &str = "https://hub.docker.com";

const USER_AGENT: &str = concat!("ferry/", env!("CARGO_PKG_VERSION"));

/// A request body that can be sent again after a 401 (bytes), or only once (a stream).
enum Body {
    Empty,
    Bytes(Bytes),
    Stream(Option<reqwest::Body>),
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
    auth: Authenticator,
    credential: Credential,
    connections: Arc<Semaphore>,
}

impl HttpRegistry {
    /// A client for `host` as the plan configures it; resolves credentials now so a missing
    /// secret is reported before any work starts.
    pub fn new(host: &str, settings: &RegistrySettings) -> Result<HttpRegistry> {
        let credential = credentials::resolve(host, &settings.auth)?;
        let client = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .danger_accept_invalid_certs(settings.insecure)
            .connect_timeout(std::time::Duration::from_secs(30))
            .pool_max_idle_per_host(settings.max_connections)
            .build()
            .map_err(|e| RegistryError::transport("INIT", host, e))?;
        let configured = settings.endpoint.clone().or_else(|| {
            (host == DOCKER_HUB).then(|| Url::parse(DOCKER_HUB_REGISTRY).expect("static URL"))
        });
        let api = settings.api.clone().or_else(|| {
            (host == DOCKER_HUB).then(|| Url::parse(DOCKER_HUB_API).expect("static URL"))
        });
        Ok(HttpRegistry {
            name: host.to_string(),
            base: OnceCell::new(),
            configured,
            insecure: settings.insecure,
            api,
            client,
            auth: Authenticator::new(host, credential.clone(), settings.insecure),
            credential,
            connections: Arc::new(Semaphore::new(settings.max_connections)),
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

    /// Send one request with auth, retrying once after a 401 with the challenge's credentials.
    async fn send(
        &self,
        method: Method,
        url: &Url,
        scope: &Scope,
        headers: HeaderMap,
        mut body: Body,
    ) -> Result<(Response, OwnedSemaphorePermit)> {
        let permit = self
            .connections
            .clone()
            .acquire_owned()
            .await
            .expect("connection semaphore is never closed");
        let mut auth = self.auth.header(&self.client, scope).await?;
        let mut retried = false;
        loop {
            let mut req = self
                .client
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
            req = match &mut body {
                Body::Empty => req,
                Body::Bytes(b) => req.body(b.clone()),
                Body::Stream(s) => match s.take() {
                    Some(s) => req.body(s),
                    None => req,
                },
            };
            let resp = req
                .send()
                .await
                .map_err(|e| RegistryError::transport(&method, url, e))?;
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

    /// Turn an unsuccessful response into an error with the decoded body and a hint.
    async fn status_error(&self, method: &Method, url: &Url, resp: Response) -> RegistryError {
        let status = resp.status();
        let body = read_limited(resp, 64 * 1024).await.unwrap_or_default();
        let detail = decode_error_body(&body);
        let hint = match status.as_u16() {
            401 if self.credential.is_anonymous() => format!(
                "\n  hint: {} wants credentials and none are configured: add `auth` for it in the plan, or `docker login {}`",
                self.name, self.name
            ),
            401 => format!(
                "\n  hint: {} refused the configured credentials; check the user name and the token",
                self.name
            ),
            403 if self.name == "ghcr.io" => "\n  hint: GHCR needs a classic personal access token with read:packages to pull, write:packages to push and delete:packages to delete".into(),
            403 => format!(
                "\n  hint: the credentials for {} lack permission here (pull at a source, pull and push at a target)",
                self.name
            ),
            405 => "\n  hint: the registry does not allow this operation here (for deletes on distribution: storage.delete.enabled)".into(),
            429 => "\n  hint: the registry is rate limiting these requests".into(),
            _ => String::new(),
        };
        RegistryError::Status {
            method: method.to_string(),
            url: url.to_string(),
            status: status.as_u16(),
            detail,
            hint,
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

    /// Open an upload session (`POST …/blobs/uploads/`) and return its Location.
    async fn start_upload(&self, repo: &str) -> Result<Url> {
        let url = self.url(&format!("/v2/{repo}/blobs/uploads/")).await?;
        let (resp, _permit) = self
            .send(
                Method::POST,
                &url,
                &Scope::push(repo),
                HeaderMap::new(),
                Body::Empty,
            )
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(self.status_error(&Method::POST, &url, resp).await);
        }
        self.location(&url, &resp).await
    }

    /// Close an upload: `PUT <location>&digest=…` with the last bytes (or none).
    async fn finish_upload(
        &self,
        repo: &str,
        mut location: Url,
        digest: &Digest,
        body: Body,
        length: u64,
    ) -> Result<()> {
        location
            .query_pairs_mut()
            .append_pair("digest", digest.as_str());
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        let (resp, _permit) = self
            .send(Method::PUT, &location, &Scope::push(repo), headers, body)
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(self.status_error(&Method::PUT, &location, resp).await);
        }
        check_reported_digest(&location, &resp, digest)
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
            next = next_link(resp.headers(), &url).filter(|n| n != &url);
            let body = read_limited(resp, 64 * 1024 * 1024)
                .await
                .map_err(|e| RegistryError::transport("GET", &url, e))?;
            let parsed: T = serde_json::from_slice(&body).map_err(|e| RegistryError::Protocol {
                url: url.to_string(),
                reason: format!("unexpected answer: {e}"),
            })?;
            pages.push((parsed, url));
        }
        Ok(pages)
    }

    /// Docker Hub has no catalog: list a namespace's repositories through the Hub API.
    async fn hub_repositories(&self, api: &Url, prefix: &str) -> Result<Vec<String>> {
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

#[async_trait]
impl Registry for HttpRegistry {
    fn name(&self) -> &str {
        &self.name
    }

    async fn list_repositories(&self, prefix: &str) -> Result<Vec<String>> {
        if self.name == DOCKER_HUB {
            let api = self.api.clone().expect("docker.io always has an API URL");
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
            Err(RegistryError::Status { status, detail, .. })
                if matches!(status, 401 | 403 | 404 | 405) =>
            {
                return Err(RegistryError::NoCatalog {
                    registry: self.name.clone(),
                    reason: format!("GET /v2/_catalog answered {status}{detail}"),
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

    async fn list_tags(&self, repo: &str) -> Result<Vec<String>> {
        #[derive(Deserialize)]
        struct Tags {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let url = self
            .url(&format!("/v2/{repo}/tags/list?n={PAGE_SIZE}"))
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

    async fn head_manifest(&self, repo: &str, reference: &str) -> Result<Option<ManifestHead>> {
        let url = self
            .url(&format!("/v2/{repo}/manifests/{reference}"))
            .await?;
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

    async fn get_manifest(&self, repo: &str, reference: &str) -> Result<Manifest> {
        let url = self
            .url(&format!("/v2/{repo}/manifests/{reference}"))
            .await?;
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
                reason: format!("larger than the {MAX_MANIFEST_SIZE}-byte manifest limit"),
            });
        }
        let bytes = read_limited(resp, MAX_MANIFEST_SIZE as usize + 1)
            .await
            .map_err(|e| RegistryError::transport("GET", &url, e))?;
        if bytes.len() as u64 > MAX_MANIFEST_SIZE {
            return Err(RegistryError::InvalidManifest {
                url: url.to_string(),
                reason: format!("larger than the {MAX_MANIFEST_SIZE}-byte manifest limit"),
            });
        }
        let digest = verify_manifest_digest(&url, &bytes, reference, header_digest.as_deref())?;
        let media_type =
            manifest::media_type_of(&bytes, served_type.as_deref()).ok_or_else(|| {
                RegistryError::InvalidManifest {
                    url: url.to_string(),
                    reason: "no media type in the document or the Content-Type header".into(),
                }
            })?;
        Ok(Manifest {
            media_type,
            bytes,
            digest,
        })
    }

    async fn put_manifest(&self, repo: &str, reference: &str, m: &Manifest) -> Result<()> {
        let url = self
            .url(&format!("/v2/{repo}/manifests/{reference}"))
            .await?;
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(&m.media_type).map_err(|_| RegistryError::InvalidManifest {
                url: url.to_string(),
                reason: format!("media type {:?} is not a valid header value", m.media_type),
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
        check_reported_digest(&url, &resp, &m.digest)
    }

    async fn blob_exists(&self, repo: &str, digest: &Digest) -> Result<bool> {
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}")).await?;
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

    async fn get_blob(&self, repo: &str, digest: &Digest, size: u64) -> Result<BlobStream> {
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}")).await?;
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
        let err_url = url.to_string();
        // The permit travels with the stream: the connection is busy until the body is read.
        let body = resp.bytes_stream().map(move |r| {
            let _hold = &permit;
            r.map_err(|e| RegistryError::transport("GET", &err_url, e))
        });
        Ok(Box::pin(VerifyingStream::new(
            Box::pin(body),
            url.to_string(),
            digest.clone(),
            size,
        )))
    }

    async fn put_blob(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
        data: BlobStream,
    ) -> Result<()> {
        let location = self.start_upload(repo).await?;
        if size <= MONOLITHIC_MAX {
            let body = Body::Stream(Some(reqwest::Body::wrap_stream(data)));
            return self.finish_upload(repo, location, digest, body, size).await;
        }
        self.put_chunked(repo, digest, size, location, data).await
    }

    async fn mount_blob(&self, repo: &str, digest: &Digest, from: &str) -> Result<bool> {
        let mut url = self.url(&format!("/v2/{repo}/blobs/uploads/")).await?;
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

impl HttpRegistry {
    /// Chunked upload: PATCH one chunk at a time. If the registry refuses the first PATCH,
    /// fall back to one streamed PUT of the chunk already read followed by the rest.
    async fn put_chunked(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
        mut location: Url,
        mut data: BlobStream,
    ) -> Result<()> {
        let mut offset: u64 = 0;
        let mut pending = BytesMut::new();
        loop {
            // Fill one chunk (or take what remains).
            while pending.len() < CHUNK_SIZE {
                match data.next().await {
                    Some(chunk) => pending.extend_from_slice(&chunk?),
                    None => break,
                }
            }
            if pending.is_empty() {
                break;
            }
            let take = pending.len().min(CHUNK_SIZE);
            let chunk = pending.split_to(take).freeze();
            let end = offset + chunk.len() as u64 - 1;
            let mut headers = HeaderMap::new();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            headers.insert(
                header::CONTENT_LENGTH,
                HeaderValue::from(chunk.len() as u64),
            );
            headers.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("{offset}-{end}")).expect("digits"),
            );
            let sent = self
                .send(
                    Method::PATCH,
                    &location,
                    &Scope::push(repo),
                    headers,
                    Body::Bytes(chunk.clone()),
                )
                .await;
            // A registry that does not take chunks may answer 4xx, or answer early and close
            // the connection while the chunk is still being written. Either way, on the first
            // chunk, fall back to one streamed PUT: the chunk is still in hand.
            let refused = match &sent {
                Ok((resp, _)) => {
                    matches!(resp.status().as_u16(), 400 | 404 | 405 | 413 | 416 | 501)
                }
                Err(RegistryError::Transport { .. }) => true,
                Err(_) => false,
            };
            if offset == 0 && refused {
                tracing::debug!(registry = %self.name, "chunked upload refused; falling back to one PUT");
                let rest = stream::iter([Ok(chunk), Ok(pending.split().freeze())]).chain(data);
                let location = self.start_upload(repo).await?;
                let body = Body::Stream(Some(reqwest::Body::wrap_stream(rest)));
                return self.finish_upload(repo, location, digest, body, size).await;
            }
            let (resp, _permit) = sent?;
            let status = resp.status();
            if status == StatusCode::ACCEPTED || status == StatusCode::NO_CONTENT {
                location = self.location(&location, &resp).await?;
                offset = end + 1;
                continue;
            }
            return Err(self.status_error(&Method::PATCH, &location, resp).await);
        }
        self.finish_upload(repo, location, digest, Body::Empty, 0)
            .await
    }
}

/// Check a manifest's bytes against the digest it was asked by, or the one the registry
/// reported; returns the digest.
fn verify_manifest_digest(
    url: &Url,
    bytes: &[u8],
    reference: &str,
    header_digest: Option<&str>,
) -> Result<Digest> {
    let mismatch = |expected: &Digest, actual: Digest| RegistryError::DigestMismatch {
        url: url.to_string(),
        expected: expected.to_string(),
        actual: actual.to_string(),
    };
    if let Some(expected) = Digest::parse(reference) {
        let actual = expected.recompute(bytes);
        return if actual == expected {
            Ok(expected)
        } else {
            Err(mismatch(&expected, actual))
        };
    }
    match header_digest {
        Some(h) => {
            let expected = Digest::parse(h).ok_or_else(|| RegistryError::InvalidManifest {
                url: url.to_string(),
                reason: format!("Docker-Content-Digest {h:?} is not a valid digest"),
            })?;
            let actual = expected.recompute(bytes);
            if actual == expected {
                Ok(expected)
            } else {
                Err(mismatch(&expected, actual))
            }
        }
        None => Ok(Digest::sha256_of(bytes)),
    }
}

/// A registry that reports a different digest for what it stored has stored something else.
fn check_reported_digest(url: &Url, resp: &Response, expected: &Digest) -> Result<()> {
    let reported = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok());
    match reported {
        Some(r) if r != expected.as_str() => Err(RegistryError::DigestMismatch {
            url: url.to_string(),
            expected: expected.to_string(),
            actual: r.to_string(),
        }),
        _ => Ok(()),
    }
}

/// Read a response body up to `limit` bytes (one more byte tells the caller it was over).
async fn read_limited(resp: Response, limit: usize) -> std::result::Result<Bytes, reqwest::Error> {
    let mut out = BytesMut::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.try_next().await? {
        let room = limit + 1 - out.len().min(limit + 1);
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() > limit {
            break;
        }
    }
    Ok(out.freeze())
}

/// The `rel="next"` target of a `Link` header, resolved against the request URL.
pub fn next_link(headers: &HeaderMap, url: &Url) -> Option<Url> {
    for value in headers.get_all(header::LINK) {
        let Ok(value) = value.to_str() else { continue };
        for part in value.split(',') {
            let mut pieces = part.split(';');
            let target = pieces.next()?.trim();
            let is_next = pieces.any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            });
            if is_next {
                let target = target.strip_prefix('<')?.strip_suffix('>')?;
                return url.join(target).ok();
            }
        }
    }
    None
}

/// `": CODE: message; CODE: message"` from a registry's `{"errors":[…]}` body, else a short
/// printable excerpt of the body, else nothing.
pub fn decode_error_body(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Envelope {
        errors: Vec<Entry>,
    }
    #[derive(Deserialize)]
    struct Entry {
        code: Option<String>,
        message: Option<String>,
    }
    if let Ok(env) = serde_json::from_slice::<Envelope>(body) {
        let parts: Vec<String> = env
            .errors
            .iter()
            .map(|e| match (&e.code, &e.message) {
                (Some(c), Some(m)) if !m.is_empty() => format!("{c}: {m}"),
                (Some(c), _) => c.clone(),
                (None, Some(m)) => m.clone(),
                (None, None) => String::new(),
            })
            .filter(|s| !s.is_empty())
            .collect();
        if !parts.is_empty() {
            return format!(": {}", parts.join("; "));
        }
    }
    // Docker Hub's and GitHub's REST APIs answer `{"message": …}` or `{"detail": …}`.
    #[derive(Deserialize)]
    struct Plain {
        message: Option<String>,
        detail: Option<String>,
    }
    if let Ok(Plain { message, detail }) = serde_json::from_slice::<Plain>(body) {
        if let Some(m) = message.or(detail).filter(|m| !m.is_empty()) {
            return format!(": {m}");
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if !text.is_empty()
        && text.len() <= 200
        && !text.contains('<')
        && text.chars().all(|c| !c.is_control())
    {
        return format!(": {text}");
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_registry_errors() {
        assert_eq!(
            decode_error_body(br#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#),
            ": DENIED: requested access to the resource is denied"
        );
        assert_eq!(decode_error_body(b"<html>nope</html>"), "");
        assert_eq!(
            decode_error_body(br#"{"message":"object not found","errinfo":{}}"#),
            ": object not found"
        );
        assert_eq!(
            decode_error_body(br#"{"detail":"Incorrect authentication credentials."}"#),
            ": Incorrect authentication credentials."
        );
        assert_eq!(decode_error_body(b"not found\n"), ": not found");
        assert_eq!(decode_error_body(b""), "");
    }

    #[test]
    fn follows_link_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::LINK,
            HeaderValue::from_static("</v2/_catalog?last=b&n=2>; rel=\"next\""),
        );
        let url = Url::parse("http://127.0.0.1:5000/v2/_catalog?n=2").unwrap();
        assert_eq!(
            next_link(&h, &url).unwrap().as_str(),
            "http://127.0.0.1:5000/v2/_catalog?last=b&n=2"
        );
        assert_eq!(next_link(&HeaderMap::new(), &url), None);
        let mut h = HeaderMap::new();
        h.insert(header::LINK, HeaderValue::from_static("<x>; rel=\"prev\""));
        assert_eq!(next_link(&h, &url), None);
    }

    #[test]
    fn manifest_digest_checks() {
        let url = Url::parse("http://r/v2/a/manifests/x").unwrap();
        let d = Digest::sha256_of(b"{}");
        assert_eq!(
            verify_manifest_digest(&url, b"{}", d.as_str(), None).unwrap(),
            d
        );
        assert!(verify_manifest_digest(&url, b"{ }", d.as_str(), None).is_err());
        assert!(verify_manifest_digest(&url, b"{ }", "latest", Some(d.as_str())).is_err());
        assert_eq!(
            verify_manifest_digest(&url, b"{}", "latest", None).unwrap(),
            d
        );
    }
}
