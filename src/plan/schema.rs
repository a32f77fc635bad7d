//! What each field of a plan holds, in words users read ("an integer from 1 to 256"), and
//! which fields each table has: one schema for type errors, range errors and unknown fields.

/// An integer field's accepted range, named the same way in type errors ("an integer from 1
/// to 256") and range errors ("must be between 1 and 256").
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bounds {
    pub min: i64,
    pub max: i64,
}

impl Bounds {
    fn expected(self) -> String {
        format!("an integer from {} to {}", self.min, self.max)
    }
}

pub(crate) const CONCURRENCY: Bounds = Bounds { min: 1, max: 256 };
pub(crate) const MAX_CONNECTIONS: Bounds = Bounds { min: 1, max: 1024 };
pub(crate) const RATE: Bounds = Bounds {
    min: 1,
    max: 100_000,
};
pub(crate) const RETRIES: Bounds = Bounds { min: 0, max: 100 };
pub(crate) const RETAIN_RUNS: Bounds = Bounds {
    min: 1,
    max: 1_000_000,
};
pub(crate) const NEWEST: Bounds = Bounds {
    min: 1,
    max: 1_000_000,
};
pub(crate) const REVISIONS: Bounds = Bounds {
    min: 1,
    max: 10_000,
};
pub(crate) const KEEP_NEWEST: Bounds = Bounds {
    min: 0,
    max: 1_000_000,
};
pub(crate) const MAX_DELETIONS: Bounds = Bounds {
    min: 0,
    max: 1_000_000_000,
};

const REGEXES: &str = "a list of regular expressions (strings)";
const REGEX: &str = "a regular expression (a string) in the list";

/// What a field expects, by its shape: keys joined by `.`, a registry host as `*`, array
/// positions left out, `[]` for an entry of a list.
pub(super) fn expected(shape: &str) -> Option<String> {
    let bounds = |b: Bounds| Some(b.expected());
    let text = match shape {
        "version" => "the integer 1",
        "concurrency" => return bounds(CONCURRENCY),
        "state" => "a file path (a string)",
        "recheck_after" => "a duration like \"24h\" (a string)",
        "retain_runs" => return bounds(RETAIN_RUNS),
        "immutable_tags" => REGEXES,
        "immutable_tags[]" => REGEX,
        "registry" => "tables like [registry.\"HOST\"]",
        "registry.*" => "a table of settings for this registry host",
        "registry.*.auth" => "a table: { username = \"…\", password_env = \"VAR\" }, { username = \"…\", password_file = \"PATH\" }, { config = \"PATH\" } or { anonymous = true }",
        "registry.*.auth.username" => "a user name (a string)",
        "registry.*.auth.password_env" => "the name of an environment variable (a string)",
        "registry.*.auth.config" | "registry.*.auth.password_file" | "registry.*.ca_file" => {
            "a file path (a string)"
        }
        "registry.*.auth.anonymous"
        | "registry.*.insecure"
        | "retain.untagged"
        | "copy.allow_empty" => {
            "true or false"
        }
        "registry.*.endpoint" | "registry.*.api" => "a URL (a string)",
        "registry.*.flavor" => "\"distribution\", \"ghcr\" or \"dockerhub\"",
        "registry.*.max_connections" => return bounds(MAX_CONNECTIONS),
        "registry.*.rate_limit" => "a table: { requests_per_second = R, burst = B }",
        "registry.*.rate_limit.requests_per_second" | "registry.*.rate_limit.burst" => {
            return bounds(RATE)
        }
        "registry.*.retries" => return bounds(RETRIES),
        "registry.*.stall_timeout" => "a duration like \"90s\" or \"2m\" (a string)",
        "registry.*.lease" => "a table: { repository = \"NAMESPACE/ferry-lease\", expiry = \"10m\" }",
        "registry.*.lease.repository" => "a repository path ending in /ferry-lease (a string)",
        "registry.*.lease.expiry" => "a duration like \"10m\" (a string)",
        "copy" => "[[copy]] tables",
        "copy.from" => "an image reference (a string)",
        "copy.to" => "an image reference (a string), or a list of them",
        "copy.tags" => "a table: { include = […], exclude = […], semver = \"…\", newest = N }",
        "copy.tags.include" | "copy.tags.exclude" | "retain.keep_tags" | "retain.delete_tags" => {
            REGEXES
        }
        "copy.tags.include[]"
        | "copy.tags.exclude[]"
        | "retain.keep_tags[]"
        | "retain.delete_tags[]" => REGEX,
        "copy.tags.semver" => "a semver constraint like \">=1.2, <3\" (a string)",
        "copy.tags.newest" => return bounds(NEWEST),
        "copy.referrers" => "true, false or { artifact_types = [\"…\"] }",
        "copy.platforms" => "\"all\" or a list like [\"linux/amd64\", \"linux/arm64\"]",
        "copy.platform_mode" => "\"sparse\" or \"rewrite\"",
        "copy.visibility" => "\"public\", \"private\" or \"internal\"",
        "copy.prune" => "true, false or { max_deletions = N, older_than = \"7d\" }",
        "retain" => "[[retain]] tables",
        "retain.repository" => "a repository or a wildcard (a string)",
        "retain.keep_newest" => return bounds(KEEP_NEWEST),
        "retain.older_than" => "a duration like \"30d\" (a string)",
        "retain.untagged_grace" => "a duration like \"1h\", or \"0s\" for none (a string)",
        "retain.max_deletions" => return bounds(MAX_DELETIONS),
        "in_use" => "a table: [in_use] with kubernetes, files, aliases, argocd and git",
        "in_use.kubernetes" => {
            "a list of tables: [{ in_cluster = true }, { kubeconfig = \"PATH\", context = \"NAME\" }]"
        }
        "in_use.kubernetes[]" => {
            "a table: { in_cluster = true } or { kubeconfig = \"PATH\", context = \"NAME\", namespaces = [\"…\"] }"
        }
        "in_use.kubernetes.in_cluster" => "true or false",
        "in_use.kubernetes.kubeconfig" => "a file path (a string)",
        "in_use.kubernetes.context" => "a kubeconfig context name (a string)",
        "in_use.kubernetes.namespaces" => "a list of namespace names (strings)",
        "in_use.kubernetes.namespaces[]" => "a namespace name (a string) in the list",
        "in_use.files" => "a list of glob patterns like \"deploy/**/*.yaml\" (strings)",
        "in_use.files[]" => "a glob pattern (a string) in the list",
        "in_use.aliases" => "a table: { \"MIRROR/PATH\" = \"REGISTRY\" }",
        "in_use.aliases.*" => "a registry host (a string)",
        _ => return in_use_sources(shape).map(str::to_string),
    };
    Some(text.to_string())
}

