//! Finding what refers to the images a rule selects, recursively (a signature of an SBOM of a
//! child): cosign-style tags, the registry's referrers API, and the `sha256-<hex>` fallback
//! index where it has none. Each find names the item it follows ([`super::super::After`]).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::{StreamExt, TryStreamExt};

use super::budget::LIST_CONCURRENCY;
use crate::copy::copy_rule::CopyRule;
use crate::reference::names::NameError;
use crate::reference::Digest;
use crate::registry::manifest::{self, referrer_tag_subject, Parsed};
use crate::registry::referrer_lists;
use crate::registry::{Manifest, Registry, RegistryError};

/// The item a found referrer follows: a selected root (by its source reference), or another
/// referrer (a signature of an SBOM).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Origin {
    Root(String),
    Tag(String),
    Digest(Digest),
}

/// A referrer found for a selected image.
#[derive(Debug)]
pub(super) struct Referral {
    /// A cosign-style tag (`sha256-<hex>.sig/.att/.sbom/…`), copied under its name; or a
    /// manifest found by the referrers API or a fallback index, copied by digest with the
    /// subject it names (whose fallback tag the target may need).
    pub(super) what: Referred,
    /// The digest it refers to.
    pub(super) subject: Digest,
    /// The item that carries that digest.
    pub(super) origin: Origin,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Referred {
    Tag(String),
    Digest(Digest),
}

/// What travels with the selected images of one source repository, in the order it was
/// found: everything a referrer follows comes before it.
#[derive(Debug, Default)]
pub(super) struct Found {
    pub(super) referrals: Vec<Referral>,
    /// Entries of referrers lists whose digests ferry cannot verify, with their subject.
    pub(super) refused: Vec<(Digest, NameError)>,
    /// The digest each tag read on the way pointed at (selected tags, referrer tags), so the
    /// copy need not ask again.
    pub(super) seen: HashMap<String, Digest>,
    /// The manifests of the tags read whole (see [`Reads`]), so the copy need not read them.
    pub(super) read: HashMap<String, Manifest>,
}

/// Which tags discovery reads whole (one GET) instead of asking their digest (one HEAD): the
/// tags a cold copy would GET anyway, while their bodies fit in `budget` (bytes still free
/// for the whole selection). Nowhere pulls are counted: there a HEAD saves one.
pub(super) struct Reads<'a> {
    pub(super) cold: &'a (dyn Fn(&str) -> bool + Sync),
    pub(super) budget: &'a AtomicUsize,
}

impl Reads<'_> {
    /// Take `len` bytes from the budget; `false` (nothing taken) when it has not that much.
    fn take(&self, len: usize) -> bool {
        self.budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |free| {
                free.checked_sub(len)
            })
            .is_ok()
    }
}

/// A manifest whose referrers are looked for.
struct Node {
    digest: Digest,
    media_type: Option<String>,
    /// Its body, when it was read whole on the way.
    body: Option<Manifest>,
    /// A selected image (or a child of one): its index children are subjects too.
    image: bool,
    /// The item that carries this manifest.
    origin: Origin,
}

