//! A real Prometheus Pushgateway and a real Prometheus (Debian's `prometheus-pushgateway`
//! and `prometheus` packages, which scripts/test.sh installs), each on a free loopback port
//! with temporary storage: what `--metrics-push` sends to and what the shipped alert rules
//! run in. Both are stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::registry::free_port;

pub const PUSHGATEWAY_BIN: &str = "/usr/bin/prometheus-pushgateway";
pub const PROMETHEUS_BIN: &str = "/usr/bin/prometheus";
pub const PROMTOOL_BIN: &str = "/usr/bin/promtool";

/// How long either may take to answer `/-/ready` (Prometheus replays an empty WAL first).
const STARTUP_DEADLINE: Duration = Duration::from_secs(20);
/// Attempts when the port picked was taken before the server bound it.
const PORT_ATTEMPTS: usize = 5;

/// Whether the Prometheus binaries are installed; when not, says which test is skipped.
pub fn prometheus_installed(test: &str) -> bool {
    let missing: Vec<&str> = [PUSHGATEWAY_BIN, PROMETHEUS_BIN, PROMTOOL_BIN]
        .into_iter()
        .filter(|b| !Path::new(b).exists())
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "SKIPPED {test}: {} not installed (apt-get install prometheus prometheus-pushgateway; scripts/test.sh does)",
            missing.join(", ")
        );
    }
    missing.is_empty()
}

/// A running server process, killed on drop, with its log.
pub struct Server {
    pub addr: String,
    pub url: String,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        // Errors only mean the process already exited.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// What the server wrote so far, for assertion messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Start `bin` with `args(addr)` on a free port until it answers `/-/ready`.
    async fn start(
        bin: &str,
        dir: tempfile::TempDir,
        args: impl Fn(&str) -> Vec<String>,
    ) -> Server {
        let client = reqwest::Client::new();
        let mut last = String::new();
        for attempt in 0..PORT_ATTEMPTS {
            let addr = format!("127.0.0.1:{}", free_port());
            let log = dir.path().join(format!("server-{attempt}.log"));
            let file = std::fs::File::create(&log).expect("server log");
            let mut child = Command::new(bin)
                .args(args(&addr))
                .stdin(Stdio::null())
                .stdout(file.try_clone().expect("log handle"))
                .stderr(file)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
            let url = format!("http://{addr}");
            let deadline = Instant::now() + STARTUP_DEADLINE;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                let ready = client
                    .get(format!("{url}/-/ready"))
                    .timeout(Duration::from_secs(1))
                    .send()
                    .await;
                if ready.is_ok_and(|r| r.status().is_success()) {
                    return Server {
                        addr,
                        url,
                        child,
                        log,
                        _dir: dir,
                    };
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
            last = std::fs::read_to_string(&log).unwrap_or_default();
            if !last.contains("address already in use") {
                break;
            }
        }
        panic!("{bin} did not come up within {STARTUP_DEADLINE:?}; its log:\n{last}");
    }
}

/// A Pushgateway without persistence: it holds what was pushed while it runs.
pub async fn start_pushgateway() -> Server {
    let dir = tempfile::tempdir().expect("pushgateway dir");
    Server::start(PUSHGATEWAY_BIN, dir, |addr| {
        vec![format!("--web.listen-address={addr}")]
    })
    .await
}

/// A Prometheus that scrapes `pushgateway` every second (`honor_labels`, so the pushed `job`
/// and `plan` labels stay) and evaluates `rules` (a rules file) every second.
pub async fn start_prometheus(pushgateway: &Server, rules: &Path) -> Server {
    let dir = tempfile::tempdir().expect("prometheus dir");
    let config = dir.path().join("prometheus.yml");
    let yaml = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: pushgateway\n    honor_labels: true\n    static_configs:\n      - targets: [{}]\n",
        serde_json::to_string(&rules.to_string_lossy()).unwrap(),
        serde_json::to_string(&pushgateway.addr).unwrap(),
    );
    std::fs::write(&config, yaml).expect("write prometheus.yml");
    let tsdb = dir.path().join("data");
    Server::start(PROMETHEUS_BIN, dir, move |addr| {
        vec![
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", tsdb.display()),
            format!("--web.listen-address={addr}"),
        ]
    })
    .await
}

/// The alerts Prometheus holds now (`/api/v1/alerts`): (alert name, state) pairs, state
/// `pending` or `firing`.
pub async fn alerts(prometheus: &Server) -> Vec<(String, String)> {
    let v: serde_json::Value = reqwest::get(format!("{}/api/v1/alerts", prometheus.url))
        .await
        .expect("GET /api/v1/alerts")
        .json()
        .await
        .expect("alerts JSON");
    v["data"]["alerts"]
        .as_array()
        .expect("data.alerts")
        .iter()
        .map(|a| {
            let name = a["labels"]["alertname"].as_str().unwrap_or_default();
            (
                name.to_string(),
                a["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}
