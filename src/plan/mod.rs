//! The plan: TOML in, a validated and fully defaulted [`Plan`] out.
//!
//! Two layers, as ripgrep does with its flags: `Raw*` types mirror the file (with spans, and
//! `deny_unknown_fields` so a typo is an error, not a silently ignored setting), then
//! [`Plan::from_str`] validates every field and reports `file:line:column: field: reason`.
//! Errors never show a string the plan holds (any of them may be a secret): see [`errors`].
//! This module does no network or database I/O.

pub mod artifacts;
pub mod conflicts;
pub mod errors;
pub mod filter;

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use regex::Regex;
use semver::VersionReq;
use serde::Deserialize;
use toml::Spanned;
use url::Url;

pub use crate::reference::{self, Location, Reference, Selector};
pub use artifacts::{Platform, PlatformMode, Platforms, Referrers};
pub use errors::PlanError;
pub use filter::TagFilter;

pub use crate::registry::config::{
    AuthSettings, Flavor, RateLimit, RegistrySettings, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_STALL_TIMEOUT,
};

/// Blob transfers in flight across the whole run, unless the plan or `--concurrency` says
/// otherwise. crane uses 4 per image, skopeo 6 per image; ferry shares one pool across all
/// images, so 8 keeps two cores and a typical uplink busy without tripping registry limits.
pub const DEFAULT_CONCURRENCY: usize = 8;

/// One validated `[[copy]]` block.
#[derive(Clone, Debug)]
pub struct CopyRule {
    /// 1-based position among the plan's `[[copy]]` blocks.
    pub number: usize,
    /// Line and column of its `from` field, for messages.
    pub line: usize,
    pub column: usize,
    pub from: Reference,
    pub to: Reference,
    pub tags: TagFilter,
    /// Carry the signatures, attestations and SBOMs of every selected image (referrer tags,
    /// the referrers API, the fallback tag index), even where the tag filters leave them out.
    pub referrers: Referrers,
    /// Only these platforms of each index; `None` copies every one.
    pub platforms: Option<std::sync::Arc<Platforms>>,
}

impl fmt::Display for CopyRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "copy #{} ({} -> {})", self.number, self.from, self.to)
    }
}

/// Tags that never change once pushed, by default: semver-looking tags (`1.2.3`, `v1.2.3`,
/// `1.2.3-rc.1`). A re-run trusts the checkpoint for these without asking any registry.
pub const DEFAULT_IMMUTABLE_TAGS: &str = r"^v?\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$";

/// How long a record of an item done is trusted without asking its target, unless the plan
/// says otherwise (`recheck_after`): a tag deleted at the target by someone else comes back
/// on the next run after this long. A day keeps a nightly CronJob's no-op run cheap.
pub const DEFAULT_RECHECK_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Where the checkpoint lives unless `--state` or the plan says otherwise.
pub const DEFAULT_STATE: &str = "state/ferry.db";

/// The rule of one `[[retain]]` block, validated: what retention judges images by.
#[derive(Clone, Debug)]
pub struct RetainRule {
    /// Always keep the N newest images (0: no such guarantee).
    pub keep_newest: usize,
    /// Images with a tag matching any of these are kept.
    pub keep_tags: Vec<Regex>,
    /// Only images whose tags all match one of these are candidates (empty: every tag).
    pub delete_tags: Vec<Regex>,
    /// Only images older than this are candidates.
    pub older_than: Option<Duration>,
    /// Untagged manifests (not reachable from a tagged image) are candidates too.
    pub untagged: bool,
    /// More deletions than this in one repository: delete nothing there and say why.
    pub max_deletions: Option<usize>,
}

/// One validated `[[retain]]` block.
#[derive(Clone, Debug)]
pub struct RetainPolicy {
    /// 1-based position among the plan's `[[retain]]` blocks.
    pub number: usize,
    /// Line and column of its `repository` field.
    pub line: usize,
    pub column: usize,
    /// A repository, or a wildcard (`ghcr.io/org/*`).
    pub repository: Reference,
    pub rule: RetainRule,
}

impl fmt::Display for RetainPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "retain #{} ({})", self.number, self.repository)
    }
}

