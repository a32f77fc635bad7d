//! `ferry schema`: the plan's JSON Schema, generated from the `Raw*` types the plan is parsed
//! into (see `raw`), for editors that check and complete TOML against a schema (taplo, Even
//! Better TOML).
//!
//! Draft-07 because taplo validated with draft-07 rules whatever a schema declared until
//! 2024 (taplo#497); every release reads it.
//!
//! TOML has no null: an optional field is one that may be left out, so the `null` that
//! schemars allows for an `Option` is taken out again.

use schemars::generate::SchemaSettings;
use schemars::transform::RecursiveTransform;
use schemars::Schema;

use super::raw::RawPlan;

/// The plan's JSON Schema (draft-07), as `ferry schema` prints it.
pub fn plan_schema() -> serde_json::Value {
    let mut settings = SchemaSettings::draft07();
    // Each field's schema in place, not a `$ref` to a definition: in draft-07 a `$ref` hides
    // the keywords beside it, and those hold the field's own description.
    settings.inline_subschemas = true;
    settings
        .transforms
        .push(Box::new(RecursiveTransform(no_null)));
    let schema = settings.into_generator().into_root_schema_for::<RawPlan>();
    schema.to_value()
}

/// Take `null` out of a schema's types (`"type": ["integer", "null"]`) and alternatives
/// (`"anyOf": [{…}, {"type": "null"}]`).
fn no_null(schema: &mut Schema) {
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    if let Some(serde_json::Value::Array(types)) = object.get_mut("type") {
        types.retain(|t| t != "null");
        if let [only] = types.as_slice() {
            let only = only.clone();
            object.insert("type".into(), only);
        }
    }
    if let Some(serde_json::Value::Array(alternatives)) = object.get("anyOf") {
        let kept: Vec<serde_json::Value> = alternatives
            .iter()
            .filter(|a| a.get("type").and_then(|t| t.as_str()) != Some("null"))
            .cloned()
            .collect();
        if let [only] = kept.as_slice() {
            let only = only.clone();
            object.remove("anyOf");
            if let serde_json::Value::Object(fields) = only {
                object.extend(fields);
            }
        } else {
            object.insert("anyOf".into(), kept.into());
        }
    }
}

#[cfg(test)]
mod tests;
