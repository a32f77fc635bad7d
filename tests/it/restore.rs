//! Undo (issue 22, "Undo: `ferry restore PLAN`"): after a retention run on a real registry,
//! `ferry restore` puts back every deleted tag with its digest (children and signatures
//! included), a second restore writes nothing, `--dry-run` writes nothing, `--tag` narrows,
//! and after the registry's garbage collection each image whose blobs are gone is reported
//! and the rest come back. On GHCR, through the Packages API's restore endpoint.

use std::time::Duration;

use crate::common::*;
use crate::harness::*;

const REPO: &str = "team/app";

/// What retention keeps and deletes in [`scene`].
struct Scene {
    /// (tag, image) kept: releases, one a signed multi-arch index.
    kept: Vec<(String, Image)>,
    /// (tag, image) deleted: PR builds, a signature, an index.
    deleted: Vec<(String, Image)>,
    /// pr-4's own child (untagged), deleted with it.
    pr4_arm: Image,
    /// The child pr-4 shares with v1.1.0: kept.
    shared: Image,
    /// pr-9: v1.0.0's twin in Docker format, naming only blobs v1.0.0 names (so garbage
    /// collection leaves them).
    twin: Image,
}

/// team/app: v1.0.0, v1.1.0 (an index, signed); pr-1, pr-2 (signed), pr-4 (an index sharing a
/// child with v1.1.0), pr-9 (a twin of v1.0.0).
async fn scene(p: &Pusher, repo: &str) -> Scene {
    let Releases {
        v100,
        amd,
        v110,
        v110_sig: (v110_sig_tag, v110_sig),
        pr1,
        pr2,
        pr2_sig: (pr2_sig_tag, pr2_sig),
        pr4_arm,
        pr4,
    } = releases(repo);
    let twin = release_image("v1.0.0", 10, Format::Docker);
    assert_ne!(twin.digest, v100.digest);
    let kept = vec![
        ("v1.0.0".to_string(), v100),
        ("v1.1.0".to_string(), v110),
        (v110_sig_tag, v110_sig),
    ];
    let deleted = vec![
        ("pr-1".to_string(), pr1),
        ("pr-2".to_string(), pr2),
        (pr2_sig_tag, pr2_sig),
        ("pr-4".to_string(), pr4),
        ("pr-9".to_string(), twin.clone()),
    ];
    for (tag, img) in kept.iter().chain(&deleted) {
        p.push(repo, tag, img).await;
    }
    Scene {
        kept,
        deleted,
        pr4_arm,
        shared: amd,
        twin,
    }
}

const RULE: &str = r#"keep_tags = ['^v\d+\.\d+\.\d+$']
delete_tags = ['^pr-\d+$']"#;

fn retain_plan(dir: &std::path::Path, host: &str) -> String {
    let text = format!(
        "version = 1\n[registry.\"{host}\"]\ninsecure = true\n[[retain]]\nrepository = \"{host}/{REPO}\"\n{RULE}\n"
    );
    plan(dir, &text).to_str().unwrap().to_string()
}

/// The tag reads back, through skopeo, as exactly these bytes.
async fn assert_back(reg: &Registry, tag: &str, img: &Image) {
    let raw = skopeo_inspect_raw(&format!("docker://{}/{REPO}:{tag}", reg.addr), None).await;
    assert_eq!(raw, img.bytes, "{tag}");
}

async fn puts(reg: &Registry) -> usize {
    reg.sync_log().await;
    reg.count_requests("PUT", "/manifests/")
}

