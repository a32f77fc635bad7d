//! What `ferry verify` does with each item as it finishes ([`VerifyItems`], the execution's
//! [`ItemSink`]): its finding is counted and written out, to a spool on disk that is printed
//! once the audit is over (progress bars may be drawing meanwhile, and the findings come
//! after them, as they always did). Nothing per item stays in memory.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::sync::Mutex;

use super::verify_output::{VerifyGap, VerifyItem, VerifyOutput, VerifyTotals};
use crate::app::lines::log_line;
use crate::cli::Output;
use crate::copy::{Item, Outcome, Part};
use crate::execute::sink::ItemSink;
use crate::report::audit_line;
use crate::report::hints::chain as error_chain;
use crate::report::json_stream::{spool, unspool, JsonStream};

/// The audit's findings, as they come.
pub(super) struct VerifyItems {
    inner: Mutex<Inner>,
}

/// Where the findings go until the audit is over.
enum Out {
    /// The lines of the findings (`json`: as JSON log lines).
    Text {
        spool: BufWriter<File>,
        json: bool,
    },
    Json(JsonStream<BufWriter<File>>),
}

struct Inner {
    out: Out,
    /// The first write that failed: the output is not whole, which its end says.
    failed: Option<io::Error>,
    totals: VerifyTotals,
}

/// The fields of the JSON before its items.
#[derive(serde::Serialize)]
struct Head {
    deep: bool,
}

impl VerifyItems {
    /// Begin the output: `output` as asked, text lines as JSON log lines with `json`.
    pub(super) fn begin(output: Output, json: bool, deep: bool) -> io::Result<VerifyItems> {
        let spool = BufWriter::new(spool()?);
        let out = match output {
            Output::Text => Out::Text { spool, json },
            Output::Json => Out::Json(JsonStream::begin(spool, &Head { deep }, "items")?),
        };
        let inner = Inner {
            out,
            failed: None,
            totals: VerifyTotals::default(),
        };
        Ok(VerifyItems {
            inner: Mutex::new(inner),
        })
    }

    /// The findings counted by status.
    pub(super) fn totals(&self) -> VerifyTotals {
        self.inner.lock().expect("findings").totals.clone()
    }

    /// Print the findings, then `rest`.
    pub(super) fn end(self, rest: &VerifyOutput) -> io::Result<()> {
        let inner = self.inner.into_inner().expect("findings");
        if let Some(e) = inner.failed {
            return Err(e);
        }
        let mut stdout = io::stdout().lock();
        match inner.out {
            Out::Json(stream) => unspool(stream.end(rest)?, &mut stdout)?,
            Out::Text { spool, json } => {
                unspool(spool, &mut stdout)?;
                stdout.write_all(rest.text(json).as_bytes())?;
            }
        }
        stdout.flush()
    }
}

impl ItemSink for VerifyItems {
    fn finished(&self, item: &Item, outcome: Option<&Outcome>) {
        let found = finding(item, outcome);
        let mut inner = self.inner.lock().expect("findings");
        inner.totals.count(&found);
        let written = match &mut inner.out {
            Out::Json(stream) => stream.element(&found),
            Out::Text { .. } if matches!(found.status, "complete" | "skipped") => Ok(()),
            Out::Text { spool, json } => {
                writeln!(spool, "{}", log_line(*json, "ERROR", &found.line))
            }
        };
        if let Err(e) = written {
            inner.failed.get_or_insert(e);
        }
    }
}

/// One item's finding. The engine's audit reports what a run would copy as `Copied`.
fn finding(item: &Item, outcome: Option<&Outcome>) -> VerifyItem {
    let mut out = VerifyItem {
        digest: None,
        error: None,
        line: String::new(),
        missing: Vec::new(),
        source: item.source_display(),
        status: "failed",
        target: item.target_display(),
        target_digest: None,
    };
    let Some(outcome) = outcome else {
        out.error = Some("not checked: interrupted".to_string());
        out.line = format!("FAILED     {item}: not checked: interrupted");
        return out;
    };
    out.line = audit_line(item, outcome);
    match outcome {
        Outcome::Present { digest, rewritten } | Outcome::Unchanged { digest, rewritten } => {
            out.status = "complete";
            out.digest = Some(digest.to_string());
            out.target_digest = rewritten.as_ref().map(ToString::to_string);
        }
        Outcome::Copied { digest, stats } => {
            out.digest = Some(digest.to_string());
            out.status = match (&stats.replaced, stats.gaps.is_empty()) {
                (_, false) => "incomplete",
                (Some(_), true) => "outdated",
                (None, true) => "missing",
            };
            out.target_digest = stats.replaced.as_ref().map(ToString::to_string);
            out.missing = stats
                .gaps
                .iter()
                .map(|g| VerifyGap {
                    part: g.part.name(),
                    digest: g.digest.to_string(),
                    within: g.within.as_ref().map(ToString::to_string),
                    platform: match &g.part {
                        Part::Manifest { platform } => platform.clone(),
                        _ => None,
                    },
                    text: g.to_string(),
                })
                .collect();
        }
        Outcome::Skipped { reason } => {
            out.status = "skipped";
            out.error = Some(reason.clone());
        }
        Outcome::Failed { error } => out.error = Some(error_chain(error.as_ref())),
    }
    out
}
