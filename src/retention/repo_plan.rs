//! One policy read and decided, repository by repository: the repositories it names
//! ([`policy_repositories`]), then each read and decided ([`plan_repository`]) before the
//! next is read, so that what a run holds is one repository's inventory, not the
//! organisation's. What `ferry plan` shows and `ferry run` carries out; pure but for the
//! reads: nothing is deleted here.

use std::time::SystemTime;

use super::decisions::{Image, RepoDecisions};
use super::inventory;
use super::pins::Pins;
use super::retain_rule::RetainPolicy;
use super::select;

/// The decisions for one repository of a `[[retain]]` policy, or why it could not be read.
pub struct RepoPlan {
    /// `registry/repo`, for people.
    pub repository: String,
    pub repo: String,
    pub images: Vec<Image>,
    /// The manifests the inventory read, for the deletions to keep ([`super::deletions::Deletion::manifest`]).
    pub manifests: inventory::Manifests,
    pub decisions: Result<RepoDecisions, crate::registry::RegistryError>,
}

/// The repositories a policy names that this run owns (a wildcard expands through the
/// catalog), and a plan for each that cannot be read: a catalog that failed, a listed name
/// that fails the grammar.
pub async fn policy_repositories(
    policy: &RetainPolicy,
    registry: &dyn crate::registry::Registry,
    owns: &(dyn Fn(&str) -> bool + Sync),
) -> (Vec<String>, Vec<RepoPlan>) {
    use crate::reference::{display_repo, Selector};
    let location = &policy.repository.location;
    let failed = |repo: String, e: crate::registry::RegistryError| RepoPlan {
        repository: policy.repository.to_string(),
        repo,
        images: Vec::new(),
        manifests: Default::default(),
        decisions: Err(e),
    };
    let mut out = Vec::new();
    let repos = match &policy.repository.selector {
        Selector::Wildcard => match registry
            .list_repositories(&policy.repository.repository)
            .await
        {
            // A name the catalog lists that fails the grammar is that repository's error:
            // nothing is read or deleted under it, and the others go on.
            Ok(r) if matches!(location, crate::reference::Location::Registry(_)) => {
                use crate::reference::names;
                let (good, bad) = names::sort_out(r, names::repository);
                let bad = bad
                    .into_iter()
                    .filter(|e| owns(&display_repo(location, &e.name)));
                out.extend(bad.map(|e| failed(e.name.clone(), e.into())));
                good
            }
            Ok(r) => r,
            Err(e) => {
                let repo = policy.repository.repository.clone();
                return (Vec::new(), vec![failed(repo, e)]);
            }
        },
        _ => vec![policy.repository.repository.clone()],
    };
    let owned = repos
        .into_iter()
        .filter(|repo| owns(&display_repo(location, repo)))
        .collect();
    (owned, out)
}

/// One repository of a policy read and decided.
pub async fn plan_repository(
    policy: &RetainPolicy,
    registry: &dyn crate::registry::Registry,
    repo: String,
    now: SystemTime,
    pins: &(dyn Fn(&str) -> Pins + Sync),
) -> RepoPlan {
    let repository = crate::reference::display_repo(&policy.repository.location, &repo);
    match inventory::read_keeping(registry, &repo).await {
        Ok((images, manifests)) => {
            let decisions = select::select_pinned(&images, &policy.rule, now, &pins(&repo));
            RepoPlan {
                repository,
                repo,
                images,
                manifests,
                decisions: Ok(decisions),
            }
        }
        Err(e) => RepoPlan {
            repository,
            repo,
            images: Vec::new(),
            manifests: Default::default(),
            decisions: Err(e),
        },
    }
}
