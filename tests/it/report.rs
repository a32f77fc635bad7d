//! `--report` (JSON) and `--metrics` (Prometheus text): they parse, agree with what the
//! registries hold, and are private to the user.

use std::os::unix::fs::PermissionsExt;

use crate::common::*;
use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_and_metrics_agree_with_the_registry() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let fx = populate(&src, "team").await;
    let dir = tempfile::tempdir().unwrap();
    let p = copy_plan(
        dir.path(),
        &[&src.addr, &dst.addr],
        "",
        &format!("{}/team/*", src.addr),
        &format!("{}/team/*", dst.addr),
    );
    let report = dir.path().join("out/report.json");
    let metrics = dir.path().join("out/ferry.prom");
    let run = ferry(
        &[
            "run",
            "--report",
            report.to_str().unwrap(),
            "--metrics",
            metrics.to_str().unwrap(),
            p.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    run.assert_code(0);

    for f in [&report, &metrics] {
        let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.display());
    }
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(v["report_version"], 1);
    assert_eq!(v["outcome"], "succeeded");
    assert_eq!(v["totals"]["copied"], fx.tagged.len());
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), fx.tagged.len());
    let mut bytes = 0;
    for item in items {
        assert_eq!(item["action"], "copied");
        let target = item["target"].as_str().unwrap();
        let (repo_part, tag) = target.rsplit_once(':').unwrap();
        let repo = repo_part.strip_prefix(&format!("{}/", dst.addr)).unwrap();
        let (_, _, digest) = dst.pusher().manifest(repo, tag).await.unwrap();
        assert_eq!(item["digest"], digest.as_str(), "{target}");
        bytes += item["bytes"].as_u64().unwrap();
    }
    assert_eq!(v["totals"]["bytes"], bytes);
    let src_stats = &v["registries"][src.addr.as_str()];
    assert!(src_stats["requests"].as_u64().unwrap() > 0, "{v}");

    let samples = samples(&metrics);
    assert_eq!(
        samples["ferry_images{outcome=\"copied\"}"],
        fx.tagged.len() as f64
    );
    assert_eq!(samples["ferry_transferred_bytes"], bytes as f64);
    assert_eq!(samples["ferry_last_run_success"], 1.0);
    assert!(samples.contains_key("ferry_last_success_timestamp_seconds"));
    assert!(samples.contains_key(&format!(
        "ferry_registry_requests{{registry=\"{}\"}}",
        dst.addr
    )));
}

/// `count` repositories `fleet/svc-N` at `src`, each with one image (layer `seed`) as `1.0.0`.
async fn fleet(src: &Registry, count: usize, seed: u64) {
    let img = image(&[layer(seed, 2048)], "linux", "amd64", Format::Oci, "shard");
    for r in 0..count {
        src.pusher()
            .push(&format!("fleet/svc-{r}"), "1.0.0", &img)
            .await;
    }
}

/// A plan in `dir` copying `fleet/*` from `src` to `dst`.
fn fleet_plan(dir: &std::path::Path, src: &Registry, dst: &Registry) -> std::path::PathBuf {
    copy_plan(
        dir,
        &[&src.addr, &dst.addr],
        "",
        &format!("{}/fleet/*", src.addr),
        &format!("{}/fleet/*", dst.addr),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_cover_every_repository_once_and_their_reports_merge() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    fleet(&src, 9, 50).await;
    let dir = tempfile::tempdir().unwrap();
    let p = fleet_plan(dir.path(), &src, &dst);
    let p = p.to_str().unwrap();
    let mut reports = Vec::new();
    let mut targets = Vec::new();
    for index in 0..3 {
        let report = dir.path().join(format!("shard-{index}.json"));
        // Shard 1 takes its index from the environment, as a pod of an Indexed Job does.
        let (args, env): (Vec<String>, Vec<(&str, String)>) = if index == 1 {
            (
                vec!["run".into(), "--shards".into(), "3".into()],
                vec![("JOB_COMPLETION_INDEX", "1".into())],
            )
        } else {
            (
                vec!["run".into(), "--shard".into(), format!("{index}/3")],
                vec![],
            )
        };
        let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
        args.extend(["--report", report.to_str().unwrap(), p]);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        ferry(&args, &env).await.assert_code(0);
        assert!(dir
            .path()
            .join(format!("ferry.shard-{index}-of-3.db"))
            .exists());
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        assert_eq!(v["shard"], format!("{index}/3"));
        for item in v["items"].as_array().unwrap() {
            targets.push(item["target"].as_str().unwrap().to_string());
        }
        reports.push(report);
    }
    let mut sorted = targets.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        targets.len(),
        "no repository in two shards: {targets:?}"
    );
    assert_eq!(targets.len(), 9, "every repository in some shard");
    for r in 0..9 {
        assert_eq!(
            dst.pusher().tags(&format!("fleet/svc-{r}")).await,
            vec!["1.0.0"]
        );
    }

    let merged = dir.path().join("all.json");
    let mut args = vec!["report", "merge", "--output", merged.to_str().unwrap()];
    args.extend(reports.iter().map(|r| r.to_str().unwrap()));
    ferry(&args, &[]).await.assert_code(0);
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&merged).unwrap()).unwrap();
    assert_eq!(v["totals"]["copied"], 9);
    assert_eq!(v["items"].as_array().unwrap().len(), 9);
    assert_eq!(v["outcome"], "succeeded");
    assert_eq!(v["merged_from"].as_array().unwrap().len(), 3);
}

