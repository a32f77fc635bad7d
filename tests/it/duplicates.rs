//! Issue 21, "What was seen" item 3: two rules that write the same digest to one target tag
//! are duplicates, not conflicts. Two byte-identical source repositories (a Quay copy and a
//! Hub copy of one image) consolidated into one target repository both succeed, and the
//! signatures and other referrers of both reach the target; a real conflict (another digest
//! into one tag) still fails the second writer, whose referrers stay behind.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use crate::common::*;
use crate::harness::*;

/// What the two source repositories hold.
struct Sources {
    /// `1.0.0` in both: an amd64 + arm64 index.
    idx: Image,
    /// `latest` in both: a single-platform image.
    plain: Image,
    /// What `hub/app:1.0.0` points at: `idx`, or another index for a real conflict.
    b_idx: Image,
    /// `quay/app`: a cosign signature of the index (tag scheme) and an OCI 1.1 attestation
    /// of it, listed in its `sha256-<hex>` fallback index.
    a_sig: (String, Image),
    a_att: Image,
    /// `hub/app`: an OCI 1.1 SBOM of its `1.0.0` (in its fallback index) and a cosign
    /// signature of `latest`.
    b_sbom: Image,
    b_sig: (String, Image),
}

const A: &str = "quay/app";
const B: &str = "hub/app";
const T: &str = "mirror/app";

/// Push both source repositories; with `conflict`, `hub/app:1.0.0` is another image.
async fn push_sources(src: &Registry, conflict: bool) -> Sources {
    let pusher = src.pusher();
    let platform = |seed: u64, arch: &str, label: &str| {
        image(&[layer(seed, 2048)], "linux", arch, Format::Oci, label)
    };
    let idx = index(
        vec![
            platform(2101, "amd64", "dup-amd"),
            platform(2102, "arm64", "dup-arm"),
        ],
        Format::Oci,
    );
    let plain = platform(2103, "amd64", "dup-plain");
    let b_idx = match conflict {
        false => idx.clone(),
        true => index(
            vec![
                platform(2104, "amd64", "other-amd"),
                platform(2105, "arm64", "other-arm"),
            ],
            Format::Oci,
        ),
    };
    for (repo, one) in [(A, &idx), (B, &b_idx)] {
        pusher.push(repo, "1.0.0", one).await;
        pusher.push(repo, "latest", &plain).await;
    }
    let a_sig = cosign_signature(&idx, "example.com/app");
    pusher.push(A, &a_sig.0, &a_sig.1).await;
    let a_att = oci_attestation(&idx, "example.com/app");
    let b_sbom = oci_referrer(&b_idx, SPDX, b"{\"spdxVersion\":\"SPDX-2.3\"}");
    for (repo, subject, referrer) in [(A, &idx, &a_att), (B, &b_idx, &b_sbom)] {
        pusher.push(repo, &referrer.digest, referrer).await;
        let tag = format!("sha256-{}", hex_of(&subject.digest));
        pusher.push(repo, &tag, &fallback_index(&[referrer])).await;
    }
    let b_sig = cosign_signature(&plain, "example.com/app");
    pusher.push(B, &b_sig.0, &b_sig.1).await;
    Sources {
        idx,
        plain,
        b_idx,
        a_sig,
        a_att,
        b_sbom,
        b_sig,
    }
}

/// `quay/app` and `hub/app` into `mirror/app`, in that order.
fn consolidate(dir: &Path, src: &Registry, dst: &Registry) -> std::path::PathBuf {
    let (s, d) = (&src.addr, &dst.addr);
    let rules = [
        copy_section(&format!("{s}/{A}"), &format!("{d}/{T}"), ""),
        copy_section(&format!("{s}/{B}"), &format!("{d}/{T}"), ""),
    ];
    plan(dir, &plan_text(&[src, dst], &rules))
}

/// `copy #N (PLAN:LINE)`: the line of the rule's `from` that names `repo`.
fn label(p: &Path, number: usize, repo: &str) -> String {
    let text = std::fs::read_to_string(p).unwrap();
    let line = text
        .lines()
        .position(|l| l.starts_with("from = ") && l.contains(repo))
        .unwrap();
    format!("copy #{number} ({}:{})", p.display(), line + 1)
}

/// (source, target, action in the report's words, digest) of every item of a plan
/// (`copies`) or a report (`items`), sorted.
fn rows(items: &Value, key: &str) -> Vec<(String, String, String, String)> {
    let mut out: Vec<_> = items[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} in {items}"))
        .iter()
        .map(|i| {
            let text = |k: &str| i[k].as_str().unwrap_or_default().to_string();
            let action = i["action"].as_str().unwrap();
            let action = match key {
                "copies" => reported_action(action),
                _ => action,
            };
            (
                text("source"),
                text("target"),
                action.into(),
                text("digest"),
            )
        })
        .collect();
    out.sort();
    out
}

