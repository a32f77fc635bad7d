//! One round of a case: `ferry plan`, then `ferry run`, and the comparison of what the plan
//! said with what the run did and what the places hold.

use super::*;

/// One item, as the plan predicts it and as the report tells it (in the report's words).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Row {
    pub(super) source: String,
    pub(super) target: String,
    pub(super) action: String,
    pub(super) digest: Option<String>,
    pub(super) rewritten: Option<String>,
    /// `old → new`: the source moved since the checkpoint recorded it.
    pub(super) updated: Option<String>,
    /// What the target lacked of an image it held, put back.
    pub(super) put_back: Option<String>,
}

impl Row {
    pub(super) fn from_json(v: &Value, action: &str) -> Row {
        let text = |k: &str| v[k].as_str().map(str::to_string);
        Row {
            source: text("source").expect("source"),
            target: text("target").expect("target"),
            action: action.to_string(),
            digest: text("digest"),
            rewritten: text("rewritten"),
            updated: text("updated"),
            put_back: v["put_back"].as_array().map(|a| format!("{a:?}")),
        }
    }

    /// Where the target's tag points after the run: the new index where it was rewritten.
    pub(super) fn placed_digest(&self) -> Option<&str> {
        match &self.rewritten {
            Some(r) => r.split(" → ").nth(1),
            None => self.digest.as_deref(),
        }
    }
}

/// What the cases exercised, summed, to keep the generator honest.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) cases: u64,
    /// Cases whose plan was refused (exit 2) for its static conflicts.
    pub(super) refused: u64,
    /// Rounds compared (a refused plan's are not).
    pub(super) rounds: u64,
    pub(super) actions: BTreeMap<String, u64>,
    pub(super) deletions: u64,
    pub(super) failures: u64,
    /// What changed before second rounds.
    pub(super) between: BTreeMap<String, u64>,
}

impl Tally {
    pub(super) fn add(&mut self, other: Tally) {
        self.cases += other.cases;
        self.refused += other.refused;
        self.rounds += other.rounds;
        for (k, v) in other.actions {
            *self.actions.entry(k).or_default() += v;
        }
        self.deletions += other.deletions;
        self.failures += other.failures;
        for (k, v) in other.between {
            *self.between.entry(k).or_default() += v;
        }
    }
}

/// A tag taken away by hand between the rounds.
/// A piece below a tag (a child manifest, a blob) taken away at a target between rounds.
pub(super) struct Part {
    /// The tag's target, as the report writes it.
    pub(super) target: String,
    /// Its repository, as the plan writes it.
    pub(super) repo: String,
    pub(super) digest: String,
    /// A child manifest (else a blob).
    pub(super) manifest: bool,
}

pub(super) struct Removed {
    pub(super) target: String,
    pub(super) digest: String,
}

/// One round of a case: `ferry plan`, then `ferry run`, compared.
pub(super) struct Round<'r> {
    pub(super) seed: u64,
    pub(super) number: usize,
    pub(super) plan: &'r str,
    pub(super) recheck: bool,
    /// What changed since the round before.
    pub(super) after: Between,
    pub(super) removed: Option<&'r Removed>,
    /// Called between `ferry plan` and `ferry run`: the checker's own test changes the world
    /// there, which the comparison must catch.
    pub(super) meddle: Option<&'r (dyn Fn() + Sync)>,
}

impl Round<'_> {
    pub(super) fn first<'r>(seed: u64, plan: &'r str) -> Round<'r> {
        Round {
            seed,
            number: 1,
            plan,
            recheck: false,
            after: Between::Nothing,
            removed: None,
            meddle: None,
        }
    }
}

