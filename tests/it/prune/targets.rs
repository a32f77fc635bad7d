//! Pruning mirrors that are not a plain registry: an OCI layout, GHCR (package versions) and
//! Docker Hub (tags through the Hub API).

use super::*;

pub(super) const FOREIGN_TAG: &str = "hand";

/// The source the tests below mirror: org/app with v1, v2 (a two-platform index whose amd64
/// child is v1's image), and v3 and stable on one image; org/old with 1.0.
pub(super) struct Source {
    pub(super) reg: Registry,
    pub(super) v1: Image,
    pub(super) v2: Image,
    /// v2's arm64 child, which only v2 uses.
    pub(super) lone_child: Image,
    pub(super) v3: Image,
    /// Tagged `hand` at the target by someone else.
    pub(super) foreign: Image,
    /// org/old:1.0, whose repository goes.
    pub(super) old: Image,
}

pub(super) async fn source() -> Source {
    let reg = Registry::start().await;
    let v1 = single(60, "app-v1");
    let lone_child = arm(61, "app-v2-arm");
    let v2 = index(vec![v1.clone(), lone_child.clone()], Format::Oci);
    let v3 = single(62, "app-v3");
    let p = reg.pusher();
    p.push("org/app", "v1", &v1).await;
    p.push("org/app", "v2", &v2).await;
    p.push("org/app", "v3", &v3).await;
    p.push("org/app", "stable", &v3).await;
    let old = single(64, "old");
    p.push("org/old", "1.0", &old).await;
    Source {
        reg,
        v1,
        v2,
        lone_child,
        v3,
        foreign: single(63, "by hand"),
        old,
    }
}

impl Source {
    /// `org/*` mirrored to `to` with `prune = true`; `target` is the target's
    /// `[registry]` section, if it needs one.
    pub(super) fn plan(&self, target: &str, to: &str) -> String {
        format!(
            "version = 1\n{}{target}\n[[copy]]\nfrom = \"{}/org/*\"\nto = \"{to}\"\nprune = true\n",
            insecure(&[&self.reg]),
            self.reg.addr
        )
    }

    /// At the source: v2 deleted, stable removed alone (v3 keeps the image), org/old gone
    /// from the catalog.
    pub(super) async fn drift(&self) {
        delete(&self.reg, "org/app", &self.v2.digest).await;
        untag(&self.reg, "org/app", "stable").await;
        let old = self
            .reg
            .storage_dir()
            .join("docker/registry/v2/repositories/org/old");
        std::fs::remove_dir_all(old).unwrap();
    }

    /// What pruning after the drift decides in the repositories under `target`: in app, v2
    /// deleted with the child only it uses (v1 keeps the other), stable removed alone, the
    /// foreign tag kept; old:1.0 deleted.
    pub(super) fn expected(&self, target: &str) -> Vec<Row> {
        let mut rows: Vec<Row> = [
            ("delete", "app", &self.v2, "v2"),
            ("delete", "app", &self.lone_child, ""),
            ("untag", "app", &self.v3, "stable"),
            ("keep", "app", &self.foreign, FOREIGN_TAG),
            ("delete", "old", &self.old, "1.0"),
        ]
        .into_iter()
        .map(|(a, r, img, t)| {
            (
                a.into(),
                format!("{target}/{r}"),
                img.digest.clone(),
                t.into(),
            )
        })
        .collect();
        rows.sort();
        rows
    }
}

