//! Issue 25, part 2: Docker Hub's pull budget, planned and spent. Against the Docker Hub
//! fake's registry front (a real registry behind it, manifest GETs counted as pulls against a
//! budget whose headers every manifest response carries), `ferry plan` says how many pulls
//! the run needs and what the budget shows, and the run spends exactly that many: no pull
//! twice, whole repositories, parked (exit 75) or waiting when the budget runs out, and a
//! re-run that continues.

use crate::common::*;
use crate::harness::*;

/// The images of a Docker Hub source: (repository, the tags naming one image).
type Images<'a> = &'a [(&'a str, &'a [&'a str])];

/// A Docker Hub source holding `images` behind the Hub fake's registry front, which counts
/// pulls against `limit` per `window`; and a plan copying each repository (in the order
/// they come) to `dst/mirror/NAME`.
async fn hub_with(
    dir: &std::path::Path,
    dst: &Registry,
    images: Images<'_>,
    limit: u64,
    window: std::time::Duration,
) -> (Registry, HubFake, Proxy, std::path::PathBuf) {
    let reg = Registry::start().await;
    let hub = HubFake::start(&[], &[], 100, 1_000_000).await;
    let front = hub.registry_front(&reg).await;
    let pusher = Pusher::new(&front.url, None);
    let mut rules = String::new();
    for (i, (repo, tags)) in images.iter().enumerate() {
        let label = format!("{repo}:{}", tags[0]);
        let img = image(
            &[layer(250 + i as u64, 300)],
            "linux",
            "amd64",
            Format::Oci,
            &label,
        );
        for tag in *tags {
            pusher.push(repo, tag, &img).await;
        }
        if !images[..i].iter().any(|(r, _)| r == repo) {
            let name = repo.rsplit('/').next().unwrap();
            rules.push_str(&format!(
                "[[copy]]\nfrom = \"docker.io/{repo}\"\nto = \"{}/mirror/{name}\"\n",
                dst.addr
            ));
        }
    }
    hub.limit_pulls(limit, window);
    let text = format!(
        "version = 1\n[registry.\"docker.io\"]\nendpoint = \"{}\"\ninsecure = true\napi = \"{}\"\n{}\n{rules}",
        front.url,
        hub.url,
        insecure(&[dst]),
    );
    (reg, hub, front, plan(dir, &text))
}

/// A Docker Hub source of two repositories (three images, four tags; `myorg/web`'s two tags
/// name one image), the front counting pulls against `limit` per hour; and a plan copying
/// `myorg/*` to `dst`.
async fn hub_source(
    dir: &std::path::Path,
    dst: &Registry,
    limit: u64,
) -> (Registry, HubFake, Proxy, std::path::PathBuf) {
    let images: Images = &[
        ("myorg/api", &["v1"]),
        ("myorg/api", &["v2"]),
        ("myorg/web", &["v1", "latest"]),
    ];
    let hour = std::time::Duration::from_secs(3600);
    hub_with(dir, dst, images, limit, hour).await
}

/// Issue 25 part 2: plan predicts the pulls exactly and shows the budget the headers give.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_predicts_the_pulls_the_run_spends() {
    let dst = Registry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (_reg, hub, _front, p) = hub_source(dir.path(), &dst, 100).await;
    let p = p.to_str().unwrap();
    let planned = ferry(&["plan", p, "--output", "json"], &[]).await;
    planned.assert_code(0);
    let out = json(&planned.stdout);
    let pulls = &out["registries"]["docker.io"]["pulls"];
    let needed = pulls["needed"].as_u64().expect("pulls needed");
    assert!(needed >= 3, "{out}");
    assert_eq!(pulls["limit"], 100, "{out}");
    assert_eq!(pulls["window_seconds"], 3600, "{out}");
    // The plan reads what the run reads: the budget it shows is what is left after it.
    let spent_by_plan = hub.pulls().len() as u64;
    assert_eq!(
        pulls["remaining"].as_u64(),
        Some(100 - spent_by_plan),
        "{out}"
    );
    let expected = needed as f64 / 100.0 * 3600.0;
    assert_eq!(pulls["seconds_at_pull_limit"].as_f64(), Some(expected));
    // The text says the same.
    let text = ferry(&["plan", p], &[]).await;
    assert!(
        text.stdout.contains(&format!("{needed} pulls (budget ")),
        "{}",
        text.stdout
    );
    hub.reset_pull_window();
    let before = hub.pulls().len();
    let run = ferry(&["run", p], &[]).await;
    run.assert_code(0);
    let during = &hub.pulls()[before..];
    assert_eq!(during.len() as u64, needed, "{during:?}");
    // Two tags of one image (myorg/web's v1 and latest) cost one pull: three images, three
    // pulls, in the plan and in the run.
    assert_eq!(needed, 3, "{out}");
    let web = during.iter().filter(|p| p.contains("/myorg/web/")).count();
    assert_eq!(web, 1, "{during:?}");
}

/// Where the source does not count pulls, the plan says nothing of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_names_no_pulls_where_none_are_counted() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let img = image(&[layer(260, 300)], "linux", "amd64", Format::Oci, "plain");
    Pusher::new(&src.url, None).push("app", "v1", &img).await;
    let dir = tempfile::tempdir().unwrap();
    let rule = copy_section(
        &format!("{}/app", src.addr),
        &format!("{}/app", dst.addr),
        "",
    );
    let p = plan(dir.path(), &plan_text(&[&src, &dst], &[rule]));
    let planned = ferry(&["plan", p.to_str().unwrap(), "--output", "json"], &[]).await;
    planned.assert_code(0);
    let out = json(&planned.stdout);
    let regs = out["registries"].as_object().expect("registries");
    assert!(regs.values().all(|r| r.get("pulls").is_none()), "{out}");
}

/// The images of the budget tests: six pulls (`myorg/web`'s two tags name one image).
const SIX_PULLS: Images = &[
    ("myorg/api", &["v1"]),
    ("myorg/api", &["v2"]),
    ("myorg/api", &["v3"]),
    ("myorg/web", &["v1", "latest"]),
    ("myorg/db", &["v1"]),
    ("myorg/db", &["v2"]),
];

/// Issue 25 part 2: a run over more images than the budget parks what it cannot finish (exit
/// 75, the resume time said, the report's items `parked`), starts no repository it could not
/// finish, and the re-run after the window completes; over both runs the pulls are the plan's
/// prediction, none spent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_budget_parks_whole_repositories_and_the_rerun_completes() {
    let dst = Registry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let hour = std::time::Duration::from_secs(3600);
    let (_reg, hub, _front, p) = hub_with(dir.path(), &dst, SIX_PULLS, 100, hour).await;
    let planned = ferry(&["plan", p.to_str().unwrap(), "--output", "json"], &[]).await;
    planned.assert_code(0);
    let out = json(&planned.stdout);
    let needed = out["registries"]["docker.io"]["pulls"]["needed"].as_u64();
    assert_eq!(needed, Some(6), "{out}");
    // Five pulls an hour, counted from now.
    hub.limit_pulls(5, hour);

    let (run, report) = run_reported(&p, &[]).await;
    run.assert_code(75);
    assert!(
        run.stderr.contains(
            "Docker Hub pull budget spent: 1 of 5 pulls left for docker.io; resume after "
        ) && run
            .stderr
            .contains(" UTC (ratelimit window of 3600 s); 2 images parked"),
        "{}",
        run.stderr
    );
    assert_eq!(report["outcome"], "parked", "{report}");
    let budget = &report["pull_budget"][0];
    assert_eq!(
        (
            &budget["registry"],
            &budget["remaining"],
            &budget["limit"],
            &budget["parked"]
        ),
        (&"docker.io".into(), &1.into(), &5.into(), &2.into()),
        "{report}"
    );
    let actions = |report: &serde_json::Value, repo: &str| -> Vec<String> {
        let items = report["items"].as_array().expect("items");
        let of = items
            .iter()
            .filter(|i| i["source"].as_str().unwrap().contains(repo));
        of.map(|i| i["action"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        actions(&report, "myorg/db:"),
        ["parked", "parked"],
        "{report}"
    );
    assert_eq!(report["totals"]["failed"], 0, "{report}");
    // Whole repositories: api and web copied, db not started (no pull, nothing at the target).
    let target = Pusher::new(&dst.url, None);
    assert_eq!(target.tags("mirror/api").await, ["v1", "v2", "v3"]);
    assert_eq!(target.tags("mirror/web").await, ["latest", "v1"]);
    assert!(target.tags("mirror/db").await.is_empty());
    let first = hub.pulls();
    assert_eq!(first.len(), 4, "{first:?}");
    assert!(!first.iter().any(|p| p.contains("/myorg/db/")), "{first:?}");

    // The window is over: the same command continues, and reads nothing it copied again.
    hub.reset_pull_window();
    let (rerun, report) = run_reported(&p, &[]).await;
    rerun.assert_code(0);
    assert_eq!(
        actions(&report, "myorg/db:"),
        ["copied", "copied"],
        "{report}"
    );
    assert_eq!(target.tags("mirror/db").await, ["v1", "v2"]);
    let pulls = hub.pulls();
    assert_eq!(
        pulls.len() as u64,
        6,
        "the plan's prediction, over both runs: {pulls:?}"
    );
    let distinct: std::collections::BTreeSet<_> = pulls.iter().collect();
    assert_eq!(distinct.len(), pulls.len(), "a pull spent twice: {pulls:?}");
}

/// Issue 25 part 2: `--wait-for-budget` waits for the window (said, with the time) instead
/// of parking, and completes in one invocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_budget_waits_for_the_window_and_completes() {
    let dst = Registry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let images: Images = &[
        ("myorg/api", &["v1"]),
        ("myorg/api", &["v2"]),
        ("myorg/web", &["v1"]),
    ];
    let window = std::time::Duration::from_secs(3);
    let (_reg, hub, _front, p) = hub_with(dir.path(), &dst, images, 2, window).await;
    let started = std::time::Instant::now();
    let (run, report) = run_reported(&p, &["--wait-for-budget"]).await;
    run.assert_code(0);
    assert!(
        run.stderr.contains("waiting for the pull budget: 0 of 2 pulls left for docker.io, 1 needed by docker.io/myorg/web; going on at ")
            && run.stderr.contains("(--wait-for-budget)"),
        "{}",
        run.stderr
    );
    assert!(started.elapsed() >= std::time::Duration::from_secs(2));
    assert_eq!(report["outcome"], "succeeded", "{report}");
    let target = Pusher::new(&dst.url, None);
    assert_eq!(target.tags("mirror/web").await, ["v1"]);
    assert_eq!(hub.pulls().len(), 3, "{:?}", hub.pulls());
}
