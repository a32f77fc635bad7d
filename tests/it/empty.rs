//! Selecting nothing is an error (issue 21, item 5): a wildcard that lists no repository, or
//! tag filters that select no tag, fail their rule in `run`, `plan` and `check --online`
//! while every other rule still runs; `allow_empty = true` accepts it.

use crate::common::*;
use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typoed_wildcard_fails_its_rule_and_the_valid_rule_still_copies() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let fx = populate(&src, "team").await;
    let (s, d) = (&src.addr, &dst.addr);
    let dir = tempfile::tempdir().unwrap();
    // Two rules after two insecure sections: copy #1's `from` is on line 8, copy #2's on 12.
    let web = copy_section(&format!("{s}/team/web:1.0"), &format!("{d}/x/web"), "");
    let typo = |more| copy_section(&format!("{s}/tema/*"), &format!("{d}/y/*"), more);
    let p = plan(
        dir.path(),
        &plan_text(&[&src, &dst], &[web.clone(), typo("")]),
    );
    let p = p.to_str().unwrap();
    let error = format!("copy #2 ({p}:12): 0 repositories match {s}/tema/*");

    let planned = ferry(&["plan", p], &[]).await;
    planned.assert_code(1);
    assert!(planned.stdout.contains(&error), "{}", planned.stdout);
    assert!(
        planned.summary().ends_with(", 1 errors"),
        "{}",
        planned.stdout
    );

    let checked = ferry(&["check", "--online", p], &[]).await;
    checked.assert_code(3);
    assert!(
        checked
            .stdout
            .contains(&format!("FAIL pull {s}/tema/*: {error}")),
        "{}",
        checked.stdout
    );
    assert!(checked.stdout.contains("1 failed"), "{}", checked.stdout);

    let ran = ferry(&["run", p], &[]).await;
    ran.assert_code(1);
    assert!(
        ran.stderr.contains(&format!("failed: {error}")),
        "{}",
        ran.stderr
    );
    assert!(
        ran.summary()
            .starts_with("ferry: 1 images copied, 0 already present, 1 failed"),
        "{}",
        ran.summary()
    );
    assert_copied(&dst, "x/web", "1.0", fx.image("team/web", "1.0")).await;

    // An empty namespace on purpose: accepted, said, and nothing fails.
    let rules = [web, typo("allow_empty = true\n")];
    let p = plan(dir.path(), &plan_text(&[&src, &dst], &rules));
    let p = p.to_str().unwrap();
    let planned = ferry(&["plan", p], &[]).await;
    planned.assert_code(0);
    assert!(
        planned.stdout.contains(&format!("note      {error}")),
        "{}",
        planned.stdout
    );
    ferry(&["check", "--online", p], &[]).await.assert_code(0);
    let ran = ferry(&["run", p], &[]).await;
    ran.assert_code(0);
    assert!(!ran.stderr.contains("failed:"), "{}", ran.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_filters_that_select_nothing_fail_their_rule() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    populate(&src, "team").await;
    let (s, d) = (&src.addr, &dst.addr);
    let dir = tempfile::tempdir().unwrap();
    // copy #1's filter matches none of team/api's 6 tags; copy #2's matches only the
    // signature tag of team/multi, which is no selected tag on its own.
    let rules = [
        copy_section(
            &format!("{s}/team/api"),
            &format!("{d}/x/api"),
            "tags = { include = ['^nomatch$'] }\n",
        ),
        copy_section(
            &format!("{s}/team/multi"),
            &format!("{d}/x/multi"),
            "tags = { include = ['^sha256-'] }\n",
        ),
    ];
    let p = plan(dir.path(), &plan_text(&[&src, &dst], &rules));
    let p = p.to_str().unwrap();
    let first = format!(
        "copy #1 ({p}:8): no tag of {s}/team/api matches the rule's tags filters (6 tags listed)"
    );
    let second = format!(
        "copy #2 ({p}:13): no tag of {s}/team/multi matches the rule's tags filters (3 tags listed)"
    );
    let ran = ferry(&["run", p], &[]).await;
    ran.assert_code(1);
    for e in [&first, &second] {
        assert!(
            ran.stderr.contains(&format!("failed: {e}")),
            "{}",
            ran.stderr
        );
    }
    // The regexes the plan holds are never echoed.
    assert!(!ran.stderr.contains("nomatch"), "{}", ran.stderr);
    let planned = ferry(&["plan", p], &[]).await;
    planned.assert_code(1);
    assert!(planned.stdout.contains(&first), "{}", planned.stdout);
    let checked = ferry(&["check", "--online", p], &[]).await;
    checked.assert_code(3);
    assert!(
        checked
            .stdout
            .contains(&format!("FAIL pull {s}/team/api: {first}")),
        "{}",
        checked.stdout
    );
    assert!(checked.stdout.contains("2 failed"), "{}", checked.stdout);
    assert!(dst.pusher().tags("x/api").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_selects_as_a_whole_and_a_shard_that_owns_none_of_it_passes() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    populate(&src, "team").await;
    let dir = tempfile::tempdir().unwrap();
    // Only team/api has `v` tags: the three other repositories select nothing, the rule
    // selects four tags.
    let rule = copy_section(
        &format!("{}/team/*", src.addr),
        &format!("{}/x/*", dst.addr),
        "tags = { include = ['^v\\d'] }\n",
    );
    let p = plan(dir.path(), &plan_text(&[&src, &dst], &[rule]));
    let p = p.to_str().unwrap();
    ferry(&["plan", p], &[]).await.assert_code(0);
    ferry(&["check", "--online", p], &[]).await.assert_code(0);
    // Each shard counts what the rule selects, not what it owns: the one that owns no
    // repository with a `v` tag passes too.
    let mut copied = Vec::new();
    for shard in ["0/2", "1/2"] {
        let state = dir.path().join(format!("shard-{}.db", &shard[..1]));
        let before = dst.pusher().tags("x/api").await.len();
        let ran = ferry(
            &[
                "run",
                p,
                "--shard",
                shard,
                "--state",
                state.to_str().unwrap(),
            ],
            &[],
        )
        .await;
        ran.assert_code(0);
        copied.push(dst.pusher().tags("x/api").await.len() - before);
    }
    copied.sort();
    assert_eq!(
        copied,
        [0, 4],
        "team/api's four `v` tags, copied by one shard"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prune_rule_that_selects_nothing_fails_and_prunes_nothing() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    populate(&src, "team").await;
    let dir = tempfile::tempdir().unwrap();
    let (from, to) = (
        format!("{}/team/api", src.addr),
        format!("{}/x/api", dst.addr),
    );
    let text = |tags: &str| {
        let rule = copy_section(&from, &to, &format!("{tags}prune = true\n"));
        plan_text(&[&src, &dst], &[rule])
    };
    let p = plan(dir.path(), &text(""));
    let p = p.to_str().unwrap();
    ferry(&["run", p], &[]).await.assert_code(0);
    let before = dst.pusher().tags("x/api").await;
    assert_eq!(before.len(), 6);

    // A filter edited into one that matches nothing: a mistake, not an order to delete.
    plan(dir.path(), &text("tags = { include = ['^nomatch$'] }\n"));
    let planned = ferry(&["plan", "--output", "json", p], &[]).await;
    planned.assert_code(1);
    let v: serde_json::Value = serde_json::from_str(&planned.stdout).unwrap();
    assert_eq!(
        v["totals"]["prune"].as_u64().unwrap_or(0),
        0,
        "{:#}",
        v["prune"]
    );
    let ran = ferry(&["run", p], &[]).await;
    ran.assert_code(1);
    assert!(
        ran.stderr.contains("no tag of") && ran.stderr.contains("matches the rule's tags filters"),
        "{}",
        ran.stderr
    );
    assert!(ran.summary().contains(", 0 pruned"), "{}", ran.summary());
    assert_eq!(dst.pusher().tags("x/api").await, before);
}
