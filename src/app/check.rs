//! `ferry check PLAN`: validate without network. Its result lines go to stdout, as JSON
//! objects under `--log-format json`. `--online` asks every registry what the run will need,
//! and says which target packages' visibility will need a person.

use std::path::Path;
use std::process::ExitCode;

use super::exit;
use super::lines::log_line;
use crate::copy::copy_rule::CopyRule;
use crate::copy::select::{select_tags, Count};
use crate::execute::label::{copy_label, empty_line};
use crate::plan::Plan;
use crate::reference::display_repo;
use crate::reference::{Reference, Selector};
use crate::registry::{Registry, RegistryError};
use crate::report::hints::chain as error_chain;

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
    println!("{}", log_line(json, "INFO", &line));
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
    for (i, rule) in plan.copies.iter().enumerate() {
        let src = registry(&rule.from);
        // A source an earlier rule writes (a staged promotion) may not exist before the run.
        let line = match plan.copies[..i]
            .iter()
            .find(|earlier| earlier.writes_into(&rule.from))
        {
            Some(earlier) => planned(&plan, earlier, rule, src.as_ref()).await,
            None => source(&plan, rule, src.as_ref()).await,
        };
        lines.push(line);
        lines.push(push(&rule.to, registry(&rule.to).as_ref()).await);
    }
    for rule in plan
        .copies
        .iter()
        .filter(|r| plan.prune(r.number).is_some())
    {
        let mut line = delete(&rule.to, registry(&rule.to).as_ref(), "pruning").await;
        line.what = format!("prune {}", rule.to);
        lines.push(line);
    }
    for policy in &plan.retains {
        let reg = registry(&policy.repository);
        lines.push(delete(&policy.repository, reg.as_ref(), "retention").await);
    }
    for (reg, repo, shown) in crate::execute::leasing::at_registries(&plan, &registries) {
        lines.push(lease(reg.as_ref(), &repo, shown).await);
    }
    for (what, result) in crate::inuse::preflight(&plan.in_use).await {
        let (ok, detail) = match result {
            Ok(d) => (true, d),
            Err(why) => (false, error_chain(&why)),
        };
        lines.push(Line { ok, what, detail });
    }
    let attention = super::package_check::before_run(&plan, &registries).await;
    Ok(print(path, &lines, &attention, json))
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

/// A rule's source, which must be there: pulled, and what the rule selects counted as the run
/// counts it, so a rule that selects nothing fails here too.
async fn source(plan: &Plan, rule: &CopyRule, src: &dyn Registry) -> Line {
    let what = format!("pull {}", rule.from);
    let count = Count::default();
    let pulled = pull(rule, src, &count).await;
    match (pulled, count.empty(rule)) {
        (Ok(_), Some(e)) if !e.allowed => Line {
            ok: false,
            what,
            detail: empty_line(plan, &e),
        },
        (Ok(d), Some(_)) => Line {
            ok: true,
            what,
            detail: format!("{d}; it selects nothing, which allow_empty = true accepts"),
        },
        (pulled, _) => Line::of(what, pulled),
    }
}

/// A source that `earlier`, a rule before this one, writes: push is checked where it
/// writes, and a pull of what is there already may find nothing yet.
async fn planned(plan: &Plan, earlier: &CopyRule, rule: &CopyRule, reg: &dyn Registry) -> Line {
    // The repository this rule reads, or under a wildcard source the earlier rule's target.
    let at = match rule.from.selector {
        Selector::Wildcard => &earlier.to,
        _ => &rule.from,
    };
    let pushed = push(at, reg).await;
    let mut line = Line {
        ok: pushed.ok,
        what: format!("pull {}", rule.from),
        detail: format!(
            "planned: {} writes it first; push there: {}",
            copy_label(plan, earlier.number),
            pushed.detail
        ),
    };
    match pull(rule, reg, &Count::default()).await {
        Ok(d) => line.detail.push_str(&format!("; there now: {d}")),
        // Not there yet: the run writes it before this rule reads it.
        Err(e) if e.is_not_found() => {}
        Err(e) => {
            line.ok = false;
            line.detail
                .push_str(&format!("; pull: {}", error_chain(&e)));
        }
    }
    line
}

/// Pull at the source: the tag list (or one tag) answers with the credentials. What a
/// repository or wildcard rule selects goes into `count`.
async fn pull(rule: &CopyRule, src: &dyn Registry, count: &Count) -> Result<String, RegistryError> {
    let from = &rule.from;
    match &from.selector {
        Selector::Wildcard => {
            let repos = src.list_repositories(&from.repository).await?;
            count.repositories(repos.len());
            select_any(rule, src, &repos, count).await?;
            Ok(format!("{} repositories", repos.len()))
        }
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
        Selector::AllTags => {
            let tags = src.list_tags(&from.repository).await?;
            count.listed(tags.len(), select_tags(rule, &tags).len());
            Ok(format!("{} tags", tags.len()))
        }
    }
}

/// The tags of a wildcard's repositories, in catalog order, until one repository has a tag
/// the rule selects: one listing where the rule selects something in its first repository,
/// every one where it selects nothing (as the run lists them).
async fn select_any(
    rule: &CopyRule,
    src: &dyn Registry,
    repos: &[String],
    count: &Count,
) -> Result<(), RegistryError> {
    for repo in repos {
        let tags = src.list_tags(repo).await?;
        let selected = select_tags(rule, &tags).len();
        count.listed(tags.len(), selected);
        if selected > 0 {
            break;
        }
    }
    Ok(())
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

/// The run lease's repository, where every run that deletes pushes its lease and deletes it
/// again: both asked, neither leaving anything behind.
async fn lease(reg: &dyn Registry, repo: &str, shown: String) -> Line {
    let what = format!("run lease {shown}");
    if let Err(e) = reg.check_push(repo).await {
        return Line::of(what, Err(e));
    }
    match reg.check_delete(repo).await {
        Ok(how) => Line {
            ok: true,
            what,
            detail: format!(
                "an upload was opened and cancelled; {}",
                how.unwrap_or_else(|| {
                    "this registry cannot show delete permission without deleting".into()
                })
            ),
        },
        Err(e) => Line {
            ok: false,
            what,
            detail: delete_refused(&e, repo, "ferry, which gives its lease up by deleting it,"),
        },
    }
}

/// Why a registry refused the delete probe, in words: deletes disabled, or credentials
/// without the permission (named as distribution's token scope names it).
fn delete_refused(e: &RegistryError, repo: &str, who: &str) -> String {
    use crate::registry::error_body::code;
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

/// Every check's line, what will need attention (warnings: see
/// [`super::package_check::before_run`]), then the count; exit 3 when a check failed.
fn print(path: &Path, lines: &[Line], attention: &[String], json: bool) -> ExitCode {
    let failed = lines.iter().filter(|l| !l.ok).count();
    for l in lines {
        let text = format!(
            "{} {}: {}",
            if l.ok { "ok  " } else { "FAIL" },
            l.what,
            l.detail
        );
        let level = if l.ok { "INFO" } else { "ERROR" };
        println!("{}", log_line(json, level, &text));
    }
    for a in attention {
        println!("{}", log_line(json, "WARN", &format!("note {a}")));
    }
    let mut text = format!(
        "{}: {} checks, {} failed",
        path.display(),
        lines.len(),
        failed
    );
    if !attention.is_empty() {
        text.push_str(&format!(", {} to see to", attention.len()));
    }
    let level = if failed == 0 { "INFO" } else { "ERROR" };
    println!("{}", log_line(json, level, &text));
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::CREDENTIALS)
    }
}
