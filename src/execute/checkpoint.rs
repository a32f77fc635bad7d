//! The copy engine's [`Journal`] and retention's [`retention::Journal`] over the SQLite
//! checkpoint: asks a [`Reader`] (the checkpoint as the run found it, record by record), and
//! queues every change to the state's writer thread (never blocking the async threads on a
//! commit).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
    DeletionRecord, ItemRecord, ItemState, ItemStatus, Reader, RunId, State, StateError, Write,
};

/// What an execution records through: the copy engine's journal and retention's, one
/// checkpoint.
pub trait Checkpoint: Journal + retention::Journal {}

impl<T: Journal + retention::Journal> Checkpoint for T {}

pub struct StateJournal {
    /// The checkpoint as the run found it. Declared before `state` so it closes first: its
    /// read transaction ends before the writer (maybe the last handle) closes the file, and
    /// SQLite can fold the WAL back.
    reader: Reader,
    /// `None`: a dry journal (`ferry plan`), which consults the records and writes nothing.
    state: Option<State>,
    run: RunId,
    immutable: Vec<Regex>,
    /// `--recheck`: trust no record without asking the registries (records are still read,
    /// to tell a source that moved since).
    recheck: bool,
    /// A record confirmed at its target longer ago than this is checked there again.
    recheck_after: Duration,
    /// Unix seconds, when the run started.
    now: i64,
    /// Items finished that the checkpoint had no record of, when it had some (a counter, not
    /// a set: the run keeps no per-item state for this).
    new_items: AtomicUsize,
    /// The checkpoint recorded any item when the run started.
    had_items: bool,
    /// A read failed already (said once; each failure reads as "no record", which only
    /// costs asking the registries).
    read_failed: AtomicBool,
}

impl StateJournal {
    pub fn new(state: State, run: RunId, reader: Reader, plan: &Plan, recheck: bool) -> Self {
        StateJournal {
            state: Some(state),
            run,
            ..Self::dry(reader, plan, recheck)
        }
    }

    /// Decides from `reader` as a run would, and records nothing.
    pub fn dry(reader: Reader, plan: &Plan, recheck: bool) -> Self {
        let mut journal = StateJournal {
            reader,
            state: None,
            run: 0,
            immutable: plan.immutable_tags.clone(),
            recheck,
            recheck_after: plan.recheck_after,
            now: unix_now(),
            new_items: AtomicUsize::new(0),
            had_items: false,
            read_failed: AtomicBool::new(false),
        };
        let had_items = journal.reader.has_items();
        journal.had_items = journal.or_nothing(had_items);
        journal
    }

    /// Items this run finished that the checkpoint did not record before (0 when it recorded
    /// nothing at all: then every item is new, and that is no news).
    pub fn new_items(&self) -> usize {
        self.new_items.load(Ordering::Relaxed)
    }

    fn record(&self, write: Write) {
        if let Some(state) = &self.state {
            state.record(write);
        }
    }

    /// A lookup's answer, or nothing when the read failed: the engine then asks the
    /// registries, as for an item never recorded. Said once per run.
    fn or_nothing<T: Default>(&self, read: Result<T, StateError>) -> T {
        read.unwrap_or_else(|e| {
            if !self.read_failed.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "reading the checkpoint: {}; records that cannot be read are checked at the registries",
                    error_chain(&e)
                );
            }
            T::default()
        })
    }

    fn previous(&self, item: &Item) -> Option<ItemState> {
        let (registry, repo, reference) = item.key();
        self.or_nothing(self.reader.item(&registry, &repo, &reference))
    }
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
        if previous.is_none() && self.had_items {
            self.new_items.fetch_add(1, Ordering::Relaxed);
        }
        let attempts = previous.as_ref().map_or(0, |s| s.attempts);
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
        self.or_nothing(self.reader.blob_repo(registry, &digest.to_string()))
    }

    fn knows_target(&self, registry: &str, repo: &str) -> bool {
        self.or_nothing(self.reader.knows_target(registry, repo))
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
        let up = self.or_nothing(self.reader.upload(registry, repo, &digest.to_string()))?;
        // A row without a readable hash (older than schema 5, or damaged) starts over.
        let state = Midstate::decode(up.hash_state.as_deref()?).ok()?;
        (state.offset() == up.offset).then_some(Parked { url: up.url, state })
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
        let copied = self
            .reader
            .each_copied(|registry, repo, reference, source, digest| {
                let Some(digest) = Digest::parse(&digest) else {
                    return;
                };
                // The source as the rule names it, without the platform list `source_key` adds.
                let source = match source.split_once(" [platforms ") {
                    Some((source, _)) => source.to_string(),
                    None => source,
                };
                ledger
                    .copied
                    .entry((registry, repo))
                    .or_default()
                    .insert(reference, Copied { source, digest });
            });
        self.or_nothing(copied);
        let missing = self.reader.each_missing(|registry, repo, tag, since| {
            let since = SystemTime::UNIX_EPOCH + Duration::from_secs(since.max(0) as u64);
            ledger
                .missing
                .entry((registry, repo))
                .or_default()
                .insert(tag, since);
        });
        self.or_nothing(missing);
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
        // In digest order, as the query gives them.
        self.or_nothing(self.reader.refusals(registry, repo))
            .into_iter()
            .filter_map(|(digest, s)| {
                Some(Refused {
                    digest: Digest::parse(&digest)?,
                    version_id: s.version_id,
                    reason: s.reason,
                    at: SystemTime::UNIX_EPOCH + Duration::from_secs(s.first_at.max(0) as u64),
                })
            })
            .collect()
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