/// A validated plan.
#[derive(Clone, Debug)]
pub struct Plan {
    pub path: PathBuf,
    registries: BTreeMap<String, RegistrySettings>,
    pub copies: Vec<CopyRule>,
    /// Blob transfers in flight across the run.
    pub concurrency: usize,
    /// The checkpoint file the plan names, if any.
    pub state: Option<PathBuf>,
    /// Tags recorded done that a re-run does not check again.
    pub immutable_tags: Vec<Regex>,
    /// A record confirmed at its target longer ago than this is checked there again.
    pub recheck_after: Duration,
    /// Retention policies, applied after the copies.
    pub retains: Vec<RetainPolicy>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    version: Option<Spanned<i64>>,
    concurrency: Option<Spanned<i64>>,
    state: Option<String>,
    immutable_tags: Option<Vec<Spanned<String>>>,
    recheck_after: Option<Spanned<String>>,
    #[serde(default)]
    registry: BTreeMap<Spanned<String>, RawRegistry>,
    #[serde(default)]
    copy: Vec<RawCopy>,
    #[serde(default)]
    retain: Vec<RawRetain>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetain {
    repository: Spanned<String>,
    keep_newest: Option<Spanned<i64>>,
    #[serde(default)]
    keep_tags: Vec<Spanned<String>>,
    #[serde(default)]
    delete_tags: Vec<Spanned<String>>,
    older_than: Option<Spanned<String>>,
    #[serde(default)]
    untagged: bool,
    max_deletions: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistry {
    auth: Option<Spanned<RawAuth>>,
    #[serde(default)]
    insecure: bool,
    ca_file: Option<Spanned<String>>,
    endpoint: Option<Spanned<String>>,
    api: Option<Spanned<String>>,
    /// A string, matched in validation: serde's unknown-variant error would quote it.
    flavor: Option<Spanned<String>>,
    max_connections: Option<Spanned<i64>>,
    rate_limit: Option<Spanned<RawRateLimit>>,
    retries: Option<Spanned<i64>>,
    stall_timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    requests_per_second: Spanned<i64>,
    burst: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    username: Option<String>,
    password_env: Option<String>,
    config: Option<String>,
    #[serde(default)]
    anonymous: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCopy {
    from: Spanned<String>,
    to: Spanned<String>,
    tags: Option<Spanned<RawTags>>,
    referrers: Option<Spanned<toml::Value>>,
    platforms: Option<Spanned<toml::Value>>,
    platform_mode: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTags {
    #[serde(default)]
    include: Vec<Spanned<String>>,
    #[serde(default)]
    exclude: Vec<Spanned<String>>,
    semver: Option<Spanned<String>>,
    newest: Option<Spanned<i64>>,
}

/// Validation context: the file and its text, to turn spans into line and column.
struct Ctx<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Ctx<'_> {
    /// 1-based line and column (in characters, as editors count) of a byte offset.
    fn line_col(&self, offset: usize) -> (usize, usize) {
        errors::line_col(self.text, offset)
    }

    /// A refused value: its field and why, never the value itself (it may be a secret).
    fn invalid(
        &self,
        span: std::ops::Range<usize>,
        field: &str,
        reason: impl Into<String>,
    ) -> PlanError {
        self.refused(span, field, None, reason.into())
    }

    /// A refused number, which is shown: numbers are not secrets, and `= 0` says it all.
    fn invalid_number(
        &self,
        span: std::ops::Range<usize>,
        field: &str,
        value: i64,
        reason: impl Into<String>,
    ) -> PlanError {
        self.refused(span, field, Some(value), reason.into())
    }

    fn refused(
        &self,
        span: std::ops::Range<usize>,
        field: &str,
        value: Option<i64>,
        reason: String,
    ) -> PlanError {
        let (line, column) = self.line_col(span.start);
        PlanError::Invalid {
            path: self.path.to_path_buf(),
            line,
            column,
            field: field.to_string(),
            value,
            reason,
        }
    }
}

/// An integer within its bounds.
fn int_in(ctx: &Ctx, v: &Spanned<i64>, field: &str, b: errors::Bounds) -> Result<usize, PlanError> {
    let n = *v.get_ref();
    if n < b.min || n > b.max {
        return Err(ctx.invalid_number(
            v.span(),
            field,
            n,
            format!("must be between {} and {}", b.min, b.max),
        ));
    }
    Ok(n as usize)
}

/// A humantime duration (`90s`, `2m`, `1h 30m`), at least one second.
fn duration(ctx: &Ctx, v: &Spanned<String>, field: &str) -> Result<Duration, PlanError> {
    let d = humantime::parse_duration(v.get_ref()).map_err(|e| {
        ctx.invalid(
            v.span(),
            field,
            format!(
                "not a duration like \"90s\" or \"2m\": {}",
                errors::duration_reason(v.get_ref(), &e)
            ),
        )
    })?;
    if d < Duration::from_secs(1) {
        return Err(ctx.invalid(v.span(), field, "must be at least 1s"));
    }
    Ok(d)
}

fn url_field(ctx: &Ctx, v: &Spanned<String>, field: &str) -> Result<Url, PlanError> {
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
fn ca_file(
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
    crate::registry::tls::root_certificates(&pem).map_err(|e| invalid(e.to_string()))?;
    Ok(path)
}

impl Plan {
    /// Read and validate a plan file.
    pub fn load(path: &Path) -> Result<Plan, PlanError> {
        let bytes = std::fs::read(path).map_err(|source| PlanError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let text = errors::decode(path, bytes)?;
        Plan::from_str(path, &text)
    }

    /// Validate plan text; `path` is used in messages.
    pub fn from_str(path: &Path, text: &str) -> Result<Plan, PlanError> {
        // Syntax first, from a spanned parse that also locates the field of a type error.
        let doc =
            toml_edit::ImDocument::parse(text).map_err(|e| errors::syntax_error(path, text, &e))?;
        let raw: RawPlan =
            toml::from_str(text).map_err(|e| errors::schema_error(path, text, &doc, &e))?;
        let ctx = Ctx { path, text };

        match &raw.version {
            None => {
                return Err(ctx.invalid(
                    0..0,
                    "version",
                    "missing: a plan starts with `version = 1`",
                ))
            }
            Some(v) if *v.get_ref() != 1 => {
                return Err(ctx.invalid_number(
                    v.span(),
                    "version",
                    *v.get_ref(),
                    "this ferry reads plan version 1 only",
                ))
            }
            Some(_) => {}
        }
        let concurrency = match &raw.concurrency {
            Some(v) => int_in(&ctx, v, "concurrency", errors::CONCURRENCY)?,
            None => DEFAULT_CONCURRENCY,
        };

        let mut registries = BTreeMap::new();
        for (key, r) in &raw.registry {
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
                Some(a) => validate_auth(&ctx, &field, a)?,
            };
            let endpoint = r
                .endpoint
                .as_ref()
                .map(|e| url_field(&ctx, e, &format!("{field}.endpoint")))
                .transpose()?;
            if let Some(e) = &endpoint {
                if e.scheme() == "http" && !r.insecure {
                    let span = r.endpoint.as_ref().map(|s| s.span()).unwrap_or(0..0);
                    return Err(ctx.invalid(
                        span,
                        &format!("{field}.endpoint"),
                        "plain HTTP needs `insecure = true` for this registry",
                    ));
                }
            }
            let api = r
                .api
                .as_ref()
                .map(|e| url_field(&ctx, e, &format!("{field}.api")))
                .transpose()?;
            let ca_file = r
                .ca_file
                .as_ref()
                .map(|v| ca_file(&ctx, v, &format!("{field}.ca_file"), r.insecure))
                .transpose()?;
            let max_connections = match &r.max_connections {
                Some(v) => int_in(
                    &ctx,
                    v,
                    &format!("{field}.max_connections"),
                    errors::MAX_CONNECTIONS,
                )?,
                None => DEFAULT_MAX_CONNECTIONS,
            };
            let rate_limit = match &r.rate_limit {
                None => None,
                Some(rl) => {
                    let rl = rl.get_ref();
                    let field = format!("{field}.rate_limit");
                    let rps = int_in(
                        &ctx,
                        &rl.requests_per_second,
                        &format!("{field}.requests_per_second"),
                        errors::RATE,
                    )?;
                    let burst = match &rl.burst {
                        Some(b) => int_in(&ctx, b, &format!("{field}.burst"), errors::RATE)?,
                        None => rps,
                    };
                    Some(RateLimit {
                        requests_per_second: NonZeroU32::new(rps as u32).expect("positive"),
                        burst: NonZeroU32::new(burst as u32).expect("positive"),
                    })
                }
            };
            let retries = match &r.retries {
                Some(v) => int_in(&ctx, v, &format!("{field}.retries"), errors::RETRIES)? as u32,
                None => crate::registry::retry::DEFAULT_RETRIES,
            };
            let stall_timeout = match &r.stall_timeout {
                None => DEFAULT_STALL_TIMEOUT,
                Some(v) => duration(&ctx, v, &format!("{field}.stall_timeout"))?,
            };
            let flavor = match &r.flavor {
                None => Flavor::for_host(&host),
                Some(f) => match f.get_ref().as_str() {
                    "distribution" => Flavor::Distribution,
                    "ghcr" => Flavor::Ghcr,
                    "dockerhub" => Flavor::Dockerhub,
                    _ => {
                        return Err(ctx.invalid(
                            f.span(),
                            &format!("{field}.flavor"),
                            "expected \"distribution\", \"ghcr\" or \"dockerhub\"",
                        ))
                    }
                },
            };
            let settings = RegistrySettings {
                auth,
                insecure: r.insecure,
                ca_file,
                endpoint,
                api,
                flavor,
                max_connections,
                rate_limit,
                retries,
                stall_timeout,
            };
            if registries.insert(host.clone(), settings).is_some() {
                return Err(ctx.invalid(
                    key.span(),
                    &field,
                    format!("settings for {host} are given twice (Docker Hub has several names)"),
                ));
            }
        }

        let copies = raw
            .copy
            .iter()
            .enumerate()
            .map(|(i, c)| validate_copy(&ctx, i + 1, c))
            .collect::<Result<Vec<_>, _>>()?;

        let retains = raw
            .retain
            .iter()
            .enumerate()
            .map(|(i, r)| validate_retain(&ctx, i + 1, r, &registries))
            .collect::<Result<Vec<_>, _>>()?;
        let immutable_tags = match &raw.immutable_tags {
            None => vec![Regex::new(DEFAULT_IMMUTABLE_TAGS).expect("static regex")],
            Some(list) => regexes(&ctx, list, "immutable_tags")?,
        };
        if copies.is_empty() && retains.is_empty() {
            // At the end of the file, where a rule would go.
            let (line, column) = ctx.line_col(text.len());
            return Err(PlanError::NoRules {
                path: path.to_path_buf(),
                line,
                column,
            });
        }
        conflicts::check(path, &copies, &retains)?;
        let recheck_after = match &raw.recheck_after {
            None => DEFAULT_RECHECK_AFTER,
            Some(v) => duration(&ctx, v, "recheck_after")?,
        };
        Ok(Plan {
            path: path.to_path_buf(),
            registries,
            copies,
            concurrency,
            state: raw.state.as_ref().map(PathBuf::from),
            immutable_tags,
            recheck_after,
            retains,
        })
    }

    /// The settings for a registry host, defaulted when the plan has no section for it.
    pub fn registry(&self, host: &str) -> RegistrySettings {
        self.registries
            .get(host)
            .cloned()
            .unwrap_or_else(|| RegistrySettings::for_host(host))
    }

    /// Every registry host the plan names in a rule or a section, sorted.
    pub fn hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = self.registries.keys().cloned().collect();
        let refs = self
            .copies
            .iter()
            .flat_map(|c| [&c.from, &c.to])
            .chain(self.retains.iter().map(|r| &r.repository));
        for r in refs {
            if let Location::Registry(h) = &r.location {
                hosts.push(h.clone());
            }
        }
        hosts.sort();
        hosts.dedup();
        hosts
    }
}

fn validate_auth(ctx: &Ctx, field: &str, a: &Spanned<RawAuth>) -> Result<AuthSettings, PlanError> {
    let span = a.span();
    let a = a.get_ref();
    let field = format!("{field}.auth");
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
        _ => Err(ctx.invalid(
            span,
            &field,
            "use one of { username = \"…\", password_env = \"VAR\" }, { config = \"PATH\" } or { anonymous = true }; the secret itself never goes in the plan",
        )),
    }
}

fn parse_ref(ctx: &Ctx, v: &Spanned<String>, field: &str) -> Result<Reference, PlanError> {
    Reference::parse(v.get_ref()).map_err(|e| ctx.invalid(v.span(), field, e.0))
}

fn validate_copy(ctx: &Ctx, number: usize, c: &RawCopy) -> Result<CopyRule, PlanError> {
    let from = parse_ref(ctx, &c.from, "copy.from")?;
    let to = parse_ref(ctx, &c.to, "copy.to")?;
    let to_err = |reason: &str| ctx.invalid(c.to.span(), "copy.to", reason);
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
    let (line, column) = ctx.line_col(c.from.span().start);
    Ok(CopyRule {
        number,
        line,
        column,
        from,
        to,
        tags,
        referrers,
        platforms: platforms.map(std::sync::Arc::new),
    })
}

fn regexes(ctx: &Ctx, list: &[Spanned<String>], field: &str) -> Result<Vec<Regex>, PlanError> {
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

fn validate_retain(
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
            max_deletions,
        },
    })
}

