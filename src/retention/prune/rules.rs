//! Pruning carried out, rule by rule: every repository of the rule read and decided, the
//! rule's `max_deletions` valve applied across them, then the deletions made and recorded.
//! `ferry run` calls it with the registries, `ferry plan` with overlays of them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use super::{apply, hold, plan_repo, valve, Judge, Ledger, Prune, PruneDone, RepoPrune, Scope};
use crate::reference::display_repo;
use crate::reference::Location;
use crate::registry::{Registry, RegistryError};
use crate::retention::decisions::Image;
use crate::retention::deletions::Journal;
use crate::retention::inventory::Manifests;
use crate::retention::policies::PinMap;
use crate::retention::refusals::Refusals;

/// What one `prune` rule covers this run.
#[derive(Clone, Debug)]
pub struct RuleScope {
    /// The `[[copy]]` rule's number (1-based).
    pub rule: usize,
    /// The rule as people find it in their file, `copy #1 (plans/mirror.toml:3)`.
    pub label: String,
    pub prune: Prune,
    /// Where its target repositories are.
    pub target: Location,
    /// The target repositories to judge.
    pub scopes: Vec<Scope>,
    /// Repositories (or the whole rule) left alone, and why: a source that lists nothing
    /// looks like an outage. Warnings, not failures.
    pub refused: Vec<String>,
}

/// What [`run`] needs besides the rules.
pub struct Context<'a> {
    pub registries: &'a HashMap<Location, Arc<dyn Registry>>,
    pub now: SystemTime,
    /// What is in use (`[in_use]`), and whether to hold every deletion.
    pub pins: &'a PinMap,
    pub ledger: &'a Ledger,
    pub journal: &'a dyn Journal,
    /// Told of each deletion made.
    pub note: &'a (dyn Fn(&str) + Sync),
}

/// One target repository of a rule: its decisions and the deletions made (a deletion the
/// registry refused for good made a keep, see [`super::PruneDone`]).
#[derive(Debug)]
pub struct PrunedRepo {
    /// `registry/repo`, for people.
    pub repository: String,
    pub repo: String,
    /// Its decisions as carried out: an image the look before its DELETE found tagged since
    /// the inventory is a keep here, saying why.
    pub decisions: Result<RepoPrune, RegistryError>,
    pub done: Vec<PruneDone>,
    /// The longest time between a digest's last look and its DELETE (`None`: none sent).
    pub window: Option<std::time::Duration>,
}

/// One `prune` rule, carried out.
#[derive(Debug)]
pub struct Pruned {
    pub rule: usize,
    /// See [`RuleScope::label`].
    pub label: String,
    pub repos: Vec<PrunedRepo>,
    /// Why nothing of the rule was deleted (the valve, or a failed `[in_use]` source): a
    /// failure of the run.
    pub held_back: Option<String>,
    /// Repositories left alone, and why (see [`RuleScope::refused`]).
    pub warnings: Vec<String>,
}

/// Prune every rule in turn.
pub async fn run(rules: &[RuleScope], cx: &Context<'_>) -> Vec<Pruned> {
    let mut out = Vec::with_capacity(rules.len());
    for rule in rules {
        out.push(run_rule(rule, cx).await);
    }
    out
}

async fn run_rule(rule: &RuleScope, cx: &Context<'_>) -> Pruned {
    let registry = cx
        .registries
        .get(&rule.target)
        .expect("a registry for every location")
        .clone();
    let name = registry.name().to_string();
    let mut read: Vec<(PrunedRepo, Vec<Image>, Manifests)> = Vec::new();
    for scope in &rule.scopes {
        let (repo, mut images, mut manifests) =
            decide_repo(registry.as_ref(), rule, scope, cx).await;
        // The rule's valve weighs every repository's deletions before any is made, so the
        // inventories wait; but only those with something to delete: a repository with
        // nothing to prune keeps its decisions alone, so what waits is bounded by what
        // is pruned, not by the number of repositories.
        if repo.decisions.as_ref().map_or(true, |d| d.deletions() == 0) {
            (images, manifests) = (Vec::new(), Manifests::new());
        }
        read.push((repo, images, manifests));
    }
    let deletions: usize = read
        .iter()
        .filter_map(|(r, _, _)| r.decisions.as_ref().ok())
        .map(RepoPrune::deletions)
        .sum();
    let held_back = valve(&rule.prune, deletions).or_else(|| {
        (deletions > 0)
            .then(|| cx.pins.held().map(str::to_string))
            .flatten()
    });
    let mut repos = Vec::with_capacity(read.len());
    for (mut repo, images, mut manifests) in read {
        if let Ok(decided) = &mut repo.decisions {
            if let Some(why) = &held_back {
                hold(decided, why);
            }
            remember(&name, &repo.repo, decided, cx);
            let note = |line: &str| (cx.note)(line);
            (repo.done, repo.window) = apply(
                registry.as_ref(),
                &repo.repo,
                &images,
                &mut manifests,
                decided,
                cx.journal,
                &note,
            )
            .await;
        }
        repos.push(repo);
    }
    Pruned {
        rule: rule.rule,
        label: rule.label.clone(),
        repos,
        held_back,
        warnings: rule.refused.clone(),
    }
}

/// Read and decide one repository of a rule.
async fn decide_repo(
    registry: &dyn Registry,
    rule: &RuleScope,
    scope: &Scope,
    cx: &Context<'_>,
) -> (PrunedRepo, Vec<Image>, Manifests) {
    let name = registry.name();
    let copied = cx.ledger.copied_from(name, &scope.repo, &scope.source);
    let missing = cx
        .ledger
        .missing
        .get(&(name.to_string(), scope.repo.clone()))
        .cloned()
        .unwrap_or_default();
    let pins = cx.pins.get(name, &scope.repo);
    let refusals = Refusals::of(registry, cx.journal.refusals(name, &scope.repo));
    let judge = Judge {
        prune: &rule.prune,
        copied: &copied,
        missing: &missing,
        scope,
        in_use: &pins.in_use,
        refusals: &refusals,
        now: cx.now,
    };
    let (images, manifests, decisions) = match plan_repo(registry, &judge).await {
        Ok((images, manifests, decided)) => (images, manifests, Ok(decided)),
        Err(e) => (Vec::new(), Manifests::new(), Err(e)),
    };
    let repo = PrunedRepo {
        repository: display_repo(&rule.target, &scope.repo),
        repo: scope.repo.clone(),
        decisions,
        done: Vec::new(),
        window: None,
    };
    (repo, images, manifests)
}

/// Record which tags are missing from now on, and which are not any more.
fn remember(registry: &str, repo: &str, decided: &RepoPrune, cx: &Context<'_>) {
    if !decided.newly_missing.is_empty() {
        cx.journal
            .missing(registry, repo, &decided.newly_missing, cx.now);
    }
    cx.journal.not_missing(registry, repo, &decided.found_again);
}
