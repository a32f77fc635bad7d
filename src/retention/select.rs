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
mod tests {
    use std::time::UNIX_EPOCH;

    use regex::Regex;

    use super::*;
    use Action::{Delete as D, Keep as K};

    /// A digest whose short form shows `n`: `sha256:00000000000n`.
    fn d(n: u64) -> Digest {
        Digest::parse(&format!("sha256:{n:012x}{:052x}", 0)).unwrap()
    }

    fn short(n: u64) -> String {
        d(n).short().to_string()
    }

    fn day(n: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(n * DAY)
    }

    fn now() -> SystemTime {
        day(100)
    }

    fn img(n: u64, tags: &[&str], created: Option<u64>) -> Image {
        Image {
            digest: d(n),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            created: created.map(day),
            children: Vec::new(),
            subject: None,
        }
    }

    fn index(
        n: u64,
        tags: &[&str],
        created: Option<u64>,
        children: &[(u64, Option<&str>)],
    ) -> Image {
        Image {
            children: children
                .iter()
                .map(|&(c, p)| (d(c), p.map(str::to_string)))
                .collect(),
            ..img(n, tags, created)
        }
    }

    /// A referrer of `subject`, tagged with the cosign tag ending in `suffix` (no tag: "").
    fn referrer(n: u64, subject: u64, suffix: &str) -> Image {
        let tags: Vec<String> = match suffix {
            "" => Vec::new(),
            "-" => vec![format!("sha256-{}", d(subject).hex())],
            s => vec![format!("sha256-{}.{s}", d(subject).hex())],
        };
        Image {
            digest: d(n),
            tags,
            created: Some(day(99)),
            children: Vec::new(),
            subject: Some(d(subject)),
        }
    }

    fn cosign_tag(subject: u64, suffix: &str) -> String {
        format!("sha256-{}.{suffix}", d(subject).hex())
    }

    fn rule() -> RetainRule {
        RetainRule {
            keep_newest: 0,
            keep_tags: Vec::new(),
            delete_tags: Vec::new(),
            older_than: None,
            untagged: false,
            max_deletions: None,
        }
    }

    fn res(patterns: &[&str]) -> Vec<Regex> {
        patterns.iter().map(|p| Regex::new(p).unwrap()).collect()
    }

    fn days(n: u64) -> Duration {
        Duration::from_secs(n * DAY)
    }

    /// The decisions as (n, action, reason), in output order.
    fn run(images: &[Image], rule: &RetainRule) -> Vec<(u64, Action, String)> {
        let out = select(images, rule, now());
        assert_eq!(out.decisions.len(), images.len(), "one decision per image");
        assert_eq!(out.held_back, None);
        summary(&out)
    }

    fn summary(out: &RepoDecisions) -> Vec<(u64, Action, String)> {
        out.decisions
            .iter()
            .map(|dec| {
                let n = u64::from_str_radix(&dec.digest.hex()[..12], 16).unwrap();
                (n, dec.action, dec.reason.clone())
            })
            .collect()
    }

    fn want(rows: &[(u64, Action, &str)]) -> Vec<(u64, Action, String)> {
        rows.iter()
            .map(|&(n, a, r)| (n, a, r.to_string()))
            .collect()
    }

    #[test]
    fn empty_inventory_decides_nothing() {
        let out = select(&[], &rule(), now());
        assert!(out.decisions.is_empty());
        assert_eq!(out.held_back, None);
    }

    #[test]
    fn keep_newest_counts_over_semver_tags_with_v_prefix_and_prereleases() {
        let images = [
            img(1, &["1.2.0"], Some(90)),
            img(2, &["v1.10.0"], Some(5)),
            img(3, &["1.10.0-rc.1"], Some(50)),
            img(4, &["v2"], Some(1)),
            img(5, &["1.9"], Some(20)),
        ];
        let r = RetainRule {
            keep_newest: 2,
            ..rule()
        };
        assert_eq!(
            run(&images, &r),
            want(&[
                (4, K, "kept: newest 1 of 5"),
                (2, K, "kept: newest 2 of 5"),
                (3, D, "delete: 50 days old"),
                (5, D, "delete: 80 days old"),
                (1, D, "delete: 10 days old"),
            ])
        );
    }

