//! Issue 25, part 1: one source read, several targets. A `[[copy]]` rule with `to = [A, B]`
//! reads each blob from the source once (the source registry's access log), both targets
//! end up identical to the source (skopeo), a target that is down fails its own items only
//! (exit 1, naming it) and the re-run completes it without reading what the other target
//! already has; `ferry plan` shows both (rule, target) pairs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::*;
use crate::harness::*;

/// Every blob digest of the fixture's images (their children's included).
fn blob_digests(fixture: &Fixture) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (_, _, img) in &fixture.tagged {
        out.extend(img.all_blobs().iter().map(|b| b.digest.clone()));
    }
    out
}

/// Blob GETs answered with bytes by `reg`, per digest.
async fn blob_reads(reg: &Registry) -> BTreeMap<String, usize> {
    reg.sync_log().await;
    let mut out = BTreeMap::new();
    for r in reg.requests() {
        if r.method == "GET" && matches!(r.status, 200 | 206) {
            if let Some((_, digest)) = r.uri.split_once("/blobs/") {
                *out.entry(digest.to_string()).or_default() += 1;
            }
        }
    }
    out
}

/// Manifest GETs by digest answered by `reg` (after [`blob_reads`] synced its log), per
/// digest.
fn manifest_reads_by_digest(reg: &Registry) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in reg.requests() {
        if r.method == "GET" && r.status == 200 {
            if let Some((_, digest)) = r.uri.split_once("/manifests/sha256:") {
                *out.entry(digest.to_string()).or_default() += 1;
            }
        }
    }
    out
}

/// A source holding the `team` fixture, and two empty targets.
async fn source_and_two_targets() -> (Registry, Registry, Registry, Fixture) {
    let (src, a, b) = (
        Registry::start().await,
        Registry::start().await,
        Registry::start().await,
    );
    let fixture = populate(&src, "team").await;
    (src, a, b, fixture)
}

/// A plan copying `src/team/*` to `a/team/*` and `b/mirror/*` (b may be a proxy: `b_more`
/// adds lines to its registry section).
fn fanout_plan(dir: &Path, src: &Registry, a: &Registry, b: &str, b_more: &str) -> String {
    let text = format!(
        "version = 1\n{}[registry.\"{b}\"]\ninsecure = true\n{b_more}\n\n[[copy]]\nfrom = \"{}/team/*\"\nto = [\"{}/team/*\", \"{b}/mirror/*\"]\n",
        insecure(&[src, a]),
        src.addr,
        a.addr,
    );
    plan(dir, &text).to_str().unwrap().to_string()
}

/// skopeo reads each tagged image at `target` (under `prefix` instead of `team`) with the
/// source's very bytes.
async fn assert_same_as_source(fixture: &Fixture, target: &str, prefix: &str) {
    for (repo, tag, img) in &fixture.tagged {
        let repo = repo.replacen("team", prefix, 1);
        let raw = skopeo_inspect_raw(&format!("docker://{target}/{repo}:{tag}"), None).await;
        assert_eq!(raw, img.bytes, "{target}/{repo}:{tag}");
    }
}

