//! The pure half of retention: an inventory, a rule and "now" in, one decision per image out,
//! each with the reason people read in `ferry plan`.
//!
//! Decisions are per digest, never per tag. Tagged images that are not referrers are ranked and
//! judged by the rule; untagged top-level manifests by `untagged` and `older_than`; children of
//! indexes and referrers (cosign `.sig/.att/.sbom` tags, OCI 1.1 `subject`) follow what they
//! hang off. Everything reachable from a kept image (children, referrers, recursively) is kept;
//! what the registry will not delete ([`Refusals`]) stays, with all it reaches; and the
//! `max_deletions` valve is applied last.

use std::collections::{HashMap, VecDeque};
use std::time::SystemTime;

use semver::Version;

use super::decisions::{valve_reason, Action, Conflict, Decision, Image, RepoDecisions};
use super::pins::Pins;
use super::refusals::Refusals;
use super::retain_rule::RetainRule;
use crate::reference::version::parse_version;
use crate::reference::Digest;

/// What part an image plays in its repository, which decides how it is judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    /// Tagged, no subject: ranked and judged by the rule (even when also a child of an index).
    Ranked,
    /// No tag, no subject, no parent in the inventory.
    Untagged,
    /// No tag, no subject, listed as a child of an image of the inventory: follows its parents.
    Child,
    /// Has a subject: follows it.
    Referrer,
}

/// Decide, per image, keep or delete; pure (no I/O).
pub fn select(images: &[Image], rule: &RetainRule, now: SystemTime) -> RepoDecisions {
    select_with(
        images,
        rule,
        now,
        &vec![None; images.len()],
        &Refusals::default(),
    )
}

/// [`select`], with images the policy must keep whatever its rule says ([`Pins`]): each is
/// kept with everything it reaches, and each the rule alone would delete is a [`Conflict`]
/// when a copy needs it. What the registry will not delete (`pins.refusals`) is kept too,
/// never a conflict.
pub fn select_pinned(
    images: &[Image],
    rule: &RetainRule,
    now: SystemTime,
    pins: &Pins,
) -> RepoDecisions {
    let copied: Vec<Option<String>> = images.iter().map(|img| pins.reason_for(img)).collect();
    let used: Vec<Option<String>> = images.iter().map(|img| pins.in_use_by(img)).collect();
    let pinned: Vec<Option<String>> = copied
        .iter()
        .zip(&used)
        .map(|(c, u)| c.clone().or_else(|| u.clone()))
        .collect();
    let mut out = if pinned.iter().all(Option::is_none) {
        select_with(images, rule, now, &pinned, &pins.refusals)
    } else {
        let wanted = select(images, rule, now);
        let mut out = select_with(images, rule, now, &pinned, &pins.refusals);
        for (i, img) in images.iter().enumerate() {
            let Some(d) = wanted
                .decisions
                .iter()
                .find(|d| d.digest == img.digest && d.action == Action::Delete)
            else {
                continue;
            };
            match (&copied[i], &used[i]) {
                (Some(why), _) => out.conflicts.push(Conflict {
                    digest: img.digest.clone(),
                    tags: d.tags.clone(),
                    would: d.reason.clone(),
                    pinned_by: why.clone(),
                }),
                (None, Some(_)) => out.in_use += 1,
                (None, None) => {}
            }
        }
        out
    };
    if let Some(why) = &pins.hold {
        hold(&mut out, why);
    }
    out
}

/// Delete nothing: every deletion becomes a keep that says why.
fn hold(out: &mut RepoDecisions, why: &str) {
    let mut held = false;
    for d in out
        .decisions
        .iter_mut()
        .filter(|d| d.action == Action::Delete)
    {
        d.action = Action::Keep;
        d.reason = format!("kept: {why}");
        held = true;
    }
    if held {
        out.held_back = Some(why.to_string());
    }
}

/// Each image's decision while selection goes on (`None`: not decided yet), by index into
/// the inventory.
type Decided = Vec<Option<(Action, String)>>;

/// `pinned[i]`: why image `i` is kept whatever the rule says. The seven phases, in order.
fn select_with(
    images: &[Image],
    rule: &RetainRule,
    now: SystemTime,
    pinned: &[Option<String>],
    refusals: &Refusals,
) -> RepoDecisions {
    let own = |seen: &Seen<'_>| own_decision(seen, rule, now, pinned);
    let mut decisions = decide(images, &own, refusals);
    let held_back = valve(rule, &mut decisions);
    RepoDecisions {
        decisions,
        held_back,
        conflicts: Vec::new(),
        in_use: 0,
    }
}

