//! One execution of a plan, shared by `ferry run` and `ferry plan`: the copy stages in order
//! (a rule reading what an earlier one writes runs after it), then every `[[retain]]` policy,
//! with what the copies bring pinned. `run` calls it with the registries themselves and the
//! checkpoint; `plan` with overlays of them ([`crate::registry::overlay::Overlay`]) and a
//! dry journal. One code path decides both, so the dry run says what the run does.
//!
//! The run's core, below the subcommands that share it (`run`, `plan`, `verify`, `check`):
//! it maps the plan onto the engines. [`checkpoint`] is the checkpoint as the engines'
//! journals, [`leasing`] the run lease where the run deletes, [`pruning`] what each `prune`
//! rule covers, [`shard`] a pod's share of the repositories, [`label`] how a rule is named,
//! [`sink`] where each item goes as it finishes (the execution keeps counts, not items),
//! [`budget_gate`] how a run spends a registry's pull budget, `rule_sets` which rules share
//! targets or a source read.

pub mod budget_gate;
pub mod checkpoint;
pub mod label;
pub mod leasing;
mod picks;
pub mod pruning;
mod rule_sets;
pub mod shard;
pub mod sink;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio_util::sync::CancellationToken;

use self::checkpoint::Checkpoint;
use self::label::{copy_label, empty_line, retain_label};
use self::rule_sets::{fanouts, sharing_targets};
use self::sink::{ItemSink, Tally};
use crate::copy::select::{self, Claims, Registries, SelectError};
use crate::copy::shared_read::SharedReads;
use crate::copy::spool::Spool;
use futures::StreamExt;

use crate::copy::Reporter;
use crate::copy::{CopyError, Engine, Item, Outcome, Totals, TransferTotals};
use crate::inuse;
use crate::plan::Plan;
use crate::report::hints::chain as error_chain;
use crate::report::hints::lines as hint_lines;
use crate::retention::prune::rules::Pruned;
use crate::retention::prune::PruneAction;
use crate::retention::refusals::remembered;
use crate::retention::{self, PinMap, Retained};

/// What an execution needs besides the plan.
pub struct Context<'a> {
    pub registries: &'a Registries,
    pub journal: Arc<dyn Checkpoint>,
    pub reporter: Arc<dyn Reporter>,
    /// Blob transfers (and images) in flight.
    pub concurrency: usize,
    /// Start no new work.
    pub stop: CancellationToken,
    /// Abandon work in flight.
    pub abort: CancellationToken,
    /// Does this run own a source repository (`--shard`)? Retention asks it of the
    /// repositories it reads, too.
    pub owns: &'a (dyn Fn(&str) -> bool + Sync),
    /// Where large blobs in flight are kept (`ferry run`; none for `ferry plan`).
    pub spool: Option<Arc<Spool>>,
    /// `ferry verify`: audit the copies only (`Some(deep)`): check each item at its target
    /// whole, copy nothing, and run no retention or pruning.
    pub audit: Option<bool>,
    /// Take the run lease where the plan deletes (`ferry run`), only read it (`ferry plan`),
    /// or neither.
    pub lease: leasing::Leasing,
    /// Where each item goes as it finishes, stage after stage (interrupted ones too, and
    /// those that conflict with another rule's, failed); the execution keeps none.
    pub sink: &'a dyn ItemSink,
    /// How `ferry run` spends pull budgets (none: `plan` and `verify` spend what they read).
    pub budget: Option<Arc<budget_gate::BudgetGate>>,
}

