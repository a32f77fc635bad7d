//! Retention carried out in-process against [`MemoryRegistry`]: what a policy deletes, what it
//! must never break (children, signatures, shared manifests), pins and the valve, and what is
//! recorded through the journal. The integration suite proves the same against a real
//! docker-registry; these run in milliseconds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::{run, Context, Deletion, Journal, PinMap, Retained};
use crate::reference::Digest;
use crate::reference::Location;
use crate::registry::memory::MemoryRegistry;
use crate::registry::Registry;
use crate::retention::retain_rule::{RetainPolicy, RetainRule, DEFAULT_UNTAGGED_GRACE};

const REPO: &str = "team/app";

/// Deletions as recorded: (repository, digest, tags).
#[derive(Default)]
struct Recorder(Mutex<Vec<(String, Digest, Vec<String>)>>);

impl Journal for Recorder {
    fn deleted(&self, d: &Deletion<'_>) {
        self.0
            .lock()
            .unwrap()
            .push((d.repo.to_string(), d.digest.clone(), d.tags.to_vec()));
    }
}

struct World {
    reg: Arc<MemoryRegistry>,
    /// The release: an index of amd64 + arm64, signed.
    release: Digest,
    release_sig: Digest,
    /// The amd64 child the release shares with pr-1.
    shared_child: Digest,
    arm_child: Digest,
    /// pr-1: an index of the shared amd64 child and an arm64 child of its own, signed.
    pr: Digest,
    pr_arm: Digest,
    pr_sig: Digest,
    /// pr-2: a single-platform image.
    pr2: Digest,
}

fn world() -> World {
    let reg = Arc::new(MemoryRegistry::new("reg.test"));
    let shared_child = reg.push_image(REPO, "", &[b"base", b"app 1"], "linux/amd64");
    let arm_child = reg.push_image(REPO, "", &[b"base", b"arm", b"app 1"], "linux/arm64");
    let release = reg.push_index(
        REPO,
        "1.0.0",
        &[(&shared_child, "linux/amd64"), (&arm_child, "linux/arm64")],
    );
    let (_, release_sig) = reg.push_signature(REPO, &release);
    let pr_arm = reg.push_image(REPO, "", &[b"base", b"arm", b"pr 1"], "linux/arm64");
    let pr = reg.push_index(
        REPO,
        "pr-1",
        &[(&shared_child, "linux/amd64"), (&pr_arm, "linux/arm64")],
    );
    let (_, pr_sig) = reg.push_signature(REPO, &pr);
    let pr2 = reg.push_image(REPO, "pr-2", &[b"base", b"pr 2"], "linux/amd64");
    World {
        reg,
        release,
        release_sig,
        shared_child,
        arm_child,
        pr,
        pr_arm,
        pr_sig,
        pr2,
    }
}

/// Policy #1 on `reg.test/team/app`: delete the images whose tags all match one of
/// `patterns`, with every other setting at its default.
pub(crate) fn deleting(patterns: &[&str]) -> RetainPolicy {
    RetainPolicy {
        number: 1,
        line: 3,
        column: 14,
        repository: crate::reference::Reference::parse(&format!("reg.test/{REPO}")).unwrap(),
        rule: RetainRule {
            keep_newest: 0,
            keep_tags: Vec::new(),
            delete_tags: patterns
                .iter()
                .map(|p| regex::Regex::new(p).unwrap())
                .collect(),
            older_than: None,
            untagged: false,
            untagged_grace: DEFAULT_UNTAGGED_GRACE,
            max_deletions: None,
        },
    }
}

async fn retain(w: &World, policy: RetainPolicy, pins: &PinMap) -> (Vec<Retained>, Recorder) {
    let policies = [policy];
    let mut registries: HashMap<Location, Arc<dyn Registry>> = HashMap::new();
    registries.insert(
        Location::Registry("reg.test".into()),
        w.reg.clone() as Arc<dyn Registry>,
    );
    let journal = Recorder::default();
    let cx = Context {
        registries: &registries,
        now: SystemTime::now(),
        owns: &|_| true,
        pins,
        journal: &journal,
        note: &|_| {},
    };
    (run(&policies, &cx).await, journal)
}

fn deleted(journal: &Recorder) -> Vec<Digest> {
    let mut d: Vec<_> = journal
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.1.clone())
        .collect();
    d.sort();
    d
}

fn sorted(mut d: Vec<Digest>) -> Vec<Digest> {
    d.sort();
    d
}