/// After the drift, `ferry plan --output json` shows exactly `expected` (the foreign tag
/// kept as not ours), and the run does exactly that: every deletion done, but those
/// `refused` (`(tags, why)`: the target refused it, which fails the run). The run after it
/// has nothing left to prune, and fails the same way.
pub(super) async fn prune_as_planned(runs: &Runs, expected: &[Row], refused: &[(&str, &str)]) {
    let planned = runs.plan_json().await;
    assert_eq!(plan_rows(&planned), expected, "{:#}", planned["prune"]);
    let deletions = expected.iter().filter(|r| r.0 != "keep").count();
    let text = runs.plan_text().await;
    let to_prune = format!(", {deletions} to prune");
    for shown in [
        &to_prune,
        "kept: not ours (ferry did not copy this tag here)",
    ] {
        assert!(text.stdout.contains(shown), "{shown}: {}", text.stdout);
    }

    let code = i32::from(!refused.is_empty());
    let pruned = deletions - refused.len();
    let ran = runs.run().await;
    ran.assert_code(code);
    let summary = format!(", {pruned} pruned");
    assert!(ran.stdout.contains(&summary), "{}", ran.stdout);
    // Issue 21, "What was seen" 6: each refused deletion is a failure of the summary and
    // the report, and `deleted` is retention's alone.
    let failed = format!(", {} failed", refused.len());
    assert!(ran.summary().contains(&failed), "{}", ran.summary());
    let report = runs.report();
    assert_eq!(report["totals"]["pruned"], pruned);
    assert_eq!(report["totals"]["failed"], refused.len());
    assert_eq!(report["totals"]["deleted"], 0);
    let done = report_rows(&report);
    assert_eq!(done, expected, "the run did what the plan said");
    for d in report["prune"].as_array().unwrap() {
        let result = d["result"].as_str().unwrap_or_default();
        let why = refused
            .iter()
            .find(|(t, _)| d["tags"] == serde_json::json!([t]));
        match (d["action"].as_str().unwrap(), why) {
            ("keep", _) => {
                let reason = d["reason"].as_str().unwrap();
                let last = reason == "kept: GHCR keeps a package's last version";
                assert!(reason.contains("not ours") || last, "{d}")
            }
            (_, Some((_, why))) => assert!(result.contains(why), "{d}"),
            (_, None) => assert_eq!(result, "done", "{d}"),
        }
    }

    let again = runs.run().await;
    again.assert_code(code);
    assert!(again.stdout.contains(", 0 pruned"), "{}", again.stdout);
}

