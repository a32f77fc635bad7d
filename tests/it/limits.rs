//! Rate limits and transient faults, injected by the proxy in front of real registries: a
//! Docker-Hub-like pull budget, 429 with Retry-After, 503s, cut and corrupted bodies, and the
//! plan's own `rate_limit` observed at the proxy.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::common::*;
use crate::harness::*;

/// `count` single-layer images under `prefix/` (tag 1.0.0).
async fn images(reg: &Registry, prefix: &str, count: u64) -> Vec<(String, Image)> {
    let mut out = Vec::new();
    for i in 0..count {
        let img = image(
            &[layer(1000 + i, 64 * 1024)],
            "linux",
            "amd64",
            Format::Oci,
            &format!("{prefix}{i}"),
        );
        let repo = format!("{prefix}/r{i}");
        reg.pusher().push(&repo, "1.0.0", &img).await;
        out.push((repo, img));
    }
    out
}

/// A plan in `dir` copying `prefix/*` from host `source` to host `target` (either may be a
/// proxy's address), both with `settings`.
fn plan_through(dir: &Path, source: &str, target: &str, prefix: &str, settings: &str) -> PathBuf {
    copy_plan(
        dir,
        &[source, target],
        settings,
        &format!("{source}/{prefix}/*"),
        &format!("{target}/{prefix}/*"),
    )
}

/// Every image of [`images`] is at `dst`, byte for byte.
async fn assert_all_copied(dst: &Registry, imgs: &[(String, Image)]) {
    for (repo, img) in imgs {
        assert_copied(dst, repo, "1.0.0", img).await;
    }
}

/// `ferry run --report` of `plan` exits 0 having copied every image of `imgs` to `dst`: the run
/// and its report.
async fn run_copying_all(plan: &Path, dst: &Registry, imgs: &[(String, Image)]) -> (Run, Value) {
    let (run, report) = run_reported(plan, &[]).await;
    run.assert_code(0);
    assert_all_copied(dst, imgs).await;
    (run, report)
}

/// `count` images under `prefix/` copied to a target behind a proxy with `hook`, as
/// [`run_copying_all`] does: the proxy's address (the target's name in the plan), and the report.
async fn copy_to_proxied_target(prefix: &str, count: u64, hook: Hook) -> (String, Value) {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let imgs = images(&src, prefix, count).await;
    let proxy = Proxy::start(&dst.url, hook).await;
    let dir = tempfile::tempdir().unwrap();
    let p = plan_through(dir.path(), &src.addr, &proxy.addr, prefix, "");
    let (_, report) = run_copying_all(&p, &dst, &imgs).await;
    (proxy.addr.clone(), report)
}

/// 429 Too Many Requests with `Retry-After: SECONDS` and distribution's error body.
fn too_many_requests(seconds: &str) -> Action {
    Action::Respond(
        StatusCode::TOO_MANY_REQUESTS,
        vec![("retry-after", seconds.into())],
        br#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#.to_vec(),
    )
}

