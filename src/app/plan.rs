//! `ferry plan PLAN`: what `ferry run` would do, writing nothing. It executes the plan the way
//! `run` does ([`crate::execute`]: the same stages in the same order, the same engine, the
//! same retention), against overlays of the registries that keep every write in memory, and
//! with the checkpoint read but never written. Each line is an outcome the run would have,
//! given unchanged registries.

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use super::exit;
use super::run::registries;
use super::state_file::state_path;
use crate::cli::{Output, PlanArgs};
use crate::copy::{Item, ItemKey, Outcome};
use crate::execute::checkpoint::StateJournal;
use crate::execute::shard::Shard;
use crate::execute::{execute, overlays, Context, Execution};
use crate::plan::Plan;
use crate::report::hints::chain as error_chain;
use crate::retention::prune::rules::Pruned;
use crate::retention::prune::{PruneAction, PruneDecision};
use crate::retention::{Action, RepoPlan};
use crate::state::State;

mod plan_output;

pub use plan_output::{
    PlanCopy, PlanDecision, PlanItem, PlanOutput, PlanPrune, PlanPruneRepo, PlanRegistry, PlanRepo,
    PlanTotals,
};

/// May the target refuse this item, though the plan copies it? A registry that refuses an
/// index whose children are missing says so only when it is written to.
fn refusable(item: &Item, outcome: Option<&Outcome>) -> bool {
    matches!(
        (outcome, &item.platforms),
        (Some(Outcome::Copied { stats, .. }), Some(p))
            if stats.left_out > 0
                && p.mode == crate::copy::copy_rule::PlatformMode::Sparse
                && item.target.registry.name() != "oci:"
    )
}

/// What only the run can tell of each item: whether an index that leaves children out is
/// accepted, and so whether the referrers that wait for it ([`Item::after`], through any
/// chain of them) are copied or skipped.
fn uncertainties(items: &[(Item, Option<Outcome>)]) -> Vec<Option<String>> {
    let refused: Vec<bool> = items
        .iter()
        .map(|(i, o)| refusable(i, o.as_ref()))
        .collect();
    // A referrer waits for the first item with its parent's key, as the engine does.
    let mut first: HashMap<ItemKey, usize> = HashMap::new();
    for (n, (i, _)) in items.iter().enumerate() {
        first.entry(i.key()).or_insert(n);
    }
    // The uncertain item that item `n` waits for, through any chain of referrers.
    let root = |mut n: usize| {
        // Bounded: a chain visits each item at most once.
        for _ in 0..items.len() {
            n = *first.get(&items[n].0.after.as_ref()?.parent)?;
            if refused[n] {
                return Some(n);
            }
        }
        None
    };
    (0..items.len())
        .map(|n| match refused[n] {
            true => Some("the target may refuse an index whose children are missing (CNCF distribution does); only the run can tell".to_string()),
            false => root(n).map(|r| format!(
                "depends on {}, which the target may refuse; only the run can tell",
                items[r].0.target_display()
            )),
        })
        .collect()
}

/// One item as the plan shows it: the outcome the run would have, and what only the run can
/// tell of it.
fn item(item: &Item, outcome: Option<&Outcome>, uncertain: Option<String>) -> PlanItem {
    let placed = outcome.and_then(Outcome::placed);
    let rewritten = placed.and_then(|(old, new)| new.map(|new| format!("{old} → {new}")));
    let (action, bytes, left_out, error) = match outcome {
        Some(Outcome::Copied { stats, .. }) => ("copy", Some(stats.bytes), stats.left_out, None),
        Some(Outcome::Present { .. }) => ("present", None, 0, None),
        Some(Outcome::Unchanged { .. }) => ("unchanged", None, 0, None),
        Some(Outcome::Skipped { reason }) => ("skip", None, 0, Some(reason.clone())),
        Some(Outcome::Failed { error }) => ("error", None, 0, Some(error_chain(error.as_ref()))),
        None => ("error", None, 0, Some("not reached".to_string())),
    };
    let (updated, put_back) = outcome.map(Outcome::changes).unwrap_or_default();
    PlanItem {
        updated,
        put_back,
        action,
        bytes,
        digest: placed.map(|(d, _)| d.clone()),
        error,
        left_out,
        rewritten,
        source: item.source_display(),
        subject: item.subject.clone(),
        target: item.target_display(),
        uncertain,
    }
}

