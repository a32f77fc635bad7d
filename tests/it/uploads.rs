//! One request per new blob: the single-request upload where a registry takes it (the
//! in-process OCI registry), the two-request fallback where it does not (CNCF distribution
//! 2.8 answers the single POST with an upload session), and the session a declined mount
//! opens used for the upload that follows it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;

use crate::common::*;
use crate::harness::*;

/// Three repositories sharing a base layer. The first (in catalog order) holds only blobs
/// small enough to ask a registry about single-request uploads; the others have larger ones.
async fn three_repos(src: &Registry) -> Vec<(String, Image)> {
    let base = layer(7100, 200 * 1024);
    let mut out = Vec::new();
    for r in 0..3u64 {
        let size = if r == 0 { 4 * 1024 } else { 600 * 1024 };
        let img = image(
            &[base.clone(), layer(7110 + r, size)],
            "linux",
            "amd64",
            Format::Oci,
            &format!("uploads-{r}"),
        );
        let repo = format!("up/r{r}");
        src.pusher().push(&repo, "v1", &img).await;
        out.push((repo, img));
    }
    out
}

/// The in-process registry holds every image of [`three_repos`] under `mirror/`, manifest
/// and blobs byte for byte.
fn assert_all_in(dst: &OciRegistry, imgs: &[(String, Image)]) {
    for (repo, img) in imgs {
        let target = repo.replacen("up/", "mirror/", 1);
        let (_, bytes) = dst.manifest(&target, "v1").expect("copied");
        assert_eq!(bytes, img.bytes, "{target}: the same manifest bytes");
        for b in img.all_blobs() {
            assert_eq!(dst.blob(&target, &b.digest), Some(b.bytes.clone()));
        }
    }
}

fn unique_blobs(imgs: &[(String, Image)]) -> usize {
    imgs.iter()
        .flat_map(|(_, i)| i.all_blobs().into_iter().map(|b| b.digest.clone()))
        .collect::<HashSet<_>>()
        .len()
}

