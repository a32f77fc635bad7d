//! Issue 11, "Trust": what `ferry plan` says is what `ferry run` does, exit 0 means every
//! listed image is at its target, and the checkpoint never outlives the truth. One test per
//! item the issue saw, on the bundled demo layout (an image `1.0.0`, an amd64 + arm64 index
//! `1.1.0` and the index's cosign signature), so they need no registry.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::*;

fn demo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("plans/demo/layout")
}

/// A copy of the demo layout at `to`, to change without touching the repository's.
fn demo_copy(to: &Path) -> PathBuf {
    copy_dir(&demo(), to);
    to.to_path_buf()
}

/// A plan file named `name` in `dir`.
fn plan_named(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Tag -> digest of a layout's `index.json` (empty when there is none).
fn layout_tags(dir: &Path) -> std::collections::BTreeMap<String, String> {
    let Ok(text) = std::fs::read(dir.join("index.json")) else {
        return Default::default();
    };
    let index: Value = serde_json::from_slice(&text).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| {
            Some((
                m["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()?
                    .to_string(),
                m["digest"].as_str()?.to_string(),
            ))
        })
        .collect()
}

/// `ferry plan --output json`, then `ferry run --report`: both outcomes, and the items of both.
async fn plan_then_run(p: &Path, extra: &[&str]) -> (Run, Value, Run, Value) {
    let mut args = vec!["plan", "--output", "json", p.to_str().unwrap()];
    args.extend(extra);
    let shown = ferry(&args, &[]).await;
    let (run, report) = run_reported(p, extra).await;
    let plan = json(&shown.stdout);
    assert_eq!(
        planned_rows(&plan),
        reported_rows(&report),
        "plan and run disagree\n--- plan\n{}\n--- run\n{}",
        shown.stdout,
        run.stderr
    );
    assert_eq!(shown.code, run.code, "{}\n{}", shown.stdout, run.stderr);
    (shown, plan, run, report)
}

/// Item 2: copy to `stage`, then `stage` to `prod`. The plan predicted 3 copies and an error
/// (the stage did not exist yet); it must predict the 6 the run makes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staged_promotion_is_planned_as_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (stage, prod) = (dir.path().join("stage"), dir.path().join("prod"));
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n[[copy]]\nfrom = \"oci:{}\"\nto = \"oci:{}\"\n\n[[copy]]\nfrom = \"oci:{}\"\nto = \"oci:{}\"\n",
            demo().display(),
            stage.display(),
            stage.display(),
            prod.display()
        ),
    );
    let (shown, plan, run, _) = plan_then_run(&p, &[]).await;
    shown.assert_code(0);
    run.assert_code(0);
    assert_eq!(plan["totals"]["copy"], 6, "{}", shown.stdout);
    assert!(
        run.summary().starts_with("ferry: 6 images copied"),
        "{}",
        run.summary()
    );
    assert_eq!(layout_tags(&prod), layout_tags(&demo()));
}

/// Item 3: only `linux/amd64` of the signed index, rewritten. The index's signature names a
/// digest the target does not get: it is not carried, and plan and run say why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signature_of_a_rewritten_index_is_not_carried_and_both_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n[[copy]]\nfrom = \"oci:{}\"\nto = \"oci:{}\"\nplatforms = [\"linux/amd64\"]\nplatform_mode = \"rewrite\"\n",
            demo().display(),
            out.display()
        ),
    );
    let (_, plan, run, report) = plan_then_run(&p, &[]).await;
    run.assert_code(0);
    let sig = layout_tags(&demo())
        .into_keys()
        .find(|t| t.ends_with(".sig"))
        .unwrap();
    assert!(
        !layout_tags(&out).contains_key(&sig),
        "{:?}",
        layout_tags(&out)
    );
    let skipped = report["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["action"] == "skipped")
        .expect("the signature is reported skipped");
    let why = skipped["error"].as_str().unwrap();
    assert!(
        why.starts_with("referrer of rewritten index not carried: sha256:"),
        "{why}"
    );
    assert!(
        plan["copies"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["action"] == "skip" && c["error"] == why),
        "{plan}"
    );
    assert!(run.stderr.contains(why), "{}", run.stderr);
    assert!(
        run.summary().contains("1 referrer not carried"),
        "{}",
        run.summary()
    );
}

