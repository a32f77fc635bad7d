//! Per-host throttling: a governor rate limit (the plan's `rate_limit`), a shared pause that
//! a 429 (`Retry-After`) or an exhausted Docker Hub pull budget (`ratelimit-remaining`) sets
//! for every request to the host, and the events that explain each wait. [`Turns`] are places
//! in the budget taken ahead of the requests that use them, for a request that must go out the
//! moment the work before it ends (see `turns`). Beside it, a [`Pace`](pace::Pace) for a service with
//! limits of its own (GitHub's REST API): its pause, and a pace for the requests it counts
//! dearest. The copy engine never sleeps; requests wait here.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::HeaderMap;

pub mod pace;
mod turns;
pub use turns::Turns;

/// Waits longer than this are not sat out: the request fails with the registry's answer.
pub const MAX_WAIT: Duration = Duration::from_secs(3600);

/// Pull budgets shown within this time of each other are one count, the lowest of them (their
/// answers cross); one shown later replaces it.
pub const BUDGET_SETTLES: Duration = Duration::from_secs(1);

/// Used when a 429 carries no usable `Retry-After`.
pub const DEFAULT_429_WAIT: Duration = Duration::from_secs(10);

/// Something the registry layer wants people to know, without printing it itself.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Requests to `registry` wait `duration` because of `reason`.
    Waiting {
        registry: String,
        duration: Duration,
        reason: String,
    },
    /// A request failed and is tried again after `delay`.
    Retrying {
        registry: String,
        what: String,
        attempt: u32,
        delay: Duration,
        error: String,
    },
}

/// Receives [`Event`]s (the app forwards them to its reporter).
pub type Observer = Arc<dyn Fn(&Event) + Send + Sync>;

/// The plan's `rate_limit` for one host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub requests_per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

/// Which pause a request honours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A manifest GET: counts against Docker Hub's pull limit.
    Pull,
    Other,
}

/// What one registry host cost a run, for reports and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegistryStats {
    /// Requests sent (each retry and each 401 round trip counts).
    pub requests: u64,
    /// 429 answers.
    pub throttled: u64,
    /// Operations tried again after a transient failure here, uploads to another registry
    /// whose read from here failed included (never counted at that target).
    pub retries: u64,
    /// Wall-clock time during which at least one request waited for a rate limit or a
    /// pause (concurrent waits count once, so it never exceeds the run's time).
    pub waited: Duration,
    /// Requests by method and what they were about (`HEAD manifest`, `POST upload`, …).
    pub by_kind: BTreeMap<String, u64>,
    /// Whether it took a whole blob in one POST (`None`: no upload asked).
    pub single_post: Option<bool>,
    /// The pull budget the last response with `ratelimit-limit` / `ratelimit-remaining`
    /// showed (Docker Hub; `None`: no response carried them).
    pub pull_budget: Option<PullBudget>,
}

/// Docker Hub's pull budget as its manifest responses show it (`ratelimit-limit: 100;w=21600`,
/// `ratelimit-remaining: 76;w=21600`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PullBudget {
    /// Pulls a window allows.
    pub limit: u64,
    /// Pulls left in the current window.
    pub remaining: u64,
    /// The window, in seconds.
    pub window_seconds: u64,
}

#[derive(Default)]
struct Counts {
    by_kind: Mutex<BTreeMap<String, u64>>,
    requests: AtomicU64,
    throttled: AtomicU64,
    retries: AtomicU64,
    waits: Mutex<Waits>,
    /// The budget shown, and when it was last shown.
    budget: Mutex<Option<(PullBudget, Instant)>>,
}

/// The union of the intervals in which requests waited: a count of requests waiting now,
/// since when some have been, and the time of the intervals already closed.
struct Waits {
    waiting: usize,
    since: Instant,
    total: Duration,
}

impl Default for Waits {
    fn default() -> Self {
        Waits {
            waiting: 0,
            since: Instant::now(),
            total: Duration::ZERO,
        }
    }
}

impl Waits {
    fn now(&self) -> Duration {
        match self.waiting {
            0 => self.total,
            _ => self.total + self.since.elapsed(),
        }
    }
}

/// One request waiting; dropped when it stops (also when its future is dropped mid-wait).
struct Waiting<'a>(&'a Mutex<Waits>);

