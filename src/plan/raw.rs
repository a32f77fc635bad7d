//! The plan file as it is written: `Raw*` types that mirror the TOML, with spans for messages
//! and `deny_unknown_fields` so a typo is an error, not a setting silently ignored.
//!
//! The same types give `ferry schema` its JSON Schema (`schemars`): a field's doc comment is
//! its `description` in a user's editor, an integer's range comes from [`super::schema`], and
//! a `Spanned<T>` is described as the `T` it holds. Fields parsed as a `toml::Value` (checked
//! by hand so an error never quotes a value) are described by the shapes at the end of this
//! file, which describe what the checks accept and are never built.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use toml::Spanned;

use super::schema;

/// A ferry plan (version 1): what to copy between OCI registries, and what to delete. `ferry
/// check PLAN` is the authority on what is valid; this schema cannot say everything it
/// checks (references, regexes, durations, rules that involve several fields).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "ferry plan")]
pub(super) struct RawPlan {
    /// The plan format's version: must be `1`.
    #[schemars(with = "Option<i64>", required, range(min = 1, max = 1))]
    pub(super) version: Option<Spanned<i64>>,
    /// The most blob transfers in flight to one target registry, and images in flight
    /// (default `16`). `ferry run --concurrency N` overrides it.
    #[schemars(
        with = "Option<i64>",
        range(min = schema::CONCURRENCY.min, max = schema::CONCURRENCY.max)
    )]
    pub(super) concurrency: Option<Spanned<i64>>,
    /// The SQLite checkpoint file (default `"state/ferry.db"`). `ferry run --state PATH` (or
    /// `FERRY_STATE`) overrides it.
    pub(super) state: Option<String>,
    /// Regexes of tags trusted not to change once pushed, within `recheck_after` only
    /// (default: semver-looking tags, `'^v?\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$'`). `[]` makes
    /// every tag cost one HEAD at its source on every re-run.
    #[schemars(with = "Option<Vec<String>>")]
    pub(super) immutable_tags: Option<Vec<Spanned<String>>>,
    /// How long a record of an image done is trusted without asking its source and target
    /// again, a duration like `"24h"` (the default).
    #[schemars(with = "Option<String>")]
    pub(super) recheck_after: Option<Spanned<String>>,
    /// How many runs the checkpoint keeps, for `ferry restore` (default `30`).
    #[schemars(
        with = "Option<i64>",
        range(min = schema::RETAIN_RUNS.min, max = schema::RETAIN_RUNS.max)
    )]
    pub(super) retain_runs: Option<Spanned<i64>>,
    /// Settings per registry host, keyed by the host as it appears in references
    /// (`[registry."ghcr.io"]`). A host without a section gets the defaults.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, RawRegistry>")]
    pub(super) registry: BTreeMap<Spanned<String>, RawRegistry>,
    /// What to copy: one `[[copy]]` table per rule.
    #[serde(default)]
    pub(super) copy: Vec<RawCopy>,
    /// What to delete: one `[[retain]]` table per retention policy.
    #[serde(default)]
    pub(super) retain: Vec<RawRetain>,
    /// Where the images that run, or are about to, are found: every `[[retain]]` keeps them.
    pub(super) in_use: Option<super::in_use::RawInUse>,
}

