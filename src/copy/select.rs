//! Turn the plan's `[[copy]]` rules into concrete items: expand wildcards through the
//! registry's catalog, list tags, apply the tag filters, map source repositories to targets.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};

use super::{After, Endpoint, Item, ItemKey, Journal};
use crate::plan::conflicts::writes_into;
use crate::plan::{CopyRule, Location, Reference, Selector};
use crate::reference::names;
use crate::registry::manifest::{self, referrer_tag_subject, Parsed};
use crate::registry::{layout, Digest, NameError, Registry, RegistryError};

/// The item a found referrer follows: a selected root (by its source reference), or another
/// referrer (a signature of an SBOM).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Origin {
    Root(String),
    Tag(String),
    Digest(Digest),
}

/// A referrer found for a selected image.
#[derive(Debug)]
struct Referral {
    /// A cosign-style tag (`sha256-<hex>.sig/.att/.sbom/…`), copied under its name; or a
    /// manifest found by the referrers API or a fallback index, copied by digest with the
    /// subject it names (whose fallback tag the target may need).
    what: Referred,
    /// The digest it refers to.
    subject: Digest,
    /// The item that carries that digest.
    origin: Origin,
}

#[derive(Debug, PartialEq, Eq)]
enum Referred {
    Tag(String),
    Digest(Digest),
}

/// What travels with the selected images of one source repository, in the order it was
/// found: everything a referrer follows comes before it.
#[derive(Debug, Default)]
struct Found {
    referrals: Vec<Referral>,
    /// Entries of referrers lists whose digests ferry cannot verify, with their subject.
    refused: Vec<(Digest, NameError)>,
}

/// A manifest whose referrers are looked for.
struct Node {
    digest: Digest,
    media_type: Option<String>,
    /// A selected image (or a child of one): its index children are subjects too.
    image: bool,
    /// The item that carries this manifest.
    origin: Origin,
}

/// Find what refers to the `roots` (tags or digests selected in `repo`), recursively (a
/// signature of an SBOM of a child): cosign-style tags in `all`, the registry's referrers API,
/// and the `sha256-<hex>` fallback index where the registry has no API. Costs no request when
/// the repository has no referrer tags and the registry no referrers API.
async fn discover(
    src: &dyn Registry,
    repo: &str,
    all: &[String],
    roots: &[String],
    known: &HashMap<String, Digest>,
    rule: &CopyRule,
) -> Result<Found, RegistryError> {
    let policy = &rule.referrers;
    let suffixed: Vec<(&String, Digest)> = all
        .iter()
        .filter(|t| !manifest::is_fallback_tag(t) && !roots.contains(t))
        .filter_map(|t| referrer_tag_subject(t).map(|d| (t, d)))
        .collect();
    let fallback: HashMap<Digest, &String> = all
        .iter()
        .filter(|t| manifest::is_fallback_tag(t))
        .filter_map(|t| referrer_tag_subject(t).map(|d| (d, t)))
        .collect();
    let api = src.supports_referrers(repo).await?;
    let mut found = Found::default();
    if !api && suffixed.is_empty() && fallback.is_empty() {
        return Ok(found);
    }
    let candidates: HashSet<&Digest> = suffixed
        .iter()
        .map(|(_, d)| d)
        .chain(fallback.keys())
        .collect();
    let mut seen: HashSet<Digest> = HashSet::new();
    let mut found_digests: HashSet<Digest> = HashSet::new();
    let mut found_tags: HashSet<String> = HashSet::new();
    // Tags whose digests are still to be read, and manifests to look at.
    let mut tags: Vec<(String, bool, Origin)> = Vec::new();
    let mut nodes: Vec<Node> = Vec::new();
    for r in roots {
        match Digest::parse(r).or_else(|| known.get(r).cloned()) {
            Some(digest) => nodes.push(Node {
                digest,
                media_type: None,
                image: true,
                origin: Origin::Root(r.clone()),
            }),
            None => tags.push((r.clone(), true, Origin::Root(r.clone()))),
        }
    }
    while !tags.is_empty() || !nodes.is_empty() {
        let heads: Vec<(bool, Origin, Option<crate::registry::ManifestHead>)> =
            futures::stream::iter(std::mem::take(&mut tags))
                .map(|(tag, image, origin)| async move {
                    src.head_manifest(repo, &tag)
                        .await
                        .map(|h| (image, origin, h))
                })
                .buffered(LIST_CONCURRENCY)
                .try_collect()
                .await?;
        nodes.extend(heads.into_iter().filter_map(|(image, origin, h)| {
            h.map(|h| Node {
                digest: h.digest,
                media_type: h.media_type,
                image,
                origin,
            })
        }));
        let batch: Vec<Node> = std::mem::take(&mut nodes)
            .into_iter()
            .filter(|n| seen.insert(n.digest.clone()))
            .collect();
        // Without an API, an index is read only when some referrer tag names a digest that
        // is not one of the images already known: a child's, then.
        let unmatched = candidates.iter().any(|d| !seen.contains(*d));
        let visits: Vec<Visit> = futures::stream::iter(batch)
            .map(|node| visit(src, repo, node, api, unmatched, &fallback, rule))
            .buffered(LIST_CONCURRENCY)
            .try_collect()
            .await?;
        for v in visits {
            nodes.extend(v.children);
            found.refused.extend(v.refused);
            for (digest, subject) in v.referrers {
                if found_digests.insert(digest.clone()) {
                    nodes.push(Node {
                        digest: digest.clone(),
                        media_type: None,
                        image: false,
                        origin: Origin::Digest(digest.clone()),
                    });
                    found.referrals.push(Referral {
                        what: Referred::Digest(digest),
                        subject,
                        origin: v.origin.clone(),
                    });
                }
            }
            for subject in v.subjects {
                for (tag, _) in suffixed.iter().filter(|(_, d)| *d == subject) {
                    if found_tags.contains(*tag) {
                        continue;
                    }
                    if policy.filters() {
                        let m = src.get_manifest(repo, tag).await?;
                        if !policy.admits(&manifest::artifact_kinds(&m.bytes)) {
                            continue;
                        }
                    }
                    found_tags.insert((*tag).clone());
                    found.referrals.push(Referral {
                        what: Referred::Tag((*tag).clone()),
                        subject: subject.clone(),
                        origin: v.origin.clone(),
                    });
                    tags.push(((*tag).clone(), false, Origin::Tag((*tag).clone())));
                }
            }
        }
    }
    Ok(found)
}

