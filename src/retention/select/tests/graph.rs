//! What selection keeps and deletes along the graph: children of indexes, referrers of their
//! subjects, nested and shared, and cycles.

use super::*;

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
