//! Where credentials come from: the plan's `auth` setting, or docker's own lookup
//! (`config.json` with `auths`, `credsStore`, `credHelpers` and identity tokens, then the
//! containers `auth.json`), as skopeo and crane do.
//!
//! Written here rather than with the `docker_credential` crate because ferry must also read a
//! config at an explicit path (a mounted Kubernetes `.dockerconfigjson`) and fall back to
//! `$REGISTRY_AUTH_FILE`, which that crate does not do. Secrets live in `SecretString`, whose
//! `Debug` prints `[REDACTED]`.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::config::AuthSettings;
use super::error::RegistryError;
use super::reasons::CredentialsError;
use crate::reference::{normalize_host, DOCKER_HUB};

/// Credentials for one registry.
#[derive(Clone, Default)]
pub enum Credential {
    #[default]
    Anonymous,
    Basic {
        username: String,
        password: SecretString,
    },
    /// An OAuth2 refresh token (docker's `identitytoken`), exchanged at the token realm.
    IdentityToken { token: SecretString },
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Anonymous => f.write_str("Anonymous"),
            Credential::Basic { username, .. } => {
                write!(
                    f,
                    "Basic {{ username: {username:?}, password: <redacted> }}"
                )
            }
            Credential::IdentityToken { .. } => f.write_str("IdentityToken(<redacted>)"),
        }
    }
}

impl Credential {
    /// `Basic base64(user:password)`, for registries and token realms that take it.
    pub fn basic_header(&self) -> Option<SecretString> {
        match self {
            Credential::Basic { username, password } => {
                let raw = format!("{username}:{}", password.expose_secret());
                let enc = base64::engine::general_purpose::STANDARD.encode(raw);
                Some(SecretString::from(format!("Basic {enc}")))
            }
            _ => None,
        }
    }

    pub fn is_anonymous(&self) -> bool {
        matches!(self, Credential::Anonymous)
    }

    /// The same credential (secrets compared too), to tell whether a re-read changed it.
    pub fn same(&self, other: &Credential) -> bool {
        match (self, other) {
            (Credential::Anonymous, Credential::Anonymous) => true,
            (
                Credential::Basic { username, password },
                Credential::Basic {
                    username: u,
                    password: p,
                },
            ) => username == u && password.expose_secret() == p.expose_secret(),
            (Credential::IdentityToken { token }, Credential::IdentityToken { token: t }) => {
                token.expose_secret() == t.expose_secret()
            }
            _ => false,
        }
    }
}

