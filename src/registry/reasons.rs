//! Why credentials, a CA file or a server's certificate cannot be used: reasons as data, each
//! wrapped by a [`RegistryError`](super::error::RegistryError) variant that names the registry
//! or URL. A leaf: it imports nothing from the rest of the registry module, so the modules
//! that return errors sit above it and `error.rs` does not point back up at them.

use std::path::PathBuf;

/// Why the credentials for a registry cannot be had or used: the reason as data. Shown inside
/// [`RegistryError::Credentials`](super::error::RegistryError::Credentials), which names the registry. Never holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("the plan takes the password from environment variable {variable}, which is not set or empty")]
    PasswordEnv { variable: String },
    /// A file the plan names: the field is said, not the path (a plan value is never echoed).
    #[error("cannot read the file that the plan's `auth.{field}` names: {source}")]
    ReadPlanFile {
        field: &'static str,
        source: std::io::Error,
    },
    #[error("the file that the plan's `auth.password_file` names is empty")]
    EmptyPasswordFile,
    #[error("the file that the plan's `auth.config` names is not a docker config.json: {message}")]
    PlanConfigSyntax { message: String },
    #[error("cannot read {}: {source}", path.display())]
    ReadConfig {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `message` is serde_json's, which names line and column but never echoes the content.
    #[error("{} is not a docker config.json: {message}", path.display())]
    ConfigSyntax { path: PathBuf, message: String },
    #[error("the `auth` entry for {host} is not base64 of user:password")]
    AuthEntry { host: String },
    #[error("cannot run credential helper {program}: {source}")]
    HelperStart {
        program: String,
        source: std::io::Error,
    },
    #[error("credential helper {program}: {source}")]
    HelperIo {
        program: String,
        source: std::io::Error,
    },
    #[error("credential helper {program} failed ({status})")]
    HelperFailed {
        program: String,
        status: std::process::ExitStatus,
    },
    #[error("credential helper {program} printed something that is not its JSON answer")]
    HelperAnswer { program: String },
    /// GHCR without a token for the GitHub Packages API.
    #[error("GHCR lists packages and deletes versions through the GitHub Packages API, which needs a classic personal access token: give `auth = {{ username = \"…\", password_env = \"…\" }}` for it")]
    PackagesToken,
    /// The token lacks scopes that deleting GHCR package versions needs.
    #[error("the token lacks the {} scope{} that deleting GHCR package versions needs (it has: {})", .missing.join(" and "), if .missing.len() > 1 { "s" } else { "" }, if .have.is_empty() { "none".to_string() } else { .have.join(", ") })]
    PackagesScopes {
        missing: Vec<&'static str>,
        have: Vec<String>,
    },
    /// The token lacks scopes that restoring GHCR package versions needs.
    #[error("the token lacks the {} scope{} that restoring GHCR package versions needs (it has: {})", .missing.join(" and "), if .missing.len() > 1 { "s" } else { "" }, if .have.is_empty() { "none".to_string() } else { .have.join(", ") })]
    RestoreScopes {
        missing: Vec<&'static str>,
        have: Vec<String>,
    },
    /// Deleting on Docker Hub without a login.
    #[error("deleting on Docker Hub needs a login: give `auth = {{ username = \"…\", password_env = \"…\" }}` with a personal access token that may delete")]
    HubLogin,
}

/// Why a CA file cannot be used: the reason as data. [`root_certificates`](crate::registry::transport::tls::root_certificates)' reasons say what
/// is wrong with the contents and name no path (the plan's message names the field);
/// [`read_root_certificates`](crate::registry::transport::tls::read_root_certificates) adds the file.
#[derive(Debug, thiserror::Error)]
pub enum CaFileError {
    /// Certificate `n` (1-based) is not valid PEM.
    #[error("certificate {n} is not valid PEM: {message}")]
    Pem { n: usize, message: String },
    /// Certificate `n` is PEM, but not an X.509 certificate rustls can trust.
    #[error("certificate {n} is not a usable X.509 certificate: {message}")]
    NotX509 { n: usize, message: String },
    #[error("certificate {n} is not usable: {message}")]
    Unusable { n: usize, message: String },
    #[error("holds no PEM certificate (a `-----BEGIN CERTIFICATE-----` block); a DER file converts with `openssl x509 -inform der -in CA.der -out CA.pem`")]
    NoCertificate,
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// What is wrong with the contents of the file at `path`.
    #[error("{}: {reason}", path.display())]
    InFile {
        path: PathBuf,
        reason: Box<CaFileError>,
    },
}

/// Why the server's certificate was refused, if that is why `e` failed (rather than a refused
/// connection, a reset or a timeout, which may pass and are retried).
pub fn certificate_problem(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        // rustls' error arrives wrapped in io::Errors (two, from tokio-rustls and the
        // connector), whose `source()` skips the wrapped error itself: look inside each
        // with `get_ref`.
        let mut inner: &(dyn std::error::Error + 'static) = err;
        while let Some(wrapped) = inner
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            inner = wrapped;
        }
        let rustls_err = inner.downcast_ref::<rustls::Error>();
        if let Some(r) = rustls_err {
            return match r {
                rustls::Error::InvalidCertificate(c) => Some(match c {
                    rustls::CertificateError::UnknownIssuer => {
                        "it is signed by an unknown certificate authority".to_string()
                    }
                    rustls::CertificateError::NotValidForName
                    | rustls::CertificateError::NotValidForNameContext { .. } => {
                        "it is not valid for this host name".to_string()
                    }
                    rustls::CertificateError::Expired
                    | rustls::CertificateError::ExpiredContext { .. } => {
                        "it has expired".to_string()
                    }
                    _ => r.to_string(),
                }),
                _ => None,
            };
        }
        cur = err.source();
    }
    None
}
