//! How many blob transfers go to one target registry at once: a window that finds what the
//! link carries, the way TCP's congestion control does (additive increase, multiplicative
//! decrease). After each round (as many transfers finished as the window is wide) it grows
//! by one while the round's throughput rose and nothing pushed back; a pushback (a 429, a
//! retried 5xx or timeout of the target) halves it. A failed read of the source is no
//! pushback: the registry layer counts it at the source. It stays between 1 and its bound,
//! the plan's `concurrency`.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A throughput this much higher than the last round's counts as a rise.
const RISE: f64 = 1.05;

/// One target registry's window.
pub(super) struct Window {
    gate: Arc<Semaphore>,
    max: usize,
    /// Permits to take out of circulation as they come back (after a decrease).
    owed: AtomicUsize,
    round: Mutex<Round>,
}

/// The round in progress, and what the window is.
struct Round {
    size: usize,
    started: Instant,
    done: usize,
    bytes: u64,
    pushback: bool,
    /// The last finished round's throughput (bytes per second).
    last: Option<f64>,
    /// The widest the window has been.
    peak: usize,
}

/// A transfer's place in the window; given back when dropped.
pub(super) struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    window: Arc<Window>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        let owed = self
            .window
            .owed
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
        if owed.is_ok() {
            permit.forget();
        }
    }
}

impl Window {
    /// A window of `start` transfers that may grow to `max` (`start == max`: fixed).
    pub(super) fn new(start: usize, max: usize) -> Arc<Window> {
        let max = max.max(1);
        let start = start.clamp(1, max);
        Arc::new(Window {
            gate: Arc::new(Semaphore::new(start)),
            max,
            owed: AtomicUsize::new(0),
            round: Mutex::new(Round {
                size: start,
                started: Instant::now(),
                done: 0,
                bytes: 0,
                pushback: false,
                last: None,
                peak: start,
            }),
        })
    }

    /// Wait for a place in the window.
    pub(super) async fn enter(self: &Arc<Self>) -> Slot {
        let permit = self
            .gate
            .clone()
            .acquire_owned()
            .await
            .expect("window semaphore is never closed");
        Slot {
            permit: Some(permit),
            window: self.clone(),
        }
    }

    /// A transfer of `bytes` finished; `pushback`: the registry throttled or failed it on the
    /// way (a 429, a retried 5xx or timeout).
    pub(super) fn finished(&self, bytes: u64, pushback: bool) {
        let mut r = self.round.lock().expect("window lock");
        if pushback && !r.pushback {
            // Once per round: the transfers in flight all saw the same congestion.
            r.pushback = true;
            let half = (r.size / 2).max(1);
            self.owed.fetch_add(r.size - half, Relaxed);
            r.size = half;
            return;
        }
        r.done += 1;
        r.bytes += bytes;
        if r.done < r.size {
            return;
        }
        let rate = r.bytes as f64 / r.started.elapsed().as_secs_f64().max(1e-3);
        let rose = r.last.is_none_or(|last| rate > last * RISE);
        if rose && !r.pushback && r.size < self.max {
            r.size += 1;
            r.peak = r.peak.max(r.size);
            self.grow();
        }
        r.last = Some(rate);
        r.done = 0;
        r.bytes = 0;
        r.pushback = false;
        r.started = Instant::now();
    }

    /// One more place: a permit owed back is forgiven first.
    fn grow(&self) {
        let forgiven = self
            .owed
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
            .is_ok();
        if !forgiven {
            self.gate.add_permits(1);
        }
    }

    /// The window now, and the widest it has been.
    pub(super) fn size(&self) -> (usize, usize) {
        let r = self.round.lock().expect("window lock");
        (r.size, r.peak)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn grows_by_one_per_round_while_throughput_rises() {
        let w = Window::new(2, 4);
        // First round: no earlier rate to compare with, so it grows.
        w.finished(100, false);
        w.finished(100, false);
        assert_eq!(w.size(), (3, 3));
        // A round much faster than the first grows it again.
        std::thread::sleep(std::time::Duration::from_millis(5));
        for _ in 0..3 {
            w.finished(1_000_000_000, false);
        }
        assert_eq!(w.size().0, 4);
        // The bound holds.
        for _ in 0..4 {
            w.finished(10_000_000_000_000, false);
        }
        assert_eq!(w.size(), (4, 4));
        assert_eq!(w.gate.available_permits(), 4);
    }

    #[tokio::test]
    async fn a_flat_round_holds_and_pushback_halves_once_per_round() {
        let w = Window::new(4, 8);
        for _ in 0..4 {
            w.finished(0, false);
        }
        assert_eq!(w.size().0, 5, "the first round grows");
        for _ in 0..5 {
            w.finished(0, false);
        }
        assert_eq!(w.size().0, 5, "no rise in throughput: hold");
        let held: Vec<Slot> = futures::future::join_all((0..5).map(|_| w.enter())).await;
        w.finished(0, true);
        w.finished(0, true);
        assert_eq!(w.size().0, 2, "halved once for the round");
        drop(held);
        assert_eq!(w.gate.available_permits(), 2, "three places taken back");
    }

    #[tokio::test]
    async fn a_fixed_window_never_moves() {
        let w = Window::new(4, 4);
        for _ in 0..20 {
            w.finished(1 << 40, false);
        }
        assert_eq!(w.size(), (4, 4));
    }
}
