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

/// The plans inside the Kubernetes ConfigMaps of deploy/kubernetes: (file name, plan text).
pub(crate) fn configmap_plans() -> Vec<(String, String)> {
    ["retention-cronjob.yaml", "verify-cronjob.yaml"]
        .into_iter()
        .map(|name| {
            let yaml =
                std::fs::read_to_string(repo_root().join("deploy/kubernetes").join(name)).unwrap();
            let start = yaml
                .find("plan.toml: |")
                .unwrap_or_else(|| panic!("{name}: the ConfigMap holds plan.toml"))
                + "plan.toml: |".len();
            let text: String = yaml[start..]
                .lines()
                .skip(1)
                .take_while(|l| l.starts_with("    ") || l.trim().is_empty())
                .map(|l| l.strip_prefix("    ").unwrap_or(l))
                .collect::<Vec<_>>()
                .join("\n");
            (name.to_string(), text)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plans_in_the_kubernetes_configmaps_are_valid() {
    for (name, plan_text) in configmap_plans() {
        let dir = tempfile::tempdir().unwrap();
        let p = plan(dir.path(), &plan_text);
        let run = ferry(&["check", p.to_str().unwrap()], &[]).await;
        assert_eq!(run.code, 0, "{name}: {}", run.stderr);
    }
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
        "{}:6:19: copy.tags.semver: invalid semver constraint: unexpected character '>'",
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
        vec!["verify", "--help"],
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

/// The demo plan, writing into `dir` instead of state/; run it from the repository root.
fn demo_plan(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo_root().join("plans/demo.toml")).unwrap();
    let out = dir.join("demo");
    plan(
        dir,
        &text.replace("oci:state/demo", &format!("oci:{}", out.display())),
    )
}

/// ferry at the repository root (the demo plan's layout path is relative to it).
async fn ferry_at_root(args: &[&str]) -> Run {
    let home = tempfile::tempdir().unwrap();
    let out = ferry_command(args, &[], home.path())
        .current_dir(repo_root())
        .output()
        .await
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Issue 11, item 8: a plan that is not UTF-8 is refused at the position of its first bad
/// byte, not with a bare "stream did not contain valid UTF-8".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_that_is_not_utf8_is_refused_at_the_bad_byte() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("plan.toml");
    std::fs::write(
        &p,
        b"version = 1\n[[copy]]\nfrom = \"r.example/caf\xe9\"\nto = \"r.example/x\"\n",
    )
    .unwrap();
    for cmd in ["check", "plan", "run"] {
        let run = ferry(&[cmd, p.to_str().unwrap()], &[]).await;
        run.assert_code(2);
        assert!(
            run.stderr.contains(&format!(
                "error: {}:3:22: not UTF-8 text (byte 0xE9)",
                p.display()
            )),
            "{cmd}: {}",
            run.stderr
        );
    }
}

/// Issue 21 (what was seen, 6): a path or query in `endpoint` was dropped silently; `check`
/// refuses it (exit 2) naming file:line:column and the field, never the URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_with_a_path_is_refused_at_check() {
    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        "version = 1\n[[copy]]\nfrom = \"r.example/a\"\nto = \"m.example/b\"\n\n[registry.\"m.example\"]\nendpoint = \"https://mirror.example/some/path?x=1\"\n",
    );
    let run = ferry(&["check", p.to_str().unwrap()], &[]).await;
    run.assert_code(2);
    let expected = format!(
        "error: {}:7:12: registry.\"m.example\".endpoint: give scheme, host and port only",
        p.display()
    );
    assert!(run.stderr.starts_with(&expected), "{}", run.stderr);
    assert!(!run.stderr.contains("mirror.example"), "{}", run.stderr);
}

/// Issue 11, item 8: a type error says what the field takes in words, with its range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_error_says_what_is_expected() {
    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        "version = 1\nconcurrency = \"eight\"\n[[copy]]\nfrom = \"r.example/a\"\nto = \"r.example/b\"\n",
    );
    let run = ferry(&["check", p.to_str().unwrap()], &[]).await;
    run.assert_code(2);
    assert_eq!(
        run.stderr.trim_end(),
        format!(
            "error: {}:2:15: concurrency: expected an integer from 1 to 256, found a string",
            p.display()
        )
    );
}

/// Issue 11, item 8: a valid plan with no rule would do nothing, silently; it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_without_rules_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        "version = 1\n[registry.\"r.example\"]\ninsecure = true\n",
    );
    for cmd in ["check", "plan", "run"] {
        let run = ferry(&[cmd, p.to_str().unwrap()], &[]).await;
        run.assert_code(2);
        assert!(
            run.stderr.contains(&format!(
                "{}:4:1: the plan has no [[copy]] or [[retain]] rule: nothing to do",
                p.display()
            )),
            "{cmd}: {}",
            run.stderr
        );
    }
}

