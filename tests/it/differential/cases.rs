//! Running cases: a case's rounds, many seeds in flight, and the tally that says what they
//! exercised.

use super::*;

/// Generate the case of `seed`, write its world, and play both rounds.
pub(super) async fn case(seed: u64, place: &Place<'_>, dir: &Path) -> Result<Tally, String> {
    let state = dir.join("state/ferry.db");
    let mut case = generate(seed, place, &state);
    // Sometimes every record is old by the second round: each is rechecked at its source (a
    // moved tag is copied again, `updated`) and at its target, whole. Drawn from a generator
    // of its own, so the rest of the case stays what the seed made before.
    let stale = Gen::new(seed ^ 0x0a11_57a1_e000_0000).percent(15);
    if stale {
        case.plan = case
            .plan
            .replacen("version = 1\n", "version = 1\nrecheck_after = \"1s\"\n", 1);
    }
    for repo in &case.world.repos {
        case.world.write(place, repo).await;
    }
    let mut tally = Tally {
        cases: 1,
        ..Tally::default()
    };
    let Some(first) = round(&Round::first(seed, &case.plan), place, dir, &mut tally).await? else {
        return Ok(tally);
    };
    // What happens between the rounds draws from a generator of its own, so the first round's
    // case stays the same whatever is added here.
    let mut g = Gen::new(seed ^ 0x5eed_5eed_5eed_5eed);
    let mut removed = None;
    let mut second_plan = None;
    let mut lost = None;
    match case.between {
        Between::Nothing => {
            // Sometimes a piece below a placed tag goes, as a clean-up of "untagged" versions
            // or a hand would take it (issue 21): a run that checks the target whole puts it
            // back; one that trusts a fresh record does not look. Drawn from a generator of
            // its own, so the rest of the case stays what the seed made before.
            let mut pg = Gen::new(seed ^ 0x9a27_0000_0000_0bad);
            if pg.percent(50) {
                lost = place.take_part(&mut pg, &first).await;
                // A fresh record trusted without looking may name what went with it.
                removed = lost.as_ref().map(|p| Removed {
                    target: p.target.clone(),
                    digest: p.digest.clone(),
                });
            }
        }
        Between::TargetTagRemoved => {
            let placed: Vec<&Row> = first
                .iter()
                .filter(|r| {
                    ["copied", "present", "unchanged"].contains(&r.action.as_str())
                        && split_target(&r.target).tag.is_some()
                })
                .collect();
            if !placed.is_empty() {
                let row = placed[g.below(placed.len())];
                let digest = row.placed_digest().expect("placed").to_string();
                place.remove(&row.target, &digest).await;
                removed = Some(Removed {
                    target: row.target.clone(),
                    digest,
                });
            }
        }
        Between::SourceTagMoved => {
            let sources: Vec<usize> = (0..case.world.repos.len())
                .filter(|&i| case.world.repos[i].name.starts_with("src/"))
                .collect();
            let at = *g.pick(&sources);
            let pooled = case.world.pool.len();
            let repo = &mut case.world.repos[at];
            let tag = g.below(repo.tags.len());
            repo.tags[tag].1 = (repo.tags[tag].1 + 1 + g.below(pooled - 1)) % pooled;
            case.world.write(place, &case.world.repos[at]).await;
        }
        Between::PlanChanged => {
            second_plan = Some(random_plan(&mut g, seed, place, &state, &case.world))
        }
    }
    *tally
        .between
        .entry(format!("{:?}", case.between))
        .or_default() += 1;
    if stale {
        *tally.between.entry("records stale".into()).or_default() += 1;
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    }
    let second = Round {
        seed,
        number: 2,
        plan: second_plan.as_deref().unwrap_or(&case.plan),
        recheck: case.recheck,
        after: case.between,
        removed: removed.as_ref(),
        meddle: None,
    };
    let rows = round(&second, place, dir, &mut tally).await?;
    if let Some(part) = &lost {
        *tally
            .between
            .entry("target part removed".into())
            .or_default() += 1;
        // Checked whole (records stale, or `--recheck`), an item reaching it put it back.
        let checked = (stale || case.recheck)
            && rows.as_ref().is_some_and(|rows| {
                rows.iter().any(|r| {
                    r.target == part.target && ["copied", "present"].contains(&r.action.as_str())
                })
            });
        if checked && !place.has_part(part).await {
            return Err(format!(
                "seed {seed}: {} of {} was removed at the target, and a run that checked it whole did not put it back",
                part.digest, part.target
            ));
        }
    }
    if second_plan.is_some() {
        // Back to the first plan: what the other plan's retention deleted, the checkpoint
        // must have forgotten, so the copies put it back.
        let third = Round {
            number: 3,
            plan: &case.plan,
            recheck: false,
            removed: None,
            ..second
        };
        round(&third, place, dir, &mut tally).await?;
    }
    Ok(tally)
}

