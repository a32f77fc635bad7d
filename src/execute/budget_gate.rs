//! Docker Hub's pull budget, spent by `ferry run` so that whole repositories finish (issue 25):
//! where a source counts manifest GETs as pulls ([`crate::registry::capabilities::Capabilities::counts_pulls`])
//! and shows its budget (`ratelimit-remaining`), its repositories are copied one at a time, and
//! one starts only when the pulls it still needs fit in what is left. When they do not, the
//! registry is *parked*: none of its repositories or images starts any more (those in flight
//! finish), and the run ends saying when the budget comes back; or, with `--wait-for-budget`,
//! it waits until then and goes on. Pulls are counted from the selection and the checkpoint
//! (an item recorded done costs none; one tag whose digest selection read shares its pull with
//! every other tag naming that digest); an index's children are not known before it is read,
//! so they are not counted, and an image the count let start may still find the budget spent:
//! its pull waits (the throttle's pause), and once Docker Hub refuses one (429), the images
//! not started yet park. `ferry plan` and `ferry verify` run without a gate.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::OwnedMutexGuard;
use tokio_util::sync::CancellationToken;

use super::checkpoint::Checkpoint;
use crate::copy::engine::Gate;
use crate::copy::{Item, Journal, Reporter};
use crate::reference::Digest;
use crate::registry::transport::throttle::PullBudget;
use crate::registry::Registry;

/// What a run does when a registry's pull budget cannot pay for the next repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spending {
    /// Park the registry and end the run (with its own exit code, 75).
    Park,
    /// Wait until the budget's window has passed, then go on (`--wait-for-budget`).
    Wait,
}

/// A registry whose pull budget ran out in this run: what it showed, and since when.
#[derive(Clone, Debug, PartialEq)]
pub struct Parked {
    pub registry: String,
    /// Pulls left, of `limit` per `window_seconds`, when it parked.
    pub remaining: u64,
    pub limit: u64,
    pub window_seconds: u64,
    /// When the budget was first seen too small for what was left to copy.
    pub since: SystemTime,
    /// Images not started because of it.
    pub images: usize,
}

impl Parked {
    /// When the whole budget is back at the latest: a window after it was first seen spent.
    pub fn resume_at(&self) -> SystemTime {
        self.since + Duration::from_secs(self.window_seconds)
    }

    /// `Docker Hub pull budget spent: 1 of 5 pulls left for docker.io; resume after 17:42
    /// UTC (ratelimit window of 3600 s)`.
    pub fn message(&self) -> String {
        format!(
            "Docker Hub pull budget spent: {} of {} pulls left for {}; resume after {} UTC (ratelimit window of {} s)",
            self.remaining,
            self.limit,
            self.registry,
            clock(self.resume_at()),
            self.window_seconds
        )
    }
}

/// `HH:MM` (UTC) of `t`, rounded up to the minute: "resume after" is never too early.
pub fn clock(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0));
    let minutes = secs.div_ceil(60) % (24 * 60);
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

/// Whether a repository that still needs `needed` pulls may start with `budget` shown.
/// Unknown budget: it may (the registry showed none, or the first answer tells). One that
/// needs more than a whole window allows never fits: it starts while any pull is left, and
/// finishes over several windows.
pub fn fits(needed: u64, budget: Option<PullBudget>) -> bool {
    match budget {
        None => true,
        Some(_) if needed == 0 => true,
        Some(b) => needed <= b.remaining || (needed > b.limit && b.remaining > 0),
    }
}

/// The pulls a repository's items still need: one per source manifest not recorded done
/// (`done`), two tags whose digest selection read sharing one.
pub fn pulls_needed(items: &[Item], done: &dyn Fn(&Item) -> bool) -> u64 {
    let mut digests = HashSet::new();
    let mut n = 0;
    for item in items.iter().filter(|i| !done(i)) {
        match &item.seen {
            Some(d) => n += u64::from(digests.insert(d.clone())),
            None => n += 1,
        }
    }
    n
}

/// The run's gate for registries that count pulls (see the module docs).
pub struct BudgetGate {
    spending: Spending,
    hosts: Mutex<HashMap<String, Arc<Host>>>,
}

#[derive(Default)]
struct Host {
    /// One repository of this registry at a time, so each starts knowing what the last left.
    turn: Arc<tokio::sync::Mutex<()>>,
    parked: Mutex<Option<Parked>>,
    /// Images kept back once it parked.
    images: AtomicUsize,
}

/// What a repository may do: go (holding the registry's turn while it copies), or park.
pub enum Admission {
    Go(Option<OwnedMutexGuard<()>>),
    Park,
}

impl BudgetGate {
    pub fn new(spending: Spending) -> BudgetGate {
        BudgetGate {
            spending,
            hosts: Mutex::new(HashMap::new()),
        }
    }

    /// `ferry run`'s gate: waiting for the budget (`--wait-for-budget`), else parking.
    pub fn for_run(wait_for_budget: bool) -> Arc<BudgetGate> {
        Arc::new(BudgetGate::new(match wait_for_budget {
            true => Spending::Wait,
            false => Spending::Park,
        }))
    }

    fn host(&self, name: &str) -> Arc<Host> {
        let mut hosts = self.hosts.lock().expect("budget hosts");
        hosts.entry(name.to_string()).or_default().clone()
    }

    /// The engine's gate: [`BudgetGate::may_start`], an item recorded in `journal` needing
    /// no pull (asked only of a source that counts pulls: the engine reads the record too).
    pub fn engine_gate(self: Arc<Self>, journal: Arc<dyn Checkpoint>) -> Gate {
        Arc::new(move |item| self.may_start(item, || Journal::recorded(&*journal, item).is_some()))
    }

