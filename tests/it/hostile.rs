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

/// One retry (these lies are permanent) and a short stall timeout (the slow-loris tests).
const SETTINGS: &str = "retries = 1\nstall_timeout = \"1s\"";

/// Far more than any of these runs needs, far less than a hang.
const NO_HANG: Duration = Duration::from_secs(60);

/// Copy `team/*` from the proxy to `dst` with the module's settings, bounded in time.
async fn copy_through(proxy: &str, dst: &Registry) -> (Run, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let p = copy_plan(
        dir.path(),
        &[proxy, &dst.addr],
        SETTINGS,
        &format!("{proxy}/team/*"),
        &format!("{}/team/*", dst.addr),
    );
    run_bounded(&p).await
}

async fn run_bounded(plan: &std::path::Path) -> (Run, Duration) {
    let started = Instant::now();
    let run = tokio::time::timeout(NO_HANG, ferry(&["run", plan.to_str().unwrap()], &[]))
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
    let dir = tempfile::tempdir().unwrap();
    let p = copy_plan(
        dir.path(),
        &[&link.addr, &dst.addr],
        SETTINGS,
        &format!("{}/team/steady:v1", link.addr),
        &format!("{}/team/steady", dst.addr),
    );
    let (run, took) = run_bounded(&p).await;
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

/// Everything the run printed.
fn output(run: &Run) -> String {
    format!("{}\n{}", run.stdout, run.stderr)
}

/// An answer of JSON made up by the proxy.
fn json_answer(content_type: &str, body: serde_json::Value) -> Action {
    Action::Respond(
        StatusCode::OK,
        vec![("content-type", content_type.to_string())],
        body.to_string().into_bytes(),
    )
}

/// Every path under `dir`, relative to it.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p.clone());
            }
            out.push(p.strip_prefix(dir).unwrap().to_path_buf());
        }
    }
    out
}

