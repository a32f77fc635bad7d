//! Image references (plans, and repository names a registry lists), digests and the
//! referrer tags a registry's tag list holds.

use proptest::prelude::*;

use super::{config, nasty_text};
use crate::reference::Digest;
use crate::reference::{is_valid_digest, is_valid_repository, Location, Reference, Selector};
use crate::registry::manifest::referrer_tag_subject;

/// Digests, most of them almost right.
pub(super) fn digest_like() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "sha256:[a-f0-9]{64}",
        1 => "sha512:[a-f0-9]{128}",
        1 => "sha256:[A-F0-9]{64}",
        1 => "sha256:[a-f0-9]{0,70}",
        1 => "sha384:[a-f0-9]{96}",
        1 => "[a-z0-9+._-]{1,10}:[a-zA-Z0-9=_-]{0,80}",
        1 => nasty_text(8),
    ]
}

fn reference_like() -> impl Strategy<Value = String> {
    let scheme = prop_oneof![8 => Just(""), 2 => Just("oci:"), 1 => Just("https://")];
    let host = prop_oneof![
        3 => Just(String::new()),
        2 => "[a-z]{1,5}\\.[a-z]{2,3}/",
        2 => "127\\.0\\.0\\.1:[0-9]{1,6}/",
        1 => Just("localhost/".to_string()),
        1 => Just("docker.io/".to_string()),
        1 => Just("index.docker.io/".to_string()),
        1 => "\\[[0-9a-f:]{2,8}\\](:[0-9]{1,5})?/",
        1 => nasty_text(4).prop_map(|t| format!("{t}/")),
    ];
    let component = prop_oneof![
        4 => "[a-z0-9]{1,6}",
        2 => "[a-z0-9]{1,3}([._-]|__)[a-z0-9]{1,3}",
        1 => Just("*".to_string()),
        1 => Just(String::new()),
        1 => Just(".".to_string()),
        1 => "[A-Za-z0-9._*-]{0,6}",
        1 => nasty_text(3),
    ];
    let path = prop::collection::vec(component, 1..4).prop_map(|v| v.join("/"));
    let suffix = prop_oneof![
        3 => Just(String::new()),
        2 => "[A-Za-z0-9_][A-Za-z0-9_.-]{0,10}".prop_map(|t| format!(":{t}")),
        2 => digest_like().prop_map(|d| format!("@{d}")),
        1 => Just("/".to_string()),
        1 => nasty_text(4).prop_map(|t| format!(":{t}")),
        1 => nasty_text(4).prop_map(|t| format!("@{t}")),
    ];
    (scheme, host, path, suffix).prop_map(|(s, h, p, x)| format!("{s}{h}{p}{x}"))
}

/// What every accepted reference must satisfy.
fn check_reference(input: &str) {
    let Ok(r) = Reference::parse(input) else {
        let e = Reference::parse(input).unwrap_err();
        assert!(!e.0.is_empty(), "{input:?}: an empty error message");
        return;
    };
    // What ferry prints (and writes into reports) reads back as the same reference.
    let shown = r.to_string();
    assert_eq!(
        Reference::parse(&shown).as_ref(),
        Ok(&r),
        "{input:?} parsed to {r:?}, which prints as {shown:?}"
    );
    match (&r.location, &r.selector) {
        (Location::Registry(_), Selector::Wildcard) => assert!(
            r.repository.is_empty()
                || (r.repository.ends_with('/')
                    && is_valid_repository(r.repository.trim_end_matches('/'))),
            "{input:?}: wildcard prefix {:?}",
            r.repository
        ),
        (Location::Registry(_), _) => assert!(
            is_valid_repository(&r.repository),
            "{input:?}: repository {:?}",
            r.repository
        ),
        (Location::Layout, _) => assert!(
            !r.repository.is_empty() || r.selector == Selector::Wildcard,
            "{input:?}: a layout without a directory"
        ),
    }
    if let Selector::Digest(d) = &r.selector {
        assert!(is_valid_digest(d), "{input:?}: digest {d:?}");
    }
}

proptest! {
    #![proptest_config(config(5000))]

    #[test]
    fn references_parse_or_explain(input in reference_like()) {
        check_reference(&input);
    }

    #[test]
    fn arbitrary_text_is_no_reference_crash(input in nasty_text(24)) {
        check_reference(&input);
    }

    #[test]
    fn digests_are_exactly_the_verifiable_ones(input in digest_like()) {
        match Digest::parse(&input) {
            Some(d) => {
                prop_assert_eq!(d.as_str(), input.as_str());
                let hex_len = match d.algorithm() {
                    "sha256" => 64,
                    "sha512" => 128,
                    other => panic!("algorithm {other:?} accepted"),
                };
                prop_assert_eq!(d.hex().len(), hex_len);
                prop_assert!(d.hex().bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
                prop_assert!(input.starts_with(d.short()));
                let again = d.recompute(b"x");
                prop_assert_eq!(again.algorithm(), d.algorithm());
            }
            None => prop_assert!(!is_valid_digest(&input)),
        }
    }

    /// Tags come from a registry's tag list: anything may be there.
    #[test]
    fn referrer_tags_never_panic(
        hex in "[a-f0-9]{64,68}",
        sep in prop_oneof![Just(""), Just("."), Just("-")],
        suffix in nasty_text(6),
        prefix in prop_oneof![Just("sha256-"), Just("sha512-"), Just("")],
    ) {
        for tag in [
            format!("{prefix}{hex}{sep}{suffix}"),
            format!("{prefix}{}{suffix}", &hex[..63]),
            format!("{prefix}{suffix}"),
        ] {
            if let Some(d) = referrer_tag_subject(&tag) {
                prop_assert_eq!(d.algorithm(), "sha256");
                prop_assert!(tag.starts_with(&format!("sha256-{}", d.hex())), "{:?} -> {}", tag, d);
            }
        }
    }
}

#[test]
fn a_referrer_tag_with_a_multibyte_character_at_the_digest_end_is_no_panic() {
    // The 64th byte after `sha256-` falls inside `é`: slicing there must not panic.
    let tag = format!("sha256-{}é", "a".repeat(63));
    assert_eq!(referrer_tag_subject(&tag), None);
}
