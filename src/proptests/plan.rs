//! The plan loader: random TOML-ish text, and mutations of real plans (the examples in
//! `plans/`, the Kubernetes ConfigMap's, and plans like the tests write): byte flips, dropped,
//! duplicated and swapped lines, values of the wrong type, huge numbers, unicode. Every plan
//! is accepted or refused with `FILE:LINE:COLUMN: …` pointing inside the text.

use std::path::Path;

use proptest::prelude::*;
use proptest::sample::Index;

use super::{config, nasty_text};
use crate::plan::{Plan, PlanError};

/// Plans like the ones the tests and the docs write, every field used somewhere.
const WRITTEN: &[&str] = &[
    r#"version = 1
concurrency = 4
state = "/var/lib/ferry/s.db"
immutable_tags = ['^release-', '^v\d+$']

[registry."docker.io"]
auth = { username = "me", password_env = "DOCKERHUB_TOKEN" }
rate_limit = { requests_per_second = 5, burst = 10 }
retries = 0
stall_timeout = "2m"

[registry."ghcr.io"]
auth = { config = "/var/run/secrets/ghcr/.dockerconfigjson" }
api = "https://api.github.com"

[registry."127.0.0.1:5001"]
insecure = true
endpoint = "http://127.0.0.1:5001"
flavor = "ghcr"
max_connections = 4
auth = { anonymous = true }

[[copy]]
from = "docker.io/myorg/api"
to   = "ghcr.io/myorg/api"
tags = { include = ['^v\d+\.\d+\.\d+$', '^latest$'], exclude = ['-rc\d*$'], semver = ">=1.2, <3", newest = 20 }
referrers = false

[[copy]]
from = "docker.io/myorg/*"
to   = "ghcr.io/myorg/*"

[[copy]]
from = "127.0.0.1:5001/team/app@sha256:0000000000000000000000000000000000000000000000000000000000000000"
to   = "oci:/tmp/out:v1"
"#,
    r#"version = 1
[[retain]]
repository = "reg.example:5000/org/*"
keep_newest = 10
keep_tags = ['^latest$']
delete_tags = ['^pr-\d+$']
older_than = "30d"
untagged = true
max_deletions = 100

[[retain]]
repository = "ghcr.io/org/app"
keep_newest = 0
"#,
    "version = 1\n[registry.\"127.0.0.1:40000\"]\ninsecure = true\nretries = 1\nstall_timeout = \"1s\"\n[registry.\"127.0.0.1:40001\"]\ninsecure = true\nretries = 1\n[[copy]]\nfrom = \"127.0.0.1:40000/team/*\"\nto = \"127.0.0.1:40001/team/*\"\n",
    "version = 1\n[[copy]]\nfrom = \"oci:plans/demo/layout\"\nto = \"oci:state/demo\"\n",
];

/// The plans in `plans/` and the one in the retention CronJob's ConfigMap, read at test time
/// so new examples are covered without touching this file.
fn example_plans() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut plans = Vec::new();
    for entry in std::fs::read_dir(root.join("plans")).expect("plans/") {
        let path = entry.expect("plans/ entry").path();
        if path.extension().and_then(|e| e.to_str()) == Some("toml") {
            plans.push(std::fs::read_to_string(&path).expect("example plan"));
        }
    }
    let yaml = root.join("deploy/kubernetes/retention-cronjob.yaml");
    if let Ok(yaml) = std::fs::read_to_string(yaml) {
        if let Some(start) = yaml.find("plan.toml: |") {
            let text: Vec<&str> = yaml[start..]
                .lines()
                .skip(1)
                .take_while(|l| l.starts_with("    ") || l.trim().is_empty())
                .map(|l| l.strip_prefix("    ").unwrap_or(l))
                .collect();
            plans.push(text.join("\n"));
        }
    }
    assert!(plans.len() >= 3, "the example plans were found");
    plans
}

fn seeds() -> Vec<String> {
    let mut all = example_plans();
    all.extend(WRITTEN.iter().map(|s| s.to_string()));
    all
}

