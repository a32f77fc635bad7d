//! Manifests and indexes as a registry serves them: random documents shaped like the real
//! ones (random digests, sizes negative, huge, fractional or quoted, unknown fields and media
//! types, nesting), and arbitrary JSON and bytes.

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use super::reference::digest_like;
use super::{config, nasty_text};
use crate::reference::Digest;
use crate::registry::manifest::{
    self, media_type_of, Parsed, DOCKER_LIST, DOCKER_MANIFEST, MAX_MANIFEST_SIZE, OCI_INDEX,
    OCI_MANIFEST,
};

/// Stands for a number no JSON parser holds in 64 bits; replaced in the serialised text.
const HUGE: &str = "__HUGE_NUMBER__";

#[derive(Clone, Debug)]
enum Size {
    Valid(u64),
    Negative(i64),
    /// 2^64 * 10: over every integer type.
    Huge,
    Fraction,
    Quoted,
}

impl Size {
    fn json(&self) -> Value {
        match self {
            Size::Valid(n) => json!(n),
            Size::Negative(n) => json!(n),
            Size::Huge => json!(HUGE),
            Size::Fraction => json!(1.5),
            Size::Quoted => json!("12"),
        }
    }
}

#[derive(Clone, Debug)]
struct DescModel {
    media_type: String,
    digest: String,
    size: Size,
    platform: Option<(String, String, Option<String>)>,
    annotations: Option<Value>,
}

impl DescModel {
    fn valid(&self) -> bool {
        Digest::parse(&self.digest).is_some() && matches!(self.size, Size::Valid(_))
    }

    fn json(&self) -> Value {
        let mut m = Map::new();
        m.insert("mediaType".into(), json!(self.media_type));
        m.insert("digest".into(), json!(self.digest));
        m.insert("size".into(), self.size.json());
        if let Some((os, arch, variant)) = &self.platform {
            let mut p = json!({"os": os, "architecture": arch});
            if let Some(v) = variant {
                p["variant"] = json!(v);
            }
            m.insert("platform".into(), p);
        }
        if let Some(a) = &self.annotations {
            m.insert("annotations".into(), a.clone());
        }
        Value::Object(m)
    }

    fn check(&self, got: &manifest::Desc) {
        assert_eq!(got.digest.as_str(), self.digest);
        assert_eq!(got.media_type, self.media_type);
        if let Size::Valid(n) = self.size {
            assert_eq!(got.size, n);
        }
        if let Some((os, arch, _)) = &self.platform {
            let p = got.platform.as_deref().expect("platform kept");
            assert!(p.starts_with(&format!("{os}/{arch}")), "{p}");
        }
    }
}

fn media_type() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just("application/vnd.oci.image.layer.v1.tar+gzip".to_string()),
        1 => Just(OCI_MANIFEST.to_string()),
        1 => Just(OCI_INDEX.to_string()),
        1 => Just("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip".to_string()),
        1 => "[a-z]{1,8}/[a-z.+-]{1,12}",
        1 => nasty_text(6),
    ]
}

fn size() -> impl Strategy<Value = Size> {
    prop_oneof![
        6 => (0u64..1 << 40).prop_map(Size::Valid),
        1 => Just(Size::Valid(u64::MAX)),
        1 => Just(Size::Valid(i64::MAX as u64 + 1)),
        2 => (i64::MIN..0).prop_map(Size::Negative),
        1 => Just(Size::Negative(-1)),
        1 => Just(Size::Huge),
        1 => Just(Size::Fraction),
        1 => Just(Size::Quoted),
    ]
}

fn desc() -> impl Strategy<Value = DescModel> {
    let platform = prop::option::weighted(
        0.3,
        ("[a-z]{1,6}", "[a-z0-9]{1,6}", prop::option::of("v[0-9]")),
    );
    let annotations = prop::option::weighted(
        0.2,
        prop::collection::btree_map("[a-z.]{1,10}", nasty_text(6), 0..3).prop_map(|m| json!(m)),
    );
    (media_type(), digest_like(), size(), platform, annotations).prop_map(
        |(media_type, digest, size, platform, annotations)| DescModel {
            media_type,
            digest,
            size,
            platform,
            annotations,
        },
    )
}

