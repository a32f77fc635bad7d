//! Manifest media types and the parts of a manifest the copy engine follows: child manifests
//! of an index, config and layer blobs of an image. Parsing uses `oci-spec`, which already
//! refuses descriptors with invalid digests or negative sizes; ferry adds size and media-type
//! checks. The bytes themselves are never re-serialised: they are pushed exactly as read.

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};

use crate::reference::Digest;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// The `Accept` header for manifest requests: every manifest type ferry copies.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// Manifests larger than this are refused (the distribution spec has registries accept at
/// least 4 MiB; anything bigger is a hostile or broken server).
pub const MAX_MANIFEST_SIZE: u64 = 4 * 1024 * 1024;

/// Nested indexes deeper than this are refused (real images nest at most 2 levels).
pub const MAX_INDEX_DEPTH: usize = 8;

/// A descriptor, reduced to what the engine needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desc {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    /// `linux/arm64/v8` for index children that say so.
    pub platform: Option<String>,
    /// The image an index child is about (`vnd.docker.reference.digest`: buildx's
    /// attestation manifests), if it says.
    pub about: Option<Digest>,
}

impl Desc {
    /// Non-distributable ("foreign") layers must not be pushed to another registry.
    pub fn is_foreign(&self) -> bool {
        self.media_type.contains(".nondistributable.")
            || self.media_type == "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
    }
}

/// What a manifest references.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// An OCI index or Docker manifest list: child manifests.
    Index { children: Vec<Desc> },
    /// An image or artifact manifest: its config and layer blobs.
    Image { config: Desc, layers: Vec<Desc> },
}

/// A parser's message about a manifest, safe to print: oci-spec's messages quote the value
/// they refuse (a digest from the manifest) as it is, control characters included.
fn quoted(e: serde_json::Error) -> String {
    crate::reference::names::printable(&e.to_string(), 512)
}

/// Why a manifest (or a referrers index, or a layout's `index.json`) is refused: the reason as
/// data. At the registry border it becomes [`super::RegistryError::InvalidManifest`], which
/// adds the URL or path; shown, it reads as the reason alone.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Bigger than [`MAX_MANIFEST_SIZE`], by its size.
    #[error("{size} bytes is over the {MAX_MANIFEST_SIZE}-byte manifest limit")]
    TooLarge { size: u64 },
    /// Bigger than [`MAX_MANIFEST_SIZE`], by its `Content-Length` or a read that stopped one
    /// byte past it.
    #[error("larger than the {MAX_MANIFEST_SIZE}-byte manifest limit")]
    OverLimit,
    /// Not the JSON document its media type says (`what`: "index", "image manifest");
    /// `message` is the parser's, made printable.
    #[error("not a valid {what}: {message}")]
    Syntax { what: &'static str, message: String },
    /// A descriptor whose digest names an algorithm or form ferry cannot check.
    #[error("descriptor digest `{digest}` is not one ferry can verify")]
    DescriptorDigest { digest: String },
    #[error("Docker schema 1 manifests are deprecated and not copied; re-push the image with a current client")]
    Schema1,
    #[error("unsupported manifest media type `{media_type}`")]
    UnsupportedMediaType { media_type: String },
    /// Nothing says what the bytes are; `besides` names what else was asked (the
    /// Content-Type header, a layout's index.json entry).
    #[error("no media type in the document or {besides}")]
    NoMediaType { besides: &'static str },
    #[error("media type {media_type:?} is not a valid header value")]
    MediaTypeHeader { media_type: String },
    #[error("Docker-Content-Digest {value:?} is not a valid digest")]
    DigestHeader { value: String },
    #[error("indexes nested deeper than {MAX_INDEX_DEPTH} levels")]
    TooDeep,
    /// The fallback referrers tag holds something other than an index.
    #[error("the fallback referrers tag is not an index: {message}")]
    FallbackNotIndex { message: String },
    #[error("the fallback referrers tag is an index without `manifests`")]
    FallbackWithoutManifests,
    /// A fallback index being merged into lists an entry whose digest cannot be verified.
    #[error("the fallback referrers index lists {0}")]
    FallbackEntry(crate::reference::names::NameError),
    /// A layout's `index.json` that is not JSON (`message`: the parser's).
    #[error("index.json is not valid JSON: {message}")]
    LayoutIndex { message: String },
    #[error("the entry for tag {tag} has no valid digest")]
    LayoutTag { tag: String },
}

/// For code that still carries reasons as text (the copy engine's platform choice): the
/// message as shown.
fn desc(d: &Descriptor) -> Result<Desc, ManifestError> {
    let digest =
        Digest::parse(d.digest().as_ref()).ok_or_else(|| ManifestError::DescriptorDigest {
            digest: d.digest().to_string(),
        })?;
    let platform = d.platform().as_ref().map(|p| {
        let mut s = format!("{}/{}", p.os(), p.architecture());
        if let Some(v) = p.variant() {
            s.push('/');
            s.push_str(v);
        }
        s
    });
    let about = d
        .annotations()
        .as_ref()
        .and_then(|a| a.get("vnd.docker.reference.digest"))
        .and_then(|v| Digest::parse(v));
    Ok(Desc {
        digest,
        size: d.size(),
        media_type: d.media_type().to_string(),
        platform,
        about,
    })
}

/// The media type of manifest bytes: the document's own `mediaType`, else the one the server
/// sent, else what its shape says.
pub fn media_type_of(bytes: &[u8], served: Option<&str>) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
        layers: Option<serde_json::Value>,
    }
    let probe: Option<Probe> = serde_json::from_slice(bytes).ok();
    // A blank `mediaType` says nothing: fall back as if it were absent.
    if let Some(mt) = probe
        .as_ref()
        .and_then(|p| p.media_type.clone())
        .filter(|mt| !mt.trim().is_empty())
    {
        return Some(mt);
    }
    let served = served
        .map(|s| s.split(';').next().unwrap_or(s).trim().to_string())
        .filter(|s| !s.is_empty() && s != "application/json" && s != "application/octet-stream");
    if served.is_some() {
        return served;
    }
    match probe {
        Some(p) if p.manifests.is_some() => Some(OCI_INDEX.to_string()),
        Some(p) if p.layers.is_some() => Some(OCI_MANIFEST.to_string()),
        _ => None,
    }
}

