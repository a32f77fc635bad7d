//! The pure half of retention: an inventory, a rule and "now" in, one decision per image out,
//! each with the reason people read in `ferry plan`.
//!
//! Decisions are per digest, never per tag. Tagged images that are not referrers are ranked and
//! judged by the rule; untagged top-level manifests by `untagged` and `older_than`; children of
//! indexes and referrers (cosign `.sig/.att/.sbom` tags, OCI 1.1 `subject`) follow what they
//! hang off. Everything reachable from a kept image (children, referrers, recursively) is kept,
//! and the `max_deletions` valve is applied last.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use semver::Version;

use super::{Action, Conflict, Decision, Image, Pins, RepoDecisions, RetainRule};
use crate::plan::filter::parse_version;
use crate::registry::Digest;

const DAY: u64 = 86_400;

/// What part an image plays in its repository, which decides how it is judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
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
    select_with(images, rule, now, &vec![None; images.len()])
}

/// [`select`], with images the policy must keep whatever its rule says ([`Pins`]): each is
/// kept with everything it reaches, and each the rule alone would delete is a [`Conflict`].
pub fn select_pinned(
    images: &[Image],
    rule: &RetainRule,
    now: SystemTime,
    pins: &Pins,
) -> RepoDecisions {
    let pinned: Vec<Option<String>> = images.iter().map(|img| pins.reason_for(img)).collect();
    if pinned.iter().all(Option::is_none) {
        return select(images, rule, now);
    }
    let wanted = select(images, rule, now);
    let mut out = select_with(images, rule, now, &pinned);
    for (img, why) in images.iter().zip(&pinned) {
        let Some(why) = why else { continue };
        if let Some(d) = wanted
            .decisions
            .iter()
            .find(|d| d.digest == img.digest && d.action == Action::Delete)
        {
            out.conflicts.push(Conflict {
                digest: img.digest.clone(),
                tags: d.tags.clone(),
                would: d.reason.clone(),
                pinned_by: why.clone(),
            });
        }
    }
    out
}

