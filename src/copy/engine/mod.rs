//! [`Engine`]: copy items idempotently, a bounded number at a time across the whole run,
//! referrers after what they refer to. `tree` copies what a manifest references (children,
//! blobs through `blob`) before the manifest itself; `follow` is who waits for whom (a
//! referrer for what it refers to, a contested item for the first writer of its tag);
//! `windows` gives each target registry its window of blob transfers (`window`).
//!
//! Those files extend [`Engine`]; what it holds and they share lives in leaves that import
//! none of them: `keys`, `live` (every item announced), `sightings` (what the targets held
//! when first seen), `destined` (what a target gets for an item), `tag_listings` (a
//! repository's tags with their digests, where the registry lists them a page at a time) and
//! `pulled` (source manifests read where a GET counts as a pull, each read once).

mod blob;
mod destined;
mod follow;
mod graph;
mod keys;
mod live;
mod pulled;
mod sightings;
mod source;
mod tag_listings;
mod target;
mod tree;
mod window;
mod windows;

use destined::{destined, Destined};
use keys::{BlobKey, ManifestKey, TagKey};
use live::{Batch, Later, LiveItems, Slot};
use pulled::Pulled;
use sightings::{AtTarget, Graphs, Targets};
use tag_listings::Listings;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::item::Item;
use super::journal::{Journal, NoJournal};
use super::outcome::{CopyError, ImageStats, Outcome, Totals, TransferTotals};
use super::platform;
use super::reporter::Reporter;
use super::shared_read::SharedReads;
use super::spool::Spool;
use crate::reference::Digest;
use crate::registry::error_body::code;
use crate::registry::manifest;
use crate::registry::Manifest;

/// One image's counts, and its own stop: a failed blob parks its siblings' uploads at their
/// next chunk boundary instead of cutting them (a cut PATCH loses the session).
#[derive(Default)]
struct Counters {
    park: CancellationToken,
    bytes: AtomicU64,
    transferred: AtomicUsize,
    mounted: AtomicUsize,
    existing: AtomicUsize,
    manifests: AtomicUsize,
    foreign: std::sync::Mutex<Vec<Digest>>,
}

/// Asked before an image starts: may it? (see [`Engine::with_gate`]).
pub type Gate = Arc<dyn Fn(&Item) -> bool + Send + Sync>;

/// The engine's [`TransferTotals`], counted as bytes flow.
#[derive(Default)]
struct TransferCounters {
    source_bytes: AtomicU64,
    resumed_bytes: AtomicU64,
    spooled_bytes: AtomicU64,
    reread_bytes: AtomicU64,
    parked: AtomicU64,
}

/// The copy engine for one run.
pub struct Engine {
    reporter: Arc<dyn Reporter>,
    /// Blob transfers in flight, per target registry (see [`window`]).
    windows: std::sync::Mutex<HashMap<String, Arc<window::Window>>>,
    /// Where each window starts.
    window_start: usize,
    concurrency: usize,
    /// Per (target registry, digest): the repository that holds it, once known. The mutex
    /// also makes a second copier of the same blob wait for the first instead of
    /// transferring it again.
    blobs: std::sync::Mutex<HashMap<BlobKey, Arc<Mutex<Option<String>>>>>,
    /// Per (target registry, repository, digest): who may PUT that manifest. A PUT holds it
    /// for writing; an index's PUT also holds each child's for reading. CNCF distribution
    /// rewrites a manifest's link files (truncate, then write) on every PUT of it and checks
    /// an index's children by reading those links, so a PUT of a child (a platform manifest
    /// two images share, or one also copied under a tag of its own) that overlaps its
    /// parent's PUT makes the parent fail with MANIFEST_BLOB_UNKNOWN. Locks are taken parent
    /// first, then children in digest order; manifests form no cycle, so no two PUTs wait on
    /// each other.
    manifests: std::sync::Mutex<HashMap<ManifestKey, Arc<tokio::sync::RwLock<()>>>>,
    /// What each target repository held when first listed (see [`target`]).
    targets: Targets,
    /// Manifests put at (or found at) a target repository in this run.
    placed: std::sync::Mutex<std::collections::HashSet<ManifestKey>>,
    /// Blobs placed in (or found in) a target repository in this run.
    placed_blobs: std::sync::Mutex<std::collections::HashSet<ManifestKey>>,
    /// What this run knows of each target repository's manifests and blobs as wholes
    /// (see [`graph`]).
    graphs: Graphs,
    /// The tag listings of the repositories the batches in flight name, where their
    /// registries list tags with digests (see [`tag_listings`]).
    listings: Listings,
    /// Source manifests read where a GET counts as a pull, for the other tags naming them.
    pulled: Pulled,
    /// Asked before each image starts: may it? An image it keeps back is handed over as
    /// not started (`None`), as an interruption's are (the run's pull budget, see
    /// [`Engine::with_gate`]).
    gate: Option<Gate>,
    /// Change nothing: find what the targets lack and say what a run would copy
    /// (`ferry verify`).
    audit: bool,
    /// Read every blob a whole check looks at, checking its digest, instead of asking
    /// whether it exists (`ferry verify --deep`).
    deep: bool,
    /// Per (target registry, repository, fallback tag): one writer of a referrers index,
    /// while it is written.
    fallback_tags: std::sync::Mutex<HashMap<TagKey, Arc<Mutex<()>>>>,
    /// The items others may follow, of every [`Engine::copy_each`] call (batches running
    /// side by side, earlier stages), by key and rule, with where its outcome is announced:
    /// a referrer follows the item that carries its subject, and a contested item the winner
    /// of its tag, wherever that one runs (see [`follow`]). A batch announces the items its
    /// own wait for, and every item of the rules in `remember` (all, when it is `None`); it
    /// forgets them when it ends, but for those rules'.
    live: LiveItems,
    remember: Option<HashSet<usize>>,
    /// Images in flight, across the batches that run side by side.
    images: Arc<tokio::sync::Semaphore>,
    journal: Arc<dyn Journal>,
    /// Large blobs in flight, kept on disk so a dead upload session costs no source reads.
    spool: Option<Arc<Spool>>,
    /// The fan-outs' blobs, read from the source once for all their targets.
    shared: Option<Arc<SharedReads>>,
    transfer_stats: Arc<TransferCounters>,
    /// Stop starting new images.
    stop: CancellationToken,
    /// Abandon images in flight (the grace period after `stop` is over).
    abort: CancellationToken,
}

