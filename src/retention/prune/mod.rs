//! Pruning: a `[[copy]]` rule with `prune` deletes at its target what it copied there once it
//! no longer selects it (the tag is gone at the source, or its filters leave it out), and
//! nothing else.
//!
//! Ownership comes from the checkpoint ([`Ledger`], read through retention's [`Journal`]): a target tag is this rule's when a run
//! recorded copying it from the source repository the rule maps there, and the tag still
//! points at the digest that run wrote. A tag nobody recorded, or that someone pushed over,
//! is "not ours" and stays. Decisions are made per image through the same graph walk as
//! retention (`select::decide`): what a kept tag, a referrer or an `[in_use]`
//! reference reaches stays; an image that also carries a kept tag loses only the pruned tag
//! ([`Registry::delete_tag`]). [`select()`] is pure; [`rules::run()`] reads, decides and deletes, and
//! `ferry plan` runs it over overlays, so the dry run prunes what the run prunes.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use crate::retention::decisions::{valve_reason, Action, Decision, Image, RepoDecisions};
use crate::retention::deletions::{Copied, Deletion, Journal, Ledger};
use crate::retention::inventory::{self, Manifests};
use crate::retention::pins::InUsePins;
use crate::retention::refusals::{failure, imposed, Refusals, Told};
use crate::retention::select::{decide, format_rule, Role, Seen};

pub mod rules;
use crate::reference::Digest;
use crate::registry::manifest::referrer_tag_subject;
use crate::registry::{Registry, RegistryError};

const DAY: u64 = 86_400;

/// A copy rule's `prune` settings: the safety valves of pruning what it copied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Prune {
    /// More deletions than this for the rule in one run: delete nothing and say why.
    pub max_deletions: Option<usize>,
    /// A tag must have been missing from what the rule selects for this long first (`None`:
    /// pruned on the first run that finds it missing).
    pub older_than: Option<Duration>,
}

/// What the source said of the repository a target repository mirrors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceTags {
    /// Its tags, as listed this run.
    Listed(HashSet<String>),
    /// It no longer exists (not in the catalog, or the registry says it is unknown).
    Gone,
}

/// One target repository a rule prunes, with what pruning needs to judge its tags.
#[derive(Clone, Debug)]
pub struct Scope {
    /// The target repository (as the target registry names it).
    pub repo: String,
    /// The source repository it mirrors, as people write it.
    pub source: String,
    pub source_tags: SourceTags,
    /// Every tag of the repository some rule of the plan selects this run.
    pub selected: HashSet<String>,
}

/// What decides one repository besides its inventory.
pub struct Judge<'a> {
    pub prune: &'a Prune,
    /// References of the repository this rule copied (see [`Ledger::copied_from`]).
    pub copied: &'a HashMap<String, Copied>,
    /// Tag -> when first found missing.
    pub missing: &'a HashMap<String, SystemTime>,
    pub scope: &'a Scope,
    pub in_use: &'a InUsePins,
    /// What the registry will not delete: kept with its tags.
    pub refusals: &'a Refusals,
    pub now: SystemTime,
}

/// What pruning does with one image, or with some of its tags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PruneAction {
    Keep,
    /// Delete the manifest, and with it every tag on it.
    Delete,
    /// Remove these tags only; the manifest and its other tags stay.
    Untag,
}

/// One decision, with the reason people read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PruneDecision {
    pub digest: Digest,
    /// The tags it is about: all of the image's for `Delete`, the removed ones for `Untag`,
    /// the tag not pruned for a `Keep`.
    pub tags: Vec<String>,
    pub action: PruneAction,
    pub reason: String,
}

/// The decisions for one repository.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepoPrune {
    /// Deletions first (manifests, then tags), then what is kept that the rule does not
    /// select; tags the plan selects are not listed.
    pub decisions: Vec<PruneDecision>,
    /// Tags found missing this run that had not been (to remember when).
    pub newly_missing: Vec<String>,
    /// Tags remembered missing that are not any more (selected again, not ours, or gone).
    pub found_again: Vec<String>,
}

impl RepoPrune {
    pub fn deletions(&self) -> usize {
        self.decisions
            .iter()
            .filter(|d| d.action != PruneAction::Keep)
            .count()
    }
}

/// What becomes of one tag at the target.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Fate {
    /// A rule selects it this run.
    Selected,
    /// Ours, no longer selected, and missing long enough: pruned, and why.
    Prune(String),
    /// Ours and no longer selected, but not missing for `older_than` yet.
    Wait(String),
    /// Not ours: nobody recorded copying it, or someone pushed over it.
    NotOurs(String),
}

