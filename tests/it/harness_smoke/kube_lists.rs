//! The Kubernetes fake's collections: every object once across pages, ten thousand Pods,
//! RBAC refusals as a 403 `Status`, an expired continue token as 410.

use super::*;

/// GET `url` with `client`: (status, JSON body).
pub(super) async fn kube_get(
    client: &reqwest::Client,
    url: &str,
) -> (StatusCode, serde_json::Value) {
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
pub(super) async fn kube_list_all(
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

pub(super) fn assert_status(body: &serde_json::Value, code: u16, reason: &str) {
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
