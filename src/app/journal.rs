//! The copy engine's [`Journal`] over the SQLite checkpoint: consults a snapshot taken when the
//! run starts, and queues every change to the state's writer thread (never blocking the
//! async threads on SQLite).

use regex::Regex;

use crate::copy::{Endpoint, Item, Journal, Outcome};
use crate::registry::{Digest, UploadProgress};
use crate::report::error_chain;
use crate::state::{ItemRecord, ItemStatus, RunId, Snapshot, State, Write};

pub struct StateJournal {
    state: State,
    run: RunId,
    snapshot: Snapshot,
    immutable: Vec<Regex>,
    /// `--recheck`: trust no record without asking the registries.
    recheck: bool,
}

impl StateJournal {
    pub fn new(
        state: State,
        run: RunId,
        snapshot: Snapshot,
        immutable: Vec<Regex>,
        recheck: bool,
    ) -> Self {
        StateJournal {
            state,
            run,
            snapshot,
            immutable,
            recheck,
        }
    }
}

/// The checkpoint key of an item: target registry, repository, and tag (or digest).
pub fn item_key(item: &Item) -> (String, String, String) {
    (
        item.target.registry.name().to_string(),
        item.target.repo.clone(),
        item.target_tag
            .clone()
            .unwrap_or_else(|| item.source_ref.clone()),
    )
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
    let (target_registry, target_repo, target_ref) = item_key(item);
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
    }
}

impl Journal for StateJournal {
    fn done_digest(&self, item: &Item) -> Option<Digest> {
        if self.recheck {
            return None;
        }
        let state = self.snapshot.items.get(&item_key(item))?;
        // Only a record of this very source counts: the plan may now copy something else to
        // the same target.
        if state.status != ItemStatus::Done
            || state.source != source_key(item)
            || state.source_ref != item.source_ref
        {
            return None;
        }
        state.source_digest.as_deref().and_then(Digest::parse)
    }

    fn trust_without_check(&self, item: &Item) -> bool {
        // `done_digest` already answers nothing under --recheck; this says the same.
        !self.recheck
            && (Digest::parse(&item.source_ref).is_some()
                || self.immutable.iter().any(|r| r.is_match(&item.source_ref)))
    }

    fn item_started(&self, item: &Item) {
        let previous = self
            .snapshot
            .items
            .get(&item_key(item))
            .map_or(0, |s| s.attempts);
        let mut r = record(self.run, item, ItemStatus::Pending);
        r.attempts = previous;
        self.state.record(Write::Item(r));
    }

    fn item_finished(&self, item: &Item, outcome: &Outcome) {
        let previous = self
            .snapshot
            .items
            .get(&item_key(item))
            .map_or(0, |s| s.attempts);
        let mut r = record(self.run, item, ItemStatus::Done);
        r.attempts = previous + 1;
        match outcome {
            Outcome::Copied { digest, stats } => {
                r.source_digest = Some(digest.to_string());
                r.bytes = stats.bytes;
            }
            Outcome::Present { digest } | Outcome::Unchanged { digest } => {
                r.source_digest = Some(digest.to_string());
                // Nothing was attempted against the registries for an unchanged record.
                r.attempts = previous;
            }
            Outcome::Failed { error } => {
                r.status = ItemStatus::Failed;
                r.last_error = Some(error_chain(error.as_ref()));
            }
        }
        self.state.record(Write::Item(r));
    }

    fn blob_location(&self, registry: &str, digest: &Digest) -> Option<String> {
        self.snapshot
            .blobs
            .get(&(registry.to_string(), digest.to_string()))
            .map(|b| b.repo.clone())
    }

    fn blob_present(&self, registry: &str, repo: &str, digest: &Digest, size: u64) {
        self.state.record(Write::Blob {
            registry: registry.to_string(),
            digest: digest.to_string(),
            size,
            repo: repo.to_string(),
        });
    }

    fn upload_session(&self, registry: &str, repo: &str, digest: &Digest) -> Option<String> {
        self.snapshot
            .uploads
            .get(&(registry.to_string(), repo.to_string(), digest.to_string()))
            .map(|u| u.url.clone())
    }

    fn upload_progress(&self, registry: &str, repo: &str, digest: &Digest, p: &UploadProgress) {
        let (registry, repo, digest) = (registry.to_string(), repo.to_string(), digest.to_string());
        self.state.record(match p {
            UploadProgress::Session { url, offset } => Write::Upload {
                registry,
                repo,
                digest,
                url: url.clone(),
                offset: *offset,
            },
            UploadProgress::Finished => Write::UploadFinished {
                registry,
                repo,
                digest,
            },
        });
    }

    fn tag_seen(&self, source: &Endpoint, tag: &str, digest: &Digest) {
        self.state.record(Write::TagSeen {
            registry: source.registry.name().to_string(),
            repo: source.repo.clone(),
            tag: tag.to_string(),
            digest: digest.to_string(),
        });
    }
}
