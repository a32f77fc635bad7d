//! The name checks every name a registry lists goes through (`reference::names`): they accept
//! exactly the distribution grammar (names generated from it pass; names mutated out of it,
//! with `..`, a `/` at either end, `//`, uppercase, control characters or too many characters,
//! fail), never panic, say which rule a name breaks, and never print a name unescaped or
//! whole. A layout path they accept stays under its root once joined.

use std::path::{Component, Path};
use std::sync::LazyLock;

use proptest::prelude::*;
use regex::Regex;

use super::{config, nasty_text};
use crate::reference::names::{self, Broken, Kind, NameError};
use crate::reference::Digest;
use crate::registry::layout::join_under;

/// The grammars as the distribution spec writes them, compiled here apart from the module
/// under test, so the two are compared rather than one with itself.
static SPEC_REPOSITORY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$").unwrap()
});
static SPEC_TAG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$").unwrap());
static SPEC_DIGEST: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$").unwrap());

fn spec_repository(s: &str) -> bool {
    SPEC_REPOSITORY.is_match(s) && s.len() <= names::MAX_REPOSITORY
}

/// One path component, generated from the grammar.
fn component() -> impl Strategy<Value = String> {
    let separator = prop_oneof![
        Just(".".to_string()),
        Just("_".to_string()),
        Just("__".to_string()),
        "-{1,3}",
    ];
    (
        "[a-z0-9]{1,6}",
        prop::collection::vec((separator, "[a-z0-9]{1,4}"), 0..3),
    )
        .prop_map(|(head, rest)| {
            let mut c = head;
            for (sep, part) in rest {
                c.push_str(&sep);
                c.push_str(&part);
            }
            c
        })
}

/// A repository name the grammar accepts (long ones included).
fn repository_name() -> impl Strategy<Value = String> {
    prop::collection::vec(component(), 1..6)
        .prop_map(|v| v.join("/"))
        .prop_filter("at most 255 bytes", |n| n.len() <= names::MAX_REPOSITORY)
}

/// A tag the grammar accepts.
fn tag_name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}"
}

/// A way to break a repository name, applied at a position.
#[derive(Clone, Debug)]
enum Mutation {
    DotDot,
    Dot,
    LeadingSlash,
    TrailingSlash,
    DoubleSlash,
    Uppercase,
    Insert(char),
    TooLong,
    SeparatorAtEnd(&'static str),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => Just(Mutation::DotDot),
        1 => Just(Mutation::Dot),
        1 => Just(Mutation::LeadingSlash),
        1 => Just(Mutation::TrailingSlash),
        1 => Just(Mutation::DoubleSlash),
        1 => Just(Mutation::Uppercase),
        2 => prop_oneof![
            Just('\n'), Just('\0'), Just('\u{1b}'), Just(' '), Just(':'), Just('@'),
            Just('\\'), Just('é'), Just('\u{202e}'), Just('*'),
        ].prop_map(Mutation::Insert),
        1 => Just(Mutation::TooLong),
        1 => prop_oneof![Just("."), Just("_"), Just("-"), Just("__"), Just("___")]
            .prop_map(Mutation::SeparatorAtEnd),
    ]
}

/// `name` broken by `m` at the `at`-th component boundary (or character).
fn mutate(name: &str, m: &Mutation, at: usize) -> String {
    let parts: Vec<&str> = name.split('/').collect();
    let i = at % (parts.len() + 1);
    let splice = |piece: &str| {
        let mut v: Vec<&str> = parts.clone();
        v.insert(i, piece);
        v.join("/")
    };
    match m {
        Mutation::DotDot => splice(".."),
        Mutation::Dot => splice("."),
        Mutation::LeadingSlash => format!("/{name}"),
        Mutation::TrailingSlash => format!("{name}/"),
        Mutation::DoubleSlash => splice(""),
        Mutation::Uppercase => {
            let chars: Vec<char> = name.chars().collect();
            let j = at % chars.len();
            let mut out: String = chars[..j].iter().collect();
            out.push(chars[j].to_ascii_uppercase());
            out.extend(&chars[j + 1..]);
            // A digit or separator has no uppercase: make sure something is.
            if out == name {
                out.push('A');
            }
            out
        }
        Mutation::Insert(c) => {
            let j = at % (name.len() + 1);
            let j = (0..=j)
                .rev()
                .find(|&k| name.is_char_boundary(k))
                .unwrap_or(0);
            format!("{}{c}{}", &name[..j], &name[j..])
        }
        Mutation::TooLong => {
            let mut long = name.to_string();
            while long.len() <= names::MAX_REPOSITORY {
                long.push_str("/a");
            }
            long
        }
        Mutation::SeparatorAtEnd(sep) => {
            let mut v: Vec<String> = parts.iter().map(|p| p.to_string()).collect();
            let k = at % v.len();
            if at.is_multiple_of(2) {
                v[k].push_str(sep);
            } else {
                v[k].insert_str(0, sep);
            }
            v.join("/")
        }
    }
}

/// What every refusal must satisfy: the kind asked for, a reason the checks name, and a
/// message of printable ASCII (and `…`), bounded whatever the name's length.
fn check_refusal(e: &NameError, kind: Kind, input: &str) {
    assert_eq!(e.kind, kind, "{input:?}");
    assert_ne!(
        e.broken,
        Broken::Grammar,
        "{input:?}: an undiagnosed refusal"
    );
    assert_eq!(e.len, input.len());
    let shown = e.to_string();
    assert!(
        shown.chars().all(|c| (' '..='~').contains(&c) || c == '…'),
        "{input:?} shown as {shown:?}"
    );
    assert!(shown.len() < 1024, "{} bytes of message", shown.len());
    assert!(e.name.chars().count() <= 65);
    assert!(input.starts_with(&e.name), "{input:?} kept as {:?}", e.name);
}

