//! Issue 22, `untagged_grace`: an untagged manifest pushed recently is a push in progress
//! (children before their index, a manifest before its tag), so `untagged = true` keeps it
//! while it is younger than the grace. On GHCR (a real registry for the images, the GitHub
//! Packages fake for the versions), where untagged versions are listed.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::common::*;
use crate::harness::*;

const REPO: &str = "myorg/app";
const TOKEN: &str = "ghp_canary_rw_7f3a";

/// `img` as if built at `created` (its config's `created`, so its digest changes too).
fn built_at(img: &Image, created: SystemTime) -> Image {
    let old = img.config().expect("an image with a config");
    let mut config: Value = serde_json::from_slice(&old.bytes).unwrap();
    config["created"] = humantime::format_rfc3339_seconds(created)
        .to_string()
        .into();
    let bytes = serde_json::to_vec(&config).unwrap();
    let config = Blob {
        digest: sha256_digest(&bytes),
        bytes,
        ..old.clone()
    };
    let mut manifest: Value = serde_json::from_slice(&img.bytes).unwrap();
    manifest["config"] = config.descriptor();
    let bytes = serde_json::to_vec_pretty(&manifest).unwrap();
    let mut blobs = img.blobs.clone();
    blobs[0] = config;
    Image {
        digest: sha256_digest(&bytes),
        bytes,
        blobs,
        ..img.clone()
    }
}

fn policy(dir: &std::path::Path, reg: &Registry, fake: &GitHubFake, extra: &str) -> String {
    let p = plan(
        dir,
        &format!(
            "version = 1\n[registry.\"{a}\"]\ninsecure = true\nflavor = \"ghcr\"\napi = \"{api}\"\nauth = {{ username = \"bot\", password_env = \"GHCR_TOKEN\" }}\n[[retain]]\nrepository = \"{a}/{REPO}\"\nkeep_tags = ['^v']\nuntagged = true\n{extra}",
            a = reg.addr,
            api = fake.url
        ),
    );
    p.to_str().unwrap().to_string()
}

/// The line of `out` that shows the decision on `digest`.
fn line_of<'a>(out: &'a str, digest: &str) -> &'a str {
    out.lines()
        .find(|l| l.contains(&digest[..19]))
        .unwrap_or_else(|| panic!("no line for {digest}:\n{out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untagged_manifest_pushed_within_the_grace_is_kept_and_an_old_one_deleted() {
    let reg = Registry::start().await;
    let p = reg.pusher();
    let base = layer(1, 2048);
    let single = |label: &str| {
        image(
            std::slice::from_ref(&base),
            "linux",
            "amd64",
            Format::Oci,
            label,
        )
    };
    let now = SystemTime::now();
    let release = single("v1");
    let old = single("old");
    let fresh = built_at(&single("fresh"), now - Duration::from_secs(5 * 60));
    p.push(REPO, "v1", &release).await;
    p.push(REPO, &old.digest, &old).await;
    p.push(REPO, &fresh.digest, &fresh).await;
    let fake = GitHubFake::start(&[(TOKEN, "bot", &["read:packages", "delete:packages"])]).await;
    let pushed = humantime::format_rfc3339_seconds(now).to_string();
    fake.add_package(
        Some("myorg"),
        "app",
        true,
        &[
            (release.digest.as_str(), "2024-01-01T00:00:00Z", &["v1"], 0),
            (old.digest.as_str(), "2024-01-01T00:00:00Z", &[], 0),
            (fresh.digest.as_str(), pushed.as_str(), &[], 0),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let env = [("GHCR_TOKEN", TOKEN)];
    let kept = "minutes old, may be a push in progress (untagged_grace = 1h)";

    // The default grace, in the plan and in the run.
    let plan_default = policy(dir.path(), &reg, &fake, "");
    let shown = ferry(&["plan", &plan_default], &env).await;
    shown.assert_code(0);
    let line = line_of(&shown.stdout, &fresh.digest);
    assert!(line.contains("keep") && line.contains(kept), "{line}");
    assert!(line_of(&shown.stdout, &old.digest).contains("delete: untagged"));
    let run = ferry(&["run", "--progress", "plain", &plan_default], &env).await;
    run.assert_code(0);
    let versions = fake.versions(Some("myorg"), "app", true);
    let deleted = |d: &str| versions.iter().find(|v| v.digest == d).unwrap().deleted;
    assert!(deleted(&old.digest), "{}", run.stderr);
    assert!(!deleted(&fresh.digest), "{}", run.stderr);
    assert!(!deleted(&release.digest));

    // A grace shorter than its age, or none, deletes it.
    for grace in ["4m", "0s"] {
        let text = format!("untagged_grace = \"{grace}\"\n");
        let shown = ferry(&["plan", &policy(dir.path(), &reg, &fake, &text)], &env).await;
        shown.assert_code(0);
        let line = line_of(&shown.stdout, &fresh.digest);
        assert!(line.contains("delete: untagged"), "{grace}: {line}");
    }

    // A value that is not a duration: refused naming the place and the field, not echoed.
    let bad = policy(
        dir.path(),
        &reg,
        &fake,
        "untagged_grace = \"an hour-ish\"\n",
    );
    let refused = ferry(&["check", &bad], &env).await;
    refused.assert_code(2);
    assert!(
        refused
            .stderr
            .contains(":11:18: retain.untagged_grace: not a duration"),
        "{}",
        refused.stderr
    );
    assert!(!refused.stderr.contains("hour-ish"), "{}", refused.stderr);
}
