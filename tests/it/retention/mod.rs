//! Retention against the real registry: `ferry plan` shows the decisions, `ferry run` carries
//! out exactly those, and every kept image stays whole (children, signatures, blobs).

use std::sync::Arc;

use reqwest::StatusCode;

use crate::common::*;
use crate::harness::*;

mod hosted;

#[allow(unused_imports)]
use hosted::*;

struct Scenario {
    kept: Vec<(&'static str, Image)>,
    deleted: Vec<Image>,
    shared_child: Image,
}

/// team/app: releases (one a multi-arch index with a signature), `latest`, PR builds (one
/// signed, one also tagged `stable`, one a multi-arch index sharing a child with a release).
async fn scenario(reg: &Registry) -> Scenario {
    scenario_in(reg, "team/app").await
}

async fn scenario_in(reg: &Registry, repo: &str) -> Scenario {
    let p = reg.pusher();
    let Releases {
        v100,
        amd,
        v110,
        v110_sig: (v110_sig_tag, v110_sig),
        pr1,
        pr2,
        pr2_sig: (pr2_sig_tag, pr2_sig),
        pr4_arm,
        pr4,
    } = releases("team/app");
    let v200 = release_image("v2.0.0", 13, Format::Oci);
    let pr3 = release_image("pr-3", 22, Format::Oci);
    for (tag, img) in [
        ("v1.0.0", &v100),
        ("v1.1.0", &v110),
        (v110_sig_tag.as_str(), &v110_sig),
        ("v2.0.0", &v200),
        ("latest", &v200),
        ("pr-1", &pr1),
        ("pr-2", &pr2),
        (pr2_sig_tag.as_str(), &pr2_sig),
        ("pr-3", &pr3),
        ("stable", &pr3),
        ("pr-4", &pr4),
    ] {
        p.push(repo, tag, img).await;
    }
    Scenario {
        kept: vec![
            ("v1.0.0", v100),
            ("v1.1.0", v110),
            ("v2.0.0", v200.clone()),
            ("latest", v200),
            ("stable", pr3),
            (Box::leak(v110_sig_tag.into_boxed_str()), v110_sig),
        ],
        deleted: vec![pr1, pr2, pr2_sig, pr4, pr4_arm],
        shared_child: amd,
    }
}

const RULE: &str = r#"keep_tags = ['^v\d+\.\d+\.\d+$', '^latest$', '^stable$']
delete_tags = ['^pr-\d+$']
older_than = "1d"
max_deletions = 10"#;

fn retain_plan(dir: &std::path::Path, host: &str, rule: &str) -> String {
    let p = plan(
        dir,
        &format!("version = 1\n[registry.\"{host}\"]\ninsecure = true\n[[retain]]\nrepository = \"{host}/team/*\"\n{rule}\n"),
    );
    p.to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_shows_and_run_deletes_exactly_that_leaving_kept_images_whole() {
    let reg = Registry::start().await;
    let s = scenario(&reg).await;
    let dir = tempfile::tempdir().unwrap();
    let p = retain_plan(dir.path(), &reg.addr, RULE);

    let shown = ferry(&["plan", &p, "--output", "json"], &[]).await;
    shown.assert_code(0);
    let v: serde_json::Value = serde_json::from_str(&shown.stdout).unwrap();
    let decisions = v["retention"][0]["decisions"].as_array().unwrap();
    let planned: std::collections::BTreeSet<String> = decisions
        .iter()
        .filter(|d| d["action"] == "delete")
        .map(|d| d["digest"].as_str().unwrap().to_string())
        .collect();
    let expected: std::collections::BTreeSet<String> =
        s.deleted.iter().map(|i| i.digest.clone()).collect();
    assert_eq!(planned, expected, "{}", shown.stdout);
    let text = ferry(&["plan", &p], &[]).await;
    assert!(
        text.stdout.contains("delete: matches ^pr-\\d+$"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("kept: tag stable matches ^stable$"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("kept: signature of v1.1.0"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("delete: signature of deleted pr-2"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("(linux/amd64)"), "{}", text.stdout);

    let run = ferry(&["run", "--progress", "plain", &p], &[]).await;
    run.assert_code(0);
    assert!(
        run.summary()
            .contains(&format!("{} deleted", expected.len())),
        "{}",
        run.summary()
    );
    let pusher = reg.pusher();
    for img in &s.deleted {
        assert!(
            pusher.manifest("team/app", &img.digest).await.is_none(),
            "{} deleted",
            img.digest
        );
    }
    for (tag, img) in &s.kept {
        assert_copied(&reg, "team/app", tag, img).await;
    }
    // The child pr-4 shared with v1.1.0 is still there, and v1.1.0 reads whole elsewhere too.
    assert!(pusher
        .manifest("team/app", &s.shared_child.digest)
        .await
        .is_some());
    let raw = skopeo_inspect_raw(&format!("docker://{}/team/app:v1.1.0", reg.addr), None).await;
    assert_eq!(raw, s.kept[1].1.bytes);
    // pr-3 is also `stable`: decisions are per image, so it stays with both tags.
    let pr_tags: Vec<String> = pusher
        .tags("team/app")
        .await
        .into_iter()
        .filter(|t| t.starts_with("pr-"))
        .collect();
    assert_eq!(pr_tags, vec!["pr-3"]);

    // The deletions are on record.
    let status = ferry(&["status", &p, "--output", "json"], &[]).await;
    let v: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(v["totals"]["deleted"], expected.len());
    assert_eq!(v["deletions"].as_array().unwrap().len(), expected.len());
    assert!(v["deletions"][0]["reason"]
        .as_str()
        .unwrap()
        .starts_with("delete: "));

    // The same plan again: nothing left to delete.
    let again = ferry(&["run", &p], &[]).await;
    again.assert_code(0);
    assert!(
        again.summary().contains(", 0 deleted"),
        "{}",
        again.summary()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_deletions_holds_everything_back() {
    let reg = Registry::start().await;
    let s = scenario(&reg).await;
    let dir = tempfile::tempdir().unwrap();
    let p = retain_plan(
        dir.path(),
        &reg.addr,
        &RULE.replace("max_deletions = 10", "max_deletions = 2"),
    );
    let report = dir.path().join("report.json");
    let metrics = dir.path().join("ferry.prom");
    let (r, m) = (report.to_str().unwrap(), metrics.to_str().unwrap());
    let run = ferry(&["run", "--report", r, "--metrics", m, &p], &[]).await;
    run.assert_code(1);
    assert!(
        run.stderr.contains("exceed max_deletions = 2"),
        "{}",
        run.stderr
    );
    // Issue 21, "What was seen" 6: a run that exits 1 never says "0 failed". The rule held
    // back is one failure, in the summary, the report and `ferry_failures`; no image failed.
    assert_failed_lines_counted(&run, 1);
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(v["totals"]["failed"], 1, "{}", v["totals"]);
    assert_eq!(v["failures"].as_array().unwrap().len(), 1);
    let text = std::fs::read_to_string(&metrics).unwrap();
    // Issue 26 (alerts): the valve is a gauge of its own; no [in_use] source failed.
    for sample in [
        "ferry_images{outcome=\"failed\"} 0\n",
        "ferry_failures 1\n",
        "ferry_deletions_held_back 1\n",
        "ferry_in_use_sources_unreadable 0\n",
    ] {
        assert!(text.contains(sample), "{sample}: {text}");
    }
    for img in &s.deleted {
        assert!(
            reg.pusher()
                .manifest("team/app", &img.digest)
                .await
                .is_some(),
            "nothing was deleted"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_refuses_deletes_names_the_setting() {
    let reg = Registry::start().await;
    scenario(&reg).await;
    let proxy = Proxy::start(
        &reg.url,
        Arc::new(|m, _, _| {
            if m == "DELETE" {
                Action::registry_error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "UNSUPPORTED",
                    "The operation is unsupported.",
                )
            } else {
                Action::Forward
            }
        }),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let p = retain_plan(dir.path(), &proxy.addr, RULE);
    let run = ferry(&["run", &p], &[]).await;
    run.assert_code(1);
    assert!(
        run.stderr.contains("storage.delete.enabled"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("405: UNSUPPORTED"), "{}", run.stderr);
    // Issue 21, "What was seen" 6: each failed deletion counts in the summary.
    assert_failed_lines_counted(&run, 1);
}

/// The summary's "N failed" is the number of `failed:` lines above it, and at least `min`.
fn assert_failed_lines_counted(run: &Run, min: usize) {
    let lines = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("failed: "))
        .count();
    assert!(lines >= min, "{}", run.stderr);
    assert!(
        run.summary().contains(&format!(", {lines} failed")),
        "{lines} failure lines: {}\n{}",
        run.summary(),
        run.stderr
    );
}

/// A mirror kept by one plan: the copy brings the releases, the policy prunes the PR builds
/// that were pushed to the mirror by hand. The copy leaves out what the policy deletes, so the
/// two agree (issue 11).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_plan_copies_then_prunes_the_mirror() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let s = scenario(&src).await;
    let old = scenario_in(&dst, "mirror/app").await;
    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n{}\n[[copy]]\nfrom = \"{}/team/app\"\nto = \"{d}/mirror/app\"\ntags = {{ exclude = ['^pr-'] }}\n\n[[retain]]\nrepository = \"{d}/mirror/app\"\n{RULE}\n",
            insecure(&[&src, &dst]),
            src.addr,
            d = dst.addr
        ),
    );
    let shown = ferry(&["plan", p.to_str().unwrap()], &[]).await;
    shown.assert_code(0);
    let run = ferry(&["run", p.to_str().unwrap()], &[]).await;
    run.assert_code(0);
    // The same images are at both (the fixtures are deterministic): every release tag and
    // its signature is present already, the PR builds go.
    assert!(
        run.summary().starts_with(&format!(
            "ferry: 0 images copied, 6 already present, 0 failed, {} deleted",
            s.deleted.len()
        )),
        "{}\n{}",
        run.summary(),
        run.stderr
    );
    assert!(
        shown
            .stdout
            .contains(&format!("{} to delete, 0 errors", s.deleted.len())),
        "{}",
        shown.stdout
    );
    for (tag, img) in &s.kept {
        assert_copied(&dst, "mirror/app", tag, img).await;
    }
    for img in &old.deleted {
        assert!(dst
            .pusher()
            .manifest("mirror/app", &img.digest)
            .await
            .is_none());
    }
}

/// Issue 11, item 1: a policy that deletes what a copy of the same plan brings. Where the plan
/// alone shows it, `ferry check` refuses it; where only the registry shows it, the run keeps
/// what the copy wrote, says which two rules fight, and exits 1, and the next run finds
/// everything where the report said it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_never_deletes_what_a_copy_of_the_plan_writes() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let s = scenario(&src).await;
    let dir = tempfile::tempdir().unwrap();
    let text = |rule: &str| {
        format!(
            "version = 1\n{}\n[[copy]]\nfrom = \"{}/team/app\"\nto = \"{d}/mirror/app\"\n\n[[retain]]\nrepository = \"{d}/mirror/app\"\n{rule}\n",
            insecure(&[&src, &dst]),
            src.addr,
            d = dst.addr
        )
    };
    // Known from the plan: every tag copied, the newest 1 kept.
    let p = plan(dir.path(), &text("keep_newest = 1"));
    let check = ferry(&["check", p.to_str().unwrap()], &[]).await;
    check.assert_code(2);
    assert!(
        check.stderr.contains("retain #1 deletes what copy #1")
            && check.stderr.contains("tags = { newest = 1 }"),
        "{}",
        check.stderr
    );
    // Known only from the registry: which tags match the patterns.
    let p = plan(dir.path(), &text(RULE));
    let p = p.to_str().unwrap();
    let report = dir.path().join("report.json");
    let shown = ferry(&["plan", p], &[]).await;
    shown.assert_code(1);
    let run = ferry(&["run", p, "--report", report.to_str().unwrap()], &[]).await;
    run.assert_code(1);
    // Issue 21, "What was seen" 6: the conflicts are failures of the summary too.
    assert!(
        run.summary()
            .starts_with("ferry: 11 images copied, 0 already present, "),
        "{}",
        run.summary()
    );
    assert_failed_lines_counted(&run, 3);
    assert!(
        run.summary().contains(" failed, 0 deleted;"),
        "{}",
        run.summary()
    );
    for tag in ["pr-1", "pr-2", "pr-4"] {
        let line = run
            .stderr
            .lines()
            .find(|l| l.contains("would delete") && l.contains(&format!("({tag})")))
            .unwrap_or_else(|| panic!("no conflict for {tag}:\n{}", run.stderr));
        assert!(
            line.contains("retain #1") && line.contains("copy #1"),
            "{line}"
        );
        assert!(
            shown.stdout.contains(line.trim_start_matches("failed: ")),
            "{}",
            shown.stdout
        );
    }
    // Everything the report calls copied is there, and stays there on the next run.
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert!(v["deletions"].as_array().unwrap().is_empty());
    for img in &s.deleted {
        assert!(dst
            .pusher()
            .manifest("mirror/app", &img.digest)
            .await
            .is_some());
    }
    let again = ferry(&["run", p], &[]).await;
    again.assert_code(1);
    assert!(
        again.summary().starts_with(
            "ferry: 0 images copied, 0 already present, 11 unchanged (trusted from the checkpoint), "
        ),
        "{}",
        again.summary()
    );
    assert_failed_lines_counted(&again, 3);
    assert!(
        again.summary().contains(" failed, 0 deleted;"),
        "{}",
        again.summary()
    );
}
