//! Issue 22, GHCR's refusals: what the registry will not delete stays, with everything it
//! reaches, whatever the rule says, and never as a conflict.

use super::*;
use crate::retention::refusals::{refused_reason, Refusals, LAST_VERSION};
use crate::retention::Refused;

fn pins(last_tagged: bool, refused: &[u64]) -> Pins {
    Pins {
        refusals: Refusals {
            last_tagged,
            refused: refused
                .iter()
                .map(|&n| {
                    let r = Refused {
                        digest: d(n),
                        version_id: Some(n.to_string()),
                        reason: "too popular".into(),
                        at: day(90),
                    };
                    (d(n), r)
                })
                .collect(),
        },
        ..Pins::default()
    }
}

fn decide_with(images: &[Image], rule: &RetainRule, pins: &Pins) -> Vec<(u64, Action, String)> {
    let out = select_pinned(images, rule, now(), pins);
    assert!(out.conflicts.is_empty(), "{:?}", out.conflicts);
    summary(&out)
}

/// pr-1, pr-2 (an index of 3 and 4) and an untagged image, all deleted by the rule alone.
fn every_tag_deleted() -> (Vec<Image>, RetainRule) {
    let images = vec![
        img(1, &["pr-1"], Some(10)),
        index(
            2,
            &["pr-2"],
            Some(20),
            &[(3, Some("linux/amd64")), (4, Some("linux/arm64"))],
        ),
        img(3, &[], Some(20)),
        img(4, &[], Some(20)),
        img(5, &[], Some(5)),
    ];
    let rule = RetainRule {
        delete_tags: res(&["^pr-"]),
        untagged: true,
        ..rule()
    };
    (images, rule)
}

#[test]
fn where_the_last_tagged_version_cannot_go_the_newest_stays_with_its_children() {
    let (images, rule) = every_tag_deleted();
    let alone = decide_with(&images, &rule, &Pins::default());
    assert!(alone.iter().all(|(_, a, _)| *a == D), "{alone:?}");
    assert_eq!(
        decide_with(&images, &rule, &pins(true, &[])),
        want(&[
            (2, K, LAST_VERSION),
            (3, K, "kept: child of pr-2 (linux/amd64)"),
            (4, K, "kept: child of pr-2 (linux/arm64)"),
            (1, D, "delete: matches ^pr-, 90 days old"),
            (5, D, "delete: untagged, 95 days old"),
        ])
    );
}

#[test]
fn a_tagged_image_kept_by_the_rule_needs_no_other() {
    let (images, mut rule) = every_tag_deleted();
    rule.keep_tags = res(&["^pr-1$"]);
    let got = decide_with(&images, &rule, &pins(true, &[]));
    assert_eq!(got[0], (1, K, "kept: tag pr-1 matches ^pr-1$".to_string()));
    assert!(got[1..].iter().all(|(_, a, _)| *a == D), "{got:?}");
    // Nothing tagged at all: nothing to keep for it.
    let untagged = [img(5, &[], Some(5))];
    let got = decide_with(&untagged, &rule, &pins(true, &[]));
    assert_eq!(got, want(&[(5, D, "delete: untagged, 95 days old")]));
}

#[test]
fn a_refusal_remembered_keeps_what_the_rule_deletes_and_all_it_reaches() {
    let (images, rule) = every_tag_deleted();
    let refused = refused_reason(&pins(false, &[2]).refusals.refused[&d(2)]);
    assert_eq!(
        refused,
        "kept: GitHub refused to delete it on 1970-04-01: too popular"
    );
    assert_eq!(
        decide_with(&images, &rule, &pins(false, &[2])),
        want(&[
            (2, K, &refused),
            (3, K, "kept: child of pr-2 (linux/amd64)"),
            (4, K, "kept: child of pr-2 (linux/arm64)"),
            (1, D, "delete: matches ^pr-, 90 days old"),
            (5, D, "delete: untagged, 95 days old"),
        ])
    );
    // A refused child stays while its index goes; it is a tagged version neither, so the
    // newest tagged one stays too where the registry keeps a last one.
    let got = decide_with(&images, &rule, &pins(true, &[3]));
    let refused = refused_reason(&pins(true, &[3]).refusals.refused[&d(3)]);
    assert_eq!(
        got,
        want(&[
            (2, K, LAST_VERSION),
            (3, K, &refused),
            (4, K, "kept: child of pr-2 (linux/arm64)"),
            (1, D, "delete: matches ^pr-, 90 days old"),
            (5, D, "delete: untagged, 95 days old"),
        ])
    );
    // What the rule keeps anyway says the rule's reason.
    let keep_all = RetainRule {
        keep_newest: 5,
        ..rule.clone()
    };
    let got = decide_with(&images, &keep_all, &pins(true, &[1]));
    assert_eq!(got[1], (1, K, "kept: newest 2 of 2".to_string()));
}

#[test]
fn a_refused_image_is_no_conflict_and_a_held_repository_stays_held() {
    let (images, rule) = every_tag_deleted();
    let mut p = pins(true, &[1]);
    p.hold = Some("an [in_use] source failed".into());
    let out = select_pinned(&images, &rule, now(), &p);
    assert!(out.conflicts.is_empty());
    assert_eq!(out.held_back.as_deref(), Some("an [in_use] source failed"));
    assert!(out.decisions.iter().all(|x| x.action == K));
}
