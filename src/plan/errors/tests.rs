//! Plan errors: positions, words, and never a value from the plan.

use super::super::Plan;
use super::*;

const CANARY: &str = "CANARY-7f3a9c";
const RULE: &str = "[[copy]]\nfrom = \"r.io/a/b\"\nto = \"r.io/c/d\"\n";
/// What a message in the user's words never says.
const RUST: &[&str] = &[
    "i64",
    "u32",
    "usize",
    "struct",
    "Raw",
    "sequence",
    "map",
    "invalid type",
    "Spanned",
    "variant",
    "Option",
    "u64",
];

fn err(text: &str) -> String {
    Plan::from_str(Path::new("p.toml"), text)
        .expect_err("the plan should be refused")
        .to_string()
}

/// Refused, at a position, without the canary.
fn refused_quietly(text: &str) -> String {
    let e = err(text);
    assert!(
        !e.contains("CANARY"),
        "the canary leaked: {e}\n--- plan\n{text}"
    );
    assert!(
        regex::Regex::new(r"^p\.toml:\d+:\d+: ")
            .unwrap()
            .is_match(&e),
        "no position: {e}"
    );
    assert!(!e.contains('\n'), "one line: {e}");
    e
}

/// Plans with a secret-looking unknown field (and an innocent one) in every table.
fn unknown_field_plans() -> Vec<(String, &'static str)> {
    let c = CANARY;
    let mut plans = Vec::new();
    for key in ["password", "token", "auth_token", "client_secret", "note"] {
        let v = format!("{key} = \"{c}\"");
        plans.extend([
            (format!("version = 1\n{v}\n{RULE}"), "the top level"),
            (
                format!("version = 1\n{RULE}[registry.\"r.io\"]\n{v}\n"),
                "[registry.\"r.io\"]",
            ),
            (
                format!("version = 1\n{RULE}[registry.\"r.io\"]\nauth = {{ username = \"u\", password_env = \"V\", {v} }}\n"),
                "[registry.\"r.io\".auth]",
            ),
            (
                format!("version = 1\n{RULE}[registry.\"r.io\".auth]\n{v}\n"),
                "[registry.\"r.io\".auth]",
            ),
            (
                // A dotted key under a spanned table: serde says "invalid type" here.
                format!("version = 1\n{RULE}[registry.\"r.io\"]\nauth.{v}\n"),
                "[registry.\"r.io\".auth]",
            ),
            (
                format!("version = 1\nregistry.\"r.io\".rate_limit.{v}\n{RULE}"),
                "[registry.\"r.io\".rate_limit]",
            ),
            (
                format!("version = 1\n{RULE}[registry.\"r.io\"]\nrate_limit = {{ requests_per_second = 1, {v} }}\n"),
                "[registry.\"r.io\".rate_limit]",
            ),
            (format!("version = 1\n{RULE}{v}\n"), "[[copy]]"),
            (
                format!("version = 1\n{RULE}tags = {{ include = ['^v'], {v} }}\n"),
                "[copy.tags]",
            ),
            (
                format!("version = 1\n{RULE}[copy.tags]\n{v}\n"),
                "[copy.tags]",
            ),
            (
                format!("version = 1\n[[retain]]\nrepository = \"r.io/a/b\"\n{v}\n"),
                "[[retain]]",
            ),
        ]);
    }
    plans
}

#[test]
fn unknown_fields_never_show_their_value() {
    for (text, table) in unknown_field_plans() {
        let e = refused_quietly(&text);
        assert!(
            e.contains("unknown field `") && e.contains(&format!(" in {table}; expected one of `")),
            "{e}\n--- plan\n{text}"
        );
    }
    // The referrers table is read by ferry itself; same rule.
    let e = refused_quietly(&format!(
        "version = 1\n{RULE}referrers = {{ token = \"{CANARY}\" }}\n"
    ));
    assert!(e.contains("unknown field `token`"), "{e}");
}

