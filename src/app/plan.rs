//! `ferry plan PLAN`: what `ferry run` would do, writing nothing. It executes the plan the way
//! `run` does ([`super::execute`]: the same stages in the same order, the same engine, the
//! same retention), against overlays of the registries that keep every write in memory, and
//! with the checkpoint read but never written. Each line is an outcome the run would have,
//! given unchanged registries.

use std::process::ExitCode;

use indicatif::HumanBytes;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::execute::{execute, overlays, Context, Execution};
use super::journal::StateJournal;
use super::run::{registries, state_path};
use crate::cli::{Output, PlanArgs};
use crate::copy::{Item, Outcome};
use crate::plan::Plan;
use crate::report::error_chain;
use crate::retention::{Action, RepoPlan};
use crate::state::State;

/// What the plan line of one item says: the action, and what follows the item.
fn describe_item(
    item: &Item,
    outcome: Option<&Outcome>,
) -> (&'static str, String, serde_json::Value) {
    let subject = item
        .subject
        .as_ref()
        .map(|s| format!(", refers to {}", s.short()))
        .unwrap_or_default();
    let placed = outcome.and_then(Outcome::placed);
    let digest = placed.map(|(d, _)| d);
    let rewritten = placed.and_then(|(old, new)| new.map(|new| format!("{old} → {new}")));
    let (action, bytes, left_out, reason) = match outcome {
        Some(Outcome::Copied { stats, .. }) => ("copy", Some(stats.bytes), stats.left_out, None),
        Some(Outcome::Present { .. }) => ("present", None, 0, None),
        Some(Outcome::Unchanged { .. }) => ("unchanged", None, 0, None),
        Some(Outcome::Skipped { reason }) => ("skip", None, 0, Some(reason.clone())),
        Some(Outcome::Failed { error }) => ("error", None, 0, Some(error_chain(error.as_ref()))),
        None => ("error", None, 0, Some("not reached".to_string())),
    };
    // A registry that refuses an index whose children are missing says so only when it is
    // written to: the plan cannot know, and says that instead of guessing.
    let uncertain = match (outcome, &item.platforms) {
        (Some(Outcome::Copied { stats, .. }), Some(p))
            if stats.left_out > 0
                && p.mode == crate::plan::PlatformMode::Sparse
                && item.target.registry.name() != "oci:" =>
        {
            Some("the target may refuse an index whose children are missing (CNCF distribution does); only the run can tell")
        }
        _ => None,
    };
    let text = format!(
        "{}{subject}{}{}{}{}",
        digest
            .map(|d| format!(" ({})", d.short()))
            .unwrap_or_default(),
        match left_out {
            0 => String::new(),
            n => format!(", {n} index children left out by `platforms`"),
        },
        rewritten
            .as_deref()
            .map(|r| format!("; rewritten: {r}"))
            .unwrap_or_default(),
        reason
            .as_deref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default(),
        uncertain.map(|u| format!(" ({u})")).unwrap_or_default()
    );
    let json = json!({
        "source": item.source_display(),
        "target": item.target_display(),
        "digest": digest.map(|d| d.to_string()),
        "action": action,
        "bytes": bytes,
        "rewritten": rewritten,
        "subject": item.subject.as_ref().map(|s| s.to_string()),
        "left_out": left_out,
        "error": reason,
        "uncertain": uncertain,
    });
    (action, text, json)
}

/// Keeps the notes a run would print (a duplicate dropped, a deletion made), for the plan.
#[derive(Default)]
struct Notes(std::sync::Mutex<Vec<String>>);

impl crate::report::Reporter for Notes {
    fn note(&self, message: &str) {
        // Deletions are listed with their repository's decisions already.
        if !message.starts_with("deleted ") {
            self.0.lock().expect("notes").push(message.to_string());
        }
    }
}

pub async fn plan(args: PlanArgs) -> anyhow::Result<ExitCode> {
    let plan = Plan::load(&args.plan)?;
    let real = registries(&plan, None)?;
    let (simulated, handles) = overlays(&real);
    // The checkpoint a run would consult, read as it stands; nothing is written.
    let path = state_path(args.state.as_deref(), Some(&plan));
    let snapshot = State::read_only_snapshot(&path)?;
    let journal = std::sync::Arc::new(StateJournal::dry(snapshot, &plan, args.recheck));
    let notes = std::sync::Arc::new(Notes::default());
    let cx = Context {
        registries: &simulated,
        journal,
        reporter: notes.clone(),
        concurrency: plan.concurrency,
        stop: CancellationToken::new(),
        abort: CancellationToken::new(),
        owns: &|_| true,
    };
    let execution = execute(&plan, &cx).await;
    let requests: Vec<(String, u64)> = handles
        .iter()
        .filter(|(name, _)| name != "oci:")
        .map(|(name, o)| (name.clone(), o.requests()))
        .collect();
    let notes = std::mem::take(&mut *notes.0.lock().expect("notes"));
    print_plan(&plan, &execution, &notes, &requests, args.output)?;
    Ok(if execution.failures(&plan).is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::exit::PARTIAL)
    })
}

