//! `untagged_grace` (issue 22): an untagged manifest younger than the grace, or of unknown
//! age, may be a push in progress (children before their index, a manifest before its tag)
//! and is kept while `untagged = true` would delete it.

use super::*;

/// An untagged image created `secs` seconds before [`now`] (`None`: age unknown).
fn pushed(n: u64, secs: Option<u64>) -> Image {
    Image {
        created: secs.map(|s| now() - Duration::from_secs(s)),
        ..img(n, &[], None)
    }
}

fn grace(untagged_grace: Duration) -> RetainRule {
    RetainRule {
        untagged: true,
        untagged_grace,
        ..rule()
    }
}

#[test]
fn an_untagged_manifest_younger_than_the_grace_is_kept_saying_why() {
    let images = [
        pushed(1, Some(12 * 60)),
        pushed(2, Some(59 * 60 + 59)),
        pushed(3, Some(3600)),
        pushed(4, Some(5 * DAY)),
        pushed(5, Some(1)),
    ];
    let why = |age: &str| {
        format!("kept: untagged, {age} old, may be a push in progress (untagged_grace = 1h)")
    };
    assert_eq!(
        run(&images, &rule_default_grace()),
        vec![
            (1, K, why("12 minutes")),
            (2, K, why("59 minutes")),
            (5, K, why("1 second")),
            (3, D, "delete: untagged, 0 days old".to_string()),
            (4, D, "delete: untagged, 5 days old".to_string()),
        ]
    );
}

/// The plan's default: `untagged = true`, `untagged_grace` unset.
fn rule_default_grace() -> RetainRule {
    grace(crate::retention::retain_rule::DEFAULT_UNTAGGED_GRACE)
}

#[test]
fn an_untagged_manifest_of_unknown_age_is_kept_while_untagged_is_true() {
    let images = [pushed(1, None), pushed(2, Some(2 * DAY))];
    assert_eq!(
        run(&images, &rule_default_grace()),
        want(&[
            (
                1,
                K,
                "kept: untagged, age unknown, may be a push in progress (untagged_grace = 1h)"
            ),
            (2, D, "delete: untagged, 2 days old"),
        ])
    );
    // `untagged = false` keeps it anyway, for that reason.
    assert_eq!(
        run(&images, &rule()),
        want(&[
            (1, K, "kept: untagged (untagged = false)"),
            (2, K, "kept: untagged (untagged = false)"),
        ])
    );
}

#[test]
fn the_grace_is_as_long_as_the_plan_says_and_zero_turns_it_off() {
    let images = [
        pushed(1, Some(90 * 60)),
        pushed(2, Some(3 * 3600)),
        pushed(3, None),
    ];
    assert_eq!(
        run(&images, &grace(Duration::from_secs(2 * 3600))),
        want(&[
            (
                1,
                K,
                "kept: untagged, 1 hour old, may be a push in progress (untagged_grace = 2h)"
            ),
            (
                3,
                K,
                "kept: untagged, age unknown, may be a push in progress (untagged_grace = 2h)"
            ),
            (2, D, "delete: untagged, 0 days old"),
        ])
    );
    assert_eq!(
        run(&images, &grace(Duration::from_secs(90 * 60 + 1))),
        want(&[
            (
                1,
                K,
                "kept: untagged, 1 hour old, may be a push in progress (untagged_grace = 5401s)"
            ),
            (
                3,
                K,
                "kept: untagged, age unknown, may be a push in progress (untagged_grace = 5401s)"
            ),
            (2, D, "delete: untagged, 0 days old"),
        ])
    );
    assert_eq!(
        run(&images, &grace(Duration::ZERO)),
        want(&[
            (1, D, "delete: untagged, 0 days old"),
            (2, D, "delete: untagged, 0 days old"),
            (3, D, "delete: untagged"),
        ])
    );
}

#[test]
fn the_grace_comes_before_older_than_and_keeps_what_hangs_off_it() {
    // 1: a fresh untagged index (its age is its newest child's); 2: its child; 3: an
    // untagged signature of it. An older_than of 0s would delete all three.
    let images = [
        Image {
            created: Some(now() - Duration::from_secs(300)),
            ..index(1, &[], None, &[(2, Some("linux/amd64"))])
        },
        pushed(2, Some(300)),
        Image {
            tags: Vec::new(),
            ..referrer(3, 1, "")
        },
        // Tagged and fresh: the grace is for untagged manifests only.
        img(4, &["pr-1"], Some(99)),
    ];
    let r = RetainRule {
        delete_tags: res(&["^pr-"]),
        older_than: Some(Duration::from_secs(1)),
        ..rule_default_grace()
    };
    let out = run(&images, &r);
    let why = "kept: untagged, 5 minutes old, may be a push in progress (untagged_grace = 1h)";
    assert!(out.contains(&(1, K, why.to_string())), "{out:?}");
    assert!(out.iter().any(|(n, a, _)| *n == 2 && *a == K), "{out:?}");
    assert!(out.iter().any(|(n, a, _)| *n == 3 && *a == K), "{out:?}");
    assert!(out.iter().any(|(n, a, _)| *n == 4 && *a == D), "{out:?}");
}
