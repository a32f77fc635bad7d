//! `ferry report merge`: one report from the reports of several shards.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use serde_json::{json, Map, Value};

use crate::report::files::write_private;

/// Worse outcomes win: a merged run succeeded only when every shard did.
fn rank(outcome: &str) -> u8 {
    match outcome {
        "succeeded" => 0,
        "partial" => 1,
        "interrupted" => 2,
        _ => 3,
    }
}

fn add_numbers(into: &mut Map<String, Value>, from: &Value) {
    let Some(from) = from.as_object() else { return };
    for (k, v) in from {
        let sum = match (into.get(k).and_then(Value::as_f64), v.as_f64()) {
            (Some(a), Some(b)) => a + b,
            (None, Some(b)) => b,
            _ => continue,
        };
        // Counts stay integers; seconds stay fractional.
        let value = if v.is_u64() && into.get(k).is_none_or(Value::is_u64) {
            json!(sum as u64)
        } else {
            json!(sum)
        };
        into.insert(k.clone(), value);
    }
}

pub fn merge(output: &Path, inputs: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let mut merged = json!({
        "report_version": 1,
        "ferry_version": env!("CARGO_PKG_VERSION"),
        "plan": null, "shard": null, "run": null,
        "started_at": null, "ended_at": null, "outcome": "succeeded",
        "totals": {}, "failures": [], "items": [], "deletions": [], "registries": {},
        "merged_from": [],
    });
    for path in inputs {
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let r: Value = serde_json::from_slice(&text)
            .with_context(|| format!("{} is not a ferry JSON report", path.display()))?;
        if r["report_version"] != 1 {
            anyhow::bail!(
                "{}: report_version {} is not one this ferry reads (1)",
                path.display(),
                r["report_version"]
            );
        }
        let m = merged.as_object_mut().expect("object");
        if m["plan"].is_null() {
            m["plan"] = r["plan"].clone();
        }
        for (key, keep_min) in [("started_at", true), ("ended_at", false)] {
            let (cur, new) = (m[key].as_str().map(str::to_string), r[key].as_str());
            // RFC 3339 UTC strings order as text.
            let pick = match (cur.as_deref(), new) {
                (None, Some(n)) => Some(n.to_string()),
                (Some(c), Some(n)) if (n < c) == keep_min && n != c => Some(n.to_string()),
                _ => None,
            };
            if let Some(p) = pick {
                m[key] = json!(p);
            }
        }
        let outcome = r["outcome"].as_str().unwrap_or("failed");
        if rank(outcome) > rank(m["outcome"].as_str().unwrap_or("succeeded")) {
            m["outcome"] = json!(outcome);
        }
        if let Some(totals) = m["totals"].as_object_mut() {
            add_numbers(totals, &r["totals"]);
        }
        for list in ["failures", "items", "deletions"] {
            if let (Some(into), Some(from)) = (m[list].as_array_mut(), r[list].as_array()) {
                into.extend(from.iter().cloned());
            }
        }
        if let (Some(into), Some(from)) =
            (m["registries"].as_object_mut(), r["registries"].as_object())
        {
            for (host, stats) in from {
                let entry = into.entry(host.clone()).or_insert_with(|| json!({}));
                if let Some(e) = entry.as_object_mut() {
                    add_numbers(e, stats);
                }
            }
        }
        m["merged_from"].as_array_mut().expect("array").push(
            json!({"report": path.display().to_string(), "shard": r["shard"], "run": r["run"]}),
        );
    }
    let body = serde_json::to_vec_pretty(&merged)?;
    write_private(output, &body).with_context(|| format!("writing {}", output.display()))?;
    println!(
        "{}: {} reports merged, outcome {}",
        output.display(),
        inputs.len(),
        merged["outcome"].as_str().unwrap_or("?")
    );
    Ok(ExitCode::SUCCESS)
}
