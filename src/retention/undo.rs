//! Undo: put back what retention and pruning deleted, from what each deletion kept
//! ([`super::Deletion::manifest`], the tags, the registry's own id), through the
//! [`Registry`] trait. Children before their parents and referrers before their subjects (the
//! reverse of the order they were deleted in), then the tags.
//!
//! Where the registry restores what its own API deleted (GHCR: a package version, for 30
//! days), that is asked; elsewhere the kept bytes are pushed back by digest, once a HEAD has
//! shown that every blob and child manifest they name is still there (a registry's garbage
//! collection may have taken them). What is already there is left as it is; a tag that points
//! elsewhere now (pushed since) is left alone. Nothing here knows how deletions are stored:
//! `app` reads them from the checkpoint and records what was put back.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::reference::Digest;
use crate::registry::capabilities::RecordStyle;
use crate::registry::manifest::{self, Parsed};
use crate::registry::{Manifest, Registry, RegistryError};

/// One deletion to put back, as it was recorded.
#[derive(Clone, Debug)]
pub struct Stored {
    /// The registry's name (a host, or `oci:`).
    pub registry: String,
    pub repo: String,
    pub digest: Digest,
    /// The tags it had (the tags removed, for a tag-only removal).
    pub tags: Vec<String>,
    /// Only the tags were removed (pruning); the manifest stayed.
    pub tags_only: bool,
    /// The registry's own id for what it deleted (a GHCR package version).
    pub version_id: Option<String>,
    /// The manifest as it was, where it was kept.
    pub manifest: Option<Manifest>,
}

impl Stored {
    /// `registry/repo` (`oci:path` for a layout), as people read it.
    pub fn repository(&self) -> String {
        match self.registry.ends_with(':') {
            true => format!("{}{}", self.registry, self.repo),
            false => format!("{}/{}", self.registry, self.repo),
        }
    }

    fn key(&self) -> Key {
        (
            self.registry.clone(),
            self.repo.clone(),
            self.digest.clone(),
        )
    }

    /// What this manifest refers to, as a referrer: its `subject`, or the digest its
    /// `sha256-<hex>.sig`-style tag names.
    fn subject(&self) -> Option<Digest> {
        self.manifest
            .as_ref()
            .and_then(|m| manifest::subject_of(&m.bytes))
            .or_else(|| {
                self.tags
                    .iter()
                    .find_map(|t| manifest::referrer_tag_subject(t))
            })
    }

    /// The child manifests the kept bytes name (an index's), none where none were kept.
    fn children(&self) -> Vec<Digest> {
        match self.parsed() {
            Some(Parsed::Index { children }) => children.into_iter().map(|c| c.digest).collect(),
            _ => Vec::new(),
        }
    }

    fn parsed(&self) -> Option<Parsed> {
        let m = self.manifest.as_ref()?;
        manifest::parse(&m.media_type, &m.bytes).ok()
    }
}

/// A manifest of a repository of a registry.
type Key = (String, String, Digest);

/// Why a deletion cannot be put back: `cannot restore REPO@DIGEST: <this>`.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Garbage collection took a blob the manifest needs.
    #[error("blob {0} is gone")]
    BlobGone(Digest),
    /// An index's child is neither there nor among what is put back.
    #[error("child manifest {0} is gone")]
    ChildGone(Digest),
    /// An index's child was among what is put back, and could not be.
    #[error("child manifest {0} could not be put back")]
    ChildFailed(Digest),
    /// The deletion was recorded without its manifest (by a ferry before 22, or a read that
    /// failed before deleting).
    #[error("its manifest was not kept when it was deleted")]
    NotKept,
    /// The bytes kept are not the manifest's (a damaged checkpoint).
    #[error("the manifest kept for it has digest {0}, not its own")]
    Damaged(Digest),
    /// The registry restores by id and no longer has this one.
    #[error(
        "the registry no longer has package version {0} to restore (GitHub keeps a deleted \
         version for 30 days)"
    )]
    VersionGone(String),
    /// The deletion's registry is not one the plan names.
    #[error("the plan names no registry {0}")]
    NoRegistry(String),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// How a manifest came back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Put {
    /// Its kept bytes were pushed back by digest.
    Pushed,
    /// The registry restored the version with this id.
    Version(String),
    /// It was there already (a tag-only removal, or put back since): nothing was written.
    There,
}

