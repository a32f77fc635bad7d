//! Issue 21, "Green stays true over time": a scheduled mirror that exits 0 is complete,
//! current and pullable. On real registries (distribution 2.8): a release tag re-pushed at the
//! source is copied again once `recheck_after` has passed (item 1); a child manifest and a
//! layer blob deleted at the target come back with `--recheck` (item 2); `ferry verify` finds
//! a deleted child, layer and signature, names them, and is green again after the repair.

use std::path::Path;

use reqwest::Method;
use serde_json::Value;

use crate::common::*;
use crate::harness::*;

/// The report item whose target ends with `target`.
fn item<'a>(report: &'a Value, target: &str) -> &'a Value {
    report["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["target"].as_str().unwrap().ends_with(target))
        .unwrap_or_else(|| panic!("no item for {target}: {report}"))
}

/// `skopeo inspect` of `reference`'s linux/arm64 image, over plain HTTP.
async fn inspect_arm64(reference: &str) -> std::process::Output {
    tokio::process::Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            "--override-arch",
            "arm64",
            reference,
        ])
        .output()
        .await
        .unwrap()
}

/// DELETE at the registry (a manifest or a blob, by digest): 202.
async fn delete(reg: &Registry, repo: &str, what: &str, digest: &str) {
    let resp = reg
        .pusher()
        .send(
            Method::DELETE,
            &format!("/v2/{repo}/{what}/{digest}"),
            &[],
            None,
        )
        .await;
    assert_eq!(resp.status(), 202, "DELETE {repo} {what} {digest}");
}

/// Item 1: `nginx:1.27.3` gets a new digest at Docker Hub when its base is patched. The
/// default `immutable_tags` trusted the record for ever; now only within `recheck_after`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_tag_repushed_at_the_source_is_copied_again_after_recheck_after() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let base = layer(2101, 4096);
    let old = image(
        std::slice::from_ref(&base),
        "linux",
        "amd64",
        Format::Oci,
        "old",
    );
    let new = image(
        &[base, layer(2102, 4096)],
        "linux",
        "amd64",
        Format::Oci,
        "new",
    );
    src.pusher().push("lib/nginx", "1.27.3", &old).await;
    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\nrecheck_after = \"2s\"\n{}[[copy]]\nfrom = \"{}/lib/nginx\"\nto = \"{}/mirror/nginx\"\n",
            insecure(&[&src, &dst]),
            src.addr,
            dst.addr
        ),
    );
    let (first, _) = run_reported(&p, &[]).await;
    first.assert_code(0);
    src.pusher().push("lib/nginx", "1.27.3", &new).await;

    // Within recheck_after the record of a release tag is trusted: no request, unchanged.
    let (within, report) = run_reported(&p, &[]).await;
    within.assert_code(0);
    assert_eq!(item(&report, ":1.27.3")["action"], "unchanged", "{report}");

    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let shown = ferry(&["plan", "--output", "json", p.to_str().unwrap()], &[]).await;
    shown.assert_code(0);
    let planned = json(&shown.stdout);
    let planned = &planned["copies"][0];
    let moved = format!("{} → {}", old.digest, new.digest);
    assert_eq!(planned["action"], "copy", "{planned}");
    assert_eq!(planned["updated"], moved.as_str(), "{planned}");

    let (after, report) = run_reported(&p, &[]).await;
    after.assert_code(0);
    let copied = item(&report, ":1.27.3");
    assert_eq!(copied["action"], "copied", "{report}");
    assert_eq!(copied["digest"], new.digest.as_str());
    assert_eq!(copied["updated"], moved.as_str());
    assert!(
        after.stderr.contains(&format!("updated: {moved}")),
        "{}",
        after.stderr
    );
    assert_copied(&dst, "mirror/nginx", "1.27.3", &new).await;
}

/// A signed two-platform index and a plain image, mirrored into `dst`; returns the plan and
/// what was pushed.
async fn mirrored(
    src: &Registry,
    dst: &Registry,
    dir: &Path,
) -> (std::path::PathBuf, Image, String) {
    let base = layer(2201, 8 * 1024);
    let plats = vec![
        image(
            &[base.clone(), layer(2202, 4096)],
            "linux",
            "amd64",
            Format::Oci,
            "a",
        ),
        image(
            &[base, layer(2203, 4096)],
            "linux",
            "arm64",
            Format::Oci,
            "b",
        ),
    ];
    let multi = index(plats, Format::Oci);
    let (sig_tag, sig) = cosign_signature(&multi, "team/app");
    let pusher = src.pusher();
    pusher.push("team/app", "v1", &multi).await;
    pusher.push("team/app", &sig_tag, &sig).await;
    let plain = image(&[layer(2204, 4096)], "linux", "amd64", Format::Oci, "p");
    pusher.push("team/app", "v2", &plain).await;
    let p = plan(
        dir,
        &format!(
            "version = 1\n{}[[copy]]\nfrom = \"{}/team/app\"\nto = \"{}/mirror/app\"\n",
            insecure(&[src, dst]),
            src.addr,
            dst.addr
        ),
    );
    let (first, _) = run_reported(&p, &[]).await;
    first.assert_code(0);
    (p, multi, sig_tag)
}