    #[test]
    fn version_rank_uses_the_highest_version_tag_then_created_then_digest() {
        let images = [
            img(1, &["2.0.0"], Some(10)),
            img(2, &["1.0.0", "3.0.0", "latest"], Some(5)),
            img(3, &["1.0"], Some(10)),
            img(4, &["v1.0.0"], Some(20)),
            img(5, &["1"], Some(20)),
        ];
        let r = RetainRule {
            keep_newest: 5,
            ..rule()
        };
        assert_eq!(
            run(&images, &r),
            want(&[
                (2, K, "kept: newest 1 of 5"),
                (1, K, "kept: newest 2 of 5"),
                (4, K, "kept: newest 3 of 5"),
                (5, K, "kept: newest 4 of 5"),
                (3, K, "kept: newest 5 of 5"),
            ])
        );
    }

    #[test]
    fn one_image_without_a_version_tag_ranks_everything_by_created() {
        let images = [
            img(1, &["1.0.0"], Some(10)),
            img(2, &["2.0.0"], Some(5)),
            img(3, &["main"], Some(30)),
            img(4, &["1.5.0"], None),
            img(5, &["1.6.0"], Some(5)),
        ];
        let r = RetainRule {
            keep_newest: 2,
            ..rule()
        };
        assert_eq!(
            run(&images, &r),
            want(&[
                (3, K, "kept: newest 1 of 5"),
                (1, K, "kept: newest 2 of 5"),
                (2, D, "delete: 95 days old"),
                (5, D, "delete: 95 days old"),
                (4, D, "delete: not kept by any rule"),
            ])
        );
    }

    #[test]
    fn referrers_do_not_count_for_newest_nor_break_version_ranking() {
        let images = [
            img(1, &["1.0.0"], Some(50)),
            img(2, &["2.0.0"], Some(10)),
            referrer(3, 1, "sig"),
        ];
        let r = RetainRule {
            keep_newest: 1,
            ..rule()
        };
        assert_eq!(
            run(&images, &r),
            want(&[
                (2, K, "kept: newest 1 of 2"),
                (1, D, "delete: 50 days old"),
                (3, D, "delete: signature of deleted 1.0.0"),
            ])
        );
    }

    #[test]
    fn a_tag_matching_keep_tags_keeps_a_multi_tagged_image() {
        let images = [
            img(1, &["pr-7", "latest"], Some(10)),
            img(2, &["stable", "latest-lts"], Some(10)),
            img(3, &["pr-8"], Some(10)),
        ];
        let r = RetainRule {
            keep_tags: res(&["^stable$", "^latest"]),
            delete_tags: res(&[r"^pr-\d+$"]),
            ..rule()
        };
        let out = select(&images, &r, now());
        assert_eq!(
            summary(&out),
            want(&[
                (1, K, "kept: tag latest matches ^latest"),
                (2, K, "kept: tag latest-lts matches ^latest"),
                (3, D, r"delete: matches ^pr-\d+$, 90 days old"),
            ])
        );
        assert_eq!(out.decisions[0].tags, ["latest", "pr-7"]);
    }

    #[test]
    fn a_tag_matching_no_delete_tags_pattern_keeps_the_image() {
        let images = [
            img(1, &["pr-12", "main"], Some(10)),
            img(2, &["pr-13"], Some(59)),
            img(3, &["pr-15-x", "pr-14"], Some(59)),
        ];
        let r = RetainRule {
            delete_tags: res(&[r"^pr-\d+-x$", "^pr-"]),
            ..rule()
        };
        assert_eq!(
            run(&images, &r),
            want(&[
                (1, K, "kept: tag main matches no delete_tags pattern"),
                (2, D, "delete: matches ^pr-, 41 days old"),
                (3, D, "delete: matches ^pr-, 41 days old"),
            ])
        );
    }

    #[test]
    fn older_than_boundary_deletes_at_exactly_the_age_and_keeps_unknown_age() {
        let mut just_younger = img(4, &["d"], None);
        just_younger.created = Some(day(70) + Duration::from_secs(1));
        let mut future = img(5, &["e"], None);
        future.created = Some(day(101));
        let images = [
            img(1, &["a"], Some(70)),
            img(2, &["b"], Some(71)),
            img(3, &["c"], None),
            just_younger,
            future,
        ];
        let r = RetainRule {
            older_than: Some(days(30)),
            ..rule()
        };
        assert_eq!(
            run(&images, &r),
            want(&[
                (5, K, "kept: 0 days old, younger than 30d"),
                (2, K, "kept: 29 days old, younger than 30d"),
                (4, K, "kept: 29 days old, younger than 30d"),
                (3, K, "kept: age unknown"),
                (1, D, "delete: 30 days old"),
            ])
        );
    }

