//! `ferry run PLAN`: open the checkpoint, execute the plan ([`crate::execute`]: its stages,
//! then its retention), record, summarise, and write the report and metrics (`report_files`).
//! SIGINT/SIGTERM stop new work, park chunked uploads at their next chunk boundary, give the
//! rest in flight a grace period, save the checkpoint and exit 130/143.

use std::collections::{HashMap, HashSet};
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use indicatif::HumanBytes;
use sha2::Digest as _;
use tokio_util::sync::CancellationToken;

use super::exit;
use super::lines::{emit, log_line};
use super::restore_command::undo_command;
use super::state_file::{state_path, StateUnusable};
use crate::cli::{Progress, RunArgs};
use crate::copy::spool::{Spool, SPOOL_MIN};
use crate::copy::{select, Totals};
use crate::copy::{Reporter, Silent};
use crate::execute::budget_gate::BudgetGate;
use crate::execute::checkpoint::StateJournal;
use crate::execute::{execute, Context as Execute, Execution};
use crate::plan::Plan;
use crate::reference::Digest;
use crate::reference::Location;
use crate::registry::http::HttpRegistry;
use crate::registry::layout::LayoutRegistry;
use crate::registry::transport::throttle::Observer;
use crate::registry::Registry;
use crate::report::hints::chain as error_chain;
use crate::report::{plural, BarReporter, PlainReporter};
use crate::state::{Reader, RunId, RunSummary, RunTotals, State};

mod ended;
mod report_files;
mod run_items;
#[cfg(test)]
mod tests;
mod transfer_note;

use ended::Ended;
use run_items::RunItems;
use transfer_note::transfer_note;

/// After SIGINT/SIGTERM, transfers in flight get this long to finish before they are
/// abandoned (a Kubernetes pod gets 30 s by default between SIGTERM and SIGKILL).
pub const GRACE_PERIOD: Duration = Duration::from_secs(10);

/// Build one registry client per location the plan uses.
pub fn registries(plan: &Plan, observer: Option<Observer>) -> anyhow::Result<select::Registries> {
    let mut map: select::Registries = HashMap::new();
    for host in plan.hosts() {
        let settings = plan.registry(&host);
        if settings.insecure {
            tracing::warn!(
                "insecure = true for {host}: its TLS certificate is not verified and plain HTTP is allowed"
            );
        }
        let client = HttpRegistry::new(&host, &settings, observer.clone())
            .with_context(|| format!("setting up registry {host}"))?;
        map.insert(
            Location::Registry(host),
            Arc::new(client) as Arc<dyn Registry>,
        );
    }
    let uses_layouts = plan
        .copies
        .iter()
        .any(|c| c.from.location == Location::Layout || c.to.location == Location::Layout)
        || plan
            .retains
            .iter()
            .any(|r| r.repository.location == Location::Layout);
    if uses_layouts {
        map.insert(Location::Layout, Arc::new(LayoutRegistry::new()));
    }
    Ok(map)
}

/// How progress is shown: nothing (`quiet`), JSON lines for a log collector, plain lines, or
/// bars on a terminal. `audit`: the items are `ferry verify`'s findings.
pub(super) fn reporter(
    progress: Progress,
    quiet: bool,
    json: bool,
    audit: bool,
) -> Arc<dyn Reporter> {
    if quiet {
        return Arc::new(Silent);
    }
    let plain = |r: PlainReporter| -> Arc<dyn Reporter> {
        match audit {
            true => Arc::new(r.audit()),
            false => Arc::new(r),
        }
    };
    let bars = || -> Arc<dyn Reporter> {
        match audit {
            true => Arc::new(BarReporter::new().audit()),
            false => Arc::new(BarReporter::new()),
        }
    };
    if json && progress != Progress::None {
        // A log collector reads JSON lines; bars would only get in its way.
        return plain(PlainReporter::stderr_json());
    }
    match progress {
        Progress::None => Arc::new(Silent),
        Progress::Plain => plain(PlainReporter::stderr()),
        Progress::Bars => bars(),
        Progress::Auto if std::io::stderr().is_terminal() => bars(),
        Progress::Auto => plain(PlainReporter::stderr()),
    }
}

