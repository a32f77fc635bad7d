//! What a registry will not let retention or pruning delete, planned for rather than failed
//! on (issue 22). GHCR refuses to delete a package's last tagged version, and a version of a
//! public package with more than 5,000 downloads. Selection learns both before it decides
//! ([`Refusals`], an input like the pins): when a policy would delete every tagged version,
//! the newest stays, and a refusal an earlier run met (the checkpoint remembers it) is kept
//! without asking again. A refusal met while deleting turns that deletion into a keep
//! ([`kept_instead`]), told and, when it is for good, remembered ([`Told`]).
//!
//! Which answer is a failure of the run ([`failure`]): a deletion that did not go through,
//! except a keep the registry imposed. The last tagged version is planned for and never
//! fails a run. A download refusal fails the run that first meets it (it is news: the policy
//! cannot be carried out, and someone may want to ask GitHub support), and never a later one,
//! which keeps the version up front.

use std::collections::HashMap;
use std::time::SystemTime;

use super::decisions::{Action, Decision};
use super::deletions::{Journal, Refused};
use crate::reference::Digest;
use crate::registry::capabilities::RecordStyle;
use crate::registry::error::Refusal;
use crate::registry::{Registry, RegistryError};

/// The reason of the version GHCR would refuse to delete because it is the package's last
/// tagged one.
pub const LAST_VERSION: &str = "kept: GHCR keeps a package's last version";

/// How the reason of a version kept because GitHub refused to delete it begins.
const REFUSED: &str = "kept: GitHub refused to delete it on ";

/// What the registry will not delete in one repository, as selection needs it.
#[derive(Clone, Debug, Default)]
pub struct Refusals {
    /// The registry refuses to delete a package's last tagged version (GHCR, where every
    /// manifest is a package version): when the rule would delete every tagged image, the
    /// newest it ranks stays.
    pub last_tagged: bool,
    /// What the registry refused for good before, by digest: kept without asking again.
    pub refused: HashMap<Digest, Refused>,
}

impl Refusals {
    /// For a repository of `registry`, with the refusals the checkpoint remembers there.
    pub fn of(registry: &dyn Registry, remembered: Vec<Refused>) -> Refusals {
        Refusals {
            last_tagged: registry.capabilities().record_style == RecordStyle::Versions,
            refused: remembered
                .into_iter()
                .map(|r| (r.digest.clone(), r))
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        !self.last_tagged && self.refused.is_empty()
    }
}

/// `kept: GitHub refused to delete it on DATE: REASON`, DATE the day it first refused (UTC).
pub fn refused_reason(r: &Refused) -> String {
    let day = humantime::format_rfc3339_seconds(r.at).to_string();
    format!("{REFUSED}{}: {}", &day[..10], r.reason)
}

/// Is `reason` that of a keep the registry imposed (its last version, a refusal)?
pub fn imposed(reason: &str) -> bool {
    reason == LAST_VERSION || reason.starts_with(REFUSED)
}

/// A deletion the registry refused for good (`e`, at `now`) becomes the keep selection would
/// have decided had it known; true when it did. Any other failure stays a failed deletion.
pub fn kept_instead(decision: &mut Decision, e: &RegistryError, now: SystemTime) -> bool {
    let RegistryError::Refused {
        refusal, message, ..
    } = e
    else {
        return false;
    };
    decision.action = Action::Keep;
    decision.reason = match refusal {
        Refusal::LastVersion => LAST_VERSION.to_string(),
        Refusal::Downloads => refused_reason(&Refused {
            digest: decision.digest.clone(),
            version_id: None,
            reason: message.clone(),
            at: now,
        }),
    };
    true
}

/// What makes a deletion (`kept`: turned into a keep while deleting) that ended with `result`
/// a failure of the run, if anything (see the module docs).
pub fn failure<T>(kept: bool, result: &Result<T, RegistryError>) -> Option<&RegistryError> {
    match result {
        Ok(_) => None,
        Err(e) if !kept => Some(e),
        Err(e) if e.refusal() == Some(Refusal::Downloads) => Some(e),
        Err(_) => None,
    }
}

/// What a failure line adds to a refusal for good: that it is remembered.
pub fn remembered(e: &RegistryError) -> &'static str {
    match e.refusal() {
        Some(Refusal::Downloads) => {
            "; remembered: later runs keep it without asking (`ferry status` lists it)"
        }
        _ => "",
    }
}

/// Where the keeps a registry imposes on one repository are told (a line each) and its
/// refusals for good remembered.
pub struct Told<'a> {
    /// The registry's name, as the checkpoint keys it.
    registry: &'a str,
    repo: &'a str,
    /// `registry/repo`, for people.
    repository: &'a str,
    journal: &'a dyn Journal,
    note: &'a (dyn Fn(&str) + Sync),
    /// What the checkpoint remembers refused here.
    remembered: Vec<Refused>,
}

impl<'a> Told<'a> {
    pub fn new(
        registry: &'a str,
        repo: &'a str,
        repository: &'a str,
        journal: &'a dyn Journal,
        note: &'a (dyn Fn(&str) + Sync),
    ) -> Told<'a> {
        Told {
            registry,
            repo,
            repository,
            journal,
            note,
            remembered: journal.refusals(registry, repo),
        }
    }

    /// A keep the registry imposed on the decisions (`d`): told; a remembered refusal is
    /// remembered as met again.
    pub fn planned(&self, d: &Decision) {
        if d.action != Action::Keep || !imposed(&d.reason) {
            return;
        }
        (self.note)(&told("kept", self.repository, d));
        if let Some(r) = self.remembered.iter().find(|r| r.digest == d.digest) {
            self.journal.refused(self.registry, self.repo, r);
        }
    }

    /// A deletion that became a keep while deleting (`d`, after `e`): told; a refusal for good
    /// remembered from `now`.
    pub fn met(&self, d: &Decision, e: &RegistryError, now: SystemTime) {
        if d.action != Action::Keep {
            return;
        }
        (self.note)(&told("kept", self.repository, d));
        if let RegistryError::Refused {
            refusal: Refusal::Downloads,
            message,
            id,
            ..
        } = e
        {
            let refused = Refused {
                digest: d.digest.clone(),
                version_id: id.clone(),
                reason: message.clone(),
                at: now,
            };
            self.journal.refused(self.registry, self.repo, &refused);
        }
    }
}

/// `VERB REPOSITORY@SHORT (TAGS): REASON`: a deletion (or a pruning) as people read it.
pub(crate) fn told(verb: &str, repository: &str, d: &Decision) -> String {
    format!(
        "{verb} {repository}@{} ({}): {}",
        d.digest.short(),
        if d.tags.is_empty() {
            "untagged".to_string()
        } else {
            d.tags.join(", ")
        },
        d.reason
    )
}