/// The samples of a metrics file, by name with labels.
fn samples(path: &std::path::Path) -> std::collections::HashMap<String, f64> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap();
            (name.to_string(), value.parse::<f64>().unwrap())
        })
        .collect()
}

/// Issue 21, "What was seen" 6: `unchanged` (trusted from the checkpoint) is counted apart
/// from `present` (checked at the target in this run) in the summary, the report, the
/// metrics, `ferry status` and `ferry plan`; and a failed run keeps
/// `ferry_last_success_timestamp_seconds` at the last succeeded run's end, from the
/// checkpoint, so a staleness alert on it fires instead of going absent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_is_counted_apart_and_the_last_success_outlives_a_failed_run() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let fx = populate(&src, "team").await;
    let n = fx.tagged.len();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "version = 1\n{}[[copy]]\nfrom = \"{}/team/*\"\nto = \"{}/team/*\"\n",
        insecure(&[&src, &dst]),
        src.addr,
        dst.addr
    );
    let p = plan(dir.path(), &text);
    let p = p.to_str().unwrap();
    let (report, metrics) = (dir.path().join("r.json"), dir.path().join("m.prom"));
    let (report, metrics) = (report.to_str().unwrap(), metrics.to_str().unwrap());
    let run = |extra: &'static [&'static str]| {
        let mut args = vec!["run", "--report", report, "--metrics", metrics];
        args.extend(extra);
        args.push(p);
        async move { ferry(&args, &[]).await }
    };
    run(&[]).await.assert_code(0);

    // A tag the checkpoint does not know, already at the target: checked there, present.
    let img = image(&[layer(900, 4096)], "linux", "amd64", Format::Oci, "v3");
    src.pusher().push("team/api", "v3.0.0", &img).await;
    dst.pusher().push("team/api", "v3.0.0", &img).await;
    let unchanged = format!("{n} unchanged (trusted from the checkpoint)");

    let shown = ferry(&["plan", p], &[]).await;
    shown.assert_code(0);
    let closing = format!(
        "plan: 0 images to copy (0 B), 1 already present, {unchanged}, 0 to delete, 0 errors"
    );
    assert!(
        shown.stdout.ends_with(&format!("{closing}\n")),
        "{}",
        shown.stdout
    );

    let second = run(&[]).await;
    second.assert_code(0);
    let summary = format!("ferry: 0 images copied, 1 already present, {unchanged}, 0 failed;");
    assert!(
        second.summary().starts_with(&summary),
        "{}",
        second.summary()
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
    assert_eq!(
        (
            v["totals"]["present"].as_u64(),
            v["totals"]["unchanged"].as_u64()
        ),
        (Some(1), Some(n as u64)),
        "{}",
        v["totals"]
    );
    let m = samples(std::path::Path::new(metrics));
    assert_eq!(m["ferry_images{outcome=\"present\"}"], 1.0);
    assert_eq!(m["ferry_images{outcome=\"unchanged\"}"], n as f64);
    let succeeded = m["ferry_last_success_timestamp_seconds"];

    let status = ferry(&["status", p, "--output", "json"], &[]).await;
    status.assert_code(0);
    let s: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(
        (
            s["totals"]["present"].as_u64(),
            s["totals"]["unchanged"].as_u64()
        ),
        (Some(1), Some(n as u64)),
        "{s}"
    );
    let status = ferry(&["status", p], &[]).await;
    assert!(
        status
            .stdout
            .contains(&format!("1 already present, {unchanged}")),
        "{}",
        status.stdout
    );

    // A rule that reads nothing fails the next run: the last success stays where it was.
    let broken = format!(
        "{text}\n[[copy]]\nfrom = \"{}/team/nope:v9\"\nto = \"{}/nope:v9\"\n",
        src.addr, dst.addr
    );
    plan(dir.path(), &broken);
    run(&[]).await.assert_code(1);
    let m = samples(std::path::Path::new(metrics));
    assert_eq!(m["ferry_last_run_success"], 0.0);
    assert_eq!(
        m.get("ferry_last_success_timestamp_seconds"),
        Some(&succeeded),
        "{m:?}"
    );
    assert!(m["ferry_last_run_timestamp_seconds"] >= succeeded);
}

