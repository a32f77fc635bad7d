use std::time::UNIX_EPOCH;

use super::*;
use PruneAction::{Delete as D, Keep as K, Untag as U};

fn d(n: u64) -> Digest {
    Digest::parse(&format!("sha256:{n:012x}{:052x}", 0)).unwrap()
}

fn n_of(digest: &Digest) -> u64 {
    u64::from_str_radix(&digest.hex()[..12], 16).unwrap()
}

fn day(n: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(n * DAY)
}

fn img(n: u64, tags: &[&str]) -> Image {
    Image {
        digest: d(n),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        created: Some(day(1)),
        children: Vec::new(),
        subject: None,
    }
}

fn index(n: u64, tags: &[&str], children: &[u64]) -> Image {
    Image {
        children: children.iter().map(|&c| (d(c), None)).collect(),
        ..img(n, tags)
    }
}

fn signature(n: u64, subject: u64) -> Image {
    Image {
        tags: vec![format!("sha256-{}.sig", d(subject).hex())],
        subject: Some(d(subject)),
        ..img(n, &[])
    }
}

const SOURCE: &str = "src.example/org/app";

/// A repository where ferry copied `copied` (tag -> n) from SOURCE, and the rule now selects
/// `selected`; the source lists `listed`.
struct Case {
    copied: HashMap<String, Copied>,
    missing: HashMap<String, SystemTime>,
    scope: Scope,
    prune: Prune,
    in_use: InUsePins,
    refusals: Refusals,
}

impl Case {
    fn new(copied: &[(&str, u64)], selected: &[&str], listed: &[&str]) -> Case {
        Case {
            copied: copied
                .iter()
                .map(|&(t, n)| {
                    (
                        t.to_string(),
                        Copied {
                            source: SOURCE.to_string(),
                            digest: d(n),
                        },
                    )
                })
                .collect(),
            missing: HashMap::new(),
            scope: Scope {
                repo: "org/app".into(),
                source: SOURCE.into(),
                source_tags: SourceTags::Listed(listed.iter().map(|t| t.to_string()).collect()),
                selected: selected.iter().map(|t| t.to_string()).collect(),
            },
            prune: Prune::default(),
            in_use: InUsePins::default(),
            refusals: Refusals::default(),
        }
    }

    fn judge(&self) -> Judge<'_> {
        Judge {
            prune: &self.prune,
            copied: &self.copied,
            missing: &self.missing,
            scope: &self.scope,
            in_use: &self.in_use,
            refusals: &self.refusals,
            now: day(100),
        }
    }

    fn run(&self, images: &[Image]) -> Vec<(u64, PruneAction, String, String)> {
        select(images, &self.judge())
            .decisions
            .into_iter()
            .map(|x| (n_of(&x.digest), x.action, x.tags.join(","), x.reason))
            .collect()
    }
}

fn row(n: u64, a: PruneAction, tags: &str, reason: &str) -> (u64, PruneAction, String, String) {
    (n, a, tags.to_string(), reason.to_string())
}

#[test]
fn only_tags_ferry_copied_and_the_rule_no_longer_selects_are_pruned() {
    let case = Case::new(
        &[("v1", 1), ("v2", 2), ("v3", 3), ("v4", 4)],
        &["v3"],
        &["v2", "v3"],
    );
    let images = [
        img(1, &["v1"]),
        img(2, &["v2"]),
        img(3, &["v3"]),
        img(4, &["v4"]),
        img(5, &["hotfix"]),
        img(6, &["v6"]),
    ];
    let mut case = case;
    // v4 was pushed over by hand: the target holds another digest than ferry wrote.
    case.copied.get_mut("v4").unwrap().digest = d(40);
    assert_eq!(
        case.run(&images),
        vec![
            row(1, D, "v1", "prune: gone at the source"),
            row(2, D, "v2", "prune: the rule's tag filters leave it out"),
            row(4, K, "v4", "kept: not ours (pushed over: it is sha256:000000000004, ferry wrote sha256:000000000028)"),
            row(5, K, "hotfix", "kept: not ours (ferry did not copy this tag here)"),
            row(6, K, "v6", "kept: not ours (ferry did not copy this tag here)"),
        ]
    );
}

#[test]
fn a_removed_source_repository_prunes_every_tag_ferry_copied_there() {
    let mut case = Case::new(&[("a", 1), ("b", 2)], &[], &[]);
    case.scope.source_tags = SourceTags::Gone;
    let out = case.run(&[img(1, &["a"]), img(2, &["b"]), img(3, &["mine"])]);
    assert_eq!(
        out,
        vec![
            row(1, D, "a", "prune: its source repository is gone"),
            row(2, D, "b", "prune: its source repository is gone"),
            row(
                3,
                K,
                "mine",
                "kept: not ours (ferry did not copy this tag here)"
            ),
        ]
    );
}