/// `pinned[i]`: why image `i` is kept whatever the rule says.
fn select_with(
    images: &[Image],
    rule: &RetainRule,
    now: SystemTime,
    pinned: &[Option<String>],
) -> RepoDecisions {
    let n = images.len();
    let tags: Vec<Vec<String>> = images
        .iter()
        .map(|img| {
            let mut t = img.tags.clone();
            t.sort();
            t
        })
        .collect();
    let names: Vec<String> = images
        .iter()
        .zip(&tags)
        .map(|(img, t)| {
            t.first()
                .cloned()
                .unwrap_or_else(|| img.digest.short().to_string())
        })
        .collect();

    // Digest -> index (the first image with that digest, should the inventory repeat one).
    let mut index: HashMap<&Digest, usize> = HashMap::with_capacity(n);
    for (i, img) in images.iter().enumerate() {
        index.entry(&img.digest).or_insert(i);
    }

    // The graph inside the inventory: children of each image (listed order, first listing
    // wins), parents of each image, referrers of each subject.
    let mut children: Vec<Vec<(usize, Option<&str>)>> = vec![Vec::new(); n];
    let mut parents: Vec<Vec<(usize, Option<&str>)>> = vec![Vec::new(); n];
    let mut referrers: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (p, img) in images.iter().enumerate() {
        for (d, platform) in &img.children {
            if let Some(&c) = index.get(d) {
                if children[p].iter().any(|&(x, _)| x == c) {
                    continue;
                }
                children[p].push((c, platform.as_deref()));
                parents[c].push((p, platform.as_deref()));
            }
        }
        if let Some(s) = img.subject.as_ref().and_then(|s| index.get(s)) {
            referrers[*s].push(p);
        }
    }

    let roles: Vec<Role> = (0..n)
        .map(|i| {
            if images[i].subject.is_some() {
                Role::Referrer
            } else if !tags[i].is_empty() {
                Role::Ranked
            } else if !parents[i].is_empty() {
                Role::Child
            } else {
                Role::Untagged
            }
        })
        .collect();

    // Rank the tagged top-level images, newest first.
    let ranked: Vec<usize> = rank(images, &tags, &roles);
    let mut rank_of: Vec<Option<usize>> = vec![None; n];
    for (r, &i) in ranked.iter().enumerate() {
        rank_of[i] = Some(r);
    }

    // The stable order of everything: ranked images by rank, then the rest by display name
    // and digest. Used for the output, and to make the protection walk deterministic.
    let mut order: Vec<usize> = ranked.clone();
    let mut rest: Vec<usize> = (0..n).filter(|&i| rank_of[i].is_none()).collect();
    rest.sort_by(|&a, &b| {
        names[a]
            .cmp(&names[b])
            .then_with(|| images[a].digest.cmp(&images[b].digest))
            .then(a.cmp(&b))
    });
    order.extend(rest);
    let mut position = vec![0usize; n];
    for (pos, &i) in order.iter().enumerate() {
        position[i] = pos;
    }
    for list in &mut referrers {
        list.sort_by_key(|&r| position[r]);
    }

    // Own decisions: ranked and untagged images by the rule, orphan referrers kept. Children
    // and referrers of images in the inventory are decided by the walk below.
    let mut decided: Vec<Option<(Action, String)>> = (0..n)
        .map(|i| match roles[i] {
            _ if pinned[i].is_some() => Some((
                Action::Keep,
                format!("kept: {}", pinned[i].as_deref().unwrap_or_default()),
            )),
            Role::Ranked => Some(judge_tagged(
                &images[i],
                &tags[i],
                rank_of[i].unwrap_or(usize::MAX),
                ranked.len(),
                rule,
                now,
            )),
            Role::Untagged => Some(judge_untagged(&images[i], rule, now)),
            Role::Referrer => {
                let subject = images[i].subject.as_ref().expect("referrer has a subject");
                (!index.contains_key(subject)).then(|| {
                    (
                        Action::Keep,
                        format!(
                            "kept: {} of {}, which is not in this repository",
                            referrer_kind(&tags[i]),
                            subject.short()
                        ),
                    )
                })
            }
            Role::Child => None,
        })
        .collect();

    // Protection: everything reachable from a kept image is kept, breadth first so that each
    // reason names the closest kept image (and never an image kept only because of this one).
    let mut kept: Vec<bool> = decided
        .iter()
        .map(|d| matches!(d, Some((Action::Keep, _))))
        .collect();
    let mut queue: VecDeque<usize> = order.iter().copied().filter(|&i| kept[i]).collect();
    while let Some(x) = queue.pop_front() {
        for &(c, platform) in &children[x] {
            if !kept[c] {
                kept[c] = true;
                decided[c] = Some((
                    Action::Keep,
                    format!("kept: child of {}{}", names[x], platform_suffix(platform)),
                ));
                queue.push_back(c);
            }
        }
        for &r in &referrers[x] {
            if !kept[r] {
                kept[r] = true;
                decided[r] = Some((
                    Action::Keep,
                    format!("kept: {} of {}", referrer_kind(&tags[r]), names[x]),
                ));
                queue.push_back(r);
            }
        }
    }

    // Whatever no kept image reaches and has no decision of its own goes with what it hangs
    // off: a child whose parents are all deleted, a referrer whose subject is deleted.
    for i in 0..n {
        if decided[i].is_some() {
            continue;
        }
        let reason = match roles[i] {
            Role::Referrer => {
                let subject = images[i].subject.as_ref().expect("referrer has a subject");
                let s = index[subject];
                format!(
                    "delete: {} of deleted {}",
                    referrer_kind(&tags[i]),
                    names[s]
                )
            }
            _ => {
                let &(p, platform) = parents[i]
                    .iter()
                    .min_by_key(|&&(p, _)| position[p])
                    .expect("a child has a parent");
                format!(
                    "delete: child of deleted {}{}",
                    names[p],
                    platform_suffix(platform)
                )
            }
        };
        decided[i] = Some((Action::Delete, reason));
    }

    let mut decisions: Vec<Decision> = Vec::with_capacity(n);
    for action in [Action::Keep, Action::Delete] {
        for &i in &order {
            let (a, reason) = decided[i].as_ref().expect("every image is decided");
            if *a == action {
                decisions.push(Decision {
                    digest: images[i].digest.clone(),
                    tags: tags[i].clone(),
                    action: *a,
                    reason: reason.clone(),
                });
            }
        }
    }

    // The valve: too many deletions in one repository means something is off (a wrong
    // pattern, a broken inventory); delete nothing there and say why.
    let deletions = decisions
        .iter()
        .filter(|d| d.action == Action::Delete)
        .count();
    let held_back = match rule.max_deletions {
        Some(max) if deletions > max => {
            let why = format!(
                "{deletions} deletions exceed max_deletions = {max}; nothing is deleted in this repository"
            );
            for d in decisions.iter_mut().filter(|d| d.action == Action::Delete) {
                d.action = Action::Keep;
                d.reason = format!("kept: {why}");
            }
            Some(why)
        }
        _ => None,
    };

    RepoDecisions {
        decisions,
        held_back,
        conflicts: Vec::new(),
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

/// A tagged top-level image: the first keep rule that holds, else delete.
fn judge_tagged(
    img: &Image,
    tags: &[String],
    rank: usize,
    ranked: usize,
    rule: &RetainRule,
    now: SystemTime,
) -> (Action, String) {
    for t in tags {
        if let Some(re) = rule.keep_tags.iter().find(|re| re.is_match(t)) {
            return (
                Action::Keep,
                format!("kept: tag {t} matches {}", re.as_str()),
            );
        }
    }
    if rank < rule.keep_newest {
        return (
            Action::Keep,
            format!("kept: newest {} of {ranked}", rank + 1),
        );
    }
    if !rule.delete_tags.is_empty() {
        if let Some(t) = tags
            .iter()
            .find(|t| !rule.delete_tags.iter().any(|re| re.is_match(t)))
        {
            return (
                Action::Keep,
                format!("kept: tag {t} matches no delete_tags pattern"),
            );
        }
    }
    let age = img.created.map(|c| age_of(c, now));
    if let Some(older_than) = rule.older_than {
        match age {
            None => return (Action::Keep, "kept: age unknown".to_string()),
            Some(age) if age < older_than => {
                return (
                    Action::Keep,
                    format!(
                        "kept: {} days old, younger than {}",
                        age.as_secs() / DAY,
                        format_rule(older_than)
                    ),
                )
            }
            Some(_) => {}
        }
    }
    let mut parts = Vec::new();
    if let Some(re) = tags
        .first()
        .and_then(|t| rule.delete_tags.iter().find(|re| re.is_match(t)))
    {
        parts.push(format!("matches {}", re.as_str()));
    }
    if let Some(age) = age {
        parts.push(format!("{} days old", age.as_secs() / DAY));
    }
    if parts.is_empty() {
        parts.push("not kept by any rule".to_string());
    }
    (Action::Delete, format!("delete: {}", parts.join(", ")))
}

/// An untagged manifest nothing in the inventory reaches.
fn judge_untagged(img: &Image, rule: &RetainRule, now: SystemTime) -> (Action, String) {
    if !rule.untagged {
        return (
            Action::Keep,
            "kept: untagged (untagged = false)".to_string(),
        );
    }
    let age = img.created.map(|c| age_of(c, now));
    match (rule.older_than, age) {
        (Some(_), None) => (Action::Keep, "kept: untagged, age unknown".to_string()),
        (Some(older_than), Some(age)) if age < older_than => (
            Action::Keep,
            format!(
                "kept: untagged, {} days old, younger than {}",
                age.as_secs() / DAY,
                format_rule(older_than)
            ),
        ),
        (_, Some(age)) => (
            Action::Delete,
            format!("delete: untagged, {} days old", age.as_secs() / DAY),
        ),
        (None, None) => (Action::Delete, "delete: untagged".to_string()),
    }
}

/// How long ago `created` was; zero for a time in the future (clock skew).
fn age_of(created: SystemTime, now: SystemTime) -> Duration {
    now.duration_since(created).unwrap_or(Duration::ZERO)
}

/// `older_than` as people wrote it: whole days (`30d`), else whole hours (`36h`), else seconds.
fn format_rule(d: Duration) -> String {
    let s = d.as_secs();
    if s.is_multiple_of(DAY) {
        format!("{}d", s / DAY)
    } else if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else {
        format!("{s}s")
    }
}

/// What a referrer is, from its tags: the first (sorted) cosign-style suffix that says.
fn referrer_kind(tags: &[String]) -> &'static str {
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

fn platform_suffix(platform: Option<&str>) -> String {
    platform.map(|p| format!(" ({p})")).unwrap_or_default()
}

#[cfg(test)]
mod tests;