fn print_plan(
    plan: &Plan,
    execution: &Execution,
    notes: &[String],
    requests: &[(String, u64)],
    output: Output,
) -> anyhow::Result<()> {
    let mut text = String::new();
    let mut copies_json = Vec::new();
    for n in notes {
        text.push_str(&format!("note      {n}\n"));
    }
    let (mut to_copy, mut present, mut unchanged, mut skipped, mut bytes) = (0, 0, 0, 0, 0u64);
    for e in &execution.select_errors {
        text.push_str(&format!("error   {}\n", error_chain(e)));
        copies_json.push(json!({"error": error_chain(e)}));
    }
    for (item, outcome) in &execution.items {
        let (action, rest, j) = describe_item(item, outcome.as_ref());
        match outcome {
            Some(Outcome::Copied { stats, .. }) => {
                to_copy += 1;
                bytes += stats.bytes;
            }
            Some(Outcome::Present { .. }) => present += 1,
            Some(Outcome::Unchanged { .. }) => unchanged += 1,
            Some(Outcome::Skipped { .. }) => skipped += 1,
            _ => {}
        }
        text.push_str(&format!("{action:<9} {item}{rest}\n"));
        copies_json.push(j);
    }

    let mut retention_json = Vec::new();
    let mut policy = 0;
    for r in &execution.retained {
        if r.policy != policy {
            policy = r.policy;
            text.push_str(&format!("{}\n", plan.retains[policy - 1]));
        }
        let (t, j, _, _) = describe(&r.plan);
        text.push_str(&t);
        retention_json.push(j);
    }
    let to_delete: usize = execution.retained.iter().map(|r| r.deletions.len()).sum();

    // What the requests cost against each registry's rate budget.
    let mut budget_json = serde_json::Map::new();
    for (host, n) in requests {
        let limit = plan.registry(host).rate_limit;
        let time = limit.map(|l| *n as f64 / f64::from(l.requests_per_second.get()));
        text.push_str(&format!(
            "registry {host}: about {n} requests{}\n",
            time.map(|t| format!(", at least {t:.0} s at its rate_limit"))
                .unwrap_or_default()
        ));
        budget_json.insert(
            host.clone(),
            json!({"requests": n, "seconds_at_rate_limit": time}),
        );
    }
    let failures = execution.failures(plan);
    for f in &failures {
        text.push_str(&format!("failed: {f}\n"));
    }

    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "copies": copies_json,
                "retention": retention_json,
                "failures": failures,
                "notes": notes,
                "totals": {
                    "copy": to_copy, "present": present, "unchanged": unchanged,
                    "skip": skipped, "bytes": bytes, "delete": to_delete,
                    "errors": failures.len(),
                },
                "registries": budget_json,
            }))?
        ),
        Output::Text => {
            print!("{text}");
            println!(
                "plan: {to_copy} images to copy ({}), {} already present, {to_delete} to delete, {} errors",
                HumanBytes(bytes),
                present + unchanged,
                failures.len()
            );
        }
    }
    Ok(())
}

/// Text and JSON for one repository's decisions; the number of deletions; whether it failed.
pub fn describe(p: &RepoPlan) -> (String, serde_json::Value, usize, bool) {
    match &p.decisions {
        Err(e) => (
            format!(
                "  {}: not read, nothing there is deleted: {}\n",
                p.repository,
                error_chain(e)
            ),
            json!({"repository": p.repository, "error": error_chain(e)}),
            0,
            true,
        ),
        Ok(d) => {
            let deletes = d
                .decisions
                .iter()
                .filter(|x| x.action == Action::Delete)
                .count();
            let mut t = format!(
                "  {}: {} images: keep {}, delete {}\n",
                p.repository,
                d.decisions.len(),
                d.decisions.len() - deletes,
                deletes
            );
            if let Some(why) = &d.held_back {
                t.push_str(&format!("    held back: {why}\n"));
            }
            for x in &d.decisions {
                let tags = if x.tags.is_empty() {
                    "(untagged)".to_string()
                } else {
                    x.tags.join(", ")
                };
                t.push_str(&format!(
                    "    {:<6} {} {tags}: {}\n",
                    match x.action {
                        Action::Keep => "keep",
                        Action::Delete => "delete",
                    },
                    x.digest.short(),
                    x.reason
                ));
            }
            let j = json!({
                "repository": p.repository,
                "held_back": d.held_back,
                "decisions": d.decisions.iter().map(|x| json!({
                    "digest": x.digest.to_string(),
                    "tags": x.tags,
                    "action": match x.action { Action::Keep => "keep", Action::Delete => "delete" },
                    "reason": x.reason,
                })).collect::<Vec<_>>(),
            });
            (t, j, deletes, false)
        }
    }
}
