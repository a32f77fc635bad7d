//! The look before each DELETE, in-process against [`MemoryRegistry`]: the inventory is read
//! and decided, a writer changes the repository, then the deletions are carried out. The
//! integration suite (`concurrent`) races a real run against a real registry.

use std::sync::Mutex;
use std::time::SystemTime;

use crate::reference::Digest;
use crate::registry::manifest::OCI_INDEX;
use crate::registry::memory::MemoryRegistry;
use crate::registry::{Registry, RegistryError};
use crate::retention::apply::{apply, Applied};
use crate::retention::prune::{PruneAction, PruneDecision, RepoPrune};
use crate::retention::{inventory, select, Action, Decision, Image, Journal};

const REPO: &str = "team/app";

/// `1.0.0` (kept), `pr-1` (an index of an arm64 image of its own, signed), `pr-2` and `pr-3`.
struct World {
    reg: MemoryRegistry,
    release: Digest,
    pr1: Digest,
    pr1_arm: Digest,
    pr1_sig: Digest,
    pr2: Digest,
    pr3: Digest,
}

fn world() -> World {
    let reg = MemoryRegistry::new("reg.test");
    let release = reg.push_image(REPO, "1.0.0", &[b"base", b"1.0.0"], "linux/amd64");
    let pr1_arm = reg.push_image(REPO, "", &[b"base", b"pr 1"], "linux/arm64");
    let pr1 = reg.push_index(REPO, "pr-1", &[(&pr1_arm, "linux/arm64")]);
    let (_, pr1_sig) = reg.push_signature(REPO, &pr1);
    let pr2 = reg.push_image(REPO, "pr-2", &[b"base", b"pr 2"], "linux/amd64");
    let pr3 = reg.push_image(REPO, "pr-3", &[b"base", b"pr 3"], "linux/amd64");
    World {
        reg,
        release,
        pr1,
        pr1_arm,
        pr1_sig,
        pr2,
        pr3,
    }
}

/// The inventory and the decisions of `delete_tags = ['^pr-']`, before any writer.
async fn decided(w: &World) -> (Vec<Image>, crate::retention::RepoDecisions) {
    let policy = crate::retention::tests::deleting(&["^pr-"]);
    let images = inventory::read(&w.reg, REPO).await.expect("read");
    let decisions = select::select(&images, &policy.rule, SystemTime::now());
    (images, decisions)
}

/// Tag the manifest `digest` as `tag`, as another writer would.
async fn tag(w: &World, tag: &str, digest: &Digest) {
    let m = w.reg.get_manifest(REPO, digest.as_str()).await.unwrap();
    w.reg.add_manifest(REPO, tag, &m.media_type, &m.bytes);
}

/// What the looks kept, and why, by digest.
fn reasons(applied: &Applied) -> Vec<(Digest, String)> {
    let mut out: Vec<(Digest, String)> = applied
        .kept
        .iter()
        .map(|k| (k.digest.clone(), k.reason.clone()))
        .collect();
    out.sort();
    out
}

fn deleted(applied: &Applied) -> Vec<Digest> {
    let mut out: Vec<Digest> = applied
        .deleted
        .iter()
        .filter(|d| d.result.is_ok())
        .map(|d| d.decision.digest.clone())
        .collect();
    out.sort();
    out
}

fn sorted(mut d: Vec<Digest>) -> Vec<Digest> {
    d.sort();
    d
}