/// Run the copy of `up/*` into `target`'s `mirror/*`, one image and one transfer at a time
/// (so the first upload is the first repository's), and return the report.
async fn copy_all(src: &Registry, target: &str) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let p = copy_plan(
        dir.path(),
        &[&src.addr, target],
        "",
        &format!("{}/up/*", src.addr),
        &format!("{target}/mirror/*"),
    );
    let args = [
        "run",
        p.to_str().unwrap(),
        "--concurrency",
        "1",
        "--report",
        report.to_str().unwrap(),
    ];
    ferry(&args, &[]).await.assert_code(0);
    serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_takes_a_whole_blob_in_one_post_gets_one_request_per_new_blob() {
    let src = Registry::start().await;
    let dst = OciRegistry::start(OciOptions::default()).await;
    let imgs = three_repos(&src).await;
    let report = copy_all(&src, dst.addr()).await;
    assert_all_in(&dst, &imgs);
    let log = dst.requests();
    let count = |f: &dyn Fn(&str) -> bool| log.iter().filter(|l| f(l)).count();
    let whole = count(&|l| l.starts_with("POST ") && l.contains("/blobs/uploads/?digest="));
    let mounts = count(&|l| l.starts_with("POST ") && l.contains("mount="));
    // Every blob new to the registry crossed in one POST; the shared base was mounted into
    // the other two repositories.
    assert_eq!(whole, unique_blobs(&imgs), "{log:#?}");
    assert_eq!(mounts, 2, "{log:#?}");
    for asked in ["PUT /v2/mirror/r0/blobs", "PATCH ", "HEAD "] {
        assert_eq!(count(&|l| l.starts_with(asked)), 0, "{asked}: {log:#?}");
    }
    let row = &report["registries"][dst.addr()];
    assert_eq!(row["single_post_upload"], true, "{row:#}");
    // The bar: at most 1.15 requests per blob placed, plus one per manifest, with
    // each repository's tag list and the registry's version check on top.
    let placed = (imgs.len() * 3) as f64;
    let allowed = 1.15 * placed + imgs.len() as f64 + imgs.len() as f64 + 1.0;
    assert!(
        (row["requests"].as_u64().unwrap() as f64) <= allowed,
        "{row:#} (allowed {allowed})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_answers_the_single_post_with_a_session_is_asked_once_and_reads_nothing_twice(
) {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let imgs = three_repos(&src).await;
    let report = copy_all(&src, &dst.addr).await;
    for (repo, img) in &imgs {
        let target = repo.replacen("up/", "mirror/", 1);
        assert_copied(&dst, &target, "v1", img).await;
        let raw = skopeo_inspect_raw(&format!("docker://{}/{target}:v1", dst.addr), None).await;
        assert_eq!(raw, img.bytes, "skopeo reads {target}:v1 back");
    }
    dst.sync_log().await;
    src.sync_log().await;
    let asked: Vec<LoggedRequest> = dst
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.uri.contains("?digest="))
        .collect();
    assert_eq!(asked.len(), 1, "asked once: {asked:#?}");
    assert_eq!(asked[0].status, 202, "distribution 2.8 opens a session");
    let new = unique_blobs(&imgs);
    // The session it opened took the bytes: one PUT per new blob, and one empty POST for
    // each but the first.
    assert_eq!(dst.count_requests("PUT", "/blobs/uploads/"), new);
    assert_eq!(uploads(&dst), new);
    assert_eq!(
        blob_gets(&src),
        new,
        "the first blob, sent twice, is read from the source once"
    );
    let row = &report["registries"][&dst.addr];
    assert_eq!(row["single_post_upload"], false, "{row:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_mount_opens_the_session_its_upload_uses() {
    // The first run puts the image in mirror/a; its blobs are then deleted there. The second
    // copies it to mirror/b, which already holds the config. mirror/b existed before the run,
    // so each blob is asked about there first (issue 21: what whole checks of other images are
    // told): the config is there, nothing more; the layer is not, and its mount from mirror/a
    // is declined: that session takes the upload.
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let img = image(
        &[layer(7200, 64 * 1024)],
        "linux",
        "amd64",
        Format::Oci,
        "declined",
    );
    src.pusher().push("team/app", "v1", &img).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let run_to = |to: &str| {
        let p = copy_plan(
            dir.path(),
            &[&src.addr, &dst.addr],
            "",
            &format!("{}/team/app", src.addr),
            &format!("{}/{to}", dst.addr),
        );
        let state = state.clone();
        async move {
            let args = [
                "run",
                p.to_str().unwrap(),
                "--state",
                state.to_str().unwrap(),
            ];
            ferry(&args, &[]).await.assert_code(0);
        }
    };
    run_to("mirror/a").await;
    let first = &img.layers()[0];
    let config = img.config().unwrap();
    for b in [first, config] {
        let gone = dst
            .pusher()
            .send(
                Method::DELETE,
                &format!("/v2/mirror/a/blobs/{}", b.digest),
                &[],
                None,
            )
            .await;
        assert_eq!(gone.status(), 202);
    }
    // mirror/b is not new (a tag of its own), and holds the config.
    let other = image(&[layer(7201, 1024)], "linux", "amd64", Format::Oci, "other");
    dst.pusher().push("mirror/b", "other", &other).await;
    dst.pusher().push_blob("mirror/b", config).await;
    dst.sync_log().await;
    let before = dst.requests().len();
    run_to("mirror/b").await;
    dst.sync_log().await;
    let second: Vec<LoggedRequest> = dst.requests().split_off(before);
    assert_copied(&dst, "mirror/b", "v1", &img).await;
    let n = |method: &str, what: &dyn Fn(&str) -> bool| {
        second
            .iter()
            .filter(|r| r.method == method && what(&r.uri))
            .count()
    };
    let declined = second
        .iter()
        .filter(|r| r.method == "POST" && r.uri.contains("mount=") && r.status == 202)
        .count();
    assert_eq!(declined, 1, "{second:#?}");
    assert_eq!(
        n("POST", &|u| !u.contains("mount=")),
        0,
        "no session of its own: {second:#?}"
    );
    assert_eq!(
        n("DELETE", &|u| u.contains("/blobs/uploads/")),
        0,
        "no session to cancel: {second:#?}"
    );
    let config_hex = config.digest.trim_start_matches("sha256:");
    assert_eq!(
        n("HEAD", &|u| u.contains(config_hex)),
        1,
        "the config was asked about once: {second:#?}"
    );
    let hex = first.digest.trim_start_matches("sha256:");
    let put = n("PUT", &|u| u.contains("/blobs/uploads/") && u.contains(hex));
    assert_eq!(put, 1, "{second:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_post_uploads_lost_on_the_way_are_sent_again() {
    // The in-process registry behind a proxy that holds the first, third and fifth
    // single-request uploads unread and answers 503 (the bytes never arrive): the question
    // is asked again, the uploads are retried, and every image arrives exact.
    let src = Registry::start().await;
    let dst = OciRegistry::start(OciOptions::default()).await;
    let imgs = three_repos(&src).await;
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    let lossy = Proxy::start(
        &dst.url(),
        Arc::new(move |method, uri, _| {
            if method != "POST" || !uri.contains("/blobs/uploads/?digest=") {
                return Action::Forward;
            }
            match count.fetch_add(1, Ordering::SeqCst) {
                0 | 2 | 4 => Action::Hold(Duration::from_millis(100)),
                _ => Action::Forward,
            }
        }),
    )
    .await;
    let report = copy_all(&src, &lossy.addr).await;
    assert_all_in(&dst, &imgs);
    assert!(seen.load(Ordering::SeqCst) >= 5, "three were lost");
    let row = &report["registries"][&lossy.addr];
    assert!(row["retries"].as_u64().unwrap() >= 3, "{row:#}");
    assert_eq!(row["single_post_upload"], true, "{row:#}");
}
