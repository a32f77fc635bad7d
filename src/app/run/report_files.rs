//! The files a run leaves for machines, `--report` and `--metrics` (and the metrics pushed,
//! `--metrics-push`), from how it ended. The report's items are in its file already
//! ([`RunItems`] wrote each as it finished): what is written here is its end.

use std::time::SystemTime;

use std::sync::atomic::Ordering;

use super::ended::Ended;
use super::run_items::RunItems;
use crate::app::lines::emit;
use crate::app::metrics_push::{plan_label, push_and_say, Pushgateway};
use crate::cli::{PushUrl, RunArgs};
use crate::copy::select;
use crate::execute::shard::Shard;
use crate::execute::Execution;
use crate::report::files::{
    write_private, Report, ReportDeletion, ReportKept, ReportPrune, ReportRegistry, ReportTotals,
    REPORT_VERSION,
};
use crate::report::hints::chain as error_chain;
use crate::report::metrics::{held_metrics, metrics};
use crate::report::timestamp;
use crate::retention::decisions::held_by_valve;
use crate::retention::prune::PruneAction;
use crate::retention::refusals::imposed;
use crate::retention::Action;
use crate::state::RunOutcome;

/// `--report`, `--metrics` and `--metrics-push`, when asked for; `false` when a file could not
/// be written (said). A failed push is said and in the report, but is not a failure of the run.
/// `last_success`: when the checkpoint's last succeeded run ended (unix seconds).
pub(super) async fn write_files(
    args: &RunArgs,
    ended: &Ended,
    (execution, items): (&Execution, &RunItems),
    registries: &select::Registries,
    last_success: Option<i64>,
    json: bool,
) -> bool {
    let wants_metrics = args.metrics.is_some() || args.metrics_push.is_some();
    if args.report.is_none() && !wants_metrics {
        return true;
    }
    let at = SystemTime::now();
    let mut report = report(args, ended, execution, registries, at);
    let mut ok = true;
    let text = wants_metrics.then(|| {
        let unix = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        // The checkpoint's word, which is this run's end once saved when it succeeded, so a
        // failed run carries the last success over; this run's own end when it succeeded
        // and the checkpoint could not say.
        let succeeded = ended.outcome == RunOutcome::Succeeded;
        let last_success = last_success
            .map(|at| at.max(0) as u64)
            .or(succeeded.then_some(unix));
        let failed = items.failed.load(Ordering::Relaxed);
        let mut text = metrics(&report, failed, unix, ended.totals.elapsed, last_success);
        let (by_valve, in_use) = held(execution);
        text.push_str(&held_metrics(by_valve, in_use));
        text
    });
    if let (Some(path), Some(text)) = (&args.metrics, &text) {
        if let Err(e) = write_private(path, text.as_bytes()) {
            let what = format!("error: writing the metrics {}: {e}", path.display());
            emit(json, "ERROR", &what);
            ok = false;
        }
    }
    if let (Some(url), Some(text)) = (&args.metrics_push, text) {
        report.metrics_push = push(args, url, text, json).await;
    }
    if let (Some(path), Some(writer)) = (&args.report, items.report()) {
        if let Err(e) = writer.and_then(|w| w.finish(&report)) {
            let what = format!("error: writing the report {}: {e}", path.display());
            emit(json, "ERROR", &what);
            ok = false;
        }
    }
    ok
}

/// Push the metrics to the Pushgateway: job `ferry`, the plan's name, and the shard's index
/// for a sharded run (each shard its own group, so none replaces another's). `Some(why)`
/// when it failed (said).
async fn push(args: &RunArgs, url: &PushUrl, text: String, json: bool) -> Option<String> {
    // Checked when the run started; an error here is said like a failed push.
    let gateway = match Pushgateway::parse(&url.0) {
        Ok(g) => g,
        Err(e) => {
            emit(json, "WARN", &format!("warning: {e}"));
            return Some(e.to_string());
        }
    };
    let plan = plan_label(&args.plan);
    let shard = Shard::resolve(args.shard.as_deref(), args.shards)
        .ok()
        .flatten();
    let index = shard.map(|s| s.index.to_string());
    let mut labels = vec![("plan", plan.as_str())];
    if let Some(index) = &index {
        labels.push(("shard", index.as_str()));
    }
    push_and_say(&gateway, "ferry", &labels, text, json).await
}

/// Repositories and prune rules whose deletions the `max_deletions` valve held back, and
/// `[in_use]` sources that could not be read whole, for the metrics.
fn held(execution: &Execution) -> (usize, usize) {
    let repositories = execution
        .retained
        .iter()
        .filter_map(|r| r.plan.decisions.as_ref().ok())
        .filter(|d| d.held_back.as_deref().is_some_and(held_by_valve))
        .count();
    let rules = execution
        .pruned
        .iter()
        .filter(|p| p.held_back.as_deref().is_some_and(held_by_valve))
        .count();
    (repositories + rules, execution.in_use_failures.len())
}

