//! Issue 23, item 4, for the hosted APIs: a retention run whose token for the GitHub Packages
//! API, or whose password for the Docker Hub API, changes while it deletes, the new one written
//! to the plan's `password_file` as the API starts refusing the old one. The run reads the file
//! again after the refusal and finishes: exit 0, every planned deletion done once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::common::*;
use crate::harness::*;

const OLD: &str = "Kanarie-old-0c9e41d7";
const NEW: &str = "Kanarie-new-a83f26b5";
const SCOPES: &[&str] = &["read:packages", "delete:packages"];
/// The tags retention deletes (`^pr-`), and the one it keeps.
const DELETED: [&str; 6] = ["pr-1", "pr-2", "pr-3", "pr-4", "pr-5", "pr-6"];
const KEPT: &str = "v1";

/// A password file holding `OLD`, and how to put `NEW` in its place: rewritten in place, as
/// `echo NEW > FILE` does.
fn password_file(dir: &Path) -> (PathBuf, impl FnOnce() + Send + 'static) {
    let file = dir.join("token");
    std::fs::write(&file, format!("{OLD}\n")).unwrap();
    let path = file.clone();
    (file, move || {
        std::fs::write(&path, format!("{NEW}\n")).unwrap()
    })
}

fn single(tag: &str, seed: u64) -> Image {
    image(&[layer(seed, 1024)], "linux", "amd64", Format::Oci, tag)
}

fn no_secret(run: &Run) {
    for out in [&run.stdout, &run.stderr] {
        assert!(!out.contains("Kanarie"), "a secret leaked:\n{out}");
    }
}

/// GHCR: a real registry holds the images, the GitHub Packages fake (which takes `tokens`) a
/// version per image; a plan retaining the `v1` alone, its token read from `file`. Also the
/// ids of the versions to delete.
async fn ghcr_package(tokens: &[&str], file: &Path) -> (Registry, GitHubFake, Vec<u64>, PathBuf) {
    let reg = Registry::start().await;
    let known: Vec<(&str, &str, &[&str])> = tokens.iter().map(|t| (*t, "bot", SCOPES)).collect();
    let fake = GitHubFake::start(&known).await;
    let mut rows = Vec::new();
    for (i, tag) in DELETED.iter().chain([&KEPT]).enumerate() {
        let img = single(tag, 60 + i as u64);
        reg.pusher().push("myorg/app", tag, &img).await;
        rows.push((
            img.digest,
            format!("2024-01-{:02}T00:00:00Z", i + 1),
            [*tag],
        ));
    }
    let args: Vec<(&str, &str, &[&str], u64)> = rows
        .iter()
        .map(|(d, day, tags)| (d.as_str(), day.as_str(), &tags[..], 0))
        .collect();
    let ids = fake.add_package(Some("myorg"), "app", false, &args);
    let p = plan(
        file.parent().unwrap(),
        &format!(
            "version = 1\n[registry.\"{a}\"]\ninsecure = true\nflavor = \"ghcr\"\napi = \"{api}\"\nauth = {{ username = \"bot\", password_file = {file:?} }}\n[[retain]]\nrepository = \"{a}/myorg/app\"\ndelete_tags = ['^pr-\\d+$']\n",
            a = reg.addr,
            api = fake.url
        ),
    );
    (reg, fake, ids[..DELETED.len()].to_vec(), p)
}

/// The fake refuses the old token with 401 "Bad credentials" from its fifth request on (its
/// first four: the token's scopes, the listing, two DELETEs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_token_rotated_mid_retention_is_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let (file, rotate) = password_file(dir.path());
    let (_reg, fake, ids, p) = ghcr_package(&[OLD, NEW], &file).await;
    fake.revoke_after(OLD, 4, rotate);
    let (run, report) = run_reported(&p, &[]).await;
    let requests = fake.requests();
    run.assert_code(0);
    no_secret(&run);
    assert_eq!(report["totals"]["deleted"], 6, "{report}");
    assert_eq!(report["totals"]["failed"], 0, "{report}");

    // The old token was refused mid-run, after a deletion went through with it.
    let refused = requests.iter().position(|r| r.ends_with("token=none"));
    let refused = refused.unwrap_or_else(|| panic!("no request refused: {requests:?}"));
    assert!(
        requests[..refused].iter().any(|r| r.starts_with("DELETE ")),
        "{requests:?}"
    );
    // The new token's scopes were read (`GET /user`) once it was in use.
    let scopes_again = requests[refused..]
        .iter()
        .any(|r| r.starts_with("GET /user token=bot"));
    assert!(scopes_again, "{requests:?}");

    // Each planned version deleted once, none twice; the kept one untouched.
    let mut done: BTreeMap<u64, usize> = BTreeMap::new();
    for d in fake.deletes() {
        assert_eq!(d.status, 204, "{:?}", fake.deletes());
        *done.entry(d.id).or_default() += 1;
    }
    let planned: BTreeMap<u64, usize> = ids.iter().map(|i| (*i, 1)).collect();
    assert_eq!(done, planned, "{requests:?}");
    let left = fake.versions(Some("myorg"), "app", false);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].tags, [KEPT]);
}

