//! Issue 24, "below the floor where the registry allows it": where the source (or the target)
//! is Docker Hub or GHCR, whose own APIs list every tag with its digest a page at a time, a
//! no-op run of a 5,000-tag repository costs a request per page of that listing and a few
//! more, not a request per tag; a `--recheck` too; and a tag moved at the source is still
//! found and copied, alone. Counted at the fakes (the Docker Hub and GitHub Packages API
//! fakes, and the registry front each puts before a real registry).
//!
//! 5,000 tags are cheap: two images (or a few hundred) are pushed, and the other tags are
//! written straight into the registry's storage as distribution records a pushed tag.

use crate::common::*;
use crate::harness::*;

const TAGS: usize = 5000;
/// What Docker Hub's tags API and GitHub's versions list give a page at most.
const PAGE: usize = 100;
/// Requests a no-op sends besides the listing's pages: the registry's tag list (5 pages of
/// 1,000 for 5,000 tags), its ping and referrers probe, a login.
const CONSTANT: usize = 12;
const REPO: &str = "myorg/app";
const ENV: &[(&str, &str)] = &[("GHCR_TOKEN", "ghp_noop")];

/// Point `tags` of `repo` at `digest` in `reg`'s storage, as distribution records a pushed
/// tag (`_manifests/tags/<tag>/current/link` and `…/index/sha256/<hex>/link`).
fn write_tags(reg: &Registry, repo: &str, digest: &str, tags: &[String]) {
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    let base = reg
        .storage_dir()
        .join("docker/registry/v2/repositories")
        .join(repo)
        .join("_manifests/tags");
    for t in tags {
        let dir = base.join(t);
        std::fs::create_dir_all(dir.join("current")).unwrap();
        std::fs::write(dir.join("current/link"), digest).unwrap();
        let index = dir.join("index/sha256").join(hex);
        std::fs::create_dir_all(&index).unwrap();
        std::fs::write(index.join("link"), digest).unwrap();
    }
}

/// `manifests` images pushed through `front` into `repo` (tags `t0`, `t1`, …), and the rest
/// of [`TAGS`] tags written beside them, spread evenly: which images, and which tags name
/// each.
async fn many_tags(reg: &Registry, front: &str, manifests: usize) -> Vec<(Image, Vec<String>)> {
    let pusher = Pusher::new(front, None);
    let mut out = Vec::new();
    for m in 0..manifests {
        let img = image(
            &[layer(24, 512)],
            "linux",
            "amd64",
            Format::Oci,
            &format!("m{m}"),
        );
        pusher.push(REPO, &format!("t{m}"), &img).await;
        out.push((img, vec![format!("t{m}")]));
    }
    for n in manifests..TAGS {
        out[n % manifests].1.push(format!("t{n}"));
    }
    for (img, tags) in &out {
        write_tags(reg, REPO, &img.digest, &tags[1..]);
    }
    out
}

/// Requests the fakes saw: the hosted API's and the registry front's.
fn seen(api: &[String], front: &Proxy) -> (Vec<String>, Vec<String>) {
    let front = front
        .seen()
        .iter()
        .map(|r| format!("{} {}", r.method, r.uri))
        .collect();
    (api.to_vec(), front)
}

/// What a run sent to the fakes, from `before`: the API's pages of `listing`, every request,
/// and the registry's manifest requests (one per tag is what the listing saves).
struct Cost {
    pages: usize,
    all: usize,
    manifests: Vec<String>,
}

impl Cost {
    /// One listing of `pages` pages answered for every tag: no manifest asked of the
    /// registry, and a request per page plus a constant in all.
    fn one_listing(&self, pages: usize) {
        assert_eq!(self.pages, pages, "one listing");
        assert!(
            self.manifests.is_empty(),
            "{:?}",
            &self.manifests[..self.manifests.len().min(5)]
        );
        assert!(
            self.all <= TAGS.div_ceil(PAGE) + CONSTANT,
            "{} requests",
            self.all
        );
    }
}

