//! Proves the harness itself against the real registry and skopeo, so a
//! failing ferry test can be trusted to be about ferry.

use reqwest::{Method, StatusCode};

use crate::harness::*;

mod kube_api;
mod kube_lists;

#[allow(unused_imports)]
use kube_api::*;
#[allow(unused_imports)]
use kube_lists::*;

/// Reads `image` back through both our client and skopeo and checks the
/// bytes, media type and digest are exactly what was pushed.
async fn assert_round_trip(reg: &Registry, repo: &str, reference: &str, image: &Image) {
    let pusher = reg.pusher();
    let (content_type, bytes, digest) = pusher
        .manifest(repo, reference)
        .await
        .unwrap_or_else(|| panic!("{repo}:{reference} not found"));
    assert_eq!(
        content_type, image.media_type,
        "{repo}:{reference} content type"
    );
    assert_eq!(bytes, image.bytes, "{repo}:{reference} bytes");
    assert_eq!(digest, image.digest, "{repo}:{reference} digest header");
    assert_eq!(
        sha256_digest(&bytes),
        image.digest,
        "{repo}:{reference} digest"
    );

    let creds = reg.credentials();
    let creds = creds.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
    // Digest references use '@', tags ':'.
    let sep = if reference.starts_with("sha256:") {
        '@'
    } else {
        ':'
    };
    let raw = skopeo_inspect_raw(
        &format!("docker://{}/{repo}{sep}{reference}", reg.addr),
        creds,
    )
    .await;
    assert_eq!(raw, image.bytes, "{repo}:{reference} via skopeo");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_registry_round_trips_every_fixture_kind() {
    let reg = Registry::start().await;
    let pusher = reg.pusher();

    let base = layer(1, 64 * 1024);
    let single = image(
        &[base.clone(), layer(2, 32 * 1024)],
        "linux",
        "amd64",
        Format::Oci,
        "single",
    );
    pusher.push("smoke/single", "v1", &single).await;

    let platforms = |format| {
        vec![
            image(
                &[base.clone(), layer(3, 4096)],
                "linux",
                "amd64",
                format,
                "multi",
            ),
            image(
                &[base.clone(), layer(4, 4096)],
                "linux",
                "arm64",
                format,
                "multi",
            ),
        ]
    };
    let docker_list = index(platforms(Format::Docker), Format::Docker);
    let oci_index = index(platforms(Format::Oci), Format::Oci);
    pusher.push("smoke/multi", "docker", &docker_list).await;
    pusher.push("smoke/multi", "oci", &oci_index).await;

    let (sig_tag, sig) = cosign_signature(&single, &format!("{}/smoke/single", reg.addr));
    pusher.push("smoke/single", &sig_tag, &sig).await;

    let chart = artifact(HELM_CONFIG, b"not really a chart");
    pusher.push("smoke/chart", "1.0.0", &chart).await;

    // Formats are what the spec says they are.
    assert_eq!(docker_list.media_type, DOCKER_MANIFEST_LIST);
    assert_eq!(docker_list.children[0].media_type, DOCKER_MANIFEST);
    assert_eq!(
        docker_list.children[0].blobs[1].media_type,
        DOCKER_LAYER_GZIP
    );
    assert_eq!(oci_index.children[1].blobs[0].media_type, OCI_CONFIG);
    assert_ne!(
        docker_list.children[0].digest, docker_list.children[1].digest,
        "platforms must differ"
    );
    let list: serde_json::Value = serde_json::from_slice(&docker_list.bytes).expect("list JSON");
    assert_eq!(list["manifests"][1]["platform"]["architecture"], "arm64");
    assert!(sig_tag.starts_with("sha256-") && sig_tag.ends_with(".sig"));

    assert_round_trip(&reg, "smoke/single", "v1", &single).await;
    assert_round_trip(&reg, "smoke/single", &sig_tag, &sig).await;
    assert_round_trip(&reg, "smoke/multi", "docker", &docker_list).await;
    assert_round_trip(&reg, "smoke/multi", "oci", &oci_index).await;
    assert_round_trip(&reg, "smoke/chart", "1.0.0", &chart).await;
    for child in &oci_index.children {
        assert_round_trip(&reg, "smoke/multi", &child.digest, child).await;
    }

    assert_eq!(
        pusher.tags("smoke/single").await,
        vec![sig_tag.clone(), "v1".to_string()]
    );
    assert_eq!(pusher.tags("smoke/multi").await, vec!["docker", "oci"]);
    assert!(pusher.tags("smoke/nothing").await.is_empty());
    assert!(pusher.manifest("smoke/single", "nope").await.is_none());
    assert!(pusher.blob_exists("smoke/multi", &base.digest).await);
    assert!(
        !pusher
            .blob_exists("smoke/multi", &layer(99, 10).digest)
            .await
    );
    assert_eq!(
        pusher.blob("smoke/single", &single.blobs[1].digest).await,
        Some(single.blobs[1].bytes.clone())
    );

    reg.sync_log().await;
    // single + signature + chart + (2 children + list) + (2 children + index)
    assert_eq!(reg.count_requests("PUT", "/manifests/"), 9, "{}", reg.log());
    assert_eq!(
        reg.count_requests("put", "/v2/smoke/multi/manifests/sha256:"),
        4
    );
    // The base layer is shared: it is uploaded once per repository that
    // needs it, and later pushes only HEAD it.
    let uploads = reg.count_requests("PUT", "/blobs/uploads/");
    assert_eq!(
        uploads,
        single.all_blobs().len() + sig.blobs.len() + chart.blobs.len() + {
            let mut multi = docker_list.all_blobs();
            multi.extend(oci_index.all_blobs());
            multi.sort_by(|a, b| a.digest.cmp(&b.digest));
            multi.dedup_by(|a, b| a.digest == b.digest);
            multi.len()
        }
    );
    assert!(reg.count_requests("GET", "/v2/") >= 1);
    assert!(reg
        .storage_dir()
        .join("docker/registry/v2/repositories/smoke/single")
        .is_dir());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htpasswd_registry_requires_and_accepts_basic_auth() {
    let reg = Registry::start_with(Auth::Htpasswd {
        user: "alice".into(),
        password: "s3cret".into(),
    })
    .await;

    let anon = reqwest::get(format!("{}/v2/", reg.url))
        .await
        .expect("GET /v2/");
    assert_eq!(anon.status(), StatusCode::UNAUTHORIZED);

    let img = image(
        &[layer(10, 8192)],
        "linux",
        "amd64",
        Format::Docker,
        "htpasswd",
    );
    reg.pusher().push("private/app", "v1", &img).await;
    assert_round_trip(&reg, "private/app", "v1", &img).await;

    // Wrong password is rejected by the registry, not papered over.
    let wrong = Pusher::new(&reg.url, Some(("alice", "nope")));
    let resp = wrong.send(Method::GET, "/v2/", &[], None).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let err = try_skopeo_inspect_raw(&format!("docker://{}/private/app:v1", reg.addr), None).await;
    assert!(err.is_err(), "skopeo without creds must fail");

    reg.sync_log().await;
    let requests = reg.requests();
    assert!(
        requests.iter().any(|r| r.uri == "/v2/" && r.status == 401),
        "401s are in the access log: {requests:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_registry_accepts_our_tokens() {
    let tokens = TokenServer::start(&[("alice", "pw"), ("bob", "hunter2")]).await;
    let reg = Registry::start_with(Auth::Token(tokens.clone())).await;

    // Full bearer flow through the token endpoint with user credentials.
    let alice = Pusher::new(&reg.url, Some(("alice", "pw")));
    let img = image(&[layer(20, 8192)], "linux", "amd64", Format::Oci, "token");
    alice.push("tok/app", "v1", &img).await;
    let raw = skopeo_inspect_raw(
        &format!("docker://{}/tok/app:v1", reg.addr),
        Some(("alice", "pw")),
    )
    .await;
    assert_eq!(raw, img.bytes);

    let requests = tokens.requests();
    assert!(
        requests.iter().any(|r| r.user.as_deref() == Some("alice")
            && r.service == tokens.service
            && r.authorization_header_present
            && r.method == "GET"
            && r.status == 200
            && r.scopes.len() == 1
            && r.actions_for("tok/app") == ["pull", "push"]),
        "{requests:#?}"
    );

    // The fixture pusher mints tokens locally: works, and is not recorded.
    tokens.clear_requests();
    let minted = image(
        &[layer(21, 4096)],
        "linux",
        "arm64",
        Format::Docker,
        "minted",
    );
    reg.pusher().push("tok/other", "v1", &minted).await;
    assert!(tokens.requests().is_empty());

    // Anonymous tokens can pull but not push.
    let anon = Pusher::new(&reg.url, None);
    let got = anon
        .manifest("tok/app", "v1")
        .await
        .expect("anonymous pull");
    assert_eq!(got.1, img.bytes);
    let resp = anon
        .send(Method::POST, "/v2/tok/app/blobs/uploads/", &[], None)
        .await;
    assert!(
        matches!(resp.status().as_u16(), 401 | 403),
        "anonymous push got {}",
        resp.status()
    );
    assert!(tokens
        .requests()
        .iter()
        .any(|r| r.user.is_none() && !r.authorization_header_present));

    // Wrong credentials: 401 with a registry-style error body.
    let http = reqwest::Client::new();
    let resp = http
        .get(&tokens.realm)
        .query(&[
            ("service", tokens.service.as_str()),
            ("scope", "repository:tok/app:pull"),
        ])
        .basic_auth("alice", Some("wrong"))
        .send()
        .await
        .expect("GET token with wrong creds");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = resp.json().await.expect("error JSON");
    assert_eq!(body["errors"][0]["code"], "UNAUTHORIZED");

    // OAuth2 password and refresh grants give tokens the registry accepts.
    for form in [
        vec![
            ("grant_type", "password"),
            ("username", "bob"),
            ("password", "hunter2"),
        ],
        vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", "refresh-bob"),
        ],
    ] {
        let mut form = form;
        form.extend([
            ("service", tokens.service.as_str()),
            ("scope", "repository:tok/app:pull"),
            ("client_id", "ferry-tests"),
        ]);
        let resp = http
            .post(&tokens.realm)
            .form(&form)
            .send()
            .await
            .expect("POST token");
        assert_eq!(resp.status(), StatusCode::OK);
        let body: serde_json::Value = resp.json().await.expect("token JSON");
        assert_eq!(body["expires_in"], 300);
        let issued_at = body["issued_at"].as_str().expect("issued_at");
        assert!(
            issued_at.len() == 20 && issued_at.ends_with('Z'),
            "{issued_at}"
        );
        let token = body["access_token"].as_str().expect("access_token");
        let resp = http
            .get(format!("{}/v2/tok/app/manifests/v1", reg.url))
            .header("Accept", OCI_MANIFEST)
            .bearer_auth(token)
            .send()
            .await
            .expect("GET manifest with OAuth2 token");
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let posts: Vec<_> = tokens
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(posts.len(), 2);
    assert!(posts.iter().all(|r| r.user.as_deref() == Some("bob")));

    // Catalog scope for an authenticated user.
    let resp = http
        .get(format!("{}/v2/_catalog", reg.url))
        .bearer_auth(tokens.mint(&["registry:catalog:*"]))
        .send()
        .await
        .expect("GET catalog");
    assert_eq!(resp.status(), StatusCode::OK);
    let body: serde_json::Value = resp.json().await.expect("catalog JSON");
    assert_eq!(
        body["repositories"],
        serde_json::json!(["tok/app", "tok/other"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_layout_is_readable_by_skopeo() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let base = layer(30, 4096);
    let single = image(
        &[base.clone(), layer(31, 2048)],
        "linux",
        "amd64",
        Format::Oci,
        "layout",
    );
    let multi = index(
        vec![
            image(
                std::slice::from_ref(&base),
                "linux",
                "amd64",
                Format::Oci,
                "layout-multi",
            ),
            image(
                std::slice::from_ref(&base),
                "linux",
                "arm64",
                Format::Oci,
                "layout-multi",
            ),
        ],
        Format::Oci,
    );
    write_oci_layout(dir.path(), &[("v1", &single), ("multi", &multi)]);

    let path = dir.path().display();
    assert_eq!(
        skopeo_inspect_raw(&format!("oci:{path}:v1"), None).await,
        single.bytes
    );
    assert_eq!(
        skopeo_inspect_raw(&format!("oci:{path}:multi"), None).await,
        multi.bytes
    );
    assert!(dir
        .path()
        .join("blobs/sha256")
        .join(base.digest.trim_start_matches("sha256:"))
        .is_file());
}