/// What phase 3 knows of one image when it judges it.
pub(super) struct Seen<'a> {
    /// Index into the inventory.
    pub index: usize,
    pub image: &'a Image,
    /// Its tags, sorted.
    pub tags: &'a [String],
    pub role: Role,
    /// Its place among the ranked images, newest first, and how many there are.
    pub rank: Option<usize>,
    pub ranked: usize,
    /// For a referrer: is what it refers to in the inventory?
    pub subject_here: bool,
}

/// Phases 1 to 6 with `own` as phase 3: an image's own decision, or `None` to have it follow
/// what it hangs off (a child its parents, a referrer its subject). Everything a kept image
/// reaches is kept; an orphan goes with what it hangs off; what the registry will not delete
/// stays (phase 5b).
pub(super) fn decide(
    images: &[Image],
    own: &dyn Fn(&Seen<'_>) -> Option<(Action, String)>,
    refusals: &Refusals,
) -> Vec<Decision> {
    let mut graph = Graph::new(images);
    let order = Order::new(&graph);
    graph.sort_referrers(&order.position);
    let mut decided: Decided = (0..images.len())
        .map(|i| {
            own(&Seen {
                index: i,
                image: &images[i],
                tags: &graph.tags[i],
                role: graph.roles[i],
                rank: order.rank_of[i],
                ranked: order.ranked.len(),
                subject_here: graph.roles[i] == Role::Referrer && graph.subject_of(i).is_some(),
            })
        })
        .collect();
    protect(&graph, &order, &mut decided);
    decide_orphans(&graph, &order, &mut decided);
    if refused::keep(
        graph.images,
        &graph.tags,
        &order.ranked,
        &mut decided,
        refusals,
    ) {
        protect(&graph, &order, &mut decided);
    }
    in_order(&graph, &order, decided)
}

/// The repository as selection sees it, by index into the inventory: each image's tags
/// (sorted) and name for people, and the graph inside the inventory.
struct Graph<'a> {
    images: &'a [Image],
    tags: Vec<Vec<String>>,
    /// The first tag, else the short digest.
    names: Vec<String>,
    /// Digest -> index (the first image with that digest, should the inventory repeat one).
    index: HashMap<&'a Digest, usize>,
    /// Children of each image (listed order, first listing wins), with their platform.
    children: Vec<Vec<(usize, Option<&'a str>)>>,
    /// Parents of each image, with the platform they list it under.
    parents: Vec<Vec<(usize, Option<&'a str>)>>,
    /// Referrers of each subject.
    referrers: Vec<Vec<usize>>,
    roles: Vec<Role>,
}

impl<'a> Graph<'a> {
    /// Phase 1: tags, names, edges and roles.
    fn new(images: &'a [Image]) -> Self {
        let n = images.len();
        let tags: Vec<Vec<String>> = images
            .iter()
            .map(|img| {
                let mut t = img.tags.clone();
                t.sort();
                t
            })
            .collect();
        let names = images
            .iter()
            .zip(&tags)
            .map(|(img, t)| {
                t.first()
                    .cloned()
                    .unwrap_or_else(|| img.digest.short().to_string())
            })
            .collect();
        let mut index: HashMap<&Digest, usize> = HashMap::with_capacity(n);
        for (i, img) in images.iter().enumerate() {
            index.entry(&img.digest).or_insert(i);
        }
        let mut graph = Graph {
            images,
            tags,
            names,
            index,
            children: vec![Vec::new(); n],
            parents: vec![Vec::new(); n],
            referrers: vec![Vec::new(); n],
            roles: Vec::new(),
        };
        graph.link();
        graph.roles = (0..n).map(|i| graph.role(i)).collect();
        graph
    }

    /// Children and parents of each image, referrers of each subject.
    fn link(&mut self) {
        for (p, img) in self.images.iter().enumerate() {
            for (d, platform) in &img.children {
                if let Some(&c) = self.index.get(d) {
                    if self.children[p].iter().any(|&(x, _)| x == c) {
                        continue;
                    }
                    self.children[p].push((c, platform.as_deref()));
                    self.parents[c].push((p, platform.as_deref()));
                }
            }
            if let Some(s) = img.subject.as_ref().and_then(|s| self.index.get(s)) {
                self.referrers[*s].push(p);
            }
        }
    }

    fn role(&self, i: usize) -> Role {
        if self.images[i].subject.is_some() {
            Role::Referrer
        } else if !self.tags[i].is_empty() {
            Role::Ranked
        } else if !self.parents[i].is_empty() {
            Role::Child
        } else {
            Role::Untagged
        }
    }

    /// Referrers of each subject in the stable order, so the walk is deterministic.
    fn sort_referrers(&mut self, position: &[usize]) {
        for list in &mut self.referrers {
            list.sort_by_key(|&r| position[r]);
        }
    }

    /// The index of what referrer `i` refers to, when it is in the inventory.
    fn subject_of(&self, i: usize) -> Option<usize> {
        let subject = self.images[i]
            .subject
            .as_ref()
            .expect("referrer has a subject");
        self.index.get(subject).copied()
    }
}

/// Phase 2: the tagged top-level images ranked newest first, and the stable order of
/// everything: ranked images by rank, then the rest by name and digest. The order is the
/// output's, and makes the protection walk deterministic.
struct Order {
    ranked: Vec<usize>,
    rank_of: Vec<Option<usize>>,
    order: Vec<usize>,
    /// Where each image stands in `order`.
    position: Vec<usize>,
}

impl Order {
    fn new(g: &Graph<'_>) -> Self {
        let n = g.images.len();
        let ranked: Vec<usize> = rank(g.images, &g.tags, &g.roles);
        let mut rank_of: Vec<Option<usize>> = vec![None; n];
        for (r, &i) in ranked.iter().enumerate() {
            rank_of[i] = Some(r);
        }
        let mut order: Vec<usize> = ranked.clone();
        let mut rest: Vec<usize> = (0..n).filter(|&i| rank_of[i].is_none()).collect();
        rest.sort_by(|&a, &b| {
            g.names[a]
                .cmp(&g.names[b])
                .then_with(|| g.images[a].digest.cmp(&g.images[b].digest))
                .then(a.cmp(&b))
        });
        order.extend(rest);
        let mut position = vec![0usize; n];
        for (pos, &i) in order.iter().enumerate() {
            position[i] = pos;
        }
        Order {
            ranked,
            rank_of,
            order,
            position,
        }
    }
}

/// Phase 3, own decisions: pinned images kept, ranked and untagged images judged by the rule,
/// orphan referrers kept. Children and referrers of images in the inventory are left to the
/// walk.
fn own_decision(
    seen: &Seen<'_>,
    rule: &RetainRule,
    now: SystemTime,
    pinned: &[Option<String>],
) -> Option<(Action, String)> {
    if let Some(why) = &pinned[seen.index] {
        return Some((Action::Keep, format!("kept: {why}")));
    }
    match seen.role {
        Role::Ranked => Some(judge_tagged(
            seen.image,
            seen.tags,
            seen.rank.unwrap_or(usize::MAX),
            seen.ranked,
            rule,
            now,
        )),
        Role::Untagged => Some(judge_untagged(seen.image, rule, now)),
        Role::Referrer if !seen.subject_here => {
            let subject = seen.image.subject.as_ref().expect("referrer has a subject");
            Some((
                Action::Keep,
                format!(
                    "kept: {} of {}, which is not in this repository",
                    referrer_kind(seen.tags),
                    subject.short()
                ),
            ))
        }
        Role::Referrer | Role::Child => None,
    }
}

/// Phase 4, protection: everything reachable from a kept image is kept, breadth first so that
/// each reason names the closest kept image (and never an image kept only because of this one).
fn protect(g: &Graph<'_>, o: &Order, decided: &mut Decided) {
    let mut kept: Vec<bool> = decided
        .iter()
        .map(|d| matches!(d, Some((Action::Keep, _))))
        .collect();
    let mut queue: VecDeque<usize> = o.order.iter().copied().filter(|&i| kept[i]).collect();
    while let Some(x) = queue.pop_front() {
        for &(c, platform) in &g.children[x] {
            if !kept[c] {
                kept[c] = true;
                decided[c] = Some((
                    Action::Keep,
                    format!("kept: child of {}{}", g.names[x], platform_suffix(platform)),
                ));
                queue.push_back(c);
            }
        }
        for &r in &g.referrers[x] {
            if !kept[r] {
                kept[r] = true;
                decided[r] = Some((
                    Action::Keep,
                    format!("kept: {} of {}", referrer_kind(&g.tags[r]), g.names[x]),
                ));
                queue.push_back(r);
            }
        }
    }
}

/// Phase 5, orphans: whatever no kept image reaches and has no decision of its own goes with
/// what it hangs off: a child whose parents are all deleted, a referrer whose subject is.
fn decide_orphans(g: &Graph<'_>, o: &Order, decided: &mut Decided) {
    for (i, decision) in decided.iter_mut().enumerate() {
        if decision.is_some() {
            continue;
        }
        let reason = match g.roles[i] {
            Role::Referrer => {
                let s = g
                    .subject_of(i)
                    .expect("an undecided referrer's subject is here");
                format!(
                    "delete: {} of deleted {}",
                    referrer_kind(&g.tags[i]),
                    g.names[s]
                )
            }
            _ => {
                let &(p, platform) = g.parents[i]
                    .iter()
                    .min_by_key(|&&(p, _)| o.position[p])
                    .expect("a child has a parent");
                format!(
                    "delete: child of deleted {}{}",
                    g.names[p],
                    platform_suffix(platform)
                )
            }
        };
        *decision = Some((Action::Delete, reason));
    }
}

/// Phase 6, the output: kept images first, then deleted ones, each in the stable order.
fn in_order(g: &Graph<'_>, o: &Order, decided: Decided) -> Vec<Decision> {
    let decided: Vec<(Action, String)> = decided
        .into_iter()
        .map(|d| d.expect("every image is decided"))
        .collect();
    let mut decisions: Vec<Decision> = Vec::with_capacity(decided.len());
    for action in [Action::Keep, Action::Delete] {
        for &i in &o.order {
            let (a, reason) = &decided[i];
            if *a == action {
                decisions.push(Decision {
                    digest: g.images[i].digest.clone(),
                    tags: g.tags[i].clone(),
                    action: *a,
                    reason: reason.clone(),
                });
            }
        }
    }
    decisions
}

/// Phase 7, the valve: too many deletions in one repository means something is off (a wrong
/// pattern, a broken inventory); delete nothing there and say why.
fn valve(rule: &RetainRule, decisions: &mut [Decision]) -> Option<String> {
    let deletions = decisions
        .iter()
        .filter(|d| d.action == Action::Delete)
        .count();
    match rule.max_deletions {
        Some(max) if deletions > max => {
            let what = format!("{deletions} deletions");
            let why = valve_reason(&what, max, "deleted in this repository");
            for d in decisions.iter_mut().filter(|d| d.action == Action::Delete) {
                d.action = Action::Keep;
                d.reason = format!("kept: {why}");
            }
            Some(why)
        }
        _ => None,
    }
}

/// The ranked images (tagged, no subject), newest first. By version when every one of them has
/// a version tag (highest version among its tags; ties: created descending, then digest),
/// otherwise by creation time descending (unknown counts as oldest; ties by digest).
fn rank(images: &[Image], tags: &[Vec<String>], roles: &[Role]) -> Vec<usize> {
    let mut ranked: Vec<usize> = (0..images.len())
        .filter(|&i| roles[i] == Role::Ranked)
        .collect();
    let versions: Vec<Option<Version>> = ranked
        .iter()
        .map(|&i| tags[i].iter().filter_map(|t| parse_version(t)).max())
        .collect();
    let by_version = versions.iter().all(Option::is_some);
    let version_of: HashMap<usize, Option<Version>> =
        ranked.iter().copied().zip(versions).collect();
    // `Option<SystemTime>` orders `None` first, so descending puts unknown times last.
    let by_time = |a: usize, b: usize| {
        images[b]
            .created
            .cmp(&images[a].created)
            .then_with(|| images[a].digest.cmp(&images[b].digest))
            .then(a.cmp(&b))
    };
    if by_version {
        ranked.sort_by(|&a, &b| {
            version_of[&b]
                .cmp(&version_of[&a])
                .then_with(|| by_time(a, b))
        });
    } else {
        ranked.sort_by(|&a, &b| by_time(a, b));
    }
    ranked
}

/// What a referrer is, from its tags: the first (sorted) cosign-style suffix that says.
pub(super) fn referrer_kind(tags: &[String]) -> &'static str {
    tags.iter()
        .find_map(|t| {
            if t.ends_with(".sig") {
                Some("signature")
            } else if t.ends_with(".att") {
                Some("attestation")
            } else if t.ends_with(".sbom") {
                Some("SBOM")
            } else {
                None
            }
        })
        .unwrap_or("referrer")
}

pub(super) fn platform_suffix(platform: Option<&str>) -> String {
    platform.map(|p| format!(" ({p})")).unwrap_or_default()
}

mod judge;
mod refused;

pub(crate) use judge::format_rule;
use judge::{judge_tagged, judge_untagged};

#[cfg(test)]
mod tests;