pub(super) async fn layout_case(seed: u64) -> Result<Tally, String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let place = Place::Layouts {
        root: dir.path().to_path_buf(),
    };
    case(seed, &place, dir.path()).await
}

pub(super) async fn registry_case(
    seed: u64,
    sources: &Registry,
    targets: &Registry,
) -> Result<Tally, String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let place = Place::Registries {
        sources,
        targets,
        prefix: format!("c{seed}"),
    };
    case(seed, &place, dir.path()).await
}

/// The count a long run takes from `FERRY_DIFF_CASES`, and its first seed from
/// `FERRY_DIFF_SEED`.
pub(super) fn long_run(default_cases: u64) -> std::ops::Range<u64> {
    let env = |k: &str| std::env::var(k).ok().map(|v| v.parse().expect(k));
    let first = env("FERRY_DIFF_SEED").unwrap_or(LONG_FIRST_SEED);
    first..first + env("FERRY_DIFF_CASES").unwrap_or(default_cases)
}

/// Run the cases, several at a time; fail with every failing seed, the first one in full.
pub(super) async fn run_cases<F, Fut>(what: &str, seeds: std::ops::Range<u64>, case: F) -> Tally
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = Result<Tally, String>>,
{
    let started = Instant::now();
    let results: Vec<(u64, Result<Tally, String>)> = futures::stream::iter(seeds.clone())
        .map(|seed| {
            // A panic in a helper names no seed: catch it and say which case it was.
            let run = std::panic::AssertUnwindSafe(case(seed)).catch_unwind();
            async move {
                let result = run.await.unwrap_or_else(|panic| {
                    let what = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    Err(format!("seed {seed}: panicked: {what}"))
                });
                (seed, result)
            }
        })
        .buffer_unordered(CASES_IN_FLIGHT)
        .collect()
        .await;
    let mut tally = Tally::default();
    let mut failed: Vec<(u64, String)> = Vec::new();
    for (seed, result) in results {
        match result {
            Ok(t) => tally.add(t),
            Err(e) => failed.push((seed, e)),
        }
    }
    failed.sort_by_key(|(seed, _)| *seed);
    eprintln!(
        "differential {what}: seeds {seeds:?}, {} cases in {:.1} s: {} refused (exit 2), {} rounds, items {:?}, {} deletions, {} failures, between rounds {:?}; {} failed",
        tally.cases,
        started.elapsed().as_secs_f64(),
        tally.refused,
        tally.rounds,
        tally.actions,
        tally.deletions,
        tally.failures,
        tally.between,
        failed.len()
    );
    for (_, failure) in failed.iter().skip(1) {
        eprintln!("{failure}\n");
    }
    if let Some((_, first)) = failed.first() {
        panic!(
            "plan and run disagree for seeds {:?} (all but the first are printed above); the first:\n{first}",
            failed.iter().map(|(s, _)| *s).collect::<Vec<_>>()
        );
    }
    tally
}

/// The generator must make plans that run, and exercise every outcome: a generator that
/// drifted into refused plans or empty worlds would pass while testing nothing.
pub(super) fn assert_exercised(tally: &Tally) {
    assert!(
        tally.refused * 10 <= tally.cases,
        "{} of {} plans refused: reshape the generator",
        tally.refused,
        tally.cases
    );
    for action in [
        "copied",
        "copied, updated",
        "present",
        "unchanged",
        "skipped",
        "failed",
    ] {
        assert!(
            tally.actions.get(action).is_some_and(|n| *n > 0),
            "no item {action} in {} cases: {:?}",
            tally.cases,
            tally.actions
        );
    }
    assert!(tally.deletions > 0, "no deletion in {} cases", tally.cases);
}
