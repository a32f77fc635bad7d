//! Command-line types (clap). No I/O and no cross-field validation here.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "ferry",
    version,
    about = "Copy container images between OCI registries, byte for byte",
    long_about = "ferry copies repositories, tags, platforms and signatures between OCI registries \
(and OCI layout directories) as a TOML plan describes, with no Docker daemon and with every digest \
preserved.\n\nExit codes: 0 success, 1 some items failed, 2 invalid plan, usage or state file, 3 credentials \
could not be loaded or a preflight check failed, 75 a pull budget ran out (run again after the time \
it names), 130/143 interrupted.",
    after_help = "Examples:\n  ferry check plans/demo.toml\n  ferry run plans/demo.toml\n  ferry status"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// More detail in the log (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Log lines as text, or as one JSON object per line (for log collectors).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Validate a plan without touching the network.
    #[command(
        long_about = "Validate a plan without touching the network: syntax, every field, every \
reference, regex and semver constraint. Errors name the file, line, column and field, and \
never show a value from the plan (any string in it may be a secret).\n\n\
With --online, a preflight too: every registry answers, the credentials work, the token may \
pull at each source, push at each target (an upload is opened and cancelled) and delete \
where retention is planned (where the registry lets that be checked without deleting).\n\n\
Exit code 0 when all is well, 2 for an invalid plan, 3 when a preflight check fails.",
        after_help = "Examples:\n  ferry check plans/dockerhub-to-ghcr.toml\n  ferry check --online plans/dockerhub-to-ghcr.toml"
    )]
    Check {
        /// The plan file (TOML).
        plan: PathBuf,

        /// Also ask every registry: it answers, the credentials work, and the token may pull
        /// at each source, push at each target and delete where retention is planned.
        #[arg(long)]
        online: bool,
    },
    /// Copy what the plan selects.
    #[command(
        long_about = "Copy every repository and tag the plan selects from its source to its target. \
Tags already at the target with the source digest are skipped; blobs the target holds are not \
sent again; a blob needed by several repositories crosses the wire once and is mounted.\n\n\
Progress is checkpointed in a SQLite state file (--state, else the plan's `state`, else \
state/ferry.db): run the same command again after an interruption and it continues where it \
stopped. SIGINT/SIGTERM stop new work, park chunked uploads after the chunk they are sending \
(the next run continues them without reading their first bytes again), let other work in \
flight finish for up to 10 s, save the checkpoint and exit 130/143.\n\nEnds with a one-line summary. Exit code 0 when every selected tag is at its target with the \
source digest, 1 when some failed (each is listed with its reason; the rest are still copied), \
2 for an invalid plan, 3 when credentials cannot be loaded.\n\nWhere a source counts pulls \
(Docker Hub), its repositories start only while the pulls they need fit in the budget its \
ratelimit headers show; when they do not, the images not started are parked and the run exits 75 \
naming the time the budget is back (or waits for it: --wait-for-budget). The same command then \
continues.",
        after_help = "Examples:\n  ferry run plans/demo.toml\n  DOCKERHUB_TOKEN=… ferry run --concurrency 16 plans/dockerhub-to-ghcr.toml"
    )]
    Run(RunArgs),
    /// Show what `ferry run` would do, without changing anything.
    #[command(
        long_about = "Resolve every rule into concrete rows without writing anything: for each copy, \
the source tag, its digest and the action (copy / already present); for each retention \
policy, every image of every repository with its tags, the decision (keep / delete) and the \
reason. `ferry run` carries out exactly these decisions (one code path).\n\nWith --shard or \
--shards, one shard's share of the repositories, as `ferry run` with the same flag takes it, \
with that shard's own state file.",
        after_help = "Examples:\n  ferry plan plans/prod.toml\n  ferry plan plans/prod.toml --output json\n  ferry plan plans/prod.toml --output markdown > plan.md\n  ferry plan --shard 2/8 plans/prod.toml"
    )]
    Plan(PlanArgs),
    /// Check that every image the plan selects is at its target, whole; change nothing.
    #[command(
        long_about = "An audit that changes nothing. For every tag the plan selects (and every \
signature and other referrer that travels with it): the target has it with the source's digest, \
and everything it reaches: each child manifest of an index, each config and layer blob, and \
for a referrer at a target without the referrers API, its entry in the subject's fallback \
index. Each is asked once per repository (a HEAD per blob; a GET per manifest). --deep also \
reads every blob and checks its digest.\n\n\
Every finding names what `ferry run --recheck PLAN` will put back. Exit code 0 only when every \
image is complete, 1 when something is missing, outdated or could not be checked, 2 for an \
invalid plan, 3 when credentials cannot be loaded.",
        after_help = "Examples:\n  ferry verify plans/prod.toml\n  ferry verify --deep --output json plans/prod.toml > verify.json\n  ferry verify --metrics /var/lib/node-exporter/ferry-verify.prom plans/prod.toml"
    )]
    Verify(VerifyArgs),
    /// Show what the checkpoint says about the last run (or another).
    #[command(
        long_about = "Read the state file and show a run: when it started and ended, its outcome, \
images copied / present / failed / pending, bytes, and every failure with its reason. The state \
file is --state, else the plan's `state`, else state/ferry.db.",
        after_help = "Examples:\n  ferry status\n  ferry status plans/prod.toml --output json\n  ferry status --state /state/ferry.db --run 12"
    )]
    Status(StatusArgs),
    /// Put back what a run deleted (retention and pruning).
    #[command(
        long_about = "Put back what a run's retention and pruning deleted, from what the \
checkpoint kept of each deletion: the manifest's exact bytes and media type, its tags and, on \
GHCR, its package version id. The run is the last one that deleted something, or --run; \
--repository and --tag narrow it (an index comes back with its children, an image with its \
signatures).\n\n\
Children and referrers come back first, then what names them, then the tags. On GHCR each \
package version is restored through the GitHub Packages API (GitHub keeps a deleted version \
for 30 days). Elsewhere the kept bytes are pushed back by digest once a HEAD has shown that \
every blob they name is still there: a registry's garbage collection may have taken them. \
What is already there is not written again, and a tag pushed since is left alone; a second \
restore changes nothing. The next retention run decides afresh: it may delete again what \
its policy still says to delete.\n\n\
Exit code 0 when everything asked for is back, 1 when something cannot be put back (each \
is listed with its reason; the rest are put back), 2 for an invalid plan or a state file \
that cannot be used, 3 when credentials cannot be loaded. Nothing to restore is exit 0.",
        after_help = "Examples:\n  ferry restore plans/prod.toml\n  ferry restore plans/prod.toml --run 42 --dry-run\n  ferry restore plans/prod.toml --repository ghcr.io/org/app --tag v1.2.0"
    )]
    Restore(RestoreArgs),
    /// Work with run reports.
    #[command(subcommand)]
    Report(ReportCommand),
    /// Print the plan's JSON Schema, for editors that check and complete TOML.
    #[command(
        long_about = "Print the JSON Schema (draft-07) of a plan file on standard output, generated \
from the types ferry parses plans into. Editors that read `#:schema` in TOML (taplo, Even Better \
TOML) use it to complete fields, show each field's description and flag unknown fields, wrong \
types and out-of-range numbers as you type. `ferry check` remains the authority: the schema \
cannot express every rule (references, regexes, durations, rules across fields).",
        after_help = "Example:\n  ferry schema > ferry.schema.json\n  # then, as the first line of a plan:\n  #:schema ./ferry.schema.json"
    )]
    Schema,
}

