//! What `ferry plan` prints of each item as it finishes ([`PlanItems`], the execution's
//! [`ItemSink`]): a line, or an element of the JSON's `copies`, written to stdout at once.
//! What the closing line counts is kept, and what only the run can tell (an index the target
//! may refuse, and the referrers that wait for it); the item is not. The notes a run would
//! print ([`Notes`]) come out before the item lines that follow them.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, BufWriter, Stdout, Write};
use std::sync::{Arc, Mutex};

use super::plan_markdown::MarkdownItems;
use super::plan_output::{PlanCopy, PlanItem, PlanOutput, PlanTotals};
use crate::cli::Format;
use crate::copy::{Item, ItemKey, Outcome};
use crate::execute::sink::ItemSink;
use crate::report::hints::chain as error_chain;
use crate::report::json_stream::JsonStream;

/// Keeps the notes a run would print (a duplicate dropped, a deletion made), for the plan.
#[derive(Default)]
pub(super) struct Notes(Mutex<Vec<String>>);

impl Notes {
    /// The notes so far, no longer kept.
    pub(super) fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().expect("notes"))
    }
}

impl crate::copy::Reporter for Notes {
    fn note(&self, message: &str) {
        // Deletions, and the keeps a registry imposes, are listed with their repository's
        // decisions already.
        let decided = ["deleted ", "pruned ", "kept "];
        if !decided.iter().any(|d| message.starts_with(d)) {
            self.0.lock().expect("notes").push(message.to_string());
        }
    }
}

/// Where the plan goes.
enum Out {
    Text(BufWriter<Stdout>),
    Json(JsonStream<BufWriter<Stdout>>),
    /// Counted, and kept within the Markdown's budget, for the end.
    Markdown(BufWriter<Stdout>, Box<MarkdownItems>),
}

/// The plan's items, printed as they finish.
pub(super) struct PlanItems {
    inner: Mutex<Inner>,
    /// Printed before the next item line (text); kept for the end (JSON).
    notes: Arc<Notes>,
}

struct Inner {
    out: Out,
    /// The first write that failed: the plan is not whole, which its end says.
    failed: Option<io::Error>,
    /// Items the target may refuse, and those waiting for one, by key: the target of the
    /// item that may be refused.
    uncertain: HashMap<ItemKey, String>,
    /// What the closing line counts of items.
    totals: PlanTotals,
}

/// Why an index that leaves children out is uncertain.
const REFUSABLE: &str = "the target may refuse an index whose children are missing (CNCF distribution does); only the run can tell";

impl PlanItems {
    /// Begin the output (the JSON's opening, up to its `copies`). `markdown`: the Markdown's
    /// counts, with the plan's name and its copy rules' labels.
    pub(super) fn begin(
        output: Format,
        notes: Arc<Notes>,
        markdown: impl FnOnce() -> MarkdownItems,
    ) -> io::Result<PlanItems> {
        let stdout = BufWriter::new(io::stdout());
        let out = match output {
            Format::Text => Out::Text(stdout),
            Format::Json => Out::Json(JsonStream::begin(stdout, &Empty {}, "copies")?),
            Format::Markdown => Out::Markdown(stdout, Box::new(markdown())),
        };
        let inner = Inner {
            out,
            failed: None,
            uncertain: HashMap::new(),
            totals: PlanTotals::default(),
        };
        Ok(PlanItems {
            inner: Mutex::new(inner),
            notes,
        })
    }

    /// What the closing line counts of items.
    pub(super) fn totals(&self) -> PlanTotals {
        self.inner.lock().expect("plan items").totals.clone()
    }

    /// End the output: the rules that could not be resolved (last among the copies), then
    /// the rest: notes (those not printed yet), retention, pruning, registries, failures,
    /// the closing line.
    pub(super) fn end(self, unresolved: Vec<String>, mut rest: PlanOutput) -> io::Result<()> {
        let inner = self.inner.into_inner().expect("plan items");
        if let Some(e) = inner.failed {
            return Err(e);
        }
        let mut stdout = match inner.out {
            Out::Json(mut stream) => {
                for error in unresolved {
                    stream.element(&PlanCopy::Unresolved { error })?;
                }
                rest.notes = self.notes.take();
                stream.end(&rest)?
            }
            Out::Text(mut stdout) => {
                let mut text = String::new();
                for n in self.notes.take() {
                    let _ = writeln!(text, "note      {n}");
                }
                for error in unresolved {
                    let _ = writeln!(text, "error   {error}");
                }
                text.push_str(&rest.text());
                stdout.write_all(text.as_bytes())?;
                stdout
            }
            // The rules that could not be resolved are among the failures.
            Out::Markdown(mut stdout, items) => {
                let text = items.render(&self.notes.take(), &rest);
                if text.chars().count() > crate::report::markdown::LIMIT {
                    eprintln!(
                        "warning: the Markdown plan is over GitHub's {} characters: its failures and deletions alone do not fit (none is left out)",
                        crate::report::markdown::LIMIT
                    );
                }
                stdout.write_all(text.as_bytes())?;
                stdout
            }
        };
        stdout.flush()
    }
}

