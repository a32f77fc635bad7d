//! The files a run leaves for machines, `--report` and `--metrics`, from how it ended. The
//! report's items are in its file already ([`RunItems`] wrote each as it finished): what is
//! written here is its end.

use std::time::SystemTime;

use std::sync::atomic::Ordering;

use super::ended::Ended;
use super::run_items::RunItems;
use crate::app::lines::emit;
use crate::cli::RunArgs;
use crate::copy::select;
use crate::execute::Execution;
use crate::report::files::{
    write_private, Report, ReportDeletion, ReportKept, ReportPrune, ReportRegistry, ReportTotals,
    REPORT_VERSION,
};
use crate::report::hints::chain as error_chain;
use crate::report::metrics::metrics;
use crate::report::timestamp;
use crate::retention::prune::PruneAction;
use crate::retention::refusals::imposed;
use crate::retention::Action;
use crate::state::RunOutcome;

/// `--report` and `--metrics`, when asked for; `false` when one could not be written (said).
/// `last_success`: when the checkpoint's last succeeded run ended (unix seconds).
pub(super) fn write_files(
    args: &RunArgs,
    ended: &Ended,
    (execution, items): (&Execution, &RunItems),
    registries: &select::Registries,
    last_success: Option<i64>,
    json: bool,
) -> bool {
    if args.report.is_none() && args.metrics.is_none() {
        return true;
    }
    let at = SystemTime::now();
    let report = report(args, ended, execution, registries, at);
    let mut ok = true;
    if let (Some(path), Some(writer)) = (&args.report, items.report()) {
        if let Err(e) = writer.and_then(|w| w.finish(&report)) {
            let what = format!("error: writing the report {}: {e}", path.display());
            emit(json, "ERROR", &what);
            ok = false;
        }
    }
    if let Some(path) = &args.metrics {
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
        let text = metrics(&report, failed, unix, ended.totals.elapsed, last_success);
        if let Err(e) = write_private(path, text.as_bytes()) {
            let what = format!("error: writing the metrics {}: {e}", path.display());
            emit(json, "ERROR", &what);
            ok = false;
        }
    }
    ok
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
