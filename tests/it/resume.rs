//! Resumability against real registries: SIGKILL at several points and re-run, a large
//! upload continued from the registry's offset, SIGTERM draining to a checkpoint, and re-runs
//! that trust the checkpoint instead of asking the registries again.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use crate::harness::*;

const MB: usize = 1024 * 1024;

/// Start ferry, SIGKILL it once the target proxy has received `kill_at` upload bytes; returns
/// whether it was killed (false: it finished first).
pub async fn run_until_killed(p: &str, target: &Proxy, kill_at: u64) -> bool {
    let home = tempfile::tempdir().unwrap();
    let mut child = ferry_command(&["run", "--progress", "none", p], &[], home.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ferry");
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "ferry failed before the kill: {status}");
            return false;
        }
        if target.bytes_in() >= kill_at {
            child.start_kill().unwrap(); // SIGKILL: no chance to save anything
            child.wait().await.unwrap();
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_three_times_then_resumed_copies_everything_once() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let target = Proxy::transparent(&dst.url).await;
    let mut images = Vec::new();
    let mut total = 0u64;
    for r in 0..6u64 {
        let layers = [
            layer(500 + r, 40 * MB),
            layer(600 + r, 5 * MB),
            layer(700 + r, 5 * MB),
        ];
        let img = image(&layers, "linux", "amd64", Format::Oci, &format!("kill-{r}"));
        total += img
            .all_blobs()
            .iter()
            .map(|b| b.bytes.len() as u64)
            .sum::<u64>();
        let repo = format!("kill/r{r}");
        src.pusher().push(&repo, "v1.0.0", &img).await;
        images.push((repo, img));
    }
    let dir = tempfile::tempdir().unwrap();
    let p = copy_plan(
        dir.path(),
        &[&src.addr, &target.addr],
        "",
        &format!("{}/kill/*", src.addr),
        &format!("{}/kill/*", target.addr),
    );
    let p = p.to_str().unwrap();
    let mut kills = 0;
    for fraction in [0.25, 0.5, 0.75] {
        if run_until_killed(p, &target, (total as f64 * fraction) as u64).await {
            kills += 1;
        }
    }
    assert_eq!(kills, 3, "ferry was killed three times mid-copy");
    let run = ferry(&["run", "--progress", "plain", p], &[]).await;
    run.assert_code(0);
    assert!(run.stderr.contains("resuming after run"), "{}", run.stderr);
    for (repo, img) in &images {
        assert_copied(&dst, repo, "v1.0.0", img).await;
    }
    // Finished work is never redone.
    dst.sync_log().await;
    let mut completed: std::collections::HashMap<String, usize> = Default::default();
    for r in dst.requests() {
        if r.method == "PUT" && r.uri.contains("/blobs/uploads/") && r.status == 201 {
            let digest = r
                .uri
                .split("digest=")
                .nth(1)
                .unwrap_or("")
                .replace("%3A", ":");
            *completed.entry(digest).or_default() += 1;
        }
    }
    // An upload whose last bytes were already on the wire when ferry was killed can still
    // complete at the registry after the next run has looked for that blob; beyond that,
    // no blob is uploaded again.
    assert!(completed.values().all(|&n| n <= 1 + kills), "{completed:?}");
    assert!(
        completed.values().filter(|&&n| n > 1).count() <= kills,
        "at most one blob per kill was in that window: {completed:?}"
    );
    // What is lost at a kill is the uploads in flight: distribution cancels an upload session
    // whose last chunk was cut off mid-body ("upload resumed at wrong offset"), so those
    // blobs start over. Concurrency 8 with 40 MB blobs bounds that loss.
    let sent = target.bytes_in();
    let ratio = sent as f64 / total as f64;
    println!("blob bytes: {total}, sent over 4 runs: {sent}, ratio {ratio:.3}");
    assert!(ratio <= 2.0, "sent {sent} bytes for {total} ({ratio:.3}x)");
}

/// A proxy in front of `dst` that holds the `n`th PATCH (counting from 1) unread for
/// `hold`, then answers 503: that chunk never reaches the registry.
async fn holding_nth_patch(dst: &Registry, n: usize, hold: Duration) -> Proxy {
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    Proxy::start(
        &dst.url,
        Arc::new(move |m, _, _| {
            if m == "PATCH" && count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == n {
                Action::Hold(hold)
            } else {
                Action::Forward
            }
        }),
    )
    .await
}

fn first_patch_offset(seen: &[Seen]) -> u64 {
    let range = seen
        .iter()
        .find(|s| s.method == "PATCH")
        .and_then(|s| s.content_range.clone())
        .expect("a PATCH with Content-Range");
    range.split('-').next().unwrap().parse().unwrap()
}

