//! `ferry check --online` knows the plan (issue 21, item 4): a source an earlier rule of the
//! same plan writes (a staged promotion) is checked where that rule pushes, not pulled before
//! it exists; a source no rule writes still has to be there.

use std::path::Path;

use crate::common::*;
use crate::harness::*;

/// An image at `src` under `repo:tag`.
async fn seed(src: &Registry, repo: &str, tag: &str) {
    let img = image(&[layer(7, 4 * 1024)], "linux", "amd64", Format::Oci, repo);
    src.pusher().push(repo, tag, &img).await;
}

/// A promotion's plan in `dir`: copy #1 from `src/FROM` to `dst/TO` (and `more` lines of its
/// own), then copy #2 from `dst/FROM` to `dst/TO`. The insecure sections of both registries
/// come first, so copy #1's `from` is on line 8.
fn promotion(
    dir: &Path,
    src: &Registry,
    dst: &Registry,
    [from, to, more]: [&str; 3],
    [then_from, then_to]: [&str; 2],
) -> String {
    let (s, d) = (&src.addr, &dst.addr);
    let rules = [
        copy_section(&format!("{s}/{from}"), &format!("{d}/{to}"), more),
        copy_section(&format!("{d}/{then_from}"), &format!("{d}/{then_to}"), ""),
    ];
    let p = plan(dir, &plan_text(&[src, dst], &rules));
    p.to_str().unwrap().to_string()
}

/// `ferry check --online` of the plan `p` exits with `code`: what it printed.
async fn check_online(p: &str, code: i32) -> String {
    let checked = ferry(&["check", "--online", p], &[]).await;
    checked.assert_code(code);
    checked.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_online_passes_a_staged_promotion_whose_stage_a_rule_writes_first() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    seed(&src, "team/app", "rc").await;
    let dir = tempfile::tempdir().unwrap();
    let p = &promotion(
        dir.path(),
        &src,
        &dst,
        ["team/app:rc", "stage/app:rc", ""],
        ["stage/app:rc", "prod/app:1.0"],
    );
    let checked = check_online(p, 0).await;
    // The plan's text: the version, insecure sections (4 lines), a blank line, `[[copy]]`,
    // then copy #1's `from` on line 8.
    let line = format!(
        "ok   pull {d}/stage/app:rc: planned: copy #1 ({p}:8) writes it first; push there: an upload was opened and cancelled",
        d = dst.addr
    );
    assert!(checked.contains(&line), "{checked}");
    // Nothing was written by the check.
    assert!(dst.pusher().tags("stage/app").await.is_empty());

    // Once the stage exists, its pull is checked too, and still says it is planned.
    ferry(&["run", p], &[]).await.assert_code(0);
    let again = check_online(p, 0).await;
    assert!(
        again.contains(&format!(
            "ok   pull {d}/stage/app:rc: planned: copy #1 ({p}:8) writes it first; push there: an upload was opened and cancelled; there now: ",
            d = dst.addr
        )),
        "{again}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_online_passes_the_docker_hub_to_ghcr_example_shape() {
    // plans/dockerhub-to-ghcr.toml, on loopback registries: a namespace mirrored by a
    // wildcard, then one of its tags promoted from the mirror.
    let (src, dst) = (Registry::start().await, Registry::start().await);
    seed(&src, "myorg/api", "v2.3.1").await;
    seed(&src, "myorg/web", "v1.0.0").await;
    let dir = tempfile::tempdir().unwrap();
    let tags = "tags = { include = ['^v?\\d+\\.\\d+\\.\\d+$', '^latest$'] }\n";
    let p = &promotion(
        dir.path(),
        &src,
        &dst,
        ["myorg/*", "myorg/*", tags],
        ["myorg/api:v2.3.1", "myorg/api-prod:stable"],
    );
    let checked = check_online(p, 0).await;
    assert!(
        checked.contains(&format!(
            "ok   pull {d}/myorg/api:v2.3.1: planned: copy #1 ({p}:8) writes it first; push there: ",
            d = dst.addr
        )),
        "{checked}"
    );
    assert!(checked.contains("0 failed"), "{checked}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_online_still_fails_a_missing_source_no_rule_writes() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    seed(&src, "team/app", "rc").await;
    let dir = tempfile::tempdir().unwrap();
    // copy #2 reads stage/other, which copy #1 does not write.
    let p = promotion(
        dir.path(),
        &src,
        &dst,
        ["team/app:rc", "stage/app:rc", ""],
        ["stage/other:rc", "prod/app:1.0"],
    );
    let checked = check_online(&p, 3).await;
    assert!(
        checked.contains(&format!(
            "FAIL pull {d}/stage/other:rc: tag rc not found",
            d = dst.addr
        )),
        "{checked}"
    );
    assert!(!checked.contains("planned"), "{checked}");
}
