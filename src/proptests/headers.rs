//! Headers a registry (or its API) sends: `WWW-Authenticate`, `Link`, `Retry-After`, the
//! rate-limit headers, upload `Range`, and error bodies.

use std::time::Duration;

use proptest::prelude::*;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use url::Url;

use super::{config, nasty_text};
use crate::registry::auth::{parse_challenge, Challenge};
use crate::registry::error_body::decode_error_body;
use crate::registry::transport::pager::next_link;
use crate::registry::transport::throttle::{self, Kind, Throttle, MAX_WAIT};

/// Every byte a header value may hold (visible ASCII, space, tab, obs-text).
fn header_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        6 => 0x20u8..0x7f,
        1 => Just(b'\t'),
        1 => 0x80u8..=0xff,
        1 => prop::sample::select(b"\",;=<> ".to_vec()),
    ];
    prop::collection::vec(byte, 0..max)
}

fn headers(name: &'static str, value: &[u8]) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_bytes(value) {
        h.insert(HeaderName::from_static(name), v);
    }
    h
}

/// Auth params as registries write them, with the separators and quoting they get wrong.
fn challenge_like() -> impl Strategy<Value = String> {
    let scheme = prop_oneof![
        Just("Bearer"),
        Just("bearer"),
        Just("Basic"),
        Just("Negotiate"),
        Just(""),
    ];
    let key = prop_oneof![
        Just("realm".to_string()),
        Just("service".to_string()),
        Just("scope".to_string()),
        Just("error".to_string()),
        "[a-zA-Z ]{0,6}",
    ];
    let value = prop_oneof![
        "\"[^\"\\\\]{0,12}\"",
        "\"[a-z,= \\\\\"]{0,12}",
        "[a-z:/.,]{0,12}",
        nasty_text(6),
    ];
    let param = (key, value).prop_map(|(k, v)| format!("{k}={v}"));
    let params = prop::collection::vec(param, 0..4).prop_map(|p| p.join(","));
    let challenge = (scheme, params).prop_map(|(s, p)| format!("{s} {p}"));
    prop::collection::vec(challenge, 1..3).prop_map(|c| c.join(", "))
}

fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn link_like() -> impl Strategy<Value = String> {
    let target = prop_oneof![
        "</v2/[a-z/_]{0,12}\\?(n=[0-9]{1,4}&last=[a-z]{0,6})?>",
        "<https?://[a-z.:0-9]{1,12}/[a-z/]{0,8}>",
        "<[^>]{0,12}>",
        "[^;,]{0,12}",
    ];
    let rel = prop_oneof![
        Just("; rel=\"next\""),
        Just("; rel=next"),
        Just(";rel = \"next\""),
        Just("; rel=\"prev\""),
        Just(""),
        Just(";"),
    ];
    let part = (target, rel).prop_map(|(t, r)| format!("{t}{r}"));
    prop::collection::vec(part, 0..3).prop_map(|p| p.join(", "))
}

fn budget_like() -> impl Strategy<Value = String> {
    let number = prop_oneof![
        "[0-9]{1,3}",
        Just("0".to_string()),
        Just("18446744073709551615".to_string()),
        Just("18446744073709551616".to_string()),
        Just("-1".to_string()),
        nasty_text(3),
    ];
    let window = prop_oneof![
        Just(String::new()),
        "[0-9]{1,6}".prop_map(|w| format!(";w={w}")),
        Just(";w=0".to_string()),
        Just(";w=18446744073709551615".to_string()),
        nasty_text(4).prop_map(|w| format!(";w={w}")),
    ];
    (number, window).prop_map(|(n, w)| format!("{n}{w}"))
}

