use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::guard::{Guarded, Hold};
use super::*;
use crate::registry::memory::MemoryRegistry;

// Short: each acquisition waits a tenth of it to read back.
const EXPIRY: Duration = Duration::from_secs(3);

fn at() -> Spot {
    Spot {
        repo: "team/ferry-lease".into(),
        tag: "lease".into(),
    }
}

fn holder(host: &str) -> Holder {
    Holder {
        host: host.into(),
        ..Holder::this_process(Some(7), "nightly.toml")
    }
}

/// Put `holder`'s lease, expiring at `expires`, as another run would.
async fn put(reg: &MemoryRegistry, holder: &Holder, expires: SystemTime) -> Digest {
    crate::registry::placeholder::upload_empty_config(reg, &at().repo)
        .await
        .unwrap();
    let m = manifest(holder, expires);
    reg.put_manifest(&at().repo, &at().tag, &m).await.unwrap();
    m.digest
}

fn tagged(reg: &MemoryRegistry) -> Option<Digest> {
    reg.tags(&at().repo).get("lease").cloned()
}

#[test]
fn a_lease_reads_back_as_written_and_anything_else_is_no_lease() {
    let h = holder("ci-7f9");
    let expires = humantime::parse_rfc3339("2030-01-02T03:04:05Z").unwrap();
    let m = manifest(&h, expires);
    let lease = parse(&m).unwrap();
    assert_eq!(lease.holder, h);
    assert_eq!(lease.expires, expires);
    assert_eq!(lease.digest, m.digest);
    assert_eq!(lease.expires_shown(), "2030-01-02T03:04:05Z");
    let json: serde_json::Value = serde_json::from_slice(&m.bytes).unwrap();
    assert_eq!(json["artifactType"], ARTIFACT_TYPE);
    assert_eq!(
        json["config"]["mediaType"],
        "application/vnd.oci.empty.v1+json"
    );
    assert_eq!(json["layers"][0]["digest"], json["config"]["digest"]);
    // Two holders' leases, or one holder's two writings, differ.
    assert_ne!(manifest(&holder("ci-7f9"), expires).digest, m.digest);

    let placeholder = crate::registry::placeholder::manifest("v1");
    assert!(parse(&placeholder)
        .unwrap_err()
        .to_string()
        .contains("not a ferry lease"));
}

#[test]
fn a_holder_is_shown_in_plain_characters_only() {
    let h = Holder {
        id: "x".into(),
        host: "evil\u{1b}[2Jhost name".into(),
        pid: 17,
        run: Some(3),
        plan: "nightly.toml".into(),
    };
    assert_eq!(
        h.to_string(),
        "evil??2Jhost?name (pid 17, run 3, plan nightly.toml)"
    );
    let h = Holder { run: None, ..h };
    assert!(h.to_string().ends_with("(pid 17, plan nightly.toml)"));
}

#[test]
fn lease_repositories_are_told_by_their_last_component() {
    for yes in [
        "ferry-lease",
        "team/ferry-lease",
        "./out/ferry-lease/",
        "a/b/ferry-lease",
    ] {
        assert!(is_lease_repository(yes), "{yes}");
    }
    for no in ["team/app", "ferry-lease/app", "team/my-ferry-lease", ""] {
        assert!(!is_lease_repository(no), "{no}");
    }
}

#[tokio::test]
async fn a_free_lease_is_taken_and_given_up_leaving_no_tag() {
    let reg = MemoryRegistry::new("reg.example");
    let me = holder("a");
    let ours = match acquire(&reg, &at(), &me, EXPIRY).await.unwrap() {
        Acquired::Ours(l) => l,
        other => panic!("{other:?}"),
    };
    assert_eq!(tagged(&reg), Some(ours.digest.clone()));
    assert!(ours.live(SystemTime::now()));

    let renewed = match renew(&reg, &at(), &ours, EXPIRY).await.unwrap() {
        Renewed::Ours(l) => l,
        other => panic!("{other:?}"),
    };
    assert_ne!(renewed.digest, ours.digest);
    assert_eq!(tagged(&reg), Some(renewed.digest.clone()));
    assert!(
        !reg.has_manifest(&at().repo, &ours.digest),
        "the old writing is deleted"
    );

    release(&reg, &at(), &renewed).await.unwrap();
    assert_eq!(tagged(&reg), None);
    assert_eq!(read(&reg, &at()).await.unwrap(), None);
}

