//! One module per subcommand; composition only. The only place `anyhow` is used, and the one
//! place errors become exit codes.
//!
//! What the subcommands share lives in leaves that import none of them: [`exit`] (the codes),
//! [`lines`] (text or JSON lines), [`state_file`] (which checkpoint, and why it cannot be
//! used), [`restore_command`] (the command that undoes a run's deletions), [`package_check`]
//! (target packages whose visibility is not what is expected, for `run` and `check`),
//! [`metrics_push`] (`--metrics-push`, for `run` and `verify`).

pub mod check;
pub mod exit;
pub mod lines;
pub mod metrics_push;
pub mod package_check;
pub mod plan;
pub mod print_schema;
pub mod report;
pub mod report_show;
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
        Command::Run(args) => on_workers(run::run(args)),
        Command::Verify(args) => on_workers(verify::verify(args)),
        Command::Status(args) => status::status(&args),
        Command::Restore(args) => on_workers(restore::restore(args)),
        Command::Report(crate::cli::ReportCommand::Merge { output, inputs }) => {
            report::merge(&output, &inputs)
        }
        Command::Report(crate::cli::ReportCommand::Show { report, output }) => {
            report_show::show(&report, output)
        }
        Command::Plan(args) => on_workers(plan::plan(args)),
        Command::Schema => print_schema::print_schema(),
    }
}

/// Run `work` to its end on a multi-threaded runtime, as a task of its own rather than on
/// the main thread: the engine then shares the worker threads with the connection tasks it
/// hands each request to, so a request and its answer wake a task on the same thread (tokio
/// runs a task just woken there next) instead of crossing between the main thread and a
/// worker twice. A no-op of 20,000 tags (one HEAD each) went from about 9 context switches
/// per tag to about 5, and spent a quarter less of ferry's CPU in the kernel (issue 24).
fn on_workers<T: Send + 'static>(
    work: impl std::future::Future<Output = anyhow::Result<T>> + Send + 'static,
) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match tokio::spawn(work).await {
            Ok(done) => done,
            // A panic in the run is the process's panic, as it was on the main thread.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(e.into()),
        }
    })
}

/// The exit code for an error that ended the run.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if cause.downcast_ref::<PlanError>().is_some()
            || cause.downcast_ref::<StateUnusable>().is_some()
            || cause
                .downcast_ref::<crate::execute::shard::ShardError>()
                .is_some()
            || cause.downcast_ref::<metrics_push::PushError>().is_some()
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
