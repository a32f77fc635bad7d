//! `ferry schema`: the plan's JSON Schema on standard output.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;

/// Print the plan's JSON Schema, pretty, with a line end.
pub fn print_schema() -> anyhow::Result<ExitCode> {
    let schema = crate::plan::json_schema::plan_schema();
    let text = serde_json::to_string_pretty(&schema).context("encoding the plan's JSON Schema")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").context("writing the plan's JSON Schema to standard output")?;
    Ok(ExitCode::SUCCESS)
}