/// One image of `size` bytes at a source; a target behind a proxy that holds its `hold`th
/// PATCH unread; the plan between them; and ferry running it, returned once that PATCH has
/// arrived (so the run is mid-upload and stays there).
struct HeldUpload {
    src: Registry,
    dst: Registry,
    target: Proxy,
    img: Image,
    plan: String,
    child: tokio::process::Child,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

async fn held_upload(seed: u64, size: usize, hold: usize) -> HeldUpload {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let target = holding_nth_patch(&dst, hold, Duration::from_secs(30)).await;
    let img = image(&[layer(seed, size)], "linux", "amd64", Format::Oci, "held");
    src.pusher().push("big/app", "v1", &img).await;
    let dir = tempfile::tempdir().unwrap();
    let plan = copy_plan(
        dir.path(),
        &[&src.addr, &target.addr],
        "",
        &format!("{}/big/app", src.addr),
        &format!("{}/big/app", target.addr),
    )
    .to_str()
    .unwrap()
    .to_string();
    let home = tempfile::tempdir().unwrap();
    let child = ferry_command(&["run", &plan], &[], home.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while target.seen().iter().filter(|s| s.method == "PATCH").count() < hold {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    HeldUpload {
        src,
        dst,
        target,
        img,
        plan,
        child,
        _dirs: (dir, home),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_upload_continues_from_the_registry_offset_after_a_kill() {
    // The 4th chunk is lost in the network; ferry is killed while waiting for it.
    let HeldUpload {
        src: _src,
        dst,
        target,
        img,
        plan: p,
        mut child,
        _dirs,
    } = held_upload(800, 100 * MB, 4).await;
    let p = p.as_str();
    // The checkpoint batches writes for up to 200 ms: let the 3rd chunk's record land.
    tokio::time::sleep(Duration::from_millis(400)).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();

    let before = target.seen().len();
    let run = ferry(&["run", p], &[]).await;
    run.assert_code(0);
    assert_copied(&dst, "big/app", "v1", &img).await;
    let offset = first_patch_offset(&target.seen()[before..]);
    assert_eq!(
        offset,
        3 * 8 * MB as u64,
        "resumed after the 3 chunks the registry confirmed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_chunk_is_retried_from_the_session_offset_in_the_same_run() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let target = holding_nth_patch(&dst, 2, Duration::from_millis(10)).await;
    let img = image(
        &[layer(801, 30 * MB)],
        "linux",
        "amd64",
        Format::Oci,
        "retry",
    );
    src.pusher().push("big/app", "v1", &img).await;
    let dir = tempfile::tempdir().unwrap();
    let p = copy_plan(
        dir.path(),
        &[&src.addr, &target.addr],
        "",
        &format!("{}/big/app", src.addr),
        &format!("{}/big/app", target.addr),
    );
    let run = ferry(&["run", "--progress", "plain", p.to_str().unwrap()], &[]).await;
    run.assert_code(0);
    assert!(run.stderr.contains("retrying upload of"), "{}", run.stderr);
    assert_copied(&dst, "big/app", "v1", &img).await;
    let patches: Vec<String> = target
        .seen()
        .iter()
        .filter(|s| s.method == "PATCH")
        .map(|s| s.content_range.clone().unwrap())
        .collect();
    // Chunk 2 was lost, then sent again: nothing before it was.
    assert_eq!(patches[0], format!("0-{}", 8 * MB - 1));
    assert_eq!(patches[1], format!("{}-{}", 8 * MB, 16 * MB - 1));
    assert_eq!(patches[2], patches[1]);
    let total = 30 * MB as u64;
    assert!(
        target.bytes_in() < total + 9 * MB as u64,
        "{}",
        target.bytes_in()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_to_a_checkpoint_and_status_tells() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    // Slow the target down so the run is still going when SIGTERM arrives.
    let target = Proxy::start(
        &dst.url,
        Arc::new(|_, _, _| {
            std::thread::sleep(Duration::from_millis(30));
            Action::Forward
        }),
    )
    .await;
    for r in 0..12u64 {
        let img = image(
            &[layer(900 + r, 256 * 1024)],
            "linux",
            "amd64",
            Format::Oci,
            &format!("t{r}"),
        );
        src.pusher()
            .push(&format!("term/r{r:02}"), "1.0.0", &img)
            .await;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\nconcurrency = 2\n{}[registry.\"{t}\"]\ninsecure = true\n[[copy]]\nfrom = \"{}/term/*\"\nto = \"{t}/term/*\"\n",
            insecure(&[&src]),
            src.addr,
            t = target.addr
        ),
    );
    let p = p.to_str().unwrap();
    let home = tempfile::tempdir().unwrap();
    let child = ferry_command(&["run", "--progress", "plain", p], &[], home.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the first manifest to land, then SIGTERM.
    loop {
        if target
            .seen()
            .iter()
            .any(|s| s.method == "PUT" && s.uri.contains("/manifests/"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pid = child.id().unwrap() as i32;
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{stderr}");
    assert!(stderr.contains("interrupted: no new images"), "{stderr}");
    assert!(stderr.contains("run the same command again"), "{stderr}");

    let status = ferry(&["status", p], &[]).await;
    status.assert_code(0);
    assert!(status.stdout.contains("interrupted"), "{}", status.stdout);
    let json = ferry(&["status", p, "--output", "json"], &[]).await;
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["status"], "interrupted");
    let done = v["totals"]["copied"].as_u64().unwrap();
    assert!((1..12).contains(&done), "{v}");

    // The re-run finishes the rest and does not redo the finished ones: it trusts their
    // records (issue 21: said `unchanged`).
    let run = ferry(&["run", p], &[]).await;
    run.assert_code(0);
    assert!(
        run.summary().starts_with(&format!(
            "ferry: {} images copied, 0 already present, {done} unchanged (trusted from the checkpoint)",
            12 - done
        )),
        "{}",
        run.summary()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_trusts_the_checkpoint_for_immutable_tags() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let source = Proxy::transparent(&src.url).await;
    let target = Proxy::transparent(&dst.url).await;
    let fixture = populate(&src, "team").await;
    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n[registry.\"{s}\"]\ninsecure = true\n[registry.\"{t}\"]\ninsecure = true\n[[copy]]\nfrom = \"{s}/team/api\"\nto = \"{t}/team/api\"\n",
            s = source.addr,
            t = target.addr
        ),
    );
    let p = p.to_str().unwrap();
    ferry(&["run", p], &[]).await.assert_code(0);
    let (src_before, dst_before) = (source.seen().len(), target.seen().len());
    let run = ferry(&["run", p], &[]).await;
    run.assert_code(0);
    assert!(
        run.summary().starts_with(
            "ferry: 0 images copied, 0 already present, 6 unchanged (trusted from the checkpoint)"
        ),
        "{}",
        run.summary()
    );
    let src_reqs: Vec<Seen> = source.seen()[src_before..].to_vec();
    let dst_reqs: Vec<Seen> = target.seen()[dst_before..].to_vec();
    // v1.0.0, v1.2.0, v1.3.0-rc1, v2.0.0 are immutable: no request at all. `latest` and
    // `main-abc1234` cost one HEAD each at the source, none at the target. Plus the tag list.
    let manifest_reqs: Vec<&Seen> = src_reqs
        .iter()
        .filter(|s| s.uri.contains("/manifests/"))
        .collect();
    assert_eq!(manifest_reqs.len(), 2, "{manifest_reqs:?}");
    assert!(manifest_reqs.iter().all(|s| s.method == "HEAD"));
    assert!(
        dst_reqs
            .iter()
            .all(|s| !s.uri.contains("/manifests/") && !s.uri.contains("/blobs/")),
        "{dst_reqs:?}"
    );

    // --recheck asks again, the whole image (issue 21): each tag's manifest is read at the
    // source (one GET: digest and body), and at the target one HEAD per tag and one per blob
    // the repository's images reach, however many tags share it; no manifest is read there.
    let before = target.seen().len();
    ferry(&["run", "--recheck", p], &[]).await.assert_code(0);
    let rechecked = &target.seen()[before..];
    let heads = |what: &str| {
        rechecked
            .iter()
            .filter(|s| s.method == "HEAD" && s.uri.contains(what))
            .count()
    };
    let mut blobs: Vec<&str> = fixture
        .tagged
        .iter()
        .filter(|(repo, _, _)| repo == "team/api")
        .flat_map(|(_, _, img)| img.all_blobs())
        .map(|b| b.digest.as_str())
        .collect();
    blobs.sort();
    blobs.dedup();
    assert_eq!(heads("/manifests/"), 6, "one HEAD per tag at the target");
    assert_eq!(
        heads("/blobs/"),
        blobs.len(),
        "one HEAD per blob: {rechecked:?}"
    );
    assert!(
        rechecked
            .iter()
            .all(|s| s.method == "HEAD" || !s.uri.contains("/manifests/")),
        "{rechecked:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_on_the_same_state_is_refused_while_the_first_runs() {
    // The first run waits on a chunk the proxy holds, so it is still running.
    let held = held_upload(802, 20 * MB, 1).await;
    let (p, mut first) = (held.plan.as_str(), held.child);
    let second = ferry(&["run", p], &[]).await;
    assert_ne!(second.code, 0);
    assert!(
        second.stderr.contains("is in use by another ferry run"),
        "{}",
        second.stderr
    );
    first.start_kill().unwrap();
    first.wait().await.unwrap();
}