/// Issue 22: a doomed index tagged since the inventory is kept, with its doomed child and its
/// signature (deleted after it, so still there), each saying why.
#[tokio::test]
async fn a_tag_pushed_onto_a_doomed_index_keeps_it_and_what_it_reaches() {
    let w = world();
    let (images, decisions) = decided(&w).await;
    tag(&w, "hotfix", &w.pr1).await;
    let applied = apply(&w.reg, REPO, &images, &decisions).await;

    let mut want = vec![
        (
            w.pr1.clone(),
            "kept: tagged since the inventory (hotfix)".to_string(),
        ),
        (
            w.pr1_arm.clone(),
            "kept: child of pr-1 (linux/arm64), which is tagged since the inventory (hotfix)"
                .to_string(),
        ),
        (
            w.pr1_sig.clone(),
            "kept: signature of pr-1, which is tagged since the inventory (hotfix)".to_string(),
        ),
    ];
    want.sort();
    assert_eq!(reasons(&applied), want);
    assert_eq!(applied.kept[0].digest, w.pr1, "the image tagged first");
    assert!(applied.kept.iter().all(|k| k.action == Action::Keep));
    assert_eq!(
        deleted(&applied),
        sorted(vec![w.pr2.clone(), w.pr3.clone()])
    );
    for kept in [&w.pr1, &w.pr1_arm, &w.pr1_sig, &w.release] {
        assert!(w.reg.has_manifest(REPO, kept), "{kept} was deleted");
    }
    assert_eq!(w.reg.tags(REPO).get("hotfix"), Some(&w.pr1));
    assert!(applied.window.is_some(), "two DELETEs were sent");
}

/// Issue 22: a tag the inventory saw on a kept image, moved onto a doomed one, keeps it.
#[tokio::test]
async fn a_tag_moved_onto_a_doomed_image_keeps_it() {
    let w = world();
    let (images, decisions) = decided(&w).await;
    tag(&w, "1.0.0", &w.pr2).await;
    let applied = apply(&w.reg, REPO, &images, &decisions).await;

    assert_eq!(
        reasons(&applied),
        vec![(
            w.pr2.clone(),
            "kept: tagged since the inventory (1.0.0)".to_string()
        )]
    );
    assert!(w.reg.has_manifest(REPO, &w.pr2));
    assert!(w.reg.has_manifest(REPO, &w.release), "kept, untagged now");
    assert!(!w.reg.has_manifest(REPO, &w.pr3));
}

/// Issue 22: an index pushed since the inventory that names a doomed image as a child keeps
/// the child; the index is read once, by digest.
#[tokio::test]
async fn a_new_index_naming_a_doomed_child_keeps_the_child() {
    let w = world();
    let (images, decisions) = decided(&w).await;
    let bundle = w.reg.push_index(
        REPO,
        "bundle",
        &[(&w.pr3, "linux/amd64"), (&w.pr2, "linux/amd64")],
    );
    let reads = w.reg.calls().get("get_manifest").copied().unwrap_or(0);
    let applied = apply(&w.reg, REPO, &images, &decisions).await;

    let why = |tag: &str| {
        format!(
            "kept: tagged since the inventory ({tag}, through index {})",
            bundle.short()
        )
    };
    let mut want = vec![
        (w.pr2.clone(), why("bundle")),
        (w.pr3.clone(), why("bundle")),
    ];
    want.sort();
    assert_eq!(reasons(&applied), want);
    assert_eq!(
        w.reg.calls().get("get_manifest").copied().unwrap_or(0),
        reads + 1,
        "the new index is read once for both"
    );
    assert_eq!(
        deleted(&applied),
        sorted(vec![w.pr1.clone(), w.pr1_arm.clone(), w.pr1_sig.clone()])
    );
    let _ = w.reg.get_manifest(REPO, bundle.as_str()).await.unwrap();
}

/// A listing younger than a second serves the next look; tags unchanged since the inventory
/// are not what keeps an image (the doomed image's own tags are not even asked).
#[tokio::test]
async fn nothing_changed_deletes_as_decided_listing_once_a_second() {
    let w = world();
    let (images, decisions) = decided(&w).await;
    let calls = w.reg.calls();
    let applied = apply(&w.reg, REPO, &images, &decisions).await;

    assert!(applied.kept.is_empty());
    assert_eq!(
        deleted(&applied),
        sorted(vec![
            w.pr1.clone(),
            w.pr1_arm.clone(),
            w.pr1_sig.clone(),
            w.pr2.clone(),
            w.pr3.clone()
        ])
    );
    let after = w.reg.calls();
    let more = |k: &str| after.get(k).copied().unwrap_or(0) - calls.get(k).copied().unwrap_or(0);
    assert_eq!(more("list_tags"), 1, "five looks in well under a second");
    // Five tags; each look asks the ones not on its own digest (the arm64 child has none).
    assert_eq!(more("head_manifest"), 4 + 4 + 4 + 5 + 4);
    assert_eq!(
        more("get_manifest"),
        0,
        "the inventory's manifests are not read again"
    );
}

