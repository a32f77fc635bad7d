//! `ferry verify PLAN`: an audit that changes nothing. It executes the plan's copy stages the
//! way `run` does ([`crate::execute`]: the same selection, the same referrers, the same
//! engine), with every record treated as `--recheck` treats it and the engine in audit mode:
//! each item is checked at its target whole (its top manifest with the source's digest, every
//! child manifest, every config and layer blob, a referrer's fallback-index entry), and what a
//! run would copy or put back is the finding. Registries are behind overlays, so not even a
//! bug could write to one; no retention or pruning runs; the checkpoint is read, never written.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use super::exit;
use super::lines::emit;
use super::metrics_push::{check, plan_label, push_and_say};
use super::run::{registries, reporter};
use super::state_file::state_path;
use crate::cli::VerifyArgs;
use crate::execute::checkpoint::StateJournal;
use crate::execute::{execute, overlays, Context, Execution};
use crate::plan::Plan;
use crate::registry::transport::throttle::Observer;
use crate::report::files::{write_private, ReportRegistry};
use crate::report::hints::chain as error_chain;
use crate::report::metrics::{verify_metrics, VerifyFigures};
use crate::state::State;

mod verify_items;
mod verify_output;

use verify_items::VerifyItems;

pub use verify_output::{VerifyGap, VerifyItem, VerifyOutput, VerifyTotals};

pub async fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let plan = Plan::load(&args.plan)?;
    let json = args.log_format == crate::cli::LogFormat::Json;
    let push = check(args.metrics_push.as_ref())?;
    let reporter = reporter(args.progress, args.quiet, json, true);
    let observer: Observer = {
        let reporter = reporter.clone();
        Arc::new(move |event| reporter.registry_event(event))
    };
    let real = registries(&plan, Some(observer))?;
    let (simulated, _) = overlays(&real, &plan);
    // One shard's share, as `run` takes it, with that shard's state file.
    let shard = crate::execute::shard::Shard::resolve(args.shard.as_deref(), args.shards)?;
    let owns = move |repository: &str| shard.is_none_or(|s| s.owns(repository));
    let path = state_path(args.state.as_deref(), Some(&plan));
    let path = match shard {
        Some(s) => s.state_path(&path),
        None => path,
    };
    let reader = State::read_only(&path)?;
    // Every record as `--recheck` treats it: read (to tell a source that moved), trusted for
    // nothing.
    let journal = Arc::new(StateJournal::dry(reader, &plan, true));
    let started = Instant::now();
    let items = VerifyItems::begin(args.output, json, args.deep)?;
    let cx = Context {
        registries: &simulated,
        journal,
        reporter: reporter.clone(),
        concurrency: args.concurrency.map_or(plan.concurrency, usize::from),
        stop: CancellationToken::new(),
        abort: CancellationToken::new(),
        owns: &owns,
        spool: None,
        audit: Some(args.deep),
        lease: crate::execute::leasing::Leasing::Off,
        sink: &items,
        budget: None,
    };
    let execution = execute(&plan, &cx).await;
    reporter.finish();
    let registries: BTreeMap<String, ReportRegistry> = real
        .values()
        .filter_map(|r| r.stats().map(|s| (r.name().to_string(), (&s).into())))
        .collect();
    let out = output_of(&plan, &args, &execution, registries, items.totals());
    items.end(&out)?;
    let mut ok = out.complete();
    let seconds = started.elapsed().as_secs_f64();
    if let Some(metrics) = &args.metrics {
        ok &= write_metrics(metrics, &out, seconds, json);
    }
    if let Some(gateway) = &push {
        // A failed push is said, never the exit code. The last success is carried over
        // from the `--metrics` file when there is one (the push replaces the group).
        let previous = args
            .metrics
            .as_deref()
            .and_then(|p| std::fs::read_to_string(p).ok());
        let text = verify_metrics(&figures(&out, seconds, previous.as_deref()));
        let plan = plan_label(&args.plan);
        push_and_say(
            gateway,
            "ferry-verify",
            &[("plan", plan.as_str())],
            text,
            json,
        )
        .await;
    }
    Ok(match ok {
        true => ExitCode::SUCCESS,
        false => ExitCode::from(exit::PARTIAL),
    })
}

/// What `ferry verify` says about an audit after its findings (`totals`: theirs).
fn output_of(
    plan: &Plan,
    args: &VerifyArgs,
    execution: &Execution,
    registries: BTreeMap<String, ReportRegistry>,
    totals: VerifyTotals,
) -> VerifyOutput {
    let repairable = totals.incomplete + totals.missing + totals.outdated > 0;
    VerifyOutput {
        deep: args.deep,
        failures: execution
            .select_errors
            .iter()
            .map(|e| error_chain(e))
            .collect(),
        plan: args.plan.display().to_string(),
        registries,
        repair: repairable.then(|| format!("ferry run --recheck {}", plan.path.display())),
        totals,
    }
}

/// The audit's figures for its metrics, ending now; `previous`: the metrics file they
/// replace, whose last success is carried over.
fn figures<'a>(
    out: &'a VerifyOutput,
    seconds: f64,
    previous: Option<&'a str>,
) -> VerifyFigures<'a> {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    VerifyFigures {
        statuses: out.totals.by_status(),
        gaps: out.totals.gaps,
        seconds,
        finished_unix: now,
        success: out.complete(),
        previous,
        registries: &out.registries,
    }
}

/// The `--metrics` file, carrying the last success over from the file it replaces; `false`
/// (said) when it could not be written.
fn write_metrics(path: &Path, out: &VerifyOutput, seconds: f64, json: bool) -> bool {
    let previous = std::fs::read_to_string(path).ok();
    let figures = figures(out, seconds, previous.as_deref());
    match write_private(path, verify_metrics(&figures).as_bytes()) {
        Ok(()) => true,
        Err(e) => {
            let what = format!("error: writing the metrics {}: {e}", path.display());
            emit(json, "ERROR", &what);
            false
        }
    }
}
