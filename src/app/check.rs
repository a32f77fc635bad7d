//! `ferry check PLAN`: validate without network.

use std::path::Path;
use std::process::ExitCode;

use crate::plan::Plan;

pub fn check(path: &Path) -> anyhow::Result<ExitCode> {
    let plan = Plan::load(path)?;
    println!(
        "{}: valid plan, {} copy rule{}, registries: {}",
        path.display(),
        plan.copies.len(),
        if plan.copies.len() == 1 { "" } else { "s" },
        match plan.hosts() {
            h if h.is_empty() => "none (OCI layouts only)".to_string(),
            h => h.join(", "),
        }
    );
    Ok(ExitCode::SUCCESS)
}
