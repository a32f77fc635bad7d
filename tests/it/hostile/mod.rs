//! A registry that lies (issue 7, "Hardening"): a redirect loop, bodies that never end,
//! slow-loris answers, blobs longer or shorter than their descriptors. The fault proxy sits in
//! front of a real registry; each lie must cost a clear per-item error naming what failed,
//! leave nothing corrupt or dangling at the target, and never hang the run (every run is
//! bounded by a timeout far below the harness's).

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;
use crate::harness::*;

mod names;

#[allow(unused_imports)]
use names::*;

/// One retry (these lies are permanent) and a short stall timeout (the slow-loris tests).
const SETTINGS: &str = "retries = 1\nstall_timeout = \"1s\"";

/// Far more than any of these runs needs, far less than a hang.
const NO_HANG: Duration = Duration::from_secs(60);

/// Copy `team/*` from the proxy to `dst` with the module's settings, bounded in time.
async fn copy_through(proxy: &str, dst: &Registry) -> (Run, Duration) {
    bounded(run_copy(
        &[proxy, &dst.addr],
        SETTINGS,
        &format!("{proxy}/team/*"),
        &format!("{}/team/*", dst.addr),
    ))
    .await
}

async fn run_bounded(plan: &std::path::Path) -> (Run, Duration) {
    bounded(ferry(&["run", plan.to_str().unwrap()], &[])).await
}

/// A run of ferry, bounded by [`NO_HANG`], and how long it took.
async fn bounded(run: impl std::future::Future<Output = Run>) -> (Run, Duration) {
    let started = Instant::now();
    let run = tokio::time::timeout(NO_HANG, run)
        .await
        .expect("ferry must not hang on a lying registry");
    (run, started.elapsed())
}

/// Three small images under `team/` at a fresh source: `ok` and the two a test lies about.
async fn source_with(names: [&str; 2]) -> (Registry, Registry, Image, [Image; 2]) {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let ok = image(&[layer(70, 32 * 1024)], "linux", "amd64", Format::Oci, "ok");
    src.pusher().push("team/ok", "v1", &ok).await;
    let mut lied = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let img = image(
            &[layer(71 + i as u64, 48 * 1024)],
            "linux",
            "amd64",
            Format::Oci,
            name,
        );
        src.pusher().push(&format!("team/{name}"), "v1", &img).await;
        lied.push(img);
    }
    let lied: [Image; 2] = lied.try_into().unwrap_or_else(|_| unreachable!());
    (src, dst, ok, lied)
}

/// The run failed exactly the two lied-about images, copied `ok`, and left nothing of the
/// others at the target: no manifest, no tag, not the layer. (A config blob that was
/// verified and uploaded beside a failing layer may stay: correct bytes under their digest,
/// which the next run reuses.)
async fn assert_only_ok_arrived(run: &Run, dst: &Registry, ok: &Image, lied: &[(&str, &Image)]) {
    run.assert_code(1);
    assert!(
        run.summary()
            .starts_with("ferry: 1 images copied, 0 already present, 2 failed"),
        "{}\n{}",
        run.summary(),
        run.stderr
    );
    assert_copied(dst, "team/ok", "v1", ok).await;
    for (name, img) in lied {
        let repo = format!("team/{name}");
        assert!(dst.pusher().manifest(&repo, "v1").await.is_none(), "{repo}");
        assert!(dst.pusher().tags(&repo).await.is_empty(), "{repo}");
        let layer = &img.layers()[0].digest;
        assert!(
            !dst.pusher().blob_exists(&repo, layer).await,
            "{repo} blob {layer}"
        );
    }
}

fn manifest_get(m: &reqwest::Method, uri: &str, repo: &str) -> bool {
    m == "GET" && uri.starts_with(&format!("/v2/{repo}/manifests/"))
}

