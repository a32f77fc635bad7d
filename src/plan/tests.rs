//! Plan validation: every field, every message.

use super::*;
use crate::copy::copy_rule::{PlatformMode, Referrers};
use crate::registry::config::{AuthSettings, Flavor};

/// A rule, for plans whose subject is something else: a plan without one is refused.
const RULE: &str = "[[copy]]\nfrom = \"r.io/a/b\"\nto = \"r.io/c/d\"\n";

fn parse(text: &str) -> Result<Plan, PlanError> {
    Plan::from_str(Path::new("p.toml"), text)
}

fn err(text: &str) -> String {
    parse(text).expect_err("plan should be refused").to_string()
}

#[test]
fn referrers_and_platforms_are_validated() {
    let copy = |extra: &str| {
        format!("version = 1\n[[copy]]\nfrom = \"r.io/a/b\"\nto = \"r.io/c/d\"\n{extra}\n")
    };
    let p = parse(&copy(
        "referrers = { artifact_types = ['application/vnd.dsse.envelope.v1+json'] }\nplatforms = ['linux/amd64', 'linux/arm/v7']\nplatform_mode = 'rewrite'",
    ))
    .unwrap();
    let rule = &p.copies[0];
    assert_eq!(
        rule.referrers,
        Referrers::Only(vec!["application/vnd.dsse.envelope.v1+json".into()])
    );
    let platforms = rule.platforms.as_ref().unwrap();
    assert_eq!(platforms.mode, PlatformMode::Rewrite);
    assert_eq!(platforms.to_string(), "linux/amd64,linux/arm/v7 (rewrite)");
    assert_eq!(
        parse(&copy("")).unwrap().copies[0].referrers,
        Referrers::All
    );
    assert_eq!(
        parse(&copy("referrers = false")).unwrap().copies[0].referrers,
        Referrers::None
    );
    assert!(parse(&copy("platforms = 'all'")).unwrap().copies[0]
        .platforms
        .is_none());

    let e = err(&copy("platforms = ['linux/amd64']"));
    assert!(
        e.contains("p.toml:5:13") && e.contains("platform_mode"),
        "{e}"
    );
    let e = err(&copy("platform_mode = 'sparse'"));
    assert!(
        e.contains("copy.platform_mode") && e.contains("only with"),
        "{e}"
    );
    let e = err(&copy("platforms = ['linux/amd64']\nplatform_mode = 'thin'"));
    assert!(
        e.contains("copy.platform_mode: expected \"sparse\"") && !e.contains("thin"),
        "{e}"
    );
    let e = err(&copy("platforms = ['linux']\nplatform_mode = 'sparse'"));
    assert!(
        e.contains("copy.platforms") && e.contains("os/architecture"),
        "{e}"
    );
    let e = err(&copy("platforms = []\nplatform_mode = 'sparse'"));
    assert!(e.contains("copy.platforms"), "{e}");
    let e = err(&copy("referrers = 'yes'"));
    assert!(
        e.contains("copy.referrers") && e.contains("artifact_types"),
        "{e}"
    );
    let e = err(&copy("referrers = { artifact_types = [] }"));
    assert!(e.contains("referrers = false"), "{e}");
    let e = err(&copy("referrers = { artifact_types = ['sig'] }"));
    assert!(e.contains("not a media type"), "{e}");
    let e = err(&copy("referrers = { types = ['a/b'] }"));
    assert!(e.contains("unknown field `types`"), "{e}");
}

#[test]
fn issue_example_parses() {
    let plan = parse(
        r#"
version = 1

[registry."docker.io"]
auth = { username = "me", password_env = "DOCKERHUB_TOKEN" }

[registry."ghcr.io"]
auth = { config = "/var/run/secrets/ghcr/.dockerconfigjson" }

[registry."127.0.0.1:5001"]
insecure = true

[[copy]]
from = "docker.io/myorg/api"
to   = "ghcr.io/myorg/api"
tags = { include = ['^v\d+\.\d+\.\d+$', '^latest$'], exclude = ['-rc\d*$'], semver = ">=1.2, <3", newest = 20 }

[[copy]]
from = "docker.io/myorg/*"
to   = "ghcr.io/myorg/*"

[[copy]]
from = "docker.io/library/nginx:1.27.3"
to   = "ghcr.io/myorg/mirror/nginx"
"#,
    )
    .unwrap();
    assert_eq!(plan.copies.len(), 3);
    assert_eq!(plan.copies[0].tags.newest, Some(20));
    assert_eq!(plan.copies[0].line, 14);
    assert!(plan.registry("127.0.0.1:5001").insecure);
    assert_eq!(
        plan.registry("docker.io").auth,
        AuthSettings::Basic {
            username: "me".into(),
            password_env: "DOCKERHUB_TOKEN".into()
        }
    );
    assert_eq!(plan.registry("quay.io"), RegistrySettings::default());
    assert_eq!(plan.registry("ghcr.io").flavor, Flavor::Ghcr);
    assert_eq!(plan.hosts(), vec!["127.0.0.1:5001", "docker.io", "ghcr.io"]);
}

