//! Pruning against the real registry: a mirror of four repositories drifts at the source
//! (two tags deleted, one repository removed) and by hand at the target (a foreign tag, a
//! mirrored tag pushed over). The next runs delete exactly what ferry copied and the source no
//! longer has, once `older_than` has passed, keep what is not ferry's, keep every child and
//! signature a kept tag reaches, and `ferry plan` says exactly that first.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::common::*;
use crate::harness::*;

struct Mirror {
    src: Registry,
    dst: Registry,
    dir: tempfile::TempDir,
    plan: String,
    state: String,
    report: String,
    /// org/a v1.0.1: a multi-arch index with a cosign signature, kept.
    kept_index: Image,
    kept_sig: (String, Image),
    /// The child org/a v1.0.2 (deleted) shares with v1.0.1 (kept).
    shared_child: Image,
    /// org/a v1.0.2's own child, deleted with it.
    lone_child: Image,
    /// What mirror/d:v1.0.0 holds after someone pushed over it.
    pushed_over: Image,
}

fn single(seed: u64, label: &str) -> Image {
    image(
        &[layer(1, 4096), layer(seed, 1024)],
        "linux",
        "amd64",
        Format::Oci,
        label,
    )
}

fn arm(seed: u64, label: &str) -> Image {
    image(
        &[layer(1, 4096), layer(seed, 1024)],
        "linux",
        "arm64",
        Format::Oci,
        label,
    )
}

/// Delete a manifest by digest at a registry, as an operator would.
async fn delete(reg: &Registry, repo: &str, digest: &str) {
    let resp = reg
        .pusher()
        .send(
            Method::DELETE,
            &format!("/v2/{repo}/manifests/{digest}"),
            &[],
            None,
        )
        .await;
    assert_eq!(
        resp.status(),
        StatusCode::ACCEPTED,
        "DELETE {repo}@{digest}"
    );
}

async fn mirror(older_than: &str) -> Mirror {
    let src = Registry::start().await;
    let dst = Registry::start().await;
    let p = src.pusher();
    let amd = single(10, "a-amd");
    let shared_child = amd.clone();
    let kept_index = index(vec![amd.clone(), arm(11, "a-arm")], Format::Oci);
    let lone_child = arm(12, "a-arm-2");
    let doomed_index = index(vec![amd, lone_child.clone()], Format::Oci);
    let kept_sig = cosign_signature(&kept_index, "org/a");
    p.push("org/a", "v1.0.0", &single(13, "a-1.0.0")).await;
    p.push("org/a", "v1.0.1", &kept_index).await;
    p.push("org/a", &kept_sig.0, &kept_sig.1).await;
    p.push("org/a", "v1.0.2", &doomed_index).await;
    p.push("org/a", "dev", &single(14, "a-dev")).await;
    let b = single(20, "b");
    p.push("org/b", "v1.0.0", &b).await;
    p.push("org/b", "v1.0.1", &b).await;
    p.push("org/c", "v1.0.0", &single(30, "c")).await;
    p.push("org/c", "v1.1.0", &single(31, "c-1.1")).await;
    p.push("org/d", "v1.0.0", &single(40, "d")).await;
    p.push("org/d", "v2.0.0", &single(41, "d-2")).await;

    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db").display().to_string();
    let report = dir.path().join("report.json").display().to_string();
    let plan = plan(
        dir.path(),
        &format!(
            "version = 1\n{}\n[[copy]]\nfrom = \"{}/org/*\"\nto = \"{}/mirror/*\"\ntags = {{ include = ['^v\\d+\\.\\d+\\.\\d+$'] }}\nprune = {{ older_than = \"{older_than}\", max_deletions = 10 }}\n",
            insecure(&[&src, &dst]),
            src.addr,
            dst.addr
        ),
    )
    .display()
    .to_string();
    Mirror {
        src,
        dst,
        dir,
        plan,
        state,
        report,
        kept_index,
        kept_sig,
        shared_child,
        lone_child,
        pushed_over: single(42, "by hand"),
    }
}

impl Mirror {
    async fn run(&self) -> Run {
        ferry(
            &[
                "run",
                &self.plan,
                "--state",
                &self.state,
                "--report",
                &self.report,
            ],
            &[],
        )
        .await
    }

    async fn plan_json(&self) -> Value {
        let shown = ferry(
            &[
                "plan",
                &self.plan,
                "--state",
                &self.state,
                "--output",
                "json",
            ],
            &[],
        )
        .await;
        shown.assert_code(0);
        serde_json::from_str(&shown.stdout).unwrap()
    }

