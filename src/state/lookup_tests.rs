//! The checkpoint at scale (issue 24, "SQLite at scale"): a run asks a [`Reader`] record by
//! record instead of loading every record, and old runs are pruned so a nightly job's file
//! stays bounded.

use std::time::Instant;

use super::*;

fn item(run: RunId, repo: &str, n: usize, status: ItemStatus) -> ItemRecord {
    ItemRecord {
        run,
        source: format!("docker.io/library/{repo}"),
        source_ref: format!("1.{n}"),
        source_digest: Some(format!("sha256:{n:064x}")),
        target_registry: "ghcr.io".into(),
        target_repo: format!("o/{repo}"),
        target_ref: format!("1.{n}"),
        status,
        attempts: 1,
        last_error: (status == ItemStatus::Failed).then(|| format!("error {n}")),
        bytes: 1000,
        target_digest: Some(format!("sha256:{n:064x}")),
        verified_at: Some(1_700_000_000),
    }
}

fn upload(repo: &str, digest: &str, hash_state: &str) -> Write {
    Write::Upload {
        registry: "ghcr.io".into(),
        repo: repo.into(),
        digest: digest.into(),
        url: "https://ghcr.io/v2/o/x/blobs/uploads/1".into(),
        offset: 10,
        hash_state: hash_state.into(),
        size: 100,
        source: "docker.io/library/x".into(),
    }
}

fn deletion(run: RunId, n: usize) -> Write {
    Write::Deletion {
        run,
        registry: "ghcr.io".into(),
        repo: "o/app".into(),
        digest: format!("sha256:{n:064x}"),
        tags: format!("pr-{n}"),
        reason: "delete: older than 30d".into(),
        version_id: None,
        media_type: Some("application/vnd.oci.image.manifest.v1+json".into()),
        // A typical image manifest: a config and a few layers.
        manifest: Some(vec![b'{'; 1500]),
    }
}

/// What a run reads is the checkpoint as it found it: what the run itself writes meanwhile
/// (the record of an item it finished, a blob, a forgotten tag) is not seen, as it was not
/// in the snapshot the run used to load. `ferry plan` decides from the same answers.
#[test]
fn a_reader_answers_as_the_checkpoint_was_when_it_opened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let state = State::open(&path).unwrap();
    let run = state.begin_run("plan.toml", "fp").unwrap();
    state.record(Write::Item(item(run, "nginx", 1, ItemStatus::Done)));
    state.record(Write::Blob {
        registry: "ghcr.io".into(),
        digest: "sha256:b1".into(),
        size: 5,
        repo: "o/nginx".into(),
    });
    state.record(upload("o/up", "sha256:u1", "hash"));
    state.record(upload("o/up", "sha256:u2", ""));
    state.record(Write::Refusal {
        registry: "ghcr.io".into(),
        repo: "o/nginx".into(),
        digest: "sha256:r1".into(),
        version_id: Some("7".into()),
        reason: "too many downloads".into(),
    });
    let reader = state.reader().unwrap();

    // The run goes on writing.
    let run2 = state.begin_run("plan.toml", "fp").unwrap();
    state.record(Write::Item(item(run2, "nginx", 1, ItemStatus::Failed)));
    state.record(Write::Item(item(run2, "nginx", 2, ItemStatus::Done)));
    state.record(Write::Blob {
        registry: "ghcr.io".into(),
        digest: "sha256:b2".into(),
        size: 5,
        repo: "o/fresh".into(),
    });
    state.flush().unwrap();

    let one = reader.item("ghcr.io", "o/nginx", "1.1").unwrap().unwrap();
    assert_eq!(one.status, ItemStatus::Done);
    assert_eq!(
        one.target_digest.as_deref(),
        Some(&*format!("sha256:{:064x}", 1))
    );
    assert_eq!(reader.item("ghcr.io", "o/nginx", "1.2").unwrap(), None);
    assert!(reader.has_items().unwrap());
    assert_eq!(
        reader.blob_repo("ghcr.io", "sha256:b1").unwrap().as_deref(),
        Some("o/nginx")
    );
    assert_eq!(reader.blob_repo("ghcr.io", "sha256:b2").unwrap(), None);
    assert!(reader.knows_target("ghcr.io", "o/nginx").unwrap());
    assert!(reader.knows_target("ghcr.io", "o/up").unwrap());
    assert!(!reader.knows_target("ghcr.io", "o/fresh").unwrap());
    assert!(!reader.knows_target("ghcr.io", "o/ngin").unwrap());
    let up = reader
        .upload("ghcr.io", "o/up", "sha256:u1")
        .unwrap()
        .unwrap();
    assert_eq!((up.offset, up.hash_state.as_deref()), (10, Some("hash")));
    let parked = reader.parked_uploads().unwrap();
    assert_eq!(parked.len(), 2, "{parked:?}");
    let refusals = reader.refusals("ghcr.io", "o/nginx").unwrap();
    assert_eq!(refusals.len(), 1);
    assert_eq!(refusals[0].0, "sha256:r1");
    assert!(reader.refusals("ghcr.io", "o/other").unwrap().is_empty());
    let mut copied = Vec::new();
    reader
        .each_copied(|_, repo, reference, _, _| copied.push((repo, reference)))
        .unwrap();
    assert_eq!(copied, [("o/nginx".to_string(), "1.1".to_string())]);

    // A reader opened now sees the run's writes.
    let now = state.reader().unwrap();
    let one = now.item("ghcr.io", "o/nginx", "1.1").unwrap().unwrap();
    assert_eq!(one.status, ItemStatus::Failed);
    assert!(now.knows_target("ghcr.io", "o/fresh").unwrap());
    drop((reader, now));
    // With every reader closed, the WAL folds back into the file when the state closes.
    drop(state);
    assert!(!dir.path().join("state.db-wal").exists());
}

