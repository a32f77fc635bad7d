//! What a retention policy is for the engine: which repositories, and the rule that judges
//! their images. The plan layer builds these from its `[[retain]]` blocks. Pure: no I/O.

use std::fmt;
use std::time::Duration;

use regex::Regex;

use crate::reference::Reference;

/// How long an untagged manifest is taken for a push in progress (children before their index,
/// a manifest before its tag) and kept, unless the plan says otherwise (`untagged_grace`).
pub const DEFAULT_UNTAGGED_GRACE: Duration = Duration::from_secs(3600);

/// What retention judges the images of a repository by.
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

/// One retention policy: a rule and the repositories it applies to.
#[derive(Clone, Debug)]
pub struct RetainPolicy {
    /// 1-based position among the plan's `[[retain]]` blocks: its identity in messages.
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