/// Item 4: an index that fails (a child's layer is missing at the source) takes its signature
/// with it: nothing at the target names what is not there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_image_leaves_no_signature_behind() {
    let dir = tempfile::tempdir().unwrap();
    let src = demo_copy(&dir.path().join("src"));
    // The arm64 child's own layer (1.0.0 does not share it): removed.
    let tags = layout_tags(&src);
    let blob = |d: &str| {
        src.join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let index: Value = json(&std::fs::read_to_string(blob(&tags["1.1.0"])).unwrap());
    let arm = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["architecture"] == "arm64")
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let child: Value = json(&std::fs::read_to_string(blob(&arm)).unwrap());
    let layer = child["layers"][0]["digest"].as_str().unwrap().to_string();
    std::fs::remove_file(blob(&layer)).unwrap();

    let out = dir.path().join("out");
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n[[copy]]\nfrom = \"oci:{}\"\nto = \"oci:{}\"\n",
            src.display(),
            out.display()
        ),
    );
    let (shown, _, run, _) = plan_then_run(&p, &[]).await;
    run.assert_code(1);
    shown.assert_code(1);
    let at_target = layout_tags(&out);
    assert!(!at_target.contains_key("1.1.0"), "{at_target:?}");
    assert!(
        !at_target.keys().any(|t| t.ends_with(".sig")),
        "{at_target:?}"
    );
    assert!(
        run.stderr.contains("not copied: what it refers to")
            && run.stderr.contains(":1.1.0) failed"),
        "{}",
        run.stderr
    );
}

/// Item 7: two rules writing one target tag from different sources. Known from the plan:
/// refused by `ferry check`; known only from the sources (wildcards): the second item fails,
/// naming both rules, and the plan says so too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rules_never_write_one_tag_silently() {
    let dir = tempfile::tempdir().unwrap();
    // Two sources whose 1.0.0 are different images: `uno/x` has the tags swapped.
    let a = demo_copy(&dir.path().join("one/x"));
    let b = demo_copy(&dir.path().join("uno/x"));
    let tags = layout_tags(&a);
    let text = std::fs::read_to_string(b.join("index.json"))
        .unwrap()
        .replace(&tags["1.0.0"], "PLACEHOLDER")
        .replace(&tags["1.1.0"], &tags["1.0.0"])
        .replace("PLACEHOLDER", &tags["1.1.0"]);
    std::fs::write(b.join("index.json"), text).unwrap();
    let dst = dir.path().join("dst");

    let fixed = plan(
        dir.path(),
        &format!(
            "version = 1\n[[copy]]\nfrom = \"oci:{a}:1.0.0\"\nto = \"oci:{d}\"\n\n[[copy]]\nfrom = \"oci:{b}:1.0.0\"\nto = \"oci:{d}\"\n",
            a = a.display(),
            b = b.display(),
            d = dst.display()
        ),
    );
    let check = ferry(&["check", fixed.to_str().unwrap()], &[]).await;
    check.assert_code(2);
    let p = fixed.display().to_string();
    assert!(
        check.stderr.contains(&format!(
            "{p}:7:8: copy #2 and copy #1 ({p}:3) both write one tag"
        )),
        "{}",
        check.stderr
    );

    // With wildcards, `one/*` and `uno/*` both map `x` onto `dst/x`: only the sources tell.
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n[[copy]]\nfrom = \"oci:{o}/*\"\nto = \"oci:{d}/*\"\ntags = {{ include = ['^1\\.0\\.0$'] }}\n\n[[copy]]\nfrom = \"oci:{u}/*\"\nto = \"oci:{d}/*\"\ntags = {{ include = ['^1\\.0\\.0$'] }}\n",
            o = dir.path().join("one").display(),
            u = dir.path().join("uno").display(),
            d = dst.display()
        ),
    );
    let (shown, _, run, report) = plan_then_run(&p, &[]).await;
    run.assert_code(1);
    shown.assert_code(1);
    let failed: Vec<&Value> = report["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["action"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{report}");
    let why = failed[0]["error"].as_str().unwrap();
    let p = p.display().to_string();
    assert!(
        why.contains(&format!("copy #2 ({p}:8) would write it from"))
            && why.contains(&format!("but copy #1 ({p}:3) writes it from")),
        "{why}"
    );
    // The first rule's image is the one there.
    assert_eq!(layout_tags(&dst.join("x"))["1.0.0"], tags["1.0.0"]);
}

