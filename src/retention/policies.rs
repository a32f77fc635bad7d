//! Retention carried out: every policy read and decided repository by repository, its
//! deletions made top-down ([`super::apply`]), each one told to people and recorded through
//! [`Journal`], as is each keep the registry imposed ([`super::refusals`]). `ferry run` runs it against the registries, `ferry plan` against overlays of
//! them, with the same pins, so the dry run deletes what the run deletes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::apply::{apply, Applied, Deleted};
use super::decisions::{Action, Decision};
use super::deletions::{Deletion, Journal};
use super::inventory::keep_for_restore;
use super::pins::Pins;
use super::refusals::{told, Refusals, Told};
use super::repo_plan::{plan_repository, policy_repositories, RepoPlan};
use super::retain_rule::RetainPolicy;
use crate::reference::Digest;
use crate::reference::Location;
use crate::registry::Registry;

/// Pins by repository: what other steps of the plan need in each one.
#[derive(Clone, Debug, Default)]
pub struct PinMap {
    repos: HashMap<(String, String), Pins>,
    /// Every repository holds its deletions, and why (an `[in_use]` source failed).
    hold: Option<String>,
}

impl PinMap {
    /// Hold every deletion in every repository, saying `why`.
    pub fn hold_all(&mut self, why: String) {
        self.hold = Some(why);
    }

    /// Why every deletion is held, when it is.
    pub fn held(&self) -> Option<&str> {
        self.hold.as_deref()
    }

    /// The pins of `repo` at registry `registry` (its name: a host, or `oci:`), to add to.
    pub fn entry(&mut self, registry: &str, repo: &str) -> &mut Pins {
        self.repos.entry(repo_key(registry, repo)).or_default()
    }

    /// The pins of `repo` at registry `registry` (none: empty).
    pub fn get(&self, registry: &str, repo: &str) -> Pins {
        let mut pins = self
            .repos
            .get(&repo_key(registry, repo))
            .cloned()
            .unwrap_or_default();
        if let Some(why) = &self.hold {
            pins.hold = Some(why.clone());
        }
        pins
    }
}

/// A layout path names one directory in several ways; pins and targets meet on one form.
fn repo_key(registry: &str, repo: &str) -> (String, String) {
    let repo = match registry {
        "oci:" => repo
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string(),
        _ => repo.to_string(),
    };
    (registry.to_string(), repo)
}

/// What [`run`] needs besides the policies.
pub struct Context<'a> {
    /// A registry for every location a policy names.
    pub registries: &'a HashMap<Location, Arc<dyn Registry>>,
    /// What ages are measured from.
    pub now: SystemTime,
    /// Does this run own a repository (`--shard`)? Only those are read.
    pub owns: &'a (dyn Fn(&str) -> bool + Sync),
    /// Images each repository keeps whatever its policy says.
    pub pins: &'a PinMap,
    pub journal: &'a dyn Journal,
    /// Told of each deletion made, and of each image kept because it was tagged since the
    /// inventory, one line each ("deleted …", "kept …").
    pub note: &'a (dyn Fn(&str) + Sync),
}

/// One repository of a `[[retain]]` policy: its decisions and the deletions carried out.
pub struct Retained {
    /// The policy's number (1-based).
    pub policy: usize,
    /// Its decisions as carried out: an image the look before its DELETE found tagged since
    /// the inventory is a keep here, saying why.
    pub plan: RepoPlan,
    /// Every deletion attempted, in the order made (top-down); empty when the repository was
    /// not read or was held back.
    pub deletions: Vec<Deleted>,
    /// The longest time between a digest's last look and its DELETE (`None`: none sent).
    pub window: Option<Duration>,
    /// The images the look before their DELETE found tagged since the inventory, and what
    /// they reach, each with why (also keeps in `plan`).
    pub late: Vec<Decision>,
}

/// Apply `policies` in order, each repository read, decided and pruned before the next.
pub async fn run(policies: &[RetainPolicy], cx: &Context<'_>) -> Vec<Retained> {
    let mut out = Vec::new();
    run_each(policies, cx, &mut |r| out.push(r)).await;
    out
}

/// [`run`], handing each repository to `each` as soon as it is carried out. Its inventory
/// (images, and the manifests kept for `ferry restore`) is dropped first: what retention
/// holds at once is one repository's, however many the policy names.
pub async fn run_each(
    policies: &[RetainPolicy],
    cx: &Context<'_>,
    each: &mut (dyn FnMut(Retained) + Send),
) {
    for policy in policies {
        let registry = cx
            .registries
            .get(&policy.repository.location)
            .expect("a registry for every location")
            .clone();
        let name = registry.name().to_string();
        let pins_for = |repo: &str| Pins {
            refusals: Refusals::of(registry.as_ref(), cx.journal.refusals(&name, repo)),
            ..cx.pins.get(&name, repo)
        };
        let (repos, unread) = policy_repositories(policy, registry.as_ref(), cx.owns).await;
        for plan in unread {
            each(carry_out_told(policy, registry.as_ref(), plan, cx).await);
        }
        for repo in repos {
            let plan = plan_repository(policy, registry.as_ref(), repo, cx.now, &pins_for).await;
            each(carry_out_told(policy, registry.as_ref(), plan, cx).await);
        }
    }
}

