//! The plan: TOML in, a validated and fully defaulted [`Plan`] out.
//!
//! Two layers, as ripgrep does with its flags: `Raw*` types mirror the file (with spans, and
//! `deny_unknown_fields` so a typo is an error, not a silently ignored setting), then
//! [`Plan::from_str`] validates every field and reports `file:line:column: field: reason`.
//! Errors never show a string the plan holds (any of them may be a secret): see [`errors`].
//! This module does no network or database I/O.

pub mod artifacts;
pub mod conflicts;
pub mod errors;
pub mod in_use;
pub mod json_schema;
mod lease_settings;
pub mod prune;
mod raw;
mod schema;
mod spans;
mod targets;
mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use regex::Regex;

use raw::RawPlan;
use spans::Ctx;

pub use errors::PlanError;

use crate::copy::copy_rule::CopyRule;
use crate::inuse::sources::InUse;
use crate::reference::Location;
use crate::registry::config::RegistrySettings;
use crate::registry::visibility::Visibility;
use crate::retention::prune::Prune;
use crate::retention::retain_rule::RetainPolicy;

/// The most blob transfers in flight to one target registry (and images in flight), unless
/// the plan or `--concurrency` says otherwise. Each registry's window starts at
/// [`WINDOW_START`] and grows while the link's throughput rises, halving when the registry
/// pushes back (see `copy::engine::window`). crane uses 4 per image, skopeo 6 per image;
/// ferry shares its windows across all images.
pub const DEFAULT_CONCURRENCY: usize = 16;

/// Where each registry's window of blob transfers starts (at most the `concurrency` bound):
/// enough to keep two cores and a typical uplink busy without tripping registry limits.
pub const WINDOW_START: usize = 8;

/// Tags that never change once pushed, by default: semver-looking tags (`1.2.3`, `v1.2.3`,
/// `1.2.3-rc.1`). A re-run trusts the checkpoint for these without asking any registry.
pub const DEFAULT_IMMUTABLE_TAGS: &str = r"^v?\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$";

/// How long a record of an item done is trusted without asking its target, unless the plan
/// says otherwise (`recheck_after`): a tag deleted at the target by someone else comes back
/// on the next run after this long. A day keeps a nightly CronJob's no-op run cheap.
pub const DEFAULT_RECHECK_AFTER: Duration = Duration::from_secs(24 * 3600);

/// How many runs the checkpoint keeps (their deletions, for `ferry restore`), unless the plan
/// says otherwise (`retain_runs`): a month of a nightly job.
pub const DEFAULT_RETAIN_RUNS: u32 = 30;

/// Where the checkpoint lives unless `--state` or the plan says otherwise.
pub const DEFAULT_STATE: &str = "state/ferry.db";

/// A validated plan.
#[derive(Clone, Debug)]
pub struct Plan {
    pub path: PathBuf,
    registries: BTreeMap<String, RegistrySettings>,
    /// One rule per `[[copy]]` block, or per target of a block with several (`to = [...]`):
    /// `copies[n - 1]` has number `n`.
    pub copies: Vec<CopyRule>,
    /// The `prune` settings of the copy rules that have them, by rule number, in plan order:
    /// delete at the target what that rule copied there and no longer selects.
    pub prunes: Vec<(usize, Prune)>,
    /// The `visibility` the copy rules that have one expect of their target packages, by
    /// rule number.
    pub visibilities: Vec<(usize, Visibility)>,
    /// The most blob transfers in flight to one target registry (and images in flight).
    pub concurrency: usize,
    /// The checkpoint file the plan names, if any.
    pub state: Option<PathBuf>,
    /// Tags recorded done that a re-run does not check again.
    pub immutable_tags: Vec<Regex>,
    /// A record confirmed at its target longer ago than this is checked there again.
    pub recheck_after: Duration,
    /// How many of the newest runs the checkpoint keeps when a run ends; older runs' rows
    /// are deleted (every item's latest record stays).
    pub retain_runs: u32,
    /// Retention policies, applied after the copies.
    pub retains: Vec<RetainPolicy>,
    /// What runs, or is about to: every policy keeps it.
    pub in_use: InUse,
}