/// A checkpoint without WAL (a filesystem that cannot share memory): the reader reads a
/// private copy, so the run's writer is never held off by the reader's view, and the copy
/// goes with the reader.
#[test]
fn without_wal_a_reader_reads_a_private_copy_and_never_holds_the_writer_off() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let state = State::open(&path).unwrap();
    let run = state.begin_run("plan.toml", "fp").unwrap();
    state.record(Write::Item(item(run, "app", 1, ItemStatus::Done)));
    drop(state);
    let writer = Connection::open(&path).unwrap();
    writer
        .pragma_update(None, "journal_mode", "DELETE")
        .unwrap();

    let reader = State::read_only(&path).unwrap();
    let copies = |pid: u32| {
        std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy()
                    .starts_with(&format!("ferry-checkpoint-{pid}-"))
            })
            .count()
    };
    assert!(copies(std::process::id()) >= 1);
    // With a shared lock held by the reader this would wait, then fail as busy.
    writer
        .execute("UPDATE items SET status = 'failed'", [])
        .unwrap();
    let one = reader.item("ghcr.io", "o/app", "1.1").unwrap().unwrap();
    assert_eq!(one.status, ItemStatus::Done);
    drop(reader);
    assert_eq!(
        copies(std::process::id()),
        0,
        "the copy goes with its reader"
    );
    let fresh = State::read_only(&path).unwrap();
    let one = fresh.item("ghcr.io", "o/app", "1.1").unwrap().unwrap();
    assert_eq!(one.status, ItemStatus::Failed);
}

/// `ferry plan` and `ferry verify` read without writing: no file where there is none.
#[test]
fn a_read_only_reader_of_no_file_finds_nothing_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("none.db");
    let reader = State::read_only(&path).unwrap();
    assert_eq!(reader.item("r", "a", "v1").unwrap(), None);
    assert!(!reader.has_items().unwrap());
    assert!(!reader.knows_target("r", "a").unwrap());
    assert!(!path.exists());
}