/// The scopes of `need` that a classic token with scopes `have` lacks (`write:packages`
/// includes `read:packages` in GitHub's scope hierarchy).
pub fn lacking(have: &[String], need: [&'static str; 2]) -> Vec<&'static str> {
    let has = |s: &str| {
        have.iter().any(|h| h == s)
            || (s == "read:packages" && have.iter().any(|h| h == "write:packages"))
    };
    need.into_iter().filter(|n| !has(n)).collect()
}

/// Resolve the credentials for `host` (as the plan names it, `docker.io` for Docker Hub).
pub fn resolve(host: &str, settings: &AuthSettings) -> Result<Credential, RegistryError> {
    let err = |reason: CredentialsError| RegistryError::Credentials {
        registry: host.to_string(),
        reason,
    };
    match settings {
        AuthSettings::Anonymous => Ok(Credential::Anonymous),
        AuthSettings::Basic {
            username,
            password_env,
        } => match std::env::var(password_env) {
            Ok(p) if !p.is_empty() => Ok(Credential::Basic {
                username: username.clone(),
                password: SecretString::from(p),
            }),
            _ => Err(err(CredentialsError::PasswordEnv {
                variable: password_env.clone(),
            })),
        },
        AuthSettings::PasswordFile { username, path } => Ok(Credential::Basic {
            username: username.clone(),
            password: read_password_file(path).map_err(err)?,
        }),
        AuthSettings::ConfigFile(path) => {
            let config = read_config(path).map_err(|e| err(plan_named(e)))?;
            Ok(config.lookup(host).map_err(err)?.unwrap_or_default())
        }
        AuthSettings::Default => {
            for path in default_config_paths() {
                if !path.exists() {
                    continue;
                }
                let config = read_config(&path).map_err(err)?;
                if let Some(c) = config.lookup(host).map_err(err)? {
                    return Ok(c);
                }
            }
            Ok(Credential::Anonymous)
        }
    }
}

/// The password in the file at `path`: its text without the line end a file usually has
/// (`echo`, `kubectl create secret --from-file` of such a file).
fn read_password_file(path: &Path) -> Result<SecretString, CredentialsError> {
    let text = std::fs::read_to_string(path).map_err(|source| CredentialsError::ReadPlanFile {
        field: "password_file",
        source,
    })?;
    let text = SecretString::from(text);
    let password = text.expose_secret().trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        return Err(CredentialsError::EmptyPasswordFile);
    }
    Ok(SecretString::from(password.to_string()))
}

/// An error reading the config file the plan names, said with the plan's field instead of
/// the path.
fn plan_named(e: CredentialsError) -> CredentialsError {
    match e {
        CredentialsError::ReadConfig { source, .. } => CredentialsError::ReadPlanFile {
            field: "config",
            source,
        },
        CredentialsError::ConfigSyntax { message, .. } => {
            CredentialsError::PlanConfigSyntax { message }
        }
        other => other,
    }
}

/// The files whose contents `settings` reads: a change to any of them (or one appearing)
/// means the credentials may have changed.
pub fn watched_paths(settings: &AuthSettings) -> Vec<PathBuf> {
    match settings {
        AuthSettings::PasswordFile { path, .. } | AuthSettings::ConfigFile(path) => {
            vec![path.clone()]
        }
        AuthSettings::Default => default_config_paths(),
        AuthSettings::Basic { .. } | AuthSettings::Anonymous => Vec::new(),
    }
}

/// docker's config first, then the containers `auth.json` (podman, skopeo, buildah).
fn default_config_paths() -> Vec<PathBuf> {
    let mut paths = Vec::new();
    match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) => paths.push(PathBuf::from(dir).join("config.json")),
        None => {
            if let Some(home) = std::env::var_os("HOME") {
                paths.push(PathBuf::from(home).join(".docker/config.json"));
            }
        }
    }
    if let Some(f) = std::env::var_os("REGISTRY_AUTH_FILE") {
        paths.push(PathBuf::from(f));
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
        paths.push(PathBuf::from(dir).join("containers/auth.json"));
    }
    paths
}

/// A docker `config.json`. Secrets are `SecretString` from the moment they are parsed, so the
/// derived `Debug` prints `[REDACTED]` for them.
#[derive(Debug, Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    #[serde(rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(rename = "credHelpers", default)]
    cred_helpers: HashMap<String, String>,
}

#[derive(Debug, Deserialize, Default)]
struct AuthEntry {
    /// base64 of `user:password`.
    auth: Option<SecretString>,
    username: Option<String>,
    password: Option<SecretString>,
    identitytoken: Option<SecretString>,
}

