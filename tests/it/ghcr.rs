//! GHCR's refusals are planned, not failures, and its deletions are paced (issue 22, "GHCR's
//! refusals are planned, not failures"): a real registry holds the images, the GitHub Packages
//! fake their versions, and the fake refuses what GitHub refuses (the last tagged version of a
//! package, a public version with more than 5,000 downloads) and holds DELETEs to GitHub's
//! secondary limit.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::*;
use crate::harness::*;

const ENV: &[(&str, &str)] = &[("GHCR_TOKEN", "ghp_ghcr")];
const SCOPES: &[&str] = &["read:packages", "delete:packages"];
const LAST: &str = "kept: GHCR keeps a package's last version";

/// One image of the package `myorg/app`: its tag, when it was pushed (a day of January 2024)
/// and its downloads.
struct Pushed {
    tag: &'static str,
    image: Image,
    day: u32,
    downloads: u64,
}

fn pushed(tag: &'static str, image: Image, day: u32) -> Pushed {
    Pushed {
        tag,
        image,
        day,
        downloads: 0,
    }
}

fn single(label: &str, seed: u64) -> Image {
    image(&[layer(seed, 1024)], "linux", "amd64", Format::Oci, label)
}

/// A registry and the GitHub fake holding `myorg/app`: each image pushed under its tag, and
/// a version per manifest (an index's children untagged, pushed the same day), in a package
/// that is public when `public`.
async fn package(images: &[Pushed], public: bool) -> (Registry, GitHubFake) {
    let reg = Registry::start().await;
    let fake = GitHubFake::start(&[("ghp_ghcr", "bot", SCOPES)]).await;
    let mut rows: Vec<(String, String, Vec<&str>, u64)> = Vec::new();
    for p in images {
        reg.pusher().push("myorg/app", p.tag, &p.image).await;
        let day = format!("2024-01-{:02}T00:00:00Z", p.day);
        for child in &p.image.children {
            rows.push((child.digest.clone(), day.clone(), Vec::new(), 0));
        }
        rows.push((p.image.digest.clone(), day, vec![p.tag], p.downloads));
    }
    let args: Vec<(&str, &str, &[&str], u64)> = rows
        .iter()
        .map(|(d, day, tags, n)| (d.as_str(), day.as_str(), tags.as_slice(), *n))
        .collect();
    fake.add_package(Some("myorg"), "app", public, &args);
    (reg, fake)
}

/// A plan retaining `myorg/app` at `reg` under `rule`, GHCR's packages API at `fake`.
fn ghcr_plan(dir: &Path, reg: &Registry, fake: &GitHubFake, rule: &str) -> PathBuf {
    plan(
        dir,
        &format!(
            "version = 1\n[registry.\"{a}\"]\ninsecure = true\nflavor = \"ghcr\"\napi = \"{api}\"\nauth = {{ username = \"bot\", password_env = \"GHCR_TOKEN\" }}\n[[retain]]\nrepository = \"{a}/myorg/app\"\n{rule}\n",
            a = reg.addr,
            api = fake.url
        ),
    )
}

/// `ferry run --progress plain --report R PLAN` with the token: the run, and its report.
async fn run(plan: &Path) -> (Run, Value) {
    run_reported_with(plan, &[], ENV).await
}

/// The digests of the package's versions deleted so far.
fn deleted(fake: &GitHubFake) -> BTreeSet<String> {
    let all = fake.versions(Some("myorg"), "app", true);
    all.into_iter()
        .filter(|v| v.deleted)
        .map(|v| v.digest)
        .collect()
}

fn digests(images: &[&Image]) -> BTreeSet<String> {
    images.iter().map(|i| i.digest.clone()).collect()
}

/// The package version id of `img`.
fn id_of(fake: &GitHubFake, img: &Image) -> u64 {
    let all = fake.versions(Some("myorg"), "app", true);
    all.iter().find(|v| v.digest == img.digest).unwrap().id
}

