//! Carry out delete decisions through the registry trait, parents and subjects before their
//! children and referrers: if a deletion fails midway, nothing that a surviving manifest
//! still references has been deleted. A deletion the registry refuses for good becomes a keep
//! ([`super::refusals`]), and so does every doomed image it references.
//!
//! Each DELETE is guarded against writers of the same registry (retention and pruning alike,
//! every backend): right before it, the repository is looked at again ([`Recheck`]), and a
//! digest some tag reaches now that did not when the inventory was read is kept, with
//! everything doomed it reaches (its children and referrers, deleted after it in top-down
//! order, so still there). The look and the DELETE go back to back: the DELETE's place in
//! the registry's rate budget is taken before the look starts ([`Registry::reserve`]), and
//! the DELETE spends it ([`Turns::spend`]), so no rate-limit wait falls between the look's
//! last answer and the DELETE. Retention never sleeps itself: the registry layer owns every
//! wait. What remains between the two (the DELETE's own way out: a token, a connection) is
//! measured per deletion, and the longest is [`Applied::window`].
//!
//! [`Turns::spend`]: crate::registry::transport::throttle::Turns::spend

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use super::decisions::{Action, Decision, Image, RepoDecisions};
use super::recheck::{Reach, Recheck};
use super::refusals::{failure, kept_instead};
use super::select::{platform_suffix, referrer_kind};
use crate::reference::Digest;
use crate::registry::{Registry, RegistryError};

/// One deletion and how it went: `Ok` when made (with the registry's own id of what it
/// deleted, where it has one), `Err` when not. When the registry refused it for good, or
/// kept what references it, `decision` is a keep that says why (its reason as selection
/// would have given it).
#[derive(Debug)]
pub struct Deleted {
    pub decision: Decision,
    pub result: Result<Option<String>, RegistryError>,
}

/// What [`apply`] did in one repository.
#[derive(Debug, Default)]
pub struct Applied {
    /// Every deletion attempted, in the order made (top-down), and how it went.
    pub deleted: Vec<Deleted>,
    /// Doomed images the look before their DELETE found tagged since the inventory, and the
    /// doomed images they reach: kept, each with why (`kept: tagged since the inventory
    /// (hotfix)`), in the order met.
    pub kept: Vec<Decision>,
    /// The longest time between a digest's last look and the moment its DELETE was sent
    /// (`None`: no DELETE was sent).
    pub window: Option<Duration>,
}

impl Deleted {
    /// Why this is a failure of the run, if it is (see [`super::refusals`]).
    pub fn failure(&self) -> Option<&RegistryError> {
        failure(self.decision.action == Action::Keep, &self.result)
    }
}

/// Who references whom among the doomed: child -> parents, referrer -> subject.
type Referenced<'a> = HashMap<&'a Digest, Vec<&'a Digest>>;

/// How a doomed image hangs off another: a child (with its platform), or a referrer.
#[derive(Clone, Copy)]
enum Hangs<'a> {
    Child(Option<&'a str>),
    Referrer,
}

/// What each doomed image reaches among the doomed: parent -> children, subject -> referrers.
type Below<'a> = HashMap<&'a Digest, Vec<(&'a Digest, Hangs<'a>)>>;

