//! What `ferry run` does with each item as it finishes ([`RunItems`], the execution's
//! [`ItemSink`]): its row goes to the `--report` file, which is written as the run goes, and
//! what the closing notes and the metrics say of items is counted. Nothing per item stays but
//! the packages copied into (one per target repository), whose visibility is read at the end.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use crate::app::lines::emit;
use crate::app::package_check::{after_run, Packages};
use crate::cli::RunArgs;
use crate::copy::{Item, Outcome};
use crate::execute::shard::Shard;
use crate::execute::sink::ItemSink;
use crate::plan::Plan;
use crate::report::files::ReportPackage;
use crate::report::files::{item_row, parked_row, ReportItem};
use crate::report::report_stream::{ReportHead, ReportWriter};
use crate::report::timestamp;
use crate::state::RunId;

/// The run's items, as they finish.
pub(super) struct RunItems {
    /// The `--report` file being written (none asked for), or why it cannot be: said at the
    /// end, where the run says the report was not written.
    report: Mutex<Option<Result<ReportWriter, std::io::Error>>>,
    /// Non-distributable layers left where their URLs point.
    pub(super) foreign: AtomicUsize,
    /// Items that failed (the metrics' failed images).
    pub(super) failed: AtomicUsize,
    /// The packages the run copied into, for their visibility.
    packages: Packages,
}

impl RunItems {
    /// Begin the `--report` file, if asked for, with what is known as the run starts.
    pub(super) fn open(args: &RunArgs, shard: Option<Shard>, run: RunId) -> RunItems {
        let report = args.report.as_ref().map(|path| {
            let head = ReportHead::new(
                args.plan.display().to_string(),
                shard.map(|s| s.to_string()),
                Some(run),
                timestamp(SystemTime::now()),
            );
            ReportWriter::create(path, &head)
        });
        RunItems {
            report: Mutex::new(report),
            foreign: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            packages: Packages::default(),
        }
    }

    /// The packages the run copied into whose visibility is not what is expected, or could
    /// not be read: each said as a warning, and its report row. None unless `ended` (an
    /// interrupted run leaves at once).
    pub(super) async fn check_packages(
        &self,
        plan: &Plan,
        ended: bool,
        json: bool,
    ) -> Vec<ReportPackage> {
        if !ended {
            return Vec::new();
        }
        let attention = after_run(plan, self.packages.take()).await;
        for a in &attention {
            emit(json, "WARN", &format!("visibility: {}", a.line()));
        }
        attention.iter().map(|a| a.row()).collect()
    }

    /// The report being written, once the run is over (`None`: none was asked for).
    pub(super) fn report(&self) -> Option<Result<ReportWriter, std::io::Error>> {
        self.report.lock().expect("report").take()
    }
}

impl ItemSink for RunItems {
    fn finished(&self, item: &Item, outcome: Option<&Outcome>) {
        self.packages.note(item, outcome);
        match outcome {
            Some(Outcome::Copied { stats, .. }) if !stats.foreign.is_empty() => {
                self.foreign
                    .fetch_add(stats.foreign.len(), Ordering::Relaxed);
            }
            Some(Outcome::Failed { .. }) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        self.row(&item_row(item, outcome));
    }

    fn parked(&self, item: &Item) {
        self.row(&parked_row(item));
    }
}

impl RunItems {
    /// An item's row, into the report being written.
    fn row(&self, row: &ReportItem) {
        let mut report = self.report.lock().expect("report");
        if let Some(Ok(writer)) = report.as_mut() {
            if let Err(e) = writer.item(row) {
                // The report cannot be whole: the run says so at the end, and goes on.
                *report = Some(Err(e));
            }
        }
    }
}
