//! Read a repository for retention, through the registry trait: every tag and the digest it
//! points at, every manifest (children of indexes included, recursively), creation times from
//! image configs, and what each referrer refers to. All of it is read before anything is
//! decided; a repository that cannot be read whole is left alone.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use futures::{StreamExt, TryStreamExt};

use super::decisions::Image;
use crate::reference::names;
use crate::reference::Digest;
use crate::registry::manifest::{self, Parsed, MAX_INDEX_DEPTH};
use crate::registry::{Manifest, ManifestRecord, Registry, RegistryError};

/// The manifests an inventory read, by digest, exactly as the registry gave them: what a
/// deletion keeps so `ferry restore` can put it back, at no extra request.
pub type Manifests = HashMap<Digest, Manifest>;

/// Tags and manifests read at once.
const READ_CONCURRENCY: usize = 8;

/// Image configs larger than this are not read for their `created` (a real config is a few
/// KiB; this only bounds what a hostile registry can make ferry hold).
const MAX_CONFIG_SIZE: u64 = 1024 * 1024;

/// `created` of an image config: RFC 3339, fractional seconds and `+00:00` allowed.
fn parse_created(bytes: &[u8]) -> Option<SystemTime> {
    #[derive(serde::Deserialize)]
    struct Config {
        created: Option<String>,
    }
    let created = serde_json::from_slice::<Config>(bytes).ok()?.created?;
    let normalized = created.trim().replace("+00:00", "Z");
    humantime::parse_rfc3339_weak(normalized.trim_end_matches('Z'))
        .ok()
        .or_else(|| humantime::parse_rfc3339_weak(&normalized).ok())
}

struct Read {
    /// The manifest as read.
    raw: Manifest,
    media_type: String,
    parsed: Parsed,
    subject: Option<Digest>,
    /// What the referrers API lists for this manifest.
    referrers: Vec<Digest>,
    /// The image config's `created`.
    created: Option<SystemTime>,
}

async fn read_manifest(
    registry: &dyn Registry,
    repo: &str,
    digest: &Digest,
) -> Result<Read, RegistryError> {
    let m = registry.get_manifest(repo, digest.as_str()).await?;
    let parsed = manifest::parse(&m.media_type, &m.bytes).map_err(|reason| {
        RegistryError::InvalidManifest {
            url: format!("{}/{repo}@{digest}", registry.name()),
            reason,
        }
    })?;
    let subject = manifest::subject_of(&m.bytes);
    Ok(Read {
        media_type: m.media_type.clone(),
        raw: m,
        parsed,
        subject,
        referrers: Vec::new(),
        created: None,
    })
}

async fn created_of(
    registry: &dyn Registry,
    repo: &str,
    config: &manifest::Desc,
) -> Result<Option<SystemTime>, RegistryError> {
    if config.size > MAX_CONFIG_SIZE {
        return Ok(None);
    }
    let bytes: Vec<u8> = registry
        .get_blob(repo, &config.digest, config.size)
        .await?
        .try_fold(Vec::new(), |mut acc, chunk| async move {
            acc.extend_from_slice(&chunk);
            Ok(acc)
        })
        .await?;
    Ok(parse_created(&bytes))
}

/// Every image of a repository: tagged manifests, the children of indexes (recursively), and
/// referrers found through cosign-style tags. An index's creation time is its newest child's.
pub async fn read(registry: &dyn Registry, repo: &str) -> Result<Vec<Image>, RegistryError> {
    Ok(read_keeping(registry, repo).await?.0)
}

/// [`read`], and the manifests it read on the way (none where the registry's own API
/// described the repository).
pub async fn read_keeping(
    registry: &dyn Registry,
    repo: &str,
) -> Result<(Vec<Image>, Manifests), RegistryError> {
    // Where the registry's own API describes the repository whole (Docker Hub's tag list),
    // read nothing else: every manifest GET there counts against the pull limit.
    let records = registry.manifest_records(repo).await?.unwrap_or_default();
    if !records.is_empty() && records.iter().all(|r| r.children.is_some()) {
        return Ok((from_records(records), Manifests::new()));
    }
    let tagged = tagged(registry, repo).await?;
    let (mut images, manifests) = walk(registry, repo, &tagged, &records).await?;
    date(&mut images, &records);
    let mut out: Vec<Image> = images.into_values().collect();
    out.sort_by(|a, b| a.digest.cmp(&b.digest));
    Ok((out, manifests))
}

