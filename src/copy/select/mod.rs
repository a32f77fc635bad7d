//! Turn the plan's `[[copy]]` rules into concrete items: expand wildcards through the
//! registry's catalog, list tags, apply the tag filters, map source repositories to targets,
//! and find what refers to what is selected (`referrer_search`). [`Claims`] then decides, across
//! the stages of a run, which item writes each target.

mod budget;
mod claims;
mod empty;
mod in_order;
mod referrer_search;

use budget::{LIST_CONCURRENCY, READ_BUDGET};
pub use claims::{Claimed, Claims, Conflict};
pub use empty::{Count, Empty};
use referrer_search::{discover, Origin, Reads, Referred};

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use super::item::{After, Endpoint, Item, ItemKey};
use super::journal::Journal;
use crate::copy::copy_rule::CopyRule;
use crate::reference::names;
use crate::reference::names::NameError;
use crate::reference::Digest;
use crate::reference::{Location, Reference, Selector};
use crate::registry::manifest::referrer_tag_subject;
use crate::registry::{layout, Registry, RegistryError};

/// The registries of a run, by location.
pub type Registries = HashMap<Location, Arc<dyn Registry>>;

/// A rule (or one repository of a wildcard rule) that could not be resolved.
#[derive(Debug, thiserror::Error)]
#[error("{rule}: {what}")]
pub struct SelectError {
    pub rule: String,
    pub what: String,
    #[source]
    pub source: RegistryError,
}

/// The items of all rules, in plan order, plus what could not be resolved.
#[derive(Default)]
pub struct Selection {
    pub items: Vec<Item>,
    pub errors: Vec<SelectError>,
    /// What each listing of a `prune` rule found, for pruning to tell a tag gone at the
    /// source from one filtered out, and a source gone from one that failed to answer.
    pub listings: Vec<Listing>,
    /// Rules that selected nothing (each said once, in the rule's last part).
    pub empty: Vec<Empty>,
}

/// What one listing of a rule found at the source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listing {
    /// A wildcard rule's catalog: the target repositories of the source repositories it
    /// listed (`None`: the catalog could not be read).
    Catalog {
        rule: usize,
        targets: Option<Vec<String>>,
    },
    /// The tags of the source repository `source` (as people write it), which the rule copies
    /// to `target`.
    Tags {
        rule: usize,
        source: String,
        target: String,
        found: Found,
    },
}

/// What a source repository's tag list said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// These tags (valid names only).
    Listed(Vec<String>),
    /// The repository does not exist.
    Gone,
    /// It could not be read (the error is among the selection's errors).
    Failed,
}

fn registry(registries: &Registries, r: &Reference) -> Arc<dyn Registry> {
    registries
        .get(&r.location)
        .cloned()
        .expect("the app builds a registry for every location in the plan")
}

/// Group rules into stages that run one after another: a rule that reads what an earlier rule
/// writes (copy to staging, then promote) runs in a later stage than that rule, so it sees
/// the copied images; every other rule runs in the first stage it can, concurrently with the
/// rest of that stage. Returns indexes into `rules`, plan order kept within a stage.
pub fn stages(rules: &[CopyRule]) -> Vec<Vec<usize>> {
    let mut stage_of: Vec<usize> = Vec::with_capacity(rules.len());
    for (i, rule) in rules.iter().enumerate() {
        let stage = (0..i)
            .filter(|&j| rules[j].writes_into(&rule.from))
            .map(|j| stage_of[j] + 1)
            .max()
            .unwrap_or(0);
        stage_of.push(stage);
    }
    let count = stage_of.iter().max().map_or(0, |m| m + 1);
    let mut out = vec![Vec::new(); count];
    for (i, s) in stage_of.into_iter().enumerate() {
        out[s].push(i);
    }
    out
}

/// Where resolved parts go as soon as each is ready: every rule is a part, and so is each
/// repository a wildcard lists (as its tags are read), so that copying starts while the
/// rest is resolved. Parts come in plan order, a wildcard's repositories in catalog order.
/// The channel is bounded ([`PARTS_QUEUED`]): resolving waits while the copy has not taken
/// them in, and the copy takes in a bounded number of parts at once.
pub type Parts = tokio::sync::mpsc::Sender<Selection>;

/// Resolved parts waiting for the copy.
pub const PARTS_QUEUED: usize = 4;

impl Selection {
    /// Take in a later part.
    pub fn absorb(&mut self, part: Selection) {
        self.items.extend(part.items);
        self.errors.extend(part.errors);
        self.listings.extend(part.listings);
        self.empty.extend(part.empty);
    }
}

