//! Whether a target holds an image whole: the manifest its tag points at, every child
//! manifest it reaches, every config and layer blob, and for a referrer at a target without
//! the referrers API, its entry in the subject's `sha256-<hex>` fallback index. A matching top
//! digest is not enough: a clean-up that deletes "untagged" versions removes an index's
//! children, and a pull of that platform then fails while the tag looks fine.
//!
//! Each manifest and blob of a target repository is asked about at most once per run,
//! however many tags reach it: what was found whole (or put there by this run) is
//! remembered, and so is what was found missing, until a copy puts it back.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::future::{try_join_all, BoxFuture};
use futures::{FutureExt, StreamExt};
use tokio::sync::OnceCell;

use super::target::{repo_digest_key, Destined};
use super::{Engine, ManifestKey};
use crate::copy::{join_ref, CopyError, Gap, Item, Part};
use crate::registry::manifest::{self, Desc, Parsed, MAX_INDEX_DEPTH};
use crate::registry::{Digest, Manifest, RegistryError};

/// What the target holds for an item.
#[derive(Debug)]
pub(super) enum AtTarget {
    /// The reference points at the digest the item puts there, and everything it reaches is
    /// there.
    Whole,
    /// It points there, but these are missing.
    Gaps(Vec<Gap>),
    /// The reference does not exist there (`None`), or points at this other digest.
    Elsewhere(Option<Digest>),
}

/// What a blob check found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BlobState {
    There,
    Missing,
    /// Read whole, its bytes do not hash to its digest.
    Damaged,
}

/// The run's knowledge of target repositories as wholes.
#[derive(Default)]
pub(super) struct Graphs {
    /// Manifests whose whole graph is known to be at the target: found whole, or put there
    /// by this run after everything they reference.
    whole: std::sync::Mutex<HashSet<ManifestKey>>,
    /// Each child manifest looked at: what it lacks (empty: nothing). One look per run; a
    /// second caller waits for the first.
    walked: std::sync::Mutex<HashMap<ManifestKey, Arc<OnceCell<Vec<Gap>>>>>,
    /// Each blob asked about (or read whole).
    blobs: std::sync::Mutex<HashMap<ManifestKey, Arc<OnceCell<BlobState>>>>,
}

impl Graphs {
    fn is_whole(&self, key: &ManifestKey) -> bool {
        self.whole.lock().expect("whole graphs").contains(key)
    }

    fn walked(&self, key: &ManifestKey) -> Arc<OnceCell<Vec<Gap>>> {
        let mut walked = self.walked.lock().expect("walked manifests");
        walked.entry(key.clone()).or_default().clone()
    }

    fn blob(&self, key: &ManifestKey) -> Arc<OnceCell<BlobState>> {
        let mut blobs = self.blobs.lock().expect("checked blobs");
        blobs.entry(key.clone()).or_default().clone()
    }
}

impl Engine {
    /// Remember that manifest `digest` is at the target with everything it references (a
    /// copy put it there after its children and blobs, or a check found it so).
    pub(super) fn placed_whole(&self, dst: &crate::copy::Endpoint, digest: &Digest) {
        let mut whole = self.graphs.whole.lock().expect("whole graphs");
        whole.insert(repo_digest_key(dst, digest));
    }

    /// Did a check of child manifest `digest` find something missing below it (so finding
    /// the manifest itself there does not make it whole)?
    pub(super) fn lacks_below(&self, dst: &crate::copy::Endpoint, digest: &Digest) -> bool {
        let key = repo_digest_key(dst, digest);
        let found = self
            .graphs
            .walked
            .lock()
            .expect("walked manifests")
            .get(&key)
            .cloned();
        !self.graphs.is_whole(&key)
            && found
                .and_then(|c| c.get().cloned())
                .is_some_and(|g| !g.is_empty())
    }

    /// Does the target hold what this item would put there, whole?
    pub(super) async fn at_target(&self, item: &Item, d: &Destined) -> Result<AtTarget, CopyError> {
        let dst = &item.target;
        let top = match self.target_top(item, d).await? {
            Ok(top) => top,
            Err(elsewhere) => return Ok(AtTarget::Elsewhere(elsewhere)),
        };
        let mut gaps = match self.graphs.is_whole(&repo_digest_key(dst, &top.digest)) {
            true => Vec::new(),
            false => {
                let only = d.chosen.as_ref().map(|c| c.children.as_slice());
                let found = self.gaps_below(item, &top, only, Vec::new()).await?;
                if found.is_empty() {
                    self.placed_whole(dst, &top.digest);
                    self.placed_manifest(dst, &top.digest);
                }
                found
            }
        };
        if let Some(subject) = &item.subject {
            if !self.listed(item, subject, &top).await? {
                gaps.push(Gap {
                    part: Part::Unlisted,
                    digest: subject.clone(),
                    within: None,
                });
            }
        }
        Ok(match gaps.is_empty() {
            true => AtTarget::Whole,
            false => AtTarget::Gaps(gaps),
        })
    }

