//! What the engine records and consults across runs. The SQLite checkpoint implements it
//! (in `app`, over `state`); [`NoJournal`] remembers nothing. Through this trait finished work
//! is not redone: an immutable tag recorded done is not asked about again, a mutable one costs
//! one HEAD at the source, blobs already sent are mounted, and a half-finished chunked upload
//! continues where the registry says it stands.

use super::item::{Endpoint, Item};
use super::outcome::Outcome;
use crate::reference::Digest;
use crate::registry::{Parked, UploadProgress};

/// What the checkpoint holds for an item an earlier run finished.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// The source digest it had.
    pub digest: Digest,
    /// The digest the target got instead, for a rewritten index.
    pub rewritten: Option<Digest>,
    /// Verified at the target (copied, or found there whole) less than `recheck_after` ago,
    /// and not under `--recheck`. A record that is not fresh is trusted for nothing: its
    /// source is asked again (a re-pushed tag is copied again) and its target is checked
    /// whole (a child or layer someone deleted there is put back).
    pub fresh: bool,
}

pub trait Journal: Send + Sync {
    /// What an earlier run recorded for this very item (same source, same reference, same
    /// platforms), if it finished it; never [`Recorded::fresh`] under `--recheck`.
    fn recorded(&self, _item: &Item) -> Option<Recorded> {
        None
    }

    /// Does the item's source never change: a digest, or a tag matching `immutable_tags`?
    /// A fresh record of one is trusted without asking either registry; once it is not fresh,
    /// the source is asked like any other's (release tags do get re-pushed).
    fn immutable(&self, _item: &Item) -> bool {
        false
    }

    fn item_started(&self, _item: &Item) {}

    fn item_finished(&self, _item: &Item, _outcome: &Outcome) {}

    /// A repository of target registry `registry` known to hold this blob.
    fn blob_location(&self, _registry: &str, _digest: &Digest) -> Option<String> {
        None
    }

    fn blob_present(&self, _registry: &str, _repo: &str, _digest: &Digest, _size: u64) {}

    /// Has any run recorded writing into `repo` of target registry `registry` (an item, a
    /// blob, an upload session)? A repository nothing recorded and the registry lists no tags
    /// of holds only what this run puts there.
    fn knows_target(&self, _registry: &str, _repo: &str) -> bool {
        false
    }

    /// An upload session an earlier run left open for this blob, with the hash of the bytes
    /// it holds.
    fn upload_session(&self, _registry: &str, _repo: &str, _digest: &Digest) -> Option<Parked> {
        None
    }

    fn upload_progress(&self, _transfer: &Transfer<'_>, _progress: &UploadProgress) {}

    /// The digest a source tag pointed to when it was read.
    fn tag_seen(&self, _source: &Endpoint, _tag: &str, _digest: &Digest) {}
}

/// One blob on its way from a source repository to a target one.
#[derive(Clone, Copy)]
pub struct Transfer<'a> {
    pub source: &'a Endpoint,
    pub target: &'a Endpoint,
    pub digest: &'a Digest,
    pub size: u64,
}

/// Remembers nothing: every run checks everything.
pub struct NoJournal;

impl Journal for NoJournal {}
