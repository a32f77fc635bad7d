//! The checkpoint at organisation scale (issue 24, "SQLite at scale", and "`ferry status` of a
//! run with 100,000 items answers from SQLite in under a second"): a checkpoint of 100,000
//! items filled through the state API, as a run records them (no registry needed), and
//! `ferry status` timed on it; `retain_runs` keeping a run's checkpoint to its newest runs,
//! against real registries.

use std::path::Path;
use std::time::{Duration, Instant};

use ferry::state::{ItemRecord, ItemStatus, RunOutcome, RunTotals, State, Write};

use crate::common::*;
use crate::harness::*;

/// 100 repositories of 1,000 tags, as the organisation mirror; one item in a hundred
/// failed.
const REPOS: usize = 100;
const TAGS: usize = 1000;

fn record(run: i64, repo: usize, tag: usize, status: ItemStatus) -> ItemRecord {
    let digest = format!("sha256:{:064x}", repo * TAGS + tag);
    let done = status == ItemStatus::Done;
    ItemRecord {
        run,
        source: format!("docker.io/org/app-{repo}"),
        source_ref: format!("1.{tag}.0"),
        source_digest: Some(digest.clone()),
        target_registry: "registry.example.com".into(),
        target_repo: format!("mirror/org/app-{repo}"),
        target_ref: format!("1.{tag}.0"),
        status,
        attempts: 1,
        last_error: (!done).then(|| "GET manifest: 500 Internal Server Error".into()),
        bytes: 2_000_000,
        target_digest: done.then_some(digest),
        verified_at: done.then_some(1_700_000_000),
    }
}

/// Records 100,000 items in one run as a run does (started, then finished), and ends it.
fn fill(path: &Path) -> Duration {
    let started = Instant::now();
    let state = State::open(path).unwrap();
    let run = state.begin_run("plan.toml", "fp").unwrap();
    for repo in 0..REPOS {
        for tag in 0..TAGS {
            let status = match tag % 100 {
                0 => ItemStatus::Failed,
                _ => ItemStatus::Done,
            };
            state.record(Write::Item(record(run, repo, tag, ItemStatus::Pending)));
            state.record(Write::Item(record(run, repo, tag, status)));
        }
    }
    let totals = RunTotals {
        copied: (REPOS * TAGS * 99 / 100) as u64,
        failed: (REPOS * TAGS / 100) as u64,
        ..RunTotals::default()
    };
    state.finish_run(run, RunOutcome::Partial, &totals).unwrap();
    drop(state);
    started.elapsed()
}

#[tokio::test]
async fn status_of_a_run_with_100000_items_answers_from_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ferry.db");
    let filled = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || fill(&path))
            .await
            .unwrap()
    };
    let size = std::fs::metadata(&path).unwrap().len();
    let items = (REPOS * TAGS) as u64;
    println!(
        "{items} items recorded (200,000 writes) in {filled:?}; file {size} bytes, {} bytes per item",
        size / items
    );
    let state = path.to_str().unwrap();

    let started = Instant::now();
    let run = ferry(&["status", "--state", state], &[]).await;
    let text = started.elapsed();
    run.assert_code(0);
    assert!(
        run.stdout
            .contains("recorded items: 99000 done, 1000 failed"),
        "{}",
        run.stdout
    );
    assert_eq!(run.stdout.matches("  failed: ").count(), 1000);

    let started = Instant::now();
    let run = ferry(&["status", "--state", state, "--output", "json"], &[]).await;
    let json = started.elapsed();
    run.assert_code(0);
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(doc["items_by_status"]["done"], 99_000);
    assert_eq!(doc["failures"].as_array().unwrap().len(), 1000);
    println!("ferry status of {items} items: {text:?} (text), {json:?} (json)");
    // Under a second in a release build (the figure above, measured by hand); the suite runs
    // a debug build on a loaded two-core machine, so the bound here is generous.
    assert!(text < Duration::from_secs(5), "{text:?}");
    assert!(json < Duration::from_secs(5), "{json:?}");
}

/// `retain_runs = 2`: each run begins by deleting the runs older than the newest two; status
/// and restore say a run that is gone is not there, and every image's record stays (the
/// fourth run trusts the checkpoint as the second did; the fifth says which image is new).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_keeps_the_newest_runs_of_its_checkpoint() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let fx = populate(&src, "team").await;
    let dir = tempfile::tempdir().unwrap();
    let text = plan_text(
        &[&src, &dst],
        &[copy_section(
            &format!("{}/team/*", src.addr),
            &format!("{}/mirror/*", dst.addr),
            "",
        )],
    )
    .replacen("version = 1\n", "version = 1\nretain_runs = 2\n", 1);
    let p = plan(dir.path(), &text);
    let p = p.to_str().unwrap();
    let n = fx.tagged.len();
    for run in 1..=4 {
        let done = ferry(&["run", p], &[]).await;
        done.assert_code(0);
        if run > 1 {
            assert!(
                done.summary().starts_with(&format!(
                    "ferry: 0 images copied, 0 already present, {n} unchanged"
                )),
                "run {run}: {}",
                done.summary()
            );
        }
    }
    // An image the checkpoint has no record of is counted as new, from the journal's counter.
    let (repo, _, img) = &fx.tagged[0];
    src.pusher().push(repo, "v9.9.9", img).await;
    let fifth = ferry(&["run", p], &[]).await;
    fifth.assert_code(0);
    let all = format!("{}{}", fifth.stdout, fifth.stderr);
    assert!(
        all.contains("note: 1 image not in the checkpoint before"),
        "{all}"
    );
    // Run 5 began by deleting run 2; run 3 stays until run 6. (runs 2 and 3 were the newest two); run 2 went at no run's
    // start yet, so it stays until run 5.
    for gone in ["1", "2"] {
        let status = ferry(&["status", p, "--run", gone], &[]).await;
        assert_ne!(status.code, 0);
        assert!(
            status.stderr.contains(&format!("has no run {gone}")),
            "{}",
            status.stderr
        );
    }
    for kept in ["3", "4", "5"] {
        ferry(&["status", p, "--run", kept], &[])
            .await
            .assert_code(0);
    }
    let restore = ferry(&["restore", p, "--run", "1"], &[]).await;
    restore.assert_code(0);
    assert!(
        restore
            .stderr
            .contains("has no run 1 (it keeps the newest runs, retain_runs in the plan)"),
        "{}",
        restore.stderr
    );
}