fn cost(
    before: &(Vec<String>, Vec<String>),
    now: &(Vec<String>, Vec<String>),
    listing: &str,
) -> Cost {
    let api = &now.0[before.0.len()..];
    let front = &now.1[before.1.len()..];
    // Shown with --nocapture: what each phase cost at the fakes.
    eprintln!(
        "{} API requests, {} at the registry front",
        api.len(),
        front.len()
    );
    Cost {
        pages: api.iter().filter(|r| r.contains(listing)).count(),
        all: api.len() + front.len(),
        manifests: front
            .iter()
            .filter(|r| r.contains("/manifests/"))
            .cloned()
            .collect(),
    }
}

/// The summary's counts: (copied, present, unchanged).
fn counts(run: &Run) -> (usize, usize, usize) {
    let s = run.summary();
    let n = |what: &str| -> usize {
        let at = s.find(what).unwrap_or_else(|| panic!("{what} in {s}"));
        let head = s[..at].trim_end();
        head[head.rfind(' ').map_or(0, |i| i + 1)..]
            .parse()
            .unwrap()
    };
    let unchanged = if s.contains(" unchanged") {
        n(" unchanged")
    } else {
        0
    };
    (n(" images copied"), n(" already present"), unchanged)
}

/// The no-op, the recheck and the moved tag, against one source whose API the plan names;
/// `api` reads what that API's fake has seen, `listing` names its listing's requests.
async fn noop_recheck_and_move(
    plan_path: &std::path::Path,
    front: &Proxy,
    api: &dyn Fn() -> Vec<String>,
    listing: &str,
    pages: usize,
    moved: &dyn Fn() -> futures::future::BoxFuture<'static, String>,
    dst: &Registry,
) {
    let p = plan_path.to_str().unwrap();
    let run = ferry(&["run", p], ENV).await;
    run.assert_code(0);
    assert_eq!(counts(&run), (TAGS, 0, 0), "{}", run.summary());

    // The no-op: one request per page of the listing, a few more, and no manifest request.
    let before = seen(&api(), front);
    let run = ferry(&["run", p], ENV).await;
    run.assert_code(0);
    assert_eq!(counts(&run), (0, 0, TAGS), "{}", run.summary());
    let c = cost(&before, &seen(&api(), front), listing);
    c.one_listing(pages);

    // A recheck asks the source the same way (the target is checked whole, at the target).
    let before = seen(&api(), front);
    let run = ferry(&["run", "--recheck", p], ENV).await;
    run.assert_code(0);
    assert_eq!(counts(&run), (0, TAGS, 0), "{}", run.summary());
    let c = cost(&before, &seen(&api(), front), listing);
    c.one_listing(pages);

    // A tag moved at the source: the plan says so, from the same listing (the run's code
    // over overlays)...
    let digest = moved().await;
    let before = seen(&api(), front);
    let shown = ferry(&["plan", "--output", "json", p], ENV).await;
    shown.assert_code(0);
    let planned = json(&shown.stdout);
    let copies: Vec<&serde_json::Value> = planned["copies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] != "unchanged")
        .collect();
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(copies[0]["action"], "copy");
    assert!(copies[0]["target"].as_str().unwrap().ends_with(":t4242"));
    assert_eq!(cost(&before, &seen(&api(), front), listing).pages, pages);
    // ... and the next no-op copies it, and only it.
    let before = seen(&api(), front);
    let run = ferry(&["run", p], ENV).await;
    run.assert_code(0);
    assert_eq!(counts(&run), (1, 0, TAGS - 1), "{}", run.summary());
    assert!(
        run.stderr.contains(":t4242") && run.stderr.contains("updated: "),
        "{}",
        run.stderr
    );
    let (_, _, at) = dst.pusher().manifest("mirror/app", "t4242").await.unwrap();
    assert_eq!(at, digest);
    let c = cost(&before, &seen(&api(), front), listing);
    assert_eq!(c.pages, pages);
    // The moved image's manifest is read (by digest), and its config and layer blobs.
    assert!(
        c.all <= TAGS.div_ceil(PAGE) + CONSTANT + 4,
        "{} requests",
        c.all
    );
}

/// A Docker Hub source (its registry, the Hub API fake, the registry front) of 5,000 tags
/// over two manifests, the tags API 100 to a page; and a plan copying what `filter` selects
/// of it (a `tags = …` line, or nothing) to `dst`.
async fn hub_source(
    dir: &std::path::Path,
    dst: &Registry,
    filter: &str,
) -> (Registry, std::sync::Arc<HubFake>, Proxy, std::path::PathBuf) {
    let reg = Registry::start().await;
    let hub = std::sync::Arc::new(HubFake::start(&[], &[], PAGE, 1_000_000).await);
    let front = hub.registry_front(&reg).await;
    many_tags(&reg, &front.url, 2).await;
    let p = plan(
        dir,
        &format!(
            "version = 1\n[registry.\"docker.io\"]\nendpoint = \"{}\"\ninsecure = true\napi = \"{}\"\n{}\n[[copy]]\nfrom = \"docker.io/{REPO}\"\nto = \"{}/mirror/app\"\n{filter}\n",
            front.url,
            hub.url,
            insecure(&[dst]),
            dst.addr
        ),
    );
    (reg, hub, front, p)
}

/// What moves tag `t4242` at the source (through `url`) to a new image: returns its digest.
fn mover(url: &str) -> impl Fn() -> futures::future::BoxFuture<'static, String> {
    let url = url.to_string();
    move || {
        let url = url.clone();
        Box::pin(async move {
            let img = image(&[layer(42, 512)], "linux", "amd64", Format::Oci, "moved");
            Pusher::new(&url, None).push(REPO, "t4242", &img).await;
            img.digest
        })
    }
}

