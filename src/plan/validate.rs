//! Checking every field of a plan, with a message that names the file, line, column and
//! field (and never a string value: it may be a secret).

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::PathBuf;

use regex::Regex;
use semver::VersionReq;
use toml::Spanned;
use url::Url;

use super::errors::{self, PlanError};
use super::raw::{RawAuth, RawCopy, RawRateLimit, RawRegistry, RawRetain, RawTags};
use super::spans::{any_duration, duration, int_in, Ctx};
use super::targets;
use super::{artifacts, lease_settings, prune};
use crate::copy::copy_rule::CopyRule;
use crate::copy::tag_filter::TagFilter;
use crate::reference;
use crate::reference::{Location, Reference, Selector};
use crate::registry::config::{
    AuthSettings, Flavor, RateLimit, RegistrySettings, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_STALL_TIMEOUT,
};
use crate::registry::visibility::Visibility;
use crate::retention::prune::Prune;
use crate::retention::retain_rule::{RetainPolicy, RetainRule, DEFAULT_UNTAGGED_GRACE};

pub(super) fn url_field(ctx: &Ctx, v: &Spanned<String>, field: &str) -> Result<Url, PlanError> {
    let url = Url::parse(v.get_ref())
        .map_err(|e| ctx.invalid(v.span(), field, format!("not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(ctx.invalid(
            v.span(),
            field,
            "must be an http:// or https:// URL with a host",
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        // A secret in a URL ends up in logs; the plan keeps secrets out entirely.
        return Err(ctx.invalid(
            v.span(),
            field,
            "credentials do not belong in the plan: use `auth`",
        ));
    }
    Ok(url)
}

/// `ca_file`: a readable file of PEM certificates, each a usable X.509 trust anchor. Read
/// here (file I/O only) so a wrong file is a plan error with its line, not a failed
/// connection in the middle of a run.
pub(super) fn ca_file(
    ctx: &Ctx,
    v: &Spanned<String>,
    field: &str,
    insecure: bool,
) -> Result<PathBuf, PlanError> {
    let invalid = |reason: String| ctx.invalid(v.span(), field, reason);
    if insecure {
        return Err(invalid(
            "`insecure = true` turns certificate verification off, so a `ca_file` would be ignored: keep one of them".into(),
        ));
    }
    let path = PathBuf::from(v.get_ref());
    let pem = std::fs::read(&path).map_err(|e| invalid(format!("cannot read it: {e}")))?;
    crate::registry::transport::tls::root_certificates(&pem).map_err(|e| invalid(e.to_string()))?;
    Ok(path)
}

/// `version = 1`, and nothing else.
pub(super) fn version(ctx: &Ctx, v: Option<&Spanned<i64>>) -> Result<(), PlanError> {
    match v {
        None => Err(ctx.invalid(0..0, "version", "missing: a plan starts with `version = 1`")),
        Some(v) if *v.get_ref() != 1 => Err(ctx.invalid_number(
            v.span(),
            "version",
            *v.get_ref(),
            "this ferry reads plan version 1 only",
        )),
        Some(_) => Ok(()),
    }
}

/// Every `[registry."HOST"]` section, by host (Docker Hub's names are one host).
pub(super) fn registries(
    ctx: &Ctx,
    raw: &BTreeMap<Spanned<String>, RawRegistry>,
) -> Result<BTreeMap<String, RegistrySettings>, PlanError> {
    let mut registries = BTreeMap::new();
    for (key, r) in raw {
        let (host, settings) = registry(ctx, key, r)?;
        if registries.insert(host.clone(), settings).is_some() {
            return Err(ctx.invalid(
                key.span(),
                &format!("registry.{}", errors::toml_key(key.get_ref())),
                format!("settings for {host} are given twice (Docker Hub has several names)"),
            ));
        }
    }
    Ok(registries)
}

/// One `[registry."HOST"]` section.
fn registry(
    ctx: &Ctx,
    key: &Spanned<String>,
    r: &RawRegistry,
) -> Result<(String, RegistrySettings), PlanError> {
    let host = reference::normalize_host(key.get_ref());
    let field = format!("registry.{}", errors::toml_key(key.get_ref()));
    // Reuse reference parsing to validate the host the way references see it.
    match Reference::parse(&format!("{host}/x")) {
        Ok(parsed) if parsed.location == Location::Registry(host.clone()) => {}
        _ => {
            return Err(ctx.invalid(
                key.span(),
                &field,
                "not a registry host (HOST or HOST:PORT, as in references)",
            ))
        }
    }
    let auth = match &r.auth {
        None => AuthSettings::Default,
        Some(a) => validate_auth(ctx, &field, a)?,
    };
    let settings = RegistrySettings {
        auth,
        insecure: r.insecure,
        ca_file: r
            .ca_file
            .as_ref()
            .map(|v| ca_file(ctx, v, &format!("{field}.ca_file"), r.insecure))
            .transpose()?,
        endpoint: endpoint(ctx, r, &field)?,
        api: r
            .api
            .as_ref()
            .map(|e| url_field(ctx, e, &format!("{field}.api")))
            .transpose()?,
        flavor: flavor(ctx, r, &field, &host)?,
        max_connections: match &r.max_connections {
            Some(v) => int_in(
                ctx,
                v,
                &format!("{field}.max_connections"),
                errors::MAX_CONNECTIONS,
            )?,
            None => DEFAULT_MAX_CONNECTIONS,
        },
        rate_limit: r
            .rate_limit
            .as_ref()
            .map(|rl| rate_limit(ctx, rl.get_ref(), &format!("{field}.rate_limit")))
            .transpose()?,
        retries: match &r.retries {
            Some(v) => int_in(ctx, v, &format!("{field}.retries"), errors::RETRIES)? as u32,
            None => crate::registry::transport::retry::DEFAULT_RETRIES,
        },
        stall_timeout: match &r.stall_timeout {
            None => DEFAULT_STALL_TIMEOUT,
            Some(v) => duration(ctx, v, &format!("{field}.stall_timeout"))?,
        },
        lease: match &r.lease {
            None => Default::default(),
            Some(l) => lease_settings::validate(ctx, l.get_ref(), &format!("{field}.lease"))?,
        },
    };
    Ok((host, settings))
}

/// `endpoint`: a URL of scheme, host and port; plain HTTP only for an `insecure` registry.
fn endpoint(ctx: &Ctx, r: &RawRegistry, field: &str) -> Result<Option<Url>, PlanError> {
    let Some(e) = &r.endpoint else {
        return Ok(None);
    };
    let url = url_field(ctx, e, &format!("{field}.endpoint"))?;
    // The distribution API lives at `/v2/` of the host, and the client asks there: a path
    // or query would be dropped, so the registry reached would not be the one written.
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(ctx.invalid(
            e.span(),
            &format!("{field}.endpoint"),
            "give scheme, host and port only (`https://HOST[:PORT]`): the registry API is at `/v2/` of the host, so a path, query or fragment cannot be honoured",
        ));
    }
    if url.scheme() == "http" && !r.insecure {
        return Err(ctx.invalid(
            e.span(),
            &format!("{field}.endpoint"),
            "plain HTTP needs `insecure = true` for this registry",
        ));
    }
    Ok(Some(url))
}

/// `flavor`, or the one the host name implies.
fn flavor(ctx: &Ctx, r: &RawRegistry, field: &str, host: &str) -> Result<Flavor, PlanError> {
    let Some(f) = &r.flavor else {
        return Ok(Flavor::for_host(host));
    };
    match f.get_ref().as_str() {
        "distribution" => Ok(Flavor::Distribution),
        "ghcr" => Ok(Flavor::Ghcr),
        "dockerhub" => Ok(Flavor::Dockerhub),
        _ => Err(ctx.invalid(
            f.span(),
            &format!("{field}.flavor"),
            "expected \"distribution\", \"ghcr\" or \"dockerhub\"",
        )),
    }
}

/// `rate_limit = { requests_per_second = R, burst = B }` (`burst` defaults to `R`).
fn rate_limit(ctx: &Ctx, rl: &RawRateLimit, field: &str) -> Result<RateLimit, PlanError> {
    let rps = int_in(
        ctx,
        &rl.requests_per_second,
        &format!("{field}.requests_per_second"),
        errors::RATE,
    )?;
    let burst = match &rl.burst {
        Some(b) => int_in(ctx, b, &format!("{field}.burst"), errors::RATE)?,
        None => rps,
    };
    Ok(RateLimit {
        requests_per_second: NonZeroU32::new(rps as u32).expect("positive"),
        burst: NonZeroU32::new(burst as u32).expect("positive"),
    })
}

pub(super) fn validate_auth(
    ctx: &Ctx,
    field: &str,
    a: &Spanned<RawAuth>,
) -> Result<AuthSettings, PlanError> {
    let span = a.span();
    let a = a.get_ref();
    let field = format!("{field}.auth");
    if let (Some(u), Some(file)) = (&a.username, &a.password_file) {
        if a.password_env.is_some() || a.config.is_some() || a.anonymous {
            return Err(ctx.invalid(span, &field, AUTH_FORMS));
        }
        if u.is_empty() || file.is_empty() {
            return Err(ctx.invalid(span, &field, "username and password_file must not be empty"));
        }
        return Ok(AuthSettings::PasswordFile {
            username: u.clone(),
            path: PathBuf::from(file),
        });
    }
    if a.password_file.is_some() {
        return Err(ctx.invalid(
            span,
            &field,
            "password_file needs a username beside it: { username = \"…\", password_file = \"PATH\" }",
        ));
    }
    match (&a.username, &a.password_env, &a.config, a.anonymous) {
        (Some(u), Some(env), None, false) => {
            if u.is_empty() || env.is_empty() {
                return Err(ctx.invalid(
                    span,
                    &field,
                    "username and password_env must not be empty",
                ));
            }
            Ok(AuthSettings::Basic {
                username: u.clone(),
                password_env: env.clone(),
            })
        }
        (None, None, Some(path), false) => Ok(AuthSettings::ConfigFile(PathBuf::from(path))),
        (None, None, None, true) => Ok(AuthSettings::Anonymous),
        (None, None, None, false) => Ok(AuthSettings::Default),
        _ => Err(ctx.invalid(span, &field, AUTH_FORMS)),
    }
}

/// The forms `auth` takes, for an error that mixes or misses them.
const AUTH_FORMS: &str = "use one of { username = \"…\", password_env = \"VAR\" }, { username = \"…\", password_file = \"PATH\" }, { config = \"PATH\" } or { anonymous = true }; the secret itself never goes in the plan";

pub(super) fn parse_ref(
    ctx: &Ctx,
    v: &Spanned<String>,
    field: &str,
) -> Result<Reference, PlanError> {
    Reference::parse(v.get_ref()).map_err(|e| ctx.invalid(v.span(), field, e.0))
}

/// A `[[copy]]` block: the copy engine's rules, one per target (`block` is the block's
/// number, and each rule's `number` until the plan numbers the pairs), and its `prune`
/// settings if it prunes.
pub(super) fn validate_copy(
    ctx: &Ctx,
    block: usize,
    c: &RawCopy,
) -> Result<(Vec<CopyRule>, Option<Prune>), PlanError> {
    let from = parse_ref(ctx, &c.from, "copy.from")?;
    lease_settings::not_a_lease(ctx, &c.from, "copy.from", &from)?;
    let mut tos: Vec<Reference> = Vec::new();
    for (target, field) in targets::list(ctx, &c.to)? {
        let to = validate_target(ctx, &from, &target, &field)?;
        if let Some(k) = tos.iter().position(|t| *t == to) {
            return Err(ctx.invalid(
                target.span(),
                &field,
                format!(
                    "names the same target as copy.to[{}]: each target once",
                    k + 1
                ),
            ));
        }
        tos.push(to);
    }
    let tags = match &c.tags {
        None => TagFilter::default(),
        Some(t) => {
            if !matches!(from.selector, Selector::AllTags | Selector::Wildcard) {
                return Err(ctx.invalid(
                    t.span(),
                    "copy.tags",
                    "tag filters apply when `from` is a repository or a wildcard, not one tag or digest",
                ));
            }
            validate_tags(ctx, t.get_ref())?
        }
    };
    let referrers = artifacts::validate_referrers(ctx, c.referrers.as_ref())?;
    let platforms =
        artifacts::validate_platforms(ctx, c.platforms.as_ref(), c.platform_mode.as_ref())?;
    let prune = prune::validate(ctx, c.prune.as_ref(), &from)?;
    let allow_empty = allow_empty(ctx, c, &from)?;
    let (line, column) = ctx.line_col(c.from.span().start);
    let count = tos.len();
    let platforms = platforms.map(std::sync::Arc::new);
    let rules = tos
        .into_iter()
        .enumerate()
        .map(|(k, to)| CopyRule {
            number: block,
            block,
            fanout: (count > 1).then_some((k + 1, count)),
            line,
            column,
            from: from.clone(),
            to,
            tags: tags.clone(),
            referrers: referrers.clone(),
            platforms: platforms.clone(),
            allow_empty,
            keep_listings: prune.is_some(),
        })
        .collect();
    Ok((rules, prune))
}

/// One target of a copy rule (`field` names it: `copy.to` or `copy.to[K]`), checked against
/// what `from` selects.
fn validate_target(
    ctx: &Ctx,
    from: &Reference,
    target: &Spanned<String>,
    field: &str,
) -> Result<Reference, PlanError> {
    let to = parse_ref(ctx, target, field)?;
    lease_settings::not_a_lease(ctx, target, field, &to)?;
    let to_err = |reason: &str| ctx.invalid(target.span(), field, reason);
    match (&from.selector, &to.selector) {
        (Selector::Wildcard, Selector::Wildcard) => {}
        (Selector::Wildcard, _) => {
            return Err(to_err(
                "`from` is a wildcard, so `to` must be one too (a prefix ending in /*)",
            ))
        }
        (_, Selector::Wildcard) => {
            return Err(to_err(
                "`to` is a wildcard but `from` is not; name one target repository",
            ))
        }
        (_, Selector::Digest(_)) => {
            return Err(to_err(
                "a target takes no digest: the digest comes from the source",
            ))
        }
        (Selector::AllTags, Selector::Tag(_)) => {
            return Err(to_err(
                "a target `:tag` renames one image; `from` selects a whole repository",
            ))
        }
        (Selector::Digest(_), Selector::AllTags) if to.location == Location::Layout => {
            return Err(to_err(
                "an OCI layout names images by tag: give the target a `:tag` for this digest",
            ))
        }
        _ => {}
    }
    Ok(to)
}

/// `visibility`: who should be able to pull the target package, as GitHub names it.
pub(super) fn visibility(ctx: &Ctx, c: &RawCopy) -> Result<Option<Visibility>, PlanError> {
    let Some(v) = &c.visibility else {
        return Ok(None);
    };
    match Visibility::parse(v.get_ref()) {
        Some(visibility) => Ok(Some(visibility)),
        None => Err(ctx.invalid(
            v.span(),
            "copy.visibility",
            "expected \"public\", \"private\" or \"internal\"",
        )),
    }
}

/// `allow_empty`: only where `from` selects many tags (one tag or digest is one image).
fn allow_empty(ctx: &Ctx, c: &RawCopy, from: &Reference) -> Result<bool, PlanError> {
    match &c.allow_empty {
        Some(v) if *v.get_ref() && !matches!(from.selector, Selector::AllTags | Selector::Wildcard) => {
            Err(ctx.invalid(
                v.span(),
                "copy.allow_empty",
                "applies when `from` is a repository or a wildcard: one tag or digest selects one image",
            ))
        }
        Some(v) => Ok(*v.get_ref()),
        None => Ok(false),
    }
}

pub(super) fn regexes(
    ctx: &Ctx,
    list: &[Spanned<String>],
    field: &str,
) -> Result<Vec<Regex>, PlanError> {
    list.iter()
        .map(|s| {
            Regex::new(s.get_ref()).map_err(|e| {
                let msg = e.to_string();
                let reason = msg.lines().last().unwrap_or("invalid regex").trim();
                let reason = reason.strip_prefix("error: ").unwrap_or(reason);
                ctx.invalid(
                    s.span(),
                    field,
                    format!("invalid regular expression: {reason}"),
                )
            })
        })
        .collect()
}

pub(super) fn validate_retain(
    ctx: &Ctx,
    number: usize,
    r: &RawRetain,
    registries: &BTreeMap<String, RegistrySettings>,
) -> Result<RetainPolicy, PlanError> {
    let repository = parse_ref(ctx, &r.repository, "retain.repository")?;
    let repo_err = |reason: &str| ctx.invalid(r.repository.span(), "retain.repository", reason);
    if !matches!(repository.selector, Selector::AllTags | Selector::Wildcard) {
        return Err(repo_err(
            "name a repository (or a wildcard like ghcr.io/org/*), not a tag or digest: retention decides per image",
        ));
    }
    lease_settings::not_a_lease(ctx, &r.repository, "retain.repository", &repository)?;
    if let Location::Registry(host) = &repository.location {
        let flavor = registries
            .get(host)
            .map_or_else(|| Flavor::for_host(host), |r| r.flavor);
        match flavor {
            Flavor::Ghcr
                if repository
                    .repository
                    .trim_end_matches('/')
                    .split('/')
                    .count()
                    < 2
                    && repository.selector != Selector::Wildcard =>
            {
                return Err(repo_err("a GHCR repository is OWNER/PACKAGE"));
            }
            _ => {}
        }
    }
    let keep_newest = match &r.keep_newest {
        None => 0,
        Some(v) => int_in(ctx, v, "retain.keep_newest", errors::KEEP_NEWEST)?,
    };
    let older_than = r
        .older_than
        .as_ref()
        .map(|v| duration(ctx, v, "retain.older_than"))
        .transpose()?;
    let max_deletions = r
        .max_deletions
        .as_ref()
        .map(|v| int_in(ctx, v, "retain.max_deletions", errors::MAX_DELETIONS))
        .transpose()?;
    let untagged_grace = r
        .untagged_grace
        .as_ref()
        .map(|v| any_duration(ctx, v, "retain.untagged_grace"))
        .transpose()?
        .unwrap_or(DEFAULT_UNTAGGED_GRACE);
    let (line, column) = ctx.line_col(r.repository.span().start);
    Ok(RetainPolicy {
        number,
        line,
        column,
        repository,
        rule: RetainRule {
            keep_newest,
            keep_tags: regexes(ctx, &r.keep_tags, "retain.keep_tags")?,
            delete_tags: regexes(ctx, &r.delete_tags, "retain.delete_tags")?,
            older_than,
            untagged: r.untagged,
            untagged_grace,
            max_deletions,
        },
    })
}

pub(super) fn validate_tags(ctx: &Ctx, t: &RawTags) -> Result<TagFilter, PlanError> {
    let semver = t
        .semver
        .as_ref()
        .map(|s| {
            VersionReq::parse(s.get_ref()).map_err(|e| {
                ctx.invalid(
                    s.span(),
                    "copy.tags.semver",
                    format!("invalid semver constraint: {}", errors::semver_reason(&e)),
                )
            })
        })
        .transpose()?;
    let newest = t
        .newest
        .as_ref()
        .map(|n| int_in(ctx, n, "copy.tags.newest", errors::NEWEST))
        .transpose()?;
    Ok(TagFilter {
        include: regexes(ctx, &t.include, "copy.tags.include")?,
        exclude: regexes(ctx, &t.exclude, "copy.tags.exclude")?,
        semver,
        newest,
    })
}
