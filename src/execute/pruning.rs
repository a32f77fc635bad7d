//! What each `prune` rule covers this run, from what the copy stages listed and what the
//! checkpoint recorded: the target repositories whose source answered (their tags, or that
//! they are gone), the repositories removed from a wildcard's source catalog, and those left
//! alone because their source listed nothing (an outage looks like that).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::copy::copy_rule::CopyRule;
use crate::copy::select::{wildcard_target, Empty, Found, Listing, Registries};
use crate::copy::Item;
use crate::plan::Plan;
use crate::reference::display_repo;
use crate::reference::Selector;
use crate::retention::deletions::Ledger;
use crate::retention::prune::rules::RuleScope;
use crate::retention::prune::{Scope, SourceTags};

/// The scopes of the plan's `prune` rules, in plan order. A rule that selected nothing
/// without `allow_empty` (in `empty`) prunes nothing: a filter that keeps no tag is a mistake
/// to fix, not an order to delete every tag ferry copied.
pub fn scopes(
    plan: &Plan,
    registries: &Registries,
    listings: &[Listing],
    empty: &[Empty],
    selected: &Selected,
    ledger: &Ledger,
    owns: &(dyn Fn(&str) -> bool + Sync),
) -> Vec<RuleScope> {
    plan.copies
        .iter()
        .filter_map(|rule| {
            let prune = plan.prune(rule.number)?.clone();
            let cx = RuleCx {
                rule,
                target: registries[&rule.to.location].name().to_string(),
                source: registries[&rule.from.location].name().to_string(),
                ledger,
                selected,
            };
            let mut scope = RuleScope {
                rule: rule.number,
                label: super::label::copy_label(plan, rule.number),
                prune,
                target: rule.to.location.clone(),
                scopes: Vec::new(),
                refused: Vec::new(),
            };
            for l in listings {
                cx.add(l, owns, &mut scope);
            }
            if empty.iter().any(|e| e.rule == rule.number && !e.allowed) {
                scope.scopes.clear();
                scope.refused.push(format!(
                    "{}: it selects nothing, so nothing is pruned",
                    scope.label
                ));
            }
            Some(scope)
        })
        .collect()
}

/// Tags each target repository gets from some rule this run: `(registry, repo)` -> tags.
pub type Selected = HashMap<(String, String), HashSet<String>>;

/// Add an item's target tag to what its repository gets this run.
pub fn select(selected: &mut Selected, item: &Item) {
    if item.target_tag.is_some() {
        let (registry, repo, tag) = item.key();
        selected.entry((registry, repo)).or_default().insert(tag);
    }
}

/// One rule being scoped.
struct RuleCx<'a> {
    rule: &'a CopyRule,
    /// Its target and source registries' names (a host, or `oci:`).
    target: String,
    source: String,
    ledger: &'a Ledger,
    selected: &'a Selected,
}