/// The one-line summary that ends every run. `failed` counts every failure the run lists
/// (items, rules, and what retention and pruning could not do: the `failed:` lines above
/// it), so a run that exits 1 for them never says 0 failed. `deleted` (retention's) when
/// the plan has retention, `pruned` when it has `prune` rules; `unchanged` only when some
/// item was trusted from the checkpoint.
pub fn summary(
    totals: &Totals,
    failed: usize,
    deleted: Option<usize>,
    pruned: Option<usize>,
) -> String {
    let mut line = format!(
        "ferry: {} images copied, {} already present",
        totals.copied, totals.present
    );
    if totals.unchanged > 0 {
        line.push_str(&format!(
            ", {} unchanged (trusted from the checkpoint)",
            totals.unchanged
        ));
    }
    line.push_str(&format!(", {failed} failed"));
    if let Some(n) = deleted {
        line.push_str(&format!(", {n} deleted"));
    }
    if let Some(n) = pruned {
        line.push_str(&format!(", {n} pruned"));
    }
    if totals.skipped > 0 {
        line.push_str(&format!(
            ", {} not carried",
            plural(totals.skipped, "referrer")
        ));
    }
    if totals.interrupted > 0 {
        line.push_str(&format!(", {} interrupted", totals.interrupted));
    }
    line.push_str(&format!(
        "; {} transferred in {:.1} s",
        HumanBytes(totals.bytes),
        totals.elapsed.as_secs_f64()
    ));
    line
}

/// SIGINT or SIGTERM: stop new work at once, abandon work in flight after the grace period
/// (or at a second signal). Returns the exit code the signal asks for (0 while none came).
fn watch_signals(
    stop: CancellationToken,
    abort: CancellationToken,
    reporter: Arc<dyn Reporter>,
) -> Arc<AtomicU8> {
    use tokio::signal::unix::{signal, SignalKind};
    let code = Arc::new(AtomicU8::new(0));
    let seen = code.clone();
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::warn!("cannot watch SIGINT/SIGTERM; an interruption will not save a checkpoint");
        return code;
    };
    tokio::spawn(async move {
        let first = tokio::select! {
            _ = int.recv() => 130,
            _ = term.recv() => 143,
        };
        seen.store(first, Ordering::SeqCst);
        stop.cancel();
        reporter.note(&format!(
            "interrupted: no new images; uploads park after the chunk they are sending, other work in flight gets {} s, then the checkpoint is saved",
            GRACE_PERIOD.as_secs()
        ));
        tokio::select! {
            _ = tokio::time::sleep(GRACE_PERIOD) => {}
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        abort.cancel();
    });
    code
}

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let plan = Plan::load(&args.plan)?;
    super::metrics_push::check(args.metrics_push.as_ref())?;
    let fingerprint = fingerprint(&args.plan)?;
    let json = args.log_format == crate::cli::LogFormat::Json;
    let reporter = reporter(args.progress, args.quiet, json, false);
    let observer: Observer = {
        let reporter = reporter.clone();
        Arc::new(move |event| reporter.registry_event(event))
    };
    let registries = registries(&plan, Some(observer))?;
    let concurrency = args
        .concurrency
        .map(usize::from)
        .unwrap_or(plan.concurrency);

    let shard = match resolve_shard(&args, json, reporter.as_ref()) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    let owns = move |repository: &str| shard.is_none_or(|s| s.owns(repository));

    let opened = open_checkpoint(&args, &plan, shard, &fingerprint).await?;
    let items = RunItems::open(&args, shard, opened.run);
    tell_previous(reporter.as_ref(), opened.previous.as_ref(), &fingerprint);
    let (state, run_id) = (opened.state.clone(), opened.run);
    let spool = open_spool(&opened, args.spool_limit);
    let journal: Arc<StateJournal> = Arc::new(StateJournal::new(
        opened.state,
        opened.run,
        opened.reader,
        &plan,
        args.recheck,
    ));

    let stop = CancellationToken::new();
    let abort = CancellationToken::new();
    let signal = watch_signals(stop.clone(), abort.clone(), reporter.clone());
    let started = std::time::Instant::now();
    let cx = Execute {
        registries: &registries,
        journal: journal.clone(),
        reporter: reporter.clone(),
        concurrency,
        stop: stop.clone(),
        abort: abort.clone(),
        owns: &owns,
        spool: spool.clone(),
        audit: None,
        lease: crate::execute::leasing::taking(run_id, &args.plan, shard),
        sink: &items,
        budget: Some(BudgetGate::for_run(args.wait_for_budget)),
    };
    let execution = execute(&plan, &cx).await;
    let mut totals = execution.totals.clone();
    totals.elapsed = started.elapsed();
    reporter.finish();
    after_notes(json, &execution, &items, journal.new_items());
    // The journal's reader holds the checkpoint as the run found it: closed before the run
    // is saved, so the old runs it pruned and compacted leave the WAL too.
    drop((cx, journal));

    // Failures are listed once more at the end, where an operator looks first.
    let failures = execution.failures(&plan);
    tell_failures(json, &failures, execution.unlisted_failures);
    let interrupted = signal.load(Ordering::SeqCst);
    let mut ended = Ended::new(run_id, interrupted, &execution, totals, failures);
    ended.packages = items.check_packages(&plan, interrupted == 0, json).await;
    let state_flag = (args.state.is_some() || shard.is_some()).then_some(opened.path.as_path());
    ended.undo =
        (ended.deleted + ended.pruned > 0).then(|| undo_command(&args.plan, state_flag, run_id));
    let files = (&execution, &items);
    let kept = save_and_write(&args, state, &ended, files, &registries, json).await?;
    clear_spool(spool, &ended);
    Ok(close(json, &plan, &ended, interrupted, kept))
}

