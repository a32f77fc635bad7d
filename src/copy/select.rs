//! Turn the plan's `[[copy]]` rules into concrete items: expand wildcards through the
//! registry's catalog, list tags, apply the tag filters, map source repositories to targets.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;

use super::{Endpoint, Item};
use crate::plan::{CopyRule, Location, Reference, Selector};
use crate::registry::manifest::referrer_tag_subject;
use crate::registry::{Digest, Registry, RegistryError};

/// Referrer tags (`sha256-<hex>.sig/.att/.sbom`) in `all` whose subject is one of the
/// `selected` tags' images (or `known` digests), followed recursively (a signature of an SBOM).
/// Only when the repository has such tags at all are the selected tags HEADed.
async fn referrer_tags(
    src: &dyn Registry,
    repo: &str,
    all: &[String],
    selected: &[String],
    known: Vec<Digest>,
) -> Result<Vec<String>, RegistryError> {
    let candidates: Vec<(&String, Digest)> = all
        .iter()
        .filter_map(|t| referrer_tag_subject(t).map(|d| (t, d)))
        .filter(|(t, _)| !selected.contains(t))
        .collect();
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let mut digests: HashSet<Digest> = known.into_iter().collect();
    let mut pending: Vec<String> = selected.to_vec();
    let mut found: Vec<String> = Vec::new();
    loop {
        let heads: Vec<Option<Digest>> = futures::stream::iter(std::mem::take(&mut pending))
            .map(|tag| async move {
                src.head_manifest(repo, &tag)
                    .await
                    .map(|h| h.map(|h| h.digest))
            })
            .buffered(LIST_CONCURRENCY)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        digests.extend(heads.into_iter().flatten());
        for (tag, subject) in &candidates {
            if digests.contains(subject) && !found.contains(tag) {
                found.push((*tag).clone());
                pending.push((*tag).clone());
            }
        }
        if pending.is_empty() {
            return Ok(found);
        }
    }
}

/// How many repositories' tag lists are read at once while resolving a wildcard.
const LIST_CONCURRENCY: usize = 8;

/// The registries of a run, by location.
pub type Registries = HashMap<Location, Arc<dyn Registry>>;

/// A rule (or one repository of a wildcard rule) that could not be resolved.
#[derive(Debug, thiserror::Error)]
#[error("{rule}: {what}")]
pub struct SelectError {
    pub rule: String,
    pub what: String,
    #[source]
    pub source: RegistryError,
}

/// The items of all rules, in plan order, plus what could not be resolved.
#[derive(Default)]
pub struct Selection {
    pub items: Vec<Item>,
    pub errors: Vec<SelectError>,
    /// Items dropped because an earlier rule already writes the same target.
    pub duplicates: Vec<Item>,
}

fn registry(registries: &Registries, r: &Reference) -> Arc<dyn Registry> {
    registries
        .get(&r.location)
        .cloned()
        .expect("the app builds a registry for every location in the plan")
}

/// Could a rule whose target is `to` write what a rule reading `from` reads?
fn writes_into(to: &Reference, from: &Reference) -> bool {
    if to.location != from.location {
        return false;
    }
    let norm = |r: &Reference| match r.location {
        Location::Layout => r.repository.trim_start_matches("./").to_string(),
        Location::Registry(_) => r.repository.clone(),
    };
    let (a, b) = (norm(to), norm(from));
    match (
        to.selector == Selector::Wildcard,
        from.selector == Selector::Wildcard,
    ) {
        (false, false) => a == b,
        (true, false) => b.starts_with(&a),
        (false, true) => a.starts_with(&b),
        (true, true) => a.starts_with(&b) || b.starts_with(&a),
    }
}

/// Group rules into stages that run one after another: a rule that reads what an earlier rule
/// writes (copy to staging, then promote) runs in a later stage than that rule, so it sees
/// the copied images; every other rule runs in the first stage it can, concurrently with the
/// rest of that stage. Returns indexes into `rules`, plan order kept within a stage.
pub fn stages(rules: &[CopyRule]) -> Vec<Vec<usize>> {
    let mut stage_of: Vec<usize> = Vec::with_capacity(rules.len());
    for (i, rule) in rules.iter().enumerate() {
        let stage = (0..i)
            .filter(|&j| writes_into(&rules[j].to, &rule.from))
            .map(|j| stage_of[j] + 1)
            .max()
            .unwrap_or(0);
        stage_of.push(stage);
    }
    let count = stage_of.iter().max().map_or(0, |m| m + 1);
    let mut out = vec![Vec::new(); count];
    for (i, s) in stage_of.into_iter().enumerate() {
        out[s].push(i);
    }
    out
}

