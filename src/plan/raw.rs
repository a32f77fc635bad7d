//! The plan file as it is written: `Raw*` types that mirror the TOML, with spans for messages
//! and `deny_unknown_fields` so a typo is an error, not a setting silently ignored.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPlan {
    pub(super) version: Option<Spanned<i64>>,
    pub(super) concurrency: Option<Spanned<i64>>,
    pub(super) state: Option<String>,
    pub(super) immutable_tags: Option<Vec<Spanned<String>>>,
    pub(super) recheck_after: Option<Spanned<String>>,
    pub(super) retain_runs: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) registry: BTreeMap<Spanned<String>, RawRegistry>,
    #[serde(default)]
    pub(super) copy: Vec<RawCopy>,
    #[serde(default)]
    pub(super) retain: Vec<RawRetain>,
    pub(super) in_use: Option<super::in_use::RawInUse>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetain {
    pub(super) repository: Spanned<String>,
    pub(super) keep_newest: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) keep_tags: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) delete_tags: Vec<Spanned<String>>,
    pub(super) older_than: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) untagged: bool,
    pub(super) untagged_grace: Option<Spanned<String>>,
    pub(super) max_deletions: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRegistry {
    pub(super) auth: Option<Spanned<RawAuth>>,
    #[serde(default)]
    pub(super) insecure: bool,
    pub(super) ca_file: Option<Spanned<String>>,
    pub(super) endpoint: Option<Spanned<String>>,
    pub(super) api: Option<Spanned<String>>,
    /// A string, matched in validation: serde's unknown-variant error would quote it.
    pub(super) flavor: Option<Spanned<String>>,
    pub(super) max_connections: Option<Spanned<i64>>,
    pub(super) rate_limit: Option<Spanned<RawRateLimit>>,
    pub(super) retries: Option<Spanned<i64>>,
    pub(super) stall_timeout: Option<Spanned<String>>,
    pub(super) lease: Option<Spanned<RawLease>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLease {
    pub(super) repository: Option<Spanned<String>>,
    pub(super) expiry: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRateLimit {
    pub(super) requests_per_second: Spanned<i64>,
    pub(super) burst: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    pub(super) username: Option<String>,
    pub(super) password_env: Option<String>,
    pub(super) password_file: Option<String>,
    pub(super) config: Option<String>,
    #[serde(default)]
    pub(super) anonymous: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCopy {
    pub(super) from: Spanned<String>,
    pub(super) to: Spanned<String>,
    pub(super) tags: Option<Spanned<RawTags>>,
    pub(super) referrers: Option<Spanned<toml::Value>>,
    pub(super) platforms: Option<Spanned<toml::Value>>,
    pub(super) platform_mode: Option<Spanned<String>>,
    pub(super) prune: Option<Spanned<toml::Value>>,
    pub(super) allow_empty: Option<Spanned<bool>>,
    pub(super) visibility: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTags {
    #[serde(default)]
    pub(super) include: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) exclude: Vec<Spanned<String>>,
    pub(super) semver: Option<Spanned<String>>,
    pub(super) newest: Option<Spanned<i64>>,
}