proptest! {
    #![proptest_config(config(3000))]

    #[test]
    fn challenges_never_panic(header in challenge_like()) {
        if let Some(Challenge::Bearer { realm, .. }) = parse_challenge(&header) {
            prop_assert!(header.to_ascii_lowercase().contains("bearer"), "{:?}", header);
            let _ = realm;
        }
    }

    #[test]
    fn arbitrary_challenge_text_never_panics(header in nasty_text(40)) {
        let _ = parse_challenge(&header);
    }

    /// What a registry quotes comes back exactly, escapes and commas included.
    #[test]
    fn quoted_realm_and_service_round_trip(
        realm in "[ -~]{1,30}",
        service in "[ -~]{0,20}",
        scope in "[a-z/:,]{0,20}",
        basic_first in any::<bool>(),
    ) {
        let bearer = format!(
            "Bearer realm={},service={},scope={}",
            quote(&realm),
            quote(&service),
            quote(&scope)
        );
        let header = if basic_first {
            format!("Basic realm=\"r\", {bearer}")
        } else {
            bearer
        };
        prop_assert_eq!(
            parse_challenge(&header),
            Some(Challenge::Bearer { realm, service: Some(service) })
        );
    }

    #[test]
    fn link_headers_never_panic(value in link_like(), raw in header_bytes(40)) {
        let base = Url::parse("http://127.0.0.1:5000/v2/_catalog?n=2").unwrap();
        for h in [headers("link", value.as_bytes()), headers("link", &raw)] {
            if let Some(next) = next_link(&h, &base) {
                prop_assert!(matches!(next.scheme(), "http" | "https"), "{}", next);
            }
        }
    }

    /// A relative `next` resolves against the page that named it.
    #[test]
    fn relative_next_links_resolve(last in "[a-z0-9]{1,8}", n in 1u32..5000) {
        let base = Url::parse("http://127.0.0.1:5000/v2/_catalog?n=2").unwrap();
        let h = headers("link", format!("</v2/_catalog?last={last}&n={n}>; rel=\"next\"").as_bytes());
        let next = next_link(&h, &base).unwrap();
        prop_assert_eq!(next.as_str(), format!("http://127.0.0.1:5000/v2/_catalog?last={last}&n={n}"));
    }

    #[test]
    fn retry_after_never_panics(raw in header_bytes(40), secs in any::<u64>()) {
        let _ = throttle::retry_after(&headers("retry-after", &raw));
        prop_assert_eq!(
            throttle::retry_after(&headers("retry-after", secs.to_string().as_bytes())),
            Some(Duration::from_secs(secs))
        );
        let _ = throttle::until_reset(&headers("x-ratelimit-reset", &raw));
        let _ = throttle::until_reset(&headers("x-ratelimit-reset", secs.to_string().as_bytes()));
    }

    /// Whatever Docker Hub's budget headers say, the pause they cause is bounded.
    #[test]
    fn rate_limit_headers_never_panic(limit in budget_like(), remaining in budget_like()) {
        let waits = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = waits.clone();
        let t = Throttle::new(
            "r",
            None,
            Some(std::sync::Arc::new(move |e: &throttle::Event| {
                if let throttle::Event::Waiting { duration, .. } = e {
                    sink.lock().unwrap().push(*duration);
                }
            })),
        );
        let mut h = headers("ratelimit-limit", limit.as_bytes());
        h.extend(headers("ratelimit-remaining", remaining.as_bytes()));
        t.observe(&h);
        for w in waits.lock().unwrap().iter() {
            prop_assert!(*w <= MAX_WAIT && *w >= Duration::from_secs(1), "{:?}", w);
        }
        // Blob requests are never held back by the pull budget.
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(1), t.ready(Kind::Other))
                .await
                .expect("other requests go on");
        });
    }

    #[test]
    fn error_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..300), text in nasty_text(30)) {
        for b in [body.as_slice(), text.as_bytes()] {
            let d = decode_error_body(b);
            prop_assert!(d.is_empty() || d.starts_with(": "));
            prop_assert!(d.chars().count() <= 2000 || b.len() > 2000);
        }
    }
}
