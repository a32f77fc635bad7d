//! The files a run leaves for machines: the JSON report (`--report`) and Prometheus
//! text-format metrics (`--metrics`, for a node-exporter textfile collector or a push gateway).
//! Both are written to a temporary file, 0600, and renamed into place.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::copy::{Item, Outcome};
use crate::registry::throttle::RegistryStats;

/// The report's schema version; bumped on any incompatible change (documented in
/// docs/report.md).
pub const REPORT_VERSION: u32 = 1;

#[derive(Serialize)]
pub struct Report {
    pub report_version: u32,
    pub ferry_version: &'static str,
    pub plan: String,
    /// `INDEX/COUNT` for a sharded run.
    pub shard: Option<String>,
    pub run: i64,
    pub started_at: String,
    pub ended_at: String,
    /// succeeded, partial, interrupted
    pub outcome: String,
    pub totals: ReportTotals,
    /// Failures first: every failed item, rule or deletion with its reason.
    pub failures: Vec<String>,
    pub items: Vec<ReportItem>,
    pub deletions: Vec<ReportDeletion>,
    pub registries: BTreeMap<String, ReportRegistry>,
}

#[derive(Serialize, Default, Clone, Copy)]
pub struct ReportTotals {
    pub copied: usize,
    pub present: usize,
    pub failed: usize,
    /// Referrers not carried on purpose (their subject failed or was rewritten).
    pub skipped: usize,
    pub interrupted: usize,
    pub deleted: usize,
    pub bytes: u64,
    pub seconds: f64,
}

#[derive(Serialize)]
pub struct ReportItem {
    pub source: String,
    pub target: String,
    pub digest: Option<String>,
    /// copied, present, unchanged (recorded done, not re-checked), skipped (a referrer not
    /// carried, `error` says why), failed, interrupted
    pub action: &'static str,
    pub bytes: u64,
    pub seconds: f64,
    pub error: Option<String>,
    /// `sha256:old → sha256:new` when the target got a rewritten index (`platform_mode =
    /// "rewrite"`): the digest there is not the source's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewritten: Option<String>,
}

#[derive(Serialize)]
pub struct ReportDeletion {
    pub repository: String,
    pub digest: String,
    pub tags: Vec<String>,
    pub reason: String,
    pub version_id: Option<String>,
}

#[derive(Serialize)]
pub struct ReportRegistry {
    pub requests: u64,
    pub throttled: u64,
    pub retries: u64,
    pub wait_seconds: f64,
}

impl From<&RegistryStats> for ReportRegistry {
    fn from(s: &RegistryStats) -> Self {
        ReportRegistry {
            requests: s.requests,
            throttled: s.throttled,
            retries: s.retries,
            wait_seconds: s.waited.as_secs_f64(),
        }
    }
}

/// One report row per item.
pub fn item_row(item: &Item, outcome: Option<&Outcome>) -> ReportItem {
    let (action, digest, bytes, seconds, error) = match outcome {
        Some(Outcome::Copied { digest, stats }) => (
            "copied",
            Some(digest.to_string()),
            stats.bytes,
            stats.elapsed.as_secs_f64(),
            None,
        ),
        Some(Outcome::Present { digest, .. }) => {
            ("present", Some(digest.to_string()), 0, 0.0, None)
        }
        Some(Outcome::Unchanged { digest, .. }) => {
            ("unchanged", Some(digest.to_string()), 0, 0.0, None)
        }
        Some(Outcome::Skipped { reason }) => ("skipped", None, 0, 0.0, Some(reason.clone())),
        Some(Outcome::Failed { error }) => (
            "failed",
            None,
            0,
            0.0,
            Some(super::error_chain(error.as_ref())),
        ),
        None => ("interrupted", None, 0, 0.0, None),
    };
    let rewritten = outcome
        .and_then(Outcome::placed)
        .and_then(|(old, new)| new.map(|new| format!("{old} → {new}")));
    ReportItem {
        source: item.source_display(),
        target: item.target_display(),
        digest,
        action,
        bytes,
        seconds,
        error,
        rewritten,
    }
}