/// `(tag, digest)` of every entry of a layout's `index.json`, sorted.
pub(super) fn layout_entries(layout: &std::path::Path) -> Vec<(String, String)> {
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let mut out: Vec<(String, String)> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let tag = &d["annotations"]["org.opencontainers.image.ref.name"];
            (
                tag.as_str().unwrap().into(),
                d["digest"].as_str().unwrap().into(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Tag `img` in a layout by hand: its blobs, and an `index.json` entry.
pub(super) fn tag_in_layout(layout: &std::path::Path, tag: &str, img: &Image) {
    write_layout_blobs(layout, img);
    let path = layout.join("index.json");
    let mut index: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let mut entry = img.descriptor();
    entry["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": tag});
    index["manifests"].as_array_mut().unwrap().push(entry);
    std::fs::write(&path, serde_json::to_vec(&index).unwrap()).unwrap();
}

pub(super) fn entries(rows: &[(&str, &Image)]) -> Vec<(String, String)> {
    rows.iter()
        .map(|(t, img)| (t.to_string(), img.digest.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oci_layout_mirror_loses_exactly_the_pruned_index_entries() {
    let s = source().await;
    let out = tempfile::tempdir().unwrap();
    let to = format!("oci:{}/*", out.path().display());
    let runs = Runs::new(&s.plan("", &to), &[]);
    runs.run().await.assert_code(0);
    let layout = out.path().join("app");
    let copied = [
        ("stable", &s.v3),
        ("v1", &s.v1),
        ("v2", &s.v2),
        ("v3", &s.v3),
    ];
    assert_eq!(layout_entries(&layout), entries(&copied));
    tag_in_layout(&layout, FOREIGN_TAG, &s.foreign);
    s.drift().await;

    let target = format!("oci:{}", out.path().display());
    prune_as_planned(&runs, &s.expected(&target), &[]).await;
    let left = [(FOREIGN_TAG, &s.foreign), ("v1", &s.v1), ("v3", &s.v3)];
    assert_eq!(layout_entries(&layout), entries(&left));
    assert_eq!(layout_entries(&out.path().join("old")), []);
    // The blobs stay, as a registry's stay until its garbage collection.
    let blob = |img: &Image| layout.join("blobs/sha256").join(hex_of(&img.digest));
    assert!(blob(&s.v2).is_file() && blob(&s.lone_child).is_file());
    // A second implementation reads what stays.
    for (tag, img) in [("v1", &s.v1), ("v3", &s.v3)] {
        let raw = skopeo_inspect_raw(&format!("oci:{}:{tag}", layout.display()), None).await;
        assert_eq!(raw, img.bytes, "{tag}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ghcr_mirror_deletes_exactly_the_pruned_package_versions() {
    let s = source().await;
    let reg = Registry::start().await;
    let scopes: &[&str] = &["read:packages", "write:packages", "delete:packages"];
    let github = GitHubFake::start(&[("ghp_prune", "bot", scopes)]).await;
    let ghcr = github.registry_front(&reg.url).await;
    let target = format!(
        "[registry.\"{}\"]\ninsecure = true\nflavor = \"ghcr\"\napi = \"{}\"\nauth = {{ username = \"bot\", password_env = \"GHCR_TOKEN\" }}\n",
        ghcr.addr, github.url
    );
    let to = format!("{}/myorg/*", ghcr.addr);
    let runs = Runs::new(&s.plan(&target, &to), &[("GHCR_TOKEN", "ghp_prune")]);
    runs.run().await.assert_code(0);
    // Each manifest pushed is a version: v1's image (v2's amd64 child too), v2, its arm64
    // child, and v3's image.
    assert_eq!(github.versions(Some("myorg"), "app", false).len(), 4);
    let pusher = Pusher::new(&ghcr.url, None);
    pusher.push("myorg/app", FOREIGN_TAG, &s.foreign).await;
    s.drift().await;

    // GitHub refuses to delete the last tagged version of a package (the package has to be
    // deleted instead): org/old's mirror keeps it with its tag, planned, and no run fails for
    // it (issue 22).
    let target = format!("{}/myorg", ghcr.addr);
    let mut expected = s.expected(&target);
    let old = expected.iter_mut().find(|r| r.3 == "1.0").unwrap();
    old.0 = "keep".into();
    expected.sort();
    prune_as_planned(&runs, &expected, &[]).await;
    let all = github.versions(Some("myorg"), "app", true);
    let version = |img: &Image| all.iter().find(|v| v.digest == img.digest).unwrap();
    let known = [&s.v1, &s.v2, &s.lone_child, &s.v3, &s.foreign];
    let placeholders: Vec<&FakeVersion> = all
        .iter()
        .filter(|v| known.iter().all(|k| k.digest != v.digest))
        .collect();
    assert_eq!(placeholders.len(), 1, "{all:?}");
    let placeholder = placeholders[0];
    // Deleted: v2, its own child, and the placeholder stable was moved to; v3's version
    // keeps its other tag.
    let deleted: BTreeSet<&str> = all
        .iter()
        .filter(|v| v.deleted)
        .map(|v| v.digest.as_str())
        .collect();
    let want: BTreeSet<&str> = [&s.v2.digest, &s.lone_child.digest, &placeholder.digest]
        .into_iter()
        .map(String::as_str)
        .collect();
    assert_eq!(deleted, want, "{all:?}");
    assert_eq!(placeholder.tags, ["stable"]);
    assert_eq!(version(&s.v3).tags, ["v3"]);
    assert_eq!(version(&s.v1).tags, ["v1"]);
    assert_eq!(version(&s.foreign).tags, [FOREIGN_TAG]);
    let api_deletes = github
        .requests()
        .iter()
        .filter(|r| r.starts_with("DELETE /orgs/myorg/packages/container/app/versions/"))
        .count();
    assert_eq!(api_deletes, 3, "{:?}", github.requests());
    let old = github.versions(Some("myorg"), "old", true);
    assert_eq!((old.len(), old[0].deleted), (1, false), "{old:?}");
    assert!(
        github.deletes().iter().all(|d| d.id != old[0].id),
        "not asked: {:?}",
        github.requests()
    );
    // GHCR deletes through its API only; the registry behind holds what stays.
    assert!(!ghcr
        .seen()
        .iter()
        .any(|r| r.method == "DELETE" && r.uri.contains("/manifests/")));
    let p = reg.pusher();
    assert_eq!(p.tags("myorg/app").await, [FOREIGN_TAG, "v1", "v3"]);
    assert_copied(&reg, "myorg/app", "v3", &s.v3).await;
    assert!(p
        .manifest("myorg/app", &s.lone_child.digest)
        .await
        .is_none());
    assert_eq!(p.tags("myorg/old").await, ["1.0"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docker_hub_mirror_deletes_exactly_the_pruned_tags_through_the_hub_api() {
    let s = source().await;
    let reg = Registry::start().await;
    let hub = HubFake::start(&[], &[("me", "dckr_pat_prune")], 100, 1000).await;
    let front = hub.registry_front(&reg).await;
    let target = format!(
        "[registry.\"docker.io\"]\nendpoint = \"{}\"\ninsecure = true\napi = \"{}\"\nauth = {{ username = \"me\", password_env = \"HUB_PAT\" }}\n",
        front.url, hub.url
    );
    let runs = Runs::new(
        &s.plan(&target, "docker.io/myorg/*"),
        &[("HUB_PAT", "dckr_pat_prune")],
    );
    runs.run().await.assert_code(0);
    let pusher = Pusher::new(&front.url, None);
    pusher.push("myorg/app", FOREIGN_TAG, &s.foreign).await;
    s.drift().await;

    let before = front.seen().len();
    prune_as_planned(&runs, &s.expected("docker.io/myorg"), &[]).await;
    // The registry was only asked where tags point and which tags there are (where stable
    // points, and issue 22's look before each deletion: listings and HEADs, none of them a
    // pull), and read each manifest deleted once, by digest, right before (a pull each, kept
    // for `ferry restore`): the inventory is the Hub API's, and no placeholder was pushed,
    // nothing deleted there. (The run lease has a repository of its own: tests/it/lease.rs.)
    let seen: Vec<String> = front.seen()[before..]
        .iter()
        .map(|r| format!("{} {}", r.method, r.uri))
        .filter(|r| !r.contains("/v2/myorg/ferry-lease/"))
        .collect();
    let (heads, gets): (Vec<&String>, Vec<&String>) = seen
        .iter()
        .partition(|r| r.starts_with("HEAD ") || r.contains("/tags/list"));
    assert!(!heads.is_empty(), "{seen:?}");
    assert_eq!(gets.len(), 3, "v2, stable and old's 1.0: {seen:?}");
    assert!(
        gets.iter()
            .all(|r| r.starts_with("GET /v2/myorg/") && r.contains("/manifests/sha256:")),
        "{seen:?}"
    );
    assert!(seen.contains(&"HEAD /v2/myorg/app/manifests/stable".to_string()));
    // v2's tag, stable and old's 1.0, through the Hub API's tag DELETE, logged in; v2's
    // platform manifests have no tag of their own and go with it. (Each run gives its lease
    // up the same way, in myorg/ferry-lease.)
    let mut deletes: Vec<String> = hub
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("DELETE") && !r.contains("/myorg/ferry-lease/"))
        .collect();
    deletes.sort();
    assert_eq!(
        deletes,
        [
            "DELETE /v2/repositories/myorg/app/tags/stable/ auth=yes",
            "DELETE /v2/repositories/myorg/app/tags/v2/ auth=yes",
            "DELETE /v2/repositories/myorg/old/tags/1.0/ auth=yes",
        ]
    );
    let p = reg.pusher();
    assert_eq!(p.tags("myorg/app").await, [FOREIGN_TAG, "v1", "v3"]);
    assert!(p.tags("myorg/old").await.is_empty());
    assert_copied(&reg, "myorg/app", "v3", &s.v3).await;
    assert_copied(&reg, "myorg/app", "v1", &s.v1).await;
}
