use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::time::Instant;

use super::owner::BATCH_DELAY;
use super::*;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn lock_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

fn item(run: RunId, n: usize, status: ItemStatus) -> ItemRecord {
    ItemRecord {
        run,
        source: "docker.io/library/nginx".into(),
        source_ref: format!("1.{n}"),
        source_digest: Some(format!("sha256:{n:064x}")),
        target_registry: "ghcr.io".into(),
        target_repo: "o/nginx".into(),
        target_ref: format!("1.{n}"),
        status,
        attempts: 1,
        last_error: None,
        bytes: 1000 + n as u64,
        target_digest: None,
        verified_at: None,
    }
}

fn key(r: &ItemRecord) -> (String, String, String) {
    (
        r.target_registry.clone(),
        r.target_repo.clone(),
        r.target_ref.clone(),
    )
}

fn user_version(path: &Path) -> i64 {
    let conn = Connection::open(path).unwrap();
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap()
}

#[test]
fn open_creates_private_dirs_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/state.db");
    let state = State::open(&path).unwrap();
    assert_eq!(state.path(), path);
    assert_eq!(mode(&dir.path().join("a")), 0o700);
    assert_eq!(mode(&dir.path().join("a/b")), 0o700);
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&lock_path(&path)), 0o600);
    // SQLite gives the WAL the database's mode; check that nothing looser appears beside it.
    state.record(Write::TagSeen {
        registry: "ghcr.io".into(),
        repo: "o/x".into(),
        tag: "v1".into(),
        digest: "sha256:00".into(),
    });
    state.flush().unwrap();
    // journal_mode=WAL took effect.
    assert!(dir.path().join("a/b/state.db-wal").exists());
    for entry in std::fs::read_dir(dir.path().join("a/b")).unwrap() {
        let p = entry.unwrap().path();
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
}

#[test]
fn a_world_writable_directory_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    for loose in [0o777, 0o1777, 0o772] {
        std::fs::set_permissions(&shared, Permissions::from_mode(loose)).unwrap();
        let path = shared.join("state.db");
        let e = State::open(&path).unwrap_err();
        assert!(matches!(e, StateError::UnsafeDirectory { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains(&format!(
                "its directory {} is writable by every user",
                shared.display()
            )) && msg.contains(&format!("(mode {loose:o})"))
                && msg.contains("chmod o-w"),
            "{msg}"
        );
        // Nothing was created in it, and its mode was not changed behind the user's back.
        assert_eq!(std::fs::read_dir(&shared).unwrap().count(), 0);
        let now = std::fs::metadata(&shared).unwrap().permissions().mode() & 0o7777;
        assert_eq!(now, loose);
    }
    // Group-writable is a choice teams make on purpose (a shared CI group): accepted.
    std::fs::set_permissions(&shared, Permissions::from_mode(0o770)).unwrap();
    drop(State::open(&shared.join("state.db")).unwrap());
}

#[test]
fn open_tightens_an_existing_loose_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    std::fs::write(&path, b"").unwrap();
    std::fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
    let _state = State::open(&path).unwrap();
    assert_eq!(mode(&path), 0o600);
}

#[test]
fn second_open_is_locked_until_drop_and_data_survives() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let state = State::open(&path).unwrap();
    let run = state.begin_run("plan.toml", "fp").unwrap();
    state.record(Write::Item(item(run, 1, ItemStatus::Done)));
    state.flush().unwrap();

    match State::open(&path) {
        Err(StateError::Locked { path: p, lock }) => {
            assert_eq!(p, path);
            assert_eq!(lock, lock_path(&path));
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    // A clone is the same handle, not a second owner: dropping it keeps the lock.
    drop(state.clone());
    assert!(matches!(State::open(&path), Err(StateError::Locked { .. })));

    drop(state);
    let state = State::open(&path).unwrap();
    let snapshot = state.snapshot().unwrap();
    assert_eq!(snapshot.items.len(), 1);
    assert_eq!(
        snapshot.items[&key(&item(run, 1, ItemStatus::Done))].status,
        ItemStatus::Done
    );
}

#[test]
fn migrations_are_idempotent_and_set_user_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    drop(State::open(&path).unwrap());
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    drop(State::open(&path).unwrap());
    assert_eq!(user_version(&path), SCHEMA_VERSION);
}