/// Issue 25, part 1, "done when" (1): with two distribution targets every source blob is
/// read exactly once, and both targets are identical to the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_source_blob_is_read_once_for_two_targets() {
    let (src, a, b, fixture) = source_and_two_targets().await;
    let dir = tempfile::tempdir().unwrap();
    let p = fanout_plan(dir.path(), &src, &a, &b.addr, "");
    let (run, report) = run_reported(Path::new(&p), &[]).await;
    run.assert_code(0);
    let reads = blob_reads(&src).await;
    let blobs = blob_digests(&fixture);
    assert_eq!(reads.keys().cloned().collect::<BTreeSet<_>>(), blobs);
    assert!(
        reads.values().all(|n| *n == 1),
        "a blob read twice: {reads:?}"
    );
    assert_same_as_source(&fixture, &a.addr, "team").await;
    assert_same_as_source(&fixture, &b.addr, "mirror").await;
    // Manifests read by digest (an index's children) are read once too.
    let by_digest = manifest_reads_by_digest(&src);
    assert!(!by_digest.is_empty());
    assert!(by_digest.values().all(|n| *n == 1), "{by_digest:?}");
    // The report says how: every blob one target transferred went through the spool.
    let fanout = &report["totals"]["fanout"];
    assert!(fanout["spooled_blobs"].as_u64().unwrap() >= 1, "{fanout}");
    assert_eq!(fanout["reread_blobs"], 0, "{fanout}");
    // Both pairs' items are in the report, as many for each target.
    let items = report["items"].as_array().unwrap();
    let at = |host: &str| {
        let prefix = format!("{host}/");
        items
            .iter()
            .filter(|i| i["target"].as_str().unwrap().starts_with(&prefix))
            .count()
    };
    assert!(at(&a.addr) >= fixture.tagged.len(), "{items:?}");
    assert_eq!(at(&a.addr), at(&b.addr), "{items:?}");
    assert_eq!(at(&a.addr) * 2, items.len(), "{items:?}");
}

/// Issue 25, part 1, "done when" (2): with one target down the other is copied whole and
/// the run exits 1 naming the failed target; the re-run completes it, reading from the
/// source only what it lacks (once each), and writes nothing more to the target that had it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_target_down_fails_alone_and_the_rerun_completes_it() {
    let (src, a, b, fixture) = source_and_two_targets().await;
    let down = Arc::new(AtomicBool::new(true));
    let hook: Hook = {
        let down = down.clone();
        Arc::new(move |_, _, _| match down.load(Ordering::SeqCst) {
            true => Action::registry_error(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", "down"),
            false => Action::Forward,
        })
    };
    let proxy = Proxy::start(&b.url, hook).await;
    let dir = tempfile::tempdir().unwrap();
    let p = fanout_plan(dir.path(), &src, &a, &proxy.addr, "retries = 0");
    let first = ferry(&["run", "--progress", "plain", &p], &[]).await;
    first.assert_code(1);
    assert!(
        first.stderr.contains(&format!("{}/mirror/", proxy.addr)),
        "the failed target is named:\n{}",
        first.stderr
    );
    let good = format!("-> {}/team/", a.addr);
    assert!(
        !(first.stderr.lines())
            .any(|l| (l.contains("FAILED") || l.contains("failed:")) && l.contains(&good)),
        "nothing of the good target failed:\n{}",
        first.stderr
    );
    for (repo, tag, img) in &fixture.tagged {
        assert_copied(&a, repo, tag, img).await;
    }
    let before = blob_reads(&src).await;
    assert!(before.values().all(|n| *n == 1), "{before:?}");
    a.sync_log().await;
    let uploads_at_a = uploads(&a);

    down.store(false, Ordering::SeqCst);
    let second = ferry(&["run", "--progress", "plain", &p], &[]).await;
    second.assert_code(0);
    assert_same_as_source(&fixture, &b.addr, "mirror").await;
    assert_same_as_source(&fixture, &a.addr, "team").await;
    // The re-run read each blob the failed target lacked once, and only for it.
    let after = blob_reads(&src).await;
    for digest in blob_digests(&fixture) {
        assert_eq!(after[&digest] - before[&digest], 1, "{digest}");
    }
    a.sync_log().await;
    assert_eq!(
        uploads(&a),
        uploads_at_a,
        "nothing uploaded again to the good target"
    );
}

