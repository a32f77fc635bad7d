//! The run lease where the run deletes ([`crate::registry::lease`] says what it is): taken
//! after the copies (they are idempotent, and safe to run twice) and before retention and
//! pruning, one at each registry (or at the layouts) where the plan has a `[[retain]]` policy
//! or a `prune` rule's target; renewed while they delete; given up at the end. `ferry plan`
//! only reads it. When another run holds a live lease, or a lease cannot be read or written,
//! every deletion of the run is held (the lease fails closed) and that is a failure of the run.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use super::shard::Shard;
use crate::copy::select::Registries;
use crate::plan::Plan;
use crate::reference::{Location, Reference, Selector};
use crate::registry::config::LeaseSettings;
use crate::registry::lease::guard::{Guarded, Hold};
use crate::registry::lease::{self, Acquired, Holder, Lease, Renewed, Spot, REPOSITORY_NAME};
use crate::registry::{Registry, RegistryError};
use crate::report::hints::chain as error_chain;
use crate::report::hints::lines as hint_lines;
use crate::retention::PinMap;

/// What an execution does about the lease.
pub enum Leasing {
    /// `ferry run`: take it, renew it while deleting, give it up at the end.
    Take {
        holder: Holder,
        shard: Option<Shard>,
    },
    /// `ferry plan`: read it; a live one of another holds the deletions, as it would the run's.
    Look { shard: Option<Shard> },
    /// No lease (`ferry verify` deletes nothing; engine tests).
    Off,
}

/// `ferry run`'s: this process, in run `run` of the plan at `plan` (its file name only), takes
/// the lease of its shard.
pub fn taking(run: i64, plan: &std::path::Path, shard: Option<Shard>) -> Leasing {
    let name = plan.file_name().unwrap_or_default().to_string_lossy();
    Leasing::Take {
        holder: Holder::this_process(Some(run), &name),
        shard,
    }
}

/// One registry where the run deletes, and where its lease lives.
struct Place {
    location: Location,
    registry: Arc<dyn Registry>,
    spot: Spot,
    expiry: Duration,
}

impl Place {
    fn shown(&self) -> String {
        self.spot.shown(self.registry.name())
    }
}

/// The tag of a run's lease: one per shard, since shards delete in repositories of their own.
fn tag(shard: Option<Shard>) -> String {
    match shard {
        None => "lease".into(),
        Some(s) => format!("lease-shard-{}-of-{}", s.index, s.count),
    }
}

/// Every location the plan deletes at, with what names its lease's namespace there: the first
/// `[[retain]]` repository, else the first pruning rule's target.
fn deleting(plan: &Plan) -> Vec<(Location, &Reference)> {
    let mut out: Vec<(Location, &Reference)> = Vec::new();
    let retained = plan.retains.iter().map(|r| &r.repository);
    let pruned = plan
        .copies
        .iter()
        .filter(|c| plan.prune(c.number).is_some());
    for r in retained.chain(pruned.map(|c| &c.to)) {
        if !out.iter().any(|(l, _)| *l == r.location) {
            out.push((r.location.clone(), r));
        }
    }
    out
}

/// `team/app` and `team/*` -> `team/ferry-lease`; `app` -> `ferry-lease`. A layout's lease is
/// a layout beside it.
fn default_repository(r: &Reference) -> String {
    let path = r.repository.trim_end_matches('/');
    let namespace = match r.selector {
        Selector::Wildcard => path,
        _ => path.rsplit_once('/').map_or("", |(ns, _)| ns),
    };
    match namespace {
        "" => REPOSITORY_NAME.into(),
        ns => format!("{ns}/{REPOSITORY_NAME}"),
    }
}

fn places(plan: &Plan, registries: &Registries, shard: Option<Shard>) -> Vec<Place> {
    let place = |(location, r): (Location, &Reference)| {
        let registry = registries.get(&location)?.clone();
        let settings = match &location {
            Location::Registry(host) => plan.registry(host).lease,
            _ => LeaseSettings::default(),
        };
        let repo = settings.repository.unwrap_or_else(|| default_repository(r));
        if location == Location::Layout && !parent_exists(&repo) {
            return None;
        }
        Some(Place {
            location,
            registry,
            spot: Spot {
                repo,
                tag: tag(shard),
            },
            expiry: settings.expiry,
        })
    };
    deleting(plan).into_iter().filter_map(place).collect()
}

/// The registries where a run of `plan` (unsharded) takes a lease: each with its lease's
/// repository and how the lease is shown (`ferry check --online` asks for push and delete
/// there). Layouts are left out: a check writes nothing to a directory.
pub fn at_registries(
    plan: &Plan,
    registries: &Registries,
) -> Vec<(Arc<dyn Registry>, String, String)> {
    places(plan, registries, None)
        .into_iter()
        .filter(|p| p.location != Location::Layout)
        .map(|p| {
            let shown = p.shown();
            (p.registry, p.spot.repo, shown)
        })
        .collect()
}

