//! The items of the run that others may follow ([`LiveItems`]), by target key and rule, with
//! where their outcome is told ([`Slot`]); and where the items a batch's own items wait for
//! are ([`Batch`]), so an item does not wait for one that comes after it. `follow` does the
//! waiting.

use std::collections::{HashMap, HashSet};

use tokio::sync::watch;

use crate::copy::item::{Item, ItemKey};
use crate::copy::outcome::{ImageStats, Outcome};

/// Where an item's outcome is announced to the items waiting on it.
pub(super) type Done = watch::Sender<Slot>;

/// An item's outcome as the items waiting on it see it.
#[derive(Clone)]
pub(super) enum Slot {
    Pending,
    /// `None`: interrupted (an upload parked). Boxed: an outcome is large, a pending slot
    /// nothing.
    Done(Option<Box<Outcome>>),
}

impl Slot {
    /// What an item that follows this one reads of it once its batch is over, and no more:
    /// how it ended and what it placed (a copy's other figures are the report's, not a
    /// follower's).
    pub(super) fn settled(&self) -> Slot {
        let Slot::Done(Some(outcome)) = self else {
            return self.clone();
        };
        let outcome = match outcome.as_ref() {
            Outcome::Copied { digest, stats } => Outcome::Copied {
                digest: digest.clone(),
                stats: ImageStats {
                    rewritten: stats.rewritten.clone(),
                    ..ImageStats::default()
                },
            },
            other => other.clone(),
        };
        Slot::Done(Some(Box::new(outcome)))
    }
}

/// An item of some batch, and where its outcome is announced.
pub(super) struct Live {
    pub(super) rule: usize,
    /// Without the manifest selection read for it: the copy has used it.
    pub(super) item: Item,
    pub(super) done: watch::Receiver<Slot>,
}

/// Every item announced so far, by target key, in the order announced.
pub(super) type LiveItems = std::sync::Mutex<HashMap<ItemKey, Vec<Live>>>;

/// Where the items of one batch that others of it wait for are, to tell whether what an
/// item waits for comes at or after it in the same batch (it is not waited for then: it
/// could wait for a slot this one holds). Claims put what is waited for first, so in
/// practice it never does. Only keys some item of the batch waits for are indexed: a batch
/// of plain tags indexes nothing.
pub(super) struct Batch {
    by_rule: HashMap<(ItemKey, usize), usize>,
    first: HashMap<ItemKey, usize>,
}

/// What an item of a batch may wait for that comes at or after it there.
#[derive(Clone, Copy, Default)]
pub(super) struct Later {
    /// The item carrying its subject.
    pub(super) subject: bool,
    /// The winner of its tag.
    pub(super) winner: bool,
}

impl Batch {
    pub(super) fn of(items: &[Item]) -> Batch {
        let mut batch = Batch {
            by_rule: HashMap::new(),
            first: HashMap::new(),
        };
        // What a referrer waits for (its parent), and a contested item (its own key).
        let waited: HashSet<ItemKey> = (items.iter())
            .flat_map(|i| {
                let parent = i.after.as_ref().map(|a| a.parent.clone());
                parent
                    .into_iter()
                    .chain(i.contest.as_ref().map(|_| i.key()))
            })
            .collect();
        if waited.is_empty() {
            return batch;
        }
        for (i, item) in items.iter().enumerate() {
            let key = item.key();
            if waited.contains(&key) {
                batch.by_rule.entry((key.clone(), item.rule)).or_insert(i);
                batch.first.entry(key).or_insert(i);
            }
        }
        batch
    }

    /// Does an item of this batch wait for what writes `key`?
    pub(super) fn waited_for(&self, key: &ItemKey) -> bool {
        self.first.contains_key(key)
    }

    /// The index of the item an item of `rule` waiting for `key` follows: the one of its own
    /// rule, else the first with the key (as `follow` waits).
    fn find(&self, key: &ItemKey, rule: usize) -> Option<usize> {
        (self.by_rule.get(&(key.clone(), rule)))
            .or_else(|| self.first.get(key))
            .copied()
    }

    pub(super) fn later(&self, items: &[Item], i: usize) -> Later {
        let item = &items[i];
        let at_or_after = |found: Option<usize>| found.is_some_and(|p| p >= i);
        Later {
            subject: (item.after.as_ref())
                .is_some_and(|a| at_or_after(self.find(&a.parent, item.rule))),
            winner: (item.contest.as_ref()).is_some_and(|c| {
                at_or_after(self.by_rule.get(&(item.key(), c.winner_rule)).copied())
            }),
        }
    }
}
