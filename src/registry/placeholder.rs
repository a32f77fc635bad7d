//! Removing one tag where a registry deletes only manifests, each with every tag pointing at
//! it (CNCF distribution, which has no DELETE by tag; GHCR, whose package versions are
//! manifests): push a tiny manifest that no other has under the tag, which moves the tag off
//! the real manifest, then delete that manifest by digest, which takes the tag with it and
//! nothing else. regclient does this, and GitHub documents it for GHCR. This module builds the
//! throw-away manifest; [`super::http::HttpRegistry`] pushes and deletes it.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use bytes::Bytes;
use oci_spec::image::{Descriptor, ImageManifestBuilder, MediaType};

use super::manifest::OCI_MANIFEST;
use super::{BlobUpload, BytesSource, Manifest, Registry, Result};
use crate::reference::Digest;

/// The placeholder's config: the empty JSON object, as OCI's empty descriptor has it. A
/// registry that checks an image manifest's blobs (distribution does) must hold it first.
pub const EMPTY_CONFIG: &[u8] = b"{}";

/// The annotation naming the tag a placeholder was pushed to remove, so one left behind (a
/// deletion that failed) says what it is.
pub const UNTAGGED_ANNOTATION: &str = "io.github.ferry.untagged";

/// The annotation that makes each placeholder's digest its own: when it was made, by which
/// process, and a counter.
pub const NONCE_ANNOTATION: &str = "io.github.ferry.nonce";

/// The digest of [`EMPTY_CONFIG`].
pub fn empty_config_digest() -> Digest {
    Digest::sha256_of(EMPTY_CONFIG)
}

/// The bytes of [`EMPTY_CONFIG`], to upload.
pub fn empty_config() -> Bytes {
    Bytes::from_static(EMPTY_CONFIG)
}

/// Upload [`EMPTY_CONFIG`] to `repo` unless it holds it: distribution refuses an image
/// manifest whose config it does not hold. The placeholder and the run lease
/// ([`super::lease`]) both need it.
pub async fn upload_empty_config(registry: &dyn Registry, repo: &str) -> Result<()> {
    let digest = empty_config_digest();
    if registry.blob_exists(repo, &digest).await? {
        return Ok(());
    }
    let source = BytesSource(empty_config());
    let upload = BlobUpload {
        digest: &digest,
        size: EMPTY_CONFIG.len() as u64,
        source: &source,
        resume: None,
        progress: &|_| {},
        park: &|| false,
    };
    registry.put_blob(repo, upload).await
}

/// A throw-away OCI image manifest for `tag`: the `{}` config, no layers, and annotations that
/// name the tag and make its digest unlike any other manifest's, so deleting it by digest
/// removes no tag but the one it was pushed under.
pub fn manifest(tag: &str) -> Manifest {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = humantime::format_rfc3339_nanos(SystemTime::now());
    let nonce = format!(
        "{now} {}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let config_digest = oci_spec::image::Digest::from_str(empty_config_digest().as_str())
        .expect("the sha256 of `{}` is a valid digest");
    let config = Descriptor::new(
        MediaType::ImageConfig,
        EMPTY_CONFIG.len() as u64,
        config_digest,
    );
    let annotations = HashMap::from([
        (UNTAGGED_ANNOTATION.to_string(), tag.to_string()),
        (NONCE_ANNOTATION.to_string(), nonce),
    ]);
    let image = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config)
        .layers(Vec::new())
        .annotations(annotations)
        .build()
        .expect("every required field is set");
    oci_manifest(&image)
}

/// An OCI image manifest ferry wrote itself, as it is pushed: its JSON, media type and digest.
pub fn oci_manifest(image: &oci_spec::image::ImageManifest) -> Manifest {
    let bytes = Bytes::from(serde_json::to_vec(image).expect("a manifest serialises"));
    Manifest {
        media_type: OCI_MANIFEST.to_string(),
        digest: Digest::sha256_of(&bytes),
        bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::manifest::{self, Parsed};

    #[test]
    fn the_empty_config_is_the_one_oci_names() {
        assert_eq!(
            empty_config_digest().as_str(),
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }

    #[test]
    fn each_placeholder_is_an_image_of_its_own_that_names_its_tag() {
        let (one, two) = (manifest("v1"), manifest("v1"));
        assert_ne!(
            one.digest, two.digest,
            "two placeholders for one tag differ"
        );
        assert_eq!(Digest::sha256_of(&one.bytes), one.digest);
        match manifest::parse(&one.media_type, &one.bytes).unwrap() {
            Parsed::Image { config, layers } => {
                assert_eq!(config.digest, empty_config_digest());
                assert_eq!(config.size, 2);
                assert_eq!(
                    config.media_type,
                    "application/vnd.oci.image.config.v1+json"
                );
                assert!(layers.is_empty());
            }
            other => panic!("{other:?}"),
        }
        let json: serde_json::Value = serde_json::from_slice(&one.bytes).unwrap();
        assert_eq!(json["mediaType"], OCI_MANIFEST);
        assert_eq!(json["annotations"][UNTAGGED_ANNOTATION], "v1");
    }
}