/// Issue 22, GHCR's refusals 1: a policy that would delete every tagged version of a package
/// keeps the newest one (GitHub refuses to delete the last), with everything it reaches, and
/// says so in the plan, the run and the report; the run sends no DELETE for it and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_tagged_version_is_a_planned_keep() {
    let amd = image(&[layer(3, 1024)], "linux", "amd64", Format::Oci, "pr-3");
    let arm = image(&[layer(4, 1024)], "linux", "arm64", Format::Oci, "pr-3");
    let pr3 = index(vec![amd.clone(), arm.clone()], Format::Oci);
    let images = [
        pushed("pr-1", single("pr-1", 1), 1),
        pushed("pr-2", single("pr-2", 2), 2),
        pushed("pr-3", pr3.clone(), 3),
    ];
    let (reg, fake) = package(&images, false).await;
    let dir = tempfile::tempdir().unwrap();
    let p = ghcr_plan(dir.path(), &reg, &fake, "delete_tags = ['^pr-\\d+$']");
    let p = p.to_str().unwrap();

    let shown = ferry(&["plan", p], ENV).await;
    shown.assert_code(0);
    let line = shown
        .stdout
        .lines()
        .find(|l| l.contains(LAST))
        .unwrap_or_else(|| panic!("{}", shown.stdout));
    assert!(line.contains("pr-3"), "{line}");
    assert!(
        shown.stdout.contains("kept: child of pr-3 (linux/arm64)"),
        "{}",
        shown.stdout
    );

    let (ran, report) = run(Path::new(p)).await;
    ran.assert_code(0);
    assert!(ran.stderr.contains(LAST), "{}", ran.stderr);
    let gone = digests(&[&images[0].image, &images[1].image]);
    assert_eq!(deleted(&fake), gone);
    let kept = id_of(&fake, &pr3);
    let deletes = fake.deletes();
    assert_eq!(deletes.len(), 2, "{deletes:?}");
    assert!(deletes.iter().all(|d| d.status == 204 && d.id != kept));
    assert_eq!(report["totals"]["deleted"], 2);
    assert_eq!(report["totals"]["failed"], 0);
    let rows = report["kept"].as_array().expect("kept rows");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["digest"], pr3.digest.as_str());
    assert_eq!(rows[0]["tags"], serde_json::json!(["pr-3"]));
    assert_eq!(rows[0]["reason"], LAST);
    // The kept index reads whole: its children stayed with it.
    for child in [&amd, &arm] {
        let p = reg.pusher();
        assert!(p.manifest("myorg/app", &child.digest).await.is_some());
    }

    // The next run plans the same keep, and still asks nothing of it.
    let again = ferry(&["run", "--progress", "plain", p], ENV).await;
    again.assert_code(0);
    assert_eq!(fake.deletes().len(), 2);
}

/// Issue 22, GHCR's refusals 2: a public version with more than 5,000 downloads that GitHub
/// refuses to delete is recorded (a failure of that run: it is news), reported, kept up front
/// by every later run without another DELETE (exit 0), shown by `ferry plan`, and listed by
/// `ferry status`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_popular_version_is_recorded_and_not_asked_again() {
    let mut v1 = pushed("v1", single("v1", 11), 1);
    v1.downloads = POPULAR;
    let images = [
        v1,
        pushed("v2", single("v2", 12), 2),
        pushed("v3", single("v3", 13), 3),
    ];
    let (reg, fake) = package(&images, true).await;
    let dir = tempfile::tempdir().unwrap();
    let p = ghcr_plan(dir.path(), &reg, &fake, "keep_newest = 1");
    let popular = id_of(&fake, &images[0].image);

    let (first, report) = run(&p).await;
    first.assert_code(1);
    assert_eq!(deleted(&fake), digests(&[&images[1].image]));
    let refused = "GitHub refused to delete it on ";
    assert!(first.stderr.contains(refused), "{}", first.stderr);
    assert!(first.stderr.contains(REFUSED_DOWNLOADS), "{}", first.stderr);
    assert_eq!(report["totals"]["failed"], 1);
    let failure = report["failures"][0].as_str().unwrap();
    assert!(failure.contains(REFUSED_DOWNLOADS), "{failure}");
    let rows = report["kept"].as_array().expect("kept rows");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["digest"], images[0].image.digest.as_str());
    let reason = rows[0]["reason"].as_str().unwrap();
    assert!(reason.starts_with(&format!("kept: {refused}")), "{reason}");
    assert!(
        reason.ends_with(&format!(": {REFUSED_DOWNLOADS}")),
        "{reason}"
    );

    let p = p.to_str().unwrap();
    let status = ferry(&["status", p], ENV).await;
    status.assert_code(0);
    assert!(
        status.stdout.contains(REFUSED_DOWNLOADS),
        "{}",
        status.stdout
    );
    assert!(
        status.stdout.contains(&images[0].image.digest),
        "{}",
        status.stdout
    );
    let status = json(&ferry(&["status", p, "--output", "json"], ENV).await.stdout);
    let listed = status["refusals"].as_array().expect("refusals");
    assert_eq!(listed.len(), 1, "{status:#}");
    assert_eq!(listed[0]["version_id"], popular.to_string());
    assert_eq!(listed[0]["reason"], REFUSED_DOWNLOADS);

    let plan = ferry(&["plan", p], ENV).await;
    plan.assert_code(0);
    assert!(
        plan.stdout.contains(&format!("kept: {refused}")),
        "{}",
        plan.stdout
    );

    let (second, report) = run(Path::new(p)).await;
    second.assert_code(0);
    assert!(
        second.stderr.contains(&format!("kept: {refused}")),
        "{}",
        second.stderr
    );
    assert_eq!(report["totals"]["failed"], 0);
    assert_eq!(report["kept"][0]["reason"], reason);
    let asked: Vec<u16> = fake
        .deletes()
        .iter()
        .filter(|d| d.id == popular)
        .map(|d| d.status)
        .collect();
    assert_eq!(asked, [403], "asked once, on the first run");
}