/// Does the directory a layout lease would go in exist? Writing the lease would create it,
/// and change what a wildcard rule there reads (a directory that is not there is an error,
/// an empty one is not); where it is missing, nothing there has been copied to delete, so no
/// lease is taken (and `ferry plan` reads none).
fn parent_exists(repo: &str) -> bool {
    match std::path::Path::new(repo).parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.is_dir(),
        _ => true,
    }
}

/// Why the run deletes nothing: its failure line, and the reason each held deletion gives.
struct Refusal {
    failure: String,
    hold: String,
}

fn held_by(place: &Place, theirs: &Lease) -> Refusal {
    let hold = format!(
        "another ferry run holds the run lease {}: {}, until {}",
        place.shown(),
        theirs.holder,
        theirs.expires_shown()
    );
    Refusal {
        failure: format!(
            "run lease: {hold}; this run deletes nothing (retention and pruning are held)"
        ),
        hold,
    }
}

/// `what`: "read" or "written".
fn unusable(place: &Place, what: &str, e: &RegistryError) -> Refusal {
    Refusal {
        failure: format!(
            "run lease {} could not be {what}: {}; this run deletes nothing (the lease fails closed){}",
            place.shown(),
            crate::error::chain(e),
            hint_lines(e)
        ),
        hold: format!(
            "the run lease {} could not be {what}, so nothing is deleted (the lease fails closed)",
            place.shown()
        ),
    }
}

/// Take (`ferry plan`: read) the lease at every registry the plan deletes at. When the run may
/// not delete, every deletion is held through `pins` and the failure line returned. Nothing is
/// taken when every deletion is held already (an `[in_use]` source failed).
pub async fn begin(
    plan: &Plan,
    leasing: &Leasing,
    registries: &Registries,
    pins: &mut PinMap,
) -> (Option<Leases>, Option<String>) {
    let (holder, shard) = match leasing {
        Leasing::Off => return (None, None),
        Leasing::Look { shard } => (None, *shard),
        Leasing::Take { holder, shard } => (Some(holder), *shard),
    };
    let places = places(plan, registries, shard);
    if places.is_empty() || pins.held().is_some() {
        return (None, None);
    }
    let begun = match holder {
        None => look(&places).await.map(|()| None),
        Some(h) => take(places, h).await.map(Some),
    };
    match begun {
        Ok(leases) => (leases, None),
        Err(r) => {
            pins.hold_all(r.hold);
            (None, Some(r.failure))
        }
    }
}

/// Read each lease: a live one stops the run from deleting, as taking it would.
async fn look(places: &[Place]) -> Result<(), Refusal> {
    for p in places {
        match lease::read(p.registry.as_ref(), &p.spot).await {
            Ok(Some(l)) if l.live(SystemTime::now()) => return Err(held_by(p, &l)),
            Ok(_) => {}
            Err(e) => return Err(unusable(p, "read", &e)),
        }
    }
    Ok(())
}

/// Take each lease in turn; at the first refused, give back those taken.
async fn take(places: Vec<Place>, holder: &Holder) -> Result<Leases, Refusal> {
    let mut taken: Vec<Taken> = Vec::new();
    for place in places {
        let written = Instant::now();
        let refusal = match take_one(&place, holder).await {
            Ok(l) => {
                taken.push(Taken::new(place, l, written));
                continue;
            }
            Err(r) => r,
        };
        for t in taken {
            // Should this fail too, the lease expires.
            if let Some(l) = &t.lease {
                let _ = lease::release(t.place.registry.as_ref(), &t.place.spot, l).await;
            }
        }
        return Err(refusal);
    }
    Ok(Leases::start(taken))
}

/// Take the lease at `place`, after checking that it can be given up.
async fn take_one(place: &Place, holder: &Holder) -> Result<Lease, Refusal> {
    // A lease is given up, and each renewal's old manifest removed, by deleting: where that
    // is refused, every lease this run wrote would stay behind. Asked before writing any.
    if let Err(e) = place.registry.check_delete(&place.spot.repo).await {
        return Err(undeletable(place, &e));
    }
    let acquired = lease::acquire(place.registry.as_ref(), &place.spot, holder, place.expiry);
    match acquired.await {
        Ok(Acquired::Ours(l)) => Ok(l),
        Ok(Acquired::Held(l)) => Err(held_by(place, &l)),
        Err(e) => Err(unusable(place, "written", &e)),
    }
}

/// The registry refuses deletes in the lease's repository.
fn undeletable(place: &Place, e: &RegistryError) -> Refusal {
    let repo = &place.spot.repo;
    Refusal {
        failure: format!(
            "run lease {} could not be given up: deleting in {repo} is refused: {}; give the credentials the delete permission on {repo} (token scope repository:{repo}:delete) or name another repository with `lease = {{ repository = \"NAMESPACE/{REPOSITORY_NAME}\" }}`; this run deletes nothing (the lease fails closed){}",
            place.shown(),
            crate::error::chain(e),
            hint_lines(e)
        ),
        hold: format!(
            "the run lease {} could not be given up (deleting in {repo} is refused), so nothing is deleted (the lease fails closed)",
            place.shown()
        ),
    }
}