/// Everything an execution did (or, over overlays, would do).
#[derive(Default)]
pub struct Execution {
    /// The first [`sink::FAILURES_KEPT`] failed items, one line each (every item went to
    /// [`Context::sink`]).
    item_failures: Vec<String>,
    /// Failed items after those: counted, not listed.
    pub unlisted_failures: usize,
    /// Rules, or repositories of a wildcard rule, that could not be resolved.
    pub select_errors: Vec<SelectError>,
    /// Rules that selected nothing; those without `allow_empty` are failures.
    pub empty: Vec<select::Empty>,
    /// What people should know that is not an error (a duplicate dropped).
    pub notes: Vec<String>,
    pub retained: Vec<Retained>,
    /// What each `prune` rule decided and deleted.
    pub pruned: Vec<Pruned>,
    /// What the sources listed, for pruning.
    pub listings: Vec<select::Listing>,
    pub totals: Totals,
    /// What the blob transfers cost and saved (resumed, spooled, read again, parked).
    pub transfer: TransferTotals,
    /// Each target registry's window of blob transfers: where it settled, and its widest.
    pub windows: Vec<(String, usize, usize)>,
    /// Retention did not run (the run was interrupted before it).
    pub retention_skipped: bool,
    /// `[in_use]` sources that could not be read whole (retention then deleted nothing).
    pub in_use_failures: Vec<String>,
    /// The run lease held by another run or unusable (nothing was deleted), or lost while
    /// deleting.
    pub lease_failures: Vec<String>,
    /// Registries whose pull budget ran out (their images not started are parked).
    pub parked: Vec<budget_gate::Parked>,
}

impl Execution {
    /// Every failure, one line each: rules that could not be resolved, failed items (the
    /// first [`sink::FAILURES_KEPT`]; [`Execution::unlisted_failures`] counts the rest),
    /// repositories retention could not read or held back, conflicts, failed deletions.
    /// The run exits 1 when this is not empty, and `ferry plan` too.
    pub fn failures(&self, plan: &Plan) -> Vec<String> {
        let mut out: Vec<String> = self.select_errors.iter().map(|e| error_chain(e)).collect();
        out.extend(self.selected_nothing().map(|e| empty_line(plan, e)));
        out.extend(self.in_use_failures.iter().cloned());
        out.extend(self.lease_failures.iter().cloned());
        out.extend(self.item_failures.iter().cloned());
        out.extend(self.prune_failures(plan));
        for r in &self.retained {
            let repository = &r.plan.repository;
            match &r.plan.decisions {
                Err(e) => out.push(format!(
                    "{repository}: not read, nothing there is deleted: {}",
                    error_chain(e)
                )),
                Ok(d) => {
                    if let Some(why) = &d.held_back {
                        out.push(format!("{repository}: {why}"));
                    }
                    for c in &d.conflicts {
                        out.push(format!(
                            "{} would delete {repository}@{} ({}), but {}: kept. The two rules fight over it on every run: exclude those tags from the copy (`tags.exclude`, or `tags.newest` to copy only what the policy keeps) or keep them in the policy (`keep_tags`); the policy said \"{}\"",
                            retain_label(plan, r.policy),
                            c.digest,
                            if c.tags.is_empty() { "untagged".to_string() } else { c.tags.join(", ") },
                            c.pinned_by,
                            c.would,
                        ));
                    }
                }
            }
            for d in &r.deletions {
                if let Some(e) = d.failure() {
                    out.push(format!(
                        "deleting {repository}@{}: {}{}{}",
                        d.decision.digest,
                        crate::error::chain(e),
                        remembered(e),
                        hint_lines(e)
                    ));
                }
            }
        }
        out
    }

    /// What pruning could not do: a repository it could not read, a rule held back, a
    /// deletion that failed.
    fn prune_failures(&self, plan: &Plan) -> Vec<String> {
        let mut out = Vec::new();
        for p in &self.pruned {
            if let Some(why) = &p.held_back {
                out.push(format!("{}: {why}", copy_label(plan, p.rule)));
            }
            for r in &p.repos {
                if let Err(e) = &r.decisions {
                    out.push(format!(
                        "{}: not read, nothing there is pruned: {}",
                        r.repository,
                        error_chain(e)
                    ));
                }
                for d in &r.done {
                    if let Some(e) = d.failure() {
                        out.push(format!(
                            "pruning {}@{} ({}): {}{}{}",
                            r.repository,
                            d.decision.digest,
                            d.decision.tags.join(", "),
                            crate::error::chain(e),
                            remembered(e),
                            hint_lines(e)
                        ));
                    }
                }
            }
        }
        out
    }