/// One repository's decisions carried out, each deletion and keep told and recorded.
async fn carry_out_told(
    policy: &RetainPolicy,
    registry: &dyn Registry,
    mut plan: RepoPlan,
    cx: &Context<'_>,
) -> Retained {
    let name = registry.name();
    if cx.journal.keeps_manifests() {
        keep_doomed(registry, &mut plan).await;
    }
    let Applied {
        deleted: deletions,
        kept,
        window,
    } = carry_out(registry, &plan).await;
    for k in &kept {
        (cx.note)(&told("kept", &plan.repository, k));
    }
    if let Ok(decided) = &mut plan.decisions {
        overrule(&mut decided.decisions, &kept);
    }
    let told = Told::new(name, &plan.repo, &plan.repository, cx.journal, cx.note);
    for d in plan.decisions.iter().flat_map(|d| &d.decisions) {
        told.planned(d);
    }
    for d in &deletions {
        if let Err(e) = &d.result {
            told.met(&d.decision, e, SystemTime::now());
        }
        if let Ok(version_id) = &d.result {
            (cx.note)(&note(&plan.repository, d));
            cx.journal.deleted(&Deletion {
                registry: name,
                repo: &plan.repo,
                digest: &d.decision.digest,
                tags: &d.decision.tags,
                reason: &d.decision.reason,
                version_id: version_id.as_deref(),
                tags_only: false,
                manifest: plan.manifests.get(&d.decision.digest),
            });
        }
    }
    // Carried out and recorded: the inventory is no longer needed.
    plan.images = Vec::new();
    plan.manifests = Default::default();
    Retained {
        policy: policy.number,
        plan,
        deletions,
        window,
        late: kept,
    }
}

/// The deletions a repository's decisions call for, made; none when it was not read or the
/// `max_deletions` valve held it back.
async fn carry_out(registry: &dyn Registry, plan: &RepoPlan) -> Applied {
    match &plan.decisions {
        Ok(d) if d.held_back.is_none() => apply(registry, &plan.repo, &plan.images, d).await,
        _ => Applied::default(),
    }
}

/// The decisions as carried out: each of `kept` (found tagged since the inventory, or
/// reached from such an image) replaces the deletion decided for its digest.
pub(crate) fn overrule(decisions: &mut [Decision], kept: &[Decision]) {
    for k in kept {
        if let Some(d) = decisions
            .iter_mut()
            .find(|d| d.digest == k.digest && d.action == Action::Delete)
        {
            *d = k.clone();
        }
    }
}

/// Read, before anything is deleted, the manifests of the deletions to come that the
/// inventory did not read (Docker Hub's), so each deletion keeps what restores it.
async fn keep_doomed(registry: &dyn Registry, plan: &mut RepoPlan) {
    let doomed: Vec<Digest> = match &plan.decisions {
        Ok(d) if d.held_back.is_none() => d
            .decisions
            .iter()
            .filter(|d| d.action == Action::Delete)
            .map(|d| d.digest.clone())
            .collect(),
        _ => return,
    };
    keep_for_restore(registry, &plan.repo, &doomed, &mut plan.manifests).await;
}

/// `deleted REPOSITORY@SHORT (TAGS): REASON`, the line people read for a deletion made.
fn note(repository: &str, d: &Deleted) -> String {
    told("deleted", repository, &d.decision)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retention::Decision;

    #[test]
    fn a_layout_path_has_one_key_however_it_is_spelled() {
        let mut pins = PinMap::default();
        pins.entry("oci:", "./out/app/")
            .tags
            .insert("v1".into(), "copy #1 writes it".into());
        pins.entry("reg.example", "team/app")
            .tags
            .insert("v2".into(), "copy #2 writes it".into());
        for spelling in ["out/app", "./out/app", "out/app/"] {
            assert_eq!(
                pins.get("oci:", spelling).tags["v1"],
                "copy #1 writes it",
                "{spelling}"
            );
        }
        assert!(pins.get("reg.example", "team/app").tags.contains_key("v2"));
        // A registry path is taken as written; another registry has its own pins.
        assert!(pins.get("reg.example", "./team/app").is_empty());
        assert!(pins.get("other.example", "team/app").is_empty());
    }

    #[test]
    fn a_deletion_is_told_with_its_short_digest_tags_and_reason() {
        let digest = Digest::parse(&format!("sha256:{}", "ab".repeat(32))).unwrap();
        let deleted = |tags: &[&str]| Deleted {
            decision: Decision {
                digest: digest.clone(),
                tags: tags.iter().map(|t| t.to_string()).collect(),
                action: Action::Delete,
                reason: "delete: matches ^pr-, 41 days old".into(),
            },
            result: Ok(None),
        };
        assert_eq!(
            note("reg.example/team/app", &deleted(&["pr-1", "pr-1b"])),
            "deleted reg.example/team/app@sha256:abababababab (pr-1, pr-1b): delete: matches ^pr-, 41 days old"
        );
        assert_eq!(
            note("oci:out/app", &deleted(&[])),
            "deleted oci:out/app@sha256:abababababab (untagged): delete: matches ^pr-, 41 days old"
        );
    }
}