/// Read the manifests of `digests` that `manifests` lacks, so their deletion keeps them: one
/// GET each (on Docker Hub, a pull each). One that cannot be read is left out, and its
/// deletion is recorded without it (`ferry restore` then says it cannot put it back).
pub async fn keep_for_restore<'a>(
    registry: &dyn Registry,
    repo: &str,
    digests: impl IntoIterator<Item = &'a Digest>,
    manifests: &mut Manifests,
) {
    // Owned: a stream of references here makes the run's future one the compiler cannot
    // prove `Send` for every lifetime, and the run is spawned onto the runtime's workers.
    let missing: Vec<Digest> = digests
        .into_iter()
        .filter(|d| !manifests.contains_key(*d))
        .cloned()
        .collect();
    let read: Vec<Option<Manifest>> = futures::stream::iter(missing)
        .map(|d| async move {
            match registry.get_manifest(repo, d.as_str()).await {
                Ok(m) => Some(m),
                Err(e) => {
                    tracing::debug!("{}/{repo}@{d}: not kept for restore: {e}", registry.name());
                    None
                }
            }
        })
        .buffer_unordered(READ_CONCURRENCY)
        .collect()
        .await;
    for m in read.into_iter().flatten() {
        manifests.insert(m.digest.clone(), m);
    }
}

/// Every tag of the repository, by the digest it points at.
async fn tagged(
    registry: &dyn Registry,
    repo: &str,
) -> Result<BTreeMap<Digest, Vec<String>>, RegistryError> {
    // A tag that fails its check fails the repository: its digest cannot be read (ferry
    // sends no request built from such a name), and an image whose tag went unseen would be
    // judged untagged and could be deleted. Skipping the tag would be safe only while every
    // digest it points at stays protected, which ferry cannot know; leaving the repository
    // alone (and saying why) always is.
    let tags = registry.list_tags(repo).await?;
    if let Some(bad) = tags.iter().find_map(|t| names::tag(t).err()) {
        return Err(bad.into());
    }
    let heads: Vec<(String, Digest)> = futures::stream::iter(tags)
        .map(|tag| async move {
            let head = registry.head_manifest(repo, &tag).await?;
            Ok::<_, RegistryError>(head.map(|h| (tag, h.digest)))
        })
        .buffered(READ_CONCURRENCY)
        .try_filter_map(|x| async move { Ok(x) })
        .try_collect()
        .await?;
    let mut by_digest: BTreeMap<Digest, Vec<String>> = BTreeMap::new();
    for (tag, digest) in heads {
        by_digest.entry(digest).or_default().push(tag);
    }
    Ok(by_digest)
}

/// Walk manifests breadth-first from the tagged (and recorded) ones, so children are read.
async fn walk(
    registry: &dyn Registry,
    repo: &str,
    tagged: &BTreeMap<Digest, Vec<String>>,
    records: &[ManifestRecord],
) -> Result<(HashMap<Digest, Image>, Manifests), RegistryError> {
    let mut images: HashMap<Digest, Image> = HashMap::new();
    let mut manifests = Manifests::new();
    let mut frontier: Vec<(Digest, usize)> = tagged
        .keys()
        .chain(records.iter().map(|r| &r.digest))
        .map(|d| (d.clone(), 0))
        .collect();
    frontier.sort();
    frontier.dedup();
    // Where the registry has the referrers API, untagged referrers (with a `subject`, listed
    // by no tag) are found through it: one request per manifest.
    let api = registry.supports_referrers(repo).await?;
    while !frontier.is_empty() {
        let batch: Vec<(Digest, usize)> = std::mem::take(&mut frontier)
            .into_iter()
            .filter(|(d, _)| !images.contains_key(d))
            .collect();
        let read: Vec<(Digest, usize, Read)> = futures::stream::iter(batch)
            .map(|(digest, depth)| read_one(registry, repo, digest, depth, api))
            .buffer_unordered(READ_CONCURRENCY)
            .try_collect()
            .await?;
        for (digest, depth, r) in read {
            let children = children_of(&r.parsed);
            if !children.is_empty() && depth + 1 > MAX_INDEX_DEPTH {
                return Err(RegistryError::InvalidManifest {
                    url: format!("{}/{repo}@{digest}", registry.name()),
                    reason: manifest::ManifestError::TooDeep,
                });
            }
            let next = children.iter().map(|(c, _)| (c, depth + 1));
            let next = next.chain(r.referrers.iter().map(|r| (r, 0)));
            for (d, depth) in next {
                if !images.contains_key(d) {
                    frontier.push((d.clone(), depth));
                }
            }
            let tags = tagged.get(&digest).cloned().unwrap_or_default();
            let subject = r
                .subject
                .or_else(|| tags.iter().find_map(|t| manifest::referrer_tag_subject(t)));
            let image = Image {
                digest: digest.clone(),
                tags,
                created: r.created,
                children,
                subject,
            };
            manifests.insert(digest.clone(), r.raw);
            images.insert(digest, image);
        }
    }
    Ok((images, manifests))
}

