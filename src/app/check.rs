//! `ferry check PLAN`: validate without network. Its result lines go to stdout, as JSON
//! objects under `--log-format json`.

use std::path::Path;
use std::process::ExitCode;

use crate::plan::Plan;

pub fn check(path: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let plan = Plan::load(path)?;
    let line = format!(
        "{}: valid plan, {}, {}, registries: {}",
        path.display(),
        crate::report::plural(plan.copies.len(), "copy rule"),
        crate::report::plural(plan.retains.len(), "retention policy")
            .replace("policys", "policies"),
        match plan.hosts() {
            h if h.is_empty() => "none (OCI layouts only)".to_string(),
            h => h.join(", "),
        }
    );
    println!("{}", super::log_line(json, "INFO", &line));
    Ok(ExitCode::SUCCESS)
}

/// One preflight check's line.
struct Line {
    ok: bool,
    what: String,
    detail: String,
}

/// `ferry check --online`: validate, then ask every registry what the run will need.
pub async fn preflight(path: &Path, json: bool) -> anyhow::Result<ExitCode> {
    use crate::plan::{reference::display_repo, Selector};
    use crate::report::error_chain;

    let plan = Plan::load(path)?;
    let registries = super::run::registries(&plan, None)?;
    let registry = |r: &crate::plan::Reference| {
        registries
            .get(&r.location)
            .expect("a registry for every location")
            .clone()
    };
    let mut lines: Vec<Line> = Vec::new();
    let mut push = |ok: bool, what: String, detail: String| lines.push(Line { ok, what, detail });

    for rule in &plan.copies {
        // Pull at the source: the tag list (or one tag) answers with the credentials.
        let src = registry(&rule.from);
        let what = format!("pull {}", rule.from);
        let result = match &rule.from.selector {
            Selector::Wildcard => src
                .list_repositories(&rule.from.repository)
                .await
                .map(|r| format!("{} repositories", r.len())),
            Selector::Tag(t) => src
                .head_manifest(&rule.from.repository, t)
                .await
                .and_then(|h| {
                    h.map(|h| h.digest.short().to_string()).ok_or_else(|| {
                        crate::registry::RegistryError::NotFound {
                            what: format!("tag {t}"),
                            url: rule.from.to_string(),
                        }
                    })
                }),
            Selector::Digest(d) => src.head_manifest(&rule.from.repository, d).await.map(|h| {
                if h.is_some() {
                    "present".into()
                } else {
                    "missing".into()
                }
            }),
            Selector::AllTags => src
                .list_tags(&rule.from.repository)
                .await
                .map(|t| format!("{} tags", t.len())),
        };
        match result {
            Ok(d) => push(true, what, d),
            Err(e) => push(false, what, error_chain(&e)),
        }
        // Push at the target: an upload session opened and cancelled. A wildcard target is
        // checked at a probe repository under its prefix.
        let dst = registry(&rule.to);
        let repo = match rule.to.selector {
            Selector::Wildcard => format!("{}ferry-preflight", rule.to.repository),
            _ => rule.to.repository.clone(),
        };
        let what = format!("push {}", display_repo(&rule.to.location, &repo));
        match dst.check_push(&repo).await {
            Ok(()) => push(true, what, "an upload was opened and cancelled".into()),
            Err(e) => push(false, what, error_chain(&e)),
        }
    }
    for policy in &plan.retains {
        let reg = registry(&policy.repository);
        let repo = policy.repository.repository.clone();
        let what = format!("delete {}", policy.repository);
        let listed = match policy.repository.selector {
            Selector::Wildcard => reg.list_repositories(&repo).await.map(|_| ()),
            _ => reg.list_tags(&repo).await.map(|_| ()),
        };
        if let Err(e) = listed {
            push(false, what, format!("cannot read it: {}", error_chain(&e)));
            continue;
        }
        match reg.check_delete(&repo).await {
            Ok(Some(how)) => push(true, what, how),
            Ok(None) => push(
                true,
                what,
                "readable; this registry cannot show delete permission without deleting".into(),
            ),
            Err(e) => push(false, what, error_chain(&e)),
        }
    }

    let failed = lines.iter().filter(|l| !l.ok).count();
    for l in &lines {
        let text = format!(
            "{} {}: {}",
            if l.ok { "ok  " } else { "FAIL" },
            l.what,
            l.detail
        );
        let level = if l.ok { "INFO" } else { "ERROR" };
        println!("{}", super::log_line(json, level, &text));
    }
    let text = format!(
        "{}: {} checks, {} failed",
        path.display(),
        lines.len(),
        failed
    );
    let level = if failed == 0 { "INFO" } else { "ERROR" };
    println!("{}", super::log_line(json, level, &text));
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::exit::CREDENTIALS)
    })
}
