//! `ferry check --online` knows the plan (issue 21, item 4): a source an earlier rule of the
//! same plan writes (a staged promotion) is checked where that rule pushes, not pulled before
//! it exists; a source no rule writes still has to be there.

use crate::common::*;
use crate::harness::*;

/// An image at `src` under `repo:tag`.
async fn seed(src: &Registry, repo: &str, tag: &str) {
    let img = image(&[layer(7, 4 * 1024)], "linux", "amd64", Format::Oci, repo);
    src.pusher().push(repo, tag, &img).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_online_passes_a_staged_promotion_whose_stage_a_rule_writes_first() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    seed(&src, "team/app", "rc").await;
    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n{}\n[[copy]]\nfrom = \"{s}/team/app:rc\"\nto = \"{d}/stage/app:rc\"\n\n[[copy]]\nfrom = \"{d}/stage/app:rc\"\nto = \"{d}/prod/app:1.0\"\n",
            insecure(&[&src, &dst]),
            s = src.addr,
            d = dst.addr,
        ),
    );
    let p = p.to_str().unwrap();
    let checked = ferry(&["check", "--online", p], &[]).await;
    checked.assert_code(0);
    // The plan's text: the version, insecure sections (4 lines), a blank line, `[[copy]]`,
    // then copy #1's `from` on line 8.
    let line = format!(
        "ok   pull {d}/stage/app:rc: planned: copy #1 ({p}:8) writes it first; push there: an upload was opened and cancelled",
        d = dst.addr
    );
    assert!(checked.stdout.contains(&line), "{}", checked.stdout);
    // Nothing was written by the check.
    assert!(dst.pusher().tags("stage/app").await.is_empty());

    // Once the stage exists, its pull is checked too, and still says it is planned.
    ferry(&["run", p], &[]).await.assert_code(0);
    let again = ferry(&["check", "--online", p], &[]).await;
    again.assert_code(0);
    assert!(
        again.stdout.contains(&format!(
            "ok   pull {d}/stage/app:rc: planned: copy #1 ({p}:8) writes it first; push there: an upload was opened and cancelled; there now: ",
            d = dst.addr
        )),
        "{}",
        again.stdout
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
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n{}\n[[copy]]\nfrom = \"{s}/myorg/*\"\nto = \"{d}/myorg/*\"\ntags = {{ include = ['^v?\\d+\\.\\d+\\.\\d+$', '^latest$'] }}\n\n[[copy]]\nfrom = \"{d}/myorg/api:v2.3.1\"\nto = \"{d}/myorg/api-prod:stable\"\n",
            insecure(&[&src, &dst]),
            s = src.addr,
            d = dst.addr,
        ),
    );
    let p = p.to_str().unwrap();
    let checked = ferry(&["check", "--online", p], &[]).await;
    checked.assert_code(0);
    assert!(
        checked.stdout.contains(&format!(
            "ok   pull {d}/myorg/api:v2.3.1: planned: copy #1 ({p}:8) writes it first; push there: ",
            d = dst.addr
        )),
        "{}",
        checked.stdout
    );
    assert!(checked.stdout.contains("0 failed"), "{}", checked.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_online_still_fails_a_missing_source_no_rule_writes() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    seed(&src, "team/app", "rc").await;
    let dir = tempfile::tempdir().unwrap();
    // copy #2 reads stage/other, which copy #1 does not write.
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n{}\n[[copy]]\nfrom = \"{s}/team/app:rc\"\nto = \"{d}/stage/app:rc\"\n\n[[copy]]\nfrom = \"{d}/stage/other:rc\"\nto = \"{d}/prod/app:1.0\"\n",
            insecure(&[&src, &dst]),
            s = src.addr,
            d = dst.addr,
        ),
    );
    let checked = ferry(&["check", "--online", p.to_str().unwrap()], &[]).await;
    checked.assert_code(3);
    assert!(
        checked.stdout.contains(&format!(
            "FAIL pull {d}/stage/other:rc: tag rc not found",
            d = dst.addr
        )),
        "{}",
        checked.stdout
    );
    assert!(!checked.stdout.contains("planned"), "{}", checked.stdout);
}