#[test]
fn state_and_immutable_tags() {
    let p = parse(&format!("version = 1\n{RULE}")).unwrap();
    assert_eq!(p.state, None);
    assert!(p.immutable_tags[0].is_match("v1.2.3"));
    assert!(p.immutable_tags[0].is_match("1.2.3-rc.1"));
    assert!(!p.immutable_tags[0].is_match("latest"));
    assert!(!p.immutable_tags[0].is_match("1.2"));
    let p = parse(&format!(
        "version = 1\nstate = \"/var/lib/ferry/s.db\"\nimmutable_tags = ['^release-']\n{RULE}"
    ))
    .unwrap();
    assert_eq!(p.state.as_deref(), Some(Path::new("/var/lib/ferry/s.db")));
    assert!(p.immutable_tags[0].is_match("release-7"));
    let p = parse(&format!("version = 1\nimmutable_tags = []\n{RULE}")).unwrap();
    assert!(p.immutable_tags.is_empty());
    let e = err("version = 1\nimmutable_tags = ['(']\n");
    assert!(
        e.starts_with("p.toml:2:19: immutable_tags: invalid regular expression"),
        "{e}"
    );
}

#[test]
fn registry_limits() {
    let p = parse(&format!("version = 1\n{RULE}[registry.\"docker.io\"]\nrate_limit = {{ requests_per_second = 5, burst = 10 }}\nretries = 0\nstall_timeout = \"2m\"\n")).unwrap();
    let r = p.registry("docker.io");
    assert_eq!(r.rate_limit.unwrap().requests_per_second.get(), 5);
    assert_eq!(r.rate_limit.unwrap().burst.get(), 10);
    assert_eq!(r.retries, 0);
    assert_eq!(r.stall_timeout, Duration::from_secs(120));
    assert!(
        err("version = 1\n[registry.\"x.io\"]\nstall_timeout = \"soon\"\n")
            .contains("not a duration")
    );
    assert!(
        err("version = 1\n[registry.\"x.io\"]\nrate_limit = { requests_per_second = 0 }\n")
            .contains("requests_per_second = 0")
    );
}

#[test]
fn retain_blocks() {
    let p = parse(
        "version = 1\n[[retain]]\nrepository = \"reg.example:5000/org/*\"\nkeep_newest = 10\nkeep_tags = ['^latest$']\ndelete_tags = ['^pr-\\d+$']\nolder_than = \"30d\"\nuntagged = true\nmax_deletions = 100\n",
    )
    .unwrap();
    let r = &p.retains[0];
    assert_eq!(r.rule.keep_newest, 10);
    assert_eq!(r.rule.older_than, Some(Duration::from_secs(30 * 86400)));
    assert_eq!(r.rule.max_deletions, Some(100));
    assert!(r.rule.untagged);
    assert_eq!(p.hosts(), vec!["reg.example:5000"]);
    let p = parse("version = 1\n[[retain]]\nrepository = \"docker.io/org/app\"\n").unwrap();
    assert_eq!(p.registry("docker.io").flavor, Flavor::Dockerhub);
    let p = parse("version = 1\n[[retain]]\nrepository = \"ghcr.io/org/app\"\n").unwrap();
    assert_eq!(p.registry("ghcr.io").flavor, Flavor::Ghcr);
    assert!(
        err("version = 1\n[[retain]]\nrepository = \"ghcr.io/app\"\n").contains("OWNER/PACKAGE")
    );
    let p = parse(&format!(
        "version = 1\n{RULE}[registry.\"127.0.0.1:5000\"]\ninsecure = true\nflavor = \"ghcr\"\n"
    ))
    .unwrap();
    assert_eq!(p.registry("127.0.0.1:5000").flavor, Flavor::Ghcr);
    let e = err("version = 1\n[registry.\"r.io\"]\nflavor = \"quay\"\n");
    assert_eq!(
        e,
        "p.toml:3:10: registry.\"r.io\".flavor: expected \"distribution\", \"ghcr\" or \"dockerhub\""
    );
    assert!(
        err("version = 1\n[[retain]]\nrepository = \"r.io/org/app:v1\"\n")
            .contains("not a tag or digest")
    );
    assert!(err(
        "version = 1\n[[retain]]\nrepository = \"r.io/org/app\"\nolder_than = \"a while\"\n"
    )
    .contains("retain.older_than"));
    assert!(
        err("version = 1\n[[retain]]\nrepository = \"r.io/org/app\"\nkeep = 3\n")
            .contains("unknown field `keep`")
    );
}