/// Everything finished: nothing in the spool is needed any more.
fn clear_spool(spool: Option<Arc<Spool>>, ended: &Ended) {
    if let Some(spool) =
        spool.filter(|_| ended.totals.interrupted == 0 && ended.failures.is_empty())
    {
        let _ = std::fs::remove_dir_all(spool.dir());
    }
}

/// Record the run's end in the checkpoint, then write its `--report` and `--metrics` files:
/// whether all of it was kept.
async fn save_and_write(
    args: &RunArgs,
    state: State,
    ended: &Ended,
    (execution, items): (&Execution, &RunItems),
    registries: &select::Registries,
    json: bool,
) -> anyhow::Result<bool> {
    let saved_ok = save(state.clone(), ended, json).await?;
    let last_success = match args.metrics.is_some() || args.metrics_push.is_some() {
        true => last_success(state).await,
        false => None,
    };
    let files_ok = report_files::write_files(
        args,
        ended,
        (execution, items),
        registries,
        last_success,
        json,
    )
    .await;
    Ok(saved_ok && files_ok)
}

/// `--shard`/`--shards` (or the Job's completion index), said when there is one; an invalid
/// one is said, and is the exit code.
fn resolve_shard(
    args: &RunArgs,
    json: bool,
    reporter: &dyn Reporter,
) -> Result<Option<crate::execute::shard::Shard>, ExitCode> {
    match crate::execute::shard::Shard::resolve(args.shard.as_deref(), args.shards) {
        Ok(shard) => {
            if let Some(s) = shard {
                reporter.note(&format!(
                    "shard {s}: this run takes its share of the repositories"
                ));
            }
            Ok(shard)
        }
        Err(e) => {
            emit(json, "ERROR", &format!("error: {e}"));
            Err(ExitCode::from(exit::INVALID))
        }
    }
}

