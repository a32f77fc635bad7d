//! Whether a target holds an image whole: the manifest its tag points at, every child
//! manifest it reaches, every config and layer blob, and for a referrer at a target without
//! the referrers API, its entry in the subject's `sha256-<hex>` fallback index. A matching top
//! digest is not enough: a clean-up that deletes "untagged" versions removes an index's
//! children, and a pull of that platform then fails while the tag looks fine.
//!
//! Each manifest and blob of a target repository is looked at once per run, however many
//! tags reach it, and what that first look saw is what every check of the run is told (a
//! [`Sighting`]): the target as it was before this run wrote to it. So whether an image is
//! whole does not depend on which image's copy got to a shared piece first, and `ferry plan`
//! (the same code over a simulation) says what `ferry run` finds. The copy's own existence
//! checks of children and blobs go through the same sightings.

use futures::future::{try_join_all, BoxFuture};
use futures::{FutureExt, StreamExt};

use super::destined::Destined;
use super::keys::repo_digest_key;
use super::sightings::{AtTarget, BlobState, Sighting};
use super::Engine;
use crate::copy::item::{join_ref, Endpoint, Item};
use crate::copy::outcome::{CopyError, Gap, Part};
use crate::reference::Digest;
use crate::registry::manifest::{self, Desc, Parsed, MAX_INDEX_DEPTH};
use crate::registry::referrer_lists;
use crate::registry::{Manifest, RegistryError};

impl Engine {
    /// Does the target repository have manifest `digest`, as the run first saw it? One `HEAD`
    /// the first time it is asked in this run (a copy's existence check, or its look before
    /// it writes).
    pub(super) async fn manifest_there(
        &self,
        dst: &Endpoint,
        digest: &Digest,
    ) -> Result<bool, CopyError> {
        let cell = self.graphs.manifest(&repo_digest_key(dst, digest));
        let seen = cell
            .get_or_try_init(|| async {
                let head = dst.registry.head_manifest(&dst.repo, digest.as_str()).await;
                Ok::<_, RegistryError>(match head? {
                    Some(_) => Sighting::There(None),
                    None => Sighting::Missing,
                })
            })
            .await
            .map_err(|e| CopyError::Target {
                reference: join_ref(&dst.display(), digest.as_str()),
                source: e,
            })?;
        Ok(matches!(seen, Sighting::There(_)))
    }

    /// Did the run's first looks find something missing below manifest `digest` (so finding
    /// the manifest itself there does not make it whole)? Asks nothing.
    pub(super) fn lacks_below(&self, dst: &Endpoint, digest: &Digest) -> bool {
        self.known_lacking(dst, digest, 0)
    }

    fn known_lacking(&self, dst: &Endpoint, digest: &Digest, depth: usize) -> bool {
        let cell = self.graphs.manifest(&repo_digest_key(dst, digest));
        let Some(Sighting::There(Some(m))) = cell.get() else {
            return false;
        };
        match manifest::parse(&m.media_type, &m.bytes) {
            Ok(Parsed::Index { children }) if depth < MAX_INDEX_DEPTH => children.iter().any(|c| {
                let child = self.graphs.manifest(&repo_digest_key(dst, &c.digest));
                matches!(child.get(), Some(Sighting::Missing))
                    || self.known_lacking(dst, &c.digest, depth + 1)
            }),
            Ok(Parsed::Image { config, layers }) => std::iter::once(&config)
                .chain(&layers)
                .filter(|b| !b.is_foreign())
                .any(|b| {
                    let cell = self.graphs.blob(&repo_digest_key(dst, &b.digest));
                    matches!(cell.get(), Some(BlobState::Missing))
                }),
            _ => false,
        }
    }

