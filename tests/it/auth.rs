//! Basic auth (htpasswd), the bearer-token flow, docker config lookup and secret hygiene,
//! against real registries.

use std::sync::Arc;

use crate::common::*;
use crate::harness::*;

const CANARY: &str = "canary-S3cr3t-9f8e7d";

fn htpasswd_registry() -> Auth {
    Auth::Htpasswd {
        user: "alice".into(),
        password: CANARY.into(),
    }
}

async fn seed(reg: &Registry) -> Image {
    let img = image(
        &[layer(7, 50 * 1024)],
        "linux",
        "amd64",
        Format::Oci,
        "auth",
    );
    reg.pusher().push("secure/app", "v1", &img).await;
    img
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_source_to_token_target_with_scoped_cached_tokens() {
    let src = Registry::start_with(htpasswd_registry()).await;
    let tokens: Arc<TokenServer> = TokenServer::start(&[("bob", CANARY)]).await;
    let dst = Registry::start_with(Auth::Token(tokens.clone())).await;
    let img = seed(&src).await;
    let more = image(
        &[layer(8, 10 * 1024)],
        "linux",
        "amd64",
        Format::Oci,
        "auth2",
    );
    src.pusher().push("secure/app", "v2", &more).await;
    tokens.clear_requests();

    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        &format!(
            r#"version = 1
[registry."{s}"]
insecure = true
auth = {{ username = "alice", password_env = "SRC_PASSWORD" }}
[registry."{d}"]
insecure = true
auth = {{ username = "bob", password_env = "DST_PASSWORD" }}

[[copy]]
from = "{s}/secure/app"
to = "{d}/copied/app"
"#,
            s = src.addr,
            d = dst.addr
        ),
    );
    let run = ferry(
        &["-vv", "run", "--progress", "plain", p.to_str().unwrap()],
        &[("SRC_PASSWORD", CANARY), ("DST_PASSWORD", CANARY)],
    )
    .await;
    run.assert_code(0);
    assert_copied(&dst, "copied/app", "v1", &img).await;
    assert_copied(&dst, "copied/app", "v2", &more).await;

    // Tokens were asked for with the user's credentials and the push scope, and reused:
    // not one token request per registry request.
    let reqs = tokens.requests();
    assert!(!reqs.is_empty());
    assert!(
        reqs.iter()
            .all(|r| r.user.as_deref() == Some("bob") && r.status == 200),
        "{reqs:?}"
    );
    assert!(
        reqs.iter()
            .any(|r| r.actions_for("copied/app") == vec!["pull", "push"]),
        "{reqs:?}"
    );
    assert!(
        reqs.len() <= 4,
        "tokens are cached per scope: {} requests",
        reqs.len()
    );

    // Nothing secret in anything ferry printed, even at the highest verbosity.
    for out in [&run.stdout, &run.stderr] {
        assert!(!out.contains(CANARY), "password leaked:\n{out}");
        assert!(!out.contains("eyJ"), "a token leaked:\n{out}");
        assert!(!out.contains("Basic YWxp"), "a Basic header leaked:\n{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_config_and_identity_tokens_are_used() {
    let tokens = TokenServer::start(&[("carol", CANARY)]).await;
    let src = Registry::start_with(Auth::Token(tokens.clone())).await;
    let dst = Registry::start_with(htpasswd_registry()).await;
    let img = seed(&src).await;
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("alice:{CANARY}"));
    let cfg = tempfile::tempdir().unwrap();
    std::fs::write(
        cfg.path().join("config.json"),
        format!(
            r#"{{"auths":{{"{s}":{{"identitytoken":"refresh-carol"}},"http://{d}":{{"auth":"{basic}"}}}}}}"#,
            s = src.addr,
            d = dst.addr
        ),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = copy_plan(
        dir.path(),
        &[&src.addr, &dst.addr],
        "",
        &format!("{}/secure/app:v1", src.addr),
        &format!("{}/via-config/app", dst.addr),
    );
    tokens.clear_requests();
    let run = ferry(
        &["run", p.to_str().unwrap()],
        &[("DOCKER_CONFIG", cfg.path().to_str().unwrap())],
    )
    .await;
    run.assert_code(0);
    assert_copied(&dst, "via-config/app", "v1", &img).await;
    let reqs = tokens.requests();
    assert!(
        reqs.iter()
            .any(|r| r.method == "POST" && r.user.as_deref() == Some("carol")),
        "the identity token was exchanged with a refresh_token grant: {reqs:?}"
    );

    // The same file given explicitly in the plan (a mounted Kubernetes secret).
    let p2 = plan(
        dir.path(),
        &format!(
            "version = 1\n[registry.\"{s}\"]\ninsecure = true\nauth = {{ config = \"{c}\" }}\n[registry.\"{d}\"]\ninsecure = true\nauth = {{ config = \"{c}\" }}\n[[copy]]\nfrom = \"{s}/secure/app:v1\"\nto = \"{d}/via-plan/app\"\n",
            s = src.addr,
            d = dst.addr,
            c = cfg.path().join("config.json").display()
        ),
    );
    ferry(&["run", p2.to_str().unwrap()], &[])
        .await
        .assert_code(0);
    assert_copied(&dst, "via-plan/app", "v1", &img).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_problems_are_clear_and_never_echo_secrets() {
    let src = Registry::start_with(htpasswd_registry()).await;
    seed(&src).await;
    let dst = Registry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let rule = format!(
        "[[copy]]\nfrom = \"{}/secure/app\"\nto = \"{}/x/app\"\n",
        src.addr, dst.addr
    );

    // The variable named in the plan is not set: exit 3 before any work.
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n[registry.\"{s}\"]\ninsecure = true\nauth = {{ username = \"alice\", password_env = \"FERRY_TEST_NOT_SET\" }}\n{}\n{rule}",
            insecure(&[&dst]),
            s = src.addr
        ),
    );
    let run = ferry(&["run", p.to_str().unwrap()], &[]).await;
    run.assert_code(3);
    assert!(run.stderr.contains("FERRY_TEST_NOT_SET"), "{}", run.stderr);

    // A wrong password: the registry's error is decoded, with a hint, and the secret is
    // nowhere in the output.
    let run = ferry(
        &["-vv", "run", p.to_str().unwrap()],
        &[("FERRY_TEST_NOT_SET", "wrong-canary-password")],
    )
    .await;
    run.assert_code(1);
    assert!(run.stderr.contains("401"), "{}", run.stderr);
    assert!(
        run.stderr.contains("refused the configured credentials"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("wrong-canary-password")
            && !run.stdout.contains("wrong-canary-password")
    );

    // No credentials at all.
    let p = plan(
        dir.path(),
        &format!("version = 1\n{}\n{rule}", insecure(&[&src, &dst])),
    );
    let run = ferry(&["run", p.to_str().unwrap()], &[]).await;
    run.assert_code(1);
    assert!(
        run.stderr
            .contains("wants credentials and none are configured"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_without_catalog_access_says_to_list_repositories() {
    let tokens = TokenServer::start(&[("dave", CANARY)]).await;
    let src = Registry::start_with(Auth::Token(tokens)).await;
    seed(&src).await;
    let dst = Registry::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Anonymous: the token server grants no catalog access, as GHCR and Docker Hub do.
    let p = copy_plan(
        dir.path(),
        &[&src.addr, &dst.addr],
        "",
        &format!("{}/secure/*", src.addr),
        &format!("{}/x/*", dst.addr),
    );
    let run = ferry(&["run", p.to_str().unwrap()], &[]).await;
    run.assert_code(1);
    assert!(
        run.stderr.contains("has no repository catalog"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("list the repositories explicitly"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_online_names_the_missing_permission() {
    let src = Registry::start_with(htpasswd_registry()).await;
    seed(&src).await;
    let tokens = TokenServer::start(&[("erin", CANARY)]).await;
    let dst = Registry::start_with(Auth::Token(tokens)).await;
    let dir = tempfile::tempdir().unwrap();
    let rules = format!(
        "[[copy]]\nfrom = \"{}/secure/app\"\nto = \"{}/copied/app\"\n",
        src.addr, dst.addr
    );
    // The source credentials work; the target gets none, so an anonymous token cannot push.
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n[registry.\"{s}\"]\ninsecure = true\nauth = {{ username = \"alice\", password_env = \"SRC_PW\" }}\n[registry.\"{d}\"]\ninsecure = true\n{rules}",
            s = src.addr,
            d = dst.addr
        ),
    );
    let run = ferry(
        &["check", "--online", p.to_str().unwrap()],
        &[("SRC_PW", CANARY)],
    )
    .await;
    run.assert_code(3);
    assert!(
        run.stdout
            .contains(&format!("ok   pull {}/secure/app: 1 tags", src.addr)),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains(&format!("FAIL push {}/copied/app", dst.addr)),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("2 checks, 1 failed"), "{}", run.stdout);
    assert!(!run.stdout.contains(CANARY) && !run.stderr.contains(CANARY));
    // Nothing was written at the target by the check.
    assert!(dst.pusher().tags("copied/app").await.is_empty());

    // With credentials for the target too, all is well.
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n[registry.\"{s}\"]\ninsecure = true\nauth = {{ username = \"alice\", password_env = \"SRC_PW\" }}\n[registry.\"{d}\"]\ninsecure = true\nauth = {{ username = \"erin\", password_env = \"DST_PW\" }}\n{rules}",
            s = src.addr,
            d = dst.addr
        ),
    );
    let run = ferry(
        &["check", "--online", p.to_str().unwrap()],
        &[("SRC_PW", CANARY), ("DST_PW", CANARY)],
    )
    .await;
    run.assert_code(0);
    assert!(
        run.stdout
            .contains(&format!("ok   push {}/copied/app", dst.addr)),
        "{}",
        run.stdout
    );
}

/// `ferry check --online` for a retention policy at `reg` (credentials from `DST_PW` when
/// `user` is given) exits with `code` and never shows the password: its line for the policy.
async fn check_delete(reg: &Registry, user: Option<&str>, code: i32) -> String {
    let auth = user
        .map(|u| format!("auth = {{ username = \"{u}\", password_env = \"DST_PW\" }}\n"))
        .unwrap_or_default();
    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n[registry.\"{a}\"]\ninsecure = true\n{auth}[[retain]]\nrepository = \"{a}/secure/app\"\nkeep_newest = 1\n",
            a = reg.addr
        ),
    );
    let run = ferry(
        &["check", "--online", p.to_str().unwrap()],
        &[("DST_PW", CANARY)],
    )
    .await;
    run.assert_code(code);
    assert!(!run.stdout.contains(CANARY) && !run.stderr.contains(CANARY));
    run.stdout
        .lines()
        .find(|l| l.contains(&format!("delete {}/secure/app", reg.addr)))
        .unwrap_or_else(|| panic!("no delete line: {}", run.stdout))
        .to_string()
}

/// Issue 21 (what was seen, 6): the delete preflight said it "cannot show delete permission
/// without deleting". A DELETE of the all-zero digest shows it and deletes nothing: 404 where
/// deletes are enabled and permitted, 405 UNSUPPORTED where they are disabled, 401 where the
/// credentials may not delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_online_probes_delete_with_a_manifest_that_does_not_exist() {
    let zero = format!("/manifests/sha256:{}", "0".repeat(64));

    let enabled = Registry::start().await;
    seed(&enabled).await;
    let line = check_delete(&enabled, None, 0).await;
    assert!(
        line.starts_with("ok  ")
            && line.ends_with(
                "deletes are enabled (a delete of a manifest that does not exist answered 404)"
            ),
        "{line}"
    );
    enabled.sync_log().await;
    // One probe for the policy's repository, one for the run lease's (issue 22).
    assert_eq!(
        enabled.count_requests("DELETE", &format!("/v2/secure/app{zero}")),
        1
    );
    assert_eq!(
        enabled.count_requests("DELETE", &format!("/v2/secure/ferry-lease{zero}")),
        1
    );
    assert_eq!(enabled.pusher().tags("secure/app").await, ["v1"]);

    let disabled = Registry::start_without_deletes().await;
    seed(&disabled).await;
    let line = check_delete(&disabled, None, 3).await;
    assert!(
        line.starts_with("FAIL")
            && line.contains(
                "this registry has deletes disabled (405 UNSUPPORTED): retention cannot delete here"
            ),
        "{line}"
    );

    // A user who may pull and push but not delete (the token server withholds `delete`).
    let tokens = TokenServer::start(&[("frank", CANARY)]).await;
    let scoped = Registry::start_with(Auth::Token(tokens.clone())).await;
    seed(&scoped).await;
    tokens.withhold("delete");
    let line = check_delete(&scoped, Some("frank"), 3).await;
    assert!(
        line.starts_with("FAIL")
            && line.contains("the credentials may not delete here (401 UNAUTHORIZED)")
            && line.contains("repository:secure/app:delete"),
        "{line}"
    );
    assert_eq!(scoped.pusher().tags("secure/app").await, ["v1"]);
}

/// Issue 23, item 5: a hint is data beside the error. A target that refuses the password fails
/// the item; the FAILED line shows the whole chain first and the hint on a line of its own,
/// last, and the JSON report carries the hint in `hint`, not in `error`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_item_shows_its_hint_after_the_chain_and_in_the_report() {
    let src = Registry::start().await;
    seed(&src).await;
    let dst = Registry::start_with(htpasswd_registry()).await;
    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n{}\n[registry.\"{d}\"]\ninsecure = true\nauth = {{ username = \"alice\", password_env = \"FERRY_TEST_WRONG\" }}\n[[copy]]\nfrom = \"{}/secure/app:v1\"\nto = \"{d}/x/app\"\n",
            insecure(&[&src]),
            src.addr,
            d = dst.addr
        ),
    );
    let (run, v) =
        run_reported_with(&p, &[], &[("FERRY_TEST_WRONG", "wrong-canary-password")]).await;
    run.assert_code(1);
    let hint = format!("{} refused the configured credentials", dst.addr);
    let failed = run
        .stderr
        .lines()
        .position(|l| l.contains("FAILED") && l.contains("401"))
        .unwrap_or_else(|| panic!("{}", run.stderr));
    let next = run.stderr.lines().nth(failed + 1).unwrap_or_default();
    assert!(
        next.starts_with("  hint: ") && next.contains(&hint),
        "{}",
        run.stderr
    );

    let item = &v["items"][0];
    assert_eq!(item["action"], "failed", "{item}");
    let error = item["error"].as_str().unwrap();
    assert!(error.contains("401") && !error.contains("hint"), "{error}");
    assert!(item["hint"].as_str().unwrap().contains(&hint), "{item}");
    assert!(!run.stderr.contains("wrong-canary-password"));
}
