//! What the engine records and consults across runs. The SQLite checkpoint implements it
//! (in `app`, over `state`); [`NoJournal`] remembers nothing. Through this trait finished work
//! is not redone: an immutable tag recorded done is not asked about again, a mutable one costs
//! one HEAD at the source, blobs already sent are mounted, and a half-finished chunked upload
//! continues where the registry says it stands.

use super::{Endpoint, Item, Outcome};
use crate::registry::{Digest, UploadProgress};

pub trait Journal: Send + Sync {
    /// The source digest this item had when it was last copied (or found present).
    fn done_digest(&self, _item: &Item) -> Option<Digest> {
        None
    }

    /// May a finished item be trusted without asking either registry (an immutable tag or a
    /// digest)?
    fn trust_without_check(&self, _item: &Item) -> bool {
        false
    }

    fn item_started(&self, _item: &Item) {}

    fn item_finished(&self, _item: &Item, _outcome: &Outcome) {}

    /// A repository of target registry `registry` known to hold this blob.
    fn blob_location(&self, _registry: &str, _digest: &Digest) -> Option<String> {
        None
    }

    fn blob_present(&self, _registry: &str, _repo: &str, _digest: &Digest, _size: u64) {}

    /// An upload session an earlier run left open for this blob.
    fn upload_session(&self, _registry: &str, _repo: &str, _digest: &Digest) -> Option<String> {
        None
    }

    fn upload_progress(
        &self,
        _registry: &str,
        _repo: &str,
        _digest: &Digest,
        _progress: &UploadProgress,
    ) {
    }

    /// The digest a source tag pointed to when it was read.
    fn tag_seen(&self, _source: &Endpoint, _tag: &str, _digest: &Digest) {}
}

/// Remembers nothing: every run checks everything.
pub struct NoJournal;

impl Journal for NoJournal {}