/// The closing lines, and the exit code: the signal's after an interruption, else 0 when
/// nothing failed and the checkpoint and files were written (`saved`), else 1.
fn close(json: bool, plan: &Plan, ended: &Ended, interrupted: u8, saved: bool) -> ExitCode {
    let deleted = (!plan.retains.is_empty()).then_some(ended.deleted);
    let pruned = crate::execute::pruning::any(plan).then_some(ended.pruned);
    let line = summary(&ended.totals, ended.failed(), deleted, pruned);
    if let Some(undo) = &ended.undo {
        emit(json, "INFO", &format!("to undo its deletions: {undo}"));
    }
    println!("{}", log_line(json, "INFO", &line));
    for parked in ended.parked_lines() {
        emit(json, "WARN", &parked);
    }
    if interrupted != 0 {
        emit(
            json,
            "WARN",
            &format!(
                "interrupted: {} not finished; run the same command again to continue",
                plural(ended.totals.interrupted, "image")
            ),
        );
        return ExitCode::from(interrupted);
    }
    if ended.failures.is_empty() && saved && !ended.parked.is_empty() {
        ExitCode::from(exit::BUDGET)
    } else if ended.failures.is_empty() && saved {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::PARTIAL)
    }
}

/// The plan file's SHA-256: a changed plan is noted when the next run starts.
fn fingerprint(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(hex::encode(sha2::Sha256::digest(&bytes)))
}

/// The spool beside the checkpoint (`<state>.spool/`), holding only the blobs of uploads the
/// checkpoint can continue; `None` with `--spool-limit 0`.
fn open_spool(opened: &Opened, limit: u64) -> Option<Arc<Spool>> {
    if limit == 0 {
        return None;
    }
    let mut dir = opened.path.clone().into_os_string();
    dir.push(".spool");
    let spool = Spool::new(dir.into(), limit, SPOOL_MIN);
    // A read that fails keeps nothing: those uploads start over.
    let parked: HashSet<Digest> = opened
        .reader
        .parked_uploads()
        .unwrap_or_default()
        .iter()
        .filter_map(|((_, _, digest), _)| Digest::parse(digest))
        .collect();
    spool.retain_only(&parked);
    Some(Arc::new(spool))
}

/// The checkpoint as a run starts with it.
struct Opened {
    state: State,
    /// Where the checkpoint is (the spool lives beside it).
    path: std::path::PathBuf,
    /// The run before this one, if any.
    previous: Option<RunSummary>,
    run: RunId,
    /// The checkpoint as this run found it.
    reader: Reader,
}

/// The checkpoint (the shard's own under `--shard`), opened and locked on a blocking thread,
/// as every SQLite call is; this run begun in it.
async fn open_checkpoint(
    args: &RunArgs,
    plan: &Plan,
    shard: Option<crate::execute::shard::Shard>,
    fingerprint: &str,
) -> anyhow::Result<Opened> {
    let path = state_path(args.state.as_deref(), Some(plan));
    let path = match shard {
        Some(s) => s.state_path(&path),
        None => path,
    };
    let plan_path = args.plan.display().to_string();
    let fp = fingerprint.to_string();
    let keep = plan.retain_runs;
    tokio::task::spawn_blocking(move || {
        let state = State::open(&path).map_err(StateUnusable::Open)?;
        let previous = state.run_summary(None)?;
        prune_runs(&state, keep);
        let run = state.begin_run(&plan_path, &fp)?;
        let reader = state.reader()?;
        anyhow::Ok(Opened {
            state,
            path,
            previous,
            run,
            reader,
        })
    })
    .await?
}