#[test]
fn a_pruned_tag_sharing_its_image_with_a_kept_tag_is_removed_alone() {
    let case = Case::new(&[("v1", 1), ("latest", 1)], &["latest"], &["latest"]);
    assert_eq!(
        case.run(&[img(1, &["latest", "v1"])]),
        vec![row(
            1,
            U,
            "v1",
            "prune: gone at the source; the image stays (tag latest is selected by the plan)"
        )]
    );
}

#[test]
fn children_and_signatures_follow_their_image_and_stay_with_a_kept_one() {
    // v1 (index 1 with children 11, 12) is pruned; v2 (index 2) shares child 12 and stays.
    let case = Case::new(
        &[
            ("v1", 1),
            ("v2", 2),
            (&format!("sha256-{}.sig", d(1).hex()), 30),
        ],
        &["v2", &format!("sha256-{}.sig", d(2).hex())],
        &["v2"],
    );
    let images = [
        index(1, &["v1"], &[11, 12]),
        index(2, &["v2"], &[12, 13]),
        img(11, &[]),
        img(12, &[]),
        img(13, &[]),
        signature(30, 1),
        signature(31, 2),
    ];
    let out = case.run(&images);
    let deleted: Vec<u64> = out.iter().filter(|r| r.1 == D).map(|r| r.0).collect();
    assert_eq!(deleted, vec![1, 30, 11], "{out:#?}");
    assert!(out.iter().all(|r| r.0 != 12 && r.0 != 31), "{out:#?}");
}

#[test]
fn older_than_waits_from_when_the_tag_was_first_found_missing() {
    let mut case = Case::new(&[("v1", 1), ("v2", 2)], &[], &["v0"]);
    case.prune.older_than = Some(Duration::from_secs(7 * DAY));
    case.missing.insert("v1".into(), day(90));
    case.missing.insert("gone".into(), day(90));
    let out = select(&[img(1, &["v1"]), img(2, &["v2"])], &case.judge());
    let rows: Vec<(u64, PruneAction, String)> = out
        .decisions
        .iter()
        .map(|x| (n_of(&x.digest), x.action, x.reason.clone()))
        .collect();
    assert_eq!(
        rows,
        vec![
            (1, D, "prune: gone at the source".to_string()),
            (
                2,
                K,
                "kept: gone at the source, missing for 0m, not yet older_than = 7d".to_string()
            ),
        ]
    );
    assert_eq!(out.newly_missing, vec!["v2".to_string()]);
    assert_eq!(out.found_again, vec!["gone".to_string()]);
}

#[test]
fn what_is_in_use_stays_by_digest_or_by_tag() {
    let mut case = Case::new(&[("v1", 1), ("v2", 2), ("v3", 3)], &["v3"], &["v3"]);
    case.in_use
        .digests
        .insert(d(1), "in use by pod prod/api (container api)".into());
    case.in_use
        .tags
        .insert("v2".into(), "in use by pod prod/web (container web)".into());
    let out = case.run(&[img(1, &["v1"]), img(2, &["v2"]), img(3, &["v3"])]);
    assert_eq!(
        out,
        vec![
            // Kept by digest, so its tag can go: what runs it names the digest.
            row(
                1,
                U,
                "v1",
                "prune: gone at the source; the image stays (in use by pod prod/api (container api))"
            ),
            row(2, K, "v2", "kept: in use by pod prod/web (container web)"),
        ]
    );
}

#[test]
fn the_valve_and_a_hold_turn_every_deletion_into_a_keep() {
    let case = Case::new(&[("v1", 1), ("v2", 2)], &[], &[]);
    let mut out = select(&[img(1, &["v1"]), img(2, &["v2"])], &case.judge());
    assert_eq!(out.deletions(), 2);
    let prune = Prune {
        max_deletions: Some(1),
        older_than: None,
    };
    let why = valve(&prune, out.deletions()).expect("held back");
    assert_eq!(
        why,
        "2 prune deletions exceed max_deletions = 1; nothing is pruned for this rule"
    );
    assert_eq!(valve(&prune, 1), None);
    // Issue 26 (alerts): the metrics tell the valve from a failed [in_use] source.
    assert!(crate::retention::decisions::held_by_valve(&why));
    assert!(!crate::retention::decisions::held_by_valve(
        "an [in_use] source could not be read whole, so nothing is deleted (protection fails closed)"
    ));
    hold(&mut out, &why);
    assert_eq!(out.deletions(), 0);
    assert!(out
        .decisions
        .iter()
        .all(|x| x.reason.starts_with("kept: 2 prune")));
}

