//! The copy engine's [`Journal`] and retention's [`retention::Journal`] over the SQLite
//! checkpoint: consults a snapshot taken when the run starts, and queues every change to the
//! state's writer thread (never blocking the async threads on SQLite).

use std::time::{Duration, SystemTime};

use regex::Regex;

use crate::copy::{Endpoint, Item, Journal, Outcome, Recorded, Transfer};
use crate::plan::Plan;
use crate::reference::{Digest, Midstate};
use crate::registry::{Parked, UploadProgress};
use crate::report::hints::chain as error_chain;
use crate::retention::deletions::{Copied, Ledger};
use crate::retention::{self, Deletion, Refused};
use crate::state::{
    DeletionRecord, ItemRecord, ItemState, ItemStatus, RunId, Snapshot, State, Write,
};

/// What an execution records through: the copy engine's journal and retention's, one
/// checkpoint.
pub trait Checkpoint: Journal + retention::Journal {}

impl<T: Journal + retention::Journal> Checkpoint for T {}

pub struct StateJournal {
    /// `None`: a dry journal (`ferry plan`), which consults the records and writes nothing.
    state: Option<State>,
    run: RunId,
    snapshot: Snapshot,
    immutable: Vec<Regex>,
    /// `--recheck`: trust no record without asking the registries (records are still read,
    /// to tell a source that moved since).
    recheck: bool,
    /// A record confirmed at its target longer ago than this is checked there again.
    recheck_after: Duration,
    /// Unix seconds, when the run started.
    now: i64,
    /// Every target repository the snapshot records writing into.
    targets: std::collections::HashSet<(String, String)>,
}

impl StateJournal {
    pub fn new(state: State, run: RunId, snapshot: Snapshot, plan: &Plan, recheck: bool) -> Self {
        StateJournal {
            state: Some(state),
            run,
            ..Self::dry(snapshot, plan, recheck)
        }
    }

    /// Decides from `snapshot` as a run would, and records nothing.
    pub fn dry(snapshot: Snapshot, plan: &Plan, recheck: bool) -> Self {
        StateJournal {
            state: None,
            run: 0,
            immutable: plan.immutable_tags.clone(),
            recheck,
            recheck_after: plan.recheck_after,
            now: unix_now(),
            targets: targets_of(&snapshot),
            snapshot,
        }
    }

    fn record(&self, write: Write) {
        if let Some(state) = &self.state {
            state.record(write);
        }
    }

    fn previous(&self, item: &Item) -> Option<&ItemState> {
        self.snapshot.items.get(&item.key())
    }
}