/// Known fields holding a canary where it is not a valid value, or of the wrong type.
#[test]
fn refused_values_are_never_shown() {
    let c = CANARY;
    let registry = |line: String| format!("version = 1\n{RULE}[registry.\"r.io\"]\n{line}\n");
    let copy = |line: String| {
        format!("version = 1\n[[copy]]\nfrom = \"r.io/a/b\"\nto = \"r.io/c/d\"\n{line}\n")
    };
    let retain =
        |line: String| format!("version = 1\n[[retain]]\nrepository = \"r.io/a/b\"\n{line}\n");
    let plans = [
        format!("version = 1\n[[copy]]\nfrom = \"r.io/{c}\"\nto = \"r.io/c/d\"\n"),
        format!("version = 1\n[[copy]]\nfrom = \"{c}\"\nto = \"r.io/c/d\"\n"),
        format!("version = 1\n[[copy]]\nfrom = \"r.io/a/b\"\nto = \"r.io/c/d:{c}!\"\n"),
        format!("version = 1\n[[copy]]\nfrom = \"r.io/a/b@sha256:{c}\"\nto = \"r.io/c/d\"\n"),
        format!("version = 1\n[[copy]]\nfrom = \"{c}.io:x/a/b\"\nto = \"r.io/c/d\"\n"),
        format!("version = 1\n[[copy]]\nfrom = \"r.io/{c}/*\"\nto = \"r.io/c/*\"\n"),
        format!("version = 1\n[[copy]]\nfrom = \"r.io/a/*\"\nto = \"r.io/{c}\"\n"),
        format!("version = 1\n[[copy]]\nfrom = \"https://{c}\"\nto = \"r.io/c/d\"\n"),
        format!("version = 1\n[[copy]]\nfrom = \" {c}\"\nto = \"r.io/c/d\"\n"),
        format!("version = 1\nconcurrency = \"{c}\"\n{RULE}"),
        format!("version = \"{c}\"\n{RULE}"),
        format!("version = 1\nimmutable_tags = ['{c}(']\n{RULE}"),
        format!("version = 1\nimmutable_tags = \"{c}\"\n{RULE}"),
        format!("version = 1\nstate = [\"{c}\"]\n{RULE}"),
        format!("version = 1\n{RULE}[registry.\"r.io\"]\nauth = \"{c}\"\n"),
        registry(format!(
            "auth = {{ username = \"u\", password_env = [\"{c}\"] }}"
        )),
        registry(format!("auth = {{ username = \"{c}\", config = \"x\" }}")),
        registry(format!("auth = {{ anonymous = \"{c}\" }}")),
        registry(format!("insecure = \"{c}\"")),
        registry(format!("endpoint = \"{c}\"")),
        registry(format!("endpoint = \"https://user:{c}@r.io\"")),
        registry(format!("endpoint = \"ftp://{c}\"")),
        registry(format!("endpoint = \"http://{c}\"")),
        registry(format!("endpoint = \"https://r.io/{c}\"")),
        registry(format!("endpoint = \"https://r.io/?{c}\"")),
        registry(format!("endpoint = \"https://r.io/#{c}\"")),
        registry(format!("api = \"https://{c}:x\"")),
        registry(format!("ca_file = \"/nonexistent/{c}.pem\"")),
        registry(format!("flavor = \"{c}\"")),
        registry(format!("max_connections = \"{c}\"")),
        registry(format!("retries = \"{c}\"")),
        registry(format!("stall_timeout = \"{c}\"")),
        registry(format!("stall_timeout = \"5{c}\"")),
        registry(format!("stall_timeout = \"5 s {c}\"")),
        registry(format!("rate_limit = \"{c}\"")),
        registry(format!("rate_limit = {{ requests_per_second = \"{c}\" }}")),
        registry(format!(
            "rate_limit = {{ requests_per_second = 1, burst = \"{c}\" }}"
        )),
        copy(format!("tags = \"{c}\"")),
        copy(format!("tags = {{ include = ['{c}('] }}")),
        copy(format!("tags = {{ exclude = ['x', '{c}['] }}")),
        copy(format!("tags = {{ exclude = \"{c}\" }}")),
        copy(format!("tags = {{ semver = \"{c}\" }}")),
        copy(format!("tags = {{ semver = \">=1, {c}\" }}")),
        copy(format!("tags = {{ semver = \"1.{c}\" }}")),
        copy(format!("tags = {{ newest = \"{c}\" }}")),
        copy(format!("referrers = \"{c}\"")),
        copy(format!("referrers = {{ artifact_types = [\"{c}\"] }}")),
        copy(format!("referrers = {{ artifact_types = \"{c}\" }}")),
        copy(format!("platforms = \"{c}\"")),
        copy(format!(
            "platforms = [\"linux/{c}!\"]\nplatform_mode = \"sparse\""
        )),
        copy(format!(
            "platforms = [\"linux/{c}\", \"linux/{c}\"]\nplatform_mode = \"sparse\""
        )),
        copy(format!(
            "platforms = [\"linux/amd64\"]\nplatform_mode = \"{c}\""
        )),
        copy(format!("platform_mode = \"{c}\"")),
        copy(format!("visibility = \"{c}\"")),
        format!("version = 1\n[[retain]]\nrepository = \"{c}\"\n"),
        format!("version = 1\n[[retain]]\nrepository = \"r.io/a:{c}\"\n"),
        retain(format!("keep_newest = \"{c}\"")),
        retain(format!("keep_tags = ['{c}(']")),
        retain(format!("delete_tags = ['{c}(']")),
        retain(format!("older_than = \"{c}\"")),
        retain(format!("older_than = \"30{c}\"")),
        retain(format!("untagged = \"{c}\"")),
        retain(format!("max_deletions = \"{c}\"")),
        // Syntax errors around a secret: an unclosed string, a bare word.
        format!("version = 1\npassword = \"{c}\n{RULE}"),
        format!("version = 1\ntoken = {c}\n{RULE}"),
        format!("version = 1\n{RULE}tags = {{ include = ['{c}' }}\n"),
        format!("version = 1\n\"{c}\" = = 1\n"),
    ];
    for text in plans {
        refused_quietly(&text);
    }
}