/// `ferry plan --output json`, then `ferry run --report`: both runs, and the report; the
/// plan's items must be the report's, item for item.
async fn plan_then_run(p: &Path) -> (Run, Run, Value) {
    let ps = p.to_str().unwrap();
    let shown = ferry(&["plan", "--output", "json", ps], &[]).await;
    let report = p.with_file_name("report.json");
    let rs = report.to_str().unwrap();
    let run = ferry(&["run", "--progress", "plain", "--report", rs, ps], &[]).await;
    let planned: Value = serde_json::from_str(&shown.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", shown.stdout, shown.stderr));
    let report: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(
        rows(&planned, "copies"),
        rows(&report, "items"),
        "plan and run disagree\n--- plan\n{}\n--- run\n{}",
        shown.stdout,
        run.stderr
    );
    assert_eq!(shown.code, run.code, "{}\n{}", shown.stdout, run.stderr);
    (shown, run, report)
}

/// The item of the report whose source is `source`.
fn item<'r>(report: &'r Value, source: &str) -> &'r Value {
    report["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["source"] == source)
        .unwrap_or_else(|| panic!("no item from {source}: {report:#}"))
}

/// Item 3: a Quay copy and a Hub copy of one image into one repository. Both rules succeed
/// (the second's tags are `present`: the same digest is there), the signature of one and the
/// SBOM of the other both reach the target, `ferry plan` says the same, and a second run is
/// a no-op. Before the fix every run exited 1 with the second source's tags failed as
/// conflicts and its referrers skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_identical_sources_into_one_repository_both_succeed_with_their_referrers() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let s = push_sources(&src, false).await;
    let dir = tempfile::tempdir().unwrap();
    let p = consolidate(dir.path(), &src, &dst);

    let (_, run, report) = plan_then_run(&p).await;
    run.assert_code(0);
    let from = |repo: &str, reference: &str| format!("{}/{repo}:{reference}", src.addr);
    for (reference, image) in [("1.0.0", &s.idx), ("latest", &s.plain)] {
        let first = item(&report, &from(A, reference));
        assert_eq!(first["action"], "copied", "{first}");
        let second = item(&report, &from(B, reference));
        assert_eq!(second["action"], "present", "{second}");
        assert_eq!(second["digest"], image.digest.as_str(), "{second}");
        assert_copied(&dst, T, reference, image).await;
    }
    // Both sides' referrers: A's cosign signature, B's; A's attestation and B's SBOM in the
    // one fallback index of the index.
    assert_copied(&dst, T, &s.a_sig.0, &s.a_sig.1).await;
    assert_copied(&dst, T, &s.b_sig.0, &s.b_sig.1).await;
    let listed: BTreeSet<String> = fallback_entries(&dst, T, &s.idx)
        .await
        .into_iter()
        .collect();
    assert_eq!(
        listed,
        BTreeSet::from([s.a_att.digest.clone(), s.b_sbom.digest.clone()])
    );
    let sbom = item(&report, &format!("{}/{B}@{}", src.addr, s.b_sbom.digest));
    assert_eq!(sbom["action"], "copied", "{sbom}");
    // A second implementation reads what the target holds, byte for byte.
    let at = |reference: &str| format!("docker://{}/{T}{reference}", dst.addr);
    let raw = skopeo_inspect_raw(&at(":1.0.0"), None).await;
    assert_eq!(raw, s.idx.bytes);
    let raw = skopeo_inspect_raw(&at(&format!("@{}", s.b_sbom.digest)), None).await;
    assert_eq!(raw, s.b_sbom.bytes);

    // Again: nothing to do, nothing failed, and still both rules' items.
    let (_, again, report) = plan_then_run(&p).await;
    again.assert_code(0);
    let actions: BTreeSet<&str> = report["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.iter().all(|a| ["present", "unchanged"].contains(a)),
        "{report:#}"
    );
    assert_eq!(item(&report, &from(B, "1.0.0"))["digest"], s.idx.digest);
}

/// A real conflict keeps today's behaviour: `hub/app:1.0.0` is another image, so the second
/// rule's `1.0.0` fails naming both rules (exit 1) and its SBOM is not copied, saying why; the
/// first rule's image is the one at the target. Its `latest` is the same image: a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_digest_into_one_tag_is_still_a_conflict_and_its_referrers_stay_behind() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let s = push_sources(&src, true).await;
    let dir = tempfile::tempdir().unwrap();
    let p = consolidate(dir.path(), &src, &dst);

    let (_, run, report) = plan_then_run(&p).await;
    run.assert_code(1);
    let from = |repo: &str, reference: &str| format!("{}/{repo}:{reference}", src.addr);
    let failed = item(&report, &from(B, "1.0.0"));
    assert_eq!(failed["action"], "failed", "{failed}");
    let why = failed["error"].as_str().unwrap();
    assert!(
        why.contains(&format!("{} would write it from", label(&p, 2, B)))
            && why.contains(&format!("but {} writes it from", label(&p, 1, A)))
            && why.contains("two rules must not write one tag"),
        "{why}"
    );
    let sbom = item(&report, &format!("{}/{B}@{}", src.addr, s.b_sbom.digest));
    assert_eq!(sbom["action"], "skipped", "{sbom}");
    let reason = sbom["error"].as_str().unwrap();
    assert!(
        reason.contains("not copied: what it refers to") && reason.contains(":1.0.0) failed"),
        "{reason}"
    );
    assert_copied(&dst, T, "1.0.0", &s.idx).await;
    assert!(dst.pusher().manifest(T, &s.b_sbom.digest).await.is_none());
    assert!(fallback_entries(&dst, T, &s.b_idx).await.is_empty());
    // The same image under `latest` is no conflict, and its signature travels.
    assert_eq!(item(&report, &from(B, "latest"))["action"], "present");
    assert_copied(&dst, T, &s.b_sig.0, &s.b_sig.1).await;
    let failures = report["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{failures:#?}");
}
