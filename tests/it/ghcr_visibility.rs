//! Issue 25, part 3, "GHCR package visibility and linking, checked": after a run copies into
//! GHCR, each target package whose visibility is not what is expected (the rule's
//! `visibility`, else the source's: a Docker Hub repository's `is_private`) is listed with
//! its settings page and whether its image carries `org.opencontainers.image.source`, in the
//! output and the report, as a warning (the exit code stays); a package as expected is not
//! listed; `ferry check --online` lists a public source whose GHCR copy will be private.
//! Against the Docker Hub and GitHub Packages fakes, each fronting a real registry.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::*;
use crate::harness::*;

const ENV: &[(&str, &str)] = &[("GHCR_TOKEN", "ghp_vis")];
const LABEL: &str = "org.opencontainers.image.source";

/// A Docker Hub source (its fake and registry front) holding `acme/app:v1` (`img`), public
/// unless `private`; a GHCR target (the GitHub fake and its front) with a token of `scopes`.
struct Setup {
    _regs: (Registry, Registry),
    hub: HubFake,
    hub_front: Proxy,
    github: GitHubFake,
    ghcr_front: Proxy,
    dir: tempfile::TempDir,
}

async fn setup(img: &Image, private: bool, scopes: &[&str]) -> Setup {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let hub = HubFake::start(&[], &[("alice", "hub-pat")], 100, 1_000_000).await;
    let hub_front = hub.registry_front(&src).await;
    Pusher::new(&hub_front.url, None)
        .push("acme/app", "v1", img)
        .await;
    hub.set_private("acme/app", private);
    let github = GitHubFake::start(&[("ghp_vis", "bot", scopes)]).await;
    let ghcr_front = github.registry_front(&dst.url).await;
    Setup {
        _regs: (src, dst),
        hub,
        hub_front,
        github,
        ghcr_front,
        dir: tempfile::tempdir().unwrap(),
    }
}

impl Setup {
    /// A plan copying `docker.io/acme/app` to the GHCR front's `acme/app`, with `more` on
    /// the rule.
    fn plan(&self, more: &str) -> PathBuf {
        plan(
            self.dir.path(),
            &format!(
                "version = 1\n[registry.\"docker.io\"]\nendpoint = \"{}\"\ninsecure = true\napi = \"{}\"\nauth = {{ username = \"alice\", password_env = \"HUB_PAT\" }}\n[registry.\"{g}\"]\ninsecure = true\nflavor = \"ghcr\"\napi = \"{}\"\nauth = {{ username = \"bot\", password_env = \"GHCR_TOKEN\" }}\n[[copy]]\nfrom = \"docker.io/acme/app\"\nto = \"{g}/acme/app\"\n{more}\n",
                self.hub_front.url,
                self.hub.url,
                self.github.url,
                g = self.ghcr_front.addr,
            ),
        )
    }

    /// Where the fake's settings page of `acme/app` is (its web pages are on its base URL,
    /// as GitHub's are on github.com).
    fn settings(&self) -> String {
        format!(
            "{}/orgs/acme/packages/container/app/settings",
            self.github.url
        )
    }

    fn package(&self) -> String {
        format!("{}/acme/app", self.ghcr_front.addr)
    }
}

/// `ferry run --progress plain --report R PLAN`: the run, and its report.
async fn run_with_report(plan: &Path) -> (Run, Value) {
    run_reported_with(plan, &[], &[ENV[0], ("HUB_PAT", "hub-pat")]).await
}

fn app(label: &str) -> Image {
    image(&[layer(25, 512)], "linux", "amd64", Format::Oci, label)
}

/// `img` with `org.opencontainers.image.source` among its manifest's annotations.
fn linked(img: &Image) -> Image {
    let mut manifest: Value = serde_json::from_slice(&img.bytes).unwrap();
    manifest["annotations"] = serde_json::json!({ LABEL: "https://github.com/acme/app" });
    let bytes = serde_json::to_vec_pretty(&manifest).unwrap();
    Image {
        digest: sha256_digest(&bytes),
        bytes,
        ..img.clone()
    }
}

/// The report's rows for the target packages.
fn packages(report: &Value) -> Vec<Value> {
    report["packages"].as_array().cloned().unwrap_or_default()
}

/// Issue 25, part 3: a public Hub repository copied into a new (so private) GHCR package is
/// listed with its settings page, and its image without the source label is called out; the
/// run still succeeds.
#[tokio::test]
async fn a_public_hub_repository_copied_into_a_private_package_is_listed() {
    let s = setup(&app("public"), false, &["write:packages"]).await;
    let (run, report) = run_with_report(&s.plan("")).await;
    run.assert_code(0);
    let line = run
        .stderr
        .lines()
        .find(|l| l.contains("visibility: package"))
        .unwrap_or_else(|| panic!("{}", run.stderr));
    assert!(
        line.contains(&format!(
            "package {} is private, expected public",
            s.package()
        )) && line.contains("the source docker.io/acme/app is public")
            && line.contains(&format!("change it at {}", s.settings()))
            && line.contains("lacks the org.opencontainers.image.source label"),
        "{line}"
    );
    let rows = packages(&report);
    assert_eq!(rows.len(), 1, "{report}");
    let row = &rows[0];
    assert_eq!(row["package"], s.package());
    assert_eq!(row["visibility"], "private");
    assert_eq!(row["expected"], "public");
    assert_eq!(
        row["expected_from"],
        "the source docker.io/acme/app is public"
    );
    assert_eq!(row["settings"], s.settings());
    assert_eq!(row["source_label"], false);
    // Asked of the APIs, not guessed: the package endpoint and Hub's repository endpoint.
    assert!(s
        .github
        .requests()
        .iter()
        .any(|r| r.starts_with("GET /orgs/acme/packages/container/app ")));
    assert!(s
        .hub
        .requests()
        .iter()
        .any(|r| r.starts_with("GET /v2/namespaces/acme/repositories/app auth=yes")));
}

