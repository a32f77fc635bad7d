//! What is known of a registry's single-request uploads during a run (taken, refused, or
//! being asked by one small blob at a time), and the sessions declined mounts opened: state
//! the client keeps and [`single`](super::single) reads and answers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

use url::Url;

use crate::reference::Digest;

/// Blobs up to this size ask a registry whether it takes single-request uploads: what it
/// drops when it does not is at most this much, once.
pub const PROBE_MAX: u64 = 256 * 1024;

/// What ferry knows of a registry's single-request uploads.
#[derive(Debug, Default)]
pub(super) struct SinglePost(AtomicU8);

const UNKNOWN: u8 = 0;
const ASKING: u8 = 1;
const TAKEN: u8 = 2;
const REFUSED: u8 = 3;

impl SinglePost {
    /// Should an upload of `size` bytes try the single request? While nothing is known, the
    /// one that may ask holds the question until [`Asking::answer`] (or its drop).
    pub(super) fn try_for(&self, size: u64) -> Option<Asking<'_>> {
        match self.0.load(Ordering::Acquire) {
            TAKEN => Some(Asking {
                state: self,
                probe: false,
            }),
            UNKNOWN if size <= PROBE_MAX => self
                .0
                .compare_exchange(UNKNOWN, ASKING, Ordering::AcqRel, Ordering::Acquire)
                .ok()
                .map(|_| Asking {
                    state: self,
                    probe: true,
                }),
            _ => None,
        }
    }

    /// Whether the registry took a single-request upload (`Some(false)`: refused it).
    pub(super) fn known(&self) -> Option<bool> {
        match self.0.load(Ordering::Acquire) {
            TAKEN => Some(true),
            REFUSED => Some(false),
            _ => None,
        }
    }
}

/// One try of a single-request upload; unanswered (an error that says nothing about the
/// registry), it gives the question back.
pub(super) struct Asking<'a> {
    state: &'a SinglePost,
    pub(super) probe: bool,
}

impl Asking<'_> {
    pub(super) fn answer(self, taken: bool) {
        let to = if taken { TAKEN } else { REFUSED };
        self.state.0.store(to, Ordering::Release);
        std::mem::forget(self);
    }
}

impl Drop for Asking<'_> {
    fn drop(&mut self) {
        if self.probe {
            let _ =
                self.state
                    .0
                    .compare_exchange(ASKING, UNKNOWN, Ordering::AcqRel, Ordering::Acquire);
        }
    }
}

/// Sessions declined mounts opened, by (repository, digest), for the upload that follows.
pub(super) type Declined = Mutex<HashMap<(String, Digest), Url>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_small_blob_asks_at_a_time_and_the_answer_is_kept() {
        let s = SinglePost::default();
        assert!(
            s.try_for(PROBE_MAX + 1).is_none(),
            "a large blob never asks"
        );
        let asking = s.try_for(1024).expect("the first small blob asks");
        assert!(s.try_for(1024).is_none(), "one question at a time");
        assert_eq!(s.known(), None);
        asking.answer(true);
        assert_eq!(s.known(), Some(true));
        let large = s.try_for(16 * 1024 * 1024).expect("once taken, every size");
        assert!(!large.probe);
        drop(large);
        assert_eq!(s.known(), Some(true), "an unanswered try changes nothing");
    }

    #[test]
    fn an_unanswered_question_is_asked_again_and_a_refusal_is_final() {
        let s = SinglePost::default();
        drop(s.try_for(10).expect("asks"));
        assert_eq!(s.known(), None, "a 5xx or a 401 tells nothing");
        s.try_for(10).expect("asked again").answer(false);
        assert_eq!(s.known(), Some(false));
        assert!(s.try_for(10).is_none());
    }
}