/// Parse manifest bytes of the given media type.
pub fn parse(media_type: &str, bytes: &[u8]) -> Result<Parsed, ManifestError> {
    if bytes.len() as u64 > MAX_MANIFEST_SIZE {
        return Err(ManifestError::TooLarge {
            size: bytes.len() as u64,
        });
    }
    match media_type {
        OCI_INDEX | DOCKER_LIST => {
            let index: ImageIndex =
                serde_json::from_slice(bytes).map_err(|e| ManifestError::Syntax {
                    what: "index",
                    message: quoted(e),
                })?;
            let children = index
                .manifests()
                .iter()
                .map(desc)
                .collect::<Result<_, _>>()?;
            Ok(Parsed::Index { children })
        }
        OCI_MANIFEST | DOCKER_MANIFEST => image(bytes),
        DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED => Err(ManifestError::Schema1),
        other => {
            // An artifact manifest under its own type still has the image-manifest shape.
            image(bytes).map_err(|_| ManifestError::UnsupportedMediaType {
                media_type: other.to_string(),
            })
        }
    }
}

fn image(bytes: &[u8]) -> Result<Parsed, ManifestError> {
    let m: ImageManifest = serde_json::from_slice(bytes).map_err(|e| ManifestError::Syntax {
        what: "image manifest",
        message: quoted(e),
    })?;
    Ok(Parsed::Image {
        config: desc(m.config())?,
        layers: m.layers().iter().map(desc).collect::<Result<_, _>>()?,
    })
}

