//! The files a run leaves for machines: the JSON report (`--report`) and Prometheus
//! text-format metrics (`--metrics`, for a node-exporter textfile collector or a push gateway).
//! Both are written to a temporary file, 0600, and renamed into place.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::budget_parked::ReportBudget;
use super::json_stream::PrivateFile;
use crate::copy::{Item, Outcome};
use crate::registry::transport::throttle::RegistryStats;

/// The report's schema version; bumped on any incompatible change (documented in
/// docs/report.md).
pub const REPORT_VERSION: u32 = 1;

/// The JSON report of a run (`--report`), or of several merged (`ferry report merge`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Report {
    pub report_version: u32,
    pub ferry_version: String,
    pub plan: String,
    /// `INDEX/COUNT` for a sharded run.
    pub shard: Option<String>,
    /// The run's id in its state file; `None` for a merged report (each shard has its own).
    pub run: Option<i64>,
    pub started_at: String,
    pub ended_at: String,
    /// succeeded, partial, parked (a pull budget ran out), interrupted
    pub outcome: String,
    pub totals: ReportTotals,
    /// Failures first: every failed item, rule or deletion with its reason.
    pub failures: Vec<String>,
    pub items: Vec<ReportItem>,
    pub deletions: Vec<ReportDeletion>,
    /// What retention would delete that stays because the registry will not let it go
    /// (GHCR: a package's last tagged version, a version GitHub refused to delete), and what
    /// such a keep references; absent when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<ReportKept>,
    /// Every decision of the plan's `prune` rules: deletions (`delete`, `untag`) with how
    /// they went, and what stays that a rule does not select (`keep`: not ours, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prune: Vec<ReportPrune>,
    pub registries: BTreeMap<String, ReportRegistry>,
    /// The reports a merged one was made from; absent from a run's own report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_from: Option<Vec<MergedFrom>>,
    /// The command that undoes the run's deletions (`ferry restore PLAN --run 42`), when it
    /// deleted or pruned something; absent otherwise, and from a merged report (each shard
    /// undoes its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<String>,
    /// Target packages (GHCR) the run copied into whose visibility is not what is expected
    /// (the rule's `visibility`, else the source's), or could not be read; absent when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<ReportPackage>,
    /// Why the metrics could not be pushed to the Pushgateway (`--metrics-push`); absent
    /// when they were, or when no push was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_push: Option<String>,
    /// Registries whose pull budget ran out, parking the images not started; absent when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pull_budget: Vec<ReportBudget>,
}

/// A target package that needs a person: its visibility differs from what is expected, or
/// could not be read (`visibility` null, `error` says why).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ReportPackage {
    /// `ghcr.io/myorg/app`.
    pub package: String,
    /// public, private or internal; null when it could not be read.
    pub visibility: Option<String>,
    /// What it should be, and why (`rule`: the rule's `visibility`; `source`: the source's).
    pub expected: Option<String>,
    pub expected_from: Option<String>,
    /// Where a person changes it (GitHub has no API that does).
    pub settings: Option<String>,
    /// Does the image read carry `org.opencontainers.image.source` (which links the package
    /// to a repository)? null when it could not be read.
    pub source_label: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One report a merged report was made from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct MergedFrom {
    /// Its path, as given to `ferry report merge`.
    pub report: String,
    pub shard: Option<String>,
    pub run: Option<i64>,
}

#[derive(Serialize, Deserialize, Default, Clone, Copy, Debug, PartialEq)]
#[serde(default)]
pub struct ReportTotals {
    pub copied: usize,
    /// Already at the target with the source digest: checked there in this run.
    pub present: usize,
    /// Recorded done by an earlier run and trusted without asking the target. Reports
    /// written before it was counted apart have none (read as 0) and count these in
    /// `present`.
    pub unchanged: usize,
    /// Every failure the run lists (`failures`): failed items, rules that could not be
    /// resolved, what retention and pruning could not do.
    pub failed: usize,
    /// Referrers not carried on purpose (their subject failed or was rewritten).
    pub skipped: usize,
    pub interrupted: usize,
    /// Retention's deletions made (not pruning's: `pruned`).
    pub deleted: usize,
    pub bytes: u64,
    pub seconds: f64,
    /// Bytes received from sources for uploads, discarded ones included.
    pub source_bytes: u64,
    /// Bytes upload sessions of earlier runs already held: neither read nor sent again.
    pub resumed_bytes: u64,
    /// Bytes sent from the spool instead of read from the source again.
    pub spooled_bytes: u64,
    /// Bytes read again because a source answered a range request with the whole blob.
    pub reread_bytes: u64,
    /// Uploads parked at a chunk boundary because the run was stopping.
    pub parked: u64,
    /// Fan-out (`to = [...]`): blobs read once for every target; absent without one.
    #[serde(skip_serializing_if = "FanoutTotals::is_empty")]
    pub fanout: FanoutTotals,
    /// Images kept because something runs them (`[in_use]`) that the rules alone would delete.
    pub kept_in_use: usize,
    /// Prune deletions made: manifests deleted, and tags removed alone.
    pub pruned: usize,
    /// The longest time, in milliseconds, between a manifest's last look at its repository
    /// and the moment its DELETE was sent, over retention and pruning; absent when the run
    /// sent no DELETE (and from reports written before it was measured). A merged report
    /// has the longest of its shards'.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delete_window_ms: Option<f64>,
}