/// Resolve every rule into one selection (see [`resolve_into`]).
pub async fn resolve(
    rules: &[&CopyRule],
    registries: &Registries,
    journal: &dyn Journal,
) -> Selection {
    let (tx, mut rx) = tokio::sync::mpsc::channel(PARTS_QUEUED);
    let resolving = async move { resolve_into(rules, registries, journal, &tx).await };
    let mut selection = Selection::default();
    let absorbing = async {
        while let Some(part) = rx.recv().await {
            selection.absorb(part);
        }
    };
    futures::join!(resolving, absorbing);
    selection
}

/// Resolve every rule, part by part, into `parts`. `journal` tells the digests of immutable
/// tags an earlier run finished, so finding their referrers costs no HEAD.
pub async fn resolve_into(
    rules: &[&CopyRule],
    registries: &Registries,
    journal: &dyn Journal,
    parts: &Parts,
) {
    for rule in rules {
        let cx = RuleContext {
            rule,
            journal,
            parts,
            src: registry(registries, &rule.from),
            dst: registry(registries, &rule.to),
            count: Count::default(),
        };
        let mut out = Selection::default();
        let from = &rule.from.repository;
        match &rule.from.selector {
            Selector::Tag(_) | Selector::Digest(_) => cx.one_reference(&mut out).await,
            Selector::AllTags => cx.repository(from, &rule.to.repository, &mut out).await,
            Selector::Wildcard => cx.wildcard(&mut out).await,
        }
        // After every part of the rule: a wildcard selects as a whole.
        out.empty.extend(cx.count.empty(rule));
        // The receiver is gone only when the run is over.
        let _ = parts.send(out).await;
    }
}

/// A rule being resolved, with the registries it reads and writes.
struct RuleContext<'a> {
    rule: &'a CopyRule,
    journal: &'a dyn Journal,
    parts: &'a Parts,
    src: Arc<dyn Registry>,
    dst: Arc<dyn Registry>,
    /// What the rule selected, over all its parts.
    count: Count,
}

impl RuleContext<'_> {
    fn error(&self, what: String, source: RegistryError) -> SelectError {
        SelectError {
            rule: self.rule.to_string(),
            what,
            source,
        }
    }

    fn selection(&self, repo: &str, target_repo: &str) -> RepoSelection<'_> {
        RepoSelection {
            rule: self.rule,
            journal: self.journal,
            src: &self.src,
            dst: &self.dst,
            repo: repo.to_string(),
            target_repo: target_repo.to_string(),
        }
    }

    /// `from = "REPO:TAG"` or `"REPO@DIGEST"`: one root, and what refers to it.
    async fn one_reference(&self, out: &mut Selection) {
        let rule = self.rule;
        let target_tag = match &rule.to.selector {
            Selector::Tag(t) => Some(t.clone()),
            _ => None,
        };
        let root = match &rule.from.selector {
            Selector::Tag(tag) => (tag.clone(), Some(target_tag.unwrap_or(tag.clone()))),
            Selector::Digest(d) => (d.clone(), target_tag),
            _ => unreachable!("a reference to one image"),
        };
        // The repository's tags tell where its referrer tags are.
        let from = &rule.from.repository;
        let all = if rule.referrers.enabled() {
            let what = format!("skipped a tag of {}", rule.from.repo_display());
            (self.src.list_tags(from).await)
                .map(|tags| sort_out(tags, names::tag, rule, &what, &mut out.errors))
        } else {
            Ok(Vec::new())
        };
        self.selection(from, &rule.to.repository)
            .add(all, vec![root], out)
            .await;
    }

    /// Every tag of `repo` the filters select, into `target_repo`.
    async fn repository(&self, repo: &str, target_repo: &str, out: &mut Selection) {
        let shown = crate::reference::display_repo(&self.rule.from.location, repo);
        let listed = self.src.list_tags(repo).await;
        if self.rule.keep_listings {
            out.listings.push(Listing::Tags {
                rule: self.rule.number,
                source: Endpoint {
                    registry: self.src.clone(),
                    repo: repo.to_string(),
                }
                .display(),
                target: target_repo.to_string(),
                found: match &listed {
                    Ok(tags) => Found::Listed(names::sort_out(tags.clone(), names::tag).0),
                    Err(e) if e.is_not_found() => Found::Gone,
                    Err(_) => Found::Failed,
                },
            });
        }
        match listed {
            Ok(tags) => {
                let listed = tags.len();
                let what = format!("skipped a tag of {shown}");
                let tags = sort_out(tags, names::tag, self.rule, &what, &mut out.errors);
                let roots = select_tags(self.rule, &tags);
                self.count.listed(listed, roots.len());
                self.selection(repo, target_repo)
                    .add(Ok(tags), roots, out)
                    .await;
            }
            Err(e) => {
                self.count.unknown();
                let what = format!("listing the tags of {shown}");
                out.errors.push(self.error(what, e))
            }
        }
    }

    /// Every repository under the prefix, several at a time; items keep the catalog's order.
    async fn wildcard(&self, out: &mut Selection) {
        let rule = self.rule;
        let listed = self.src.list_repositories(&rule.from.repository).await;
        if rule.keep_listings {
            out.listings.push(Listing::Catalog {
                rule: rule.number,
                targets: listed.as_ref().ok().map(|repos| {
                    repos
                        .iter()
                        .filter_map(|r| wildcard_target(rule, r).ok())
                        .collect()
                }),
            });
        }
        let repos = match listed {
            Ok(r) => r,
            Err(e) => {
                self.count.unknown();
                let what = format!("listing the repositories under {}", rule.from);
                return out.errors.push(self.error(what, e));
            }
        };
        self.count.repositories(repos.len());
        // What the catalog said goes first; then each repository as soon as it is resolved.
        let _ = self.parts.send(std::mem::take(out)).await;
        let parts = repos.into_iter().map(|repo| async move {
            let mut part = Selection::default();
            match wildcard_target(rule, &repo) {
                Ok(target) => self.repository(&repo, &target, &mut part).await,
                Err(e) => {
                    self.count.unknown();
                    let what = format!("skipped a repository listed under {}", rule.from);
                    part.errors.push(self.error(what, e));
                }
            }
            part
        });
        in_order::send_in_order(parts, LIST_CONCURRENCY, self.parts).await;
    }
}

