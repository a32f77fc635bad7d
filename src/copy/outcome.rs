//! What became of an item: copied, present, unchanged, skipped or failed, with the counts a
//! run adds up.

use std::sync::Arc;
use std::time::Duration;

use super::item::Item;
use crate::reference::Digest;
use crate::registry::RegistryError;

/// Why copying one image failed; names the reference and keeps the registry's error.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("reading {reference}")]
    Source {
        reference: String,
        #[source]
        source: RegistryError,
    },
    #[error("writing {reference}")]
    Target {
        reference: String,
        #[source]
        source: RegistryError,
    },
    #[error("{reference}: {reason}")]
    Manifest { reference: String, reason: String },
    /// The manifest cannot be read as one ferry copies.
    #[error("{reference}")]
    Unreadable {
        reference: String,
        source: crate::registry::manifest::ManifestError,
    },
    /// Another rule's item writes the same target tag from another source.
    #[error("{reference}: {reason}")]
    Conflict { reference: String, reason: String },
    /// The platform list cannot be applied to this index.
    #[error("{reference}")]
    Platforms {
        reference: String,
        #[source]
        source: super::platform::PlatformError,
    },
    /// The run is stopping: an upload parked at a chunk boundary (or a large one was not
    /// begun). The item is interrupted, not failed; the next run continues it.
    #[error("{reference}: interrupted (the run is stopping)")]
    Interrupted { reference: String },
    #[error("writing {reference}: the target refuses an index whose children are missing ({left_out} left out by `platforms`); this registry needs platform_mode = \"rewrite\" (a new index, a new digest) or every platform")]
    SparseRefused {
        reference: String,
        left_out: usize,
        #[source]
        source: RegistryError,
    },
}

/// What happened to one item.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The target now holds the image. `bytes` crossed the wire for it.
    Copied {
        digest: Digest,
        stats: ImageStats,
    },
    /// The target holds the tag with the source digest (or, `rewritten`, with the digest of
    /// the index the platform list gives): checked at the target in this run.
    Present {
        digest: Digest,
        rewritten: Option<Digest>,
    },
    /// Recorded done by an earlier run, and trusted without asking the target again: an
    /// immutable tag or a digest, or a tag whose source digest is the recorded one, verified
    /// at the target less than `recheck_after` ago.
    Unchanged {
        digest: Digest,
        rewritten: Option<Digest>,
    },
    /// Not copied on purpose: a referrer whose subject failed, was not copied, or was
    /// rewritten to a new digest at the target.
    Skipped {
        reason: String,
    },
    Failed {
        error: Arc<CopyError>,
    },
}

impl Outcome {
    /// The source digest and, when the target got another one (a rewritten index), that one;
    /// `None` unless the item is at its target.
    pub fn placed(&self) -> Option<(&Digest, Option<&Digest>)> {
        match self {
            Outcome::Copied { digest, stats } => Some((digest, stats.rewritten.as_ref())),
            Outcome::Present { digest, rewritten } | Outcome::Unchanged { digest, rewritten } => {
                Some((digest, rewritten.as_ref()))
            }
            Outcome::Skipped { .. } | Outcome::Failed { .. } => None,
        }
    }
}

impl Outcome {
    /// For a copy: `sha256:old → sha256:new` when the source moved since an earlier run
    /// recorded it, and what the target lacked of an image it held (put back), in words.
    pub fn changes(&self) -> (Option<String>, Vec<String>) {
        match self {
            Outcome::Copied { digest, stats } => (
                stats
                    .updated
                    .as_ref()
                    .map(|old| format!("{old} → {digest}")),
                stats.gaps.iter().map(ToString::to_string).collect(),
            ),
            _ => (None, Vec::new()),
        }
    }
}

