//! One blob into one target repository: already there, mounted from a repository of the same
//! registry that has it, or streamed from the source with its digest verified.

use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::{self, Relaxed};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};

use super::sightings::BlobState;
use super::{Counters, Engine, TransferCounters};
use crate::copy::item::{Endpoint, Item};
use crate::copy::journal::Transfer;
use crate::copy::outcome::CopyError;
use crate::copy::reporter::Reporter;
use crate::copy::shared_read::Read;
use crate::copy::spool::Lease;
use crate::reference::Digest;
use crate::reference::Midstate;
use crate::registry::manifest::Desc;
use crate::registry::{
    skip_bytes, BlobSource, BlobStream, BlobUpload, RegistryError, UploadProgress,
};

/// The bytes of one blob, for an upload that may reopen them at any offset: from the spool
/// where it holds them (verified once against the checkpoint), then from the source with a
/// range request, written to the spool on the way when the blob is large.
struct SourceBlob<'a> {
    endpoint: &'a Endpoint,
    digest: &'a Digest,
    size: u64,
    /// A fan-out's blob, read from the source once for every target: read it here instead.
    shared: Option<std::path::PathBuf>,
    reporter: Arc<dyn Reporter>,
    stats: Arc<TransferCounters>,
    lease: Option<Lease<'a>>,
    /// The hash of the spool's first bytes, as the checkpoint has it: used once.
    spooled: std::sync::Mutex<Option<Midstate>>,
    /// The first open counts what the target already held.
    opened: std::sync::atomic::AtomicBool,
    /// Where the last open read the source.
    url: std::sync::Mutex<Option<String>>,
    /// How far into the blob the reporter was told: every byte of it is told once, those an
    /// upload session of an earlier run holds included (the run's total counts the whole
    /// blob), and none twice when an upload reads the blob again (a retry, a small blob a
    /// registry would not take in one request).
    told: Arc<std::sync::atomic::AtomicU64>,
}

impl SourceBlob<'_> {
    /// Up to where the spool serves an open at `at`: the checkpoint's offset, when the file
    /// matches it (checked, then forgotten: a spool is used once).
    async fn spool_end(&self, at: u64) -> Option<u64> {
        let lease = self.lease.as_ref()?;
        let prefix = self.spooled.lock().expect("spool prefix").take()?;
        (at < prefix.offset() && lease.verified_prefix(&prefix).await).then(|| prefix.offset())
    }

    /// The source's bytes from `at` on: a range where the registry serves one, else the whole
    /// blob with the first `at` bytes dropped (counted as read again).
    async fn read_source(&self, at: u64) -> Result<BlobStream, RegistryError> {
        if let Some(path) = &self.shared {
            *self.url.lock().expect("source url") = Some(path.display().to_string());
            return Ok(crate::copy::spool::read_file(path.clone(), at, self.size));
        }
        let src = self.endpoint;
        let tail = src
            .registry
            .get_blob_from(&src.repo, self.digest, self.size, at)
            .await?;
        *self.url.lock().expect("source url") = Some(tail.url.clone());
        let skip = at - tail.start.min(at);
        self.stats.reread_bytes.fetch_add(skip, Relaxed);
        let stats = self.stats.clone();
        let counted = tail.stream.inspect_ok(move |chunk| {
            stats.source_bytes.fetch_add(chunk.len() as u64, Relaxed);
        });
        let data = skip_bytes(Box::pin(counted), skip);
        Ok(match &self.lease {
            Some(lease) => lease.tee(data, at),
            None => data,
        })
    }
}