/// Play one round. `Ok(None)`: both refused the plan.
pub(super) async fn round(
    r: &Round<'_>,
    place: &Place<'_>,
    dir: &Path,
    tally: &mut Tally,
) -> Result<Option<Vec<Row>>, String> {
    let plan_path = dir.join("plan.toml");
    std::fs::write(&plan_path, r.plan).expect("write plan");
    let state = dir.join("state/ferry.db");
    let report = dir.join(format!("report-{}.json", r.number));
    let (plan_path, state, report) = (
        plan_path.to_str().unwrap(),
        state.to_str().unwrap(),
        report.to_str().unwrap(),
    );
    let mut plan_args = vec!["plan", "--output", "json", plan_path, "--state", state];
    let mut run_args = vec!["run", plan_path, "--state", state, "--report", report];
    if r.recheck {
        plan_args.push("--recheck");
        run_args.push("--recheck");
    }
    let before = mark(place).await;
    let planned = ferry(&plan_args, &[]).await;
    let plan_asked = asked_since_mark(place, before).await;
    if let Some(meddle) = r.meddle {
        meddle();
    }
    let before = mark(place).await;
    let ran = ferry(&run_args, &[]).await;
    let run_asked = asked_since_mark(place, before).await;
    let fail = |what: String| {
        Err(place.short(&format!(
            "seed {} round {} ({:?} before it{}): {what}\n--- plan\n{}\n--- ferry plan (exit {})\n{}{}\n--- ferry run (exit {})\n{}{}",
            r.seed,
            r.number,
            r.after,
            if r.recheck { ", --recheck" } else { "" },
            r.plan,
            planned.code,
            planned.stdout,
            planned.stderr,
            ran.code,
            ran.stdout,
            ran.stderr
        )))
    };
    if planned.code != ran.code {
        return fail(format!(
            "ferry plan exits {}, ferry run {}",
            planned.code, ran.code
        ));
    }
    if ran.code == 2 {
        if r.number == 1 {
            tally.refused += 1;
        }
        return Ok(None);
    }
    if ran.code > 1 {
        return fail(format!("exit {}", ran.code));
    }
    let predicted: Value = match serde_json::from_str(&planned.stdout) {
        Ok(v) => v,
        Err(e) => return fail(format!("the plan's JSON: {e}")),
    };
    let reported: Value = match std::fs::read(report).map(|b| serde_json::from_slice(&b)) {
        Ok(Ok(v)) => v,
        other => return fail(format!("the report: {other:?}")),
    };

    let mut plan_rows = Vec::new();
    let mut subjects: BTreeMap<String, String> = BTreeMap::new();
    for c in predicted["copies"].as_array().expect("copies") {
        if c.get("source").is_none() {
            // A rule that could not be resolved: counted with the failures.
            continue;
        }
        if !c["uncertain"].is_null() {
            // Only sparse indexes into a registry, and the referrers that wait for them, are
            // uncertain; the generator makes none.
            return fail(format!(
                "an uncertain item the generator should not make: {c}"
            ));
        }
        let row = Row::from_json(c, reported_action(c["action"].as_str().expect("action")));
        if let Some(s) = c["subject"].as_str() {
            subjects.insert(row.target.clone(), s.to_string());
        }
        plan_rows.push(row);
    }
    let mut run_rows: Vec<Row> = reported["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| Row::from_json(i, i["action"].as_str().expect("action")))
        .collect();
    plan_rows.sort();
    run_rows.sort();
    if plan_rows != run_rows {
        let show = |rows: Vec<&Row>| -> String {
            rows.iter()
                .map(|r| {
                    format!(
                        "  {} {} -> {} {}{}\n",
                        r.action,
                        r.source,
                        r.target,
                        r.digest.as_deref().unwrap_or("-"),
                        r.rewritten
                            .as_deref()
                            .map(|w| format!(" (rewritten {w})"))
                            .unwrap_or_default()
                    )
                })
                .collect()
        };
        return fail(format!(
            "items differ\nonly in the plan:\n{}only in the run:\n{}",
            show(plan_rows.iter().filter(|r| !run_rows.contains(r)).collect()),
            show(run_rows.iter().filter(|r| !plan_rows.contains(r)).collect()),
        ));
    }

    let mut plan_deletions = BTreeSet::new();
    for r in predicted["retention"].as_array().expect("retention") {
        if !r["held_back"].is_null() {
            continue;
        }
        for d in r["decisions"].as_array().into_iter().flatten() {
            if d["action"] == "delete" {
                plan_deletions.insert((
                    r["repository"].as_str().unwrap().to_string(),
                    d["digest"].as_str().unwrap().to_string(),
                ));
            }
        }
    }
    let run_deletions: BTreeSet<(String, String)> = reported["deletions"]
        .as_array()
        .expect("deletions")
        .iter()
        .map(|d| {
            (
                d["repository"].as_str().unwrap().to_string(),
                d["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    if plan_deletions != run_deletions {
        return fail(format!(
            "deletions differ\nonly in the plan: {:?}\nonly in the run: {:?}",
            plan_deletions
                .difference(&run_deletions)
                .collect::<Vec<_>>(),
            run_deletions
                .difference(&plan_deletions)
                .collect::<Vec<_>>(),
        ));
    }
    let failures = |v: &Value| v["failures"].as_array().map_or(0, Vec::len);
    if failures(&predicted) != failures(&reported) {
        return fail(format!(
            "{} failures planned, {} reported:\n{:#}\n{:#}",
            failures(&predicted),
            failures(&reported),
            predicted["failures"],
            reported["failures"]
        ));
    }

    if let Err(e) = check_placed(place, &run_rows, &subjects, r.removed).await {
        return fail(e);
    }
    // Issue 24: where the run wrote nothing, the plan sent what it sent (the world changed
    // in between only in the checker's own test).
    if r.meddle.is_none() {
        if let Err(e) = same_requests(plan_asked.as_ref(), run_asked.as_ref()) {
            return fail(e);
        }
    }

    tally.rounds += 1;
    for row in &run_rows {
        *tally.actions.entry(row.action.clone()).or_default() += 1;
        // A source that moved since the checkpoint recorded it, found by a recheck (issue 21).
        if row.updated.is_some() {
            *tally.actions.entry("copied, updated".into()).or_default() += 1;
        }
    }
    tally.deletions += run_deletions.len() as u64;
    tally.failures += failures(&reported) as u64;
    Ok(Some(run_rows))
}

/// Is every item the report calls copied, present or unchanged at its target? A tag must point
/// at the item's digest (the new one where the index was rewritten), a digest's manifest must
/// be there, and a referrer copied by digest must be listed in its subject's fallback index
/// (`subjects`: the plan's subject of each such target).
pub(super) async fn check_placed(
    place: &Place<'_>,
    rows: &[Row],
    subjects: &BTreeMap<String, String>,
    removed: Option<&Removed>,
) -> Result<(), String> {
    for row in rows {
        if !["copied", "present", "unchanged"].contains(&row.action.as_str()) {
            continue;
        }
        let want = row.placed_digest().expect("a placed item has a digest");
        // A record trusted without asking the target (documented: for `recheck_after`) may
        // name a tag another tool removed: the run says unchanged and the tag stays away.
        if row.action == "unchanged"
            && removed.is_some_and(|gone| place.took_with(gone, &row.target, want))
        {
            continue;
        }
        let t = split_target(&row.target);
        match place.lookup(&row.target).await {
            Some(d) if t.digest.is_some() || d == want => {}
            found => {
                return Err(format!(
                    "{} {} -> {}: the report says it is there as {want}; found {found:?}",
                    row.action, row.source, row.target
                ))
            }
        }
        if let (Some(subject), Some(digest)) = (subjects.get(&row.target), t.digest) {
            let listed = place.fallback_entries(t.repo, subject).await;
            if !listed.iter().any(|d| d == digest) {
                return Err(format!(
                    "{} {}: not listed in the fallback index of its subject {subject} at the target (it lists {listed:?})",
                    row.action, row.target
                ));
            }
        }
    }
    Ok(())
}
