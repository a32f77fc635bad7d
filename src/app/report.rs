//! `ferry report merge`: one report from the reports of several shards, merged as typed
//! [`Report`]s ([`Report::merge`]) and streamed: each report is read once without its items
//! (checked on the way), then the items of each, one at a time, go straight into the merged
//! file. No report's items are held in memory.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use crate::report::files::Report;
use crate::report::report_stream::{self, ReportHead, ReportWriter};

pub fn merge(output: &Path, inputs: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let mut merged: Option<Report> = None;
    for path in inputs {
        let (report, _) = report_stream::read(path)?;
        let m = merged.get_or_insert_with(|| {
            Report::merged(
                report.plan.clone(),
                report.started_at.clone(),
                report.ended_at.clone(),
            )
        });
        m.merge(report, path.display().to_string());
    }
    let merged = merged.context("no report to merge")?;
    write(output, inputs, &merged).with_context(|| format!("writing {}", output.display()))?;
    println!(
        "{}: {} reports merged, outcome {}",
        output.display(),
        inputs.len(),
        merged.outcome
    );
    Ok(ExitCode::SUCCESS)
}

/// The merged report: its head, every input's items in turn, then the rest of `merged`.
fn write(output: &Path, inputs: &[PathBuf], merged: &Report) -> anyhow::Result<()> {
    let head = ReportHead::new(merged.plan.clone(), None, None, merged.started_at.clone());
    let mut writer = ReportWriter::create(output, &head)?;
    for path in inputs {
        report_stream::read_items(path, &mut |item| writer.item(&item))?;
    }
    writer.finish(merged)?;
    Ok(())
}