/// A look that cannot be made whole deletes nothing: a listed tag that fails its check.
#[tokio::test]
async fn a_look_that_fails_deletes_nothing_and_says_why() {
    let w = world();
    let (images, decisions) = decided(&w).await;
    w.reg.add_manifest(
        REPO,
        "bad tag",
        OCI_INDEX,
        br#"{"schemaVersion":2,"manifests":[]}"#,
    );
    let applied = apply(&w.reg, REPO, &images, &decisions).await;

    assert!(deleted(&applied).is_empty());
    assert_eq!(applied.window, None, "no DELETE was sent");
    let pr1 = applied
        .deleted
        .iter()
        .find(|d| d.decision.digest == w.pr1)
        .unwrap();
    match &pr1.result {
        Err(e @ RegistryError::NotRechecked { .. }) => assert!(
            e.to_string().ends_with(
                "not deleted: looking at the repository's tags again right before deleting failed"
            ),
            "{e}"
        ),
        other => panic!("{other:?}"),
    }
    for d in [&w.pr1, &w.pr1_arm, &w.pr2] {
        assert!(w.reg.has_manifest(REPO, d));
    }
}

#[derive(Default)]
struct Recorder(Mutex<Vec<Digest>>);

impl Journal for Recorder {
    fn deleted(&self, d: &crate::retention::Deletion<'_>) {
        self.0.lock().unwrap().push(d.digest.clone());
    }
}

/// Pruning deletes through the same guarded path: the image found tagged is a keep in its
/// decisions, told, and not recorded as deleted.
#[tokio::test]
async fn pruning_keeps_what_was_tagged_since_and_says_so() {
    let w = world();
    let images = inventory::read(&w.reg, REPO).await.unwrap();
    let mut decided = RepoPrune {
        decisions: [&w.pr2, &w.pr3]
            .into_iter()
            .map(|d| PruneDecision {
                digest: d.clone(),
                tags: vec![if *d == w.pr2 { "pr-2" } else { "pr-3" }.to_string()],
                action: PruneAction::Delete,
                reason: "prune: gone at the source".into(),
            })
            .collect(),
        ..RepoPrune::default()
    };
    tag(&w, "hotfix", &w.pr3).await;
    let journal = Recorder::default();
    let told = Mutex::new(Vec::new());
    let note = |l: &str| told.lock().unwrap().push(l.to_string());
    let mut manifests = Default::default();
    let (done, window) = crate::retention::prune::apply(
        &w.reg,
        REPO,
        &images,
        &mut manifests,
        &mut decided,
        &journal,
        &note,
    )
    .await;

    assert_eq!(done.len(), 1);
    assert_eq!(*journal.0.lock().unwrap(), vec![w.pr2.clone()]);
    assert!(window.is_some());
    let pr3 = decided
        .decisions
        .iter()
        .find(|d| d.digest == w.pr3)
        .unwrap();
    assert_eq!(
        (pr3.action, pr3.reason.as_str()),
        (
            PruneAction::Keep,
            "kept: tagged since the inventory (hotfix)"
        )
    );
    let told = told.lock().unwrap();
    assert!(
        told.contains(&format!(
            "kept reg.test/{REPO}@{} (pr-3): kept: tagged since the inventory (hotfix)",
            w.pr3.short()
        )),
        "{told:?}"
    );
    assert!(w.reg.has_manifest(REPO, &w.pr3));
}

/// What `run` shows: the decision of an image kept at the last moment is that keep.
#[test]
fn a_late_keep_overrules_the_deletion_decided() {
    let d = Digest::parse(&format!("sha256:{}", "ab".repeat(32))).unwrap();
    let decision = |action, reason: &str| Decision {
        digest: d.clone(),
        tags: vec!["pr-1".into()],
        action,
        reason: reason.into(),
    };
    let mut decisions = vec![decision(Action::Delete, "delete: matches ^pr-")];
    let kept = decision(Action::Keep, "kept: tagged since the inventory (hotfix)");
    crate::retention::policies::overrule(&mut decisions, std::slice::from_ref(&kept));
    assert_eq!(decisions, vec![kept]);
}