/// Delete what `decisions` says to delete in `repo`, each DELETE guarded (see the module
/// docs).
pub async fn apply(
    registry: &dyn Registry,
    repo: &str,
    images: &[Image],
    decisions: &RepoDecisions,
) -> Applied {
    let doomed: HashMap<&Digest, &Decision> = decisions
        .decisions
        .iter()
        .filter(|d| d.action == Action::Delete)
        .map(|d| (&d.digest, d))
        .collect();
    let parents = referenced_by(images, &doomed);
    let below = below(images, &doomed);
    let mut look = Recheck::new(registry, repo, images);
    let mut failed: HashSet<&Digest> = HashSet::new();
    let mut kept: HashSet<&Digest> = HashSet::new();
    let mut out = Applied::default();
    for digest in top_down(&doomed, &parents) {
        if kept.contains(digest) {
            continue;
        }
        let mut decision = (*doomed[digest]).clone();
        let above: &[&Digest] = parents.get(digest).map_or(&[], Vec::as_slice);
        let not_deleted = |reason: &str| RegistryError::Protocol {
            url: format!("{}/{repo}@{digest}", registry.name()),
            reason: format!("not deleted: {reason}"),
        };
        let (result, window) = if above.iter().any(|p| failed.contains(p)) {
            let why = "deleting what references it failed, so it is still in use";
            (Err(not_deleted(why)), None)
        } else if let Some(p) = above.iter().find(|p| kept.contains(*p)) {
            decision.action = Action::Keep;
            decision.reason = format!("kept: {}", hangs_off(images, digest, p));
            (Err(not_deleted("what references it is kept")), None)
        } else {
            match guarded(registry, repo, digest, &mut look).await {
                Guarded::Tagged(reach) => {
                    let late = Late {
                        reach: &reach,
                        root: digest,
                        doomed: &doomed,
                        below: &below,
                    };
                    out.kept.extend(late.keep(&mut kept));
                    continue;
                }
                Guarded::Sent(result, window) => {
                    if let Err(e) = &result {
                        kept_instead(&mut decision, e, SystemTime::now());
                    }
                    (result, window)
                }
            }
        };
        out.window = out.window.max(window);
        match (&result, decision.action) {
            (Ok(_), _) => {}
            (Err(_), Action::Keep) => {
                kept.insert(digest);
            }
            (Err(_), Action::Delete) => {
                failed.insert(digest);
            }
        }
        out.deleted.push(Deleted { decision, result });
    }
    out
}

/// How one guarded deletion went.
enum Guarded {
    /// A tag reaches the digest now: not deleted.
    Tagged(Reach),
    /// The DELETE's outcome, and the time from the end of the look to the DELETE (`None`:
    /// the look failed, and nothing was sent).
    Sent(Result<Option<String>, RegistryError>, Option<Duration>),
}

/// One deletion, guarded: the DELETE's turn taken, the look, then the DELETE at once.
async fn guarded(
    registry: &dyn Registry,
    repo: &str,
    digest: &Digest,
    look: &mut Recheck<'_>,
) -> Guarded {
    let turn = registry.reserve(1).await;
    let looked = match look.look(digest).await {
        Ok(None) => Instant::now(),
        Ok(Some(reach)) => return Guarded::Tagged(reach),
        Err(e) => {
            let url = format!("{}/{repo}@{digest}", registry.name());
            let source = Box::new(e);
            return Guarded::Sent(Err(RegistryError::NotRechecked { url, source }), None);
        }
    };
    let result = turn.spend(registry.delete_manifest(repo, digest)).await;
    // When the DELETE went: as the host's throttle let it go (its last try), else when the
    // call returned, an upper bound (a hosted API's own client, a registry without one).
    let sent = turn.sent_at().unwrap_or_else(Instant::now);
    Guarded::Sent(result, Some(sent.saturating_duration_since(looked)))
}

/// A doomed image found tagged again, and what it takes with it.
struct Late<'r, 'a> {
    reach: &'r Reach,
    root: &'a Digest,
    doomed: &'r HashMap<&'a Digest, &'a Decision>,
    below: &'r Below<'a>,
}

impl<'a> Late<'_, 'a> {
    /// The root kept, then every doomed image it reaches (breadth first, so each reason names
    /// the closest kept image), each added to `kept` and saying why.
    fn keep(&self, kept: &mut HashSet<&'a Digest>) -> Vec<Decision> {
        let keep = |digest: &Digest, reason: String| Decision {
            action: Action::Keep,
            reason,
            ..(*self.doomed[digest]).clone()
        };
        let root = name(self.doomed[self.root]);
        let why = self.reach.why();
        let mut out = vec![keep(self.root, format!("kept: {why}"))];
        kept.insert(self.root);
        let mut queue = VecDeque::from([self.root]);
        while let Some(x) = queue.pop_front() {
            for &(y, hangs) in self.below.get(x).into_iter().flatten() {
                if !kept.insert(y) {
                    continue;
                }
                let of = match hangs {
                    Hangs::Child(platform) => format!(
                        "child of {}{}",
                        name(self.doomed[x]),
                        platform_suffix(platform)
                    ),
                    Hangs::Referrer => format!(
                        "{} of {}",
                        referrer_kind(&self.doomed[y].tags),
                        name(self.doomed[x])
                    ),
                };
                let reason = match x == self.root {
                    true => format!("kept: {of}, which is {why}"),
                    false => format!("kept: {of}, kept with {root}, which is {why}"),
                };
                out.push(keep(y, reason));
                queue.push_back(y);
            }
        }
        out
    }
}