#[test]
fn ca_file_must_exist_and_hold_pem_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let ca = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let good = dir.path().join("ca.pem");
    std::fs::write(&good, ca.pem()).unwrap();
    let section = |path: &Path| {
        format!(
            "version = 1\n{RULE}[registry.\"r.example\"]\nca_file = {:?}\n",
            path.display().to_string()
        )
    };
    let p = parse(&section(&good)).unwrap();
    assert_eq!(
        p.registry("r.example").ca_file.as_deref(),
        Some(good.as_path())
    );
    assert_eq!(RegistrySettings::default().ca_file, None);

    let der = dir.path().join("ca.der");
    std::fs::write(&der, ca.der()).unwrap();
    let e = err(&section(&der));
    assert!(
        e.starts_with("p.toml:6:11: registry.\"r.example\".ca_file: holds no PEM certificate"),
        "{e}"
    );
    let e = err(&section(&dir.path().join("missing.pem")));
    assert!(
        e.starts_with("p.toml:6:11: registry.\"r.example\".ca_file: cannot read it"),
        "{e}"
    );
    assert!(!e.contains("missing.pem"), "the path is the user's: {e}");
    assert!(e.contains("cannot read it"), "{e}");
    let e = err(&format!("{}insecure = true\n", section(&good)));
    assert!(e.contains("would be ignored"), "{e}");
}

#[test]
fn version_is_checked() {
    assert_eq!(
        err(""),
        "p.toml:1:1: version: missing: a plan starts with `version = 1`"
    );
    let e = err("version = 2");
    assert!(e.starts_with("p.toml:1:11: version = 2:"), "{e}");
}

#[test]
fn unknown_fields_name_line_and_field() {
    let e = err("version = 1\n[[copy]]\nfrom = \"a/b\"\nto = \"c/d\"\ntag = 1\n");
    assert_eq!(
        e,
        "p.toml:5:1: unknown field `tag` in [[copy]]; expected one of `from`, `to`, `tags`, `referrers`, `platforms`, `platform_mode`, `prune`, `allow_empty`, `visibility`"
    );
    let e = err("version = 1\n[registry.\"ghcr.io\"]\ninsecur = true\n");
    assert!(
        e.starts_with("p.toml:3:1: unknown field `insecur` in [registry.\"ghcr.io\"]; expected one of `auth`, `insecure`,"),
        "{e}"
    );
    // Columns count characters, as editors do.
    let base = "version = 1\n[[copy]]\nfrom = \"a/b\"\nto = \"c/d\"\n";
    let e = err(&format!(
        "{base}tags = {{ exclude = ['ü'], include = ['('] }}\n"
    ));
    assert!(e.starts_with("p.toml:5:38: copy.tags.include"), "{e}");
    let e = err(&format!("{base}tags = {{ exclude = ['ü'], x = 2 }}\n"));
    assert!(
        e.starts_with("p.toml:5:27: unknown field `x` in [copy.tags]; expected one of `include`"),
        "{e}"
    );
}

#[test]
fn bad_values_name_file_line_column_and_field() {
    let e = err(
        "version = 1\n[[copy]]\nfrom = \"a/b\"\nto = \"c/d\"\ntags = { include = ['(unclosed'] }\n",
    );
    assert_eq!(
        e,
        "p.toml:5:21: copy.tags.include: invalid regular expression: unclosed group"
    );
    let e =
        err("version = 1\n[[copy]]\nfrom = \"a/b\"\nto = \"c/d\"\ntags = { semver = \"=>1\" }\n");
    assert_eq!(
        e,
        "p.toml:5:19: copy.tags.semver: invalid semver constraint: unexpected character '>' while parsing major version number"
    );
    let e = err("version = 1\n[[copy]]\nfrom = \"a/B\"\nto = \"c/d\"\n");
    assert_eq!(e, "p.toml:3:8: copy.from: the repository is not valid (lowercase letters, digits, separators . _ __ -, components joined by /)");
    let e = err("version = 1\n[[copy]]\nfrom = \"a/b\"\nto = \"c/d\"\ntags = { newest = 0 }\n");
    assert!(e.contains("copy.tags.newest = 0: must be between 1"), "{e}");
}