/// The undo command a run's report names, as arguments to ferry.
fn undo_args(report: &serde_json::Value) -> Vec<String> {
    let line = report["restore"]
        .as_str()
        .expect("the report says how to undo");
    let words: Vec<String> = line.split(' ').map(str::to_string).collect();
    assert_eq!(words[..2], ["ferry", "restore"], "{line}");
    words[1..].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_puts_back_every_deleted_tag_with_its_children_and_signatures() {
    let reg = Registry::start().await;
    let pusher = reg.pusher();
    let s = scene(&pusher, REPO).await;
    let dir = tempfile::tempdir().unwrap();
    let p = retain_plan(dir.path(), &reg.addr);
    let report = dir.path().join("report.json");
    let run = ferry(&["run", "--report", report.to_str().unwrap(), &p], &[]).await;
    run.assert_code(0);
    // The run says how to undo it: its report, its closing lines, `ferry status`.
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let state = dir.path().join("ferry.db");
    let expected = format!("ferry restore {p} --run 1 --state {}", state.display());
    assert_eq!(v["restore"], expected.as_str());
    assert!(
        run.stderr
            .contains(&format!("to undo its deletions: {expected}")),
        "{}",
        run.stderr
    );
    let status = ferry(&["status", &p, "--output", "json"], &[]).await;
    assert_eq!(json(&status.stdout)["restore"], expected.as_str());
    for (_, img) in &s.deleted {
        assert!(pusher.manifest(REPO, &img.digest).await.is_none());
    }
    assert!(pusher.manifest(REPO, &s.pr4_arm.digest).await.is_none());

    // A dry run says what it would put back, and writes nothing.
    let before = puts(&reg).await;
    let dry = ferry(&["restore", &p, "--dry-run"], &[]).await;
    dry.assert_code(0);
    assert!(dry.stdout.contains("would restore"), "{}", dry.stdout);
    assert!(
        dry.summary().contains("6 manifests would be put back"),
        "{}",
        dry.summary()
    );
    assert_eq!(puts(&reg).await, before, "a dry run writes nothing");
    assert!(pusher.manifest(REPO, "pr-1").await.is_none());

    // --repository narrows: a repository the run deleted nothing in has nothing to restore.
    let other = ferry(&["restore", &p, "--repository", "team/other"], &[]).await;
    other.assert_code(0);
    assert!(
        other
            .stderr
            .contains("nothing to restore: run 1 deleted nothing that --repository and --tag name"),
        "{}",
        other.stderr
    );
    assert_eq!(puts(&reg).await, before);

    // --tag narrows: pr-4 comes back with its own child, nothing else does.
    let narrow = ferry(&["restore", &p, "--tag", "pr-4"], &[]).await;
    narrow.assert_code(0);
    assert_back(&reg, "pr-4", &s.deleted[3].1).await;
    assert!(pusher.manifest(REPO, &s.pr4_arm.digest).await.is_some());
    assert!(pusher.manifest(REPO, "pr-1").await.is_none());
    assert!(pusher.manifest(REPO, "pr-2").await.is_none());

    // The rest, by the command the report gave.
    let args = undo_args(&v);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let all = ferry(&args, &[]).await;
    all.assert_code(0);
    for (tag, img) in &s.deleted {
        assert_back(&reg, tag, img).await;
    }
    for (tag, img) in &s.kept {
        assert_back(&reg, tag, img).await;
    }
    assert!(pusher.manifest(REPO, &s.shared.digest).await.is_some());
    let mut tags = pusher.tags(REPO).await;
    tags.sort();
    let mut expected: Vec<String> = s
        .kept
        .iter()
        .chain(&s.deleted)
        .map(|(t, _)| t.clone())
        .collect();
    expected.sort();
    assert_eq!(tags, expected);

    // A second restore changes nothing: no PUT reaches the registry.
    let before = puts(&reg).await;
    let again = ferry(&["restore", &p], &[]).await;
    again.assert_code(0);
    assert!(
        again
            .stderr
            .contains("nothing to restore: everything run 1 deleted was put back already"),
        "{}",
        again.stderr
    );
    assert_eq!(puts(&reg).await, before);

    // The next retention run decides afresh: the policy still deletes the PR builds.
    let rerun = ferry(&["run", &p], &[]).await;
    rerun.assert_code(0);
    assert!(
        rerun.summary().contains(", 6 deleted"),
        "{}",
        rerun.summary()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_garbage_collection_each_image_whose_blobs_are_gone_is_named_and_the_rest_come_back()
{
    let reg = Registry::start().await;
    let s = scene(&reg.pusher(), REPO).await;
    let dir = tempfile::tempdir().unwrap();
    let p = retain_plan(dir.path(), &reg.addr);
    ferry(&["run", &p], &[]).await.assert_code(0);
    reg.garbage_collect();

    let out = ferry(&["restore", &p, "--output", "json"], &[]).await;
    out.assert_code(1);
    let v = json(&out.stdout);
    let failures: Vec<&str> = v["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    let at = |img: &Image| format!("cannot restore {}/{REPO}@{}: ", reg.addr, img.digest);
    // pr-1, pr-2 and its signature, and pr-4's own child lost their blobs; pr-4 its child.
    for img in [
        &s.deleted[0].1,
        &s.deleted[1].1,
        &s.deleted[2].1,
        &s.pr4_arm,
    ] {
        let line = failures
            .iter()
            .find(|f| f.starts_with(&at(img)))
            .unwrap_or_else(|| panic!("{} not reported: {failures:?}", img.digest));
        assert!(
            line.contains(": blob sha256:") && line.ends_with(" is gone"),
            "{line}"
        );
    }
    let pr4 = failures
        .iter()
        .find(|f| f.starts_with(&at(&s.deleted[3].1)))
        .unwrap();
    assert!(
        pr4.ends_with(&format!(
            "child manifest {} could not be put back",
            s.pr4_arm.digest
        )),
        "{pr4}"
    );
    assert_eq!(failures.len(), 5, "{failures:?}");
    assert_eq!(v["totals"]["put_back"], 1, "{}", v["totals"]);
    // The twin names only blobs a kept image names: it comes back whole.
    assert_back(&reg, "pr-9", &s.twin).await;
    for (tag, _) in &s.deleted[..4] {
        assert!(reg.pusher().manifest(REPO, tag).await.is_none(), "{tag}");
    }
    // In text, each is said on its own line, and the run exits 1.
    let text = ferry(&["restore", &p], &[]).await;
    text.assert_code(1);
    assert!(
        text.stderr.contains(&at(&s.deleted[0].1)),
        "{}",
        text.stderr
    );
    assert!(
        text.summary().contains("5 cannot be restored"),
        "{}",
        text.summary()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_ghcr_restore_asks_the_packages_api_for_each_version_it_deleted() {
    let reg = Registry::start().await;
    let scopes: &[&str] = &["read:packages", "write:packages", "delete:packages"];
    let cannot_write: &[&str] = &["read:packages", "delete:packages"];
    let github = GitHubFake::start(&[
        ("ghp_restore_1f", "bot", scopes),
        ("ghp_noscope_2a", "bot", cannot_write),
    ])
    .await;
    // GitHub does not say whether a restored version gets its tags back: this one does not,
    // so ferry puts them back itself.
    github.set_restore_tags(false);
    let ghcr = github.registry_front(&reg.url).await;
    let s = scene(&Pusher::new(&ghcr.url, None), "myorg/app").await;
    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n[registry.\"{a}\"]\ninsecure = true\nflavor = \"ghcr\"\napi = \"{api}\"\nauth = {{ username = \"bot\", password_env = \"GHCR_TOKEN\" }}\n[[retain]]\nrepository = \"{a}/myorg/app\"\n{RULE}\n",
            a = ghcr.addr,
            api = github.url
        ),
    );
    let p = p.to_str().unwrap();
    let env = [("GHCR_TOKEN", "ghp_restore_1f")];
    ferry(&["run", p], &env).await.assert_code(0);
    let deleted: Vec<FakeVersion> = github
        .versions(Some("myorg"), "app", true)
        .into_iter()
        .filter(|v| v.deleted)
        .collect();
    assert_eq!(deleted.len(), 6, "{deleted:?}");
    // pr-1 was deleted 31 days ago: GitHub no longer restores it.
    let pr1 = deleted
        .iter()
        .find(|v| v.digest == s.deleted[0].1.digest)
        .unwrap()
        .id;
    github.age_deletion(Some("myorg"), "app", pr1, Duration::from_secs(31 * 86_400));

    // A token that may delete but not write cannot restore: it is told which scope it lacks,
    // before any restore is asked, and nothing is recorded as put back.
    let weak = ferry(&["restore", p], &[("GHCR_TOKEN", "ghp_noscope_2a")]).await;
    weak.assert_code(1);
    assert!(
        weak.stderr.contains(
            "the token lacks the write:packages scope that restoring GHCR package versions needs"
        ),
        "{}",
        weak.stderr
    );
    assert!(!weak.stdout.contains("ghp_noscope") && !weak.stderr.contains("ghp_noscope"));
    assert!(github
        .versions(Some("myorg"), "app", true)
        .iter()
        .all(|v| v.deleted == deleted.iter().any(|d| d.id == v.id)));

    let out = ferry(&["restore", p], &env).await;
    out.assert_code(1);
    assert!(!out.stdout.contains("ghp_restore") && !out.stderr.contains("ghp_restore"));
    let posts: Vec<String> = github
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("POST "))
        .collect();
    for v in &deleted {
        let path = format!(
            "POST /orgs/myorg/packages/container/app/versions/{}/restore",
            v.id
        );
        assert!(
            posts.iter().any(|r| r.starts_with(&path)),
            "{path}: {posts:?}"
        );
    }
    assert_eq!(posts.len(), deleted.len(), "{posts:?}");
    assert!(
        out.stderr.contains(&format!(
            "cannot restore {}/myorg/app@{}: the registry no longer has package version {pr1}",
            ghcr.addr, s.deleted[0].1.digest
        )),
        "{}",
        out.stderr
    );
    // The others are back, as versions and in the registry, with their tags put back.
    let now = github.versions(Some("myorg"), "app", true);
    for v in now.iter().filter(|v| v.id != pr1) {
        assert!(!v.deleted, "{v:?}");
    }
    for (tag, img) in &s.deleted[1..] {
        let (_, bytes, _) = reg.pusher().manifest("myorg/app", tag).await.unwrap();
        assert_eq!(bytes, img.bytes, "{tag}");
        let version = now.iter().find(|v| v.digest == img.digest).unwrap();
        assert!(version.tags.contains(tag), "{version:?}");
    }
    assert!(reg.pusher().manifest("myorg/app", "pr-1").await.is_none());
}

/// The tags of an OCI layout, each with its digest.
fn layout_tags(dir: &std::path::Path) -> std::collections::BTreeMap<String, String> {
    let index = json(&std::fs::read_to_string(dir.join("index.json")).unwrap());
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| {
            let tag = m["annotations"]["org.opencontainers.image.ref.name"].as_str()?;
            Some((tag.to_string(), m["digest"].as_str()?.to_string()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_an_oci_layout_a_deleted_index_comes_back_with_its_signature() {
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("dst");
    copy_dir(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plans/demo/layout"),
        &dst,
    );
    let before = layout_tags(&dst);
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n[[retain]]\nrepository = \"oci:{}\"\ndelete_tags = ['^1\\.1\\.0$']\n",
            dst.display()
        ),
    );
    let p = p.to_str().unwrap();
    ferry(&["run", p], &[]).await.assert_code(0);
    // 1.1.0 and its signature are gone; 1.0.0 stays.
    assert_eq!(layout_tags(&dst).len(), 1, "{:?}", layout_tags(&dst));
    let out = ferry(&["restore", p], &[]).await;
    out.assert_code(0);
    assert_eq!(layout_tags(&dst), before);
    let again = ferry(&["restore", p], &[]).await;
    again.assert_code(0);
    assert!(
        again.stderr.contains("nothing to restore"),
        "{}",
        again.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_docker_hub_restore_puts_the_tags_back_and_spends_no_pull() {
    let reg = Registry::start().await;
    let hub = HubFake::start(&[], &[("me", "dckr_pat_restore_7c")], 100, 1000).await;
    let front = hub.registry_front(&reg).await;
    let s = scene(&Pusher::new(&front.url, None), REPO).await;
    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n[registry.\"docker.io\"]\nendpoint = \"{}\"\ninsecure = true\napi = \"{}\"\nauth = {{ username = \"me\", password_env = \"HUB_PAT\" }}\n[[retain]]\nrepository = \"docker.io/{REPO}\"\n{RULE}\n",
            front.url, hub.url
        ),
    );
    let p = p.to_str().unwrap();
    let env = [("HUB_PAT", "dckr_pat_restore_7c")];
    ferry(&["run", p], &env).await.assert_code(0);
    for (tag, _) in &s.deleted {
        assert!(reg.pusher().manifest(REPO, tag).await.is_none(), "{tag}");
    }

    let before = front.seen().len();
    let out = ferry(&["restore", p], &env).await;
    out.assert_code(0);
    assert!(!out.stdout.contains("dckr_pat") && !out.stderr.contains("dckr_pat"));
    for (tag, img) in s.deleted.iter().chain(&s.kept) {
        assert_back(&reg, tag, img).await;
    }
    let tags = reg.pusher().tags(REPO).await;
    assert_eq!(tags.len(), s.kept.len() + s.deleted.len(), "{tags:?}");
    // The kept bytes are pushed back: HEADs and PUTs, no manifest GET (no pull).
    let pulls: Vec<String> = front.seen()[before..]
        .iter()
        .filter(|r| r.method == "GET" && r.uri.contains("/manifests/"))
        .map(|r| r.uri.clone())
        .collect();
    assert!(pulls.is_empty(), "{pulls:?}");
    ferry(&["restore", p], &env).await.assert_code(0);
}
