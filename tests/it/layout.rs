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

/// The entries of a directory, sorted.
fn entries(dir: &std::path::Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

/// `ferry plan --output json` and `ferry run --report` of plan `p`: both exit codes, and
/// (target, action in the run's words, error) of every item of each, sorted.
async fn plan_and_run(p: &std::path::Path) -> [(i32, Vec<(String, String, String)>); 2] {
    let p = p.to_str().unwrap();
    let shown = ferry(&["plan", "--output", "json", p], &[]).await;
    let report = std::path::Path::new(p).with_file_name("report.json");
    let run = ferry(&["run", "--report", report.to_str().unwrap(), p], &[]).await;
    let rows = |items: &serde_json::Value, planned: bool| {
        let mut out: Vec<(String, String, String)> = items
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                let action = match (planned, i["action"].as_str().unwrap()) {
                    (true, "copy") => "copied",
                    (true, "skip") => "skipped",
                    (true, "error") => "failed",
                    (_, other) => other,
                };
                let error = i["error"].as_str().unwrap_or_default().to_string();
                (
                    i["target"].as_str().unwrap().to_string(),
                    action.to_string(),
                    error,
                )
            })
            .collect();
        out.sort();
        out
    };
    let planned: serde_json::Value = serde_json::from_str(&shown.stdout)
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", shown.stdout, shown.stderr));
    let reported: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    [
        (shown.code, rows(&planned["copies"], true)),
        (run.code, rows(&reported["items"], false)),
    ]
}

/// What ferry says of an `oci:` target directory that holds other files.
fn refusal(dir: &std::path::Path) -> String {
    format!(
        "oci:{}: a directory of other files, not an OCI image layout (no oci-layout file)",
        dir.display()
    )
}

/// Issue 21, item 6: an `oci:` target that is an existing directory of other files (no
/// `oci-layout` file, not empty) is refused, its items fail naming it, and nothing is
/// written there; a missing or empty directory and an existing layout are written to.
/// `ferry plan` says the same, item for item.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oci_target_that_holds_other_files_is_refused() {
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plans/demo/layout");
    let dir = tempfile::tempdir().unwrap();
    let projects = dir.path().join("projects");
    std::fs::create_dir_all(projects.join("src")).unwrap();
    std::fs::write(projects.join("notes.txt"), "mine").unwrap();
    std::fs::write(projects.join("src/main.rs"), "fn main() {}").unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let missing = dir.path().join("missing");
    let existing = dir.path().join("existing");
    copy_dir(&demo, &existing);
    let mut text = String::from("version = 1\n");
    for to in [&projects, &empty, &missing, &existing] {
        text += &format!(
            "[[copy]]\nfrom = \"oci:{}\"\nto = \"oci:{}\"\n",
            demo.display(),
            to.display()
        );
    }
    let p = plan(dir.path(), &text);

    let [planned, ran] = plan_and_run(&p).await;
    assert_eq!(planned, ran, "ferry plan and ferry run disagree");
    assert_eq!(ran.0, 1);
    let why = refusal(&projects);
    for (target, action, error) in &ran.1 {
        let refused = target.starts_with(&format!("oci:{}:", projects.display()));
        match (refused, action.as_str()) {
            // The signature waits for the index it signs, which failed.
            (true, "failed") => assert!(error.contains(&why), "{target}: {error}"),
            (true, "skipped") => assert!(error.contains("failed"), "{target}: {error}"),
            (false, "copied" | "present") => {}
            _ => panic!("{target}: {action} {error}"),
        }
    }
    assert_eq!(entries(&projects), vec!["notes.txt", "src"]);
    assert_eq!(entries(&projects.join("src")), vec!["main.rs"]);
    for layout in [&empty, &missing, &existing] {
        assert!(layout.join("oci-layout").is_file(), "{}", layout.display());
    }
    // `ferry check --online` refuses it too.
    let checked = ferry(&["check", "--online", p.to_str().unwrap()], &[]).await;
    checked.assert_code(3);
    assert!(checked.stdout.contains(&why), "{}", checked.stdout);
    assert_eq!(entries(&projects), vec!["notes.txt", "src"]);
}

/// Issue 21, item 6, for a wildcard target: each repository's directory is checked (the
/// directory holding them may hold anything), so one that holds other files fails its items
/// while the others are written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_oci_target_refuses_each_repository_directory_that_holds_other_files() {
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plans/demo/layout");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    for repo in ["app", "web", "team/api"] {
        copy_dir(&demo, &src.join(repo));
    }
    let out = dir.path().join("out");
    std::fs::create_dir_all(out.join("app")).unwrap();
    std::fs::write(out.join("README.md"), "layouts below").unwrap();
    std::fs::write(out.join("app/build.log"), "mine").unwrap();
    // `team` holds one layout already: a directory of layouts is no directory of other files.
    copy_dir(&demo, &out.join("team/old"));
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n[[copy]]\nfrom = \"oci:{}/*\"\nto = \"oci:{}/*\"\n",
            src.display(),
            out.display()
        ),
    );

    let [planned, ran] = plan_and_run(&p).await;
    assert_eq!(planned, ran, "ferry plan and ferry run disagree");
    assert_eq!(ran.0, 1);
    let why = refusal(&out.join("app"));
    for (target, action, error) in &ran.1 {
        let refused = target.starts_with(&format!("oci:{}:", out.join("app").display()));
        match (refused, action.as_str()) {
            (true, "failed") => assert!(error.contains(&why), "{target}: {error}"),
            (true, "skipped") => assert!(error.contains("failed"), "{target}: {error}"),
            (false, "copied") => {}
            _ => panic!("{target}: {action} {error}"),
        }
    }
    assert_eq!(entries(&out), vec!["README.md", "app", "team", "web"]);
    assert_eq!(entries(&out.join("app")), vec!["build.log"]);
    assert!(out.join("web/oci-layout").is_file());
    assert!(out.join("team/api/oci-layout").is_file());
}