/// Resolve every rule.
pub async fn resolve(rules: &[&CopyRule], registries: &Registries) -> Selection {
    let mut selection = Selection::default();
    for rule in rules {
        resolve_rule(rule, registries, &mut selection).await;
    }
    // Two rules writing the same target tag would race; the first rule wins, as in the plan.
    let mut seen = HashSet::new();
    let mut items = Vec::with_capacity(selection.items.len());
    for item in selection.items.drain(..) {
        let key = (
            item.target.registry.name().to_string(),
            item.target.repo.clone(),
            item.target_tag
                .clone()
                .unwrap_or_else(|| item.source_ref.clone()),
        );
        if seen.insert(key) {
            items.push(item);
        } else {
            selection.duplicates.push(item);
        }
    }
    selection.items = items;
    selection
}

async fn resolve_rule(rule: &CopyRule, registries: &Registries, out: &mut Selection) {
    let src = registry(registries, &rule.from);
    let dst = registry(registries, &rule.to);
    let label = rule.to_string();
    let endpoint = |registry: &Arc<dyn Registry>, repo: &str| Endpoint {
        registry: registry.clone(),
        repo: repo.to_string(),
    };
    let target_tag = match &rule.to.selector {
        Selector::Tag(t) => Some(t.clone()),
        _ => None,
    };
    // The signatures (and other referrers) of what a rule selects travel with it, under
    // their own tags: the digest they name is preserved by the copy.
    let with_referrers = |out: &mut Selection,
                          repo: &str,
                          target_repo: &str,
                          extra: Result<Vec<String>, RegistryError>| {
        match extra {
            Ok(tags) => {
                for tag in tags {
                    out.items.push(Item {
                        source: endpoint(&src, repo),
                        source_ref: tag.clone(),
                        target: endpoint(&dst, target_repo),
                        target_tag: Some(tag),
                    });
                }
            }
            Err(e) => out.errors.push(SelectError {
                rule: label.clone(),
                what: format!(
                    "finding the signatures of what it selects in {}",
                    crate::plan::reference::display_repo(&rule.from.location, repo)
                ),
                source: e,
            }),
        }
    };
    match &rule.from.selector {
        Selector::Tag(_) | Selector::Digest(_) => {
            let (source_ref, known, tag_for_target) = match &rule.from.selector {
                Selector::Tag(tag) => (
                    tag.clone(),
                    Vec::new(),
                    Some(target_tag.clone().unwrap_or_else(|| tag.clone())),
                ),
                Selector::Digest(d) => (
                    d.clone(),
                    Digest::parse(d).into_iter().collect(),
                    target_tag.clone(),
                ),
                _ => unreachable!("matched above"),
            };
            out.items.push(Item {
                source: endpoint(&src, &rule.from.repository),
                source_ref: source_ref.clone(),
                target: endpoint(&dst, &rule.to.repository),
                target_tag: tag_for_target,
            });
            if rule.referrers {
                let selected: Vec<String> = if known.is_empty() {
                    vec![source_ref]
                } else {
                    Vec::new()
                };
                let extra = match src.list_tags(&rule.from.repository).await {
                    Ok(all) => {
                        referrer_tags(src.as_ref(), &rule.from.repository, &all, &selected, known)
                            .await
                    }
                    Err(e) => Err(e),
                };
                with_referrers(out, &rule.from.repository, &rule.to.repository, extra);
            }
        }
        Selector::AllTags => match src.list_tags(&rule.from.repository).await {
            Ok(tags) => {
                let selected = rule.tags.select(&tags);
                for tag in &selected {
                    out.items.push(Item {
                        source: endpoint(&src, &rule.from.repository),
                        source_ref: tag.clone(),
                        target: endpoint(&dst, &rule.to.repository),
                        target_tag: Some(tag.clone()),
                    });
                }
                if rule.referrers {
                    let extra = referrer_tags(
                        src.as_ref(),
                        &rule.from.repository,
                        &tags,
                        &selected,
                        Vec::new(),
                    )
                    .await;
                    with_referrers(out, &rule.from.repository, &rule.to.repository, extra);
                }
            }
            Err(e) => out.errors.push(SelectError {
                rule: label,
                what: format!("listing the tags of {}", rule.from.repo_display()),
                source: e,
            }),
        },
        Selector::Wildcard => {
            let repos = match src.list_repositories(&rule.from.repository).await {
                Ok(r) => r,
                Err(e) => {
                    out.errors.push(SelectError {
                        rule: label,
                        what: format!("listing the repositories under {}", rule.from),
                        source: e,
                    });
                    return;
                }
            };
            let listed: Vec<(String, Result<Vec<String>, RegistryError>)> =
                futures::stream::iter(repos)
                    .map(|repo| {
                        let src = src.clone();
                        async move {
                            let tags = src.list_tags(&repo).await;
                            (repo, tags)
                        }
                    })
                    .buffered(LIST_CONCURRENCY)
                    .collect()
                    .await;
            for (repo, tags) in listed {
                let suffix = repo.strip_prefix(&rule.from.repository).unwrap_or(&repo);
                let target_repo = format!("{}{suffix}", rule.to.repository);
                match tags {
                    Ok(tags) => {
                        let selected = rule.tags.select(&tags);
                        for tag in &selected {
                            out.items.push(Item {
                                source: endpoint(&src, &repo),
                                source_ref: tag.clone(),
                                target: endpoint(&dst, &target_repo),
                                target_tag: Some(tag.clone()),
                            });
                        }
                        if rule.referrers {
                            let extra =
                                referrer_tags(src.as_ref(), &repo, &tags, &selected, Vec::new())
                                    .await;
                            with_referrers(out, &repo, &target_repo, extra);
                        }
                    }
                    Err(e) => out.errors.push(SelectError {
                        rule: label.clone(),
                        what: format!(
                            "listing the tags of {}",
                            crate::plan::reference::display_repo(&rule.from.location, &repo)
                        ),
                        source: e,
                    }),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::TagFilter;

    fn rule(from: &str, to: &str) -> CopyRule {
        CopyRule {
            number: 0,
            line: 0,
            from: Reference::parse(from).unwrap(),
            to: Reference::parse(to).unwrap(),
            tags: TagFilter::default(),
            referrers: true,
        }
    }

    #[test]
    fn independent_rules_share_one_stage() {
        let rules = [
            rule("docker.io/org/*", "ghcr.io/org/*"),
            rule("docker.io/library/nginx:1", "ghcr.io/mirror/nginx"),
            rule("quay.io/a/b", "ghcr.io/a/b"),
        ];
        assert_eq!(stages(&rules), vec![vec![0, 1, 2]]);
        assert_eq!(stages(&[]), Vec::<Vec<usize>>::new());
    }

    #[test]
    fn a_rule_reading_what_another_writes_runs_after_it() {
        let rules = [
            rule("docker.io/org/*", "ghcr.io/org/*"),
            rule("ghcr.io/org/api:v1", "ghcr.io/prod/api:stable"),
            rule("ghcr.io/prod/api", "oci:./backup/api"),
            rule("quay.io/x/y", "ghcr.io/x/y"),
            rule("oci:backup/api:stable", "quay.io/restore/api"),
        ];
        assert_eq!(stages(&rules), vec![vec![0, 3], vec![1], vec![2], vec![4]]);
    }

    #[test]
    fn overlap_rules() {
        let w = |to: &str, from: &str| {
            writes_into(
                &Reference::parse(to).unwrap(),
                &Reference::parse(from).unwrap(),
            )
        };
        assert!(w("ghcr.io/org/*", "ghcr.io/org/api"));
        assert!(w("ghcr.io/org/api", "ghcr.io/org/*"));
        assert!(w("ghcr.io/org/*", "ghcr.io/*"));
        assert!(!w("ghcr.io/org/api", "ghcr.io/org/web"));
        assert!(!w("ghcr.io/org/api", "quay.io/org/api"));
        assert!(w("oci:./out", "oci:out:v1"));
    }
}