/// Item 2: GHCR's "delete untagged versions" clean-ups remove an index's children. A child
/// manifest and a layer deleted at the target by hand: `--recheck` said "already present";
/// now it puts both back, and skopeo can read the platform again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_child_and_layer_come_back_with_recheck() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let dir = tempfile::tempdir().unwrap();
    let (p, multi, _) = mirrored(&src, &dst, dir.path()).await;
    let (amd, arm) = (&multi.children[0], &multi.children[1]);
    delete(&dst, "mirror/app", "manifests", &arm.digest).await;
    let lost_layer = &amd.layers()[1].digest;
    delete(&dst, "mirror/app", "blobs", lost_layer).await;
    let arm_ref = format!("docker://{}/mirror/app:v1", dst.addr);
    assert!(
        !inspect_arm64(&arm_ref).await.status.success(),
        "arm64 is gone"
    );

    let (run, report) = run_reported(&p, &["--recheck"]).await;
    run.assert_code(0);
    let repaired = item(&report, ":v1");
    assert_eq!(repaired["action"], "copied", "{report}");
    let put_back = repaired["put_back"].to_string();
    assert!(
        put_back.contains(&arm.digest) && put_back.contains(lost_layer),
        "{put_back}"
    );
    assert_eq!(item(&report, ":v2")["action"], "present", "{report}");
    assert_copied(&dst, "mirror/app", "v1", &multi).await;
    let out = inspect_arm64(&arm_ref).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ferry verify`: green on a complete mirror; after a child, a layer and a signature are
/// deleted at the target, red, naming all three and the command that repairs them; green
/// again after `ferry run --recheck`. It writes nothing anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_what_is_missing_and_is_green_after_the_repair() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let dir = tempfile::tempdir().unwrap();
    let (p, multi, sig_tag) = mirrored(&src, &dst, dir.path()).await;
    let ps = p.to_str().unwrap();
    let metrics = dir.path().join("verify.prom");
    let ms = metrics.to_str().unwrap();

    let ok = ferry(&["verify", "--metrics", ms, ps], &[]).await;
    ok.assert_code(0);
    assert!(
        ok.stdout.contains(
            "verify: 3 images complete, 0 incomplete, 0 missing, 0 outdated, 0 not checked"
        ),
        "{}",
        ok.stdout
    );
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        text.contains("ferry_verify_images{status=\"complete\"} 3"),
        "{text}"
    );
    let success = text
        .lines()
        .find(|l| l.starts_with("ferry_verify_last_success_timestamp_seconds "))
        .expect("a success time")
        .to_string();

    let (arm, amd) = (&multi.children[1], &multi.children[0]);
    let lost_layer = amd.layers()[1].digest.clone();
    delete(&dst, "mirror/app", "manifests", &arm.digest).await;
    delete(&dst, "mirror/app", "blobs", &lost_layer).await;
    let (_, _, sig_digest) = dst.pusher().manifest("mirror/app", &sig_tag).await.unwrap();
    delete(&dst, "mirror/app", "manifests", &sig_digest).await;
    dst.sync_log().await;
    let before = dst.requests().len();

    let bad = ferry(&["verify", "--metrics", ms, ps], &[]).await;
    bad.assert_code(1);
    let out = &bad.stdout;
    assert!(
        out.contains(&format!("child manifest {} (linux/arm64)", arm.digest)),
        "{out}"
    );
    assert!(out.contains(&format!("layer {lost_layer}")), "{out}");
    assert!(
        out.contains(&format!("MISSING    {}/team/app:{sig_tag}", src.addr)),
        "{out}"
    );
    assert!(
        out.contains(&format!("`ferry run --recheck {ps}` puts back")),
        "{out}"
    );
    // Nothing was written at the target: only reads.
    dst.sync_log().await;
    let writes: Vec<_> = dst.requests()[before..]
        .iter()
        .filter(|r| !matches!(r.method.as_str(), "GET" | "HEAD"))
        .map(|r| format!("{} {}", r.method, r.uri))
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
    // A failed audit keeps the last success, so an alert on its age fires.
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(text.contains("ferry_verify_last_run_success 0"), "{text}");
    assert!(text.contains(&success), "{text}");

    let shown = ferry(&["verify", "--output", "json", ps], &[]).await;
    shown.assert_code(1);
    let v = json(&shown.stdout);
    assert_eq!(v["totals"]["incomplete"], 1, "{v}");
    assert_eq!(v["totals"]["missing"], 1, "{v}");
    assert_eq!(v["repair"], format!("ferry run --recheck {ps}").as_str());

    let (repair, _) = run_reported(&p, &["--recheck"]).await;
    repair.assert_code(0);
    ferry(&["verify", ps], &[]).await.assert_code(0);
    assert_copied(&dst, "mirror/app", "v1", &multi).await;
}