impl Engine {
    /// `concurrency` bounds blob transfers per target registry (and images) in flight:
    /// fixed, unless [`Engine::adaptive`] lets the window start lower and find its size.
    pub fn new(reporter: Arc<dyn Reporter>, concurrency: usize) -> Engine {
        Engine {
            reporter,
            windows: std::sync::Mutex::new(HashMap::new()),
            window_start: concurrency.max(1),
            concurrency: concurrency.max(1),
            blobs: std::sync::Mutex::new(HashMap::new()),
            manifests: std::sync::Mutex::new(HashMap::new()),
            fallback_tags: std::sync::Mutex::new(HashMap::new()),
            targets: std::sync::Mutex::new(HashMap::new()),
            placed: std::sync::Mutex::default(),
            placed_blobs: std::sync::Mutex::default(),
            graphs: Graphs::default(),
            listings: Listings::default(),
            pulled: Pulled::default(),
            gate: None,
            audit: false,
            deep: false,
            live: std::sync::Mutex::default(),
            remember: None,
            images: Arc::new(tokio::sync::Semaphore::new(concurrency.max(1))),
            journal: Arc::new(NoJournal),
            spool: None,
            shared: None,
            transfer_stats: Arc::default(),
            stop: CancellationToken::new(),
            abort: CancellationToken::new(),
        }
    }

    /// Start each registry's window at `start` transfers and let it find its size (up to
    /// the `concurrency` the engine was made with).
    pub fn adaptive(mut self, start: usize) -> Engine {
        self.window_start = start.clamp(1, self.concurrency);
        self
    }

    /// Change nothing: check every item at its target whole and report what a run would
    /// copy or put back as `Copied` (with [`ImageStats::gaps`]), without copying it. `deep`
    /// reads every blob it checks and verifies its digest.
    pub fn audit(mut self, deep: bool) -> Engine {
        self.audit = true;
        self.deep = deep;
        self
    }

    /// Record and consult progress across runs.
    pub fn with_journal(mut self, journal: Arc<dyn Journal>) -> Engine {
        self.journal = journal;
        self
    }

    /// Spool large blobs in flight to disk (see [`Spool`]).
    pub fn with_spool(mut self, spool: Arc<Spool>) -> Engine {
        self.spool = Some(spool);
        self
    }

    /// Read each blob of a fan-out's rules from the source once, for all their targets
    /// (see [`SharedReads`]).
    pub fn with_shared_reads(mut self, shared: Arc<SharedReads>) -> Engine {
        self.shared = Some(shared);
        self
    }

