//! The fake's rate limits: the primary budget per caller and hour, and GitHub's secondary
//! limit on DELETEs.

use super::*;

/// The primary limit, a fixed window, and the secondary (DELETE) limit, a sliding one: at
/// most `deletes` DELETEs accepted in any `delete_window`. Counters are per login
/// (unauthenticated requests count under "").
pub(super) struct Limits {
    pub(super) requests: u64,
    pub(super) deletes: u64,
    pub(super) window: Duration,
    pub(super) delete_window: Duration,
    /// What a DELETE over the secondary limit is answered (403 or 429).
    pub(super) secondary_status: StatusCode,
    pub(super) start: Instant,
    pub(super) start_wall: SystemTime,
    pub(super) used: HashMap<String, u64>,
    /// When each accepted DELETE arrived, per login, within the last `delete_window`.
    pub(super) deletes_at: HashMap<String, std::collections::VecDeque<Instant>>,
}

impl Limits {
    pub(super) fn roll(&mut self) {
        if self.start.elapsed() >= self.window {
            self.start = Instant::now();
            self.start_wall = SystemTime::now();
            self.used.clear();
        }
    }

    /// Take one DELETE of `login` under the secondary limit: `None` when accepted, else the
    /// whole seconds until the oldest DELETE in the window leaves it (at least 1).
    pub(super) fn take_delete(&mut self, login: &str) -> Option<u64> {
        let now = Instant::now();
        let window = self.delete_window;
        let seen = self.deletes_at.entry(login.to_string()).or_default();
        while seen
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            seen.pop_front();
        }
        if (seen.len() as u64) < self.deletes {
            seen.push_back(now);
            return None;
        }
        let left = window.saturating_sub(now.duration_since(seen[0]));
        Some((left.as_secs() + u64::from(left.subsec_nanos() > 0)).max(1))
    }

    /// Unix seconds at which the current window ends (rounded up).
    pub(super) fn reset_unix(&self) -> u64 {
        let end = (self.start_wall + self.window)
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        end.as_secs() + u64::from(end.subsec_nanos() > 0)
    }

    /// Whole seconds until the window ends, at least 1.
    pub(super) fn retry_after(&self) -> u64 {
        let left = self.window.saturating_sub(self.start.elapsed());
        (left.as_secs() + u64::from(left.subsec_nanos() > 0)).max(1)
    }
}
