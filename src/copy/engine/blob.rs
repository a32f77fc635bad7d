//! One blob into one target repository: already there, mounted from a repository of the same
//! registry that has it, or streamed from the source with its digest verified.

use std::sync::atomic::Ordering;

use futures::TryStreamExt;

use super::{Counters, Engine};
use crate::copy::{CopyError, Endpoint, Item, Reporter};
use crate::registry::manifest::Desc;
use crate::registry::{
    skip_bytes, BlobSource, BlobStream, BlobUpload, Digest, RegistryError, UploadProgress,
};
use std::sync::Arc;

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

/// How a blob came to be in the target repository.
enum Placed {
    Existing,
    Mounted,
    Transferred,
}

impl Engine {
    /// Make one blob present in the target repository: already there, mounted from a
    /// repository that has it, or streamed from the source with its digest verified.
    pub(super) async fn copy_blob(
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
        if known.as_deref() == Some(dst.repo.as_str()) {
            counters.existing.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let placed = match self.place(item, blob, known.clone()).await? {
            Some(placed) => placed,
            None => {
                self.transfer(item, blob).await?;
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
        // An earlier run put it somewhere in this registry: a mount candidate only, never
        // trusted as present (a garbage collection may have removed it since).
        let recorded = match known {
            Some(_) => None,
            None => self
                .journal
                .blob_location(dst.registry.name(), &blob.digest),
        };
        if dst
            .registry
            .blob_exists(&dst.repo, &blob.digest)
            .await
            .map_err(|e| target_error(dst, blob, e))?
        {
            return Ok(Some(Placed::Existing));
        }
        // A mount source: a repository of the target registry known to hold the blob, or the
        // source repository itself when copying within one registry (promotion).
        let same_registry = src.registry.name() == dst.registry.name();
        let Some(from) = known
            .or(recorded)
            .filter(|from| from != &dst.repo)
            .or_else(|| same_registry.then(|| src.repo.clone()))
        else {
            return Ok(None);
        };
        match dst
            .registry
            .mount_blob(&dst.repo, &blob.digest, &from)
            .await
        {
            Ok(true) => Ok(Some(Placed::Mounted)),
            Ok(false) => Ok(None),
            Err(e) => {
                tracing::debug!(error = %e, digest = %blob.digest, "mount refused; transferring");
                Ok(None)
            }
        }
    }

    /// Stream the blob from the source into the target (one of `concurrency` transfers at a
    /// time), continuing an upload an earlier run left open.
    async fn transfer(&self, item: &Item, blob: &Desc) -> Result<(), CopyError> {
        let (src, dst) = (&item.source, &item.target);
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
                e => target_error(dst, blob, e),
            })
    }
}

fn target_error(dst: &Endpoint, blob: &Desc, e: RegistryError) -> CopyError {
    CopyError::Target {
        reference: format!("{} blob {}", dst.display(), blob.digest),
        source: e,
    }
}