/// [`expected`] for the ArgoCD and git sources of `[in_use]`.
fn in_use_sources(shape: &str) -> Option<&'static str> {
    Some(match shape {
        "in_use.argocd" => "a list of tables: [{ in_cluster = true, namespace = \"argocd\" }]",
        "in_use.argocd[]" => {
            "a table: { in_cluster = true } or { kubeconfig = \"PATH\", context = \"NAME\" }, with an optional namespace = \"argocd\""
        }
        "in_use.argocd.in_cluster" => "true or false",
        "in_use.argocd.kubeconfig" => "a file path (a string)",
        "in_use.argocd.context" => "a kubeconfig context name (a string)",
        "in_use.argocd.namespace" => "the namespace of ArgoCD's Applications (a string)",
        "in_use.git" => {
            "a list of tables: [{ path = \"gitops-repo\", files = [\"apps/**/*.yaml\"], revisions = 20 }]"
        }
        "in_use.git[]" => {
            "a table: { path = \"DIR\", files = [\"GLOB\"], revisions = N }"
        }
        "in_use.git.path" => "the directory of a git checkout (a string)",
        "in_use.git.files" => "a list of glob patterns like \"apps/**/*.yaml\" (strings)",
        "in_use.git.files[]" => "a glob pattern (a string) in the list",
        "in_use.git.revisions" => "the number of commits to read (an integer)",
        _ => return None,
    })
}

/// The fields a table accepts, by its shape (as in [`expected`]; `""` is the top level).
/// Kept equal to the `Raw*` types by a test.
pub(super) fn fields(shape: &str) -> Option<&'static [&'static str]> {
    Some(match shape {
        "" => &[
            "version",
            "concurrency",
            "state",
            "immutable_tags",
            "recheck_after",
            "retain_runs",
            "registry",
            "copy",
            "retain",
            "in_use",
        ],
        "registry.*" => &[
            "auth",
            "insecure",
            "ca_file",
            "endpoint",
            "api",
            "flavor",
            "max_connections",
            "rate_limit",
            "retries",
            "stall_timeout",
            "lease",
        ],
        "registry.*.auth" => &[
            "username",
            "password_env",
            "password_file",
            "config",
            "anonymous",
        ],
        "registry.*.rate_limit" => &["requests_per_second", "burst"],
        "registry.*.lease" => &["repository", "expiry"],
        "copy" => &[
            "from",
            "to",
            "tags",
            "referrers",
            "platforms",
            "platform_mode",
            "prune",
            "allow_empty",
            "visibility",
        ],
        "copy.tags" => &["include", "exclude", "semver", "newest"],
        "retain" => &[
            "repository",
            "keep_newest",
            "keep_tags",
            "delete_tags",
            "older_than",
            "untagged",
            "untagged_grace",
            "max_deletions",
        ],
        "in_use" => &["kubernetes", "files", "aliases", "argocd", "git"],
        "in_use.kubernetes" => &["in_cluster", "kubeconfig", "context", "namespaces"],
        "in_use.argocd" => &["in_cluster", "kubeconfig", "context", "namespace"],
        "in_use.git" => &["path", "files", "revisions"],
        _ => return None,
    })
}
