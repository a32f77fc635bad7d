//! What a deletion keeps for `ferry restore` (schema version 8) and how a restore is recorded
//! (issue 22, "Undo").

use super::*;

fn deletion(run: RunId, digest: &str, tags: &str, reason: &str) -> Write {
    Write::Deletion {
        run,
        registry: "reg.example".into(),
        repo: "team/app".into(),
        digest: digest.into(),
        tags: tags.into(),
        reason: reason.into(),
        version_id: None,
        media_type: Some("application/vnd.oci.image.manifest.v1+json".into()),
        manifest: Some(format!("{{\"of\":\"{digest}\"}}").into_bytes()),
    }
}

#[test]
fn a_deletion_keeps_its_manifest_and_the_last_run_that_deleted_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let state = State::open(&dir.path().join("state.db")).unwrap();
    let first = state.begin_run("plan.toml", "fp").unwrap();
    state.record(deletion(
        first,
        "sha256:aa",
        "pr-1, pr-1b",
        "delete: matches ^pr-",
    ));
    state.record(deletion(first, "sha256:bb", "", "delete: child of pr-1"));
    state.record(deletion(
        first,
        "sha256:cc",
        "old",
        "prune: gone at the source (tag only)",
    ));
    // A GHCR package version, recorded before manifests were kept.
    state.record(Write::Deletion {
        run: first,
        registry: "ghcr.io".into(),
        repo: "myorg/app".into(),
        digest: "sha256:dd".into(),
        tags: "x".into(),
        reason: "delete: 40 days old".into(),
        version_id: Some("1000042".into()),
        media_type: None,
        manifest: None,
    });
    // A later run that deleted nothing is not the one restore puts back.
    let second = state.begin_run("plan.toml", "fp").unwrap();

    let (run, rows) = state.deletions(None).unwrap().unwrap();
    assert_eq!(run, first);
    assert_ne!(run, second);
    let digests: Vec<&str> = rows.iter().map(|r| r.digest.as_str()).collect();
    assert_eq!(
        digests,
        ["sha256:aa", "sha256:bb", "sha256:cc", "sha256:dd"]
    );
    assert_eq!(rows[0].tags, ["pr-1", "pr-1b"]);
    assert!(rows[1].tags.is_empty());
    assert_eq!(
        rows[0].manifest.as_deref(),
        Some(&b"{\"of\":\"sha256:aa\"}"[..])
    );
    assert_eq!(
        rows[0].media_type.as_deref(),
        Some("application/vnd.oci.image.manifest.v1+json")
    );
    assert!(!rows[0].tags_only() && rows[2].tags_only());
    assert_eq!(rows[3].version_id.as_deref(), Some("1000042"));
    assert_eq!(
        (rows[3].media_type.as_ref(), rows[3].manifest.as_ref()),
        (None, None)
    );
    assert!(rows.iter().all(|r| r.restored_at.is_none()));

    // Restored rows say when; the others stay as they were.
    state.record(Write::Restored { id: rows[0].id });
    state.record(Write::Restored { id: rows[2].id });
    let (_, again) = state.deletions(Some(first)).unwrap().unwrap();
    let restored: Vec<bool> = again.iter().map(|r| r.restored_at.is_some()).collect();
    assert_eq!(restored, [true, false, true, false]);
    // The audit keeps every row: restoring forgets nothing.
    assert_eq!(
        state
            .run_summary(Some(first))
            .unwrap()
            .unwrap()
            .deletions
            .len(),
        4
    );

    // A run that deleted nothing, or none at all.
    assert!(state.deletions(Some(second)).unwrap().is_none());
    assert!(state.deletions(Some(999)).unwrap().is_none());
}

#[test]
fn a_checkpoint_without_deletions_has_nothing_to_restore() {
    let dir = tempfile::tempdir().unwrap();
    let state = State::open(&dir.path().join("state.db")).unwrap();
    assert!(state.deletions(None).unwrap().is_none());
    state.begin_run("plan.toml", "fp").unwrap();
    assert!(state.deletions(None).unwrap().is_none());
}
