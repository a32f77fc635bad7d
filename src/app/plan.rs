//! `ferry plan PLAN`: what `ferry run` would do, writing nothing. It executes the plan the way
//! `run` does ([`crate::execute`]: the same stages in the same order, the same engine, the
//! same retention), against overlays of the registries that keep every write in memory, and
//! with the checkpoint read but never written. Each line is an outcome the run would have,
//! given unchanged registries.

use std::collections::BTreeMap;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use super::exit;
use super::run::registries;
use super::state_file::state_path;
use crate::cli::PlanArgs;
use crate::execute::checkpoint::StateJournal;
use crate::execute::shard::Shard;
use crate::execute::{execute, overlays, Context, Execution};
use crate::plan::Plan;
use crate::report::hints::chain as error_chain;
use crate::retention::policies::Retained;
use crate::retention::prune::rules::Pruned;
use crate::retention::prune::{PruneAction, PruneDecision};
use crate::retention::Action;
use crate::state::State;

mod plan_items;
mod plan_markdown;
mod plan_output;

use crate::execute::label::copy_label;
use plan_items::{Notes, PlanItems};
use plan_markdown::MarkdownItems;
pub use plan_output::{
    PlanCopy, PlanDecision, PlanItem, PlanOutput, PlanPrune, PlanPruneRepo, PlanPulls,
    PlanRegistry, PlanRepo, PlanTotals,
};

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
    let reader = State::read_only(&path)?;
    let journal = std::sync::Arc::new(StateJournal::dry(reader, &plan, args.recheck));
    let notes = std::sync::Arc::new(Notes::default());
    // Each item is printed as it finishes: what the run would do, as it would do it.
    let items = PlanItems::begin(args.output, notes.clone(), || {
        let labels = (1..=plan.copies.len()).map(|n| copy_label(&plan, n));
        MarkdownItems::new(plan.path.display().to_string(), labels.collect())
    })?;
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
        sink: &items,
        budget: None,
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
    let unresolved = unresolved(&plan, &execution);
    let mut rest = output_of(&plan, &execution, &requests);
    for (host, o) in &handles {
        if let (Some(r), Some(p)) = (rest.registries.get_mut(host), pulls(o)) {
            r.pulls = Some(p);
        }
    }
    rest.totals = PlanTotals {
        errors: rest.failures.len() + execution.unlisted_failures,
        ..totals(&execution, items.totals())
    };
    items.end(unresolved, rest)?;
    Ok(if execution.failures(&plan).is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::PARTIAL)
    })
}

/// The rules that could not be resolved, and those that selected nothing without
/// `allow_empty`, one line each.
fn unresolved(plan: &Plan, execution: &Execution) -> Vec<String> {
    let empty = execution
        .selected_nothing()
        .map(|e| crate::execute::label::empty_line(plan, e));
    (execution.select_errors.iter().map(|e| error_chain(e)))
        .chain(empty)
        .collect()
}

/// What `ferry plan` says after its items about an execution over overlays (its notes
/// and the counts of items are the items' printer's).
fn output_of(plan: &Plan, execution: &Execution, requests: &[(String, u64)]) -> PlanOutput {
    let retention = execution
        .retained
        .iter()
        .map(|r| repo(plan.retains[r.policy - 1].to_string(), r))
        .collect();
    let prune = execution.pruned.iter().map(prune_rule).collect();
    PlanOutput {
        prune,
        failures: execution.failures(plan),
        totals: PlanTotals::default(),
        notes: Vec::new(),
        registries: budgets(plan, requests),
        retention,
    }
}

/// The counts of the closing line: the items' (`items`), and the execution's deletions.
fn totals(execution: &Execution, items: PlanTotals) -> PlanTotals {
    PlanTotals {
        delete: execution.retained.iter().map(|r| r.deletions.len()).sum(),
        kept_in_use: execution.kept_in_use(),
        prune: execution
            .pruned
            .iter()
            .flat_map(|p| &p.repos)
            .map(|r| r.done.len())
            .sum(),
        ..items
    }
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
                pulls: None,
            };
            (host.clone(), budget)
        })
        .collect()
}

/// Where manifest GETs count as pulls, the GETs the simulated run sent (each one the run
/// sends) and the budget the registry's manifest responses showed.
fn pulls(o: &crate::registry::overlay::Overlay) -> Option<PlanPulls> {
    if !o.inner().capabilities().counts_pulls {
        return None;
    }
    let shown = o.inner().stats().and_then(|s| s.pull_budget);
    let needed = o.pulls();
    Some(PlanPulls {
        needed,
        limit: shown.map(|b| b.limit),
        remaining: shown.map(|b| b.remaining),
        window_seconds: shown.map(|b| b.window_seconds),
        seconds_at_pull_limit: shown
            .filter(|b| b.limit > 0)
            .map(|b| needed as f64 / b.limit as f64 * b.window_seconds as f64),
    })
}

/// One `prune` rule's decisions.
fn prune_rule(p: &Pruned) -> PlanPrune {
    PlanPrune {
        held_back: p.held_back.clone(),
        rule: p.label.clone(),
        warnings: p.warnings.clone(),
        pruning: p.repos.iter().map(|r| r.done.len()).sum(),
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
fn repo(policy: String, r: &Retained) -> PlanRepo {
    let p = &r.plan;
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
            deleting: r.deletions.len(),
            kept_in_use: d.in_use,
            conflicts: d.conflicts.len(),
        },
    }
}
