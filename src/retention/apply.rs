//! Carry out delete decisions through the registry trait, parents and subjects before their
//! children and referrers: if a deletion fails midway, nothing that a surviving manifest
//! still references has been deleted. A deletion the registry refuses for good becomes a keep
//! ([`super::refusals`]), and so does every doomed image it references.

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use super::refusals::{failure, kept_instead};
use super::{Action, Decision, Image, RepoDecisions};
use crate::registry::{Digest, Registry, RegistryError};

/// One deletion and how it went: `Ok` when made (with the registry's own id of what it
/// deleted, where it has one), `Err` when not. When the registry refused it for good, or
/// kept what references it, `decision` is a keep that says why (its reason as selection
/// would have given it).
#[derive(Debug)]
pub struct Deleted {
    pub decision: Decision,
    pub result: Result<Option<String>, RegistryError>,
}

impl Deleted {
    /// Why this is a failure of the run, if it is (see [`super::refusals`]).
    pub fn failure(&self) -> Option<&RegistryError> {
        failure(self.decision.action == Action::Keep, &self.result)
    }
}

/// Who references whom among the doomed: child -> parents, referrer -> subject.
type Referenced<'a> = HashMap<&'a Digest, Vec<&'a Digest>>;

/// Delete what `decisions` says to delete in `repo`.
pub async fn apply(
    registry: &dyn Registry,
    repo: &str,
    images: &[Image],
    decisions: &RepoDecisions,
) -> Vec<Deleted> {
    let doomed: HashMap<&Digest, &Decision> = decisions
        .decisions
        .iter()
        .filter(|d| d.action == Action::Delete)
        .map(|d| (&d.digest, d))
        .collect();
    let parents = referenced_by(images, &doomed);
    let mut failed: HashSet<&Digest> = HashSet::new();
    let mut kept: HashSet<&Digest> = HashSet::new();
    let mut out = Vec::with_capacity(doomed.len());
    for digest in top_down(&doomed, &parents) {
        let mut decision = (*doomed[digest]).clone();
        let above: &[&Digest] = parents.get(digest).map_or(&[], Vec::as_slice);
        let not_deleted = |reason: &str| RegistryError::Protocol {
            url: format!("{}/{repo}@{digest}", registry.name()),
            reason: format!("not deleted: {reason}"),
        };
        let result = if above.iter().any(|p| failed.contains(p)) {
            Err(not_deleted(
                "deleting what references it failed, so it is still in use",
            ))
        } else if let Some(p) = above.iter().find(|p| kept.contains(*p)) {
            decision.action = Action::Keep;
            decision.reason = format!("kept: {}", hangs_off(images, digest, p));
            Err(not_deleted("what references it is kept"))
        } else {
            let r = registry.delete_manifest(repo, digest).await;
            if let Err(e) = &r {
                kept_instead(&mut decision, e, SystemTime::now());
            }
            r
        };
        match (&result, decision.action) {
            (Ok(_), _) => {}
            (Err(_), Action::Keep) => {
                kept.insert(digest);
            }
            (Err(_), Action::Delete) => {
                failed.insert(digest);
            }
        }
        out.push(Deleted { decision, result });
    }
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
