//! `ferry check PLAN`: validate without network. Its result lines go to stdout, as JSON
//! objects under `--log-format json`.

use std::path::Path;
use std::process::ExitCode;

use crate::plan::reference::display_repo;
use crate::plan::{Plan, Reference, Selector};
use crate::registry::{Registry, RegistryError};
use crate::report::error_chain;

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
    let plan = Plan::load(path)?;
    let registries = super::run::registries(&plan, None)?;
    let registry = |r: &Reference| {
        registries
            .get(&r.location)
            .expect("a registry for every location")
            .clone()
    };
    let mut lines: Vec<Line> = Vec::new();
    for rule in &plan.copies {
        let what = format!("pull {}", rule.from);
        lines.push(Line::of(
            what,
            pull(&rule.from, registry(&rule.from).as_ref()).await,
        ));
        lines.push(push(&rule.to, registry(&rule.to).as_ref()).await);
    }
    for rule in plan.copies.iter().filter(|r| r.prune.is_some()) {
        let mut line = delete(&rule.to, registry(&rule.to).as_ref(), "pruning").await;
        line.what = format!("prune {}", rule.to);
        lines.push(line);
    }
    for policy in &plan.retains {
        let reg = registry(&policy.repository);
        lines.push(delete(&policy.repository, reg.as_ref(), "retention").await);
    }
    for (what, result) in crate::inuse::preflight(&plan.in_use).await {
        let (ok, detail) = match result {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        lines.push(Line { ok, what, detail });
    }
    Ok(print(path, &lines, json))
}

impl Line {
    fn of(what: String, result: Result<String, RegistryError>) -> Line {
        match result {
            Ok(detail) => Line {
                ok: true,
                what,
                detail,
            },
            Err(e) => Line {
                ok: false,
                what,
                detail: error_chain(&e),
            },
        }
    }
}

/// Pull at the source: the tag list (or one tag) answers with the credentials.
async fn pull(from: &Reference, src: &dyn Registry) -> Result<String, RegistryError> {
    match &from.selector {
        Selector::Wildcard => src
            .list_repositories(&from.repository)
            .await
            .map(|r| format!("{} repositories", r.len())),
        Selector::Tag(t) => src.head_manifest(&from.repository, t).await.and_then(|h| {
            h.map(|h| h.digest.short().to_string())
                .ok_or_else(|| RegistryError::NotFound {
                    what: format!("tag {t}"),
                    url: from.to_string(),
                })
        }),
        Selector::Digest(d) => src.head_manifest(&from.repository, d).await.map(|h| {
            if h.is_some() {
                "present".into()
            } else {
                "missing".into()
            }
        }),
        Selector::AllTags => src
            .list_tags(&from.repository)
            .await
            .map(|t| format!("{} tags", t.len())),
    }
}

/// Push at the target: an upload session opened and cancelled. A wildcard target is checked
/// at a probe repository under its prefix.
async fn push(to: &Reference, dst: &dyn Registry) -> Line {
    let repo = match to.selector {
        Selector::Wildcard => format!("{}ferry-preflight", to.repository),
        _ => to.repository.clone(),
    };
    let what = format!("push {}", display_repo(&to.location, &repo));
    let result = dst.check_push(&repo).await;
    Line::of(
        what,
        result.map(|()| "an upload was opened and cancelled".into()),
    )
}

/// Delete in a policy's repository (`who`: "retention" or "pruning"): readable, and deletable
/// as far as the registry shows. A wildcard is asked at the first repository it lists, else
/// at a probe repository under its prefix.
async fn delete(repository: &Reference, reg: &dyn Registry, who: &str) -> Line {
    let what = format!("delete {repository}");
    let listed = match repository.selector {
        Selector::Wildcard => reg
            .list_repositories(&repository.repository)
            .await
            .map(|r| r.into_iter().next()),
        _ => reg.list_tags(&repository.repository).await.map(|_| None),
    };
    let repo = match listed {
        Ok(first) => first.unwrap_or_else(|| match repository.selector {
            Selector::Wildcard => format!("{}ferry-preflight", repository.repository),
            _ => repository.repository.clone(),
        }),
        Err(e) if e.is_not_found() => {
            // A mirror's target before its first copy: nothing to delete yet.
            let detail = "not there yet, so nothing to delete".to_string();
            return Line {
                ok: true,
                what,
                detail,
            };
        }
        Err(e) => {
            let detail = format!("cannot read it: {}", error_chain(&e));
            return Line {
                ok: false,
                what,
                detail,
            };
        }
    };
    match reg.check_delete(&repo).await {
        Ok(how) => Line {
            ok: true,
            what,
            detail: how.unwrap_or_else(|| {
                "readable; this registry cannot show delete permission without deleting".into()
            }),
        },
        Err(e) => Line {
            ok: false,
            what,
            detail: delete_refused(&e, &repo, who),
        },
    }
}

/// Why a registry refused the delete probe, in words: deletes disabled, or credentials
/// without the permission (named as distribution's token scope names it).
fn delete_refused(e: &RegistryError, repo: &str, who: &str) -> String {
    use crate::registry::status::code;
    let Some(status) = e.http_status() else {
        return error_chain(e);
    };
    let answer = match e.code() {
        Some(c) => format!("{status} {c}"),
        None => status.to_string(),
    };
    if status == 405 || e.has_code(code::UNSUPPORTED) {
        return format!(
            "this registry has deletes disabled ({answer}): {who} cannot delete here (on CNCF distribution: storage.delete.enabled: true)"
        );
    }
    if matches!(status, 401 | 403) || e.has_code(code::DENIED) || e.has_code(code::UNAUTHORIZED) {
        return format!(
            "the credentials may not delete here ({answer}): they need the delete permission on {repo} (token scope repository:{repo}:delete); {who} cannot delete here"
        );
    }
    error_chain(e)
}

/// Every check's line, then the count; exit 3 when one failed.
fn print(path: &Path, lines: &[Line], json: bool) -> ExitCode {
    let failed = lines.iter().filter(|l| !l.ok).count();
    for l in lines {
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
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::exit::CREDENTIALS)
    }
}