    /// The rules that selected nothing without `allow_empty`: each is a failure.
    pub fn selected_nothing(&self) -> impl Iterator<Item = &select::Empty> {
        self.empty.iter().filter(|e| !e.allowed)
    }

    /// Prune deletions that went through: manifests deleted, and tags removed alone.
    pub fn pruned(&self) -> (usize, usize) {
        let done = self
            .pruned
            .iter()
            .flat_map(|p| &p.repos)
            .flat_map(|r| &r.done)
            .filter(|d| d.result.is_ok());
        let mut out = (0, 0);
        for d in done {
            match d.decision.action {
                PruneAction::Untag => out.1 += 1,
                _ => out.0 += 1,
            }
        }
        out
    }

    /// Images kept because they are in use that the rules alone would delete.
    pub fn kept_in_use(&self) -> usize {
        self.retained
            .iter()
            .filter_map(|r| r.plan.decisions.as_ref().ok())
            .map(|d| d.in_use)
            .sum()
    }

    /// The longest time between a digest's last look at its repository and its DELETE, over
    /// retention and pruning (`None`: no DELETE was sent).
    pub fn delete_window(&self) -> Option<std::time::Duration> {
        let retained = self.retained.iter().map(|r| r.window);
        let pruned = self.pruned.iter().flat_map(|p| &p.repos).map(|r| r.window);
        retained.chain(pruned).flatten().max()
    }

    /// Deletions that went through.
    pub fn deleted(&self) -> usize {
        self.retained
            .iter()
            .flat_map(|r| &r.deletions)
            .filter(|d| d.result.is_ok())
            .count()
    }
}

/// Run the plan's stages, then its retention policies.
pub async fn execute(plan: &Plan, cx: &Context<'_>) -> Execution {
    let engine = engine(plan, cx);
    let mut out = Execution::default();
    let tally = Mutex::new(Tally::new(plan));
    let labels: Vec<String> = (1..=plan.copies.len())
        .map(|n| copy_label(plan, n))
        .collect();
    let mut claims = Claims::labelled(move |n| {
        labels
            .get(n.wrapping_sub(1))
            .cloned()
            .unwrap_or_else(|| format!("copy #{n}"))
    })
    .sharing(sharing_targets(plan));
    for stage in select::stages(&plan.copies) {
        if cx.stop.is_cancelled() {
            break;
        }
        let rules: Vec<&_> = stage.iter().map(|&i| &plan.copies[i]).collect();
        // Resolving and copying overlap: each part is copied as soon as it is resolved.
        let (parts, resolved) = tokio::sync::mpsc::channel(select::PARTS_QUEUED);
        let resolving = async move {
            tokio::select! {
                () = select::resolve_into(&rules, cx.registries, cx.journal.as_ref(), &parts) => {}
                () = cx.abort.cancelled() => {}
            }
        };
        let copying = copy_stage(plan, cx, &engine, &mut claims, resolved, &tally, &mut out);
        futures::join!(resolving, copying);
        if cx.abort.is_cancelled() {
            break;
        }
    }
    out.transfer = engine.transfer_totals();
    out.windows = engine.windows();
    let tally = tally.into_inner().expect("tally");
    (out.totals, out.item_failures) = (tally.totals, tally.failures);
    out.unlisted_failures = tally.unlisted;
    out.parked = cx.budget.as_ref().map(|g| g.parked()).unwrap_or_default();
    // A parked run is unfinished, as an interrupted one is: nothing is deleted after it.
    if cx.stop.is_cancelled() || cx.audit.is_some() || !out.parked.is_empty() {
        out.retention_skipped = true;
        return out;
    }
    let mut pins = tally.pins.unwrap_or_default();
    if !plan.in_use.is_empty() && (!plan.retains.is_empty() || pruning::any(plan)) {
        in_use(plan, cx.registries, &mut pins, &mut out.in_use_failures).await;
    }
    // Deleting waits for the run lease (copies do not: they are safe to run twice).
    let (leases, refused) = leasing::begin(plan, &cx.lease, cx.registries, &mut pins).await;
    out.lease_failures.extend(refused);
    let guarded = leases.as_ref().map(|l| l.guard(cx.registries));
    let registries = guarded.as_ref().unwrap_or(cx.registries);
    let selected = tally.selected.unwrap_or_default();
    out.pruned = prune(plan, cx, registries, &out, &selected, &pins).await;
    out.retained = retain(plan, cx, registries, &pins).await;
    if let Some(leases) = leases {
        let note = |message: &str| cx.reporter.note(message);
        out.lease_failures.extend(leases.end(&note).await);
    }
    out
}

