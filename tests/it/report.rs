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

    let text = std::fs::read_to_string(&metrics).unwrap();
    let mut samples = std::collections::HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line.rsplit_once(' ').unwrap();
        samples.insert(name.to_string(), value.parse::<f64>().unwrap());
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_cover_every_repository_once_and_their_reports_merge() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let img = image(&[layer(50, 2048)], "linux", "amd64", Format::Oci, "shard");
    for r in 0..9 {
        src.pusher()
            .push(&format!("fleet/svc-{r}"), "1.0.0", &img)
            .await;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = copy_plan(
        dir.path(),
        &[&src.addr, &dst.addr],
        "",
        &format!("{}/fleet/*", src.addr),
        &format!("{}/fleet/*", dst.addr),
    );
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
