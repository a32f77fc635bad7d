//! The engine in-process, over [`MemoryRegistry`]: rule resolution and copies in
//! milliseconds, with the requests each one cost counted. What only a real server proves
//! (auth, uploads over HTTP, faults) is in `tests/it`.

use std::sync::Arc;

use super::select::{self, Claims, Registries};
use super::*;
use crate::copy::copy_rule::{CopyRule, Platform, PlatformMode, Platforms};
use crate::reference::{Digest, Location, Reference};
use crate::registry::manifest;
use crate::registry::memory::MemoryRegistry;
use crate::registry::Registry;

const SRC: &str = "src.test";
const DST: &str = "dst.test";

struct World {
    src: Arc<MemoryRegistry>,
    dst: Arc<MemoryRegistry>,
    registries: Registries,
}

fn world() -> World {
    let src = Arc::new(MemoryRegistry::new(SRC));
    let dst = Arc::new(MemoryRegistry::new(DST));
    let mut registries: Registries = std::collections::HashMap::new();
    registries.insert(
        Location::Registry(SRC.into()),
        src.clone() as Arc<dyn Registry>,
    );
    registries.insert(
        Location::Registry(DST.into()),
        dst.clone() as Arc<dyn Registry>,
    );
    World {
        src,
        dst,
        registries,
    }
}

/// An amd64 + arm64 index `v1` (a cosign signature on the index) and an image `v2` sharing
/// a base layer, in `team/app`.
fn populate(src: &MemoryRegistry) -> (Digest, Digest, Digest, String) {
    populate_into(src, "team/app")
}

/// [`populate`] into `repo`.
fn populate_into(src: &MemoryRegistry, repo: &str) -> (Digest, Digest, Digest, String) {
    let amd = src.push_image(repo, "", &[b"base", b"amd64 layer"], "linux/amd64");
    let arm = src.push_image(repo, "", &[b"base", b"arm64 layer"], "linux/arm64");
    let index = src.push_index(repo, "v1", &[(&amd, "linux/amd64"), (&arm, "linux/arm64")]);
    let (sig_tag, _) = src.push_signature(repo, &index);
    let v2 = src.push_image(repo, "v2", &[b"base", b"v2 layer"], "linux/amd64");
    (index, amd, v2, sig_tag)
}

/// Rules numbered from 1, each `(from, to)`, copying every tag with its referrers.
fn rules(pairs: &[(&str, &str)]) -> Vec<CopyRule> {
    pairs
        .iter()
        .enumerate()
        .map(|(i, (from, to))| {
            let parse = |r: &str| Reference::parse(r).unwrap();
            CopyRule::new(i + 1, parse(from), parse(to))
        })
        .collect()
}

/// Resolve every rule of `rules` and copy what it selects, in one stage; the outcomes by
/// target (`repo:tag`).
async fn copy(w: &World, rules: &[CopyRule]) -> Vec<(String, Outcome)> {
    let rules: Vec<&_> = rules.iter().collect();
    let selection = select::resolve(&rules, &w.registries, &NoJournal).await;
    assert!(selection.errors.is_empty(), "{:?}", selection.errors);
    let claimed = Claims::default().claim(selection.items);
    let (outcomes, _) = Engine::new(Arc::new(Silent), 4)
        .copy_all(&claimed.items)
        .await;
    claimed
        .items
        .iter()
        .zip(outcomes)
        .map(|(i, o)| (i.target_display(), o.expect("not interrupted")))
        .collect()
}

fn action(o: &Outcome) -> &'static str {
    match o {
        Outcome::Copied { .. } => "copied",
        Outcome::Present { .. } => "present",
        Outcome::Unchanged { .. } => "unchanged",
        Outcome::Skipped { .. } => "skipped",
        Outcome::Failed { .. } => "failed",
    }
}