/// How a tag came back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TagPut {
    /// Pushed back onto the manifest.
    PutBack,
    /// It points at the manifest already.
    There,
    /// It points at another manifest now (pushed since): left alone.
    Moved(Digest),
}

/// What became of one deletion.
#[derive(Debug)]
pub struct Restored {
    pub manifest: Result<Put, RestoreError>,
    /// Each tag (none when the manifest could not be put back).
    pub tags: Vec<(String, Result<TagPut, RestoreError>)>,
}

impl Restored {
    /// Back whole: the manifest, and every tag that does not point elsewhere now.
    pub fn ok(&self) -> bool {
        self.manifest.is_ok() && self.tags.iter().all(|(_, t)| t.is_ok())
    }
}

/// What [`restore`] needs besides the deletions.
pub struct Context<'a> {
    /// The registries of the plan, by name.
    pub registries: &'a HashMap<String, Arc<dyn Registry>>,
    /// Look (HEAD) but write nothing: each outcome says what would be done.
    pub dry_run: bool,
    /// Told of each deletion once it is settled (its index in `items`), as it happens.
    pub note: &'a (dyn Fn(usize, &Restored) + Sync),
}

/// Which of `items` to put back: those `wanted` says, and with each, what it needs and what
/// needs it (the children its kept index names, the referrers of it), so that narrowing to a
/// tag brings back its image whole.
pub fn select(items: &[Stored], wanted: &dyn Fn(&Stored) -> bool) -> Vec<bool> {
    let mut chosen: Vec<bool> = items.iter().map(wanted).collect();
    loop {
        let keys: HashSet<Key> = items
            .iter()
            .zip(&chosen)
            .filter(|(_, c)| **c)
            .map(|(i, _)| i.key())
            .collect();
        let needed: HashSet<Key> = items
            .iter()
            .zip(&chosen)
            .filter(|(_, c)| **c)
            .flat_map(|(i, _)| {
                let at = |d: Digest| (i.registry.clone(), i.repo.clone(), d);
                i.children().into_iter().map(at).collect::<Vec<_>>()
            })
            .collect();
        let mut grew = false;
        for (item, c) in items.iter().zip(chosen.iter_mut()) {
            let referrer = item
                .subject()
                .is_some_and(|s| keys.contains(&(item.registry.clone(), item.repo.clone(), s)));
            if !*c && (needed.contains(&item.key()) || referrer) {
                *c = true;
                grew = true;
            }
        }
        if !grew {
            return chosen;
        }
    }
}

/// Put `items` (in the order they were deleted) back, in the reverse order: every manifest
/// first, then every tag. One outcome per item, in `items`' order.
pub async fn restore(items: &[Stored], cx: &Context<'_>) -> Vec<Restored> {
    let mut back: HashSet<Key> = HashSet::new();
    let mut failed: HashSet<Key> = HashSet::new();
    let mut manifests: Vec<Option<Result<Put, RestoreError>>> =
        items.iter().map(|_| None).collect();
    for (i, item) in items.iter().enumerate().rev() {
        let put = match cx.registries.get(&item.registry) {
            None => Err(RestoreError::NoRegistry(item.registry.clone())),
            Some(reg) => {
                let seen = Seen {
                    back: &back,
                    failed: &failed,
                };
                put_back(reg.as_ref(), item, &seen, cx.dry_run).await
            }
        };
        match &put {
            Ok(_) => back.insert(item.key()),
            Err(_) => failed.insert(item.key()),
        };
        manifests[i] = Some(put);
    }
    let mut out: Vec<Option<Restored>> = items.iter().map(|_| None).collect();
    for (i, item) in items.iter().enumerate().rev() {
        let manifest = manifests[i].take().expect("every manifest was tried");
        let mut tags = Vec::new();
        if let (Ok(_), Some(reg)) = (&manifest, cx.registries.get(&item.registry)) {
            for tag in &item.tags {
                tags.push((
                    tag.clone(),
                    tag_back(reg.as_ref(), item, tag, cx.dry_run).await,
                ));
            }
        }
        let restored = Restored { manifest, tags };
        (cx.note)(i, &restored);
        out[i] = Some(restored);
    }
    out.into_iter().map(|r| r.expect("every item")).collect()
}

