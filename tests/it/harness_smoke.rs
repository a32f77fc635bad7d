//! Proves the harness itself against the real registry and skopeo, so a
//! failing ferry test can be trusted to be about ferry.

use reqwest::{Method, StatusCode};

use crate::harness::*;

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

// ---------------------------------------------------------------------------------------
// The fake Kubernetes API server (harness/kube.rs), checked with plain HTTP requests.

/// GET `url` with `client`: (status, JSON body).
async fn kube_get(client: &reqwest::Client, url: &str) -> (StatusCode, serde_json::Value) {
    let resp = client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e:?}"));
    let status = resp.status();
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json"),
        "GET {url} content type"
    );
    let body = resp.json().await.expect("JSON body");
    (status, body)
}

/// Every page of a list at `path` (with `limit`): (items' "namespace/name", page count).
/// Checks the list metadata of each page on the way.
async fn kube_list_all(
    kube: &FakeKube,
    client: &reqwest::Client,
    path: &str,
    limit: usize,
    list_kind: &str,
) -> (Vec<String>, usize) {
    let mut names = Vec::new();
    let mut pages = 0;
    let mut cont: Option<String> = None;
    let mut first_rv: Option<String> = None;
    loop {
        let mut url = format!("{}{path}?limit={limit}", kube.url);
        if let Some(c) = &cont {
            url += &format!("&continue={c}");
        }
        let (status, body) = kube_get(client, &url).await;
        assert_eq!(status, StatusCode::OK, "{url}: {body}");
        assert_eq!(body["kind"], list_kind);
        let rv = body["metadata"]["resourceVersion"]
            .as_str()
            .expect("list resourceVersion")
            .to_string();
        // Every page is read at the first page's resource version.
        assert_eq!(first_rv.get_or_insert(rv.clone()), &rv);
        let items = body["items"].as_array().expect("items");
        assert!(items.len() <= limit);
        for i in items {
            assert!(
                i.get("kind").is_none() && i.get("apiVersion").is_none(),
                "list items carry no kind/apiVersion: {i}"
            );
            names.push(format!(
                "{}/{}",
                i["metadata"]["namespace"].as_str().unwrap_or(""),
                i["metadata"]["name"].as_str().expect("name")
            ));
        }
        pages += 1;
        match body["metadata"]["continue"].as_str() {
            Some(c) => {
                assert_eq!(items.len(), limit, "a page that is not the last is full");
                let remaining = body["metadata"]["remainingItemCount"]
                    .as_u64()
                    .expect("remainingItemCount beside continue");
                assert!(remaining > 0);
                cont = Some(c.to_string());
            }
            None => {
                assert!(body["metadata"].get("remainingItemCount").is_none());
                break;
            }
        }
    }
    (names, pages)
}