#[derive(serde::Serialize)]
struct Empty {}

impl ItemSink for PlanItems {
    fn finished(&self, item: &Item, outcome: Option<&Outcome>) {
        let mut inner = self.inner.lock().expect("plan items");
        let uncertain = inner.uncertain(item, outcome);
        inner.count(outcome);
        let row = plan_item(item, outcome, uncertain);
        let written = match &mut inner.out {
            Out::Json(stream) => stream.element(&PlanCopy::Item(Box::new(row))),
            Out::Markdown(_, items) => {
                items.add(item, outcome, row);
                Ok(())
            }
            Out::Text(stdout) => {
                let mut text = String::new();
                for n in self.notes.take() {
                    let _ = writeln!(text, "note      {n}");
                }
                row.text(&mut text);
                stdout.write_all(text.as_bytes())
            }
        };
        if let Err(e) = written {
            inner.failed.get_or_insert(e);
        }
    }
}

impl Inner {
    /// What only the run can tell of this item: whether the target accepts an index that
    /// leaves children out, and so whether a referrer that waits for one (through any chain
    /// of them) is copied. A referrer finishes after what it waits for, so that is known.
    fn uncertain(&mut self, item: &Item, outcome: Option<&Outcome>) -> Option<String> {
        if refusable(item, outcome) {
            let root = item.target_display();
            self.uncertain.entry(item.key()).or_insert(root);
            return Some(REFUSABLE.to_string());
        }
        let parent = &item.after.as_ref()?.parent;
        let root = self.uncertain.get(parent)?.clone();
        let why = format!("depends on {root}, which the target may refuse; only the run can tell");
        self.uncertain.entry(item.key()).or_insert(root);
        Some(why)
    }

    fn count(&mut self, outcome: Option<&Outcome>) {
        let t = &mut self.totals;
        match outcome {
            Some(Outcome::Copied { stats, .. }) => {
                t.copy += 1;
                t.bytes += stats.bytes;
            }
            Some(Outcome::Present { .. }) => t.present += 1,
            Some(Outcome::Unchanged { .. }) => t.unchanged += 1,
            Some(Outcome::Skipped { .. }) => t.skip += 1,
            _ => {}
        }
    }
}

/// May the target refuse this item, though the plan copies it? A registry that refuses an
/// index whose children are missing says so only when it is written to.
fn refusable(item: &Item, outcome: Option<&Outcome>) -> bool {
    matches!(
        (outcome, &item.platforms),
        (Some(Outcome::Copied { stats, .. }), Some(p))
            if stats.left_out > 0
                && p.mode == crate::copy::copy_rule::PlatformMode::Sparse
                && item.target.registry.name() != "oci:"
    )
}

/// One item as the plan shows it: the outcome the run would have, and what only the run can
/// tell of it.
fn plan_item(item: &Item, outcome: Option<&Outcome>, uncertain: Option<String>) -> PlanItem {
    let placed = outcome.and_then(Outcome::placed);
    let rewritten = placed.and_then(|(old, new)| new.map(|new| format!("{old} → {new}")));
    let (action, bytes, left_out, error) = match outcome {
        Some(Outcome::Copied { stats, .. }) => ("copy", Some(stats.bytes), stats.left_out, None),
        Some(Outcome::Present { .. }) => ("present", None, 0, None),
        Some(Outcome::Unchanged { .. }) => ("unchanged", None, 0, None),
        Some(Outcome::Skipped { reason }) => ("skip", None, 0, Some(reason.clone())),
        Some(Outcome::Failed { error }) => ("error", None, 0, Some(error_chain(error.as_ref()))),
        None => ("error", None, 0, Some("not reached".to_string())),
    };
    let (updated, put_back) = outcome.map(Outcome::changes).unwrap_or_default();
    PlanItem {
        updated,
        put_back,
        action,
        bytes,
        digest: placed.map(|(d, _)| d.clone()),
        error,
        left_out,
        rewritten,
        source: item.source_display(),
        subject: item.subject.clone(),
        target: item.target_display(),
        uncertain,
    }
}
