//! A real CNCF distribution registry (`/usr/bin/docker-registry`) per test,
//! on a loopback port with its own storage, so tests observe exactly what a
//! production registry would accept and store.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::fixtures::{Credentials, Pusher};
use super::tls::TestCa;
use super::token::TokenServer;

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
/// How long a registry may take to answer its first `GET /v2/`.
const STARTUP_DEADLINE: Duration = Duration::from_secs(10);
/// Attempts when the free port we picked was taken before the registry
/// bound it (the bind-then-drop port pick is inherently racy).
const PORT_ATTEMPTS: usize = 5;

/// Marks requests made by [`Registry::sync_log`]; [`Registry::requests`]
/// skips them so they never disturb counts.
const SYNC_MARKER: &str = "/harness-log-sync-";

static UNIQUE: AtomicU64 = AtomicU64::new(0);

pub enum Auth {
    None,
    Htpasswd { user: String, password: String },
    Token(Arc<TokenServer>),
}

/// One request as recorded in the registry's access log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedRequest {
    pub method: String,
    /// Request URI as sent, including any query string.
    pub uri: String,
    pub status: u16,
}

pub struct Registry {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// `http://127.0.0.1:PORT`, or `https://…` for a registry started with TLS.
    pub url: String,
    /// For the harness's own requests: trusts the test CA when the registry serves HTTPS.
    client: reqwest::Client,
    child: Child,
    storage: PathBuf,
    log_path: PathBuf,
    /// Changed by [`Registry::set_password`] while the registry runs.
    credentials: std::sync::Mutex<Credentials>,
    // Kept so the token server (and its cert file) outlive the registry.
    _token: Option<Arc<TokenServer>>,
    // Dropped last: holds config, storage and log.
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        // Errors only mean the process already exited, which is fine here.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    /// CPU seconds (user and system) the registry process has used so far, from
    /// `/proc/PID/stat` (benchmarks: what a phase cost the registry itself).
    pub fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command name (in parentheses, which may hold spaces): utime and
        // stime are the 12th and 13th of them, in clock ticks.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let ticks: u64 = rest
            .split_whitespace()
            .skip(11)
            .take(2)
            .filter_map(|f| f.parse::<u64>().ok())
            .sum();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        ticks as f64 / hz
    }

    /// A registry without authentication.
    pub async fn start() -> Registry {
        Registry::start_with(Auth::None).await
    }

    pub async fn start_with(auth: Auth) -> Registry {
        Registry::start_opts(auth, None, true).await
    }

    /// A registry without authentication whose deletes are disabled
    /// (`storage.delete.enabled: false`, distribution's default): a manifest DELETE
    /// answers 405 UNSUPPORTED.
    pub async fn start_without_deletes() -> Registry {
        Registry::start_opts(Auth::None, None, false).await
    }

    /// A registry serving HTTPS (`http.tls`) with a certificate for 127.0.0.1 from `ca`.
    pub async fn start_tls(auth: Auth, ca: &TestCa) -> Registry {
        Registry::start_opts(auth, Some(ca), true).await
    }

    async fn start_opts(auth: Auth, tls: Option<&TestCa>, deletes: bool) -> Registry {
        let dir = tempfile::TempDir::new().expect("create registry temp dir");
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).expect("create registry storage dir");

        let (auth_yaml, credentials, token) = match auth {
            Auth::None => (String::new(), Credentials::Anonymous, None),
            Auth::Htpasswd { user, password } => {
                let htpasswd = dir.path().join("htpasswd");
                write_htpasswd(&htpasswd, &user, &password);
                let yaml = format!(
                    "auth:\n  htpasswd:\n    realm: {}\n    path: {}\n",
                    yaml_str("ferry-test"),
                    yaml_str(&htpasswd.to_string_lossy()),
                );
                (yaml, Credentials::Basic { user, password }, None)
            }
            Auth::Token(server) => {
                let yaml = format!(
                    "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                    yaml_str(&server.realm),
                    yaml_str(&server.service),
                    yaml_str(&server.issuer),
                    yaml_str(&server.rootcertbundle.to_string_lossy()),
                );
                (yaml, Credentials::Minted(server.clone()), Some(server))
            }
        };

        let (client, scheme, tls_yaml) = match tls {
            None => (reqwest::Client::new(), "http", String::new()),
            Some(ca) => {
                let (crt, key) = ca.server_cert(dir.path());
                let yaml = format!(
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    yaml_str(&crt.to_string_lossy()),
                    yaml_str(&key.to_string_lossy()),
                );
                (ca.client(), "https", yaml)
            }
        };
        let config = dir.path().join("config.yml");
        let mut last_log = String::new();
        for attempt in 0..PORT_ATTEMPTS {
            let addr = format!("127.0.0.1:{}", free_port());
            std::fs::write(
                &config,
                config_yaml(&storage, &addr, &tls_yaml, &auth_yaml, deletes),
            )
            .expect("write registry config");

            // A fresh log per attempt so a failed attempt's noise never
            // shows up in log() or count_requests().
            let log_path = dir.path().join(format!("registry-{attempt}.log"));
            let log = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .expect("create registry log file");
            let mut child = Command::new(REGISTRY_BIN)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone registry log handle"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {REGISTRY_BIN}: {e}"));

            let url = format!("{scheme}://{addr}");
            if wait_ready(&client, &url, &mut child).await {
                return Registry {
                    addr,
                    url,
                    client,
                    child,
                    storage,
                    log_path,
                    credentials: std::sync::Mutex::new(credentials),
                    _token: token,
                    _dir: dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            last_log = std::fs::read_to_string(&log_path).unwrap_or_default();
            if !last_log.contains("address already in use") {
                panic!("docker-registry did not come up within {STARTUP_DEADLINE:?}; its log:\n{last_log}");
            }
        }
        panic!("docker-registry never got a free port in {PORT_ATTEMPTS} attempts; last log:\n{last_log}");
    }

    /// Everything the registry process wrote (stdout and stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).expect("read registry log")
    }

    /// Every request in the access log, oldest first. Access-log lines are
    /// written after the response, so call [`Registry::sync_log`] first when
    /// the exact set matters.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        let log = self.log();
        let mut requests: Vec<LoggedRequest> = log.lines().filter_map(parse_access_line).collect();
        if requests.is_empty() {
            // Fallback in case the combined access log is ever disabled:
            // the structured "response completed" line is written exactly
            // once per request that reached a handler.
            requests = log.lines().filter_map(parse_logrus_line).collect();
        }
        requests.retain(|r| !r.uri.contains(SYNC_MARKER));
        requests
    }

    /// Number of requests with `method` (case-insensitive) whose URI
    /// contains `path_contains`.
    pub fn count_requests(&self, method: &str, path_contains: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method.eq_ignore_ascii_case(method) && r.uri.contains(path_contains))
            .count()
    }

    /// Waits until every request answered so far is in the log: sends a
    /// marker request and waits for its access-log line (which the registry
    /// writes after the lines of requests it answered before).
    pub async fn sync_log(&self) {
        let marker = format!("{SYNC_MARKER}{}", UNIQUE.fetch_add(1, Ordering::Relaxed));
        // 404 outside /v2/, which needs no auth and is still access-logged.
        self.client
            .get(format!("{}{marker}", self.url))
            .send()
            .await
            .expect("send log sync request");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.log().contains(&marker) {
            assert!(
                Instant::now() < deadline,
                "registry never logged the sync request; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Distribution's garbage collection over this registry's storage
    /// (`docker-registry garbage-collect CONFIG`), as an operator runs it after deletions:
    /// every blob no manifest of any repository names goes (the manifests deleted included).
    /// Distribution wants no writes meanwhile (read-only mode, or the registry stopped); the
    /// tests that call this write nothing while it runs, and the registry keeps no blob
    /// cache (none is configured), so it sees the blobs gone at once. Returns its output.
    pub fn garbage_collect(&self) -> String {
        let out = Command::new(REGISTRY_BIN)
            .arg("garbage-collect")
            .arg(self._dir.path().join("config.yml"))
            .output()
            .unwrap_or_else(|e| panic!("spawn {REGISTRY_BIN} garbage-collect: {e}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "garbage-collect failed:\n{text}");
        text
    }

    pub fn storage_dir(&self) -> &Path {
        &self.storage
    }

    /// Give the htpasswd user another password while the registry runs: distribution reads
    /// its htpasswd file again when the file's modification time changes, so the next
    /// request with the old password is refused (401).
    pub fn set_password(&self, password: &str) {
        let mut credentials = self.credentials.lock().unwrap();
        let Credentials::Basic {
            user,
            password: old,
        } = &mut *credentials
        else {
            panic!("set_password needs a registry started with Auth::Htpasswd");
        };
        write_htpasswd(&self._dir.path().join("htpasswd"), user, password);
        *old = password.to_string();
    }

    /// The htpasswd user and password, for handing to the code under test.
    pub fn credentials(&self) -> Option<(String, String)> {
        match &*self.credentials.lock().unwrap() {
            Credentials::Basic { user, password } => Some((user.clone(), password.clone())),
            _ => None,
        }
    }

    /// A fixture client that can write to this registry: Basic auth for
    /// htpasswd, locally minted tokens for token auth (so fixture pushes do
    /// not show up in `TokenServer::requests()`).
    pub fn pusher(&self) -> Pusher {
        let credentials = self.credentials.lock().unwrap().clone();
        Pusher::with_client(&self.url, credentials, self.client.clone())
    }
}

/// Polls `GET /v2/` until the registry answers 200 or 401. False if the
/// process exited or the deadline passed.
async fn wait_ready(client: &reqwest::Client, url: &str, child: &mut Child) -> bool {
    let deadline = Instant::now() + STARTUP_DEADLINE;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if let Ok(resp) = client
            .get(format!("{url}/v2/"))
            .timeout(Duration::from_secs(1))
            .send()
            .await
        {
            if matches!(resp.status().as_u16(), 200 | 401) {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

/// Binds an ephemeral loopback port and releases it for the registry.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0 to find a free port")
        .local_addr()
        .expect("local addr of probe listener")
        .port()
}

/// Double-quoted YAML scalar (JSON strings are valid YAML), so temp paths
/// never need thought about escaping.
fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).expect("encode YAML string")
}

/// `tls_yaml`: lines under `http:` (indented two spaces), empty for plain HTTP.
fn config_yaml(
    storage: &Path,
    addr: &str,
    tls_yaml: &str,
    auth_yaml: &str,
    deletes: bool,
) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("system clock before 1970")
        .as_nanos();
    // The secret only signs upload state between requests of one registry.
    let secret = format!(
        "ferry-test-{}-{nanos}-{}",
        std::process::id(),
        UNIQUE.fetch_add(1, Ordering::Relaxed)
    );
    format!(
        "version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: {deletes}
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: {addr}
  secret: {secret}
{tls_yaml}# Foreign (non-distributable) layers are accepted only with URLs the registry allows.
validation:
  manifests:
    urls:
      allow:
        - '^https?://'
{auth_yaml}",
        storage = yaml_str(&storage.to_string_lossy()),
        addr = yaml_str(addr),
        secret = yaml_str(&secret),
    )
}

/// bcrypt entry via the real `htpasswd` tool (distribution only accepts
/// bcrypt), so the registry sees exactly what an operator would create.
fn write_htpasswd(path: &Path, user: &str, password: &str) {
    let out = Command::new("htpasswd")
        .args(["-Bbn", user, password])
        .output()
        .expect("run htpasswd (apache2-utils)");
    assert!(
        out.status.success(),
        "htpasswd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Written beside and renamed over, so a registry reading it while it changes sees the old
    // file or the new one, never half of one.
    let part = path.with_extension("part");
    std::fs::write(&part, &out.stdout).expect("write htpasswd file");
    std::fs::rename(&part, path).expect("put the htpasswd file in place");
}

/// Parses the combined-format access line distribution writes once per
/// request (auth failures included):
/// `127.0.0.1 - - [30/Nov/2026:02:42:02 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "curl/7.88.1"`.
/// Quotes inside the URI are written as `\"`.
fn parse_access_line(line: &str) -> Option<LoggedRequest> {
    if line.starts_with("time=") {
        return None;
    }
    let rest = &line[line.find("] \"")? + 3..];
    // The request line ends at the first unescaped quote.
    let bytes = rest.as_bytes();
    let mut end = None;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'"' => {
                end = Some(i);
                break;
            }
            _ => {}
        }
        i += 1;
    }
    let end = end?;
    let request_line = rest[..end].replace("\\\"", "\"");
    let mut parts = request_line.split(' ');
    let method = parts.next()?.to_string();
    let proto_start = request_line.rfind(" HTTP/")?;
    let uri = request_line.get(method.len() + 1..proto_start)?.to_string();
    let status = rest[end + 1..].split_whitespace().next()?.parse().ok()?;
    Some(LoggedRequest {
        method,
        uri,
        status,
    })
}

/// Parses the logrus `msg="response completed"` line (also `... with
/// error`), whose fields look like `http.request.method=GET
/// http.request.uri="/v2/x?y=z" http.response.status=200`.
fn parse_logrus_line(line: &str) -> Option<LoggedRequest> {
    if !line.contains("msg=\"response completed") {
        return None;
    }
    Some(LoggedRequest {
        method: logrus_field(line, "http.request.method")?,
        uri: logrus_field(line, "http.request.uri")?,
        status: logrus_field(line, "http.response.status")?.parse().ok()?,
    })
}

fn logrus_field(line: &str, key: &str) -> Option<String> {
    let needle = format!(" {key}=");
    let rest = &line[line.find(&needle)? + needle.len()..];
    if let Some(quoted) = rest.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = quoted.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => out.push(chars.next()?),
                '"' => return Some(out),
                c => out.push(c),
            }
        }
        None
    } else {
        Some(rest.split(' ').next()?.to_string())
    }
}

