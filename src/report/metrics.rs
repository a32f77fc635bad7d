//! The `--metrics` file: the report's figures in the Prometheus text exposition format.

use std::time::Duration;

use super::files::{Report, ReportRegistry};

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Prometheus text exposition format. `failed`: the items (images) that failed, which the
/// report's `items` list (`report.items` is not read: a run writes them as they finish).
/// `last_success`: when the last succeeded run ended (Unix time), this one or, after a run
/// that did not succeed, the one its checkpoint records; `None` when no run succeeded yet
/// (the gauge is then left out).
pub fn metrics(
    report: &Report,
    failed: usize,
    finished_unix: u64,
    run_seconds: Duration,
    last_success: Option<u64>,
) -> String {
    let mut out = Gauges::default();
    totals_metrics(&mut out, report, failed);
    run_metrics(&mut out, report, finished_unix, run_seconds, last_success);
    registry_metrics(&mut out, report);
    out.0
}

/// Metrics text, one gauge after another.
#[derive(Default)]
struct Gauges(String);

impl Gauges {
    /// A gauge with one sample per `(labels, value)`.
    fn gauge(&mut self, name: &str, help: &str, samples: Vec<(String, String)>) {
        self.0
            .push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for (labels, value) in samples {
            self.0.push_str(&format!("{name}{labels} {value}\n"));
        }
    }

    /// A gauge with one unlabelled sample.
    fn single(&mut self, name: &str, help: &str, value: impl std::fmt::Display) {
        self.gauge(name, help, vec![(String::new(), value.to_string())]);
    }
}

/// What the run counted: images by outcome, deletions, bytes, failures.
fn totals_metrics(out: &mut Gauges, report: &Report, failed: usize) {
    let t = &report.totals;
    // `failed` is images only: `totals.failed` counts every failure (`ferry_failures`).
    out.gauge(
        "ferry_images",
        "Images of the last run by outcome.",
        [
            ("copied", t.copied),
            ("present", t.present),
            ("unchanged", t.unchanged),
            ("failed", failed),
            ("skipped", t.skipped),
            ("interrupted", t.interrupted),
        ]
        .iter()
        .map(|(o, n)| (format!("{{outcome=\"{o}\"}}"), n.to_string()))
        .collect(),
    );
    out.single(
        "ferry_deleted_manifests",
        "Manifests retention deleted in the last run.",
        t.deleted,
    );
    out.single(
        "ferry_pruned",
        "Prune deletions (manifests and tags removed alone) in the last run.",
        t.pruned,
    );
    out.single(
        "ferry_transferred_bytes",
        "Blob bytes copied in the last run.",
        t.bytes,
    );
    out.single(
        "ferry_failures",
        "Failures (items, rules, retention and pruning) in the last run.",
        t.failed,
    );
    out.single(
        "ferry_kept_in_use",
        "Images kept because something runs them ([in_use]) that the rules alone would delete.",
        t.kept_in_use,
    );
}

/// What held deletions back in a run, for the alerts: the report says it in words only.
/// Appended to [`metrics`]' text by `ferry run`.
pub fn held_metrics(by_max_deletions: usize, in_use_unreadable: usize) -> String {
    let mut out = Gauges::default();
    out.single(
        "ferry_deletions_held_back",
        "Repositories (retain) and prune rules whose deletions max_deletions held back in the last run.",
        by_max_deletions,
    );
    out.single(
        "ferry_in_use_sources_unreadable",
        "[in_use] sources that could not be read whole in the last run (nothing was deleted).",
        in_use_unreadable,
    );
    out.0
}

/// How long the run took, when it ended, whether it succeeded, and when one last did.
fn run_metrics(
    out: &mut Gauges,
    report: &Report,
    finished_unix: u64,
    run_seconds: Duration,
    last_success: Option<u64>,
) {
    out.single(
        "ferry_run_duration_seconds",
        "Wall time of the last run.",
        format!("{:.3}", run_seconds.as_secs_f64()),
    );
    out.single(
        "ferry_last_run_timestamp_seconds",
        "When the last run ended (Unix time).",
        finished_unix,
    );
    out.single(
        "ferry_last_run_success",
        "1 when the last run copied and deleted everything it selected.",
        u8::from(report.outcome == "succeeded"),
    );
    if let Some(at) = last_success {
        out.single(
            "ferry_last_success_timestamp_seconds",
            "When the last successful run ended (Unix time), this one or an earlier one.",
            at,
        );
    }
}

