//! Crash safety of the checkpoint: SIGKILL at random moments, again and again, and a disk that
//! fills up mid-run. After each, the state opens, `PRAGMA integrity_check` says ok, and what
//! was committed is still there.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::harness::*;

/// xorshift64*: a few lines of deterministic randomness, so a failing seed can be replayed
/// (`FERRY_KILL_SEED=…`).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

/// `PRAGMA integrity_check` on the state file, as a fresh opener sees it (recovering the WAL a
/// killed run left).
fn integrity(path: &Path) -> String {
    let conn = rusqlite::Connection::open(path).expect("open the state file");
    conn.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))
        .expect("integrity_check runs")
}

/// Runs in the state, by status: what `ferry status` needs.
fn runs(path: &Path) -> Vec<(i64, String)> {
    let conn = rusqlite::Connection::open(path).expect("open the state file");
    let mut stmt = conn
        .prepare("SELECT id, status FROM runs ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn done(path: &Path) -> i64 {
    let conn = rusqlite::Connection::open(path).expect("open the state file");
    conn.query_row(
        "SELECT count(*) FROM items WHERE status = 'done'",
        [],
        |r| r.get(0),
    )
    .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_never_corrupts_the_state() {
    let seed = std::env::var("FERRY_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_f3e7_u64);
    println!("FERRY_KILL_SEED={seed}");
    let mut rng = Rng(seed | 1);
    let started = Instant::now();

    let (src, dst) = (Registry::start().await, Registry::start().await);
    // A slow link to the target: uploads are in flight (and recorded) at every kill.
    let target = Proxy::wan(
        &dst.url,
        Shaping {
            round_trip: Duration::from_millis(10),
            bytes_per_second: 96 * 1024,
        },
    )
    .await;
    let mut images = Vec::new();
    for r in 0..40u64 {
        let img = image(
            &[layer(900 + r, 48 * 1024), layer(1000 + r, 24 * 1024)],
            "linux",
            "amd64",
            Format::Oci,
            &format!("crash-{r}"),
        );
        let repo = format!("crash/r{r:02}");
        src.pusher().push(&repo, "v1.0.0", &img).await;
        images.push((repo, img));
    }
    let dir = tempfile::tempdir().unwrap();
    let p = copy_plan(
        dir.path(),
        &[&src.addr, &target.addr],
        "",
        &format!("{}/crash/*", src.addr),
        &format!("{}/crash/*", target.addr),
    );
    let p = p.to_str().unwrap();
    let state = dir.path().join("ferry.db");
    let home = tempfile::tempdir().unwrap();

    let mut kills = 0;
    for i in 0..10 {
        let delay = Duration::from_millis(rng.between(30, 900));
        let mut child = ferry_command(&["run", "--progress", "none", p], &[], home.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ferry");
        tokio::select! {
            status = child.wait() => {
                assert!(status.unwrap().success(), "run {i} failed on its own");
            }
            _ = tokio::time::sleep(delay) => {
                child.start_kill().unwrap(); // SIGKILL
                child.wait().await.unwrap();
                kills += 1;
            }
        }
        if !state.exists() {
            continue; // killed before it opened the state: nothing to check yet
        }
        let status = ferry(&["status", p], &[]).await;
        assert!(
            status.code == 0 || status.stderr.contains("records no run yet"),
            "after kill {i} ({delay:?}), status reads the state:\n{}",
            status.stderr
        );
        assert_eq!(integrity(&state), "ok", "after kill {i} ({delay:?})");
        println!("kill {i} after {delay:?}: {} images done", done(&state));
    }
    assert!(kills >= 8, "the kills landed mid-run ({kills} of 10)");

    let run = ferry(&["run", "--progress", "none", p], &[]).await;
    run.assert_code(0);
    assert_eq!(integrity(&state), "ok");
    let recorded = runs(&state);
    assert_eq!(recorded.last().unwrap().1, "succeeded", "{recorded:?}");
    // Killed runs never finished: the next open of the state marks them "killed" (a kill
    // that landed before its run was recorded leaves no row).
    assert!(
        recorded[..recorded.len() - 1]
            .iter()
            .all(|(_, s)| s == "killed"),
        "{recorded:?}"
    );
    for (repo, img) in &images {
        assert_copied(&dst, repo, "v1.0.0", img).await;
    }
    let status = ferry(&["status", p], &[]).await;
    status.assert_code(0);
    println!(
        "{kills} kills, {} runs, {:.1} s",
        recorded.len(),
        started.elapsed().as_secs_f64()
    );
}

/// A disk that fills up mid-run, emulated without privileges: the ferry child runs with
/// `RLIMIT_FSIZE` at 48 KiB (and SIGXFSZ ignored), so SQLite's writes past that offset fail
/// as they would on a full disk, while the state's earlier contents stay readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_a_clear_error_and_the_state_survives() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let push = |range: std::ops::Range<u64>| {
        let pusher = src.pusher();
        async move {
            let mut images = Vec::new();
            for r in range {
                let img = image(
                    &[layer(1100 + r, 2048)],
                    "linux",
                    "amd64",
                    Format::Oci,
                    &format!("full-{r}"),
                );
                let repo = format!("full/r{r:02}");
                pusher.push(&repo, "v1.0.0", &img).await;
                images.push((repo, img));
            }
            images
        }
    };
    let mut images = push(0..8).await;
    let dir = tempfile::tempdir().unwrap();
    let p = copy_plan(
        dir.path(),
        &[&src.addr, &dst.addr],
        "",
        &format!("{}/full/*", src.addr),
        &format!("{}/full/*", dst.addr),
    );
    let p = p.to_str().unwrap();
    let state = dir.path().join("ferry.db");
    ferry(&["run", p], &[]).await.assert_code(0);
    assert_eq!(done(&state), 8);

    // More to copy, on a "full disk".
    images.extend(push(8..48).await);
    let home = tempfile::tempdir().unwrap();
    let mut cmd = ferry_command(&["run", "--progress", "none", p], &[], home.path());
    // SAFETY: between fork and exec only async-signal-safe calls (setrlimit, signal).
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 48 * 1024,
                rlim_max: 48 * 1024,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Without this the first write past the limit kills the process (SIGXFSZ).
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    let out = cmd.output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let expected = format!(
        "cannot write state file {} (is the disk full",
        state.display()
    );
    assert!(
        stderr.contains(&format!("error: saving the checkpoint failed: {expected}")),
        "{stderr}"
    );
    // Said when it happened, too, not only at the end.
    assert!(
        stderr.contains("the copy goes on without a checkpoint"),
        "{stderr}"
    );

    // The state opens, is intact, and holds what was committed before the disk filled up.
    assert_eq!(integrity(&state), "ok");
    assert!(done(&state) >= 8, "{}", done(&state));
    assert_eq!(runs(&state)[0], (1, "succeeded".to_string()));
    let status = ferry(&["status", "--run", "1", p], &[]).await;
    status.assert_code(0);
    assert!(status.stdout.contains("succeeded"), "{}", status.stdout);

    // With room again, the next run finishes and records everything.
    ferry(&["run", p], &[]).await.assert_code(0);
    assert_eq!(integrity(&state), "ok");
    assert_eq!(done(&state), 48);
    for (repo, img) in &images {
        assert_copied(&dst, repo, "v1.0.0", img).await;
    }
}
