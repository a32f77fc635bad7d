//! What `ferry plan` prints, as data: each item a [`PlanItem`] (printed as it finishes, see
//! `plan_items`), then [`PlanOutput`]. `--output json` is them serialized, and the text is
//! rendered from them, so the two cannot disagree.
//!
//! Fields are declared in alphabetical order, here and in every struct below: the order the
//! JSON has always had (it was built as a `serde_json` map, which sorts its keys). `copies`,
//! first, is written item by item before the rest.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use indicatif::HumanBytes;
use serde::{Serialize, Serializer};

use crate::reference::Digest;

/// What the plan says after its `copies` (every item as it finished, then the rules that
/// could not be resolved).
#[derive(Serialize)]
pub struct PlanOutput {
    /// Every failure, one line each (the exit code is 1 when there are some); failed items
    /// after the first thousand are counted in `totals.errors`, not listed.
    pub failures: Vec<String>,
    /// What a run would print that is not an error (a duplicate dropped).
    pub notes: Vec<String>,
    /// Every `prune` rule: what it would delete at its targets, and what it leaves and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub prune: Vec<PlanPrune>,
    /// Per registry host: what the plan's requests cost against its rate budget.
    pub registries: BTreeMap<String, PlanRegistry>,
    /// Every repository of every `[[retain]]` policy, in order.
    pub retention: Vec<PlanRepo>,
    pub totals: PlanTotals,
}

/// A line of `copies`: a rule that could not be resolved, or an item.
#[derive(Serialize)]
#[serde(untagged)]
pub enum PlanCopy {
    Unresolved { error: String },
    Item(Box<PlanItem>),
}

/// One item and what the run would do with it.
#[derive(Serialize)]
pub struct PlanItem {
    /// copy, present, unchanged, skip, error.
    pub action: &'static str,
    /// Blob bytes to copy (`copy` only).
    pub bytes: Option<u64>,
    #[serde(serialize_with = "optional_digest")]
    pub digest: Option<Digest>,
    /// Why it is skipped or fails.
    pub error: Option<String>,
    /// Index children left out by `platforms`.
    pub left_out: usize,
    /// `sha256:old → sha256:new`, when the target gets a rewritten index.
    pub rewritten: Option<String>,
    pub source: String,
    /// What a referrer refers to.
    #[serde(serialize_with = "optional_digest")]
    pub subject: Option<Digest>,
    pub target: String,
    /// What only the run can tell: whether the target accepts the item (an index that
    /// leaves children out), or the item it depends on.
    pub uncertain: Option<String>,
    /// `sha256:old → sha256:new`: the source moved since an earlier run recorded it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated: Option<String>,
    /// What the target lacks of an image whose tag it holds, to be put back.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub put_back: Vec<String>,
}

/// One repository of a `[[retain]]` policy: its decisions, or why it was not read.
#[derive(Serialize)]
#[serde(untagged)]
pub enum PlanRepo {
    NotRead {
        error: String,
        /// The policy it belongs to, as the text heads its repositories (not in the JSON).
        #[serde(skip)]
        policy: String,
        repository: String,
    },
    Decided {
        decisions: Vec<PlanDecision>,
        /// Why nothing there is deleted (the `max_deletions` valve).
        held_back: Option<String>,
        #[serde(skip)]
        policy: String,
        repository: String,
        /// What the Markdown's summary counts (not in the JSON, whose `totals` sum them):
        /// the deletions the run would attempt, the images kept because they are in use that
        /// the policy alone would delete, and those a copy rule pins.
        #[serde(skip)]
        deleting: usize,
        #[serde(skip)]
        kept_in_use: usize,
        #[serde(skip)]
        conflicts: usize,
    },
}

/// One `prune` rule's decisions.
#[derive(Serialize)]
pub struct PlanPrune {
    /// Why nothing of the rule is deleted (its `max_deletions`, or a failed `[in_use]`).
    pub held_back: Option<String>,
    pub repositories: Vec<PlanPruneRepo>,
    /// `copy #1 (plans/mirror.toml:3)`.
    pub rule: String,
    /// Repositories left alone, and why (a source that lists nothing).
    pub warnings: Vec<String>,
    /// The deletions the run would make (what `totals.prune` sums; for the Markdown's
    /// summary, not in the JSON).
    #[serde(skip)]
    pub pruning: usize,
}