impl<'a> Waiting<'a> {
    fn start(waits: &'a Mutex<Waits>) -> Waiting<'a> {
        let mut w = waits.lock().expect("waits lock");
        if w.waiting == 0 {
            w.since = Instant::now();
        }
        w.waiting += 1;
        Waiting(waits)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut w = self.0.lock().expect("waits lock");
        w.waiting -= 1;
        if w.waiting == 0 {
            let elapsed = w.since.elapsed();
            w.total += elapsed;
        }
    }
}

/// What a request is, for counting: its method and the resource of the distribution API its
/// path names (`HEAD manifest`, `GET blob`, `POST upload`, `PATCH upload`, `GET tags`, …;
/// `other` for tokens and hosted APIs).
pub fn request_kind(method: &str, path: &str) -> String {
    let what = if path.contains("/blobs/uploads") {
        "upload"
    } else if path.contains("/blobs/") {
        "blob"
    } else if path.contains("/manifests/") {
        "manifest"
    } else if path.ends_with("/tags/list") {
        "tags"
    } else if path.ends_with("/_catalog") {
        "catalog"
    } else if path.contains("/referrers/") {
        "referrers"
    } else {
        "other"
    };
    format!("{method} {what}")
}

pub struct Throttle {
    /// Tells this throttle's [`Turns`] from another host's.
    id: u64,
    counts: Counts,
    host: String,
    limiter: Option<DefaultDirectRateLimiter>,
    /// Every request waits until then (a 429).
    paused_until: Mutex<Option<Instant>>,
    /// Manifest GETs also wait until then (pull budget spent).
    pulls_paused_until: Mutex<Option<Instant>>,
    observer: Option<Observer>,
}

impl Throttle {
    pub fn new(host: &str, rate: Option<RateLimit>, observer: Option<Observer>) -> Throttle {
        let limiter = rate.map(|r| {
            RateLimiter::direct(Quota::per_second(r.requests_per_second).allow_burst(r.burst))
        });
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Throttle {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            counts: Counts::default(),
            host: host.to_string(),
            limiter,
            paused_until: Mutex::new(None),
            pulls_paused_until: Mutex::new(None),
            observer,
        }
    }

    /// Count `event` against this host (a retry) and tell the observer.
    pub fn notify(&self, event: Event) {
        if matches!(event, Event::Retrying { .. }) {
            self.counts.retries.fetch_add(1, Ordering::Relaxed);
        }
        self.tell(&event);
    }

    /// Tell the observer of `event` without counting it against this host (it was another
    /// registry's doing).
    pub fn tell(&self, event: &Event) {
        if let Some(o) = &self.observer {
            o(event);
        }
    }

