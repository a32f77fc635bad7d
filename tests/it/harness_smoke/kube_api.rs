//! The Kubernetes fake's credentials, kubeconfigs, discovery documents and objects, against
//! what kube-apiserver does.

use super::*;

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
    assert_eq!(
        groups,
        vec![
            "apps",
            "batch",
            "authorization.k8s.io",
            "argoproj.io",
            "argocd-image-updater.argoproj.io"
        ]
    );
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