    /// Once a batch is over, remember its items only for these rules: those whose items
    /// another rule's may follow in a later batch (a contested item follows the winner of
    /// its tag; a referrer whose own rule's item was a duplicate follows the first with the
    /// key). The items of other rules are forgotten, so what the engine keeps does not grow
    /// with the number of items; a referrer of the same rule is in its subject's batch.
    pub fn remember_only(mut self, rules: HashSet<usize>) -> Engine {
        self.remember = Some(rules);
        self
    }

    /// What the blob transfers of this engine cost and saved so far.
    pub fn transfer_totals(&self) -> TransferTotals {
        let t = &self.transfer_stats;
        TransferTotals {
            source_bytes: t.source_bytes.load(Ordering::Relaxed),
            resumed_bytes: t.resumed_bytes.load(Ordering::Relaxed),
            spooled_bytes: t.spooled_bytes.load(Ordering::Relaxed),
            reread_bytes: t.reread_bytes.load(Ordering::Relaxed),
            parked: t.parked.load(Ordering::Relaxed),
            fanout_spooled_blobs: self.shared.as_ref().map_or(0, |s| s.counts().0),
            fanout_reread_blobs: self.shared.as_ref().map_or(0, |s| s.counts().1),
        }
    }

    /// Ask `gate` before each image starts; one it refuses is not started and is handed
    /// over as `None`, its siblings going on (the run parks a registry's images this way
    /// when its pull budget is spent).
    pub fn with_gate(mut self, gate: Gate) -> Engine {
        self.gate = Some(gate);
        self
    }

    /// `stop`: start no new image; `abort`: abandon the ones in flight.
    pub fn with_cancellation(
        mut self,
        stop: CancellationToken,
        abort: CancellationToken,
    ) -> Engine {
        self.stop = stop;
        self.abort = abort;
        self
    }

    /// Copy every item, at most `concurrency` images at a time (across every batch this
    /// engine copies at once); per-item failures are recorded and the run goes on. Outcomes
    /// come back in item order; `None` for an item that an interruption kept from starting
    /// or finishing. [`Engine::copy_each`] hands them over as they come instead.
    pub async fn copy_all(&self, items: &[Item]) -> (Vec<Option<Outcome>>, Totals) {
        let results: std::sync::Mutex<Vec<Option<Outcome>>> =
            std::sync::Mutex::new(vec![None; items.len()]);
        let totals = self
            .copy_each(items, &|i, outcome| {
                results.lock().expect("results")[i] = outcome;
            })
            .await;
        (results.into_inner().expect("results"), totals)
    }

    /// Copy every item as [`Engine::copy_all`] does, handing each one's outcome to `done`
    /// (with the item's index) as it finishes, in no particular order: the caller keeps what
    /// it needs of it and the engine nothing. Items an interruption kept from starting or
    /// finishing are handed over last, as `None`.
    ///
    /// A referrer ([`Item::after`]) waits for the item that carries its subject (in this
    /// batch, another one running beside it, or an earlier stage) and is copied only when
    /// that one put the subject at the target ([`super::not_carried`]). A contested item
    /// ([`Item::contest`]) waits for the winner of its tag the same way, then succeeds as a
    /// duplicate or fails as a conflict. Items come in an order where what they wait for is
    /// earlier, so a waiting item never holds a slot that one needs; it takes its place among
    /// the images in flight only once it may go.
    pub async fn copy_each(
        &self,
        items: &[Item],
        done: &(dyn Fn(usize, Option<Outcome>) + Sync),
    ) -> Totals {
        let started = Instant::now();
        // Where a registry lists tags with digests, a repository the batch names is listed
        // once, for every item of it, and dropped with the batch.
        let _listings = self.listings.hold(items);
        // The counts, and which items were handed over.
        let tally = std::sync::Mutex::new((Totals::default(), vec![false; items.len()]));
        let batch = Batch::of(items);
        let slots = self.announce(items, &batch);
        let stop = self.stop.clone();
        let work = futures::stream::iter(items.iter().enumerate())
            .take_while(move |_| std::future::ready(!stop.is_cancelled()))
            .for_each_concurrent(self.concurrency, |(i, item)| {
                let (tally, slots, batch) = (&tally, &slots, &batch);
                async move {
                    let outcome = self.run_item(item, batch.later(items, i)).await;
                    if let Some(slot) = &slots[i] {
                        slot.send_replace(Slot::Done(outcome.clone().map(Box::new)));
                    }
                    {
                        let mut tally = tally.lock().expect("tally");
                        tally.0.count(outcome.as_ref());
                        tally.1[i] = true;
                    }
                    done(i, outcome);
                }
            });
        tokio::select! {
            _ = work => {}
            _ = self.abort.cancelled() => {}
        }
        let (mut totals, handed) = tally.into_inner().expect("tally");
        for (i, _) in handed.iter().enumerate().filter(|(_, h)| !**h) {
            totals.count(None);
            done(i, None);
        }
        self.forget(items, &slots);
        totals.elapsed = started.elapsed();
        totals
    }

