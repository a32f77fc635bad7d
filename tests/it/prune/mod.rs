//! Pruning against the real registry: a mirror of four repositories drifts at the source
//! (two tags deleted, one repository removed) and by hand at the target (a foreign tag, a
//! mirrored tag pushed over). The next runs delete exactly what ferry copied and the source no
//! longer has, once `older_than` has passed, keep what is not ferry's, keep every child and
//! signature a kept tag reaches, and `ferry plan` says exactly that first.
//!
//! Then every other target kind ferry writes, with one drift (a tag deleted at the source, a
//! tag removed alone there while its image keeps another, a repository gone from the
//! catalog) and a foreign tag at the target: an OCI layout (its `index.json` entries), GHCR
//! (the GitHub Packages API fake with its registry front: package versions) and Docker Hub
//! (the Hub API fake with its registry front: the tag API).

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::common::*;
use crate::harness::*;

mod targets;

#[allow(unused_imports)]
use targets::*;

/// A plan in a directory of its own, its checkpoint and report, and what its runs get in
/// their environment (a token).
struct Runs {
    _dir: tempfile::TempDir,
    plan: String,
    state: String,
    report: String,
    env: Vec<(&'static str, String)>,
}

impl Runs {
    fn new(text: &str, env: &[(&'static str, &str)]) -> Runs {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.db").display().to_string();
        let report = dir.path().join("report.json").display().to_string();
        let plan = plan(dir.path(), text).display().to_string();
        let env = env.iter().map(|(k, v)| (*k, v.to_string())).collect();
        Runs {
            _dir: dir,
            plan,
            state,
            report,
            env,
        }
    }

    async fn ferry(&self, args: &[&str]) -> Run {
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        ferry(args, &env).await
    }

    async fn run(&self) -> Run {
        let (plan, state, report) = (&self.plan, &self.state, &self.report);
        self.ferry(&["run", plan, "--state", state, "--report", report])
            .await
    }

    async fn plan_text(&self) -> Run {
        let shown = self
            .ferry(&["plan", &self.plan, "--state", &self.state])
            .await;
        shown.assert_code(0);
        shown
    }

    async fn plan_json(&self) -> Value {
        let (plan, state) = (&self.plan, &self.state);
        let shown = self
            .ferry(&["plan", plan, "--state", state, "--output", "json"])
            .await;
        shown.assert_code(0);
        serde_json::from_str(&shown.stdout).unwrap()
    }

    /// The last run's report.
    fn report(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(&self.report).unwrap()).unwrap()
    }
}

struct Mirror {
    src: Registry,
    dst: Registry,
    runs: Runs,
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

/// Remove `tag` alone at a registry, the only way distribution allows: move it onto a
/// placeholder, then delete what it points at now.
async fn untag(reg: &Registry, repo: &str, tag: &str) {
    let placeholder = single(99, "placeholder");
    reg.pusher().push(repo, tag, &placeholder).await;
    delete(reg, repo, &placeholder.digest).await;
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

    let runs = Runs::new(
        &format!(
            "version = 1\n{}\n[[copy]]\nfrom = \"{}/org/*\"\nto = \"{}/mirror/*\"\ntags = {{ include = ['^v\\d+\\.\\d+\\.\\d+$'] }}\nprune = {{ older_than = \"{older_than}\", max_deletions = 10 }}\n",
            insecure(&[&src, &dst]),
            src.addr,
            dst.addr
        ),
        &[],
    );
    Mirror {
        src,
        dst,
        runs,
        kept_index,
        kept_sig,
        shared_child,
        lone_child,
        pushed_over: single(42, "by hand"),
    }
}

impl Mirror {
    async fn run(&self) -> Run {
        self.runs.run().await
    }

    async fn plan_json(&self) -> Value {
        self.runs.plan_json().await
    }