/// A Docker Hub source: 5,000 tags over two manifests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docker_hub_no_op_costs_a_request_per_page_of_tags() {
    let dst = Registry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (_reg, hub, front, p) = hub_source(dir.path(), &dst, "").await;
    let h = hub.clone();
    let api = move || h.requests();
    let moved = mover(&front.url);
    let listing = format!("GET /v2/repositories/{REPO}/tags/");
    let pages = TAGS.div_ceil(PAGE);
    noop_recheck_and_move(&p, &front, &api, &listing, pages, &moved, &dst).await;
}

/// Ten tags of the same 5,000: the listing's 50 pages would cost more than ten HEADs. Its
/// first page says how long it is, and ferry asks each tag instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_few_tags_of_a_long_listing_are_asked_one_by_one() {
    let dst = Registry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let filter = "tags = { include = ['^t1[0-9]$'] }";
    let (_reg, hub, front, p) = hub_source(dir.path(), &dst, filter).await;
    let p = p.to_str().unwrap();
    let listing = format!("GET /v2/repositories/{REPO}/tags/");
    for (run, expected) in [(1, (10, 0, 0)), (2, (0, 0, 10))] {
        let before = seen(&hub.requests(), &front);
        let done = ferry(&["run", p], ENV).await;
        done.assert_code(0);
        assert_eq!(counts(&done), expected, "run {run}: {}", done.summary());
        let c = cost(&before, &seen(&hub.requests(), &front), &listing);
        assert_eq!(c.pages, 1, "run {run}: the first page only");
        let heads = c
            .manifests
            .iter()
            .filter(|m| m.starts_with("HEAD "))
            .count();
        assert_eq!(heads, 10, "run {run}: {:?}", c.manifests);
    }
}

