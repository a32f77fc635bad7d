//! Turn the plan's `[[copy]]` rules into concrete items: expand wildcards through the
//! registry's catalog, list tags, apply the tag filters, map source repositories to targets.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;

use super::{Endpoint, Item};
use crate::plan::{CopyRule, Location, Reference, Selector};
use crate::registry::{Registry, RegistryError};

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

/// Resolve every rule.
pub async fn resolve(rules: &[CopyRule], registries: &Registries) -> Selection {
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
    match &rule.from.selector {
        Selector::Tag(tag) => out.items.push(Item {
            source: endpoint(&src, &rule.from.repository),
            source_ref: tag.clone(),
            target: endpoint(&dst, &rule.to.repository),
            target_tag: Some(target_tag.unwrap_or_else(|| tag.clone())),
        }),
        Selector::Digest(digest) => out.items.push(Item {
            source: endpoint(&src, &rule.from.repository),
            source_ref: digest.clone(),
            target: endpoint(&dst, &rule.to.repository),
            target_tag,
        }),
        Selector::AllTags => match src.list_tags(&rule.from.repository).await {
            Ok(tags) => {
                for tag in rule.tags.select(&tags) {
                    out.items.push(Item {
                        source: endpoint(&src, &rule.from.repository),
                        source_ref: tag.clone(),
                        target: endpoint(&dst, &rule.to.repository),
                        target_tag: Some(tag),
                    });
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
                        for tag in rule.tags.select(&tags) {
                            out.items.push(Item {
                                source: endpoint(&src, &repo),
                                source_ref: tag.clone(),
                                target: endpoint(&dst, &target_repo),
                                target_tag: Some(tag),
                            });
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