/// The token is rotated to one GitHub does not take: each refused request is read again once
/// and sent once more, and its second 401 is the failure, naming the URL and no secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_token_refused_after_the_reread_fails_the_item() {
    let dir = tempfile::tempdir().unwrap();
    let (file, rotate) = password_file(dir.path());
    let (_reg, fake, ids, p) = ghcr_package(&[OLD], &file).await;
    fake.revoke_after(OLD, 4, rotate);
    let (run, report) = run_reported(&p, &[]).await;
    let requests = fake.requests();
    run.assert_code(1);
    no_secret(&run);
    let done = fake.deletes().len();
    assert_eq!(report["totals"]["deleted"], done, "{report}");
    assert_eq!(report["totals"]["failed"], ids.len() - done, "{report}");
    assert!(
        run.stderr
            .contains("/orgs/myorg/packages/container/app/versions/")
            && run.stderr.contains("401: Bad credentials"),
        "{}",
        run.stderr
    );
    // Each refused DELETE went twice (the old token, then the new one), no more.
    let mut refused: BTreeMap<&str, usize> = BTreeMap::new();
    for r in requests.iter().filter(|r| r.starts_with("DELETE ")) {
        if let Some(path) = r.strip_suffix(" token=none") {
            *refused.entry(path).or_default() += 1;
        }
    }
    assert!(!refused.is_empty(), "{requests:?}");
    assert!(refused.values().all(|n| *n == 2), "{requests:?}");
}

/// Docker Hub: the images go to a real registry through the Hub's registry side, the Hub API
/// describes them and deletes their tags, logging in before each operation. The password
/// changes once the fake has answered `change` requests: from then on its login takes only the
/// new one and the JWTs it gave before are refused.
async fn hub_rotation(change: usize) -> Vec<String> {
    let reg = Registry::start().await;
    let hub = HubFake::start(&[], &[("me", OLD)], 100, 1000).await;
    let front = hub.registry_front(&reg).await;
    let pusher = Pusher::new(&front.url, None);
    for (i, tag) in DELETED.iter().chain([&KEPT]).enumerate() {
        pusher
            .push("myorg/app", tag, &single(tag, 80 + i as u64))
            .await;
    }
    let dir = tempfile::tempdir().unwrap();
    let (file, rotate) = password_file(dir.path());
    hub.change_password_after("me", NEW, change, rotate);
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n[registry.\"docker.io\"]\nendpoint = \"{}\"\ninsecure = true\napi = \"{}\"\nauth = {{ username = \"me\", password_file = {file:?} }}\n[[retain]]\nrepository = \"docker.io/myorg/app\"\ndelete_tags = ['^pr-\\d+$']\n",
            front.url, hub.url
        ),
    );
    let (run, report) = run_reported(&p, &[]).await;
    let requests = hub.requests();
    run.assert_code(0);
    no_secret(&run);
    assert_eq!(report["totals"]["failed"], 0, "{report}");
    assert_eq!(reg.pusher().tags("myorg/app").await, [KEPT], "{requests:?}");

    // Tags were deleted with the old password's login before the change and with the new
    // one's after it (the fake takes nothing else by then).
    let deleted = |r: &&String| r.starts_with("DELETE ") && r.ends_with("auth=yes");
    assert!(
        requests[..change].iter().any(|r| deleted(&r)),
        "{requests:?}"
    );
    assert!(
        requests[change..].iter().any(|r| deleted(&r)),
        "{requests:?}"
    );
    // Each planned tag deleted once with a valid login, none twice.
    for tag in DELETED {
        let path = format!("DELETE /v2/repositories/myorg/app/tags/{tag}/ auth=yes");
        let times = requests.iter().filter(|r| **r == path).count();
        assert_eq!(times, 1, "{tag}: {requests:?}");
    }
    requests
}

/// The change comes at a login (the fake's sixth request: the check, the inventory's login
/// and listing, a tag deleted): the old password is refused, the file read again, the new one
/// logs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docker_hub_password_rotated_mid_retention_is_read_again_at_login() {
    let requests = hub_rotation(5).await;
    assert!(
        requests[5].starts_with("POST /v2/users/login"),
        "{requests:?}"
    );
}

/// The change comes between a login and its tag DELETE (the seventh request): the JWT is
/// refused, the file read again, the new password logs in and the DELETE goes once more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docker_hub_password_rotated_mid_retention_is_read_again_after_login() {
    let requests = hub_rotation(6).await;
    // Logged `auth=no`: the fake no longer knows the JWT.
    let refused = &requests[6];
    assert!(
        refused.starts_with("DELETE ") && refused.ends_with("auth=no"),
        "{requests:?}"
    );
}