    /// Count a request sent (`kind`: see [`request_kind`]), and whether the registry
    /// answered 429.
    pub fn sent(&self, kind: String, throttled: bool) {
        self.counts.requests.fetch_add(1, Ordering::Relaxed);
        *self
            .counts
            .by_kind
            .lock()
            .expect("counts lock")
            .entry(kind)
            .or_default() += 1;
        if throttled {
            self.counts.throttled.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn stats(&self) -> RegistryStats {
        RegistryStats {
            requests: self.counts.requests.load(Ordering::Relaxed),
            throttled: self.counts.throttled.load(Ordering::Relaxed),
            retries: self.counts.retries.load(Ordering::Relaxed),
            waited: self.counts.waits.lock().expect("waits lock").now(),
            by_kind: self.counts.by_kind.lock().expect("counts lock").clone(),
            single_post: None,
            pull_budget: self.counts.budget.lock().expect("budget lock").map(|b| b.0),
        }
    }

    /// Wait until a request of this kind may go out. Only real waits are timed: a request
    /// that may go at once is not counted as waiting. Inside [`Turns::spend`] with turns of
    /// this host left, the request takes one instead of waiting for the rate limit.
    pub async fn ready(&self, kind: Kind) {
        let turns = Turns::current(self.id);
        let mut waiting = None;
        loop {
            let now = Instant::now();
            let mut until = *self.paused_until.lock().expect("pause lock");
            if kind == Kind::Pull {
                let pulls = *self.pulls_paused_until.lock().expect("pause lock");
                until = until.max(pulls);
            }
            match until {
                Some(t) if t > now => {
                    waiting.get_or_insert_with(|| Waiting::start(&self.counts.waits));
                    tokio::time::sleep_until(t.into()).await
                }
                _ => break,
            }
        }
        let prepaid = turns.as_ref().is_some_and(Turns::take);
        if let Some(l) = self.limiter.as_ref().filter(|_| !prepaid) {
            if l.check().is_err() {
                waiting.get_or_insert_with(|| Waiting::start(&self.counts.waits));
                l.until_ready().await;
            }
        }
        if let Some(t) = &turns {
            t.sent();
        }
    }

    /// Take `n` places in the rate budget now, waiting for each as a request would, for the
    /// requests sent later inside [`Turns::spend`]: they go without waiting again.
    pub async fn reserve(&self, n: u32) -> Turns {
        if let Some(l) = &self.limiter {
            let mut waiting = None;
            for _ in 0..n {
                if l.check().is_err() {
                    waiting.get_or_insert_with(|| Waiting::start(&self.counts.waits));
                    l.until_ready().await;
                }
            }
        }
        Turns::taken(Some(self.id), n)
    }

    /// Make every request to the host wait `duration` (extending, never shortening, a pause).
    pub fn pause(&self, duration: Duration, reason: &str) {
        self.pause_slot(&self.paused_until, duration, reason);
    }

    fn pause_slot(&self, slot: &Mutex<Option<Instant>>, duration: Duration, reason: &str) {
        let until = Instant::now() + duration;
        let extended = {
            let mut cur = slot.lock().expect("pause lock");
            if cur.is_some_and(|c| c >= until) {
                false
            } else {
                *cur = Some(until);
                true
            }
        };
        if extended {
            tracing::info!(registry = %self.host, seconds = duration.as_secs(), "{reason}");
            self.notify(Event::Waiting {
                registry: self.host.clone(),
                duration,
                reason: reason.to_string(),
            });
        }
    }

    /// Look at a response's rate-limit headers: when Docker Hub says the pull budget is
    /// spent, hold manifest GETs back for the time one pull takes to come back in its
    /// window, rather than running into 429s.
    /// The budget shown is kept for [`RegistryStats::pull_budget`].
    pub fn observe(&self, headers: &HeaderMap) {
        let Some((remaining, window)) = header_budget(headers, "ratelimit-remaining") else {
            return;
        };
        let limit = header_budget(headers, "ratelimit-limit").map(|(l, _)| l);
        if let Some(limit) = limit {
            let mut budget = self.counts.budget.lock().expect("budget lock");
            // Answers to requests in flight together come back in any order: the fewest
            // pulls left is the newest count of the same window, never more than there is.
            // A count shown a while later (pulls came back as the window moved on: a run
            // that waited for its budget) is taken as it is.
            let same = (*budget).filter(|(b, at)| {
                b.limit == limit && b.window_seconds == window && at.elapsed() < BUDGET_SETTLES
            });
            let shown = PullBudget {
                limit,
                remaining: same.map_or(remaining, |(b, _)| b.remaining.min(remaining)),
                window_seconds: window,
            };
            *budget = Some((shown, Instant::now()));
        }
        if remaining > 0 {
            return;
        }
        let limit = limit.filter(|l| *l > 0).unwrap_or(1);
        let wait = Duration::from_secs(window.div_ceil(limit).max(1));
        self.pause_slot(
            &self.pulls_paused_until,
            wait.min(MAX_WAIT),
            &format!("{} pull limit reached", self.host),
        );
    }
}

/// `ratelimit-remaining: 76;w=21600` -> (76, 21600).
fn header_budget(headers: &HeaderMap, name: &str) -> Option<(u64, u64)> {
    let v = headers.get(name)?.to_str().ok()?;
    let mut parts = v.split(';');
    let n = parts.next()?.trim().parse().ok()?;
    let w = parts
        .find_map(|p| p.trim().strip_prefix("w="))
        .and_then(|w| w.trim().parse().ok())
        .unwrap_or(21_600);
    Some((n, w))
}

/// Time until `x-ratelimit-reset` (Unix seconds), as GitHub's and Docker Hub's APIs send it.
pub fn until_reset(headers: &HeaderMap) -> Option<Duration> {
    let reset: u64 = headers
        .get("x-ratelimit-reset")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()?
        .as_secs();
    Some(Duration::from_secs(reset.saturating_sub(now)))
}

/// `Retry-After`: seconds or an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn parses_retry_after_and_budgets() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("120"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(120)));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(90));
        h.insert("retry-after", HeaderValue::from_str(&later).unwrap());
        let d = retry_after(&h).unwrap();
        assert!(
            d <= Duration::from_secs(90) && d >= Duration::from_secs(85),
            "{d:?}"
        );
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);

        let mut h = HeaderMap::new();
        h.insert(
            "ratelimit-remaining",
            HeaderValue::from_static("76;w=21600"),
        );
        assert_eq!(header_budget(&h, "ratelimit-remaining"), Some((76, 21600)));
        h.insert("ratelimit-remaining", HeaderValue::from_static("junk"));
        assert_eq!(header_budget(&h, "ratelimit-remaining"), None);
    }

    /// Issue 25 part 2: the budget a manifest response shows is kept for the plan.
    #[test]
    fn the_budget_shown_is_kept() {
        let t = Throttle::new("docker.io", None, None);
        assert_eq!(t.stats().pull_budget, None);
        let mut h = HeaderMap::new();
        h.insert("ratelimit-limit", HeaderValue::from_static("100;w=21600"));
        h.insert(
            "ratelimit-remaining",
            HeaderValue::from_static("76;w=21600"),
        );
        t.observe(&h);
        let shown = PullBudget {
            limit: 100,
            remaining: 76,
            window_seconds: 21600,
        };
        assert_eq!(t.stats().pull_budget, Some(shown));
    }

