//! Credentials as a source that can be asked again, not a value read once: a password file a
//! sidecar rotates, a docker config a Kubernetes Secret updates in place, a credential helper
//! that hands out short-lived tokens. [`CredentialSource`] is the seam; native cloud
//! credentials (ECR, GAR, a GitHub App) plug in as further implementations.
//!
//! Files are watched by path: a use compares the path's metadata (followed through symlinks:
//! modification time, length, inode, device) with what was read, so a Secret swapped in by
//! renaming its `..data` symlink is seen as a change although no file was written. It looks at
//! most once a second ([`LOOK_EVERY`]): a run sends thousands of requests a second, a Secret
//! changes once an hour. A refusal (a 401, or a token service refusing) reads the source again
//! at once whatever the files look like, which also runs credential helpers again.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::config::AuthSettings;
use super::credentials::{self, Credential};
use super::error::RegistryError;

/// How often the files behind a credential are looked at (a `stat` of each), however many
/// requests use it: a change is seen at most this late, unless a refusal reads them first.
pub const LOOK_EVERY: Duration = Duration::from_secs(1);

/// Where a registry's credentials come from, asked before each use and again after a refusal.
/// Its `Debug` never shows a secret.
pub trait CredentialSource: Send + Sync + fmt::Debug {
    /// The credential to use now. Cheap: it reads again only when the source says it changed
    /// (for files, a `stat` of each, at most once per [`LOOK_EVERY`]). When a changed file
    /// cannot be read (a sidecar halfway through writing it), the last credential read stays
    /// in use and the next look tries again.
    fn current(&self) -> Credential;

    /// Read the source again after the registry refused the credential: files re-read,
    /// helpers run again. The error says why the source cannot be read now.
    fn refresh(&self) -> Result<Credential, RegistryError>;
}

/// The source for `host` as the plan's `auth` gives it, read once now so that a missing
/// secret is reported before any work starts.
pub fn for_settings(
    host: &str,
    settings: &AuthSettings,
) -> Result<Arc<dyn CredentialSource>, RegistryError> {
    let paths = credentials::watched_paths(settings);
    if paths.is_empty() {
        // An environment variable or no credentials: nothing outside the process changes them.
        return Ok(Arc::new(Fixed(credentials::resolve(host, settings)?)));
    }
    Ok(Arc::new(Files::open(host, settings, paths)?))
}

/// A credential that never changes.
#[derive(Debug)]
pub struct Fixed(pub Credential);

impl CredentialSource for Fixed {
    fn current(&self) -> Credential {
        self.0.clone()
    }
    fn refresh(&self) -> Result<Credential, RegistryError> {
        Ok(self.0.clone())
    }
}

/// What identifies one version of a file at a path: `None` when the path has no file.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Fingerprint {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
    device: u64,
}

fn fingerprints(paths: &[PathBuf]) -> Vec<Option<Fingerprint>> {
    use std::os::unix::fs::MetadataExt;
    paths
        .iter()
        .map(|p| {
            // `metadata` follows symlinks: the file the path leads to now.
            std::fs::metadata(p).ok().map(|m| Fingerprint {
                modified: m.modified().ok(),
                len: m.len(),
                inode: m.ino(),
                device: m.dev(),
            })
        })
        .collect()
}

/// Credentials read from files (a password file, a docker config, docker's lookup paths).
/// `Debug` is derived: the credential's own `Debug` redacts its secret.
#[derive(Debug)]
struct Files {
    host: String,
    settings: AuthSettings,
    paths: Vec<PathBuf>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The files as they were when `credential` was read from them.
    seen: Vec<Option<Fingerprint>>,
    credential: Credential,
    /// When the files were last looked at (read, or compared with `seen`).
    looked: Instant,
}

impl State {
    /// The files at `paths` and the credential they give, read at `now`.
    fn read(
        host: &str,
        settings: &AuthSettings,
        paths: &[PathBuf],
        now: Instant,
    ) -> Result<State, RegistryError> {
        let seen = fingerprints(paths);
        let credential = credentials::resolve(host, settings)?;
        Ok(State {
            seen,
            credential,
            looked: now,
        })
    }
}

impl Files {
    /// The files at `paths`, read now.
    fn open(
        host: &str,
        settings: &AuthSettings,
        paths: Vec<PathBuf>,
    ) -> Result<Files, RegistryError> {
        let state = State::read(host, settings, &paths, Instant::now())?;
        Ok(Files {
            host: host.to_string(),
            settings: settings.clone(),
            paths,
            state: Mutex::new(state),
        })
    }

    /// Read the files at `now`; on success the result is what `current` gives from then on.
    fn read(&self, now: Instant) -> Result<Credential, RegistryError> {
        let state = State::read(&self.host, &self.settings, &self.paths, now)?;
        let credential = state.credential.clone();
        *self.state.lock().expect("credential state lock") = state;
        Ok(credential)
    }