#[async_trait::async_trait]
impl BlobSource for SourceBlob<'_> {
    async fn open(&self, from: &Midstate) -> Result<BlobStream, RegistryError> {
        let at = from.offset();
        if !self.opened.swap(true, Relaxed) {
            self.stats.resumed_bytes.fetch_add(at, Relaxed);
        }
        let spooled = self.spool_end(at).await;
        let mut parts: Vec<BlobStream> = Vec::new();
        if let (Some(end), Some(lease)) = (spooled, &self.lease) {
            self.stats.spooled_bytes.fetch_add(end - at, Relaxed);
            parts.push(lease.read(at, end));
        }
        let rest = spooled.unwrap_or(at);
        if rest < self.size || parts.is_empty() {
            parts.push(self.read_source(rest).await?);
        }
        let (reporter, told) = (self.reporter.clone(), self.told.clone());
        tell_up_to(reporter.as_ref(), &told, at);
        let mut at_end = at;
        let data = futures::stream::iter(parts)
            .flatten()
            .inspect_ok(move |chunk| {
                at_end += chunk.len() as u64;
                tell_up_to(reporter.as_ref(), &told, at_end);
            });
        Ok(Box::pin(data))
    }

    fn url(&self) -> Option<String> {
        self.url.lock().expect("source url").clone()
    }

    fn origin(&self) -> Option<crate::registry::BlobOrigin> {
        Some(crate::registry::BlobOrigin {
            registry: self.endpoint.registry.clone(),
            repo: self.endpoint.repo.clone(),
        })
    }
}

/// Tell the reporter of the blob's bytes up to `end` it was not told of yet.
fn tell_up_to(reporter: &dyn Reporter, told: &std::sync::atomic::AtomicU64, end: u64) {
    let before = told.fetch_max(end, Relaxed);
    if end > before {
        reporter.bytes_transferred(end - before);
    }
}

/// How a blob came to be in the target repository.
enum Placed {
    Existing,
    Mounted,
    Transferred,
}

impl Engine {
    /// Make one blob present in the target repository: already there, mounted from a
    /// repository that has it, or streamed from the source with its digest verified. A
    /// fan-out's target is then done with it, whichever way it went.
    pub(super) async fn copy_blob(
        &self,
        item: &Item,
        blob: &Desc,
        counters: &Counters,
    ) -> Result<(), CopyError> {
        let result = self.make_present(item, blob, counters).await;
        if let Some(shared) = &self.shared {
            shared.finished(item.rule, &item.source, &blob.digest);
        }
        result
    }