    /// One item: wait for what it refers to (if it is a referrer) and for the winner of its tag
    /// (if it is contested), then copy it (or compare it with the winner), telling the journal
    /// and the reporter. What comes `later` in its own batch is not waited for.
    async fn run_item(&self, item: &Item, later: Later) -> Option<Outcome> {
        // A referrer whose subject was interrupted is interrupted too.
        let not_carried = match later.subject {
            true => None,
            false => self.wait_for_subject(item).await?,
        };
        // So is a contested item whose winner was; waiting, neither holds a slot.
        let winner = match (&item.contest, &not_carried) {
            (Some(_), None) => self.wait_for_winner(item, later.winner).await?,
            _ => None,
        };
        let _in_flight = self.images.acquire().await.expect("never closed");
        // Stopping: an image that waited for its turn does not start; nor one the gate
        // keeps back.
        if self.stop.is_cancelled() || self.gate.as_ref().is_some_and(|may| !may(item)) {
            return None;
        }
        self.reporter.item_started(item);
        let outcome = match (not_carried, &item.contest) {
            (Some(reason), _) => Outcome::Skipped { reason },
            (None, Some(contest)) => self.settle_contest(item, contest, winner).await,
            (None, None) => {
                self.journal.item_started(item);
                match self.copy_one(item).await {
                    Ok(o) => o,
                    // Parked: left as started, as an abandoned item is, for the next run.
                    Err(CopyError::Interrupted { .. }) => return None,
                    Err(e) => Outcome::Failed { error: Arc::new(e) },
                }
            }
        };
        // A contested item is not recorded: the checkpoint keeps one record per target tag,
        // the winner's, and a record of this other source in its place would make the
        // winner's tag look new to every run (`Journal::recorded` trusts only a record of the
        // item's own source). Each run compares it again, for one HEAD at its source.
        if item.contest.is_none() {
            self.journal.item_finished(item, &outcome);
        }
        self.reporter.item_finished(item, &outcome);
        Some(outcome)
    }

    /// Copy one image idempotently.
    ///
    /// A fresh record ([`crate::copy::Recorded::fresh`]) of an immutable tag or a digest is trusted
    /// outright, and of a mutable tag after one look at the source. Anything else is checked
    /// against both registries now: the source (a tag re-pushed there is copied again,
    /// reported `updated`) and the target, whole (`graph`: a child or layer missing there
    /// is put back).
    pub async fn copy_one(&self, item: &Item) -> Result<Outcome, CopyError> {
        let started = Instant::now();
        let recorded = self.journal.recorded(item);
        let fresh = recorded.as_ref().filter(|r| r.fresh);
        if let Some(r) = fresh.filter(|_| self.journal.immutable(item)) {
            return Ok(Outcome::Unchanged {
                digest: r.digest.clone(),
                rewritten: r.rewritten.clone(),
            });
        }
        let (digest, fetched) = self.source_of(item, fresh.is_none()).await?;
        // Copied before with this very digest, and verified at the target recently: one HEAD
        // at the source was all it cost.
        if let Some(r) = fresh.filter(|r| r.digest == digest) {
            return Ok(Outcome::Unchanged {
                digest,
                rewritten: r.rewritten.clone(),
            });
        }
        let cold = recorded.is_none();
        let updated = recorded.filter(|r| r.digest != digest).map(|r| r.digest);
        let destined = destined(item, &digest, fetched, &self.pulled).await?;
        // Nothing recorded: the target as first listed tells whether the tag can be there.
        let absent = cold
            && item.target_tag.is_some()
            && self
                .target_seen(&item.target)
                .await
                .lacks_tag(&destined.reference);
        let (replaced, gaps) = match absent {
            true => (None, Vec::new()),
            false => match self.at_target(item, &destined).await? {
                AtTarget::Whole => {
                    let rewritten =
                        (destined.push_digest != digest).then_some(destined.push_digest);
                    return Ok(Outcome::Present { digest, rewritten });
                }
                AtTarget::Gaps(gaps) => (None, gaps),
                AtTarget::Elsewhere(other) => (other, Vec::new()),
            },
        };
        let mut stats = ImageStats {
            updated,
            replaced,
            gaps,
            ..ImageStats::default()
        };
        if self.audit {
            // An audit changes nothing: what the run would copy (or put back) is the finding.
            stats.rewritten = destined
                .chosen
                .as_ref()
                .and_then(|c| c.rewritten(&digest))
                .cloned();
            stats.left_out = destined.chosen.as_ref().map_or(0, |c| c.left_out);
            return Ok(Outcome::Copied { digest, stats });
        }
        self.copy_and_push(item, &digest, destined, stats, started)
            .await
    }