#[test]
fn rule_shapes_are_checked() {
    let base = "version = 1\n[[copy]]\n";
    assert!(err(&format!(
        "{base}from = \"ghcr.io/o/*\"\nto = \"quay.io/o/x\"\n"
    ))
    .contains("must be one too"));
    assert!(err(&format!(
        "{base}from = \"ghcr.io/o/x\"\nto = \"quay.io/o/*\"\n"
    ))
    .contains("`from` is not"));
    assert!(err(&format!(
        "{base}from = \"ghcr.io/o/x\"\nto = \"quay.io/o/x:v1\"\n"
    ))
    .contains("renames one image"));
    assert!(err(&format!(
        "{base}from = \"ghcr.io/o/x:v1\"\nto = \"quay.io/o/x\"\ntags = {{ newest = 1 }}\n"
    ))
    .contains("tag filters apply"));
    assert!(err(&format!(
        "{base}from = \"ghcr.io/o/x@sha256:{}\"\nto = \"oci:out\"\n",
        "0".repeat(64)
    ))
    .contains("give the target a `:tag`"));
    assert!(parse(&format!(
        "{base}from = \"ghcr.io/o/x:v1\"\nto = \"quay.io/o/x:prod\"\n"
    ))
    .is_ok());
}

#[test]
fn auth_shapes_and_secret_hygiene() {
    let e = err("version = 1\n[registry.\"ghcr.io\"]\nauth = { username = \"u\" }\n");
    assert!(e.contains("registry.\"ghcr.io\".auth"), "{e}");
    let e = err("version = 1\n[registry.\"ghcr.io\"]\nauth = { password = \"hunter2\" }\n");
    assert!(e.contains("unknown field `password`"), "{e}");
    let e = err("version = 1\n[registry.\"ghcr.io\"]\nendpoint = \"https://u:hunter2@x.io\"\n");
    assert!(!e.contains("hunter2"), "{e}");
    let e = err("version = 1\n[registry.\"ghcr.io\"]\nendpoint = \"http://x.io\"\n");
    assert!(e.contains("insecure = true"), "{e}");
    let e = err("version = 1\n[registry.\"docker.io\"]\n[registry.\"index.docker.io\"]\n");
    assert!(e.contains("given twice"), "{e}");
}

/// Issue 21 (what was seen, 6): a path or query in `endpoint` was dropped silently.
#[test]
fn an_endpoint_with_a_path_or_query_is_refused() {
    let with =
        |url: &str| format!("version = 1\n{RULE}[registry.\"r.io\"]\nendpoint = \"{url}\"\n");
    for url in [
        "https://mirror.example/some/path",
        "https://mirror.example/v2/",
        "https://mirror.example/?x=1",
        "https://mirror.example?x=1",
        "https://mirror.example/#frag",
    ] {
        let e = err(&with(url));
        assert!(
            e.starts_with("p.toml:6:12: registry.\"r.io\".endpoint: ")
                && e.contains("scheme, host and port only"),
            "{url}: {e}"
        );
        assert!(!e.contains("mirror.example"), "{e}");
    }
    for url in [
        "https://mirror.example",
        "https://mirror.example/",
        "https://m.example:5000/",
    ] {
        let p = parse(&with(url)).unwrap();
        assert!(p.registry("r.io").endpoint.is_some(), "{url}");
    }
}

