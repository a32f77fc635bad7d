//! `ferry plan PLAN`: what `ferry run` would do, without writing anything. Copies are
//! previewed with one HEAD at each side; retention runs the very inventory and selection
//! that `ferry run` applies.

use std::process::ExitCode;
use std::time::SystemTime;

use indicatif::HumanBytes;
use serde_json::json;

use super::run::registries;
use crate::cli::{Output, PlanArgs};
use crate::copy::{preview, select, Preview};
use crate::plan::Plan;
use crate::report::error_chain;
use crate::retention::{plan_policy, Action, RepoPlan};

pub async fn plan(args: PlanArgs) -> anyhow::Result<ExitCode> {
    let plan = Plan::load(&args.plan)?;
    let registries = registries(&plan, None)?;
    let mut text = String::new();
    let mut copies_json = Vec::new();
    let (mut to_copy, mut present, mut problems) = (0usize, 0usize, 0usize);
    let mut bytes = 0u64;
    // Requests `ferry run` would send to each registry, roughly: per image 2 HEADs and the
    // manifest reads and writes, per blob a HEAD, a GET and an upload (POST + PUT).
    let mut requests: std::collections::BTreeMap<String, u64> = Default::default();

    let rules: Vec<&_> = plan.copies.iter().collect();
    let selection = select::resolve(&rules, &registries, &crate::copy::NoJournal).await;
    for e in &selection.errors {
        problems += 1;
        text.push_str(&format!("error   {}\n", error_chain(e)));
        copies_json.push(json!({"error": error_chain(e)}));
    }
    for n in &selection.notes {
        text.push_str(&format!("note    {n}\n"));
        copies_json.push(json!({"note": n}));
    }
    let previews = futures::future::join_all(selection.items.iter().map(preview)).await;
    for (item, p) in selection.items.iter().zip(previews) {
        let mut rewritten = None;
        let mut left_out = 0;
        let (action, digest, error) = match &p {
            Preview::Copy {
                digest,
                size,
                rewritten: r,
                left_out: l,
            } => {
                rewritten = r.as_ref().map(|new| format!("{digest} → {new}"));
                left_out = *l;
                to_copy += 1;
                bytes += size.bytes;
                let m = size.manifests as u64;
                let b = size.blobs as u64;
                *requests
                    .entry(item.source.registry.name().to_string())
                    .or_default() += 1 + m + b;
                *requests
                    .entry(item.target.registry.name().to_string())
                    .or_default() += 1 + m + 3 * b;
                ("copy", Some(digest.to_string()), None)
            }
            Preview::Present { digest } => {
                present += 1;
                *requests
                    .entry(item.source.registry.name().to_string())
                    .or_default() += 1;
                *requests
                    .entry(item.target.registry.name().to_string())
                    .or_default() += 1;
                ("present", Some(digest.to_string()), None)
            }
            Preview::Failed { error } => {
                problems += 1;
                ("error", None, Some(error_chain(error)))
            }
        };
        text.push_str(&format!(
            "{action:<7} {item}{}{}{}{}{}\n",
            digest
                .as_deref()
                .map(|d| format!(" ({})", &d[..19.min(d.len())]))
                .unwrap_or_default(),
            item.subject
                .as_ref()
                .map(|s| format!(", refers to {}", s.short()))
                .unwrap_or_default(),
            match left_out {
                0 => String::new(),
                n => format!(", {n} index children left out by `platforms`"),
            },
            rewritten
                .as_deref()
                .map(|r| format!("; rewritten: {r}"))
                .unwrap_or_default(),
            error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ));
        copies_json.push(json!({
            "source": item.source_display(),
            "target": item.target_display(),
            "digest": digest,
            "action": action,
            "bytes": match &p { Preview::Copy { size, .. } => Some(size.bytes), _ => None },
            "rewritten": rewritten,
            "subject": item.subject.as_ref().map(|s| s.to_string()),
            "left_out": left_out,
            "error": error,
        }));
    }

    let now = SystemTime::now();
    let mut retention_json = Vec::new();
    let mut to_delete = 0usize;
    for policy in &plan.retains {
        let registry = registries
            .get(&policy.repository.location)
            .expect("a registry for every location")
            .clone();
        text.push_str(&format!("{policy}\n"));
        for repo_plan in plan_policy(policy, registry.as_ref(), now, &|_| true).await {
            let (t, j, deletes, failed) = describe(&repo_plan);
            text.push_str(&t);
            retention_json.push(j);
            to_delete += deletes;
            problems += failed as usize;
        }
    }

    // What the requests cost against each registry's rate budget.
    let mut budget_json = serde_json::Map::new();
    for (host, n) in &requests {
        if host == "oci:" {
            continue;
        }
        let limit = plan.registry(host).rate_limit;
        let time = limit.map(|l| *n as f64 / f64::from(l.requests_per_second.get()));
        text.push_str(&format!(
            "registry {host}: about {n} requests{}\n",
            time.map(|t| format!(", at least {t:.0} s at its rate_limit"))
                .unwrap_or_default()
        ));
        budget_json.insert(
            host.clone(),
            json!({"requests": n, "seconds_at_rate_limit": time}),
        );
    }

    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "copies": copies_json,
                "retention": retention_json,
                "totals": {"copy": to_copy, "present": present, "bytes": bytes, "delete": to_delete, "errors": problems},
                "registries": budget_json,
            }))?
        ),
        Output::Text => {
            print!("{text}");
            println!(
                "plan: {to_copy} images to copy ({}), {present} already present, {to_delete} to delete, {problems} errors",
                HumanBytes(bytes)
            );
        }
    }
    Ok(if problems == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::exit::PARTIAL)
    })
}

/// Text and JSON for one repository's decisions; the number of deletions; whether it failed.
pub fn describe(p: &RepoPlan) -> (String, serde_json::Value, usize, bool) {
    match &p.decisions {
        Err(e) => (
            format!(
                "  {}: not read, nothing there is deleted: {}\n",
                p.repository,
                error_chain(e)
            ),
            json!({"repository": p.repository, "error": error_chain(e)}),
            0,
            true,
        ),
        Ok(d) => {
            let deletes = d
                .decisions
                .iter()
                .filter(|x| x.action == Action::Delete)
                .count();
            let mut t = format!(
                "  {}: {} images: keep {}, delete {}\n",
                p.repository,
                d.decisions.len(),
                d.decisions.len() - deletes,
                deletes
            );
            if let Some(why) = &d.held_back {
                t.push_str(&format!("    held back: {why}\n"));
            }
            for x in &d.decisions {
                let tags = if x.tags.is_empty() {
                    "(untagged)".to_string()
                } else {
                    x.tags.join(", ")
                };
                t.push_str(&format!(
                    "    {:<6} {} {tags}: {}\n",
                    match x.action {
                        Action::Keep => "keep",
                        Action::Delete => "delete",
                    },
                    x.digest.short(),
                    x.reason
                ));
            }
            let j = json!({
                "repository": p.repository,
                "held_back": d.held_back,
                "decisions": d.decisions.iter().map(|x| json!({
                    "digest": x.digest.to_string(),
                    "tags": x.tags,
                    "action": match x.action { Action::Keep => "keep", Action::Delete => "delete" },
                    "reason": x.reason,
                })).collect::<Vec<_>>(),
            });
            (t, j, deletes, false)
        }
    }
}
