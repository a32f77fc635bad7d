//! A run's counts by their names (schema version 7) and the last success a failed run's
//! metrics carry over (issue 21, "What was seen" 6).

use rusqlite::Connection;

use super::*;

/// Version 7 moves pruning's deletions out of `runs.deleted` into `pruned`, as the
/// deletions table tells them apart, and counts `unchanged` apart (0 for older rows).
#[test]
fn a_version_6_file_splits_its_deletions_into_retention_and_pruning() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let conn = Connection::open(&path).unwrap();
        for sql in &migrations::MIGRATIONS[..6] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 6).unwrap();
        conn.execute_batch(
            "INSERT INTO runs (id, plan_path, plan_fingerprint, started_at, ended_at, status,
                               present, deleted)
             VALUES (1, 'p.toml', 'fp', 1, 2, 'succeeded', 4, 3),
                    (2, 'p.toml', 'fp', 3, NULL, 'killed', 0, 0);
             INSERT INTO deletions (run, registry, repo, digest, tags, reason, deleted_at)
             VALUES (1, 'r', 'a', 'sha256:1', 'v1', 'delete: 50 days old', 2),
                    (1, 'r', 'a', 'sha256:2', 'v2', 'prune: gone at the source', 2),
                    (1, 'r', 'a', 'sha256:3', '', 'prune: gone at the source', 2),
                    (2, 'r', 'a', 'sha256:4', 'v4', 'prune: gone at the source', 3);",
        )
        .unwrap();
    }
    let state = State::open(&path).unwrap();
    let totals = |run| state.run_summary(Some(run)).unwrap().unwrap().totals;
    let one = totals(1);
    assert_eq!(
        (one.present, one.unchanged, one.deleted, one.pruned),
        (4, 0, 1, 2)
    );
    // A run killed before it saved its totals: what it pruned is still known.
    let two = totals(2);
    assert_eq!((two.deleted, two.pruned), (0, 1));
}

#[test]
fn every_count_is_saved_and_the_last_success_outlives_a_failed_run() {
    let dir = tempfile::tempdir().unwrap();
    let state = State::open(&dir.path().join("state.db")).unwrap();
    assert_eq!(state.last_success().unwrap(), None, "no run yet");
    let first = state.begin_run("p.toml", "fp").unwrap();
    let totals = RunTotals {
        copied: 1,
        present: 2,
        unchanged: 3,
        failed: 0,
        skipped: 4,
        interrupted: 0,
        bytes: 5,
        deleted: 6,
        pruned: 7,
    };
    state
        .finish_run(first, RunOutcome::Succeeded, &totals)
        .unwrap();
    let ended = state.run_summary(Some(first)).unwrap().unwrap();
    assert_eq!(ended.totals, totals);
    assert_eq!(state.last_success().unwrap(), ended.ended_at);

    for outcome in [RunOutcome::Partial, RunOutcome::Interrupted] {
        let later = state.begin_run("p.toml", "fp").unwrap();
        let failed = RunTotals {
            failed: 2,
            ..RunTotals::default()
        };
        state.finish_run(later, outcome, &failed).unwrap();
        assert_eq!(
            state.last_success().unwrap(),
            ended.ended_at,
            "after a run {outcome}"
        );
    }
}
