//! Retries with exponential backoff and jitter, for the failures that pass: connection
//! resets and timeouts, truncated or corrupted bodies, stalls, 408/429/5xx. Bounded, and
//! explained through the throttle's observer. The registry layer sleeps here so that the copy
//! engine never does.

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use super::throttle::{Event, Throttle};
use crate::registry::error::RegistryError;

/// Tries after the first (regclient uses 5 too).
pub const DEFAULT_RETRIES: u32 = 5;
/// First backoff; doubles each time up to [`MAX_BACKOFF`].
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(250);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Would trying again plausibly succeed?
pub fn is_transient(e: &RegistryError) -> bool {
    match e {
        RegistryError::Transport { .. }
        | RegistryError::Stalled { .. }
        | RegistryError::TooSlow { .. }
        | RegistryError::DigestMismatch { .. }
        | RegistryError::SizeMismatch { .. } => true,
        RegistryError::Status { status, .. } => {
            matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
                || e.has_code(crate::registry::error_body::code::TOOMANYREQUESTS)
        }
        RegistryError::SourceFailed { source } => is_transient(source),
        _ => false,
    }
}

/// The backoff before retry `attempt` (1-based): exponential, capped, with "equal jitter"
/// (half fixed, half random) so many clients do not retry in lockstep.
pub fn backoff(attempt: u32) -> Duration {
    let exp = INITIAL_BACKOFF.saturating_mul(1 << attempt.saturating_sub(1).min(16));
    let capped = exp.min(MAX_BACKOFF);
    let half = capped / 2;
    // RandomState is seeded randomly per instance: enough randomness for jitter.
    let r = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    half + Duration::from_nanos(r % (half.as_nanos() as u64 + 1))
}

/// Run `op` until it succeeds, fails for good, or `retries` retries are spent.
pub async fn retrying<T, F, Fut>(
    throttle: &Throttle,
    registry: &str,
    what: &str,
    retries: u32,
    op: F,
) -> Result<T, RegistryError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, RegistryError>>,
{
    retrying_from(throttle, registry, what, retries, None, op).await
}