#[tokio::test]
async fn an_index_its_children_and_its_signature_arrive_byte_exact_and_once() {
    let w = world();
    let (index, amd, v2, sig) = populate(&w.src);
    let p = rules(&[(&format!("{SRC}/team/app"), &format!("{DST}/mirror/app"))]);
    let first = copy(&w, &p).await;
    assert_eq!(
        first.iter().map(|(_, o)| action(o)).collect::<Vec<_>>(),
        ["copied"; 3]
    );
    let tags = w.dst.tags("mirror/app");
    assert_eq!(tags["v1"], index);
    assert_eq!(tags["v2"], v2);
    assert!(tags.contains_key(&sig));
    assert!(w.dst.has_manifest("mirror/app", &amd));
    // The base layer is sent once, however many images use it.
    assert_eq!(w.dst.calls()["put_blob"], 7, "{:?}", w.dst.calls());

    // Again: one HEAD per tag at each side, nothing written.
    let before = w.dst.calls();
    let again = copy(&w, &p).await;
    assert!(
        again.iter().all(|(_, o)| action(o) == "present"),
        "{again:?}"
    );
    let after = w.dst.calls();
    assert_eq!(after.get("put_blob"), before.get("put_blob"));
    assert_eq!(after.get("put_manifest"), before.get("put_manifest"));
}

#[tokio::test]
async fn a_failed_subject_leaves_no_referrer_at_the_target() {
    let w = world();
    let repo = "team/app";
    // v1's manifest names a layer the source does not have.
    let v1 = lacking_a_layer(&w, repo);
    let (sig, _) = w.src.push_signature(repo, &v1);
    let p = rules(&[(&format!("{SRC}/team/app"), &format!("{DST}/team/app"))]);
    let outcomes = copy(&w, &p).await;
    let by_target: std::collections::BTreeMap<&str, &Outcome> =
        outcomes.iter().map(|(t, o)| (t.as_str(), o)).collect();
    assert_eq!(
        action(by_target[format!("{DST}/team/app:v1").as_str()]),
        "failed"
    );
    match by_target[format!("{DST}/team/app:{sig}").as_str()] {
        Outcome::Skipped { reason } => {
            assert!(
                reason.contains("what it refers to") && reason.contains("failed"),
                "{reason}"
            )
        }
        o => panic!("{o:?}"),
    }
    assert!(
        w.dst.tags("team/app").is_empty(),
        "{:?}",
        w.dst.tags("team/app")
    );
}

#[tokio::test]
async fn a_rewritten_index_keeps_its_signature_behind_and_says_why() {
    let w = world();
    let (index, amd, _, sig) = populate(&w.src);
    let mut p = rules(&[(&format!("{SRC}/team/app:v1"), &format!("{DST}/team/app"))]);
    p[0].platforms = Some(Arc::new(Platforms {
        wanted: vec![Platform::parse("linux/amd64").unwrap()],
        mode: PlatformMode::Rewrite,
    }));
    let outcomes = copy(&w, &p).await;
    let (_, o) = &outcomes[0];
    let new = match o {
        Outcome::Copied { stats, .. } => stats.rewritten.clone().expect("rewritten"),
        o => panic!("{o:?}"),
    };
    assert_eq!(w.dst.tags("team/app")["v1"], new);
    assert!(w.dst.has_manifest("team/app", &amd));
    match &outcomes[1].1 {
        Outcome::Skipped { reason } => assert!(
            reason.starts_with(&format!(
                "referrer of rewritten index not carried: {index} → {new}"
            )),
            "{reason}"
        ),
        o => panic!("{o:?}"),
    }
    assert!(!w.dst.tags("team/app").contains_key(&sig));
}