/// One target repository of a `prune` rule.
#[derive(Serialize)]
pub struct PlanPruneRepo {
    /// Deletions (`delete` a manifest with its tags, `untag` a tag alone), then what stays
    /// that the rule does not select (`keep`: not ours, not missing long enough, still
    /// needed by a kept image).
    pub decisions: Vec<PlanDecision>,
    /// Why it could not be read (then nothing there is pruned).
    pub error: Option<String>,
    pub repository: String,
}

/// One image's decision.
#[derive(Serialize)]
pub struct PlanDecision {
    /// keep, delete (and for pruning, untag).
    pub action: &'static str,
    #[serde(serialize_with = "digest")]
    pub digest: Digest,
    pub reason: String,
    pub tags: Vec<String>,
}

#[derive(Serialize)]
pub struct PlanRegistry {
    pub requests: u64,
    /// At least this long at the registry's `rate_limit`, when it has one.
    pub seconds_at_rate_limit: Option<f64>,
    /// Where manifest GETs count as pulls (Docker Hub): the pulls the run needs and the
    /// budget the registry showed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pulls: Option<PlanPulls>,
}

/// A Docker Hub source's pull budget, planned (issue 25).
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct PlanPulls {
    /// Manifest GETs the run sends here.
    pub needed: u64,
    /// `ratelimit-limit` and `ratelimit-remaining` as the last manifest response showed them
    /// (`None`: no response carried them).
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    /// The budget's window (the `w=` of those headers), in seconds.
    pub window_seconds: Option<u64>,
    /// `needed / limit` windows: how long the pulls take at that budget.
    pub seconds_at_pull_limit: Option<f64>,
}

impl PlanPulls {
    /// `, 7 pulls (budget 3 of 5 left per 60 s window; 84 s of budget)`.
    pub(super) fn text(&self) -> String {
        let budget = match (self.remaining, self.limit, self.window_seconds) {
            (Some(r), Some(l), Some(w)) => format!(
                "budget {r} of {l} left per {w} s window; {:.0} s of budget",
                self.seconds_at_pull_limit.unwrap_or_default()
            ),
            _ => "no budget shown".to_string(),
        };
        format!(", {} pulls ({budget})", self.needed)
    }
}

#[derive(Serialize, Default, Clone)]
pub struct PlanTotals {
    pub bytes: u64,
    pub copy: usize,
    /// Deletions the run would attempt.
    pub delete: usize,
    /// Failures.
    pub errors: usize,
    pub present: usize,
    pub skip: usize,
    pub unchanged: usize,
    /// Prune deletions the run would attempt (manifests, and tags removed alone); absent
    /// when none.
    #[serde(skip_serializing_if = "is_zero")]
    pub prune: usize,
    /// Images kept because something runs them (`[in_use]`) that the rules alone would
    /// delete; absent when none.
    #[serde(skip_serializing_if = "is_zero")]
    pub kept_in_use: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn digest<S: Serializer>(d: &Digest, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(d.as_str())
}

fn optional_digest<S: Serializer>(d: &Option<Digest>, s: S) -> Result<S::Ok, S::Error> {
    d.as_ref().map(Digest::as_str).serialize(s)
}

impl PlanOutput {
    /// The text `ferry plan` prints after its items and notes: decisions, registries,
    /// failures, and the closing line.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let mut policy = None;
        for r in &self.retention {
            if policy != Some(r.policy()) {
                policy = Some(r.policy());
                let _ = writeln!(out, "{}", r.policy());
            }
            r.text(&mut out);
        }
        for p in &self.prune {
            p.text(&mut out);
        }
        for (host, r) in &self.registries {
            let _ = writeln!(
                out,
                "registry {host}: about {} requests{}{}",
                r.requests,
                r.seconds_at_rate_limit
                    .map(|t| format!(", at least {t:.0} s at its rate_limit"))
                    .unwrap_or_default(),
                r.pulls.as_ref().map(PlanPulls::text).unwrap_or_default()
            );
        }
        for f in &self.failures {
            let _ = writeln!(out, "failed: {f}");
        }
        let t = &self.totals;
        let listed = self.failures.len();
        if t.errors > listed {
            let more = crate::report::plural(t.errors - listed, "item");
            let _ = writeln!(
                out,
                "failed: {more} more, not listed (only the first {} failed items are)",
                crate::execute::sink::FAILURES_KEPT
            );
        }
        let prune = match t.prune {
            0 => String::new(),
            n => format!(", {n} to prune"),
        };
        // The run's words: present was checked at the target, unchanged is trusted from
        // the checkpoint (said only when there are some, as the run's summary does).
        let unchanged = match t.unchanged {
            0 => String::new(),
            n => format!(", {n} unchanged (trusted from the checkpoint)"),
        };
        let _ = writeln!(
            out,
            "plan: {} images to copy ({}), {} already present{unchanged}, {} to delete{prune}, {} errors",
            t.copy,
            HumanBytes(t.bytes),
            t.present,
            t.delete,
            t.errors
        );
        out
    }
}

