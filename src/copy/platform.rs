//! `platforms = [...]`: which children of an index are copied, and what index the target gets
//! (the original one, sparse; or a rewritten one with a new digest). Pure: no registry here.

use std::collections::HashSet;

use super::copy_rule::{PlatformMode, Platforms};
use crate::reference::Digest;
use crate::registry::manifest::{self, Desc, Parsed};
use crate::registry::Manifest;

/// A child that names no real platform (`unknown/unknown`, or none at all).
fn platformless(d: &Desc) -> bool {
    matches!(d.platform.as_deref(), None | Some("unknown/unknown"))
}

/// The children of an index a platform list wants: those of a listed platform, and those
/// without a platform that are about a wanted child (buildx's attestation manifests) or about
/// nothing in particular. Every child when `platforms` is `None`.
pub fn wanted_children<'a>(children: &'a [Desc], platforms: Option<&Platforms>) -> Vec<&'a Desc> {
    let Some(platforms) = platforms else {
        return children.iter().collect();
    };
    let wanted: HashSet<&Digest> = children
        .iter()
        .filter(|c| !platformless(c))
        .filter(|c| c.platform.as_deref().is_some_and(|p| platforms.wants(p)))
        .map(|c| &c.digest)
        .collect();
    children
        .iter()
        .filter(|c| {
            wanted.contains(&c.digest)
                || (platformless(c) && c.about.as_ref().is_none_or(|a| wanted.contains(a)))
        })
        .collect()
}

/// What the target gets for an index copied with a platform list.
#[derive(Debug, Clone)]
pub struct Chosen {
    /// The manifest to push: the original (sparse, or nothing left out) or a rewritten one.
    pub manifest: Manifest,
    /// The children to copy.
    pub children: Vec<Desc>,
    /// Children of the original index not copied.
    pub left_out: usize,
}

impl Chosen {
    /// The digest the target's index has when it is not the source's.
    pub fn rewritten(&self, source: &Digest) -> Option<&Digest> {
        (self.manifest.digest != *source).then_some(&self.manifest.digest)
    }
}

/// Why a platform list cannot be applied to an index.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    #[error(
        "it has none of the platforms asked for ({}); it has {}",
        .wanted.join(", "),
        if .offered.is_empty() { "no platform at all".to_string() } else { .offered.join(", ") }
    )]
    NoneAskedFor {
        wanted: Vec<String>,
        offered: Vec<String>,
    },
    #[error("not a valid index: {0}")]
    NotJson(#[source] serde_json::Error),
}