/// The engine of one execution, with what the context gives it (journal, spool, audit, the
/// pull budget's gate) and the plan's fan-outs.
fn engine(plan: &Plan, cx: &Context<'_>) -> Engine {
    let mut engine = Engine::new(cx.reporter.clone(), cx.concurrency)
        .adaptive(crate::plan::WINDOW_START)
        .with_journal(cx.journal.clone())
        .with_cancellation(cx.stop.clone(), cx.abort.clone())
        .remember_only(sharing_targets(plan));
    if let Some(spool) = &cx.spool {
        engine = engine.with_spool(spool.clone());
    }
    // Without a spool (`ferry plan`, `--spool-limit 0`) a fan-out still reads each manifest
    // once: the plan counts the pulls the run spends.
    let groups = fanouts(plan);
    if !groups.is_empty() {
        engine = engine.with_shared_reads(Arc::new(SharedReads::new(cx.spool.clone(), groups)));
    }
    if let Some(deep) = cx.audit {
        engine = engine.audit(deep);
    }
    if let Some(gate) = cx.budget.clone() {
        engine = engine.with_gate(gate.engine_gate(cx.journal.clone()));
    }
    engine
}

/// Every `prune` rule, after the copies: what they copied and no longer select, deleted.
/// `registries`: what the deletions go through.
async fn prune(
    plan: &Plan,
    cx: &Context<'_>,
    registries: &Registries,
    out: &Execution,
    selected: &pruning::Selected,
    pins: &PinMap,
) -> Vec<Pruned> {
    if !pruning::any(plan) {
        return Vec::new();
    }
    let ledger = cx.journal.ledger();
    let scopes = pruning::scopes(
        plan,
        cx.registries,
        &out.listings,
        &out.empty,
        selected,
        &ledger,
        cx.owns,
    );
    for s in &scopes {
        for warning in &s.refused {
            cx.reporter.note(&format!("warning: {warning}"));
        }
    }
    let note = |message: &str| cx.reporter.note(message);
    let prune = retention::prune::rules::Context {
        registries,
        now: SystemTime::now(),
        pins,
        ledger: &ledger,
        journal: cx.journal.as_ref(),
        note: &note,
    };
    retention::prune::rules::run(&scopes, &prune).await
}

/// Parts copied at once: what a run holds is a few repositories' items, whatever the number
/// of repositories. Resolved parts wait for their turn in a channel of
/// [`select::PARTS_QUEUED`]; the resolving side never leaves a read half done while it
/// waits (see `select::in_order`).
const PARTS_IN_FLIGHT: Option<usize> = Some(8);

