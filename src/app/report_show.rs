//! `ferry report show REPORT`: a run's report (or a merged one) for people. Text: a short
//! summary and every failure. JSON: the file as it is, once it reads as a report. Markdown,
//! for a CI job summary: a summary table, every failure (never cut), then per repository what
//! the run deleted, pruned and copied ([`crate::report::markdown`] lays it out, escapes every
//! name and keeps it under GitHub's limit).
//!
//! The report is read item by item ([`report_stream::read_items`]), as `report merge` reads
//! it: its items are counted per target repository, and their lines kept only while they fit
//! the Markdown's budget ([`Kept`]); a report of 100,000 items holds no struct per item.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use indicatif::HumanBytes;

use crate::cli::Format;
use crate::report::files::Report;
use crate::report::markdown::{
    self, cell, code, html, html_code, text, Block, Doc, Kept, OwnedLine,
};
use crate::report::report_stream;

pub fn show(path: &Path, format: Format) -> anyhow::Result<ExitCode> {
    let mut counts: BTreeMap<String, Counts> = BTreeMap::new();
    let mut kept = Kept::default();
    let markdown = format == Format::Markdown;
    let report = report_stream::read_items(path, &mut |item| {
        if markdown {
            let c = counts.entry(target_repository(&item.target)).or_default();
            *c.by_action.entry(item.action.clone()).or_default() += 1;
            c.bytes += item.bytes;
            let reason = [item.error, item.rewritten, item.updated]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("; ");
            let line = OwnedLine {
                action: item.action,
                digest: item.digest,
                names: vec![item.source, item.target.clone()],
                reason,
            };
            kept.push(&target_repository(&item.target), line);
        }
        Ok(())
    })?;
    let mut stdout = std::io::stdout().lock();
    match format {
        Format::Json => {
            // As it is: it read as a report just now.
            let mut file = std::fs::File::open(path)?;
            std::io::copy(&mut file, &mut stdout)?;
        }
        Format::Text => stdout.write_all(summary_text(&report).as_bytes())?,
        Format::Markdown => {
            let doc = document(&report, &counts, &kept);
            stdout.write_all(doc.as_bytes())?;
        }
    }
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// One target repository's items, by action (copied, present, failed…).
#[derive(Default)]
struct Counts {
    by_action: BTreeMap<String, usize>,
    bytes: u64,
}

/// `ghcr.io/org/app` of `ghcr.io/org/app:v1` or `…@sha256:…`.
fn target_repository(target: &str) -> String {
    let name = target.split('@').next().unwrap_or(target);
    match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => name[..i].to_string(),
        _ => name.to_string(),
    }
}

/// `report: plans/prod.toml, run 12: partial`, the counts, then every failure.
fn summary_text(r: &Report) -> String {
    let mut out = String::new();
    let run = r.run.map(|n| format!(", run {n}")).unwrap_or_default();
    let shard = (r.shard.as_ref())
        .map(|s| format!(", shard {s}"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "report: {}{run}{shard}, {} to {}: {}",
        r.plan, r.started_at, r.ended_at, r.outcome
    );
    let t = &r.totals;
    let _ = writeln!(
        out,
        "{} copied ({}), {} present, {} unchanged, {} failed, {} deleted, {} pruned, {} kept in use",
        t.copied,
        HumanBytes(t.bytes),
        t.present,
        t.unchanged,
        t.failed,
        t.deleted,
        t.pruned,
        t.kept_in_use
    );
    for f in &r.failures {
        let _ = writeln!(out, "failed: {f}");
    }
    for p in &r.packages {
        let seen = p.visibility.as_deref().unwrap_or("unknown");
        let _ = writeln!(out, "package {}: visibility {seen}", p.package);
    }
    if let Some(restore) = &r.restore {
        let _ = writeln!(out, "undo its deletions: {restore}");
    }
    out
}

/// The job summary: the table, the failures, then a block per repository.
fn document(r: &Report, counts: &BTreeMap<String, Counts>, kept: &Kept) -> String {
    let t = &r.totals;
    let mut head = format!("### ferry run {}: {}\n\n", code(&r.plan), text(&r.outcome));
    head.push_str(
        "| Outcome | Copied | Bytes | Present | Failed | Deleted | Pruned | Kept in use |\n",
    );
    head.push_str("|:--|--:|--:|--:|--:|--:|--:|--:|\n");
    let _ = writeln!(
        head,
        "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
        cell(&r.outcome),
        t.copied,
        HumanBytes(t.bytes),
        t.present + t.unchanged,
        t.failed,
        t.deleted,
        t.pruned,
        t.kept_in_use
    );
    if !r.failures.is_empty() {
        let _ = writeln!(head, "**Failures ({}):**\n", r.failures.len());
        for f in &r.failures {
            let _ = writeln!(head, "- {}", text(f));
        }
        head.push('\n');
    }
    for p in &r.packages {
        let seen = p.visibility.as_deref().unwrap_or("unknown");
        let _ = writeln!(
            head,
            "- package {}: visibility {}",
            code(&p.package),
            text(seen)
        );
    }
    if let Some(restore) = &r.restore {
        let _ = writeln!(head, "Undo its deletions: {}\n", code(restore));
    }
    let blocks = blocks(r, counts, kept);
    markdown::render(&Doc {
        head,
        blocks,
        left_out: kept.left_out,
        whole: "ferry report show --output json",
    })
}

/// Deletions, kept images and prune decisions by repository, then the items by target.
fn blocks<'a>(r: &'a Report, counts: &BTreeMap<String, Counts>, kept: &'a Kept) -> Vec<Block<'a>> {
    let mut by: BTreeMap<(u8, &str, &str), Vec<markdown::Line<'a>>> = BTreeMap::new();
    let line = |action: &'a str, digest: &'a String, names: &'a [String], reason: &'a str| {
        markdown::Line {
            action,
            digest: Some(digest.as_str()),
            names,
            arrow: false,
            reason,
        }
    };
    for d in &r.deletions {
        let l = line("delete", &d.digest, &d.tags, &d.reason);
        by.entry((0, "retention", d.repository.as_str()))
            .or_default()
            .push(l);
    }
    for k in &r.kept {
        let l = line("keep", &k.digest, &k.tags, &k.reason);
        by.entry((0, "retention", k.repository.as_str()))
            .or_default()
            .push(l);
    }
    for p in &r.prune {
        let l = line(&p.action, &p.digest, &p.tags, &p.reason);
        let key = (1, p.rule.as_str(), p.repository.as_str());
        by.entry(key).or_default().push(l);
    }
    let mut out: Vec<Block> = by
        .into_iter()
        .map(|((kind, rule, repository), lines)| Block {
            summary: match kind {
                0 => format!("{} · retention", html_code(repository)),
                _ => format!("{} · prune {}", html_code(repository), html_code(rule)),
            },
            lines,
        })
        .collect();
    for (repository, c) in counts {
        let actions: Vec<String> = (c.by_action.iter())
            .map(|(a, n)| format!("{a} {n}"))
            .collect();
        out.push(Block {
            summary: format!(
                "{}: {} ({})",
                html_code(repository),
                html(&actions.join(", ")),
                HumanBytes(c.bytes)
            ),
            lines: kept
                .lines(repository)
                .iter()
                .map(|k| k.line(true))
                .collect(),
        });
    }
    out
}
