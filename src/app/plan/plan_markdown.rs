//! `ferry plan --output markdown`: the plan for a pull-request comment, from the same items
//! ([`PlanItem`]) and the same [`PlanOutput`] the text and the JSON are printed from. The
//! layout, the escaping of every name and the size limit are [`crate::report::markdown`]'s.
//!
//! Memory stays flat as the items stream: each item adds to its copy rule's counts and to
//! its target repository's (one entry per rule and per repository, never one per tag), and
//! its line is kept only while the kept lines fit the Markdown's budget ([`Kept`]: past it,
//! none could be shown, so none is kept). The summary table needs every count before the
//! first block, so the whole document is written at the end, from the counts and the lines
//! kept. Retention's and pruning's decisions are the [`PlanOutput`]'s, held by the plan
//! already.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use indicatif::HumanBytes;

use super::plan_output::{PlanItem, PlanOutput, PlanPrune, PlanPulls, PlanRepo};
use crate::copy::{Item, Outcome};
use crate::report::markdown::{
    self, cell, code, html_code, text, Block, Doc, Kept, Line, OwnedLine,
};

/// The plan's items as they finish, counted and (within the budget) kept.
pub(super) struct MarkdownItems {
    /// The plan file, for the title.
    plan: String,
    /// Each copy rule's label, by number - 1.
    labels: Vec<String>,
    rules: BTreeMap<usize, Counts>,
    /// Each target repository's counts.
    repos: BTreeMap<String, Counts>,
    kept: Kept,
}

#[derive(Default, Clone, Copy)]
struct Counts {
    copy: usize,
    bytes: u64,
    present: usize,
    failed: usize,
    conflicts: usize,
}

impl MarkdownItems {
    pub(super) fn new(plan: String, labels: Vec<String>) -> MarkdownItems {
        MarkdownItems {
            plan,
            labels,
            rules: BTreeMap::new(),
            repos: BTreeMap::new(),
            kept: Kept::default(),
        }
    }

    /// One item, as the plan shows it (`row`).
    pub(super) fn add(&mut self, item: &Item, outcome: Option<&Outcome>, row: PlanItem) {
        let conflict = item.contest.is_some() && matches!(outcome, Some(Outcome::Failed { .. }));
        let repository = item.target.display();
        let repo = self.repos.entry(repository.clone()).or_default();
        for c in [self.rules.entry(item.rule).or_default(), repo] {
            match row.action {
                "copy" => {
                    c.copy += 1;
                    c.bytes += row.bytes.unwrap_or_default();
                }
                "present" | "unchanged" => c.present += 1,
                "error" => c.failed += 1,
                _ => {}
            }
            c.conflicts += usize::from(conflict);
        }
        let line = OwnedLine {
            action: row.action.to_string(),
            reason: detail(&row),
            digest: row.digest.map(|d| d.to_string()),
            names: vec![row.source, row.target],
        };
        self.kept.push(&repository, line);
    }

    /// The document: the summary table, failures and registries, then a block per
    /// repository (retention's, pruning's, then the copies' targets).
    pub(super) fn render(self, notes: &[String], rest: &PlanOutput) -> String {
        let mut head = format!("### ferry plan {}\n\n", code(&self.plan));
        self.table(&mut head, rest);
        failures(&mut head, rest);
        for (host, r) in &rest.registries {
            let pulls = r.pulls.as_ref().map(PlanPulls::text).unwrap_or_default();
            let rate = (r.seconds_at_rate_limit)
                .map(|t| format!(", at least {t:.0} s at its rate_limit"))
                .unwrap_or_default();
            let about = text(&format!("about {} requests{rate}{pulls}", r.requests));
            let _ = writeln!(head, "- registry {}: {about}", code(host));
        }
        head.push('\n');
        let mut blocks: Vec<Block> = Vec::new();
        if !notes.is_empty() {
            blocks.push(Block {
                summary: format!("notes: {}", notes.len()),
                lines: notes.iter().map(|n| line("note", None, &[], n)).collect(),
            });
        }
        blocks.extend(rest.retention.iter().filter_map(retention_block));
        blocks.extend(rest.prune.iter().flat_map(prune_blocks));
        for (repository, c) in &self.repos {
            let lines = self.kept.lines(repository).iter();
            let lines = lines.map(|k| k.line(true)).collect();
            let summary = format!(
                "{}: copy {} ({}), present {}, failed {}",
                html_code(repository),
                c.copy,
                HumanBytes(c.bytes),
                c.present,
                c.failed
            );
            blocks.push(Block { summary, lines });
        }
        markdown::render(&Doc {
            head,
            blocks,
            left_out: self.kept.left_out,
            whole: "ferry plan --output json",
        })
    }