/// The subject a referrer tag names: cosign's `sha256-<hex>.sig/.att/.sbom` (and other
/// `sha256-<hex>.*`) tags, and the OCI referrers fallback tag `sha256-<hex>`.
pub fn referrer_tag_subject(tag: &str) -> Option<Digest> {
    let rest = tag.strip_prefix("sha256-")?;
    // `get` rather than slicing: tags come from the registry, and byte 64 may fall inside a
    // multi-byte character.
    let hex = rest.get(..64)?;
    let suffix = &rest[64..];
    if !hex
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let suffix_ok = suffix.is_empty()
        || (suffix.len() > 1
            && suffix.starts_with('.')
            && suffix[1..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-'));
    if !suffix_ok {
        return None;
    }
    Digest::parse(&format!("sha256:{hex}"))
}

/// The tag that holds the referrers of `subject` on a registry without the referrers API
/// (the distribution spec's referrers tag schema): `<algorithm>-<hex>`.
pub fn fallback_tag(subject: &Digest) -> String {
    format!("{}-{}", subject.algorithm(), subject.hex())
}

/// Is `tag` the fallback referrers tag of some subject (`sha256-<hex>` and nothing after)?
pub fn is_fallback_tag(tag: &str) -> bool {
    !tag.contains('.') && referrer_tag_subject(tag).is_some()
}

/// The parts of a manifest that say what it refers to and what kind of artifact it is. Read
/// leniently: the manifest itself was checked by [`parse`]; a field missing here only means
/// less is known.
#[derive(serde::Deserialize)]
struct ReferrerFields {
    subject: Option<Named>,
    #[serde(rename = "artifactType")]
    artifact_type: Option<String>,
    config: Option<Typed>,
    #[serde(default)]
    layers: Vec<Typed>,
    annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(serde::Deserialize)]
struct Named {
    digest: String,
}

#[derive(serde::Deserialize)]
struct Typed {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
}

impl ReferrerFields {
    fn of(bytes: &[u8]) -> Option<ReferrerFields> {
        serde_json::from_slice(bytes).ok()
    }

    /// Its `artifactType`, else its config's media type.
    fn artifact_type(&self) -> Option<String> {
        self.artifact_type
            .clone()
            .or_else(|| self.config.as_ref().and_then(|c| c.media_type.clone()))
    }
}

/// The `subject` a manifest names (OCI 1.1): what it refers to.
pub fn subject_of(bytes: &[u8]) -> Option<Digest> {
    Digest::parse(&ReferrerFields::of(bytes)?.subject?.digest)
}

/// The artifact type the referrers API reports for a manifest: its `artifactType`, else its
/// config's media type.
pub fn artifact_type_of(bytes: &[u8]) -> Option<String> {
    ReferrerFields::of(bytes)?.artifact_type()
}

/// Every type an `artifact_types` filter may name for a manifest: its artifact type and, for
/// cosign's tag-scheme artifacts (whose config is the generic image config), its first
/// layer's media type, which tells a signature
/// (`application/vnd.dev.cosign.simplesigning.v1+json`) from an attestation
/// (`application/vnd.dsse.envelope.v1+json`) from an SBOM.
pub fn artifact_kinds(bytes: &[u8]) -> Vec<String> {
    let Some(f) = ReferrerFields::of(bytes) else {
        return Vec::new();
    };
    let mut out: Vec<String> = f.artifact_type().into_iter().collect();
    if let Some(t) = f.layers.into_iter().next().and_then(|l| l.media_type) {
        if !out.contains(&t) {
            out.push(t);
        }
    }
    out
}

/// The annotations of a manifest, when it has any (a referrers index lists them beside the
/// referrer).
pub fn annotations_of(bytes: &[u8]) -> Option<serde_json::Map<String, serde_json::Value>> {
    ReferrerFields::of(bytes)?.annotations
}

/// Is this an index media type?
pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn an_index_child_with_a_bad_digest_fails_the_index() {
        let idx = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","size":1,"digest":"{}"}},{{"mediaType":"{OCI_MANIFEST}","size":1,"digest":"sha256:../../x"}}]}}"#,
            d('c')
        );
        assert!(parse(OCI_INDEX, idx.as_bytes()).is_err());
        // oci-spec's message quotes the bad value: it reaches the terminal escaped.
        let idx = idx.replace("../../x", "\\u001b[2J");
        let e = parse(OCI_INDEX, idx.as_bytes()).unwrap_err().to_string();
        assert!(!e.contains('\u{1b}') && e.contains("\\u{1b}"), "{e}");
    }

    #[test]
    fn parses_docker_and_oci_shapes() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":7,"digest":"{}"}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","size":9,"digest":"{}"}}]}}"#,
            d('a'),
            d('b')
        );
        let mt = media_type_of(m.as_bytes(), Some("text/plain")).unwrap();
        assert_eq!(mt, DOCKER_MANIFEST);
        match parse(&mt, m.as_bytes()).unwrap() {
            Parsed::Image { config, layers } => {
                assert_eq!(config.size, 7);
                assert!(layers[0].is_foreign());
            }
            other => panic!("{other:?}"),
        }
        let idx = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","size":1,"digest":"{}","platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}}]}}"#,
            d('c')
        );
        let mt = media_type_of(idx.as_bytes(), None).unwrap();
        assert_eq!(mt, OCI_INDEX);
        match parse(&mt, idx.as_bytes()).unwrap() {
            Parsed::Index { children } => {
                assert_eq!(children[0].platform.as_deref(), Some("linux/arm64/v8"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refuses_hostile_manifests() {
        let bad_digest = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"x/y","size":1,"digest":"sha256:zz"},"layers":[]}"#;
        assert!(parse(OCI_MANIFEST, bad_digest.as_bytes()).is_err());
        let negative = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"x/y","size":-1,"digest":"{}"}},"layers":[]}}"#,
            d('a')
        );
        assert!(parse(OCI_MANIFEST, negative.as_bytes()).is_err());
        let huge = vec![b' '; MAX_MANIFEST_SIZE as usize + 1];
        assert_eq!(
            parse(OCI_MANIFEST, &huge).unwrap_err().to_string(),
            format!(
                "{} bytes is over the {MAX_MANIFEST_SIZE}-byte manifest limit",
                huge.len()
            )
        );
        assert!(parse(DOCKER_SCHEMA1, b"{}")
            .unwrap_err()
            .to_string()
            .contains("schema 1"));
        assert_eq!(
            parse("text/html", b"<html>").unwrap_err().to_string(),
            "unsupported manifest media type `text/html`"
        );
    }
}