/// `retain_runs`: the rows of runs older than the newest N go (their deletions, and the run
/// unless an item's latest record names it); every item's latest record stays.
#[test]
fn pruning_keeps_the_newest_runs_and_every_items_latest_record() {
    let dir = tempfile::tempdir().unwrap();
    let state = State::open(&dir.path().join("state.db")).unwrap();
    let mut runs = Vec::new();
    for r in 0..5 {
        let run = state.begin_run("plan.toml", "fp").unwrap();
        // Item 0 is recorded by every run, item 1 by the first only.
        state.record(Write::Item(item(run, "app", 0, ItemStatus::Done)));
        if r == 0 {
            state.record(Write::Item(item(run, "app", 1, ItemStatus::Done)));
        }
        state.record(deletion(run, r));
        state
            .finish_run(run, RunOutcome::Succeeded, &RunTotals::default())
            .unwrap();
        runs.push(run);
    }
    let pruned = state.prune_runs(2).unwrap();
    // Runs 2 and 3 go; run 1 stays, as item 1's record names it.
    assert_eq!((pruned.runs, pruned.deletions), (2, 3));
    assert!(state.run_summary(Some(runs[0])).unwrap().is_some());
    assert!(state.run_summary(Some(runs[1])).unwrap().is_none());
    assert!(state.run_summary(Some(runs[2])).unwrap().is_none());
    assert!(state.deletions(Some(runs[0])).unwrap().is_none());
    assert_eq!(state.deletions(Some(runs[3])).unwrap().unwrap().1.len(), 1);
    assert_eq!(state.deletions(None).unwrap().unwrap().0, runs[4]);
    let reader = state.reader().unwrap();
    assert!(reader.item("ghcr.io", "o/app", "1.0").unwrap().is_some());
    assert!(reader.item("ghcr.io", "o/app", "1.1").unwrap().is_some());
    drop(reader);
    // Nothing more to prune.
    assert_eq!(state.prune_runs(2).unwrap(), Pruned::default());
}

/// One night of a small nightly job: 200 images seen again, 5 deleted by retention (each
/// kept with its manifest for `ferry restore`), and the clean-up.
fn night(state: &State, retain_runs: u32, night: usize) {
    let run = state.begin_run("plan.toml", "fp").unwrap();
    for n in 0..200 {
        state.record(Write::Item(item(run, "app", n, ItemStatus::Done)));
    }
    for d in 0..5 {
        state.record(deletion(run, night * 5 + d));
    }
    state
        .finish_run(run, RunOutcome::Succeeded, &RunTotals::default())
        .unwrap();
    state.prune_runs(retain_runs).unwrap();
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

/// Issue 24, done-when: "a 1,000-run-old checkpoint of a nightly job stays bounded after the
/// cleanup". The file after 1,000 nights is no bigger than after 100 (plus a page's slack per
/// table), and a checkpoint that grew without clean-up shrinks to that size once cleaned.
#[test]
fn a_thousand_nightly_runs_leave_a_bounded_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nightly.db");
    let started = Instant::now();
    let state = State::open(&path).unwrap();
    let mut at_100 = 0;
    for n in 0..1000 {
        night(&state, 30, n);
        if n == 99 {
            state.flush().unwrap();
            at_100 = file_size(&path);
        }
    }
    drop(state);
    let at_1000 = file_size(&path);
    println!(
        "1,000 nights with retain_runs = 30: {at_100} bytes after 100, {at_1000} after 1,000, in {:?}",
        started.elapsed()
    );
    assert!(at_1000 <= at_100 + 16 * 4096, "{at_100} -> {at_1000}");

    // A checkpoint that kept every run (as before retain_runs) is cleaned up in one go.
    let path = dir.path().join("old.db");
    let state = State::open(&path).unwrap();
    for n in 0..1000 {
        night(&state, u32::MAX, n);
    }
    drop(state);
    let grown = file_size(&path);
    let state = State::open(&path).unwrap();
    let pruned = state.prune_runs(30).unwrap();
    drop(state);
    let cleaned = file_size(&path);
    println!("1,000 nights kept whole: {grown} bytes; after the clean-up: {cleaned} ({pruned:?})");
    assert!(pruned.vacuumed);
    assert_eq!((pruned.runs, pruned.deletions), (970, 970 * 5));
    assert!(cleaned <= at_1000 + 16 * 4096, "{cleaned} vs {at_1000}");
}

