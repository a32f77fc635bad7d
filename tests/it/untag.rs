//! Deleting one tag and nothing else (issue 15), through the library's `Registry::delete_tag`:
//! on a real docker-registry (no DELETE by tag there: the tag is moved onto a throw-away
//! manifest, which is deleted), on an OCI layout, on GHCR (the GitHub Packages API fake with
//! its registry front over a real registry) and on Docker Hub (the Hub API fake's tag DELETE).
//! Every time the manifest and its other tags stay, and nothing is left behind.

use ferry::reference::Digest;
use ferry::registry::config::{AuthSettings, Flavor, RegistrySettings};
use ferry::registry::http::HttpRegistry;
use ferry::registry::layout::LayoutRegistry;
use ferry::registry::{Registry as _, RegistryError};
use url::Url;

use crate::harness::*;

const REPO: &str = "myorg/app";

/// `{}`, the placeholder's config: uploaded where missing, and left like any blob.
const EMPTY_CONFIG: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

fn fixture(label: &str) -> Image {
    image(&[layer(15, 1024)], "linux", "amd64", Format::Oci, label)
}

fn digest(img: &Image) -> Digest {
    Digest::parse(&img.digest).expect("a fixture's digest")
}

/// ferry's client for the registry at `url` (`host` as a plan would name it).
fn client(
    host: &str,
    url: &str,
    flavor: Flavor,
    api: Option<&str>,
    auth: AuthSettings,
) -> HttpRegistry {
    let settings = RegistrySettings {
        auth,
        endpoint: Some(Url::parse(url).unwrap()),
        api: api.map(|a| Url::parse(a).unwrap()),
        insecure: true,
        flavor,
        retries: 1,
        ..RegistrySettings::default()
    };
    HttpRegistry::new(host, &settings, None).expect("a client")
}

/// ferry's client for a plain docker-registry, anonymous.
fn distribution_client(reg: &Registry) -> HttpRegistry {
    let anonymous = AuthSettings::Anonymous;
    client(&reg.addr, &reg.url, Flavor::Distribution, None, anonymous)
}

/// A docker `config.json` in `dir` giving `host` a user name and token.
fn credentials(dir: &std::path::Path, host: &str, user: &str, token: &str) -> AuthSettings {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}"));
    let path = dir.join("config.json");
    let config = serde_json::json!({"auths": {host: {"auth": auth}}});
    std::fs::write(&path, config.to_string()).unwrap();
    AuthSettings::ConfigFile(path)
}

/// The manifest digests DELETEd at the registry since `from` requests (its access log).
async fn deleted_manifests(reg: &Registry, from: usize) -> Vec<String> {
    reg.sync_log().await;
    reg.requests()[from..]
        .iter()
        .filter(|r| r.method == "DELETE" && r.uri.contains("/manifests/sha256:"))
        .map(|r| r.uri.rsplit('/').next().unwrap().to_string())
        .collect()
}

/// `img` tagged `a` and `b` in `REPO`.
async fn push_a_and_b(pusher: &Pusher, img: &Image) {
    for tag in ["a", "b"] {
        pusher.push(REPO, tag, img).await;
    }
}

/// The methods of the requests the registry answered after the first `from`.
async fn methods_since(reg: &Registry, from: usize) -> Vec<String> {
    reg.sync_log().await;
    reg.requests()[from..]
        .iter()
        .map(|r| r.method.clone())
        .collect()
}

