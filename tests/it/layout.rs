//! OCI image layout directories as source and target, both ways, checked with skopeo.

use crate::common::*;
use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_to_layout_to_registry_and_layout_to_layout() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let fx = populate(&src, "team").await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("layouts");
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n{}\n[[copy]]\nfrom = \"{}/team/*\"\nto = \"oci:{}/*\"\n",
            insecure(&[&src]),
            src.addr,
            out.display()
        ),
    );
    ferry(&["run", p.to_str().unwrap()], &[])
        .await
        .assert_code(0);
    for (repo, tag, img) in &fx.tagged {
        let name = repo.trim_start_matches("team/");
        let layout = out.join(name);
        let stored = std::fs::read(
            layout
                .join("blobs/sha256")
                .join(img.digest.trim_start_matches("sha256:")),
        )
        .unwrap();
        assert_eq!(stored, img.bytes, "{repo}:{tag} in the layout");
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
        let entry = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == tag.as_str())
            .unwrap_or_else(|| panic!("{repo}:{tag} listed in index.json"));
        assert_eq!(entry["digest"], img.digest.as_str());
        assert_eq!(entry["mediaType"], img.media_type.as_str());
        // skopeo 1.9 reads only OCI-typed entries of a layout; Docker-typed ones are valid
        // per the image spec and ferry reads them back, as the next step shows.
        if img.media_type.starts_with("application/vnd.oci.") {
            let raw = skopeo_inspect_raw(&format!("oci:{}:{tag}", layout.display()), None).await;
            assert_eq!(raw, img.bytes, "{repo}:{tag} via skopeo");
        }
    }

    // Back into a registry from the layouts: the same digests.
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n{}\n[[copy]]\nfrom = \"oci:{}/*\"\nto = \"{}/back/*\"\n",
            insecure(&[&dst]),
            out.display(),
            dst.addr
        ),
    );
    let run = ferry(&["run", p.to_str().unwrap()], &[]).await;
    run.assert_code(0);
    for (repo, tag, img) in &fx.tagged {
        let target = repo.replacen("team/", "back/", 1);
        assert_copied(&dst, &target, tag, img).await;
    }

    // Layout to layout, one tag renamed; then again: nothing to do.
    let single = dir.path().join("single");
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n[[copy]]\nfrom = \"oci:{}/multi:oci\"\nto = \"oci:{}:release\"\n",
            out.display(),
            single.display()
        ),
    );
    let run = ferry(&["run", p.to_str().unwrap()], &[]).await;
    run.assert_code(0);
    assert!(
        // The index and its signature tag.
        run.summary().starts_with("ferry: 2 images copied"),
        "{}",
        run.summary()
    );
    let raw = skopeo_inspect_raw(&format!("oci:{}:release", single.display()), None).await;
    assert_eq!(raw, fx.image("team/multi", "oci").bytes);
    let run = ferry(&["run", p.to_str().unwrap()], &[]).await;
    assert!(
        run.summary().starts_with(
            "ferry: 0 images copied, 0 already present, 2 unchanged (trusted from the checkpoint)"
        ),
        "{}",
        run.summary()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_layout_blob_is_refused_and_nothing_is_pushed() {
    let dst = Registry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let img = image(
        &[layer(5, 64 * 1024)],
        "linux",
        "amd64",
        Format::Oci,
        "corrupt",
    );
    let layout = dir.path().join("bad");
    write_oci_layout(&layout, &[("v1", &img)]);
    // Flip bytes of the layer: same size, different digest.
    let layer_digest = &img.layers()[0].digest;
    let path = layout
        .join("blobs/sha256")
        .join(layer_digest.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();

    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n{}retries = 0\n[[copy]]\nfrom = \"oci:{}:v1\"\nto = \"{}/x/app\"\n",
            insecure(&[&dst]),
            layout.display(),
            dst.addr
        ),
    );
    let run = ferry(&["run", p.to_str().unwrap()], &[]).await;
    run.assert_code(1);
    assert!(run.stderr.contains("digest mismatch"), "{}", run.stderr);
    assert!(
        !dst.pusher().blob_exists("x/app", layer_digest).await,
        "the bad blob was not stored"
    );
    assert!(
        dst.pusher().manifest("x/app", "v1").await.is_none(),
        "no manifest points at missing content"
    );
}