    /// [`CredentialSource::current`] with the clock read at `now` (a parameter, for tests).
    fn current_at(&self, now: Instant) -> Credential {
        {
            let mut state = self.state.lock().expect("credential state lock");
            if now.saturating_duration_since(state.looked) < LOOK_EVERY {
                return state.credential.clone();
            }
            // Counted as a look even when what changed cannot be read yet: the next try is a
            // look later, not at the next request.
            state.looked = now;
            if state.seen == fingerprints(&self.paths) {
                return state.credential.clone();
            }
        }
        match self.read(now) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(registry = %self.host, error = %e, "a credential file changed and cannot be read yet; keeping the last credential");
                self.state
                    .lock()
                    .expect("credential state lock")
                    .credential
                    .clone()
            }
        }
    }
}

impl CredentialSource for Files {
    fn current(&self) -> Credential {
        self.current_at(Instant::now())
    }

    fn refresh(&self) -> Result<Credential, RegistryError> {
        self.read(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    fn password(c: &Credential) -> String {
        match c {
            Credential::Basic { password, .. } => password.expose_secret().to_string(),
            other => panic!("{other:?}"),
        }
    }

    /// The files `settings` names, read now (the source `for_settings` gives, as its type).
    fn files(settings: &AuthSettings) -> Files {
        Files::open("r.example", settings, credentials::watched_paths(settings)).unwrap()
    }

    /// `n` looks after `start`, each past the interval.
    fn look(start: Instant, n: u32) -> Instant {
        start + (LOOK_EVERY + Duration::from_millis(1)) * n
    }

    /// A password file holding `first-canary`, and its source.
    fn first_canary() -> (tempfile::TempDir, PathBuf, Files) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("password");
        std::fs::write(&path, "first-canary\n").unwrap();
        let settings = AuthSettings::PasswordFile {
            username: "u".into(),
            path: path.clone(),
        };
        let source = files(&settings);
        (dir, path, source)
    }

    #[test]
    fn a_password_file_is_read_again_when_it_changes() {
        let (dir, path, source) = first_canary();
        let start = Instant::now();
        assert_eq!(password(&source.current()), "first-canary");
        std::fs::write(&path, "second-canary-longer\r\n").unwrap();
        assert_eq!(
            password(&source.current_at(look(start, 1))),
            "second-canary-longer"
        );
        // Halfway through a rewrite (empty) or gone: the last password stays in use, and a
        // refresh says why the file cannot be read, naming the field and not the path.
        std::fs::write(&path, "").unwrap();
        assert_eq!(
            password(&source.current_at(look(start, 2))),
            "second-canary-longer"
        );
        let e = source.refresh().unwrap_err().to_string();
        assert!(
            e.contains("`auth.password_file`") && e.contains("empty"),
            "{e}"
        );
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            password(&source.current_at(look(start, 3))),
            "second-canary-longer"
        );
        let e = source.refresh().unwrap_err().to_string();
        assert!(
            e.contains("r.example") && e.contains("`auth.password_file`"),
            "{e}"
        );
        assert!(!e.contains(&dir.path().display().to_string()), "{e}");
        assert!(!format!("{source:?}").contains("canary"), "{source:?}");
    }

    /// Issue 23, item 3b: the files are looked at at most once a second, not at every
    /// request; a refusal reads them at once, and what it read is used from then on.
    #[test]
    fn files_are_looked_at_once_a_second_and_read_at_once_after_a_refusal() {
        let (_dir, path, source) = first_canary();
        let start = Instant::now();
        std::fs::write(&path, "second-canary-longer\n").unwrap();
        // Within the second since the files were read: not looked at.
        let soon = start + LOOK_EVERY / 2;
        assert_eq!(password(&source.current_at(soon)), "first-canary");
        // A second on: looked at, the change read; then not again for a second.
        let first = look(start, 1);
        assert_eq!(password(&source.current_at(first)), "second-canary-longer");
        std::fs::write(&path, "third-canary\n").unwrap();
        let within = first + LOOK_EVERY - Duration::from_millis(1);
        assert_eq!(password(&source.current_at(within)), "second-canary-longer");
        assert_eq!(password(&source.current_at(look(first, 1))), "third-canary");
        // A refusal reads the file whenever it comes, and its credential is the current one.
        std::fs::write(&path, "fourth-canary\n").unwrap();
        assert_eq!(password(&source.refresh().unwrap()), "fourth-canary");
        assert_eq!(password(&source.current()), "fourth-canary");
        // `for_settings` gives this source, with the same interval.
        std::fs::write(&path, "first-canary\n").unwrap();
        let source = for_settings("r.example", &source.settings).unwrap();
        std::fs::write(&path, "second-canary-longer\n").unwrap();
        assert_eq!(password(&source.current()), "first-canary");
        assert_eq!(password(&source.refresh().unwrap()), "second-canary-longer");
    }

