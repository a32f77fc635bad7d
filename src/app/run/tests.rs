//! The run's closing line (issue 21, "What was seen" 6): one vocabulary with the report.

use std::time::Duration;

use super::summary;
use crate::copy::Totals;

fn totals(present: usize, unchanged: usize) -> Totals {
    Totals {
        copied: 1,
        present,
        unchanged,
        bytes: 2048,
        elapsed: Duration::from_millis(1500),
        ..Totals::default()
    }
}

#[test]
fn unchanged_is_said_apart_from_present_when_there_are_some() {
    assert_eq!(
        summary(&totals(2, 5), 0, None, None),
        "ferry: 1 images copied, 2 already present, 5 unchanged (trusted from the checkpoint), 0 failed; 2.00 KiB transferred in 1.5 s"
    );
    assert_eq!(
        summary(&totals(2, 0), 0, None, None),
        "ferry: 1 images copied, 2 already present, 0 failed; 2.00 KiB transferred in 1.5 s"
    );
}

/// `failed` is every failure line (retention's and pruning's too), not the failed images:
/// a run that exits 1 for a failed deletion never says 0 failed.
#[test]
fn failures_deletions_and_prunings_are_counted_as_given() {
    let t = Totals {
        failed: 0,
        skipped: 1,
        interrupted: 2,
        ..totals(0, 0)
    };
    assert_eq!(
        summary(&t, 3, Some(4), Some(5)),
        "ferry: 1 images copied, 0 already present, 3 failed, 4 deleted, 5 pruned, 1 referrer not carried, 2 interrupted; 2.00 KiB transferred in 1.5 s"
    );
}
