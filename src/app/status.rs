//! `ferry status`: what the checkpoint says about a run, for people or as JSON.

use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use indicatif::HumanBytes;
use serde_json::json;

use super::restore_command::undo_command;
use super::state_file::{state_path, StateUnusable};
use crate::cli::{Output, StatusArgs};
use crate::plan::Plan;
use crate::report::timestamp;
use crate::state::{RunSummary, State};

fn when(unix: i64) -> String {
    timestamp(UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64))
}

pub fn status(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let plan = args.plan.as_deref().map(Plan::load).transpose()?;
    let path = state_path(args.state.as_deref(), plan.as_ref());
    if !path.exists() {
        return Err(StateUnusable::Missing(path).into());
    }
    let state = State::open(&path).map_err(StateUnusable::Open)?;
    let Some(run) = state.run_summary(args.run)? else {
        anyhow::bail!(match args.run {
            Some(id) => format!("{} has no run {id}", path.display()),
            None => format!("{} records no run yet", path.display()),
        });
    };
    let parked = parked_uploads(&state, &path, &run)?;
    // How to undo the run's deletions, as the run itself said.
    let state_flag = args.state.is_some().then_some(path.as_path());
    let undo = (!run.deletions.is_empty())
        .then(|| undo_command(std::path::Path::new(&run.plan_path), state_flag, run.id));
    let refusals = refusals(&state)?;
    match args.output {
        Output::Json => {
            let mut doc = to_json(&run);
            doc["parked"] = serde_json::to_value(&parked)?;
            if let Some(undo) = &undo {
                doc["restore"] = json!(undo);
            }
            doc["refusals"] = serde_json::to_value(&refusals)?;
            println!("{}", serde_json::to_string_pretty(&doc)?)
        }
        Output::Text => {
            let undo = undo.map(|u| format!("  to undo its deletions: {u}\n"));
            print!(
                "{}{}{}{}",
                to_text(&run),
                undo.unwrap_or_default(),
                parked_text(&parked),
                refusals_text(&refusals)
            )
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A deletion a registry refused for good: kept by every run since, without asking again.
#[derive(serde::Serialize)]
struct Refusal {
    /// `registry/repo@digest`.
    manifest: String,
    version_id: Option<String>,
    /// The registry's own words.
    reason: String,
    /// When it first refused, and when a run last kept it for that.
    first_at: String,
    last_at: String,
}

/// Every refusal the checkpoint remembers (whichever run met it), by manifest.
fn refusals(state: &State) -> anyhow::Result<Vec<Refusal>> {
    let mut out: Vec<Refusal> = state
        .refusals()?
        .into_iter()
        .map(|((registry, repo, digest), r)| Refusal {
            manifest: format!("{registry}/{repo}@{digest}"),
            version_id: r.version_id,
            reason: r.reason,
            first_at: when(r.first_at),
            last_at: when(r.last_at),
        })
        .collect();
    out.sort_by(|a, b| a.manifest.cmp(&b.manifest));
    Ok(out)
}

fn refusals_text(refusals: &[Refusal]) -> String {
    if refusals.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "  refused by the registry: {} (kept, not asked again)\n",
        refusals.len()
    );
    for r in refusals {
        let version = r
            .version_id
            .as_ref()
            .map(|v| format!(" (version {v})"))
            .unwrap_or_default();
        out.push_str(&format!(
            "    {}{version}: {}; first {}, last kept {}\n",
            r.manifest, r.reason, r.first_at, r.last_at
        ));
    }
    out
}

/// An upload the checkpoint can continue.
#[derive(serde::Serialize)]
struct ParkedUpload {
    /// `registry/repo` of the target.
    target: String,
    source: String,
    digest: String,
    /// Bytes the target's session confirmed, of `size`.
    offset: u64,
    size: u64,
    /// Bytes of it in the spool (0: none).
    spooled: u64,
    /// `parked`: stopped at a chunk boundary by SIGINT/SIGTERM, the session open unless the
    /// registry expired it since; `unknown`: the run was killed, and a PATCH cut mid-body
    /// cancels the session on CNCF distribution (the spool, else the source, fills in).
    session: &'static str,
}

fn parked_uploads(
    state: &State,
    path: &std::path::Path,
    run: &RunSummary,
) -> anyhow::Result<Vec<ParkedUpload>> {
    let mut spool = path.as_os_str().to_owned();
    spool.push(".spool");
    let spool = std::path::PathBuf::from(spool);
    let session = match run.status.as_str() {
        "interrupted" => "parked",
        _ => "unknown",
    };
    let mut out: Vec<ParkedUpload> = state
        .parked_uploads()?
        .into_iter()
        .map(|((registry, repo, digest), u)| {
            let file = spool.join(digest.replacen(':', "-", 1));
            let spooled = std::fs::metadata(file).map_or(0, |m| m.len());
            ParkedUpload {
                target: format!("{registry}/{repo}"),
                source: u.source,
                digest,
                offset: u.offset,
                size: u.size,
                spooled,
                session,
            }
        })
        .collect();
    out.sort_by(|a, b| (&a.target, &a.digest).cmp(&(&b.target, &b.digest)));
    Ok(out)
}

fn parked_text(parked: &[ParkedUpload]) -> String {
    if parked.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "  parked uploads: {} (the next run continues them)\n",
        parked.len()
    );
    for p in parked {
        let session = match p.session {
            "parked" => "session parked at a chunk boundary",
            _ => "session state unknown (the run was killed)",
        };
        let spooled = match p.spooled {
            0 => String::new(),
            n => format!(", {} in the spool", HumanBytes(n)),
        };
        out.push_str(&format!(
            "    {}@{} from {}: {} of {}{spooled}; {session}\n",
            p.target,
            p.digest,
            p.source,
            HumanBytes(p.offset),
            HumanBytes(p.size),
        ));
    }
    out
}

fn to_json(run: &RunSummary) -> serde_json::Value {
    json!({
        "run": run.id,
        "plan": run.plan_path,
        "plan_fingerprint": run.plan_fingerprint,
        "started_at": when(run.started_at),
        "ended_at": run.ended_at.map(when),
        "status": run.status,
        "totals": {
            "copied": run.totals.copied,
            "present": run.totals.present,
            "unchanged": run.totals.unchanged,
            "failed": run.totals.failed,
            "skipped": run.totals.skipped,
            "interrupted": run.totals.interrupted,
            "bytes": run.totals.bytes,
            "deleted": run.totals.deleted,
            "pruned": run.totals.pruned,
        },
        "deletions": run.deletions.iter().map(|(what, tags, reason)| json!({"manifest": what, "tags": tags, "reason": reason})).collect::<Vec<_>>(),
        "items_by_status": run.items_by_status,
        "failures": run.failures.iter().map(|(item, error)| json!({"item": item, "error": error})).collect::<Vec<_>>(),
    })
}

fn to_text(run: &RunSummary) -> String {
    let mut out = String::new();
    let elapsed = run
        .ended_at
        .map(|e| format!(", {} s", (e - run.started_at).max(0)))
        .unwrap_or_default();
    out.push_str(&format!(
        "run {} of {}: {}{elapsed}\n  started {}{}\n",
        run.id,
        run.plan_path,
        match run.status.as_str() {
            "killed" => "killed (no clean exit: SIGKILL, out of memory or power loss; what it finished is recorded, run the plan again to continue)",
            other => other,
        },
        when(run.started_at),
        run.ended_at
            .map(|e| format!(", ended {}", when(e)))
            .unwrap_or_default(),
    ));
    let t = &run.totals;
    out.push_str(&format!(
        "  images: {} copied, {} already present, {} unchanged (trusted from the checkpoint), {} skipped (referrers not carried), {} interrupted; {} transferred\n",
        t.copied,
        t.present,
        t.unchanged,
        t.skipped,
        t.interrupted,
        HumanBytes(t.bytes)
    ));
    // As the run's summary counts them: failed items, rules, retention and pruning.
    out.push_str(&format!("  failures: {}\n", t.failed));
    if !run.items_by_status.is_empty() {
        let counts: Vec<String> = run
            .items_by_status
            .iter()
            .map(|(s, n)| format!("{n} {s}"))
            .collect();
        out.push_str(&format!("  recorded items: {}\n", counts.join(", ")));
    }
    for (item, error) in &run.failures {
        out.push_str(&format!("  failed: {item}: {error}\n"));
    }
    if !run.deletions.is_empty() || t.deleted + t.pruned > 0 {
        out.push_str(&format!(
            "  deleted: {} by retention, {} pruned\n",
            t.deleted, t.pruned
        ));
        // The JSON output has them all; a terminal gets the first ones.
        for (what, tags, reason) in run.deletions.iter().take(20) {
            let tags = if tags.is_empty() { "untagged" } else { tags };
            out.push_str(&format!("    {what} ({tags}): {reason}\n"));
        }
        if run.deletions.len() > 20 {
            out.push_str(&format!(
                "    … and {} more (--output json)\n",
                run.deletions.len() - 20
            ));
        }
    }
    out
}
