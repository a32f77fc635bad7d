//! A rule that selects nothing: a wildcard that lists no repository, or tag filters that keep
//! no tag of any repository the rule reads. It is most often a typo (`docker.io/tema/*`), and
//! a nightly job that copies nothing and exits 0 hides it, so the rule fails unless the plan
//! says `allow_empty = true`. Counted over the whole rule (a wildcard's repositories are
//! resolved concurrently and sent on as parts) and before a shard takes its share, so every
//! shard of a run says the same.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::copy::copy_rule::CopyRule;
use crate::reference::Selector;

/// A rule that selected nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Empty {
    /// The `[[copy]]` rule's number.
    pub rule: usize,
    /// What it matched, in words (`0 repositories match REF`). It names what the rule reads,
    /// as select errors do, and never a filter of the plan.
    pub what: String,
    /// The rule says `allow_empty = true`: a note, not a failure.
    pub allowed: bool,
}

/// What one rule's resolution has counted so far.
#[derive(Debug, Default)]
pub struct Count {
    /// Repositories a wildcard listed.
    repositories: AtomicUsize,
    /// Tags listed, in every repository read.
    tags: AtomicUsize,
    /// Tags selected; a referrer tag is never selected on its own (it travels with the
    /// image it names).
    selected: AtomicUsize,
    /// A listing failed, or a listed repository was skipped: what the rule selects is not
    /// known, and that error already fails the rule.
    unknown: AtomicBool,
}

impl Count {
    /// A wildcard's catalog listed `n` repositories.
    pub fn repositories(&self, n: usize) {
        self.repositories.fetch_add(n, Ordering::Relaxed);
    }

    /// One repository listed `tags` tags, of which the rule selects `selected`.
    pub fn listed(&self, tags: usize, selected: usize) {
        self.tags.fetch_add(tags, Ordering::Relaxed);
        self.selected.fetch_add(selected, Ordering::Relaxed);
    }

    /// A listing failed or a listed repository was skipped.
    pub fn unknown(&self) {
        self.unknown.store(true, Ordering::Relaxed);
    }

    /// The rule's verdict once all of it is resolved: `None` when it selected something, when
    /// it names one tag or digest, or when a listing failed (its own error says why).
    pub fn empty(&self, rule: &CopyRule) -> Option<Empty> {
        let load = |n: &AtomicUsize| n.load(Ordering::Relaxed);
        if load(&self.selected) > 0 || self.unknown.load(Ordering::Relaxed) {
            return None;
        }
        let from = &rule.from;
        let what = match from.selector {
            Selector::Wildcard if load(&self.repositories) == 0 => {
                format!("0 repositories match {from}")
            }
            Selector::Wildcard => {
                let n = load(&self.repositories);
                let under = match n {
                    1 => format!("the 1 repository under {from}"),
                    n => format!("the {n} repositories under {from}"),
                };
                nothing_selected(rule, &under, load(&self.tags))
            }
            Selector::AllTags => nothing_selected(rule, &from.to_string(), load(&self.tags)),
            Selector::Tag(_) | Selector::Digest(_) => return None,
        };
        Some(Empty {
            rule: rule.number,
            what,
            allowed: rule.allow_empty,
        })
    }
}

/// Why no tag of `what` (a repository, or a wildcard's repositories) is selected, when it
/// listed `tags` tags.
fn nothing_selected(rule: &CopyRule, what: &str, tags: usize) -> String {
    let listed = match tags {
        1 => "1 tag listed".to_string(),
        n => format!("{n} tags listed"),
    };
    if !rule.tags.is_empty() {
        format!("no tag of {what} matches the rule's tags filters ({listed})")
    } else if tags == 0 {
        format!("no tag is listed in {what}")
    } else {
        format!("no tag of {what} names an image of its own ({listed}, each a signature or another referrer, which is copied only with the image it names)")
    }
}