/// Keeps the notes a run would print (a duplicate dropped, a deletion made), for the plan.
#[derive(Default)]
struct Notes(std::sync::Mutex<Vec<String>>);

impl crate::copy::Reporter for Notes {
    fn note(&self, message: &str) {
        // Deletions, and the keeps a registry imposes, are listed with their repository's
        // decisions already.
        let decided = ["deleted ", "pruned ", "kept "];
        if !decided.iter().any(|d| message.starts_with(d)) {
            self.0.lock().expect("notes").push(message.to_string());
        }
    }
}

pub async fn plan(args: PlanArgs) -> anyhow::Result<ExitCode> {
    let plan = Plan::load(&args.plan)?;
    let real = registries(&plan, None)?;
    // Checked where `run` checks it, and said in its words.
    let shard = Shard::resolve(args.shard.as_deref(), args.shards)?;
    let owns = move |repository: &str| shard.is_none_or(|s| s.owns(repository));
    let (simulated, handles) = overlays(&real, &plan);
    // The checkpoint a run would consult (the shard's own under `--shard`), read as it
    // stands; nothing is written.
    let path = state_path(args.state.as_deref(), Some(&plan));
    let path = match shard {
        Some(s) => s.state_path(&path),
        None => path,
    };
    let snapshot = State::read_only_snapshot(&path)?;
    let journal = std::sync::Arc::new(StateJournal::dry(snapshot, &plan, args.recheck));
    let notes = std::sync::Arc::new(Notes::default());
    if let Some(s) = shard {
        // What the run says first.
        crate::copy::Reporter::note(
            notes.as_ref(),
            &format!("shard {s}: this run takes its share of the repositories"),
        );
    }
    let cx = Context {
        registries: &simulated,
        journal,
        reporter: notes.clone(),
        concurrency: plan.concurrency,
        stop: CancellationToken::new(),
        abort: CancellationToken::new(),
        owns: &owns,
        spool: None,
        audit: None,
        lease: crate::execute::leasing::Leasing::Look { shard },
    };
    let execution = execute(&plan, &cx).await;
    // The registries the plan's rules use, and any other that got requests: a section no
    // rule names costs nothing and gets no line.
    let used = plan.rule_hosts();
    let requests: Vec<(String, u64)> = handles
        .iter()
        .filter(|(name, _)| name != "oci:")
        .map(|(name, o)| (name.clone(), o.requests()))
        .filter(|(name, n)| *n > 0 || used.contains(name))
        .collect();
    let notes = std::mem::take(&mut *notes.0.lock().expect("notes"));
    print_plan(&plan, &execution, &notes, &requests, args.output)?;
    Ok(if execution.failures(&plan).is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::PARTIAL)
    })
}

fn print_plan(
    plan: &Plan,
    execution: &Execution,
    notes: &[String],
    requests: &[(String, u64)],
    output: Output,
) -> anyhow::Result<()> {
    let out = output_of(plan, execution, notes, requests);
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&out)?),
        Output::Text => print!("{}", out.text()),
    }
    Ok(())
}