/// The run's JSON report as it ended at `at`, without its items (in the file already).
fn report(
    args: &RunArgs,
    ended: &Ended,
    execution: &Execution,
    registries: &select::Registries,
    at: SystemTime,
) -> Report {
    let t = &ended.totals;
    Report {
        report_version: REPORT_VERSION,
        ferry_version: env!("CARGO_PKG_VERSION").to_string(),
        plan: args.plan.display().to_string(),
        // In the file's head already; the metrics do not read it.
        shard: None,
        run: Some(ended.run),
        started_at: timestamp(at - t.elapsed),
        ended_at: timestamp(at),
        outcome: ended.outcome.as_str().to_string(),
        totals: ReportTotals {
            copied: t.copied,
            present: t.present,
            unchanged: t.unchanged,
            failed: ended.failed(),
            skipped: t.skipped,
            interrupted: t.interrupted,
            deleted: ended.deleted,
            bytes: t.bytes,
            seconds: t.elapsed.as_secs_f64(),
            source_bytes: execution.transfer.source_bytes,
            resumed_bytes: execution.transfer.resumed_bytes,
            spooled_bytes: execution.transfer.spooled_bytes,
            reread_bytes: execution.transfer.reread_bytes,
            parked: execution.transfer.parked,
            fanout: crate::report::files::FanoutTotals {
                spooled_blobs: execution.transfer.fanout_spooled_blobs,
                reread_blobs: execution.transfer.fanout_reread_blobs,
            },
            kept_in_use: execution.kept_in_use(),
            pruned: ended.pruned,
            delete_window_ms: execution
                .delete_window()
                .map(|w| w.as_micros() as f64 / 1000.0),
        },
        failures: ended.failures.clone(),
        items: Vec::new(),
        deletions: deletions(execution),
        kept: kept(execution),
        prune: prune_rows(execution),
        registries: registry_rows(registries, execution),
        merged_from: None,
        restore: ended.undo.clone(),
        packages: ended.packages.clone(),
        metrics_push: None,
        pull_budget: ended.budget_rows(),
    }
}

/// What each registry cost the run, and where its window of blob transfers settled.
fn registry_rows(
    registries: &select::Registries,
    execution: &Execution,
) -> std::collections::BTreeMap<String, ReportRegistry> {
    let mut rows: std::collections::BTreeMap<String, ReportRegistry> = registries
        .values()
        .filter_map(|r| r.stats().map(|s| (r.name().to_string(), (&s).into())))
        .collect();
    for (name, now, peak) in &execution.windows {
        if let Some(row) = rows.get_mut(name) {
            row.window = Some(*now);
            row.window_peak = Some(*peak);
        }
    }
    rows
}

/// Every prune decision, deletions with how they went.
fn prune_rows(execution: &Execution) -> Vec<ReportPrune> {
    let mut out = Vec::new();
    for p in &execution.pruned {
        let rule = p.label.clone();
        for r in &p.repos {
            let Ok(decided) = &r.decisions else { continue };
            for planned in &decided.decisions {
                // A deletion the registry refused for good is the keep it became.
                let done = r.done.iter().find(|d| {
                    d.decision == *planned
                        || (d.decision.action == PruneAction::Keep
                            && planned.action == PruneAction::Delete
                            && d.decision.digest == planned.digest)
                });
                let x = done.map_or(planned, |d| &d.decision);
                let result = done.map(|d| match &d.result {
                    Ok(_) => "done".to_string(),
                    Err(e) => error_chain(e),
                });
                out.push(ReportPrune {
                    rule: rule.clone(),
                    repository: r.repository.clone(),
                    action: match x.action {
                        PruneAction::Keep => "keep",
                        PruneAction::Delete => "delete",
                        PruneAction::Untag => "untag",
                    }
                    .to_string(),
                    digest: x.digest.to_string(),
                    tags: x.tags.clone(),
                    reason: x.reason.clone(),
                    result,
                });
            }
        }
    }
    out
}

/// What retention would delete that the registry keeps: keeps it imposed on the decisions,
/// deletions that became keeps, and images found tagged since the inventory right before
/// their DELETE.
fn kept(execution: &Execution) -> Vec<ReportKept> {
    let mut out = Vec::new();
    for r in &execution.retained {
        let planned = r.plan.decisions.iter().flat_map(|d| &d.decisions);
        let planned = planned.filter(|d| d.action == Action::Keep && imposed(&d.reason));
        let met = r.deletions.iter().map(|d| &d.decision);
        let met = met.filter(|d| d.action == Action::Keep);
        for d in planned.chain(met).chain(&r.late) {
            out.push(ReportKept {
                repository: r.plan.repository.clone(),
                digest: d.digest.to_string(),
                tags: d.tags.clone(),
                reason: d.reason.clone(),
            });
        }
    }
    out
}

/// The deletions that went through, for the report.
fn deletions(execution: &Execution) -> Vec<ReportDeletion> {
    execution
        .retained
        .iter()
        .flat_map(|r| {
            r.deletions.iter().filter_map(|d| {
                let version_id = d.result.as_ref().ok()?;
                Some(ReportDeletion {
                    repository: r.plan.repository.clone(),
                    digest: d.decision.digest.to_string(),
                    tags: d.decision.tags.clone(),
                    reason: d.decision.reason.clone(),
                    version_id: version_id.clone(),
                })
            })
        })
        .collect()
}