#[test]
fn in_use_is_validated_without_echoing_values() {
    use crate::inuse::sources::KubeConfig;
    let base = "version = 1\n[[retain]]\nrepository = \"r.io/a\"\nkeep_tags = ['x']\n";
    let plan = parse(&format!(
        "{base}[in_use]\nkubernetes = [\n  {{ in_cluster = true }},\n  {{ kubeconfig = \"/k/config\", context = \"prod-eu\", namespaces = [\"prod\", \"kube-system\"] }},\n]\nfiles = [\"deploy/**/*.yaml\"]\naliases = {{ \"mirror.internal/hub\" = \"index.docker.io\", \"m.io\" = \"ghcr.io\" }}\n"
    ))
    .unwrap();
    let InUse {
        kubernetes,
        files,
        aliases,
        ..
    } = plan.in_use;
    assert_eq!(kubernetes.len(), 2);
    assert_eq!(kubernetes[0].config, KubeConfig::InCluster);
    assert_eq!(
        kubernetes[1].config,
        KubeConfig::File {
            path: "/k/config".into(),
            context: Some("prod-eu".into())
        }
    );
    assert_eq!(kubernetes[1].namespaces, vec!["prod", "kube-system"]);
    assert_eq!(
        (files[0].pattern.as_str(), files[0].line),
        ("deploy/**/*.yaml", 10)
    );
    // Longest prefix first; Docker Hub's other names are docker.io.
    assert_eq!(
        aliases,
        vec![
            ("mirror.internal/hub".to_string(), "docker.io".to_string()),
            ("m.io".to_string(), "ghcr.io".to_string())
        ]
    );
    assert!(parse(base).unwrap().in_use.is_empty());

    for (bad, says) in [
        (
            "kubernetes = [{ in_cluster = true, kubeconfig = \"secret-path\" }]",
            "each entry is",
        ),
        (
            "kubernetes = [{ context = \"secret-ctx\" }]",
            "each entry is",
        ),
        (
            "kubernetes = [{ in_cluster = true, context = \"secret-ctx\" }]",
            "belongs to a kubeconfig",
        ),
        (
            "kubernetes = [{ in_cluster = true, namespaces = [\"Secret_NS\"] }]",
            "DNS label",
        ),
        ("files = [\"secret[\"]", "not a glob pattern"),
        (
            "aliases = { \"secret host/x\" = \"docker.io\" }",
            "a key is a registry host",
        ),
        (
            "aliases = { \"m.io\" = \"secret value/x\" }",
            "a value is the registry host",
        ),
        (
            "kubernetes = [{ in_cluster = true, zz = 1 }]",
            "unknown field `zz`",
        ),
    ] {
        let e = err(&format!("{base}[in_use]\n{bad}\n"));
        assert!(e.contains(says), "{bad}: {e}");
        assert!(e.contains("p.toml:6:"), "{bad}: {e}");
        assert!(!e.to_lowercase().contains("secret"), "{bad}: {e}");
    }
}

#[test]
fn prune_is_a_switch_or_its_valves() {
    let rule = |prune: &str| {
        format!("version = 1\n[[copy]]\nfrom = \"r.io/a/*\"\nto = \"s.io/b/*\"\nprune = {prune}\n")
    };
    let prune_of = |text: &str| {
        let plan = Plan::from_str(Path::new("p.toml"), text).unwrap();
        assert_eq!(plan.copies[0].keep_listings, plan.prune(1).is_some());
        plan.prune(1).cloned()
    };
    assert_eq!(prune_of(&rule("false")), None);
    assert_eq!(prune_of(&rule("true")), Some(Prune::default()));
    assert_eq!(
        prune_of(&rule("{ max_deletions = 50, older_than = \"7d\" }")),
        Some(Prune {
            max_deletions: Some(50),
            older_than: Some(std::time::Duration::from_secs(7 * 86_400)),
        })
    );
    assert_eq!(
        err(&rule("\"yes\"")),
        "p.toml:5:9: copy.prune: expected `true`, `false` or `{ max_deletions = N, older_than = \"7d\" }`"
    );
    assert_eq!(
        err(&rule("{ max = 1 }")),
        "p.toml:5:9: copy.prune: unknown field `max`; expected `true`, `false` or `{ max_deletions = N, older_than = \"7d\" }`"
    );
    assert_eq!(
        err(&rule("{ max_deletions = -1 }")),
        "p.toml:5:9: copy.prune.max_deletions = -1: must be between 0 and 1000000000"
    );
    let e = err(&rule("{ older_than = \"SECRET-ish\" }"));
    assert!(
        e.starts_with("p.toml:5:9: copy.prune.older_than: not a duration"),
        "{e}"
    );
    assert!(!e.contains("SECRET"), "{e}");
    let one = "version = 1\n[[copy]]\nfrom = \"r.io/a:1\"\nto = \"s.io/b\"\nprune = true\n";
    assert_eq!(
        err(one),
        "p.toml:5:9: copy.prune: pruning applies when `from` is a repository or a wildcard, not one tag or digest"
    );
}