/// After `b` was removed from an image tagged `a` and `b` in the registry `pusher` reads: `a`
/// and the manifest stay, `b` is gone from the tags list.
async fn only_b_is_gone(pusher: &Pusher, img: &Image) {
    let (_, _, a) = pusher.manifest(REPO, "a").await.expect("tag a stays");
    assert_eq!(a, img.digest);
    assert!(
        pusher.manifest(REPO, &img.digest).await.is_some(),
        "the manifest stays"
    );
    assert!(pusher.manifest(REPO, "b").await.is_none(), "b is gone");
    assert_eq!(pusher.tags(REPO).await, ["a"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untag_on_distribution_moves_the_tag_to_a_placeholder_and_deletes_that() {
    let reg = Registry::start().await;
    let img = fixture("untag-distribution");
    push_a_and_b(&reg.pusher(), &img).await;
    reg.sync_log().await;
    let before = reg.requests().len();
    let ferry = distribution_client(&reg);

    let id = ferry.delete_tag(REPO, "b", &digest(&img)).await.unwrap();
    assert_eq!(id, None, "distribution has no id of its own");
    only_b_is_gone(&reg.pusher(), &img).await;
    // One placeholder was pushed under b and deleted by digest: none is left behind.
    let placeholders = deleted_manifests(&reg, before).await;
    assert_eq!(placeholders.len(), 1, "{:?}", reg.requests());
    assert_ne!(placeholders[0], img.digest);
    assert!(reg
        .pusher()
        .manifest(REPO, &placeholders[0])
        .await
        .is_none());
    assert_eq!(
        reg.count_requests("PUT", &format!("/v2/{REPO}/manifests/b")),
        2
    );
    assert!(reg.pusher().blob_exists(REPO, EMPTY_CONFIG).await);

    // Gone already: nothing to do, nothing sent but the check.
    let before = reg.requests().len();
    assert_eq!(
        ferry.delete_tag(REPO, "b", &digest(&img)).await.unwrap(),
        None
    );
    assert_eq!(methods_since(&reg, before).await, ["HEAD"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untag_of_a_tag_that_moved_is_refused_and_touches_nothing() {
    let reg = Registry::start().await;
    let (old, new) = (fixture("untag-old"), fixture("untag-new"));
    reg.pusher().push(REPO, "a", &old).await;
    // `b` was decided on while it named `old`; it was pushed again since.
    reg.pusher().push(REPO, "b", &new).await;
    reg.sync_log().await;
    let before = reg.requests().len();
    let ferry = distribution_client(&reg);

    let err = ferry
        .delete_tag(REPO, "b", &digest(&old))
        .await
        .unwrap_err();
    match &err {
        RegistryError::TagMoved {
            url,
            tag,
            expected,
            actual,
        } => {
            assert!(url.ends_with(&format!("/v2/{REPO}/manifests/b")), "{url}");
            assert_eq!(
                (tag.as_str(), expected, actual),
                ("b", &old.digest, &new.digest)
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("moved"), "{err}");
    let (_, _, b) = reg.pusher().manifest(REPO, "b").await.unwrap();
    assert_eq!(b, new.digest);
    assert_eq!(reg.pusher().tags(REPO).await, ["a", "b"]);
    reg.sync_log().await;
    let writes: Vec<_> = reg.requests()[before..]
        .iter()
        .filter(|r| r.method != "HEAD" && r.method != "GET")
        .cloned()
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untag_in_a_layout_removes_its_index_entry_alone() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let (img, other) = (fixture("untag-layout"), fixture("untag-layout-other"));
    write_oci_layout(&layout, &[("a", &img), ("b", &img), ("c", &other)]);
    let blobs = || {
        let mut names: Vec<_> = std::fs::read_dir(layout.join("blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    };
    let before = blobs();
    let repo = layout.display().to_string();
    let ferry = LayoutRegistry::new();

    assert_eq!(
        ferry.delete_tag(&repo, "b", &digest(&img)).await.unwrap(),
        None
    );
    assert_eq!(ferry.list_tags(&repo).await.unwrap(), ["a", "c"]);
    let a = ferry.head_manifest(&repo, "a").await.unwrap().unwrap();
    assert_eq!(a.digest, digest(&img));
    assert!(ferry.head_manifest(&repo, "b").await.unwrap().is_none());
    let by_digest = ferry.get_manifest(&repo, &img.digest).await.unwrap();
    assert_eq!(by_digest.bytes.as_ref(), img.bytes.as_slice());
    assert_eq!(blobs(), before, "no placeholder, no blob gone");
    // A tag that points elsewhere is left alone.
    let err = ferry
        .delete_tag(&repo, "c", &digest(&img))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::TagMoved { .. }), "{err}");
    assert_eq!(ferry.list_tags(&repo).await.unwrap(), ["a", "c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untag_on_ghcr_deletes_the_placeholders_package_version() {
    let reg = Registry::start().await;
    let scopes: &[&str] = &["read:packages", "write:packages", "delete:packages"];
    let github = GitHubFake::start(&[("ghp_untag", "bot", scopes)]).await;
    let ghcr = github.registry_front(&reg.url).await;
    let img = fixture("untag-ghcr");
    let pusher = Pusher::new(&ghcr.url, None);
    push_a_and_b(&pusher, &img).await;
    let versions = github.versions(Some("myorg"), "app", false);
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0].tags, ["a", "b"]);
    let dir = tempfile::tempdir().unwrap();
    let auth = credentials(dir.path(), &ghcr.addr, "bot", "ghp_untag");
    let ferry = client(&ghcr.addr, &ghcr.url, Flavor::Ghcr, Some(&github.url), auth);
    // Read first, as retention's inventory does: the placeholder is not in what was read, and
    // is found all the same.
    let records = ferry.manifest_records(REPO).await.unwrap().unwrap();
    assert_eq!(records.len(), 1);

    let id = ferry.delete_tag(REPO, "b", &digest(&img)).await.unwrap();
    only_b_is_gone(&reg.pusher(), &img).await;
    // The placeholder was a version of its own, deleted through the API: its id is the audit's.
    let all = github.versions(Some("myorg"), "app", true);
    assert_eq!(all.len(), 2, "{all:?}");
    let (kept, placeholder) = (&all[0], &all[1]);
    assert_eq!(
        (kept.digest.as_str(), kept.deleted),
        (img.digest.as_str(), false)
    );
    assert_eq!(kept.tags, ["a"]);
    assert!(placeholder.deleted);
    assert_eq!(id, Some(placeholder.id.to_string()));
    assert!(reg
        .pusher()
        .manifest(REPO, &placeholder.digest)
        .await
        .is_none());
    let deletes: Vec<_> = github
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("DELETE"))
        .collect();
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    assert!(
        deletes[0].contains(&format!("/versions/{}", placeholder.id)),
        "{deletes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untag_on_docker_hub_deletes_the_tag_through_the_hub_api() {
    let reg = Registry::start().await;
    let img = fixture("untag-hub");
    push_a_and_b(&reg.pusher(), &img).await;
    let hub = HubFake::start(&[("myorg", "app", false)], &[("me", "hub-pat")], 100, 1000).await;
    let tag = |name: &str| HubTag {
        name: name.into(),
        digest: img.digest.clone(),
        last_pushed: "2026-01-01T00:00:00Z".into(),
        platforms: Vec::new(),
    };
    hub.set_tags(REPO, vec![tag("a"), tag("b")]);
    reg.sync_log().await;
    let before = reg.requests().len();
    let dir = tempfile::tempdir().unwrap();
    let auth = credentials(dir.path(), &reg.addr, "me", "hub-pat");
    let ferry = client(&reg.addr, &reg.url, Flavor::Dockerhub, Some(&hub.url), auth);

    let id = ferry.delete_tag(REPO, "b", &digest(&img)).await.unwrap();
    assert_eq!(id.as_deref(), Some("tag b"));
    assert_eq!(hub.tags(REPO), ["a"]);
    assert!(
        hub.requests()
            .iter()
            .any(|r| r == &format!("DELETE /v2/repositories/{REPO}/tags/b/ auth=yes")),
        "{:?}",
        hub.requests()
    );
    // The registry was only asked where b points (a HEAD, no pull): no placeholder there.
    assert_eq!(methods_since(&reg, before).await, ["HEAD"]);

    // A tag that moved is left alone, at the Hub too.
    let other = fixture("untag-hub-other");
    reg.pusher().push(REPO, "a", &other).await;
    let err = ferry
        .delete_tag(REPO, "a", &digest(&img))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::TagMoved { .. }), "{err}");
    assert_eq!(hub.tags(REPO), ["a"]);
}
