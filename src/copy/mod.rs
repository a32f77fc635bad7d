//! The copy engine: copy one image (tag or digest) idempotently, and a bounded, run-wide
//! fan-out over many.
//!
//! Order matters for safety: blobs, then child manifests, then the parent manifest, so a
//! target never holds a manifest pointing at missing content. A tag already at the target with
//! the source digest is skipped without touching its blobs. Each unique blob crosses the wire
//! at most once per target registry per run: a second repository that needs it gets a
//! cross-repository mount. This module never builds URLs, never sleeps and never prints; it
//! talks to registries through [`Registry`] and to people through [`Reporter`].

pub mod journal;
pub mod platform;
pub mod reporter;
pub mod select;

pub use journal::{Journal, NoJournal, Recorded};

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::{try_join_all, BoxFuture};
use futures::{FutureExt, StreamExt, TryStreamExt};
use tokio::sync::{Mutex, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::registry::manifest::{self, Desc, Parsed, MAX_INDEX_DEPTH};
use crate::registry::{
    skip_bytes, BlobSource, BlobStream, BlobUpload, Digest, Manifest, Registry, RegistryError,
    UploadProgress,
};
pub use reporter::{Reporter, Silent};

/// The bytes of one blob at the source, for an upload that may reopen them.
struct SourceBlob<'a> {
    endpoint: &'a Endpoint,
    digest: &'a Digest,
    size: u64,
    reporter: Arc<dyn Reporter>,
}

#[async_trait::async_trait]
impl BlobSource for SourceBlob<'_> {
    async fn open(&self, skip: u64) -> Result<BlobStream, RegistryError> {
        let data = self
            .endpoint
            .registry
            .get_blob(&self.endpoint.repo, self.digest, self.size)
            .await?;
        let reporter = self.reporter.clone();
        let counted = skip_bytes(data, skip)
            .inspect_ok(move |chunk| reporter.bytes_transferred(chunk.len() as u64));
        Ok(Box::pin(counted))
    }

    fn origin(&self) -> Option<crate::registry::BlobOrigin> {
        Some(crate::registry::BlobOrigin {
            registry: self.endpoint.registry.clone(),
            repo: self.endpoint.repo.clone(),
        })
    }
}

/// One side of a copy: a registry and a repository in it.
#[derive(Clone)]
pub struct Endpoint {
    pub registry: Arc<dyn Registry>,
    pub repo: String,
}

impl Endpoint {
    /// `ghcr.io/org/app`, `oci:dir`.
    pub fn display(&self) -> String {
        match self.registry.name() {
            "oci:" => format!("oci:{}", self.repo),
            host => format!("{host}/{}", self.repo),
        }
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display())
    }
}

/// One image to copy: a tag or digest at the source, a tag (or none: by digest) at the target.
#[derive(Clone, Debug)]
pub struct Item {
    pub source: Endpoint,
    /// A tag or a digest.
    pub source_ref: String,
    pub target: Endpoint,
    /// `None` copies by digest, untagged.
    pub target_tag: Option<String>,
    /// For a referrer found by the referrers API or a fallback index: the image it refers to.
    /// A target without the referrers API gets it listed under the subject's fallback tag.
    pub subject: Option<Digest>,
    /// Only these platforms of an index (`None`: all of them, the index as is).
    pub platforms: Option<Arc<crate::plan::Platforms>>,
    /// The `[[copy]]` rule it comes from (1-based; 0 for none).
    pub rule: usize,
    /// For a referrer (a signature, an attestation, an SBOM, by tag or by digest): the item
    /// that carries what it refers to. It is copied after that item, and only when that item
    /// put its subject at the target with the digest it names.
    pub after: Option<After>,
}

/// Where an item writes: target registry, repository, and tag (or digest). Two items with one
/// key write the same thing; the checkpoint keys its records by it.
pub type ItemKey = (String, String, String);

/// What a referrer waits for: see [`Item::after`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct After {
    /// The key of the item whose copy places the subject at the target.
    pub parent: ItemKey,
    /// The digest the referrer names.
    pub subject: Digest,
}

fn join_ref(repo: &str, reference: &str) -> String {
    if reference.contains(':') {
        format!("{repo}@{reference}")
    } else {
        format!("{repo}:{reference}")
    }
}

