//! The gate's decisions, which are pure: what a repository needs, whether it fits, when to
//! resume (issue 25, part 2).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::*;
use crate::copy::Endpoint;
use crate::reference::Digest;

fn item(tag: &str, seen: Option<&str>) -> Item {
    let layouts: Arc<dyn Registry> = Arc::new(crate::registry::layout::LayoutRegistry::new());
    Item {
        source: Endpoint {
            registry: layouts.clone(),
            repo: "src".into(),
        },
        source_ref: tag.into(),
        target: Endpoint {
            registry: layouts,
            repo: "dst".into(),
        },
        target_tag: Some(tag.into()),
        subject: None,
        platforms: None,
        rule: 1,
        after: None,
        seen: seen.map(|s| Digest::sha256_of(s.as_bytes())),
        read: None,
        contest: None,
    }
}

fn budget(remaining: u64, limit: u64) -> Option<PullBudget> {
    Some(PullBudget {
        limit,
        remaining,
        window_seconds: 3600,
    })
}

#[test]
fn a_repository_starts_only_when_its_pulls_fit_in_what_is_left() {
    assert!(
        fits(3, None),
        "an unknown budget does not hold anything back"
    );
    assert!(fits(3, budget(3, 5)));
    assert!(!fits(3, budget(2, 5)));
    assert!(fits(0, budget(0, 5)), "what costs no pull always goes");
    assert!(!fits(1, budget(0, 5)));
    // More than a whole window allows: it never fits, so it goes while any pull is left.
    assert!(fits(8, budget(1, 5)));
    assert!(!fits(8, budget(0, 5)));
}

#[test]
fn pulls_needed_skip_what_is_done_and_count_a_digest_once() {
    let items = vec![
        item("v1", Some("a")),
        item("latest", Some("a")),
        item("v2", None),
        item("v3", None),
        item("old", Some("b")),
    ];
    assert_eq!(pulls_needed(&items, &|_| false), 4);
    assert_eq!(pulls_needed(&items, &|i| i.source_ref == "old"), 3);
    assert_eq!(pulls_needed(&items, &|_| true), 0);
}

#[test]
fn the_resume_time_is_a_window_after_the_budget_was_seen_spent_rounded_up() {
    let since = SystemTime::UNIX_EPOCH + Duration::from_secs(17 * 3600 + 41 * 60 + 10);
    let p = Parked {
        registry: "docker.io".into(),
        remaining: 1,
        limit: 5,
        window_seconds: 3600,
        since,
        images: 2,
    };
    assert_eq!(clock(p.resume_at()), "18:42");
    assert_eq!(
        p.message(),
        "Docker Hub pull budget spent: 1 of 5 pulls left for docker.io; resume after 18:42 UTC (ratelimit window of 3600 s)"
    );
    assert_eq!(
        clock(SystemTime::UNIX_EPOCH + Duration::from_secs(3600)),
        "01:00"
    );
    assert_eq!(
        clock(SystemTime::UNIX_EPOCH + Duration::from_secs(86_399)),
        "00:00"
    );
}