/// Find what refers to the `roots` (tags or digests selected in `repo`): cosign-style tags in
/// `all`, the registry's referrers API, the fallback index where it has no API. `known` gives
/// the digests of roots the checkpoint already knows; `reads` which tags to read whole. Costs
/// no request when the repository has no referrer tags and the registry no referrers API.
pub(super) async fn discover(
    src: &dyn Registry,
    repo: &str,
    all: &[String],
    roots: &[String],
    known: &HashMap<String, Digest>,
    rule: &CopyRule,
    reads: &Reads<'_>,
) -> Result<Found, RegistryError> {
    // Looked up, not searched: a repository of 10,000 tags would otherwise compare each tag
    // with every root (10^8 comparisons), the no-op's largest cost after its HEADs.
    let root_set: HashSet<&str> = roots.iter().map(String::as_str).collect();
    let mut suffixed: HashMap<Digest, Vec<&String>> = HashMap::new();
    for (tag, subject) in all
        .iter()
        .filter_map(|t| referrer_tag_subject(t).map(|d| (t, d)))
        .filter(|(t, _)| !manifest::is_fallback_tag(t) && !root_set.contains(t.as_str()))
    {
        suffixed.entry(subject).or_default().push(tag);
    }
    let fallback: HashMap<Digest, &String> = all
        .iter()
        .filter(|t| manifest::is_fallback_tag(t))
        .filter_map(|t| referrer_tag_subject(t).map(|d| (d, t)))
        .collect();
    let api = src.supports_referrers(repo).await?;
    if !api && suffixed.is_empty() && fallback.is_empty() {
        return Ok(Found::default());
    }
    let mut walk = Discovery {
        src,
        repo,
        rule,
        api,
        reads,
        candidates: suffixed.keys().chain(fallback.keys()).cloned().collect(),
        suffixed,
        fallback,
        seen: HashSet::new(),
        found_digests: HashSet::new(),
        found_tags: HashSet::new(),
        tags: Vec::new(),
        nodes: Vec::new(),
        found: Found::default(),
    };
    for r in roots {
        match Digest::parse(r).or_else(|| known.get(r).cloned()) {
            Some(digest) => walk.nodes.push(Node {
                digest,
                media_type: None,
                body: None,
                image: true,
                origin: Origin::Root(r.clone()),
            }),
            None => walk.tags.push((r.clone(), true, Origin::Root(r.clone()))),
        }
    }
    while !walk.tags.is_empty() || !walk.nodes.is_empty() {
        walk.round().await?;
    }
    Ok(walk.found)
}

/// The state of one repository's walk through what refers to what.
struct Discovery<'a> {
    src: &'a dyn Registry,
    repo: &'a str,
    rule: &'a CopyRule,
    api: bool,
    reads: &'a Reads<'a>,
    /// Cosign-style referrer tags, by the digest they name (each digest's in listing order).
    suffixed: HashMap<Digest, Vec<&'a String>>,
    /// Fallback-index tags, by the digest they list referrers of.
    fallback: HashMap<Digest, &'a String>,
    /// Digests some referrer tag names.
    candidates: HashSet<Digest>,
    seen: HashSet<Digest>,
    found_digests: HashSet<Digest>,
    found_tags: HashSet<String>,
    /// Tags whose digests are still to be read, and manifests to look at.
    tags: Vec<(String, bool, Origin)>,
    nodes: Vec<Node>,
    found: Found,
}

