//! `ferry run PLAN`: open the checkpoint, resolve the plan's rules stage by stage, copy,
//! record, summarise. SIGINT/SIGTERM stop new work, give transfers in flight a grace period,
//! save the checkpoint and exit 130/143.

use std::collections::{HashMap, HashSet};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use indicatif::HumanBytes;
use sha2::Digest as _;
use tokio_util::sync::CancellationToken;

use super::execute::{execute, Context as Execute};
use super::journal::StateJournal;
use crate::cli::{Progress, RunArgs};
use crate::copy::{select, Outcome, Totals};
use crate::plan::{Location, Plan, DEFAULT_STATE};
use crate::registry::http::HttpRegistry;
use crate::registry::layout::LayoutRegistry;
use crate::registry::throttle::Observer;
use crate::registry::Registry;
use crate::report::files::{
    item_row, metrics, write_private, Report, ReportDeletion, ReportTotals, REPORT_VERSION,
};
use crate::report::{error_chain, plural, timestamp, BarReporter, PlainReporter, Reporter, Silent};
use crate::state::{RunOutcome, RunTotals, State};

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

fn reporter(progress: Progress, quiet: bool, json: bool) -> Arc<dyn Reporter> {
    if quiet {
        return Arc::new(Silent);
    }
    if json && progress != Progress::None {
        // A log collector reads JSON lines; bars would only get in its way.
        return Arc::new(PlainReporter::stderr_json());
    }
    match progress {
        Progress::None => Arc::new(Silent),
        Progress::Plain => Arc::new(PlainReporter::stderr()),
        Progress::Bars => Arc::new(BarReporter::new()),
        Progress::Auto if std::io::stderr().is_terminal() => Arc::new(BarReporter::new()),
        Progress::Auto => Arc::new(PlainReporter::stderr()),
    }
}

/// A closing line on stderr: text, or a JSON object under `--log-format json`.
fn emit(json: bool, level: &str, message: &str) {
    if json {
        eprintln!("{}", crate::report::json_line(level, message));
    } else {
        eprintln!("{message}");
    }
}

/// The state file: `--state`, else the plan's `state`, else `state/ferry.db`.
pub fn state_path(flag: Option<&Path>, plan: Option<&Plan>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| plan.and_then(|p| p.state.clone()))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE))
}