/// Property: whatever the tags, ownership and selection, pruning never deletes a manifest
/// that a tag it keeps points at, never removes a tag it does not own, and never removes a
/// tag the plan selects.
#[test]
fn pruning_never_touches_what_it_keeps_or_does_not_own() {
    use proptest::prelude::*;
    let tags = ["a", "b", "c", "d", "e", "f"];
    proptest!(ProptestConfig::with_cases(300), |(
        at in proptest::collection::vec(0u64..4, 6),
        owned in proptest::collection::vec(any::<bool>(), 6),
        selected in proptest::collection::vec(any::<bool>(), 6),
        listed in proptest::collection::vec(any::<bool>(), 6),
    )| {
        let mut images: Vec<Image> = (1..=4).map(|n| img(n, &[])).collect();
        for (i, t) in tags.iter().enumerate() {
            images[at[i] as usize].tags.push(t.to_string());
        }
        images[0].children = vec![(d(2), None)];
        let copied: Vec<(&str, u64)> = tags.iter().enumerate().filter(|(i, _)| owned[*i]).map(|(i, t)| (*t, at[i] + 1)).collect();
        let sel: Vec<&str> = tags.iter().enumerate().filter(|(i, _)| selected[*i]).map(|(_, t)| *t).collect();
        let lst: Vec<&str> = tags.iter().enumerate().filter(|(i, _)| listed[*i]).map(|(_, t)| *t).collect();
        let case = Case::new(&copied, &sel, &lst);
        let out = select(&images, &case.judge());
        let mut removed: Vec<&str> = Vec::new();
        let mut deleted: Vec<&Digest> = Vec::new();
        for x in &out.decisions {
            match x.action {
                D => {
                    deleted.push(&x.digest);
                    let img = images.iter().find(|i| i.digest == x.digest).unwrap();
                    removed.extend(img.tags.iter().map(String::as_str));
                }
                U => removed.extend(x.tags.iter().map(String::as_str)),
                K => {}
            }
        }
        for t in &removed {
            prop_assert!(case.copied.contains_key(*t), "removed {t}, not ours");
            prop_assert!(!sel.contains(t), "removed {t}, selected");
        }
        // Every tag that stays points at a manifest that stays, with what it reaches.
        for img in &images {
            let stays = img.tags.iter().any(|t| !removed.contains(&t.as_str()));
            if stays {
                prop_assert!(!deleted.contains(&&img.digest));
                for (c, _) in &img.children {
                    prop_assert!(!deleted.contains(&c));
                }
            }
        }
    });
}

/// Issue 22, GHCR's refusals: where the registry keeps a package's last tagged version,
/// pruning every tag keeps the newest image with all its tags (untagging it would leave GHCR a
/// placeholder it refuses to delete); a refusal remembered keeps its image and tags too, and
/// then nothing else needs to stay. An image that keeps a tag of its own is a tagged version
/// already: its pruned tag goes alone.
#[test]
fn what_the_registry_will_not_delete_keeps_its_tags() {
    use crate::retention::refusals::{refused_reason, LAST_VERSION};
    use crate::retention::Refused;
    let mut case = Case::new(&[("a", 1), ("b", 2), ("c", 3), ("c2", 3)], &[], &[]);
    case.refusals.last_tagged = true;
    let newest = Image {
        created: Some(day(3)),
        ..img(3, &["c", "c2"])
    };
    let images = [img(1, &["a"]), img(2, &["b"]), newest];
    assert_eq!(
        case.run(&images),
        vec![
            row(1, D, "a", "prune: gone at the source"),
            row(2, D, "b", "prune: gone at the source"),
            row(3, K, "c", LAST_VERSION),
            row(3, K, "c2", LAST_VERSION),
        ]
    );
    let refused = Refused {
        digest: d(1),
        version_id: None,
        reason: "too popular".into(),
        at: day(90),
    };
    let why = refused_reason(&refused);
    case.refusals.refused.insert(d(1), refused);
    assert_eq!(
        case.run(&images),
        vec![
            row(3, D, "c,c2", "prune: gone at the source"),
            row(2, D, "b", "prune: gone at the source"),
            row(1, K, "a", &why),
        ]
    );
    // Not ours, c2 keeps image 3 tagged: c is removed alone.
    case.copied.remove("c2");
    case.refusals.refused.clear();
    let out = case.run(&images);
    assert!(out.contains(&row(
        3,
        K,
        "c2",
        "kept: not ours (ferry did not copy this tag here)"
    )));
    assert!(
        out.iter().any(|r| r.0 == 3 && r.1 == U && r.2 == "c"),
        "{out:?}"
    );
}
