//! `docker.io/NAMESPACE/*` expands through the Docker Hub repository API (an in-process fake
//! of it), and the images come from a real registry standing in for registry-1.docker.io.

use crate::common::*;
use crate::harness::*;

fn hub_plan(reg: &Registry, hub: &HubFake, dst: &Registry, auth: &str) -> String {
    format!(
        "version = 1\n[registry.\"docker.io\"]\nendpoint = \"{}\"\ninsecure = true\napi = \"{}\"\n{auth}\n{}\n[[copy]]\nfrom = \"docker.io/myorg/*\"\nto = \"{}/hub/*\"\n",
        reg.url,
        hub.url,
        insecure(&[dst]),
        dst.addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_wildcard_pages_through_the_hub_api() {
    let (reg, dst) = (Registry::start().await, Registry::start().await);
    let img = image(&[layer(1, 4096)], "linux", "amd64", Format::Docker, "hub");
    for repo in ["myorg/a", "myorg/b", "myorg/c", "myorg/secret", "other/x"] {
        reg.pusher().push(repo, "1.0", &img).await;
    }
    let hub = HubFake::start(
        &[
            ("myorg", "a", false),
            ("myorg", "b", false),
            ("myorg", "c", false),
            ("myorg", "secret", true),
            ("other", "x", false),
        ],
        &[("me", "hub-pat-canary")],
        2,
        1000,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();

    // Anonymous: public repositories only, over two pages.
    let p = plan(dir.path(), &hub_plan(&reg, &hub, &dst, ""));
    let run = ferry(&["run", p.to_str().unwrap()], &[]).await;
    run.assert_code(0);
    assert!(
        run.summary().starts_with("ferry: 3 images copied"),
        "{}",
        run.summary()
    );
    for r in ["hub/a", "hub/b", "hub/c"] {
        assert_eq!(dst.pusher().tags(r).await, vec!["1.0"], "{r}");
    }
    assert!(dst.pusher().tags("hub/secret").await.is_empty());
    let pages = hub
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET"))
        .count();
    assert_eq!(pages, 2, "{:?}", hub.requests());

    // Issue 21: an audit of a Docker Hub mirror spends no pull of the budget: the source's
    // tags are asked with HEADs, the manifests read at the target.
    reg.sync_log().await;
    let before = reg.requests().len();
    ferry(&["verify", p.to_str().unwrap()], &[])
        .await
        .assert_code(0);
    reg.sync_log().await;
    let asked: Vec<String> = reg.requests()[before..]
        .iter()
        .filter(|r| r.uri.contains("/manifests/"))
        .map(|r| format!("{} {}", r.method, r.uri))
        .collect();
    assert_eq!(asked.len(), 3, "{asked:?}");
    assert!(asked.iter().all(|r| r.starts_with("HEAD ")), "{asked:?}");

    // Logged in with the registry credentials: private repositories too.
    let p = plan(
        dir.path(),
        &hub_plan(
            &reg,
            &hub,
            &dst,
            "auth = { username = \"me\", password_env = \"HUB_PAT\" }",
        ),
    );
    let run = ferry(
        &["run", p.to_str().unwrap()],
        &[("HUB_PAT", "hub-pat-canary")],
    )
    .await;
    run.assert_code(0);
    assert!(
        run.summary().starts_with(
            "ferry: 1 images copied, 0 already present, 3 unchanged (trusted from the checkpoint)"
        ),
        "{}",
        run.summary()
    );
    assert_eq!(dst.pusher().tags("hub/secret").await, vec!["1.0"]);
    assert!(hub.requests().iter().any(|r| r.contains("auth=yes")));
    assert!(!run.stderr.contains("hub-pat-canary"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_errors_are_reported_per_rule() {
    let (reg, dst) = (Registry::start().await, Registry::start().await);
    let dir = tempfile::tempdir().unwrap();

    // Unknown namespace: Hub's 404, named.
    let hub = HubFake::start(&[("other", "x", false)], &[], 100, 1000).await;
    let p = plan(dir.path(), &hub_plan(&reg, &hub, &dst, ""));
    let run = ferry(&["run", p.to_str().unwrap()], &[]).await;
    run.assert_code(1);
    assert!(
        run.stderr.contains("404: object not found"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("docker.io/myorg/*"), "{}", run.stderr);

    // Budget spent: the 429 is reported with the rate-limit hint (no retries here: the
    // fake's budget never comes back).
    let hub = HubFake::start(&[("myorg", "a", false)], &[], 100, 0).await;
    let p = plan(dir.path(), &hub_plan(&reg, &hub, &dst, "retries = 0"));
    let run = ferry(&["run", p.to_str().unwrap()], &[]).await;
    run.assert_code(1);
    assert!(
        run.stderr.contains("429: Rate limit exceeded"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("rate limiting"), "{}", run.stderr);

    // Wrong credentials at login.
    let hub = HubFake::start(&[("myorg", "a", false)], &[("me", "right")], 100, 1000).await;
    let p = plan(
        dir.path(),
        &hub_plan(
            &reg,
            &hub,
            &dst,
            "auth = { username = \"me\", password_env = \"HUB_PAT\" }",
        ),
    );
    let run = ferry(&["run", p.to_str().unwrap()], &[("HUB_PAT", "wrong")]).await;
    run.assert_code(1);
    assert!(
        run.stderr
            .contains("401: Incorrect authentication credentials."),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_api_budget_is_waited_out() {
    // Two requests per 2 s window; listing three pages takes a wait for the window.
    let (reg, dst) = (Registry::start().await, Registry::start().await);
    let img = image(
        &[layer(2, 2048)],
        "linux",
        "amd64",
        Format::Docker,
        "hubwait",
    );
    for repo in ["myorg/a", "myorg/b", "myorg/c", "myorg/d", "myorg/e"] {
        reg.pusher().push(repo, "1.0", &img).await;
    }
    let hub = HubFake::start_with_window(
        &[
            ("myorg", "a", false),
            ("myorg", "b", false),
            ("myorg", "c", false),
            ("myorg", "d", false),
            ("myorg", "e", false),
        ],
        &[],
        2,
        2,
        std::time::Duration::from_secs(2),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let p = plan(dir.path(), &hub_plan(&reg, &hub, &dst, ""));
    let run = ferry(&["run", "--progress", "plain", p.to_str().unwrap()], &[]).await;
    run.assert_code(0);
    assert!(
        run.summary().starts_with("ferry: 5 images copied"),
        "{}",
        run.summary()
    );
    assert!(
        run.stderr.contains("Docker Hub API rate limit"),
        "{}",
        run.stderr
    );
}
