//! Issue 26, "Review and watch": `--metrics-push` against a real Pushgateway, and the shipped
//! monitoring (deploy/monitoring/: alert rules, the PrometheusRule, the Grafana dashboard)
//! against a real Prometheus scraping it. The Prometheus binaries come from Debian's
//! `prometheus` and `prometheus-pushgateway` packages (scripts/test.sh installs them); a test
//! that needs them says SKIPPED and passes when they are missing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::common::*;
use crate::harness::*;

const RULES: &str = "deploy/monitoring/ferry-alerts.rules.yml";
const PROMETHEUS_RULE: &str = "deploy/monitoring/ferry-prometheusrule.yaml";
const DASHBOARD: &str = "deploy/monitoring/ferry-dashboard.json";

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// `promtool check rules FILE`: its output when it fails.
fn promtool_check(file: &Path) -> Result<(), String> {
    let out = std::process::Command::new(PROMTOOL_BIN)
        .args(["check", "rules"])
        .arg(file)
        .output()
        .expect("run promtool");
    match out.status.success() {
        true => Ok(()),
        false => Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

/// The lines of a YAML text from `from` (a line starting with it, at any indentation) to the
/// end, without comment-only and blank lines, each without the first line's indentation.
fn rules_lines(text: &str, from: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.trim_start().starts_with(from))
        .unwrap_or_else(|| panic!("no {from} line"));
    let indent = lines[start].len() - lines[start].trim_start().len();
    lines[start..]
        .iter()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|l| l.get(indent..).unwrap_or(l.trim_start()).to_string())
        .collect()
}

/// Issue 26, "Done when" 3: `promtool check rules` passes on the shipped rules, and the
/// PrometheusRule carries the same rules (its `spec`, checked by promtool too).
#[test]
fn the_shipped_rules_pass_promtool_and_the_prometheusrule_has_the_same() {
    let rules = std::fs::read_to_string(repo_file(RULES)).unwrap();
    let operator = std::fs::read_to_string(repo_file(PROMETHEUS_RULE)).unwrap();
    assert!(operator.contains("apiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\n"));
    let plain = rules_lines(&rules, "groups:");
    let spec = rules_lines(&operator, "groups:");
    assert_eq!(plain, spec, "{RULES} and {PROMETHEUS_RULE} differ");
    for alert in [
        "FerryLastSuccessStale",
        "FerryItemsFailed",
        "FerryDeletionsHeldBack",
        "FerryInUseSourceUnreadable",
    ] {
        let line = format!("- alert: {alert}");
        assert!(plain.iter().any(|l| l.trim() == line), "{alert}");
    }
    if !prometheus_installed("promtool check rules") {
        return;
    }
    promtool_check(&repo_file(RULES)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let from_spec = dir.path().join("spec.rules.yml");
    std::fs::write(&from_spec, spec.join("\n") + "\n").unwrap();
    promtool_check(&from_spec).unwrap();
}

/// Every `ferry_…` identifier in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let chars: Vec<char> = expr.chars().collect();
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut i = 0;
    while i < chars.len() {
        if word(chars[i]) && (i == 0 || !word(chars[i - 1])) {
            let end = (i..chars.len())
                .find(|&j| !word(chars[j]))
                .unwrap_or(chars.len());
            let token: String = chars[i..end].iter().collect();
            if token.starts_with("ferry_") {
                names.insert(token);
            }
            i = end;
        } else {
            i += 1;
        }
    }
    names
}

/// The PromQL of the dashboard: every `expr`, and the variables' `query`/`definition`.
fn dashboard_queries(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "query" | "definition", serde_json::Value::String(s)) => {
                        out.push(s.clone())
                    }
                    _ => dashboard_queries(value, out),
                }
            }
        }
        serde_json::Value::Array(list) => list.iter().for_each(|x| dashboard_queries(x, out)),
        _ => {}
    }
}

/// The metric names of a metrics text (`# TYPE` lines).
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .collect()
}

/// A source holding the `team` fixture, an empty target, and a plan in `dir` copying
/// `team/*` from one to the other.
async fn team_mirror(dir: &Path) -> (Registry, Registry, PathBuf) {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    populate(&src, "team").await;
    let p = copy_plan(
        dir,
        &[&src.addr, &dst.addr],
        "",
        &format!("{}/team/*", src.addr),
        &format!("{}/team/*", dst.addr),
    );
    (src, dst, p)
}