    /// Copy what the manifest references (children first), then push it: `stats` says what
    /// this took.
    async fn copy_and_push(
        &self,
        item: &Item,
        digest: &Digest,
        destined: Destined,
        mut stats: ImageStats,
        started: Instant,
    ) -> Result<Outcome, CopyError> {
        let counters = Counters {
            park: self.stop.child_token(),
            ..Counters::default()
        };
        let (manifest, chosen) = self
            .copy_content(
                item,
                digest,
                destined.source_manifest,
                destined.chosen,
                &counters,
            )
            .await?;
        let to_push = chosen.as_ref().map_or(&manifest, |c| &c.manifest);
        let left_out = chosen.as_ref().map_or(0, |c| c.left_out);
        self.push(
            item,
            &destined.reference,
            to_push,
            left_out > 0 && to_push.digest == *digest,
            left_out,
        )
        .await?;
        stats.bytes = counters.bytes.load(Ordering::Relaxed);
        stats.transferred = counters.transferred.load(Ordering::Relaxed);
        stats.mounted = counters.mounted.load(Ordering::Relaxed);
        stats.existing = counters.existing.load(Ordering::Relaxed);
        stats.foreign = counters.foreign.lock().expect("foreign list").clone();
        stats.manifests = counters.manifests.load(Ordering::Relaxed);
        stats.elapsed = started.elapsed();
        stats.rewritten = chosen.as_ref().and_then(|c| c.rewritten(digest)).cloned();
        stats.left_out = left_out;
        Ok(Outcome::Copied {
            digest: digest.clone(),
            stats,
        })
    }

    /// Everything the manifest to push references: the whole tree, or only the children a
    /// platform list chose. Returns the source manifest and that choice.
    async fn copy_content(
        &self,
        item: &Item,
        digest: &Digest,
        source_manifest: Option<Manifest>,
        chosen: Option<platform::Chosen>,
        counters: &Counters,
    ) -> Result<(Manifest, Option<platform::Chosen>), CopyError> {
        let manifest = match source_manifest {
            Some(m) => m,
            None => {
                self.manifest_by_digest(item, digest, &item.source_display())
                    .await?
            }
        };
        match &chosen {
            Some(c) => {
                let above = std::slice::from_ref(&manifest.digest);
                self.copy_children(item, &c.children, above, counters)
                    .await?
            }
            None => self.copy_tree(item, &manifest, &[], counters).await?,
        }
        Ok((manifest, chosen))
    }

    /// PUT the manifest under the item's target reference (tags of one digest one at a time,
    /// its children held still), then list it under its subject's fallback tag where the
    /// target does not index referrers.
    async fn push(
        &self,
        item: &Item,
        reference: &str,
        to_push: &Manifest,
        sparse: bool,
        left_out: usize,
    ) -> Result<(), CopyError> {
        let dst = &item.target;
        let target_err = |e| CopyError::Target {
            reference: item.target_display(),
            source: e,
        };
        let pushed = {
            let slot = self.manifest_slot(dst, &to_push.digest);
            let _writing = slot.write().await;
            // Before writing it, look once, so whole checks of other images reaching this
            // manifest are told what the target held before this run (a repository that did
            // not exist held nothing).
            if !self.target_is_fresh(dst) {
                self.manifest_there(dst, &to_push.digest).await?;
            }
            let _children = self.hold_children(dst, to_push).await;
            dst.registry
                .put_manifest(&dst.repo, reference, to_push)
                .await
                .map_err(|e| match e {
                    // The registry names the reference it lacks; a bare 400/404/422 where it
                    // gives no code.
                    e if sparse
                        && e.has_code_or_status(
                            &[
                                code::MANIFEST_BLOB_UNKNOWN,
                                code::MANIFEST_INVALID,
                                code::MANIFEST_UNKNOWN,
                                code::BLOB_UNKNOWN,
                            ],
                            &[400, 404, 422],
                        ) =>
                    {
                        CopyError::SparseRefused {
                            reference: item.target_display(),
                            left_out,
                            source: e,
                        }
                    }
                    e => target_err(e),
                })?
        };
        self.placed_manifest(dst, &to_push.digest);
        if let Some(subject) = manifest::subject_of(&to_push.bytes) {
            if !pushed.subject_indexed {
                self.index_referrer(dst, &subject, to_push).await?;
            }
        }
        Ok(())
    }
}
