//! The same retention decisions on GHCR (package version deletions, GitHub's secondary
//! limits) and on Docker Hub (tag deletions).

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_ghcr_the_same_decisions_become_package_version_deletions() {
    // The images live in a real registry standing in for ghcr.io; the package versions (ids,
    // push times, tags) in the GitHub Packages API fake, which is where GHCR deletes.
    let (reg, s, fake) = ghcr_scenario(
        0,
        &[
            (
                "ghp_canary_rw_7f3a",
                "bot",
                &["read:packages", "delete:packages"],
            ),
            ("ghp_canary_ro_9c1b", "bot", &["read:packages"]),
        ],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n[registry.\"{a}\"]\ninsecure = true\nflavor = \"ghcr\"\napi = \"{api}\"\nauth = {{ username = \"bot\", password_env = \"GHCR_TOKEN\" }}\n[[retain]]\nrepository = \"{a}/myorg/app\"\n{RULE}\n",
            a = reg.addr,
            api = fake.url
        ),
    );
    let p = p.to_str().unwrap();

    // A token without delete:packages: refused before anything is deleted.
    let run = ferry(&["run", p], &[("GHCR_TOKEN", "ghp_canary_ro_9c1b")]).await;
    run.assert_code(1);
    assert!(
        run.stderr.contains("lacks the delete:packages scope"),
        "{}",
        run.stderr
    );
    assert!(fake
        .versions(Some("myorg"), "app", true)
        .iter()
        .all(|v| !v.deleted));

    let before_rw = fake.requests().len();
    let run = ferry(
        &["-vv", "run", "--progress", "plain", p],
        &[("GHCR_TOKEN", "ghp_canary_rw_7f3a")],
    )
    .await;
    run.assert_code(0);
    for out in [&run.stdout, &run.stderr] {
        assert!(!out.contains("ghp_canary"), "the token leaked:\n{out}");
    }
    // The run lease (issue 22) was taken and given up without a word.
    assert!(!run.stderr.contains("run lease"), "{}", run.stderr);
    let deleted: std::collections::BTreeSet<String> = fake
        .versions(Some("myorg"), "app", true)
        .into_iter()
        .filter(|v| v.deleted)
        .map(|v| v.digest)
        .collect();
    let expected: std::collections::BTreeSet<String> =
        s.deleted.iter().map(|i| i.digest.clone()).collect();
    assert_eq!(deleted, expected);
    // GHCR deletes through its API only: the registry API was not asked to delete anything.
    reg.sync_log().await;
    assert_eq!(reg.count_requests("DELETE", "/manifests/"), 0);
    // One listing for the inventory, then one DELETE per version: no re-listing per deletion.
    let listings = fake.requests()[before_rw..]
        .iter()
        .filter(|r| r.starts_with("GET /orgs/myorg/packages/container/app/versions"))
        .count();
    assert_eq!(listings, 1, "{:?}", fake.requests());
    let deletes = fake
        .requests()
        .iter()
        .filter(|r| r.starts_with("DELETE /orgs/myorg/packages/container/app/versions/"))
        .count();
    assert_eq!(deletes, expected.len());
    let status = ferry(&["status", p, "--output", "json"], &[]).await;
    let v: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(v["totals"]["deleted"], expected.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_docker_hub_the_same_decisions_become_tag_deletions_with_a_pull_per_deletion() {
    // Docker Hub's tag API describes the repository (digests, push times, platforms), so the
    // inventory costs no pull; deletion removes tags through the Hub API, after one pull of
    // each manifest it deletes, kept for `ferry restore`.
    let reg = Registry::start().await;
    let s = scenario_in(&reg, "myorg/app").await;
    let mut tags = Vec::new();
    for tag in reg.pusher().tags("myorg/app").await {
        let (_, bytes, digest) = reg.pusher().manifest("myorg/app", &tag).await.unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let platforms = doc["manifests"]
            .as_array()
            .map(|m| {
                m.iter()
                    .map(|c| {
                        (
                            c["digest"].as_str().unwrap().to_string(),
                            c["platform"]["os"].as_str().unwrap().to_string(),
                            c["platform"]["architecture"].as_str().unwrap().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        tags.push(HubTag {
            name: tag,
            digest,
            last_pushed: "2024-01-01T00:00:00.000000Z".into(),
            platforms,
        });
    }
    let hub = HubFake::start(
        &[("myorg", "app", false)],
        &[("me", "dckr_pat_canary_5e1")],
        3,
        1000,
    )
    .await;
    hub.set_tags("myorg/app", tags);
    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n[registry.\"docker.io\"]\nendpoint = \"{}\"\ninsecure = true\napi = \"{}\"\nauth = {{ username = \"me\", password_env = \"HUB_PAT\" }}\n[[retain]]\nrepository = \"docker.io/myorg/app\"\n{RULE}\n",
            reg.url, hub.url
        ),
    );
    let p = p.to_str().unwrap();
    reg.sync_log().await;
    let pulls_before = reg.count_requests("GET", "/manifests/");
    let shown = ferry(&["plan", p], &[("HUB_PAT", "dckr_pat_canary_5e1")]).await;
    shown.assert_code(0);
    assert!(
        shown.stdout.contains("delete: signature of deleted pr-2"),
        "{}",
        shown.stdout
    );

    let run = ferry(&["run", p], &[("HUB_PAT", "dckr_pat_canary_5e1")]).await;
    run.assert_code(0);
    assert!(!run.stderr.contains("dckr_pat_canary") && !run.stdout.contains("dckr_pat_canary"));
    let mut left = hub.tags("myorg/app");
    left.sort();
    let mut kept: Vec<String> = s.kept.iter().map(|(t, _)| t.to_string()).collect();
    kept.push("pr-3".into()); // pr-3 is also `stable`: kept with both tags
    kept.sort();
    assert_eq!(left, kept);
    let deletes: Vec<String> = hub
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("DELETE"))
        .collect();
    assert_eq!(
        deletes.len(),
        4,
        "pr-1, pr-2, its signature, pr-4: {deletes:?}"
    );
    assert!(deletes.iter().all(|r| r.ends_with("auth=yes")));
    reg.sync_log().await;
    // The plan and the inventory spent no pull. Each manifest deleted (pr-4's own child
    // too) is read once right before, so the checkpoint keeps what `ferry restore` puts
    // back (issue 22): one pull each, and nothing else.
    assert_eq!(
        reg.count_requests("GET", "/manifests/"),
        pulls_before + 5,
        "one pull per manifest deleted"
    );
}

/// The scenario in a real registry plus its package versions in the GitHub fake.
pub(super) async fn ghcr_scenario(
    public_downloads: u64,
    tokens: &[(&str, &str, &[&str])],
) -> (Registry, Scenario, GitHubFake) {
    let reg = Registry::start().await;
    let s = scenario_in(&reg, "myorg/app").await;
    let mut versions: Vec<(String, Vec<String>)> = Vec::new();
    for img in s.kept.iter().map(|(_, i)| i).chain(s.deleted.iter()) {
        for d in std::iter::once(&img.digest).chain(img.children.iter().map(|c| &c.digest)) {
            if !versions.iter().any(|(v, _)| v == d) {
                versions.push((d.clone(), Vec::new()));
            }
        }
    }
    for tag in reg.pusher().tags("myorg/app").await {
        let (_, _, digest) = reg.pusher().manifest("myorg/app", &tag).await.unwrap();
        if let Some(v) = versions.iter_mut().find(|(d, _)| d == &digest) {
            v.1.push(tag);
        }
    }
    let fake = GitHubFake::start(tokens).await;
    let pr1 = s.deleted[0].digest.clone();
    let rows: Vec<(String, Vec<String>, u64)> = versions
        .into_iter()
        .map(|(d, t)| {
            let downloads = if d == pr1 { public_downloads } else { 0 };
            (d, t, downloads)
        })
        .collect();
    let tags: Vec<Vec<&str>> = rows
        .iter()
        .map(|(_, t, _)| t.iter().map(String::as_str).collect())
        .collect();
    let args: Vec<(&str, &str, &[&str], u64)> = rows
        .iter()
        .zip(&tags)
        .map(|((d, _, n), t)| (d.as_str(), "2024-01-01T00:00:00Z", t.as_slice(), *n))
        .collect();
    fake.add_package(Some("myorg"), "app", true, &args);
    (reg, s, fake)
}

pub(super) fn ghcr_plan(dir: &std::path::Path, reg: &Registry, fake: &GitHubFake) -> String {
    let p = plan(
        dir,
        &format!(
            "version = 1\n[registry.\"{a}\"]\ninsecure = true\nflavor = \"ghcr\"\napi = \"{api}\"\nauth = {{ username = \"bot\", password_env = \"GHCR_TOKEN\" }}\n[[retain]]\nrepository = \"{a}/myorg/*\"\n{RULE}\n",
            a = reg.addr,
            api = fake.url
        ),
    );
    p.to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ghcr_secondary_limits_are_waited_out_and_refusals_reported() {
    // Two deletes per 2 s window; pr-1 is public with 6,000 downloads (GitHub refuses it).
    // The wildcard expands through the Packages API (GHCR has no catalog).
    let (reg, s, fake) = ghcr_scenario(
        6000,
        &[("ghp_rw", "bot", &["read:packages", "delete:packages"])],
    )
    .await;
    fake.set_limits(10_000, 2, std::time::Duration::from_secs(2));
    let dir = tempfile::tempdir().unwrap();
    let p = ghcr_plan(dir.path(), &reg, &fake);
    let run = ferry(
        &["run", "--progress", "plain", &p],
        &[("GHCR_TOKEN", "ghp_rw")],
    )
    .await;
    // The refusal is news, and fails this run (issue 22: later runs keep it without asking).
    run.assert_code(1);
    assert!(
        run.stderr.contains("GitHub API rate limit"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains(REFUSED_DOWNLOADS), "{}", run.stderr);
    let deleted: std::collections::BTreeSet<String> = fake
        .versions(Some("myorg"), "app", true)
        .into_iter()
        .filter(|v| v.deleted)
        .map(|v| v.digest)
        .collect();
    let expected: std::collections::BTreeSet<String> =
        s.deleted[1..].iter().map(|i| i.digest.clone()).collect();
    assert_eq!(deleted, expected, "everything but the refused pr-1");
}
