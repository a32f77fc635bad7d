//! Large layers that survive interruption, against a real registry: SIGTERM parks an upload
//! at a chunk boundary and the next run reads only the rest from the source (a range
//! request) and sends only the rest; a session the registry no longer holds is rebuilt from
//! the spool; a corrupted spool, a spool of another blob and a source that ignores ranges all
//! still end in a byte-exact copy.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::harness::*;

const MB: u64 = 1024 * 1024;

/// A source behind a proxy (`source_hook`), a target behind one (`target_hook`), one image
/// with one layer of `size` bytes, and the plan copying it.
struct Setup {
    _src: Registry,
    dst: Registry,
    source: Proxy,
    target: Proxy,
    img: Image,
    plan: String,
    dir: tempfile::TempDir,
}

impl Setup {
    async fn new(seed: u64, size: u64, source_hook: Hook, target_hook: Hook) -> Setup {
        Setup::build(seed, size, |_| source_hook, target_hook).await
    }

    /// The source hook is made knowing the source registry (for one that redirects).
    async fn build(
        seed: u64,
        size: u64,
        source_hook: impl FnOnce(&Registry) -> Hook,
        target_hook: Hook,
    ) -> Setup {
        let (src, dst) = (Registry::start().await, Registry::start().await);
        let img = image(
            &[layer(seed, size as usize)],
            "linux",
            "amd64",
            Format::Oci,
            "large",
        );
        src.pusher().push("big/model", "v1", &img).await;
        let source = Proxy::start(&src.url, source_hook(&src)).await;
        let target = Proxy::start(&dst.url, target_hook).await;
        let dir = tempfile::tempdir().unwrap();
        let plan = copy_plan(
            dir.path(),
            &[&source.addr, &target.addr],
            "",
            &format!("{}/big/model", source.addr),
            &format!("{}/big/model", target.addr),
        )
        .to_str()
        .unwrap()
        .to_string();
        Setup {
            _src: src,
            dst,
            source,
            target,
            img,
            plan,
            dir,
        }
    }

    fn spool_dir(&self) -> PathBuf {
        self.dir.path().join("ferry.db.spool")
    }

    fn spool_file(&self) -> PathBuf {
        let digest = &self.img.layers()[0].digest;
        self.spool_dir().join(digest.replacen(':', "-", 1))
    }

    fn size(&self) -> u64 {
        self.img.layers()[0].bytes.len() as u64
    }