/// Issue 25, part 1, "done when" (3): `ferry plan` shows each (rule, target) pair, in text
/// and in JSON, with the same items for both targets.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plan_shows_both_pairs() {
    let (src, a, b, fixture) = source_and_two_targets().await;
    let dir = tempfile::tempdir().unwrap();
    let p = fanout_plan(dir.path(), &src, &a, &b.addr, "");
    let shown = ferry(&["plan", &p, "--output", "json"], &[]).await;
    shown.assert_code(0);
    let rows = planned_rows(&json(&shown.stdout));
    let to = |host: &str, prefix: &str| -> BTreeSet<(String, String)> {
        rows.iter()
            .filter(|(_, t, _)| t.starts_with(&format!("{host}/{prefix}/")))
            .map(|(s, t, action)| {
                (
                    s.clone(),
                    t.replacen(host, "", 1).replacen(prefix, "team", 1) + action,
                )
            })
            .collect()
    };
    let (at_a, at_b) = (to(&a.addr, "team"), to(&b.addr, "mirror"));
    assert!(at_a.len() >= fixture.tagged.len(), "{rows:?}");
    assert_eq!(at_a, at_b);
    assert_eq!(rows.len(), 2 * at_a.len(), "{rows:?}");
    let text = ferry(&["plan", &p], &[]).await;
    text.assert_code(0);
    for target in [
        format!("{}/team/api", a.addr),
        format!("{}/mirror/api", b.addr),
    ] {
        assert!(text.stdout.contains(&target), "{target}:\n{}", text.stdout);
    }
}

/// What the source sent: blob reads and manifest reads by digest, per digest.
type Reads = (BTreeMap<String, usize>, BTreeMap<String, usize>);

/// One run of [`fanout_plan`] with `--spool-limit LIMIT` into two fresh targets: what the
/// (fresh) source sent, and the report's `totals.fanout`.
async fn reads_with_spool_limit(limit: &str) -> (Fixture, Reads, Value) {
    let (src, a, b, fixture) = source_and_two_targets().await;
    let dir = tempfile::tempdir().unwrap();
    let p = fanout_plan(dir.path(), &src, &a, &b.addr, "");
    let (run, report) = run_reported(Path::new(&p), &["--spool-limit", limit]).await;
    run.assert_code(0);
    assert_same_as_source(&fixture, &a.addr, "team").await;
    assert_same_as_source(&fixture, &b.addr, "mirror").await;
    let blobs = blob_reads(&src).await;
    let reads = (blobs, manifest_reads_by_digest(&src));
    (fixture, reads, report["totals"]["fanout"].clone())
}

/// Issue 25, part 1: past the spool's limit a blob is read again for the other target, and
/// the report counts it; `--spool-limit 0` turns the one read of blobs off (each target
/// reads them from the source, as two rules would, and the report has no `fanout`), not
/// of manifests.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn past_the_spool_limit_a_blob_is_read_again_and_counted() {
    let (fixture, (reads, _), fanout) = reads_with_spool_limit("100KiB").await;
    let blobs = blob_digests(&fixture);
    // The 300 KiB base layer never fits: each target read it.
    let base = &fixture.image("team/web", "1.0").blobs[1];
    assert!(base.bytes.len() > 100 * 1024);
    assert_eq!(reads[&base.digest], 2, "{reads:?}");
    let reread = fanout["reread_blobs"].as_u64().unwrap() as usize;
    assert!(reread >= 1, "{fanout}");
    assert!(fanout["spooled_blobs"].as_u64().unwrap() >= 1, "{fanout}");
    assert_eq!(
        reads.values().sum::<usize>(),
        blobs.len() + reread,
        "{reads:?} {fanout}"
    );
    assert!(reads.values().all(|n| *n <= 2), "{reads:?}");

    let (fixture, (reads, manifests), fanout) = reads_with_spool_limit("0").await;
    assert!(fanout.is_null(), "{fanout}");
    assert_eq!(
        reads.keys().cloned().collect::<BTreeSet<_>>(),
        blob_digests(&fixture)
    );
    assert!(reads.values().all(|n| *n == 2), "{reads:?}");
    // Manifests are shared in memory, spool or not.
    assert!(!manifests.is_empty());
    assert!(manifests.values().all(|n| *n == 1), "{manifests:?}");
}
