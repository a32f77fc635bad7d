//! Who writes each target tag (or digest) of a run: duplicates dropped, conflicts refused.

use std::collections::{HashMap, HashSet};

use crate::copy::{Item, ItemKey};

/// Who writes each target tag (or digest) in a run, across its stages: the first item to
/// claim a key writes it. A later item writing the same thing there (the same source and
/// platforms, or the same digest) is a duplicate and is dropped; a later item writing
/// something else there is a [`Conflict`]: two rules would fight over one tag every run.
#[derive(Default)]
pub struct Claims {
    by_key: HashMap<ItemKey, (usize, String)>,
}

/// An item that would write a target another rule's item already writes from elsewhere.
#[derive(Debug)]
pub struct Conflict {
    pub item: Item,
    /// The `[[copy]]` rule whose item writes the target (it runs first, so it wins).
    pub winner_rule: usize,
    /// What that item writes there.
    pub winner_source: String,
    /// What this one would write there (its source, and platforms where it has a list).
    pub source: String,
}

/// What an item writes, for telling a duplicate from a conflict.
fn source_identity(item: &Item) -> String {
    if item.target_tag.is_none() && item.platforms.is_none() {
        // By digest, untagged: the digest is the content, wherever it is read from.
        return item.source_ref.clone();
    }
    match &item.platforms {
        None => item.source_display(),
        Some(p) => format!("{} (platforms {p})", item.source_display()),
    }
}

impl Claims {
    /// The rule whose item claimed `key`.
    pub fn owner(&self, key: &ItemKey) -> Option<usize> {
        self.by_key.get(key).map(|(rule, _)| *rule)
    }

    /// Split `items` into those to copy, duplicates of earlier ones (dropped), conflicts,
    /// and the referrers of conflicting items (not copied either: what they refer to is not).
    pub fn claim(&mut self, items: Vec<Item>) -> Claimed {
        let mut out = Claimed::default();
        // (rule, key) of items not copied, whose referrers follow them.
        let mut lost: HashSet<(usize, ItemKey)> = HashSet::new();
        for item in items {
            if let Some(after) = &item.after {
                if lost.contains(&(item.rule, after.parent.clone())) {
                    lost.insert((item.rule, item.key()));
                    out.orphans.push(item);
                    continue;
                }
            }
            let identity = source_identity(&item);
            match self.by_key.get(&item.key()) {
                None => {
                    self.by_key.insert(item.key(), (item.rule, identity));
                    out.items.push(item);
                }
                Some((_, earlier)) if *earlier == identity => out.duplicates.push(item),
                Some((rule, earlier)) => {
                    lost.insert((item.rule, item.key()));
                    out.conflicts.push(Conflict {
                        winner_rule: *rule,
                        winner_source: earlier.clone(),
                        source: identity,
                        item,
                    })
                }
            }
        }
        out
    }
}

/// What [`Claims::claim`] made of a stage's items.
#[derive(Debug, Default)]
pub struct Claimed {
    /// To copy.
    pub items: Vec<Item>,
    /// The same thing another item already writes there: dropped.
    pub duplicates: Vec<Item>,
    pub conflicts: Vec<Conflict>,
    /// Referrers of a conflicting item (or of such a referrer).
    pub orphans: Vec<Item>,
}
