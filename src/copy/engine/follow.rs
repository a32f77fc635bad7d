//! Who waits for whom across the batches of a run: a referrer for the item that carries its
//! subject ([`Item::after`]), a contested item for the first writer of its tag
//! ([`Item::contest`]). Every item that may be followed is announced here by target key and
//! rule, so that two items writing one key (a contested item and its winner) are told apart:
//! a referrer follows the item of its own rule, or, where that one was dropped as a
//! duplicate, the first with the key. What a batch announced goes when it ends, but for the
//! rules the engine remembers.

use std::sync::Arc;

use tokio::sync::watch;

use super::live::{Batch, Done, Live, Slot};
use super::Engine;
use crate::copy::item::{Contest, Item, ItemKey};
use crate::copy::outcome::{not_carried, CopyError, Outcome};

impl Engine {
    /// Announce the items of a batch that others may follow (the first of each key and
    /// rule): those an item of the batch waits for, and every item of a rule whose items
    /// another rule's may follow later (see [`Engine::remember_only`]). Returns where each
    /// announced one's outcome is to be told (`None`: not announced, nobody follows it).
    pub(super) fn announce(&self, items: &[Item], batch: &Batch) -> Vec<Option<Done>> {
        let mut live = self.live.lock().expect("live items");
        items
            .iter()
            .map(|item| {
                let key = item.key();
                let remembered = self
                    .remember
                    .as_ref()
                    .is_none_or(|r| r.contains(&item.rule));
                if !remembered && !batch.waited_for(&key) {
                    return None;
                }
                let same = live.entry(key).or_default();
                if same.iter().any(|l| l.rule == item.rule) {
                    return None;
                }
                let (tx, rx) = watch::channel(Slot::Pending);
                same.push(Live {
                    rule: item.rule,
                    item: Item {
                        read: None,
                        ..item.clone()
                    },
                    done: rx,
                });
                Some(tx)
            })
            .collect()
    }

    /// A batch is over: what it announced is forgotten, so a run keeps nothing per item it
    /// finished, except where another rule's item may follow it later (see
    /// [`Engine::remember_only`]); that is kept as a follower reads it ([`Slot::settled`]).
    pub(super) fn forget(&self, items: &[Item], announced: &[Option<Done>]) {
        let mut live = self.live.lock().expect("live items");
        for (item, tx) in items.iter().zip(announced) {
            let Some(tx) = tx else { continue };
            let key = item.key();
            let Some(same) = live.get_mut(&key) else {
                continue;
            };
            let remember = self
                .remember
                .as_ref()
                .is_none_or(|r| r.contains(&item.rule));
            match remember {
                true => {
                    let (settled, rx) = watch::channel(tx.borrow().settled());
                    // Its sender is gone, as every finished batch's is: the slot stays as set.
                    drop(settled);
                    if let Some(l) = same.iter_mut().find(|l| l.rule == item.rule) {
                        l.done = rx;
                    }
                }
                false => same.retain(|l| l.rule != item.rule),
            }
            if same.is_empty() {
                live.remove(&key);
            }
        }
    }

    /// How many items are announced and not forgotten (tests: a run keeps none per item).
    #[cfg(test)]
    pub(crate) fn live_items(&self) -> usize {
        self.live
            .lock()
            .expect("live items")
            .values()
            .map(Vec::len)
            .sum()
    }

    /// The item of `rule` that writes `key`, or else the first that does; and where its
    /// outcome is told.
    fn followed(
        &self,
        key: &ItemKey,
        rule: Option<usize>,
    ) -> Option<(Item, watch::Receiver<Slot>)> {
        let live = self.live.lock().expect("live items");
        let same = live.get(key)?;
        let found = match rule {
            Some(rule) => same.iter().find(|l| l.rule == rule),
            None => None,
        };
        found
            .or_else(|| same.first())
            .map(|l| (l.item.clone(), l.done.clone()))
    }

    /// Wait until `key`'s item (of `rule`, see [`Engine::followed`]) is done: its outcome
    /// (`Some(None)`: interrupted), or `None` when there is no such item.
    async fn wait_for(
        &self,
        key: &ItemKey,
        rule: Option<usize>,
    ) -> Option<(Item, Option<Outcome>)> {
        let (item, mut rx) = self.followed(key, rule)?;
        // Its sender lives until its batch is over; a slot left pending then was
        // interrupted.
        let outcome = match rx.wait_for(|s| !matches!(s, Slot::Pending)).await {
            Ok(slot) => match slot.clone() {
                Slot::Done(outcome) => outcome.map(|o| *o),
                Slot::Pending => None,
            },
            Err(_) => None,
        };
        Some((item, outcome))
    }

    /// For a referrer: wait until the item carrying its subject is done, and say why it is
    /// not carried, if it is not (`None`: that item was interrupted).
    pub(super) async fn wait_for_subject(&self, item: &Item) -> Option<Option<String>> {
        let Some(after) = item.after.as_ref() else {
            return Some(None);
        };
        let Some((parent, outcome)) = self.wait_for(&after.parent, Some(item.rule)).await else {
            return Some(None);
        };
        Some(not_carried(&outcome?, &parent, &after.subject))
    }

    /// For a contested item: wait until the winner of its tag is done, and say how it ended
    /// (`Some(None)`: it cannot be compared with; `None`: the winner was interrupted).
    pub(super) async fn wait_for_winner(
        &self,
        item: &Item,
        later: bool,
    ) -> Option<Option<Outcome>> {
        let Some(contest) = item.contest.as_ref().filter(|_| !later) else {
            return Some(None);
        };
        match self.wait_for(&item.key(), Some(contest.winner_rule)).await {
            Some((winner, outcome)) if winner.rule == contest.winner_rule => Some(Some(outcome?)),
            _ => Some(None),
        }
    }

    /// A contested item, once its winner ended with `winner`: a duplicate when its own source
    /// digest is the one the winner placed (it succeeds as the winner did, `unchanged` or
    /// `present`), else a conflict. One HEAD at its source at most (none where selection
    /// read the tag); it writes nothing.
    pub(super) async fn settle_contest(
        &self,
        item: &Item,
        contest: &Contest,
        winner: Option<Outcome>,
    ) -> Outcome {
        let fail = |reason: &str| Outcome::Failed {
            error: Arc::new(CopyError::Conflict {
                reference: item.target_display(),
                reason: reason.to_string(),
            }),
        };
        let Some((placed, rewritten)) = winner.as_ref().and_then(Outcome::placed) else {
            return fail(&contest.unknown);
        };
        let digest = match &item.read {
            Some(m) => m.digest.clone(),
            None => match self.source_digest(item).await {
                Ok(d) => d,
                Err(e) => return Outcome::Failed { error: Arc::new(e) },
            },
        };
        if digest != *placed {
            return fail(&contest.conflict);
        }
        let rewritten = rewritten.cloned();
        match winner {
            Some(Outcome::Unchanged { .. }) => Outcome::Unchanged { digest, rewritten },
            _ => Outcome::Present { digest, rewritten },
        }
    }
}