    async fn make_present(
        &self,
        item: &Item,
        blob: &Desc,
        counters: &Counters,
    ) -> Result<(), CopyError> {
        let dst = &item.target;
        if blob.is_foreign() {
            counters
                .foreign
                .lock()
                .expect("foreign list")
                .push(blob.digest.clone());
            return Ok(());
        }
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
        // Known in this run to be in this very repository: nothing to do.
        if known.as_deref() == Some(dst.repo.as_str()) || self.blob_placed(dst, &blob.digest) {
            counters.existing.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let placed = match self.place(item, blob, known.clone()).await? {
            Some(placed) => {
                self.forget_upload(item, blob);
                placed
            }
            None => {
                self.transfer(item, blob, counters).await?;
                counters.bytes.fetch_add(blob.size, Ordering::Relaxed);
                Placed::Transferred
            }
        };
        match placed {
            Placed::Existing => &counters.existing,
            Placed::Mounted => &counters.mounted,
            Placed::Transferred => &counters.transferred,
        }
        .fetch_add(1, Ordering::Relaxed);
        *known = Some(dst.repo.clone());
        self.placed_blob(dst, &blob.digest);
        self.journal
            .blob_present(dst.registry.name(), &dst.repo, &blob.digest, blob.size);
        Ok(())
    }

    /// Without sending bytes: the target repository has the blob, or a mount gives it. `known`
    /// is a repository of the target registry this run put it in.
    async fn place(
        &self,
        item: &Item,
        blob: &Desc,
        known: Option<String>,
    ) -> Result<Option<Placed>, CopyError> {
        let (src, dst) = (&item.source, &item.target);
        // A whole check of another image already found it there: nothing to ask.
        if matches!(
            self.blob_seen(dst, &blob.digest),
            Some(BlobState::There | BlobState::Damaged)
        ) {
            return Ok(Some(Placed::Existing));
        }
        // A repository that existed before the run is asked first (one HEAD, the first time
        // anyone in the run asks), so whole checks of other images are told what it held
        // before this run wrote to it. One the registry listed no tags of when the run first
        // looked, and that no earlier run recorded writing into (one stopped before its
        // manifests leaves blobs and no tag), holds only what this run put there
        // (`blob_placed`, asked before): a mount is its existence check.
        if !self.target_is_fresh(dst) && self.blob_there(item, blob).await? != BlobState::Missing {
            return Ok(Some(Placed::Existing));
        }
        // An earlier run put it somewhere in this registry: a mount candidate only, never
        // trusted as present (a garbage collection may have removed it since).
        let recorded = match known {
            Some(_) => None,
            None => self
                .journal
                .blob_location(dst.registry.name(), &blob.digest),
        };
        // A mount source: a repository of the target registry known to hold the blob, or the
        // source repository itself when copying within one registry (promotion).
        let same_registry = src.registry.name() == dst.registry.name();
        let from = known
            .or(recorded)
            .filter(|from| from != &dst.repo)
            .or_else(|| same_registry.then(|| src.repo.clone()));
        if let Some(from) = from {
            match dst
                .registry
                .mount_blob(&dst.repo, &blob.digest, &from)
                .await
            {
                Ok(true) => return Ok(Some(Placed::Mounted)),
                Ok(false) => {}
                Err(e) => {
                    tracing::debug!(error = %e, digest = %blob.digest, "mount refused; transferring");
                }
            }
        }
        Ok(None)
    }

    /// Stream the blob from the source into the target (one of `concurrency` transfers at a
    /// time), continuing an upload an earlier run left open, or rebuilding it from the
    /// spool. When the run stops, a chunked upload parks after the chunk it is sending.
    async fn transfer(
        &self,
        item: &Item,
        blob: &Desc,
        counters: &Counters,
    ) -> Result<(), CopyError> {
        let (src, dst) = (&item.source, &item.target);
        let window = self.window(dst.registry.name());
        let _slot = window.enter().await;
        // The target's own 429s and retries; a retry because the source failed is counted
        // at the source (`Registry::charge_retry`), so a flaky source does not shrink this.
        let pushback = || dst.registry.stats().map(|s| s.throttled + s.retries);
        let before = pushback();
        let registry = dst.registry.name();
        let resume = self
            .journal
            .upload_session(registry, &dst.repo, &blob.digest);
        let shared = self.shared_read(item, blob).await?;
        // A fan-out's file is on disk already: the spool needs no copy of its own.
        let lease = self
            .spool
            .as_ref()
            .filter(|_| dst.registry.capabilities().resumable_uploads && shared.is_none())
            .and_then(|s| s.lease(&blob.digest, blob.size));
        let source = SourceBlob {
            endpoint: src,
            digest: &blob.digest,
            size: blob.size,
            shared,
            reporter: self.reporter.clone(),
            stats: self.transfer_stats.clone(),
            lease,
            spooled: std::sync::Mutex::new(resume.as_ref().map(|p| p.state.clone())),
            opened: AtomicBool::new(false),
            url: std::sync::Mutex::default(),
            told: Arc::default(),
        };
        let transfer = Transfer {
            source: src,
            target: dst,
            digest: &blob.digest,
            size: blob.size,
        };
        let progress = |p: UploadProgress| self.journal.upload_progress(&transfer, &p);
        let upload = BlobUpload {
            digest: &blob.digest,
            size: blob.size,
            source: &source,
            resume,
            progress: &progress,
            park: &|| counters.park.is_cancelled(),
        };
        let result = dst.registry.put_blob(&dst.repo, upload).await;
        let sent = if result.is_ok() { blob.size } else { 0 };
        window.finished(sent, pushback() > before);
        let spool = self.spool.as_ref().filter(|_| source.lease.is_some());
        match result {
            Ok(()) => {
                spool.inspect(|s| s.discard(&blob.digest));
                Ok(())
            }
            Err(RegistryError::Parked { .. }) => {
                self.transfer_stats.parked.fetch_add(1, Relaxed);
                Err(CopyError::Interrupted {
                    reference: format!("{} blob {}", dst.display(), blob.digest),
                })
            }
            Err(RegistryError::SourceFailed { source }) => {
                if source.is_mismatch() {
                    spool.inspect(|s| s.discard(&blob.digest));
                }
                Err(CopyError::Source {
                    reference: format!("{} blob {}", src.display(), blob.digest),
                    source: *source,
                })
            }
            Err(e) => Err(target_error(dst, blob, e)),
        }
    }

    /// Where a fan-out's target reads the blob: the file one read of the source made (read
    /// now if no target read it yet). `None` for a rule with one target, or no room.
    async fn shared_read(
        &self,
        item: &Item,
        blob: &Desc,
    ) -> Result<Option<std::path::PathBuf>, CopyError> {
        let Some(shared) = &self.shared else {
            return Ok(None);
        };
        let stats = self.transfer_stats.clone();
        let counted = move |n: u64| {
            stats.source_bytes.fetch_add(n, Relaxed);
        };
        let src = &item.source;
        match shared
            .open(item.rule, src, &blob.digest, blob.size, &counted)
            .await
        {
            Ok(Read::File(path)) => Ok(Some(path)),
            Ok(Read::Source) => Ok(None),
            Err(e) => Err(CopyError::Source {
                reference: format!("{} blob {}", src.display(), blob.digest),
                source: e,
            }),
        }
    }

    /// A blob found at the target (or mounted) needs no parked upload of it, nor its spool.
    fn forget_upload(&self, item: &Item, blob: &Desc) {
        let dst = &item.target;
        if self
            .journal
            .upload_session(dst.registry.name(), &dst.repo, &blob.digest)
            .is_some()
        {
            let transfer = Transfer {
                source: &item.source,
                target: dst,
                digest: &blob.digest,
                size: blob.size,
            };
            self.journal
                .upload_progress(&transfer, &UploadProgress::Finished);
            if let Some(s) = &self.spool {
                s.discard(&blob.digest);
            }
        }
    }
}

fn target_error(dst: &Endpoint, blob: &Desc, e: RegistryError) -> CopyError {
    CopyError::Target {
        reference: format!("{} blob {}", dst.display(), blob.digest),
        source: e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::memory::MemoryRegistry;

    /// Sums what it is told.
    #[derive(Default)]
    struct Bytes(std::sync::atomic::AtomicU64);
    impl Reporter for Bytes {
        fn bytes_transferred(&self, bytes: u64) {
            self.0.fetch_add(bytes, Relaxed);
        }
    }

    /// Issue 21, "What was seen" 6: the bytes bar reaches the run's total. An upload that
    /// continues a session of an earlier run (from byte 3) and is then read again from the
    /// start (a retry) tells the reporter of every byte of the blob once: what the summary
    /// counts for it.
    #[tokio::test]
    async fn every_byte_of_a_blob_is_told_once_resumed_or_read_again() {
        let data = b"abcdefghij";
        let registry = Arc::new(MemoryRegistry::new("src.test"));
        let digest = registry.add_blob("team/app", data);
        let endpoint = Endpoint {
            registry,
            repo: "team/app".into(),
        };
        let told = Arc::new(Bytes::default());
        let source = SourceBlob {
            endpoint: &endpoint,
            digest: &digest,
            size: data.len() as u64,
            shared: None,
            reporter: told.clone(),
            stats: Arc::default(),
            lease: None,
            spooled: std::sync::Mutex::default(),
            opened: AtomicBool::new(false),
            url: std::sync::Mutex::default(),
            told: Arc::default(),
        };
        let mut from = Midstate::new();
        from.update(&data[..3]);
        for start in [from, Midstate::new()] {
            let read: Vec<u8> = source
                .open(&start)
                .await
                .unwrap()
                .map(|c| c.unwrap().to_vec())
                .concat()
                .await;
            assert_eq!(read, data[start.offset() as usize..]);
        }
        assert_eq!(told.0.load(Relaxed), data.len() as u64);
    }
}