impl Judge<'_> {
    fn fate(&self, tag: &str, digest: &Digest) -> Fate {
        if self.scope.selected.contains(tag) {
            return Fate::Selected;
        }
        let Some(copied) = self.copied.get(tag) else {
            return Fate::NotOurs("kept: not ours (ferry did not copy this tag here)".to_string());
        };
        if copied.digest != *digest {
            return Fate::NotOurs(format!(
                "kept: not ours (pushed over: it is {}, ferry wrote {})",
                digest.short(),
                copied.digest.short()
            ));
        }
        let why = match &self.scope.source_tags {
            SourceTags::Gone => "its source repository is gone",
            SourceTags::Listed(tags) if tags.contains(tag) => "the rule's tag filters leave it out",
            SourceTags::Listed(_) => "gone at the source",
        };
        let since = self.missing.get(tag).copied().unwrap_or(self.now);
        let missing_for = self.now.duration_since(since).unwrap_or(Duration::ZERO);
        match self.prune.older_than {
            Some(wait) if missing_for < wait => Fate::Wait(format!(
                "kept: {why}, missing for {}, not yet older_than = {}",
                age(missing_for),
                format_rule(wait)
            )),
            _ => Fate::Prune(format!("prune: {why}")),
        }
    }
}

/// `3d`, `5h` or `12m`: how long, roughly.
fn age(d: Duration) -> String {
    let s = d.as_secs();
    if s >= DAY {
        format!("{}d", s / DAY)
    } else if s >= 3600 {
        format!("{}h", s / 3600)
    } else {
        format!("{}m", s / 60)
    }
}

/// Decide one repository; pure (no I/O).
pub fn select(images: &[Image], judge: &Judge<'_>) -> RepoPrune {
    let fates: Vec<Vec<(String, Fate)>> = images
        .iter()
        .map(|img| {
            let mut tags = img.tags.clone();
            tags.sort();
            tags.into_iter()
                .map(|t| {
                    let f = judge.fate(&t, &img.digest);
                    (t, f)
                })
                .collect()
        })
        .collect();
    let judged = |seen: &Seen<'_>| own(seen, &fates[seen.index], judge);
    let whole = decide(images, &judged, judge.refusals);
    let mut out = RepoPrune::default();
    let by_digest: HashMap<&Digest, usize> = images
        .iter()
        .enumerate()
        .map(|(i, img)| (&img.digest, i))
        .collect();
    let mut kept = Vec::new();
    for d in whole {
        let fates = &fates[by_digest[&d.digest]];
        match d.action {
            Action::Delete => out.decisions.push(PruneDecision {
                digest: d.digest.clone(),
                tags: d.tags.clone(),
                action: PruneAction::Delete,
                reason: d.reason.clone(),
            }),
            Action::Keep => kept.extend(kept_tags(&d.digest, &d.reason, fates, judge)),
        }
    }
    kept.sort_by_key(|d| d.action != PruneAction::Untag);
    out.decisions.extend(kept);
    remember(&mut out, &fates, judge);
    out
}

/// Phase 3 of the walk for pruning: an image in use, or with a tag that stays, is kept; an
/// image whose tags are all pruned is deleted (a referrer goes with its subject); untagged
/// images are kept unless they hang off another image (and, for a referrer, ferry copied
/// it).
fn own(seen: &Seen<'_>, fates: &[(String, Fate)], judge: &Judge<'_>) -> Option<(Action, String)> {
    if let Some(by) = in_use_by(seen.image, judge.in_use) {
        return Some((Action::Keep, format!("kept: {by}")));
    }
    if let Some((tag, fate)) = fates.iter().find(|(_, f)| !matches!(f, Fate::Prune(_))) {
        return Some((
            Action::Keep,
            match fate {
                Fate::Wait(why) | Fate::NotOurs(why) => why.clone(),
                _ => format!("kept: tag {tag} is selected by the plan"),
            },
        ));
    }
    let ours = || judge.copied.contains_key(seen.image.digest.as_str());
    match (seen.role, fates.first()) {
        (Role::Referrer, _) if seen.subject_here && (!fates.is_empty() || ours()) => None,
        (Role::Child, None) => None,
        (_, Some((_, Fate::Prune(why)))) => Some((Action::Delete, why.clone())),
        _ => Some((
            Action::Keep,
            "kept: untagged, and not ours to prune".to_string(),
        )),
    }
}

fn in_use_by(image: &Image, in_use: &InUsePins) -> Option<String> {
    in_use
        .digests
        .get(&image.digest)
        .or_else(|| image.tags.iter().find_map(|t| in_use.tags.get(t)))
        .cloned()
}