impl RuleCx<'_> {
    fn add(&self, listing: &Listing, owns: &(dyn Fn(&str) -> bool + Sync), out: &mut RuleScope) {
        match listing {
            Listing::Tags {
                rule,
                source,
                target,
                found,
            } if *rule == self.rule.number && owns(source) => {
                self.tags(source, &self.key(target), found, out)
            }
            Listing::Catalog {
                rule,
                targets: Some(targets),
            } if *rule == self.rule.number => self.removed(targets, owns, out),
            Listing::Catalog { rule, targets: None } if *rule == self.rule.number => {
                out.refused.push(format!(
                    "{}: the source catalog could not be read, so repositories removed there are not pruned this run",
                    self.rule
                ))
            }
            _ => {}
        }
    }

    /// A target repository as the checkpoint keys it (a layout path in one spelling).
    fn key(&self, repo: &str) -> String {
        match self.target.as_str() {
            "oci:" => crate::reference::names::canonical_layout_path(repo),
            _ => repo.to_string(),
        }
    }

    fn scope(&self, repo: &str, source: &str, source_tags: SourceTags) -> Scope {
        Scope {
            repo: repo.to_string(),
            source: source.to_string(),
            source_tags,
            selected: self
                .selected
                .get(&(self.target.clone(), repo.to_string()))
                .cloned()
                .unwrap_or_default(),
        }
    }

    /// The tags ferry copied to `repo` from `source`.
    fn copied(&self, repo: &str, source: &str) -> usize {
        self.ledger
            .copied_from(&self.target, repo, source)
            .keys()
            .filter(|r| !r.starts_with("sha256:"))
            .count()
    }

    /// A source repository's tag list: judged, unless it lists nothing where ferry copied
    /// something, or could not be read.
    fn tags(&self, source: &str, repo: &str, found: &Found, out: &mut RuleScope) {
        let shown = display_repo(&self.rule.to.location, repo);
        match found {
            Found::Listed(tags) if tags.is_empty() && self.copied(repo, source) > 0 => {
                out.refused.push(format!(
                    "{shown}: its source {source} lists no tags, but ferry copied {} there; an outage looks like this, so nothing is pruned there",
                    self.copied(repo, source)
                ))
            }
            Found::Listed(tags) => out.scopes.push(self.scope(
                repo,
                source,
                SourceTags::Listed(tags.iter().cloned().collect()),
            )),
            Found::Gone => out.scopes.push(self.scope(repo, source, SourceTags::Gone)),
            Found::Failed => out.refused.push(format!(
                "{shown}: its source {source} could not be listed, so nothing is pruned there"
            )),
        }
    }

    /// The repositories ferry copied under this wildcard rule whose source the catalog no
    /// longer lists: gone. A catalog that lists nothing at all prunes nothing.
    fn removed(
        &self,
        listed: &[String],
        owns: &(dyn Fn(&str) -> bool + Sync),
        out: &mut RuleScope,
    ) {
        let listed: HashSet<String> = listed.iter().map(|t| self.key(t)).collect();
        let ours: BTreeMap<String, String> = self
            .owned_repos()
            .into_iter()
            .filter(|(repo, _)| !listed.contains(repo))
            .collect();
        if ours.is_empty() {
            return;
        }
        if listed.is_empty() {
            out.refused.push(format!(
                "{}: the source catalog lists no repositories, but ferry copied into {} there; an outage looks like this, so nothing is pruned",
                self.rule,
                ours.len()
            ));
            out.scopes.clear();
            return;
        }
        for (repo, source) in ours {
            if owns(&source) {
                out.scopes
                    .push(self.scope(&repo, &source, SourceTags::Gone));
            }
        }
    }

    /// Target repositories the checkpoint says this rule copied into, with their source:
    /// the rule maps the recorded source repository to that very target.
    fn owned_repos(&self) -> BTreeSet<(String, String)> {
        let prefix = match self.source.as_str() {
            "oci:" => "oci:".to_string(),
            host => format!("{host}/"),
        };
        let mut out = BTreeSet::new();
        for ((registry, repo), refs) in &self.ledger.copied {
            if *registry != self.target {
                continue;
            }
            let sources: BTreeSet<&String> = refs.values().map(|c| &c.source).collect();
            for source in sources {
                let Some(source_repo) = source.strip_prefix(&prefix) else {
                    continue;
                };
                if self
                    .maps(source_repo)
                    .is_some_and(|t| self.key(&t) == *repo)
                {
                    out.insert((repo.clone(), source.clone()));
                }
            }
        }
        out
    }

    /// Where this rule copies source repository `repo`, if it covers it.
    fn maps(&self, repo: &str) -> Option<String> {
        match self.rule.from.selector {
            Selector::Wildcard => wildcard_target(self.rule, repo).ok(),
            _ => (repo == self.rule.from.repository).then(|| self.rule.to.repository.clone()),
        }
    }
}

/// The plan's rules prune only where they can: every target kind ferry writes.
pub fn any(plan: &Plan) -> bool {
    !plan.prunes.is_empty()
}
