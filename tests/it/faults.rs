//! A fault-injecting proxy in front of real registries: paging, refused chunked uploads,
//! registries that lie about bytes or digests, server errors, redirects to another host.

use std::sync::Arc;

use reqwest::StatusCode;

use crate::common::*;
use crate::harness::*;

/// One retry: these faults are permanent, and the default policy would spend ~8 s proving it.
const ONE_RETRY: &str = "retries = 1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_and_tag_lists_are_followed_across_pages() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let img = image(&[layer(1, 2048)], "linux", "amd64", Format::Oci, "paging");
    for r in 0..5 {
        for t in 0..3 {
            src.pusher()
                .push(&format!("paged/r{r}"), &format!("t{t}"), &img)
                .await;
        }
    }
    // Small pages make the registry send `Link: <…>; rel="next"`.
    let proxy = Proxy::start(
        &src.url,
        Arc::new(|_, uri: &str, _| {
            if uri.contains("n=1000") {
                Action::Rewrite(uri.replace("n=1000", "n=2"))
            } else {
                Action::Forward
            }
        }),
    )
    .await;
    let run = run_copy(
        &[&proxy.addr, &dst.addr],
        ONE_RETRY,
        &format!("{}/paged/*", proxy.addr),
        &format!("{}/paged/*", dst.addr),
    )
    .await;
    run.assert_code(0);
    assert!(
        run.summary().starts_with("ferry: 15 images copied"),
        "{}",
        run.summary()
    );
    let seen = proxy.seen();
    assert!(
        seen.iter()
            .any(|s| s.uri.starts_with("/v2/_catalog") && s.uri.contains("last=")),
        "catalog paging followed: {seen:?}"
    );
    for r in 0..5 {
        assert_eq!(
            dst.pusher().tags(&format!("paged/r{r}")).await,
            vec!["t0", "t1", "t2"]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_refusing_chunked_uploads_gets_one_put() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let img = image(
        &[layer(2, 33 * 1024 * 1024)],
        "linux",
        "amd64",
        Format::Oci,
        "nochunks",
    );
    src.pusher().push("big/app", "v1", &img).await;
    let proxy = Proxy::start(
        &dst.url,
        Arc::new(|m, _, _| {
            if m == "PATCH" {
                Action::registry_error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "UNSUPPORTED",
                    "The operation is unsupported.",
                )
            } else {
                Action::Forward
            }
        }),
    )
    .await;
    run_copy(
        &[&src.addr, &proxy.addr],
        ONE_RETRY,
        &format!("{}/big/app", src.addr),
        &format!("{}/big/app", proxy.addr),
    )
    .await
    .assert_code(0);
    assert_copied(&dst, "big/app", "v1", &img).await;
    let seen = proxy.seen();
    assert_eq!(
        seen.iter().filter(|s| s.method == "PATCH").count(),
        1,
        "one refused PATCH"
    );
    assert!(seen
        .iter()
        .any(|s| s.method == "PUT" && s.uri.contains("digest=")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_lies_costs_an_item_not_the_target() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let good = image(
        &[layer(3, 100 * 1024)],
        "linux",
        "amd64",
        Format::Oci,
        "good",
    );
    let bad = image(
        &[layer(4, 100 * 1024)],
        "linux",
        "amd64",
        Format::Oci,
        "bad",
    );
    let lie = image(&[layer(5, 1024)], "linux", "amd64", Format::Oci, "lie");
    src.pusher().push("team/good", "v1", &good).await;
    src.pusher().push("team/bad", "v1", &bad).await;
    src.pusher().push("team/lie", "v1", &lie).await;
    let bad_layer = bad.layers()[0].digest.clone();
    let wrong = format!("sha256:{}", "0".repeat(64));
    let proxy = Proxy::start(
        &src.url,
        Arc::new(move |m, uri: &str, _| {
            if m == "GET" && uri.contains(&bad_layer) {
                Action::Corrupt
            } else if uri.starts_with("/v2/team/lie/manifests/") {
                Action::SetHeader("docker-content-digest", wrong.clone())
            } else {
                Action::Forward
            }
        }),
    )
    .await;
    let run = run_copy(
        &[&proxy.addr, &dst.addr],
        ONE_RETRY,
        &format!("{}/team/*", proxy.addr),
        &format!("{}/team/*", dst.addr),
    )
    .await;
    run.assert_code(1);
    assert!(
        run.summary()
            .starts_with("ferry: 1 images copied, 0 already present, 2 failed"),
        "{}",
        run.summary()
    );
    assert!(
        run.stderr
            .contains(&format!("blob {}", bad.layers()[0].digest)),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("digest mismatch"), "{}", run.stderr);
    assert_copied(&dst, "team/good", "v1", &good).await;
    // Nothing corrupt or dangling at the target.
    assert!(dst.pusher().manifest("team/bad", "v1").await.is_none());
    assert!(
        !dst.pusher()
            .blob_exists("team/bad", &bad.layers()[0].digest)
            .await
    );
    assert!(dst.pusher().manifest("team/lie", "v1").await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_decoded_per_item() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let a = image(&[layer(6, 1024)], "linux", "amd64", Format::Oci, "a");
    let b = image(&[layer(7, 1024)], "linux", "amd64", Format::Oci, "b");
    src.pusher().push("team/a", "v1", &a).await;
    src.pusher().push("team/b", "v1", &b).await;
    let proxy = Proxy::start(
        &dst.url,
        Arc::new(|m, uri: &str, _| {
            if m == "PUT" && uri.starts_with("/v2/team/b/manifests/") {
                Action::registry_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "UNAVAILABLE",
                    "storage is read-only for maintenance",
                )
            } else {
                Action::Forward
            }
        }),
    )
    .await;
    let run = run_copy(
        &[&src.addr, &proxy.addr],
        ONE_RETRY,
        &format!("{}/team/*", src.addr),
        &format!("{}/team/*", proxy.addr),
    )
    .await;
    run.assert_code(1);
    assert!(
        run.stderr
            .contains("503: UNAVAILABLE: storage is read-only for maintenance"),
        "{}",
        run.stderr
    );
    assert_copied(&dst, "team/a", "v1", &a).await;
}

/// The registry redirects blob downloads to "storage" on another loopback port, as
/// registries do with S3 or a CDN. The storage host must see the blob GETs and no
/// credential: neither the registry password (Basic) nor a registry token (Bearer).
async fn credentials_stay_at_their_host_on_a_redirect(token: bool) {
    const PASSWORD: &str = "redirect-canary";
    let tokens = TokenServer::start(&[("u", PASSWORD)]).await;
    let src = if token {
        Registry::start_with(Auth::Token(tokens.clone())).await
    } else {
        Registry::start_with(Auth::Htpasswd {
            user: "u".into(),
            password: PASSWORD.into(),
        })
        .await
    };
    let storage_backend = Registry::start().await;
    let dst = Registry::start().await;
    let img = image(
        &[layer(8, 64 * 1024), layer(9, 8 * 1024)],
        "linux",
        "amd64",
        Format::Oci,
        "redir",
    );
    src.pusher().push("team/app", "v1", &img).await;
    storage_backend.pusher().push("team/app", "v1", &img).await;
    let storage = Proxy::transparent(&storage_backend.url).await;
    let storage_url = storage.url.clone();
    let front = Proxy::start(
        &src.url,
        Arc::new(move |m, uri: &str, _| {
            if m == "GET" && uri.contains("/blobs/sha256:") {
                Action::Respond(
                    StatusCode::TEMPORARY_REDIRECT,
                    vec![("location", format!("{storage_url}{uri}"))],
                    Vec::new(),
                )
            } else {
                Action::Forward
            }
        }),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n[registry.\"{f}\"]\ninsecure = true\nauth = {{ username = \"u\", password_env = \"PW\" }}\n{}\n[[copy]]\nfrom = \"{f}/team/app:v1\"\nto = \"{d}/team/app\"\n",
            insecure(&[&dst]),
            f = front.addr,
            d = dst.addr
        ),
    );
    ferry(&["run", p.to_str().unwrap()], &[("PW", PASSWORD)])
        .await
        .assert_code(0);
    assert_copied(&dst, "team/app", "v1", &img).await;

    // Every blob crossed through storage, and not one request there carried credentials.
    let at_storage = storage.seen();
    for blob in img.all_blobs() {
        assert!(
            at_storage
                .iter()
                .any(|s| s.method == "GET" && s.uri.ends_with(&format!("/blobs/{}", blob.digest))),
            "blob {} was fetched from storage: {at_storage:?}",
            blob.digest
        );
    }
    assert!(
        at_storage.iter().all(|s| s.authorization.is_none()),
        "{at_storage:?}"
    );
    // The registry itself did get them, in the scheme it asked for: so the absence at
    // storage is ferry's doing, not a run that never authenticated.
    let scheme = if token { "Bearer " } else { "Basic " };
    let at_front = front.seen();
    assert!(
        at_front.iter().any(|s| s.uri.contains("/blobs/sha256:")
            && s.authorization
                .as_deref()
                .is_some_and(|a| a.starts_with(scheme))),
        "the registry got {scheme}credentials with the blob GETs: {at_front:?}"
    );
    if token {
        assert!(
            tokens
                .requests()
                .iter()
                .any(|r| r.user.as_deref() == Some("u") && r.status == 200),
            "a token was issued"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_credentials_do_not_follow_a_redirect_to_another_host() {
    credentials_stay_at_their_host_on_a_redirect(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_do_not_follow_a_redirect_to_another_host() {
    credentials_stay_at_their_host_on_a_redirect(true).await;
}

/// A registry that sends an upload to another host (its `Location` names storage elsewhere)
/// does not get ferry to send the registry password there: the upload fails with a message
/// that says why, and the other host never sees an `Authorization` header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_not_sent_to_an_upload_location_on_another_host() {
    let src = Registry::start().await;
    let dst = Registry::start_with(Auth::Htpasswd {
        user: "u".into(),
        password: "upload-canary".into(),
    })
    .await;
    let img = image(
        &[layer(12, 16 * 1024)],
        "linux",
        "amd64",
        Format::Oci,
        "loc",
    );
    src.pusher().push("team/app", "v1", &img).await;
    let storage = Proxy::transparent(&dst.url).await;
    let storage_url = storage.url.clone();
    let front = Proxy::start(
        &dst.url,
        Arc::new(move |m, uri: &str, _| {
            if m == "POST" && uri.contains("/blobs/uploads/") && !uri.contains("mount=") {
                Action::MoveLocation(storage_url.clone())
            } else {
                Action::Forward
            }
        }),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n[registry.\"{f}\"]\ninsecure = true\nretries = 0\nauth = {{ username = \"u\", password_env = \"PW\" }}\n{}\n[[copy]]\nfrom = \"{s}/team/app:v1\"\nto = \"{f}/team/app\"\n",
            insecure(&[&src]),
            f = front.addr,
            s = src.addr
        ),
    );
    let run = ferry(&["run", p.to_str().unwrap()], &[("PW", "upload-canary")]).await;
    run.assert_code(1);
    assert!(
        run.stderr.contains(&format!(
            "{} sent this request to another host, which asks for credentials",
            front.addr
        )),
        "{}",
        run.stderr
    );
    let at_storage = storage.seen();
    assert!(!at_storage.is_empty(), "the upload went to storage");
    assert!(
        at_storage.iter().all(|s| s.authorization.is_none()),
        "{at_storage:?}"
    );
    assert!(
        front.seen().iter().any(|s| s.authorization.is_some()),
        "the registry itself got credentials"
    );
}