/// Version 4 renamed `runs.skipped` (what an interruption kept from finishing) to
/// `interrupted`, and counts referrers not carried in a new `skipped`.
#[test]
fn a_version_3_file_keeps_its_interrupted_count_under_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let conn = Connection::open(&path).unwrap();
        for sql in &migrations::MIGRATIONS[..3] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 3).unwrap();
        conn.execute(
            "INSERT INTO runs (plan_path, plan_fingerprint, started_at, ended_at, status,
                               copied, failed, skipped, bytes, deleted)
             VALUES ('p.toml', 'fp', 1, 2, 'interrupted', 5, 1, 7, 100, 2)",
            [],
        )
        .unwrap();
    }
    let state = State::open(&path).unwrap();
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    let run = state.run_summary(None).unwrap().unwrap();
    assert_eq!(
        run.totals,
        RunTotals {
            copied: 5,
            present: 0,
            failed: 1,
            skipped: 0,
            interrupted: 7,
            bytes: 100,
            deleted: 2,
            ..RunTotals::default()
        }
    );
}

#[test]
fn newer_schema_is_refused_and_releases_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
    }
    match State::open(&path) {
        Err(StateError::NewerSchema {
            found, supported, ..
        }) => {
            assert_eq!(found, SCHEMA_VERSION + 1);
            assert_eq!(supported, SCHEMA_VERSION);
        }
        other => panic!("expected NewerSchema, got {other:?}"),
    }
    // Untouched, and not left locked.
    assert_eq!(user_version(&path), SCHEMA_VERSION + 1);
    assert!(matches!(
        State::open(&path),
        Err(StateError::NewerSchema { .. })
    ));
}

#[test]
fn ten_thousand_writes_are_fast_and_all_visible() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let state = State::open(&path).unwrap();
    let run = state.begin_run("plan.toml", "fp").unwrap();

    let n = 10_000;
    let started = Instant::now();
    for i in 0..n {
        state.record(Write::Item(item(run, i, ItemStatus::Done)));
    }
    let queued = started.elapsed();
    let snapshot = state.snapshot().unwrap();
    let total = started.elapsed();
    println!("{n} item writes: queued in {queued:?}, committed and read back in {total:?}");

    assert_eq!(snapshot.items.len(), n);
    let last = item(run, n - 1, ItemStatus::Done);
    assert_eq!(
        snapshot.items[&key(&last)],
        ItemState {
            source: last.source.clone(),
            source_ref: last.source_ref.clone(),
            source_digest: last.source_digest.clone(),
            status: ItemStatus::Done,
            attempts: 1,
            last_error: None,
            target_digest: None,
            verified_at: None,
        }
    );
    // Generous: this is about batching working at all (one commit per write would take far
    // longer), not a benchmark; debug builds on a busy CI box are slow.
    assert!(total.as_secs() < 5, "took {total:?}");
}

