//! What users read, pinned: `--help` of every command, error messages for bad plans, and
//! `ferry plan` output. Filters hide what changes from run to run (ports, paths, digests,
//! times). Update with `INSTA_UPDATE=always cargo test --test it snapshots` and review the diff.

use crate::common::*;
use crate::harness::*;

fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.add_filter(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT");
    s.add_filter(r"/tmp/\.tmp[A-Za-z0-9]+", "/tmp/DIR");
    s.add_filter(r"sha256:[0-9a-f]{12,64}", "sha256:DIGEST");
    s.add_filter(r"sha256-[0-9a-f]{64}", "sha256-DIGEST");
    s.add_filter(r"\d+ days old", "N days old");
    s.set_snapshot_path("snapshots");
    s.set_prepend_module_to_snapshot(false);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_texts() {
    for (name, args) in [
        ("help", vec!["--help"]),
        ("help_run", vec!["run", "--help"]),
        ("help_check", vec!["check", "--help"]),
        ("help_plan", vec!["plan", "--help"]),
        ("help_status", vec!["status", "--help"]),
        ("help_verify", vec!["verify", "--help"]),
        ("help_restore", vec!["restore", "--help"]),
        ("help_report_merge", vec!["report", "merge", "--help"]),
        ("help_report_show", vec!["report", "show", "--help"]),
        ("help_schema", vec!["schema", "--help"]),
    ] {
        let run = ferry(&args, &[]).await;
        run.assert_code(0);
        settings().bind(|| insta::assert_snapshot!(name, run.stdout));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("error_version", "version = 2\n"),
        ("error_unknown_field", "version = 1\n[[copy]]\nfrom = \"a.io/x\"\nto = \"b.io/x\"\ntag = \"v1\"\n"),
        ("error_regex", "version = 1\n[[copy]]\nfrom = \"a.io/x\"\nto = \"b.io/x\"\ntags = { include = ['(v1'] }\n"),
        ("error_reference", "version = 1\n[[copy]]\nfrom = \"a.io/X\"\nto = \"b.io/x\"\n"),
        ("error_wildcard_shape", "version = 1\n[[copy]]\nfrom = \"a.io/org/*\"\nto = \"b.io/x\"\n"),
        ("error_retain_tag", "version = 1\n[[retain]]\nrepository = \"a.io/org/app:v1\"\n"),
        ("error_type", "version = 1\nconcurrency = \"eight\"\n[[copy]]\nfrom = \"a.io/x\"\nto = \"b.io/x\"\n"),
        ("error_secret_field", "version = 1\n[registry.\"a.io\"]\npassword = \"hunter2\"\n[[copy]]\nfrom = \"a.io/x\"\nto = \"b.io/x\"\n"),
        ("error_no_rules", "version = 1\n[registry.\"a.io\"]\ninsecure = true\n"),
    ];
    for (name, text) in cases {
        let p = plan(dir.path(), text);
        let run = ferry(&["check", p.to_str().unwrap()], &[]).await;
        run.assert_code(2);
        settings().bind(|| insta::assert_snapshot!(name, run.stderr));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_output() {
    let reg = Registry::start().await;
    let dst = Registry::start().await;
    let fx = populate(&reg, "team").await;
    let _ = fx;
    let dir = tempfile::tempdir().unwrap();
    // Issue 21, "What was seen" 6: a registry section no rule uses gets no line.
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n{}[registry.\"unused.example\"]\ninsecure = true\n\n[[copy]]\nfrom = \"{s}/team/api\"\nto = \"{d}/team/api\"\ntags = {{ semver = \">=1.2\" }}\n\n[[retain]]\nrepository = \"{s}/team/api\"\nkeep_newest = 2\ndelete_tags = ['^v']\n",
            insecure(&[&reg, &dst]),
            s = reg.addr,
            d = dst.addr
        ),
    );
    let run = ferry(&["plan", p.to_str().unwrap()], &[]).await;
    run.assert_code(0);
    // Copies resolve concurrently, and the two registries' ports decide the order of their
    // lines: sort both groups so the snapshot is stable.
    let port = regex::Regex::new(r"127\.0\.0\.1:\d+").unwrap();
    let normalized = port.replace_all(&run.stdout, "127.0.0.1:PORT").into_owned();
    let mut lines: Vec<&str> = normalized.lines().collect();
    let copies = lines.iter().take_while(|l| l.starts_with("copy ")).count();
    lines[..copies].sort();
    let first_registry = lines
        .iter()
        .position(|l| l.starts_with("registry "))
        .unwrap();
    let registries = lines[first_registry..]
        .iter()
        .take_while(|l| l.starts_with("registry "))
        .count();
    lines[first_registry..first_registry + registries].sort();
    settings().bind(|| insta::assert_snapshot!("plan_output", lines.join("\n")));
}