/// For a kept image: its pruned tags removed alone (never a referrer's tag, which is how its
/// subject finds it, nor a tag of what the registry will not delete: GHCR's last tagged
/// version must keep one, and a popular version is pulled by it), and each tag that is not
/// selected, with why it stays.
fn kept_tags(
    digest: &Digest,
    reason: &str,
    fates: &[(String, Fate)],
    judge: &Judge<'_>,
) -> Vec<PruneDecision> {
    let one = |tag: &str, action, reason: String| PruneDecision {
        digest: digest.clone(),
        tags: vec![tag.to_string()],
        action,
        reason,
    };
    let mut out = Vec::new();
    for (tag, fate) in fates {
        match fate {
            Fate::Selected => {}
            Fate::Wait(why) | Fate::NotOurs(why) => {
                out.push(one(tag, PruneAction::Keep, why.clone()))
            }
            Fate::Prune(_) if judge.in_use.tags.contains_key(tag) => out.push(one(
                tag,
                PruneAction::Keep,
                format!("kept: {}", judge.in_use.tags[tag]),
            )),
            Fate::Prune(_) if referrer_tag_subject(tag).is_some() || imposed(reason) => {
                out.push(one(tag, PruneAction::Keep, reason.to_string()))
            }
            Fate::Prune(why) => out.push(one(
                tag,
                PruneAction::Untag,
                format!(
                    "{why}; the image stays ({})",
                    reason.trim_start_matches("kept: ")
                ),
            )),
        }
    }
    out
}

/// Which tags to remember as missing from now, and which to forget.
fn remember(out: &mut RepoPrune, fates: &[Vec<(String, Fate)>], judge: &Judge<'_>) {
    let mut missing_now = HashSet::new();
    for (tag, fate) in fates.iter().flatten() {
        if matches!(fate, Fate::Prune(_) | Fate::Wait(_)) {
            missing_now.insert(tag.as_str());
            if !judge.missing.contains_key(tag) {
                out.newly_missing.push(tag.clone());
            }
        }
    }
    let mut again: Vec<String> = judge
        .missing
        .keys()
        .filter(|t| !missing_now.contains(t.as_str()))
        .cloned()
        .collect();
    again.sort();
    out.found_again = again;
    out.newly_missing.sort();
}

/// How far the `max_deletions` valve lets a rule go: `Some(why)` when its deletions, across
/// all its repositories, exceed it (then nothing of the rule is pruned).
pub fn valve(prune: &Prune, deletions: usize) -> Option<String> {
    match prune.max_deletions {
        Some(max) if deletions > max => Some(valve_reason(
            &format!("{deletions} prune deletions"),
            max,
            "pruned for this rule",
        )),
        _ => None,
    }
}

/// Turn every deletion into a keep that says why (the valve, or a failed `[in_use]` source).
pub fn hold(repo: &mut RepoPrune, why: &str) {
    for d in repo
        .decisions
        .iter_mut()
        .filter(|d| d.action != PruneAction::Keep)
    {
        d.action = PruneAction::Keep;
        d.reason = format!("kept: {why}");
    }
}

/// Read one target repository and decide it: its images, the manifests read on the way (for
/// the deletions to keep) and the decisions. A repository that does not exist at the target
/// has nothing to prune.
pub async fn plan_repo(
    registry: &dyn Registry,
    judge: &Judge<'_>,
) -> Result<(Vec<Image>, Manifests, RepoPrune), RegistryError> {
    match inventory::read_keeping(registry, &judge.scope.repo).await {
        Ok((images, manifests)) => {
            let decided = select(&images, judge);
            Ok((images, manifests, decided))
        }
        Err(e) if e.is_not_found() => Ok(Default::default()),
        Err(e) => Err(e),
    }
}

/// One deletion pruning made, and how it went (`Ok`: the registry's id of what it deleted,
/// where it has one). A deletion the registry refused for good is a `Keep` that says why (see
/// [`crate::retention::apply::Deleted`]).
#[derive(Debug)]
pub struct PruneDone {
    pub decision: PruneDecision,
    pub result: Result<Option<String>, RegistryError>,
}

impl PruneDone {
    /// Why this is a failure of the run, if it is (see [`crate::retention::refusals`]).
    pub fn failure(&self) -> Option<&RegistryError> {
        failure(self.decision.action == PruneAction::Keep, &self.result)
    }
}