/// What looking at one manifest found.
struct Visit {
    /// The item that carries the manifest looked at.
    origin: Origin,
    /// Digests whose referrers were looked for (the manifest, children of an index).
    subjects: Vec<Digest>,
    /// Index children to look at in turn (nested indexes).
    children: Vec<Node>,
    /// (referrer, its subject).
    referrers: Vec<(Digest, Digest)>,
    /// (subject, the entry of its referrers list that names no verifiable digest).
    refused: Vec<(Digest, NameError)>,
}

async fn visit(
    src: &dyn Registry,
    repo: &str,
    node: Node,
    api: bool,
    read_indexes: bool,
    fallback: &HashMap<Digest, &String>,
    rule: &CopyRule,
) -> Result<Visit, RegistryError> {
    let mut out = Visit {
        origin: node.origin.clone(),
        subjects: Vec::new(),
        children: Vec::new(),
        referrers: Vec::new(),
        refused: Vec::new(),
    };
    // The index itself is a subject even when `platform_mode = "rewrite"` gives the target a
    // new one: its referrers become items the engine does not copy, saying why, so that the
    // plan and the run show it the same way.
    let subjects = vec![node.digest.clone()];
    let maybe_index = node.media_type.as_deref().is_none_or(manifest::is_index);
    if node.image && maybe_index && (api || read_indexes) {
        let m = src.get_manifest(repo, node.digest.as_str()).await?;
        if let Ok(Parsed::Index { children }) = manifest::parse(&m.media_type, &m.bytes) {
            let kept = super::platform::wanted_children(&children, rule.platforms.as_deref());
            out.children = kept
                .into_iter()
                .map(|c| Node {
                    digest: c.digest.clone(),
                    media_type: Some(c.media_type.clone()),
                    image: true,
                    origin: node.origin.clone(),
                })
                .collect();
        }
    }
    for subject in &subjects {
        let mut listed = Vec::new();
        if api {
            if let Some(r) = src
                .referrers(repo, subject, rule.referrers.api_filter())
                .await?
            {
                listed.extend(r.found);
                out.refused
                    .extend(r.refused.into_iter().map(|e| (subject.clone(), e)));
            }
        }
        if let Some(tag) = fallback.get(subject) {
            let index = src.get_manifest(repo, tag).await?;
            let entries = manifest::fallback_entries(&index.bytes).map_err(|reason| {
                RegistryError::InvalidManifest {
                    url: format!(
                        "{}:{tag}",
                        crate::reference::display_repo(&rule.from.location, repo)
                    ),
                    reason,
                }
            })?;
            listed.extend(entries.found);
            out.refused
                .extend(entries.refused.into_iter().map(|e| (subject.clone(), e)));
        }
        for r in listed {
            let kinds: Vec<&str> = r.artifact_type.as_deref().into_iter().collect();
            if rule.referrers.admits(&kinds) {
                out.referrers.push((r.digest, subject.clone()));
            }
        }
    }
    out.subjects = subjects;
    Ok(out)
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
}