/// One stage, part by part as its selection resolves: what this run owns of each part,
/// claimed against everything claimed before (earlier parts, earlier stages), copied while
/// later parts resolve, each item handed to the sink as it finishes. An item whose target
/// another rule already writes from another source goes to the engine contested (it tells a
/// duplicate from a conflict once that rule's item is done); one another rule writes with
/// other platforms is failed (a conflict), and its referrers skipped, without being copied.
/// Parts are claimed in the order they are resolved in, which is the plan's, so who wins a
/// tag does not depend on timing.
async fn copy_stage(
    plan: &Plan,
    cx: &Context<'_>,
    engine: &Engine,
    claims: &mut Claims,
    mut resolved: tokio::sync::mpsc::Receiver<select::Selection>,
    tally: &Mutex<Tally>,
    out: &mut Execution,
) {
    let gate = cx.budget.as_deref();
    let finish = |item: &Item, outcome: Option<&Outcome>| {
        if outcome.is_none() && gate.is_some_and(|g| g.kept_back(item)) {
            tally.lock().expect("tally").park(item);
            return cx.sink.parked(item);
        }
        tally.lock().expect("tally").take(plan, item, outcome);
        cx.sink.finished(item, outcome);
    };
    let parts = futures::stream::poll_fn(move |c| resolved.poll_recv(c));
    parts
        .map(|selection| claim_part(plan, cx, claims, selection, &finish, out))
        .for_each_concurrent(PARTS_IN_FLIGHT, |mut items| {
            let finish = &finish;
            async move {
                let (journal, reporter) = (cx.journal.as_ref(), cx.reporter.as_ref());
                let admitted = budget_gate::admit(gate, &mut items, journal, reporter, &cx.stop);
                let budget_gate::Admission::Go(_turn) = admitted.await else {
                    return items.iter().for_each(|item| finish(item, None));
                };
                let done = |i: usize, outcome: Option<Outcome>| finish(&items[i], outcome.as_ref());
                engine.copy_each(&items, &done).await;
            }
        })
        .await;
}

/// Claim what this run owns of one part (a note for each duplicate dropped), take in what
/// its selection found, and finish what it does not copy: conflicts and their referrers.
/// Returns the items to copy.
fn claim_part(
    plan: &Plan,
    cx: &Context<'_>,
    claims: &mut Claims,
    mut selection: select::Selection,
    finish: &dyn Fn(&Item, Option<&Outcome>),
    out: &mut Execution,
) -> Vec<Item> {
    let owned = std::mem::take(&mut selection.items)
        .into_iter()
        .filter(|item| (cx.owns)(&item.source.display()))
        .collect();
    let claimed = claims.claim(owned);
    for dup in &claimed.duplicates {
        cx.reporter.note(&format!(
            "skipped {dup}: {} already copies the same thing there",
            copy_label(plan, claims_rule(claims, dup))
        ));
    }
    if !claimed.items.is_empty() {
        cx.reporter.items_selected(claimed.items.len());
    }
    out.select_errors.extend(selection.errors);
    out.listings.extend(selection.listings);
    for e in selection.empty {
        if e.allowed {
            let line = empty_line(plan, &e);
            cx.reporter
                .note(&format!("{line}: accepted (allow_empty = true)"));
        }
        out.empty.push(e);
    }
    for c in &claimed.conflicts {
        let outcome = conflict(c);
        cx.reporter.item_finished(&c.item, &outcome);
        finish(&c.item, Some(&outcome));
    }
    for item in &claimed.orphans {
        let parent = item.after.as_ref().map(|a| a.parent.2.clone());
        let outcome = Outcome::Skipped {
            reason: format!(
                "not copied: what it refers to ({}) is written by another rule",
                parent.unwrap_or_default()
            ),
        };
        cx.reporter.item_finished(item, &outcome);
        finish(item, Some(&outcome));
    }
    claimed.items
}

/// A tag two rules write with different platforms: the one that runs second fails, saying
/// who wins.
fn conflict(c: &select::Conflict) -> Outcome {
    let error = CopyError::Conflict {
        reference: c.item.target_display(),
        reason: c.reason.clone(),
    };
    Outcome::Failed {
        error: Arc::new(error),
    }
}