    #[tokio::test]
    async fn a_spent_pull_budget_holds_pulls_back_and_says_so() {
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let t = Throttle::new(
            "docker.io",
            None,
            Some(Arc::new(move |e: &Event| {
                sink.lock().unwrap().push(e.clone())
            })),
        );
        let mut h = HeaderMap::new();
        h.insert("ratelimit-limit", HeaderValue::from_static("100;w=21600"));
        h.insert("ratelimit-remaining", HeaderValue::from_static("0;w=21600"));
        t.observe(&h);
        let got = events.lock().unwrap().clone();
        assert_eq!(
            got,
            vec![Event::Waiting {
                registry: "docker.io".into(),
                duration: Duration::from_secs(216),
                reason: "docker.io pull limit reached".into()
            }]
        );
        // Other requests are not held back.
        tokio::time::timeout(Duration::from_millis(100), t.ready(Kind::Other))
            .await
            .expect("blob requests go on");
        assert!(
            tokio::time::timeout(Duration::from_millis(100), t.ready(Kind::Pull))
                .await
                .is_err()
        );
    }

    /// Issue 21 (what was seen, 6): `wait_seconds` added up concurrent waits (398 s in a 29 s
    /// run). It is the time during which some request waited: never more than the run took.
    #[tokio::test]
    async fn concurrent_waits_count_once() {
        let t = Throttle::new("r", None, None);
        let start = Instant::now();
        t.pause(Duration::from_millis(300), "429");
        futures::future::join_all((0..20).map(|_| t.ready(Kind::Other))).await;
        let waited = t.stats().waited;
        assert!(
            waited >= Duration::from_millis(250) && waited <= start.elapsed(),
            "{waited:?} of {:?}",
            start.elapsed()
        );
        // A later wait adds its own time; time in between with no one waiting does not count.
        tokio::time::sleep(Duration::from_millis(200)).await;
        t.pause(Duration::from_millis(100), "429");
        futures::future::join_all((0..5).map(|_| t.ready(Kind::Other))).await;
        let more = t.stats().waited - waited;
        assert!(
            more >= Duration::from_millis(80) && more < Duration::from_millis(250),
            "{more:?}"
        );
        // A request that finds nothing to wait for adds nothing.
        t.ready(Kind::Other).await;
        assert_eq!(t.stats().waited, waited + more);
    }

    /// Issue 22: a pace spaces its requests evenly (no burst), holds them to its slots, and
    /// a pause its service asks for holds every request to it, told once per extension.
    #[tokio::test]
    async fn a_pace_spaces_requests_and_its_pause_holds_them_all() {
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let observer: Observer = Arc::new(move |e: &Event| sink.lock().unwrap().push(e.clone()));
        let t = Throttle::new("ghcr.example", None, Some(observer));
        let pace = pace::Pace::new("api.example", NonZeroU32::new(600).unwrap(), 1);
        let start = Instant::now();
        for _ in 0..4 {
            drop(t.paced(&pace).await);
        }
        // One at once, then three at 100 ms intervals.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(290), "{took:?}");
        // One slot: a second paced request waits for the first to be answered.
        let held = t.paced(&pace).await;
        let second = tokio::time::timeout(Duration::from_millis(250), t.paced(&pace)).await;
        assert!(second.is_err(), "the only slot is held");
        drop(held);
        t.pause_service(&pace, Duration::from_millis(300), "API rate limit");
        t.pause_service(&pace, Duration::from_millis(100), "API rate limit");
        let start = Instant::now();
        t.held(&pace).await;
        assert!(start.elapsed() >= Duration::from_millis(250));
        let told = events.lock().unwrap().clone();
        assert_eq!(told.len(), 1, "{told:?}");
        assert!(matches!(&told[0], Event::Waiting { registry, .. } if registry == "api.example"));
        assert!(t.stats().waited >= Duration::from_millis(500));
    }

    #[tokio::test]
    async fn rate_limit_spaces_requests() {
        let t = Throttle::new(
            "r",
            Some(RateLimit {
                requests_per_second: NonZeroU32::new(20).unwrap(),
                burst: NonZeroU32::new(1).unwrap(),
            }),
            None,
        );
        let start = Instant::now();
        for _ in 0..5 {
            t.ready(Kind::Other).await;
        }
        // 1 immediately, then 4 at 50 ms intervals.
        assert!(
            start.elapsed() >= Duration::from_millis(190),
            "{:?}",
            start.elapsed()
        );
    }
}
