//! Which rules share something: targets (their items are remembered past their batch) or
//! a source read (the targets of one fan-out).

use std::collections::{HashMap, HashSet};

use crate::plan::Plan;

/// The rules whose targets another rule may write into. Only their claims last the run,
/// and only their items are remembered by the engine once their batch is over (a contested
/// item follows the winner of its tag, a referrer whose own item was a duplicate the first
/// with the key): items of the others meet nothing outside their own part.
pub(super) fn sharing_targets(plan: &Plan) -> HashSet<usize> {
    let rules = &plan.copies;
    rules
        .iter()
        .filter(|a| {
            rules
                .iter()
                .any(|b| a.number != b.number && (a.writes_into(&b.to) || b.writes_into(&a.to)))
        })
        .map(|a| a.number)
        .collect()
}

/// The rules of each fan-out (a `[[copy]]` block with several targets), by number: their
/// block, and how many targets it has. Their blobs are read from the source once.
pub(super) fn fanouts(plan: &Plan) -> HashMap<usize, (usize, usize)> {
    (plan.copies.iter())
        .filter_map(|c| c.fanout.map(|(_, of)| (c.number, (c.block, of))))
        .collect()
}