    /// The manifest the item's target reference points at, when it is the one the item puts
    /// there; else what it points at (`None`: nothing). A body already in hand (the source's,
    /// or the index a platform list chose) needs only a HEAD; otherwise one GET gives digest
    /// and body (a HEAD first where a GET counts as a pull).
    async fn target_top(
        &self,
        item: &Item,
        d: &Destined,
    ) -> Result<Result<Manifest, Option<Digest>>, CopyError> {
        let dst = &item.target;
        let err = |e| CopyError::Target {
            reference: item.target_display(),
            source: e,
        };
        let known = d
            .chosen
            .as_ref()
            .map(|c| &c.manifest)
            .or(d.source_manifest.as_ref())
            .filter(|m| m.digest == d.push_digest);
        // A HEAD first where it saves a read: the body is in hand (and is not to be read
        // again, as `deep` does), or a GET would count as a pull.
        if (known.is_some() && !self.deep) || dst.registry.counts_pulls() {
            let head = dst
                .registry
                .head_manifest(&dst.repo, &d.reference)
                .await
                .map_err(err)?;
            match head {
                Some(h) if h.digest == d.push_digest => {}
                other => return Ok(Err(other.map(|h| h.digest))),
            }
            if let Some(m) = known.filter(|_| !self.deep) {
                return Ok(Ok(m.clone()));
            }
            let reference = d.push_digest.as_str();
            return match dst.registry.get_manifest(&dst.repo, reference).await {
                Ok(m) => Ok(Ok(m)),
                Err(e) if e.is_not_found() => Ok(Err(None)),
                Err(e) => Err(err(e)),
            };
        }
        match dst.registry.get_manifest(&dst.repo, &d.reference).await {
            Ok(m) if m.digest == d.push_digest => Ok(Ok(m)),
            Ok(m) => Ok(Err(Some(m.digest))),
            Err(e) if e.is_not_found() => Ok(Err(None)),
            Err(e) => Err(err(e)),
        }
    }