/// The one-line summary that ends every run (`deleted` when the plan has retention).
pub fn summary(totals: &Totals, unresolved: usize, deleted: Option<usize>) -> String {
    let mut line = format!(
        "ferry: {} images copied, {} already present, {} failed",
        totals.copied,
        totals.present,
        totals.failed + unresolved
    );
    if let Some(n) = deleted {
        line.push_str(&format!(", {n} deleted"));
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
            "interrupted: no new images; transfers in flight get {} s, then the checkpoint is saved",
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
    let plan_bytes =
        std::fs::read(&args.plan).with_context(|| format!("reading {}", args.plan.display()))?;
    let fingerprint = hex::encode(sha2::Sha256::digest(&plan_bytes));
    let json = args.log_format == crate::cli::LogFormat::Json;
    let reporter = reporter(args.progress, args.quiet, json);
    let observer: Observer = {
        let reporter = reporter.clone();
        Arc::new(move |event| reporter.registry_event(event))
    };
    let registries = registries(&plan, Some(observer))?;
    let concurrency = args
        .concurrency
        .map(usize::from)
        .unwrap_or(plan.concurrency);

    let shard = match super::shard::Shard::resolve(args.shard.as_deref(), args.shards) {
        Ok(s) => s,
        Err(e) => {
            emit(json, "ERROR", &format!("error: {e}"));
            return Ok(ExitCode::from(super::exit::INVALID));
        }
    };
    let owns = move |repository: &str| shard.is_none_or(|s| s.owns(repository));
    if let Some(s) = shard {
        reporter.note(&format!(
            "shard {s}: this run takes its share of the repositories"
        ));
    }

    // The checkpoint: opened (and locked) on a blocking thread, as every SQLite call is.
    let path = state_path(args.state.as_deref(), Some(&plan));
    let path = match shard {
        Some(s) => s.state_path(&path),
        None => path,
    };
    let plan_path = args.plan.display().to_string();
    let fp = fingerprint.clone();
    let (state, previous, run_id, snapshot) = tokio::task::spawn_blocking(move || {
        let state = State::open(&path).map_err(super::StateUnusable::Open)?;
        let previous = state.run_summary(None)?;
        let run_id = state.begin_run(&plan_path, &fp)?;
        let snapshot = state.snapshot()?;
        anyhow::Ok((state, previous, run_id, snapshot))
    })
    .await??;
    let recorded: HashSet<(String, String, String)> = snapshot.items.keys().cloned().collect();
    if let Some(prev) = &previous {
        if prev.plan_fingerprint != fingerprint {
            reporter.note("the plan changed since the last run: new images are added, finished ones are not redone");
        }
        if matches!(prev.status.as_str(), "running" | "killed" | "interrupted") {
            reporter.note(&format!(
                "resuming after run {} ({}): finished work is not redone",
                prev.id, prev.status
            ));
        }
    }
    let journal = Arc::new(StateJournal::new(
        state.clone(),
        run_id,
        snapshot,
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
    };
    let execution = execute(&plan, &cx).await;
    let mut totals = execution.totals.clone();
    totals.elapsed = started.elapsed();
    reporter.finish();
    let results = &execution.items;
    let deleted = execution.deleted();

    let new_items = results
        .iter()
        .filter(|(item, _)| !recorded.is_empty() && !recorded.contains(&item.key()))
        .count();
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

    let foreign: usize = results
        .iter()
        .map(|(_, o)| match o {
            Some(Outcome::Copied { stats, .. }) => stats.foreign.len(),
            _ => 0,
        })
        .sum();
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
    // Failures are listed once more at the end, where an operator looks first.
    let failures = execution.failures(&plan);
    for f in &failures {
        emit(json, "ERROR", &format!("failed: {f}"));
    }
    let select_errors = execution.select_errors.len();

    let interrupted = signal.load(Ordering::SeqCst);
    let outcome = match (interrupted, failures.is_empty()) {
        (0, true) => RunOutcome::Succeeded,
        (0, false) => RunOutcome::Partial,
        _ => RunOutcome::Interrupted,
    };
    let run_totals = RunTotals {
        copied: totals.copied as u64,
        present: totals.present as u64,
        failed: (totals.failed + select_errors) as u64,
        skipped: totals.skipped as u64,
        interrupted: totals.interrupted as u64,
        bytes: totals.bytes,
        deleted: deleted as u64,
    };
    let saved =
        tokio::task::spawn_blocking(move || state.finish_run(run_id, outcome, &run_totals)).await?;
    let saved_ok = saved.is_ok();
    if let Err(e) = saved {
        // The copies stand; only the record of them is incomplete. Say so, loudly, and in
        // the exit code: a run whose checkpoint is incomplete is not a clean success.
        emit(
            json,
            "ERROR",
            &format!("error: saving the checkpoint failed: {}", error_chain(&e)),
        );
    }
    let mut files_ok = true;
    if args.report.is_some() || args.metrics.is_some() {
        let ended = SystemTime::now();
        let report = Report {
            report_version: REPORT_VERSION,
            ferry_version: env!("CARGO_PKG_VERSION").to_string(),
            plan: args.plan.display().to_string(),
            shard: shard.map(|s| s.to_string()),
            run: Some(run_id),
            started_at: timestamp(ended - totals.elapsed),
            ended_at: timestamp(ended),
            outcome: outcome.as_str().to_string(),
            totals: ReportTotals {
                copied: totals.copied,
                present: totals.present,
                failed: totals.failed + select_errors,
                skipped: totals.skipped,
                interrupted: totals.interrupted,
                deleted,
                bytes: totals.bytes,
                seconds: totals.elapsed.as_secs_f64(),
            },
            failures: failures.clone(),
            items: results
                .iter()
                .map(|(item, o)| item_row(item, o.as_ref()))
                .collect(),
            deletions: execution
                .retained
                .iter()
                .flat_map(|r| {
                    r.deletions.iter().filter_map(|d| {
                        let version_id = d.result.as_ref().ok()?;
                        Some(ReportDeletion {
                            repository: r.plan.repository.clone(),
                            digest: d.decision.digest.to_string(),
                            tags: d.decision.tags.clone(),
                            reason: d.decision.reason.clone(),
                            version_id: version_id.clone(),
                        })
                    })
                })
                .collect(),
            registries: registries
                .values()
                .filter_map(|r| r.stats().map(|s| (r.name().to_string(), (&s).into())))
                .collect(),
            merged_from: None,
        };
        if let Some(path) = &args.report {
            let body = serde_json::to_vec_pretty(&report).expect("report serialises");
            if let Err(e) = write_private(path, &body) {
                emit(
                    json,
                    "ERROR",
                    &format!("error: writing the report {}: {e}", path.display()),
                );
                files_ok = false;
            }
        }
        if let Some(path) = &args.metrics {
            let unix = ended
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let text = metrics(&report, unix, totals.elapsed);
            if let Err(e) = write_private(path, text.as_bytes()) {
                emit(
                    json,
                    "ERROR",
                    &format!("error: writing the metrics {}: {e}", path.display()),
                );
                files_ok = false;
            }
        }
    }
    let deleted = (!plan.retains.is_empty()).then_some(deleted);
    let line = summary(&totals, select_errors, deleted);
    println!("{}", super::log_line(json, "INFO", &line));
    if interrupted != 0 {
        emit(
            json,
            "WARN",
            &format!(
                "interrupted: {} not finished; run the same command again to continue",
                plural(totals.interrupted, "image")
            ),
        );
        return Ok(ExitCode::from(interrupted));
    }
    Ok(if failures.is_empty() && files_ok && saved_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::exit::PARTIAL)
    })
}