#[derive(Clone, Debug)]
enum DocModel {
    Index {
        media_type: Option<String>,
        manifests: Vec<DescModel>,
    },
    Image {
        media_type: Option<String>,
        config: DescModel,
        layers: Vec<DescModel>,
    },
}

impl DocModel {
    fn valid(&self) -> bool {
        match self {
            DocModel::Index { manifests, .. } => manifests.iter().all(DescModel::valid),
            DocModel::Image { config, layers, .. } => {
                config.valid() && layers.iter().all(DescModel::valid)
            }
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut doc = json!({"schemaVersion": 2});
        let mt = match self {
            DocModel::Index {
                media_type,
                manifests,
            } => {
                doc["manifests"] = Value::Array(manifests.iter().map(DescModel::json).collect());
                media_type
            }
            DocModel::Image {
                media_type,
                config,
                layers,
            } => {
                doc["config"] = config.json();
                doc["layers"] = Value::Array(layers.iter().map(DescModel::json).collect());
                media_type
            }
        };
        if let Some(mt) = mt {
            doc["mediaType"] = json!(mt);
        }
        doc.to_string()
            .replace(&format!("\"{HUGE}\""), "184467440737095516160")
            .into_bytes()
    }

    /// The media type ferry parses this document with.
    fn parse_type(&self, docker: bool) -> &'static str {
        match (self, docker) {
            (DocModel::Index { .. }, false) => OCI_INDEX,
            (DocModel::Index { .. }, true) => DOCKER_LIST,
            (DocModel::Image { .. }, false) => OCI_MANIFEST,
            (DocModel::Image { .. }, true) => DOCKER_MANIFEST,
        }
    }
}

fn doc() -> impl Strategy<Value = DocModel> {
    let declared = prop::option::of(prop_oneof![
        Just(OCI_INDEX.to_string()),
        Just(OCI_MANIFEST.to_string()),
        Just(DOCKER_MANIFEST.to_string()),
        nasty_text(5),
    ]);
    prop_oneof![
        (declared.clone(), prop::collection::vec(desc(), 0..5)).prop_map(
            |(media_type, manifests)| DocModel::Index {
                media_type,
                manifests
            }
        ),
        (declared, desc(), prop::collection::vec(desc(), 0..5)).prop_map(
            |(media_type, config, layers)| DocModel::Image {
                media_type,
                config,
                layers
            }
        ),
    ]
}

fn json_key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "mediaType", "manifests", "layers", "config", "digest", "size", "schemaVersion",
            "platform", "os", "architecture", "variant", "annotations", "subject",
            "artifactType", "urls",
        ])
        .prop_map(str::to_string),
        1 => nasty_text(4),
    ]
}

/// Arbitrary JSON, biased to the names manifests use, nested up to 5 levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        nasty_text(8).prop_map(Value::String),
        digest_like().prop_map(Value::String),
        prop::sample::select(vec![OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST])
            .prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(json_key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn served_type() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop_oneof![
        Just("application/json".to_string()),
        Just(format!("{OCI_MANIFEST}; charset=utf-8")),
        Just(";".to_string()),
        Just(String::new()),
        nasty_text(8),
    ])
}

/// Every media type ferry may be handed, including nonsense.
fn any_parse_type() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(OCI_INDEX.to_string()),
        Just(DOCKER_LIST.to_string()),
        Just(OCI_MANIFEST.to_string()),
        Just(DOCKER_MANIFEST.to_string()),
        Just("application/vnd.docker.distribution.manifest.v1+prettyjws".to_string()),
        nasty_text(8),
    ]
}

fn check_parsed(parsed: &Parsed) {
    let all: Vec<&manifest::Desc> = match parsed {
        Parsed::Index { children } => children.iter().collect(),
        Parsed::Image { config, layers } => std::iter::once(config).chain(layers).collect(),
    };
    for d in all {
        assert!(Digest::parse(d.digest.as_str()).is_some(), "{d:?}");
    }
}

