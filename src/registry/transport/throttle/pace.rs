//! A service's own limits beside a host's throttle (GitHub's REST API, where GHCR deletes):
//! its pause, and the pace of the requests it counts dearest.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::{Event, Throttle, Waiting};

/// A service's own limits, beside the host's (GitHub's REST API, where GHCR deletes): a pause
/// every request to it waits out when it says to wait, and for the requests its secondary
/// limit counts dearest (DELETEs) a pace, at most so many a minute and so many in flight. Its
/// waits count as the host's ([`Throttle::paced`], [`Throttle::held`]).
pub struct Pace {
    /// Who says to wait, as waits name it (the API's host).
    service: String,
    limiter: DefaultDirectRateLimiter,
    slots: tokio::sync::Semaphore,
    paused_until: Mutex<Option<Instant>>,
    in_flight: u32,
    /// Places in the pace taken ahead ([`Throttle::prepay`]) and not yet used.
    prepaid: AtomicU32,
}

impl Pace {
    /// At most `per_minute` paced requests a minute, evenly spaced (no burst), and
    /// `in_flight` at once.
    pub fn new(service: &str, per_minute: NonZeroU32, in_flight: usize) -> Pace {
        Pace {
            service: service.to_string(),
            limiter: RateLimiter::direct(
                Quota::per_minute(per_minute).allow_burst(NonZeroU32::MIN),
            ),
            slots: tokio::sync::Semaphore::new(in_flight.max(1)),
            paused_until: Mutex::new(None),
            in_flight: u32::try_from(in_flight.max(1)).unwrap_or(u32::MAX),
            prepaid: AtomicU32::new(0),
        }
    }
}

impl Throttle {
    /// Wait out `pace`'s pause (a request to its service that is not paced).
    pub async fn held(&self, pace: &Pace) {
        let mut waiting = None;
        loop {
            let until = *pace.paused_until.lock().expect("pause lock");
            match until {
                Some(t) if t > Instant::now() => {
                    waiting.get_or_insert_with(|| Waiting::start(&self.counts.waits));
                    tokio::time::sleep_until(t.into()).await
                }
                _ => break,
            }
        }
    }

    /// Wait for a slot of `pace`, its pause and its rate; the slot is held until the permit
    /// returned is dropped (the request answered).
    pub async fn paced<'a>(&self, pace: &'a Pace) -> tokio::sync::SemaphorePermit<'a> {
        let permit = match pace.slots.try_acquire() {
            Ok(p) => p,
            Err(_) => {
                let _waiting = Waiting::start(&self.counts.waits);
                pace.slots
                    .acquire()
                    .await
                    .expect("pace slots are never closed")
            }
        };
        self.held(pace).await;
        let prepaid = pace
            .prepaid
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok();
        if !prepaid && pace.limiter.check().is_err() {
            let _waiting = Waiting::start(&self.counts.waits);
            pace.limiter.until_ready().await;
        }
        permit
    }

    /// Take the next place in `pace`'s rate now, waiting for it as a paced request would, for
    /// a request that must go out the moment the work before it ends (the DELETE after
    /// retention's look): the next [`Throttle::paced`] does not wait for the rate again (a
    /// pause the service asks for still holds it).
    pub async fn prepay(&self, pace: &Pace) {
        self.held(pace).await;
        if pace.limiter.check().is_err() {
            let _waiting = Waiting::start(&self.counts.waits);
            pace.limiter.until_ready().await;
        }
        // A place taken for a DELETE the look then called off stays for the next one; never
        // more than the requests in flight, so unused places make no burst.
        let cap = pace.in_flight;
        let _ = pace
            .prepaid
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some((n + 1).min(cap))
            });
    }

    /// `pace`'s service said to wait `duration` (a 403 or 429 with `Retry-After` or
    /// `x-ratelimit-reset`): every request to it waits, extending and never shortening a
    /// pause, and the wait is told when it extends one.
    pub fn pause_service(&self, pace: &Pace, duration: Duration, reason: &str) {
        let until = Instant::now() + duration;
        {
            let mut cur = pace.paused_until.lock().expect("pause lock");
            if cur.is_some_and(|c| c >= until) {
                return;
            }
            *cur = Some(until);
        }
        tracing::info!(service = %pace.service, seconds = duration.as_secs(), "{reason}");
        self.notify(Event::Waiting {
            registry: pace.service.clone(),
            duration,
            reason: reason.to_string(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 22: the DELETE after retention's look goes without waiting for the pace: its
    /// place was taken before the look; places taken and not used make no burst.
    #[tokio::test]
    async fn a_prepaid_place_lets_the_next_paced_request_go_at_once() {
        let t = Throttle::new("ghcr.example", None, None);
        let pace = Pace::new("api.example", NonZeroU32::new(300).unwrap(), 1);
        drop(t.paced(&pace).await);
        // The next place is 200 ms away: prepay waits for it, the request then does not.
        let start = Instant::now();
        t.prepay(&pace).await;
        assert!(start.elapsed() >= Duration::from_millis(150));
        let sent = Instant::now();
        drop(t.paced(&pace).await);
        assert!(sent.elapsed() < Duration::from_millis(50));
        // Places called off pile up to the slots at most (one here): two prepaid waits, then
        // the first request goes at once and the second waits for the pace again.
        t.prepay(&pace).await;
        t.prepay(&pace).await;
        drop(t.paced(&pace).await);
        let again = Instant::now();
        drop(t.paced(&pace).await);
        assert!(again.elapsed() >= Duration::from_millis(150));
    }
}