    /// The drift: at the source, org/a:v1.0.2 deleted, org/b:v1.0.1 removed alone (its
    /// image stays under v1.0.0), org/d:v1.0.0 deleted, org/c removed entirely; at the
    /// target, a foreign tag pushed and mirror/d:v1.0.0 pushed over.
    async fn drift(&self) {
        let (_, _, v102) = self.src.pusher().manifest("org/a", "v1.0.2").await.unwrap();
        delete(&self.src, "org/a", &v102).await;
        untag(&self.src, "org/b", "v1.0.1").await;
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

/// One prune decision of a plan or report: `(action, repository, digest, tags)`, the tags
/// joined by commas.
type Row = (String, String, String, String);

fn row(action: &Value, repository: &Value, decision: &Value) -> Row {
    let text = |v: &Value| v.as_str().unwrap().to_string();
    let tags: Vec<String> = decision["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(text)
        .collect();
    (
        text(action),
        text(repository),
        text(&decision["digest"]),
        tags.join(","),
    )
}

/// Every prune decision of `ferry plan --output json`, sorted.
fn plan_rows(v: &Value) -> Vec<Row> {
    let mut out = Vec::new();
    for rule in v["prune"].as_array().cloned().unwrap_or_default() {
        for r in rule["repositories"].as_array().unwrap() {
            for d in r["decisions"].as_array().unwrap() {
                out.push(row(&d["action"], &r["repository"], d));
            }
        }
    }
    out.sort();
    out
}

/// Every prune decision of a run's report, sorted.
fn report_rows(v: &Value) -> Vec<Row> {
    let mut out: Vec<Row> = v["prune"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| row(&d["action"], &d["repository"], d))
        .collect();
    out.sort();
    out
}

/// `(action, repository, tags)` of every decision, the repository without its host.
fn decisions(rows: &[Row]) -> BTreeSet<(String, String, String)> {
    rows.iter()
        .map(|(a, r, _, t)| {
            let repo = r.split_once('/').map_or(r.as_str(), |x| x.1).to_string();
            (a.clone(), repo, t.clone())
        })
        .collect()
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
    let report = m.runs.report();
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
    let text = m.runs.plan_text().await;
    assert!(
        text.stdout.contains("kept: not ours (pushed over: it is"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains(", 5 to prune"), "{}", text.stdout);

    let ran = m.run().await;
    ran.assert_code(0);
    assert!(ran.stdout.contains(", 5 pruned"), "{}", ran.stdout);
    let report = m.runs.report();
    assert_eq!(report["totals"]["pruned"], 5);
    // Issue 21, "What was seen" 6: `deleted` is retention's alone (this plan has none).
    assert_eq!(report["totals"]["deleted"], 0, "{}", report["totals"]);
    assert_eq!(
        report_rows(&report),
        plan_rows(&planned),
        "the run did what the plan said"
    );
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
    let status = m.runs.ferry(&["status", "--state", &m.runs.state]).await;
    assert!(
        status.stdout.contains("prune: gone at the source"),
        "{}",
        status.stdout
    );
    assert!(
        status.stdout.contains("deleted: 0 by retention, 5 pruned"),
        "{}",
        status.stdout
    );
    let state = &m.runs.state;
    let json = m
        .runs
        .ferry(&["status", "--state", state, "--output", "json"])
        .await;
    let json: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(
        (
            json["totals"]["deleted"].as_u64(),
            json["totals"]["pruned"].as_u64()
        ),
        (Some(0), Some(5)),
        "{json}"
    );
    let again = m.run().await;
    again.assert_code(0);
    assert!(again.stdout.contains(", 0 pruned"), "{}", again.stdout);

    // Issue 22, undo: `ferry restore` puts back what pruning deleted (v1.0.2 with its own
    // child, mirror/c whole) and the tag it removed alone (mirror/b's v1.0.1), each with its
    // digest.
    let restored = m
        .runs
        .ferry(&["restore", &m.runs.plan, "--state", state])
        .await;
    restored.assert_code(0);
    let (_, _, d102) = p.manifest("mirror/a", "v1.0.2").await.unwrap();
    let (_, _, d101) = p.manifest("mirror/a", "v1.0.1").await.unwrap();
    assert_ne!(d102, d101);
    assert!(p.manifest("mirror/a", &m.lone_child.digest).await.is_some());
    let (_, _, b100) = p.manifest("mirror/b", "v1.0.0").await.unwrap();
    let (_, _, b101) = p.manifest("mirror/b", "v1.0.1").await.unwrap();
    assert_eq!(b101, b100);
    for (tag, img) in [("v1.0.0", single(30, "c")), ("v1.1.0", single(31, "c-1.1"))] {
        let raw =
            skopeo_inspect_raw(&format!("docker://{}/mirror/c:{tag}", m.dst.addr), None).await;
        assert_eq!(raw, img.bytes, "{tag}");
    }
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
    let tight = std::fs::read_to_string(&m.runs.plan)
        .unwrap()
        .replace("max_deletions = 10", "max_deletions = 1");
    std::fs::write(&m.runs.plan, tight).unwrap();
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

// Every other target kind ferry writes, with one drift: the same plan, the same decisions,
// carried out each target's way.
