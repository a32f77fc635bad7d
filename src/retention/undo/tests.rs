//! Undo in-process against [`MemoryRegistry`] (issue 22, "Undo"): what a deletion keeps, the
//! order things come back in, narrowing to a tag, what cannot come back. The integration
//! suite proves the same against a real docker-registry and its garbage collection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::*;
use crate::reference::Location;
use crate::registry::memory::MemoryRegistry;
use crate::retention::{run, Context as RetainContext, Deletion, Journal, PinMap};

const REPO: &str = "team/app";

/// Deletions as a checkpoint keeps them, in the order made.
#[derive(Default)]
struct Kept(Mutex<Vec<Stored>>);

impl Journal for Kept {
    fn keeps_manifests(&self) -> bool {
        true
    }

    fn deleted(&self, d: &Deletion<'_>) {
        self.0.lock().unwrap().push(Stored {
            registry: d.registry.to_string(),
            repo: d.repo.to_string(),
            digest: d.digest.clone(),
            tags: d.tags.to_vec(),
            tags_only: d.tags_only,
            version_id: d.version_id.map(str::to_string),
            manifest: d.manifest.cloned(),
        });
    }
}

struct World {
    reg: Arc<MemoryRegistry>,
    release: Digest,
    /// pr-1: an index of an amd64 child it shares with the release and an arm64 child of
    /// its own, signed.
    pr: Digest,
    pr_arm: Digest,
    pr_sig: Digest,
    pr_sig_tag: String,
    /// pr-2: a single-platform image.
    pr2: Digest,
}

fn world() -> World {
    let reg = Arc::new(MemoryRegistry::new("reg.test"));
    let amd = reg.push_image(REPO, "", &[b"base", b"app 1"], "linux/amd64");
    let arm = reg.push_image(REPO, "", &[b"base", b"arm", b"app 1"], "linux/arm64");
    let release = reg.push_index(
        REPO,
        "1.0.0",
        &[(&amd, "linux/amd64"), (&arm, "linux/arm64")],
    );
    let pr_arm = reg.push_image(REPO, "", &[b"base", b"arm", b"pr 1"], "linux/arm64");
    let pr = reg.push_index(
        REPO,
        "pr-1",
        &[(&amd, "linux/amd64"), (&pr_arm, "linux/arm64")],
    );
    let (pr_sig_tag, pr_sig) = reg.push_signature(REPO, &pr);
    let pr2 = reg.push_image(REPO, "pr-2", &[b"base", b"pr 2"], "linux/amd64");
    World {
        reg,
        release,
        pr,
        pr_arm,
        pr_sig,
        pr_sig_tag,
        pr2,
    }
}

/// Retention deleting every `pr-` image: what it kept of each deletion, in order.
async fn delete_prs(w: &World) -> Vec<Stored> {
    let policies = [crate::retention::tests::deleting(&["^pr-"])];
    let mut registries: HashMap<Location, Arc<dyn Registry>> = HashMap::new();
    registries.insert(
        Location::Registry("reg.test".into()),
        w.reg.clone() as Arc<dyn Registry>,
    );
    let journal = Kept::default();
    let cx = RetainContext {
        registries: &registries,
        now: SystemTime::now(),
        owns: &|_| true,
        pins: &PinMap::default(),
        journal: &journal,
        note: &|_| {},
    };
    run(&policies, &cx).await;
    journal.0.into_inner().unwrap()
}

/// Restore `items`; the outcomes, and the order they were settled in (indexes into `items`).
async fn put_back(w: &World, items: &[Stored], dry_run: bool) -> (Vec<Restored>, Vec<usize>) {
    let registries: HashMap<String, Arc<dyn Registry>> =
        HashMap::from([("reg.test".to_string(), w.reg.clone() as Arc<dyn Registry>)]);
    let order = Mutex::new(Vec::new());
    let note = |i: usize, _: &Restored| order.lock().unwrap().push(i);
    let cx = Context {
        registries: &registries,
        dry_run,
        note: &note,
    };
    let out = restore(items, &cx).await;
    (out, order.into_inner().unwrap())
}

fn index_of(items: &[Stored], d: &Digest) -> usize {
    items.iter().position(|i| &i.digest == d).expect("deleted")
}