impl Item {
    /// Where this item writes (a layout path in one spelling).
    pub fn key(&self) -> ItemKey {
        let registry = self.target.registry.name();
        (
            registry.to_string(),
            match registry {
                "oci:" => crate::registry::layout::canonical(&self.target.repo),
                _ => self.target.repo.clone(),
            },
            self.target_tag
                .clone()
                .unwrap_or_else(|| self.source_ref.clone()),
        )
    }

    pub fn source_display(&self) -> String {
        join_ref(&self.source.display(), &self.source_ref)
    }
    pub fn target_display(&self) -> String {
        match &self.target_tag {
            Some(t) => join_ref(&self.target.display(), t),
            None => join_ref(&self.target.display(), &self.source_ref),
        }
    }
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.source_display(), self.target_display())
    }
}

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
    /// Another rule's item writes the same target tag from another source.
    #[error("{reference}: {reason}")]
    Conflict { reference: String, reason: String },
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

/// May a referrer whose subject is carried by an item that ended with `parent` be copied?
/// `Err` says why not.
pub fn follows(parent: &Outcome, parent_item: &Item, subject: &Digest) -> Result<(), String> {
    match parent {
        Outcome::Failed { .. } => Err(format!(
            "not copied: what it refers to ({}) failed",
            parent_item.target_display()
        )),
        Outcome::Skipped { .. } => Err(format!(
            "not copied: what it refers to ({}) was not copied",
            parent_item.target_display()
        )),
        _ => match parent.placed() {
            Some((old, Some(new))) if old == subject => Err(format!(
                "referrer of rewritten index not carried: {old} → {new} (platform_mode = \"rewrite\"); it names a digest the target does not have"
            )),
            _ => Ok(()),
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
}

#[derive(Default)]
struct Counters {
    bytes: AtomicU64,
    transferred: AtomicUsize,
    mounted: AtomicUsize,
    existing: AtomicUsize,
    manifests: AtomicUsize,
    foreign: std::sync::Mutex<Vec<Digest>>,
}

/// Totals of a run, for the summary line.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    pub copied: usize,
    pub present: usize,
    pub failed: usize,
    /// Referrers not copied on purpose ([`Outcome::Skipped`]).
    pub skipped: usize,
    /// Not started, or stopped by an interruption.
    pub interrupted: usize,
    pub bytes: u64,
    pub elapsed: Duration,
}

impl Totals {
    /// Add another stage's counts (not its elapsed time: stages run one after another and
    /// the caller measures the whole).
    pub fn add(&mut self, other: &Totals) {
        self.copied += other.copied;
        self.present += other.present;
        self.failed += other.failed;
        self.skipped += other.skipped;
        self.interrupted += other.interrupted;
        self.bytes += other.bytes;
    }
}

/// What the target gets for an item whose source digest is `digest`.
struct Destined {
    /// The source index, when a platform list made it be read first.
    source_manifest: Option<Manifest>,
    /// What a platform list chose (`None` without one, or for a single-platform image).
    chosen: Option<platform::Chosen>,
    /// The digest the target ends up with: the source's, or a rewritten index's.
    push_digest: Digest,
    /// The target tag, or `push_digest` for a copy by digest.
    reference: String,
}

/// With a platform list the source index is read first: what the target gets (and so the
/// digest to look for there) depends on it. Without one nothing is read.
async fn destined(item: &Item, digest: &Digest) -> Result<Destined, CopyError> {
    let mut source_manifest = None;
    let mut chosen = None;
    if let Some(platforms) = &item.platforms {
        let src = &item.source;
        let m = src
            .registry
            .get_manifest(&src.repo, digest.as_str())
            .await
            .map_err(|e| CopyError::Source {
                reference: item.source_display(),
                source: e,
            })?;
        chosen = platform::choose(&m, platforms).map_err(|reason| CopyError::Manifest {
            reference: item.source_display(),
            reason,
        })?;
        source_manifest = Some(m);
    }
    let push_digest = chosen
        .as_ref()
        .map_or(digest, |c| &c.manifest.digest)
        .clone();
    let reference = item
        .target_tag
        .clone()
        .unwrap_or_else(|| push_digest.to_string());
    Ok(Destined {
        source_manifest,
        chosen,
        push_digest,
        reference,
    })
}

/// Where a blob is known to exist in a target registry during this run.
type BlobKey = (String, Digest);

/// A manifest in a repository of a target registry.
type ManifestKey = (String, String, Digest);

/// A tag in a repository of a target registry.
type TagKey = (String, String, String);

/// The copy engine for one run.
pub struct Engine {
    reporter: Arc<dyn Reporter>,
    /// Bounds blob transfers across the whole run.
    transfers: Arc<Semaphore>,
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
    /// Per (target registry, repository, fallback tag): one writer of a referrers index.
    fallback_tags: std::sync::Mutex<HashMap<TagKey, Arc<Mutex<()>>>>,
    /// Items of earlier [`Engine::copy_all`] calls (earlier stages) by key, with their
    /// outcome: a referrer whose subject's item ran in an earlier stage follows it too.
    finished: std::sync::Mutex<HashMap<ItemKey, (Item, Outcome)>>,
    journal: Arc<dyn Journal>,
    /// Stop starting new images.
    stop: CancellationToken,
    /// Abandon images in flight (the grace period after `stop` is over).
    abort: CancellationToken,
}

impl Engine {
    /// `concurrency` bounds blob transfers (and images) in flight across the run.
    pub fn new(reporter: Arc<dyn Reporter>, concurrency: usize) -> Engine {
        Engine {
            reporter,
            transfers: Arc::new(Semaphore::new(concurrency.max(1))),
            concurrency: concurrency.max(1),
            blobs: std::sync::Mutex::new(HashMap::new()),
            manifests: std::sync::Mutex::new(HashMap::new()),
            fallback_tags: std::sync::Mutex::new(HashMap::new()),
            finished: std::sync::Mutex::new(HashMap::new()),
            journal: Arc::new(NoJournal),
            stop: CancellationToken::new(),
            abort: CancellationToken::new(),
        }
    }

    /// Record and consult progress across runs.
    pub fn with_journal(mut self, journal: Arc<dyn Journal>) -> Engine {
        self.journal = journal;
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

    /// Copy every item, at most `concurrency` images at a time; per-item failures are
    /// recorded and the run goes on. Outcomes come back in item order; `None` for an item
    /// that an interruption kept from starting or finishing.
    ///
    /// A referrer ([`Item::after`]) waits for the item that carries its subject and is
    /// copied only when that one put the subject at the target ([`follows`]). Items come in
    /// an order where that item is earlier, so a waiting referrer never holds a slot its
    /// subject needs.
    pub async fn copy_all(&self, items: &[Item]) -> (Vec<Option<Outcome>>, Totals) {
        let started = Instant::now();
        let results: std::sync::Mutex<Vec<Option<Outcome>>> =
            std::sync::Mutex::new(vec![None; items.len()]);
        // Each item's outcome, for the referrers that wait on it.
        let done: Vec<tokio::sync::watch::Sender<Option<Outcome>>> = items
            .iter()
            .map(|_| tokio::sync::watch::channel(None).0)
            .collect();
        let mut first: HashMap<ItemKey, usize> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            first.entry(item.key()).or_insert(i);
        }
        let parent_of = |item: &Item| {
            let after = item.after.as_ref()?;
            first.get(&after.parent).copied()
        };
        let stop = self.stop.clone();
        let work = futures::stream::iter(items.iter().enumerate())
            .take_while(move |_| std::future::ready(!stop.is_cancelled()))
            .for_each_concurrent(self.concurrency, |(i, item)| {
                let (results, done) = (&results, &done);
                let parent = parent_of(item).filter(|&p| p < i);
                async move {
                    let earlier = match (parent, &item.after) {
                        (None, Some(after)) => self
                            .finished
                            .lock()
                            .expect("finished items")
                            .get(&after.parent)
                            .cloned(),
                        _ => None,
                    };
                    let waited = match parent {
                        None => earlier.and_then(|(parent_item, o)| {
                            let subject = &item.after.as_ref().expect("has a parent").subject;
                            follows(&o, &parent_item, subject).err()
                        }),
                        Some(p) => {
                            let mut rx = done[p].subscribe();
                            let parent = rx
                                .wait_for(Option::is_some)
                                .await
                                .map(|o| o.clone().expect("waited for some"));
                            let subject = &item.after.as_ref().expect("has a parent").subject;
                            match parent {
                                Ok(o) => follows(&o, &items[p], subject).err(),
                                // The sender lives as long as this function.
                                Err(_) => None,
                            }
                        }
                    };
                    self.reporter.item_started(item);
                    let outcome = match waited {
                        Some(reason) => Outcome::Skipped { reason },
                        None => {
                            self.journal.item_started(item);
                            match self.copy_one(item).await {
                                Ok(o) => o,
                                Err(e) => Outcome::Failed { error: Arc::new(e) },
                            }
                        }
                    };
                    self.journal.item_finished(item, &outcome);
                    self.reporter.item_finished(item, &outcome);
                    done[i].send_replace(Some(outcome.clone()));
                    results.lock().expect("results")[i] = Some(outcome);
                }
            });
        tokio::select! {
            _ = work => {}
            _ = self.abort.cancelled() => {}
        }
        let outcomes = results.into_inner().expect("results");
        {
            let mut finished = self.finished.lock().expect("finished items");
            for (item, o) in items.iter().zip(&outcomes) {
                if let Some(o) = o {
                    finished
                        .entry(item.key())
                        .or_insert_with(|| (item.clone(), o.clone()));
                }
            }
        }
        let mut totals = Totals {
            elapsed: started.elapsed(),
            ..Totals::default()
        };
        for o in &outcomes {
            match o {
                Some(Outcome::Copied { stats, .. }) => {
                    totals.copied += 1;
                    totals.bytes += stats.bytes;
                }
                Some(Outcome::Present { .. } | Outcome::Unchanged { .. }) => totals.present += 1,
                Some(Outcome::Skipped { .. }) => totals.skipped += 1,
                Some(Outcome::Failed { .. }) => totals.failed += 1,
                None => totals.interrupted += 1,
            }
        }
        (outcomes, totals)
    }

    /// Copy one image idempotently.
    pub async fn copy_one(&self, item: &Item) -> Result<Outcome, CopyError> {
        let src_ref = item.source_display();
        let dst_ref = item.target_display();
        let source_err = |e| CopyError::Source {
            reference: src_ref.clone(),
            source: e,
        };
        let target_err = |e| CopyError::Target {
            reference: dst_ref.clone(),
            source: e,
        };

        let started = Instant::now();
        let src = &item.source;
        let dst = &item.target;
        let recorded = self.journal.recorded(item);
        let immutable = self.journal.immutable(item);
        if let Some(r) = recorded.as_ref().filter(|r| immutable && r.fresh) {
            return Ok(Outcome::Unchanged {
                digest: r.digest.clone(),
                rewritten: r.rewritten.clone(),
            });
        }
        // The source digest: from the reference itself; for an immutable tag recorded done,
        // from the record (it cannot have moved: only the target is checked again); else a
        // HEAD (which Docker Hub does not count as a pull).
        let digest = match (Digest::parse(&item.source_ref), &recorded) {
            (Some(d), _) => d,
            (None, Some(r)) if immutable => r.digest.clone(),
            (None, _) => {
                let digest = src
                    .registry
                    .head_manifest(&src.repo, &item.source_ref)
                    .await
                    .map_err(source_err)?
                    .ok_or_else(|| {
                        source_err(RegistryError::NotFound {
                            what: "manifest".into(),
                            url: src_ref.clone(),
                        })
                    })?
                    .digest;
                self.journal.tag_seen(src, &item.source_ref, &digest);
                digest
            }
        };
        // Copied before with this very digest, and verified at the target recently: one HEAD
        // at the source was all it cost.
        if let Some(r) = recorded.as_ref().filter(|r| r.digest == digest && r.fresh) {
            return Ok(Outcome::Unchanged {
                digest,
                rewritten: r.rewritten.clone(),
            });
        }
        let Destined {
            source_manifest,
            chosen,
            push_digest,
            reference: target_reference,
        } = destined(item, &digest).await?;
        let rewritten = (push_digest != digest).then(|| push_digest.clone());
        if let Some(head) = dst
            .registry
            .head_manifest(&dst.repo, &target_reference)
            .await
            .map_err(target_err)?
        {
            if head.digest == push_digest {
                if let Some(subject) = &item.subject {
                    // A run that stopped between the referrer and its fallback-tag entry left
                    // the second half to do.
                    if !dst
                        .registry
                        .supports_referrers(&dst.repo)
                        .await
                        .map_err(target_err)?
                    {
                        let m = dst
                            .registry
                            .get_manifest(&dst.repo, push_digest.as_str())
                            .await
                            .map_err(target_err)?;
                        self.index_referrer(dst, subject, &m).await?;
                    }
                }
                return Ok(Outcome::Present { digest, rewritten });
            }
        }

        let manifest = match source_manifest {
            Some(m) => m,
            None => src
                .registry
                .get_manifest(&src.repo, digest.as_str())
                .await
                .map_err(source_err)?,
        };
        let counters = Counters::default();
        let to_push = match &chosen {
            Some(c) => {
                self.copy_children(
                    item,
                    &c.children,
                    std::slice::from_ref(&manifest.digest),
                    &counters,
                )
                .await?;
                &c.manifest
            }
            None => {
                self.copy_tree(item, &manifest, &[], &counters).await?;
                &manifest
            }
        };
        let pushed = {
            // Tags of one digest (v2.0.0 and latest) are PUT one at a time, as children are.
            let slot = self.manifest_slot(dst, &push_digest);
            let _writing = slot.write().await;
            let _children = self.hold_children(dst, to_push).await;
            let left_out = chosen.as_ref().map_or(0, |c| c.left_out);
            let sparse = left_out > 0 && to_push.digest == digest;
            dst.registry
                .put_manifest(&dst.repo, &target_reference, to_push)
                .await
                .map_err(|e| match e {
                    RegistryError::Status {
                        status: 400 | 404 | 422,
                        ..
                    } if sparse => CopyError::SparseRefused {
                        reference: dst_ref.clone(),
                        left_out,
                        source: e,
                    },
                    e => target_err(e),
                })?
        };
        if let Some(subject) = manifest::subject_of(&to_push.bytes) {
            if !pushed.subject_indexed {
                self.index_referrer(dst, &subject, to_push).await?;
            }
        }
        let stats = ImageStats {
            bytes: counters.bytes.load(Ordering::Relaxed),
            transferred: counters.transferred.load(Ordering::Relaxed),
            mounted: counters.mounted.load(Ordering::Relaxed),
            existing: counters.existing.load(Ordering::Relaxed),
            foreign: counters.foreign.lock().expect("foreign list").clone(),
            manifests: counters.manifests.load(Ordering::Relaxed),
            elapsed: started.elapsed(),
            rewritten: chosen.as_ref().and_then(|c| c.rewritten(&digest)).cloned(),
            left_out: chosen.as_ref().map_or(0, |c| c.left_out),
        };
        Ok(Outcome::Copied { digest, stats })
    }

    /// List a referrer under its subject's fallback tag (`sha256-<hex>`) at a target without
    /// the referrers API: the index there is read and extended, never replaced, so entries
    /// other clients put there stay.
    async fn index_referrer(
        &self,
        dst: &Endpoint,
        subject: &Digest,
        referrer: &Manifest,
    ) -> Result<(), CopyError> {
        let tag = manifest::fallback_tag(subject);
        let reference = join_ref(&dst.display(), &tag);
        let target_err = |e| CopyError::Target {
            reference: reference.clone(),
            source: e,
        };
        let slot = self
            .fallback_tags
            .lock()
            .expect("fallback tag map")
            .entry((
                dst.registry.name().to_string(),
                dst.repo.clone(),
                tag.clone(),
            ))
            .or_default()
            .clone();
        let _writing = slot.lock().await;
        let existing = match dst.registry.get_manifest(&dst.repo, &tag).await {
            Ok(m) => Some(m),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(target_err(e)),
        };
        let merged = manifest::merge_fallback_index(
            existing.as_ref().map(|m| &m.bytes[..]),
            manifest::referrer_entry(referrer),
        )
        .map_err(|reason| CopyError::Manifest {
            reference: reference.clone(),
            reason: format!("{reason}; it was left as it is"),
        })?;
        if let Some(bytes) = merged {
            let index = Manifest {
                media_type: manifest::OCI_INDEX.to_string(),
                digest: Digest::sha256_of(&bytes),
                bytes: bytes.into(),
            };
            dst.registry
                .put_manifest(&dst.repo, &tag, &index)
                .await
                .map_err(target_err)?;
        }
        Ok(())
    }

    /// Read locks on the slots of an index's children, for the time of its PUT (see
    /// `manifests`); nothing for an image.
    async fn hold_children(
        &self,
        dst: &Endpoint,
        m: &Manifest,
    ) -> Vec<tokio::sync::OwnedRwLockReadGuard<()>> {
        let Ok(Parsed::Index { children }) = manifest::parse(&m.media_type, &m.bytes) else {
            return Vec::new();
        };
        let mut digests: Vec<Digest> = children
            .into_iter()
            .map(|c| c.digest)
            .filter(|d| *d != m.digest)
            .collect();
        digests.sort();
        digests.dedup();
        let mut held = Vec::with_capacity(digests.len());
        for d in digests {
            held.push(self.manifest_slot(dst, &d).read_owned().await);
        }
        held
    }

    fn manifest_slot(&self, dst: &Endpoint, digest: &Digest) -> Arc<tokio::sync::RwLock<()>> {
        self.manifests
            .lock()
            .expect("manifest map")
            .entry((
                dst.registry.name().to_string(),
                dst.repo.clone(),
                digest.clone(),
            ))
            .or_default()
            .clone()
    }

    /// Copy what a manifest references (children first, recursively), not the manifest.
    /// `ancestors` are the indexes above it, outermost first.
    fn copy_tree<'a>(
        &'a self,
        item: &'a Item,
        manifest: &'a Manifest,
        ancestors: &'a [Digest],
        counters: &'a Counters,
    ) -> BoxFuture<'a, Result<(), CopyError>> {
        async move {
            let here = join_ref(&item.source.display(), manifest.digest.as_str());
            let parsed =
                manifest::parse(&manifest.media_type, &manifest.bytes).map_err(|reason| {
                    CopyError::Manifest {
                        reference: here.clone(),
                        reason,
                    }
                })?;
            match parsed {
                Parsed::Index { children } => {
                    if ancestors.len() + 1 > MAX_INDEX_DEPTH {
                        return Err(CopyError::Manifest {
                            reference: here,
                            reason: format!("indexes nested deeper than {MAX_INDEX_DEPTH} levels"),
                        });
                    }
                    let path: Vec<Digest> = ancestors
                        .iter()
                        .chain([&manifest.digest])
                        .cloned()
                        .collect();
                    // Digests make a cycle impossible for bytes that were verified; a source
                    // that skips verification (or a hash collision) must not loop forever.
                    if let Some(child) = children.iter().find(|c| path.contains(&c.digest)) {
                        return Err(CopyError::Manifest {
                            reference: here,
                            reason: format!(
                                "the index names {}, which is this index or one that contains it: a cycle",
                                child.digest
                            ),
                        });
                    }
                    self.copy_children(item, &children, &path, counters)
                        .await?;
                }
                Parsed::Image { config, layers } => {
                    let mut blobs: Vec<&Desc> =
                        std::iter::once(&config).chain(layers.iter()).collect();
                    // Large blobs first: they dominate the wall time.
                    blobs.sort_by_key(|b| std::cmp::Reverse(b.size));
                    blobs.dedup_by(|a, b| a.digest == b.digest);
                    try_join_all(blobs.into_iter().map(|b| self.copy_blob(item, b, counters)))
                        .await?;
                }
            }
            Ok(())
        }
        .boxed()
    }

    /// Copy children of an index (and what they reference), concurrently; `ancestors` are the
    /// indexes above them, the closest last.
    async fn copy_children(
        &self,
        item: &Item,
        children: &[Desc],
        ancestors: &[Digest],
        counters: &Counters,
    ) -> Result<(), CopyError> {
        try_join_all(
            children
                .iter()
                .map(|child| self.copy_child(item, child, ancestors, counters)),
        )
        .await?;
        Ok(())
    }

    /// Copy one child manifest of an index (and what it references) by digest.
    async fn copy_child(
        &self,
        item: &Item,
        child: &Desc,
        ancestors: &[Digest],
        counters: &Counters,
    ) -> Result<(), CopyError> {
        let (src, dst) = (&item.source, &item.target);
        let child_src = join_ref(&src.display(), child.digest.as_str());
        let child_dst = join_ref(&dst.display(), child.digest.as_str());
        let slot = self.manifest_slot(dst, &child.digest);
        let _writing = slot.write().await;
        let present = dst
            .registry
            .head_manifest(&dst.repo, child.digest.as_str())
            .await
            .map_err(|e| CopyError::Target {
                reference: child_dst.clone(),
                source: e,
            })?;
        if present.is_some() {
            return Ok(());
        }
        let m = src
            .registry
            .get_manifest(&src.repo, child.digest.as_str())
            .await
            .map_err(|e| CopyError::Source {
                reference: child_src.clone(),
                source: e,
            })?;
        if m.bytes.len() as u64 != child.size {
            return Err(CopyError::Manifest {
                reference: child_src,
                reason: format!(
                    "the index says {} bytes, the manifest has {}",
                    child.size,
                    m.bytes.len()
                ),
            });
        }
        self.copy_tree(item, &m, ancestors, counters).await?;
        let _children = self.hold_children(dst, &m).await;
        dst.registry
            .put_manifest(&dst.repo, child.digest.as_str(), &m)
            .await
            .map_err(|e| CopyError::Target {
                reference: child_dst,
                source: e,
            })?;
        counters.manifests.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Make one blob present in the target repository: already there, mounted from a
    /// repository that has it, or streamed from the source with its digest verified.
    async fn copy_blob(
        &self,
        item: &Item,
        blob: &Desc,
        counters: &Counters,
    ) -> Result<(), CopyError> {
        let (src, dst) = (&item.source, &item.target);
        if blob.is_foreign() {
            counters
                .foreign
                .lock()
                .expect("foreign list")
                .push(blob.digest.clone());
            return Ok(());
        }
        let target_err = |e| CopyError::Target {
            reference: format!("{} blob {}", dst.display(), blob.digest),
            source: e,
        };
        let key = (dst.registry.name().to_string(), blob.digest.clone());
        let slot = self
            .blobs
            .lock()
            .expect("blob map")
            .entry(key)
            .or_default()
            .clone();
        // Holding the slot makes another image needing the same blob wait for this copy.
        let mut known = slot.lock().await;

        let record = |repo: &str| {
            self.journal
                .blob_present(dst.registry.name(), repo, &blob.digest, blob.size)
        };
        // Known in this run to be in this very repository: nothing to do.
        if known.as_deref() == Some(dst.repo.as_str()) {
            counters.existing.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        // An earlier run put it somewhere in this registry: a mount candidate only, never
        // trusted as present (a garbage collection may have removed it since).
        let recorded = match known.as_ref() {
            Some(_) => None,
            None => self
                .journal
                .blob_location(dst.registry.name(), &blob.digest),
        };
        if dst
            .registry
            .blob_exists(&dst.repo, &blob.digest)
            .await
            .map_err(target_err)?
        {
            counters.existing.fetch_add(1, Ordering::Relaxed);
            *known = Some(dst.repo.clone());
            record(&dst.repo);
            return Ok(());
        }
        // A mount source: a repository of the target registry known to hold the blob, or the
        // source repository itself when copying within one registry (promotion).
        let same_registry = src.registry.name() == dst.registry.name();
        let mount_from = known
            .clone()
            .or(recorded)
            .filter(|from| from != &dst.repo)
            .or_else(|| same_registry.then(|| src.repo.clone()));
        if let Some(from) = mount_from {
            match dst
                .registry
                .mount_blob(&dst.repo, &blob.digest, &from)
                .await
            {
                Ok(true) => {
                    counters.mounted.fetch_add(1, Ordering::Relaxed);
                    *known = Some(dst.repo.clone());
                    record(&dst.repo);
                    return Ok(());
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::debug!(error = %e, digest = %blob.digest, "mount refused; transferring")
                }
            }
        }

        let _permit = self
            .transfers
            .acquire()
            .await
            .expect("transfer semaphore is never closed");
        let source = SourceBlob {
            endpoint: src,
            digest: &blob.digest,
            size: blob.size,
            reporter: self.reporter.clone(),
        };
        let registry = dst.registry.name();
        let progress = |p: UploadProgress| {
            self.journal
                .upload_progress(registry, &dst.repo, &blob.digest, &p)
        };
        let upload = BlobUpload {
            digest: &blob.digest,
            size: blob.size,
            source: &source,
            resume: self
                .journal
                .upload_session(registry, &dst.repo, &blob.digest),
            progress: &progress,
        };
        dst.registry
            .put_blob(&dst.repo, upload)
            .await
            .map_err(|e| match e {
                RegistryError::SourceFailed { source } => CopyError::Source {
                    reference: format!("{} blob {}", src.display(), blob.digest),
                    source: *source,
                },
                e => target_err(e),
            })?;
        counters.bytes.fetch_add(blob.size, Ordering::Relaxed);
        counters.transferred.fetch_add(1, Ordering::Relaxed);
        *known = Some(dst.repo.clone());
        record(&dst.repo);
        Ok(())
    }
}

#[cfg(test)]
mod hostile_tests;
