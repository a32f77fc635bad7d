//! Issue 22 (a delete protocol safe against concurrent writers): retention looks again right
//! before each DELETE, so a tag pushed or moved onto a doomed image while the run deletes keeps
//! that image. Against the real registry at `rate_limit = { requests_per_second = 1 }`, so
//! the run is slow enough for a test to write between its deletions.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::harness::*;

const REPO: &str = "team/app";

/// team/app: `v1.0.0` (and `stable` where `stable` is set), kept by its tags; `pr-1` to `pr-3`,
/// doomed. Every tag costs a HEAD in each look at one request a second, so a test that does
/// not move `stable` goes without it.
struct Scene {
    kept: Image,
    /// The doomed images by tag.
    doomed: Vec<(String, Image)>,
}

async fn scene(reg: &Registry, stable: bool) -> Scene {
    let p = reg.pusher();
    let base = layer(1, 4 * 1024);
    let single = |label: &str, seed: u64| {
        image(
            &[base.clone(), layer(seed, 1024)],
            "linux",
            "amd64",
            Format::Oci,
            label,
        )
    };
    let kept = single("v1.0.0", 10);
    p.push(REPO, "v1.0.0", &kept).await;
    if stable {
        p.push(REPO, "stable", &kept).await;
    }
    let mut doomed = Vec::new();
    for (n, tag) in ["pr-1", "pr-2", "pr-3"].into_iter().enumerate() {
        let img = single(tag, 20 + n as u64);
        p.push(REPO, tag, &img).await;
        doomed.push((tag.to_string(), img));
    }
    Scene { kept, doomed }
}

/// The policy, on a registry paced at one request a second (`paced`), or not.
fn policy(dir: &std::path::Path, reg: &Registry, paced: bool) -> String {
    let rate = match paced {
        true => "rate_limit = { requests_per_second = 1 }\n",
        false => "",
    };
    let p = plan(
        dir,
        &format!(
            "version = 1\n[registry.\"{a}\"]\ninsecure = true\n{rate}[[retain]]\nrepository = \"{a}/{REPO}\"\nkeep_tags = ['^v\\d', '^stable$']\ndelete_tags = ['^pr-']\n",
            a = reg.addr
        ),
    );
    p.to_str().unwrap().to_string()
}

/// The doomed digests in the order the run deletes them, as `ferry plan --output json` shows
/// them (the same policy unpaced, for speed): single images, so nothing references another
/// and the order is by digest.
async fn deletion_order(reg: &Registry) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let plan = policy(dir.path(), reg, false);
    let shown = ferry(&["plan", &plan, "--output", "json"], &[]).await;
    shown.assert_code(0);
    let v = json(&shown.stdout);
    let mut doomed: Vec<String> = v["retention"][0]["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["action"] == "delete")
        .map(|d| d["digest"].as_str().unwrap().to_string())
        .collect();
    doomed.sort();
    doomed
}

/// What a run did while a test wrote between its deletions.
struct Raced {
    out: String,
    code: i32,
    report: serde_json::Value,
}

