use std::time::{Duration, UNIX_EPOCH};

use regex::Regex;

use super::judge::DAY;
use super::*;
use Action::{Delete as D, Keep as K};

mod grace;
mod graph;
mod refused;

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

fn index(n: u64, tags: &[&str], created: Option<u64>, children: &[(u64, Option<&str>)]) -> Image {
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

/// A rule as a plan that sets nothing has it (`untagged_grace` at its default, 1h).
fn rule() -> RetainRule {
    RetainRule {
        keep_newest: 0,
        keep_tags: Vec::new(),
        delete_tags: Vec::new(),
        older_than: None,
        untagged: false,
        untagged_grace: crate::retention::retain_rule::DEFAULT_UNTAGGED_GRACE,
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
            (
                2,
                K,
                "kept: untagged, age unknown, may be a push in progress (untagged_grace = 1h)"
            ),
            (1, D, "delete: untagged, 41 days old"),
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
            (
                2,
                K,
                "kept: untagged, age unknown, may be a push in progress (untagged_grace = 1h)"
            ),
            (3, K, "kept: untagged, 10 days old, younger than 30d"),
            (1, D, "delete: untagged, 41 days old"),
            (4, D, "delete: untagged, 30 days old"),
        ])
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
    // Issue 26 (alerts): the metrics tell the valve from a failed [in_use] source.
    assert!(crate::retention::decisions::held_by_valve(why));
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
            (
                2,
                K,
                "kept: untagged, age unknown, may be a push in progress (untagged_grace = 1h)"
                    .to_string()
            ),
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