#[test]
fn upserts_keep_one_row_with_the_latest_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let state = State::open(&path).unwrap();
    let run = state.begin_run("plan.toml", "fp").unwrap();

    let blob = |repo: &str| Write::Blob {
        registry: "ghcr.io".into(),
        digest: "sha256:aa".into(),
        size: 42,
        repo: repo.into(),
    };
    state.record(blob("o/one"));
    state.record(blob("o/two"));

    let upload = |digest: &str, offset| Write::Upload {
        registry: "ghcr.io".into(),
        repo: "o/one".into(),
        digest: digest.into(),
        url: format!("https://ghcr.io/v2/o/one/blobs/uploads/{digest}"),
        offset,
        hash_state: format!("state at {offset}"),
        size: 100,
        source: "docker.io/o/one".into(),
    };
    state.record(upload("sha256:bb", 10));
    state.record(upload("sha256:bb", 20));
    state.record(upload("sha256:cc", 5));
    state.record(Write::UploadFinished {
        registry: "ghcr.io".into(),
        repo: "o/one".into(),
        digest: "sha256:cc".into(),
    });

    let tag = |digest: &str| Write::TagSeen {
        registry: "docker.io".into(),
        repo: "library/nginx".into(),
        tag: "latest".into(),
        digest: digest.into(),
    };
    state.record(tag("sha256:01"));
    state.record(tag("sha256:02"));

    let pending = item(run, 1, ItemStatus::Pending);
    state.record(Write::Item(pending.clone()));
    let snapshot = state.snapshot().unwrap();
    assert_eq!(snapshot.items[&key(&pending)].status, ItemStatus::Pending);

    let done = ItemRecord {
        status: ItemStatus::Done,
        attempts: 2,
        ..pending.clone()
    };
    state.record(Write::Item(done.clone()));
    let snapshot = state.snapshot().unwrap();

    assert_eq!(snapshot.blobs.len(), 1);
    assert_eq!(
        snapshot.blobs[&("ghcr.io".to_string(), "sha256:aa".to_string())],
        BlobState {
            repo: "o/two".into(),
            size: 42
        }
    );
    assert_eq!(snapshot.uploads.len(), 1);
    let up = &snapshot.uploads[&(
        "ghcr.io".to_string(),
        "o/one".to_string(),
        "sha256:bb".to_string(),
    )];
    assert_eq!(up.offset, 20);
    assert_eq!(up.hash_state.as_deref(), Some("state at 20"));
    assert_eq!((up.size, up.source.as_str()), (100, "docker.io/o/one"));
    assert_eq!(snapshot.tags.len(), 1);
    assert_eq!(
        snapshot.tags.values().next().map(String::as_str),
        Some("sha256:02")
    );
    assert_eq!(snapshot.items.len(), 1);
    assert_eq!(snapshot.items[&key(&done)].status, ItemStatus::Done);
    assert_eq!(snapshot.items[&key(&done)].attempts, 2);
}

#[test]
fn run_summary_reports_the_latest_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let state = State::open(&path).unwrap();
    assert_eq!(state.run_summary(None).unwrap(), None);

    let first = state.begin_run("old.toml", "fp0").unwrap();
    state
        .finish_run(first, RunOutcome::Succeeded, &RunTotals::default())
        .unwrap();

    let run = state.begin_run("plan.toml", "fp1").unwrap();
    assert!(run > first);
    let running = state.run_summary(None).unwrap().unwrap();
    assert_eq!(running.status, "running");
    assert_eq!(running.ended_at, None);

    state.record(Write::Item(item(run, 1, ItemStatus::Done)));
    state.record(Write::Item(item(run, 2, ItemStatus::Done)));
    state.record(Write::Item(item(run, 3, ItemStatus::Skipped)));
    state.record(Write::Item(ItemRecord {
        last_error: Some("x".repeat(5000)),
        ..item(run, 4, ItemStatus::Failed)
    }));
    state.record(Write::Item(ItemRecord {
        source_ref: "sha256:ab".into(),
        target_registry: "oci:".into(),
        target_repo: "./out".into(),
        target_ref: "sha256:ab".into(),
        last_error: Some("manifest unknown".into()),
        ..item(run, 5, ItemStatus::Failed)
    }));
    let totals = RunTotals {
        copied: 2,
        present: 0,
        failed: 2,
        skipped: 1,
        interrupted: 3,
        bytes: 2003,
        deleted: 1,
        ..RunTotals::default()
    };
    state.record(Write::Deletion {
        run,
        registry: "reg.example".into(),
        repo: "team/app".into(),
        digest: "sha256:cd".into(),
        tags: "pr-1".into(),
        reason: "delete: matches ^pr-\\d+$".into(),
        version_id: None,
        media_type: None,
        manifest: None,
    });
    state.finish_run(run, RunOutcome::Partial, &totals).unwrap();

    let summary = state.run_summary(None).unwrap().unwrap();
    assert_eq!(summary.id, run);
    assert_eq!(summary.totals.deleted, 1);
    assert_eq!(
        summary.deletions,
        vec![(
            "reg.example/team/app@sha256:cd".to_string(),
            "pr-1".to_string(),
            "delete: matches ^pr-\\d+$".to_string()
        )]
    );
    assert_eq!(summary.plan_path, "plan.toml");
    assert_eq!(summary.plan_fingerprint, "fp1");
    assert_eq!(summary.status, "partial");
    assert!(summary.ended_at.unwrap() >= summary.started_at);
    assert_eq!(summary.totals, totals);
    assert_eq!(
        summary.items_by_status,
        BTreeMap::from([
            ("done".to_string(), 2),
            ("failed".to_string(), 2),
            ("skipped".to_string(), 1),
        ])
    );
    assert_eq!(summary.failures.len(), 2);
    assert_eq!(
        summary.failures[0].0,
        "docker.io/library/nginx:1.4 -> ghcr.io/o/nginx:1.4"
    );
    assert_eq!(summary.failures[0].1.chars().count(), MAX_ERROR_CHARS);
    assert_eq!(
        summary.failures[1],
        (
            "docker.io/library/nginx@sha256:ab -> oci:./out@sha256:ab".to_string(),
            "manifest unknown".to_string()
        )
    );

    let old = state.run_summary(Some(first)).unwrap().unwrap();
    assert_eq!(old.status, "succeeded");
    assert!(old.items_by_status.is_empty());
    assert_eq!(state.run_summary(Some(run + 100)).unwrap(), None);
}

