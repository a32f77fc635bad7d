//! Registry-to-registry copies against real distribution registries, checked with our own
//! client, the registries' access logs and skopeo.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_copy_is_byte_exact_and_a_second_run_moves_nothing() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let fx = populate(&src, "team").await;
    let dir = tempfile::tempdir().unwrap();
    let p = copy_plan(
        dir.path(),
        &[&src.addr, &dst.addr],
        "",
        &format!("{}/team/*", src.addr),
        &format!("{}/mirror/*", dst.addr),
    );
    let p = p.to_str().unwrap();

    let run = ferry(&["run", "--progress", "plain", p], &[]).await;
    run.assert_code(0);
    let n = fx.tagged.len();
    assert!(
        run.summary().starts_with(&format!(
            "ferry: {n} images copied, 0 already present, 0 failed"
        )),
        "{}",
        run.summary()
    );
    for (repo, tag, img) in &fx.tagged {
        let target = repo.replacen("team/", "mirror/", 1);
        assert_copied(&dst, &target, tag, img).await;
    }
    // A second implementation reads the same bytes back.
    let raw = skopeo_inspect_raw(&format!("docker://{}/mirror/multi:docker", dst.addr), None).await;
    assert_eq!(raw, fx.image("team/multi", "docker").bytes);
    let raw = skopeo_inspect_raw(&format!("docker://{}/mirror/api:v1.2.0", dst.addr), None).await;
    assert_eq!(raw, fx.image("team/api", "v1.2.0").bytes);

    // The base layer is shared by every repository: it crossed the wire once and was
    // mounted into the others.
    dst.sync_log().await;
    src.sync_log().await;
    // api, web and multi share the base: one transfer, two mounts.
    assert_eq!(mounts(&dst), 2, "cross-repository mounts used");
    let unique_blobs: std::collections::HashSet<String> = fx
        .tagged
        .iter()
        .flat_map(|(_, _, i)| i.all_blobs().into_iter().map(|b| b.digest.clone()))
        .collect();
    assert_eq!(
        blob_gets(&src),
        unique_blobs.len(),
        "each unique blob is read from the source exactly once"
    );

    // Second run: everything recorded done and trusted (issue 21: said `unchanged`, not
    // `present`, which means checked at the target), no blob read, no upload.
    let (gets, ups) = (blob_gets(&src), uploads(&dst));
    let again = ferry(&["run", "--progress", "plain", p], &[]).await;
    again.assert_code(0);
    assert!(
        again.summary().starts_with(&format!(
            "ferry: 0 images copied, 0 already present, {n} unchanged (trusted from the checkpoint), 0 failed; 0 B transferred"
        )),
        "{}",
        again.summary()
    );
    dst.sync_log().await;
    src.sync_log().await;
    assert_eq!(blob_gets(&src), gets, "second run read no blob");
    assert_eq!(uploads(&dst), ups, "second run uploaded nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_filters_select_exactly() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    populate(&src, "team").await;
    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        &format!(
            r#"version = 1
{}
[[copy]]
from = "{}/team/api"
to = "{}/filtered/api"
tags = {{ include = ['^v\d+\.\d+\.\d+', '^latest$'], exclude = ['-rc\d*$'], semver = ">=1.1", newest = 2 }}

[[copy]]
from = "{}/team/api"
to = "{}/all/api"
tags = {{ exclude = ['^main-'] }}
"#,
            insecure(&[&src, &dst]),
            src.addr,
            dst.addr,
            src.addr,
            dst.addr
        ),
    );
    ferry(&["run", p.to_str().unwrap()], &[])
        .await
        .assert_code(0);
    assert_eq!(
        dst.pusher().tags("filtered/api").await,
        vec!["v1.2.0", "v2.0.0"]
    );
    assert_eq!(
        dst.pusher().tags("all/api").await,
        vec!["latest", "v1.0.0", "v1.2.0", "v1.3.0-rc1", "v2.0.0"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tag_renamed_and_one_digest() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let fx = populate(&src, "team").await;
    let multi = fx.image("team/multi", "oci");
    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n{}\n[[copy]]\nfrom = \"{s}/team/api:v1.2.0\"\nto = \"{d}/prod/api:stable\"\n\n[[copy]]\nfrom = \"{s}/team/multi@{}\"\nto = \"{d}/pinned/multi\"\n",
            insecure(&[&src, &dst]),
            multi.digest,
            s = src.addr,
            d = dst.addr,
        ),
    );
    let run = ferry(&["run", p.to_str().unwrap()], &[]).await;
    run.assert_code(0);
    // The index's signature comes along with it (its own tag, `sha256-<digest>.sig`).
    assert!(
        run.summary().starts_with("ferry: 3 images copied"),
        "{}",
        run.summary()
    );
    assert_copied(&dst, "prod/api", "stable", fx.image("team/api", "v1.2.0")).await;
    assert_eq!(dst.pusher().tags("prod/api").await, vec!["stable"]);
    // By digest: present and untagged, with only its signature's tag beside it.
    assert_copied(&dst, "pinned/multi", &multi.digest, multi).await;
    let sig_tag = format!("sha256-{}.sig", multi.digest.trim_start_matches("sha256:"));
    assert_eq!(dst.pusher().tags("pinned/multi").await, vec![sig_tag]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_within_one_registry_mounts_instead_of_transferring() {
    let reg = Registry::start().await;
    let fx = populate(&reg, "dev").await;
    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n{}\n[[copy]]\nfrom = \"{a}/dev/api:v2.0.0\"\nto = \"{a}/prod/api:v2.0.0\"\n\n[[copy]]\nfrom = \"{a}/dev/multi:oci\"\nto = \"{a}/prod/multi:1\"\n",
            insecure(&[&reg]),
            a = reg.addr
        ),
    );
    reg.sync_log().await;
    let (gets, ups) = (blob_gets(&reg), uploads(&reg));
    ferry(&["run", p.to_str().unwrap()], &[])
        .await
        .assert_code(0);
    reg.sync_log().await;
    assert_eq!(blob_gets(&reg), gets, "no blob bytes were read");
    assert_eq!(uploads(&reg), ups, "no blob bytes were uploaded");
    assert!(mounts(&reg) >= 3, "blobs were mounted: {}", mounts(&reg));
    assert_copied(&reg, "prod/api", "v2.0.0", fx.image("dev/api", "v2.0.0")).await;
    assert_copied(&reg, "prod/multi", "1", fx.image("dev/multi", "oci")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_can_copy_then_promote_what_it_copied() {
    // Rule 2 reads what rule 1 writes: it runs after rule 1 (plan order), in the same run.
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let fx = populate(&src, "team").await;
    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n{}\n[[copy]]\nfrom = \"{s}/team/api\"\nto = \"{d}/staging/api\"\n\n[[copy]]\nfrom = \"{d}/staging/api:v2.0.0\"\nto = \"{d}/prod/api:stable\"\n",
            insecure(&[&src, &dst]),
            s = src.addr,
            d = dst.addr,
        ),
    );
    let run = ferry(&["run", p.to_str().unwrap()], &[]).await;
    run.assert_code(0);
    assert_copied(&dst, "prod/api", "stable", fx.image("team/api", "v2.0.0")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_listed_and_the_rest_is_copied() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let fx = populate(&src, "team").await;
    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n{}\n[[copy]]\nfrom = \"{s}/team/api:nope\"\nto = \"{d}/x/api\"\n\n[[copy]]\nfrom = \"{s}/team/missing\"\nto = \"{d}/x/missing\"\n\n[[copy]]\nfrom = \"{s}/team/web:1.0\"\nto = \"{d}/x/web\"\n",
            insecure(&[&src, &dst]),
            s = src.addr,
            d = dst.addr,
        ),
    );
    let run = ferry(&["run", p.to_str().unwrap()], &[]).await;
    run.assert_code(1);
    assert!(
        run.summary()
            .starts_with("ferry: 1 images copied, 0 already present, 2 failed"),
        "{}",
        run.summary()
    );
    assert!(
        run.stderr.contains(&format!(
            "failed: {s}/team/api:nope -> {d}/x/api:nope: reading {s}/team/api:nope",
            s = src.addr,
            d = dst.addr
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("listing the tags of") && run.stderr.contains("NAME_UNKNOWN"),
        "{}",
        run.stderr
    );
    assert_copied(&dst, "x/web", "1.0", fx.image("team/web", "1.0")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_blob_goes_up_in_chunks() {
    // Above the 32 MiB monolithic limit: the chunked PATCH path, verified end to end.
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let big = layer(9, 40 * 1024 * 1024);
    let img = image(&[big], "linux", "amd64", Format::Oci, "big");
    src.pusher().push("big/app", "v1", &img).await;
    let dir = tempfile::tempdir().unwrap();
    let p = copy_plan(
        dir.path(),
        &[&src.addr, &dst.addr],
        "",
        &format!("{}/big/app", src.addr),
        &format!("{}/big/app", dst.addr),
    );
    ferry(&["run", p.to_str().unwrap()], &[])
        .await
        .assert_code(0);
    assert_copied(&dst, "big/app", "v1", &img).await;
    dst.sync_log().await;
    let patches = dst
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH")
        .count();
    assert!(
        patches >= 3,
        "40 MiB in 16 MiB chunks: {patches} PATCH requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_layers_are_not_copied_and_the_output_says_so() {
    // Like a Windows base layer: referenced by URL, never stored in the registry.
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let base = image(
        &[layer(11, 4096)],
        "windows",
        "amd64",
        Format::Docker,
        "foreign",
    );
    let foreign_digest = format!("sha256:{}", "f".repeat(64));
    let mut doc: serde_json::Value = serde_json::from_slice(&base.bytes).unwrap();
    doc["layers"].as_array_mut().unwrap().insert(
        0,
        serde_json::json!({
            "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            "size": 123456,
            "digest": foreign_digest,
            "urls": ["https://mcr.example.invalid/layer.tar.gz"]
        }),
    );
    let bytes = serde_json::to_vec_pretty(&doc).unwrap();
    let img = Image {
        media_type: base.media_type.clone(),
        digest: sha256_digest(&bytes),
        bytes,
        blobs: base.blobs.clone(),
        children: Vec::new(),
    };
    src.pusher().push("win/app", "ltsc", &img).await;
    let dir = tempfile::tempdir().unwrap();
    let p = copy_plan(
        dir.path(),
        &[&src.addr, &dst.addr],
        "",
        &format!("{}/win/app", src.addr),
        &format!("{}/win/app", dst.addr),
    );
    let run = ferry(&["run", "--progress", "plain", p.to_str().unwrap()], &[]).await;
    run.assert_code(0);
    assert!(
        run.stderr.contains("1 non-distributable layer not copied"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("note: 1 non-distributable layer not copied"),
        "{}",
        run.stderr
    );
    let (_, bytes, digest) = dst.pusher().manifest("win/app", "ltsc").await.unwrap();
    assert_eq!((bytes, digest), (img.bytes.clone(), img.digest.clone()));
    assert!(!dst.pusher().blob_exists("win/app", &foreign_digest).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_previews_what_run_then_does() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let fx = populate(&src, "team").await;
    let dir = tempfile::tempdir().unwrap();
    let p = copy_plan(
        dir.path(),
        &[&src.addr, &dst.addr],
        "rate_limit = { requests_per_second = 10 }",
        &format!("{}/team/api", src.addr),
        &format!("{}/team/api", dst.addr),
    );
    let p = p.to_str().unwrap();
    let n = fx.tags_of("team/api").len();
    let before = ferry(&["plan", "--output", "json", p], &[]).await;
    before.assert_code(0);
    let v: serde_json::Value = serde_json::from_str(&before.stdout).unwrap();
    assert_eq!(v["totals"]["copy"], n);
    // Bytes are what the run will transfer: every blob of the images, each once, however
    // many images share it.
    let mut blobs = std::collections::BTreeMap::new();
    for c in v["copies"].as_array().unwrap() {
        let tag = c["target"].as_str().unwrap().rsplit(':').next().unwrap();
        for b in fx.image("team/api", tag).all_blobs() {
            blobs.insert(b.digest.clone(), b.bytes.len() as u64);
        }
    }
    assert_eq!(v["totals"]["bytes"], blobs.values().sum::<u64>(), "{v}");
    assert!(
        v["registries"][src.addr.as_str()]["requests"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(
        v["registries"][dst.addr.as_str()]["seconds_at_rate_limit"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    // `plan` wrote nothing.
    assert!(dst.pusher().tags("team/api").await.is_empty());

    ferry(&["run", p], &[]).await.assert_code(0);
    let after = ferry(&["plan", p], &[]).await;
    after.assert_code(0);
    assert!(
        after.stdout.contains(&format!(
            "plan: 0 images to copy (0 B), 0 already present, {n} unchanged (trusted from the checkpoint)"
        )),
        "{}",
        after.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_travel_with_what_the_filters_select() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let fx = populate(&src, "team").await;
    let multi = fx.image("team/multi", "oci");
    let sig_tag = format!("sha256-{}.sig", multi.digest.trim_start_matches("sha256:"));
    let sig = fx.image("team/multi", &sig_tag);
    let dir = tempfile::tempdir().unwrap();
    // A filter that selects only `oci`, a single-tag rule and a digest rule: the signature of
    // the index comes along each time; with `referrers = false` it does not.
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n{}\n[[copy]]\nfrom = \"{s}/team/multi\"\nto = \"{d}/filtered/multi\"\ntags = {{ include = ['^oci$'] }}\n\n[[copy]]\nfrom = \"{s}/team/multi:oci\"\nto = \"{d}/single/multi:release\"\n\n[[copy]]\nfrom = \"{s}/team/multi@{digest}\"\nto = \"{d}/bydigest/multi:pinned\"\n\n[[copy]]\nfrom = \"{s}/team/multi:oci\"\nto = \"{d}/bare/multi\"\nreferrers = false\n",
            insecure(&[&src, &dst]),
            s = src.addr,
            d = dst.addr,
            digest = multi.digest
        ),
    );
    ferry(&["run", p.to_str().unwrap()], &[])
        .await
        .assert_code(0);
    for repo in ["filtered/multi", "single/multi", "bydigest/multi"] {
        assert_copied(&dst, repo, &sig_tag, sig).await;
    }
    assert_eq!(
        dst.pusher().tags("filtered/multi").await,
        vec!["oci".to_string(), sig_tag.clone()]
    );
    assert_eq!(
        dst.pusher().tags("single/multi").await,
        vec!["release".to_string(), sig_tag.clone()]
    );
    assert_eq!(dst.pusher().tags("bare/multi").await, vec!["oci"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copying_starts_while_later_repositories_are_still_being_listed() {
    // Twelve repositories; the tag list of the last one is slow (the first answer takes 1.5 s
    // and fails, the retry succeeds). The first repositories are copied meanwhile: the
    // target sees blobs before the source has listed the last repository.
    let (src, dst) = (Registry::start().await, Registry::start().await);
    for r in 0..12u64 {
        let img = image(
            &[layer(7300 + r, 8 * 1024)],
            "linux",
            "amd64",
            Format::Oci,
            &format!("early{r}"),
        );
        src.pusher()
            .push(&format!("early/r{r:02}"), "v1", &img)
            .await;
    }
    let held = Arc::new(AtomicBool::new(false));
    let hold = held.clone();
    let source = Proxy::start(
        &src.url,
        Arc::new(move |method, uri, _| {
            let slow = method == "GET" && uri.starts_with("/v2/early/r11/tags/list");
            match slow && !hold.swap(true, Ordering::SeqCst) {
                true => Action::Hold(Duration::from_millis(1500)),
                false => Action::Forward,
            }
        }),
    )
    .await;
    let target = Proxy::transparent(&dst.url).await;
    let dir = tempfile::tempdir().unwrap();
    let p = copy_plan(
        dir.path(),
        &[&source.addr, &target.addr],
        "",
        &format!("{}/early/*", source.addr),
        &format!("{}/early/*", target.addr),
    );
    ferry(&["run", p.to_str().unwrap()], &[])
        .await
        .assert_code(0);
    assert!(held.load(Ordering::SeqCst), "the slow listing was asked");
    let listed_last = source
        .seen()
        .iter()
        .filter(|s| s.uri.starts_with("/v2/early/r11/tags/list"))
        .map(|s| s.at)
        .max()
        .expect("r11 listed");
    let first_blob = target
        .seen()
        .iter()
        .filter(|s| s.uri.contains("/blobs/"))
        .map(|s| s.at)
        .min()
        .expect("blobs sent");
    assert!(
        first_blob < listed_last,
        "the first blob went out {:?} after the last listing was answered",
        first_blob - listed_last
    );
}
