//! Copying what a manifest references, children first, and the manifest after: one writer per
//! manifest and target, and an index written while none of its children is.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::future::{join_all, BoxFuture};
use futures::FutureExt;

use super::keys::repo_digest_key;
use super::{Counters, Engine};
use crate::copy::item::{join_ref, Endpoint, Item};
use crate::copy::outcome::CopyError;
use crate::reference::Digest;
use crate::registry::manifest::{self, Desc, Parsed, MAX_INDEX_DEPTH};
use crate::registry::referrer_lists;
use crate::registry::Manifest;

impl Engine {
    /// List a referrer under its subject's fallback tag (`sha256-<hex>`) at a target without
    /// the referrers API: the index there is read and extended, never replaced, so entries
    /// other clients put there stay.
    pub(super) async fn index_referrer(
        &self,
        dst: &Endpoint,
        subject: &Digest,
        referrer: &Manifest,
    ) -> Result<(), CopyError> {
        let tag = manifest::fallback_tag(subject);
        let key = (
            dst.registry.name().to_string(),
            dst.repo.clone(),
            tag.clone(),
        );
        let slot = (self.fallback_tags.lock().expect("fallback tag map"))
            .entry(key.clone())
            .or_default()
            .clone();
        let written = self.extend_fallback(dst, &tag, referrer, &slot).await;
        // Nobody else waits to write this index: its lock goes, so the map holds only
        // the fallback indexes being written, not one per subject of the run.
        let mut slots = self.fallback_tags.lock().expect("fallback tag map");
        if Arc::strong_count(&slot) == 2 {
            slots.remove(&key);
        }
        written
    }

    /// How many fallback-index locks the engine holds (tests: only those being written).
    #[cfg(test)]
    pub(crate) fn fallback_locks(&self) -> usize {
        self.fallback_tags.lock().expect("fallback tag map").len()
    }

    /// Read the fallback index `tag` and put it back with `referrer` listed, holding `slot`.
    async fn extend_fallback(
        &self,
        dst: &Endpoint,
        tag: &str,
        referrer: &Manifest,
        slot: &tokio::sync::Mutex<()>,
    ) -> Result<(), CopyError> {
        let reference = join_ref(&dst.display(), tag);
        let target_err = |e| CopyError::Target {
            reference: reference.clone(),
            source: e,
        };
        let _writing = slot.lock().await;
        let existing = match dst.registry.get_manifest(&dst.repo, tag).await {
            Ok(m) => Some(m),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(target_err(e)),
        };
        let merged = referrer_lists::merge_fallback_index(
            existing.as_ref().map(|m| &m.bytes[..]),
            referrer_lists::referrer_entry(referrer),
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
                .put_manifest(&dst.repo, tag, &index)
                .await
                .map_err(target_err)?;
        }
        Ok(())
    }

    /// Read locks on the slots of an index's children, for the time of its PUT (see
    /// `manifests`); nothing for an image.
    pub(super) async fn hold_children(
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

    pub(super) fn manifest_slot(
        &self,
        dst: &Endpoint,
        digest: &Digest,
    ) -> Arc<tokio::sync::RwLock<()>> {
        self.manifests
            .lock()
            .expect("manifest map")
            .entry(repo_digest_key(dst, digest))
            .or_default()
            .clone()
    }

    /// Copy what a manifest references (children first, recursively), not the manifest.
    /// `ancestors` are the indexes above it, outermost first.
    pub(super) fn copy_tree<'a>(
        &'a self,
        item: &'a Item,
        manifest: &'a Manifest,
        ancestors: &'a [Digest],
        counters: &'a Counters,
    ) -> BoxFuture<'a, Result<(), CopyError>> {
        async move {
            let here = join_ref(&item.source.display(), manifest.digest.as_str());
            let parsed =
                manifest::parse(&manifest.media_type, &manifest.bytes).map_err(|source| {
                    CopyError::Unreadable {
                        reference: here.clone(),
                        source,
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
                    settle(
                        counters,
                        blobs.into_iter().map(|b| self.copy_blob(item, b, counters)),
                    )
                    .await?;
                }
            }
            Ok(())
        }
        .boxed()
    }

    /// Copy children of an index (and what they reference), concurrently; `ancestors` are the
    /// indexes above them, the closest last.
    pub(super) async fn copy_children(
        &self,
        item: &Item,
        children: &[Desc],
        ancestors: &[Digest],
        counters: &Counters,
    ) -> Result<(), CopyError> {
        settle(
            counters,
            children
                .iter()
                .map(|child| self.copy_child(item, child, ancestors, counters)),
        )
        .await
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
        // Put (or found) there earlier in this run; or else, in a fresh repository, certainly
        // absent: no HEAD either way.
        if self.manifest_placed(dst, &child.digest) {
            return Ok(());
        }
        // As the run first saw it (one HEAD the first time anyone asks).
        let present = match self.target_is_fresh(dst) {
            true => false,
            false => self.manifest_there(dst, &child.digest).await?,
        };
        // There, and not found lacking anything below it by a whole check: nothing to do.
        // (Found lacking a layer, it is copied again below: its PUT is harmless.)
        if present && !self.lacks_below(dst, &child.digest) {
            self.placed_manifest(dst, &child.digest);
            return Ok(());
        }
        let read = async {
            (src.registry
                .get_manifest(&src.repo, child.digest.as_str())
                .await)
                .map_err(|e| CopyError::Source {
                    reference: child_src.clone(),
                    source: e,
                })
        };
        let m = self.pulled.get(item, &child.digest, read).await?;
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
        self.placed_manifest(dst, &child.digest);
        counters.manifests.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Run `work` concurrently to its end. The first failure parks the image's other uploads at
/// their next chunk boundary (cutting a PATCH would lose its session) and is the result; an
/// interruption is the result only when nothing failed.
async fn settle<F>(counters: &Counters, work: impl IntoIterator<Item = F>) -> Result<(), CopyError>
where
    F: std::future::Future<Output = Result<(), CopyError>>,
{
    let results = join_all(work.into_iter().map(|f| async {
        let r = f.await;
        if r.is_err() {
            counters.park.cancel();
        }
        r
    }))
    .await;
    let mut interrupted = None;
    for r in results {
        match r {
            Err(e @ CopyError::Interrupted { .. }) => interrupted = interrupted.or(Some(e)),
            Err(e) => return Err(e),
            Ok(()) => {}
        }
    }
    interrupted.map_or(Ok(()), Err)
}