/// Apply a platform list to an index. `Ok(None)` for a manifest that is not an index
/// (single-platform images pass through untouched).
pub fn choose(index: &Manifest, platforms: &Platforms) -> Result<Option<Chosen>, PlatformError> {
    let children = match manifest::parse(&index.media_type, &index.bytes)? {
        Parsed::Index { children } => children,
        Parsed::Image { .. } => return Ok(None),
    };
    let kept: Vec<Desc> = wanted_children(&children, Some(platforms))
        .into_iter()
        .cloned()
        .collect();
    if kept.iter().all(platformless) {
        let offered: Vec<&str> = children
            .iter()
            .filter(|c| !platformless(c))
            .filter_map(|c| c.platform.as_deref())
            .collect();
        return Err(PlatformError::NoneAskedFor {
            wanted: platforms.wanted.iter().map(|p| p.to_string()).collect(),
            offered: offered.into_iter().map(str::to_string).collect(),
        });
    }
    let left_out = children.len() - kept.len();
    if platforms.mode == PlatformMode::Sparse || left_out == 0 {
        return Ok(Some(Chosen {
            manifest: index.clone(),
            children: kept,
            left_out,
        }));
    }
    // A new index: the original's fields, only the kept children, in their original order.
    let mut value: serde_json::Value =
        serde_json::from_slice(&index.bytes).map_err(PlatformError::NotJson)?;
    let keep: HashSet<&str> = kept.iter().map(|c| c.digest.as_str()).collect();
    if let Some(list) = value.get_mut("manifests").and_then(|m| m.as_array_mut()) {
        list.retain(|m| {
            m.get("digest")
                .and_then(|d| d.as_str())
                .is_some_and(|d| keep.contains(d))
        });
    }
    let bytes = serde_json::to_vec(&value).expect("an index serialises");
    Ok(Some(Chosen {
        manifest: Manifest {
            media_type: index.media_type.clone(),
            digest: Digest::sha256_of(&bytes),
            bytes: bytes.into(),
        },
        children: kept,
        left_out,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::copy::copy_rule::Platform;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn index() -> Manifest {
        let bytes = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[
            {{"mediaType":"{m}","size":10,"digest":"{}","platform":{{"os":"linux","architecture":"amd64"}}}},
            {{"mediaType":"{m}","size":11,"digest":"{}","platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
            {{"mediaType":"{m}","size":12,"digest":"{}","platform":{{"os":"linux","architecture":"s390x"}}}},
            {{"mediaType":"{m}","size":13,"digest":"{}","platform":{{"os":"unknown","architecture":"unknown"}},"annotations":{{"vnd.docker.reference.digest":"{}","vnd.docker.reference.type":"attestation-manifest"}}}},
            {{"mediaType":"{m}","size":14,"digest":"{}","platform":{{"os":"unknown","architecture":"unknown"}},"annotations":{{"vnd.docker.reference.digest":"{}","vnd.docker.reference.type":"attestation-manifest"}}}}
            ],"annotations":{{"org.opencontainers.image.source":"x"}}}}"#,
            manifest::OCI_INDEX,
            d('a'),
            d('b'),
            d('c'),
            d('d'),
            d('a'),
            d('e'),
            d('c'),
            m = manifest::OCI_MANIFEST,
        );
        Manifest {
            media_type: manifest::OCI_INDEX.into(),
            digest: Digest::sha256_of(bytes.as_bytes()),
            bytes: bytes.into(),
        }
    }

    fn platforms(list: &[&str], mode: PlatformMode) -> Platforms {
        Platforms {
            wanted: list.iter().map(|p| Platform::parse(p).unwrap()).collect(),
            mode,
        }
    }

    fn digests(c: &Chosen) -> Vec<String> {
        c.children.iter().map(|c| c.digest.to_string()).collect()
    }

    #[test]
    fn sparse_keeps_the_index_and_copies_the_chosen_children_and_their_attestations() {
        let idx = index();
        let c = choose(
            &idx,
            &platforms(&["linux/amd64", "linux/arm64"], PlatformMode::Sparse),
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.manifest.digest, idx.digest);
        assert_eq!(c.rewritten(&idx.digest), None);
        assert_eq!(digests(&c), vec![d('a'), d('b'), d('d')]);
        assert_eq!(c.left_out, 2);
    }

    #[test]
    fn rewrite_writes_a_new_index_of_the_chosen_children_deterministically() {
        let idx = index();
        let p = platforms(&["linux/arm64/v8"], PlatformMode::Rewrite);
        let c = choose(&idx, &p).unwrap().unwrap();
        let new = c.rewritten(&idx.digest).expect("a new digest");
        assert_eq!(new, &Digest::sha256_of(&c.manifest.bytes));
        let v: serde_json::Value = serde_json::from_slice(&c.manifest.bytes).unwrap();
        let listed: Vec<&str> = v["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["digest"].as_str().unwrap())
            .collect();
        assert_eq!(listed, vec![d('b')]);
        assert_eq!(v["annotations"]["org.opencontainers.image.source"], "x");
        assert_eq!(v["mediaType"], manifest::OCI_INDEX);
        // The same input gives the same digest: a re-run finds it present.
        assert_eq!(choose(&idx, &p).unwrap().unwrap().manifest.digest, *new);
    }

    #[test]
    fn rewrite_with_every_platform_kept_changes_nothing() {
        let idx = index();
        let p = platforms(
            &["linux/amd64", "linux/arm64", "linux/s390x"],
            PlatformMode::Rewrite,
        );
        let c = choose(&idx, &p).unwrap().unwrap();
        assert_eq!(c.rewritten(&idx.digest), None);
        assert_eq!(c.left_out, 0);
    }

    #[test]
    fn no_matching_platform_is_an_error_naming_what_there_is() {
        let err = choose(
            &index(),
            &platforms(&["windows/amd64"], PlatformMode::Rewrite),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("windows/amd64"), "{err}");
        assert!(err.contains("linux/s390x"), "{err}");
    }

    #[test]
    fn single_platform_images_pass_through() {
        let bytes = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"x/y","size":1,"digest":"{}"}},"layers":[]}}"#,
            manifest::OCI_MANIFEST,
            d('a')
        );
        let m = Manifest {
            media_type: manifest::OCI_MANIFEST.into(),
            digest: Digest::sha256_of(bytes.as_bytes()),
            bytes: bytes.into(),
        };
        let p = platforms(&["linux/arm64"], PlatformMode::Rewrite);
        assert!(choose(&m, &p).unwrap().is_none());
    }
}