#[derive(Subcommand, Debug)]
pub enum ReportCommand {
    /// Combine the JSON reports of several shards into one.
    #[command(
        long_about = "Combine JSON reports (from `ferry run --report`, typically one per shard of \
an Indexed Job) into one: items, deletions and failures concatenated, totals and registry \
counts summed, the worst outcome kept.",
        after_help = "Example:\n  ferry report merge --output all.json shard-0.json shard-1.json shard-2.json"
    )]
    Merge {
        /// Where to write the combined report.
        #[arg(long, short)]
        output: PathBuf,
        /// The reports to combine.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
    },
    /// Print a run's report: a summary, the report itself, or Markdown for a CI job summary.
    #[command(
        long_about = "Print a run's JSON report (from `ferry run --report`, or `ferry report merge`), \
read item by item. Text: a short summary, then every failure. JSON: the report as it is. Markdown, \
for a CI job summary: a summary table, every failure (never cut), then what the run deleted, pruned \
and copied, per repository.",
        after_help = "Examples:\n  ferry report show report.json\n  ferry report show --output markdown report.json >> \"$GITHUB_STEP_SUMMARY\""
    )]
    Show {
        /// The report to print.
        report: PathBuf,
        /// A summary (text), the report as it is (json), or Markdown for a job summary.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        output: Format,
    },
}

#[derive(clap::Args, Debug)]
pub struct PlanArgs {
    /// The plan file (TOML).
    pub plan: PathBuf,

