//! The run lease: a small OCI artifact that says which run deletes at a registry, and until
//! when. Two runs of one plan on one machine are kept apart by the checkpoint's lock; two on
//! different machines (two clusters running the same CronJob, each with its own checkpoint)
//! by this lease, recorded at the registry they delete at.
//!
//! A lease is an OCI image manifest with `artifactType` [`ARTIFACT_TYPE`], the empty `{}`
//! config and layer, and annotations naming its holder (host name, process id, run number,
//! plan file name, a random id) and when it expires. It lives under a tag of a repository of
//! its own, whose last component is [`REPOSITORY_NAME`]; no registry here lists such a
//! repository ([`is_lease_repository`]), so no wildcard rule copies or judges it.
//!
//! A registry has no compare-and-swap on a tag: the last writer wins. [`acquire`] reads, writes
//! its own lease when none is live, waits [`settle`] and reads back: a run that finds its own
//! lease there holds it, one that finds another's backs off. [`renew`] reads before it writes,
//! so a run that lost the lease learns it at its next renewal; [`guard::Guarded`] refuses
//! deletions once the lease is lost or could not be renewed in time.
//!
//! This module knows nothing of plans: which registries get a lease, and what a refusal means
//! for the run, is the caller's.

pub mod guard;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use oci_spec::image::{Descriptor, ImageManifestBuilder, MediaType};

use super::placeholder::{empty_config_digest, EMPTY_CONFIG};
use super::{Manifest, Registry, RegistryError, Result};
use crate::reference::Digest;

/// The lease manifest's `artifactType`.
pub const ARTIFACT_TYPE: &str = "application/vnd.ferry.lease.v1+json";

/// The last path component of every lease repository (`team/ferry-lease`).
pub const REPOSITORY_NAME: &str = "ferry-lease";

/// How long a lease lasts unless renewed: long enough that a slow registry never lets a live
/// run's lease lapse between renewals, short enough that a killed run's blocks others briefly.
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(600);

/// The longest wait between writing a lease and reading it back ([`settle`]).
pub const MAX_SETTLE: Duration = Duration::from_secs(2);

const ID: &str = "io.github.ferry.lease.id";
const HOST: &str = "io.github.ferry.lease.host";
const PID: &str = "io.github.ferry.lease.pid";
const RUN: &str = "io.github.ferry.lease.run";
const PLAN: &str = "io.github.ferry.lease.plan";
const EXPIRES: &str = "io.github.ferry.lease.expires";

/// Is `repo` (a repository path, or a layout's directory) a lease repository? Listings leave
/// these out.
pub fn is_lease_repository(repo: &str) -> bool {
    repo.trim_end_matches('/').rsplit('/').next() == Some(REPOSITORY_NAME)
}

/// How long a run waits between writing a lease at a set of layouts and reading it back.
pub const LAYOUT_SETTLE: Duration = Duration::from_millis(50);

/// How long to wait between writing a lease and reading it back: long enough that another
/// writer which read before this one wrote has written by then. At a registry, that writer's
/// read and write are two requests apart, and its rate limit may hold the second back: a
/// tenth of the expiry, at most [`MAX_SETTLE`]. At layouts, a few file operations apart
/// ([`LAYOUT_SETTLE`]).
pub fn settle(registry: &dyn Registry, expiry: Duration) -> Duration {
    match registry.name() {
        "oci:" => LAYOUT_SETTLE,
        _ => (expiry / 10).min(MAX_SETTLE),
    }
}

/// How often a held lease is renewed: three times per expiry, so one failed renewal does not
/// let it lapse.
pub fn renew_every(expiry: Duration) -> Duration {
    expiry / 3
}

/// How long after a lease is written the run may still delete under it, should renewals fail:
/// up to a sixth of the expiry before it lapses, so a deletion in flight ends before another
/// run may take the lease.
pub fn deletes_within(expiry: Duration) -> Duration {
    expiry - expiry / 6
}

/// Where a lease lives: a tag of a lease repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spot {
    pub repo: String,
    pub tag: String,
}

impl Spot {
    /// `HOST/team/ferry-lease:lease`, or `oci:out/ferry-lease:lease` at layouts.
    pub fn shown(&self, registry: &str) -> String {
        match registry {
            "oci:" => format!("oci:{}:{}", self.repo, self.tag),
            host => format!("{host}/{}:{}", self.repo, self.tag),
        }
    }
}

/// Who holds a lease. Read from a registry, every field is someone else's words: shown only
/// through [`Holder`]'s `Display`, which keeps a short run of plain characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// Random, per process: what tells two holders apart.
    pub id: String,
    pub host: String,
    pub pid: u32,
    /// The run's number in its checkpoint.
    pub run: Option<i64>,
    /// The plan's file name (never its directory, never a value from it).
    pub plan: String,
}

impl Holder {
    /// This process, in run `run` of plan file `plan`.
    pub fn this_process(run: Option<i64>, plan: &str) -> Holder {
        Holder {
            id: random_id(),
            host: host_name(),
            pid: std::process::id(),
            run,
            plan: plan.to_string(),
        }
    }
}