/// Six versions to delete, each a DELETE through the GitHub API.
async fn six_to_delete() -> (Registry, GitHubFake, tempfile::TempDir, PathBuf) {
    let tags = ["pr-1", "pr-2", "pr-3", "pr-4", "pr-5", "pr-6", "v1"];
    let images: Vec<Pushed> = (0..tags.len())
        .map(|i| pushed(tags[i], single(tags[i], 20 + i as u64), i as u32 + 1))
        .collect();
    let (reg, fake) = package(&images, false).await;
    let dir = tempfile::tempdir().unwrap();
    let p = ghcr_plan(dir.path(), &reg, &fake, "delete_tags = ['^pr-\\d+$']");
    (reg, fake, dir, p)
}

/// Issue 22, GHCR's refusals 3: deletions are paced below GitHub's secondary limit. The fake
/// holds DELETEs to that limit's rate (180 a minute) over a short window, 3 in any second: a
/// paced run (150 a minute, one DELETE every 400 ms) is never refused, and the fake's own
/// clock shows the spacing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletions_are_paced_below_the_secondary_limit() {
    let (_reg, fake, _dir, p) = six_to_delete().await;
    fake.set_secondary(3, Duration::from_secs(1), StatusCode::FORBIDDEN);
    let ran = ferry(&["run", "--progress", "plain", p.to_str().unwrap()], ENV).await;
    ran.assert_code(0);
    let deletes = fake.deletes();
    let statuses: Vec<u16> = deletes.iter().map(|d| d.status).collect();
    assert_eq!(statuses, [204; 6], "{}", ran.stderr);
    // 400 ms apart as sent; the fake sees them arrive with the loopback's (and a loaded
    // machine's) jitter: no two closer than half the pace, and the six over five paces.
    for pair in deletes.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(gap >= Duration::from_millis(200), "{gap:?}: {deletes:?}");
    }
    let span = deletes[5].at.duration_since(deletes[0].at);
    assert!(span >= Duration::from_millis(1900), "{span:?}: {deletes:?}");
}

/// Issue 22, GHCR's refusals 3: a secondary limit hit anyway (another client spending the
/// same token's budget) is waited out as GitHub says (`Retry-After` on a 429 here), the wait
/// told like every other, and the run goes on to delete everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secondary_limit_answer_is_waited_out() {
    let (_reg, fake, _dir, p) = six_to_delete().await;
    fake.set_secondary(2, Duration::from_secs(2), StatusCode::TOO_MANY_REQUESTS);
    let ran = ferry(&["run", "--progress", "plain", p.to_str().unwrap()], ENV).await;
    ran.assert_code(0);
    assert!(
        ran.stderr.contains(": GitHub API rate limit"),
        "{}",
        ran.stderr
    );
    assert!(ran.stderr.contains("waiting "), "{}", ran.stderr);
    assert_eq!(deleted(&fake).len(), 6);
    let deletes = fake.deletes();
    let refused = deletes.iter().filter(|d| d.status == 429).count();
    let done = deletes.iter().filter(|d| d.status == 204).count();
    assert_eq!(done, 6, "{deletes:?}");
    assert!(refused >= 1, "{deletes:?}");
    // After each 429, the next DELETE came no sooner than `Retry-After` allowed.
    for pair in deletes.windows(2).filter(|p| p[0].status == 429) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(gap >= Duration::from_millis(900), "{gap:?}: {deletes:?}");
    }
}
