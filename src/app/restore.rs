//! `ferry restore PLAN`: put back what a run's retention and pruning deleted. Reads the
//! deletions the checkpoint kept ([`State::deletions`]), narrows them (`--repository`, `--tag`,
//! with each image's children and referrers: [`undo::select`]), puts them back through the
//! plan's registries ([`undo::restore`]: bottom-up, then the tags) and records each one put
//! back, so a second restore changes nothing. The checkpoint's lock is held throughout: no run
//! of the same state deletes meanwhile.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;

use serde::Serialize;

use super::exit;
use super::lines::{emit, log_line};
use super::run::registries;
use super::state_file::{state_path, StateUnusable};
use crate::cli::{Output, RestoreArgs};
use crate::plan::Plan;
use crate::reference::Digest;
use crate::registry::{Manifest, Registry};
use crate::report::hints::chain as error_chain;
use crate::report::plural;
use crate::retention::undo::{self, Put, Restored, Stored, TagPut};
use crate::state::{DeletionRecord, RunId, State, Write};

pub async fn restore(args: RestoreArgs) -> anyhow::Result<ExitCode> {
    let plan = Plan::load(&args.plan)?;
    let json = args.log_format == crate::cli::LogFormat::Json;
    let path = state_path(args.state.as_deref(), Some(&plan));
    if !path.exists() {
        return Err(StateUnusable::Missing(path).into());
    }
    let wanted_run = args.run;
    let (state, deletions) = tokio::task::spawn_blocking(move || {
        let state = State::open(&path).map_err(StateUnusable::Open)?;
        let deletions = state.deletions(wanted_run)?;
        anyhow::Ok((state, deletions))
    })
    .await??;
    let Some((run, rows)) = deletions else {
        emit(json, "INFO", &nothing(args.run, &state));
        return Ok(ExitCode::SUCCESS);
    };
    let (items, ids) = pending(&rows);
    let chosen = undo::select(&items, &|s| wanted(s, &args));
    let (items, ids): (Vec<Stored>, Vec<i64>) = items
        .into_iter()
        .zip(ids)
        .zip(&chosen)
        .filter(|(_, c)| **c)
        .map(|(x, _)| x)
        .unzip();
    if items.is_empty() {
        let why = match rows.iter().all(|r| r.restored_at.is_some()) {
            true => format!("everything run {run} deleted was put back already"),
            false => format!("run {run} deleted nothing that --repository and --tag name"),
        };
        emit(json, "INFO", &format!("nothing to restore: {why}"));
        return Ok(ExitCode::SUCCESS);
    }
    let by_name: HashMap<String, Arc<dyn Registry>> = registries(&plan, None)?
        .into_values()
        .map(|r| (r.name().to_string(), r))
        .collect();
    let text = args.output == Output::Text;
    let note = |i: usize, r: &Restored| {
        if text {
            tell(json, &items[i], r, args.dry_run);
        }
    };
    let cx = undo::Context {
        registries: &by_name,
        dry_run: args.dry_run,
        note: &note,
    };
    let outcomes = undo::restore(&items, &cx).await;
    let recorded = match args.dry_run {
        true => true,
        false => record(&state, &ids, &outcomes, json).await,
    };
    let out = RestoreOutput::new(run, args.dry_run, &items, &outcomes);
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&out)?),
        Output::Text => println!("{}", log_line(json, "INFO", &out.summary())),
    }
    Ok(match out.totals.failed == 0 && recorded {
        true => ExitCode::SUCCESS,
        false => ExitCode::from(exit::PARTIAL),
    })
}

/// Why there is nothing to restore at all.
fn nothing(run: Option<RunId>, state: &State) -> String {
    let path = state.path().display();
    // A run the checkpoint does not have never ran there, or was pruned (`retain_runs`).
    let known = |id| !matches!(state.run_summary(Some(id)), Ok(None));
    match run {
        Some(id) if !known(id) => format!(
            "nothing to restore: {path} has no run {id} (it keeps the newest runs, retain_runs in the plan)"
        ),
        Some(id) => format!("nothing to restore: run {id} of {path} deleted nothing"),
        None => format!("nothing to restore: no run of {path} deleted anything"),
    }
}

/// The deletions not put back yet, as retention's restore takes them, with their row ids.
fn pending(rows: &[DeletionRecord]) -> (Vec<Stored>, Vec<i64>) {
    rows.iter()
        .filter(|r| r.restored_at.is_none())
        // A digest the checkpoint holds was checked when it was recorded.
        .filter_map(|r| Some((stored(r, Digest::parse(&r.digest)?), r.id)))
        .unzip()
}

fn stored(r: &DeletionRecord, digest: Digest) -> Stored {
    let manifest = match (&r.media_type, &r.manifest) {
        (Some(media_type), Some(bytes)) => Some(Manifest {
            media_type: media_type.clone(),
            bytes: bytes.clone().into(),
            digest: digest.clone(),
        }),
        _ => None,
    };
    Stored {
        registry: r.registry.clone(),
        repo: r.repo.clone(),
        digest,
        tags: r.tags.clone(),
        tags_only: r.tags_only(),
        version_id: r.version_id.clone(),
        manifest,
    }
}

/// Does `--repository` / `--tag` name this deletion (nothing named: every one)?
fn wanted(s: &Stored, args: &RestoreArgs) -> bool {
    let repo = args
        .repository
        .as_deref()
        .is_none_or(|r| r == s.repository() || r == s.repo);
    repo && args
        .tag
        .as_deref()
        .is_none_or(|t| s.tags.iter().any(|x| x == t))
}