/// A lease this run took: `None` once lost.
struct Taken {
    place: Place,
    lease: Option<Lease>,
    hold: Arc<Hold>,
}

impl Taken {
    fn new(place: Place, lease: Lease, written: Instant) -> Taken {
        let until = written + lease::deletes_within(place.expiry);
        let hold = Arc::new(Hold::new(place.shown(), until));
        Taken {
            place,
            lease: Some(lease),
            hold,
        }
    }
}

/// What renewing came to, by the end.
#[derive(Default)]
struct Renewals {
    taken: Vec<Taken>,
    /// A lease lost while deleting: failures of the run.
    lost: Vec<String>,
    /// Renewals that failed (the lease holds until it would lapse).
    warnings: Vec<String>,
}

/// The leases a run holds while it deletes, renewed in the background.
pub struct Leases {
    holds: Vec<(Location, Arc<Hold>)>,
    stop: CancellationToken,
    renewing: tokio::task::JoinHandle<Renewals>,
}

impl Leases {
    fn start(taken: Vec<Taken>) -> Leases {
        let holds = taken
            .iter()
            .map(|t| (t.place.location.clone(), t.hold.clone()))
            .collect();
        let stop = CancellationToken::new();
        let renewing = tokio::spawn(keep(taken, stop.clone()));
        Leases {
            holds,
            stop,
            renewing,
        }
    }

    /// The registries as retention and pruning delete through them: each one where a lease is
    /// held deletes only while it is.
    pub fn guard(&self, registries: &Registries) -> Registries {
        let mut out = registries.clone();
        for (location, hold) in &self.holds {
            if let Some(r) = registries.get(location) {
                let guarded = Guarded::new(r.clone(), hold.clone());
                out.insert(location.clone(), Arc::new(guarded) as Arc<dyn Registry>);
            }
        }
        out
    }

    /// Stop renewing and give every lease up. Returns the failure lines (a lease lost while
    /// deleting); `note` is told of renewals that failed and leases that could not be given
    /// up (they expire).
    pub async fn end(self, note: &(dyn Fn(&str) + Sync)) -> Vec<String> {
        self.stop.cancel();
        let Ok(renewals) = self.renewing.await else {
            return Vec::new();
        };
        for w in &renewals.warnings {
            note(w);
        }
        for t in &renewals.taken {
            let Some(l) = &t.lease else { continue };
            if let Err(e) = lease::release(t.place.registry.as_ref(), &t.place.spot, l).await {
                note(&format!(
                    "warning: the run lease {} was not given up: {}; it expires at {}{}",
                    t.place.shown(),
                    crate::error::chain(&e),
                    l.expires_shown(),
                    hint_lines(&e)
                ));
            }
        }
        renewals.lost
    }
}

/// Renew every lease until `stop`, three times per expiry.
async fn keep(mut taken: Vec<Taken>, stop: CancellationToken) -> Renewals {
    let every = taken
        .iter()
        .map(|t| lease::renew_every(t.place.expiry))
        .min()
        .unwrap_or(lease::renew_every(lease::DEFAULT_EXPIRY));
    let mut out = Renewals::default();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(every) => {}
        }
        for i in 0..taken.len() {
            renew(&mut taken, i, &mut out).await;
        }
    }
    out.taken = taken;
    out
}

/// Renew lease `i`. A lease lost stops every deletion of the run, at every registry.
async fn renew(taken: &mut [Taken], i: usize, out: &mut Renewals) {
    let t = &taken[i];
    let Some(ours) = &t.lease else { return };
    let started = Instant::now();
    let p = &t.place;
    let why = match lease::renew(p.registry.as_ref(), &p.spot, ours, p.expiry).await {
        Ok(Renewed::Ours(l)) => {
            t.hold.extend(started + lease::deletes_within(p.expiry));
            taken[i].lease = Some(l);
            return;
        }
        Err(e) => {
            out.warnings.push(format!(
                "warning: renewing the run lease {}: {}",
                p.shown(),
                error_chain(&e)
            ));
            return;
        }
        Ok(Renewed::Lost(Some(theirs))) => format!(
            "the run lease {} was taken by {} while this run deleted",
            p.shown(),
            theirs.holder
        ),
        Ok(Renewed::Lost(None)) => format!(
            "the run lease {} was removed while this run deleted",
            p.shown()
        ),
    };
    for t in taken.iter() {
        t.hold.lose(why.clone());
    }
    taken[i].lease = None;
    out.lost.push(format!(
        "run lease: {why}; this run deleted nothing after that"
    ));
}
