//! The run lease (issue 22, "a run lease"): two runs of one plan against one registry, each
//! with its own checkpoint (two clusters running the same CronJob), never delete at once. The
//! lease is an OCI artifact at `NAMESPACE/ferry-lease:lease` of the registry deleted at; a run
//! that finds a live one of another deletes nothing and exits 1 naming its holder; a killed
//! run's lease expires; a run that ends gives its lease up.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;
use crate::harness::*;

const LEASE_REPO: &str = "team/ferry-lease";

/// team/app: `v1` (kept) and `pr-1` … `pr-N` (each its own image, all deleted).
async fn images(reg: &Registry, prs: u64) -> Vec<String> {
    let p = reg.pusher();
    let base = layer(1, 4096);
    let one = |label: &str, seed: u64| {
        image(
            &[base.clone(), layer(seed, 512)],
            "linux",
            "amd64",
            Format::Oci,
            label,
        )
    };
    p.push("team/app", "v1", &one("v1", 100)).await;
    let mut doomed = Vec::new();
    for n in 1..=prs {
        let tag = format!("pr-{n}");
        let img = one(&tag, 100 + n);
        p.push("team/app", &tag, &img).await;
        doomed.push(img.digest);
    }
    doomed
}

/// A plan retaining `v1` of team/app and deleting its `pr-` tags; `more`: more lines of the
/// registry's section.
fn retain_plan(dir: &Path, reg: &Registry, more: &str) -> String {
    let text = format!(
        "version = 1\n[registry.\"{a}\"]\ninsecure = true\n{more}\n[[retain]]\nrepository = \"{a}/team/*\"\nkeep_tags = ['^v']\ndelete_tags = ['^pr-']\n",
        a = reg.addr
    );
    plan(dir, &text).to_str().unwrap().to_string()
}

/// `ferry run --progress plain --state STATE PLAN`, started.
fn start(plan: &str, state: &Path, home: &Path) -> tokio::process::Child {
    let state = state.to_str().unwrap();
    let args = ["run", "--progress", "plain", "--state", state, plan];
    let mut cmd = ferry_command(&args, &[], home);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.spawn().expect("ferry starts")
}

async fn finish(child: tokio::process::Child) -> Run {
    let out = tokio::time::timeout(Duration::from_secs(300), child.wait_with_output())
        .await
        .expect("ferry finished within 5 minutes")
        .expect("ferry ran");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The lease's annotations, when one is there.
async fn lease(reg: &Registry) -> Option<BTreeMap<String, String>> {
    let (_, bytes, _) = reg.pusher().manifest(LEASE_REPO, "lease").await?;
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["artifactType"], "application/vnd.ferry.lease.v1+json");
    let annotations = v["annotations"].as_object().unwrap();
    Some(
        annotations
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect(),
    )
}

