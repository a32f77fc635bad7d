//! Where each item goes once it is done, and what the execution keeps of it. The caller's
//! [`ItemSink`] gets every item as it finishes (the run's report file, the lines and JSON of
//! `ferry plan` and `ferry verify`), and the item is then dropped: what the execution keeps
//! is counts (`Tally`): the totals, the first [`FAILURES_KEPT`] failure lines, and only
//! where retention or pruning runs after the copies, what they read of them (the pins, the
//! tags each target repository gets). So a run of 100,000 items holds no struct per item.

use super::label::copy_label;
use super::pruning::{self, Selected};
use crate::copy::{Item, Outcome, Totals};
use crate::plan::Plan;
use crate::report::hints::chain as error_chain;
use crate::retention::PinMap;

/// Every item, as it finishes (in no particular order across repositories).
pub trait ItemSink: Send + Sync {
    /// `item` is done: `outcome`, or `None` when an interruption kept it from finishing.
    fn finished(&self, item: &Item, outcome: Option<&Outcome>);

    /// `item` was not started: its source's pull budget ran out (see
    /// [`super::budget_gate`]). The next run copies it.
    fn parked(&self, item: &Item) {
        self.finished(item, None);
    }
}

/// Keeps nothing: for callers that read only the counts.
pub struct Discard;

impl ItemSink for Discard {
    fn finished(&self, _item: &Item, _outcome: Option<&Outcome>) {}
}

/// How many failed items are listed, one line each, in the failures a run prints, saves
/// and reports (the report's `items` has every one, with its error); the rest are counted.
pub const FAILURES_KEPT: usize = 1_000;

/// What an execution keeps of its items.
pub(super) struct Tally {
    pub(super) totals: Totals,
    /// The first [`FAILURES_KEPT`] failed items: `SOURCE -> TARGET: error chain`.
    pub(super) failures: Vec<String>,
    /// Failed items after those.
    pub(super) unlisted: usize,
    /// What the copies put at their targets (`None`: no retention or pruning runs).
    pub(super) pins: Option<PinMap>,
    /// The tags each target repository gets this run (`None`: no `prune` rule).
    pub(super) selected: Option<Selected>,
}

impl Tally {
    pub(super) fn new(plan: &Plan) -> Tally {
        let prunes = pruning::any(plan);
        Tally {
            totals: Totals::default(),
            failures: Vec::new(),
            unlisted: 0,
            pins: (prunes || !plan.retains.is_empty()).then(PinMap::default),
            selected: prunes.then(Selected::default),
        }
    }

    /// Take in a parked item: not a failure, nor an interruption; what a `prune` rule
    /// selects all the same.
    pub(super) fn park(&mut self, item: &Item) {
        if let Some(selected) = &mut self.selected {
            pruning::select(selected, item);
        }
    }

    /// Count one finished item.
    pub(super) fn take(&mut self, plan: &Plan, item: &Item, outcome: Option<&Outcome>) {
        self.totals.count(outcome);
        if let Some(Outcome::Failed { error }) = outcome {
            match self.failures.len() < FAILURES_KEPT {
                true => (self.failures).push(format!("{item}: {}", error_chain(error.as_ref()))),
                false => self.unlisted += 1,
            }
        }
        if let Some(selected) = &mut self.selected {
            pruning::select(selected, item);
        }
        if let Some(pins) = &mut self.pins {
            pin(pins, plan, item, outcome);
        }
    }
}

/// What a copy put at its target is pinned: a policy that would delete it fights the copy on
/// every run, and the report would call a deleted tag copied.
fn pin(pins: &mut PinMap, plan: &Plan, item: &Item, outcome: Option<&Outcome>) {
    let Some((digest, rewritten)) = outcome.and_then(Outcome::placed) else {
        return;
    };
    let why = format!("{} writes it", copy_label(plan, item.rule));
    let p = pins.entry(item.target.registry.name(), &item.target.repo);
    match &item.target_tag {
        Some(tag) => {
            p.tags.entry(tag.clone()).or_insert(why);
        }
        None => {
            p.digests
                .entry(rewritten.unwrap_or(digest).clone())
                .or_insert(why);
        }
    }
}
