//! One module per subcommand; composition only. The only place `anyhow` is used, and the one
//! place errors become exit codes.

pub mod check;
pub mod execute;
pub mod journal;
pub mod plan;
pub mod report;
pub mod run;
pub mod shard;
pub mod status;

use std::process::ExitCode;

use crate::cli::{Cli, Command};
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
    match cli.command {
        Command::Check { plan, online } => {
            if online {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(check::preflight(&plan))
            } else {
                check::check(&plan)
            }
        }
        Command::Run(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(run::run(args))
        }
        Command::Status(args) => status::status(&args),
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
        if cause.downcast_ref::<PlanError>().is_some() {
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