/// Write `bytes` to `path` through a 0600 temporary sibling and a rename.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "report".into());
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Prometheus text exposition format.
pub fn metrics(report: &Report, finished_unix: u64, run_seconds: Duration) -> String {
    let t = &report.totals;
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, samples: Vec<(String, String)>| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for (labels, value) in samples {
            out.push_str(&format!("{name}{labels} {value}\n"));
        }
    };
    gauge(
        "ferry_images",
        "Images of the last run by outcome.",
        [
            ("copied", t.copied),
            ("present", t.present),
            ("failed", t.failed),
            ("skipped", t.skipped),
            ("interrupted", t.interrupted),
        ]
        .iter()
        .map(|(o, n)| (format!("{{outcome=\"{o}\"}}"), n.to_string()))
        .collect(),
    );
    gauge(
        "ferry_deleted_manifests",
        "Manifests retention deleted in the last run.",
        vec![(String::new(), t.deleted.to_string())],
    );
    gauge(
        "ferry_transferred_bytes",
        "Blob bytes copied in the last run.",
        vec![(String::new(), t.bytes.to_string())],
    );
    gauge(
        "ferry_failures",
        "Failures (items, rules, deletions) in the last run.",
        vec![(String::new(), report.failures.len().to_string())],
    );
    gauge(
        "ferry_run_duration_seconds",
        "Wall time of the last run.",
        vec![(String::new(), format!("{:.3}", run_seconds.as_secs_f64()))],
    );
    gauge(
        "ferry_last_run_timestamp_seconds",
        "When the last run ended (Unix time).",
        vec![(String::new(), finished_unix.to_string())],
    );
    gauge(
        "ferry_last_run_success",
        "1 when the last run copied and deleted everything it selected.",
        vec![(
            String::new(),
            u8::from(report.outcome == "succeeded").to_string(),
        )],
    );
    if report.outcome == "succeeded" {
        gauge(
            "ferry_last_success_timestamp_seconds",
            "When the last successful run ended (Unix time).",
            vec![(String::new(), finished_unix.to_string())],
        );
    }
    for (name, help, pick) in [
        (
            "ferry_registry_requests",
            "Requests sent to each registry in the last run.",
            (|r: &ReportRegistry| r.requests as f64) as fn(&ReportRegistry) -> f64,
        ),
        (
            "ferry_registry_throttled",
            "429 answers from each registry in the last run.",
            |r: &ReportRegistry| r.throttled as f64,
        ),
        (
            "ferry_registry_retries",
            "Retries against each registry in the last run.",
            |r: &ReportRegistry| r.retries as f64,
        ),
        (
            "ferry_registry_wait_seconds",
            "Time spent waiting for each registry's rate limits in the last run.",
            |r: &ReportRegistry| r.wait_seconds,
        ),
    ] {
        gauge(
            name,
            help,
            report
                .registries
                .iter()
                .map(|(host, r)| {
                    (
                        format!("{{registry=\"{}\"}}", escape(host)),
                        pick(r).to_string(),
                    )
                })
                .collect(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_prometheus_text() {
        let mut registries = BTreeMap::new();
        registries.insert(
            "ghcr.io".to_string(),
            ReportRegistry {
                requests: 12,
                throttled: 1,
                retries: 2,
                wait_seconds: 3.5,
            },
        );
        let report = Report {
            report_version: REPORT_VERSION,
            ferry_version: "0",
            plan: "p.toml".into(),
            shard: None,
            run: 1,
            started_at: "x".into(),
            ended_at: "y".into(),
            outcome: "succeeded".into(),
            totals: ReportTotals {
                copied: 3,
                bytes: 100,
                ..Default::default()
            },
            failures: vec![],
            items: vec![],
            deletions: vec![],
            registries,
        };
        let m = metrics(&report, 1_800_000_000, Duration::from_millis(1500));
        assert!(m.contains("ferry_images{outcome=\"copied\"} 3\n"), "{m}");
        assert!(m.contains("ferry_transferred_bytes 100\n"));
        assert!(m.contains("ferry_last_success_timestamp_seconds 1800000000\n"));
        assert!(m.contains("ferry_registry_requests{registry=\"ghcr.io\"} 12\n"));
        assert!(m.contains("ferry_registry_wait_seconds{registry=\"ghcr.io\"} 3.5\n"));
        assert!(m.contains("# TYPE ferry_run_duration_seconds gauge\n"));
        for line in m.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(!name.is_empty() && value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