/// The rows of runs older than the newest `keep` deleted (`retain_runs`), before this run
/// begins: then no reader holds the file as it was, so a compaction rewrites it in place, and
/// a run that was killed is cleaned up after all. A failure is said and costs nothing else:
/// the old rows only take room.
fn prune_runs(state: &State, keep: u32) {
    match state.prune_runs(keep) {
        Ok(pruned) if pruned.runs + pruned.deletions > 0 => tracing::debug!(
            runs = pruned.runs,
            deletions = pruned.deletions,
            vacuumed = pruned.vacuumed,
            "checkpoint: runs older than the newest {keep} deleted"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(
            "deleting the checkpoint's runs older than the newest {keep}: {}",
            error_chain(&e)
        ),
    }
}

/// What people should know about the run before this one: the plan changed, or it did not
/// finish (this one continues it).
fn tell_previous(reporter: &dyn Reporter, previous: Option<&RunSummary>, fingerprint: &str) {
    let Some(prev) = previous else { return };
    if prev.plan_fingerprint != fingerprint {
        reporter.note("the plan changed since the last run: new images are added, finished ones are not redone");
    }
    if matches!(
        prev.status.as_str(),
        "running" | "killed" | "interrupted" | "parked"
    ) {
        reporter.note(&format!(
            "resuming after run {} ({}): finished work is not redone",
            prev.id, prev.status
        ));
    }
}

/// Every failure, one line each, and how many failed items are not listed.
fn tell_failures(json: bool, failures: &[String], unlisted: usize) {
    for f in failures {
        emit(json, "ERROR", &format!("failed: {f}"));
    }
    if unlisted > 0 {
        emit(
            json,
            "ERROR",
            &format!(
                "failed: {} more, not listed (only the first {} failed items are; a --report lists every item)",
                plural(unlisted, "item"),
                crate::execute::sink::FAILURES_KEPT
            ),
        );
    }
}

/// Notes after the run: images the checkpoint did not know, layers left where they are.
fn after_notes(json: bool, execution: &Execution, items: &RunItems, new_items: usize) {
    for line in transfer_note(&execution.transfer)
        .iter()
        .flat_map(|n| n.lines())
    {
        emit(json, "INFO", line);
    }
    if new_items > 0 {
        emit(
            json,
            "INFO",
            &format!(
                "note: {} not in the checkpoint before (new in the plan or at the source)",
                plural(new_items, "image")
            ),
        );
    }
    let foreign = items.foreign.load(Ordering::Relaxed);
    if foreign > 0 {
        emit(
            json,
            "INFO",
            &format!(
                "note: {} not copied: non-distributable layers stay where their URLs point",
                plural(foreign, "non-distributable layer")
            ),
        );
    }
}

/// When the checkpoint's last succeeded run ended (this one, once saved, if it succeeded),
/// for the metrics; `None` when none did or the checkpoint cannot say (said).
async fn last_success(state: State) -> Option<i64> {
    match tokio::task::spawn_blocking(move || state.last_success()).await {
        Ok(Ok(at)) => at,
        Ok(Err(e)) => {
            tracing::warn!(
                "reading the last success from the checkpoint: {}",
                error_chain(&e)
            );
            None
        }
        Err(_) => None,
    }
}

/// The run's outcome and totals, saved with every queued write; `false` (said loudly) when
/// that failed.
async fn save(state: State, ended: &Ended, json: bool) -> anyhow::Result<bool> {
    let t = &ended.totals;
    let totals = RunTotals {
        copied: t.copied as u64,
        present: t.present as u64,
        unchanged: t.unchanged as u64,
        failed: ended.failed() as u64,
        skipped: t.skipped as u64,
        interrupted: t.interrupted as u64,
        bytes: t.bytes,
        deleted: ended.deleted as u64,
        pruned: ended.pruned as u64,
    };
    let (run, outcome) = (ended.run, ended.outcome);
    let saved =
        tokio::task::spawn_blocking(move || state.finish_run(run, outcome, &totals)).await?;
    if let Err(e) = &saved {
        // The copies stand; only the record of them is incomplete. Say so, loudly, and in
        // the exit code: a run whose checkpoint is incomplete is not a clean success.
        emit(
            json,
            "ERROR",
            &format!("error: saving the checkpoint failed: {}", error_chain(e)),
        );
    }
    Ok(saved.is_ok())
}