/// A GHCR source: 5,000 tags over 250 manifests, the package's versions 100 to a page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ghcr_no_op_costs_a_request_per_page_of_versions() {
    let (reg, dst) = (Registry::start().await, Registry::start().await);
    let scopes: &[&str] = &["read:packages"];
    let github = std::sync::Arc::new(GitHubFake::start(&[("ghp_noop", "bot", scopes)]).await);
    let front = github.registry_front(&reg.url).await;
    for (img, tags) in many_tags(&reg, &front.url, 250).await {
        github.tagged(REPO, &img.digest, &tags);
    }
    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n[registry.\"{a}\"]\ninsecure = true\nflavor = \"ghcr\"\napi = \"{api}\"\nauth = {{ username = \"bot\", password_env = \"GHCR_TOKEN\" }}\n{}\n[[copy]]\nfrom = \"{a}/{REPO}\"\nto = \"{}/mirror/app\"\n",
            insecure(&[&dst]),
            dst.addr,
            a = front.addr,
            api = github.url
        ),
    );
    let g = github.clone();
    let api = move || g.requests();
    let moved = mover(&front.url);
    let listing = "GET /orgs/myorg/packages/container/app/versions";
    noop_recheck_and_move(&p, &front, &api, listing, 3, &moved, &dst).await;
}

/// A GHCR target: a recheck (nothing trusted) reads the target's tags from the package's
/// versions, a page per 100 manifests, and each manifest and blob under them once, instead
/// of a request per tag; a tag someone moved at the target is still found and put back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ghcr_target_is_rechecked_from_its_versions() {
    const TARGET_TAGS: usize = 1000;
    let (src, reg) = (Registry::start().await, Registry::start().await);
    let scopes: &[&str] = &["read:packages", "write:packages"];
    let github = GitHubFake::start(&[("ghp_noop", "bot", scopes)]).await;
    let front = github.registry_front(&reg.url).await;
    let pusher = src.pusher();
    let images: Vec<Image> = (0..2)
        .map(|m| {
            image(
                &[layer(7, 512)],
                "linux",
                "amd64",
                Format::Oci,
                &format!("m{m}"),
            )
        })
        .collect();
    for (m, img) in images.iter().enumerate() {
        pusher.push(REPO, &format!("t{m}"), img).await;
        let rest: Vec<String> = (2..TARGET_TAGS)
            .filter(|n| n % 2 == m)
            .map(|n| format!("t{n}"))
            .collect();
        write_tags(&src, REPO, &img.digest, &rest);
    }
    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n{}\n[registry.\"{a}\"]\ninsecure = true\nflavor = \"ghcr\"\napi = \"{api}\"\nauth = {{ username = \"bot\", password_env = \"GHCR_TOKEN\" }}\n[[copy]]\nfrom = \"{}/{REPO}\"\nto = \"{a}/{REPO}\"\n",
            insecure(&[&src]),
            src.addr,
            a = front.addr,
            api = github.url
        ),
    );
    let p = p.to_str().unwrap();
    let run = ferry(&["run", p], ENV).await;
    run.assert_code(0);
    assert_eq!(counts(&run), (TARGET_TAGS, 0, 0), "{}", run.summary());

    let listing = "GET /orgs/myorg/packages/container/app/versions";
    let before = seen(&github.requests(), &front);
    let run = ferry(&["run", "--recheck", p], ENV).await;
    run.assert_code(0);
    assert_eq!(counts(&run), (0, TARGET_TAGS, 0), "{}", run.summary());
    let c = cost(&before, &seen(&github.requests(), &front), listing);
    assert_eq!(c.pages, 1);
    // Each of the two manifests read once (by digest) for the whole check; no tag asked.
    assert!(
        c.manifests.iter().all(|m| m.contains("/manifests/sha256:")),
        "{:?}",
        c.manifests
    );
    assert!(c.manifests.len() <= 2, "{:?}", c.manifests);
    assert!(c.all <= 1 + CONSTANT, "{} requests", c.all);

    // Someone moves t77 at the target: the next recheck finds it there and puts it back.
    let other = image(&[layer(8, 512)], "linux", "amd64", Format::Oci, "elsewhere");
    Pusher::new(&front.url, None)
        .push(REPO, "t77", &other)
        .await;
    let run = ferry(&["run", "--recheck", p], ENV).await;
    run.assert_code(0);
    assert_eq!(counts(&run), (1, TARGET_TAGS - 1, 0), "{}", run.summary());
    let (_, _, at) = Pusher::new(&front.url, None)
        .manifest(REPO, "t77")
        .await
        .unwrap();
    assert_eq!(at, images[1].digest);
}