#[tokio::test]
async fn a_second_repository_mounts_what_the_first_sent() {
    let w = world();
    populate(&w.src);
    let p = rules(&[
        (&format!("{SRC}/team/app:v2"), &format!("{DST}/one/app")),
        (&format!("{SRC}/team/app:v2"), &format!("{DST}/two/app")),
    ]);
    let outcomes = copy(&w, &p).await;
    assert!(
        outcomes.iter().all(|(_, o)| action(o) == "copied"),
        "{outcomes:?}"
    );
    let calls = w.dst.calls();
    // Config and two layers: sent once, mounted into the second repository.
    assert_eq!(calls["put_blob"], 3, "{calls:?}");
    assert_eq!(calls["mount_blob"], 3, "{calls:?}");
    assert_eq!(w.src.calls()["get_blob"], 3, "{:?}", w.src.calls());
}

/// Resolve and claim every rule of `rules`, copy what it selects in one batch, and return
/// the outcomes by source (two rules may write one target).
async fn copy_by_source(
    w: &World,
    rules: &[CopyRule],
) -> std::collections::BTreeMap<String, Outcome> {
    let rules: Vec<&_> = rules.iter().collect();
    let selection = select::resolve(&rules, &w.registries, &NoJournal).await;
    assert!(selection.errors.is_empty(), "{:?}", selection.errors);
    let claimed = Claims::default().claim(selection.items);
    assert!(claimed.conflicts.is_empty(), "{claimed:?}");
    let (outcomes, _) = Engine::new(Arc::new(Silent), 4)
        .copy_all(&claimed.items)
        .await;
    let by_source = claimed.items.iter().zip(outcomes);
    by_source
        .map(|(i, o)| (i.source_display(), o.expect("not interrupted")))
        .collect()
}

/// Two rules from `a/*` and `b/*` into `x/*`.
fn consolidating() -> Vec<CopyRule> {
    rules(&[
        (&format!("{SRC}/a/*"), &format!("{DST}/x/*")),
        (&format!("{SRC}/b/*"), &format!("{DST}/x/*")),
    ])
}

fn reason(o: &Outcome) -> String {
    match o {
        Outcome::Failed { error } => error.to_string(),
        Outcome::Skipped { reason } => reason.clone(),
        o => panic!("{o:?}"),
    }
}

#[tokio::test]
async fn two_rules_writing_one_tag_from_two_sources_leave_one_winner() {
    let w = world();
    let a = w.src.push_image("a/app", "1.0.0", &[b"a"], "linux/amd64");
    let b = w.src.push_image("b/app", "1.0.0", &[b"b"], "linux/amd64");
    let (sig, _) = w.src.push_signature("b/app", &b);
    let outcomes = copy_by_source(&w, &consolidating()).await;
    assert_eq!(action(&outcomes[&format!("{SRC}/a/app:1.0.0")]), "copied");
    let lost = reason(&outcomes[&format!("{SRC}/b/app:1.0.0")]);
    assert!(
        lost.contains("copy #2 would write it from src.test/b/app:1.0.0, but copy #1 writes it from src.test/a/app:1.0.0; two rules must not write one tag"),
        "{lost}"
    );
    // The loser's signature follows the loser, not the winner.
    let why = reason(&outcomes[&format!("{SRC}/b/app:{sig}")]);
    assert!(
        why.starts_with("not copied: what it refers to (dst.test/x/app:1.0.0) failed"),
        "{why}"
    );
    let tags = w.dst.tags("x/app");
    assert_eq!(tags.keys().collect::<Vec<_>>(), ["1.0.0"]);
    assert_eq!(tags["1.0.0"], a);
}