/// Issue 26, "Done when" 4: every metric the dashboard and the rules query is one ferry
/// exports, read from a real run's and a real verify's `--metrics` files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_the_rules_query_only_what_ferry_exports() {
    let dir = tempfile::tempdir().unwrap();
    let (_src, _dst, p) = team_mirror(dir.path()).await;
    let (run_prom, verify_prom) = (dir.path().join("run.prom"), dir.path().join("verify.prom"));
    let p = p.to_str().unwrap();
    ferry(&["run", "--metrics", run_prom.to_str().unwrap(), p], &[])
        .await
        .assert_code(0);
    ferry(
        &["verify", "--metrics", verify_prom.to_str().unwrap(), p],
        &[],
    )
    .await
    .assert_code(0);
    let mut known = exported(&std::fs::read_to_string(&run_prom).unwrap());
    known.extend(exported(&std::fs::read_to_string(&verify_prom).unwrap()));
    // The adaptive window exists for targets blobs were sent to: this run sent some.
    for name in [
        "ferry_registry_window",
        "ferry_deletions_held_back",
        "ferry_kept_in_use",
    ] {
        assert!(known.contains(name), "{name} not exported: {known:?}");
    }

    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo_file(DASHBOARD)).unwrap()).unwrap();
    let mut queries = Vec::new();
    dashboard_queries(&dashboard, &mut queries);
    let rules = std::fs::read_to_string(repo_file(RULES)).unwrap();
    // The rules' expressions: each `expr:` and the block lines under it.
    let exprs = rules_lines(&rules, "groups:").into_iter().filter(|l| {
        !l.trim_start().starts_with("summary:") && !l.trim_start().starts_with("description:")
    });
    queries.extend(exprs);
    let used: BTreeSet<String> = queries.iter().flat_map(|q| metric_names(q)).collect();
    assert!(used.len() >= 15, "{used:?}");
    let unknown: Vec<&String> = used.difference(&known).collect();
    assert!(unknown.is_empty(), "queried but not exported: {unknown:?}");
}

/// The samples of the Pushgateway's `/metrics` whose name starts with `prefix`: (the line's
/// name and labels, value).
async fn gateway_samples(gateway: &Server, prefix: &str) -> Vec<(String, String)> {
    let text = reqwest::get(format!("{}/metrics", gateway.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Issue 26, "Done when" 2: a run pushes its metrics, and `GET /metrics` on a real
/// Pushgateway shows them with the `job` and `plan` labels; `verify` pushes as
/// `ferry-verify`; a shard pushes to a group of its own (`shard` label).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_and_a_verify_push_their_metrics_to_the_pushgateway() {
    if !prometheus_installed("a_run_and_a_verify_push_their_metrics_to_the_pushgateway") {
        return;
    }
    let gateway = start_pushgateway().await;
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let fx = populate(&src, "team").await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "version = 1\n{}[[copy]]\nfrom = \"{}/team/*\"\nto = \"{}/team/*\"\n",
        insecure(&[&src, &dst]),
        src.addr,
        dst.addr
    );
    let p = dir.path().join("nightly-mirror.toml");
    std::fs::write(&p, text).unwrap();
    let p = p.to_str().unwrap();
    let run = ferry(&["run", "--metrics-push", &gateway.url, p], &[]).await;
    run.assert_code(0);
    assert!(
        !run.stderr.contains("pushing the metrics"),
        "{}",
        run.stderr
    );
    let copied =
        "ferry_images{instance=\"\",job=\"ferry\",outcome=\"copied\",plan=\"nightly-mirror\"}"
            .to_string();
    let samples = gateway_samples(&gateway, "ferry_").await;
    assert!(
        samples.contains(&(copied.clone(), fx.tagged.len().to_string())),
        "{copied} {}: {samples:?}\n{}",
        fx.tagged.len(),
        gateway.log()
    );
    let names: BTreeSet<&str> = samples
        .iter()
        .filter_map(|(k, _)| k.split('{').next())
        .collect();
    for name in [
        "ferry_last_success_timestamp_seconds",
        "ferry_last_run_success",
        "ferry_registry_requests_by_kind",
        "ferry_deletions_held_back",
        "ferry_in_use_sources_unreadable",
    ] {
        assert!(names.contains(name), "{name}: {names:?}");
    }
    // The group: job and plan, as the Pushgateway records the push.
    let pushed = gateway_samples(&gateway, "push_time_seconds{").await;
    assert!(
        pushed
            .iter()
            .any(|(k, _)| k.contains("job=\"ferry\"") && k.contains("plan=\"nightly-mirror\"")),
        "{pushed:?}"
    );

    let verify = ferry(&["verify", "--metrics-push", &gateway.url, p], &[]).await;
    verify.assert_code(0);
    let samples = gateway_samples(&gateway, "ferry_verify_last_run_success{").await;
    assert_eq!(
        samples,
        vec![(
            "ferry_verify_last_run_success{instance=\"\",job=\"ferry-verify\",plan=\"nightly-mirror\"}".to_string(),
            "1".to_string()
        )]
    );

    // A shard pushes to a group of its own: the whole plan's group stays.
    let shard = ferry(
        &["run", "--shard", "1/2", "--metrics-push", &gateway.url, p],
        &[],
    )
    .await;
    shard.assert_code(0);
    let groups: Vec<String> = gateway_samples(&gateway, "push_time_seconds{")
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let ferry_groups: Vec<&String> = groups
        .iter()
        .filter(|k| k.contains("job=\"ferry\""))
        .collect();
    assert_eq!(ferry_groups.len(), 2, "{groups:?}");
    assert!(
        ferry_groups.iter().any(|k| k.contains("shard=\"1\"")),
        "{groups:?}"
    );
}

/// Issue 26, "Done when" 2: a run whose push target is down exits as the run deserves (0)
/// and names the push failure, on stderr and in the report, never with the URL's password;
/// a `--metrics-push` that is not an http(s) URL is refused before the run, unquoted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_target_that_is_down_does_not_fail_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let (_src, _dst, p) = team_mirror(dir.path()).await;
    let p = p.to_str().unwrap();
    let closed = free_port();
    let url = format!("http://pusher:push-canary@127.0.0.1:{closed}");
    let report = dir.path().join("report.json");
    let run = ferry(
        &[
            "run",
            "--metrics-push",
            &url,
            "--report",
            report.to_str().unwrap(),
            p,
        ],
        &[],
    )
    .await;
    run.assert_code(0);
    let shown = format!("pushing the metrics to http://127.0.0.1:{closed}/: ");
    assert!(run.stderr.contains(&shown), "{}", run.stderr);
    assert!(!run.stderr.contains("push-canary"), "{}", run.stderr);
    let text = std::fs::read_to_string(&report).unwrap();
    assert!(!text.contains("push-canary"));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(
        v["metrics_push"]
            .as_str()
            .is_some_and(|m| m.starts_with(&shown)),
        "{}",
        v["metrics_push"]
    );
    assert_eq!(v["outcome"], "succeeded");

    // From the environment too; a URL that is not http(s) stops the run before it starts.
    let bad = ferry(
        &["run", p],
        &[("FERRY_METRICS_PUSH", "ftp://u:push-canary@127.0.0.1/")],
    )
    .await;
    bad.assert_code(2);
    assert!(
        bad.stderr
            .contains("--metrics-push must be an http or https URL"),
        "{}",
        bad.stderr
    );
    assert!(!bad.stderr.contains("push-canary"), "{}", bad.stderr);
}