/// One manifest, what the referrers API (where `api`) lists for it, and its creation time.
async fn read_one(
    registry: &dyn Registry,
    repo: &str,
    digest: Digest,
    depth: usize,
    api: bool,
) -> Result<(Digest, usize, Read), RegistryError> {
    let mut r = read_manifest(registry, repo, &digest).await?;
    if api {
        let listed = registry
            .referrers(repo, &digest, None)
            .await?
            .unwrap_or_default();
        // As with tags: a referrer the list names unreadably is one the inventory would
        // miss; the repository is left alone instead.
        if let Some(bad) = listed.refused.into_iter().next() {
            return Err(bad.into());
        }
        r.referrers = listed.found.into_iter().map(|r| r.digest).collect();
    }
    r.created = match &r.parsed {
        Parsed::Image { config, .. }
            if r.media_type == manifest::OCI_MANIFEST
                || r.media_type == manifest::DOCKER_MANIFEST =>
        {
            created_of(registry, repo, config).await?
        }
        _ => None,
    };
    Ok((digest, depth, r))
}

/// The child manifests of an index, with their platforms (none for an image).
fn children_of(parsed: &Parsed) -> Vec<(Digest, Option<String>)> {
    match parsed {
        Parsed::Index { children } => children
            .iter()
            .map(|c| (c.digest.clone(), c.platform.clone()))
            .collect(),
        Parsed::Image { .. } => Vec::new(),
    }
}

/// Creation times the configs did not give: an image without a `created` is as old as the
/// registry's push record (GHCR's package versions), and an index as old as its newest child.
fn date(images: &mut HashMap<Digest, Image>, records: &[ManifestRecord]) {
    let pushed: HashMap<&Digest, Option<SystemTime>> =
        records.iter().map(|r| (&r.digest, r.created)).collect();
    for image in images.values_mut() {
        if image.created.is_none() {
            image.created = pushed.get(&image.digest).copied().flatten();
        }
    }
    let created: HashMap<Digest, Option<SystemTime>> =
        images.iter().map(|(d, i)| (d.clone(), i.created)).collect();
    for image in images.values_mut() {
        if image.created.is_none() && !image.children.is_empty() {
            image.created = image
                .children
                .iter()
                .filter_map(|(c, _)| created.get(c).copied().flatten())
                .max();
        }
    }
}

/// Images from records that carry their children (platform manifests are untagged images
/// as old as their parent).
fn from_records(records: Vec<ManifestRecord>) -> Vec<Image> {
    let mut images: BTreeMap<Digest, Image> = BTreeMap::new();
    for r in &records {
        for (child, _) in r.children.iter().flatten() {
            images.entry(child.clone()).or_insert_with(|| Image {
                digest: child.clone(),
                tags: Vec::new(),
                created: r.created,
                children: Vec::new(),
                subject: None,
            });
        }
    }
    for r in records {
        let subject = r
            .tags
            .iter()
            .find_map(|t| manifest::referrer_tag_subject(t));
        images.insert(
            r.digest.clone(),
            Image {
                digest: r.digest,
                tags: r.tags,
                created: r.created,
                children: r.children.unwrap_or_default(),
                subject,
            },
        );
    }
    images.into_values().collect()
}

/// How old, for messages: whole days.
pub fn age_days(created: SystemTime, now: SystemTime) -> u64 {
    now.duration_since(created)
        .unwrap_or(Duration::ZERO)
        .as_secs()
        / 86_400
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn referrer_tags() {
        let hex = "a".repeat(64);
        for t in [
            format!("sha256-{hex}.sig"),
            format!("sha256-{hex}.att"),
            format!("sha256-{hex}"),
        ] {
            assert_eq!(manifest::referrer_tag_subject(&t).unwrap().hex(), hex);
        }
        assert_eq!(manifest::referrer_tag_subject("sha256-abc.sig"), None);
        assert_eq!(manifest::referrer_tag_subject("v1.0.0"), None);
    }

    #[test]
    fn created_times() {
        let t = parse_created(br#"{"created":"2026-11-01T00:00:00Z"}"#).unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            1_793_491_200
        );
        assert!(parse_created(br#"{"created":"2024-01-02T03:04:05.123456789Z"}"#).is_some());
        assert!(parse_created(br#"{"created":"2024-01-02T03:04:05+00:00"}"#).is_some());
        assert_eq!(parse_created(br#"{"architecture":"amd64"}"#), None);
        assert_eq!(parse_created(b"not json"), None);
    }
}