fn registry(registries: &Registries, r: &Reference) -> Arc<dyn Registry> {
    registries
        .get(&r.location)
        .cloned()
        .expect("the app builds a registry for every location in the plan")
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

/// Resolve every rule. `journal` tells the digests of immutable tags an earlier run finished,
/// so finding their referrers costs no HEAD.
pub async fn resolve(
    rules: &[&CopyRule],
    registries: &Registries,
    journal: &dyn Journal,
) -> Selection {
    let mut selection = Selection::default();
    for rule in rules {
        resolve_rule(rule, registries, journal, &mut selection).await;
    }
    selection
}

/// Who writes each target tag (or digest) in a run, across its stages: the first item to
/// claim a key writes it. A later item writing the same thing there (the same source and
/// platforms, or the same digest) is a duplicate and is dropped; a later item writing
/// something else there is a [`Conflict`]: two rules would fight over one tag every run.
#[derive(Default)]
pub struct Claims {
    by_key: HashMap<ItemKey, (usize, String)>,
}

/// An item that would write a target another rule's item already writes from elsewhere.
#[derive(Debug)]
pub struct Conflict {
    pub item: Item,
    /// The `[[copy]]` rule whose item writes the target (it runs first, so it wins).
    pub winner_rule: usize,
    /// What that item writes there.
    pub winner_source: String,
    /// What this one would write there (its source, and platforms where it has a list).
    pub source: String,
}

/// What an item writes, for telling a duplicate from a conflict.
fn source_identity(item: &Item) -> String {
    if item.target_tag.is_none() && item.platforms.is_none() {
        // By digest, untagged: the digest is the content, wherever it is read from.
        return item.source_ref.clone();
    }
    match &item.platforms {
        None => item.source_display(),
        Some(p) => format!("{} (platforms {p})", item.source_display()),
    }
}

impl Claims {
    /// The rule whose item claimed `key`.
    pub fn owner(&self, key: &ItemKey) -> Option<usize> {
        self.by_key.get(key).map(|(rule, _)| *rule)
    }

    /// Split `items` into those to copy, duplicates of earlier ones (dropped), conflicts,
    /// and the referrers of conflicting items (not copied either: what they refer to is not).
    pub fn claim(&mut self, items: Vec<Item>) -> Claimed {
        let mut out = Claimed::default();
        // (rule, key) of items not copied, whose referrers follow them.
        let mut lost: HashSet<(usize, ItemKey)> = HashSet::new();
        for item in items {
            if let Some(after) = &item.after {
                if lost.contains(&(item.rule, after.parent.clone())) {
                    lost.insert((item.rule, item.key()));
                    out.orphans.push(item);
                    continue;
                }
            }
            let identity = source_identity(&item);
            match self.by_key.get(&item.key()) {
                None => {
                    self.by_key.insert(item.key(), (item.rule, identity));
                    out.items.push(item);
                }
                Some((_, earlier)) if *earlier == identity => out.duplicates.push(item),
                Some((rule, earlier)) => {
                    lost.insert((item.rule, item.key()));
                    out.conflicts.push(Conflict {
                        winner_rule: *rule,
                        winner_source: earlier.clone(),
                        source: identity,
                        item,
                    })
                }
            }
        }
        out
    }
}

/// What [`Claims::claim`] made of a stage's items.
#[derive(Debug, Default)]
pub struct Claimed {
    /// To copy.
    pub items: Vec<Item>,
    /// The same thing another item already writes there: dropped.
    pub duplicates: Vec<Item>,
    pub conflicts: Vec<Conflict>,
    /// Referrers of a conflicting item (or of such a referrer).
    pub orphans: Vec<Item>,
}

async fn resolve_rule(
    rule: &CopyRule,
    registries: &Registries,
    journal: &dyn Journal,
    out: &mut Selection,
) {
    let src = registry(registries, &rule.from);
    let dst = registry(registries, &rule.to);
    let label = rule.to_string();
    let target_tag = match &rule.to.selector {
        Selector::Tag(t) => Some(t.clone()),
        _ => None,
    };
    let from_repo = &rule.from.repository;
    let selection = |repo: &'_ str, target_repo: &'_ str| RepoSelection {
        rule,
        journal,
        src: &src,
        dst: &dst,
        repo: repo.to_string(),
        target_repo: target_repo.to_string(),
    };
    match &rule.from.selector {
        Selector::Tag(_) | Selector::Digest(_) => {
            let root = match &rule.from.selector {
                Selector::Tag(tag) => (tag.clone(), Some(target_tag.unwrap_or(tag.clone()))),
                Selector::Digest(d) => (d.clone(), target_tag),
                _ => unreachable!("matched above"),
            };
            // The repository's tags tell where its referrer tags are.
            let all = if rule.referrers.enabled() {
                let what = format!("skipped a tag of {}", rule.from.repo_display());
                (src.list_tags(from_repo).await)
                    .map(|tags| sort_out(tags, names::tag, rule, &what, &mut out.errors))
            } else {
                Ok(Vec::new())
            };
            selection(from_repo, &rule.to.repository)
                .add(all, vec![root], out)
                .await;
        }
        Selector::AllTags => match src.list_tags(from_repo).await {
            Ok(tags) => {
                let what = format!("skipped a tag of {}", rule.from.repo_display());
                let tags = sort_out(tags, names::tag, rule, &what, &mut out.errors);
                let roots = select_tags(rule, &tags);
                selection(from_repo, &rule.to.repository)
                    .add(Ok(tags), roots, out)
                    .await;
            }
            Err(e) => out.errors.push(SelectError {
                rule: label,
                what: format!("listing the tags of {}", rule.from.repo_display()),
                source: e,
            }),
        },
        Selector::Wildcard => {
            let repos = match src.list_repositories(from_repo).await {
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
            // Repositories are listed, and their referrers found, several at a time; their
            // items keep the catalog's order.
            let parts: Vec<Selection> = futures::stream::iter(repos)
                .map(|repo| {
                    let (selection, label, src) = (&selection, &label, &src);
                    async move {
                        let mut part = Selection::default();
                        let target_repo = match wildcard_target(rule, &repo) {
                            Ok(t) => t,
                            Err(e) => {
                                part.errors.push(SelectError {
                                    rule: label.clone(),
                                    what: format!(
                                        "skipped a repository listed under {}",
                                        rule.from
                                    ),
                                    source: e,
                                });
                                return part;
                            }
                        };
                        match src.list_tags(&repo).await {
                            Ok(tags) => {
                                let what = format!(
                                    "skipped a tag of {}",
                                    crate::reference::display_repo(&rule.from.location, &repo)
                                );
                                let tags =
                                    sort_out(tags, names::tag, rule, &what, &mut part.errors);
                                let roots = select_tags(rule, &tags);
                                selection(&repo, &target_repo)
                                    .add(Ok(tags), roots, &mut part)
                                    .await;
                            }
                            Err(e) => part.errors.push(SelectError {
                                rule: label.clone(),
                                what: format!(
                                    "listing the tags of {}",
                                    crate::reference::display_repo(&rule.from.location, &repo)
                                ),
                                source: e,
                            }),
                        }
                        part
                    }
                })
                .buffered(LIST_CONCURRENCY)
                .collect()
                .await;
            for part in parts {
                out.items.extend(part.items);
                out.errors.extend(part.errors);
            }
        }
    }
}

/// The tags a rule's filters select, referrer tags left out: they travel with the image they
/// name (or not at all, with `referrers = false`).
fn select_tags(rule: &CopyRule, tags: &[String]) -> Vec<(String, Option<String>)> {
    let plain: Vec<String> = tags
        .iter()
        .filter(|t| referrer_tag_subject(t).is_none())
        .cloned()
        .collect();
    rule.tags
        .select(&plain)
        .into_iter()
        .map(|t| (t.clone(), Some(t)))
        .collect()
}

/// One source repository of a rule and where it goes.
struct RepoSelection<'a> {
    rule: &'a CopyRule,
    journal: &'a dyn Journal,
    src: &'a Arc<dyn Registry>,
    dst: &'a Arc<dyn Registry>,
    repo: String,
    target_repo: String,
}

impl RepoSelection<'_> {
    fn item(&self, source_ref: String, target_tag: Option<String>) -> Item {
        Item {
            source: Endpoint {
                registry: self.src.clone(),
                repo: self.repo.clone(),
            },
            source_ref,
            target: Endpoint {
                registry: self.dst.clone(),
                repo: self.target_repo.clone(),
            },
            target_tag,
            subject: None,
            platforms: None,
            rule: self.rule.number,
            after: None,
        }
    }

    /// Items for `roots` (source reference, target tag), and for what refers to them.
    async fn add(
        &self,
        all: Result<Vec<String>, RegistryError>,
        roots: Vec<(String, Option<String>)>,
        out: &mut Selection,
    ) {
        let refs: Vec<String> = roots.iter().map(|(r, _)| r.clone()).collect();
        let mut known: HashMap<String, Digest> = HashMap::new();
        let mut root_keys: HashMap<String, ItemKey> = HashMap::new();
        for (source_ref, target_tag) in roots {
            let mut item = self.item(source_ref, target_tag);
            item.platforms = self.rule.platforms.clone();
            // What the engine will trust without a request needs none here either.
            // An immutable tag recorded done cannot have moved at the source (only the target
            // is checked again once the record is old): its digest needs no HEAD here.
            if self.journal.immutable(&item) {
                if let Some(r) = self.journal.recorded(&item) {
                    known.insert(item.source_ref.clone(), r.digest);
                }
            }
            root_keys.insert(item.source_ref.clone(), item.key());
            out.items.push(item);
        }
        if !self.rule.referrers.enabled() {
            return;
        }
        let found = match all {
            Ok(all) => {
                discover(
                    self.src.as_ref(),
                    &self.repo,
                    &all,
                    &refs,
                    &known,
                    self.rule,
                )
                .await
            }
            Err(e) => Err(e),
        };
        match found {
            Ok(found) => {
                for r in found.referrals {
                    let parent = match r.origin {
                        Origin::Root(source_ref) => root_keys[&source_ref].clone(),
                        Origin::Tag(tag) => self.item(tag.clone(), Some(tag)).key(),
                        Origin::Digest(d) => self.item(d.to_string(), None).key(),
                    };
                    let mut item = match r.what {
                        Referred::Tag(tag) => self.item(tag.clone(), Some(tag)),
                        Referred::Digest(digest) => {
                            let mut item = self.item(digest.to_string(), None);
                            item.subject = Some(r.subject.clone());
                            item
                        }
                    };
                    item.after = Some(After {
                        parent,
                        subject: r.subject,
                    });
                    out.items.push(item);
                }
                out.errors
                    .extend(found.refused.into_iter().map(|(subject, e)| SelectError {
                        rule: self.rule.to_string(),
                        what: format!(
                            "skipped a referrer of {}@{subject}",
                            crate::reference::display_repo(&self.rule.from.location, &self.repo)
                        ),
                        source: e.into(),
                    }));
            }
            Err(e) => out.errors.push(SelectError {
                rule: self.rule.to_string(),
                what: format!(
                    "finding the signatures and other referrers of what it selects in {}",
                    crate::reference::display_repo(&self.rule.from.location, &self.repo)
                ),
                source: e,
            }),
        }
    }
}