/// What runs or is about to, from every `[in_use]` source, pinned; when a source cannot be
/// read whole, every deletion is held (protection fails closed) and `out` says why.
async fn in_use(plan: &Plan, registries: &Registries, pins: &mut PinMap, out: &mut Vec<String>) {
    let gathered = inuse::gather(&plan.in_use).await;
    in_use_pins(pins, &gathered.uses, &plan.in_use.aliases);
    let aliases = &plan.in_use.aliases;
    let unlisted = picks::pin_next(registries, pins, &gathered.tracked, aliases).await;
    if !gathered.failures.is_empty() || !unlisted.is_empty() {
        pins.hold_all(
            "an [in_use] source could not be read whole, so nothing is deleted (protection fails closed)"
                .to_string(),
        );
    }
    out.extend(gathered.failures.iter().map(|f| {
        format!(
            "in use: {}; nothing is deleted until it can be read",
            error_chain(f)
        )
    }));
    out.extend(unlisted);
}

/// Every `[[retain]]` policy, with what the copies put at their targets pinned; `registries`:
/// what the deletions go through.
async fn retain(
    plan: &Plan,
    cx: &Context<'_>,
    registries: &Registries,
    pins: &PinMap,
) -> Vec<Retained> {
    let note = |message: &str| cx.reporter.note(message);
    let retention = retention::Context {
        registries,
        now: SystemTime::now(),
        owns: cx.owns,
        pins,
        journal: cx.journal.as_ref(),
        note: &note,
    };
    retention::run(&plan.retains, &retention).await
}

/// What runs or is about to, pinned where it lives: a digest protects that manifest, a tag
/// the image it points at when the policy reads the repository.
fn in_use_pins(pins: &mut PinMap, uses: &[inuse::uses::Use], aliases: &[(String, String)]) {
    for u in uses {
        let Some(t) = inuse::Target::of(&u.image, aliases) else {
            continue;
        };
        let p = pins.entry(&t.registry, &t.repo);
        match t.what {
            inuse::Pinned::Tag(tag) => {
                p.in_use.tags.entry(tag).or_insert_with(|| u.by.clone());
            }
            inuse::Pinned::Digest(d) => {
                p.in_use.digests.entry(d).or_insert_with(|| u.by.clone());
            }
        }
    }
}

/// The rule that claimed a duplicate's target first.
fn claims_rule(claims: &Claims, dup: &Item) -> usize {
    claims.owner(&dup.key()).unwrap_or(dup.rule)
}

/// The registries a plan names, each behind an overlay: what `ferry plan` executes against.
/// One where `plan` deletes nothing (no `[[retain]]` there, no rule that prunes there) keeps
/// nothing per tag it reads.
pub fn overlays(
    registries: &Registries,
    plan: &Plan,
) -> (
    Registries,
    Vec<(String, Arc<crate::registry::overlay::Overlay>)>,
) {
    let deletes_at = |location: &crate::reference::Location| {
        plan.retains
            .iter()
            .any(|r| r.repository.location == *location)
            || (plan.copies.iter())
                .any(|c| c.to.location == *location && plan.prune(c.number).is_some())
    };
    let mut wrapped: Registries = HashMap::new();
    let mut handles = Vec::new();
    for (location, registry) in registries {
        let overlay = crate::registry::overlay::Overlay::new(registry.clone());
        let overlay = Arc::new(match deletes_at(location) {
            true => overlay,
            false => overlay.deletes_nothing(),
        });
        handles.push((registry.name().to_string(), overlay.clone()));
        wrapped.insert(
            location.clone(),
            overlay as Arc<dyn crate::registry::Registry>,
        );
    }
    handles.sort_by(|a, b| a.0.cmp(&b.0));
    (wrapped, handles)
}

#[cfg(test)]
mod tests;