/// An image as reasons name it: its first tag, else its short digest.
fn name(d: &Decision) -> String {
    d.tags
        .first()
        .cloned()
        .unwrap_or_else(|| d.digest.short().to_string())
}

/// For each doomed image, the doomed images it reaches: its children, and its referrers.
fn below<'a>(images: &'a [Image], doomed: &HashMap<&'a Digest, &'a Decision>) -> Below<'a> {
    let mut out: Below<'a> = HashMap::new();
    for image in images.iter().filter(|i| doomed.contains_key(&i.digest)) {
        for (child, platform) in &image.children {
            if doomed.contains_key(child) {
                let hangs = Hangs::Child(platform.as_deref());
                out.entry(&image.digest).or_default().push((child, hangs));
            }
        }
        if let Some(subject) = image.subject.as_ref().filter(|s| doomed.contains_key(s)) {
            out.entry(subject)
                .or_default()
                .push((&image.digest, Hangs::Referrer));
        }
    }
    // In digest order, so what is kept with an image is told in a stable order.
    out.values_mut().for_each(|v| v.sort_by_key(|(d, _)| *d));
    out
}

/// What `digest` is of `above`, which references it: `child of pr-3`, `referrer of pr-3`
/// (`above` by its first tag, else its short digest).
fn hangs_off(images: &[Image], digest: &Digest, above: &Digest) -> String {
    let image = |d: &Digest| images.iter().find(|i| &i.digest == d);
    let name = image(above)
        .and_then(|i| i.tags.iter().min().cloned())
        .unwrap_or_else(|| above.short().to_string());
    match image(digest).and_then(|i| i.subject.as_ref()) == Some(above) {
        true => format!("referrer of {name}"),
        false => format!("child of {name}"),
    }
}

/// For each doomed image, the doomed images that reference it: the indexes listing it as a
/// child, and (for a referrer) its subject, which goes first.
fn referenced_by<'a>(
    images: &'a [Image],
    doomed: &HashMap<&'a Digest, &'a Decision>,
) -> Referenced<'a> {
    let mut parents: Referenced<'a> = HashMap::new();
    for image in images {
        if !doomed.contains_key(&image.digest) {
            continue;
        }
        for (child, _) in &image.children {
            if doomed.contains_key(child) {
                parents.entry(child).or_default().push(&image.digest);
            }
        }
        if let Some(subject) = &image.subject {
            if doomed.contains_key(subject) {
                parents.entry(&image.digest).or_default().push(subject);
            }
        }
    }
    parents
}

/// The doomed digests in deletion order: by depth (what nothing doomed references first),
/// then by digest.
fn top_down<'a>(
    doomed: &HashMap<&'a Digest, &'a Decision>,
    parents: &Referenced<'a>,
) -> Vec<&'a Digest> {
    let mut memo = HashMap::new();
    let mut order: Vec<(&Digest, usize)> = doomed
        .keys()
        .map(|d| (*d, depth(d, parents, &mut memo, &mut HashSet::new())))
        .collect();
    order.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(b.0)));
    order.into_iter().map(|(d, _)| d).collect()
}

/// Depth: 0 for what nothing doomed references, else one more than its deepest referrer.
fn depth<'a>(
    d: &'a Digest,
    parents: &Referenced<'a>,
    memo: &mut HashMap<&'a Digest, usize>,
    guard: &mut HashSet<&'a Digest>,
) -> usize {
    if let Some(&v) = memo.get(d) {
        return v;
    }
    if !guard.insert(d) {
        return 0; // a cycle cannot come from content addressing; do not loop on one
    }
    let v = parents
        .get(d)
        .map(|ps| {
            ps.iter()
                .map(|p| depth(p, parents, memo, guard) + 1)
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0);
    memo.insert(d, v);
    v
}
