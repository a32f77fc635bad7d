//! Issue 25, part 4: retention that knows ArgoCD (the fake API server serving Applications
//! and ImageUpdaters) and a GitOps repository's history (a git repository the test makes).

use super::cluster::six_releases;
use super::*;

const UPDATER: &str = "argocd-image-updater.argoproj.io";

/// A plan whose retention would delete v1.0.0 … v1.0.4 of `team/api`, with `in_use`.
fn argo_plan(dir: &std::path::Path, host: &str, in_use: &str) -> String {
    plan(
        dir,
        &format!(
            "version = 1\n[registry.\"{host}\"]\ninsecure = true\n[[retain]]\nrepository = \"{host}/team/api\"\ndelete_tags = ['^v1\\.0\\.[0-4]$']\n[in_use]\n{in_use}"
        ),
    )
    .to_str()
    .unwrap()
    .to_string()
}

/// [`argo_plan`] with `kube` as its one `argocd` source (its kubeconfig written in `dir`).
fn kube_argo_plan(dir: &std::path::Path, host: &str, kube: &FakeKube) -> String {
    let config = dir.join("kubeconfig");
    kube.write_kubeconfig(&config, "prod-eu");
    let source = format!("argocd = [{{ kubeconfig = \"{}\" }}]\n", config.display());
    argo_plan(dir, host, &source)
}