#[test]
fn allow_empty_is_a_switch_of_rules_that_select_many() {
    let rule = |from: &str, value: &str| {
        format!(
            "version = 1\n[[copy]]\nfrom = \"{from}\"\nto = \"s.io/b/*\"\nallow_empty = {value}\n"
        )
    };
    assert!(parse(&rule("r.io/a/*", "true")).unwrap().copies[0].allow_empty);
    assert!(!parse(&rule("r.io/a/*", "false")).unwrap().copies[0].allow_empty);
    let plain = "version = 1\n[[copy]]\nfrom = \"r.io/a\"\nto = \"s.io/b\"\n";
    assert!(!parse(plain).unwrap().copies[0].allow_empty);
    assert_eq!(
        err(&rule("r.io/a/*", "\"yes\"")),
        "p.toml:5:15: copy.allow_empty: expected true or false, found a string"
    );
    let one = "version = 1\n[[copy]]\nfrom = \"r.io/a:1\"\nto = \"s.io/b\"\nallow_empty = true\n";
    assert_eq!(
        err(one),
        "p.toml:5:15: copy.allow_empty: applies when `from` is a repository or a wildcard: one tag or digest selects one image"
    );
}

/// Issue 22: `untagged_grace` is an hour unless the plan says otherwise; "0s" turns it off;
/// a bad value is refused naming file:line:column and the field, never echoing it.
#[test]
fn untagged_grace_defaults_to_an_hour_and_is_validated() {
    let retain = |extra: &str| {
        format!("version = 1\n[[retain]]\nrepository = \"r.io/org/app\"\nuntagged = true\n{extra}")
    };
    let grace = |extra: &str| {
        parse(&retain(extra)).unwrap().retains[0]
            .rule
            .untagged_grace
    };
    assert_eq!(grace(""), Duration::from_secs(3600));
    assert_eq!(
        grace("untagged_grace = \"90m\"\n"),
        Duration::from_secs(5400)
    );
    assert_eq!(grace("untagged_grace = \"0s\"\n"), Duration::ZERO);
    let e = err(&retain("untagged_grace = \"SECRET-ish\"\n"));
    assert!(
        e.starts_with("p.toml:5:18: retain.untagged_grace: not a duration"),
        "{e}"
    );
    assert!(!e.contains("SECRET"), "{e}");
    assert_eq!(
        err(&retain("untagged_grace = 3600\n")),
        "p.toml:5:18: retain.untagged_grace: expected a duration like \"1h\", or \"0s\" for none (a string), found an integer"
    );
}

#[test]
fn lease_settings_and_lease_repositories() {
    // Issue 22, the run lease: where it lives and how long it lasts, and no rule of the plan
    // may name a repository where leases live.
    let p = parse(&format!("version = 1\n{RULE}[registry.\"r.io\"]\nlease = {{ repository = \"ops/ferry-lease\", expiry = \"30s\" }}\n")).unwrap();
    let l = p.registry("r.io").lease;
    assert_eq!(l.repository.as_deref(), Some("ops/ferry-lease"));
    assert_eq!(l.expiry, Duration::from_secs(30));
    assert_eq!(p.registry("x.io").lease.expiry, Duration::from_secs(600));
    let e = err("version = 1\n[registry.\"r.io\"]\nlease = { repository = \"ops/locks\" }\n");
    assert!(
        e.contains("registry.\"r.io\".lease.repository: must end in `ferry-lease`"),
        "{e}"
    );
    let e = err("version = 1\n[registry.\"r.io\"]\nlease = { expiry = \"1s\" }\n");
    assert!(e.contains("lease.expiry: must be at least 3s"), "{e}");
    assert!(!e.contains("1s\""), "the value is not echoed: {e}");

    for (text, field) in [
        (
            "[[retain]]\nrepository = \"r.io/team/ferry-lease\"\n",
            "retain.repository",
        ),
        (
            "[[copy]]\nfrom = \"r.io/team/ferry-lease\"\nto = \"s.io/team/x\"\n",
            "copy.from",
        ),
        (
            "[[copy]]\nfrom = \"r.io/a/b:v1\"\nto = \"s.io/ferry-lease:v1\"\n",
            "copy.to",
        ),
    ] {
        let e = err(&format!("version = 1\n{text}"));
        assert!(
            e.contains(&format!("{field}: holds ferry's run leases")),
            "{e}"
        );
    }
    // A namespace of that name is only a namespace.
    parse("version = 1\n[[retain]]\nrepository = \"r.io/ferry-lease/*\"\n").unwrap();
}