#[tokio::test]
async fn a_deleted_index_takes_its_own_children_and_signature_and_leaves_what_is_kept_whole() {
    let w = world();
    let (out, journal) = retain(&w, deleting(&["^pr-1$"]), &PinMap::default()).await;

    assert_eq!(out.len(), 1);
    assert_eq!(
        deleted(&journal),
        sorted(vec![w.pr.clone(), w.pr_arm.clone(), w.pr_sig.clone()])
    );
    for gone in [&w.pr, &w.pr_arm, &w.pr_sig] {
        assert!(!w.reg.has_manifest(REPO, gone), "{gone} still there");
    }
    // The child pr-1 shared with the release, the release, its child and its signature stay.
    for kept in [
        &w.release,
        &w.shared_child,
        &w.arm_child,
        &w.release_sig,
        &w.pr2,
    ] {
        assert!(w.reg.has_manifest(REPO, kept), "{kept} was deleted");
    }
    let tags = w.reg.tags(REPO);
    assert!(!tags.contains_key("pr-1"));
    assert_eq!(tags.get("1.0.0"), Some(&w.release));
    // Each deletion is recorded with the tags it took.
    let records = journal.0.lock().unwrap();
    let pr = records.iter().find(|r| r.1 == w.pr).expect("pr-1 recorded");
    assert_eq!(
        (pr.0.as_str(), pr.2.as_slice()),
        (REPO, &["pr-1".to_string()][..])
    );
}

#[tokio::test]
async fn a_pinned_image_is_kept_and_reported_as_a_conflict() {
    let w = world();
    let mut pins = PinMap::default();
    pins.entry("reg.test", REPO)
        .tags
        .insert("pr-2".into(), "copy #1 (p.toml:2) writes it".into());
    let (out, journal) = retain(&w, deleting(&["^pr-"]), &pins).await;

    assert!(w.reg.has_manifest(REPO, &w.pr2));
    assert!(!w.reg.has_manifest(REPO, &w.pr));
    assert!(!deleted(&journal).contains(&w.pr2));
    let decisions = out[0].plan.decisions.as_ref().expect("read");
    assert_eq!(decisions.conflicts.len(), 1);
    assert_eq!(decisions.conflicts[0].digest, w.pr2);
    assert_eq!(
        decisions.conflicts[0].pinned_by,
        "copy #1 (p.toml:2) writes it"
    );
}

#[tokio::test]
async fn the_valve_holds_back_every_deletion_of_the_repository() {
    let w = world();
    let before = w.reg.calls().get("delete_manifest").copied().unwrap_or(0);
    let mut valve = deleting(&["^pr-"]);
    valve.rule.max_deletions = Some(2);
    let (out, journal) = retain(&w, valve, &PinMap::default()).await;

    let decisions = out[0].plan.decisions.as_ref().expect("read");
    assert!(decisions.held_back.is_some());
    assert!(out[0].deletions.is_empty());
    assert!(deleted(&journal).is_empty());
    assert_eq!(
        w.reg.calls().get("delete_manifest").copied().unwrap_or(0),
        before
    );
    assert_eq!(w.reg.tags(REPO).len(), 5, "{:?}", w.reg.tags(REPO));
}

#[tokio::test]
async fn untagged_cleanup_spares_every_child_and_cannot_see_orphans_without_a_records_api() {
    let w = world();
    // An orphan: once a child, now reachable from nothing. Distribution lists tags only, so
    // without a records API (GHCR's versions) it is invisible: nothing is guessed.
    let orphan = w
        .reg
        .push_image(REPO, "", &[b"base", b"old"], "linux/amd64");
    let mut untagged = deleting(&[]);
    untagged.rule.keep_tags = vec![regex::Regex::new(".").unwrap()];
    untagged.rule.untagged = true;
    let (_, journal) = retain(&w, untagged, &PinMap::default()).await;

    assert!(deleted(&journal).is_empty());
    assert!(w.reg.has_manifest(REPO, &orphan));
    for kept in [
        &w.shared_child,
        &w.arm_child,
        &w.pr_arm,
        &w.release_sig,
        &w.pr_sig,
    ] {
        assert!(w.reg.has_manifest(REPO, kept), "{kept} was deleted");
    }
}

#[tokio::test]
async fn an_image_in_use_is_kept_with_all_it_reaches_and_is_no_conflict() {
    let w = world();
    let mut pins = PinMap::default();
    let p = pins.entry("reg.test", REPO);
    // pr-1 runs by its index digest; pr-2 is named by tag in a Deployment.
    p.in_use.digests.insert(
        w.pr.clone(),
        "in use by pod prod/api-1 (container api, running), cluster c".into(),
    );
    p.in_use.tags.insert(
        "pr-2".into(),
        "in use by deployment prod/api (container api), cluster c".into(),
    );
    let (out, journal) = retain(&w, deleting(&["^pr-"]), &pins).await;

    assert!(deleted(&journal).is_empty());
    for kept in [&w.pr, &w.pr_arm, &w.pr_sig, &w.pr2] {
        assert!(w.reg.has_manifest(REPO, kept), "{kept} was deleted");
    }
    let d = out[0].plan.decisions.as_ref().expect("read");
    assert!(
        d.conflicts.is_empty(),
        "in use is a keep root, not a conflict"
    );
    assert_eq!(d.in_use, 2, "two images the rule alone would delete");
    let reason = |digest: &Digest| {
        d.decisions
            .iter()
            .find(|x| &x.digest == digest)
            .map(|x| x.reason.clone())
            .unwrap()
    };
    assert_eq!(
        reason(&w.pr),
        "kept: in use by pod prod/api-1 (container api, running), cluster c"
    );
    assert!(
        reason(&w.pr_arm).starts_with("kept: child of pr-1"),
        "{}",
        reason(&w.pr_arm)
    );
    assert_eq!(
        reason(&w.pr2),
        "kept: in use by deployment prod/api (container api), cluster c"
    );
}