    /// Run ferry until the target has received `at` upload bytes, then send `signal`;
    /// returns the exit code and how long the exit took after the signal.
    async fn interrupt(&self, at: u64, signal: &str) -> (Option<i32>, Duration) {
        let home = tempfile::tempdir().unwrap();
        let mut child = ferry_command(&["run", "--progress", "none", &self.plan], &[], home.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        while self.target.bytes_in() < at {
            assert!(
                child.try_wait().unwrap().is_none(),
                "ferry ended before {at} bytes"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if signal == "-KILL" {
            // The checkpoint batches its writes for up to 200 ms: let the last chunk's land.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let pid = child.id().unwrap().to_string();
        let sent = Instant::now();
        std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap();
        let status = child.wait().await.unwrap();
        (status.code(), sent.elapsed())
    }

    /// Run ferry to the end with a report; returns it and the bytes this run read from the
    /// source and sent to the target.
    async fn finish(&self) -> (serde_json::Value, u64, u64) {
        let (read, sent) = (self.source.bytes_out(), self.target.bytes_in());
        let report = self.dir.path().join("report.json");
        let run = ferry(
            &[
                "run",
                "--progress",
                "plain",
                "--report",
                report.to_str().unwrap(),
                &self.plan,
            ],
            &[],
        )
        .await;
        run.assert_code(0);
        assert_copied(&self.dst, "big/model", "v1", &self.img).await;
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        (
            report,
            self.source.bytes_out() - read,
            self.target.bytes_in() - sent,
        )
    }

    /// The parked upload `ferry status --output json` lists.
    async fn parked(&self) -> serde_json::Value {
        let status = ferry(&["status", &self.plan, "--output", "json"], &[]).await;
        status.assert_code(0);
        let v: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
        let parked = v["parked"].as_array().cloned().unwrap_or_default();
        assert_eq!(parked.len(), 1, "{v}");
        parked[0].clone()
    }
}

fn forward() -> Hook {
    Arc::new(|_, _, _| Action::Forward)
}

/// Slow every PATCH down a little, so a signal finds the upload in the middle.
fn slow_patches(each: Duration) -> Hook {
    Arc::new(move |m, _, _| {
        if m == "PATCH" {
            std::thread::sleep(each);
        }
        Action::Forward
    })
}

/// Upload sessions answer 404 once `expired` is set: the registry let them go. PATCHes are
/// slowed down as by [`slow_patches`].
fn expiring(expired: Arc<AtomicBool>) -> Hook {
    Arc::new(move |m, uri, _| {
        if m == "PATCH" {
            std::thread::sleep(Duration::from_millis(100));
        }
        if expired.load(Ordering::SeqCst) && m == "GET" && uri.contains("/blobs/uploads/") {
            Action::registry_error(
                reqwest::StatusCode::NOT_FOUND,
                "BLOB_UPLOAD_UNKNOWN",
                "blob upload unknown to registry",
            )
        } else {
            Action::Forward
        }
    })
}

fn offset_of(parked: &serde_json::Value) -> u64 {
    parked["offset"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_parks_at_a_chunk_boundary_and_the_next_run_reads_and_sends_only_the_rest() {
    let s = Setup::new(
        1301,
        72 * MB,
        forward(),
        slow_patches(Duration::from_millis(150)),
    )
    .await;
    let (code, took) = s.interrupt(30 * MB, "-TERM").await;
    assert_eq!(code, Some(143));
    assert!(took < Duration::from_secs(5), "the stop took {took:?}");

    let parked = s.parked().await;
    let offset = offset_of(&parked);
    assert!(
        offset >= 24 * MB && offset.is_multiple_of(8 * MB),
        "{parked}"
    );
    assert_eq!(parked["size"].as_u64(), Some(s.size()));
    assert_eq!(parked["session"], "parked");
    // No chunk was cut: everything the target received is what it confirmed.
    let status = ferry(&["status", &s.plan], &[]).await;
    assert!(
        status.stdout.contains("parked uploads: 1"),
        "{}",
        status.stdout
    );

    let (report, read, sent) = s.finish().await;
    let rest = s.size() - offset;
    // A little more than the rest: the manifest and config.
    assert!(
        read <= rest + MB,
        "read {read} from the source for {rest} missing bytes"
    );
    assert!(
        sent <= rest + MB,
        "sent {sent} to the target for {rest} missing bytes"
    );
    let t = &report["totals"];
    assert_eq!(t["resumed_bytes"].as_u64(), Some(offset), "{t}");
    assert_eq!(t["reread_bytes"].as_u64(), Some(0), "{t}");
    // The continued read was a range request from the offset.
    let ranged = s
        .source
        .seen()
        .iter()
        .filter_map(|r| r.range.clone())
        .collect::<Vec<_>>();
    assert_eq!(ranged, vec![format!("bytes={offset}-")]);
    // A finished run leaves no spool behind.
    assert!(!s.spool_dir().exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_is_rebuilt_from_the_spool_without_reading_the_source_again() {
    let expired = Arc::new(AtomicBool::new(false));
    let s = Setup::new(1302, 80 * MB, forward(), expiring(expired.clone())).await;
    // SIGKILL: nothing is saved at the kill but what the checkpoint already had.
    let (code, _) = s.interrupt(40 * MB, "-KILL").await;
    assert_eq!(code, None);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let parked = s.parked().await;
    let offset = offset_of(&parked);
    assert!(offset > 0, "{parked}");
    assert_eq!(parked["session"], "unknown");
    assert!(parked["spooled"].as_u64().unwrap() >= offset, "{parked}");
    expired.store(true, Ordering::SeqCst);

    let (report, read, _) = s.finish().await;
    let t = &report["totals"];
    assert_eq!(t["spooled_bytes"].as_u64(), Some(offset), "{t}");
    let rest = s.size() - offset;
    assert!(
        read <= rest + MB,
        "read {read} from the source for {rest} not spooled"
    );
    assert!(!s.spool_dir().exists());
}

/// Kill a copy with an expired session ahead, damage the spool with `damage`, and check the
/// next run discards it, reads the source and still copies byte-exact.
async fn damaged_spool(seed: u64, damage: impl FnOnce(&Path)) {
    let expired = Arc::new(AtomicBool::new(false));
    let s = Setup::new(seed, 72 * MB, forward(), expiring(expired.clone())).await;
    let (code, _) = s.interrupt(30 * MB, "-KILL").await;
    assert_eq!(code, None);
    assert!(offset_of(&s.parked().await) > 0);
    expired.store(true, Ordering::SeqCst);
    damage(&s.spool_file());

    let (report, read, _) = s.finish().await;
    let t = &report["totals"];
    assert_eq!(t["spooled_bytes"].as_u64(), Some(0), "{t}");
    assert!(
        read >= s.size(),
        "the whole blob came from the source: {read} of {}: {t}",
        s.size()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_spool_is_discarded_and_the_copy_is_still_exact() {
    damaged_spool(1303, |file| {
        let mut bytes = std::fs::read(file).unwrap();
        bytes[1000] ^= 0x01;
        std::fs::write(file, bytes).unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_of_another_blob_is_discarded_and_the_copy_is_still_exact() {
    damaged_spool(1304, |file| {
        let len = std::fs::metadata(file).unwrap().len() as usize;
        std::fs::write(file, layer(99, len).bytes).unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_ignores_ranges_is_read_from_the_start_and_counted() {
    let ignore: Hook = Arc::new(|m, uri, _| {
        if m == "GET" && uri.contains("/blobs/sha256:") {
            Action::IgnoreRange
        } else {
            Action::Forward
        }
    });
    let s = Setup::new(
        1305,
        72 * MB,
        ignore,
        slow_patches(Duration::from_millis(150)),
    )
    .await;
    let (code, _) = s.interrupt(30 * MB, "-TERM").await;
    assert_eq!(code, Some(143));
    let offset = offset_of(&s.parked().await);
    assert!(offset > 0);

    let (report, read, sent) = s.finish().await;
    let t = &report["totals"];
    assert_eq!(t["reread_bytes"].as_u64(), Some(offset), "{t}");
    assert_eq!(t["resumed_bytes"].as_u64(), Some(offset), "{t}");
    assert!(read >= s.size(), "{read} of {}: {t}", s.size());
    // Still only the rest is sent.
    assert!(sent <= s.size() - offset + MB, "{sent}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_follows_a_redirect_to_blob_storage_on_another_host() {
    // Blob GETs are sent to "storage" on another loopback port, as registries do with S3 or
    // a CDN; the range must reach it.
    let storage: Arc<std::sync::Mutex<Option<Proxy>>> = Arc::default();
    let slot = storage.clone();
    let s = Setup::build(
        1306,
        72 * MB,
        move |src| {
            let proxy = futures::executor::block_on(Proxy::transparent(&src.url));
            let url = proxy.url.clone();
            *slot.lock().unwrap() = Some(proxy);
            Arc::new(move |m, uri: &str, _| {
                if m == "GET" && uri.contains("/blobs/sha256:") {
                    Action::Respond(
                        reqwest::StatusCode::TEMPORARY_REDIRECT,
                        vec![("location", format!("{url}{uri}"))],
                        Vec::new(),
                    )
                } else {
                    Action::Forward
                }
            })
        },
        slow_patches(Duration::from_millis(150)),
    )
    .await;
    let (code, _) = s.interrupt(30 * MB, "-TERM").await;
    assert_eq!(code, Some(143));
    let offset = offset_of(&s.parked().await);
    let storage = storage.lock().unwrap().take().unwrap();
    let read_before = storage.bytes_out();

    let (report, _, _) = s.finish().await;
    assert_eq!(report["totals"]["reread_bytes"].as_u64(), Some(0));
    let ranges: Vec<String> = storage
        .seen()
        .iter()
        .filter_map(|r| r.range.clone())
        .collect();
    assert_eq!(ranges, vec![format!("bytes={offset}-")]);
    let read = storage.bytes_out() - read_before;
    assert!(read <= s.size() - offset + MB, "{read}");
}