/// The target repositories a snapshot records writing into: items, blobs, upload sessions.
fn targets_of(snapshot: &Snapshot) -> std::collections::HashSet<(String, String)> {
    let items = snapshot
        .items
        .keys()
        .map(|(r, repo, _)| (r.clone(), repo.clone()));
    let blobs = snapshot
        .blobs
        .iter()
        .map(|((r, _), b)| (r.clone(), b.repo.clone()));
    let uploads = snapshot
        .uploads
        .keys()
        .map(|(r, repo, _)| (r.clone(), repo.clone()));
    items.chain(blobs).chain(uploads).collect()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The source an item's record names: with a platform list, the list too, so a record of a
/// copy with other platforms does not count as done.
fn source_key(item: &Item) -> String {
    match &item.platforms {
        None => item.source.display(),
        Some(p) => format!("{} [platforms {p}]", item.source.display()),
    }
}

fn record(run: RunId, item: &Item, status: ItemStatus) -> ItemRecord {
    let (target_registry, target_repo, target_ref) = item.key();
    ItemRecord {
        run,
        source: source_key(item),
        source_ref: item.source_ref.clone(),
        source_digest: None,
        target_registry,
        target_repo,
        target_ref,
        status,
        attempts: 0,
        last_error: None,
        bytes: 0,
        target_digest: None,
        verified_at: None,
    }
}

impl Journal for StateJournal {
    fn recorded(&self, item: &Item) -> Option<Recorded> {
        let state = self.previous(item)?;
        // Only a record of this very source counts: the plan may now copy something else to
        // the same target.
        if state.status != ItemStatus::Done
            || state.source != source_key(item)
            || state.source_ref != item.source_ref
        {
            return None;
        }
        let digest = state.source_digest.as_deref().and_then(Digest::parse)?;
        let rewritten = state
            .target_digest
            .as_deref()
            .and_then(Digest::parse)
            .filter(|t| *t != digest);
        // A record from before target digests were kept (or never confirmed) is not fresh.
        let fresh = !self.recheck
            && state.target_digest.is_some()
            && state.verified_at.is_some_and(|at| {
                self.now.saturating_sub(at) < self.recheck_after.as_secs() as i64
            });
        Some(Recorded {
            digest,
            rewritten,
            fresh,
        })
    }

    fn immutable(&self, item: &Item) -> bool {
        Digest::parse(&item.source_ref).is_some()
            || self.immutable.iter().any(|r| r.is_match(&item.source_ref))
    }

    fn item_started(&self, item: &Item) {
        let mut r = record(self.run, item, ItemStatus::Pending);
        r.attempts = self.previous(item).map_or(0, |s| s.attempts);
        self.record(Write::Item(r));
    }

    fn item_finished(&self, item: &Item, outcome: &Outcome) {
        let previous = self.previous(item);
        let attempts = previous.map_or(0, |s| s.attempts);
        let mut r = record(self.run, item, ItemStatus::Done);
        r.attempts = attempts + 1;
        match outcome {
            Outcome::Copied { digest, stats } => {
                r.source_digest = Some(digest.to_string());
                r.target_digest = Some(stats.rewritten.as_ref().unwrap_or(digest).to_string());
                r.verified_at = Some(self.now);
                r.bytes = stats.bytes;
            }
            Outcome::Present { digest, rewritten } => {
                r.source_digest = Some(digest.to_string());
                r.target_digest = Some(rewritten.as_ref().unwrap_or(digest).to_string());
                r.verified_at = Some(self.now);
            }
            Outcome::Unchanged { digest, rewritten } => {
                r.source_digest = Some(digest.to_string());
                r.target_digest = Some(rewritten.as_ref().unwrap_or(digest).to_string());
                // Trusted, not confirmed: the time it was last confirmed stands.
                r.verified_at = previous.and_then(|p| p.verified_at);
                // Nothing was attempted against the registries for an unchanged record.
                r.attempts = attempts;
            }
            Outcome::Skipped { reason } => {
                r.status = ItemStatus::Skipped;
                r.last_error = Some(reason.clone());
                r.attempts = attempts;
            }
            Outcome::Failed { error } => {
                r.status = ItemStatus::Failed;
                r.last_error = Some(error_chain(error.as_ref()));
            }
        }
        self.record(Write::Item(r));
    }

    fn blob_location(&self, registry: &str, digest: &Digest) -> Option<String> {
        self.snapshot
            .blobs
            .get(&(registry.to_string(), digest.to_string()))
            .map(|b| b.repo.clone())
    }

    fn knows_target(&self, registry: &str, repo: &str) -> bool {
        self.targets
            .contains(&(registry.to_string(), repo.to_string()))
    }

    fn blob_present(&self, registry: &str, repo: &str, digest: &Digest, size: u64) {
        self.record(Write::Blob {
            registry: registry.to_string(),
            digest: digest.to_string(),
            size,
            repo: repo.to_string(),
        });
    }

    fn upload_session(&self, registry: &str, repo: &str, digest: &Digest) -> Option<Parked> {
        let up = self.snapshot.uploads.get(&(
            registry.to_string(),
            repo.to_string(),
            digest.to_string(),
        ))?;
        // A row without a readable hash (older than schema 5, or damaged) starts over.
        let state = Midstate::decode(up.hash_state.as_deref()?).ok()?;
        (state.offset() == up.offset).then(|| Parked {
            url: up.url.clone(),
            state,
        })
    }

    fn upload_progress(&self, t: &Transfer<'_>, p: &UploadProgress) {
        let (registry, repo, digest) = (
            t.target.registry.name().to_string(),
            t.target.repo.clone(),
            t.digest.to_string(),
        );
        self.record(match p {
            UploadProgress::Session { url, state } => Write::Upload {
                registry,
                repo,
                digest,
                url: url.clone(),
                offset: state.offset(),
                hash_state: state.encode(),
                size: t.size,
                source: t.source.display(),
            },
            UploadProgress::Finished => Write::UploadFinished {
                registry,
                repo,
                digest,
            },
        });
    }

    fn tag_seen(&self, source: &Endpoint, tag: &str, digest: &Digest) {
        self.record(Write::TagSeen {
            registry: source.registry.name().to_string(),
            repo: source.repo.clone(),
            tag: tag.to_string(),
            digest: digest.to_string(),
        });
    }
}

impl retention::Journal for StateJournal {
    fn keeps_manifests(&self) -> bool {
        self.state.is_some()
    }

    fn ledger(&self) -> Ledger {
        let mut ledger = Ledger::default();
        for ((registry, repo, reference), item) in &self.snapshot.items {
            let Some(digest) = item.target_digest.as_deref().and_then(Digest::parse) else {
                continue;
            };
            // The source as the rule names it, without the platform list `source_key` adds.
            let source = match item.source.split_once(" [platforms ") {
                Some((source, _)) => source,
                None => &item.source,
            };
            ledger
                .copied
                .entry((registry.clone(), repo.clone()))
                .or_default()
                .insert(
                    reference.clone(),
                    Copied {
                        source: source.to_string(),
                        digest,
                    },
                );
        }
        for ((registry, repo, tag), since) in &self.snapshot.missing {
            let since = SystemTime::UNIX_EPOCH + Duration::from_secs((*since).max(0) as u64);
            ledger
                .missing
                .entry((registry.clone(), repo.clone()))
                .or_default()
                .insert(tag.clone(), since);
        }
        ledger
    }

    fn deleted(&self, d: &Deletion<'_>) {
        self.record(Write::Deletion {
            run: self.run,
            registry: d.registry.to_string(),
            repo: d.repo.to_string(),
            digest: d.digest.to_string(),
            tags: d.tags.join(", "),
            reason: if d.tags_only {
                format!("{}{}", d.reason, DeletionRecord::TAG_ONLY)
            } else {
                d.reason.to_string()
            },
            version_id: d.version_id.map(str::to_string),
            media_type: d.manifest.map(|m| m.media_type.clone()),
            manifest: d.manifest.map(|m| m.bytes.to_vec()),
        });
        // Whatever a record said about these references is no longer true at the target.
        let mut refs = d.tags.to_vec();
        if !d.tags_only {
            refs.push(d.digest.to_string());
        }
        // Keyed as the item records are (`Item::key`): a layout path in one spelling.
        let repo = match d.registry {
            "oci:" => crate::reference::names::canonical_layout_path(d.repo),
            _ => d.repo.to_string(),
        };
        self.record(Write::Forget {
            registry: d.registry.to_string(),
            repo,
            refs,
        });
    }

    fn missing(&self, registry: &str, repo: &str, tags: &[String], since: SystemTime) {
        let since = since
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        for tag in tags {
            self.record(Write::Missing {
                registry: registry.to_string(),
                repo: repo.to_string(),
                tag: tag.clone(),
                since,
            });
        }
    }

    fn not_missing(&self, registry: &str, repo: &str, tags: &[String]) {
        if !tags.is_empty() {
            self.record(Write::NotMissing {
                registry: registry.to_string(),
                repo: repo.to_string(),
                tags: tags.to_vec(),
            });
        }
    }

    fn refusals(&self, registry: &str, repo: &str) -> Vec<Refused> {
        let mut out: Vec<Refused> = self
            .snapshot
            .refusals
            .iter()
            .filter(|((r, p, _), _)| r == registry && p == repo)
            .filter_map(|((_, _, digest), s)| {
                Some(Refused {
                    digest: Digest::parse(digest)?,
                    version_id: s.version_id.clone(),
                    reason: s.reason.clone(),
                    at: SystemTime::UNIX_EPOCH + Duration::from_secs(s.first_at.max(0) as u64),
                })
            })
            .collect();
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        out
    }

    fn refused(&self, registry: &str, repo: &str, r: &Refused) {
        self.record(Write::Refusal {
            registry: registry.to_string(),
            repo: repo.to_string(),
            digest: r.digest.to_string(),
            version_id: r.version_id.clone(),
            reason: r.reason.clone(),
        });
    }
}