fn puts(w: &World) -> usize {
    w.reg.calls().get("put_manifest").copied().unwrap_or(0)
}

#[tokio::test]
async fn every_deletion_keeps_its_exact_manifest_and_comes_back_children_and_referrers_first() {
    let w = world();
    let mut before = HashMap::new();
    for d in [&w.pr, &w.pr_arm, &w.pr_sig, &w.pr2] {
        let m = w.reg.get_manifest(REPO, d.as_str()).await.unwrap();
        before.insert(d.clone(), m.bytes);
    }
    let items = delete_prs(&w).await;
    assert_eq!(items.len(), 4, "{items:?}");
    for item in &items {
        let kept = item.manifest.as_ref().expect("kept");
        assert_eq!(kept.bytes, before[&item.digest], "{}", item.digest);
        assert!(!w.reg.has_manifest(REPO, &item.digest));
    }
    // Deleted top-down: the index before its child, the subject before its signature.
    let at = |d| index_of(&items, d);
    assert!(at(&w.pr) < at(&w.pr_arm) && at(&w.pr) < at(&w.pr_sig));

    let (out, order) = put_back(&w, &items, false).await;
    assert!(out.iter().all(Restored::ok), "{out:?}");
    assert!(out
        .iter()
        .all(|r| r.manifest.as_ref().unwrap() == &Put::Pushed));
    // Put back bottom-up: the reverse of the order deleted.
    let reversed: Vec<usize> = (0..items.len()).rev().collect();
    assert_eq!(order, reversed);
    let tags = w.reg.tags(REPO);
    assert_eq!(tags["pr-1"], w.pr);
    assert_eq!(tags["pr-2"], w.pr2);
    assert_eq!(tags[&w.pr_sig_tag], w.pr_sig);
    assert_eq!(tags["1.0.0"], w.release);
    assert!(w.reg.has_manifest(REPO, &w.pr_arm));

    // Again: everything is there, nothing is written.
    let writes = puts(&w);
    let (again, _) = put_back(&w, &items, false).await;
    assert!(again
        .iter()
        .all(|r| r.manifest.as_ref().unwrap() == &Put::There));
    assert!(again
        .iter()
        .flat_map(|r| &r.tags)
        .all(|(_, t)| t.as_ref().unwrap() == &TagPut::There));
    assert_eq!(puts(&w), writes);
}

#[tokio::test]
async fn a_dry_run_says_what_it_would_put_back_and_writes_nothing() {
    let w = world();
    let items = delete_prs(&w).await;
    let (out, _) = put_back(&w, &items, true).await;
    assert!(out.iter().all(Restored::ok), "{out:?}");
    assert!(out
        .iter()
        .all(|r| r.manifest.as_ref().unwrap() == &Put::Pushed));
    let pr = &out[index_of(&items, &w.pr)];
    assert_eq!(pr.tags.len(), 1);
    assert_eq!(pr.tags[0].0, "pr-1");
    assert_eq!(pr.tags[0].1.as_ref().unwrap(), &TagPut::PutBack);
    assert_eq!(puts(&w), 0);
    assert!(!w.reg.has_manifest(REPO, &w.pr));
}

#[tokio::test]
async fn a_manifest_whose_blob_was_collected_cannot_come_back_and_neither_can_its_index() {
    let w = world();
    let items = delete_prs(&w).await;
    // Garbage collection took the layer only pr-1's arm64 child had.
    w.reg.collect_blob(REPO, &Digest::sha256_of(b"pr 1"));
    let (out, _) = put_back(&w, &items, false).await;
    let of = |d| &out[index_of(&items, d)];
    let arm = of(&w.pr_arm).manifest.as_ref().unwrap_err();
    assert_eq!(
        arm.to_string(),
        format!("blob {} is gone", Digest::sha256_of(b"pr 1"))
    );
    let pr = of(&w.pr).manifest.as_ref().unwrap_err();
    assert_eq!(
        pr.to_string(),
        format!("child manifest {} could not be put back", w.pr_arm)
    );
    assert!(of(&w.pr).tags.is_empty());
    // The rest goes on.
    assert!(of(&w.pr2).ok() && of(&w.pr_sig).ok());
    assert_eq!(w.reg.tags(REPO)["pr-2"], w.pr2);
    assert!(!w.reg.tags(REPO).contains_key("pr-1"));
}