/// What `ferry plan` says about an execution over overlays.
fn output_of(
    plan: &Plan,
    execution: &Execution,
    notes: &[String],
    requests: &[(String, u64)],
) -> PlanOutput {
    let empty = execution
        .selected_nothing()
        .map(|e| crate::execute::label::empty_line(plan, e));
    let unresolved = (execution.select_errors.iter().map(|e| error_chain(e)))
        .chain(empty)
        .map(|error| PlanCopy::Unresolved { error });
    let uncertain = uncertainties(&execution.items);
    let items = execution
        .items
        .iter()
        .zip(uncertain)
        .map(|((i, o), u)| PlanCopy::Item(Box::new(item(i, o.as_ref(), u))));
    let retention = execution
        .retained
        .iter()
        .map(|r| repo(plan.retains[r.policy - 1].to_string(), &r.plan))
        .collect();
    let prune = execution.pruned.iter().map(prune_rule).collect();
    let failures = execution.failures(plan);
    PlanOutput {
        prune,
        items: unresolved.chain(items).collect(),
        totals: totals(execution, failures.len()),
        failures,
        notes: notes.to_vec(),
        registries: budgets(plan, requests),
        retention,
    }
}

/// The counts of the closing line.
fn totals(execution: &Execution, errors: usize) -> PlanTotals {
    let mut t = PlanTotals {
        delete: execution.retained.iter().map(|r| r.deletions.len()).sum(),
        kept_in_use: execution.kept_in_use(),
        prune: execution
            .pruned
            .iter()
            .flat_map(|p| &p.repos)
            .map(|r| r.done.len())
            .sum(),
        errors,
        ..PlanTotals::default()
    };
    for (_, outcome) in &execution.items {
        match outcome {
            Some(Outcome::Copied { stats, .. }) => {
                t.copy += 1;
                t.bytes += stats.bytes;
            }
            Some(Outcome::Present { .. }) => t.present += 1,
            Some(Outcome::Unchanged { .. }) => t.unchanged += 1,
            Some(Outcome::Skipped { .. }) => t.skip += 1,
            _ => {}
        }
    }
    t
}

/// What the requests cost against each registry's rate budget.
fn budgets(plan: &Plan, requests: &[(String, u64)]) -> BTreeMap<String, PlanRegistry> {
    requests
        .iter()
        .map(|(host, n)| {
            let limit = plan.registry(host).rate_limit;
            let time = limit.map(|l| *n as f64 / f64::from(l.requests_per_second.get()));
            let budget = PlanRegistry {
                requests: *n,
                seconds_at_rate_limit: time,
            };
            (host.clone(), budget)
        })
        .collect()
}

/// One `prune` rule's decisions.
fn prune_rule(p: &Pruned) -> PlanPrune {
    PlanPrune {
        held_back: p.held_back.clone(),
        rule: p.label.clone(),
        warnings: p.warnings.clone(),
        repositories: p
            .repos
            .iter()
            .map(|r| PlanPruneRepo {
                decisions: r
                    .decisions
                    .as_ref()
                    .map(|d| d.decisions.iter().map(prune_decision).collect())
                    .unwrap_or_default(),
                error: r.decisions.as_ref().err().map(|e| error_chain(e)),
                repository: r.repository.clone(),
            })
            .collect(),
    }
}

fn prune_decision(x: &PruneDecision) -> PlanDecision {
    PlanDecision {
        action: match x.action {
            PruneAction::Keep => "keep",
            PruneAction::Delete => "delete",
            PruneAction::Untag => "untag",
        },
        digest: x.digest.clone(),
        reason: x.reason.clone(),
        tags: x.tags.clone(),
    }
}

/// One repository's decisions, under its policy's header `policy`.
fn repo(policy: String, p: &RepoPlan) -> PlanRepo {
    let repository = p.repository.clone();
    match &p.decisions {
        Err(e) => PlanRepo::NotRead {
            error: error_chain(e),
            policy,
            repository,
        },
        Ok(d) => PlanRepo::Decided {
            decisions: d
                .decisions
                .iter()
                .map(|x| PlanDecision {
                    action: match x.action {
                        Action::Keep => "keep",
                        Action::Delete => "delete",
                    },
                    digest: x.digest.clone(),
                    reason: x.reason.clone(),
                    tags: x.tags.clone(),
                })
                .collect(),
            held_back: d.held_back.clone(),
            policy,
            repository,
        },
    }
}