/// The names of a registry's listing that pass `check`; each other one becomes an error of
/// the rule (`what` happened, and the name, escaped), and costs only itself.
fn sort_out(
    listed: Vec<String>,
    check: fn(&str) -> Result<(), NameError>,
    rule: &CopyRule,
    what: &str,
    errors: &mut Vec<SelectError>,
) -> Vec<String> {
    let (good, bad) = names::sort_out(listed, check);
    errors.extend(bad.into_iter().map(|e| SelectError {
        rule: rule.to_string(),
        what: what.to_string(),
        source: e.into(),
    }));
    good
}

/// Where a repository a wildcard found goes: its path below the source prefix, below the
/// target prefix. The name came from a registry's catalog (or a layout walk), so it must be a
/// valid name under the prefix, and the target must stay under the prefix the plan named.
fn wildcard_target(rule: &CopyRule, repo: &str) -> Result<String, RegistryError> {
    if let Location::Registry(_) = rule.from.location {
        names::repository(repo)?;
    }
    let suffix = repo
        .strip_prefix(rule.from.repository.as_str())
        .ok_or_else(|| RegistryError::Protocol {
            url: rule.from.to_string(),
            reason: format!("listed {}, which is not under it", names::shown(repo)),
        })?;
    match rule.to.location {
        Location::Registry(_) => {
            let target = format!("{}{suffix}", rule.to.repository);
            names::repository(&target)?;
            Ok(target)
        }
        Location::Layout => layout::join_under(&rule.to.repository, suffix),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::TagFilter;

    fn item(source: &str, reference: &str, target_tag: Option<&str>, rule: usize) -> Item {
        let layouts: Arc<dyn Registry> = Arc::new(crate::registry::layout::LayoutRegistry::new());
        Item {
            source: Endpoint {
                registry: layouts.clone(),
                repo: source.into(),
            },
            source_ref: reference.into(),
            target: Endpoint {
                registry: layouts,
                repo: "dst".into(),
            },
            target_tag: target_tag.map(str::to_string),
            subject: None,
            platforms: None,
            rule,
            after: None,
        }
    }

    #[test]
    fn the_first_writer_of_a_tag_keeps_it_and_what_hangs_off_a_loser_goes_with_it() {
        let mut claims = Claims::default();
        let first = claims.claim(vec![item("a", "1.0", Some("1.0"), 1)]);
        assert_eq!(first.items.len(), 1);
        // Across stages: the same source again is a duplicate; another source a conflict,
        // and the signature that follows the loser is not copied either.
        let mut sig = item("b", "sha256-x.sig", Some("sha256-x.sig"), 2);
        sig.after = Some(After {
            parent: item("b", "1.0", Some("1.0"), 2).key(),
            subject: Digest::sha256_of(b"b"),
        });
        let mut amd64 = item("a", "1.0", Some("1.0"), 3);
        amd64.platforms = Some(Arc::new(crate::plan::Platforms {
            wanted: vec![crate::plan::Platform::parse("linux/amd64").unwrap()],
            mode: crate::plan::PlatformMode::Rewrite,
        }));
        let second = claims.claim(vec![
            item("a", "1.0", Some("1.0"), 2),
            item("b", "1.0", Some("1.0"), 2),
            sig,
            amd64,
            // By digest, untagged: the digest is the content, whichever repository has it.
            item("a", "sha256:1", None, 2),
            item("b", "sha256:1", None, 2),
        ]);
        assert_eq!(second.duplicates.len(), 2, "{second:?}");
        assert_eq!(second.conflicts.len(), 2, "{second:?}");
        assert!(second.conflicts.iter().all(|c| c.winner_rule == 1));
        assert_eq!(
            second.conflicts[1].source,
            "oci:a:1.0 (platforms linux/amd64 (rewrite))"
        );
        assert_eq!(second.orphans.len(), 1);
        assert_eq!(second.items.len(), 1, "the first digest item");
    }

    fn rule(from: &str, to: &str) -> CopyRule {
        CopyRule {
            number: 0,
            line: 0,
            column: 0,
            from: Reference::parse(from).unwrap(),
            to: Reference::parse(to).unwrap(),
            tags: TagFilter::default(),
            referrers: Default::default(),
            platforms: None,
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