    #[test]
    fn older_than_is_printed_in_days_else_hours_else_seconds() {
        let images = [img(1, &["a"], Some(99))];
        let cases = [
            (
                Duration::from_secs(36 * 3600),
                "kept: 1 days old, younger than 36h",
            ),
            (
                Duration::from_secs(2 * DAY),
                "kept: 1 days old, younger than 2d",
            ),
            (
                Duration::from_secs(DAY + 90),
                "kept: 1 days old, younger than 86490s",
            ),
        ];
        for (older_than, reason) in cases {
            let r = RetainRule {
                older_than: Some(older_than),
                ..rule()
            };
            assert_eq!(run(&images, &r), want(&[(1, K, reason)]));
        }
    }

    #[test]
    fn keep_rules_apply_in_order_tags_newest_delete_tags_age() {
        let images = [
            img(1, &["latest", "main"], Some(99)),
            img(2, &["main-2"], Some(98)),
            img(3, &["main-3", "pr-1"], Some(97)),
            img(4, &["pr-2"], Some(96)),
            img(5, &["pr-3"], Some(10)),
        ];
        let r = RetainRule {
            keep_newest: 2,
            keep_tags: res(&["^latest$"]),
            delete_tags: res(&["^pr-", "^main-2$"]),
            older_than: Some(days(30)),
            ..rule()
        };
        assert_eq!(
            run(&images, &r),
            want(&[
                (1, K, "kept: tag latest matches ^latest$"),
                (2, K, "kept: newest 2 of 5"),
                (3, K, "kept: tag main-3 matches no delete_tags pattern"),
                (4, K, "kept: 4 days old, younger than 30d"),
                (5, D, "delete: matches ^pr-, 90 days old"),
            ])
        );
    }

    #[test]
    fn untagged_images_follow_untagged_and_older_than() {
        let images = [
            img(1, &[], Some(59)),
            img(2, &[], None),
            img(3, &[], Some(90)),
        ];
        assert_eq!(
            run(&images, &rule()),
            want(&[
                (1, K, "kept: untagged (untagged = false)"),
                (2, K, "kept: untagged (untagged = false)"),
                (3, K, "kept: untagged (untagged = false)"),
            ])
        );
        let r = RetainRule {
            untagged: true,
            ..rule()
        };
        assert_eq!(
            run(&images, &r),
            want(&[
                (1, D, "delete: untagged, 41 days old"),
                (2, D, "delete: untagged"),
                (3, D, "delete: untagged, 10 days old"),
            ])
        );
        let r = RetainRule {
            untagged: true,
            older_than: Some(days(30)),
            ..rule()
        };
        let images = [
            img(1, &[], Some(59)),
            img(2, &[], None),
            img(3, &[], Some(90)),
            img(4, &[], Some(70)),
        ];
        assert_eq!(
            run(&images, &r),
            want(&[
                (2, K, "kept: untagged, age unknown"),
                (3, K, "kept: untagged, 10 days old, younger than 30d"),
                (1, D, "delete: untagged, 41 days old"),
                (4, D, "delete: untagged, 30 days old"),
            ])
        );
    }

    #[test]
    fn a_deleted_index_takes_its_untagged_children_with_it() {
        let images = [
            index(
                1,
                &["pr-12"],
                Some(10),
                &[
                    (2, Some("linux/amd64")),
                    (3, Some("linux/arm64")),
                    (4, None),
                ],
            ),
            img(2, &[], Some(10)),
            img(3, &[], Some(10)),
            img(4, &[], None),
        ];
        let r = RetainRule {
            delete_tags: res(&[r"^pr-\d+$"]),
            ..rule()
        };
        assert_eq!(
            run(&images, &r),
            want(&[
                (1, D, r"delete: matches ^pr-\d+$, 90 days old"),
                (2, D, "delete: child of deleted pr-12 (linux/amd64)"),
                (3, D, "delete: child of deleted pr-12 (linux/arm64)"),
                (4, D, "delete: child of deleted pr-12"),
            ])
        );
    }

