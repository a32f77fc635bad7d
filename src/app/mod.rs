//! One module per subcommand; composition only. The only place `anyhow` is used, and the one
//! place errors become exit codes.
//!
//! What the subcommands share lives in leaves that import none of them: [`exit`] (the codes),
//! [`lines`] (text or JSON lines), [`state_file`] (which checkpoint, and why it cannot be
//! used), [`restore_command`] (the command that undoes a run's deletions).

pub mod check;
pub mod exit;
pub mod lines;
pub mod plan;
pub mod report;
pub mod restore;
pub mod restore_command;
pub mod run;
pub mod state_file;
pub mod status;
pub mod verify;

pub use lines::log_line;

use std::process::ExitCode;

use crate::cli::{Cli, Command, LogFormat};
use crate::plan::PlanError;
use crate::registry::RegistryError;
use state_file::StateUnusable;

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