/// The tags a rule's filters select, referrer tags left out: they travel with the image they
/// name (or not at all, with `referrers = false`). With the target tag of each.
pub fn select_tags(rule: &CopyRule, tags: &[String]) -> Vec<(String, Option<String>)> {
    let plain: Vec<String> = tags
        .iter()
        .filter(|t| referrer_tag_subject(t).is_none())
        .cloned()
        .collect();
    rule.tags
        .select(&plain)
        .into_iter()
        .map(|t| (t.clone(), Some(t)))
        .collect()
}

/// One source repository of a rule and where it goes.
struct RepoSelection<'a> {
    rule: &'a CopyRule,
    journal: &'a dyn Journal,
    src: &'a Arc<dyn Registry>,
    dst: &'a Arc<dyn Registry>,
    repo: String,
    target_repo: String,
}

impl RepoSelection<'_> {
    fn item(&self, source_ref: String, target_tag: Option<String>) -> Item {
        Item {
            source: Endpoint {
                registry: self.src.clone(),
                repo: self.repo.clone(),
            },
            source_ref,
            target: Endpoint {
                registry: self.dst.clone(),
                repo: self.target_repo.clone(),
            },
            target_tag,
            subject: None,
            platforms: None,
            rule: self.rule.number,
            after: None,
            seen: None,
            read: None,
            contest: None,
        }
    }

    /// Items for `roots` (source reference, target tag), and for what refers to them.
    async fn add(
        &self,
        all: Result<Vec<String>, RegistryError>,
        roots: Vec<(String, Option<String>)>,
        out: &mut Selection,
    ) {
        let refs: Vec<String> = roots.iter().map(|(r, _)| r.clone()).collect();
        let mut known: HashMap<String, Digest> = HashMap::new();
        let mut cold: HashSet<String> = HashSet::new();
        let mut root_keys: HashMap<String, ItemKey> = HashMap::new();
        let first_root = out.items.len();
        for (source_ref, target_tag) in roots {
            let mut item = self.item(source_ref, target_tag);
            item.platforms = self.rule.platforms.clone();
            let recorded = self.journal.recorded(&item);
            match recorded.filter(|r| r.fresh) {
                None => {
                    cold.insert(item.source_ref.clone());
                }
                // An immutable tag recorded done recently is trusted not to have moved at the
                // source: its digest needs no HEAD here. (Once its record is old, it is asked
                // like any other: release tags do get re-pushed.)
                Some(r) if self.journal.immutable(&item) => {
                    known.insert(item.source_ref.clone(), r.digest);
                }
                Some(_) => {}
            }
            root_keys.insert(item.source_ref.clone(), item.key());
            out.items.push(item);
        }
        if !self.rule.referrers.enabled() {
            return;
        }
        let repo = &self.repo;
        // A tag no fresh record vouches for is read whole: its copy would read it anyway. A
        // referrer tag is a root of none.
        let is_cold = |tag: &str| match root_keys.contains_key(tag) {
            true => cold.contains(tag),
            false => self
                .journal
                .recorded(&self.item(tag.to_string(), Some(tag.to_string())))
                .is_none_or(|r| !r.fresh),
        };
        // The bodies this repository's items carry to the copy: at most READ_BUDGET per
        // repository, however many repositories the organisation has.
        let budget = AtomicUsize::new(READ_BUDGET);
        let reads = Reads {
            cold: &is_cold,
            budget: &budget,
        };
        let found = match all {
            Ok(all) => {
                let src = self.src.as_ref();
                discover(src, repo, &all, &refs, &known, self.rule, &reads).await
            }
            Err(e) => Err(e),
        };
        match found {
            Ok(found) => self.take_in(found, first_root, &root_keys, out),
            Err(e) => out.errors.push(SelectError {
                rule: self.rule.to_string(),
                what: format!(
                    "finding the signatures and other referrers of what it selects in {}",
                    crate::reference::display_repo(&self.rule.from.location, repo)
                ),
                source: e,
            }),
        }
    }

    /// Take in what discovery found: what the roots (from `first_root` on) were read as, the
    /// referrers' items, and the referrers refused.
    fn take_in(
        &self,
        mut found: referrer_search::Found,
        first_root: usize,
        root_keys: &HashMap<String, ItemKey>,
        out: &mut Selection,
    ) {
        for item in &mut out.items[first_root..] {
            item.seen = found.seen.get(&item.source_ref).cloned();
            item.read = found.read.remove(&item.source_ref);
        }
        for r in std::mem::take(&mut found.referrals) {
            let mut item = self.referrer(r, root_keys);
            item.seen = found.seen.get(&item.source_ref).cloned();
            item.read = found.read.remove(&item.source_ref);
            out.items.push(item);
        }
        let shown = crate::reference::display_repo(&self.rule.from.location, &self.repo);
        out.errors
            .extend(found.refused.into_iter().map(|(subject, e)| SelectError {
                rule: self.rule.to_string(),
                what: format!("skipped a referrer of {shown}@{subject}"),
                source: e.into(),
            }));
    }

    /// The item for a referrer found, after the item that carries its subject.
    fn referrer(&self, r: referrer_search::Referral, root_keys: &HashMap<String, ItemKey>) -> Item {
        let parent = match r.origin {
            Origin::Root(source_ref) => root_keys[&source_ref].clone(),
            Origin::Tag(tag) => self.item(tag.clone(), Some(tag)).key(),
            Origin::Digest(d) => self.item(d.to_string(), None).key(),
        };
        let mut item = match r.what {
            Referred::Tag(tag) => self.item(tag.clone(), Some(tag)),
            Referred::Digest(digest) => {
                let mut item = self.item(digest.to_string(), None);
                item.subject = Some(r.subject.clone());
                item
            }
        };
        item.after = Some(After {
            parent,
            subject: r.subject,
        });
        item
    }
}