impl Discovery<'_> {
    /// Read the digests of the tags in hand, look at every manifest not seen yet, and take in
    /// what they lead to.
    async fn round(&mut self) -> Result<(), RegistryError> {
        let (src, repo) = (self.src, self.repo);
        let whole = !src.capabilities().counts_pulls;
        let reads = self.reads;
        let nodes: Vec<(bool, Origin, Option<Node>)> =
            futures::stream::iter(std::mem::take(&mut self.tags))
                .map(|(tag, image, origin)| async move {
                    let node = match whole && (reads.cold)(&tag) {
                        true => read_whole(src, repo, &tag, reads).await?,
                        false => src.head_manifest(repo, &tag).await?.map(|h| Node {
                            digest: h.digest,
                            media_type: h.media_type,
                            body: None,
                            image,
                            origin: origin.clone(),
                        }),
                    };
                    Ok::<_, RegistryError>((image, origin, node))
                })
                .buffered(LIST_CONCURRENCY)
                .try_collect()
                .await?;
        for (image, origin, node) in nodes {
            let Some(mut node) = node else { continue };
            if let Origin::Root(tag) | Origin::Tag(tag) = &origin {
                self.found.seen.insert(tag.clone(), node.digest.clone());
                if let Some(body) = &node.body {
                    self.found.read.insert(tag.clone(), body.clone());
                }
            }
            node.image = image;
            node.origin = origin;
            self.nodes.push(node);
        }
        let seen = &mut self.seen;
        let batch: Vec<Node> = std::mem::take(&mut self.nodes)
            .into_iter()
            .filter(|n| seen.insert(n.digest.clone()))
            .collect();
        // Without an API, an index is read only when some referrer tag names a digest that
        // is not one of the images already known: a child's, then.
        let unmatched = self.candidates.iter().any(|d| !self.seen.contains(d));
        let (api, fallback, rule) = (self.api, &self.fallback, self.rule);
        let visits: Vec<Visit> = futures::stream::iter(batch)
            .map(|node| visit(src, repo, node, api, unmatched, fallback, rule))
            .buffered(LIST_CONCURRENCY)
            .try_collect()
            .await?;
        for v in visits {
            self.absorb(v).await?;
        }
        Ok(())
    }

    /// Take in what one manifest led to: its children to look at, its referrers (by digest,
    /// then looked at in turn) and the referrer tags that name it.
    async fn absorb(&mut self, v: Visit) -> Result<(), RegistryError> {
        self.nodes.extend(v.children);
        self.found.refused.extend(v.refused);
        for (digest, subject) in v.referrers {
            if self.found_digests.insert(digest.clone()) {
                self.nodes.push(Node {
                    digest: digest.clone(),
                    media_type: None,
                    body: None,
                    image: false,
                    origin: Origin::Digest(digest.clone()),
                });
                self.found.referrals.push(Referral {
                    what: Referred::Digest(digest),
                    subject,
                    origin: v.origin.clone(),
                });
            }
        }
        for subject in v.subjects {
            let named: Vec<String> = (self.suffixed.get(&subject).into_iter().flatten())
                .filter(|t| !self.found_tags.contains(**t))
                .map(|t| (*t).clone())
                .collect();
            for tag in named {
                if !self.admitted(&tag).await? {
                    continue;
                }
                self.found_tags.insert(tag.clone());
                self.found.referrals.push(Referral {
                    what: Referred::Tag(tag.clone()),
                    subject: subject.clone(),
                    origin: v.origin.clone(),
                });
                self.tags.push((tag.clone(), false, Origin::Tag(tag)));
            }
        }
        Ok(())
    }

    /// Does the rule's `artifact_types` admit this referrer tag (one read when it filters)?
    async fn admitted(&self, tag: &str) -> Result<bool, RegistryError> {
        let policy = &self.rule.referrers;
        if !policy.filters() {
            return Ok(true);
        }
        let m = self.src.get_manifest(self.repo, tag).await?;
        Ok(policy.admits(&manifest::artifact_kinds(&m.bytes)))
    }
}

/// One GET of `tag`: the node of its manifest, body kept while the budget lasts (`None`
/// when the tag is gone, as a HEAD would tell).
async fn read_whole(
    src: &dyn Registry,
    repo: &str,
    tag: &str,
    reads: &Reads<'_>,
) -> Result<Option<Node>, RegistryError> {
    let m = match src.get_manifest(repo, tag).await {
        Ok(m) => m,
        Err(RegistryError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let digest = m.digest.clone();
    let media_type = Some(m.media_type.clone());
    let body = reads.take(m.bytes.len()).then_some(m);
    Ok(Some(Node {
        digest,
        media_type,
        body,
        image: false,
        origin: Origin::Tag(tag.to_string()),
    }))
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
        let m = match node.body {
            Some(m) => m,
            None => src.get_manifest(repo, node.digest.as_str()).await?,
        };
        if let Ok(Parsed::Index { children }) = manifest::parse(&m.media_type, &m.bytes) {
            let kept = crate::copy::platform::wanted_children(&children, rule.platforms.as_deref());
            out.children = kept
                .into_iter()
                .map(|c| Node {
                    digest: c.digest.clone(),
                    media_type: Some(c.media_type.clone()),
                    body: None,
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
            let entries = referrer_lists::fallback_entries(&index.bytes).map_err(|reason| {
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