    /// Does the target repository have blob `b`, as the run first saw it? One `HEAD` the
    /// first time it is asked in this run (read whole and verified under `deep`).
    pub(super) async fn blob_there(&self, item: &Item, b: &Desc) -> Result<BlobState, CopyError> {
        let dst = &item.target;
        let cell = self.graphs.blob(&repo_digest_key(dst, &b.digest));
        let state = cell
            .get_or_try_init(|| self.check_blob(item, b))
            .await
            .map_err(|e| CopyError::Target {
                reference: format!("{} blob {}", dst.display(), b.digest),
                source: e,
            })?;
        Ok(*state)
    }

    /// What the run already saw of blob `digest` in the target repository, without asking.
    pub(super) fn blob_seen(&self, dst: &Endpoint, digest: &Digest) -> Option<BlobState> {
        self.graphs
            .blob(&repo_digest_key(dst, digest))
            .get()
            .copied()
    }

    /// Does the target hold what this item would put there, whole?
    pub(super) async fn at_target(&self, item: &Item, d: &Destined) -> Result<AtTarget, CopyError> {
        let dst = &item.target;
        let top = match self.target_top(item, d).await? {
            Ok(top) => top,
            Err(elsewhere) => return Ok(AtTarget::Elsewhere(elsewhere)),
        };
        let key = repo_digest_key(dst, &top.digest);
        let cell = self.graphs.manifest(&key);
        // A tag that pointed at a manifest the run first saw missing (a layout whose blob
        // file was deleted; a copy of another image may have put it back since) pointed at
        // nothing.
        if let Some(Sighting::Missing) = cell.get() {
            return Ok(AtTarget::Elsewhere(None));
        }
        // What a tag points at is there: a later look at it by digest is told so.
        let _ = cell.set(Sighting::There(Some(top.clone())));
        let mut gaps = Vec::new();
        if !self.graphs.is_whole(&key) {
            let only = d.chosen.as_ref().map(|c| c.children.as_slice());
            gaps = self.gaps_below(item, &top, only, Vec::new()).await?;
            if gaps.is_empty() && only.is_none() {
                self.graphs.found_whole(key);
            }
        }
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
    /// there; else what it points at (`None`: nothing). By digest, the run's first look at
    /// that digest. By tag, the repository's listing where it names the tag; else a body
    /// already in hand (the source's, or the index a platform list chose) needs only a HEAD;
    /// otherwise one GET gives digest and body (a HEAD first where a GET counts as a pull).
    async fn target_top(
        &self,
        item: &Item,
        d: &Destined,
    ) -> Result<Result<Manifest, Option<Digest>>, CopyError> {
        let dst = &item.target;
        if item.target_tag.is_none() {
            return Ok(match self.sight(item, &d.push_digest).await? {
                Some(m) => Ok(m),
                None => Err(None),
            });
        }
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
        // The repository's listing names the tag: no request for it. The body is the one in
        // hand, or the run's first look at that digest (once however many tags share it).
        if let Some(listed) = self.listings.digest(dst, &d.reference).await {
            if listed != d.push_digest {
                return Ok(Err(Some(listed)));
            }
            if let Some(m) = known.filter(|_| !self.deep) {
                return Ok(Ok(m.clone()));
            }
            return Ok(self.sight_listed(item, &d.push_digest).await?.ok_or(None));
        }
        // A HEAD first where it saves a read: the body is in hand (and is not to be read
        // again, as `deep` does), or a GET would count as a pull.
        if (known.is_some() && !self.deep) || dst.registry.capabilities().counts_pulls {
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
    /// itself, or something below it.
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
        let Some(m) = self.sight(item, &child.digest).await? else {
            return Ok(vec![Gap {
                part: Part::Manifest {
                    platform: child.platform.clone(),
                },
                digest: child.digest.clone(),
                within: Some(within.clone()),
            }]);
        };
        let gaps = self.gaps_below(item, &m, None, path.to_vec()).await?;
        if gaps.is_empty() {
            self.graphs.found_whole(key);
        }
        Ok(gaps)
    }

    /// Manifest `digest` of the item's target repository as the run first saw it, with its
    /// body (`None`: missing). One GET gives presence and body; where a GET counts as a pull,
    /// a HEAD says whether it is there and the body is read from the source (the digest is
    /// the same).
    async fn sight(&self, item: &Item, digest: &Digest) -> Result<Option<Manifest>, CopyError> {
        let dst = &item.target;
        let reference = digest.as_str();
        let err = |e| CopyError::Target {
            reference: join_ref(&dst.display(), reference),
            source: e,
        };
        let cell = self.graphs.manifest(&repo_digest_key(dst, digest));
        let seen = cell
            .get_or_try_init(|| async {
                if dst.registry.capabilities().counts_pulls && !self.deep {
                    let head = dst.registry.head_manifest(&dst.repo, reference).await;
                    return Ok(match head.map_err(err)? {
                        Some(_) => Sighting::There(None),
                        None => Sighting::Missing,
                    });
                }
                match dst.registry.get_manifest(&dst.repo, reference).await {
                    Ok(m) => Ok(Sighting::There(Some(m))),
                    Err(e) if e.is_not_found() => Ok(Sighting::Missing),
                    Err(e) => Err(err(e)),
                }
            })
            .await?;
        match seen {
            Sighting::Missing => Ok(None),
            Sighting::There(Some(m)) => Ok(Some(m.clone())),
            // Seen by a HEAD: the body, from the source where a GET there counts no pull.
            Sighting::There(None) => self.body_elsewhere(item, digest).await.map(Some),
        }
    }

    /// Manifest `digest` of the item's target repository, which the repository's listing
    /// says a tag points at, with its body: as [`Engine::sight`], except where a GET at the
    /// target counts as a pull. There the listing stands for the `HEAD`, and the body read
    /// from the source (see [`Engine::body_elsewhere`]) is kept for every other tag on it.
    async fn sight_listed(
        &self,
        item: &Item,
        digest: &Digest,
    ) -> Result<Option<Manifest>, CopyError> {
        let dst = &item.target;
        if !dst.registry.capabilities().counts_pulls || self.deep {
            return self.sight(item, digest).await;
        }
        let cell = self.graphs.manifest(&repo_digest_key(dst, digest));
        let seen = cell
            .get_or_try_init(|| async {
                let m = self.body_elsewhere(item, digest).await?;
                Ok::<_, CopyError>(Sighting::There(Some(m)))
            })
            .await?;
        match seen {
            Sighting::Missing => Ok(None),
            Sighting::There(Some(m)) => Ok(Some(m.clone())),
            Sighting::There(None) => self.body_elsewhere(item, digest).await.map(Some),
        }
    }

    /// The body of manifest `digest`, known to be at the target, where reading it costs no
    /// pull: from the source, unless a GET there counts one too.
    async fn body_elsewhere(&self, item: &Item, digest: &Digest) -> Result<Manifest, CopyError> {
        let (src, dst) = (&item.source, &item.target);
        let reference = digest.as_str();
        let m = match src.registry.capabilities().counts_pulls {
            false => src.registry.get_manifest(&src.repo, reference).await,
            true => dst.registry.get_manifest(&dst.repo, reference).await,
        };
        m.map_err(|e| CopyError::Source {
            reference: join_ref(&src.display(), reference),
            source: e,
        })
    }

    /// Whether blob `b` (a `part` of image `within`) is at the target, as the run first saw
    /// it.
    async fn blob_gap(
        &self,
        item: &Item,
        b: Desc,
        part: Part,
        within: &Digest,
    ) -> Result<Vec<Gap>, CopyError> {
        let part = match self.blob_there(item, &b).await? {
            BlobState::There => return Ok(Vec::new()),
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
        let merged = referrer_lists::merge_fallback_index(
            existing.as_ref().map(|i| &i.bytes[..]),
            referrer_lists::referrer_entry(m),
        )
        .map_err(|reason| CopyError::Manifest {
            reference: join_ref(&dst.display(), &tag),
            reason: format!("{reason}; it was left as it is"),
        })?;
        Ok(merged.is_none())
    }
}