/// Issue 11, item 8: a state file that cannot be opened or created is a configuration error
/// (exit 2) naming the path and the reason, not "some items failed" (exit 1); `status` on a
/// missing or unusable state file says so the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_file_that_cannot_be_opened_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = demo_plan(dir.path());
    let p = p.to_str().unwrap();
    let a_file = dir.path().join("a-file");
    std::fs::write(&a_file, "not a directory").unwrap();
    let a_dir = dir.path().join("a-dir.db");
    std::fs::create_dir(&a_dir).unwrap();
    let corrupt = dir.path().join("corrupt.db");
    std::fs::write(&corrupt, vec![b'x'; 8192]).unwrap();
    let cases = [
        (
            "/proc/ferry-no-such-dir/ferry.db".to_string(),
            "No such file or directory",
        ),
        (
            a_file.join("ferry.db").display().to_string(),
            "is a file, not a directory",
        ),
        (a_dir.display().to_string(), "Is a directory"),
        (corrupt.display().to_string(), "not a database"),
    ];
    for (state, reason) in &cases {
        let run = ferry_at_root(&["run", "--state", state, p]).await;
        run.assert_code(2);
        let last = run.stderr.lines().last().unwrap_or("");
        assert!(
            last.starts_with("error: ") && last.contains(state.as_str()) && last.contains(reason),
            "{state}: {}",
            run.stderr
        );
        assert!(run.stdout.is_empty(), "nothing ran: {}", run.stdout);
    }
    for (state, reason) in &cases[2..] {
        let run = ferry(&["status", "--state", state], &[]).await;
        run.assert_code(2);
        assert!(
            run.stderr.contains(state.as_str()) && run.stderr.contains(reason),
            "{}",
            run.stderr
        );
    }
    let missing = dir.path().join("missing.db");
    let run = ferry(&["status", "--state", missing.to_str().unwrap()], &[]).await;
    run.assert_code(2);
    assert!(
        run.stderr.contains(&format!(
            "error: no state file at {}: nothing has run with it yet",
            missing.display()
        )),
        "{}",
        run.stderr
    );
    // The run that can open its state still works, and a write error mid-run stays exit 1
    // (tests/it/crash.rs fills the disk).
    ferry_at_root(&[
        "run",
        "--state",
        dir.path().join("ok.db").to_str().unwrap(),
        p,
    ])
    .await
    .assert_code(0);
}

/// Every line ferry prints under `--log-format json` is a JSON object: the error that ends
/// it (item 8 of issue 11), usage errors, the result lines of `check` and the summary of
/// `run` on stdout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_leave_no_line_of_text() {
    let dir = tempfile::tempdir().unwrap();
    let good = demo_plan(dir.path());
    let good = good.to_str().unwrap();
    let bad_dir = tempfile::tempdir().unwrap();
    let bad = plan(bad_dir.path(), "version = 2\n");
    let bad = bad.to_str().unwrap();
    let missing = dir.path().join("missing.db");
    let state = dir.path().join("ferry.db");
    let cases: Vec<(Vec<&str>, i32)> = vec![
        (vec!["check", bad], 2),
        (vec!["plan", bad], 2),
        (vec!["run", bad], 2),
        (vec!["check", "/nonexistent/plan.toml"], 2),
        (vec!["status", "--state", missing.to_str().unwrap()], 2),
        (vec!["run", "--shard", "3/2", good], 2),
        (vec!["run"], 2),
        (vec!["check", good], 0),
        (vec!["run", "--state", state.to_str().unwrap(), good], 0),
        (
            vec![
                "run",
                "--progress",
                "plain",
                "--state",
                state.to_str().unwrap(),
                good,
            ],
            0,
        ),
    ];
    for (args, code) in cases {
        let mut all = vec!["--log-format", "json"];
        all.extend(&args);
        let run = ferry_at_root(&all).await;
        run.assert_code(code);
        assert!(
            !run.stdout.is_empty() || !run.stderr.is_empty(),
            "{args:?} printed nothing"
        );
        for line in run.stdout.lines().chain(run.stderr.lines()) {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {line}"));
            assert!(v["fields"]["message"].is_string(), "{args:?}: {line}");
            assert!(!line.contains('\u{1b}'), "{args:?}: {line}");
        }
        if code == 2 {
            let last: serde_json::Value =
                serde_json::from_str(run.stderr.lines().last().unwrap()).unwrap();
            assert_eq!(last["level"], "ERROR", "{args:?}");
        }
    }
    // Text stays text.
    let run = ferry(&["check", bad], &[]).await;
    assert!(run.stderr.starts_with("error: "), "{}", run.stderr);
}