fn blob_get(m: &reqwest::Method, uri: &str, img: &Image) -> bool {
    m == "GET" && uri.contains("/blobs/") && uri.ends_with(&img.layers()[0].digest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_loop_is_a_clear_error_naming_the_url() {
    let (src, dst, ok, [manifest_loop, blob_loop]) = source_with(["loop", "blobloop"]).await;
    let blob = blob_loop.clone();
    // Each answer points at itself (a relative Location, as registries send).
    let proxy = Proxy::start(
        &src.url,
        Arc::new(move |m, uri: &str, _| {
            if manifest_get(m, uri, "team/loop") || blob_get(m, uri, &blob) {
                Action::Respond(
                    StatusCode::TEMPORARY_REDIRECT,
                    vec![("location", uri.to_string())],
                    Vec::new(),
                )
            } else {
                Action::Forward
            }
        }),
    )
    .await;
    let (run, took) = copy_through(&proxy.addr, &dst).await;
    assert_only_ok_arrived(
        &run,
        &dst,
        &ok,
        &[("loop", &manifest_loop), ("blobloop", &blob_loop)],
    )
    .await;
    for url in [
        format!(
            // A cold copy reads the tag in one GET.
            "http://{}/v2/team/loop/manifests/v1",
            proxy.addr
        ),
        format!(
            "http://{}/v2/team/blobloop/blobs/{}",
            proxy.addr,
            blob_loop.layers()[0].digest
        ),
    ] {
        assert!(run.stderr.contains(&url), "names {url}:\n{}", run.stderr);
    }
    assert!(run.stderr.contains("redirect"), "{}", run.stderr);
    assert!(took < Duration::from_secs(20), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_manifest_and_blob_bodies_are_cut_off() {
    let (src, dst, ok, [endless_manifest, endless_blob]) =
        source_with(["endless", "endlessblob"]).await;
    let blob = endless_blob.clone();
    let proxy = Proxy::start(
        &src.url,
        Arc::new(move |m, uri: &str, _| {
            if manifest_get(m, uri, "team/endless") {
                Action::Endless(
                    StatusCode::OK,
                    vec![(
                        "content-type",
                        "application/vnd.oci.image.manifest.v1+json".into(),
                    )],
                )
            } else if blob_get(m, uri, &blob) {
                Action::Append(Tail::Endless)
            } else {
                Action::Forward
            }
        }),
    )
    .await;
    let (run, took) = copy_through(&proxy.addr, &dst).await;
    assert_only_ok_arrived(
        &run,
        &dst,
        &ok,
        &[
            ("endless", &endless_manifest),
            ("endlessblob", &endless_blob),
        ],
    )
    .await;
    assert!(
        run.stderr.contains(&format!(
            "http://{}/v2/team/endless/manifests/v1: invalid manifest: larger than the 4194304-byte manifest limit",
            proxy.addr
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!(
            "http://{}/v2/team/endlessblob/blobs/{}: size mismatch",
            proxy.addr,
            endless_blob.layers()[0].digest
        )),
        "{}",
        run.stderr
    );
    // ferry stopped reading: two attempts at each body, a little over 4 MiB for the manifest
    // and a chunk past the blob, plus what socket buffers hold.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let out = proxy.bytes_out();
    assert!(
        out < 48 * 1024 * 1024,
        "{out} bytes of endless body went out"
    );
    assert!(took < Duration::from_secs(20), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_bodies_become_per_item_errors() {
    let (src, dst, ok, [slow_manifest, slow_blob]) = source_with(["slow", "slowblob"]).await;
    let blob = slow_blob.clone();
    // A byte every 20 ms: a read timeout alone never fires.
    let proxy = Proxy::start(
        &src.url,
        Arc::new(move |m, uri: &str, _| {
            if manifest_get(m, uri, "team/slow") || blob_get(m, uri, &blob) {
                Action::Dribble(Duration::from_millis(20))
            } else {
                Action::Forward
            }
        }),
    )
    .await;
    let (run, took) = copy_through(&proxy.addr, &dst).await;
    assert_only_ok_arrived(
        &run,
        &dst,
        &ok,
        &[("slow", &slow_manifest), ("slowblob", &slow_blob)],
    )
    .await;
    for url in [
        format!("http://{}/v2/team/slow/manifests/v1", proxy.addr),
        format!(
            "http://{}/v2/team/slowblob/blobs/{}",
            proxy.addr,
            slow_blob.layers()[0].digest
        ),
    ] {
        assert!(
            run.stderr
                .contains(&format!("{url}: stalled: the body brought")),
            "{url}:\n{}",
            run.stderr
        );
    }
    // Two attempts of about a second each, and a backoff: nowhere near a hang.
    assert!(took < Duration::from_secs(20), "{took:?}");
}

/// A "registry" that answers every request with a status line and then headers dribbled
/// a byte every 50 ms, forever. (Not behind the proxy: axum cannot send headers slowly.)
async fn header_dribbler() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                if sock
                    .write_all(b"HTTP/1.1 200 OK\r\nx-slow: ")
                    .await
                    .is_err()
                {
                    return;
                }
                loop {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    if sock.write_all(b"a").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_headers_become_per_item_errors() {
    let addr = header_dribbler().await;
    let dst = Registry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n[registry.\"{addr}\"]\ninsecure = true\nendpoint = \"http://{addr}\"\n{SETTINGS}\n{}\n[[copy]]\nfrom = \"{addr}/team/app:v1\"\nto = \"{}/team/app\"\n",
            insecure(&[&dst]),
            dst.addr
        ),
    );
    let (run, took) = run_bounded(&p).await;
    run.assert_code(1);
    // The client's read timeout (the plan's stall_timeout) bounds the wait for headers as a
    // whole, however many bytes trickle in.
    let failed = run
        .stderr
        .lines()
        .find(|l| l.starts_with("failed: ") && l.contains("reading"))
        .unwrap_or_else(|| panic!("a per-item error:\n{}", run.stderr));
    assert!(
        failed.contains(&format!(
            "GET http://{addr}/v2/team/app/manifests/v1: request failed"
        )) && failed.ends_with("operation timed out"),
        "{failed}"
    );
    assert!(dst.pusher().tags("team/app").await.is_empty());
    assert!(took < Duration::from_secs(20), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_longer_or_shorter_than_their_descriptor_are_refused() {
    let (src, dst, ok, [long, short]) = source_with(["long", "short"]).await;
    let (long_blob, short_blob) = (long.clone(), short.clone());
    let proxy = Proxy::start(
        &src.url,
        Arc::new(move |m, uri: &str, _| {
            if blob_get(m, uri, &long_blob) {
                Action::Append(Tail::Bytes(b"and then some".to_vec()))
            } else if blob_get(m, uri, &short_blob) {
                Action::Shorten(100)
            } else {
                Action::Forward
            }
        }),
    )
    .await;
    let (run, took) = copy_through(&proxy.addr, &dst).await;
    assert_only_ok_arrived(&run, &dst, &ok, &[("long", &long), ("short", &short)]).await;
    for (name, img, extra) in [("long", &long, 13), ("short", &short, -100)] {
        let size = img.layers()[0].bytes.len();
        let actual = size as i64 + extra;
        let expected = format!(
            "http://{}/v2/team/{name}/blobs/{}: size mismatch: the descriptor says {size} bytes, got {actual}",
            proxy.addr,
            img.layers()[0].digest
        );
        assert!(run.stderr.contains(&expected), "{expected}\n{}", run.stderr);
    }
    assert!(took < Duration::from_secs(20), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_transfer_that_keeps_moving_is_no_stall() {
    // The source sends at 200 KB/s, so the blob's upload (streamed from it) takes about two
    // stall timeouts while never stopping: it must complete.
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let img = image(
        &[layer(80, 400 * 1024)],
        "linux",
        "amd64",
        Format::Oci,
        "slowok",
    );
    src.pusher().push("team/steady", "v1", &img).await;
    let link = Proxy::wan(
        &src.url,
        Shaping {
            round_trip: Duration::from_millis(1),
            bytes_per_second: 200_000,
        },
    )
    .await;
    let (run, took) = bounded(run_copy(
        &[&link.addr, &dst.addr],
        SETTINGS,
        &format!("{}/team/steady:v1", link.addr),
        &format!("{}/team/steady", dst.addr),
    ))
    .await;
    run.assert_code(0);
    assert_copied(&dst, "team/steady", "v1", &img).await;
    assert!(
        took > Duration::from_secs(2),
        "the transfer was slow: {took:?}"
    );
    assert!(!run.stderr.contains("retrying"), "{}", run.stderr);
}

// Names that cannot escape (issue 11, item 6): every repository, tag and digest a registry
// lists is checked against the distribution grammar before it becomes a URL or a path. A bad
// name is its own named error; the good names go on.
