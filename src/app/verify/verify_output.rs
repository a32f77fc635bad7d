//! What `ferry verify` prints, as data: each item a [`VerifyItem`] (written as it finishes,
//! see `verify_items`), then [`VerifyOutput`]. `--output json` is them serialized, and the
//! text is rendered from them. Fields are in alphabetical order, as in `ferry plan`'s; `deep`
//! and `items`, which come first, are written before the rest.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::report::files::ReportRegistry;

/// What the audit says after its items (every item the plan selects, with what the target
/// holds of it, as each finished).
#[derive(Serialize)]
pub struct VerifyOutput {
    /// Blobs were read whole and their digests checked (`--deep`): in the JSON, before the
    /// items.
    #[serde(skip)]
    pub deep: bool,
    /// Rules, or repositories of a wildcard rule, that could not be resolved (so what they
    /// select was not checked).
    pub failures: Vec<String>,
    pub plan: String,
    /// What the audit cost each registry.
    pub registries: BTreeMap<String, ReportRegistry>,
    /// The command that puts back what is missing, when something is.
    pub repair: Option<String>,
    pub totals: VerifyTotals,
}

/// One item and what its target holds of it.
#[derive(Serialize)]
pub struct VerifyItem {
    /// The source's digest (what the target should hold), when it could be read.
    pub digest: Option<String>,
    /// Why it could not be checked (`failed`), or why it is not carried (`skipped`).
    pub error: Option<String>,
    /// The finding in one line, as the text prints it.
    #[serde(skip)]
    pub line: String,
    /// What the target lacks of it (`incomplete`).
    pub missing: Vec<VerifyGap>,
    pub source: String,
    /// complete, incomplete, missing, outdated, skipped, failed.
    pub status: &'static str,
    pub target: String,
    /// What the target holds instead (`outdated`), or the rewritten index it holds
    /// (`complete` with `platform_mode = "rewrite"`).
    pub target_digest: Option<String>,
}

/// Something the target lacks.
#[derive(Serialize)]
pub struct VerifyGap {
    pub digest: String,
    /// manifest, config, layer, damaged (read whole, its bytes do not match), unlisted (a
    /// referrer missing from its subject's fallback index; `digest` is the subject).
    pub part: &'static str,
    /// A child manifest's platform, when its index says it.
    pub platform: Option<String>,
    /// In words.
    pub text: String,
    /// The manifest that names it.
    pub within: Option<String>,
}

#[derive(Serialize, Default, Clone)]
pub struct VerifyTotals {
    /// Blobs found damaged (a part of `gaps`), for the note that says how to replace them.
    #[serde(skip)]
    pub damaged: usize,
    pub complete: usize,
    pub failed: usize,
    /// Pieces missing (or damaged) across the incomplete items.
    pub gaps: usize,
    pub incomplete: usize,
    pub missing: usize,
    pub outdated: usize,
    pub skipped: usize,
}

impl VerifyTotals {
    pub fn count(&mut self, item: &VerifyItem) {
        self.gaps += item.missing.len();
        self.damaged += item.missing.iter().filter(|g| g.part == "damaged").count();
        match item.status {
            "complete" => self.complete += 1,
            "incomplete" => self.incomplete += 1,
            "missing" => self.missing += 1,
            "outdated" => self.outdated += 1,
            "skipped" => self.skipped += 1,
            _ => self.failed += 1,
        }
    }

    /// Every status with its count, for the metrics.
    pub fn by_status(&self) -> Vec<(&'static str, usize)> {
        vec![
            ("complete", self.complete),
            ("incomplete", self.incomplete),
            ("missing", self.missing),
            ("outdated", self.outdated),
            ("skipped", self.skipped),
            ("failed", self.failed),
        ]
    }
}

impl VerifyOutput {
    /// Is every target complete, and was everything checked? (Referrers a run would not
    /// carry on purpose, `skipped`, are no finding.)
    pub fn complete(&self) -> bool {
        let t = &self.totals;
        self.failures.is_empty() && t.incomplete + t.missing + t.outdated + t.failed == 0
    }

    /// What follows the findings (every item that is not complete, printed before): the
    /// rules not resolved, what each registry answered, and the closing line with what
    /// repairs it.
    pub fn text(&self, json: bool) -> String {
        let mut out = String::new();
        let mut line = |level: &str, text: &str| {
            let _ = writeln!(out, "{}", crate::app::lines::log_line(json, level, text));
        };
        for f in &self.failures {
            line("ERROR", &format!("failed: {f}"));
        }
        for (host, r) in &self.registries {
            line("INFO", &format!("registry {host}: {} requests", r.requests));
        }
        let damaged = self.totals.damaged;
        if damaged > 0 {
            line(
                "WARN",
                &format!(
                    "note: {} damaged at the targets: a run does not replace a blob a registry already has; delete {} there first",
                    crate::report::plural(damaged, "blob is"),
                    if damaged == 1 { "it" } else { "them" }
                )
                .replace("blobs is", "blobs are"),
            );
        }
        let t = &self.totals;
        let mut summary = format!(
            "verify: {} images complete, {} incomplete, {} missing, {} outdated, {} not checked",
            t.complete,
            t.incomplete,
            t.missing,
            t.outdated,
            t.failed + self.failures.len()
        );
        if t.skipped > 0 {
            let _ = write!(
                summary,
                ", {} not carried",
                crate::report::plural(t.skipped, "referrer")
            );
        }
        if self.deep {
            summary.push_str(" (every blob read and its digest checked)");
        }
        if let Some(repair) = &self.repair {
            let _ = write!(summary, "; `{repair}` puts back what is missing");
        }
        let level = if self.complete() { "INFO" } else { "ERROR" };
        line(level, &summary);
        out
    }
}
