//! Referrers indexes: the entry a referrer gets in one, the referrers API's answer read into a
//! [`ReferrerList`], and the fallback tag's index (`sha256-<hex>`) read and merged the way the
//! spec has clients merge it, never overwritten.

use super::manifest::{annotations_of, artifact_type_of, ManifestError, OCI_INDEX};
use super::{Manifest, Referrer, ReferrerList};
use crate::reference::Digest;

/// The descriptor of a referrer as a referrers index lists it: media type, digest, size,
/// artifact type and the manifest's annotations.
pub fn referrer_entry(m: &Manifest) -> serde_json::Value {
    let mut entry = serde_json::json!({
        "mediaType": m.media_type,
        "digest": m.digest.as_str(),
        "size": m.bytes.len(),
    });
    if let Some(t) = artifact_type_of(&m.bytes) {
        entry["artifactType"] = serde_json::Value::String(t);
    }
    if let Some(a) = annotations_of(&m.bytes).filter(|a| !a.is_empty()) {
        entry["annotations"] = serde_json::Value::Object(a);
    }
    entry
}

/// The entries of a referrers index (a page of the referrers API, or a fallback index): every
/// referrer whose digest ferry can verify, and an error naming each entry whose digest it
/// cannot (one bad entry costs itself, not its neighbours). Read leniently otherwise, as the
/// referrers API answers are: only media type, digest and size are required of an entry.
pub fn referrer_list(bytes: &[u8]) -> Result<ReferrerList, serde_json::Error> {
    #[derive(serde::Deserialize)]
    struct Index {
        #[serde(default)]
        manifests: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(rename = "mediaType")]
        media_type: String,
        digest: String,
        size: u64,
        #[serde(rename = "artifactType")]
        artifact_type: Option<String>,
    }
    let index: Index = serde_json::from_slice(bytes)?;
    let mut out = ReferrerList::default();
    for e in index.manifests {
        match Digest::checked(&e.digest) {
            Ok(digest) => out.found.push(Referrer {
                digest,
                media_type: e.media_type,
                size: e.size,
                artifact_type: e.artifact_type,
            }),
            Err(refused) => out.refused.push(refused),
        }
    }
    Ok(out)
}

/// The entries of a fallback referrers index (see [`referrer_list`]).
pub fn fallback_entries(bytes: &[u8]) -> Result<ReferrerList, ManifestError> {
    referrer_list(bytes).map_err(|e| ManifestError::FallbackNotIndex {
        message: e.to_string(),
    })
}

/// Add `entry` to a fallback referrers index (`existing`, or a new empty one), keeping every
/// entry already there: the spec has clients merge, never overwrite. `Ok(None)` when the
/// entry's digest is already listed.
pub fn merge_fallback_index(
    existing: Option<&[u8]>,
    entry: serde_json::Value,
) -> Result<Option<Vec<u8>>, ManifestError> {
    let mut index: serde_json::Value = match existing {
        Some(bytes) => {
            // Merging keeps every entry already there, so an entry that names no verifiable
            // digest would be handed on: the index is refused instead.
            if let Some(bad) = fallback_entries(bytes)?.refused.into_iter().next() {
                return Err(ManifestError::FallbackEntry(bad));
            }
            serde_json::from_slice(bytes).map_err(|e| ManifestError::FallbackNotIndex {
                message: e.to_string(),
            })?
        }
        None => serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [],
        }),
    };
    let manifests = index
        .get_mut("manifests")
        .and_then(|m| m.as_array_mut())
        .ok_or(ManifestError::FallbackWithoutManifests)?;
    if manifests
        .iter()
        .any(|m| m.get("digest") == entry.get("digest"))
    {
        return Ok(None);
    }
    manifests.push(entry);
    Ok(Some(serde_json::to_vec(&index).expect("json")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::manifest::OCI_MANIFEST;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn a_referrers_list_entry_with_a_bad_digest_costs_only_itself() {
        let good = d('a');
        let list = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
                {{"mediaType":"{OCI_MANIFEST}","digest":"{good}","size":3,"artifactType":"x/y"}},
                {{"mediaType":"{OCI_MANIFEST}","digest":"sha256:../../../etc/passwd","size":3}},
                {{"mediaType":"{OCI_MANIFEST}","digest":"sha384:{}","size":3}}
            ]}}"#,
            "a".repeat(96)
        );
        let r = referrer_list(list.as_bytes()).unwrap();
        assert_eq!(r.found.len(), 1);
        assert_eq!(r.found[0].digest.as_str(), good);
        assert_eq!(r.found[0].artifact_type.as_deref(), Some("x/y"));
        let refused: Vec<&str> = r.refused.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            refused,
            [
                "sha256:../../../etc/passwd",
                &format!("sha384:{}", "a".repeat(58))[..]
            ]
        );
        assert_eq!(fallback_entries(list.as_bytes()).unwrap(), r);
        // A fallback index being merged into must not carry such an entry on.
        let entry = serde_json::json!({"mediaType": OCI_MANIFEST, "digest": d('b'), "size": 1});
        let e = merge_fallback_index(Some(list.as_bytes()), entry)
            .unwrap_err()
            .to_string();
        assert!(e.contains("sha256:../../../etc/passwd"), "{e}");
    }
}
