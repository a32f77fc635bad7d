//! In-use protection from a Kubernetes cluster (the fake API server): what runs, names or can
//! roll back is kept; refusals and expired lists fail closed.

use super::*;

pub(super) async fn six_releases(reg: &Registry) -> Vec<Image> {
    let mut out = Vec::new();
    for i in 0..6u64 {
        let tag = format!("v1.0.{i}");
        let img = image(
            &[layer(1500 + i, 2048)],
            "linux",
            "amd64",
            Format::Oci,
            &tag,
        );
        reg.pusher().push("team/api", &tag, &img).await;
        out.push(img);
    }
    out
}

pub(super) fn cluster_plan(dir: &std::path::Path, host: &str, source: &str, extra: &str) -> String {
    plan(
        dir,
        &format!(
            "version = 1\n[registry.\"{host}\"]\ninsecure = true\n[[retain]]\nrepository = \"{host}/team/api\"\ndelete_tags = ['^v1\\.0\\.[0-4]$']\n[in_use]\nkubernetes = [{source}]\n{extra}"
        ),
    )
    .to_str()
    .unwrap()
    .to_string()
}

/// [`cluster_plan`] with a kubeconfig for `kube` (its current context `context`).
pub(super) fn kubeconfig_plan(
    dir: &std::path::Path,
    host: &str,
    kube: &FakeKube,
    context: &str,
) -> String {
    let config = dir.join("kubeconfig");
    kube.write_kubeconfig(&config, context);
    cluster_plan(
        dir,
        host,
        &format!("{{ kubeconfig = \"{}\" }}", config.display()),
        "",
    )
}

/// Pod `prod/api-7d9f8` running `repo@digest`; its spec names `repo:stable`, a tag that has
/// moved on.
pub(super) fn running_pod(kube: &FakeKube, repo: &str, digest: &str) {
    let (spec, running) = (format!("{repo}:stable"), format!("{repo}@{digest}"));
    kube.add(
        Kind::Pod,
        pod("prod", "api-7d9f8", &[("api", &spec, &running)]),
    );
}