impl Plan {
    /// Read and validate a plan file.
    pub fn load(path: &Path) -> Result<Plan, PlanError> {
        let bytes = std::fs::read(path).map_err(|source| PlanError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let text = errors::decode(path, bytes)?;
        Plan::from_str(path, &text)
    }

    /// Validate plan text; `path` is used in messages.
    pub fn from_str(path: &Path, text: &str) -> Result<Plan, PlanError> {
        // Syntax first, from a spanned parse that also locates the field of a type error.
        let doc =
            toml_edit::ImDocument::parse(text).map_err(|e| errors::syntax_error(path, text, &e))?;
        let raw: RawPlan =
            toml::from_str(text).map_err(|e| errors::schema_error(path, text, &doc, &e))?;
        let ctx = Ctx { path, text };
        validate::version(&ctx, raw.version.as_ref())?;
        let concurrency = match &raw.concurrency {
            Some(v) => spans::int_in(&ctx, v, "concurrency", errors::CONCURRENCY)?,
            None => DEFAULT_CONCURRENCY,
        };
        let registries = validate::registries(&ctx, &raw.registry)?;
        let mut copies = Vec::new();
        let mut prunes = Vec::new();
        let mut visibilities = Vec::new();
        for (i, c) in raw.copy.iter().enumerate() {
            let (rules, prune) = validate::validate_copy(&ctx, i + 1, c)?;
            let visibility = validate::visibility(&ctx, c)?;
            // One rule per (block, target) pair, numbered in plan order.
            for mut rule in rules {
                rule.number = copies.len() + 1;
                prunes.extend(prune.clone().map(|p| (rule.number, p)));
                visibilities.extend(visibility.map(|v| (rule.number, v)));
                copies.push(rule);
            }
        }
        let retains = raw
            .retain
            .iter()
            .enumerate()
            .map(|(i, r)| validate::validate_retain(&ctx, i + 1, r, &registries))
            .collect::<Result<Vec<_>, _>>()?;
        let immutable_tags = match &raw.immutable_tags {
            None => vec![Regex::new(DEFAULT_IMMUTABLE_TAGS).expect("static regex")],
            Some(list) => validate::regexes(&ctx, list, "immutable_tags")?,
        };
        if copies.is_empty() && retains.is_empty() {
            // At the end of the file, where a rule would go.
            let (line, column) = ctx.line_col(text.len());
            return Err(PlanError::NoRules {
                path: path.to_path_buf(),
                line,
                column,
            });
        }
        conflicts::check(path, &copies, &retains)?;
        let in_use = match &raw.in_use {
            Some(raw) => in_use::validate(&ctx, raw)?,
            None => InUse::default(),
        };
        let recheck_after = match &raw.recheck_after {
            None => DEFAULT_RECHECK_AFTER,
            Some(v) => spans::duration(&ctx, v, "recheck_after")?,
        };
        let retain_runs = match &raw.retain_runs {
            // Within RETAIN_RUNS, so it fits.
            Some(v) => spans::int_in(&ctx, v, "retain_runs", errors::RETAIN_RUNS)? as u32,
            None => DEFAULT_RETAIN_RUNS,
        };
        Ok(Plan {
            path: path.to_path_buf(),
            registries,
            copies,
            prunes,
            visibilities,
            concurrency,
            state: raw.state.as_ref().map(PathBuf::from),
            immutable_tags,
            recheck_after,
            retain_runs,
            retains,
            in_use,
        })
    }

    /// The settings for a registry host, defaulted when the plan has no section for it.
    pub fn registry(&self, host: &str) -> RegistrySettings {
        self.registries
            .get(host)
            .cloned()
            .unwrap_or_else(|| RegistrySettings::for_host(host))
    }

    /// The `prune` settings of copy rule `number`, if it prunes.
    pub fn prune(&self, number: usize) -> Option<&Prune> {
        self.prunes
            .iter()
            .find(|(n, _)| *n == number)
            .map(|(_, p)| p)
    }

    /// The `visibility` copy rule `number` expects of its target packages, if it says.
    pub fn visibility(&self, number: usize) -> Option<Visibility> {
        self.visibilities
            .iter()
            .find(|(n, _)| *n == number)
            .map(|(_, v)| *v)
    }

    /// Every registry host the plan names in a rule or a section, sorted.
    pub fn hosts(&self) -> Vec<String> {
        let mut hosts = self.rule_hosts();
        hosts.extend(self.registries.keys().cloned());
        hosts.sort();
        hosts.dedup();
        hosts
    }

    /// The registry hosts the plan's rules name (copy sources and targets, retained
    /// repositories), sorted: a `[registry]` section alone does not put a host to use.
    pub fn rule_hosts(&self) -> Vec<String> {
        let refs = self
            .copies
            .iter()
            .flat_map(|c| [&c.from, &c.to])
            .chain(self.retains.iter().map(|r| &r.repository));
        let mut hosts: Vec<String> = refs
            .filter_map(|r| match &r.location {
                Location::Registry(h) => Some(h.clone()),
                _ => None,
            })
            .collect();
        hosts.sort();
        hosts.dedup();
        hosts
    }
}

#[cfg(test)]
mod tests;