/// (source, target, action in the run's words) of every item `ferry plan --output json`
/// printed, sorted; and its exit code.
async fn planned_items(
    args: &[&str],
    env: &[(&str, &str)],
) -> (Vec<(String, String, String)>, i32) {
    let shown = ferry(args, env).await;
    let v: serde_json::Value = serde_json::from_str(&shown.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: {e}\n{}\n{}", shown.stdout, shown.stderr));
    (planned_rows(&v), shown.code)
}

/// Issue 21, item 6: `ferry plan --shard I/N` (and `--shards N` with the Job's completion
/// index) shows what `ferry run` with the same flag does: a disjoint share of the plan's
/// items, the same items and exit code as that shard's run, and that shard's own checkpoint,
/// read and never written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_shows_what_each_shard_of_the_run_does() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    fleet(&src, 8, 51).await;
    // One repository whose layer the source lost: its item fails, in the plan as in the run.
    let broken = image(&[layer(52, 2048)], "linux", "amd64", Format::Oci, "broken");
    src.pusher().push("fleet/broken", "1.0.0", &broken).await;
    let gone = src
        .pusher()
        .send(
            reqwest::Method::DELETE,
            &format!("/v2/fleet/broken/blobs/{}", broken.layers()[0].digest),
            &[],
            None,
        )
        .await;
    assert_eq!(gone.status(), reqwest::StatusCode::ACCEPTED);
    let dir = tempfile::tempdir().unwrap();
    let p = fleet_plan(dir.path(), &src, &dst);
    let p = p.to_str().unwrap();
    let json = ["--output", "json"];

    let (all, all_code) = planned_items(&[&["plan", p][..], &json].concat(), &[]).await;
    assert_eq!(all.len(), 9, "{all:?}");
    assert_eq!(all_code, 1, "the broken repository fails");
    let (zero, zero_code) =
        planned_items(&[&["plan", "--shard", "0/2", p][..], &json].concat(), &[]).await;
    let (one, one_code) = planned_items(
        &[&["plan", "--shards", "2", p][..], &json].concat(),
        &[("JOB_COMPLETION_INDEX", "1")],
    )
    .await;
    assert!(zero.iter().all(|i| !one.contains(i)), "{zero:?}\n{one:?}");
    let mut union = [zero.clone(), one.clone()].concat();
    union.sort();
    assert_eq!(union, all);
    // Read only: the plan creates no checkpoint.
    for i in 0..2 {
        assert!(!dir.path().join(format!("ferry.shard-{i}-of-2.db")).exists());
    }

    for (index, planned, code) in [(0, &zero, zero_code), (1, &one, one_code)] {
        let report = dir.path().join(format!("shard-{index}.json"));
        let shard = format!("{index}/2");
        let run = ferry(
            &[
                "run",
                "--shard",
                &shard,
                "--report",
                report.to_str().unwrap(),
                p,
            ],
            &[],
        )
        .await;
        assert_eq!(run.code, code, "shard {shard}: {}", run.stderr);
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        assert_eq!(&reported_rows(&v), planned, "shard {shard}");
    }

    // Each shard's plan reads that shard's checkpoint: what its run copied is recorded there
    // (`unchanged`), not in the unsharded one (`present`, asked at the target).
    let (again, _) =
        planned_items(&[&["plan", "--shard", "0/2", p][..], &json].concat(), &[]).await;
    for (source, _, action) in &again {
        let want = if source.contains("broken") {
            "failed"
        } else {
            "unchanged"
        };
        assert_eq!(action, want, "{again:?}");
    }
    let (unsharded, _) = planned_items(&[&["plan", p][..], &json].concat(), &[]).await;
    assert!(
        unsharded.iter().all(|(_, _, a)| a != "unchanged"),
        "{unsharded:?}"
    );

    // The flags are checked as `run` checks them, with the same words.
    for bad in ["2/2", "x"] {
        let shown = ferry(&["plan", "--shard", bad, p], &[]).await;
        let ran = ferry(&["run", "--shard", bad, p], &[]).await;
        shown.assert_code(2);
        ran.assert_code(2);
        let last = |s: &str| s.lines().last().unwrap_or_default().to_string();
        assert_eq!(last(&shown.stderr), last(&ran.stderr), "--shard {bad}");
        assert!(
            last(&shown.stderr).starts_with("error: "),
            "{}",
            shown.stderr
        );
    }
    let shown = ferry(&["plan", "--shards", "2", p], &[]).await;
    shown.assert_code(2);
    assert!(
        shown.stderr.contains("--shards needs JOB_COMPLETION_INDEX"),
        "{}",
        shown.stderr
    );
}