    /// What the target lacks below manifest `m` (itself at the target): its children (only
    /// `only`, when a platform list chose some) and their graphs, or its blobs. `path` holds
    /// the indexes above it.
    fn gaps_below<'a>(
        &'a self,
        item: &'a Item,
        m: &'a Manifest,
        only: Option<&'a [Desc]>,
        path: Vec<Digest>,
    ) -> BoxFuture<'a, Result<Vec<Gap>, CopyError>> {
        async move {
            let here = join_ref(&item.target.display(), m.digest.as_str());
            let parsed = manifest::parse(&m.media_type, &m.bytes).map_err(|source| {
                CopyError::Unreadable {
                    reference: here.clone(),
                    source,
                }
            })?;
            let gaps: Vec<Vec<Gap>> = match parsed {
                Parsed::Index { children } => {
                    let mut path = path;
                    path.push(m.digest.clone());
                    if path.len() > MAX_INDEX_DEPTH {
                        return Err(CopyError::Manifest {
                            reference: here,
                            reason: format!("indexes nested deeper than {MAX_INDEX_DEPTH} levels"),
                        });
                    }
                    let children = only.map_or(children, <[Desc]>::to_vec);
                    let path = &path;
                    try_join_all(
                        children.into_iter().map(|c| async move {
                            self.child_gaps(item, &c, &m.digest, path).await
                        }),
                    )
                    .await?
                }
                Parsed::Image { config, layers } => {
                    let mut blobs: Vec<(Desc, Part)> = vec![(config, Part::Config)];
                    blobs.extend(layers.into_iter().map(|l| (l, Part::Layer)));
                    blobs.dedup_by(|a, b| a.0.digest == b.0.digest);
                    let checks = blobs
                        .into_iter()
                        .filter(|(b, _)| !b.is_foreign())
                        .map(|(b, part)| self.blob_gap(item, b, part, &m.digest));
                    futures::stream::iter(checks)
                        .buffered(8)
                        .collect::<Vec<_>>()
                        .await
                        .into_iter()
                        .collect::<Result<Vec<_>, _>>()?
                }
            };
            Ok(gaps.into_iter().flatten().collect())
        }
        .boxed()
    }

    /// What the target lacks of child manifest `child` of index `within`: the manifest
    /// itself, or something below it. Looked at once per run.
    async fn child_gaps(
        &self,
        item: &Item,
        child: &Desc,
        within: &Digest,
        path: &[Digest],
    ) -> Result<Vec<Gap>, CopyError> {
        let dst = &item.target;
        let key = repo_digest_key(dst, &child.digest);
        if self.graphs.is_whole(&key) {
            return Ok(Vec::new());
        }
        if path.contains(&child.digest) {
            return Err(CopyError::Manifest {
                reference: join_ref(&dst.display(), within.as_str()),
                reason: format!(
                    "the index names {}, which is this index or one that contains it: a cycle",
                    child.digest
                ),
            });
        }
        let cell = self.graphs.walked(&key);
        let gaps = cell
            .get_or_try_init(|| async {
                let Some(m) = self.target_child(item, child).await? else {
                    return Ok(vec![Gap {
                        part: Part::Manifest {
                            platform: child.platform.clone(),
                        },
                        digest: child.digest.clone(),
                        within: Some(within.clone()),
                    }]);
                };
                let gaps = self.gaps_below(item, &m, None, path.to_vec()).await?;
                // Lacking something below, it is not "placed": a copy must go through it.
                if gaps.is_empty() {
                    self.placed_manifest(dst, &child.digest);
                    self.placed_whole(dst, &child.digest);
                }
                Ok::<_, CopyError>(gaps)
            })
            .await?;
        Ok(gaps.clone())
    }

    /// A child manifest at the target, or `None` when it is not there. One GET gives presence
    /// and body; where a GET counts as a pull, a HEAD says whether it is there and the body
    /// is read from the source (the digest is the same).
    async fn target_child(&self, item: &Item, child: &Desc) -> Result<Option<Manifest>, CopyError> {
        let dst = &item.target;
        let reference = child.digest.as_str();
        let err = |e| CopyError::Target {
            reference: join_ref(&dst.display(), reference),
            source: e,
        };
        if dst.registry.counts_pulls() && !self.deep {
            let head = dst.registry.head_manifest(&dst.repo, reference).await;
            if head.map_err(err)?.is_none() {
                return Ok(None);
            }
            let src = &item.source;
            if !src.registry.counts_pulls() {
                let m = src.registry.get_manifest(&src.repo, reference).await;
                return m.map(Some).map_err(|e| CopyError::Source {
                    reference: join_ref(&src.display(), reference),
                    source: e,
                });
            }
        }
        match dst.registry.get_manifest(&dst.repo, reference).await {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(err(e)),
        }
    }

    /// Whether blob `b` (a `part` of image `within`) is at the target: asked once per run
    /// (read whole and verified under `deep`), unless this run put it there.
    async fn blob_gap(
        &self,
        item: &Item,
        b: Desc,
        part: Part,
        within: &Digest,
    ) -> Result<Vec<Gap>, CopyError> {
        let dst = &item.target;
        if !self.deep && self.blob_placed(dst, &b.digest) {
            return Ok(Vec::new());
        }
        let cell = self.graphs.blob(&repo_digest_key(dst, &b.digest));
        let state = *cell
            .get_or_try_init(|| self.check_blob(item, &b))
            .await
            .map_err(|e| CopyError::Target {
                reference: format!("{} blob {}", dst.display(), b.digest),
                source: e,
            })?;
        let part = match state {
            BlobState::There => {
                self.placed_blob(dst, &b.digest);
                return Ok(Vec::new());
            }
            // Put back by this run since it was found missing.
            BlobState::Missing if self.blob_placed(dst, &b.digest) => return Ok(Vec::new()),
            BlobState::Missing => part,
            BlobState::Damaged => Part::Damaged,
        };
        Ok(vec![Gap {
            part,
            digest: b.digest,
            within: Some(within.clone()),
        }])
    }

    /// Ask the target whether it has blob `b`; under `deep`, read it whole and verify it.
    async fn check_blob(&self, item: &Item, b: &Desc) -> Result<BlobState, RegistryError> {
        let dst = &item.target;
        if !self.deep {
            let there = dst.registry.blob_exists(&dst.repo, &b.digest).await?;
            return Ok(if there {
                BlobState::There
            } else {
                BlobState::Missing
            });
        }
        let mut stream = match dst.registry.get_blob(&dst.repo, &b.digest, b.size).await {
            Ok(s) => s,
            Err(e) if e.is_not_found() => return Ok(BlobState::Missing),
            Err(e) => return Err(e),
        };
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(_) => {}
                Err(e) if e.is_mismatch() => return Ok(BlobState::Damaged),
                Err(e) => return Err(e),
            }
        }
        Ok(BlobState::There)
    }

    /// Is referrer `m` listed in its subject's fallback index at a target without the
    /// referrers API (or does the target index referrers itself)?
    async fn listed(&self, item: &Item, subject: &Digest, m: &Manifest) -> Result<bool, CopyError> {
        let dst = &item.target;
        let tag = manifest::fallback_tag(subject);
        let err = |e| CopyError::Target {
            reference: join_ref(&dst.display(), &tag),
            source: e,
        };
        if dst
            .registry
            .supports_referrers(&dst.repo)
            .await
            .map_err(err)?
        {
            return Ok(true);
        }
        let existing = match dst.registry.get_manifest(&dst.repo, &tag).await {
            Ok(index) => Some(index),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(err(e)),
        };
        let merged = manifest::merge_fallback_index(
            existing.as_ref().map(|i| &i.bytes[..]),
            manifest::referrer_entry(m),
        )
        .map_err(|reason| CopyError::Manifest {
            reference: join_ref(&dst.display(), &tag),
            reason: format!("{reason}; it was left as it is"),
        })?;
        Ok(merged.is_none())
    }
}