/// A fan-out's reads: `spooled_blobs` read from the source once into the spool for every
/// target; `reread_blobs` read again by another target because the spool had no room.
#[derive(Serialize, Deserialize, Default, Clone, Copy, Debug, PartialEq)]
#[serde(default)]
pub struct FanoutTotals {
    pub spooled_blobs: u64,
    pub reread_blobs: u64,
}

impl FanoutTotals {
    pub fn is_empty(&self) -> bool {
        *self == FanoutTotals::default()
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ReportItem {
    pub source: String,
    pub target: String,
    pub digest: Option<String>,
    /// copied, present, unchanged (recorded done, not re-checked), skipped (a referrer not
    /// carried, `error` says why), failed, interrupted
    pub action: String,
    pub bytes: u64,
    pub seconds: f64,
    pub error: Option<String>,
    /// What usually causes `error` and what to do about it, when ferry knows (one hint a
    /// line); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// `sha256:old → sha256:new` when the target got a rewritten index (`platform_mode =
    /// "rewrite"`): the digest there is not the source's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewritten: Option<String>,
    /// `sha256:old → sha256:new` when the source moved since an earlier run recorded it (a
    /// re-pushed tag) and the image was copied again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated: Option<String>,
    /// What the target lacked of an image whose tag it held, put back by this copy (child
    /// manifests, blobs, a referrer's fallback-index entry).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub put_back: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ReportDeletion {
    pub repository: String,
    pub digest: String,
    pub tags: Vec<String>,
    pub reason: String,
    pub version_id: Option<String>,
}

/// An image the registry keeps (see [`Report::kept`]).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ReportKept {
    pub repository: String,
    pub digest: String,
    pub tags: Vec<String>,
    /// `kept: GHCR keeps a package's last version`, `kept: GitHub refused to delete it on
    /// DATE: REASON`, or what references it that stays.
    pub reason: String,
}

/// One decision of a `prune` rule.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ReportPrune {
    /// `copy #1 (plans/mirror.toml:3)`.
    pub rule: String,
    pub repository: String,
    /// delete, untag, keep.
    pub action: String,
    pub digest: String,
    pub tags: Vec<String>,
    pub reason: String,
    /// For a deletion: `done`, or why it failed.
    pub result: Option<String>,
}

#[derive(Serialize, Deserialize, Default, Clone, Debug, PartialEq)]
#[serde(default)]
pub struct ReportRegistry {
    pub requests: u64,
    pub throttled: u64,
    pub retries: u64,
    pub wait_seconds: f64,
    /// Requests by method and resource (`HEAD manifest`, `GET blob`, `POST upload`, …).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub by_kind: BTreeMap<String, u64>,
    /// Blob transfers in flight to it when the run ended (the window it settled at), and the
    /// widest the window was; absent where nothing was sent to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_peak: Option<usize>,
    /// Whether it took a whole blob in one request (`POST ?digest=`); absent where ferry
    /// uploaded nothing small enough to ask.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub single_post_upload: Option<bool>,
}

impl From<&RegistryStats> for ReportRegistry {
    fn from(s: &RegistryStats) -> Self {
        ReportRegistry {
            requests: s.requests,
            throttled: s.throttled,
            retries: s.retries,
            wait_seconds: s.waited.as_secs_f64(),
            by_kind: s.by_kind.clone(),
            window: None,
            window_peak: None,
            single_post_upload: s.single_post,
        }
    }
}