impl fmt::Display for Holder {
    /// `ci-7f9 (pid 17, run 3, plan nightly.toml)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (pid {}", plain(&self.host), self.pid)?;
        if let Some(run) = self.run {
            write!(f, ", run {run}")?;
        }
        write!(f, ", plan {})", plain(&self.plan))
    }
}

/// At most 64 characters of `s`, anything but letters, digits and `.-_:` shown as `?`: a
/// holder's fields come from whoever wrote the lease.
fn plain(s: &str) -> String {
    let out: String = s
        .chars()
        .take(64)
        .map(|c| match c.is_ascii_alphanumeric() || ".-_:".contains(c) {
            true => c,
            false => '?',
        })
        .collect();
    if out.is_empty() {
        "?".into()
    } else {
        out
    }
}

/// 128 random bits, hex: std's hasher keys are drawn from the operating system's randomness.
fn random_id() -> String {
    let mut out = String::new();
    for _ in 0..2 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_u128(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

/// The machine's name (a pod's name in Kubernetes).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

/// A lease as found at its spot, or as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub holder: Holder,
    pub expires: SystemTime,
    /// Its manifest's digest: what tells this writing of it from the next.
    pub digest: Digest,
}

impl Lease {
    /// Not expired at `now`.
    pub fn live(&self, now: SystemTime) -> bool {
        self.expires > now
    }

    /// `2025-06-01T10:10:00Z`.
    pub fn expires_shown(&self) -> String {
        humantime::format_rfc3339_seconds(self.expires).to_string()
    }
}

/// The lease manifest of `holder`, expiring at `expires`.
pub fn manifest(holder: &Holder, expires: SystemTime) -> Manifest {
    let empty = || {
        let digest = oci_spec::image::Digest::from_str(empty_config_digest().as_str())
            .expect("the sha256 of `{}` is a valid digest");
        Descriptor::new(MediaType::EmptyJSON, EMPTY_CONFIG.len() as u64, digest)
    };
    let mut annotations = HashMap::from([
        (ID.to_string(), holder.id.clone()),
        (HOST.to_string(), holder.host.clone()),
        (PID.to_string(), holder.pid.to_string()),
        (PLAN.to_string(), holder.plan.clone()),
        (
            EXPIRES.to_string(),
            humantime::format_rfc3339_seconds(expires).to_string(),
        ),
    ]);
    if let Some(run) = holder.run {
        annotations.insert(RUN.to_string(), run.to_string());
    }
    let image = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .artifact_type(MediaType::Other(ARTIFACT_TYPE.to_string()))
        .config(empty())
        .layers(vec![empty()])
        .annotations(annotations)
        .build()
        .expect("every required field is set");
    super::placeholder::oci_manifest(&image)
}

/// Why a manifest under the lease's tag holds no lease.
#[derive(Debug, thiserror::Error)]
pub enum NotALease {
    #[error("not a ferry lease (not JSON)")]
    NotJson,
    #[error("not a ferry lease (its artifactType is not {ARTIFACT_TYPE}); remove it or name another lease repository")]
    ArtifactType,
    #[error("a ferry lease without its {0} annotation")]
    Missing(&'static str),
    #[error("a ferry lease whose {EXPIRES} is not a time")]
    Expires,
}

/// The lease a manifest holds, or why it is none.
pub fn parse(m: &Manifest) -> std::result::Result<Lease, NotALease> {
    let json: serde_json::Value =
        serde_json::from_slice(&m.bytes).map_err(|_| NotALease::NotJson)?;
    if json["artifactType"].as_str() != Some(ARTIFACT_TYPE) {
        return Err(NotALease::ArtifactType);
    }
    let field = |key: &'static str| {
        json["annotations"][key]
            .as_str()
            .map(str::to_string)
            .ok_or(NotALease::Missing(key))
    };
    let expires = humantime::parse_rfc3339(&field(EXPIRES)?).map_err(|_| NotALease::Expires)?;
    Ok(Lease {
        holder: Holder {
            id: field(ID)?,
            host: field(HOST)?,
            pid: field(PID)?.parse().unwrap_or(0),
            run: field(RUN).ok().and_then(|r| r.parse().ok()),
            plan: field(PLAN)?,
        },
        expires,
        digest: m.digest.clone(),
    })
}

/// The digest under the lease's tag, or `None` when there is none (no such tag or
/// repository). A HEAD: where a GET counts as a pull (Docker Hub), a run that takes, renews
/// and gives up its lease spends none.
async fn current(registry: &dyn Registry, at: &Spot) -> Result<Option<Digest>> {
    match registry.head_manifest(&at.repo, &at.tag).await {
        Ok(head) => Ok(head.map(|h| h.digest)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// The lease at `at`, or `None` when there is none (no such tag or repository).
pub async fn read(registry: &dyn Registry, at: &Spot) -> Result<Option<Lease>> {
    match current(registry, at).await? {
        Some(digest) => read_at(registry, at, &digest).await,
        None => Ok(None),
    }
}

/// The lease manifest `digest` under the tag (`None`: given up since).
async fn read_at(registry: &dyn Registry, at: &Spot, digest: &Digest) -> Result<Option<Lease>> {
    let m = match registry.get_manifest(&at.repo, digest.as_str()).await {
        Ok(m) => m,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    parse(&m)
        .map(Some)
        .map_err(|reason| RegistryError::Protocol {
            url: at.shown(registry.name()),
            reason: reason.to_string(),
        })
}

/// What [`acquire`] came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Acquired {
    /// This run holds the lease: the one it wrote.
    Ours(Lease),
    /// Another run holds it: theirs, live, or written over ours.
    Held(Lease),
}

/// Take the lease at `at` for `holder`, lasting `expiry`, unless another holds a live one.
/// Writes, waits [`settle`], and reads back: the last writer wins, and a run that finds
/// another's lease where it wrote its own backs off (and deletes its own, now untagged).
pub async fn acquire(
    registry: &dyn Registry,
    at: &Spot,
    holder: &Holder,
    expiry: Duration,
) -> Result<Acquired> {
    // The config goes first, so that only one request (the manifest's) separates the read
    // from the write: the window in which two runs both find no lease.
    super::placeholder::upload_empty_config(registry, &at.repo).await?;
    let before = read(registry, at).await?;
    if let Some(theirs) = &before {
        if theirs.live(SystemTime::now()) && theirs.holder.id != holder.id {
            return Ok(Acquired::Held(theirs.clone()));
        }
    }
    let ours = write(registry, at, holder, SystemTime::now() + expiry).await?;
    tokio::time::sleep(settle(registry, expiry)).await;
    let gone = || RegistryError::Protocol {
        url: at.shown(registry.name()),
        reason: "the lease just written is gone when read back (another run removed it)".into(),
    };
    match current(registry, at).await? {
        Some(d) if d == ours.digest => {
            if let Some(old) = before {
                forget(registry, at, &old.digest).await;
            }
            Ok(Acquired::Ours(ours))
        }
        Some(d) => {
            forget(registry, at, &ours.digest).await;
            read_at(registry, at, &d)
                .await?
                .map(Acquired::Held)
                .ok_or_else(gone)
        }
        None => Err(gone()),
    }
}

/// What [`renew`] came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Renewed {
    /// Renewed: the lease as now written.
    Ours(Lease),
    /// Another's lease is there (or none): this run no longer holds it.
    Lost(Option<Lease>),
}

/// Write `ours` again with a new expiry, if it is still the lease at `at`.
pub async fn renew(
    registry: &dyn Registry,
    at: &Spot,
    ours: &Lease,
    expiry: Duration,
) -> Result<Renewed> {
    match current(registry, at).await? {
        Some(d) if d == ours.digest => {}
        Some(d) => return Ok(Renewed::Lost(read_at(registry, at, &d).await?)),
        None => return Ok(Renewed::Lost(None)),
    }
    let renewed = write(registry, at, &ours.holder, SystemTime::now() + expiry).await?;
    forget(registry, at, &ours.digest).await;
    Ok(Renewed::Ours(renewed))
}

/// Give the lease up: delete its manifest. Where the registry keeps it (GHCR refuses to
/// delete a package's last version, and deletes nothing its API does not list), an expired
/// lease of the same holder takes its place, which frees it as well. A lease that is no
/// longer ours is left alone.
pub async fn release(registry: &dyn Registry, at: &Spot, ours: &Lease) -> Result<()> {
    let deleted = registry.delete_manifest(&at.repo, &ours.digest).await;
    let kept = match current(registry, at).await {
        Ok(d) => d.as_ref() == Some(&ours.digest),
        Err(e) => {
            return match deleted {
                Ok(_) => Ok(()),
                Err(refused) if refused.is_not_found() => Ok(()),
                Err(_) => Err(e),
            }
        }
    };
    if !kept {
        return Ok(());
    }
    if let Err(e) = write(registry, at, &ours.holder, SystemTime::now()).await {
        return Err(deleted.err().unwrap_or(e));
    }
    forget(registry, at, &ours.digest).await;
    Ok(())
}

/// Write `holder`'s lease, expiring at `expires`, under the tag.
async fn write(
    registry: &dyn Registry,
    at: &Spot,
    holder: &Holder,
    expires: SystemTime,
) -> Result<Lease> {
    let m = manifest(holder, expires);
    registry.put_manifest(&at.repo, &at.tag, &m).await?;
    Ok(Lease {
        holder: holder.clone(),
        // As written: whole seconds.
        expires: parse(&m).map_or(expires, |l| l.expires),
        digest: m.digest,
    })
}

/// Delete a lease manifest the tag no longer points at, if the registry lets us: tidiness,
/// not safety (an untagged lease is no lease), so a refusal is let be.
async fn forget(registry: &dyn Registry, at: &Spot, digest: &Digest) {
    if let Err(e) = registry.delete_manifest(&at.repo, digest).await {
        tracing::debug!(
            "an old lease manifest {}@{digest} stays: {e}",
            at.shown(registry.name())
        );
    }
}