/// Start `ferry run --report …`, wait until the registry has answered its first DELETE of a
/// doomed digest, call `write` (the concurrent writer), and wait for the run to end.
async fn race<F: std::future::Future<Output = ()>>(
    reg: &Registry,
    plan: &str,
    doomed: &[String],
    write: F,
) -> Raced {
    let home = tempfile::tempdir().unwrap();
    let report = std::path::Path::new(plan).with_file_name("report.json");
    let args = [
        "run",
        "--progress",
        "plain",
        "--report",
        report.to_str().unwrap(),
        plan,
    ];
    let child = ferry_command(&args, &[], home.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ferry");
    let deadline = Instant::now() + Duration::from_secs(120);
    let deleted_one = || {
        reg.requests()
            .iter()
            .any(|r| r.method == "DELETE" && doomed.iter().any(|d| r.uri.ends_with(d.as_str())))
    };
    while !deleted_one() {
        assert!(
            Instant::now() < deadline,
            "no DELETE in 120 s:\n{}",
            reg.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    write.await;
    let out = tokio::time::timeout(Duration::from_secs(180), child.wait_with_output())
        .await
        .expect("the run ends")
        .unwrap();
    Raced {
        out: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        code: out.status.code().unwrap_or(-1),
        report: json(&std::fs::read_to_string(&report).expect("the report")),
    }
}

/// What every race shows: `survivor` is still there, `tag` points at `at`, every other doomed
/// image is gone, the run kept the survivor saying why (`reason`), and the report gives the
/// window, which no rate-limit wait widened (at one request a second, one would be ~1000 ms).
async fn assert_survives(
    reg: &Registry,
    s: &Scene,
    raced: &Raced,
    survivor: &str,
    (tag, at): (&str, &str),
    reason: &str,
) {
    println!(
        "{}\n{}\n{}",
        raced.out, raced.report["totals"], raced.report["registries"]
    );
    assert_eq!(raced.code, 0, "{}", raced.out);
    let p = reg.pusher();
    let (_, _, digest) = p
        .manifest(REPO, tag)
        .await
        .unwrap_or_else(|| panic!("{tag} is gone:\n{}", raced.out));
    assert_eq!(digest, at, "{tag}");
    assert!(p.manifest(REPO, survivor).await.is_some(), "{}", raced.out);
    for (t, img) in &s.doomed {
        if img.digest != survivor {
            assert!(
                p.manifest(REPO, &img.digest).await.is_none(),
                "{t} deleted:\n{}",
                raced.out
            );
        }
    }
    assert!(p.manifest(REPO, &s.kept.digest).await.is_some());
    let line = format!("kept {}/{REPO}@{}", reg.addr, &survivor[..19]);
    assert!(
        raced
            .out
            .lines()
            .any(|l| l.contains(&line) && l.contains(reason)),
        "{line} … {reason}:\n{}",
        raced.out
    );
    // The report lists the survivor under `kept`, with the same reason.
    let kept = raced.report["kept"].as_array().cloned().unwrap_or_default();
    assert!(
        kept.iter()
            .any(|k| k["digest"] == survivor && k["reason"].as_str().unwrap_or("").contains(reason)),
        "{}",
        raced.report
    );
    let totals = &raced.report["totals"];
    assert_eq!(totals["deleted"], s.doomed.len() - 1, "{totals}");
    let window = totals["delete_window_ms"]
        .as_f64()
        .unwrap_or_else(|| panic!("delete_window_ms: {totals}"));
    assert!((0.0..500.0).contains(&window), "{window} ms");
}

/// A race's start: the scene, its plan (paced at one request a second), the order the run
/// deletes in, and the doomed image it deletes last, which the test writes to meanwhile.
struct Start {
    s: Scene,
    _dir: tempfile::TempDir,
    plan: String,
    order: Vec<String>,
    last: Image,
}

async fn start(reg: &Registry, stable: bool) -> Start {
    let s = scene(reg, stable).await;
    let dir = tempfile::tempdir().unwrap();
    let plan = policy(dir.path(), reg, true);
    let order = deletion_order(reg).await;
    assert_eq!(order.len(), 3);
    let (_, last) = s.doomed.iter().find(|(_, i)| i.digest == order[2]).unwrap();
    let last = last.clone();
    Start {
        s,
        _dir: dir,
        plan,
        order,
        last,
    }
}

/// Push `tag` onto the image the run deletes last while it deletes (with `stable` on the kept
/// image from the start, or not): that image survives, kept for `tag`. The registry and the
/// race's start come back for what a test checks besides.
async fn tag_the_last_doomed_image(stable: bool, tag: &str) -> (Registry, Start) {
    let reg = Registry::start().await;
    let st = start(&reg, stable).await;
    let raced = race(&reg, &st.plan, &st.order, async {
        reg.pusher().push(REPO, tag, &st.last).await;
    })
    .await;
    let last = &st.last.digest;
    assert_survives(
        &reg,
        &st.s,
        &raced,
        last,
        (tag, last),
        &format!("kept: tagged since the inventory ({tag})"),
    )
    .await;
    (reg, st)
}

/// Issue 22, done when 1: a new tag pushed onto an image the run has not deleted yet keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_pushed_while_the_run_deletes_keeps_its_image() {
    tag_the_last_doomed_image(false, "hotfix").await;
}

/// Issue 22, done when 1: a tag the inventory saw on a kept image, moved onto a doomed one
/// while the run deletes, keeps the doomed one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_moved_onto_a_doomed_image_keeps_it() {
    let (reg, st) = tag_the_last_doomed_image(true, "stable").await;
    // The kept image lost `stable` to it and keeps `v1.0.0`.
    let (_, _, v1) = reg.pusher().manifest(REPO, "v1.0.0").await.unwrap();
    assert_eq!(v1, st.s.kept.digest);
}

/// Issue 22: a new tag on an index that names a doomed image as a child keeps the child.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_index_naming_a_doomed_child_keeps_the_child() {
    let reg = Registry::start().await;
    let st = start(&reg, false).await;
    let hotfix = index(vec![st.last.clone()], Format::Oci);
    let raced = race(&reg, &st.plan, &st.order, async {
        reg.pusher().push(REPO, "hotfix", &hotfix).await;
    })
    .await;
    assert_survives(
        &reg,
        &st.s,
        &raced,
        &st.last.digest,
        ("hotfix", &hotfix.digest),
        &format!(
            "kept: tagged since the inventory (hotfix, through index {})",
            &hotfix.digest[..19]
        ),
    )
    .await;
}
