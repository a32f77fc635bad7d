//! One module per subcommand; composition only. The only place `anyhow` is used, and the one
//! place errors become exit codes.

pub mod check;
pub mod plan;
pub mod report;
pub mod restore;
pub mod run;
pub mod status;
pub mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use crate::cli::{Cli, Command, LogFormat};
use crate::plan::PlanError;
use crate::registry::RegistryError;

/// Exit codes, documented in `--help` and the README.
pub mod exit {
    pub const OK: u8 = 0;
    pub const PARTIAL: u8 = 1;
    pub const INVALID: u8 = 2;
    pub const CREDENTIALS: u8 = 3;
}

/// Run a parsed command line.
pub fn main(cli: Cli) -> anyhow::Result<ExitCode> {
    let json = cli.log_format == LogFormat::Json;
    match cli.command {
        Command::Check { plan, online } => {
            if online {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(check::preflight(&plan, json))
            } else {
                check::check(&plan, json)
            }
        }
        Command::Run(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(run::run(args))
        }
        Command::Verify(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(verify::verify(args))
        }
        Command::Status(args) => status::status(&args),
        Command::Restore(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(restore::restore(args))
        }
        Command::Report(crate::cli::ReportCommand::Merge { output, inputs }) => {
            report::merge(&output, &inputs)
        }
        Command::Plan(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(plan::plan(args))
        }
    }
}

/// A line as `--log-format` asks: the text, or a JSON object (the shape of tracing's JSON
/// lines) for a log collector that reads every line ferry writes.
pub fn log_line(json: bool, level: &str, text: &str) -> String {
    match json {
        true => crate::report::json_line(level, text),
        false => text.to_string(),
    }
}

/// The checkpoint could not be opened or created: a path where no file can be (under
/// `/proc`, below a regular file), a directory in its place, no permission, a file that is
/// not SQLite, a newer schema, another run holding it. A configuration error (exit 2), told
/// apart from a write that fails once the run is under way (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum StateUnusable {
    /// Says the path and the reason itself.
    #[error(transparent)]
    Open(#[from] crate::state::StateError),
    /// `ferry status` on a state file that does not exist.
    #[error("no state file at {}: nothing has run with it yet (ferry run creates it)", .0.display())]
    Missing(PathBuf),
}

/// The exit code for an error that ended the run.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if cause.downcast_ref::<PlanError>().is_some()
            || cause.downcast_ref::<StateUnusable>().is_some()
            || cause
                .downcast_ref::<crate::execute::shard::ShardError>()
                .is_some()
        {
            return exit::INVALID;
        }
        match cause.downcast_ref::<RegistryError>() {
            Some(RegistryError::Credentials { .. }) => return exit::CREDENTIALS,
            // The plan named a CA file that is no longer readable since it was validated.
            Some(RegistryError::CaFile { .. }) => return exit::INVALID,
            _ => {}
        }
        if let Some(crate::state::StateError::UnsafeDirectory { .. }) = cause.downcast_ref() {
            return exit::INVALID;
        }
    }
    exit::PARTIAL
}