proptest! {
    #![proptest_config(config(4000))]

    /// Well-formed documents parse to exactly their descriptors; one invalid digest or
    /// size anywhere refuses the whole document.
    #[test]
    fn documents_parse_exactly_or_are_refused(doc in doc(), docker in any::<bool>()) {
        let bytes = doc.bytes();
        let result = manifest::parse(doc.parse_type(docker), &bytes);
        if doc.valid() {
            let parsed = result.unwrap_or_else(|e| {
                panic!("{}: refused: {e}", String::from_utf8_lossy(&bytes))
            });
            match (&doc, &parsed) {
                (DocModel::Index { manifests, .. }, Parsed::Index { children }) => {
                    prop_assert_eq!(manifests.len(), children.len());
                    for (m, c) in manifests.iter().zip(children) {
                        m.check(c);
                    }
                }
                (DocModel::Image { config: mc, layers: ml, .. }, Parsed::Image { config, layers }) => {
                    mc.check(config);
                    prop_assert_eq!(ml.len(), layers.len());
                    for (m, l) in ml.iter().zip(layers) {
                        m.check(l);
                    }
                }
                (d, p) => panic!("{d:?} parsed as {p:?}"),
            }
        } else {
            let e = result.expect_err("an invalid descriptor is refused");
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn media_type_of_never_panics(doc in doc(), served in served_type()) {
        let bytes = doc.bytes();
        let mt = media_type_of(&bytes, served.as_deref());
        let declared = match &doc {
            DocModel::Index { media_type, .. } | DocModel::Image { media_type, .. } => media_type,
        };
        match declared.as_deref().filter(|d| !d.trim().is_empty()) {
            // The document's own word wins.
            Some(d) => prop_assert_eq!(mt.as_deref(), Some(d)),
            // Else the server's, else the shape's: never an empty type.
            None => prop_assert!(mt.as_deref().is_some_and(|t| !t.trim().is_empty())),
        }
    }

    #[test]
    fn arbitrary_json_never_panics(
        v in json_value(),
        served in served_type(),
        parse_as in any_parse_type(),
    ) {
        let bytes = v.to_string().into_bytes();
        if let Some(mt) = media_type_of(&bytes, served.as_deref()) {
            prop_assert!(!mt.trim().is_empty());
            if let Ok(p) = manifest::parse(&mt, &bytes) {
                check_parsed(&p);
            }
        }
        if let Ok(p) = manifest::parse(&parse_as, &bytes) {
            check_parsed(&p);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        served in served_type(),
        parse_as in any_parse_type(),
    ) {
        let _ = media_type_of(&bytes, served.as_deref());
        if let Ok(p) = manifest::parse(&parse_as, &bytes) {
            check_parsed(&p);
        }
    }
}

#[test]
fn deeply_nested_documents_are_refused_without_overflowing_the_stack() {
    for depth in [200, 100_000] {
        let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert_eq!(media_type_of(nested.as_bytes(), None), None);
        assert!(manifest::parse(OCI_INDEX, nested.as_bytes()).is_err());
        let mut index = String::new();
        for _ in 0..depth {
            index.push_str(r#"{"schemaVersion":2,"manifests":[{"mediaType":"x","manifests":["#);
        }
        assert!(manifest::parse(OCI_INDEX, index.as_bytes()).is_err());
        assert!(manifest::parse(OCI_MANIFEST, index.as_bytes()).is_err());
        let _ = media_type_of(index.as_bytes(), Some(OCI_INDEX));
    }
}

#[test]
fn a_manifest_over_the_limit_is_refused_before_parsing() {
    let mut big = br#"{"schemaVersion":2,"manifests":[],"annotations":{"a":""#.to_vec();
    big.resize(MAX_MANIFEST_SIZE as usize + 1, b'x');
    big.extend_from_slice(br#""}}"#);
    let e = manifest::parse(OCI_INDEX, &big).unwrap_err();
    assert!(e.to_string().contains("manifest limit"), "{e}");
    // Exactly at the limit is still read.
    let mut edge = br#"{"schemaVersion":2,"manifests":[],"annotations":{"a":""#.to_vec();
    edge.resize(MAX_MANIFEST_SIZE as usize - 3, b'x');
    edge.extend_from_slice(br#""}}"#);
    assert_eq!(edge.len() as u64, MAX_MANIFEST_SIZE);
    assert!(manifest::parse(OCI_INDEX, &edge).is_ok());
}