    #[test]
    fn a_kept_index_keeps_its_children_even_when_untagged_is_true() {
        let images = [
            img(2, &[], Some(10)),
            img(3, &[], Some(10)),
            index(
                1,
                &["v1.2.0"],
                Some(10),
                &[(2, Some("linux/amd64")), (3, Some("linux/arm64"))],
            ),
        ];
        let r = RetainRule {
            keep_newest: 1,
            untagged: true,
            ..rule()
        };
        assert_eq!(
            run(&images, &r),
            want(&[
                (1, K, "kept: newest 1 of 1"),
                (2, K, "kept: child of v1.2.0 (linux/amd64)"),
                (3, K, "kept: child of v1.2.0 (linux/arm64)"),
            ])
        );
    }

    #[test]
    fn a_child_shared_by_a_kept_and_a_deleted_index_is_kept() {
        let images = [
            index(
                2,
                &["v1.0.0"],
                Some(10),
                &[(3, Some("linux/arm64")), (4, Some("linux/amd64"))],
            ),
            index(1, &["v2.0.0"], Some(20), &[(3, Some("linux/amd64"))]),
            img(3, &[], Some(10)),
            img(4, &[], Some(10)),
        ];
        let r = RetainRule {
            keep_newest: 1,
            ..rule()
        };
        assert_eq!(
            run(&images, &r),
            want(&[
                (1, K, "kept: newest 1 of 2"),
                (3, K, "kept: child of v2.0.0 (linux/amd64)"),
                (2, D, "delete: 90 days old"),
                (4, D, "delete: child of deleted v1.0.0 (linux/amd64)"),
            ])
        );
    }