/// Wait (at most a minute) until `ready` holds.
async fn wait_for(what: &str, mut ready: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready().await {
        assert!(Instant::now() < deadline, "waited a minute for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Manifest DELETEs in team/app so far, by digest, with their statuses.
async fn deletes(reg: &Registry) -> BTreeMap<String, Vec<u16>> {
    reg.sync_log().await;
    let mut out: BTreeMap<String, Vec<u16>> = BTreeMap::new();
    for r in reg.requests() {
        if r.method == "DELETE" {
            if let Some(digest) = r.uri.strip_prefix("/v2/team/app/manifests/") {
                out.entry(digest.to_string()).or_default().push(r.status);
            }
        }
    }
    out
}

/// Each of `doomed` deleted exactly once, and nothing else in team/app.
async fn deleted_once(reg: &Registry, doomed: &[String]) {
    let expected: BTreeMap<String, Vec<u16>> =
        doomed.iter().map(|d| (d.clone(), vec![202])).collect();
    assert_eq!(deletes(reg).await, expected);
    assert_eq!(reg.pusher().tags("team/app").await, ["v1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_runs_from_two_checkpoints_only_the_lease_holder_deletes() {
    let reg = Registry::start().await;
    let doomed = images(&reg, 4).await;
    let dir = tempfile::tempdir().unwrap();
    // Slow enough that the second run starts long before the first has deleted.
    let p = retain_plan(dir.path(), &reg, "rate_limit = { requests_per_second = 2 }");

    let first = start(&p, &dir.path().join("a.db"), dir.path());
    let first_pid = first.id().unwrap();
    wait_for("the first run's lease", async || {
        lease(&reg).await.is_some()
    })
    .await;
    let held = lease(&reg).await.unwrap();
    assert_eq!(held["io.github.ferry.lease.pid"], first_pid.to_string());
    assert_eq!(held["io.github.ferry.lease.plan"], "plan.toml");
    assert_eq!(held["io.github.ferry.lease.run"], "1");
    let second = start(&p, &dir.path().join("b.db"), dir.path());
    let (first, second) = (finish(first).await, finish(second).await);

    first.assert_code(0);
    assert!(first.summary().contains(", 4 deleted"), "{}", first.stdout);
    second.assert_code(1);
    assert!(
        second.summary().contains(", 0 deleted"),
        "{}",
        second.stdout
    );
    let named = format!(
        "failed: run lease: another ferry run holds the run lease {}/{LEASE_REPO}:lease: ",
        reg.addr
    );
    assert!(second.stderr.contains(&named), "{}", second.stderr);
    assert!(
        second
            .stderr
            .contains(&format!("(pid {first_pid}, run 1, plan plan.toml), until ")),
        "{}",
        second.stderr
    );
    assert!(
        second.stderr.contains("this run deletes nothing"),
        "{}",
        second.stderr
    );
    // Each image deleted once: by the first run, none by the second.
    deleted_once(&reg, &doomed).await;
    // The first run gave its lease up.
    assert_eq!(lease(&reg).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_runs_lease_expires_and_a_later_run_deletes_the_rest() {
    let reg = Registry::start().await;
    let doomed = images(&reg, 12).await;
    let dir = tempfile::tempdir().unwrap();
    // Renewals wait at the rate limit behind the run's other requests (up to 16 in flight, a
    // renewal is three requests): at 8 a second they wait up to 6 s, well inside the 10 s a
    // renewal has before the 20 s lease's deletions stop (at 4 a second, 12 s: one run in
    // three stopped, on the build before issue 23 as after it).
    let p = retain_plan(
        dir.path(),
        &reg,
        "rate_limit = { requests_per_second = 8 }\nlease = { expiry = \"20s\" }",
    );
    let state = dir.path().join("a.db");

    let mut killed = start(&p, &state, dir.path());
    let pid = killed.id().unwrap();
    wait_for("the first deletion", async || {
        !deletes(&reg).await.is_empty()
    })
    .await;
    killed.start_kill().unwrap(); // SIGKILL: nothing runs after it
    let killed = finish(killed).await;
    assert_eq!(killed.code, -1, "killed by a signal");
    let left = lease(&reg).await.expect("a killed run's lease stays");
    assert_eq!(left["io.github.ferry.lease.pid"], pid.to_string());
    let deleted_before = deletes(&reg).await.len();
    assert!(deleted_before < doomed.len(), "killed mid-deletion");

    // While it is live, another checkpoint's run deletes nothing.
    let expires = humantime::parse_rfc3339(&left["io.github.ferry.lease.expires"]).unwrap();
    let live_for = expires
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    if live_for > Duration::from_secs(4) {
        let other = finish(start(&p, &dir.path().join("b.db"), dir.path())).await;
        other.assert_code(1);
        assert!(
            other
                .stderr
                .contains(&format!("(pid {pid}, run 1, plan plan.toml)")),
            "{}",
            other.stderr
        );
        assert_eq!(deletes(&reg).await.len(), deleted_before);
    }

    // Once it has expired, the next run (the same checkpoint, as a CronJob's next run) takes
    // it over and deletes the rest.
    let wait = expires
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(500)).await;
    let next = finish(start(&p, &state, dir.path())).await;
    next.assert_code(0);
    assert!(
        next.summary()
            .contains(&format!(", {} deleted", doomed.len() - deleted_before)),
        "{}",
        next.stdout
    );
    deleted_once(&reg, &doomed).await;
    assert_eq!(
        lease(&reg).await,
        None,
        "given up, and the killed run's gone"
    );
}

/// A lease another run holds at `LEASE_REPO`, as ferry writes one (the format is documented).
fn foreign_lease(expires: SystemTime) -> Image {
    let empty = Blob {
        digest: sha256_digest(b"{}"),
        media_type: "application/vnd.oci.empty.v1+json".into(),
        bytes: b"{}".to_vec(),
    };
    let expires = humantime::format_rfc3339_seconds(expires).to_string();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.ferry.lease.v1+json",
        "config": empty.descriptor(),
        "layers": [empty.descriptor()],
        "annotations": {
            "io.github.ferry.lease.id": "0123456789abcdef",
            "io.github.ferry.lease.host": "other-cluster",
            "io.github.ferry.lease.pid": "4242",
            "io.github.ferry.lease.run": "9",
            "io.github.ferry.lease.plan": "nightly.toml",
            "io.github.ferry.lease.expires": expires,
        },
    });
    let bytes = serde_json::to_vec(&manifest).unwrap();
    Image {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        digest: sha256_digest(&bytes),
        bytes,
        blobs: vec![empty],
        children: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_and_run_both_hold_every_deletion_while_another_holds_the_lease() {
    let reg = Registry::start().await;
    let doomed = images(&reg, 2).await;
    let dir = tempfile::tempdir().unwrap();
    let p = retain_plan(dir.path(), &reg, "");
    let theirs = foreign_lease(SystemTime::now() + Duration::from_secs(600));
    reg.pusher().push(LEASE_REPO, "lease", &theirs).await;
    let holder = &format!("the run lease {}/team/ferry-lease:lease: other-cluster (pid 4242, run 9, plan nightly.toml), until ", reg.addr);

    let shown = ferry(&["plan", &p, "--output", "json"], &[]).await;
    shown.assert_code(1);
    let v = json(&shown.stdout);
    // The wildcard team/* judges team/app only: the lease repository is no rule's.
    let repos: Vec<&Value> = v["retention"].as_array().unwrap().iter().collect();
    assert_eq!(repos.len(), 1, "{}", shown.stdout);
    assert_eq!(repos[0]["repository"], format!("{}/team/app", reg.addr));
    for d in repos[0]["decisions"].as_array().unwrap() {
        assert_eq!(d["action"], "keep", "{d}");
    }
    let failures = v["failures"].to_string();
    assert!(failures.contains(holder), "{failures}");
    let text = ferry(&["plan", &p], &[]).await;
    assert!(
        text.stdout
            .contains("kept: another ferry run holds the run lease"),
        "{}",
        text.stdout
    );

    let (run, report) = run_reported(Path::new(&p), &[]).await;
    run.assert_code(1);
    assert!(run.stderr.contains(holder), "{}", run.stderr);
    assert_eq!(
        report["failures"].as_array().unwrap().len(),
        v["failures"].as_array().unwrap().len()
    );
    assert!(deletes(&reg).await.is_empty(), "nothing deleted");
    let (_, _, digest) = reg.pusher().manifest(LEASE_REPO, "lease").await.unwrap();
    assert_eq!(digest, theirs.digest, "their lease is left alone");

    // Expired, it stops nobody: plan and run delete, and the run leaves no lease.
    reg.pusher()
        .push(
            LEASE_REPO,
            "lease",
            &foreign_lease(SystemTime::now() - Duration::from_secs(1)),
        )
        .await;
    ferry(&["plan", &p], &[]).await.assert_code(0);
    let (run, _) = run_reported(Path::new(&p), &[]).await;
    run.assert_code(0);
    deleted_once(&reg, &doomed).await;
    assert_eq!(lease(&reg).await, None);
}

/// A run whose credentials may delete in team/ but not `method` in ops/ferry-lease (the
/// lease's repository) deletes nothing, exits 1, and says `line` (after the proxy's address)
/// and the registry's answer.
async fn denied_at_the_lease(method: reqwest::Method, line: &str, check: Option<&str>) {
    let reg = Registry::start().await;
    images(&reg, 2).await;
    let proxy = Proxy::start(
        &reg.url,
        std::sync::Arc::new(move |m: &reqwest::Method, uri: &str, _: &_| {
            if *m == method && uri.starts_with("/v2/ops/ferry-lease/manifests/") {
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
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "version = 1\n[registry.\"{a}\"]\ninsecure = true\nlease = {{ repository = \"ops/ferry-lease\" }}\n[[retain]]\nrepository = \"{a}/team/app\"\ndelete_tags = ['^pr-']\n",
        a = proxy.addr
    );
    let p = plan(dir.path(), &text);

    let run = ferry(&["run", "--progress", "plain", p.to_str().unwrap()], &[]).await;
    run.assert_code(1);
    let line = format!(
        "failed: run lease {}/ops/ferry-lease:lease {line}",
        proxy.addr
    );
    assert!(run.stderr.contains(&line), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("DENIED: requested access to the resource is denied"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("this run deletes nothing (the lease fails closed)"),
        "{}",
        run.stderr
    );
    assert!(deletes(&reg).await.is_empty(), "nothing deleted");
    assert_eq!(reg.pusher().tags("team/app").await, ["pr-1", "pr-2", "v1"]);
    assert_eq!(
        reg.pusher().tags("ops/ferry-lease").await,
        Vec::<String>::new()
    );
    // `ferry check --online` says so before any run.
    if let Some(check) = check {
        let checked = ferry(&["check", "--online", p.to_str().unwrap()], &[]).await;
        checked.assert_code(3);
        let line = format!(
            "FAIL run lease {}/ops/ferry-lease:lease: {check}",
            proxy.addr
        );
        assert!(checked.stdout.contains(&line), "{}", checked.stdout);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_that_cannot_be_written_holds_every_deletion() {
    denied_at_the_lease(reqwest::Method::PUT, "could not be written: ", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_that_cannot_be_given_up_holds_every_deletion() {
    // Deleting is how a lease is given up: without that right, every lease written would stay.
    let line = "could not be given up: deleting in ops/ferry-lease is refused: ";
    let check = "the credentials may not delete here (403 DENIED): they need the delete permission on ops/ferry-lease (token scope repository:ops/ferry-lease:delete); ferry, which gives its lease up by deleting it, cannot delete here";
    denied_at_the_lease(reqwest::Method::DELETE, line, Some(check)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_wildcard_rule_copies_or_prunes_a_lease() {
    let reg = Registry::start().await;
    images(&reg, 1).await;
    // Another plan's live lease at the source: no rule of this plan reads it, and it stops
    // nothing here (this run's lease is at mirror/ferry-lease, where it prunes).
    let theirs = foreign_lease(SystemTime::now() + Duration::from_secs(600));
    reg.pusher().push(LEASE_REPO, "lease", &theirs).await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "version = 1\n[registry.\"{a}\"]\ninsecure = true\n[[copy]]\nfrom = \"{a}/team/*\"\nto = \"{a}/mirror/*\"\nprune = true\n",
        a = reg.addr
    );
    let p = plan(dir.path(), &text);

    let (run, report) = run_reported(&p, &[]).await;
    run.assert_code(0);
    // Items are reported in the order they finish.
    let mut sources: Vec<&str> = report["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["source"].as_str().unwrap())
        .collect();
    sources.sort_unstable();
    let a = &reg.addr;
    assert_eq!(
        sources,
        [format!("{a}/team/app:pr-1"), format!("{a}/team/app:v1")],
        "{}",
        run.stdout
    );
    // A second run selects v1 alone: pruning lists mirror/* while this run's own lease is
    // there, and judges mirror/app alone (pr-1 goes).
    let narrower = text.replace("prune = true", "tags = { include = ['^v'] }\nprune = true");
    let p = plan(dir.path(), &narrower);
    let (run, report) = run_reported(&p, &[]).await;
    run.assert_code(0);
    let pruned = report["prune"].as_array().unwrap();
    assert!(!pruned.is_empty(), "{}", run.stdout);
    for d in pruned {
        assert_eq!(d["repository"], format!("{a}/mirror/app"), "{d}");
    }
    assert_eq!(reg.pusher().tags("mirror/app").await, ["v1"]);
    assert_eq!(
        reg.pusher().tags("mirror/ferry-lease").await,
        Vec::<String>::new()
    );
    let (_, _, digest) = reg.pusher().manifest(LEASE_REPO, "lease").await.unwrap();
    assert_eq!(digest, theirs.digest, "their lease is left alone");
    // The registry's catalog lists the lease repository; a plan of the wildcard shows none.
    let catalog: Value = reqwest::get(format!("{}/v2/_catalog", reg.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        catalog["repositories"].to_string().contains(LEASE_REPO),
        "{catalog}"
    );
    let shown = ferry(&["plan", p.to_str().unwrap()], &[]).await;
    shown.assert_code(0);
    assert!(!shown.stdout.contains("ferry-lease"), "{}", shown.stdout);
}