/// [`retrying`] for an upload whose bytes come from `origin`. A failure of the source
/// ([`RegistryError::SourceFailed`]) is the source's: its registry counts the retry and is
/// named in the event. It is never counted against this registry, so a flaky source is no
/// pushback from the target.
pub async fn retrying_from<T, F, Fut>(
    throttle: &Throttle,
    registry: &str,
    what: &str,
    retries: u32,
    origin: Option<&dyn Origin>,
    mut op: F,
) -> Result<T, RegistryError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, RegistryError>>,
{
    let mut attempt = 0;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < retries && is_transient(&e) => {
                attempt += 1;
                let delay = backoff(attempt);
                tracing::debug!(%registry, %what, attempt, error = %e, "retrying");
                let event = |registry: &str, what: String| Event::Retrying {
                    registry: registry.to_string(),
                    what,
                    attempt,
                    delay,
                    error: crate::error::chain(&e),
                };
                match (&e, origin) {
                    (RegistryError::SourceFailed { .. }, Some(o)) => {
                        let source = o.name();
                        let event = event(source, format!("{what} to {registry}"));
                        if !o.charge_retry(&event) {
                            throttle.tell(&event);
                        }
                    }
                    (RegistryError::SourceFailed { .. }, None) => {
                        throttle.tell(&event(registry, what.to_string()));
                    }
                    _ => throttle.notify(event(registry, what.to_string())),
                }
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Where the bytes of an upload come from, as the retry policy sees it: the registry that a
/// failure of the source is charged to ([`BlobOrigin`](crate::registry::BlobOrigin) is one).
/// A trait so that this floor does not point back up at the registry trait.
pub trait Origin: Send + Sync {
    /// The source registry's name, for the events.
    fn name(&self) -> &str;
    /// Count `event` (a retry the source caused) against the source; `false` when it keeps
    /// no count and the target's throttle only tells the observer.
    fn charge_retry(&self, event: &Event) -> bool;
}

/// One registry's retry policy ([`retrying`] with its throttle, name and `retries`): every
/// operation of the HTTP client goes through it, uploads and the hosted APIs' listings too.
#[derive(Clone)]
pub struct RetryPolicy {
    throttle: Arc<Throttle>,
    registry: String,
    retries: u32,
}

impl RetryPolicy {
    pub fn new(registry: &str, throttle: Arc<Throttle>, retries: u32) -> RetryPolicy {
        RetryPolicy {
            throttle,
            registry: registry.to_string(),
            retries,
        }
    }

    /// Retries after the first try (also what bounds the rate-limit waits of the hosted APIs).
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// Run `op` until it succeeds, fails for good, or the retries are spent; `what` names it
    /// in the [`Event::Retrying`] events.
    pub async fn run<T, F, Fut>(&self, what: &str, op: F) -> Result<T, RegistryError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, RegistryError>>,
    {
        retrying(&self.throttle, &self.registry, what, self.retries, op).await
    }

    /// [`RetryPolicy::run`] for an upload whose bytes come from `origin`: failures of the
    /// source are charged to it (see [`retrying_from`]).
    pub async fn run_from<T, F, Fut>(
        &self,
        what: &str,
        origin: Option<&dyn Origin>,
        op: F,
    ) -> Result<T, RegistryError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, RegistryError>>,
    {
        let (throttle, registry) = (&self.throttle, &self.registry);
        retrying_from(throttle, registry, what, self.retries, origin, op).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::BlobOrigin;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempt in 1..40 {
            let b = backoff(attempt);
            let nominal = INITIAL_BACKOFF
                .saturating_mul(1 << (attempt - 1).min(16))
                .min(MAX_BACKOFF);
            assert!(b >= nominal / 2 && b <= nominal, "{attempt}: {b:?}");
        }
    }

    #[test]
    fn classification() {
        let status = |s| RegistryError::Status {
            method: "GET".into(),
            url: "u".into(),
            status: s,
            errors: Vec::new(),
            service: crate::registry::error_body::Service::GitHubApi,
        };
        assert!(is_transient(&status(503)));
        assert!(is_transient(&status(429)));
        assert!(!is_transient(&status(404)));
        assert!(!is_transient(&status(401)));
        // The code says it whatever the status.
        let mut slow = status(403);
        if let RegistryError::Status { errors, .. } = &mut slow {
            *errors = crate::registry::error_body::OciError::decode(
                br#"{"errors":[{"code":"TOOMANYREQUESTS"}]}"#,
            );
        }
        assert!(is_transient(&slow));
        assert!(!is_transient(&RegistryError::NotFound {
            what: "x".into(),
            url: "u".into()
        }));
    }

    /// Issue 21 (what was seen, 6): a failure of an upload's source was counted as a retry of
    /// the target, so a flaky source shrank the target's window.
    #[tokio::test]
    async fn a_failure_of_the_source_is_not_counted_against_the_target() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = seen.clone();
        let observer: super::super::throttle::Observer =
            Arc::new(move |e: &Event| sink.lock().unwrap().push(e.clone()));
        let target = Throttle::new("dst", None, Some(observer));
        let origin = BlobOrigin {
            registry: Arc::new(crate::registry::memory::MemoryRegistry::new("src")),
            repo: "a".into(),
        };
        let calls = AtomicU32::new(0);
        let r = retrying_from(&target, "dst", "upload of x", 5, Some(&origin), || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 => Err(RegistryError::SourceFailed {
                    source: Box::new(RegistryError::Stalled {
                        url: "u".into(),
                        seconds: 1,
                    }),
                }),
                1 => Err(RegistryError::Stalled {
                    url: "u".into(),
                    seconds: 1,
                }),
                _ => Ok(()),
            }
        })
        .await;
        assert!(r.is_ok());
        // The target's own stall counts; the source's failure is told, named after the source.
        assert_eq!(target.stats().retries, 1);
        let seen = seen.lock().unwrap();
        let names: Vec<(&str, &str)> = seen
            .iter()
            .map(|e| match e {
                Event::Retrying { registry, what, .. } => (registry.as_str(), what.as_str()),
                Event::Waiting { .. } => ("", ""),
            })
            .collect();
        assert_eq!(
            names,
            [("src", "upload of x to dst"), ("dst", "upload of x")]
        );
    }

    #[tokio::test]
    async fn retries_transient_failures_then_gives_up() {
        let t = Throttle::new("r", None, None);
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = retrying(&t, "r", "op", 2, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(RegistryError::Stalled {
                url: "u".into(),
                seconds: 1,
            })
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        let calls = AtomicU32::new(0);
        let r = retrying(&t, "r", "op", 5, || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 1 {
                Err(RegistryError::Stalled {
                    url: "u".into(),
                    seconds: 1,
                })
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!(r.unwrap(), 7);
    }
}
