//! The generated schema against what the plan's checks know: the fields of each table
//! (`schema::fields`), the integer bounds, and the string choices `Plan::from_str` accepts.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::plan_schema;
use crate::plan::schema::fields;
use crate::plan::Plan;

/// Follow a `$ref` into the schema's definitions.
fn resolve<'a>(root: &'a Value, node: &'a Value) -> &'a Value {
    match node.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r
                .strip_prefix("#/definitions/")
                .expect("a local definition");
            &root["definitions"][name]
        }
        None => node,
    }
}

fn join(shape: &str, key: &str) -> String {
    if shape.is_empty() {
        key.to_string()
    } else {
        format!("{shape}.{key}")
    }
}

/// Every table of the schema (a node with `properties`), by shape as `schema::fields` names
/// them (a map's key is `*`, array positions left out): `visit` gets its shape and the table,
/// through `$ref`s, alternatives, arrays and maps.
fn walk(root: &Value, node: &Value, shape: &str, visit: &mut dyn FnMut(&str, &Value)) {
    let node = resolve(root, node);
    for alternative in node
        .get("anyOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        walk(root, alternative, shape, visit);
    }
    if let Some(items) = node.get("items") {
        walk(root, items, shape, visit);
    }
    if let Some(values) = node.get("additionalProperties").filter(|v| v.is_object()) {
        walk(root, values, &join(shape, "*"), visit);
    }
    if let Some(properties) = node.get("properties").and_then(Value::as_object) {
        visit(shape, node);
        for (key, sub) in properties {
            walk(root, sub, &join(shape, key), visit);
        }
    }
}

/// Every table of the schema by shape, with its properties.
fn tables(root: &Value, out: &mut BTreeMap<String, Vec<String>>) {
    walk(root, root, "", &mut |shape, node| {
        assert_eq!(
            node.get("additionalProperties"),
            Some(&Value::Bool(false)),
            "{shape:?}: unknown fields are errors in every table"
        );
        let properties = node["properties"].as_object().expect("a table");
        out.insert(shape.to_string(), properties.keys().cloned().collect());
    });
}

// Issue 25, part 5: the known-fields lists that name an unknown field's neighbours in errors
// and the schema are one list: a field in one and not the other fails here.
#[test]
fn every_table_of_the_schema_has_the_fields_the_plan_checks_know() {
    let root = plan_schema();
    let mut found = BTreeMap::new();
    tables(&root, &mut found);
    let mut unlisted = Vec::new();
    for (shape, properties) in &found {
        match fields(shape) {
            Some(known) => {
                let mut known: Vec<String> = known.iter().map(|k| k.to_string()).collect();
                known.sort();
                let mut properties = properties.clone();
                properties.sort();
                assert_eq!(properties, known, "table {shape:?}");
            }
            None => unlisted.push(shape.as_str()),
        }
    }
    // These two are read as TOML values and checked by hand (artifacts.rs, prune.rs), which
    // name their own fields; the tests of those files cover them.
    assert_eq!(unlisted, ["copy.prune", "copy.referrers"]);
    assert!(found.len() >= 11, "{:?}", found.keys());
}

/// The schema of the field at `path` (keys, `*` for a map's key, `[]` for a list's entry).
fn field<'a>(root: &'a Value, path: &[&str]) -> &'a Value {
    let mut node = resolve(root, root);
    for key in path {
        node = match *key {
            "*" => resolve(root, &node["additionalProperties"]),
            "[]" => resolve(root, &node["items"]),
            k => resolve(root, &node["properties"][k]),
        };
    }
    node
}

#[test]
fn integer_bounds_are_those_the_plan_checks() {
    use crate::plan::schema::*;
    let root = plan_schema();
    for (path, bounds) in [
        (&["concurrency"][..], CONCURRENCY),
        (&["retain_runs"], RETAIN_RUNS),
        (&["registry", "*", "max_connections"], MAX_CONNECTIONS),
        (&["registry", "*", "retries"], RETRIES),
        (
            &["registry", "*", "rate_limit", "requests_per_second"],
            RATE,
        ),
        (&["registry", "*", "rate_limit", "burst"], RATE),
        (&["copy", "[]", "tags", "newest"], NEWEST),
        (&["retain", "[]", "keep_newest"], KEEP_NEWEST),
        (&["retain", "[]", "max_deletions"], MAX_DELETIONS),
    ] {
        let s = field(&root, path);
        assert_eq!(s["type"], "integer", "{path:?}: {s}");
        assert_eq!(s["minimum"], bounds.min, "{path:?}: {s}");
        assert_eq!(s["maximum"], bounds.max, "{path:?}: {s}");
    }
    let version = field(&root, &["version"]);
    assert_eq!(
        (&version["minimum"], &version["maximum"]),
        (&1.into(), &1.into())
    );
    assert!(root["required"]
        .as_array()
        .unwrap()
        .contains(&"version".into()));
}

fn check(text: &str) -> Result<Plan, String> {
    Plan::from_str(Path::new("plan.toml"), text).map_err(|e| e.to_string())
}

/// The values of a string enum in the schema.
fn choices(s: &Value) -> Vec<String> {
    let list = s["enum"].as_array().cloned().unwrap_or_else(|| {
        s["oneOf"]
            .as_array()
            .unwrap_or_else(|| panic!("an enum: {s}"))
            .iter()
            .map(|v| v.get("const").or_else(|| v["enum"].get(0)).unwrap().clone())
            .collect()
    });
    list.iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_string_choices_in_the_schema_are_those_the_plan_accepts() {
    let root = plan_schema();
    let flavors = choices(field(&root, &["registry", "*", "flavor"]));
    assert_eq!(flavors, ["distribution", "ghcr", "dockerhub"]);
    for flavor in flavors.iter().map(String::as_str).chain(["quay"]) {
        let plan = format!(
            "version = 1\n[registry.\"r.example\"]\nflavor = \"{flavor}\"\n\
             [[copy]]\nfrom = \"r.example/a\"\nto = \"r.example/b\"\n"
        );
        assert_eq!(check(&plan).is_ok(), flavor != "quay", "{flavor}");
    }
    let modes = choices(field(&root, &["copy", "[]", "platform_mode"]));
    assert_eq!(modes, ["sparse", "rewrite"]);
    for mode in modes.iter().map(String::as_str).chain(["thin"]) {
        let plan = format!(
            "version = 1\n[[copy]]\nfrom = \"r.example/a\"\nto = \"r.example/b\"\n\
             platforms = [\"linux/amd64\"]\nplatform_mode = \"{mode}\"\n"
        );
        assert_eq!(check(&plan).is_ok(), mode != "thin", "{mode}");
    }
}

#[test]
fn fields_carry_their_doc_comment_and_toml_has_no_null() {
    let root = plan_schema();
    assert_eq!(root["$schema"], "http://json-schema.org/draft-07/schema#");
    let text = root.to_string();
    assert!(!text.contains("\"null\""), "{text}");
    let mut missing = Vec::new();
    description_everywhere(&root, &mut missing);
    assert!(
        missing.is_empty(),
        "fields without a description: {missing:?}"
    );
}

/// Every property has a description (its doc comment, or that of the type it refers to).
fn description_everywhere(root: &Value, missing: &mut Vec<String>) {
    walk(root, root, "", &mut |shape, node| {
        for (key, sub) in node["properties"].as_object().expect("a table") {
            let has =
                sub.get("description").is_some() || resolve(root, sub).get("description").is_some();
            if !has {
                missing.push(join(shape, key));
            }
        }
    });
}