/// Carry out a repository's deletions: whole manifests top-down (parents and subjects before
/// what they reference, as retention does, each looked at again right before its DELETE),
/// then tags removed alone. Each one made is recorded through `journal`, with its manifest
/// from `manifests`, and told through `note`, as is each keep the registry imposed; an image
/// found tagged since the inventory is kept, its decision in `decided` turned into that keep,
/// and told too. Returns what was done, and the longest time between a digest's last look
/// and its DELETE.
pub async fn apply(
    registry: &dyn Registry,
    repo: &str,
    images: &[Image],
    manifests: &mut Manifests,
    decided: &mut RepoPrune,
    journal: &dyn Journal,
    note: &(dyn Fn(&str) + Sync),
) -> (Vec<PruneDone>, Option<Duration>) {
    let whole = RepoDecisions {
        held_back: None,
        conflicts: Vec::new(),
        in_use: 0,
        decisions: decided
            .decisions
            .iter()
            .filter(|d| d.action == PruneAction::Delete)
            .map(|d| whole_decision(d, Action::Delete))
            .collect(),
    };
    if journal.keeps_manifests() {
        let doomed = whole.decisions.iter().map(|d| &d.digest);
        inventory::keep_for_restore(registry, repo, doomed, manifests).await;
    }
    let repository = match registry.name() {
        "oci:" => format!("oci:{repo}"),
        host => format!("{host}/{repo}"),
    };
    let told = Told::new(registry.name(), repo, &repository, journal, note);
    let imposed_keeps = decided
        .decisions
        .iter()
        .filter(|d| d.action == PruneAction::Keep && imposed(&d.reason));
    for d in imposed_keeps {
        told.planned(&whole_decision(d, Action::Keep));
    }
    let applied = crate::retention::apply::apply(registry, repo, images, &whole).await;
    late_keeps(decided, &applied.kept, &repository, note);
    let mut out: Vec<PruneDone> = Vec::with_capacity(applied.deleted.len());
    for d in applied.deleted {
        if let Err(e) = &d.result {
            told.met(&d.decision, e, SystemTime::now());
        }
        let action = match d.decision.action {
            Action::Keep => PruneAction::Keep,
            Action::Delete => PruneAction::Delete,
        };
        out.push(PruneDone {
            decision: PruneDecision {
                digest: d.decision.digest,
                tags: d.decision.tags,
                action,
                reason: d.decision.reason,
            },
            result: d.result,
        });
    }
    out.extend(untag(registry, repo, decided).await);
    record(
        registry.name(),
        repo,
        &repository,
        &out,
        manifests,
        journal,
        note,
    );
    (out, applied.window)
}

/// Tell each image the look before its DELETE found tagged since the inventory, and turn its
/// decision in `decided` into that keep.
fn late_keeps(
    decided: &mut RepoPrune,
    kept: &[Decision],
    repository: &str,
    note: &(dyn Fn(&str) + Sync),
) {
    for k in kept {
        note(&crate::retention::refusals::told("kept", repository, k));
        let late = decided
            .decisions
            .iter_mut()
            .find(|d| d.digest == k.digest && d.action == PruneAction::Delete);
        if let Some(d) = late {
            d.action = PruneAction::Keep;
            d.reason = k.reason.clone();
        }
    }
}

/// Tell and record each deletion pruning made, with its manifest from `manifests`.
fn record(
    registry: &str,
    repo: &str,
    repository: &str,
    done: &[PruneDone],
    manifests: &Manifests,
    journal: &dyn Journal,
    note: &(dyn Fn(&str) + Sync),
) {
    for done in done {
        if let Ok(version_id) = &done.result {
            let shown = whole_decision(&done.decision, Action::Delete);
            note(&crate::retention::refusals::told(
                "pruned", repository, &shown,
            ));
            journal.deleted(&Deletion {
                registry,
                repo,
                digest: &done.decision.digest,
                tags: &done.decision.tags,
                reason: &done.decision.reason,
                version_id: version_id.as_deref(),
                tags_only: done.decision.action == PruneAction::Untag,
                manifest: manifests.get(&done.decision.digest),
            });
        }
    }
}

/// Remove the tags pruning removes alone, image by image (the first failure ends an image's).
async fn untag(registry: &dyn Registry, repo: &str, decided: &RepoPrune) -> Vec<PruneDone> {
    let mut out = Vec::new();
    for d in decided
        .decisions
        .iter()
        .filter(|d| d.action == PruneAction::Untag)
    {
        let mut result = Ok(None);
        for tag in &d.tags {
            result = registry.delete_tag(repo, tag, &d.digest).await;
            if result.is_err() {
                break;
            }
        }
        out.push(PruneDone {
            decision: d.clone(),
            result,
        });
    }
    out
}

/// A prune decision as retention's, with `action`.
fn whole_decision(d: &PruneDecision, action: Action) -> Decision {
    Decision {
        digest: d.digest.clone(),
        tags: d.tags.clone(),
        action,
        reason: d.reason.clone(),
    }
}

#[cfg(test)]
mod tests;