#[tokio::test]
async fn a_source_that_failed_holds_every_deletion() {
    let w = world();
    let mut pins = PinMap::default();
    pins.hold_all("an [in_use] source could not be read whole".into());
    let before = w.reg.calls().get("delete_manifest").copied().unwrap_or(0);
    let (out, journal) = retain(&w, deleting(&["^pr-"]), &pins).await;

    assert!(deleted(&journal).is_empty());
    assert_eq!(
        w.reg.calls().get("delete_manifest").copied().unwrap_or(0),
        before
    );
    let d = out[0].plan.decisions.as_ref().expect("read");
    assert_eq!(
        d.held_back.as_deref(),
        Some("an [in_use] source could not be read whole")
    );
    assert!(d.decisions.iter().all(|x| x.action == super::Action::Keep));
}

/// One refusal a run recorded: (repo, digest, version id, reason).
type RefusalRow = (String, Digest, Option<String>, String);

/// What a run recorded of refusals.
#[derive(Default)]
struct Refusals(Mutex<Vec<RefusalRow>>);

impl Journal for Refusals {
    fn refused(&self, _registry: &str, repo: &str, r: &super::Refused) {
        let row = (
            repo.to_string(),
            r.digest.clone(),
            r.version_id.clone(),
            r.reason.clone(),
        );
        self.0.lock().unwrap().push(row);
    }
}

/// Issue 22, GHCR's refusals: a deletion the registry refuses for good while deleting becomes
/// the keep selection would have made, and so does everything doomed that it references (its
/// child, its signature); a download refusal fails the run once and is remembered, the last
/// tagged version does neither; each keep is told.
#[tokio::test]
async fn a_refusal_met_while_deleting_keeps_the_image_and_what_it_references() {
    use crate::registry::error::Refusal;
    use crate::retention::refusals::LAST_VERSION;
    let w = world();
    w.reg
        .refuse_delete(&w.pr, Refusal::Downloads, "too popular");
    w.reg
        .refuse_delete(&w.pr2, Refusal::LastVersion, "the last tagged version");
    let policies = [deleting(&["^pr-"])];
    let mut registries: HashMap<Location, Arc<dyn Registry>> = HashMap::new();
    registries.insert(Location::Registry("reg.test".into()), w.reg.clone());
    let journal = Refusals::default();
    let notes = Mutex::new(Vec::new());
    let note = |line: &str| notes.lock().unwrap().push(line.to_string());
    let cx = Context {
        registries: &registries,
        now: SystemTime::now(),
        owns: &|_| true,
        pins: &PinMap::default(),
        journal: &journal,
        note: &note,
    };
    let out = run(&policies, &cx).await;

    let today = &humantime::format_rfc3339_seconds(SystemTime::now()).to_string()[..10];
    let popular = format!("kept: GitHub refused to delete it on {today}: too popular");
    let by = |d: &Digest| {
        out[0]
            .deletions
            .iter()
            .find(|x| &x.decision.digest == d)
            .unwrap()
    };
    for (digest, reason, fails) in [
        (&w.pr, popular.as_str(), true),
        (&w.pr_arm, "kept: child of pr-1", false),
        (&w.pr_sig, "kept: referrer of pr-1", false),
        (&w.pr2, LAST_VERSION, false),
    ] {
        let d = by(digest);
        assert_eq!(d.decision.action, super::Action::Keep, "{digest}");
        assert_eq!(d.decision.reason, reason);
        assert_eq!(d.failure().is_some(), fails, "{reason}");
        assert!(w.reg.has_manifest(REPO, digest), "{reason}");
    }
    let refused = journal.0.lock().unwrap().clone();
    assert_eq!(
        refused,
        [(REPO.to_string(), w.pr.clone(), None, "too popular".into())]
    );
    let notes = notes.lock().unwrap().clone();
    assert_eq!(notes.len(), 4, "{notes:?}");
    assert!(
        notes
            .iter()
            .all(|n| n.starts_with("kept reg.test/team/app@")),
        "{notes:?}"
    );
    assert!(notes
        .iter()
        .any(|n| n.ends_with(&format!("(pr-1): {popular}"))));
}
