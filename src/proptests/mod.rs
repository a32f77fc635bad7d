//! Property tests over every parser of input ferry does not control: plans (random and
//! mutated), manifests and indexes, image references, digests, the names registries list
//! (repositories, tags, digests, layout paths), and the registry's headers
//! (`WWW-Authenticate`, `Link`, `Retry-After`, rate limits). Each property is "never a
//! panic, always a value or a clear error", plus what the parser promises beyond that.
//!
//! They live in one module, away from the parsers, so changes to the parsers and to these
//! tests do not collide. Case counts keep the whole set within about 20 s on two cores;
//! `PROPTEST_CASES=10000 cargo test --lib proptests` searches harder.

mod headers;
mod manifest;
mod names;
mod plan;
mod reference;

use proptest::prelude::*;
use proptest::test_runner::Config;

/// The configuration of every property: `cases` unless `PROPTEST_CASES` says otherwise, no
/// failure persistence files (a found case is printed; it becomes a unit test by hand).
fn config(cases: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(cases);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Text with the characters that break naive parsers: quotes, separators, escapes, control
/// characters, multi-byte and zero-width characters, right-to-left marks.
fn nasty_text(max: usize) -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => "[a-zA-Z0-9._/:@-]{1,8}",
        1 => Just("\"".to_string()),
        1 => Just("\\".to_string()),
        1 => Just(",".to_string()),
        1 => Just(";".to_string()),
        1 => Just("=".to_string()),
        1 => Just(" ".to_string()),
        1 => Just("\t".to_string()),
        1 => Just("\n".to_string()),
        1 => Just("\0".to_string()),
        1 => Just("é".to_string()),
        1 => Just("\u{200b}".to_string()),
        1 => Just("\u{202e}".to_string()),
        1 => Just("😀".to_string()),
        1 => Just("\u{feff}".to_string()),
        1 => any::<char>().prop_map(|c| c.to_string()),
    ];
    prop::collection::vec(piece, 0..max).prop_map(|v| v.concat())
}
