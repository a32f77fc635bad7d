//! Turns: places in one host's rate budget taken ahead of the requests that use them.
//!
//! A request waits for its host's `rate_limit` right before it is sent ([`Throttle::ready`]).
//! Some requests must go out the moment the work before them ends: a retention DELETE right
//! after the look that decided it (`crate::retention::apply`), where every wait between the
//! two is time for another writer to tag what is about to go. [`Throttle::reserve`] takes
//! their places first, waiting as a request would; requests sent inside [`Turns::spend`]
//! then use those places instead of waiting again. The requests in between (the look) wait
//! for places of their own as usual, so the host never sees more than its budget, counted
//! from when each place was taken: the DELETE's place was taken before the look, so it may
//! follow the look's last request sooner than `1 / requests_per_second`, never more often
//! than the budget over time. A 429 pause still holds every request, turns or not: the
//! registry asked for it.
//!
//! The turns of a task are carried in a task-local ([`Turns::spend`]), so no operation of
//! the [`crate::registry::Registry`] trait needs another parameter, and a request to another
//! host (another throttle) never spends them.
//!
//! [`Throttle::ready`]: super::Throttle::ready
//! [`Throttle::reserve`]: super::Throttle::reserve

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

tokio::task_local! {
    /// The turns requests of this task spend (see [`Turns::spend`]).
    static SPENDING: Turns;
}

/// Places taken in one host's rate budget ([`super::Throttle::reserve`]), or none
/// ([`Turns::none`], where nothing is rate-limited). Cloning shares them.
#[derive(Clone, Debug)]
pub struct Turns(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    /// The throttle they were taken from; `None`: no throttle's (nothing spends them).
    throttle: Option<u64>,
    left: AtomicU32,
    /// When a request inside [`Turns::spend`] was last let go by that throttle.
    sent: Mutex<Option<Instant>>,
}

impl Turns {
    /// No turns: for a registry that sends nothing through a throttle (a layout, an overlay).
    pub fn none() -> Turns {
        Turns::taken(None, 0)
    }

    /// `n` places taken from the throttle `id`.
    pub(super) fn taken(throttle: Option<u64>, n: u32) -> Turns {
        Turns(Arc::new(Inner {
            throttle,
            left: AtomicU32::new(n),
            sent: Mutex::new(None),
        }))
    }

    /// Run `work`, its requests to this host using these places instead of waiting for the
    /// rate limit (as long as places are left).
    pub async fn spend<F: Future>(&self, work: F) -> F::Output {
        SPENDING.scope(self.clone(), work).await
    }

    /// When the last request sent inside [`Turns::spend`] was let go by the host's throttle;
    /// `None` when no request went through it (a registry without one, or a hosted API's
    /// own client).
    pub fn sent_at(&self) -> Option<Instant> {
        *self.0.sent.lock().expect("turns lock")
    }

    /// The turns the current task spends, when they are the throttle `id`'s.
    pub(super) fn current(id: u64) -> Option<Turns> {
        SPENDING
            .try_with(|t| (t.0.throttle == Some(id)).then(|| t.clone()))
            .ok()
            .flatten()
    }

    /// Use one place, if one is left: true when the request need not wait for the rate limit.
    pub(super) fn take(&self) -> bool {
        self.0
            .left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
    }

    /// A request inside [`Turns::spend`] is let go now.
    pub(super) fn sent(&self) {
        *self.0.sent.lock().expect("turns lock") = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;
    use std::time::Duration;

    use super::super::{Kind, RateLimit, Throttle};
    use super::*;

    fn paced(per_second: u32) -> Throttle {
        Throttle::new(
            "r",
            Some(RateLimit {
                requests_per_second: NonZeroU32::new(per_second).unwrap(),
                burst: NonZeroU32::new(1).unwrap(),
            }),
            None,
        )
    }

    /// Issue 22: the request a turn was taken for goes out at once after the work between,
    /// which waits for places of its own.
    #[tokio::test]
    async fn a_reserved_request_goes_without_waiting_again() {
        let t = paced(10);
        let turn = t.reserve(1).await;
        let look = Instant::now();
        t.ready(Kind::Other).await; // the look: waits its 100 ms
        assert!(
            look.elapsed() >= Duration::from_millis(80),
            "{:?}",
            look.elapsed()
        );
        let before = Instant::now();
        turn.spend(t.ready(Kind::Other)).await;
        assert!(
            before.elapsed() < Duration::from_millis(50),
            "{:?}",
            before.elapsed()
        );
        let sent = turn.sent_at().expect("the request was let go");
        assert!(sent >= before);
        // The turn is spent: the next request in the scope waits as any would.
        let again = Instant::now();
        turn.spend(t.ready(Kind::Other)).await;
        assert!(
            again.elapsed() >= Duration::from_millis(80),
            "{:?}",
            again.elapsed()
        );
        assert!(
            turn.sent_at().unwrap() > sent,
            "the last request sent is the one told"
        );
    }

    #[tokio::test]
    async fn turns_of_another_host_or_none_change_nothing() {
        let (a, b) = (paced(10), paced(10));
        let turn = a.reserve(1).await;
        b.ready(Kind::Other).await;
        let start = Instant::now();
        turn.spend(b.ready(Kind::Other)).await;
        assert!(
            start.elapsed() >= Duration::from_millis(80),
            "b's own budget"
        );
        assert_eq!(turn.sent_at(), None, "b never spends a's turns");
        let none = Turns::none();
        none.spend(async {}).await;
        assert_eq!(none.sent_at(), None);
        // Outside any scope a request waits as before.
        assert!(Turns::current(0).is_none());
    }
}