/// Item 1's second half: a tag ferry itself deleted (retention) is not trusted from the
/// checkpoint again: the next run copies it back instead of calling it unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_retention_deletes_is_forgotten_by_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("dst");
    let state = dir.path().join("state/ferry.db");
    let state_s = state.to_str().unwrap();
    let copy_plan_file = plan_named(
        dir.path(),
        "copy.toml",
        &format!(
            "version = 1\n[[copy]]\nfrom = \"oci:{}:1.0.0\"\nto = \"oci:{}\"\n",
            demo().display(),
            dst.display()
        ),
    );
    let copy = copy_plan_file.to_str().unwrap();
    ferry(&["run", "--state", state_s, copy], &[])
        .await
        .assert_code(0);
    let prune = plan(
        dir.path(),
        &format!(
            "version = 1\n[[retain]]\nrepository = \"oci:{}\"\ndelete_tags = ['^1\\.0\\.0$']\n",
            dst.display()
        ),
    );
    ferry(&["run", "--state", state_s, prune.to_str().unwrap()], &[])
        .await
        .assert_code(0);
    assert!(layout_tags(&dst).is_empty());
    // 1.0.0 is an immutable tag recorded done: before, the record was trusted and the run
    // said "unchanged" with nothing at the target.
    let (_, plan, run, _) = plan_then_run(&copy_plan_file, &["--state", state_s]).await;
    run.assert_code(0);
    assert_eq!(plan["totals"]["copy"], 1, "{plan}");
    assert!(
        run.summary().starts_with("ferry: 1 images copied"),
        "{}",
        run.summary()
    );
    assert_eq!(layout_tags(&dst)["1.0.0"], layout_tags(&demo())["1.0.0"]);
}

/// A tag someone else deleted at the target comes back once its record is older than
/// `recheck_after` (one HEAD at the target), or at once with `--recheck`; until then the
/// record is trusted, which is what keeps a no-op run cheap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_is_checked_at_the_target_again_after_recheck_after() {
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("dst");
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\nrecheck_after = \"2s\"\n[[copy]]\nfrom = \"oci:{}\"\nto = \"oci:{}\"\n",
            demo().display(),
            dst.display()
        ),
    );
    let ps = p.to_str().unwrap();
    ferry(&["run", ps], &[]).await.assert_code(0);
    let untag = || {
        let index = dst.join("index.json");
        let mut v = json(&std::fs::read_to_string(&index).unwrap());
        v["manifests"]
            .as_array_mut()
            .unwrap()
            .retain(|m| m["annotations"]["org.opencontainers.image.ref.name"] != "1.0.0");
        std::fs::write(&index, serde_json::to_vec(&v).unwrap()).unwrap();
    };
    untag();
    // Fresh records: trusted, no request (and the plan says the same), and said so: not
    // "present", which is checked at the target (issue 21, "What was seen" 6).
    let (_, _, run, _) = plan_then_run(&p, &[]).await;
    run.assert_code(0);
    assert!(
        run.summary().starts_with(
            "ferry: 0 images copied, 0 already present, 3 unchanged (trusted from the checkpoint)"
        ),
        "{}",
        run.summary()
    );
    assert!(!layout_tags(&dst).contains_key("1.0.0"));
    // `--recheck` checks now.
    let (_, _, run, _) = plan_then_run(&p, &["--recheck"]).await;
    assert!(
        run.summary()
            .starts_with("ferry: 1 images copied, 2 already present"),
        "{}",
        run.summary()
    );
    untag();
    // After recheck_after, a plain run checks too.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let (_, _, run, report) = plan_then_run(&p, &[]).await;
    run.assert_code(0);
    assert!(
        run.summary()
            .starts_with("ferry: 1 images copied, 2 already present"),
        "{}\n{report}",
        run.summary()
    );
    assert_eq!(layout_tags(&dst), layout_tags(&demo()));
}

/// `ferry plan` writes nothing: no layout, no checkpoint, not even a state directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("dst");
    let state = dir.path().join("state");
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\nstate = \"{}/ferry.db\"\n[[copy]]\nfrom = \"oci:{}\"\nto = \"oci:{}\"\n\n[[retain]]\nrepository = \"oci:{}\"\nkeep_tags = ['^1\\.']\n",
            state.display(),
            demo().display(),
            dst.display(),
            dst.display()
        ),
    );
    let shown = ferry(&["plan", p.to_str().unwrap()], &[]).await;
    shown.assert_code(0);
    assert!(
        shown.stdout.contains("plan: 3 images to copy"),
        "{}",
        shown.stdout
    );
    assert!(!dst.exists() && !state.exists());
}