/// Mark every deletion put back whole as restored; `false` (said) when that failed.
async fn record(state: &State, ids: &[i64], outcomes: &[Restored], json: bool) -> bool {
    for (id, r) in ids.iter().zip(outcomes) {
        if r.ok() {
            state.record(Write::Restored { id: *id });
        }
    }
    match state.flush_async().await {
        Ok(()) => true,
        Err(e) => {
            let what = format!("error: recording the restore failed: {}", error_chain(&e));
            emit(json, "ERROR", &what);
            false
        }
    }
}

/// The lines for one deletion settled: what came back (stdout), what cannot (stderr).
fn tell(json: bool, item: &Stored, r: &Restored, dry_run: bool) {
    let at = format!("{}@{}", item.repository(), item.digest);
    let tags = match item.tags.is_empty() {
        true => "untagged".to_string(),
        false => item.tags.join(", "),
    };
    let line = |text: String| println!("{}", log_line(json, "INFO", &text));
    let verb = if dry_run { "would restore" } else { "restored" };
    match &r.manifest {
        Err(e) => emit(
            json,
            "ERROR",
            &format!("cannot restore {at}: {}", error_chain(e)),
        ),
        Ok(put) => line(format!(
            "{verb} {}@{} ({tags}): {}",
            item.repository(),
            item.digest.short(),
            match put {
                Put::Pushed => "its manifest pushed back".to_string(),
                Put::Version(id) => format!("package version {id} restored"),
                Put::There => "already there".to_string(),
            }
        )),
    }
    for (tag, t) in &r.tags {
        let at = format!("{}:{tag}", item.repository());
        match t {
            Ok(TagPut::PutBack) => line(format!("{verb} tag {at}")),
            Ok(TagPut::There) => {}
            Ok(TagPut::Moved(d)) => line(format!(
                "left tag {at} alone: it points at {} now (pushed since)",
                d.short()
            )),
            Err(e) => emit(
                json,
                "ERROR",
                &format!("cannot restore tag {at}: {}", error_chain(e)),
            ),
        }
    }
}

/// `ferry restore --output json`.
#[derive(Serialize)]
struct RestoreOutput {
    run: RunId,
    dry_run: bool,
    totals: RestoreTotals,
    /// Every deletion asked for, in the order they were put back.
    items: Vec<RestoreItem>,
    /// `cannot restore …`, one per manifest or tag that cannot be put back.
    failures: Vec<String>,
}

#[derive(Serialize, Default)]
struct RestoreTotals {
    /// Manifests pushed back or restored by id (would be, in a dry run).
    put_back: usize,
    already_there: usize,
    tags_put_back: usize,
    /// Tags left alone: they point at another manifest now.
    tags_left: usize,
    failed: usize,
}

#[derive(Serialize)]
struct RestoreItem {
    repository: String,
    digest: String,
    tags: Vec<String>,
    /// pushed, version (restored by the registry's id), present, failed.
    action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    version_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    tags_put_back: Vec<String>,
    /// Tag -> the digest it points at now.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tags_left: Vec<(String, String)>,
}

impl RestoreOutput {
    fn new(run: RunId, dry_run: bool, items: &[Stored], outcomes: &[Restored]) -> Self {
        let mut out = RestoreOutput {
            run,
            dry_run,
            totals: RestoreTotals::default(),
            items: Vec::new(),
            failures: Vec::new(),
        };
        for (item, r) in items.iter().zip(outcomes).rev() {
            out.items
                .push(out_item(item, r, &mut out.totals, &mut out.failures));
        }
        out
    }

    fn summary(&self) -> String {
        let t = &self.totals;
        let (head, would) = match self.dry_run {
            true => ("ferry restore (dry run)", " would be"),
            false => ("ferry restore", ""),
        };
        format!(
            "{head}: run {}: {}{would} put back, {} already there, {}{would} put back, {} left alone (pushed since), {} cannot be restored",
            self.run,
            plural(t.put_back, "manifest"),
            t.already_there,
            plural(t.tags_put_back, "tag"),
            t.tags_left,
            t.failed
        )
    }
}

fn out_item(
    item: &Stored,
    r: &Restored,
    totals: &mut RestoreTotals,
    failures: &mut Vec<String>,
) -> RestoreItem {
    let at = format!("{}@{}", item.repository(), item.digest);
    let (action, version_id, error) = match &r.manifest {
        Ok(Put::Pushed) => ("pushed", None, None),
        Ok(Put::Version(id)) => ("version", Some(id.clone()), None),
        Ok(Put::There) => ("present", None, None),
        Err(e) => ("failed", None, Some(error_chain(e))),
    };
    match action {
        "pushed" | "version" => totals.put_back += 1,
        "present" => totals.already_there += 1,
        _ => totals.failed += 1,
    }
    if let Some(e) = &error {
        failures.push(format!("cannot restore {at}: {e}"));
    }
    let mut out = RestoreItem {
        repository: item.repository(),
        digest: item.digest.to_string(),
        tags: item.tags.clone(),
        action,
        version_id,
        error,
        tags_put_back: Vec::new(),
        tags_left: Vec::new(),
    };
    for (tag, t) in &r.tags {
        match t {
            Ok(TagPut::PutBack) => out.tags_put_back.push(tag.clone()),
            Ok(TagPut::There) => {}
            Ok(TagPut::Moved(d)) => out.tags_left.push((tag.clone(), d.to_string())),
            Err(e) => {
                let at = format!("{}:{tag}", item.repository());
                failures.push(format!("cannot restore tag {at}: {}", error_chain(e)));
                totals.failed += 1;
            }
        }
    }
    totals.tags_put_back += out.tags_put_back.len();
    totals.tags_left += out.tags_left.len();
    out
}
