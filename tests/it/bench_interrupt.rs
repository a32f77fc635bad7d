//! The interrupted large layer, side by side with skopeo: one 1064 MiB layer, SIGTERM at half
//! staged with the source behind an emulated WAN (40 ms per round trip, 200 Mbit/s), and
//! SIGKILL at half staged on loopback; what the next run reads from the source and sends to
//! the target. Ignored in the normal suite (it moves gigabytes); `bench/compare-skopeo.sh
//! interrupt` runs it in release mode and prints the figures for docs/benchmarks.md.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::bench::timed;
use crate::common::*;
use crate::harness::*;

const MIB: u64 = 1024 * 1024;
const SIZE: u64 = 1064 * MIB;

/// One tool's interrupted copy: how the stop went and what the next run cost.
struct Interrupted {
    /// Exit code and seconds from the signal to the exit.
    stop: (Option<i32>, f64),
    /// Bytes the target had received when the signal came.
    staged: u64,
    /// Bytes the next run read from the source and sent to the target.
    read: u64,
    sent: u64,
    /// Seconds and peak RSS (MiB) of the next run.
    secs: f64,
    rss_mib: u64,
}

/// Run `program args` until `target` has received `SIZE / 2` bytes, send `signal`, then run
/// it again to the end, counting at the `source` and `target` proxies.
async fn interrupt_and_resume(
    program: &str,
    args: &[&str],
    state: &std::path::Path,
    source: &Proxy,
    target: &Proxy,
    signal: &str,
) -> Interrupted {
    let home = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env("FERRY_STATE", state)
        .env("HOME", home.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let start = target.bytes_in();
    while target.bytes_in() - start < SIZE / 2 {
        assert!(child.try_wait().unwrap().is_none(), "{program} ended early");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let staged = target.bytes_in() - start;
    let signalled = Instant::now();
    std::process::Command::new("kill")
        .args([signal, &child.id().unwrap().to_string()])
        .status()
        .unwrap();
    let status = child.wait().await.unwrap();
    let stop = (status.code(), signalled.elapsed().as_secs_f64());
    // What a stopped process left in flight settles before the next run is counted.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (read0, sent0) = (source.bytes_out(), target.bytes_in());
    let (secs, rss, _, _) = timed(program, args, state).await;
    Interrupted {
        stop,
        staged,
        read: source.bytes_out() - read0,
        sent: target.bytes_in() - sent0,
        secs,
        rss_mib: rss / 1024,
    }
}

fn print(label: &str, tool: &str, r: &Interrupted) {
    println!(
        "RESULT [{label}] {tool}: exit {:?} {:.1} s after the signal; {} MiB staged at the signal; next run read {} MiB from the source and sent {} MiB to the target in {:.1} s, peak RSS {} MiB",
        r.stop.0,
        r.stop.1,
        r.staged / MIB,
        r.read / MIB,
        r.sent / MIB,
        r.secs,
        r.rss_mib
    );
}

/// ferry and skopeo on the same layer: `shaping` for the source link (None: loopback).
async fn scenario(
    label: &str,
    signal: &str,
    shaping: Option<Shaping>,
) -> (Interrupted, Interrupted) {
    let src = Registry::start().await;
    let img = image(
        &[layer(1064, SIZE as usize)],
        "linux",
        "amd64",
        Format::Oci,
        "gib",
    );
    src.pusher().push("org/big", "1.0.0", &img).await;
    let digest = img.digest.clone();
    drop(img);
    let source = match shaping {
        Some(sh) => Proxy::wan(&src.url, sh).await,
        None => Proxy::transparent(&src.url).await,
    };
    let (dst, peer) = (Registry::start().await, Registry::start().await);
    let (target, peer_target) = (
        Proxy::transparent(&dst.url).await,
        Proxy::transparent(&peer.url).await,
    );
    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n[registry.\"{s}\"]\ninsecure = true\n[registry.\"{t}\"]\ninsecure = true\n[[copy]]\nfrom = \"{s}/org/big:1.0.0\"\nto = \"{t}/org/big\"\n",
            s = source.addr,
            t = target.addr
        ),
    );
    let state = dir.path().join("ferry.db");
    let ferry_bin = env!("CARGO_BIN_EXE_ferry");
    let p = p.to_str().unwrap();
    let ferry = interrupt_and_resume(
        ferry_bin,
        &["run", "--progress", "none", p],
        &state,
        &source,
        &target,
        signal,
    )
    .await;
    print(label, "ferry", &ferry);
    let (_, _, d) = dst.pusher().manifest("org/big", "1.0.0").await.unwrap();
    assert_eq!(d, digest, "ferry's copy is byte-exact");

    let _ = std::fs::remove_file("/var/lib/containers/cache/blob-info-cache-v1.boltdb");
    let from = format!("docker://{}/org/big:1.0.0", source.addr);
    let to = format!("docker://{}/org/big:1.0.0", peer_target.addr);
    let skopeo = interrupt_and_resume(
        "skopeo",
        &[
            "copy",
            "--all",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            &from,
            &to,
        ],
        &state,
        &source,
        &peer_target,
        signal,
    )
    .await;
    print(label, "skopeo", &skopeo);
    (ferry, skopeo)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "moves a 1064 MiB layer eight times; run by bench/compare-skopeo.sh interrupt"]
async fn bench_interrupted_large_layer() {
    // SIGTERM at half staged, the source 40 ms and 200 Mbit/s away.
    let wan = Shaping {
        round_trip: Duration::from_millis(40),
        bytes_per_second: 25_000_000,
    };
    let (ferry, _) = scenario("SIGTERM, WAN source", "-TERM", Some(wan)).await;
    assert_eq!(ferry.stop.0, Some(143));
    assert!(ferry.stop.1 < 30.0, "the stop took {:.1} s", ferry.stop.1);
    let missing = SIZE - ferry.staged.min(SIZE);
    assert!(
        ferry.read <= missing + 32 * MIB,
        "read {} MiB for {} MiB missing",
        ferry.read / MIB,
        missing / MIB
    );
    assert!(
        ferry.sent <= missing + 8 * MIB + MIB,
        "sent {} MiB for {} MiB missing",
        ferry.sent / MIB,
        missing / MIB
    );

    // SIGKILL at half staged on loopback: the cut PATCH cancels the session at the target.
    let (ferry, _) = scenario("SIGKILL, loopback", "-KILL", None).await;
    let missing = SIZE - ferry.staged.min(SIZE);
    assert!(
        ferry.read <= missing + missing / 10 + 64 * MIB,
        "read {} MiB for {} MiB missing",
        ferry.read / MIB,
        missing / MIB
    );
    assert!(ferry.rss_mib <= 64, "peak RSS {} MiB", ferry.rss_mib);
}
