//! `ferry schema`: the plan's JSON Schema, for editors (issue 25, part 5). Every plan the
//! project ships validates against it, and the faults an editor should flag fail at the
//! field that holds them.

use std::path::PathBuf;

use serde_json::Value;

use crate::common::*;
use crate::plans::configmap_plans;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn validator() -> jsonschema::Validator {
    jsonschema::validator_for(&ferry::plan::json_schema::plan_schema())
        .expect("the generated schema is a valid JSON Schema")
}

/// A TOML plan as the JSON document an editor checks against the schema.
fn as_json(text: &str) -> Value {
    toml::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Where the plan fails the schema: each error's instance path and message.
fn failures(text: &str) -> Vec<(String, String)> {
    let instance = as_json(text);
    validator()
        .iter_errors(&instance)
        .map(|e| (e.instance_path().as_str().to_string(), e.to_string()))
        .collect()
}

#[test]
fn every_plan_the_project_ships_validates_against_the_schema() {
    let validator = validator();
    let mut plans = configmap_plans();
    for entry in std::fs::read_dir(repo_root().join("plans")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) == Some("toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            plans.push((path.display().to_string(), text));
        }
    }
    assert!(plans.len() >= 4, "plans/ and the ConfigMaps: {plans:?}");
    for (name, text) in plans {
        let instance = as_json(&text);
        let errors: Vec<String> = validator
            .iter_errors(&instance)
            .map(|e| format!("{}: {e}", e.instance_path().as_str()))
            .collect();
        assert!(errors.is_empty(), "{name}: {errors:?}");
    }
}

const GOOD: &str = r#"version = 1
concurrency = 8

[registry."ghcr.io"]
auth = { username = "me", password_env = "GHCR_TOKEN" }
flavor = "ghcr"
max_connections = 32
rate_limit = { requests_per_second = 20 }

[[copy]]
from = "docker.io/myorg/*"
to = "ghcr.io/myorg/*"
tags = { include = ['^v\d+'], newest = 5 }
platforms = ["linux/amd64"]
platform_mode = "rewrite"
referrers = { artifact_types = ["application/vnd.dev.cosign.simplesigning.v1+json"] }
prune = { max_deletions = 10, older_than = "7d" }

[[retain]]
repository = "ghcr.io/myorg/*"
keep_newest = 10
untagged = true

[in_use]
kubernetes = [{ in_cluster = true }]
aliases = { "mirror.internal/hub" = "docker.io" }
"#;

#[test]
fn a_plan_using_every_form_validates() {
    assert_eq!(failures(GOOD), Vec::<(String, String)>::new());
}

#[test]
fn an_unknown_field_fails_at_its_table() {
    let text = GOOD.replace("untagged = true", "untagged = true\ncolour = \"blue\"");
    let found = failures(&text);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "/retain/0");
    assert!(found[0].1.contains("colour"), "{found:?}");

    let text = GOOD.replace("flavor = \"ghcr\"", "flavour = \"ghcr\"");
    let found = failures(&text);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "/registry/ghcr.io");
    assert!(found[0].1.contains("flavour"), "{found:?}");
}

#[test]
fn a_wrong_type_fails_at_its_field() {
    let found = failures(&GOOD.replace("concurrency = 8", "concurrency = \"8\""));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "/concurrency");

    let found = failures(&GOOD.replace("untagged = true", "untagged = \"yes\""));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "/retain/0/untagged");

    let found = failures(&GOOD.replace("flavor = \"ghcr\"", "flavor = \"quay\""));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "/registry/ghcr.io/flavor");
}

#[test]
fn an_integer_out_of_range_fails_at_its_field() {
    let found = failures(&GOOD.replace("max_connections = 32", "max_connections = 5000"));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "/registry/ghcr.io/max_connections");
    assert!(found[0].1.contains("1024"), "{found:?}");

    let found = failures(&GOOD.replace("concurrency = 8", "concurrency = 0"));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "/concurrency");

    let found = failures(&GOOD.replace("version = 1", "version = 2"));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "/version");
}

#[test]
fn a_plan_without_version_or_a_rule_without_to_fails() {
    let found = failures(&GOOD.replace("version = 1\n", ""));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "");
    let found = failures(&GOOD.replace("to = \"ghcr.io/myorg/*\"\n", ""));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "/copy/0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferry_schema_prints_the_schema() {
    let run = ferry(&["schema"], &[]).await;
    run.assert_code(0);
    let printed = json(&run.stdout);
    assert_eq!(
        printed["$schema"],
        "http://json-schema.org/draft-07/schema#"
    );
    assert_eq!(printed, ferry::plan::json_schema::plan_schema());
    assert!(run.stderr.is_empty(), "{}", run.stderr);
}