/// Values of every TOML type, and the ones that overflow or surprise.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => "-?[0-9]{1,4}",
        1 => Just("9223372036854775807".to_string()),
        1 => Just("-9223372036854775808".to_string()),
        1 => Just("9223372036854775808".to_string()),
        1 => Just("99999999999999999999999999".to_string()),
        1 => Just("0x7fffffff".to_string()),
        1 => Just("1e309".to_string()),
        1 => Just("-0.0".to_string()),
        1 => Just("nan".to_string()),
        1 => Just("inf".to_string()),
        1 => Just("true".to_string()),
        1 => Just("1979-05-27T07:32:00Z".to_string()),
        1 => Just("[]".to_string()),
        1 => Just("{}".to_string()),
        1 => Just("[1, \"a\", []]".to_string()),
        1 => Just("{ include = 1 }".to_string()),
        1 => Just("{ requests_per_second = 4294967296, burst = -1 }".to_string()),
        1 => Just("{ username = \"\", password_env = \"\" }".to_string()),
        1 => Just("\"\"".to_string()),
        1 => Just("'''multi\nline'''".to_string()),
        1 => Just("\"\\u0000\"".to_string()),
        1 => Just("\"\\uD800\"".to_string()),
        1 => Just("\"99999999999999999999d\"".to_string()),
        1 => Just("\"18446744073709551615s\"".to_string()),
        1 => Just("\"oci:\"".to_string()),
        1 => Just("\"oci:/\"".to_string()),
        1 => Just("\"http://[::1]:0\"".to_string()),
        1 => Just("\"https://user:secret@host\"".to_string()),
        2 => nasty_text(8).prop_map(|t| format!("{t:?}")),
        1 => nasty_text(6),
    ]
}

/// One change to a plan's text.
#[derive(Clone, Debug)]
enum Mutation {
    FlipByte(Index, u8),
    DropLine(Index),
    DuplicateLine(Index),
    SwapLines(Index, Index),
    /// Replace what follows the `=` of a line.
    Retype(Index, String),
    InsertText(Index, String),
    Truncate(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::FlipByte(i, b)),
        2 => any::<Index>().prop_map(Mutation::DropLine),
        2 => any::<Index>().prop_map(Mutation::DuplicateLine),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        4 => (any::<Index>(), value()).prop_map(|(i, v)| Mutation::Retype(i, v)),
        2 => (any::<Index>(), nasty_text(4)).prop_map(|(i, t)| Mutation::InsertText(i, t)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
    ]
}

/// Apply mutations to bytes (byte flips may leave invalid UTF-8: the loader must say so).
fn mutate(seed: &str, mutations: &[Mutation]) -> Vec<u8> {
    let mut bytes = seed.as_bytes().to_vec();
    for m in mutations {
        let mut lines: Vec<Vec<u8>> = bytes.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
        match m {
            Mutation::FlipByte(i, b) if !bytes.is_empty() => {
                let at = i.index(bytes.len());
                bytes[at] = *b;
                continue;
            }
            Mutation::InsertText(i, t) => {
                let at = i.index(bytes.len() + 1);
                bytes.splice(at..at, t.bytes());
                continue;
            }
            Mutation::Truncate(i) => {
                bytes.truncate(i.index(bytes.len() + 1));
                continue;
            }
            Mutation::DropLine(i) => {
                lines.remove(i.index(lines.len()));
            }
            Mutation::DuplicateLine(i) => {
                let at = i.index(lines.len());
                lines.insert(at, lines[at].clone());
            }
            Mutation::SwapLines(a, b) => {
                let (a, b) = (a.index(lines.len()), b.index(lines.len()));
                lines.swap(a, b);
            }
            Mutation::Retype(i, v) => {
                let with_value: Vec<usize> = (0..lines.len())
                    .filter(|n| lines[*n].contains(&b'='))
                    .collect();
                if with_value.is_empty() {
                    continue;
                }
                let n = with_value[i.index(with_value.len())];
                let eq = lines[n].iter().position(|b| *b == b'=').expect("has =");
                lines[n].truncate(eq + 1);
                lines[n].push(b' ');
                lines[n].extend_from_slice(v.as_bytes());
            }
            Mutation::FlipByte(..) => continue,
        }
        bytes = lines.join(&b'\n');
    }
    bytes
}

