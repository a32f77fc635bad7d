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
pub mod filter;
pub mod in_use;
mod lease_settings;
pub mod prune;
mod raw;
mod schema;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use regex::Regex;

use raw::RawPlan;
use validate::Ctx;

pub use artifacts::{Platform, PlatformMode, Platforms, Referrers};
pub use errors::PlanError;
pub use filter::TagFilter;
pub use in_use::{FilePattern, InUse, KubeConfig, KubeSource};
pub use prune::Prune;

use crate::reference::{Location, Reference};
use crate::registry::config::RegistrySettings;

/// The most blob transfers in flight to one target registry (and images in flight), unless
/// the plan or `--concurrency` says otherwise. Each registry's window starts at
/// [`WINDOW_START`] and grows while the link's throughput rises, halving when the registry
/// pushes back (see `copy::engine::window`). crane uses 4 per image, skopeo 6 per image;
/// ferry shares its windows across all images.
pub const DEFAULT_CONCURRENCY: usize = 16;

/// Where each registry's window of blob transfers starts (at most the `concurrency` bound):
/// enough to keep two cores and a typical uplink busy without tripping registry limits.
pub const WINDOW_START: usize = 8;

/// One validated `[[copy]]` block.
#[derive(Clone, Debug)]
pub struct CopyRule {
    /// 1-based position among the plan's `[[copy]]` blocks.
    pub number: usize,
    /// Line and column of its `from` field, for messages.
    pub line: usize,
    pub column: usize,
    pub from: Reference,
    pub to: Reference,
    pub tags: TagFilter,
    /// Carry the signatures, attestations and SBOMs of every selected image (referrer tags,
    /// the referrers API, the fallback tag index), even where the tag filters leave them out.
    pub referrers: Referrers,
    /// Only these platforms of each index; `None` copies every one.
    pub platforms: Option<std::sync::Arc<Platforms>>,
    /// Delete at the target what this rule copied there and no longer selects.
    pub prune: Option<Prune>,
    /// Selecting nothing (a wildcard that lists no repository, tag filters that keep no tag)
    /// is accepted, not a failure of the rule.
    pub allow_empty: bool,
}

impl fmt::Display for CopyRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "copy #{} ({} -> {})", self.number, self.from, self.to)
    }
}

/// Tags that never change once pushed, by default: semver-looking tags (`1.2.3`, `v1.2.3`,
/// `1.2.3-rc.1`). A re-run trusts the checkpoint for these without asking any registry.
pub const DEFAULT_IMMUTABLE_TAGS: &str = r"^v?\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$";

/// How long a record of an item done is trusted without asking its target, unless the plan
/// says otherwise (`recheck_after`): a tag deleted at the target by someone else comes back
/// on the next run after this long. A day keeps a nightly CronJob's no-op run cheap.
pub const DEFAULT_RECHECK_AFTER: Duration = Duration::from_secs(24 * 3600);

/// How long an untagged manifest is taken for a push in progress (children before their index,
/// a manifest before its tag) and kept, unless the plan says otherwise (`untagged_grace`).
pub const DEFAULT_UNTAGGED_GRACE: Duration = Duration::from_secs(3600);

/// Where the checkpoint lives unless `--state` or the plan says otherwise.
pub const DEFAULT_STATE: &str = "state/ferry.db";

/// The rule of one `[[retain]]` block, validated: what retention judges images by.
#[derive(Clone, Debug)]
pub struct RetainRule {
    /// Always keep the N newest images (0: no such guarantee).
    pub keep_newest: usize,
    /// Images with a tag matching any of these are kept.
    pub keep_tags: Vec<Regex>,
    /// Only images whose tags all match one of these are candidates (empty: every tag).
    pub delete_tags: Vec<Regex>,
    /// Only images older than this are candidates.
    pub older_than: Option<Duration>,
    /// Untagged manifests (not reachable from a tagged image) are candidates too.
    pub untagged: bool,
    /// An untagged manifest younger than this is a push in progress and is kept (zero: none
    /// is); one whose age is unknown is kept too, unless this is zero.
    pub untagged_grace: Duration,
    /// More deletions than this in one repository: delete nothing there and say why.
    pub max_deletions: Option<usize>,
}

/// One validated `[[retain]]` block.
#[derive(Clone, Debug)]
pub struct RetainPolicy {
    /// 1-based position among the plan's `[[retain]]` blocks.
    pub number: usize,
    /// Line and column of its `repository` field.
    pub line: usize,
    pub column: usize,
    /// A repository, or a wildcard (`ghcr.io/org/*`).
    pub repository: Reference,
    pub rule: RetainRule,
}

impl fmt::Display for RetainPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "retain #{} ({})", self.number, self.repository)
    }
}

/// A validated plan.
#[derive(Clone, Debug)]
pub struct Plan {
    pub path: PathBuf,
    registries: BTreeMap<String, RegistrySettings>,
    pub copies: Vec<CopyRule>,
    /// The most blob transfers in flight to one target registry (and images in flight).
    pub concurrency: usize,
    /// The checkpoint file the plan names, if any.
    pub state: Option<PathBuf>,
    /// Tags recorded done that a re-run does not check again.
    pub immutable_tags: Vec<Regex>,
    /// A record confirmed at its target longer ago than this is checked there again.
    pub recheck_after: Duration,
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
            Some(v) => validate::int_in(&ctx, v, "concurrency", errors::CONCURRENCY)?,
            None => DEFAULT_CONCURRENCY,
        };
        let registries = validate::registries(&ctx, &raw.registry)?;
        let copies = raw
            .copy
            .iter()
            .enumerate()
            .map(|(i, c)| validate::validate_copy(&ctx, i + 1, c))
            .collect::<Result<Vec<_>, _>>()?;
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
            Some(v) => validate::duration(&ctx, v, "recheck_after")?,
        };
        Ok(Plan {
            path: path.to_path_buf(),
            registries,
            copies,
            concurrency,
            state: raw.state.as_ref().map(PathBuf::from),
            immutable_tags,
            recheck_after,
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