impl Report {
    /// An empty report to merge others into (see [`Report::merge`]), for this ferry.
    pub fn merged(plan: String, started_at: String, ended_at: String) -> Report {
        Report {
            report_version: REPORT_VERSION,
            ferry_version: env!("CARGO_PKG_VERSION").to_string(),
            plan,
            shard: None,
            run: None,
            started_at,
            ended_at,
            outcome: "succeeded".to_string(),
            totals: ReportTotals::default(),
            failures: Vec::new(),
            items: Vec::new(),
            deletions: Vec::new(),
            kept: Vec::new(),
            prune: Vec::new(),
            registries: BTreeMap::new(),
            merged_from: Some(Vec::new()),
            restore: None,
            packages: Vec::new(),
            metrics_push: None,
            pull_budget: Vec::new(),
        }
    }

    /// Add `other` (a shard's report) to this one: the earliest start, the latest end, the
    /// worse outcome, counts summed, lists joined, and `other` named in `merged_from` as
    /// `path`.
    pub fn merge(&mut self, other: Report, path: String) {
        // RFC 3339 UTC strings order as text.
        if other.started_at < self.started_at {
            self.started_at = other.started_at;
        }
        if other.ended_at > self.ended_at {
            self.ended_at = other.ended_at;
        }
        if outcome_rank(&other.outcome) > outcome_rank(&self.outcome) {
            self.outcome = other.outcome;
        }
        self.totals.add(&other.totals);
        self.metrics_push = self.metrics_push.take().or(other.metrics_push);
        self.failures.extend(other.failures);
        self.items.extend(other.items);
        self.deletions.extend(other.deletions);
        self.kept.extend(other.kept);
        self.prune.extend(other.prune);
        self.packages.extend(other.packages);
        self.pull_budget.extend(other.pull_budget);
        for (host, stats) in other.registries {
            self.registries.entry(host).or_default().add(&stats);
        }
        self.merged_from
            .get_or_insert_with(Vec::new)
            .push(MergedFrom {
                report: path,
                shard: other.shard,
                run: other.run,
            });
    }
}

/// Worse outcomes win: a merged run succeeded only when every shard did.
fn outcome_rank(outcome: &str) -> u8 {
    match outcome {
        "succeeded" => 0,
        "partial" => 1,
        "parked" => 2,
        "interrupted" => 3,
        _ => 4,
    }
}

impl ReportTotals {
    pub fn add(&mut self, other: &ReportTotals) {
        self.copied += other.copied;
        self.present += other.present;
        self.unchanged += other.unchanged;
        self.failed += other.failed;
        self.skipped += other.skipped;
        self.interrupted += other.interrupted;
        self.deleted += other.deleted;
        self.bytes += other.bytes;
        self.seconds += other.seconds;
        self.source_bytes += other.source_bytes;
        self.resumed_bytes += other.resumed_bytes;
        self.spooled_bytes += other.spooled_bytes;
        self.reread_bytes += other.reread_bytes;
        self.parked += other.parked;
        self.fanout.spooled_blobs += other.fanout.spooled_blobs;
        self.fanout.reread_blobs += other.fanout.reread_blobs;
        self.kept_in_use += other.kept_in_use;
        self.pruned += other.pruned;
        self.delete_window_ms = match (self.delete_window_ms, other.delete_window_ms) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
}

impl ReportRegistry {
    pub fn add(&mut self, other: &ReportRegistry) {
        self.requests += other.requests;
        self.throttled += other.throttled;
        self.retries += other.retries;
        self.wait_seconds += other.wait_seconds;
        for (kind, n) in &other.by_kind {
            *self.by_kind.entry(kind.clone()).or_default() += n;
        }
        self.window = self.window.max(other.window);
        self.window_peak = self.window_peak.max(other.window_peak);
        self.single_post_upload = self.single_post_upload.or(other.single_post_upload);
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
            Some(crate::error::chain(error.as_ref())),
        ),
        None => ("interrupted", None, 0, 0.0, None),
    };
    let hint = match outcome {
        Some(Outcome::Failed { error }) => super::hints::joined(error.as_ref()),
        _ => None,
    };
    let rewritten = outcome
        .and_then(Outcome::placed)
        .and_then(|(old, new)| new.map(|new| format!("{old} → {new}")));
    let (updated, put_back) = outcome.map(Outcome::changes).unwrap_or_default();
    ReportItem {
        updated,
        put_back,
        source: item.source_display(),
        target: item.target_display(),
        digest,
        action: action.to_string(),
        bytes,
        seconds,
        error,
        hint,
        rewritten,
    }
}

/// The report row of an item parked: not started because its source's pull budget ran out.
pub fn parked_row(item: &Item) -> ReportItem {
    ReportItem {
        action: "parked".to_string(),
        ..item_row(item, None)
    }
}

/// Write `bytes` to `path` through a 0600 temporary sibling and a rename.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = PrivateFile::create(path)?;
    f.write_all(bytes)?;
    f.keep()
}

#[cfg(test)]
mod tests;