#[tokio::test]
async fn a_tag_pushed_since_is_left_alone_and_a_tag_removed_alone_comes_back_alone() {
    let w = world();
    let items = delete_prs(&w).await;
    let newer = w
        .reg
        .push_image(REPO, "pr-2", &[b"base", b"pr 2 again"], "linux/amd64");
    // Pruning removed `1.0.0` alone: the manifest stayed.
    w.reg.delete_tag(REPO, "1.0.0", &w.release).await.unwrap();
    let mut all = items.clone();
    all.push(Stored {
        tags: vec!["1.0.0".into()],
        tags_only: true,
        manifest: None,
        version_id: Some("placeholder id".into()),
        ..items[0].clone()
    });
    all.last_mut().unwrap().digest = w.release.clone();
    let (out, _) = put_back(&w, &all, false).await;
    let pr2 = &out[index_of(&all, &w.pr2)];
    assert_eq!(pr2.manifest.as_ref().unwrap(), &Put::Pushed);
    assert_eq!(
        pr2.tags[0].1.as_ref().unwrap(),
        &TagPut::Moved(newer.clone())
    );
    assert!(pr2.ok(), "a tag someone pushed since is theirs");
    assert_eq!(w.reg.tags(REPO)["pr-2"], newer);
    let release = out.last().unwrap();
    assert_eq!(release.manifest.as_ref().unwrap(), &Put::There);
    assert_eq!(release.tags[0].1.as_ref().unwrap(), &TagPut::PutBack);
    assert_eq!(w.reg.tags(REPO)["1.0.0"], w.release);
}

#[tokio::test]
async fn a_deletion_kept_without_its_manifest_says_so() {
    let w = world();
    let mut items = delete_prs(&w).await;
    let at = index_of(&items, &w.pr2);
    items[at].manifest = None;
    let (out, _) = put_back(&w, &items, false).await;
    assert!(matches!(out[at].manifest, Err(RestoreError::NotKept)));
    // Bytes that are not the manifest's are refused, not pushed.
    let mut items = items.clone();
    let wrong = items[index_of(&items, &w.pr)].manifest.clone();
    items[at].manifest = wrong;
    let (out, _) = put_back(&w, &items, false).await;
    assert!(matches!(out[at].manifest, Err(RestoreError::Damaged(_))));
}

#[tokio::test]
async fn narrowing_to_a_tag_brings_its_children_and_referrers_along() {
    let w = world();
    let items = delete_prs(&w).await;
    let chosen = select(&items, &|i| i.tags.iter().any(|t| t == "pr-1"));
    let mut picked: Vec<&Digest> = items
        .iter()
        .zip(&chosen)
        .filter(|(_, c)| **c)
        .map(|(i, _)| &i.digest)
        .collect();
    picked.sort();
    let mut expected = vec![&w.pr, &w.pr_arm, &w.pr_sig];
    expected.sort();
    assert_eq!(picked, expected);
    let only_pr2 = select(&items, &|i| i.tags.iter().any(|t| t == "pr-2"));
    assert_eq!(only_pr2.iter().filter(|c| **c).count(), 1);
    assert!(select(&items, &|_| false).iter().all(|c| !c));
}

#[tokio::test]
async fn a_manifest_the_inventory_did_not_read_is_read_once_before_it_is_deleted() {
    use crate::retention::inventory::{keep_for_restore, Manifests};
    let w = world();
    let gets = || w.reg.calls().get("get_manifest").copied().unwrap_or(0);
    let mut kept = Manifests::new();
    let pr = w.reg.get_manifest(REPO, w.pr.as_str()).await.unwrap();
    kept.insert(w.pr.clone(), pr);
    let before = gets();
    let gone = Digest::sha256_of(b"never pushed");
    keep_for_restore(w.reg.as_ref(), REPO, [&w.pr, &w.pr2, &gone], &mut kept).await;
    // Only what was not kept yet is read (on Docker Hub, a pull each); what cannot be read
    // is left out, and its deletion goes on without it.
    assert_eq!(gets() - before, 2);
    assert_eq!(kept.len(), 2);
    assert_eq!(kept[&w.pr2].digest, w.pr2);
    assert!(!kept.contains_key(&gone));
}