/// The repository check agrees with the spec's grammar on `input`, and refuses clearly.
fn agrees_on_repository(input: &str) {
    match names::repository(input) {
        Ok(()) => assert!(spec_repository(input), "{input:?} accepted"),
        Err(e) => {
            assert!(!spec_repository(input), "{input:?} refused: {e}");
            check_refusal(&e, Kind::Repository, input);
        }
    }
}

fn agrees_on_tag(input: &str) {
    match names::tag(input) {
        Ok(()) => assert!(SPEC_TAG.is_match(input), "{input:?} accepted"),
        Err(e) => {
            assert!(!SPEC_TAG.is_match(input), "{input:?} refused: {e}");
            check_refusal(&e, Kind::Tag, input);
        }
    }
}

fn agrees_on_digest(input: &str) {
    // The quiet question (is this reference a digest?) answers as the checked one.
    assert_eq!(
        Digest::parse(input),
        Digest::checked(input).ok(),
        "{input:?}"
    );
    match names::digest(input) {
        Ok(()) => {
            assert!(SPEC_DIGEST.is_match(input), "{input:?} accepted");
            assert_eq!(Digest::checked(input).unwrap().as_str(), input);
        }
        Err(e) => {
            assert!(!SPEC_DIGEST.is_match(input), "{input:?} refused: {e}");
            check_refusal(&e, Kind::Digest, input);
            assert_eq!(Digest::checked(input), Err(e));
        }
    }
}

/// A layout path the check accepts is plain names only, and joined to a root it stays under
/// that root.
fn stays_under_root(input: &str) {
    // A root that does not exist: `join_under` stops looking for links at the first
    // directory that is not there.
    let root = "/nonexistent-ferry-root/out/";
    match (names::layout_path(input), join_under(root, input)) {
        (Ok(()), Ok(joined)) => {
            assert!(
                Path::new(input)
                    .components()
                    .all(|c| matches!(c, Component::Normal(_))),
                "{input:?}"
            );
            let below = Path::new(&joined)
                .strip_prefix(root)
                .unwrap_or_else(|_| panic!("{input:?} joined to {joined:?}"));
            assert!(below
                .components()
                .all(|c| matches!(c, Component::Normal(_))));
            assert!(!below.as_os_str().is_empty(), "{input:?}");
        }
        (Err(e), Err(_)) => check_refusal(&e, Kind::LayoutPath, input),
        (check, joined) => panic!("{input:?}: the check says {check:?}, the join {joined:?}"),
    }
}

proptest! {
    #![proptest_config(config(3000))]

    #[test]
    fn repositories_from_the_grammar_are_accepted(name in repository_name()) {
        prop_assert_eq!(names::repository(&name), Ok(()));
        prop_assert!(spec_repository(&name));
    }

    #[test]
    fn repositories_mutated_out_of_the_grammar_are_refused(
        name in repository_name(),
        m in mutation(),
        at in 0usize..300,
    ) {
        let bad = mutate(&name, &m, at);
        let e = names::repository(&bad).expect_err(&format!("{m:?} of {name:?}: {bad:?}"));
        check_refusal(&e, Kind::Repository, &bad);
        prop_assert!(!spec_repository(&bad));
        if matches!(m, Mutation::DotDot | Mutation::Dot) {
            prop_assert_eq!(&e.broken, &Broken::DotComponent);
        }
        // Also as a layout path, where `..` and `/` at the ends are what matters.
        stays_under_root(&bad);
    }

    #[test]
    fn tags_from_the_grammar_are_accepted(tag in tag_name()) {
        prop_assert_eq!(names::tag(&tag), Ok(()));
        prop_assert_eq!(names::reference(&tag), Ok(()));
    }

    #[test]
    fn tags_mutated_out_of_the_grammar_are_refused(
        tag in tag_name(),
        bad in prop_oneof![
            Just("."), Just("-"), Just("/"), Just("\n"), Just(":"), Just(" "), Just("\u{1b}"),
            Just("é"), Just("../"),
        ],
        front in any::<bool>(),
        pad in 0usize..200,
    ) {
        let mut broken = if front { format!("{bad}{tag}") } else { format!("{tag}{bad}") };
        // Leading `.`/`-` break a tag only at the front; at the back, a long pad does.
        if !front && matches!(bad, "." | "-") {
            broken.push_str(&"x".repeat(names::MAX_TAG + pad));
        }
        let e = names::tag(&broken).expect_err(&broken);
        check_refusal(&e, Kind::Tag, &broken);
    }

    #[test]
    fn names_agree_with_the_grammar_on_anything(input in nasty_text(24)) {
        agrees_on_repository(&input);
        agrees_on_tag(&input);
        agrees_on_digest(&input);
        stays_under_root(&input);
    }

    #[test]
    fn names_agree_with_the_grammar_on_near_misses(
        input in prop_oneof![
            "[a-z0-9._/-]{0,40}",
            "[a-zA-Z0-9._-]{0,140}",
            "[a-z0-9._/-]{250,260}",
            "(sha256|sha512|sha384|SHA256):[a-fA-F0-9]{60,130}",
            any::<String>(),
        ],
    ) {
        agrees_on_repository(&input);
        agrees_on_tag(&input);
        agrees_on_digest(&input);
        stays_under_root(&input);
    }
}