/// A retention policy: which images of a repository (or of every repository a wildcard
/// names) are deleted. An image is deleted only when no keep rule holds for it.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Retain")]
pub(super) struct RawRetain {
    /// A repository (`"ghcr.io/myorg/api"`) or a wildcard (`"ghcr.io/myorg/*"`); not a tag or
    /// digest: decisions are per image.
    #[schemars(with = "String")]
    pub(super) repository: Spanned<String>,
    /// Always keep the N newest images (default `0`).
    #[schemars(
        with = "Option<i64>",
        range(min = schema::KEEP_NEWEST.min, max = schema::KEEP_NEWEST.max)
    )]
    pub(super) keep_newest: Option<Spanned<i64>>,
    /// Regexes: an image with any matching tag is kept.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub(super) keep_tags: Vec<Spanned<String>>,
    /// Regexes: an image is a candidate only if every one of its tags matches one of these
    /// (default: every tag).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub(super) delete_tags: Vec<Spanned<String>>,
    /// An image is a candidate only if older than this, a duration like `"30d"`. Unknown age
    /// keeps it.
    #[schemars(with = "Option<String>")]
    pub(super) older_than: Option<Spanned<String>>,
    /// Untagged manifests that no tagged image references are candidates too (default
    /// `false`).
    #[serde(default)]
    pub(super) untagged: bool,
    /// With `untagged = true`: an untagged manifest younger than this may be a push in
    /// progress and is kept (default `"1h"`; `"0s"` turns it off).
    #[schemars(with = "Option<String>")]
    pub(super) untagged_grace: Option<Spanned<String>>,
    /// When more images than this would be deleted in one repository, nothing there is
    /// deleted and the run says why (exit 1).
    #[schemars(
        with = "Option<i64>",
        range(min = schema::MAX_DELETIONS.min, max = schema::MAX_DELETIONS.max)
    )]
    pub(super) max_deletions: Option<Spanned<i64>>,
}

/// Settings for one registry host.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Registry")]
pub(super) struct RawRegistry {
    /// Where credentials come from (default: docker's credential lookup). The secret itself
    /// never goes into the plan.
    #[schemars(with = "Option<RawAuth>")]
    pub(super) auth: Option<Spanned<RawAuth>>,
    /// Allow plain HTTP and unverified TLS certificates for this host only (default `false`).
    /// Cannot be combined with `ca_file`.
    #[serde(default)]
    pub(super) insecure: bool,
    /// A PEM file of CA certificates this host's certificate may chain to, added to the
    /// system roots.
    #[schemars(with = "Option<String>")]
    pub(super) ca_file: Option<Spanned<String>>,
    /// Connect here instead (`https://HOST[:PORT]`): a pull-through mirror, or a registry
    /// reached under another name. `http://` needs `insecure = true`.
    #[schemars(with = "Option<String>")]
    pub(super) endpoint: Option<Spanned<String>>,
    /// The registry's management API: Docker Hub's or GitHub's (default
    /// `https://hub.docker.com` for `docker.io`, `https://api.github.com` for `ghcr.io`).
    #[schemars(with = "Option<String>")]
    pub(super) api: Option<Spanned<String>>,
    /// Which API family the registry speaks beyond the distribution API, for listing and
    /// deleting (default `ghcr` for `ghcr.io`, `dockerhub` for `docker.io`, else
    /// `distribution`).
    // A string, matched in validation: serde's unknown-variant error would quote it.
    #[schemars(with = "Option<FlavorName>")]
    pub(super) flavor: Option<Spanned<String>>,
    /// Requests in flight to this host at most (default `16`).
    #[schemars(
        with = "Option<i64>",
        range(min = schema::MAX_CONNECTIONS.min, max = schema::MAX_CONNECTIONS.max)
    )]
    pub(super) max_connections: Option<Spanned<i64>>,
    /// Every request to this host waits for this budget (default: none).
    #[schemars(with = "Option<RawRateLimit>")]
    pub(super) rate_limit: Option<Spanned<RawRateLimit>>,
    /// Retries of a failed request or transfer: resets, timeouts, stalls, cut or corrupted
    /// bodies, 408/429/5xx (default `5`).
    #[schemars(
        with = "Option<i64>",
        range(min = schema::RETRIES.min, max = schema::RETRIES.max)
    )]
    pub(super) retries: Option<Spanned<i64>>,
    /// A response or upload that makes no progress for this long is abandoned and retried, a
    /// duration like `"60s"` (the default).
    #[schemars(with = "Option<String>")]
    pub(super) stall_timeout: Option<Spanned<String>>,
    /// The run lease at this host, so two runs never delete at once.
    #[schemars(with = "Option<RawLease>")]
    pub(super) lease: Option<Spanned<RawLease>>,
}