fn read_config(path: &Path) -> Result<ConfigFile, CredentialsError> {
    let text = std::fs::read_to_string(path).map_err(|source| CredentialsError::ReadConfig {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| CredentialsError::ConfigSyntax {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// The host a config key names: `https://index.docker.io/v1/` -> `docker.io`.
fn key_host(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = k.split('/').next().unwrap_or(k);
    normalize_host(host)
}

impl ConfigFile {
    fn lookup(&self, host: &str) -> Result<Option<Credential>, CredentialsError> {
        let host = normalize_host(host);
        // docker keys Docker Hub's helper entries by the legacy index URL.
        let server = if host == DOCKER_HUB {
            "https://index.docker.io/v1/".to_string()
        } else {
            host.clone()
        };
        if let Some(helper) = self
            .cred_helpers
            .iter()
            .find(|(k, _)| key_host(k) == host)
            .map(|(_, v)| v)
        {
            return run_helper(helper, &server);
        }
        if let Some(entry) = self
            .auths
            .iter()
            .find(|(k, _)| key_host(k) == host)
            .map(|(_, v)| v)
        {
            if let Some(c) = entry.credential(&host)? {
                return Ok(Some(c));
            }
        }
        match &self.creds_store {
            Some(store) if !store.is_empty() => run_helper(store, &server),
            _ => Ok(None),
        }
    }
}

impl AuthEntry {
    fn credential(&self, host: &str) -> Result<Option<Credential>, CredentialsError> {
        if let Some(t) = self
            .identitytoken
            .as_ref()
            .filter(|t| !t.expose_secret().is_empty())
        {
            return Ok(Some(Credential::IdentityToken { token: t.clone() }));
        }
        if let (Some(u), Some(p)) = (&self.username, &self.password) {
            return Ok(Some(Credential::Basic {
                username: u.clone(),
                password: p.clone(),
            }));
        }
        let Some(auth) = self.auth.as_ref().filter(|a| !a.expose_secret().is_empty()) else {
            return Ok(None);
        };
        let malformed = || CredentialsError::AuthEntry {
            host: host.to_string(),
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.expose_secret().trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(malformed)?;
        let (u, p) = decoded.split_once(':').ok_or_else(malformed)?;
        Ok(Some(Credential::Basic {
            username: u.to_string(),
            password: SecretString::from(p.to_string()),
        }))
    }
}

/// Run `docker-credential-NAME get` as docker does: server URL on stdin, JSON on stdout.
fn run_helper(name: &str, server: &str) -> Result<Option<Credential>, CredentialsError> {
    #[derive(Debug, Deserialize)]
    struct HelperOutput {
        #[serde(rename = "Username")]
        username: String,
        #[serde(rename = "Secret")]
        secret: SecretString,
    }
    let program = format!("docker-credential-{name}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| CredentialsError::HelperStart {
            program: program.clone(),
            source,
        })?;
    let io = |source| CredentialsError::HelperIo {
        program: program.clone(),
        source,
    };
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(server.as_bytes()).map_err(io)?;
    }
    let out = child.wait_with_output().map_err(io)?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stdout);
        // Helpers say "credentials not found in native keychain" when they have none.
        if msg.contains("not found") {
            return Ok(None);
        }
        return Err(CredentialsError::HelperFailed {
            program,
            status: out.status,
        });
    }
    let parsed: HelperOutput = serde_json::from_slice(&out.stdout)
        .map_err(|_| CredentialsError::HelperAnswer { program })?;
    if parsed.username == "<token>" {
        Ok(Some(Credential::IdentityToken {
            token: parsed.secret,
        }))
    } else {
        Ok(Some(Credential::Basic {
            username: parsed.username,
            password: parsed.secret,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> ConfigFile {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn looks_up_auths_by_normalised_host() {
        let c = config(
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dXNlcjpzM2NyZXQ="},"ghcr.io":{"username":"bot","password":"pw"},"https://quay.io":{"identitytoken":"idt"}}}"#,
        );
        match c.lookup("docker.io").unwrap().unwrap() {
            Credential::Basic { username, password } => {
                assert_eq!(username, "user");
                assert_eq!(password.expose_secret(), "s3cret");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            c.lookup("ghcr.io").unwrap(),
            Some(Credential::Basic { .. })
        ));
        assert!(matches!(
            c.lookup("quay.io").unwrap(),
            Some(Credential::IdentityToken { .. })
        ));
        assert!(c.lookup("example.com").unwrap().is_none());
    }

    #[test]
    fn debug_never_shows_secrets() {
        let c = Credential::Basic {
            username: "u".into(),
            password: SecretString::from("hunter2".to_string()),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        let t = Credential::IdentityToken {
            token: SecretString::from("hunter2".to_string()),
        };
        assert!(!format!("{t:?}").contains("hunter2"));
    }

    #[test]
    fn parsed_configs_keep_secrets_out_of_debug() {
        let basic = base64::engine::general_purpose::STANDARD.encode("user:cfg-canary");
        let c = config(&format!(
            r#"{{"auths":{{"a.io":{{"auth":"{basic}"}},"b.io":{{"username":"bot","password":"cfg-canary"}},"c.io":{{"identitytoken":"cfg-canary"}}}},"credHelpers":{{"d.io":"pass"}}}}"#
        ));
        let d = format!("{c:?}");
        assert!(!d.contains("canary") && !d.contains(&basic), "{d}");
        assert!(d.contains("bot") && d.contains("d.io"), "{d}");
        for host in ["a.io", "b.io", "c.io"] {
            let cred = c.lookup(host).unwrap().unwrap();
            assert!(!format!("{cred:?}").contains("canary"), "{cred:?}");
        }
    }

    #[test]
    fn bad_auth_entry_is_a_clear_error_without_the_value() {
        let c = config(r#"{"auths":{"ghcr.io":{"auth":"%%%notbase64"}}}"#);
        let e = c.lookup("ghcr.io").unwrap_err().to_string();
        assert!(e.contains("ghcr.io") && !e.contains("%%%"), "{e}");
    }

    #[test]
    fn missing_password_env_names_the_variable() {
        let e = resolve(
            "ghcr.io",
            &AuthSettings::Basic {
                username: "u".into(),
                password_env: "FERRY_TEST_SURELY_UNSET_VAR".into(),
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("FERRY_TEST_SURELY_UNSET_VAR"), "{e}");
    }
}