/// Starts counting the peak resident memory afresh (Linux: 5 to clear_refs resets VmHWM).
fn reset_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
}

/// Peak resident memory of this process so far, from /proc (KiB).
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The figures for issue 24 (run alone: `cargo test --lib measure_a_run -- --ignored
/// --nocapture`): a run of 100,000 items against a checkpoint that has them all, as the
/// journal drives it (a lookup, a pending record, a lookup, the finished record, the source
/// tag), the time each part takes, the file and WAL sizes and the peak RSS; then what loading
/// the old whole snapshot cost.
#[test]
#[ignore = "a measurement, not a check: run it alone"]
fn measure_a_run_of_100000_items() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let n = 100_000;
    let at = |i: usize| (format!("app-{}", i / 1000), i % 1000);
    reset_peak_rss();
    let before = peak_rss_kib();
    let state = State::open(&path).unwrap();
    let run = state.begin_run("plan.toml", "fp").unwrap();
    let started = Instant::now();
    for i in 0..n {
        let (repo, tag) = at(i);
        state.record(Write::Item(item(run, &repo, tag, ItemStatus::Done)));
    }
    state.flush().unwrap();
    let cold = started.elapsed();
    drop(state);
    let size = file_size(&path);
    println!("cold: {n} item records written in {cold:?}; file {size} B ({} B/item); peak RSS {} KiB (from {before})", size / n as u64, peak_rss_kib());

    reset_peak_rss();
    let before = peak_rss_kib();
    let state = State::open(&path).unwrap();
    let run = state.begin_run("plan.toml", "fp").unwrap();
    let reader = state.reader().unwrap();
    let started = Instant::now();
    for i in 0..n {
        let (repo, tag) = at(i);
        let (r, reference) = (format!("o/{repo}"), format!("1.{tag}"));
        assert!(reader.item("ghcr.io", &r, &reference).unwrap().is_some());
    }
    println!("{n} lookups alone: {:?}", started.elapsed());
    let started = Instant::now();
    for i in 0..n {
        let (repo, tag) = at(i);
        let (r, reference) = (format!("o/{repo}"), format!("1.{tag}"));
        assert!(reader.item("ghcr.io", &r, &reference).unwrap().is_some());
        state.record(Write::Item(item(run, &repo, tag, ItemStatus::Pending)));
        reader.item("ghcr.io", &r, &reference).unwrap();
        state.record(Write::Item(item(run, &repo, tag, ItemStatus::Done)));
        state.record(Write::TagSeen {
            registry: "docker.io".into(),
            repo: format!("library/{repo}"),
            tag: reference,
            digest: format!("sha256:{i:064x}"),
        });
    }
    let queued = started.elapsed();
    state.flush().unwrap();
    let run_time = started.elapsed();
    let mut wal = path.clone().into_os_string();
    wal.push("-wal");
    let wal = file_size(Path::new(&wal));
    println!(
        "no-op: {n} items (2 lookups, 3 writes each) in {run_time:?} (queued in {queued:?}); WAL {wal} B while the run's reader is open; peak RSS {} KiB (from {before})",
        peak_rss_kib()
    );
    drop(reader);
    let started = Instant::now();
    let summary = state.run_summary(Some(run)).unwrap().unwrap();
    println!(
        "run_summary: {:?} ({:?})",
        started.elapsed(),
        summary.items_by_status
    );
    reset_peak_rss();
    let before = peak_rss_kib();
    let started = Instant::now();
    let snapshot = state.snapshot().unwrap();
    println!(
        "the old whole snapshot: {} items loaded in {:?}; peak RSS {} KiB (from {before})",
        snapshot.items.len(),
        started.elapsed(),
        peak_rss_kib()
    );
    // To time `ferry status` on it by hand: FERRY_KEEP_CHECKPOINT=PATH.
    if let Some(keep) = std::env::var_os("FERRY_KEEP_CHECKPOINT") {
        drop(state);
        std::fs::copy(&path, keep).unwrap();
    }
}