#[test]
fn drop_commits_queued_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let state = State::open(&path).unwrap();
    state.record(Write::Blob {
        registry: "ghcr.io".into(),
        digest: "sha256:aa".into(),
        size: 1,
        repo: "o/x".into(),
    });
    drop(state);

    let state = State::open(&path).unwrap();
    assert_eq!(state.snapshot().unwrap().blobs.len(), 1);
}

#[test]
fn a_failed_write_is_reported_by_flush_and_the_rest_of_the_batch_commits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let state = State::open(&path).unwrap();
    let run = state.begin_run("plan.toml", "fp").unwrap();
    // No such run: the foreign key rejects this one write.
    state.record(Write::Item(item(run + 1, 1, ItemStatus::Done)));
    state.record(Write::Item(item(run, 2, ItemStatus::Done)));
    let err = state.flush().unwrap_err();
    assert!(matches!(err, StateError::Sqlite { .. }), "{err:?}");
    assert!(err.to_string().contains(&path.display().to_string()));
    // Reported once.
    state.flush().unwrap();
    assert_eq!(state.snapshot().unwrap().items.len(), 1);
}

#[test]
fn finish_run_of_an_unknown_run_fails() {
    let dir = tempfile::tempdir().unwrap();
    let state = State::open(&dir.path().join("state.db")).unwrap();
    assert!(state
        .finish_run(7, RunOutcome::Failed, &RunTotals::default())
        .is_err());
}

#[tokio::test]
async fn flush_async_commits_without_blocking_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let state = State::open(&path).unwrap();
    state.record(Write::TagSeen {
        registry: "ghcr.io".into(),
        repo: "o/x".into(),
        tag: "v1".into(),
        digest: "sha256:00".into(),
    });
    state.flush_async().await.unwrap();
    // Read through a second connection: the write is committed, not just queued.
    let conn = Connection::open(&path).unwrap();
    let n: i64 = conn
        .query_row("SELECT COUNT(*) FROM tags", [], |row| row.get(0))
        .unwrap();
    assert_eq!(n, 1);
}

#[test]
fn writes_commit_on_their_own_after_the_batch_delay() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let state = State::open(&path).unwrap();
    state.record(Write::TagSeen {
        registry: "ghcr.io".into(),
        repo: "o/x".into(),
        tag: "v1".into(),
        digest: "sha256:00".into(),
    });
    let conn = Connection::open(&path).unwrap();
    let count = || -> i64 {
        conn.query_row("SELECT COUNT(*) FROM tags", [], |row| row.get(0))
            .unwrap()
    };
    let deadline = Instant::now() + BATCH_DELAY * 10;
    while count() == 0 {
        assert!(Instant::now() < deadline, "never committed");
        std::thread::sleep(BATCH_DELAY / 4);
    }
}

#[test]
fn a_run_that_died_without_a_clean_exit_reads_as_killed_on_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let state = State::open(&path).unwrap();
        state.begin_run("plan.toml", "fp").unwrap();
        state.flush().unwrap();
        // Dropped without finish_run: as after SIGKILL.
    }
    let state = State::open(&path).unwrap();
    assert_eq!(state.run_summary(None).unwrap().unwrap().status, "killed");
}