/// The names of a registry's listing that pass `check`; each other one becomes an error of
/// the rule (`what` happened, and the name, escaped), and costs only itself.
fn sort_out(
    listed: Vec<String>,
    check: fn(&str) -> Result<(), NameError>,
    rule: &CopyRule,
    what: &str,
    errors: &mut Vec<SelectError>,
) -> Vec<String> {
    let (good, bad) = names::sort_out(listed, check);
    errors.extend(bad.into_iter().map(|e| SelectError {
        rule: rule.to_string(),
        what: what.to_string(),
        source: e.into(),
    }));
    good
}

/// Where a repository a wildcard found goes: its path below the source prefix, below the
/// target prefix. The name came from a registry's catalog (or a layout walk), so it must be a
/// valid name under the prefix, and the target must stay under the prefix the plan named.
pub fn wildcard_target(rule: &CopyRule, repo: &str) -> Result<String, RegistryError> {
    if let Location::Registry(_) = rule.from.location {
        names::repository(repo)?;
    }
    let suffix = repo
        .strip_prefix(rule.from.repository.as_str())
        .ok_or_else(|| RegistryError::Protocol {
            url: rule.from.to_string(),
            reason: format!("listed {}, which is not under it", names::shown(repo)),
        })?;
    match rule.to.location {
        Location::Registry(_) => {
            let target = format!("{}{suffix}", rule.to.repository);
            names::repository(&target)?;
            Ok(target)
        }
        Location::Layout => layout::join_under(&rule.to.repository, suffix),
    }
}

#[cfg(test)]
mod tests;