/// Issue 25, part 3: a package as its source (private and private, public and public) is
/// not listed; the source label is not asked for then.
#[tokio::test]
async fn a_package_as_its_source_is_not_listed() {
    let s = setup(&app("private"), true, &["write:packages"]).await;
    let (run, report) = run_with_report(&s.plan("")).await;
    run.assert_code(0);
    assert!(!run.stderr.contains("visibility:"), "{}", run.stderr);
    assert!(report.get("packages").is_none(), "{report}");

    let s = setup(&app("public"), false, &["write:packages"]).await;
    s.github.add_package(Some("acme"), "app", true, &[]);
    let (run, report) = run_with_report(&s.plan("")).await;
    run.assert_code(0);
    assert!(!run.stderr.contains("visibility:"), "{}", run.stderr);
    assert!(packages(&report).is_empty(), "{report}");
}

/// Issue 25, part 3: the rule's `visibility = "public"` is what a private package is held
/// to, whatever the source (here private); an image with the source annotation is said to
/// carry it.
#[tokio::test]
async fn a_rule_that_wants_public_lists_a_private_package() {
    let s = setup(&linked(&app("rule")), true, &["write:packages"]).await;
    let (run, report) = run_with_report(&s.plan("visibility = \"public\"")).await;
    run.assert_code(0);
    assert!(
        run.stderr.contains(&format!(
            "package {} is private, expected public (copy #1",
            s.package()
        )) && run.stderr.contains("says visibility = \"public\")")
            && run
                .stderr
                .contains("its image carries org.opencontainers.image.source"),
        "{}",
        run.stderr
    );
    let rows = packages(&report);
    assert_eq!(rows.len(), 1, "{report}");
    assert_eq!(rows[0]["expected"], "public");
    assert_eq!(rows[0]["source_label"], true);
    assert_eq!(rows[0]["settings"], s.settings());
}

/// Issue 25, part 3: a token the package endpoint refuses (no `read:packages`) makes the
/// package's visibility unknown, named, and the run still succeeds.
#[tokio::test]
async fn a_refused_package_read_is_visibility_unknown() {
    let s = setup(&app("refused"), false, &[]).await;
    let (run, report) = run_with_report(&s.plan("")).await;
    run.assert_code(0);
    assert!(
        run.stderr.contains(&format!(
            "visibility: package {}: visibility unknown",
            s.package()
        )) && run.stderr.contains("403"),
        "{}",
        run.stderr
    );
    let rows = packages(&report);
    assert_eq!(rows.len(), 1, "{report}");
    assert_eq!(rows[0]["visibility"], Value::Null);
    assert!(
        rows[0]["error"].as_str().unwrap().contains("403"),
        "{report}"
    );
}

/// Issue 25, part 3: `ferry check --online` lists the public source whose GHCR package does
/// not exist yet (GHCR will make it private), and a package that exists with another
/// visibility than expected, with its settings page; neither fails the check.
#[tokio::test]
async fn check_online_lists_a_public_source_and_a_package_that_differs() {
    let s = setup(&app("ahead"), false, &["write:packages"]).await;
    let p = s.plan("");
    let env = [ENV[0], ("HUB_PAT", "hub-pat")];
    let check = ferry(&["check", "--online", p.to_str().unwrap()], &env).await;
    check.assert_code(0);
    assert!(
        check.stdout.contains(&format!(
            "note package {} does not exist yet, and GHCR makes a new package private: expected public (the source docker.io/acme/app is public)",
            s.package()
        )) && check.stdout.contains("1 to see to"),
        "{}",
        check.stdout
    );

    // After the run the package exists, private: the check names its settings page.
    run_with_report(&p).await.0.assert_code(0);
    let check = ferry(&["check", "--online", p.to_str().unwrap()], &env).await;
    check.assert_code(0);
    assert!(
        check.stdout.contains(&format!(
            "note package {} is private, expected public (the source docker.io/acme/app is public): change it at {}",
            s.package(),
            s.settings()
        )),
        "{}",
        check.stdout
    );

    // Made public on its settings page: nothing to see to.
    s.github.set_visibility(Some("acme"), "app", "public");
    let check = ferry(&["check", "--online", p.to_str().unwrap()], &env).await;
    check.assert_code(0);
    assert!(!check.stdout.contains("note package"), "{}", check.stdout);
}

/// Issue 25, part 3: `visibility` takes GitHub's three words; another is refused naming the
/// field, not the value.
#[tokio::test]
async fn a_visibility_setting_is_one_of_three_words() {
    let dir = tempfile::tempdir().unwrap();
    let text = "version = 1\n[[copy]]\nfrom = \"docker.io/acme/app\"\nto = \"ghcr.io/acme/app\"\nvisibility = \"secret-ish\"\n";
    let p = plan(dir.path(), text);
    let check = ferry(&["check", p.to_str().unwrap()], &[]).await;
    check.assert_code(2);
    assert!(
        check.stderr.contains(
            "plan.toml:5:14: copy.visibility: expected \"public\", \"private\" or \"internal\""
        ) && !check.stderr.contains("secret-ish"),
        "{}",
        check.stderr
    );
    let ok = text.replace("secret-ish", "internal");
    let p = plan(dir.path(), &ok);
    ferry(&["check", p.to_str().unwrap()], &[])
        .await
        .assert_code(0);
}
