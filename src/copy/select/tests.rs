//! Rule resolution: stages, claims, overlaps.

use super::*;
use crate::copy::copy_rule::{Platform, PlatformMode, Platforms};
use crate::copy::Contest;

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

fn amd64() -> Option<Arc<Platforms>> {
    Some(Arc::new(Platforms {
        wanted: vec![Platform::parse("linux/amd64").unwrap()],
        mode: PlatformMode::Rewrite,
    }))
}

/// `item` after the item `parent` (a referrer of it).
fn after(mut item: Item, parent: &Item) -> Item {
    item.after = Some(After {
        parent: parent.key(),
        subject: Digest::sha256_of(parent.source_ref.as_bytes()),
    });
    item
}

#[test]
fn the_first_writer_of_a_tag_keeps_it_another_source_is_contested_other_platforms_conflict() {
    let mut claims = Claims::labelled(|n| format!("rule {n}"));
    let mut pinned = item("a", "2.0", Some("2.0"), 1);
    pinned.platforms = amd64();
    let first = claims.claim(vec![item("a", "1.0", Some("1.0"), 1), pinned]);
    assert_eq!(first.items.len(), 2);
    assert!(first.items.iter().all(|i| i.contest.is_none()));
    // Across stages: the same source again is a duplicate; another source with the same
    // platforms is contested (only the digests can tell), its signature following it; other
    // platforms are a conflict at once, and the signature that follows it is not copied.
    let b = item("b", "1.0", Some("1.0"), 2);
    let sig = after(item("b", "sha256-x.sig", Some("sha256-x.sig"), 2), &b);
    let mut pinned_b = item("b", "2.0", Some("2.0"), 2);
    pinned_b.platforms = amd64();
    let mut amd64_a = item("a", "1.0", Some("1.0"), 3);
    amd64_a.platforms = amd64();
    let amd64_sig = after(item("a", "sha256-y.sig", Some("sha256-y.sig"), 3), &amd64_a);
    let second = claims.claim(vec![
        item("a", "1.0", Some("1.0"), 2),
        b,
        sig,
        pinned_b,
        amd64_a,
        amd64_sig,
        // By digest, untagged: the digest is the content, whichever repository has it.
        item("a", "sha256:1", None, 2),
        item("b", "sha256:1", None, 2),
    ]);
    assert_eq!(second.duplicates.len(), 2, "{second:?}");
    let contested: Vec<(&str, &Contest)> = (second.items.iter())
        .filter_map(|i| Some((i.source_ref.as_str(), i.contest.as_ref()?)))
        .collect();
    assert_eq!(contested.len(), 2, "{second:?}");
    assert_eq!(contested[0].0, "1.0");
    assert_eq!(contested[1].0, "2.0");
    let c = contested[0].1;
    assert_eq!(c.winner_rule, 1);
    assert_eq!(
        c.conflict,
        "rule 2 would write it from oci:b:1.0, but rule 1 writes it from oci:a:1.0; two rules must not write one tag (the one that runs first wins, so this one is not copied): exclude the tag from one of them"
    );
    assert!(
        c.unknown
            .starts_with("rule 1 writes it from oci:a:1.0, which failed or was not copied"),
        "{}",
        c.unknown
    );
    let names: Vec<&str> = second.items.iter().map(|i| i.source_ref.as_str()).collect();
    assert_eq!(names, ["1.0", "sha256-x.sig", "2.0", "sha256:1"]);
    assert_eq!(second.conflicts.len(), 1, "{second:?}");
    let conflict = &second.conflicts[0];
    assert_eq!(conflict.winner_rule, 1);
    assert_eq!(
        conflict.source,
        "oci:a:1.0 (platforms linux/amd64 (rewrite))"
    );
    assert!(
        conflict
            .reason
            .starts_with("rule 3 would write it from oci:a:1.0 (platforms linux/amd64 (rewrite)), but rule 1 writes it from oci:a:1.0;"),
        "{}",
        conflict.reason
    );
    assert_eq!(second.orphans.len(), 1);
    assert_eq!(second.orphans[0].source_ref, "sha256-y.sig");

    // A third source is contested against the first writer, not the second: the key stays
    // the first writer's, and the second source is contested again (not a duplicate of a
    // contested item, which may yet prove a conflict).
    let third = claims.claim(vec![
        item("c", "1.0", Some("1.0"), 4),
        item("b", "1.0", Some("1.0"), 5),
    ]);
    assert_eq!(third.items.len(), 2, "{third:?}");
    assert!(third
        .items
        .iter()
        .all(|i| i.contest.as_ref().is_some_and(|c| c.winner_rule == 1)));
    assert_eq!(
        claims.owner(&item("c", "1.0", Some("1.0"), 4).key()),
        Some(1)
    );
}

