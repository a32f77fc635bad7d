//! The look again right before each deletion. The inventory is minutes old when retention
//! deletes, and another writer may have tagged a doomed image since: a promotion by
//! re-tagging, a hotfix pinned to an older build, an index pushed over a child. Deleting by
//! digest would take that new tag with it.
//!
//! Before each DELETE, [`Recheck::look`] lists the repository's tags (a listing younger than
//! [`LISTING_REUSE`] is reused, so a repository is listed at most once a second) and HEADs
//! every tag the listing shows that the inventory did not have, or had on another manifest
//! (the doomed manifest's own tags are not asked: deleting it takes them, as decided). A tag
//! that now reaches the doomed digest, directly or through an index that names it as a
//! child, keeps it. An index is read once, by digest (content never changes under a digest);
//! manifests the inventory read are not read again. The look sends reads only; `apply`
//! takes the DELETE's turn in the rate budget before it, so the look and the DELETE go
//! back to back ([`crate::registry::transport::throttle::Turns`]).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};

use super::decisions::Image;
use crate::reference::names;
use crate::reference::Digest;
use crate::registry::manifest::{self, Parsed, MAX_INDEX_DEPTH};
use crate::registry::{ManifestHead, Registry, RegistryError};

/// A listing of a repository's tags younger than this serves the next look too.
pub const LISTING_REUSE: Duration = Duration::from_secs(1);

/// Tags HEADed at once by one look (as many as the inventory reads at once).
const HEAD_CONCURRENCY: usize = 8;

/// A tag that reaches a doomed digest now, and the index it reaches it through (`None`:
/// the tag points at the digest itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reach {
    pub tag: String,
    pub through: Option<Digest>,
}

impl Reach {
    /// `tagged since the inventory (hotfix)`, or `(hotfix, through index sha256:…)`.
    pub fn why(&self) -> String {
        match &self.through {
            None => format!("tagged since the inventory ({})", self.tag),
            Some(index) => format!(
                "tagged since the inventory ({}, through index {})",
                self.tag,
                index.short()
            ),
        }
    }
}

/// The child manifests of a manifest, each with its media type where a descriptor gave it.
type Children = Vec<(Digest, Option<String>)>;

/// What one repository's looks share: the inventory's tags and manifests, indexes read
/// since, and the last listing.
pub struct Recheck<'a> {
    registry: &'a dyn Registry,
    repo: &'a str,
    /// Tag -> digest, as the inventory found them.
    tags: HashMap<&'a str, &'a Digest>,
    /// The children of every manifest known: each of the inventory's (none for an image),
    /// and each read since.
    known: HashMap<Digest, Children>,
    /// The last listing, and when it was made.
    listing: Option<(Instant, Vec<String>)>,
}

impl<'a> Recheck<'a> {
    pub fn new(registry: &'a dyn Registry, repo: &'a str, images: &'a [Image]) -> Recheck<'a> {
        let tags = images
            .iter()
            .flat_map(|img| img.tags.iter().map(move |t| (t.as_str(), &img.digest)))
            .collect();
        let known = images
            .iter()
            .map(|img| {
                let children = img.children.iter().map(|(c, _)| (c.clone(), None));
                (img.digest.clone(), children.collect())
            })
            .collect();
        Recheck {
            registry,
            repo,
            tags,
            known,
            listing: None,
        }
    }

    /// Does a tag reach `doomed` now that did not when the inventory was read? The first
    /// such tag (in name order), or `None`. An error when the look could not be made whole:
    /// the caller then deletes nothing.
    pub async fn look(&mut self, doomed: &Digest) -> Result<Option<Reach>, RegistryError> {
        let asked: Vec<String> = self
            .listing()
            .await?
            .into_iter()
            .filter(|t| self.tags.get(t.as_str()) != Some(&doomed))
            .collect();
        let (registry, repo) = (self.registry, self.repo);
        let heads: Vec<(String, Option<ManifestHead>)> = futures::stream::iter(asked)
            .map(|tag| async move {
                let head = registry.head_manifest(repo, &tag).await?;
                Ok::<_, RegistryError>((tag, head))
            })
            .buffered(HEAD_CONCURRENCY)
            .try_collect()
            .await?;
        for (tag, head) in heads {
            let Some(head) = head else { continue };
            if self.tags.get(tag.as_str()) == Some(&&head.digest) {
                continue; // as the inventory saw it: what it reaches was decided with it
            }
            if head.digest == *doomed {
                return Ok(Some(Reach { tag, through: None }));
            }
            if self.reaches(&head, doomed).await? {
                let through = Some(head.digest);
                return Ok(Some(Reach { tag, through }));
            }
        }
        Ok(None)
    }

    /// The repository's tags: the last listing when it is younger than [`LISTING_REUSE`],
    /// else a new one. A tag that fails its check fails the look (no request is built from
    /// it, and what it points at cannot be known); a repository that is gone has none.
    async fn listing(&mut self) -> Result<Vec<String>, RegistryError> {
        if let Some((at, tags)) = &self.listing {
            if at.elapsed() < LISTING_REUSE {
                return Ok(tags.clone());
            }
        }
        let tags = match self.registry.list_tags(self.repo).await {
            Ok(tags) => tags,
            Err(e) if e.is_not_found() => Vec::new(),
            Err(e) => return Err(e),
        };
        if let Some(bad) = tags.iter().find_map(|t| names::tag(t).err()) {
            return Err(bad.into());
        }
        self.listing = Some((Instant::now(), tags.clone()));
        Ok(tags)
    }

    /// Does the manifest `head` names reach `doomed` through the children of indexes?
    async fn reaches(
        &mut self,
        head: &ManifestHead,
        doomed: &Digest,
    ) -> Result<bool, RegistryError> {
        let mut stack = vec![(head.digest.clone(), head.media_type.clone(), 0)];
        let mut seen = HashSet::new();
        while let Some((digest, media_type, depth)) = stack.pop() {
            if digest == *doomed {
                return Ok(true);
            }
            if depth > MAX_INDEX_DEPTH || !seen.insert(digest.clone()) {
                continue;
            }
            for (child, media_type) in self.children_of(&digest, media_type.as_deref()).await? {
                stack.push((child, media_type, depth + 1));
            }
        }
        Ok(false)
    }

    /// The children of `digest`: known already, none for a manifest whose media type says it
    /// is not an index, else read (once).
    async fn children_of(
        &mut self,
        digest: &Digest,
        media_type: Option<&str>,
    ) -> Result<Children, RegistryError> {
        if let Some(children) = self.known.get(digest) {
            return Ok(children.clone());
        }
        if media_type.is_some_and(|m| !manifest::is_index(m)) {
            return Ok(Vec::new());
        }
        let m = match self.registry.get_manifest(self.repo, digest.as_str()).await {
            Ok(m) => m,
            // Gone since the HEAD: it reaches nothing any more.
            Err(e) if e.is_not_found() => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let children = match manifest::is_index(&m.media_type) {
            false => Vec::new(),
            true => match manifest::parse(&m.media_type, &m.bytes) {
                Ok(Parsed::Index { children }) => children
                    .into_iter()
                    .map(|c| (c.digest, Some(c.media_type)))
                    .collect(),
                Ok(Parsed::Image { .. }) => Vec::new(),
                Err(reason) => {
                    return Err(RegistryError::InvalidManifest {
                        url: format!("{}/{}@{digest}", self.registry.name(), self.repo),
                        reason,
                    })
                }
            },
        };
        self.known.insert(digest.clone(), children.clone());
        Ok(children)
    }
}

#[cfg(test)]
mod tests;