    /// May the repository whose items are `items` (one source repository) start? Where the
    /// source counts pulls and some item needs one, it waits for the registry's turn, then
    /// compares what it needs with what is left. `stop`: the run is stopping (a wait ends).
    async fn admit(
        &self,
        items: &mut [Item],
        done: &(dyn Fn(&Item) -> bool + Sync),
        reporter: &dyn Reporter,
        stop: &CancellationToken,
    ) -> Admission {
        let counts = |i: &Item| i.source.registry.capabilities().counts_pulls && !done(i);
        let Some(first) = items.iter().position(counts) else {
            return Admission::Go(None);
        };
        let needed = pulls_needed(items, done);
        let registry = items[first].source.registry.clone();
        let host = self.host(registry.name());
        let turn = host.turn.clone().lock_owned().await;
        if host.parked.lock().expect("parked").is_some() {
            return Admission::Park;
        }
        let repository = items[first].source.display();
        let mut waited = false;
        loop {
            let budget = budget_of(registry.as_ref(), &mut items[first], waited).await;
            if fits(needed, budget) {
                return Admission::Go(Some(turn));
            }
            let budget = budget.expect("an unknown budget fits");
            let since = SystemTime::now();
            let parked = Parked {
                registry: registry.name().to_string(),
                remaining: budget.remaining,
                limit: budget.limit,
                window_seconds: budget.window_seconds,
                since,
                images: 0,
            };
            if self.spending == Spending::Park {
                *host.parked.lock().expect("parked") = Some(parked);
                return Admission::Park;
            }
            reporter.note(&format!(
                "waiting for the pull budget: {} of {} pulls left for {}, {} needed by {}; going on at {} UTC (--wait-for-budget)",
                budget.remaining,
                budget.limit,
                parked.registry,
                needed,
                repository,
                clock(parked.resume_at())
            ));
            let wait = parked.resume_at().duration_since(since).unwrap_or_default();
            tokio::select! {
                () = tokio::time::sleep(wait) => waited = true,
                () = stop.cancelled() => return Admission::Park,
            }
        }
    }

    /// May `item` start now? Not when its source is parked, nor, under [`Spending::Park`],
    /// when it needs a pull and its source refused one (429, none left: that parks the
    /// source). A repository admitted by its count goes on while pulls are left: an image
    /// whose tag shares a digest already read needs none. `done`: whether the checkpoint
    /// records the item done (then it needs no pull).
    pub fn may_start(&self, item: &Item, done: impl FnOnce() -> bool) -> bool {
        let registry = &item.source.registry;
        if !registry.capabilities().counts_pulls || done() {
            return true;
        }
        let host = self.host(registry.name());
        let mut parked = host.parked.lock().expect("parked");
        if parked.is_none() && self.spending == Spending::Park {
            let stats = registry.stats().filter(|s| s.throttled > 0);
            let shown = stats.and_then(|s| s.pull_budget);
            if let Some(b) = shown.filter(|b| b.remaining == 0) {
                *parked = Some(Parked {
                    registry: registry.name().to_string(),
                    remaining: 0,
                    limit: b.limit,
                    window_seconds: b.window_seconds,
                    since: SystemTime::now(),
                    images: 0,
                });
            }
        }
        parked.is_none()
    }

    /// An item was not started or not finished: was it kept back because its source is
    /// parked? Counted so when it was.
    pub fn kept_back(&self, item: &Item) -> bool {
        let host = self.host(item.source.registry.name());
        let parked = host.parked.lock().expect("parked").is_some();
        if parked {
            host.images.fetch_add(1, Ordering::Relaxed);
        }
        parked
    }

    /// The registries parked in this run, with the images each kept back.
    pub fn parked(&self) -> Vec<Parked> {
        let hosts = self.hosts.lock().expect("budget hosts");
        let mut out: Vec<Parked> = hosts
            .values()
            .filter_map(|h| {
                let mut p = h.parked.lock().expect("parked").clone()?;
                p.images = h.images.load(Ordering::Relaxed);
                Some(p)
            })
            .collect();
        out.sort_by(|a, b| a.registry.cmp(&b.registry));
        out
    }
}

/// May one part (a source repository's items) start, given its registry's pull budget?
/// Without a gate, it may.
pub async fn admit(
    gate: Option<&BudgetGate>,
    items: &mut [Item],
    journal: &dyn Checkpoint,
    reporter: &dyn Reporter,
    stop: &CancellationToken,
) -> Admission {
    let Some(gate) = gate else {
        return Admission::Go(None);
    };
    let done = |item: &Item| Journal::recorded(journal, item).is_some();
    gate.admit(items, &done, reporter, stop).await
}

/// The budget the registry last showed; when it has shown none yet (no manifest request
/// answered), or `again` after a wait, one HEAD of the item's manifest asks (Docker Hub
/// counts no pull for it). That HEAD is the item's own: the digest it gives is the one the
/// copy reads (`Item::seen`), so it costs the run no request.
async fn budget_of(registry: &dyn Registry, item: &mut Item, again: bool) -> Option<PullBudget> {
    let stats = registry.stats()?;
    if stats.pull_budget.is_some() && !again {
        return stats.pull_budget;
    }
    let asked = stats.by_kind.keys().any(|k| k.ends_with(" manifest"));
    if asked && !again {
        return None;
    }
    let head = registry.head_manifest(&item.source.repo, &item.source_ref);
    if let Ok(Some(head)) = head.await {
        if Digest::parse(&item.source_ref).is_none() {
            item.seen = Some(head.digest);
        }
    }
    registry.stats()?.pull_budget
}

#[cfg(test)]
mod tests;
