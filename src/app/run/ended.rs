//! [`Ended`]: how a run ended, which the checkpoint, the report files and the closing lines
//! all read.

use crate::copy::Totals;
use crate::execute::Execution;
use crate::report::files::ReportPackage;
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
        }
    }

    /// How many failures there were: those listed, and the failed items not listed.
    pub(super) fn failed(&self) -> usize {
        self.failures.len() + self.unlisted
    }
}
