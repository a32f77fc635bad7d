//! The example plans, the demo, `ferry check` and `--help`.

use std::path::{Path, PathBuf};

use crate::common::*;
use crate::harness::*;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_plan_in_plans_dir_is_valid() {
    let mut checked = 0;
    for entry in std::fs::read_dir(repo_root().join("plans")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let run = ferry(&["check", path.to_str().unwrap()], &[]).await;
        run.assert_code(0);
        assert!(run.stdout.contains("valid plan"), "{}", run.stdout);
        checked += 1;
    }
    assert!(
        checked >= 2,
        "plans/ holds the demo and the Docker Hub to GHCR example"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_in_the_kubernetes_configmap_is_valid() {
    let yaml =
        std::fs::read_to_string(repo_root().join("deploy/kubernetes/retention-cronjob.yaml"))
            .unwrap();
    let start = yaml
        .find("plan.toml: |")
        .expect("the ConfigMap holds plan.toml")
        + "plan.toml: |".len();
    let plan_text: String = yaml[start..]
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("    ") || l.trim().is_empty())
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let dir = tempfile::tempdir().unwrap();
    let p = plan(dir.path(), &plan_text);
    let run = ferry(&["check", p.to_str().unwrap()], &[]).await;
    run.assert_code(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_plan_copies_the_bundled_layout() {
    // The demo writes under state/; here the same plan writes to a temporary directory.
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo_root().join("plans/demo.toml")).unwrap();
    let out = dir.path().join("demo");
    let text = text.replace("oci:state/demo", &format!("oci:{}", out.display()));
    let p = plan(dir.path(), &text);
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry"));
    let output = cmd
        .args(["run", p.to_str().unwrap()])
        .env("FERRY_STATE", dir.path().join("ferry.db"))
        .current_dir(repo_root())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.starts_with("ferry: 3 images copied, 0 already present, 0 failed"),
        "{stdout}"
    );
    for tag in ["1.0.0", "1.1.0"] {
        let ours = skopeo_inspect_raw(&format!("oci:{}:{tag}", out.display()), None).await;
        let bundled = skopeo_inspect_raw(
            &format!(
                "oci:{}:{tag}",
                repo_root().join("plans/demo/layout").display()
            ),
            None,
        )
        .await;
        assert_eq!(ours, bundled, "{tag}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_bad_plans_with_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        "version = 1\n\n[[copy]]\nfrom = \"ghcr.io/org/app\"\nto = \"quay.io/org/app\"\ntags = { semver = \">>1\" }\n",
    );
    let run = ferry(&["check", p.to_str().unwrap()], &[]).await;
    run.assert_code(2);
    let expected = format!(
        "{}:6:19: copy.tags.semver = \">>1\": invalid semver constraint",
        p.display()
    );
    assert!(run.stderr.contains(&expected), "{}", run.stderr);

    let p = plan(dir.path(), "version = 2\n");
    let run = ferry(&["check", p.to_str().unwrap()], &[]).await;
    run.assert_code(2);
    assert!(
        run.stderr.contains("this ferry reads plan version 1 only"),
        "{}",
        run.stderr
    );

    // `run` refuses the same way, before touching any registry.
    let run = ferry(&["run", p.to_str().unwrap()], &[]).await;
    run.assert_code(2);

    let run = ferry(&["check", "/nonexistent/plan.toml"], &[]).await;
    run.assert_code(2);
    assert!(
        run.stderr
            .contains("cannot read plan /nonexistent/plan.toml"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subcommand_has_help_with_an_example() {
    for args in [
        vec!["--help"],
        vec!["run", "--help"],
        vec!["check", "--help"],
    ] {
        let run = ferry(&args, &[]).await;
        run.assert_code(0);
        assert!(run.stdout.contains("Example"), "{args:?}: {}", run.stdout);
    }
    ferry(&["run"], &[]).await.assert_code(2);
}

/// Writes plans/demo/layout. Deterministic: running it again changes nothing.
/// `cargo test --test it regenerate_demo_layout -- --ignored`
#[test]
#[ignore = "regenerates the bundled demo layout"]
fn regenerate_demo_layout() {
    let dir = repo_root().join("plans/demo/layout");
    let _ = std::fs::remove_dir_all(&dir);
    let (images, tags) = demo_images();
    let refs: Vec<(&str, &Image)> = tags.iter().map(|t| t.as_str()).zip(images.iter()).collect();
    write_oci_layout(Path::new(&dir), &refs);
}

fn demo_images() -> (Vec<Image>, Vec<String>) {
    let base = layer(1, 24 * 1024);
    let v1 = image(
        &[base.clone(), layer(2, 8 * 1024)],
        "linux",
        "amd64",
        Format::Oci,
        "demo-1.0.0",
    );
    let plats = vec![
        image(
            &[base.clone(), layer(3, 8 * 1024)],
            "linux",
            "amd64",
            Format::Oci,
            "demo-1.1.0",
        ),
        image(
            &[base, layer(4, 8 * 1024)],
            "linux",
            "arm64",
            Format::Oci,
            "demo-1.1.0",
        ),
    ];
    let v11 = index(plats, Format::Oci);
    let (sig_tag, sig) = cosign_signature(&v11, "demo");
    (
        vec![v1, v11, sig],
        vec!["1.0.0".into(), "1.1.0".into(), sig_tag],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo_root().join("plans/demo.toml")).unwrap();
    let out = dir.path().join("demo");
    let text = text.replace("oci:state/demo", &format!("oci:{}", out.display()));
    let p = plan(dir.path(), &text);
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "--log-format",
            "json",
            "run",
            "--progress",
            "plain",
            p.to_str().unwrap(),
        ])
        .env("FERRY_STATE", dir.path().join("ferry.db"))
        .current_dir(repo_root())
        .output()
        .await
        .unwrap();
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(lines.len() >= 4, "{stderr}");
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v["timestamp"].is_string() && v["fields"]["message"].is_string(),
            "{line}"
        );
        assert!(!line.contains('\u{1b}'), "no control characters: {line}");
    }
}