    /// The checkpoint `ferry run` would use, read and never written [default: the plan's
    /// `state`, else state/ferry.db].
    #[arg(long, env = "FERRY_STATE")]
    pub state: Option<PathBuf>,

    /// Plan as `ferry run --recheck` would run: trust no record of the checkpoint.
    #[arg(long)]
    pub recheck: bool,

    /// Plan one shard of the repositories, as `ferry run --shard INDEX/COUNT` runs it (with
    /// that shard's own state file).
    #[arg(long, value_name = "INDEX/COUNT", conflicts_with = "shards")]
    pub shard: Option<String>,

    /// Plan shard `$JOB_COMPLETION_INDEX` of COUNT, as `ferry run --shards COUNT` runs it.
    #[arg(long, value_name = "COUNT")]
    pub shards: Option<u32>,

    /// Text, JSON, or Markdown for a pull-request comment (a summary table, then each
    /// repository's decisions, under GitHub's 65,536 characters; deletions are never cut).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// Filled from the global `--log-format`.
    #[arg(skip = LogFormat::Text)]
    pub log_format: LogFormat,

    /// The plan file (TOML).
    pub plan: PathBuf,

    /// Also read every blob at the targets and check its digest (every byte crosses the
    /// wire once).
    #[arg(long)]
    pub deep: bool,

    /// The checkpoint `ferry run` uses, read (never written) to tell a source that moved since
    /// the last run [default: the plan's `state`, else state/ferry.db].
    #[arg(long, env = "FERRY_STATE")]
    pub state: Option<PathBuf>,

    /// Audit one shard of the repositories, as `ferry run --shard INDEX/COUNT` copies it
    /// (reading that shard's own state file).
    #[arg(long, value_name = "INDEX/COUNT", conflicts_with = "shards")]
    pub shard: Option<String>,

    /// Audit shard `$JOB_COMPLETION_INDEX` of COUNT, as `ferry run --shards COUNT` copies it.
    #[arg(long, value_name = "COUNT")]
    pub shards: Option<u32>,

    /// Images checked at once [default: the plan's `concurrency`, else 16].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: Option<u16>,

    /// What to print on stdout: findings and a summary line, or one JSON object.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,

    /// Write Prometheus text-format metrics here (for a node-exporter textfile collector).
    #[arg(long, value_name = "PATH")]
    pub metrics: Option<PathBuf>,

    /// Push the metrics to this Prometheus Pushgateway when the audit ends (job
    /// `ferry-verify`, label `plan` = the plan file's name without `.toml`). A failed push is
    /// said but does not change the exit code.
    #[arg(long, value_name = "URL", env = "FERRY_METRICS_PUSH", hide_env_values = true, value_parser = push_url)]
    pub metrics_push: Option<PushUrl>,

    /// How to show progress on stderr: bars on a terminal, plain timestamped lines otherwise.
    #[arg(long, value_enum, default_value_t = Progress::Auto)]
    pub progress: Progress,

    /// No progress on stderr.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// A plan whose `state` names the state file.
    pub plan: Option<PathBuf>,

    /// The state file [default: the plan's `state`, else state/ferry.db].
    #[arg(long, env = "FERRY_STATE")]
    pub state: Option<PathBuf>,

    /// Which run [default: the latest].
    #[arg(long)]
    pub run: Option<i64>,

    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    /// Filled from the global `--log-format`.
    #[arg(skip = LogFormat::Text)]
    pub log_format: LogFormat,

    /// The plan file (TOML): its registries, credentials and state file.
    pub plan: PathBuf,

    /// The checkpoint the run recorded its deletions in [default: the plan's `state`, else
    /// state/ferry.db].
    #[arg(long, env = "FERRY_STATE")]
    pub state: Option<PathBuf>,

    /// Which run's deletions [default: the last run that deleted something].
    #[arg(long)]
    pub run: Option<i64>,

    /// Only this repository (`registry/repo`, as the plan writes it).
    #[arg(long, value_name = "REPO")]
    pub repository: Option<String>,

    /// Only the image that had this tag, with its children and referrers.
    #[arg(long)]
    pub tag: Option<String>,

    /// Say what would be put back, and write nothing (the registries are asked with HEADs).
    #[arg(long)]
    pub dry_run: bool,

    /// What to print on stdout: a line per deletion and a summary, or one JSON object.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Text,
    Json,
}

