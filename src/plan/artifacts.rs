//! `referrers = …`, `platforms = …` and `platform_mode = …` on a `[[copy]]` rule, checked
//! into the copy engine's [`Referrers`] and [`Platforms`].

use toml::Spanned;

use super::errors::PlanError;
use super::spans::Ctx;
use crate::copy::copy_rule::{Platform, PlatformMode, Platforms, Referrers};

pub(super) fn validate_referrers(
    ctx: &Ctx,
    raw: Option<&Spanned<toml::Value>>,
) -> Result<Referrers, PlanError> {
    let Some(raw) = raw else {
        return Ok(Referrers::All);
    };
    let bad = |reason: &str| ctx.invalid(raw.span(), "copy.referrers", reason);
    const SHAPE: &str = "expected `true`, `false` or `{ artifact_types = [\"…\"] }`";
    match raw.get_ref() {
        toml::Value::Boolean(true) => Ok(Referrers::All),
        toml::Value::Boolean(false) => Ok(Referrers::None),
        toml::Value::Table(t) => {
            if let Some(k) = t.keys().find(|k| *k != "artifact_types") {
                return Err(bad(&format!("unknown field `{k}`; {SHAPE}")));
            }
            let list = t
                .get("artifact_types")
                .and_then(|v| v.as_array())
                .ok_or_else(|| bad(SHAPE))?;
            if list.is_empty() {
                return Err(bad(
                    "`artifact_types` is empty: say `referrers = false` to carry none",
                ));
            }
            let mut types = Vec::new();
            for (i, v) in list.iter().enumerate() {
                let s = v
                    .as_str()
                    .ok_or_else(|| bad("artifact types are strings"))?;
                let media_type = s.split_once('/').is_some_and(|(a, b)| {
                    !a.is_empty() && !b.is_empty() && !s.contains(char::is_whitespace)
                });
                if !media_type {
                    return Err(bad(&format!(
                        "artifact type {} is not a media type (like `application/vnd.dev.cosign.simplesigning.v1+json`)",
                        i + 1
                    )));
                }
                if !types.iter().any(|t| t == s) {
                    types.push(s.to_string());
                }
            }
            Ok(Referrers::Only(types))
        }
        _ => Err(bad(SHAPE)),
    }
}

pub(super) fn validate_platforms(
    ctx: &Ctx,
    raw: Option<&Spanned<toml::Value>>,
    mode: Option<&Spanned<String>>,
) -> Result<Option<Platforms>, PlanError> {
    let wanted = match raw {
        None => None,
        Some(raw) => {
            let bad = |reason: String| ctx.invalid(raw.span(), "copy.platforms", reason);
            match raw.get_ref() {
                toml::Value::String(s) if s == "all" => None,
                toml::Value::Array(list) if !list.is_empty() => {
                    let mut wanted: Vec<Platform> = Vec::new();
                    for (i, v) in list.iter().enumerate() {
                        let s = v.as_str().ok_or_else(|| {
                            bad("platforms are strings like \"linux/amd64\"".into())
                        })?;
                        let n = i + 1;
                        let p =
                            Platform::parse(s).map_err(|e| bad(format!("platform {n}: {e}")))?;
                        if wanted.contains(&p) {
                            return Err(bad(format!("platform {n} repeats an earlier one")));
                        }
                        wanted.push(p);
                    }
                    Some(wanted)
                }
                _ => {
                    return Err(bad(
                        "expected \"all\" or a list like [\"linux/amd64\", \"linux/arm64\"]".into(),
                    ))
                }
            }
        }
    };
    match (wanted, mode) {
        (None, None) => Ok(None),
        (None, Some(m)) => Err(ctx.invalid(
            m.span(),
            "copy.platform_mode",
            "applies only with a `platforms` list; every platform is copied as is",
        )),
        (Some(_), None) => Err(ctx.invalid(
            raw.expect("a list was given").span(),
            "copy.platforms",
            "a platform list needs `platform_mode`: \"sparse\" keeps each index as is (same digest) with only these children, which some registries refuse; \"rewrite\" writes a new index of only these children (a new digest, reported)",
        )),
        (Some(wanted), Some(m)) => {
            let mode = match m.get_ref().as_str() {
                "sparse" => PlatformMode::Sparse,
                "rewrite" => PlatformMode::Rewrite,
                _ => {
                    return Err(ctx.invalid(
                        m.span(),
                        "copy.platform_mode",
                        "expected \"sparse\" or \"rewrite\"",
                    ))
                }
            };
            Ok(Some(Platforms { wanted, mode }))
        }
    }
}