#[test]
fn a_rule_sharing_no_target_keeps_its_claims_for_its_part_alone() {
    // Rule 1 shares targets with rule 2; rule 3 with none.
    let mut claims = Claims::labelled(|n| format!("rule {n}")).sharing([1, 2]);
    let part = claims.claim(vec![
        item("a", "1.0", Some("1.0"), 3),
        item("a", "sha256:1", None, 3),
        // Within its part it is still a duplicate.
        item("a", "sha256:1", None, 3),
        item("b", "2.0", Some("2.0"), 1),
    ]);
    assert_eq!((part.items.len(), part.duplicates.len()), (3, 1));
    assert_eq!(claims.owner(&item("a", "1.0", Some("1.0"), 3).key()), None);
    assert_eq!(
        claims.kept_claims(),
        1,
        "only the sharing rule's claim is kept"
    );
    // The sharing rule's claim still meets a later part.
    let later = claims.claim(vec![item("c", "2.0", Some("2.0"), 2)]);
    assert_eq!(
        later.items[0].contest.as_ref().map(|c| c.winner_rule),
        Some(1)
    );
}

fn rule(from: &str, to: &str) -> CopyRule {
    CopyRule::new(
        0,
        Reference::parse(from).unwrap(),
        Reference::parse(to).unwrap(),
    )
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

/// Resolve `rules` over one in-memory registry, `src.test`, holding `team/api` (`1.0`,
/// `2.0` and a signature of `2.0`) and `team/web` (`latest`).
async fn resolved(rules: &[CopyRule]) -> Selection {
    use crate::registry::memory::MemoryRegistry;
    let src = Arc::new(MemoryRegistry::new("src.test"));
    src.push_image("team/api", "1.0", &[b"a1"], "linux/amd64");
    let two = src.push_image("team/api", "2.0", &[b"a2"], "linux/amd64");
    src.push_signature("team/api", &two);
    src.push_image("team/web", "latest", &[b"w"], "linux/amd64");
    let dst = Arc::new(MemoryRegistry::new("dst.test"));
    let mut registries: Registries = HashMap::new();
    registries.insert(Location::Registry("src.test".into()), src);
    registries.insert(Location::Registry("dst.test".into()), dst);
    let rules: Vec<&CopyRule> = rules.iter().collect();
    resolve(&rules, &registries, &crate::copy::journal::NoJournal).await
}

/// Rule `number` from `from` to `to`, keeping the tags that match one of `include`.
fn including(number: usize, from: &str, to: &str, include: &[&str]) -> CopyRule {
    let mut r = rule(from, to);
    r.number = number;
    r.tags.include = include
        .iter()
        .map(|p| regex::Regex::new(p).unwrap())
        .collect();
    r
}

#[tokio::test]
async fn a_rule_that_selects_nothing_is_said_once_with_what_it_matched() {
    let mut allowed = including(2, "src.test/team/api", "dst.test/api", &["^3"]);
    allowed.allow_empty = true;
    let s = resolved(&[
        including(1, "src.test/tema/*", "dst.test/x/*", &[]),
        allowed,
        including(
            3,
            "src.test/team/*",
            "dst.test/y/*",
            &["^sha256-", "^nope$"],
        ),
        including(4, "src.test/team/*", "dst.test/z/*", &["^1"]),
    ])
    .await;
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    let said: Vec<(usize, &str, bool)> = s
        .empty
        .iter()
        .map(|e| (e.rule, e.what.as_str(), e.allowed))
        .collect();
    assert_eq!(
        said,
        [
            (1, "0 repositories match src.test/tema/*", false),
            (
                2,
                "no tag of src.test/team/api matches the rule's tags filters (3 tags listed)",
                true
            ),
            // The signature tag matches the filter, but is no selected tag on its own.
            (
                3,
                "no tag of the 2 repositories under src.test/team/* matches the rule's tags filters (4 tags listed)",
                false
            ),
        ]
    );
    // Rule 4 selects team/api:1.0 only; team/web has no such tag, and that is fine.
    assert!(s.items.iter().any(|i| i.rule == 4 && i.source_ref == "1.0"));
}