// Pins the log parsing to the exact lines distribution 2.8.2 writes, which
// count_requests() silently depends on.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_combined_access_line_with_escaped_quotes() {
        let line = r#"127.0.0.1 - - [30/Nov/2026:02:42:09 +0000] "POST /v2/foo/blobs/uploads/?x=a%20b&y=\"q\" HTTP/1.1" 202 0 "" "curl/7.88.1""#;
        assert_eq!(
            parse_access_line(line),
            Some(LoggedRequest {
                method: "POST".into(),
                uri: r#"/v2/foo/blobs/uploads/?x=a%20b&y="q""#.into(),
                status: 202,
            })
        );
        let logrus = r#"time="2026-11-30T02:42:02Z" level=info msg="response completed" http.request.method=GET http.request.uri=/v2/ http.response.status=200"#;
        assert_eq!(parse_access_line(logrus), None);
    }

    #[test]
    fn parses_logrus_response_completed_line() {
        let line = r#"time="2026-11-30T02:42:02.913Z" level=error msg="response completed with error" err.code="manifest unknown" http.request.host="127.0.0.1:15000" http.request.method=HEAD http.request.uri="/v2/foo/manifests/x?a=\"b\"" http.response.status=404 vars.name=foo"#;
        assert_eq!(
            parse_logrus_line(line),
            Some(LoggedRequest {
                method: "HEAD".into(),
                uri: r#"/v2/foo/manifests/x?a="b""#.into(),
                status: 404,
            })
        );
        let authorized = r#"time="x" level=info msg="authorized request" http.request.method=POST http.request.uri=/v2/"#;
        assert_eq!(parse_logrus_line(authorized), None);
    }
}