/// Why a referrer whose subject is carried by an item that ended with `parent` is not copied,
/// or `None` when it may be: only after its subject is at the target with the digest it names.
pub fn not_carried(parent: &Outcome, parent_item: &Item, subject: &Digest) -> Option<String> {
    match parent {
        Outcome::Failed { .. } => Some(format!(
            "not copied: what it refers to ({}) failed",
            parent_item.target_display()
        )),
        Outcome::Skipped { .. } => Some(format!(
            "not copied: what it refers to ({}) was not copied",
            parent_item.target_display()
        )),
        _ => match parent.placed() {
            Some((old, Some(new))) if old == subject => Some(format!(
                "referrer of rewritten index not carried: {old} → {new} (platform_mode = \"rewrite\"); it names a digest the target does not have"
            )),
            _ => None,
        },
    }
}

/// Per-image counters.
#[derive(Debug, Clone, Default)]
pub struct ImageStats {
    pub bytes: u64,
    /// Blobs streamed from the source.
    pub transferred: usize,
    /// Blobs the target got by a cross-repository mount.
    pub mounted: usize,
    /// Blobs the target already had.
    pub existing: usize,
    /// Non-distributable layers, left to be fetched from their own URLs.
    pub foreign: Vec<Digest>,
    /// Child manifests written.
    pub manifests: usize,
    /// How long the copy of this image took.
    pub elapsed: Duration,
    /// The digest of the index the target got instead of the source's (`platform_mode =
    /// "rewrite"` with platforms left out).
    pub rewritten: Option<Digest>,
    /// Index children not copied because of `platforms`.
    pub left_out: usize,
    /// The digest an earlier run recorded for this source reference, when the source has
    /// moved since (a re-pushed tag): the image was copied again.
    pub updated: Option<Digest>,
    /// What the target tag pointed at before, when it pointed at another digest.
    pub replaced: Option<Digest>,
    /// What the target lacked of an image whose top manifest it held: put back from the
    /// source.
    pub gaps: Vec<Gap>,
}

/// Something an image reaches that its target lacks (or, read whole, holds damaged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub part: Part,
    /// The missing manifest or blob; for [`Part::Unlisted`], the subject whose fallback index
    /// does not list the referrer.
    pub digest: Digest,
    /// The manifest that names it (an index for a child, an image for a blob).
    pub within: Option<Digest>,
}

/// What kind of thing a [`Gap`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// A child manifest of an index, with its platform when the index says it.
    Manifest {
        platform: Option<String>,
    },
    Config,
    Layer,
    /// A blob the target has whose bytes do not hash to its digest (`ferry verify --deep`).
    Damaged,
    /// A referrer missing from its subject's `sha256-<hex>` fallback index, at a target
    /// without the referrers API.
    Unlisted,
}

impl Part {
    /// `manifest`, `config`, `layer`, `damaged`, `unlisted`: the part's name in JSON.
    pub fn name(&self) -> &'static str {
        match self {
            Part::Manifest { .. } => "manifest",
            Part::Config => "config",
            Part::Layer => "layer",
            Part::Damaged => "damaged",
            Part::Unlisted => "unlisted",
        }
    }
}

impl std::fmt::Display for Gap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let within = match &self.within {
            Some(w) => format!(" of {w}"),
            None => String::new(),
        };
        match &self.part {
            Part::Manifest { platform } => {
                write!(f, "child manifest {}", self.digest)?;
                if let Some(p) = platform {
                    write!(f, " ({p})")?;
                }
                write!(f, "{within} missing")
            }
            Part::Config => write!(f, "config blob {}{within} missing", self.digest),
            Part::Layer => write!(f, "layer {}{within} missing", self.digest),
            Part::Damaged => write!(
                f,
                "blob {}{within} damaged: its bytes do not hash to its digest",
                self.digest
            ),
            Part::Unlisted => write!(
                f,
                "not listed in the fallback index {} of its subject",
                crate::registry::manifest::fallback_tag(&self.digest)
            ),
        }
    }
}