    /// The drift: at the source, org/a:v1.0.2 deleted, org/b:v1.0.1 removed alone (its
    /// image stays under v1.0.0), org/d:v1.0.0 deleted, org/c removed entirely; at the
    /// target, a foreign tag pushed and mirror/d:v1.0.0 pushed over.
    async fn drift(&self) {
        let (_, _, v102) = self.src.pusher().manifest("org/a", "v1.0.2").await.unwrap();
        delete(&self.src, "org/a", &v102).await;
        // A tag alone, the only way distribution allows: move it, then delete what it
        // points at now.
        let placeholder = single(99, "placeholder");
        self.src
            .pusher()
            .push("org/b", "v1.0.1", &placeholder)
            .await;
        delete(&self.src, "org/b", &placeholder.digest).await;
        // mirror/d:v1.0.0 is gone at the source too, but someone pushed over it at the
        // target: not ours any more.
        let (_, _, d100) = self.src.pusher().manifest("org/d", "v1.0.0").await.unwrap();
        delete(&self.src, "org/d", &d100).await;
        let repo_dir = self
            .src
            .storage_dir()
            .join("docker/registry/v2/repositories/org/c");
        std::fs::remove_dir_all(&repo_dir).unwrap();
        let p = self.dst.pusher();
        p.push("mirror/a", "hotfix", &single(50, "hotfix")).await;
        p.push("mirror/d", "v1.0.0", &self.pushed_over).await;
    }
}

/// `(action, repository, tags)` of every prune decision in a plan or report, the repository
/// without its host.
fn decisions(rows: &[(String, String, Vec<String>)]) -> BTreeSet<(String, String, String)> {
    rows.iter()
        .map(|(a, r, t)| {
            let repo = r.split_once('/').map_or(r.as_str(), |x| x.1).to_string();
            (a.clone(), repo, t.join(","))
        })
        .collect()
}

fn plan_rows(v: &Value) -> Vec<(String, String, Vec<String>)> {
    let mut out = Vec::new();
    for rule in v["prune"].as_array().cloned().unwrap_or_default() {
        for r in rule["repositories"].as_array().unwrap() {
            for d in r["decisions"].as_array().unwrap() {
                out.push((
                    d["action"].as_str().unwrap().to_string(),
                    r["repository"].as_str().unwrap().to_string(),
                    d["tags"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|t| t.as_str().unwrap().to_string())
                        .collect(),
                ));
            }
        }
    }
    out
}