/// TOML-ish text from plan keys, section headers and values of any type.
fn tomlish() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        prop::sample::select(vec![
            "version",
            "concurrency",
            "state",
            "immutable_tags",
            "from",
            "to",
            "tags",
            "referrers",
            "repository",
            "keep_newest",
            "keep_tags",
            "delete_tags",
            "older_than",
            "untagged",
            "untagged_grace",
            "max_deletions",
            "auth",
            "insecure",
            "endpoint",
            "api",
            "flavor",
            "max_connections",
            "rate_limit",
            "retries",
            "stall_timeout",
            "include",
            "exclude",
            "semver",
            "newest",
            "tags.include",
            "\"quoted key\"",
            "registry.\"x.io\".insecure",
        ])
        .prop_map(str::to_string),
        "[a-z_]{1,8}",
    ];
    let line = prop_oneof![
        6 => (key, value()).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => Just("[[copy]]".to_string()),
        1 => Just("[[retain]]".to_string()),
        1 => "\\[registry\\.\"[a-z0-9.:\\[\\]]{0,12}\"\\]",
        1 => Just("[registry]".to_string()),
        1 => Just("[copy]".to_string()),
        1 => Just("[[registry.\"x.io\"]]".to_string()),
        1 => Just("# comment".to_string()),
        1 => nasty_text(10),
    ];
    (
        prop_oneof![3 => Just("version = 1\n"), 1 => Just("")],
        prop::collection::vec(line, 0..16),
    )
        .prop_map(|(head, lines)| format!("{head}{}", lines.join("\n")))
}

/// Accepted, or refused with the file and a position inside the text.
fn check_plan(text: &str) {
    let path = Path::new("dir/p.toml");
    let e = match Plan::from_str(path, text) {
        Ok(plan) => {
            assert!((1..=256).contains(&plan.concurrency));
            for c in &plan.copies {
                assert!(
                    c.line >= 1 && c.line <= text.lines().count().max(1),
                    "{c:?}"
                );
            }
            return;
        }
        Err(e) => e,
    };
    let msg = e.to_string();
    let Some((line, column)) = e.position() else {
        panic!("from_str reads no file: {msg}");
    };
    assert!(
        msg.starts_with(&format!("dir/p.toml:{line}:{column}: ")),
        "{msg}\n--- plan\n{text}"
    );
    let lines: Vec<&str> = text.split('\n').collect();
    assert!(line >= 1 && line <= lines.len(), "line {line} in\n{text}");
    let width = lines[line - 1].trim_end_matches('\r').chars().count();
    assert!(
        column >= 1 && column <= width + 1,
        "column {column} of line {line} ({width} characters): {msg}"
    );
    // One line, and no excerpt of the plan: the message is written by ferry, not copied
    // from the text (which may hold a secret).
    assert!(!msg.contains('\n'), "{msg}");
    assert!(msg.len() < 600, "{msg}");
}

proptest! {
    #![proptest_config(config(5000))]

    #[test]
    fn random_tomlish_plans(text in tomlish()) {
        check_plan(&text);
    }

    #[test]
    fn mutated_plans(
        seed in prop::sample::select(seeds()),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let bytes = mutate(&seed, &mutations);
        match String::from_utf8(bytes) {
            Ok(text) => check_plan(&text),
            Err(e) => {
                // Through the file loader, as `ferry check` reads it.
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("p.toml");
                std::fs::write(&path, e.as_bytes()).unwrap();
                let err = Plan::load(&path).expect_err("invalid UTF-8 is refused");
                assert!(matches!(err, PlanError::NotUtf8 { .. }), "{err}");
                // At the first bad byte: the line and column of the text before it.
                let before = std::str::from_utf8(&e.as_bytes()[..e.utf8_error().valid_up_to()]).unwrap();
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().unwrap().chars().count() + 1;
                prop_assert!(
                    err.to_string().starts_with(&format!("{}:{line}:{column}: not UTF-8", path.display())),
                    "{}", err
                );
            }
        }
    }
}

#[test]
fn every_seed_is_a_valid_plan() {
    for seed in seeds() {
        if let Err(e) = Plan::from_str(Path::new("p.toml"), &seed) {
            panic!("{e}\n--- plan\n{seed}");
        }
    }
}
