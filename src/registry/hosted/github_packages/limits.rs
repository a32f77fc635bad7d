//! How long an answer of GitHub's REST API says to wait, when it is a rate limit (issue 22:
//! GHCR's deletions run into GitHub's secondary limit; its primary limit applies to every
//! request).

use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::StatusCode;

use crate::registry::transport::throttle;

/// How long GitHub's answer says to wait, when it is a rate limit (its documented rule, for
/// the primary and the secondary limit alike): a 403 or 429 with `Retry-After` waits that
/// long; with `x-ratelimit-remaining: 0`, until `x-ratelimit-reset` (at least 1 s); a 429 with
/// neither, a minute. Any other 403 is no rate limit (a permission), and `x-ratelimit-reset`
/// alone (sent with every answer) says nothing about this one.
pub(super) fn rate_limited(status: StatusCode, headers: &HeaderMap) -> Option<Duration> {
    if !matches!(
        status,
        StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS
    ) {
        return None;
    }
    if let Some(d) = throttle::retry_after(headers) {
        return Some(d.min(throttle::MAX_WAIT));
    }
    let remaining = headers.get("x-ratelimit-remaining");
    let spent = remaining.and_then(|v| v.to_str().ok()) == Some("0");
    match throttle::until_reset(headers) {
        Some(d) if spent => Some(d.max(Duration::from_secs(1)).min(throttle::MAX_WAIT)),
        _ if spent || status == StatusCode::TOO_MANY_REQUESTS => Some(Duration::from_secs(60)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use reqwest::header::HeaderValue;

    use super::*;

    /// Issue 22: GitHub's rate-limit answers are waited out as its docs say, and no other.
    #[test]
    fn rate_limit_answers_wait_as_told() {
        let (forbidden, many) = (StatusCode::FORBIDDEN, StatusCode::TOO_MANY_REQUESTS);
        let headers = |pairs: &[(&'static str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_str(v).unwrap());
            }
            h
        };
        let soon = (SystemTime::now() + Duration::from_secs(30))
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            .to_string();
        let secs = |n| Some(Duration::from_secs(n));
        for status in [forbidden, many] {
            let told = headers(&[("retry-after", "3"), ("x-ratelimit-reset", &soon)]);
            assert_eq!(rate_limited(status, &told), secs(3));
            let spent = headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1")]);
            assert_eq!(rate_limited(status, &spent), secs(1));
            let spent = headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", &soon)]);
            let wait = rate_limited(status, &spent).unwrap();
            assert!(wait > Duration::from_secs(25) && wait <= Duration::from_secs(30));
            assert_eq!(
                rate_limited(status, &headers(&[("x-ratelimit-remaining", "0")])),
                secs(60)
            );
        }
        // The primary limit's headers come with every answer: a 403 with budget left is a
        // permission, a 429 a secondary limit (a minute, not until the primary's reset).
        let left = headers(&[
            ("x-ratelimit-remaining", "4999"),
            ("x-ratelimit-reset", &soon),
        ]);
        assert_eq!(rate_limited(forbidden, &left), None);
        assert_eq!(rate_limited(many, &left), secs(60));
        assert_eq!(
            rate_limited(StatusCode::NOT_FOUND, &headers(&[("retry-after", "3")])),
            None
        );
    }
}