/// The shipped rules with short durations for a test: no `for:` wait, and a last success
/// older than `stale` seconds is stale (instead of twice a day's schedule).
fn test_rules(dir: &Path, stale: u64) -> PathBuf {
    let shipped = std::fs::read_to_string(repo_file(RULES)).unwrap();
    assert!(shipped.contains("> 172800\n") && shipped.contains("for: 10m\n"));
    let rules = shipped
        .replace("> 172800\n", &format!("> {stale}\n"))
        .replace("for: 10m\n", "for: 0s\n");
    let path = dir.join("ferry.rules.yml");
    std::fs::write(&path, rules).unwrap();
    path
}

/// Poll Prometheus' alerts until `want` holds of the firing ones, or panic at `deadline`.
async fn wait_for_alerts(
    prometheus: &Server,
    deadline: Duration,
    what: &str,
    want: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let until = Instant::now() + deadline;
    loop {
        let firing: Vec<String> = alerts(prometheus)
            .await
            .into_iter()
            .filter(|(_, state)| state == "firing")
            .map(|(name, _)| name)
            .collect();
        if want(&firing) {
            return firing;
        }
        assert!(
            Instant::now() < until,
            "{what} within {deadline:?}: firing {firing:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Issue 26, "Done when" 3: with a real Prometheus scraping the Pushgateway and the shipped
/// rules loaded (short durations), a failed run (a target that refuses manifests) sets the
/// stale-success alert (the last success, carried over from the checkpoint, is too old) and
/// the failed-items alert firing; after a successful run neither is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failed_run_the_alerts_fire_and_after_a_good_one_they_stop() {
    if !prometheus_installed("after_a_failed_run_the_alerts_fire_and_after_a_good_one_they_stop") {
        return;
    }
    const STALE: u64 = 20;
    let dir = tempfile::tempdir().unwrap();
    let gateway = start_pushgateway().await;
    let prometheus = start_prometheus(&gateway, &test_rules(dir.path(), STALE)).await;
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let refuse = Arc::new(AtomicBool::new(false));
    let refusing = refuse.clone();
    let front = Proxy::start(
        &dst.url,
        Arc::new(move |m, uri: &str, _| {
            if refusing.load(Ordering::SeqCst) && m == "PUT" && uri.contains("/manifests/") {
                Action::registry_error(
                    StatusCode::FORBIDDEN,
                    "DENIED",
                    "requested access to the resource is denied",
                )
            } else {
                Action::Forward
            }
        }),
    )
    .await;
    let img = |seed| {
        image(
            &[layer(seed, 2048)],
            "linux",
            "amd64",
            Format::Oci,
            "alerts",
        )
    };
    src.pusher().push("team/app", "v1", &img(1)).await;
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n[registry.\"{f}\"]\ninsecure = true\nretries = 0\n{}[[copy]]\nfrom = \"{}/team/app\"\nto = \"{f}/team/app\"\n",
            insecure(&[&src]),
            src.addr,
            f = front.addr,
        ),
    );
    let p = p.to_str().unwrap();
    let run = || async { ferry(&["run", "--metrics-push", &gateway.url, p], &[]).await };
    run().await.assert_code(0);
    let succeeded = Instant::now();

    refuse.store(true, Ordering::SeqCst);
    src.pusher().push("team/app", "v2", &img(2)).await;
    let failed = run().await;
    failed.assert_code(1);
    let both = |f: &[String]| {
        f.iter().any(|a| a == "FerryItemsFailed") && f.iter().any(|a| a == "FerryLastSuccessStale")
    };
    // Stale once the first run's success is STALE seconds old; a few seconds more for the
    // scrape and the evaluation.
    let left = Duration::from_secs(STALE + 15).saturating_sub(succeeded.elapsed());
    wait_for_alerts(&prometheus, left, "the failed run's alerts", both).await;

    refuse.store(false, Ordering::SeqCst);
    run().await.assert_code(0);
    let quiet = |f: &[String]| {
        !f.iter()
            .any(|a| a == "FerryItemsFailed" || a == "FerryLastSuccessStale")
    };
    wait_for_alerts(
        &prometheus,
        Duration::from_secs(12),
        "the alerts resolved after a good run",
        quiet,
    )
    .await;
}

/// Issue 26, "deploy/monitoring": the two retention alerts fire in a real Prometheus. One
/// plan's `max_deletions` holds its deletions back (`FerryDeletionsHeldBack`); another's
/// `[in_use]` source cannot be read, so nothing is deleted (`FerryInUseSourceUnreadable`).
/// Neither raises the other's alert, nor the failed-items alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_back_deletions_and_an_unreadable_in_use_source_fire_their_alerts() {
    if !prometheus_installed(
        "held_back_deletions_and_an_unreadable_in_use_source_fire_their_alerts",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let gateway = start_pushgateway().await;
    let prometheus = start_prometheus(&gateway, &test_rules(dir.path(), 3600)).await;
    let reg = Registry::start().await;
    for (i, tag) in ["v1.0.0", "v1.0.1", "v1.0.2"].iter().enumerate() {
        let img = image(
            &[layer(60 + i as u64, 512)],
            "linux",
            "amd64",
            Format::Oci,
            tag,
        );
        reg.pusher().push("team/api", tag, &img).await;
    }
    let host = &reg.addr;
    let retain = format!(
        "version = 1\n[registry.\"{host}\"]\ninsecure = true\n[[retain]]\nrepository = \"{host}/team/api\"\ndelete_tags = ['^v1\\.0\\.[01]$']\n"
    );
    // Two plans, two Pushgateway groups (the plan label is the file's name).
    let valve = dir.path().join("valve.toml");
    std::fs::write(&valve, format!("{retain}max_deletions = 1\n")).unwrap();
    let unread = dir.path().join("unread.toml");
    let gone = dir.path().join("gone");
    let in_use = format!(
        "{retain}[in_use]\nfiles = [\"{}/*.yaml\"]\n",
        gone.display()
    );
    std::fs::write(&unread, in_use).unwrap();
    for p in [&valve, &unread] {
        let args = ["run", "--metrics-push", &gateway.url, p.to_str().unwrap()];
        ferry(&args, &[]).await.assert_code(1);
    }
    let fired = |f: &[String]| {
        f.iter().any(|a| a == "FerryDeletionsHeldBack")
            && f.iter().any(|a| a == "FerryInUseSourceUnreadable")
    };
    let firing = wait_for_alerts(&prometheus, Duration::from_secs(30), "both", fired).await;
    assert!(
        !firing.iter().any(|a| a == "FerryItemsFailed"),
        "{firing:?}"
    );
    // Nothing was deleted by either.
    for tag in ["v1.0.0", "v1.0.1"] {
        assert!(
            reg.pusher().manifest("team/api", tag).await.is_some(),
            "{tag}"
        );
    }
}
