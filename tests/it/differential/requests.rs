//! Issue 24, "Plan and status stay cheap": `ferry plan` asks each registry what the run would
//! ask, request for request (a HEAD where the run sends a HEAD), not a GET per tag. Checked in
//! every round of the differential test over registries where the run writes nothing (what
//! it writes, the plan keeps in memory and answers itself), and here on a fresh mirror.

use super::*;

/// What a registry was asked, by method and resource (`manifests`, `blobs`, `tags`, …).
type Asked = BTreeMap<(String, String), usize>;

/// The resource a request names: the path segment after the repository (`manifests`,
/// `blobs`, `tags`, `referrers`), or the path itself for one that names none (`/v2/`,
/// `/v2/_catalog`).
fn resource(uri: &str) -> String {
    let path = uri.split('?').next().unwrap_or(uri);
    let parts: Vec<&str> = path.split('/').collect();
    let named = ["manifests", "blobs", "tags", "referrers"];
    match parts.iter().rev().find(|p| named.contains(p)) {
        Some(r) => r.to_string(),
        None => path.to_string(),
    }
}

/// What `reg` was asked since it had answered `before` requests.
async fn asked_since(reg: &Registry, before: usize) -> Asked {
    reg.sync_log().await;
    let mut asked = Asked::new();
    for r in reg.requests().into_iter().skip(before) {
        *asked.entry((r.method, resource(&r.uri))).or_default() += 1;
    }
    asked
}

async fn answered(reg: &Registry) -> usize {
    reg.sync_log().await;
    reg.requests().len()
}

/// `ferry ARGS…` once, and what it asked the source and the target.
async fn asked_by(args: &[&str], src: &Registry, dst: &Registry) -> (Run, Asked, Asked) {
    let (s, d) = (answered(src).await, answered(dst).await);
    let run = ferry(args, &[]).await;
    (run, asked_since(src, s).await, asked_since(dst, d).await)
}

/// After a cold run, a wildcard mirror of mutable and release tags, multi-arch indexes and a
/// signature: the plan sends each registry the requests the no-op run sends, method by
/// method. (Before issue 24 the plan read each mutable tag whole, a GET where the run sends a
/// HEAD.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_of_a_fresh_mirror_asks_what_the_no_op_run_asks() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    populate(&src, "org").await;
    let dir = tempfile::tempdir().unwrap();
    let rule = copy_section(
        &format!("{}/org/*", src.addr),
        &format!("{}/mirror/*", dst.addr),
        "",
    );
    let p = plan(dir.path(), &plan_text(&[&src, &dst], &[rule]));
    let p = p.to_str().unwrap();
    ferry(&["run", p], &[]).await.assert_code(0);

    let (planned, plan_src, plan_dst) = asked_by(&["plan", p], &src, &dst).await;
    planned.assert_code(0);
    let (run, run_src, run_dst) = asked_by(&["run", p], &src, &dst).await;
    run.assert_code(0);
    assert!(
        run.summary().contains("unchanged"),
        "a no-op: {}",
        run.stdout
    );
    let heads = run_src.get(&("HEAD".to_string(), "manifests".to_string()));
    assert!(
        heads.is_some_and(|n| *n > 0),
        "the run asks the source: {run_src:?}"
    );
    assert_eq!(plan_src, run_src, "at the source: plan, then run");
    assert_eq!(plan_dst, run_dst, "at the target: plan, then run");
}

/// Where a case's registries' logs stood before one `ferry` process: the lines each had.
pub(super) struct Mark {
    sources: usize,
    targets: usize,
}

/// What one `ferry` process asked a case's registries: by registry (`sources`, `targets`),
/// method and resource, counting only requests that name the case's repositories (cases in
/// flight share the two registries; a catalog or `/v2/` request names none).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct CaseAsked(BTreeMap<(&'static str, String, String), usize>);

impl CaseAsked {
    /// Did the process write anything (then the plan, which keeps writes in memory, asks
    /// less)?
    fn wrote(&self) -> bool {
        let writes = ["PUT", "POST", "PATCH", "DELETE"];
        self.0.keys().any(|(_, m, _)| writes.contains(&m.as_str()))
    }
}

/// Where the logs stand (`None`: the case runs over layouts, which log nothing).
pub(super) async fn mark(place: &Place<'_>) -> Option<Mark> {
    let Place::Registries {
        sources, targets, ..
    } = place
    else {
        return None;
    };
    Some(Mark {
        sources: answered(sources).await,
        targets: answered(targets).await,
    })
}

/// What the case asked since `mark`.
pub(super) async fn asked_since_mark(place: &Place<'_>, mark: Option<Mark>) -> Option<CaseAsked> {
    let (
        Place::Registries {
            sources,
            targets,
            prefix,
        },
        Some(mark),
    ) = (place, mark)
    else {
        return None;
    };
    let named = format!("/v2/{prefix}/");
    let mut asked = BTreeMap::new();
    for (which, reg, from) in [
        ("sources", *sources, mark.sources),
        ("targets", *targets, mark.targets),
    ] {
        reg.sync_log().await;
        for r in reg.requests().into_iter().skip(from) {
            if r.uri.starts_with(&named) {
                *asked
                    .entry((which, r.method, resource(&r.uri)))
                    .or_default() += 1;
            }
        }
    }
    Some(CaseAsked(asked))
}

/// A round where the run wrote nothing: the plan must have asked exactly what it asked.
pub(super) fn same_requests(
    plan: Option<&CaseAsked>,
    run: Option<&CaseAsked>,
) -> Result<(), String> {
    match (plan, run) {
        (Some(plan), Some(run)) if !run.wrote() && plan != run => Err(format!(
            "the run wrote nothing, yet the plan asked other requests (registry, method, resource: count)\nplan: {:?}\nrun:  {:?}",
            plan.0, run.0
        )),
        _ => Ok(()),
    }
}