/// A cluster that runs v1.0.0 by digest (its spec names a tag that has moved on), a
/// Deployment naming v1.0.1, a ReplicaSet of its rollback history naming v1.0.2, and a
/// StatefulSet revision naming v1.0.5 (kept anyway).
pub(super) fn populate(kube: &FakeKube, host: &str, imgs: &[Image]) {
    running_pod(kube, &format!("{host}/team/api"), &imgs[0].digest);
    kube.add(
        Kind::Deployment,
        workload(
            Kind::Deployment,
            "prod",
            "api",
            &[("api", &format!("{host}/team/api:v1.0.1"))],
        ),
    );
    kube.add(
        Kind::ReplicaSet,
        workload(
            Kind::ReplicaSet,
            "prod",
            "api-5f6c",
            &[("api", &format!("{host}/team/api:v1.0.2"))],
        ),
    );
    kube.add(
        Kind::ControllerRevision,
        workload(
            Kind::ControllerRevision,
            "prod",
            "db-1",
            &[("db", &format!("{host}/team/api:v1.0.5"))],
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_cluster_runs_names_or_can_roll_back_to_is_kept_and_says_why() {
    let reg = Registry::start().await;
    let imgs = six_releases(&reg).await;
    let kube = FakeKube::start(KubeAuth::Token("kube-canary-token".into())).await;
    populate(&kube, &reg.addr, &imgs);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kubeconfig");
    kube.write_kubeconfig(&config, "prod-eu");
    std::fs::write(
        dir.path().join("api.yaml"),
        format!("image: {}/team/api:v1.0.3\n", reg.addr),
    )
    .unwrap();
    let p = cluster_plan(
        dir.path(),
        &reg.addr,
        &format!(
            "{{ kubeconfig = \"{}\", context = \"prod-eu\" }}",
            config.display()
        ),
        &format!("files = [\"{}/api.yaml\"]\n", dir.path().display()),
    );

    let checked = ferry(&["check", "--online", &p], &[]).await;
    assert_eq!(checked.code, 0, "{}", checked.stdout);
    assert!(
        checked.stdout.contains("list replicasets"),
        "{}",
        checked.stdout
    );

    let shown = ferry(&["plan", &p], &[]).await;
    shown.assert_code(0);
    for reason in [
        "kept: in use by pod prod/api-7d9f8 (container api, running), cluster prod-eu",
        "kept: in use by deployment prod/api (container api), cluster prod-eu",
        "kept: in use by replicaset prod/api-5f6c (container api), cluster prod-eu",
        "kept: referenced in",
    ] {
        assert!(shown.stdout.contains(reason), "{reason}\n{}", shown.stdout);
    }
    assert!(!shown.stdout.contains("kube-canary-token"));

    let report = dir.path().join("report.json");
    let run = ferry(&["run", "--report", report.to_str().unwrap(), &p], &[]).await;
    run.assert_code(0);
    assert!(!run.stderr.contains("kube-canary-token"));
    let pusher = reg.pusher();
    assert!(
        pusher.manifest("team/api", "v1.0.4").await.is_none(),
        "v1.0.4 is deleted"
    );
    for (i, img) in imgs.iter().enumerate().take(4) {
        let tag = format!("v1.0.{i}");
        let (_, _, d) = pusher.manifest("team/api", &tag).await.expect(&tag);
        assert_eq!(d, img.digest);
    }
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["totals"]["kept_in_use"], 4, "{r}");
    // Every kind was listed, page by page, with the token.
    let listed: Vec<String> = kube
        .requests()
        .into_iter()
        .map(|(_, path, _)| path)
        .collect();
    for kind in [
        "pods",
        "deployments",
        "statefulsets",
        "daemonsets",
        "replicasets",
        "controllerrevisions",
        "jobs",
        "cronjobs",
    ] {
        assert!(
            listed.iter().any(|p| p.contains(&format!("/{kind}?"))),
            "{kind}: {listed:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_403_on_replicasets_deletes_nothing_and_names_the_permission() {
    let reg = Registry::start().await;
    let imgs = six_releases(&reg).await;
    let kube = FakeKube::start(KubeAuth::Token("t".into())).await;
    populate(&kube, &reg.addr, &imgs);
    kube.forbid(Kind::ReplicaSet);
    let dir = tempfile::tempdir().unwrap();
    let p = kubeconfig_plan(dir.path(), &reg.addr, &kube, "prod-eu");
    let checked = ferry(&["check", "--online", &p], &[]).await;
    assert_ne!(checked.code, 0);
    assert!(
        checked
            .stdout
            .contains("the account needs `list` on replicasets (API group apps)"),
        "{}",
        checked.stdout
    );
    let run = ferry(&["run", &p], &[]).await;
    run.assert_code(1);
    assert!(
        run.stderr.contains("listing replicasets: 403 Forbidden: the account needs `list` on replicasets (API group apps)"),
        "{}",
        run.stderr
    );
    assert_nothing_deleted(&reg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_kubectl_proxy_and_the_in_cluster_account_all_work() {
    let reg = Registry::start().await;
    let imgs = six_releases(&reg).await;
    for auth in ["cert", "proxy", "in-cluster"] {
        let kube = FakeKube::start(match auth {
            "cert" => KubeAuth::ClientCert,
            "proxy" => KubeAuth::None,
            _ => KubeAuth::Token("sa-token".into()),
        })
        .await;
        populate(&kube, &reg.addr, &imgs);
        let dir = tempfile::tempdir().unwrap();
        let mut env: Vec<(String, String)> = Vec::new();
        let source = if auth == "in-cluster" {
            let sa = dir.path().join("serviceaccount");
            std::fs::create_dir_all(&sa).unwrap();
            std::fs::write(sa.join("token"), "sa-token").unwrap();
            std::fs::write(sa.join("ca.crt"), kube.ca_pem()).unwrap();
            let port = kube.url.rsplit(':').next().unwrap().to_string();
            env.push(("KUBERNETES_SERVICE_HOST".into(), "127.0.0.1".into()));
            env.push(("KUBERNETES_SERVICE_PORT".into(), port));
            env.push(("FERRY_SERVICE_ACCOUNT_DIR".into(), sa.display().to_string()));
            "{ in_cluster = true }".to_string()
        } else {
            let config = dir.path().join("kubeconfig");
            kube.write_kubeconfig(&config, "c");
            format!("{{ kubeconfig = \"{}\" }}", config.display())
        };
        let p = cluster_plan(dir.path(), &reg.addr, &source, "");
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let shown = ferry(&["plan", &p], &env).await;
        assert_eq!(shown.code, 0, "{auth}: {}\n{}", shown.stdout, shown.stderr);
        // The cluster by the name its kubeconfig gives its current context (issue 21, item
        // 6), or `in-cluster`: a pod cannot learn its cluster's name.
        let cluster = if auth == "in-cluster" {
            "in-cluster"
        } else {
            "c"
        };
        let reason = format!(
            "kept: in use by pod prod/api-7d9f8 (container api, running), cluster {cluster}"
        );
        assert!(
            shown.stdout.contains(&reason),
            "{auth}: {reason}\n{}",
            shown.stdout
        );
    }
}

/// Issue 21, item 6: an `[in_use]` kubeconfig without `context` names the cluster by its
/// current context, in `ferry plan` (text and JSON) and in the report, not as "the
/// kubeconfig's current context".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubeconfig_without_a_context_names_its_current_context() {
    let reg = Registry::start().await;
    let imgs = releases(&reg).await;
    let kube = FakeKube::start(KubeAuth::Token("kube-canary-token".into())).await;
    // The mirror's v1.0.0 runs (its spec names a tag that has moved on).
    running_pod(&kube, &format!("{}/mirror/api", reg.addr), &imgs[0].digest);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kubeconfig");
    kube.write_kubeconfig(&config, "prod-eu");
    let host = &reg.addr;
    let in_use = format!(
        "[in_use]\nkubernetes = [{{ kubeconfig = \"{}\" }}]\n",
        config.display()
    );
    // First every release is mirrored; then the rule keeps only v1.0.2 and prunes the rest.
    let mirror = |tags: &str| {
        format!(
            "version = 1\n[registry.\"{host}\"]\ninsecure = true\n[[copy]]\nfrom = \"{host}/team/api\"\nto = \"{host}/mirror/api\"\n{tags}\n{in_use}"
        )
    };
    let p = plan(dir.path(), &mirror("")).display().to_string();
    ferry(&["run", &p], &[]).await.assert_code(0);
    plan(
        dir.path(),
        &mirror("tags = { include = ['^v1\\.0\\.2$'] }\nprune = true"),
    );

    // The tag is pruned; the image it names stays, and says why.
    let why = "in use by pod prod/api-7d9f8 (container api, running), cluster prod-eu";
    let shown = ferry(&["plan", &p], &[]).await;
    shown.assert_code(0);
    assert!(shown.stdout.contains(why), "{}", shown.stdout);
    assert!(
        !shown.stdout.contains("current context"),
        "{}",
        shown.stdout
    );
    let json = ferry(&["plan", &p, "--output", "json"], &[]).await;
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let planned = v["prune"][0]["repositories"][0]["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["digest"] == imgs[0].digest.as_str())
        .expect("v1.0.0 among the plan's prune decisions");
    assert!(planned["reason"].as_str().unwrap().contains(why), "{v}");

    let report = dir.path().join("report.json");
    let run = ferry(&["run", "--report", report.to_str().unwrap(), &p], &[]).await;
    run.assert_code(0);
    assert!(!run.stderr.contains("kube-canary-token"));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let reported = r["prune"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["digest"] == imgs[0].digest.as_str())
        .expect("v1.0.0 among the report's prune decisions");
    assert_eq!(reported["reason"], planned["reason"], "{r}");
    let pusher = reg.pusher();
    assert!(pusher
        .manifest("mirror/api", &imgs[0].digest)
        .await
        .is_some());
    assert!(pusher.manifest("mirror/api", "v1.0.1").await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_pods_are_read_in_pages() {
    let reg = Registry::start().await;
    let imgs = six_releases(&reg).await;
    let kube = FakeKube::start(KubeAuth::None).await;
    for n in 0..10_000 {
        kube.add(
            Kind::Pod,
            pod(
                &format!("ns{}", n % 50),
                &format!("web-{n:05}"),
                &[("web", "docker.io/library/nginx:1.27", "")],
            ),
        );
    }
    kube.add(
        Kind::Pod,
        pod(
            "zz",
            "api",
            &[("api", &format!("{}/team/api:v1.0.2", reg.addr), "")],
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let p = kubeconfig_plan(dir.path(), &reg.addr, &kube, "big");
    let out = tokio::process::Command::new("/usr/bin/time")
        .args(["-f", "RSS %M", env!("CARGO_BIN_EXE_ferry"), "plan", &p])
        .env("HOME", dir.path())
        .env("FERRY_STATE", dir.path().join("ferry.db"))
        .output()
        .await
        .expect("/usr/bin/time");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("kept: in use by pod zz/api"), "{stdout}");
    let pages = kube
        .requests()
        .iter()
        .filter(|(_, path, _)| path.starts_with("/api/v1/pods"))
        .count();
    assert!(pages >= 20, "{pages} pod list requests");
    let rss: u64 = stderr
        .lines()
        .rfind(|l| l.starts_with("RSS "))
        .and_then(|l| l[4..].trim().parse().ok())
        .expect("RSS line");
    println!(
        "ferry plan over 10,000 pods: {pages} pod list requests, peak RSS {} MiB",
        rss / 1024
    );
    assert!(
        rss / 1024 <= 96,
        "peak RSS {} MiB reading 10,000 pods",
        rss / 1024
    );
    let _ = imgs;
}

/// The six releases, and a cluster whose 1,200 pods take three pages to list (what
/// `populate` adds runs the kept ones); the plan that reads it through a kubeconfig.
pub(super) async fn paged_cluster() -> (Registry, FakeKube, tempfile::TempDir, String) {
    let reg = Registry::start().await;
    let imgs = six_releases(&reg).await;
    let kube = FakeKube::start(KubeAuth::Token("t".into())).await;
    for n in 0..1_200 {
        kube.add(
            Kind::Pod,
            pod("web", &format!("web-{n:04}"), &[("web", "nginx:1.27", "")]),
        );
    }
    populate(&kube, &reg.addr, &imgs);
    let dir = tempfile::tempdir().unwrap();
    let p = kubeconfig_plan(dir.path(), &reg.addr, &kube, "c");
    (reg, kube, dir, p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_list_is_read_again_once_and_a_refused_account_fails_closed() {
    let (reg, kube, _dir, p) = paged_cluster().await;
    // The pods list expires at its second page: it is read again from the start.
    kube.expire_at_continue(1);
    let shown = ferry(&["plan", &p], &[]).await;
    assert_eq!(shown.code, 0, "{}\n{}", shown.stdout, shown.stderr);
    assert!(
        shown.stdout.contains("kept: in use by pod prod/api-7d9f8"),
        "{}",
        shown.stdout
    );
    let firsts = kube
        .requests()
        .iter()
        .filter(|(_, path, _)| path.starts_with("/api/v1/pods") && !path.contains("continue="))
        .count();
    assert_eq!(firsts, 2, "the pods list started twice");
    // A cluster that refuses the credentials.
    kube.unauthorized();
    let run = ferry(&["run", &p], &[]).await;
    run.assert_code(1);
    assert!(
        run.stderr
            .contains("listing pods: 401 Unauthorized: the cluster refused the credentials"),
        "{}",
        run.stderr
    );
    assert_nothing_deleted(&reg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_that_expires_again_after_its_restart_fails_closed() {
    let (reg, kube, _dir, p) = paged_cluster().await;
    // The pods list expires at its second page, and again at the second page of its restart.
    kube.expire_at_continue(1);
    kube.expire_at_continue(2);
    let run = ferry(&["run", &p], &[]).await;
    run.assert_code(1);
    assert!(
        run.stderr.contains(
            "listing pods: the list changed too fast to be read whole (410 Expired twice)"
        ),
        "{}",
        run.stderr
    );
    assert_nothing_deleted(&reg).await;
}