/// The run lease at a registry host.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Lease")]
pub(super) struct RawLease {
    /// The repository the lease lives in; its last component must be `ferry-lease` (default:
    /// beside the first repository the run deletes in).
    #[schemars(with = "Option<String>")]
    pub(super) repository: Option<Spanned<String>>,
    /// How long the lease lasts unless renewed, a duration of at least `"3s"` (default
    /// `"10m"`).
    #[schemars(with = "Option<String>")]
    pub(super) expiry: Option<Spanned<String>>,
}

/// A request budget for one registry host.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "RateLimit")]
pub(super) struct RawRateLimit {
    /// Requests per second, on average.
    #[schemars(with = "i64", range(min = schema::RATE.min, max = schema::RATE.max))]
    pub(super) requests_per_second: Spanned<i64>,
    /// Requests that may go at once after a quiet spell (default: `requests_per_second`).
    #[schemars(with = "Option<i64>", range(min = schema::RATE.min, max = schema::RATE.max))]
    pub(super) burst: Option<Spanned<i64>>,
}

/// Credentials for one registry host, in exactly one of these forms: `{ username,
/// password_env }`, `{ username, password_file }`, `{ config }` or `{ anonymous = true }`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Auth")]
pub(super) struct RawAuth {
    /// The user name, with `password_env` or `password_file`.
    pub(super) username: Option<String>,
    /// The environment variable that holds the password or token.
    pub(super) password_env: Option<String>,
    /// The file that holds the password or token (a mounted Secret), read again when it
    /// changes.
    pub(super) password_file: Option<String>,
    /// A docker `config.json` or a Kubernetes `.dockerconfigjson` to read credentials from.
    pub(super) config: Option<String>,
    /// No credentials, even if a docker config has some.
    #[serde(default)]
    pub(super) anonymous: bool,
}

/// A copy rule: what to copy, and where to.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Copy")]
pub(super) struct RawCopy {
    /// What to copy: an image (`"docker.io/library/nginx:1.27"`), a repository, a wildcard
    /// (`"docker.io/myorg/*"`), or an OCI layout (`"oci:PATH"`).
    #[schemars(with = "String")]
    pub(super) from: Spanned<String>,
    /// Where to, in the same form as `from`; or a list of targets (`["ghcr.io/myorg/*",
    /// "registry.dr.example/myorg/*"]`), each blob read from the source once for all of them.
    #[schemars(with = "super::targets::ToShape")]
    pub(super) to: Spanned<super::targets::RawTo>,
    /// Tag filters, for `from` forms that select many tags (default: every tag).
    #[schemars(with = "Option<RawTags>")]
    pub(super) tags: Option<Spanned<RawTags>>,
    /// Carry what refers to each selected image (signatures, attestations, SBOMs): `true`
    /// (the default), `false`, or `{ artifact_types = ["…"] }` for only those types.
    #[schemars(with = "Option<ReferrersShape>")]
    pub(super) referrers: Option<Spanned<toml::Value>>,
    /// Only these platforms of each index (`["linux/amd64", "linux/arm64"]`), or `"all"`
    /// (the default). A list needs `platform_mode`.
    #[schemars(with = "Option<PlatformsShape>")]
    pub(super) platforms: Option<Spanned<toml::Value>>,
    /// How an index is copied with a `platforms` list: `"sparse"` keeps the original index
    /// (same digest) with only the chosen children, `"rewrite"` writes a new index of them.
    #[schemars(with = "Option<PlatformModeName>")]
    pub(super) platform_mode: Option<Spanned<String>>,
    /// Delete at the target what this rule copied there and no longer selects: `true`, or
    /// `{ max_deletions = N, older_than = "7d" }` (default `false`).
    #[schemars(with = "Option<PruneShape>")]
    pub(super) prune: Option<Spanned<toml::Value>>,
    /// Accept a selection of nothing: a wildcard that lists no repository, or `tags` filters
    /// that keep no tag (default `false`).
    #[schemars(with = "Option<bool>")]
    pub(super) allow_empty: Option<Spanned<bool>>,
    /// What the target packages should be on GHCR: the run lists each one that is not, with
    /// its settings page (default: the source's visibility, where the source can say).
    // A string, matched in validation: serde's unknown-variant error would quote it.
    #[schemars(with = "Option<VisibilityName>")]
    pub(super) visibility: Option<Spanned<String>>,
}

