//! What the checkpoint stores and returns: the writes callers queue, the records a run reads
//! back, a run's totals and summary. Plain data; the owner thread turns it into rows.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// The id of a row in `runs`, as SQLite assigns it.
pub type RunId = i64;

/// One change to the checkpoint, queued by [`State::record`](super::State::record).
///
/// Callers must never pass credentials in any field: no `user:password@` or bearer tokens in
/// URLs, no `Authorization` headers or token responses in error texts. This module stores what
/// it is given; the file is 0600, but it outlives the run and ends up attached to bug reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Upsert one copy item, keyed `(target_registry, target_repo, target_ref)`.
    Item(ItemRecord),
    /// A blob known present in `repo` at target registry `registry`; keyed `(registry, digest)`,
    /// so a later record for another repository replaces the repository (any one will do as a
    /// cross-repository mount source).
    Blob {
        registry: String,
        digest: String,
        size: u64,
        repo: String,
    },
    /// An upload in progress: where to resume it, how many bytes the registry has and the
    /// SHA-256 state of those bytes.
    Upload {
        registry: String,
        repo: String,
        digest: String,
        url: String,
        offset: u64,
        hash_state: String,
        size: u64,
        /// `registry/repo` the bytes are read from.
        source: String,
    },
    /// The upload completed (or was abandoned); its row is deleted.
    UploadFinished {
        registry: String,
        repo: String,
        digest: String,
    },
    /// A manifest was deleted from `repo` of target registry `registry`: forget the items
    /// whose target reference (tag or digest) is one of `refs`, so no later run trusts them.
    Forget {
        registry: String,
        repo: String,
        refs: Vec<String>,
    },
    /// The source digest `tag` pointed to when last seen.
    TagSeen {
        registry: String,
        repo: String,
        tag: String,
        digest: String,
    },
    /// A tag a `prune` rule copied was found missing from what the rule selects: remembered
    /// with the time first found (a later write for the same tag keeps the first time).
    Missing {
        registry: String,
        repo: String,
        tag: String,
        since: i64,
    },
    /// The tags were found selected again (or are gone): they are no longer missing.
    NotMissing {
        registry: String,
        repo: String,
        tags: Vec<String>,
    },
    /// A manifest retention deleted, for audits (and restores where the registry allows).
    Deletion {
        run: RunId,
        registry: String,
        repo: String,
        digest: String,
        /// The tags it had, comma-separated.
        tags: String,
        reason: String,
        /// The registry's own id for it (a GHCR package version id), where it has one.
        version_id: Option<String>,
        /// The manifest's media type and exact bytes, for `ferry restore` (`None` where they
        /// could not be read).
        media_type: Option<String>,
        manifest: Option<Vec<u8>>,
    },
    /// `ferry restore` put the deletion with this row id back (or found it already there).
    Restored { id: i64 },
    /// A registry refused for good to delete `digest` of `repo` (`reason`, its own words): the
    /// row keeps when it first did and, updated, when a run last met it.
    Refusal {
        registry: String,
        repo: String,
        digest: String,
        version_id: Option<String>,
        reason: String,
    },
}

/// One deletion as the checkpoint keeps it, with what `ferry restore` needs to put it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletionRecord {
    /// The row's id: deletions are numbered in the order they were made.
    pub id: i64,
    pub run: RunId,
    pub registry: String,
    pub repo: String,
    pub digest: String,
    /// The tags it had (those removed, for a tag-only removal).
    pub tags: Vec<String>,
    pub reason: String,
    /// The registry's own id for what it deleted (a GHCR package version id).
    pub version_id: Option<String>,
    /// The manifest's media type and exact bytes; `None` for a deletion recorded before they
    /// were kept (schema version 8), or whose manifest could not be read.
    pub media_type: Option<String>,
    pub manifest: Option<Vec<u8>>,
    /// Unix seconds when `ferry restore` put it back; `None` while it is not.
    pub restored_at: Option<i64>,
}

impl DeletionRecord {
    /// The reason pruning gives a tag removed alone ([`Write::Deletion`] of a tag-only
    /// removal): the manifest stayed.
    pub const TAG_ONLY: &'static str = " (tag only)";

    /// Only the tags were removed; the manifest stayed.
    pub fn tags_only(&self) -> bool {
        self.reason.ends_with(Self::TAG_ONLY)
    }
}

/// Where one copy item stands. Stored as `pending`, `done`, `failed`, `skipped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ItemStatus {
    Pending,
    Done,
    Failed,
    Skipped,
}

impl ItemStatus {
    /// The text stored in the `status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            ItemStatus::Pending => "pending",
            ItemStatus::Done => "done",
            ItemStatus::Failed => "failed",
            ItemStatus::Skipped => "skipped",
        }
    }

    pub(super) fn parse(s: &str) -> Option<ItemStatus> {
        Some(match s {
            "pending" => ItemStatus::Pending,
            "done" => ItemStatus::Done,
            "failed" => ItemStatus::Failed,
            "skipped" => ItemStatus::Skipped,
            _ => return None,
        })
    }
}

