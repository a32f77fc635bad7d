//! `prune` on a `[[copy]]` rule: delete at the target what this rule copied there once the
//! rule no longer selects it (gone at the source, or filtered out), and nothing else. Checked
//! here into retention's [`Prune`]; `retention::prune` carries it out.

use std::time::Duration;

use toml::Spanned;

use super::errors::{self, PlanError};
use super::spans::Ctx;
use crate::reference::{Reference, Selector};
use crate::retention::prune::Prune;

const SHAPE: &str = "expected `true`, `false` or `{ max_deletions = N, older_than = \"7d\" }`";

/// `prune = true`, `false`, or a table of valves, on a rule reading `from`; `None` when
/// absent or `false`.
pub(super) fn validate(
    ctx: &Ctx,
    raw: Option<&Spanned<toml::Value>>,
    from: &Reference,
) -> Result<Option<Prune>, PlanError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let prune = settings(ctx, raw)?;
    if prune.is_some() && !matches!(from.selector, Selector::AllTags | Selector::Wildcard) {
        return Err(ctx.invalid(
            raw.span(),
            "copy.prune",
            "pruning applies when `from` is a repository or a wildcard, not one tag or digest",
        ));
    }
    Ok(prune)
}

/// The settings `raw` says, before they are checked against the rule.
fn settings(ctx: &Ctx, raw: &Spanned<toml::Value>) -> Result<Option<Prune>, PlanError> {
    let bad = |reason: String| ctx.invalid(raw.span(), "copy.prune", reason);
    let table = match raw.get_ref() {
        toml::Value::Boolean(on) => return Ok(on.then(Prune::default)),
        toml::Value::Table(t) => t,
        _ => return Err(bad(SHAPE.to_string())),
    };
    let mut prune = Prune::default();
    for (key, value) in table {
        match (key.as_str(), value) {
            ("max_deletions", toml::Value::Integer(n)) => {
                let b = errors::MAX_DELETIONS;
                if *n < b.min || *n > b.max {
                    return Err(ctx.invalid_number(
                        raw.span(),
                        "copy.prune.max_deletions",
                        *n,
                        format!("must be between {} and {}", b.min, b.max),
                    ));
                }
                prune.max_deletions = Some(*n as usize);
            }
            ("older_than", toml::Value::String(s)) => {
                prune.older_than = Some(older_than(ctx, raw, s)?);
            }
            ("max_deletions", _) => {
                let b = errors::MAX_DELETIONS;
                return Err(bad(format!(
                    "`max_deletions` must be an integer from {} to {}",
                    b.min, b.max
                )));
            }
            ("older_than", _) => {
                return Err(bad(
                    "`older_than` must be a duration like \"7d\" (a string)".to_string(),
                ))
            }
            (other, _) => {
                return Err(bad(format!(
                    "unknown field `{}`; {SHAPE}",
                    errors::toml_key(other)
                )))
            }
        }
    }
    Ok(Some(prune))
}

fn older_than(ctx: &Ctx, raw: &Spanned<toml::Value>, s: &str) -> Result<Duration, PlanError> {
    let field = "copy.prune.older_than";
    let d = humantime::parse_duration(s).map_err(|e| {
        ctx.invalid(
            raw.span(),
            field,
            format!(
                "not a duration like \"7d\" or \"36h\": {}",
                errors::duration_reason(s, &e)
            ),
        )
    })?;
    if d < Duration::from_secs(1) {
        return Err(ctx.invalid(raw.span(), field, "must be at least 1s"));
    }
    Ok(d)
}