/// What each registry cost, labelled by registry.
fn registry_metrics(out: &mut Gauges, report: &Report) {
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
        let samples = report
            .registries
            .iter()
            .map(|(host, r)| {
                (
                    format!("{{registry=\"{}\"}}", escape(host)),
                    pick(r).to_string(),
                )
            })
            .collect();
        out.gauge(name, help, samples);
    }
    let by_kind = report
        .registries
        .iter()
        .flat_map(|(host, r)| {
            r.by_kind.iter().map(move |(kind, n)| {
                let (method, resource) = kind.split_once(' ').unwrap_or((kind, ""));
                let (h, m, r) = (escape(host), escape(method), escape(resource));
                let labels = format!("{{registry=\"{h}\",method=\"{m}\",resource=\"{r}\"}}");
                (labels, n.to_string())
            })
        })
        .collect();
    out.gauge(
        "ferry_registry_requests_by_kind",
        "Requests sent to each registry in the last run, by method and resource.",
        by_kind,
    );
    for (name, help, pick) in [
        (
            "ferry_registry_window",
            "Blob transfers in flight to each target when the last run ended (the adaptive window).",
            (|r: &ReportRegistry| r.window) as fn(&ReportRegistry) -> Option<usize>,
        ),
        (
            "ferry_registry_window_peak",
            "The widest the adaptive window of blob transfers to each target was in the last run.",
            |r: &ReportRegistry| r.window_peak,
        ),
    ] {
        // Only targets blobs were sent to have a window.
        let samples = report
            .registries
            .iter()
            .filter_map(|(host, r)| {
                let labels = format!("{{registry=\"{}\"}}", escape(host));
                pick(r).map(|w| (labels, w.to_string()))
            })
            .collect();
        out.gauge(name, help, samples);
    }
}

/// What `ferry verify --metrics` writes.
pub struct VerifyFigures<'a> {
    /// Items by status (complete, incomplete, missing, outdated, skipped, failed).
    pub statuses: Vec<(&'static str, usize)>,
    /// Pieces the targets lack.
    pub gaps: usize,
    pub seconds: f64,
    pub finished_unix: u64,
    /// Every target complete, everything checked.
    pub success: bool,
    /// The metrics file this one replaces, whose last success is carried over.
    pub previous: Option<&'a str>,
    pub registries: &'a std::collections::BTreeMap<String, ReportRegistry>,
}

/// `ferry verify`'s metrics, in the Prometheus text format. The last success survives a
/// failed audit (carried over from the file being replaced), so an alert on its age fires
/// instead of going absent.
pub fn verify_metrics(f: &VerifyFigures<'_>) -> String {
    let mut out = Gauges::default();
    out.gauge(
        "ferry_verify_images",
        "Images of the last verify by what their target holds.",
        f.statuses
            .iter()
            .map(|(s, n)| (format!("{{status=\"{s}\"}}"), n.to_string()))
            .collect(),
    );
    out.single(
        "ferry_verify_gaps",
        "Manifests and blobs the targets lack (or hold damaged) in the last verify.",
        f.gaps,
    );
    out.single(
        "ferry_verify_duration_seconds",
        "Wall time of the last verify.",
        format!("{:.3}", f.seconds),
    );
    out.single(
        "ferry_verify_last_run_timestamp_seconds",
        "When the last verify ended (Unix time).",
        f.finished_unix,
    );
    out.single(
        "ferry_verify_last_run_success",
        "1 when the last verify found every target complete.",
        u8::from(f.success),
    );
    let last_success = match f.success {
        true => Some(f.finished_unix),
        false => f
            .previous
            .and_then(|p| gauge_value(p, "ferry_verify_last_success_timestamp_seconds")),
    };
    if let Some(at) = last_success {
        out.single(
            "ferry_verify_last_success_timestamp_seconds",
            "When a verify last found every target complete (Unix time).",
            at,
        );
    }
    let requests = f
        .registries
        .iter()
        .map(|(host, r)| {
            let labels = format!("{{registry=\"{}\"}}", escape(host));
            (labels, r.requests.to_string())
        })
        .collect();
    out.gauge(
        "ferry_verify_registry_requests",
        "Requests the last verify sent to each registry.",
        requests,
    );
    out.0
}

/// The value of an unlabelled gauge in metrics text, when it is there.
pub fn gauge_value(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}
