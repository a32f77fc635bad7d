//! `ferry report merge`: one report from the reports of several shards, merged as typed
//! [`Report`]s ([`Report::merge`]).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use crate::report::files::{write_private, Report, REPORT_VERSION};

pub fn merge(output: &Path, inputs: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let mut merged: Option<Report> = None;
    for path in inputs {
        let report = read(path)?;
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
    let body = serde_json::to_vec_pretty(&merged)?;
    write_private(output, &body).with_context(|| format!("writing {}", output.display()))?;
    println!(
        "{}: {} reports merged, outcome {}",
        output.display(),
        inputs.len(),
        merged.outcome
    );
    Ok(ExitCode::SUCCESS)
}

/// One report, refused unless it is a version this ferry reads.
fn read(path: &Path) -> anyhow::Result<Report> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let not_a_report = || format!("{} is not a ferry JSON report", path.display());
    // The version first, so a newer report is refused as such rather than as malformed.
    let value: serde_json::Value = serde_json::from_slice(&text).with_context(not_a_report)?;
    if value["report_version"] != REPORT_VERSION {
        anyhow::bail!(
            "{}: report_version {} is not one this ferry reads ({REPORT_VERSION})",
            path.display(),
            value["report_version"]
        );
    }
    serde_json::from_value(value).with_context(not_a_report)
}