/// Tag filters of a copy rule, applied in this order.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Tags")]
pub(super) struct RawTags {
    /// Regexes (unanchored): a tag must match at least one, when the list is not empty.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub(super) include: Vec<Spanned<String>>,
    /// Regexes (unanchored): a tag matching any is dropped.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub(super) exclude: Vec<Spanned<String>>,
    /// Only tags that parse as versions and satisfy this constraint (`">=1.2, <3"`, `"^2"`).
    #[schemars(with = "Option<String>")]
    pub(super) semver: Option<Spanned<String>>,
    /// Keep the N highest versions among the tags that are left.
    #[schemars(with = "Option<i64>", range(min = schema::NEWEST.min, max = schema::NEWEST.max))]
    pub(super) newest: Option<Spanned<i64>>,
}

// The shapes below describe string choices and `toml::Value` fields for the schema. They
// have no doc comment of their own: in the schema the field's doc comment describes them.

// `flavor`: the API family of a registry.
#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // described, never built: validation matches the string
pub(super) enum FlavorName {
    /// CNCF distribution and registries like it: the catalog, and deletes by digest.
    Distribution,
    /// GitHub Container Registry: GitHub's Packages API lists and deletes.
    Ghcr,
    /// Docker Hub: Docker Hub's API lists and deletes.
    Dockerhub,
}

// `visibility`: what a GHCR package should be.
#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // described, never built: validation matches the string
pub(super) enum VisibilityName {
    /// Anyone may pull.
    Public,
    /// Only those granted access may pull.
    Private,
    /// Members of the enterprise may pull.
    Internal,
}

// `platform_mode`: how an index is copied with a `platforms` list.
#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // described, never built: validation matches the string
pub(super) enum PlatformModeName {
    /// The original index, byte for byte, with only the chosen children copied.
    Sparse,
    /// A new index listing only the chosen children (a new digest, reported).
    Rewrite,
}

// `referrers`: `true`, `false`, or only some artifact types.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)] // described, never built: `artifacts::validate_referrers` reads the value
pub(super) enum ReferrersShape {
    /// Carry every referrer (`true`) or none (`false`).
    Switch(bool),
    /// Carry only these artifact types.
    Only(ArtifactTypes),
}

// `referrers = { artifact_types = [...] }`.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // described, never built
pub(super) struct ArtifactTypes {
    /// Media types of the referrers to carry (`"application/vnd.dev.cosign.simplesigning.v1+json"`).
    #[schemars(length(min = 1))]
    artifact_types: Vec<String>,
}

// `platforms`: `"all"` or a list of platforms.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)] // described, never built: `artifacts::validate_platforms` reads the value
pub(super) enum PlatformsShape {
    /// Every platform: each index is copied as it is.
    All(AllPlatforms),
    /// Only these platforms (`"linux/amd64"`, `"linux/arm/v7"`).
    Only(#[schemars(length(min = 1))] Vec<String>),
}

// `platforms = "all"`.
#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // described, never built
pub(super) enum AllPlatforms {
    /// Every platform.
    All,
}

// `prune`: `true`, `false`, or a table of valves.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)] // described, never built: `prune::validate` reads the value
pub(super) enum PruneShape {
    /// Prune (`true`) or not (`false`).
    Switch(bool),
    /// Prune, within these valves.
    Valves(PruneValves),
}

// `prune = { max_deletions = N, older_than = "7d" }`.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // described, never built
pub(super) struct PruneValves {
    /// More deletions than this for the rule in one run: delete nothing for the rule, say
    /// why, exit 1.
    #[schemars(range(min = schema::MAX_DELETIONS.min, max = schema::MAX_DELETIONS.max))]
    max_deletions: Option<i64>,
    /// A tag is deleted only once it has been missing from what the rule selects for this
    /// long, a duration like `"7d"` (default: at once).
    older_than: Option<String>,
}
