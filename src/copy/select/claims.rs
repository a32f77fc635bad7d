//! Who writes each target tag (or digest) of a run: duplicates dropped, contests left to the
//! engine, conflicts refused.

use std::collections::{HashMap, HashSet};

use crate::copy::item::{Contest, Item, ItemKey};

/// How a rule is named in what people read: `copy #2 (plans/prod.toml:14)`.
type Label = Box<dyn Fn(usize) -> String + Send + Sync>;

/// Who writes each target tag (or digest) in a run, across its stages: the first item to
/// claim a key writes it (the winner). A later item writing the same thing there (the same
/// source and platforms, or the same digest) is a duplicate and is dropped. A later item
/// from another source with the same platforms is contested ([`Contest`]): only the digests
/// tell whether both write the same image (a duplicate, which succeeds) or two rules would
/// fight over one tag every run (a conflict), so the engine compares them once the winner is
/// done. With other platforms it is a [`Conflict`] at once: the two write different images
/// into one tag whatever the sources hold.
///
/// A claim lives as long as a later item could meet it. The items of a rule whose targets
/// no other rule can write into meet only items of their own part (a wildcard maps each
/// source repository to a target repository of its own), so their claims are dropped with
/// the part; only rules that share targets ([`Claims::sharing`]) keep theirs for the run.
/// So a run of one rule over an organisation holds no claim per tag.
pub struct Claims {
    by_key: HashMap<ItemKey, Claim>,
    /// The rules whose claims are kept for the run (`None`: every rule's).
    shared: Option<HashSet<usize>>,
    label: Label,
}

/// The item that claimed a key first.
struct Claim {
    rule: usize,
    /// What it writes there: see [`source_identity`].
    identity: String,
    platforms: Option<String>,
}

impl Default for Claims {
    fn default() -> Self {
        Claims::labelled(|n| format!("copy #{n}"))
    }
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
    /// Why it is not copied, naming both rules.
    pub reason: String,
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
    /// Claims whose messages name rule N as `label(N)` says.
    pub fn labelled(label: impl Fn(usize) -> String + Send + Sync + 'static) -> Claims {
        Claims {
            by_key: HashMap::new(),
            shared: None,
            label: Box::new(label),
        }
    }

    /// Keep claims for the run only for the items of `rules` (those whose targets another
    /// rule may write into); every other rule's claims last as long as their part.
    pub fn sharing(mut self, rules: impl IntoIterator<Item = usize>) -> Claims {
        self.shared = Some(rules.into_iter().collect());
        self
    }

    /// How many claims are kept for the run.
    #[cfg(test)]
    pub fn kept_claims(&self) -> usize {
        self.by_key.len()
    }

    fn kept(&self, rule: usize) -> bool {
        self.shared.as_ref().is_none_or(|s| s.contains(&rule))
    }

    /// The rule whose item claimed `key`.
    pub fn owner(&self, key: &ItemKey) -> Option<usize> {
        self.by_key.get(key).map(|c| c.rule)
    }

    /// Split `items` into those to copy (contested ones among them), duplicates of earlier
    /// ones (dropped), conflicts, and the referrers of conflicting items (not copied either:
    /// what they refer to is not).
    pub fn claim(&mut self, items: Vec<Item>) -> Claimed {
        let mut out = Claimed::default();
        // (rule, key) of items not copied, whose referrers follow them.
        let mut lost: HashSet<(usize, ItemKey)> = HashSet::new();
        // Claims of this part alone (see [`Claims`]).
        let mut local: HashMap<ItemKey, Claim> = HashMap::new();
        for mut item in items {
            if let Some(after) = &item.after {
                if lost.contains(&(item.rule, after.parent.clone())) {
                    lost.insert((item.rule, item.key()));
                    out.orphans.push(item);
                    continue;
                }
            }
            let identity = source_identity(&item);
            let platforms = item.platforms.as_ref().map(|p| p.to_string());
            let key = item.key();
            let winner = self.by_key.get(&key).or_else(|| local.get(&key));
            let Some(winner) = winner else {
                let claim = Claim {
                    rule: item.rule,
                    identity,
                    platforms,
                };
                match self.kept(item.rule) {
                    true => self.by_key.insert(key, claim),
                    false => local.insert(key, claim),
                };
                out.items.push(item);
                continue;
            };
            let label = &self.label;
            if winner.identity == identity {
                out.duplicates.push(item);
            } else if winner.platforms == platforms {
                item.contest = Some(Contest {
                    winner_rule: winner.rule,
                    conflict: fight(label, item.rule, &identity, winner),
                    unknown: format!(
                        "{} writes it from {}, which failed or was not copied, so whether {} holds the same image cannot be told: not copied",
                        label(winner.rule),
                        winner.identity,
                        identity,
                    ),
                });
                out.items.push(item);
            } else {
                lost.insert((item.rule, item.key()));
                out.conflicts.push(Conflict {
                    winner_rule: winner.rule,
                    winner_source: winner.identity.clone(),
                    reason: fight(label, item.rule, &identity, winner),
                    source: identity,
                    item,
                });
            }
        }
        out
    }
}

/// Why the second of two rules writing one tag from different sources is not copied.
fn fight(label: &Label, rule: usize, source: &str, winner: &Claim) -> String {
    format!(
        "{} would write it from {source}, but {} writes it from {}; two rules must not write one tag (the one that runs first wins, so this one is not copied): exclude the tag from one of them",
        label(rule),
        label(winner.rule),
        winner.identity,
    )
}

/// What [`Claims::claim`] made of a stage's items.
#[derive(Debug, Default)]
pub struct Claimed {
    /// To copy (or, contested, to compare with what another rule's item writes there).
    pub items: Vec<Item>,
    /// The same thing another item already writes there: dropped.
    pub duplicates: Vec<Item>,
    /// Another rule's item writes another image there (other platforms).
    pub conflicts: Vec<Conflict>,
    /// Referrers of a conflicting item (or of such a referrer).
    pub orphans: Vec<Item>,
}