/// What the run's blob transfers cost and saved, across images (an interrupted image has no
/// [`ImageStats`], but its bytes were read).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TransferTotals {
    /// Bytes received from sources for uploads, discarded ones included.
    pub source_bytes: u64,
    /// Bytes upload sessions of earlier runs already held: neither read nor sent again.
    pub resumed_bytes: u64,
    /// Bytes sent from the local spool instead of read from the source again.
    pub spooled_bytes: u64,
    /// Bytes a source sent again because it answered a range request with the whole blob
    /// (read and discarded).
    pub reread_bytes: u64,
    /// Uploads parked at a chunk boundary because the run was stopping.
    pub parked: u64,
    /// Fan-out (`to = [...]`): blobs read from the source once into the spool for every
    /// target that needs them.
    pub fanout_spooled_blobs: u64,
    /// Fan-out: blob reads from the source past the first, because the spool had no room.
    pub fanout_reread_blobs: u64,
}

impl TransferTotals {
    pub fn add(&mut self, other: &TransferTotals) {
        self.source_bytes += other.source_bytes;
        self.resumed_bytes += other.resumed_bytes;
        self.spooled_bytes += other.spooled_bytes;
        self.reread_bytes += other.reread_bytes;
        self.parked += other.parked;
        self.fanout_spooled_blobs += other.fanout_spooled_blobs;
        self.fanout_reread_blobs += other.fanout_reread_blobs;
    }
}

/// Totals of a run, for the summary line.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    pub copied: usize,
    /// Checked at the target in this run ([`Outcome::Present`]).
    pub present: usize,
    /// Trusted from the checkpoint without asking the target ([`Outcome::Unchanged`]).
    pub unchanged: usize,
    pub failed: usize,
    /// Referrers not copied on purpose ([`Outcome::Skipped`]).
    pub skipped: usize,
    /// Not started, or stopped by an interruption.
    pub interrupted: usize,
    pub bytes: u64,
    pub elapsed: Duration,
}

impl Totals {
    /// The counts of a batch's outcomes (`None`: interrupted); elapsed time not set.
    pub fn of(outcomes: &[Option<Outcome>]) -> Totals {
        let mut totals = Totals::default();
        for o in outcomes {
            totals.count(o.as_ref());
        }
        totals
    }

    /// Count one more outcome (`None`: interrupted), as items finish.
    pub fn count(&mut self, outcome: Option<&Outcome>) {
        match outcome {
            Some(Outcome::Copied { stats, .. }) => {
                self.copied += 1;
                self.bytes += stats.bytes;
            }
            Some(Outcome::Present { .. }) => self.present += 1,
            Some(Outcome::Unchanged { .. }) => self.unchanged += 1,
            Some(Outcome::Skipped { .. }) => self.skipped += 1,
            Some(Outcome::Failed { .. }) => self.failed += 1,
            None => self.interrupted += 1,
        }
    }

    /// Add another stage's counts (not its elapsed time: stages run one after another and
    /// the caller measures the whole).
    pub fn add(&mut self, other: &Totals) {
        self.copied += other.copied;
        self.present += other.present;
        self.unchanged += other.unchanged;
        self.failed += other.failed;
        self.skipped += other.skipped;
        self.interrupted += other.interrupted;
        self.bytes += other.bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 21, "What was seen" 6: what was checked at the target and what was trusted from
    /// the checkpoint are counted apart.
    #[test]
    fn present_and_unchanged_are_counted_apart() {
        let digest = Digest::sha256_of(b"image");
        let present = Outcome::Present {
            digest: digest.clone(),
            rewritten: None,
        };
        let unchanged = Outcome::Unchanged {
            digest,
            rewritten: None,
        };
        let mut t = Totals::of(&[
            Some(present),
            Some(unchanged.clone()),
            Some(unchanged),
            None,
        ]);
        assert_eq!((t.present, t.unchanged, t.interrupted), (1, 2, 1));
        t.add(&t.clone());
        assert_eq!((t.present, t.unchanged), (2, 4));
    }
}
