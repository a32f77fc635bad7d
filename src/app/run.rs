//! `ferry run PLAN`: resolve the plan's rules, copy, summarise.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use indicatif::HumanBytes;

use crate::cli::{Progress, RunArgs};
use crate::copy::{select, Engine, Outcome, Totals};
use crate::plan::{Location, Plan};
use crate::registry::http::HttpRegistry;
use crate::registry::layout::LayoutRegistry;
use crate::registry::Registry;
use crate::report::{error_chain, BarReporter, PlainReporter, Reporter, Silent};

/// Build one registry client per location the plan uses.
pub fn registries(
    plan: &Plan,
    observer: Option<crate::registry::throttle::Observer>,
) -> anyhow::Result<select::Registries> {
    let mut map: select::Registries = HashMap::new();
    for host in plan.hosts() {
        let settings = plan.registry(&host);
        if settings.insecure {
            tracing::warn!("TLS verification is off for {host} (insecure = true in the plan)");
        }
        let client = HttpRegistry::new(&host, &settings, observer.clone())
            .with_context(|| format!("setting up registry {host}"))?;
        map.insert(
            Location::Registry(host),
            Arc::new(client) as Arc<dyn Registry>,
        );
    }
    let uses_layouts = plan
        .copies
        .iter()
        .any(|c| c.from.location == Location::Layout || c.to.location == Location::Layout);
    if uses_layouts {
        map.insert(Location::Layout, Arc::new(LayoutRegistry::new()));
    }
    Ok(map)
}

fn reporter(progress: Progress, quiet: bool) -> Arc<dyn Reporter> {
    if quiet {
        return Arc::new(Silent);
    }
    match progress {
        Progress::None => Arc::new(Silent),
        Progress::Plain => Arc::new(PlainReporter::stderr()),
        Progress::Bars => Arc::new(BarReporter::new()),
        Progress::Auto if std::io::stderr().is_terminal() => Arc::new(BarReporter::new()),
        Progress::Auto => Arc::new(PlainReporter::stderr()),
    }
}

/// The one-line summary that ends every run.
pub fn summary(totals: &Totals, unresolved: usize) -> String {
    let mut line = format!(
        "ferry: {} images copied, {} already present, {} failed",
        totals.copied,
        totals.present,
        totals.failed + unresolved
    );
    line.push_str(&format!(
        "; {} transferred in {:.1} s",
        HumanBytes(totals.bytes),
        totals.elapsed.as_secs_f64()
    ));
    line
}

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let plan = Plan::load(&args.plan)?;
    let reporter = reporter(args.progress, args.quiet);
    let observer: crate::registry::throttle::Observer = {
        let reporter = reporter.clone();
        Arc::new(move |event| reporter.registry_event(event))
    };
    let registries = registries(&plan, Some(observer))?;
    let concurrency = args
        .concurrency
        .map(usize::from)
        .unwrap_or(plan.concurrency);

    let engine = Engine::new(reporter.clone(), concurrency);
    let started = std::time::Instant::now();
    let mut totals = Totals::default();
    let mut select_errors = Vec::new();
    let mut results = Vec::new();
    for stage in select::stages(&plan.copies) {
        let rules: Vec<&_> = stage.iter().map(|&i| &plan.copies[i]).collect();
        let selection = select::resolve(&rules, &registries).await;
        for dup in &selection.duplicates {
            reporter.note(&format!(
                "skipped {dup}: an earlier rule already copies to {}",
                dup.target_display()
            ));
        }
        reporter.items_selected(selection.items.len());
        let (outcomes, stage_totals) = engine.copy_all(&selection.items).await;
        totals.add(&stage_totals);
        select_errors.extend(selection.errors);
        results.extend(selection.items.into_iter().zip(outcomes));
    }
    totals.elapsed = started.elapsed();
    reporter.finish();

    // Failures are listed once more at the end, where an operator looks first.
    let mut failures: Vec<String> = select_errors.iter().map(|e| error_chain(e)).collect();
    for (item, outcome) in &results {
        if let Outcome::Failed { error } = outcome {
            failures.push(format!("{item}: {}", error_chain(error.as_ref())));
        }
    }
    let foreign: usize = results
        .iter()
        .map(|(_, o)| match o {
            Outcome::Copied { stats, .. } => stats.foreign.len(),
            _ => 0,
        })
        .sum();
    if foreign > 0 {
        eprintln!(
            "note: {} not copied: non-distributable layers stay where their URLs point",
            crate::report::plural(foreign, "non-distributable layer")
        );
    }
    for f in &failures {
        eprintln!("failed: {f}");
    }
    println!("{}", summary(&totals, select_errors.len()));
    Ok(if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::exit::PARTIAL)
    })
}
