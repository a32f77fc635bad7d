//! In-use protection against a real registry: images referenced by GitOps files (and, with
//! the fake Kubernetes API, run by pods or named by workloads) are kept with the reason, and
//! a source that cannot be read whole deletes nothing and fails the run.

use crate::common::*;
use crate::harness::*;

mod argocd;
mod cluster;

#[allow(unused_imports)]
use cluster::*;

/// `team/api` with v1.0.0, v1.0.1 and v1.0.2, each its own single-platform image.
async fn releases(reg: &Registry) -> Vec<Image> {
    let mut out = Vec::new();
    for (i, tag) in ["v1.0.0", "v1.0.1", "v1.0.2"].iter().enumerate() {
        let img = image(
            &[layer(1400 + i as u64, 2048)],
            "linux",
            "amd64",
            Format::Oci,
            tag,
        );
        reg.pusher().push("team/api", tag, &img).await;
        out.push(img);
    }
    out
}

/// A plan whose retention would delete v1.0.0 and v1.0.1, with `in_use` appended.
fn plan_with(dir: &std::path::Path, host: &str, in_use: &str) -> String {
    plan(
        dir,
        &format!(
            "version = 1\n[registry.\"{host}\"]\ninsecure = true\n[[retain]]\nrepository = \"{host}/team/api\"\ndelete_tags = ['^v1\\.0\\.[01]$']\n{in_use}"
        ),
    )
    .to_str()
    .unwrap()
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_a_gitops_file_references_is_kept_and_says_where() {
    let reg = Registry::start().await;
    let imgs = releases(&reg).await;
    let dir = tempfile::tempdir().unwrap();
    let deploy = dir.path().join("deploy/api");
    std::fs::create_dir_all(&deploy).unwrap();
    std::fs::write(
        deploy.join("deployment.yaml"),
        format!(
            "kind: Deployment\nspec:\n  template:\n    spec:\n      containers:\n        - name: api\n          image: {}/team/api:v1.0.1\n",
            reg.addr
        ),
    )
    .unwrap();
    let p = plan_with(
        dir.path(),
        &reg.addr,
        &format!(
            "[in_use]\nfiles = [\"{}/deploy/**/*.yaml\"]\n",
            dir.path().display()
        ),
    );

    let shown = ferry(&["plan", &p], &[]).await;
    shown.assert_code(0);
    let line = format!(
        "referenced in {}:7",
        deploy.join("deployment.yaml").display()
    );
    assert!(
        shown.stdout.contains(&format!("kept: {line}")),
        "{}",
        shown.stdout
    );
    let json = ferry(&["plan", &p, "--output", "json"], &[]).await;
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["totals"]["kept_in_use"], 1, "{v}");
    assert_eq!(v["totals"]["delete"], 1, "{v}");

    let report = dir.path().join("report.json");
    let run = ferry(&["run", "--report", report.to_str().unwrap(), &p], &[]).await;
    run.assert_code(0);
    let pusher = reg.pusher();
    assert!(pusher.manifest("team/api", "v1.0.0").await.is_none());
    for (tag, img) in [("v1.0.1", &imgs[1]), ("v1.0.2", &imgs[2])] {
        let (_, _, d) = pusher.manifest("team/api", tag).await.expect(tag);
        assert_eq!(d, img.digest);
    }
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["totals"]["kept_in_use"], 1, "{r}");
    assert_eq!(r["totals"]["deleted"], 1, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_cannot_be_read_deletes_nothing_and_fails_the_run() {
    let reg = Registry::start().await;
    releases(&reg).await;
    let dir = tempfile::tempdir().unwrap();
    // A renamed directory: the pattern matches nothing.
    let p = plan_with(
        dir.path(),
        &reg.addr,
        &format!(
            "[in_use]\nfiles = [\"{}/gone/*.yaml\"]\n",
            dir.path().display()
        ),
    );
    let checked = ferry(&["check", "--online", &p], &[]).await;
    assert_ne!(checked.code, 0, "{}", checked.stdout);
    assert!(
        checked.stdout.contains("in use: files (plan line 8)")
            && checked.stdout.contains("matches no file"),
        "{}",
        checked.stdout
    );
    let metrics = dir.path().join("ferry.prom");
    let run = assert_held(
        &p,
        &["--metrics", metrics.to_str().unwrap()],
        "in use: in_use.files (plan line 8): the pattern matches no file",
    )
    .await;
    // Issue 26 (alerts): the unreadable source is a gauge of its own, apart from the
    // max_deletions valve (which held nothing back here).
    let text = std::fs::read_to_string(&metrics).unwrap();
    for sample in [
        "ferry_in_use_sources_unreadable 1\n",
        "ferry_deletions_held_back 0\n",
    ] {
        assert!(text.contains(sample), "{sample}: {text}");
    }
    // Issue 21, "What was seen" 6: the run exits 1 for it, and its summary counts every
    // `failed:` line (the source, and what it held back), never "0 failed".
    let lines = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("failed: "))
        .count();
    let failed = format!(", {lines} failed");
    assert!(
        lines > 0 && run.summary().contains(&failed),
        "{}\n{}",
        run.summary(),
        run.stderr
    );
    let pusher = reg.pusher();
    for tag in ["v1.0.0", "v1.0.1", "v1.0.2"] {
        assert!(
            pusher.manifest("team/api", tag).await.is_some(),
            "{tag} deleted"
        );
    }
}

/// An `[in_use]` source that cannot be read holds retention back: `plan` exits 1 saying what
/// it keeps for that, and `run` (with `args` before the plan) exits 1 naming the source with
/// `says`. The run's output.
pub(super) async fn assert_held(plan: &str, args: &[&str], says: &str) -> Run {
    let shown = ferry(&["plan", plan], &[]).await;
    shown.assert_code(1);
    assert!(
        shown
            .stdout
            .contains("kept: an [in_use] source could not be read whole"),
        "{}",
        shown.stdout
    );
    let run = ferry(&[&["run"], args, &[plan]].concat(), &[]).await;
    run.assert_code(1);
    assert!(run.stderr.contains(says), "{}", run.stderr);
    run
}

/// `team/api` v1.0.0 … v1.0.5; the policy would delete v1.0.0 … v1.0.4.
/// Every one of the six releases is still there.
async fn assert_nothing_deleted(reg: &Registry) {
    let pusher = reg.pusher();
    for i in 0..6 {
        let tag = format!("v1.0.{i}");
        assert!(
            pusher.manifest("team/api", &tag).await.is_some(),
            "{tag} deleted"
        );
    }
}