/// Tags `t0`, `t1`, … (`count` of them) of `repo` at `reg`, all pointing at what `tag` points
/// at, written straight into the registry's storage as a push of the same manifest under
/// each tag leaves them: thousands of tags in milliseconds.
fn tag_links(reg: &Registry, repo: &str, tag: &str, count: usize) {
    let tags = reg
        .storage_dir()
        .join("docker/registry/v2/repositories")
        .join(repo)
        .join("_manifests/tags");
    let link = std::fs::read_to_string(tags.join(tag).join("current/link")).unwrap();
    let hex = link.trim().strip_prefix("sha256:").unwrap().to_string();
    for t in 0..count {
        for sub in ["current".to_string(), format!("index/sha256/{hex}")] {
            let d = tags.join(format!("t{t}")).join(sub);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("link"), &link).unwrap();
        }
    }
}

/// Issue 24, "memory independent of the number of tags": the report of thousands of items is
/// written as they finish (a temporary file that grows while the run goes and is renamed into
/// place at its end), and is well formed; `ferry report merge`, `ferry plan --output json` and
/// `ferry verify --output json` read and write as many, item by item.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_of_thousands_of_items_is_written_as_they_finish() {
    // Over several repositories: the PUTs of one manifest into one repository go one at a
    // time (see the engine's `manifests`).
    const REPOS: usize = 10;
    const TAGS: usize = 2000;
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let img = image(&[layer(24, 512)], "linux", "amd64", Format::Oci, "many");
    for r in 0..REPOS {
        let repo = format!("many/app{r}");
        src.pusher().push(&repo, "base", &img).await;
        tag_links(&src, &repo, "base", TAGS / REPOS - 1);
    }
    let dir = tempfile::tempdir().unwrap();
    let (from, to) = (src.addr.clone() + "/many/*", dst.addr.clone() + "/many/*");
    let p = copy_plan(dir.path(), &[&src.addr, &dst.addr], "", &from, &to);
    let report = dir.path().join("report.json");
    let home = tempfile::tempdir().unwrap();
    let args = [
        "run",
        "--progress",
        "none",
        "--report",
        report.to_str().unwrap(),
    ];
    let args = [&args[..], &[p.to_str().unwrap()]].concat();
    let mut child = ferry_command(&args, &[], home.path()).spawn().unwrap();
    // The largest the temporary report was seen while the run went.
    let mut grew = 0;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status.unwrap(),
            _ = tokio::time::sleep(std::time::Duration::from_millis(20)) => {}
        }
        for e in std::fs::read_dir(dir.path()).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(".report.json.") && name.ends_with(".tmp") {
                grew = grew.max(e.metadata().map_or(0, |m| m.len()));
            }
        }
    };
    assert!(status.success(), "{status}");
    assert!(
        grew > 64 * 1024,
        "the report grew to {grew} bytes while the run went"
    );
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
    let text = std::fs::read_to_string(&report).unwrap();
    // Items before what the run's end tells: written as they came.
    assert!(text.find("\"items\"").unwrap() < text.find("\"ended_at\"").unwrap());
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["totals"]["copied"], TAGS);
    let targets: std::collections::BTreeSet<&str> = (v["items"].as_array().unwrap().iter())
        .filter(|i| i["action"] == "copied")
        .map(|i| i["target"].as_str().unwrap())
        .collect();
    assert_eq!(targets.len(), TAGS);

    let merged = dir.path().join("all.json");
    let args = ["report", "merge", "--output", merged.to_str().unwrap()];
    ferry(&[&args[..], &[report.to_str().unwrap()]].concat(), &[])
        .await
        .assert_code(0);
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&merged).unwrap()).unwrap();
    assert_eq!(m["items"], v["items"]);
    assert_eq!(m["merged_from"].as_array().unwrap().len(), 1);

    let planned = ferry(&["plan", "--output", "json", p.to_str().unwrap()], &[]).await;
    planned.assert_code(0);
    let planned = json(&planned.stdout);
    let copies = planned["copies"].as_array().unwrap();
    assert_eq!(copies.len(), TAGS);
    assert!(
        copies.iter().all(|c| c["action"] == "unchanged"),
        "{}",
        copies[0]
    );
    assert_eq!(planned["totals"]["unchanged"], TAGS);
    let verified = ferry(&["verify", "--output", "json", p.to_str().unwrap()], &[]).await;
    verified.assert_code(0);
    let verified = json(&verified.stdout);
    assert_eq!(verified["items"].as_array().unwrap().len(), TAGS);
    assert_eq!(verified["totals"]["complete"], TAGS);
}