#[tokio::test]
async fn a_live_lease_of_another_is_left_alone_and_an_expired_one_is_taken_over() {
    let reg = MemoryRegistry::new("reg.example");
    let other = holder("b");
    let theirs = put(&reg, &other, SystemTime::now() + EXPIRY).await;
    match acquire(&reg, &at(), &holder("a"), EXPIRY).await.unwrap() {
        Acquired::Held(l) => assert_eq!((l.holder, l.digest), (other.clone(), theirs.clone())),
        other => panic!("{other:?}"),
    }
    assert_eq!(tagged(&reg), Some(theirs.clone()), "nothing written");

    let reg = MemoryRegistry::new("reg.example");
    let expired = put(&reg, &other, SystemTime::now() - Duration::from_secs(1)).await;
    match acquire(&reg, &at(), &holder("a"), EXPIRY).await.unwrap() {
        Acquired::Ours(l) => assert_eq!(tagged(&reg), Some(l.digest)),
        other => panic!("{other:?}"),
    }
    assert!(!reg.has_manifest(&at().repo, &expired));
}

#[tokio::test]
async fn a_lease_written_over_ours_before_the_read_back_wins() {
    let reg = Arc::new(MemoryRegistry::new("reg.example"));
    let me = holder("a");
    let task = {
        let reg = reg.clone();
        tokio::spawn(async move { acquire(reg.as_ref(), &at(), &me, EXPIRY).await })
    };
    // The task runs to its settle wait: its lease is written.
    while tagged(&reg).is_none() {
        tokio::task::yield_now().await;
    }
    let ours = tagged(&reg).unwrap();
    let theirs = put(&reg, &holder("b"), SystemTime::now() + EXPIRY).await;
    match task.await.unwrap().unwrap() {
        Acquired::Held(l) => assert_eq!(l.digest, theirs),
        other => panic!("{other:?}"),
    }
    assert_eq!(tagged(&reg), Some(theirs));
    assert!(!reg.has_manifest(&at().repo, &ours), "ours is cleared away");
}

#[tokio::test]
async fn a_renewal_finds_a_lease_lost_and_a_release_leaves_anothers_alone() {
    let reg = MemoryRegistry::new("reg.example");
    let ours = match acquire(&reg, &at(), &holder("a"), EXPIRY).await.unwrap() {
        Acquired::Ours(l) => l,
        other => panic!("{other:?}"),
    };
    let theirs = put(&reg, &holder("b"), SystemTime::now() + EXPIRY).await;
    match renew(&reg, &at(), &ours, EXPIRY).await.unwrap() {
        Renewed::Lost(Some(l)) => assert_eq!(l.digest, theirs),
        other => panic!("{other:?}"),
    }
    release(&reg, &at(), &ours).await.unwrap();
    assert_eq!(tagged(&reg), Some(theirs));
}

#[tokio::test]
async fn a_guarded_registry_deletes_only_while_the_hold_lasts() {
    let reg = Arc::new(MemoryRegistry::new("reg.example"));
    let a = reg.push_image("team/app", "a", &[b"a"], "linux/amd64");
    let b = reg.push_image("team/app", "b", &[b"b"], "linux/amd64");
    let c = reg.push_image("team/app", "c", &[b"c"], "linux/amd64");
    let spot = "reg.example/team/ferry-lease:lease".to_string();
    let hold = Arc::new(Hold::new(spot, Instant::now() + EXPIRY));
    let guarded = Guarded::new(reg.clone(), hold.clone());
    guarded.delete_manifest("team/app", &a).await.unwrap();
    assert!(!reg.has_manifest("team/app", &a));

    hold.lose("another run took the lease".into());
    let e = guarded.delete_manifest("team/app", &b).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("not deleted: another run took the lease"),
        "{e}"
    );
    assert!(guarded.delete_tag("team/app", "b", &b).await.is_err());
    assert!(reg.has_manifest("team/app", &b));

    let lapsed = Arc::new(Hold::new("x".into(), Instant::now()));
    let guarded = Guarded::new(reg.clone(), lapsed);
    let e = guarded.delete_manifest("team/app", &c).await.unwrap_err();
    assert!(
        e.to_string().contains("could not be renewed in time"),
        "{e}"
    );
    assert!(reg.has_manifest("team/app", &c));
}

/// Issue 23, item 3: the capabilities are one value, forwarded whole: a guarded registry
/// answers with the ones of the registry it guards, none left at the default.
#[test]
fn a_guarded_registry_answers_with_the_capabilities_it_guards() {
    use crate::registry::capabilities::{Capabilities, RecordStyle};
    let unusual = Capabilities {
        record_style: RecordStyle::Versions,
        resumable_uploads: true,
        counts_pulls: true,
        can_mount: false,
        lists_tag_digests: true,
    };
    let reg = Arc::new(MemoryRegistry::new("reg.example").with_capabilities(unusual));
    let hold = Arc::new(Hold::new("x".into(), Instant::now() + EXPIRY));
    assert_eq!(Guarded::new(reg, hold).capabilities(), unusual);
}