/// What this restore has settled so far.
struct Seen<'a> {
    /// Put back (or found there).
    back: &'a HashSet<Key>,
    /// Could not be put back.
    failed: &'a HashSet<Key>,
}

/// The manifest of `item`, back at its registry: found there, restored by id where the
/// registry does that, else pushed back from its kept bytes once all they name is there.
async fn put_back(
    reg: &dyn Registry,
    item: &Stored,
    seen: &Seen<'_>,
    dry_run: bool,
) -> Result<Put, RestoreError> {
    if reg
        .head_manifest(&item.repo, item.digest.as_str())
        .await?
        .is_some()
    {
        return Ok(Put::There);
    }
    // A tag-only removal's id is the placeholder's (GHCR), never the manifest's.
    let version = item.version_id.as_ref().filter(|_| !item.tags_only);
    if let (Some(id), RecordStyle::Versions) = (version, reg.capabilities().record_style) {
        if dry_run {
            return Ok(Put::Version(id.clone()));
        }
        match reg.restore_version(&item.repo, id).await {
            Ok(true) => return Ok(Put::Version(id.clone())),
            Ok(false) => {}
            Err(e) if e.is_not_found() => return Err(RestoreError::VersionGone(id.clone())),
            Err(e) => return Err(e.into()),
        }
    }
    let m = item.manifest.as_ref().ok_or(RestoreError::NotKept)?;
    let actual = item.digest.recompute(&m.bytes);
    if actual != item.digest {
        return Err(RestoreError::Damaged(actual));
    }
    all_there(reg, item, m, seen).await?;
    if !dry_run {
        reg.put_manifest(&item.repo, item.digest.as_str(), m)
            .await?;
    }
    Ok(Put::Pushed)
}

/// Everything `m` names is at the registry: each blob of an image (foreign layers aside: they
/// never were), each child of an index (put back before it, or still there).
async fn all_there(
    reg: &dyn Registry,
    item: &Stored,
    m: &Manifest,
    seen: &Seen<'_>,
) -> Result<(), RestoreError> {
    let parsed = manifest::parse(&m.media_type, &m.bytes).map_err(|reason| {
        RegistryError::InvalidManifest {
            url: format!("{}@{}", item.repository(), item.digest),
            reason,
        }
    })?;
    match parsed {
        Parsed::Image { config, layers } => {
            for blob in std::iter::once(&config).chain(&layers) {
                if blob.is_foreign() {
                    continue;
                }
                if !reg.blob_exists(&item.repo, &blob.digest).await? {
                    return Err(RestoreError::BlobGone(blob.digest.clone()));
                }
            }
        }
        Parsed::Index { children } => {
            for child in children {
                let key = (
                    item.registry.clone(),
                    item.repo.clone(),
                    child.digest.clone(),
                );
                if seen.back.contains(&key) {
                    continue;
                }
                if seen.failed.contains(&key) {
                    return Err(RestoreError::ChildFailed(child.digest));
                }
                let head = reg.head_manifest(&item.repo, child.digest.as_str()).await?;
                if head.is_none() {
                    return Err(RestoreError::ChildGone(child.digest));
                }
            }
        }
    }
    Ok(())
}

/// `tag` back on `item`'s manifest, unless it is there or points elsewhere now.
async fn tag_back(
    reg: &dyn Registry,
    item: &Stored,
    tag: &str,
    dry_run: bool,
) -> Result<TagPut, RestoreError> {
    match reg.head_manifest(&item.repo, tag).await? {
        Some(h) if h.digest == item.digest => return Ok(TagPut::There),
        Some(h) => return Ok(TagPut::Moved(h.digest)),
        None if dry_run => return Ok(TagPut::PutBack),
        None => {}
    }
    let m = match &item.manifest {
        Some(m) => m.clone(),
        // Kept without its bytes (restored by id, or a tag-only removal): the manifest is
        // there now, so it is read from there.
        None => reg.get_manifest(&item.repo, item.digest.as_str()).await?,
    };
    reg.put_manifest(&item.repo, tag, &m).await?;
    Ok(TagPut::PutBack)
}

#[cfg(test)]
mod tests;
