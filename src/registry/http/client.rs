//! The [`HttpRegistry`] type: what it holds, how it is built from a registry's settings, and
//! the URLs its requests go to. Requests themselves are sent in `send.rs`; each resource has
//! its file (manifests, blobs and uploads, tags and the catalog, referrers).

use std::sync::Arc;
use std::time::Duration;

use reqwest::header;
use reqwest::{Method, Response};
use tokio::sync::{OnceCell, Semaphore};
use url::Url;

use crate::reference::{names, DOCKER_HUB};
use crate::registry::auth::Authenticator;
use crate::registry::config::Flavor;
use crate::registry::config::RegistrySettings;
use crate::registry::credential_source;
use crate::registry::error::{RegistryError, Result};
use crate::registry::error_body::Service;
use crate::registry::hosted::docker_hub::DockerHub;
use crate::registry::hosted::github_packages::Ghcr;
use crate::registry::hosted::{self, HostedApi};
use crate::registry::transport::body::status_error;
use crate::registry::transport::retry::RetryPolicy;
use crate::registry::transport::throttle::{Observer, Throttle};
use crate::registry::transport::tls;

/// Docker Hub's registry endpoint.
const DOCKER_HUB_REGISTRY: &str = "https://registry-1.docker.io";

const USER_AGENT: &str = concat!("ferry/", env!("CARGO_PKG_VERSION"));

/// Redirects followed for one request at most (a loop ends here).
pub(super) const MAX_REDIRECTS: usize = 10;

/// A registry spoken to over HTTP(S).
pub struct HttpRegistry {
    pub(super) name: String,
    /// The endpoint: configured, Docker Hub's, or decided at first use for insecure hosts.
    base: OnceCell<Url>,
    configured: Option<Url>,
    insecure: bool,
    pub(super) client: reqwest::Client,
    /// The same client without a read timeout, for requests with a body: reqwest's read
    /// timeout runs from the start of a request until its answer, which would cut off every
    /// upload slower than `stall`; `send` watches those bodies' progress instead.
    pub(super) upload_client: reqwest::Client,
    pub(super) auth: Authenticator,
    /// Whether credentials are configured (for the hints of error answers).
    credentials: bool,
    pub(super) connections: Arc<Semaphore>,
    pub(super) throttle: Arc<Throttle>,
    pub(super) retry: RetryPolicy,
    /// The registry's own API (GHCR's, Docker Hub's), for what the distribution API does not
    /// do; chosen once, from the flavor.
    pub(super) hosted: Option<Box<dyn HostedApi>>,
    pub(super) stall: Duration,
    /// Whether the registry answers the OCI 1.1 referrers API, once a request told.
    pub(super) referrers_api: std::sync::OnceLock<bool>,
    /// Held while the referrers API is probed, so concurrent callers wait for that one
    /// answer instead of each sending a probe.
    pub(super) referrers_probe: tokio::sync::Mutex<()>,
    /// Whether the registry takes a whole blob in one POST, once an upload told.
    pub(super) single_post: super::single_post::SinglePost,
    /// Sessions declined mounts opened, for the uploads that follow them.
    pub(super) declined: super::single_post::Declined,
}

