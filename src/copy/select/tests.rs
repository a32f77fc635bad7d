//! Rule resolution: stages, claims, overlaps.

use super::*;
use crate::plan::TagFilter;

fn item(source: &str, reference: &str, target_tag: Option<&str>, rule: usize) -> Item {
    let layouts: Arc<dyn Registry> = Arc::new(crate::registry::layout::LayoutRegistry::new());
    Item {
        source: Endpoint {
            registry: layouts.clone(),
            repo: source.into(),
        },
        source_ref: reference.into(),
        target: Endpoint {
            registry: layouts,
            repo: "dst".into(),
        },
        target_tag: target_tag.map(str::to_string),
        subject: None,
        platforms: None,
        rule,
        after: None,
        seen: None,
        read: None,
        contest: None,
    }
}

#[test]
fn the_first_writer_of_a_tag_keeps_it_and_what_hangs_off_a_loser_goes_with_it() {
    let mut claims = Claims::default();
    let first = claims.claim(vec![item("a", "1.0", Some("1.0"), 1)]);
    assert_eq!(first.items.len(), 1);
    // Across stages: the same source again is a duplicate; another source a conflict,
    // and the signature that follows the loser is not copied either.
    let mut sig = item("b", "sha256-x.sig", Some("sha256-x.sig"), 2);
    sig.after = Some(After {
        parent: item("b", "1.0", Some("1.0"), 2).key(),
        subject: Digest::sha256_of(b"b"),
    });
    let mut amd64 = item("a", "1.0", Some("1.0"), 3);
    amd64.platforms = Some(Arc::new(crate::plan::Platforms {
        wanted: vec![crate::plan::Platform::parse("linux/amd64").unwrap()],
        mode: crate::plan::PlatformMode::Rewrite,
    }));
    let second = claims.claim(vec![
        item("a", "1.0", Some("1.0"), 2),
        item("b", "1.0", Some("1.0"), 2),
        sig,
        amd64,
        // By digest, untagged: the digest is the content, whichever repository has it.
        item("a", "sha256:1", None, 2),
        item("b", "sha256:1", None, 2),
    ]);
    assert_eq!(second.duplicates.len(), 2, "{second:?}");
    assert_eq!(second.conflicts.len(), 2, "{second:?}");
    assert!(second.conflicts.iter().all(|c| c.winner_rule == 1));
    assert_eq!(
        second.conflicts[1].source,
        "oci:a:1.0 (platforms linux/amd64 (rewrite))"
    );
    assert_eq!(second.orphans.len(), 1);
    assert_eq!(second.items.len(), 1, "the first digest item");
}

fn rule(from: &str, to: &str) -> CopyRule {
    CopyRule {
        number: 0,
        line: 0,
        column: 0,
        from: Reference::parse(from).unwrap(),
        to: Reference::parse(to).unwrap(),
        tags: TagFilter::default(),
        referrers: Default::default(),
        platforms: None,
        prune: None,
    }
}

#[test]
fn independent_rules_share_one_stage() {
    let rules = [
        rule("docker.io/org/*", "ghcr.io/org/*"),
        rule("docker.io/library/nginx:1", "ghcr.io/mirror/nginx"),
        rule("quay.io/a/b", "ghcr.io/a/b"),
    ];
    assert_eq!(stages(&rules), vec![vec![0, 1, 2]]);
    assert_eq!(stages(&[]), Vec::<Vec<usize>>::new());
}

#[test]
fn a_rule_reading_what_another_writes_runs_after_it() {
    let rules = [
        rule("docker.io/org/*", "ghcr.io/org/*"),
        rule("ghcr.io/org/api:v1", "ghcr.io/prod/api:stable"),
        rule("ghcr.io/prod/api", "oci:./backup/api"),
        rule("quay.io/x/y", "ghcr.io/x/y"),
        rule("oci:backup/api:stable", "quay.io/restore/api"),
    ];
    assert_eq!(stages(&rules), vec![vec![0, 3], vec![1], vec![2], vec![4]]);
}

#[test]
fn overlap_rules() {
    let w = |to: &str, from: &str| {
        writes_into(
            &Reference::parse(to).unwrap(),
            &Reference::parse(from).unwrap(),
        )
    };
    assert!(w("ghcr.io/org/*", "ghcr.io/org/api"));
    assert!(w("ghcr.io/org/api", "ghcr.io/org/*"));
    assert!(w("ghcr.io/org/*", "ghcr.io/*"));
    assert!(!w("ghcr.io/org/api", "ghcr.io/org/web"));
    assert!(!w("ghcr.io/org/api", "quay.io/org/api"));
    assert!(w("oci:./out", "oci:out:v1"));
}