/// Issue 21, item 3: the same images in two repositories are duplicates. The second rule's
/// tags are `present` with the first's digests, writing nothing but its own referrers.
#[tokio::test]
async fn two_sources_of_the_same_images_both_succeed_and_both_sides_referrers_travel() {
    let w = world();
    // The same images, and the same signature of the index, in both; a signature of v2 in
    // `b/app` only.
    let (index, _, v2, sig) = populate_into(&w.src, "a/app");
    let (b_index, _, b_v2, b_index_sig) = populate_into(&w.src, "b/app");
    assert_eq!((&b_index, &b_v2, &b_index_sig), (&index, &v2, &sig));
    let (b_sig, _) = w.src.push_signature("b/app", &v2);
    let outcomes = copy_by_source(&w, &consolidating()).await;
    for tag in ["v1", "v2"] {
        assert_eq!(action(&outcomes[&format!("{SRC}/a/app:{tag}")]), "copied");
        match &outcomes[&format!("{SRC}/b/app:{tag}")] {
            Outcome::Present {
                digest,
                rewritten: None,
            } => {
                assert_eq!(
                    *digest,
                    if tag == "v1" {
                        index.clone()
                    } else {
                        v2.clone()
                    }
                )
            }
            o => panic!("{tag}: {o:?}"),
        }
    }
    assert_eq!(action(&outcomes[&format!("{SRC}/a/app:{sig}")]), "copied");
    assert_eq!(action(&outcomes[&format!("{SRC}/b/app:{sig}")]), "present");
    assert_eq!(action(&outcomes[&format!("{SRC}/b/app:{b_sig}")]), "copied");
    let tags = w.dst.tags("x/app");
    assert_eq!(tags["v1"], index);
    assert_eq!(tags["v2"], v2);
    assert!(
        tags.contains_key(&sig) && tags.contains_key(&b_sig),
        "{tags:?}"
    );
}

/// A contested tag whose first writer failed cannot be compared: it fails too, saying so,
/// and its signature is not copied.
#[tokio::test]
async fn a_contested_tag_whose_first_writer_failed_fails_and_keeps_its_referrers_behind() {
    let w = world();
    // The same manifest in both, naming a layer neither has.
    lacking_a_layer(&w, "a/app");
    let digest = lacking_a_layer(&w, "b/app");
    let (sig, _) = w.src.push_signature("b/app", &digest);
    let outcomes = copy_by_source(&w, &consolidating()).await;
    assert_eq!(action(&outcomes[&format!("{SRC}/a/app:v1")]), "failed");
    let why = reason(&outcomes[&format!("{SRC}/b/app:v1")]);
    assert!(
        why.ends_with("copy #1 writes it from src.test/a/app:v1, which failed or was not copied, so whether src.test/b/app:v1 holds the same image cannot be told: not copied"),
        "{why}"
    );
    assert_eq!(action(&outcomes[&format!("{SRC}/b/app:{sig}")]), "skipped");
    assert!(w.dst.tags("x/app").is_empty());
}

/// The winner's rule in one batch and the contested rule in another, side by side (as the
/// parts of a stage are), one image at a time: the contested items and their signature wait
/// for the winners across batches, and the signature for its own rule's item.
#[tokio::test]
async fn contested_items_wait_for_their_winners_in_another_batch() {
    let w = world();
    let (index, _, v2, sig) = populate_into(&w.src, "a/app");
    populate_into(&w.src, "b/app");
    let (b_sig, _) = w.src.push_signature("b/app", &v2);
    let p = consolidating();
    let rules: Vec<&_> = p.iter().collect();
    let selection = select::resolve(&rules, &w.registries, &NoJournal).await;
    let (a, b): (Vec<Item>, Vec<Item>) = selection.items.into_iter().partition(|i| i.rule == 1);
    let mut claims = Claims::default();
    let (a, b) = (claims.claim(a).items, claims.claim(b).items);
    assert!(b.iter().any(|i| i.contest.is_some()));
    let engine = Engine::new(Arc::new(Silent), 1);
    let ((_, first), (outcomes, second)) = futures::join!(engine.copy_all(&a), engine.copy_all(&b));
    assert_eq!((first.copied, first.failed), (3, 0));
    assert_eq!(
        (second.copied, second.present, second.failed),
        (1, 3, 0),
        "{outcomes:?}"
    );
    let tags = w.dst.tags("x/app");
    assert_eq!((&tags["v1"], &tags["v2"]), (&index, &v2));
    assert!(
        tags.contains_key(&sig) && tags.contains_key(&b_sig),
        "{tags:?}"
    );
}