/// What `ferry plan` and `ferry report show` print: [`Output`]'s choices and Markdown, for
/// people who review on GitHub (a pull-request comment, a job summary).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Markdown,
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Filled from the global `--log-format`.
    #[arg(skip = LogFormat::Text)]
    pub log_format: LogFormat,

    /// The plan file (TOML).
    pub plan: PathBuf,

    /// The most blob transfers in flight to one target registry, and images in flight; each
    /// registry's window starts at 8 (or this, if lower) and grows while throughput rises
    /// [default: the plan's `concurrency`, else 16].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: Option<u16>,

    /// The checkpoint (SQLite) [default: the plan's `state`, else state/ferry.db].
    #[arg(long, env = "FERRY_STATE")]
    pub state: Option<PathBuf>,

    /// Check every tag at the registries again, even those the checkpoint records as done.
    #[arg(long)]
    pub recheck: bool,

    /// Run one shard of the repositories: `INDEX/COUNT` (a stable, disjoint share; each shard
    /// keeps its own state file).
    #[arg(long, value_name = "INDEX/COUNT", conflicts_with = "shards")]
    pub shard: Option<String>,

    /// Run shard `$JOB_COMPLETION_INDEX` of COUNT (a Kubernetes Indexed Job).
    #[arg(long, value_name = "COUNT")]
    pub shards: Option<u32>,

    /// Write a JSON report of the run here (schema: docs/report.md).
    #[arg(long, value_name = "PATH")]
    pub report: Option<PathBuf>,

    /// Disk the spool may use: blobs of 64 MiB and more are kept beside the checkpoint while
    /// they upload, so an upload session that does not survive an interruption is rebuilt
    /// from disk, not read from the source again; a fan-out's blobs (`to = [...]`), of any
    /// size, so the source is read once for all its targets. `0` turns it off. Sizes:
    /// `8GiB`, `500MB`, `0`.
    #[arg(long, value_name = "SIZE", env = "FERRY_SPOOL_LIMIT", default_value = "8GiB", value_parser = parse_size)]
    pub spool_limit: u64,

    /// Write Prometheus text-format metrics here (for a node-exporter textfile collector).
    #[arg(long, value_name = "PATH")]
    pub metrics: Option<PathBuf>,

    /// Push the metrics to this Prometheus Pushgateway when the run ends (job `ferry`, label
    /// `plan` = the plan file's name without `.toml`), e.g. `http://pushgateway:9091`. A
    /// failed push is said and in the report but does not change the exit code.
    #[arg(long, value_name = "URL", env = "FERRY_METRICS_PUSH", hide_env_values = true, value_parser = push_url)]
    pub metrics_push: Option<PushUrl>,

    /// How to show progress: bars on a terminal, plain timestamped lines otherwise.
    #[arg(long, value_enum, default_value_t = Progress::Auto)]
    pub progress: Progress,

    /// Print only failures and the summary.
    #[arg(short, long)]
    pub quiet: bool,

    /// When a source's pull budget (Docker Hub's `ratelimit-remaining`) cannot pay for the
    /// next repository, wait until its window has passed and go on, instead of parking the
    /// rest and exiting 75.
    #[arg(long)]
    pub wait_for_budget: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    Auto,
    Bars,
    Plain,
    None,
}

/// Why a size on the command line is not one (clap names the flag and the value).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("a size is a whole number with an optional unit (8GiB, 500MB)")]
    NotANumber,
    #[error("units: B, KB, MB, GB, TB, KiB, MiB, GiB, TiB")]
    Unit,
    #[error("too large")]
    TooLarge,
}

/// A `--metrics-push` URL as given: it may carry a password, so `Debug` never shows it
/// (checked when the command starts, by `app::metrics_push`, whose errors never quote it).
#[derive(Clone)]
pub struct PushUrl(pub String);

impl std::fmt::Debug for PushUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PushUrl(<redacted>)")
    }
}

/// Takes the value as it is: clap would quote a refused value in its error.
fn push_url(s: &str) -> Result<PushUrl, std::convert::Infallible> {
    Ok(PushUrl(s.to_string()))
}

/// `8GiB`, `512MiB`, `500MB`, `1024`: a size in bytes.
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().map_err(|_| SizeError::NotANumber)?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return Err(SizeError::Unit),
    };
    n.checked_mul(factor).ok_or(SizeError::TooLarge)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("8GiB"), Ok(8 << 30));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("64 mib"), Ok(64 << 20));
        assert!(parse_size("GiB").is_err());
        assert!(parse_size("8XB").is_err());
        assert!(parse_size("99999999999TiB").is_err());
    }
}
