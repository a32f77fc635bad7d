//! [`Ended`]: how a run ended, which the checkpoint, the report files and the closing lines
//! all read.

use crate::copy::Totals;
use crate::execute::budget_gate::Parked;
use crate::execute::Execution;
use crate::report::budget_parked::ReportBudget;
use crate::report::files::ReportPackage;
use crate::report::{plural, timestamp};
use crate::state::{RunId, RunOutcome};

/// How a run ended: what the checkpoint, the report and the closing lines say.
pub(super) struct Ended {
    pub(super) run: RunId,
    pub(super) outcome: RunOutcome,
    /// With the run's wall time.
    pub(super) totals: Totals,
    /// Retention's deletions that went through.
    pub(super) deleted: usize,
    /// Pruning's that went through: manifests deleted, and tags removed alone.
    pub(super) pruned: usize,
    /// Every failure, one line each: failed items, rules (or repositories of wildcard
    /// rules) that could not be resolved, what retention and pruning could not do. Their
    /// number, with the failed items not listed, is what the summary, the report and the
    /// checkpoint call failed.
    pub(super) failures: Vec<String>,
    /// Failed items beyond the first [`crate::execute::sink::FAILURES_KEPT`]: not listed.
    pub(super) unlisted: usize,
    /// `ferry restore …`, the command that undoes the run's deletions, when it made some.
    pub(super) undo: Option<String>,
    /// Target packages whose visibility is not what is expected (warnings, not failures).
    pub(super) packages: Vec<ReportPackage>,
    /// Registries whose pull budget ran out, their images not started parked.
    pub(super) parked: Vec<Parked>,
}

impl Ended {
    /// `interrupted`: the signal's exit code, 0 when none came.
    pub(super) fn new(
        run: RunId,
        interrupted: u8,
        execution: &Execution,
        totals: Totals,
        failures: Vec<String>,
    ) -> Ended {
        let (deleted, untagged) = execution.pruned();
        let pruned = deleted + untagged;
        Ended {
            run,
            outcome: match (interrupted, failures.is_empty()) {
                (0, true) if !execution.parked.is_empty() => RunOutcome::Parked,
                (0, true) => RunOutcome::Succeeded,
                (0, false) => RunOutcome::Partial,
                _ => RunOutcome::Interrupted,
            },
            totals,
            deleted: execution.deleted(),
            pruned,
            failures,
            unlisted: execution.unlisted_failures,
            undo: None,
            packages: Vec::new(),
            parked: execution.parked.clone(),
        }
    }

    /// One line per registry whose pull budget ran out: what is left, when to run again.
    pub(super) fn parked_lines(&self) -> Vec<String> {
        let line = |p: &Parked| {
            let n = plural(p.images, "image");
            format!(
                "{}; {n} parked: run the same command again then",
                p.message()
            )
        };
        self.parked.iter().map(line).collect()
    }

    /// The report's `pull_budget` rows.
    pub(super) fn budget_rows(&self) -> Vec<ReportBudget> {
        let row = |p: &Parked| ReportBudget {
            registry: p.registry.clone(),
            remaining: p.remaining,
            limit: p.limit,
            window_seconds: p.window_seconds,
            resume_after: timestamp(p.resume_at()),
            parked: p.images,
        };
        self.parked.iter().map(row).collect()
    }

    /// How many failures there were: those listed, and the failed items not listed.
    pub(super) fn failed(&self) -> usize {
        self.failures.len() + self.unlisted
    }
}