/// Issue 24, "memory independent of the number of tags": once a batch is over, the engine
/// keeps nothing of its items (their rule is not one another rule's items follow) nor the
/// fallback-index locks it took; each outcome was handed over once, as it finished.
#[tokio::test]
async fn a_finished_batch_leaves_nothing_per_item_in_the_engine() {
    let w = world();
    let (index, _, _, _) = populate(&w.src);
    let p = rules(&[(&format!("{SRC}/team/app"), &format!("{DST}/mirror/app"))]);
    let rules: Vec<&_> = p.iter().collect();
    let selection = select::resolve(&rules, &w.registries, &NoJournal).await;
    let mut items = Claims::default().claim(selection.items).items;
    let v1 = items.iter().find(|i| i.source_ref == "v1").unwrap().clone();
    items.push(referrer_of(&w, &v1, &index));
    let engine = Engine::new(Arc::new(Silent), 4).remember_only(Default::default());
    let handed = std::sync::Mutex::new(Vec::new());
    let totals = engine
        .copy_each(&items, &|i, o| handed.lock().unwrap().push((i, o)))
        .await;
    assert_eq!((totals.copied, totals.failed), (4, 0));
    let mut handed: Vec<usize> = (handed.into_inner().unwrap().into_iter())
        .map(|(i, _)| i)
        .collect();
    handed.sort();
    assert_eq!(handed, [0, 1, 2, 3]);
    // The referrer was listed in its subject's fallback index, and the lock is gone.
    let fallback = manifest::fallback_tag(&index);
    assert!(w.dst.tags("mirror/app").contains_key(&fallback));
    assert_eq!((engine.live_items(), engine.fallback_locks()), (0, 0));
    // Remembered (the default), each item stays for who may follow it.
    let engine = Engine::new(Arc::new(Silent), 4);
    engine.copy_all(&items).await;
    assert_eq!(engine.live_items(), 4);
}

/// An OCI 1.1 referrer of `subject` (which `parent` carries) at the source, pushed by digest,
/// as the item that copies it by digest after `parent`.
fn referrer_of(w: &World, parent: &Item, subject: &Digest) -> Item {
    let repo = &parent.source.repo;
    let config = w.src.add_blob(repo, b"{}");
    let body = format!(
        r#"{{"schemaVersion":2,"mediaType":"{m}","artifactType":"application/example","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{config}","size":2}},"layers":[],"subject":{{"mediaType":"{i}","digest":"{subject}","size":1}}}}"#,
        m = manifest::OCI_MANIFEST,
        i = manifest::OCI_INDEX,
    );
    let digest = Digest::sha256_of(body.as_bytes());
    w.src.add_manifest(
        repo,
        digest.as_str(),
        manifest::OCI_MANIFEST,
        body.as_bytes(),
    );
    Item {
        source_ref: digest.to_string(),
        target_tag: None,
        subject: Some(subject.clone()),
        after: Some(After {
            parent: parent.key(),
            subject: subject.clone(),
        }),
        seen: None,
        read: None,
        contest: None,
        ..parent.clone()
    }
}

/// Tag `v1` of `repo` at the source: a manifest naming a layer the source does not have (its
/// copy fails); its digest.
fn lacking_a_layer(w: &World, repo: &str) -> Digest {
    let layer = format!(
        r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":4}}"#,
        Digest::sha256_of(b"gone")
    );
    let config = w.src.add_blob(repo, b"{}");
    let body = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":2}},"layers":[{layer}]}}"#,
        manifest::OCI_MANIFEST
    );
    w.src
        .add_manifest(repo, "v1", manifest::OCI_MANIFEST, body.as_bytes());
    Digest::sha256_of(body.as_bytes())
}