fn assert_status(body: &serde_json::Value, code: u16, reason: &str) {
    assert_eq!(body["kind"], "Status", "{body}");
    assert_eq!(body["apiVersion"], "v1", "{body}");
    assert_eq!(body["status"], "Failure", "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["reason"], reason, "{body}");
    assert!(body["message"].is_string(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_kube_pages_every_object_once() {
    let kube = FakeKube::start(KubeAuth::None).await;
    assert!(kube.url.starts_with("http://127.0.0.1:"));
    let client = kube.client();
    // "a" and "a-b" sort differently as (namespace, name) and as etcd keys ("a-b/…" < "a/…").
    let mut want = Vec::new();
    for ns in ["prod", "a", "a-b", "dev"] {
        for i in 0..57 {
            let name = format!("web-{i:03}");
            kube.add(
                Kind::Pod,
                pod(
                    ns,
                    &name,
                    &[("app", "nginx:1.25", "docker.io/library/nginx@sha256:0001")],
                ),
            );
            want.push(format!("{ns}/{name}"));
        }
    }
    kube.add(
        Kind::Deployment,
        workload(Kind::Deployment, "prod", "web", &[("app", "nginx:1.25")]),
    );
    want.sort();
    // etcd order: keys compared as bytes.
    let mut etcd_order = want.clone();
    etcd_order.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));

    for limit in [1, 10, 57, 100, 228, 1000] {
        let (names, pages) = kube_list_all(&kube, &client, "/api/v1/pods", limit, "PodList").await;
        assert_eq!(names, etcd_order, "limit={limit}");
        assert_eq!(pages, want.len().div_ceil(limit).max(1), "limit={limit}");
    }
    // Without a limit: one page.
    let (status, body) = kube_get(&client, &format!("{}/api/v1/pods", kube.url)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["items"].as_array().unwrap().len(), want.len());
    assert!(body["metadata"].get("continue").is_none());

    // In one namespace.
    let (names, pages) =
        kube_list_all(&kube, &client, "/api/v1/namespaces/a/pods", 20, "PodList").await;
    assert_eq!(pages, 3);
    assert_eq!(names.len(), 57);
    assert!(names.iter().all(|n| n.starts_with("a/")));
    let (names, _) = kube_list_all(
        &kube,
        &client,
        "/api/v1/namespaces/nowhere/pods",
        20,
        "PodList",
    )
    .await;
    assert!(names.is_empty(), "a namespace without pods lists empty");
    let (names, _) = kube_list_all(
        &kube,
        &client,
        "/apis/apps/v1/deployments",
        5,
        "DeploymentList",
    )
    .await;
    assert_eq!(names, vec!["prod/web".to_string()]);

    // A list is a snapshot: objects added or removed after the first page change nothing.
    let url = format!("{}/api/v1/namespaces/dev/pods?limit=10", kube.url);
    let (_, first) = kube_get(&client, &url).await;
    let token = first["metadata"]["continue"].as_str().unwrap().to_string();
    kube.add(
        Kind::Pod,
        pod("dev", "web-999", &[("app", "nginx:1.25", "")]),
    );
    assert!(kube.remove(Kind::Pod, "dev", "web-056"));
    let mut seen: Vec<String> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    let mut cont = Some(token);
    while let Some(c) = cont.take() {
        let (status, body) = kube_get(&client, &format!("{url}&continue={c}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        seen.extend(
            body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["metadata"]["name"].as_str().unwrap().to_string()),
        );
        cont = body["metadata"]["continue"].as_str().map(str::to_string);
    }
    assert_eq!(seen.len(), 57);
    assert!(seen.contains(&"web-056".to_string()) && !seen.contains(&"web-999".to_string()));
    // A new list sees the change.
    let (names, _) =
        kube_list_all(&kube, &client, "/api/v1/namespaces/dev/pods", 10, "PodList").await;
    assert!(
        names.contains(&"dev/web-999".to_string()) && !names.contains(&"dev/web-056".to_string())
    );

    // Invalid continue tokens: 400 BadRequest Status.
    for bad in [
        "not-a-token!",
        "eyJ2IjoibWV0YS5rOHMuaW8vdjEifQ",
        "e30",
        "%2F%2F",
    ] {
        let (status, body) = kube_get(
            &client,
            &format!("{}/api/v1/pods?limit=5&continue={bad}", kube.url),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_status(&body, 400, "BadRequest");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .starts_with("invalid continue token: continue key is not valid"),
            "{body}"
        );
    }
    // A token that would climb out of the collection.
    let sneaky = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"v":"meta.k8s.io/v1","rv":1001,"start":"../secrets/x"}"#)
    };
    let (status, _) = kube_get(
        &client,
        &format!("{}/api/v1/pods?limit=5&continue={sneaky}", kube.url),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // resourceVersion beside continue.
    let (_, first) = kube_get(&client, &format!("{}/api/v1/pods?limit=5", kube.url)).await;
    let c = first["metadata"]["continue"].as_str().unwrap();
    let (status, body) = kube_get(
        &client,
        &format!(
            "{}/api/v1/pods?limit=5&continue={c}&resourceVersion=5",
            kube.url
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["message"],
        "specifying resource version is not allowed when using continue"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_kube_pages_ten_thousand_pods_quickly() {
    let kube = FakeKube::start(KubeAuth::None).await;
    let client = kube.client();
    for i in 0..10_000 {
        let ns = format!("ns-{:02}", i % 40);
        let name = format!("pod-{i:05}");
        kube.add(
            Kind::Pod,
            pod(
                &ns,
                &name,
                &[(
                    "app",
                    "registry.example.com/team/app:1.0",
                    "registry.example.com/team/app@sha256:00aa",
                )],
            ),
        );
    }
    let started = std::time::Instant::now();
    let (names, pages) = kube_list_all(&kube, &client, "/api/v1/pods", 500, "PodList").await;
    let took = started.elapsed();
    assert_eq!(pages, 20);
    assert_eq!(names.len(), 10_000);
    let unique: std::collections::BTreeSet<_> = names.iter().collect();
    assert_eq!(unique.len(), 10_000);
    assert!(
        took < std::time::Duration::from_secs(10),
        "10,000 pods in pages of 500 took {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_kube_forbidden_lists_answer_a_403_status() {
    let kube = FakeKube::start(KubeAuth::None).await;
    let client = kube.client();
    kube.add(Kind::Pod, pod("prod", "web", &[("app", "nginx:1.25", "")]));
    kube.forbid(Kind::Pod);
    kube.forbid(Kind::Deployment);
    kube.forbid(Kind::CronJob);

    let (status, body) = kube_get(&client, &format!("{}/api/v1/pods", kube.url)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body,
        serde_json::json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": "pods is forbidden: User \"system:serviceaccount:ferry:ferry\" cannot list resource \"pods\" in API group \"\" at the cluster scope",
            "reason": "Forbidden",
            "details": {"kind": "pods"},
            "code": 403,
        })
    );
    let (status, body) = kube_get(
        &client,
        &format!("{}/api/v1/namespaces/prod/pods?limit=10", kube.url),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_status(&body, 403, "Forbidden");
    assert_eq!(
        body["message"],
        "pods is forbidden: User \"system:serviceaccount:ferry:ferry\" cannot list resource \"pods\" in API group \"\" in the namespace \"prod\""
    );
    let (status, body) = kube_get(
        &client,
        &format!("{}/apis/apps/v1/namespaces/prod/deployments", kube.url),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body["message"],
        "deployments.apps is forbidden: User \"system:serviceaccount:ferry:ferry\" cannot list resource \"deployments\" in API group \"apps\" in the namespace \"prod\""
    );
    assert_eq!(
        body["details"],
        serde_json::json!({"group": "apps", "kind": "deployments"})
    );
    let (status, body) = kube_get(&client, &format!("{}/apis/batch/v1/cronjobs", kube.url)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body["message"],
        "cronjobs.batch is forbidden: User \"system:serviceaccount:ferry:ferry\" cannot list resource \"cronjobs\" in API group \"batch\" at the cluster scope"
    );
    // A single object too.
    let (status, body) = kube_get(
        &client,
        &format!("{}/api/v1/namespaces/prod/pods/web", kube.url),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body["details"],
        serde_json::json!({"name": "web", "kind": "pods"})
    );
    // Other kinds are unaffected.
    let (status, _) = kube_get(&client, &format!("{}/apis/apps/v1/replicasets", kube.url)).await;
    assert_eq!(status, StatusCode::OK);

    // Per-namespace grants: cluster-wide refused, namespaces allowed but the one refused.
    kube.forbid_cluster_scope(Kind::Job);
    kube.forbid_in_namespace(Kind::ReplicaSet, "kube-system");
    for (path, want) in [
        ("/apis/batch/v1/jobs", StatusCode::FORBIDDEN),
        ("/apis/batch/v1/namespaces/prod/jobs", StatusCode::OK),
        ("/apis/apps/v1/replicasets", StatusCode::FORBIDDEN),
        (
            "/apis/apps/v1/namespaces/kube-system/replicasets",
            StatusCode::FORBIDDEN,
        ),
        ("/apis/apps/v1/namespaces/prod/replicasets", StatusCode::OK),
    ] {
        let (status, body) = kube_get(&client, &format!("{}{path}", kube.url)).await;
        assert_eq!(status, want, "{path}: {body}");
    }

    // SelfSubjectAccessReview answers from the same rules.
    let review = |group: &str, resource: &str, ns: &str| {
        serde_json::json!({
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {
                "namespace": ns, "verb": "list", "group": group, "resource": resource,
            }},
        })
    };
    for (group, resource, ns, allowed) in [
        ("", "pods", "", false),
        ("", "pods", "prod", false),
        ("apps", "deployments", "", false),
        ("apps", "replicasets", "", false),
        ("apps", "replicasets", "prod", true),
        ("apps", "replicasets", "kube-system", false),
        ("apps", "statefulsets", "", true),
        ("apps", "controllerrevisions", "", true),
        ("batch", "jobs", "", false),
        ("batch", "jobs", "prod", true),
        ("", "namespaces", "", true),
    ] {
        let resp = client
            .post(format!(
                "{}/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                kube.url
            ))
            .json(&review(group, resource, ns))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["kind"], "SelfSubjectAccessReview");
        assert_eq!(body["spec"]["resourceAttributes"]["resource"], resource);
        assert_eq!(
            body["status"]["allowed"], allowed,
            "{group}/{resource} in {ns:?}: {body}"
        );
    }
    let resp = client
        .post(format!(
            "{}/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            kube.url
        ))
        .json(&serde_json::json!({"spec": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);

    kube.allow(Kind::Pod);
    let (status, _) = kube_get(&client, &format!("{}/api/v1/pods", kube.url)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_kube_expired_continue_answers_410() {
    let kube = FakeKube::start(KubeAuth::None).await;
    let client = kube.client();
    for i in 0..25 {
        kube.add(
            Kind::ReplicaSet,
            workload(
                Kind::ReplicaSet,
                "prod",
                &format!("web-{i:02}"),
                &[("app", "nginx:1.25")],
            ),
        );
    }
    let url = format!("{}/apis/apps/v1/replicasets?limit=10", kube.url);
    let (_, first) = kube_get(&client, &url).await;
    assert_eq!(first["kind"], "ReplicaSetList");
    assert_eq!(first["apiVersion"], "apps/v1");
    assert_eq!(first["metadata"]["remainingItemCount"], 15);
    let token = first["metadata"]["continue"].as_str().unwrap().to_string();

    kube.expire_continue_tokens();
    let (status, body) = kube_get(&client, &format!("{url}&continue={token}")).await;
    assert_eq!(status, StatusCode::GONE, "{body}");
    assert_status(&body, 410, "Expired");
    assert_eq!(
        body["message"],
        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list."
    );
    // The inconsistent-continue token goes on from where the expired one stopped.
    let inconsistent = body["metadata"]["continue"]
        .as_str()
        .expect("410 carries an inconsistent continue token")
        .to_string();
    let mut rest = Vec::new();
    let mut cont = Some(inconsistent);
    while let Some(c) = cont.take() {
        let (status, body) = kube_get(&client, &format!("{url}&continue={c}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        rest.extend(
            body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["metadata"]["name"].as_str().unwrap().to_string()),
        );
        cont = body["metadata"]["continue"].as_str().map(str::to_string);
    }
    assert_eq!(
        rest,
        (10..25).map(|i| format!("web-{i:02}")).collect::<Vec<_>>()
    );
    // A fresh list works, and so do its tokens.
    let (names, pages) = kube_list_all(
        &kube,
        &client,
        "/apis/apps/v1/replicasets",
        10,
        "ReplicaSetList",
    )
    .await;
    assert_eq!((names.len(), pages), (25, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_kube_token_mode_wants_the_bearer_token() {
    let kube = FakeKube::start(KubeAuth::Token("s3cret-token".into())).await;
    assert!(kube.url.starts_with("https://127.0.0.1:"));
    kube.add(
        Kind::DaemonSet,
        workload(
            Kind::DaemonSet,
            "kube-system",
            "agent",
            &[("agent", "ghcr.io/acme/agent:2")],
        ),
    );
    let url = format!("{}/apis/apps/v1/daemonsets", kube.url);

    let (status, body) = kube_get(&kube.client_without_credentials(), &url).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        body,
        serde_json::json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": "Unauthorized",
            "reason": "Unauthorized",
            "code": 401,
        })
    );
    let resp = kube
        .client_without_credentials()
        .get(&url)
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    let (status, body) = kube_get(&kube.client(), &url).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["items"][0]["metadata"]["name"], "agent");
    // Discovery and version need credentials too.
    let (status, body) = kube_get(&kube.client(), &format!("{}/version", kube.url)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["gitVersion"], KUBE_GIT_VERSION);

    kube.unauthorized();
    let (status, body) = kube_get(&kube.client(), &url).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_status(&body, 401, "Unauthorized");
    let (status, _) = kube_get(&kube.client(), &format!("{}/version", kube.url)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let requests = kube.requests();
    assert_eq!(requests.len(), 6);
    assert_eq!(
        requests[0],
        (
            "GET".to_string(),
            "/apis/apps/v1/daemonsets".to_string(),
            false
        )
    );
    assert!(requests[1].2 && requests[2].2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_kube_client_cert_mode_wants_a_trusted_certificate() {
    let kube = FakeKube::start(KubeAuth::ClientCert).await;
    kube.add(
        Kind::StatefulSet,
        workload(Kind::StatefulSet, "db", "pg", &[("pg", "postgres:16")]),
    );
    let url = format!("{}/apis/apps/v1/statefulsets", kube.url);

    // As kube-apiserver: the handshake succeeds without a certificate, the request is 401.
    let (status, body) = kube_get(&kube.client_without_credentials(), &url).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_status(&body, 401, "Unauthorized");
    // A certificate from another CA is no better.
    let (c, k) = kube.foreign_client_cert_pem();
    let foreign = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(kube.ca_pem().as_bytes()).unwrap())
        .identity(reqwest::Identity::from_pem(format!("{c}{k}").as_bytes()).unwrap())
        .build()
        .unwrap();
    let (status, _) = kube_get(&foreign, &url).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Nor a bearer token.
    let resp = kube
        .client_without_credentials()
        .get(&url)
        .bearer_auth("anything")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // The fake's client certificate (built here from the PEM, as ferry would).
    let (c, k) = kube.client_cert_pem();
    let trusted = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(kube.ca_pem().as_bytes()).unwrap())
        .identity(reqwest::Identity::from_pem(format!("{c}{k}").as_bytes()).unwrap())
        .build()
        .unwrap();
    let (status, body) = kube_get(&trusted, &url).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["items"][0]["metadata"]["name"], "pg");
    // 403 messages name the certificate's user.
    kube.forbid(Kind::StatefulSet);
    let (status, body) = kube_get(&trusted, &url).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains(&format!("User \"{}\"", kube.user())));

    // The server's certificate is not trusted without the CA.
    let err = reqwest::Client::new().get(&url).send().await;
    assert!(err.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_kube_writes_kubeconfigs() {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let dir = tempfile::TempDir::new().unwrap();

    let token = FakeKube::start(KubeAuth::Token("t0ken".into())).await;
    let path = dir.path().join("token.yaml");
    token.write_kubeconfig(&path, "fake-ctx");
    let text = std::fs::read_to_string(&path).unwrap();
    for line in [
        "apiVersion: v1".to_string(),
        "kind: Config".to_string(),
        format!("    server: \"{}\"", token.url),
        format!("    certificate-authority-data: {}", b64(&token.ca_pem())),
        "  name: \"fake-ctx\"".to_string(),
        "current-context: \"fake-ctx\"".to_string(),
        "    cluster: fake-kube".to_string(),
        "    user: ferry".to_string(),
        "    token: \"t0ken\"".to_string(),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line:?} missing from:\n{text}"
        );
    }

    let cert = FakeKube::start(KubeAuth::ClientCert).await;
    let path = dir.path().join("cert.yaml");
    cert.write_kubeconfig(&path, "mtls");
    let text = std::fs::read_to_string(&path).unwrap();
    let (c, k) = cert.client_cert_pem();
    for line in [
        format!("    client-certificate-data: {}", b64(&c)),
        format!("    client-key-data: {}", b64(&k)),
        format!("    certificate-authority-data: {}", b64(&cert.ca_pem())),
        "current-context: \"mtls\"".to_string(),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line:?} missing from:\n{text}"
        );
    }
    assert!(!text.contains("token:"));

    let proxy = FakeKube::start(KubeAuth::None).await;
    let path = dir.path().join("proxy.yaml");
    proxy.write_kubeconfig(&path, "proxy");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(&format!("    server: \"{}\"", proxy.url)));
    assert!(!text.contains("certificate-authority-data"));
    assert!(!text.contains("    user:"));
    assert!(text.contains("users: []"));
    // Structure: each top-level key once, the expected ones.
    let top: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with(' ') && !l.starts_with('-'))
        .map(|l| l.split(':').next().unwrap())
        .collect();
    assert_eq!(
        top,
        vec![
            "apiVersion",
            "kind",
            "clusters",
            "contexts",
            "current-context",
            "preferences",
            "users"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_kube_discovery_and_not_found() {
    let kube = FakeKube::start(KubeAuth::None).await;
    let client = kube.client();
    let (status, body) = kube_get(&client, &format!("{}/version", kube.url)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["major"], "1");
    let (_, body) = kube_get(&client, &format!("{}/api", kube.url)).await;
    assert_eq!(body["kind"], "APIVersions");
    assert_eq!(body["versions"], serde_json::json!(["v1"]));
    let (_, body) = kube_get(&client, &format!("{}/apis", kube.url)).await;
    assert_eq!(body["kind"], "APIGroupList");
    let groups: Vec<&str> = body["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(groups, vec!["apps", "batch", "authorization.k8s.io"]);
    for (gv, resources) in [
        ("api/v1", vec!["namespaces", "pods"]),
        (
            "apis/apps/v1",
            vec![
                "deployments",
                "statefulsets",
                "daemonsets",
                "replicasets",
                "controllerrevisions",
            ],
        ),
        ("apis/batch/v1", vec!["jobs", "cronjobs"]),
    ] {
        let (status, body) = kube_get(&client, &format!("{}/{gv}", kube.url)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["kind"], "APIResourceList");
        let names: Vec<&str> = body["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, resources, "{gv}");
    }
    // Every kind's collection paths answer its list.
    for kind in Kind::ALL {
        for ns in [None, Some("prod")] {
            let (status, body) = kube_get(&client, &format!("{}{}", kube.url, kind.path(ns))).await;
            assert_eq!(status, StatusCode::OK, "{kind:?}");
            assert_eq!(body["kind"], format!("{}List", kind.name()));
            assert_eq!(body["apiVersion"], kind.api_version());
        }
    }
    for path in [
        "/apis/apps/v1/pods",
        "/api/v1/deployments",
        "/apis/extensions/v1beta1/deployments",
        "/apis/apps/v1/namespaces/prod/deployments/web/scale/x",
        "/healthz/nope",
        "/",
    ] {
        let (status, body) = kube_get(&client, &format!("{}{path}", kube.url)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_status(&body, 404, "NotFound");
        assert_eq!(
            body["message"],
            "the server could not find the requested resource"
        );
    }
    // A missing object names itself.
    let (status, body) = kube_get(
        &client,
        &format!("{}/apis/apps/v1/namespaces/prod/deployments/web", kube.url),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["message"], "deployments.apps \"web\" not found");
    // Writes are not served.
    let resp = client
        .delete(format!("{}/api/v1/namespaces/prod/pods", kube.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    // Watches and selectors are refused rather than answered wrongly.
    for q in [
        "watch=true",
        "labelSelector=app%3Dweb",
        "fieldSelector=status.phase%3DRunning",
    ] {
        let (status, _) = kube_get(&client, &format!("{}/api/v1/pods?{q}", kube.url)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{q}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_kube_objects_look_like_the_api_server_s() {
    let kube = FakeKube::start(KubeAuth::None).await;
    let client = kube.client();
    let nginx_id = "docker.io/library/nginx@sha256:aaaa";
    kube.add(
        Kind::Pod,
        pod_with(
            "prod",
            "web-1",
            &[(
                "init",
                "busybox:1.36",
                "docker.io/library/busybox@sha256:bbbb",
            )],
            &[
                ("app", "nginx:1.25", nginx_id),
                ("sidecar", "ghcr.io/acme/proxy", ""),
            ],
            &[(
                "debugger",
                "busybox",
                "docker.io/library/busybox@sha256:cccc",
            )],
        ),
    );
    let (status, p) = kube_get(
        &client,
        &format!("{}/api/v1/namespaces/prod/pods/web-1", kube.url),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // A single object has its kind; the server set resourceVersion.
    assert_eq!(p["kind"], "Pod");
    assert_eq!(p["apiVersion"], "v1");
    assert!(p["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse::<u64>()
        .is_ok());
    assert_eq!(p["spec"]["containers"][0]["image"], "nginx:1.25");
    assert_eq!(p["spec"]["containers"][1]["imagePullPolicy"], "Always");
    assert_eq!(p["spec"]["initContainers"][0]["image"], "busybox:1.36");
    assert_eq!(p["spec"]["ephemeralContainers"][0]["image"], "busybox");
    let cs = &p["status"]["containerStatuses"];
    assert_eq!(cs[0]["image"], "docker.io/library/nginx:1.25");
    assert_eq!(cs[0]["imageID"], nginx_id);
    assert_eq!(cs[0]["ready"], true);
    assert_eq!(cs[1]["imageID"], "");
    assert_eq!(cs[1]["ready"], false);
    assert!(cs[1]["state"]["waiting"].is_object());
    assert_eq!(p["status"]["phase"], "Pending");
    assert_eq!(
        p["status"]["initContainerStatuses"][0]["imageID"],
        "docker.io/library/busybox@sha256:bbbb"
    );
    assert_eq!(
        p["status"]["ephemeralContainerStatuses"][0]["image"],
        "docker.io/library/busybox:latest"
    );
    // Docker reports the image as written.
    let d = pod(
        "prod",
        "old",
        &[("app", "nginx:1.25", "docker-pullable://nginx@sha256:dddd")],
    );
    assert_eq!(d["status"]["containerStatuses"][0]["image"], "nginx:1.25");
    assert_eq!(d["status"]["phase"], "Running");

    let images = [("app", "registry.example.com/team/app:2.0")];
    let path = |kind: Kind| -> Vec<&'static str> {
        match kind {
            Kind::CronJob => vec![
                "spec",
                "jobTemplate",
                "spec",
                "template",
                "spec",
                "containers",
            ],
            Kind::ControllerRevision => vec!["data", "spec", "template", "spec", "containers"],
            Kind::Pod => vec!["spec", "containers"],
            _ => vec!["spec", "template", "spec", "containers"],
        }
    };
    for kind in Kind::ALL {
        let o = workload(kind, "prod", "app", &images);
        assert_eq!(o["kind"], kind.name());
        assert_eq!(o["apiVersion"], kind.api_version());
        let mut c = &o;
        for seg in path(kind) {
            c = &c[seg];
        }
        assert_eq!(c[0]["image"], images[0].1, "{kind:?}: {o}");
        assert_eq!(c[0]["name"], "app", "{kind:?}");
        kube.add(kind, o);
    }
    let rev = workload(Kind::ControllerRevision, "prod", "db", &images);
    assert_eq!(rev["data"]["spec"]["template"]["$patch"], "replace");
    // Added objects come back through their collections.
    for kind in Kind::ALL {
        let (_, body) =
            kube_get(&client, &format!("{}{}", kube.url, kind.path(Some("prod")))).await;
        let names: Vec<&str> = body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"app"), "{kind:?}: {names:?}");
    }
    // The namespace exists.
    let (status, body) = kube_get(&client, &format!("{}/api/v1/namespaces/prod", kube.url)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"]["phase"], "Active");
}