    /// A Kubernetes Secret volume: `config.json -> ..data/config.json`, `..data ->
    /// ..VERSION`; an update renames a new `..data` symlink over the old one.
    #[test]
    fn a_secret_swapped_in_by_symlink_is_seen() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let config = |pw: &str| {
            format!(r#"{{"auths":{{"r.example":{{"username":"u","password":"{pw}"}}}}}}"#)
        };
        for (version, pw) in [("..v1", "one-canary"), ("..v2", "two-canary")] {
            std::fs::create_dir(dir.path().join(version)).unwrap();
            std::fs::write(dir.path().join(version).join("config.json"), config(pw)).unwrap();
        }
        symlink("..v1", dir.path().join("..data")).unwrap();
        symlink("..data/config.json", dir.path().join("config.json")).unwrap();
        let settings = AuthSettings::ConfigFile(dir.path().join("config.json"));
        let source = files(&settings);
        let start = Instant::now();
        assert_eq!(password(&source.current()), "one-canary");
        symlink("..v2", dir.path().join("..data.tmp")).unwrap();
        std::fs::rename(dir.path().join("..data.tmp"), dir.path().join("..data")).unwrap();
        assert_eq!(password(&source.current_at(look(start, 1))), "two-canary");
    }

    #[test]
    fn a_config_the_plan_names_is_refused_by_field_not_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.json");
        let e = for_settings("r.example", &AuthSettings::ConfigFile(path))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`auth.config`"), "{e}");
        assert!(!e.contains("missing.json"), "{e}");
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{\"auths\": canary}").unwrap();
        let e = for_settings("r.example", &AuthSettings::ConfigFile(bad))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`auth.config`") && !e.contains("bad.json"),
            "{e}"
        );
        assert!(!e.contains("canary"), "{e}");
    }

    /// What a token service asked with Basic credentials answers: a token while the password
    /// is the one it takes, else 401. Records each status it gave.
    async fn token_service(
        takes: Arc<Mutex<String>>,
        gave: Arc<Mutex<Vec<u16>>>,
    ) -> std::net::SocketAddr {
        use axum::http::{HeaderMap, StatusCode};
        use base64::Engine;
        let app = axum::Router::new().route(
            "/token",
            axum::routing::get(move |headers: HeaderMap| async move {
                let basic = base64::engine::general_purpose::STANDARD
                    .encode(format!("u:{}", takes.lock().unwrap()));
                let sent = headers.get("authorization").and_then(|v| v.to_str().ok());
                let ok = sent == Some(format!("Basic {basic}").as_str());
                let status = if ok {
                    StatusCode::OK
                } else {
                    StatusCode::UNAUTHORIZED
                };
                gave.lock().unwrap().push(status.as_u16());
                let body = if ok {
                    r#"{"token":"tok","expires_in":300}"#
                } else {
                    ""
                };
                (status, body)
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    }

    /// Issue 23, item 4: a token service that refuses the credential makes the source be read
    /// again, and asked once more only when that gives another credential (no loop).
    #[tokio::test]
    async fn a_token_service_refusal_reads_the_source_again_once() {
        use crate::registry::auth::{Authenticator, Scope};
        let takes = Arc::new(Mutex::new("old-canary".to_string()));
        let gave = Arc::new(Mutex::new(Vec::new()));
        let addr = token_service(takes.clone(), gave.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("password");
        std::fs::write(&path, "old-canary\n").unwrap();
        let settings = AuthSettings::PasswordFile {
            username: "u".into(),
            path: path.clone(),
        };
        let auth = Authenticator::new(
            "r.example",
            for_settings("r.example", &settings).unwrap(),
            true,
        );
        let client = reqwest::Client::new();
        let challenge = format!("Bearer realm=\"http://{addr}/token\",service=\"r\"");
        let learned = auth
            .unauthorized(&client, Some(&challenge), &Scope::pull("a"), None, false)
            .await
            .unwrap();
        assert!(learned.is_some());
        assert_eq!(*gave.lock().unwrap(), [200]);

        // The password changes; the file is rewritten so that its metadata looks the same (in
        // place, same length, time put back): only the refusal can tell.
        let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
        *takes.lock().unwrap() = "new-canary".into();
        std::fs::write(&path, "new-canary\n").unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(modified).unwrap();
        let header = auth.header(&client, &Scope::pull("b")).await.unwrap();
        assert!(header.is_some());
        assert_eq!(*gave.lock().unwrap(), [200, 401, 200]);

        // Refused again with what the file says now: the refusal is the answer, asked once.
        *takes.lock().unwrap() = "third-canary".into();
        let e = auth
            .header(&client, &Scope::pull("c"))
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(*gave.lock().unwrap(), [200, 401, 200, 401]);
        assert!(e.contains("refused the configured credentials"), "{e}");
        assert!(!e.contains("canary"), "{e}");
    }
}