    /// The summary table: a row per rule, then the totals.
    fn table(&self, out: &mut String, rest: &PlanOutput) {
        out.push_str(
            "| Rule | Copy | Bytes | Present | Delete | Prune | Kept in use | Conflicts |\n",
        );
        out.push_str("|:--|--:|--:|--:|--:|--:|--:|--:|\n");
        let mut total = Row::default();
        let mut rows: Vec<(String, Row)> = Vec::new();
        for (rule, c) in &self.rules {
            let label = self.labels.get(rule.wrapping_sub(1)).cloned();
            let label = label.unwrap_or_else(|| format!("copy #{rule}"));
            rows.push((label, Row::copies(c)));
        }
        for r in &rest.retention {
            let row = Row::retention(r);
            match rows.iter_mut().find(|(label, _)| label == r.policy()) {
                Some((_, sum)) => sum.add(&row),
                None => rows.push((r.policy().to_string(), row)),
            }
        }
        for p in &rest.prune {
            let row = Row {
                prune: Some(p.pruning),
                ..Row::default()
            };
            rows.push((format!("prune {}", p.rule), row));
        }
        for (label, row) in &rows {
            total.add(row);
            row.write(out, &cell(label));
        }
        total.write(out, "**total**");
        let t = &rest.totals;
        let _ = writeln!(
            out,
            "\n**{} to copy ({}), {} already present, {} to delete, {} to prune, {} kept in use, {} errors**\n",
            t.copy,
            HumanBytes(t.bytes),
            t.present + t.unchanged,
            t.delete,
            t.prune,
            t.kept_in_use,
            t.errors
        );
    }
}

/// A row of the summary table; `None`: not what the rule does (an empty cell).
#[derive(Default)]
struct Row {
    copy: Option<usize>,
    bytes: Option<u64>,
    present: Option<usize>,
    delete: Option<usize>,
    prune: Option<usize>,
    kept_in_use: Option<usize>,
    conflicts: Option<usize>,
}

impl Row {
    fn copies(c: &Counts) -> Row {
        Row {
            copy: Some(c.copy),
            bytes: Some(c.bytes),
            present: Some(c.present),
            conflicts: Some(c.conflicts),
            ..Row::default()
        }
    }

    fn retention(r: &PlanRepo) -> Row {
        let (delete, kept_in_use, conflicts) = match r {
            PlanRepo::NotRead { .. } => (0, 0, 0),
            PlanRepo::Decided {
                deleting,
                kept_in_use,
                conflicts,
                ..
            } => (*deleting, *kept_in_use, *conflicts),
        };
        Row {
            delete: Some(delete),
            kept_in_use: Some(kept_in_use),
            conflicts: Some(conflicts),
            ..Row::default()
        }
    }

    fn add(&mut self, o: &Row) {
        fn sum<T: std::ops::Add<Output = T> + Copy>(a: Option<T>, b: Option<T>) -> Option<T> {
            match (a, b) {
                (Some(a), Some(b)) => Some(a + b),
                (a, b) => a.or(b),
            }
        }
        self.copy = sum(self.copy, o.copy);
        self.bytes = sum(self.bytes, o.bytes);
        self.present = sum(self.present, o.present);
        self.delete = sum(self.delete, o.delete);
        self.prune = sum(self.prune, o.prune);
        self.kept_in_use = sum(self.kept_in_use, o.kept_in_use);
        self.conflicts = sum(self.conflicts, o.conflicts);
    }