/// 503 Service Unavailable, as distribution answers it.
fn unavailable() -> Action {
    Action::registry_error(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", "try later")
}

/// A hook that answers the first `n` requests that `matches` with `answer()`, and forwards
/// the rest.
fn refuse_first(n: usize, matches: fn(&Method, &str) -> bool, answer: fn() -> Action) -> Hook {
    let refused = Mutex::new(0usize);
    Arc::new(move |m, uri: &str, _| {
        let mut k = refused.lock().unwrap();
        if matches(m, uri) && *k < n {
            *k += 1;
            return answer();
        }
        Action::Forward
    })
}

/// An upload opened: a POST to `/blobs/uploads/`.
fn upload_post(m: &Method, uri: &str) -> bool {
    m == "POST" && uri.contains("/blobs/uploads/")
}

/// A hook that shows `fault` each GET with the how-many-th time its path is asked (1 the
/// first time); every other request goes through.
fn on_gets(fault: impl Fn(&str, usize) -> Action + Send + Sync + 'static) -> Hook {
    let tries: Mutex<HashMap<String, usize>> = Mutex::default();
    Arc::new(move |m, uri: &str, _| {
        if m != "GET" {
            return Action::Forward;
        }
        let n = {
            let mut map = tries.lock().unwrap();
            let n = map.entry(uri.to_string()).or_default();
            *n += 1;
            *n
        };
        fault(uri, n)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_pull_budget_is_waited_out_not_failed() {
    // Like Docker Hub: manifest GETs are pulls; the answers carry `ratelimit-remaining`; once
    // the budget is spent, 429 with Retry-After until the window (2 s, 3 pulls) rolls over.
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let imgs = images(&src, "hub", 6).await;
    let window = Arc::new(Mutex::new((Instant::now(), 3i64)));
    let refused = Arc::new(Mutex::new(0usize));
    let (w, r) = (window.clone(), refused.clone());
    let proxy = Proxy::start(
        &src.url,
        Arc::new(move |m, uri: &str, _| {
            if m != "GET" || !uri.contains("/manifests/") {
                return Action::Forward;
            }
            let mut win = w.lock().unwrap();
            if win.0.elapsed() >= Duration::from_secs(2) {
                *win = (Instant::now(), 3);
            }
            win.1 -= 1;
            if win.1 < 0 {
                *r.lock().unwrap() += 1;
                let wait = 2 - win.0.elapsed().as_secs().min(1);
                return Action::Respond(
                    StatusCode::TOO_MANY_REQUESTS,
                    vec![("retry-after", wait.to_string()), ("content-type", "application/json".into())],
                    br#"{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate limit."}]}"#.to_vec(),
                );
            }
            Action::Headers(vec![
                ("ratelimit-limit", "3;w=2".into()),
                ("ratelimit-remaining", format!("{};w=2", win.1)),
            ])
        }),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    // One image at a time, so the pulls happen in order and the budget is seen running out
    // (with several in flight, some pulls would meet the 429 first, which is also handled).
    let p = plan_through(dir.path(), &proxy.addr, &dst.addr, "hub", "");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("version = 1\n", "version = 1\nconcurrency = 1\n");
    std::fs::write(&p, text).unwrap();
    let started = Instant::now();
    let run = ferry(&["run", "--progress", "plain", p.to_str().unwrap()], &[]).await;
    run.assert_code(0);
    assert!(run.stderr.contains("pull limit reached"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("waiting 1 s for {}", proxy.addr)),
        "{}",
        run.stderr
    );
    assert_all_copied(&dst, &imgs).await;
    // Six pulls at three per 2 s: at least one full wait.
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    println!("429s seen: {}", refused.lock().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_slows_the_whole_host_and_the_run_finishes() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let imgs = images(&src, "busy", 4).await;
    // The first three requests, whatever they are.
    let hook = refuse_first(3, |_, _| true, || too_many_requests("2"));
    let proxy = Proxy::start(&dst.url, hook).await;
    let dir = tempfile::tempdir().unwrap();
    let p = plan_through(dir.path(), &src.addr, &proxy.addr, "busy", "");
    let started = Instant::now();
    let run = ferry(&["run", "--progress", "plain", p.to_str().unwrap()], &[]).await;
    run.assert_code(0);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "Retry-After was honoured"
    );
    assert!(
        run.stderr.contains(&format!(
            "waiting 2 s for {}: {} answered 429 Too Many Requests",
            proxy.addr, proxy.addr
        )),
        "{}",
        run.stderr
    );
    assert_all_copied(&dst, &imgs).await;
}

/// Issue 21 (what was seen, 6): `wait_seconds` added up the waits of concurrent requests (398 s
/// in a 29 s run). A 429 with Retry-After holds back every request to the host at once; the
/// report counts the time some request waited, never more than the run took.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_waits_count_once_in_wait_seconds() {
    // The first dozen requests for images (past the ping and tokens) are refused.
    let held = |_: &Method, uri: &str| uri.contains("/held/");
    let hook = refuse_first(12, held, || too_many_requests("2"));
    let (target, v) = copy_to_proxied_target("held", 12, hook).await;
    let row = &v["registries"][&target];
    let (waited, seconds) = (
        row["wait_seconds"].as_f64().unwrap(),
        v["totals"]["seconds"].as_f64().unwrap(),
    );
    assert!(row["throttled"].as_u64().unwrap() >= 2, "{row:#}");
    assert!(waited >= 1.5, "the Retry-After was waited out: {row:#}");
    assert!(waited <= seconds, "{waited} s waited in a {seconds} s run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_faults_are_retried_and_every_digest_verifies() {
    // Each blob GET fails twice (503, then a body cut in half, then corrupted bytes) before
    // it is served; manifest GETs fail once with a reset body.
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let imgs = images(&src, "flaky", 5).await;
    let hook = on_gets(|uri, n| {
        match (
            uri.contains("/blobs/sha256:"),
            uri.contains("/manifests/sha256:"),
            n,
        ) {
            (true, _, 1) => unavailable(),
            (true, _, 2) => Action::Truncate,
            (true, _, 3) => Action::Corrupt,
            (_, true, 1) => Action::Truncate,
            _ => Action::Forward,
        }
    });
    let proxy = Proxy::start(&src.url, hook).await;
    let dir = tempfile::tempdir().unwrap();
    let p = plan_through(dir.path(), &proxy.addr, &dst.addr, "flaky", "");
    let run = ferry(&["run", "--progress", "plain", p.to_str().unwrap()], &[]).await;
    run.assert_code(0);
    assert!(run.stderr.contains("retrying"), "{}", run.stderr);
    assert_all_copied(&dst, &imgs).await;
    // Wrong bytes never made it to a complete upload: ferry aborted those uploads before
    // their last bytes (the registry logs the aborts as 500 "client disconnected"), so the
    // registry never had to refuse a finished upload for its digest (400 DIGEST_INVALID).
    dst.sync_log().await;
    let refused = dst
        .requests()
        .iter()
        .filter(|r| r.method == "PUT" && r.uri.contains("/blobs/uploads/") && r.status == 400)
        .count();
    assert_eq!(refused, 0, "no upload with wrong bytes was ever completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_rate_limit_holds_at_the_proxy() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    images(&src, "paced", 8).await;
    let proxy = Proxy::transparent(&src.url).await;
    let dir = tempfile::tempdir().unwrap();
    let (rps, burst) = (20usize, 4usize);
    let p = plan_through(
        dir.path(),
        &proxy.addr,
        &dst.addr,
        "paced",
        &format!("rate_limit = {{ requests_per_second = {rps}, burst = {burst} }}"),
    );
    ferry(&["run", p.to_str().unwrap()], &[])
        .await
        .assert_code(0);
    let times: Vec<Instant> = proxy.seen().iter().map(|s| s.at).collect();
    assert!(
        times.len() >= 30,
        "enough requests to measure: {}",
        times.len()
    );
    // In any one-second window: at most the burst plus one second's worth.
    let mut worst = 0;
    for (i, t) in times.iter().enumerate() {
        let n = times[i..]
            .iter()
            .take_while(|u| u.duration_since(*t) < Duration::from_secs(1))
            .count();
        worst = worst.max(n);
    }
    assert!(worst <= rps + burst, "{worst} requests in one second");
    let span = times.last().unwrap().duration_since(times[0]);
    let min = Duration::from_secs_f64((times.len() - burst) as f64 / rps as f64 * 0.9);
    assert!(span >= min, "{} requests in {span:?}", times.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_pushes_back_halves_the_window_of_transfers() {
    // 16 images of two blobs (config and layer): 32 uploads. The target answers the first
    // three upload POSTs with 429.
    let hook = refuse_first(3, upload_post, || too_many_requests("1"));
    let (target, v) = copy_to_proxied_target("window", 16, hook).await;
    let row = &v["registries"][&target];
    assert!(row["throttled"].as_u64().unwrap() >= 3, "{row:#}");
    // It starts at 8 and halves to 4 in the round that saw the 429s; after that it can grow by
    // one per round, and 32 uploads leave room for at most three more rounds (4 + 5 + 6).
    let window = row["window"].as_u64().unwrap();
    assert!((1..=7).contains(&window), "{row:#}");
    assert_eq!(row["window_peak"], 8, "{row:#}");
    assert!(
        row["by_kind"]["POST upload"].as_u64().unwrap() >= 32,
        "{row:#}"
    );
}

/// Issue 21 (what was seen, 6): faults at the source shrank the target's window (1 of peak 8
/// with only the source flaky), because an upload whose source read failed was retried as if
/// the target had failed. Each blob GET at the source fails three times (a 503, then a body
/// with a byte flipped, then one a byte short) before it is served: the source's `retries`
/// count all three, the target's window never shrinks and the target has no retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flaky_source_is_charged_to_the_source_not_the_targets_window() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let imgs = images(&src, "flaky", 16).await;
    let faults = Arc::new(Mutex::new(0usize));
    let f = faults.clone();
    let hook = on_gets(move |uri, n| {
        if !uri.contains("/blobs/sha256:") {
            return Action::Forward;
        }
        let action = match n {
            1 => unavailable(),
            2 => Action::Corrupt,
            3 => Action::Shorten(1),
            _ => return Action::Forward,
        };
        *f.lock().unwrap() += 1;
        action
    });
    let proxy = Proxy::start(&src.url, hook).await;
    let dir = tempfile::tempdir().unwrap();
    let p = plan_through(dir.path(), &proxy.addr, &dst.addr, "flaky", "");
    let (run, v) = run_copying_all(&p, &dst, &imgs).await;
    let (source, target) = (&v["registries"][&proxy.addr], &v["registries"][&dst.addr]);
    let faults = *faults.lock().unwrap() as u64;
    assert_eq!(faults, 96, "three faults for each of 32 blobs");
    assert!(
        source["retries"].as_u64().unwrap() >= faults,
        "{faults} faults: {source:#}"
    );
    assert_eq!(target["retries"], 0, "{target:#}");
    // The window starts at 8 and only a pushback of the target shrinks it.
    assert!(target["window"].as_u64().unwrap() >= 8, "{target:#}");
    // The retries of an upload whose source failed name the source.
    assert!(
        run.stderr
            .contains(&format!(" to {} at {} in ", dst.addr, proxy.addr)),
        "{}",
        run.stderr
    );
}

/// Issue 21 (what was seen, 6), the other side: a target that fails uploads with a 5xx (tried
/// again) still pushes its window back, as a 429 does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flaky_target_still_halves_its_window() {
    let hook = refuse_first(3, upload_post, unavailable);
    let (target, v) = copy_to_proxied_target("shaky", 16, hook).await;
    let row = &v["registries"][&target];
    assert!(row["retries"].as_u64().unwrap() >= 3, "{row:#}");
    // Halved from 8 in the round of the 503s; 32 uploads leave room for three rounds' growth.
    assert!(
        (1..=7).contains(&row["window"].as_u64().unwrap()),
        "{row:#}"
    );
    assert_eq!(row["window_peak"], 8, "{row:#}");
}