impl PlanPrune {
    /// `prune copy #1 (…)`, its warnings, then each repository and its decisions.
    fn text(&self, out: &mut String) {
        let _ = writeln!(out, "prune {}", self.rule);
        for w in &self.warnings {
            let _ = writeln!(out, "  warning: {w}");
        }
        if let Some(why) = &self.held_back {
            let _ = writeln!(out, "  held back: {why}");
        }
        for r in &self.repositories {
            if let Some(e) = &r.error {
                let _ = writeln!(
                    out,
                    "  {}: not read, nothing there is pruned: {e}",
                    r.repository
                );
                continue;
            }
            let count = |a: &str| r.decisions.iter().filter(|x| x.action == a).count();
            let _ = writeln!(
                out,
                "  {}: delete {}, untag {}, keep {}",
                r.repository,
                count("delete"),
                count("untag"),
                count("keep")
            );
            for x in &r.decisions {
                x.text(out);
            }
        }
    }
}

impl PlanDecision {
    /// `    ACTION SHORT TAGS: REASON`.
    fn text(&self, out: &mut String) {
        let tags = match self.tags.is_empty() {
            true => "(untagged)".to_string(),
            false => self.tags.join(", "),
        };
        let _ = writeln!(
            out,
            "    {:<6} {} {tags}: {}",
            self.action,
            self.digest.short(),
            self.reason
        );
    }
}

impl PlanItem {
    /// `ACTION    SOURCE -> TARGET (DIGEST)…`: the action, then what follows the item.
    pub fn text(&self, out: &mut String) {
        let _ = write!(out, "{:<9} {} -> {}", self.action, self.source, self.target);
        if let Some(d) = &self.digest {
            let _ = write!(out, " ({})", d.short());
        }
        if let Some(s) = &self.subject {
            let _ = write!(out, ", refers to {}", s.short());
        }
        if self.left_out > 0 {
            let _ = write!(
                out,
                ", {} index children left out by `platforms`",
                self.left_out
            );
        }
        if let Some(r) = &self.rewritten {
            let _ = write!(out, "; rewritten: {r}");
        }
        if let Some(u) = &self.updated {
            let _ = write!(out, "; updated: {u}");
        }
        if !self.put_back.is_empty() {
            let _ = write!(out, "; put back: {}", self.put_back.join(", "));
        }
        if let Some(e) = &self.error {
            let _ = write!(out, ": {e}");
        }
        if let Some(u) = &self.uncertain {
            let _ = write!(out, " ({u})");
        }
        out.push('\n');
    }
}

impl PlanRepo {
    /// The policy's header line, `retain #1 (REPOSITORY)`.
    pub(super) fn policy(&self) -> &str {
        match self {
            PlanRepo::NotRead { policy, .. } | PlanRepo::Decided { policy, .. } => policy,
        }
    }

    /// The repository's line, then one line per decision.
    fn text(&self, out: &mut String) {
        match self {
            PlanRepo::NotRead {
                error, repository, ..
            } => {
                let _ = writeln!(
                    out,
                    "  {repository}: not read, nothing there is deleted: {error}"
                );
            }
            PlanRepo::Decided {
                decisions,
                held_back,
                repository,
                ..
            } => {
                let deletes = decisions.iter().filter(|x| x.action == "delete").count();
                let _ = writeln!(
                    out,
                    "  {repository}: {} images: keep {}, delete {deletes}",
                    decisions.len(),
                    decisions.len() - deletes,
                );
                if let Some(why) = held_back {
                    let _ = writeln!(out, "    held back: {why}");
                }
                for x in decisions {
                    x.text(out);
                }
            }
        }
    }
}