impl fmt::Display for ItemStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One copy item as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemRecord {
    pub run: RunId,
    /// The source repository as users write it, e.g. `docker.io/library/nginx`.
    pub source: String,
    /// Tag or digest at the source.
    pub source_ref: String,
    pub source_digest: Option<String>,
    /// A registry host such as `ghcr.io`, or `oci:` for an image layout.
    pub target_registry: String,
    pub target_repo: String,
    /// The tag, or the digest for an untagged copy.
    pub target_ref: String,
    pub status: ItemStatus,
    /// Stored as given: the engine knows whether a retry counts.
    pub attempts: u32,
    /// Stored truncated to [`MAX_ERROR_CHARS`] characters.
    pub last_error: Option<String>,
    pub bytes: u64,
    /// The digest the target holds for it, when done (the source's, or a rewritten index's).
    pub target_digest: Option<String>,
    /// Unix seconds when the target was last confirmed to hold it (copied or found there).
    pub verified_at: Option<i64>,
}

/// `last_error` is cut to this many characters: enough for any error chain ferry prints, and a
/// bound on what a registry's error body can make us store.
pub const MAX_ERROR_CHARS: usize = 2000;

/// How a run ended. Stored as `succeeded`, `partial`, `parked` (a pull budget ran out; the
/// next run continues), `interrupted`, `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunOutcome {
    Succeeded,
    Partial,
    Interrupted,
    Failed,
    Parked,
}

impl RunOutcome {
    /// The text stored in the `runs.status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Succeeded => "succeeded",
            RunOutcome::Partial => "partial",
            RunOutcome::Interrupted => "interrupted",
            RunOutcome::Failed => "failed",
            RunOutcome::Parked => "parked",
        }
    }
}

impl fmt::Display for RunOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A run's counters, as the engine counted them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunTotals {
    pub copied: u64,
    /// Checked at the target in this run. Runs recorded before schema version 7 count
    /// `unchanged` items here too.
    pub present: u64,
    /// Trusted from the checkpoint without asking the target.
    pub unchanged: u64,
    /// Every failure the run listed: failed items, rules that could not be resolved, what
    /// retention and pruning could not do.
    pub failed: u64,
    /// Referrers not carried on purpose (what they refer to failed, was not copied, or was
    /// rewritten to a new digest).
    pub skipped: u64,
    /// Items not started or not finished because of SIGINT/SIGTERM (the next run continues
    /// them).
    pub interrupted: u64,
    pub bytes: u64,
    /// Manifests retention deleted.
    pub deleted: u64,
    /// Pruning's deletions: manifests deleted, and tags removed alone.
    pub pruned: u64,
}

/// Everything a resuming run needs, read in one go at startup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Keyed `(target_registry, target_repo, target_ref)`.
    pub items: HashMap<(String, String, String), ItemState>,
    /// Keyed `(registry, digest)`.
    pub blobs: HashMap<(String, String), BlobState>,
    /// Keyed `(registry, repo, digest)`.
    pub uploads: HashMap<(String, String, String), UploadState>,
    /// `(registry, repo, tag)` to the digest last seen.
    pub tags: HashMap<(String, String, String), String>,
    /// `(registry, repo, tag)` of a target to when a `prune` rule first found it missing
    /// (unix seconds).
    pub missing: HashMap<(String, String, String), i64>,
    /// `(registry, repo, digest)` of what a registry refused for good to delete.
    pub refusals: HashMap<(String, String, String), RefusalState>,
}

/// A deletion a registry refused for good, as remembered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusalState {
    pub version_id: Option<String>,
    /// The registry's own words.
    pub reason: String,
    /// Unix seconds: when it first refused, and when a run last met the refusal (refused
    /// again, or kept it without asking).
    pub first_at: i64,
    pub last_at: i64,
}

/// A copy item as last recorded, by any run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemState {
    pub source: String,
    pub source_ref: String,
    pub source_digest: Option<String>,
    pub status: ItemStatus,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub target_digest: Option<String>,
    pub verified_at: Option<i64>,
}

/// A blob known present at a target registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobState {
    pub repo: String,
    pub size: u64,
}

/// An upload that can be resumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadState {
    pub url: String,
    pub offset: u64,
    /// The encoded hash of the first `offset` bytes; `None` for a row written before it was
    /// kept (such an upload starts over).
    pub hash_state: Option<String>,
    pub size: u64,
    pub source: String,
}

/// One run, for `ferry status` and the end-of-run report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSummary {
    pub id: RunId,
    pub plan_path: String,
    pub plan_fingerprint: String,
    /// Unix seconds.
    pub started_at: i64,
    /// Unix seconds; `None` while running, or if the run died without finishing.
    pub ended_at: Option<i64>,
    /// `running`, `killed` (it died without a clean exit), or a [`RunOutcome`] as text.
    pub status: String,
    pub totals: RunTotals,
    /// This run's items counted by status text. An item a later run touched again counts for
    /// the later run only: items are keyed by target, not by run.
    pub items_by_status: BTreeMap<String, u64>,
    /// This run's failed items as (`source:ref -> target:ref`, last error), ordered by target.
    /// Digest references are written with `@`.
    pub failures: Vec<(String, String)>,
    /// This run's deletions as (`registry/repo@digest`, tags, reason), in deletion order.
    pub deletions: Vec<(String, String, String)>,
}