    #[test]
    fn nested_indexes_are_followed_both_ways() {
        let images = |tag: &'static str| {
            [
                index(1, &[tag], Some(10), &[(2, None)]),
                index(2, &[], None, &[(3, Some("linux/amd64"))]),
                img(3, &[], Some(10)),
            ]
        };
        let r = RetainRule {
            keep_tags: res(&["^v"]),
            untagged: true,
            ..rule()
        };
        let via = format!("child of {} (linux/amd64)", short(2));
        assert_eq!(
            run(&images("v1"), &r),
            vec![
                (1, K, "kept: tag v1 matches ^v".to_string()),
                (2, K, "kept: child of v1".to_string()),
                (3, K, format!("kept: {via}")),
            ]
        );
        assert_eq!(
            run(&images("pr-1"), &r),
            vec![
                (1, D, "delete: 90 days old".to_string()),
                (2, D, "delete: child of deleted pr-1".to_string()),
                (
                    3,
                    D,
                    format!("delete: {}", via.replace("of ", "of deleted "))
                ),
            ]
        );
    }

    #[test]
    fn a_tagged_child_of_a_kept_index_is_forced_kept() {
        let images = [
            index(
                1,
                &["v1.2.0"],
                Some(90),
                &[(2, Some("linux/arm64")), (3, Some("linux/amd64"))],
            ),
            img(2, &["pr-3"], Some(10)),
            img(3, &["pr-4"], Some(10)),
            index(4, &["pr-5"], Some(5), &[(5, None)]),
            img(5, &["main"], Some(8)),
            img(6, &["pr-6"], Some(8)),
        ];
        let r = RetainRule {
            keep_newest: 1,
            keep_tags: res(&["^pr-4$"]),
            delete_tags: res(&[r"^pr-\d+$"]),
            ..rule()
        };
        assert_eq!(
            run(&images, &r),
            want(&[
                (1, K, "kept: newest 1 of 6"),
                (2, K, "kept: child of v1.2.0 (linux/arm64)"),
                (3, K, "kept: tag pr-4 matches ^pr-4$"),
                (5, K, "kept: tag main matches no delete_tags pattern"),
                (6, D, r"delete: matches ^pr-\d+$, 92 days old"),
                (4, D, r"delete: matches ^pr-\d+$, 95 days old"),
            ])
        );
    }

    #[test]
    fn cosign_referrers_follow_their_subject() {
        let images = [
            img(1, &["v1.0.0"], Some(10)),
            img(2, &["pr-5"], Some(10)),
            referrer(3, 1, "sig"),
            referrer(4, 1, "att"),
            referrer(5, 1, "sbom"),
            referrer(6, 1, "-"),
            referrer(7, 2, "sig"),
            referrer(8, 2, ""),
        ];
        let r = RetainRule {
            keep_tags: res(&["^v", "^sha256-"]),
            delete_tags: res(&["^pr-"]),
            ..rule()
        };
        assert_eq!(
            run(&images, &r),
            want(&[
                (1, K, "kept: tag v1.0.0 matches ^v"),
                (6, K, "kept: referrer of v1.0.0"),
                (4, K, "kept: attestation of v1.0.0"),
                (5, K, "kept: SBOM of v1.0.0"),
                (3, K, "kept: signature of v1.0.0"),
                (2, D, "delete: matches ^pr-, 90 days old"),
                (7, D, "delete: signature of deleted pr-5"),
                (8, D, "delete: referrer of deleted pr-5"),
            ])
        );
    }

    #[test]
    fn a_signature_of_an_sbom_follows_the_sbom_recursively() {
        let images = |tag: &'static str| {
            [
                img(1, &[tag], Some(10)),
                referrer(2, 1, "sbom"),
                referrer(3, 2, "sig"),
            ]
        };
        let r = RetainRule {
            keep_tags: res(&["^v"]),
            ..rule()
        };
        let sbom = cosign_tag(1, "sbom");
        assert_eq!(
            run(&images("v1"), &r),
            vec![
                (1, K, "kept: tag v1 matches ^v".to_string()),
                (2, K, "kept: SBOM of v1".to_string()),
                (3, K, format!("kept: signature of {sbom}")),
            ]
        );
        assert_eq!(
            run(&images("pr-1"), &r),
            vec![
                (1, D, "delete: 90 days old".to_string()),
                (2, D, "delete: SBOM of deleted pr-1".to_string()),
                (3, D, format!("delete: signature of deleted {sbom}")),
            ]
        );
    }

    #[test]
    fn an_orphan_signature_is_kept_and_so_is_what_hangs_off_it() {
        let images = [
            referrer(1, 99, "sig"),
            referrer(2, 1, "att"),
            referrer(3, 98, ""),
        ];
        let r = RetainRule {
            untagged: true,
            ..rule()
        };
        assert_eq!(
            run(&images, &r),
            vec![
                (
                    2,
                    K,
                    format!("kept: attestation of {}", cosign_tag(99, "sig"))
                ),
                (
                    1,
                    K,
                    format!(
                        "kept: signature of {}, which is not in this repository",
                        short(99)
                    )
                ),
                (
                    3,
                    K,
                    format!(
                        "kept: referrer of {}, which is not in this repository",
                        short(98)
                    )
                ),
            ]
        );
    }

    #[test]
    fn children_of_an_untagged_index_follow_it() {
        let images = |created| {
            [
                index(1, &[], Some(created), &[(2, Some("linux/amd64"))]),
                img(2, &[], Some(created)),
            ]
        };
        assert_eq!(
            run(&images(10), &rule()),
            vec![
                (1, K, "kept: untagged (untagged = false)".to_string()),
                (2, K, format!("kept: child of {} (linux/amd64)", short(1))),
            ]
        );
        let r = RetainRule {
            untagged: true,
            older_than: Some(days(30)),
            ..rule()
        };
        assert_eq!(
            run(&images(90), &r),
            vec![
                (
                    1,
                    K,
                    "kept: untagged, 10 days old, younger than 30d".to_string()
                ),
                (2, K, format!("kept: child of {} (linux/amd64)", short(1))),
            ]
        );
        assert_eq!(
            run(&images(10), &r),
            vec![
                (1, D, "delete: untagged, 90 days old".to_string()),
                (
                    2,
                    D,
                    format!("delete: child of deleted {} (linux/amd64)", short(1))
                ),
            ]
        );
    }

    #[test]
    fn max_deletions_exceeded_keeps_everything_and_says_why() {
        let images = [
            img(1, &["v3"], Some(90)),
            img(2, &["v2"], Some(50)),
            img(3, &["v1"], Some(40)),
            img(4, &[], Some(10)),
        ];
        let r = RetainRule {
            keep_newest: 1,
            untagged: true,
            max_deletions: Some(2),
            ..rule()
        };
        let out = select(&images, &r, now());
        let why = "3 deletions exceed max_deletions = 2; nothing is deleted in this repository";
        assert_eq!(out.held_back.as_deref(), Some(why));
        let kept = format!("kept: {why}");
        assert_eq!(
            summary(&out),
            want(&[
                (1, K, "kept: newest 1 of 3"),
                (2, K, &kept),
                (3, K, &kept),
                (4, K, &kept),
            ])
        );
    }

    #[test]
    fn max_deletions_not_exceeded_deletes() {
        let images = [img(1, &["v3"], Some(90)), img(2, &["v2"], Some(50))];
        for max in [Some(1), Some(5), None] {
            let r = RetainRule {
                keep_newest: 1,
                max_deletions: max,
                ..rule()
            };
            let out = select(&images, &r, now());
            assert_eq!(out.held_back, None);
            assert_eq!(
                summary(&out),
                want(&[(1, K, "kept: newest 1 of 2"), (2, D, "delete: 50 days old")])
            );
        }
        let r = RetainRule {
            keep_newest: 5,
            max_deletions: Some(0),
            ..rule()
        };
        assert_eq!(select(&images, &r, now()).held_back, None);
    }

    #[test]
    fn output_is_kept_then_deleted_ranked_first_then_by_name_and_digest() {
        let images = [
            img(9, &[], Some(10)),
            img(8, &[], Some(90)),
            referrer(7, 1, "sig"),
            referrer(6, 3, "sig"),
            img(5, &["zz-old"], Some(20)),
            img(4, &["aa-newer"], Some(80)),
            img(3, &["mm"], Some(30)),
            index(2, &[], None, &[]),
            img(1, &["keep"], Some(85)),
        ];
        let r = RetainRule {
            keep_tags: res(&["^keep$", "^aa-"]),
            untagged: true,
            older_than: Some(days(30)),
            ..rule()
        };
        let out = select(&images, &r, now());
        assert_eq!(
            summary(&out),
            vec![
                (1, K, "kept: tag keep matches ^keep$".to_string()),
                (4, K, "kept: tag aa-newer matches ^aa-".to_string()),
                (7, K, "kept: signature of keep".to_string()),
                (2, K, "kept: untagged, age unknown".to_string()),
                (
                    8,
                    K,
                    "kept: untagged, 10 days old, younger than 30d".to_string()
                ),
                (3, D, "delete: 70 days old".to_string()),
                (5, D, "delete: 80 days old".to_string()),
                (6, D, "delete: signature of deleted mm".to_string()),
                (9, D, "delete: untagged, 90 days old".to_string()),
            ]
        );
        assert!(out.decisions.iter().all(|dec| dec.tags.is_sorted()));
    }

    #[test]
    fn children_of_a_referrer_index_follow_the_referrer() {
        let mut sig = referrer(2, 1, "att");
        sig.children = vec![(d(3), Some("unknown/unknown".to_string()))];
        let images = [img(1, &["pr-1"], Some(10)), sig, img(3, &[], None)];
        let att = cosign_tag(1, "att");
        assert_eq!(
            run(&images, &rule()),
            vec![
                (1, D, "delete: 90 days old".to_string()),
                (2, D, "delete: attestation of deleted pr-1".to_string()),
                (
                    3,
                    D,
                    format!("delete: child of deleted {att} (unknown/unknown)")
                ),
            ]
        );
    }

    #[test]
    fn a_referrer_that_is_also_a_child_of_a_kept_index_is_kept() {
        let images = [
            img(1, &["pr-1"], Some(10)),
            index(2, &["v1"], Some(10), &[(3, None)]),
            referrer(3, 1, "sig"),
        ];
        let r = RetainRule {
            keep_tags: res(&["^v"]),
            ..rule()
        };
        assert_eq!(
            run(&images, &r),
            want(&[
                (2, K, "kept: tag v1 matches ^v"),
                (3, K, "kept: child of v1"),
                (1, D, "delete: 90 days old"),
            ])
        );
    }

    #[test]
    fn a_reference_cycle_nothing_kept_reaches_does_not_hang() {
        let images = [referrer(1, 2, "sig"), referrer(2, 1, "sig")];
        assert_eq!(
            run(&images, &rule()),
            vec![
                (
                    2,
                    D,
                    format!("delete: signature of deleted {}", cosign_tag(2, "sig"))
                ),
                (
                    1,
                    D,
                    format!("delete: signature of deleted {}", cosign_tag(1, "sig"))
                ),
            ]
        );
    }
}