/// Every field of every table, given a value of the wrong type: the message names the
/// field, what it expects in words (with its range), and what was found; nothing of Rust.
#[test]
fn type_errors_say_what_is_expected() {
    let c = CANARY;
    // A table where a string belongs, a string anywhere else.
    const STRINGS: &[&str] = &[
        "state",
        "recheck_after",
        "registry.*.auth.username",
        "registry.*.auth.password_env",
        "registry.*.auth.password_file",
        "registry.*.auth.config",
        "registry.*.ca_file",
        "registry.*.endpoint",
        "registry.*.api",
        "registry.*.flavor",
        "registry.*.stall_timeout",
        "copy.from",
        "copy.to",
        "copy.platform_mode",
        "copy.visibility",
        "copy.tags.semver",
        "retain.repository",
        "retain.older_than",
        "retain.untagged_grace",
    ];
    let wrong = |shape: &str| match STRINGS.contains(&shape) {
        true => format!("{{ x = \"{c}\" }}"),
        false => format!("\"{c}\""),
    };
    let mut checked = 0;
    for table in [
        "",
        "registry.*",
        "registry.*.auth",
        "registry.*.rate_limit",
        "copy",
        "copy.tags",
        "retain",
    ] {
        for field in fields(table).unwrap() {
            let shape = if table.is_empty() {
                field.to_string()
            } else {
                format!("{table}.{field}")
            };
            if [
                "registry",
                "copy",
                "retain",
                "copy.referrers",
                "copy.platforms",
                "copy.prune",
            ]
            .contains(&shape.as_str())
            {
                continue; // tables of tables, and values ferry reads itself
            }
            let v = wrong(&shape);
            let text = match table {
                "" if *field == "version" => format!("version = {v}\n{RULE}"),
                "" => format!("version = 1\n{field} = {v}\n{RULE}"),
                "registry.*" => format!("version = 1\n{RULE}[registry.\"r.io\"]\n{field} = {v}\n"),
                "registry.*.auth" => format!("version = 1\n{RULE}[registry.\"r.io\".auth]\n{field} = {v}\n"),
                "registry.*.rate_limit" if *field == "requests_per_second" => format!("version = 1\n{RULE}[registry.\"r.io\".rate_limit]\n{field} = {v}\n"),
                "registry.*.rate_limit" => format!("version = 1\n{RULE}[registry.\"r.io\".rate_limit]\nrequests_per_second = 1\n{field} = {v}\n"),
                "copy" if ["from", "to"].contains(field) => {
                    let (from, to) = if *field == "from" { (v.clone(), "\"r.io/c/d\"".into()) } else { ("\"r.io/a/b\"".into(), v.clone()) };
                    format!("version = 1\n[[copy]]\nfrom = {from}\nto = {to}\n")
                }
                "copy" => format!("version = 1\n{RULE}{field} = {v}\n"),
                "copy.tags" => format!("version = 1\n{RULE}[copy.tags]\n{field} = {v}\n"),
                "retain" if *field == "repository" => format!("version = 1\n[[retain]]\nrepository = {v}\n"),
                "retain" => format!("version = 1\n[[retain]]\nrepository = \"r.io/a/b\"\n{field} = {v}\n"),
                _ => unreachable!(),
            };
            let e = refused_quietly(&text);
            let wanted = expected(&shape).unwrap();
            assert!(
                e.contains(&format!("{field}: expected {wanted}, found a")),
                "{shape}: {e}\n--- plan\n{text}"
            );
            for word in RUST {
                assert!(!e.contains(word), "{shape}: `{word}` in {e}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 30, "{checked}");
    // Ranges are named where a field has one; lists say what each entry must be.
    let e = refused_quietly(&format!("version = 1\nconcurrency = \"eight\"\n{RULE}"));
    assert_eq!(
        e,
        "p.toml:2:15: concurrency: expected an integer from 1 to 256, found a string"
    );
    let e = refused_quietly(&format!("version = 1\nconcurrency = 2.5\n{RULE}"));
    assert!(e.ends_with("found a decimal number"), "{e}");
    let e = refused_quietly(&format!("version = 1\nimmutable_tags = ['^v', 3]\n{RULE}"));
    assert_eq!(e, "p.toml:2:25: immutable_tags: expected a regular expression (a string) in the list, found an integer");
    let e = refused_quietly(&format!(
        "version = 1\n{RULE}[registry.\"r.io\"]\nmax_connections = true\n"
    ));
    assert!(e.contains("registry.\"r.io\".max_connections: expected an integer from 1 to 1024, found a boolean"), "{e}");
    let e = refused_quietly(&format!(
        "version = 1\n{RULE}[registry.\"r.io\"]\nretries = -1\n"
    ));
    assert!(e.contains("retries = -1: must be between 0 and 100"), "{e}");
    let e = refused_quietly(&format!("version = 1\n{RULE}[[copy.tags]]\nnewest = 1\n"));
    assert!(e.contains("copy.tags: expected a table: {"), "{e}");
    assert!(e.ends_with("found an array of tables"), "{e}");
    let e = refused_quietly("version = 1\ncopy = 3\n");
    assert!(
        e.contains("copy: expected [[copy]] tables, found an integer"),
        "{e}"
    );
    let e = refused_quietly("version = 1\n[registry]\nx = 3\n");
    assert!(
        e.contains("registry.x: expected a table of settings"),
        "{e}"
    );
    let e = refused_quietly("version = 1\n[[copy]]\nfrom = \"r.io/a\"\n");
    assert_eq!(e, "p.toml:2:1: [[copy]]: missing field `to`");
    let e = refused_quietly(&format!(
        "version = 1\n{RULE}[registry.\"r.io\"]\nrate_limit = {{ burst = 2 }}\n"
    ));
    assert!(
        e.contains("[registry.\"r.io\".rate_limit]: missing field `requests_per_second`"),
        "{e}"
    );
}

/// The schema's field lists are the `Raw*` types' own: serde lists a table's fields when
/// it refuses an unknown one.
#[test]
fn schema_fields_match_the_raw_types() {
    let cases = [
        ("", "version = 1\nzz = 1\n".to_string()),
        (
            "registry.*",
            "version = 1\n[registry.\"r.io\"]\nzz = 1\n".into(),
        ),
        (
            "registry.*.auth",
            "version = 1\n[registry.\"r.io\".auth]\nzz = 1\n".into(),
        ),
        (
            "registry.*.rate_limit",
            "version = 1\n[registry.\"r.io\".rate_limit]\nrequests_per_second = 1\nzz = 1\n".into(),
        ),
        ("copy", format!("version = 1\n{RULE}zz = 1\n")),
        (
            "copy.tags",
            format!("version = 1\n{RULE}[copy.tags]\nzz = 1\n"),
        ),
        (
            "retain",
            "version = 1\n[[retain]]\nrepository = \"r.io/a\"\nzz = 1\n".into(),
        ),
        ("in_use", "version = 1\n[in_use]\nzz = 1\n".into()),
        (
            "in_use.kubernetes",
            "version = 1\n[[in_use.kubernetes]]\nin_cluster = true\nzz = 1\n".into(),
        ),
        (
            "in_use.argocd",
            "version = 1\n[[in_use.argocd]]\nin_cluster = true\nzz = 1\n".into(),
        ),
        (
            "in_use.git",
            "version = 1\n[[in_use.git]]\npath = \"g\"\nfiles = []\nzz = 1\n".into(),
        ),
    ];
    for (shape, text) in cases {
        let serde = toml::from_str::<super::super::RawPlan>(&text)
            .err()
            .expect("refused")
            .message()
            .to_string();
        let list: Vec<String> = fields(shape)
            .unwrap()
            .iter()
            .map(|f| format!("`{f}`"))
            .collect();
        // serde's wording: "`a` or `b`" for two, "one of `a`, `b`, `c`" for more.
        let wanted = match list.as_slice() {
            [a, b] => format!("{a} or {b}"),
            _ => format!("one of {}", list.join(", ")),
        };
        assert_eq!(
            serde,
            format!("unknown field `zz`, expected {wanted}"),
            "{shape}"
        );
    }
}

#[test]
fn not_utf8_gets_the_position_of_the_first_bad_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(&path, b"version = 1\n# caf\xc3\xa9 \xff\xfe\n").unwrap();
    let e = Plan::load(&path).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "{}:2:8: not UTF-8 text (byte 0xFF); save the plan as UTF-8",
            path.display()
        )
    );
    std::fs::write(&path, b"\xc3").unwrap();
    let e = Plan::load(&path).unwrap_err().to_string();
    assert!(
        e.ends_with("p.toml:1:1: not UTF-8 text (byte 0xC3); save the plan as UTF-8"),
        "{e}"
    );
}

#[test]
fn a_plan_without_rules_is_refused() {
    let e = err("version = 1\n[registry.\"r.io\"]\ninsecure = true\n");
    assert_eq!(
        e,
        "p.toml:4:1: the plan has no [[copy]] or [[retain]] rule: nothing to do"
    );
    let e = err("version = 1");
    assert!(e.starts_with("p.toml:1:12: the plan has no"), "{e}");
    // Empty tables of rules are no rules either, and a misspelt one is an unknown field.
    let e = err("version = 1\ncopy = []\n");
    assert!(e.contains("has no [[copy]]"), "{e}");
    let e = err("version = 1\n[[copies]]\nfrom = \"a/b\"\n");
    assert!(e.contains("unknown field `copies` in the top level"), "{e}");
}

#[test]
fn semver_and_duration_reasons_keep_only_operators() {
    let reason = |s: &str| semver_reason(&semver::VersionReq::parse(s).unwrap_err());
    assert_eq!(
        reason(">>1"),
        "unexpected character '>' while parsing major version number"
    );
    assert_eq!(
        reason("Secret"),
        "unexpected character while parsing major version number"
    );
    assert!(!reason("1.2.3.Q").contains('Q'), "{}", reason("1.2.3.Q"));
    assert!(!reason("=1 Q").contains('Q'), "{}", reason("=1 Q"));
    let reason = |s: &str| duration_reason(s, &humantime::parse_duration(s).unwrap_err());
    assert_eq!(
        reason("5Qx"),
        "unknown unit at position 2 (units: s, m, h, d, w, and their long names)"
    );
    assert_eq!(reason("Q"), "a number is expected at position 1");
    assert_eq!(reason(""), "it is empty");
}

/// Issue 23, item 4: `{ username, password_file }` is a form of its own; mixed with another
/// form, empty, or without a user name it is refused at its position, naming the field and
/// never the path.
#[test]
fn password_file_is_a_form_of_its_own() {
    let auth = |a: &str| format!("version = 1\n{RULE}[registry.\"r.io\"]\nauth = {a}\n");
    let ok = Plan::from_str(
        Path::new("p.toml"),
        &auth("{ username = \"u\", password_file = \"secrets/pw\" }"),
    )
    .unwrap();
    assert_eq!(
        ok.registry("r.io").auth,
        crate::registry::config::AuthSettings::PasswordFile {
            username: "u".into(),
            path: "secrets/pw".into()
        }
    );
    for (a, says) in [
        (
            format!("{{ username = \"u\", password_file = \"{CANARY}\", password_env = \"V\" }}"),
            "use one of",
        ),
        (
            format!("{{ username = \"u\", password_file = \"{CANARY}\", config = \"c\" }}"),
            "use one of",
        ),
        (
            format!("{{ password_file = \"{CANARY}\" }}"),
            "needs a username",
        ),
        (
            "{ username = \"u\", password_file = \"\" }".to_string(),
            "must not be empty",
        ),
    ] {
        let e = err(&auth(&a));
        assert!(e.starts_with("p.toml:6:8: registry.\"r.io\".auth: "), "{e}");
        assert!(e.contains(says) && !e.contains(CANARY), "{e}");
    }
}

/// `retain_runs` (issue 24, "SQLite at scale"): how many runs the checkpoint keeps, 30 unless
/// the plan says otherwise; at least one (the run that just ended).
#[test]
fn retain_runs_is_a_count_of_runs() {
    let parse = |text: &str| Plan::from_str(Path::new("p.toml"), text).unwrap();
    assert_eq!(parse(&format!("version = 1\n{RULE}")).retain_runs, 30);
    assert_eq!(
        parse(&format!("version = 1\nretain_runs = 7\n{RULE}")).retain_runs,
        7
    );
    let e = refused_quietly(&format!("version = 1\nretain_runs = 0\n{RULE}"));
    assert!(
        e.contains("retain_runs = 0: must be between 1 and 1000000"),
        "{e}"
    );
    let e = refused_quietly(&format!("version = 1\nretain_runs = \"all\"\n{RULE}"));
    assert!(
        e.ends_with("retain_runs: expected an integer from 1 to 1000000, found a string"),
        "{e}"
    );
}