/// ArgoCD in namespace `argocd`: Application `api` runs v1.0.1 and its v0.x annotations
/// track `team/api` with `~1.0` and allow-tags up to v1.0.3; 520 other Applications (so
/// the list takes two pages); Application `web` (on the second page) runs nothing of
/// `team/api`, and a v1.x ImageUpdater tracks `team/api` for it, allowing up to v1.0.2.
fn argo(kube: &FakeKube, host: &str) {
    let image_list = format!("api={host}/team/api:~1.0");
    kube.add(
        Kind::Application,
        application(
            "argocd",
            "api",
            &[
                &format!("{host}/team/api:v1.0.1"),
                "docker.io/library/redis:7",
            ],
            &[
                (&format!("{UPDATER}/image-list"), &image_list),
                (&format!("{UPDATER}/api.update-strategy"), "semver"),
                (
                    &format!("{UPDATER}/api.allow-tags"),
                    r"regexp:^v1\.0\.[0-3]$",
                ),
            ],
        ),
    );
    for i in 0..520 {
        kube.add(
            Kind::Application,
            application("argocd", &format!("filler-{i:03}"), &[], &[]),
        );
    }
    kube.add(Kind::Application, application("argocd", "web", &[], &[]));
    kube.add(
        Kind::ImageUpdater,
        image_updater(
            "argocd",
            "web",
            serde_json::json!({
                "namespace": "argocd",
                "commonUpdateSettings": {"updateStrategy": "semver"},
                "applicationRefs": [{
                    "namePattern": "w*",
                    "images": [{
                        "alias": "api",
                        "imageName": format!("{host}/team/api:1.x"),
                        "commonUpdateSettings": {"allowTags": r"regexp:^v1\.0\.[0-2]$"},
                    }],
                }],
            }),
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deployed_image_and_the_updaters_next_picks_are_kept_with_reasons() {
    let reg = Registry::start().await;
    let imgs = six_releases(&reg).await;
    let kube = FakeKube::start(KubeAuth::Token("kube-canary-token".into())).await;
    argo(&kube, &reg.addr);
    let dir = tempfile::tempdir().unwrap();
    let p = kube_argo_plan(dir.path(), &reg.addr, &kube);

    let checked = ferry(&["check", "--online", &p], &[]).await;
    assert_eq!(checked.code, 0, "{}", checked.stdout);
    assert!(
        checked
            .stdout
            .contains("2 images deployed, 2 tracked by the Image Updater"),
        "{}",
        checked.stdout
    );
    let shown = ferry(&["plan", &p], &[]).await;
    shown.assert_code(0);
    for reason in [
        "kept: in use by ArgoCD application argocd/api",
        "kept: next ArgoCD Image Updater pick for argocd/api",
        "kept: next ArgoCD Image Updater pick for argocd/web",
    ] {
        assert!(shown.stdout.contains(reason), "{reason}\n{}", shown.stdout);
    }
    assert!(!shown.stdout.contains("kube-canary-token"));

    let report = dir.path().join("report.json");
    let run = ferry(&["run", "--report", report.to_str().unwrap(), &p], &[]).await;
    run.assert_code(0);
    let pusher = reg.pusher();
    for tag in ["v1.0.0", "v1.0.4"] {
        assert!(
            pusher.manifest("team/api", tag).await.is_none(),
            "{tag} kept"
        );
    }
    for i in [1, 2, 3, 5] {
        let tag = format!("v1.0.{i}");
        let (_, _, d) = pusher.manifest("team/api", &tag).await.expect(&tag);
        assert_eq!(d, imgs[i].digest);
    }
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["totals"]["kept_in_use"], 3, "{r}");
    assert_eq!(r["totals"]["deleted"], 2, "{r}");
    // Applications were read in pages of at most 500, and ImageUpdaters listed too.
    let listed: Vec<String> = kube.requests().into_iter().map(|(_, p, _)| p).collect();
    let apps = "/apis/argoproj.io/v1alpha1/namespaces/argocd/applications?";
    assert!(
        listed
            .iter()
            .any(|p| p.starts_with(apps) && p.contains("continue=")),
        "{listed:?}"
    );
    let updaters =
        "/apis/argocd-image-updater.argoproj.io/v1alpha1/namespaces/argocd/imageupdaters?";
    assert!(listed.iter().any(|p| p.starts_with(updaters)), "{listed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_403_on_applications_holds_every_deletion() {
    let reg = Registry::start().await;
    six_releases(&reg).await;
    let kube = FakeKube::start(KubeAuth::Token("t".into())).await;
    argo(&kube, &reg.addr);
    kube.forbid(Kind::Application);
    let dir = tempfile::tempdir().unwrap();
    let p = kube_argo_plan(dir.path(), &reg.addr, &kube);
    assert_held(
        &p,
        &[],
        "in use: in_use.argocd (plan line 8): listing applications: 403 Forbidden: the account needs `list` on applications (API group argoproj.io)",
    )
    .await;
    assert_nothing_deleted(&reg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_image_updater_crd_applications_still_count() {
    let reg = Registry::start().await;
    six_releases(&reg).await;
    let kube = FakeKube::start(KubeAuth::Token("t".into())).await;
    argo(&kube, &reg.addr);
    // The v0.x updater (annotations only) installs no ImageUpdater resource type: 404.
    kube.uninstall(Kind::ImageUpdater);
    let dir = tempfile::tempdir().unwrap();
    let p = kube_argo_plan(dir.path(), &reg.addr, &kube);
    let run = ferry(&["run", &p], &[]).await;
    run.assert_code(0);
    let pusher = reg.pusher();
    // v1.0.2 was only the v1.x resource's pick: deleted with v1.0.0 and v1.0.4.
    for tag in ["v1.0.0", "v1.0.2", "v1.0.4"] {
        assert!(
            pusher.manifest("team/api", tag).await.is_none(),
            "{tag} kept"
        );
    }
    for tag in ["v1.0.1", "v1.0.3", "v1.0.5"] {
        assert!(
            pusher.manifest("team/api", tag).await.is_some(),
            "{tag} deleted"
        );
    }
}

/// `git` in `dir` with a fixed author, committer and date.
fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "ferry test")
        .env("GIT_AUTHOR_EMAIL", "test@example.invalid")
        .env("GIT_COMMITTER_NAME", "ferry test")
        .env("GIT_COMMITTER_EMAIL", "test@example.invalid")
        .env("GIT_AUTHOR_DATE", "2024-05-01T10:00:00Z")
        .env("GIT_COMMITTER_DATE", "2024-05-01T10:00:00Z")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_referenced_three_commits_ago_is_kept() {
    let reg = Registry::start().await;
    six_releases(&reg).await;
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("gitops-repo");
    std::fs::create_dir_all(repo.join("apps")).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    // Oldest first: v1.0.3 four commits before HEAD (beyond `revisions`), then v1.0.0 three
    // commits ago, v1.0.1, v1.0.2, and v1.0.5 at HEAD.
    for tag in ["v1.0.3", "v1.0.0", "v1.0.1", "v1.0.2", "v1.0.5"] {
        std::fs::write(
            repo.join("apps/api.yaml"),
            format!("image: {}/team/api:{tag}\n", reg.addr),
        )
        .unwrap();
        std::fs::write(
            repo.join("README.md"),
            format!("{}/team/api:v1.0.4\n", reg.addr),
        )
        .unwrap();
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-q", "-m", tag]);
    }
    let three_ago = git(&repo, &["rev-parse", "--short=7", "HEAD~3"]);
    let p = argo_plan(
        dir.path(),
        &reg.addr,
        &format!(
            "git = [{{ path = \"{}\", files = [\"apps/**/*.yaml\"], revisions = 4 }}]\n",
            repo.display()
        ),
    );
    let shown = ferry(&["plan", &p], &[]).await;
    shown.assert_code(0);
    let reason = format!(
        "kept: referenced in apps/api.yaml at {}, 3 commits ago",
        three_ago.trim()
    );
    assert!(shown.stdout.contains(&reason), "{reason}\n{}", shown.stdout);
    let run = ferry(&["run", &p], &[]).await;
    run.assert_code(0);
    let pusher = reg.pusher();
    for tag in ["v1.0.3", "v1.0.4"] {
        assert!(
            pusher.manifest("team/api", tag).await.is_none(),
            "{tag} kept"
        );
    }
    for tag in ["v1.0.0", "v1.0.1", "v1.0.2", "v1.0.5"] {
        assert!(
            pusher.manifest("team/api", tag).await.is_some(),
            "{tag} deleted"
        );
    }

    // A pattern that matches nothing at HEAD fails closed.
    let p = argo_plan(
        dir.path(),
        &reg.addr,
        &format!(
            "git = [{{ path = \"{}\", files = [\"deploy/*.yaml\"] }}]\n",
            repo.display()
        ),
    );
    let run = ferry(&["run", &p], &[]).await;
    run.assert_code(1);
    assert!(
        run.stderr
            .contains("in use: in_use.git (plan line 8): files[0] matches no file at HEAD"),
        "{}",
        run.stderr
    );
    for tag in ["v1.0.0", "v1.0.1", "v1.0.2", "v1.0.5"] {
        assert!(
            pusher.manifest("team/api", tag).await.is_some(),
            "{tag} deleted"
        );
    }
}