fn validate_tags(ctx: &Ctx, t: &RawTags) -> Result<TagFilter, PlanError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A rule, for plans whose subject is something else: a plan without one is refused.
    const RULE: &str = "[[copy]]\nfrom = \"r.io/a/b\"\nto = \"r.io/c/d\"\n";

    fn parse(text: &str) -> Result<Plan, PlanError> {
        Plan::from_str(Path::new("p.toml"), text)
    }

    fn err(text: &str) -> String {
        parse(text).expect_err("plan should be refused").to_string()
    }

    #[test]
    fn referrers_and_platforms_are_validated() {
        let copy = |extra: &str| {
            format!("version = 1\n[[copy]]\nfrom = \"r.io/a/b\"\nto = \"r.io/c/d\"\n{extra}\n")
        };
        let p = parse(&copy(
            "referrers = { artifact_types = ['application/vnd.dsse.envelope.v1+json'] }\nplatforms = ['linux/amd64', 'linux/arm/v7']\nplatform_mode = 'rewrite'",
        ))
        .unwrap();
        let rule = &p.copies[0];
        assert_eq!(
            rule.referrers,
            Referrers::Only(vec!["application/vnd.dsse.envelope.v1+json".into()])
        );
        let platforms = rule.platforms.as_ref().unwrap();
        assert_eq!(platforms.mode, PlatformMode::Rewrite);
        assert_eq!(platforms.to_string(), "linux/amd64,linux/arm/v7 (rewrite)");
        assert_eq!(
            parse(&copy("")).unwrap().copies[0].referrers,
            Referrers::All
        );
        assert_eq!(
            parse(&copy("referrers = false")).unwrap().copies[0].referrers,
            Referrers::None
        );
        assert!(parse(&copy("platforms = 'all'")).unwrap().copies[0]
            .platforms
            .is_none());

        let e = err(&copy("platforms = ['linux/amd64']"));
        assert!(
            e.contains("p.toml:5:13") && e.contains("platform_mode"),
            "{e}"
        );
        let e = err(&copy("platform_mode = 'sparse'"));
        assert!(
            e.contains("copy.platform_mode") && e.contains("only with"),
            "{e}"
        );
        let e = err(&copy("platforms = ['linux/amd64']\nplatform_mode = 'thin'"));
        assert!(
            e.contains("copy.platform_mode: expected \"sparse\"") && !e.contains("thin"),
            "{e}"
        );
        let e = err(&copy("platforms = ['linux']\nplatform_mode = 'sparse'"));
        assert!(
            e.contains("copy.platforms") && e.contains("os/architecture"),
            "{e}"
        );
        let e = err(&copy("platforms = []\nplatform_mode = 'sparse'"));
        assert!(e.contains("copy.platforms"), "{e}");
        let e = err(&copy("referrers = 'yes'"));
        assert!(
            e.contains("copy.referrers") && e.contains("artifact_types"),
            "{e}"
        );
        let e = err(&copy("referrers = { artifact_types = [] }"));
        assert!(e.contains("referrers = false"), "{e}");
        let e = err(&copy("referrers = { artifact_types = ['sig'] }"));
        assert!(e.contains("not a media type"), "{e}");
        let e = err(&copy("referrers = { types = ['a/b'] }"));
        assert!(e.contains("unknown field `types`"), "{e}");
    }

    #[test]
    fn issue_example_parses() {
        let plan = parse(
            r#"
version = 1

[registry."docker.io"]
auth = { username = "me", password_env = "DOCKERHUB_TOKEN" }

[registry."ghcr.io"]
auth = { config = "/var/run/secrets/ghcr/.dockerconfigjson" }

[registry."127.0.0.1:5001"]
insecure = true

[[copy]]
from = "docker.io/myorg/api"
to   = "ghcr.io/myorg/api"
tags = { include = ['^v\d+\.\d+\.\d+$', '^latest$'], exclude = ['-rc\d*$'], semver = ">=1.2, <3", newest = 20 }

[[copy]]
from = "docker.io/myorg/*"
to   = "ghcr.io/myorg/*"

[[copy]]
from = "docker.io/library/nginx:1.27.3"
to   = "ghcr.io/myorg/mirror/nginx"
"#,
        )
        .unwrap();
        assert_eq!(plan.copies.len(), 3);
        assert_eq!(plan.copies[0].tags.newest, Some(20));
        assert_eq!(plan.copies[0].line, 14);
        assert!(plan.registry("127.0.0.1:5001").insecure);
        assert_eq!(
            plan.registry("docker.io").auth,
            AuthSettings::Basic {
                username: "me".into(),
                password_env: "DOCKERHUB_TOKEN".into()
            }
        );
        assert_eq!(plan.registry("quay.io"), RegistrySettings::default());
        assert_eq!(plan.registry("ghcr.io").flavor, Flavor::Ghcr);
        assert_eq!(plan.hosts(), vec!["127.0.0.1:5001", "docker.io", "ghcr.io"]);
    }

    #[test]
    fn state_and_immutable_tags() {
        let p = parse(&format!("version = 1\n{RULE}")).unwrap();
        assert_eq!(p.state, None);
        assert!(p.immutable_tags[0].is_match("v1.2.3"));
        assert!(p.immutable_tags[0].is_match("1.2.3-rc.1"));
        assert!(!p.immutable_tags[0].is_match("latest"));
        assert!(!p.immutable_tags[0].is_match("1.2"));
        let p = parse(&format!(
            "version = 1\nstate = \"/var/lib/ferry/s.db\"\nimmutable_tags = ['^release-']\n{RULE}"
        ))
        .unwrap();
        assert_eq!(p.state.as_deref(), Some(Path::new("/var/lib/ferry/s.db")));
        assert!(p.immutable_tags[0].is_match("release-7"));
        let p = parse(&format!("version = 1\nimmutable_tags = []\n{RULE}")).unwrap();
        assert!(p.immutable_tags.is_empty());
        let e = err("version = 1\nimmutable_tags = ['(']\n");
        assert!(
            e.starts_with("p.toml:2:19: immutable_tags: invalid regular expression"),
            "{e}"
        );
    }

    #[test]
    fn registry_limits() {
        let p = parse(&format!("version = 1\n{RULE}[registry.\"docker.io\"]\nrate_limit = {{ requests_per_second = 5, burst = 10 }}\nretries = 0\nstall_timeout = \"2m\"\n")).unwrap();
        let r = p.registry("docker.io");
        assert_eq!(r.rate_limit.unwrap().requests_per_second.get(), 5);
        assert_eq!(r.rate_limit.unwrap().burst.get(), 10);
        assert_eq!(r.retries, 0);
        assert_eq!(r.stall_timeout, Duration::from_secs(120));
        assert!(
            err("version = 1\n[registry.\"x.io\"]\nstall_timeout = \"soon\"\n")
                .contains("not a duration")
        );
        assert!(err(
            "version = 1\n[registry.\"x.io\"]\nrate_limit = { requests_per_second = 0 }\n"
        )
        .contains("requests_per_second = 0"));
    }

    #[test]
    fn retain_blocks() {
        let p = parse(
            "version = 1\n[[retain]]\nrepository = \"reg.example:5000/org/*\"\nkeep_newest = 10\nkeep_tags = ['^latest$']\ndelete_tags = ['^pr-\\d+$']\nolder_than = \"30d\"\nuntagged = true\nmax_deletions = 100\n",
        )
        .unwrap();
        let r = &p.retains[0];
        assert_eq!(r.rule.keep_newest, 10);
        assert_eq!(r.rule.older_than, Some(Duration::from_secs(30 * 86400)));
        assert_eq!(r.rule.max_deletions, Some(100));
        assert!(r.rule.untagged);
        assert_eq!(p.hosts(), vec!["reg.example:5000"]);
        let p = parse("version = 1\n[[retain]]\nrepository = \"docker.io/org/app\"\n").unwrap();
        assert_eq!(p.registry("docker.io").flavor, Flavor::Dockerhub);
        let p = parse("version = 1\n[[retain]]\nrepository = \"ghcr.io/org/app\"\n").unwrap();
        assert_eq!(p.registry("ghcr.io").flavor, Flavor::Ghcr);
        assert!(
            err("version = 1\n[[retain]]\nrepository = \"ghcr.io/app\"\n")
                .contains("OWNER/PACKAGE")
        );
        let p = parse(&format!(
            "version = 1\n{RULE}[registry.\"127.0.0.1:5000\"]\ninsecure = true\nflavor = \"ghcr\"\n"
        ))
        .unwrap();
        assert_eq!(p.registry("127.0.0.1:5000").flavor, Flavor::Ghcr);
        let e = err("version = 1\n[registry.\"r.io\"]\nflavor = \"quay\"\n");
        assert_eq!(
            e,
            "p.toml:3:10: registry.\"r.io\".flavor: expected \"distribution\", \"ghcr\" or \"dockerhub\""
        );
        assert!(
            err("version = 1\n[[retain]]\nrepository = \"r.io/org/app:v1\"\n")
                .contains("not a tag or digest")
        );
        assert!(err(
            "version = 1\n[[retain]]\nrepository = \"r.io/org/app\"\nolder_than = \"a while\"\n"
        )
        .contains("retain.older_than"));
        assert!(
            err("version = 1\n[[retain]]\nrepository = \"r.io/org/app\"\nkeep = 3\n")
                .contains("unknown field `keep`")
        );
    }

    #[test]
    fn ca_file_must_exist_and_hold_pem_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let good = dir.path().join("ca.pem");
        std::fs::write(&good, ca.pem()).unwrap();
        let section = |path: &Path| {
            format!(
                "version = 1\n{RULE}[registry.\"r.example\"]\nca_file = {:?}\n",
                path.display().to_string()
            )
        };
        let p = parse(&section(&good)).unwrap();
        assert_eq!(
            p.registry("r.example").ca_file.as_deref(),
            Some(good.as_path())
        );
        assert_eq!(RegistrySettings::default().ca_file, None);

        let der = dir.path().join("ca.der");
        std::fs::write(&der, ca.der()).unwrap();
        let e = err(&section(&der));
        assert!(
            e.starts_with("p.toml:6:11: registry.\"r.example\".ca_file: holds no PEM certificate"),
            "{e}"
        );
        let e = err(&section(&dir.path().join("missing.pem")));
        assert!(
            e.starts_with("p.toml:6:11: registry.\"r.example\".ca_file: cannot read it"),
            "{e}"
        );
        assert!(!e.contains("missing.pem"), "the path is the user's: {e}");
        assert!(e.contains("cannot read it"), "{e}");
        let e = err(&format!("{}insecure = true\n", section(&good)));
        assert!(e.contains("would be ignored"), "{e}");
    }

    #[test]
    fn version_is_checked() {
        assert_eq!(
            err(""),
            "p.toml:1:1: version: missing: a plan starts with `version = 1`"
        );
        let e = err("version = 2");
        assert!(e.starts_with("p.toml:1:11: version = 2:"), "{e}");
    }

    #[test]
    fn unknown_fields_name_line_and_field() {
        let e = err("version = 1\n[[copy]]\nfrom = \"a/b\"\nto = \"c/d\"\ntag = 1\n");
        assert_eq!(
            e,
            "p.toml:5:1: unknown field `tag` in [[copy]]; expected one of `from`, `to`, `tags`, `referrers`, `platforms`, `platform_mode`"
        );
        let e = err("version = 1\n[registry.\"ghcr.io\"]\ninsecur = true\n");
        assert!(
            e.starts_with("p.toml:3:1: unknown field `insecur` in [registry.\"ghcr.io\"]; expected one of `auth`, `insecure`,"),
            "{e}"
        );
        // Columns count characters, as editors do.
        let base = "version = 1\n[[copy]]\nfrom = \"a/b\"\nto = \"c/d\"\n";
        let e = err(&format!(
            "{base}tags = {{ exclude = ['ü'], include = ['('] }}\n"
        ));
        assert!(e.starts_with("p.toml:5:38: copy.tags.include"), "{e}");
        let e = err(&format!("{base}tags = {{ exclude = ['ü'], x = 2 }}\n"));
        assert!(
            e.starts_with(
                "p.toml:5:27: unknown field `x` in [copy.tags]; expected one of `include`"
            ),
            "{e}"
        );
    }

    #[test]
    fn bad_values_name_file_line_column_and_field() {
        let e = err("version = 1\n[[copy]]\nfrom = \"a/b\"\nto = \"c/d\"\ntags = { include = ['(unclosed'] }\n");
        assert_eq!(
            e,
            "p.toml:5:21: copy.tags.include: invalid regular expression: unclosed group"
        );
        let e = err(
            "version = 1\n[[copy]]\nfrom = \"a/b\"\nto = \"c/d\"\ntags = { semver = \"=>1\" }\n",
        );
        assert_eq!(
            e,
            "p.toml:5:19: copy.tags.semver: invalid semver constraint: unexpected character '>' while parsing major version number"
        );
        let e = err("version = 1\n[[copy]]\nfrom = \"a/B\"\nto = \"c/d\"\n");
        assert_eq!(e, "p.toml:3:8: copy.from: the repository is not valid (lowercase letters, digits, separators . _ __ -, components joined by /)");
        let e = err("version = 1\n[[copy]]\nfrom = \"a/b\"\nto = \"c/d\"\ntags = { newest = 0 }\n");
        assert!(e.contains("copy.tags.newest = 0: must be between 1"), "{e}");
    }

    #[test]
    fn rule_shapes_are_checked() {
        let base = "version = 1\n[[copy]]\n";
        assert!(err(&format!(
            "{base}from = \"ghcr.io/o/*\"\nto = \"quay.io/o/x\"\n"
        ))
        .contains("must be one too"));
        assert!(err(&format!(
            "{base}from = \"ghcr.io/o/x\"\nto = \"quay.io/o/*\"\n"
        ))
        .contains("`from` is not"));
        assert!(err(&format!(
            "{base}from = \"ghcr.io/o/x\"\nto = \"quay.io/o/x:v1\"\n"
        ))
        .contains("renames one image"));
        assert!(err(&format!(
            "{base}from = \"ghcr.io/o/x:v1\"\nto = \"quay.io/o/x\"\ntags = {{ newest = 1 }}\n"
        ))
        .contains("tag filters apply"));
        assert!(err(&format!(
            "{base}from = \"ghcr.io/o/x@sha256:{}\"\nto = \"oci:out\"\n",
            "0".repeat(64)
        ))
        .contains("give the target a `:tag`"));
        assert!(parse(&format!(
            "{base}from = \"ghcr.io/o/x:v1\"\nto = \"quay.io/o/x:prod\"\n"
        ))
        .is_ok());
    }

    #[test]
    fn auth_shapes_and_secret_hygiene() {
        let e = err("version = 1\n[registry.\"ghcr.io\"]\nauth = { username = \"u\" }\n");
        assert!(e.contains("registry.\"ghcr.io\".auth"), "{e}");
        let e = err("version = 1\n[registry.\"ghcr.io\"]\nauth = { password = \"hunter2\" }\n");
        assert!(e.contains("unknown field `password`"), "{e}");
        let e = err("version = 1\n[registry.\"ghcr.io\"]\nendpoint = \"https://u:hunter2@x.io\"\n");
        assert!(!e.contains("hunter2"), "{e}");
        let e = err("version = 1\n[registry.\"ghcr.io\"]\nendpoint = \"http://x.io\"\n");
        assert!(e.contains("insecure = true"), "{e}");
        let e = err("version = 1\n[registry.\"docker.io\"]\n[registry.\"index.docker.io\"]\n");
        assert!(e.contains("given twice"), "{e}");
    }
}