/// The tags of a layout's index.json, with their digests.
fn layout_tags(layout: &std::path::Path) -> Vec<(String, String)> {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                m["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_catalog_cannot_lead_a_copy_outside_its_target_directory() {
    let src = Registry::start().await;
    let ok = image(&[layer(90, 4096)], "linux", "amd64", Format::Oci, "ok");
    src.pusher().push("org/ok", "v1", &ok).await;
    // The catalog lists a repository whose name climbs out of `org/`, next to a real one, and
    // the registry serves an image under it (at the path URL normalisation makes of it,
    // `/escaped/…`), so a copy that followed the name would write a layout there.
    let proxy = Proxy::start(
        &src.url,
        Arc::new(|m, uri: &str, _| {
            if m == "GET" && uri.starts_with("/v2/_catalog") {
                json_answer(
                    "application/json",
                    serde_json::json!({"repositories": ["org/../../escaped", "org/ok"]}),
                )
            } else if let Some(i) = uri.find("escaped/") {
                Action::Rewrite(format!("/v2/org/ok/{}", &uri[i + "escaped/".len()..]))
            } else {
                Action::Forward
            }
        }),
    )
    .await;
    // `<work>/data/out/*` is the target; `org/../../escaped` mapped naively would be
    // `<work>/data/out/../../escaped`, that is `<work>/escaped`.
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("data/out");
    let dir = tempfile::tempdir().unwrap();
    let p = copy_plan(
        dir.path(),
        &[&proxy.addr],
        SETTINGS,
        &format!("{}/org/*", proxy.addr),
        &format!("oci:{}/*", out.display()),
    );
    let (run, _) = run_bounded(&p).await;
    for path in walk(work.path()) {
        assert!(
            path.starts_with("data/out") || path == std::path::Path::new("data"),
            "{} was created outside the target directory",
            path.display()
        );
    }
    run.assert_code(1);
    assert_eq!(
        layout_tags(&out.join("ok")),
        vec![("v1".to_string(), ok.digest.clone())]
    );
    // No request about it reached the registry, under its name or the normalised one.
    let asked: Vec<String> = proxy.seen().into_iter().map(|s| s.uri).collect();
    assert!(!asked.iter().any(|u| u.contains("escaped")), "{asked:#?}");
    assert!(asked.iter().any(|u| u.starts_with("/v2/org/ok/tags/list")));
    let expected = format!(
        "skipped a repository listed under {}/org/*: repository \"org/../../escaped\" is not a valid repository name (a `.` or `..` path component",
        proxy.addr
    );
    assert!(
        output(&run).contains(&expected),
        "{expected}\n{}",
        output(&run)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tags_in_a_tag_list_are_named_errors_and_the_good_ones_copy() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let v1 = image(&[layer(91, 4096)], "linux", "amd64", Format::Oci, "v1");
    src.pusher().push("org/app", "v1", &v1).await;
    let long = "t".repeat(200);
    let listed = serde_json::json!({
        "name": "org/app",
        "tags": ["../x", "v1", long, "bad\ntag", "evil\u{1b}[2J", "-rm"],
    });
    let proxy = Proxy::start(
        &src.url,
        Arc::new(move |m, uri: &str, _| {
            if m == "GET" && uri.starts_with("/v2/org/app/tags/list") {
                json_answer("application/json", listed.clone())
            } else {
                Action::Forward
            }
        }),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let p = copy_plan(
        dir.path(),
        &[&proxy.addr, &dst.addr],
        SETTINGS,
        &format!("{}/org/app", proxy.addr),
        &format!("{}/org/app", dst.addr),
    );
    let (run, _) = run_bounded(&p).await;
    run.assert_code(1);
    assert_copied(&dst, "org/app", "v1", &v1).await;
    assert_eq!(dst.pusher().tags("org/app").await, vec!["v1".to_string()]);
    let all = output(&run);
    let of = format!("skipped a tag of {}/org/app: ", proxy.addr);
    for (shown, why) in [
        ("\"../x\"", "'/' is not allowed in it"),
        ("\"bad\\ntag\"", "'\\n' is not allowed in it"),
        ("\"evil\\u{1b}[2J\"", "'\\u{1b}' is not allowed in it"),
        ("\"-rm\"", "a tag cannot start with '-'"),
        (
            &format!("\"{}\"… (200 bytes)", "t".repeat(64)),
            "longer than 128 characters",
        ),
    ] {
        let expected = format!("{of}tag {shown} is not a valid tag ({why})");
        assert!(all.contains(&expected), "{expected}\n{all}");
    }
    // The registry's escape sequence never reached the terminal, nor the long tag whole.
    assert!(!all.contains('\u{1b}') && !all.contains(&long), "{all}");
    // Only the valid tag was asked about.
    for s in proxy.seen() {
        if s.uri.contains("/manifests/") {
            assert!(
                s.uri.ends_with("/manifests/v1") || s.uri.contains("/manifests/sha256:"),
                "{}",
                s.uri
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_referrers_entry_with_a_malformed_digest_is_a_named_error() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let app = image(&[layer(92, 4096)], "linux", "amd64", Format::Oci, "app");
    let sbom = oci_referrer(&app, SPDX, b"{\"spdxVersion\":\"SPDX-2.3\"}");
    let p = src.pusher();
    p.push("org/app", "v1", &app).await;
    p.push("org/app", &sbom.digest, &sbom).await;
    // The fallback tag lists the real referrer and two entries no one can verify.
    let fallback = format!("sha256-{}", hex_of(&app.digest));
    p.push("org/app", &fallback, &fallback_index(&[&sbom]))
        .await;
    let mut index: serde_json::Value =
        serde_json::from_slice(&fallback_index(&[&sbom]).bytes).unwrap();
    let entries = index["manifests"].as_array_mut().unwrap();
    entries.push(serde_json::json!({
        "mediaType": OCI_MANIFEST, "digest": "sha256:../../../etc/passwd", "size": 10,
        "artifactType": SPDX,
    }));
    entries.push(serde_json::json!({
        "mediaType": OCI_MANIFEST, "digest": format!("sha256:{}", "A".repeat(64)), "size": 10,
        "artifactType": SPDX,
    }));
    let path = format!("/v2/org/app/manifests/{fallback}");
    let proxy = Proxy::start(
        &src.url,
        Arc::new(move |m, uri: &str, _| {
            if m == "GET" && uri == path {
                json_answer(OCI_INDEX, index.clone())
            } else {
                Action::Forward
            }
        }),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let plan = copy_plan(
        dir.path(),
        &[&proxy.addr, &dst.addr],
        SETTINGS,
        &format!("{}/org/app:v1", proxy.addr),
        &format!("{}/org/app", dst.addr),
    );
    let (run, _) = run_bounded(&plan).await;
    run.assert_code(1);
    assert_copied(&dst, "org/app", "v1", &app).await;
    // The verifiable referrer travelled, by digest.
    let (_, bytes, _) = dst
        .pusher()
        .manifest("org/app", &sbom.digest)
        .await
        .expect("the referrer was copied");
    assert_eq!(bytes, sbom.bytes);
    let all = output(&run);
    for shown in [
        "\"sha256:../../../etc/passwd\"".to_string(),
        // Uppercase hex, and 71 bytes: shown cut short.
        format!("\"sha256:{}\"… (71 bytes)", "A".repeat(57)),
    ] {
        let expected = format!(
            "skipped a referrer of {}/org/app@{}: digest {shown} is not a digest ferry can verify (a sha256 digest is 64 lowercase hex digits)",
            proxy.addr, app.digest
        );
        assert!(all.contains(&expected), "{expected}\n{all}");
    }
    assert!(
        !proxy.seen().iter().any(|s| s.uri.contains("passwd")),
        "{:#?}",
        proxy.seen()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_leaves_a_repository_alone_when_its_tag_list_has_a_bad_tag() {
    let src = Registry::start().await;
    let p = src.pusher();
    let pr1 = image(&[layer(93, 2048)], "linux", "amd64", Format::Oci, "pr-1");
    let pr2 = image(&[layer(94, 2048)], "linux", "amd64", Format::Oci, "pr-2");
    p.push("team/app", "pr-1", &pr1).await;
    p.push("team/app", "pr-2", &pr2).await;
    // A tag ferry cannot ask about: where it points is unknown, so nothing may be judged.
    let proxy = Proxy::start(
        &src.url,
        Arc::new(|m, uri: &str, _| {
            if m == "GET" && uri.starts_with("/v2/team/app/tags/list") {
                json_answer(
                    "application/json",
                    serde_json::json!({"name": "team/app", "tags": ["pr-1", "pr-2", "keep me"]}),
                )
            } else {
                Action::Forward
            }
        }),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let plan = crate::common::plan(
        dir.path(),
        &format!(
            "version = 1\n[registry.\"{a}\"]\ninsecure = true\n{SETTINGS}\n[[retain]]\nrepository = \"{a}/team/app\"\ndelete_tags = ['^pr-\\d+$']\nolder_than = \"1d\"\n",
            a = proxy.addr
        ),
    );
    let (run, _) = run_bounded(&plan).await;
    run.assert_code(1);
    let all = output(&run);
    let expected = format!(
        "{}/team/app: not read, nothing there is deleted: tag \"keep me\" is not a valid tag (' ' is not allowed in it)",
        proxy.addr
    );
    assert!(all.contains(&expected), "{expected}\n{all}");
    for (tag, img) in [("pr-1", &pr1), ("pr-2", &pr2)] {
        assert!(
            src.pusher()
                .manifest("team/app", &img.digest)
                .await
                .is_some(),
            "{tag} was deleted"
        );
    }
    // Nothing deleted in team/app (the run lease, in team/ferry-lease, is the run's own).
    assert!(!proxy
        .seen()
        .iter()
        .any(|s| s.method == "DELETE" && !s.uri.contains("/ferry-lease/")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_tag_from_the_docker_hub_api_deletes_nothing() {
    // Retention on the Hub reads only its tag API. A tag there named `../pr-9` would make the
    // deletion `DELETE …/tags/../pr-9/`, which URL normalisation turns into another endpoint.
    let reg = Registry::start().await;
    let hub = HubFake::start(
        &[("myorg", "app", false)],
        &[("me", "dckr_pat_canary_5e1")],
        3,
        1000,
    )
    .await;
    let tag = |name: &str, c: char| HubTag {
        name: name.to_string(),
        digest: format!("sha256:{}", c.to_string().repeat(64)),
        last_pushed: "2024-01-01T00:00:00.000000Z".into(),
        platforms: Vec::new(),
    };
    hub.set_tags("myorg/app", vec![tag("pr-1", 'a'), tag("../pr-9", 'b')]);
    let dir = tempfile::tempdir().unwrap();
    let p = crate::common::plan(
        dir.path(),
        &format!(
            "version = 1\n[registry.\"docker.io\"]\nendpoint = \"{}\"\ninsecure = true\napi = \"{}\"\nauth = {{ username = \"me\", password_env = \"HUB_PAT\" }}\n[[retain]]\nrepository = \"docker.io/myorg/app\"\ndelete_tags = ['pr-']\nolder_than = \"1d\"\n",
            reg.url, hub.url
        ),
    );
    let run = ferry(
        &["run", p.to_str().unwrap()],
        &[("HUB_PAT", "dckr_pat_canary_5e1")],
    )
    .await;
    run.assert_code(1);
    let all = output(&run);
    let expected = "docker.io/myorg/app: not read, nothing there is deleted: tag \"../pr-9\" is not a valid tag ('/' is not allowed in it)";
    assert!(all.contains(expected), "{expected}\n{all}");
    let mut left = hub.tags("myorg/app");
    left.sort();
    assert_eq!(left, ["../pr-9", "pr-1"]);
    assert!(
        !hub.requests().iter().any(|r| r.starts_with("DELETE")),
        "{:#?}",
        hub.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layout_index_json_tag_outside_the_grammar_is_a_named_error() {
    // A layout's index.json is as untrusted as a registry's tag list.
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    let v1 = image(&[layer(95, 2048)], "linux", "amd64", Format::Oci, "v1");
    let other = image(&[layer(96, 2048)], "linux", "amd64", Format::Oci, "other");
    write_oci_layout(&src, &[("v1", &v1), ("../x", &other), ("a b", &other)]);
    let p = crate::common::plan(
        dir.path(),
        &format!(
            "version = 1\n[[copy]]\nfrom = \"oci:{}\"\nto = \"oci:{}\"\n",
            src.display(),
            dst.display()
        ),
    );
    let (run, _) = run_bounded(&p).await;
    run.assert_code(1);
    assert_eq!(
        layout_tags(&dst),
        vec![("v1".to_string(), v1.digest.clone())]
    );
    let all = output(&run);
    for (shown, why) in [("\"../x\"", "'/'"), ("\"a b\"", "' '")] {
        let expected = format!(
            "skipped a tag of oci:{}: tag {shown} is not a valid tag ({why} is not allowed in it)",
            src.display()
        );
        assert!(all.contains(&expected), "{expected}\n{all}");
    }
}