fn set(rows: &[(&str, &str, &str)]) -> BTreeSet<(String, String, String)> {
    rows.iter()
        .map(|(a, r, t)| (a.to_string(), r.to_string(), t.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_prunes_exactly_what_ferry_copied_and_the_source_dropped() {
    let m = mirror("2s").await;
    m.run().await.assert_code(0);
    assert_eq!(
        m.dst.pusher().tags("mirror/c").await,
        vec!["v1.0.0", "v1.1.0"]
    );
    m.drift().await;

    // First run after the drift: the missing tags are noticed, not yet deleted.
    let noticed = m.run().await;
    noticed.assert_code(0);
    assert!(noticed.stdout.contains(", 0 pruned"), "{}", noticed.stdout);
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&m.report).unwrap()).unwrap();
    let waiting: Vec<&Value> = report["prune"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["reason"]
                .as_str()
                .unwrap()
                .contains("not yet older_than = 2s")
        })
        .collect();
    assert_eq!(waiting.len(), 4, "{:#}", report["prune"]);

    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    let expected = set(&[
        ("delete", "mirror/a", "v1.0.2"),
        ("delete", "mirror/a", ""),
        ("untag", "mirror/b", "v1.0.1"),
        ("delete", "mirror/c", "v1.0.0"),
        ("delete", "mirror/c", "v1.1.0"),
        ("keep", "mirror/a", "hotfix"),
        ("keep", "mirror/d", "v1.0.0"),
    ]);
    let planned = m.plan_json().await;
    assert_eq!(
        decisions(&plan_rows(&planned)),
        expected,
        "{:#}",
        planned["prune"]
    );
    let text = ferry(&["plan", &m.plan, "--state", &m.state], &[]).await;
    assert!(
        text.stdout.contains("kept: not ours (pushed over: it is"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains(", 5 to prune"), "{}", text.stdout);

    let ran = m.run().await;
    ran.assert_code(0);
    assert!(ran.stdout.contains(", 5 pruned"), "{}", ran.stdout);
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&m.report).unwrap()).unwrap();
    assert_eq!(report["totals"]["pruned"], 5);
    let done: Vec<(String, String, Vec<String>)> = report["prune"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap().to_string(),
                r["repository"].as_str().unwrap().to_string(),
                r["tags"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect();
    assert_eq!(decisions(&done), expected, "the run did what the plan said");
    assert!(report["prune"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] != "keep")
        .all(|r| r["result"] == "done"));

    // What stays, whole.
    let p = m.dst.pusher();
    let mut a = p.tags("mirror/a").await;
    a.sort();
    let mut want_a = vec![
        "hotfix".to_string(),
        "v1.0.0".to_string(),
        "v1.0.1".to_string(),
        m.kept_sig.0.clone(),
    ];
    want_a.sort();
    assert_eq!(a, want_a);
    assert_copied(&m.dst, "mirror/a", "v1.0.1", &m.kept_index).await;
    assert_copied(&m.dst, "mirror/a", &m.kept_sig.0, &m.kept_sig.1).await;
    for child in &m.kept_index.children {
        assert!(p.manifest("mirror/a", &child.digest).await.is_some());
    }
    assert!(p
        .manifest("mirror/a", &m.shared_child.digest)
        .await
        .is_some());
    assert!(p.manifest("mirror/a", &m.lone_child.digest).await.is_none());
    assert_eq!(p.tags("mirror/b").await, vec!["v1.0.0"]);
    assert!(p.manifest("mirror/b", "v1.0.0").await.is_some());
    assert!(p.tags("mirror/c").await.is_empty());
    let (_, _, d100) = p.manifest("mirror/d", "v1.0.0").await.unwrap();
    assert_eq!(d100, m.pushed_over.digest, "pushed over by hand: not ours");
    assert!(p.manifest("mirror/d", "v2.0.0").await.is_some());
    // A second implementation reads what stays.
    let kept = skopeo_inspect_raw(&format!("docker://{}/mirror/a:v1.0.1", m.dst.addr), None).await;
    assert_eq!(sha256_digest(&kept), m.kept_index.digest);

    // `ferry status` lists them, and the next run has nothing left to prune.
    let status = ferry(&["status", "--state", &m.state], &[]).await;
    assert!(
        status.stdout.contains("prune: gone at the source"),
        "{}",
        status.stdout
    );
    let again = m.run().await;
    again.assert_code(0);
    assert!(again.stdout.contains(", 0 pruned"), "{}", again.stdout);
    drop(m.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_lists_no_tags_prunes_nothing_and_warns() {
    let m = mirror("1s").await;
    m.run().await.assert_code(0);
    // Every manifest of org/d deleted: distribution then lists the repository with no tags,
    // which is what an outage of its tag store looks like too.
    for tag in ["v1.0.0", "v2.0.0"] {
        let (_, _, digest) = m.src.pusher().manifest("org/d", tag).await.unwrap();
        delete(&m.src, "org/d", &digest).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let planned = m.plan_json().await;
    assert!(plan_rows(&planned).is_empty(), "{:#}", planned["prune"]);
    let warnings = planned["prune"][0]["warnings"].as_array().unwrap();
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .contains("lists no tags, but ferry copied 2 there"),
        "{warnings:?}"
    );
    let ran = m.run().await;
    ran.assert_code(0);
    assert!(ran.stderr.contains("warning:") || ran.stdout.contains("warning:"));
    assert_eq!(
        m.dst.pusher().tags("mirror/d").await,
        vec!["v1.0.0", "v2.0.0"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_deletions_than_max_deletions_prunes_nothing_and_fails() {
    let m = mirror("1s").await;
    m.run().await.assert_code(0);
    let tight = std::fs::read_to_string(&m.plan)
        .unwrap()
        .replace("max_deletions = 10", "max_deletions = 1");
    std::fs::write(&m.plan, tight).unwrap();
    std::fs::remove_dir_all(
        m.src
            .storage_dir()
            .join("docker/registry/v2/repositories/org/c"),
    )
    .unwrap();
    m.run().await.assert_code(0);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let ran = m.run().await;
    ran.assert_code(1);
    assert!(
        ran.stdout
            .contains("2 prune deletions exceed max_deletions = 1")
            || ran
                .stderr
                .contains("2 prune deletions exceed max_deletions = 1"),
        "{}\n{}",
        ran.stdout,
        ran.stderr
    );
    assert_eq!(
        m.dst.pusher().tags("mirror/c").await,
        vec!["v1.0.0", "v1.1.0"]
    );
}
