//! Settings of one registry host, as the plan's `[registry."HOST"]` gives them (the plan
//! fills these in; the registry client reads them). Here, not in `plan`, so that the registry
//! layer needs nothing of plans: the dependency goes from `plan` to `registry`, never back.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

pub use super::transport::throttle::RateLimit;

/// Connections ferry opens to one registry host at most (regclient uses 3 requests per host;
/// distribution and GHCR comfortably serve more).
pub const DEFAULT_MAX_CONNECTIONS: usize = 16;

/// A response or upload that makes no progress for this long is abandoned and retried: a
/// stall detector, not a whole-transfer timeout (a 3 GB layer may take an hour).
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the credentials for a registry come from.
#[derive(Clone, PartialEq, Eq)]
pub enum AuthSettings {
    /// docker's lookup: `$DOCKER_CONFIG/config.json` or `~/.docker/config.json` (auths,
    /// credsStore, credHelpers, identity tokens), then `$REGISTRY_AUTH_FILE` or the containers
    /// `auth.json`, then anonymous.
    Default,
    /// A user name in the plan, the secret in an environment variable.
    Basic {
        username: String,
        password_env: String,
    },
    /// A user name in the plan, the secret in a file (a mounted Secret, a sidecar's token),
    /// read again when the file changes or the registry refuses it.
    PasswordFile { username: String, path: PathBuf },
    /// A docker `config.json` or Kubernetes `.dockerconfigjson` at this path, read again when
    /// it changes or the registry refuses what it gave.
    ConfigFile(PathBuf),
    /// No credentials, even if a docker config has some.
    Anonymous,
}

impl fmt::Debug for AuthSettings {
    // Only names of variables and files here, never a secret; still spelled out so a future
    // field cannot leak through a derived Debug.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthSettings::Default => f.write_str("Default"),
            AuthSettings::Basic {
                username,
                password_env,
            } => write!(
                f,
                "Basic {{ username: {username:?}, password_env: {password_env:?} }}"
            ),
            AuthSettings::PasswordFile { username, path } => write!(
                f,
                "PasswordFile {{ username: {username:?}, path: {path:?} }}"
            ),
            AuthSettings::ConfigFile(p) => write!(f, "ConfigFile({p:?})"),
            AuthSettings::Anonymous => f.write_str("Anonymous"),
        }
    }
}

/// Which API family a registry speaks beyond the distribution API, for what that API does
/// not do (listing a namespace, deleting).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// CNCF distribution and registries like it: catalog, DELETE by digest.
    Distribution,
    /// GHCR: the GitHub Packages REST API lists packages and deletes versions.
    Ghcr,
    /// Docker Hub: the Hub API lists namespaces.
    Dockerhub,
}

impl Flavor {
    /// The flavor a host has unless the plan says otherwise.
    pub fn for_host(host: &str) -> Flavor {
        match host {
            "ghcr.io" => Flavor::Ghcr,
            crate::reference::DOCKER_HUB => Flavor::Dockerhub,
            _ => Flavor::Distribution,
        }
    }
}

/// Settings of one registry host (`[registry."HOST"]`), defaulted when the plan has none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrySettings {
    pub auth: AuthSettings,
    /// Plain HTTP or an unverified certificate is allowed for this host.
    pub insecure: bool,
    /// Extra trusted roots for this host (a private CA), besides the system's; validated to
    /// hold PEM certificates when the plan is read.
    pub ca_file: Option<PathBuf>,
    /// Where to connect instead of `https://HOST` (a mirror, or a test registry).
    pub endpoint: Option<Url>,
    /// Base URL of the registry's management API (Docker Hub's for `docker.io`).
    pub api: Option<Url>,
    pub flavor: Flavor,
    pub max_connections: usize,
    /// Requests per second (and burst) to this host at most.
    pub rate_limit: Option<RateLimit>,
    /// Retries of a failed request or transfer (backoff 0.25 s doubling to 30 s, jittered).
    pub retries: u32,
    pub stall_timeout: Duration,
    /// The run lease at this registry (`lease = { … }`).
    pub lease: LeaseSettings,
}

/// Where the run lease at a registry lives and how long it lasts unless renewed
/// ([`super::lease`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseSettings {
    /// The lease's repository, whose last component is
    /// [`super::lease::REPOSITORY_NAME`]; `None`: beside the first repository the run deletes
    /// in.
    pub repository: Option<String>,
    pub expiry: Duration,
}

impl Default for LeaseSettings {
    fn default() -> Self {
        LeaseSettings {
            repository: None,
            expiry: super::lease::DEFAULT_EXPIRY,
        }
    }
}

impl RegistrySettings {
    /// The defaults for a host (its flavor follows from the host name).
    pub fn for_host(host: &str) -> Self {
        RegistrySettings {
            flavor: Flavor::for_host(host),
            ..RegistrySettings::default()
        }
    }
}

impl Default for RegistrySettings {
    fn default() -> Self {
        RegistrySettings {
            auth: AuthSettings::Default,
            insecure: false,
            ca_file: None,
            endpoint: None,
            api: None,
            flavor: Flavor::Distribution,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            rate_limit: None,
            retries: super::transport::retry::DEFAULT_RETRIES,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            lease: LeaseSettings::default(),
        }
    }
}