/// Why a redirect from `from` to `to` (after `hops` earlier ones) is not followed: a loop, or
/// a step down from HTTPS to plain HTTP, which only a registry marked `insecure` may take.
pub(super) fn redirect_refusal(
    from: &Url,
    to: &Url,
    hops: usize,
    insecure: bool,
) -> Option<String> {
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

/// The two clients of a registry: with a read timeout (requests without a body), and without
/// (uploads, watched by `send` instead). Both trust the plan's `ca_file` besides the system
/// roots, never instead of them: a mirror behind a private CA may still redirect blob
/// downloads to a public CDN.
fn clients(host: &str, settings: &RegistrySettings) -> Result<(reqwest::Client, reqwest::Client)> {
    let roots = match &settings.ca_file {
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
            .danger_accept_invalid_certs(insecure)
            .connect_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(settings.max_connections);
        for cert in &roots {
            b = b.add_root_certificate(cert.clone());
        }
        b
    };
    let client = builder()
        // For requests without a body: the answer's headers must come within this time, and
        // each read of its body must make progress (bodies are also watched for too little
        // progress: `body::Watched`).
        .read_timeout(settings.stall_timeout)
        .build()
        .map_err(|e| RegistryError::transport("INIT", host, e))?;
    let upload_client = builder()
        .build()
        .map_err(|e| RegistryError::transport("INIT", host, e))?;
    Ok((client, upload_client))
}

impl HttpRegistry {
    /// A client for `host` as the plan configures it; resolves credentials now so a missing
    /// secret is reported before any work starts.
    pub fn new(
        host: &str,
        settings: &RegistrySettings,
        observer: Option<Observer>,
    ) -> Result<HttpRegistry> {
        let source = credential_source::for_settings(host, &settings.auth)?;
        let credential = source.current();
        let (client, upload_client) = clients(host, settings)?;
        let configured = settings.endpoint.clone().or_else(|| {
            (host == DOCKER_HUB).then(|| Url::parse(DOCKER_HUB_REGISTRY).expect("static URL"))
        });
        let throttle = Arc::new(Throttle::new(host, settings.rate_limit, observer));
        let retry = RetryPolicy::new(host, throttle.clone(), settings.retries);
        let hosted = hosted_api(
            settings.flavor,
            hosted::Context {
                registry: host.to_string(),
                client: client.clone(),
                credentials: source.clone(),
                api: settings.api.clone(),
                throttle: throttle.clone(),
                retry: retry.clone(),
                stall: settings.stall_timeout,
            },
        );
        Ok(HttpRegistry {
            name: host.to_string(),
            base: OnceCell::new(),
            configured,
            insecure: settings.insecure,
            client,
            upload_client,
            credentials: !credential.is_anonymous(),
            auth: Authenticator::new(host, source, settings.insecure),
            connections: Arc::new(Semaphore::new(settings.max_connections)),
            hosted,
            throttle,
            retry,
            stall: settings.stall_timeout,
            referrers_api: std::sync::OnceLock::new(),
            referrers_probe: tokio::sync::Mutex::new(()),
            single_post: Default::default(),
            declined: Default::default(),
        })
    }

    /// The registry's base URL. For an insecure host without an endpoint, HTTPS (without
    /// verification) is tried first and plain HTTP used only when TLS cannot be spoken, as
    /// docker and skopeo do for insecure registries.
    pub(super) async fn base(&self) -> Result<&Url> {
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

    pub(super) async fn url(&self, path: &str) -> Result<Url> {
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
    pub(super) async fn repo_url(&self, repo: &str, rest: &str) -> Result<Url> {
        names::repository(repo)?;
        self.url(&format!("/v2/{repo}/{rest}")).await
    }

    /// `/v2/<repo>/manifests/<reference>`, the reference a valid tag or digest.
    pub(super) async fn manifest_url(&self, repo: &str, reference: &str) -> Result<Url> {
        names::reference(reference)?;
        self.repo_url(repo, &format!("manifests/{reference}")).await
    }

    /// Is `url` on the registry's own endpoint (host and port), where its credentials belong?
    pub(super) async fn is_own_host(&self, url: &Url) -> Result<bool> {
        let base = self.base().await?;
        Ok(url.host_str() == base.host_str()
            && url.port_or_known_default() == base.port_or_known_default())
    }

    /// Resolve an upload `Location` (often relative) against the base.
    pub(super) async fn location(&self, url: &Url, resp: &Response) -> Result<Url> {
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

    /// Turn an unsuccessful response into an error with the decoded body.
    pub(super) async fn status_error(
        &self,
        method: &Method,
        url: &Url,
        resp: Response,
    ) -> RegistryError {
        let service = Service::Registry {
            name: self.name.clone(),
            credentials: self.credentials,
        };
        status_error(resp, method, url, self.stall, service).await
    }
}

/// The hosted API a registry of this flavor has, if any: chosen once, when the client is
/// built.
fn hosted_api(flavor: Flavor, cx: hosted::Context) -> Option<Box<dyn HostedApi>> {
    match flavor {
        Flavor::Distribution => None,
        Flavor::Ghcr => Some(Box::new(Ghcr::new(cx))),
        Flavor::Dockerhub => Some(Box::new(DockerHub::new(cx))),
    }
}