    fn write(&self, out: &mut String, label: &str) {
        let n = |v: Option<usize>| v.map(|n| n.to_string()).unwrap_or_default();
        let bytes = self.bytes.map(|b| HumanBytes(b).to_string());
        let _ = writeln!(
            out,
            "| {label} | {} | {} | {} | {} | {} | {} | {} |",
            n(self.copy),
            bytes.unwrap_or_default(),
            n(self.present),
            n(self.delete),
            n(self.prune),
            n(self.kept_in_use),
            n(self.conflicts)
        );
    }
}

/// Every failure, never cut (the text's `failed:` lines).
fn failures(out: &mut String, rest: &PlanOutput) {
    let t = &rest.totals;
    if t.errors == 0 {
        return;
    }
    let _ = writeln!(out, "**Failures ({}):**\n", t.errors);
    for f in &rest.failures {
        let _ = writeln!(out, "- {}", text(f));
    }
    if t.errors > rest.failures.len() {
        let _ = writeln!(
            out,
            "- {} more failed items, not listed (only the first {} are)",
            t.errors - rest.failures.len(),
            crate::execute::sink::FAILURES_KEPT
        );
    }
    out.push('\n');
}

fn line<'a>(
    action: &'a str,
    digest: Option<&'a str>,
    names: &'a [String],
    reason: &'a str,
) -> Line<'a> {
    Line {
        action,
        digest,
        names,
        arrow: false,
        reason,
    }
}

/// A retention repository's block (one not read is among the failures).
fn retention_block(r: &PlanRepo) -> Option<Block<'_>> {
    let PlanRepo::Decided {
        decisions,
        held_back,
        policy,
        repository,
        ..
    } = r
    else {
        return None;
    };
    let deletes = decisions.iter().filter(|x| x.action == "delete").count();
    let held = match held_back {
        Some(why) => format!("; held back: {}", html_code(why)),
        None => String::new(),
    };
    let summary = format!(
        "{} · {}: delete {deletes}, keep {}{held}",
        html_code(repository),
        html_code(policy),
        decisions.len() - deletes
    );
    let lines = decisions.iter();
    let lines = lines.map(|x| line(x.action, Some(x.digest.as_str()), &x.tags, &x.reason));
    Some(Block {
        summary,
        lines: lines.collect(),
    })
}

/// A prune rule's blocks, one per repository it read.
fn prune_blocks(p: &PlanPrune) -> impl Iterator<Item = Block<'_>> {
    p.repositories
        .iter()
        .filter(|r| r.error.is_none())
        .map(|r| {
            let count = |a: &str| r.decisions.iter().filter(|x| x.action == a).count();
            let summary = format!(
                "{} · prune {}: delete {}, untag {}, keep {}",
                html_code(&r.repository),
                html_code(&p.rule),
                count("delete"),
                count("untag"),
                count("keep")
            );
            let lines = r.decisions.iter();
            let lines = lines.map(|x| line(x.action, Some(x.digest.as_str()), &x.tags, &x.reason));
            Block {
                summary,
                lines: lines.collect(),
            }
        })
}

/// What the text says of an item after its source and target.
fn detail(row: &PlanItem) -> String {
    let mut parts = Vec::new();
    if let Some(b) = row.bytes {
        parts.push(HumanBytes(b).to_string());
    }
    if let Some(s) = &row.subject {
        parts.push(format!("refers to {}", s.short()));
    }
    if row.left_out > 0 {
        parts.push(format!(
            "{} index children left out by `platforms`",
            row.left_out
        ));
    }
    let labelled = [
        ("rewritten", &row.rewritten),
        ("updated", &row.updated),
        ("", &row.error),
        ("", &row.uncertain),
    ];
    for (label, v) in labelled {
        match (label, v) {
            (_, None) => {}
            ("", Some(v)) => parts.push(v.clone()),
            (label, Some(v)) => parts.push(format!("{label}: {v}")),
        }
    }
    if !row.put_back.is_empty() {
        parts.push(format!("put back: {}", row.put_back.join(", ")));
    }
    parts.join("; ")
}
