//! Real images built in memory (valid tars, gzip, configs, manifests,
//! indexes, cosign signatures, artifacts) and a minimal registry client that
//! pushes them. The client is deliberately independent of the code under
//! test, so a bug there cannot hide itself in the fixtures.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use reqwest::header::{HeaderMap, ACCEPT, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use super::token::TokenServer;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const COSIGN_SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const HELM_CONFIG: &str = "application/vnd.cncf.helm.config.v1+json";
pub const HELM_CHART_LAYER: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";

/// Every manifest media type a registry may serve; used as the Accept
/// header so the registry never down-converts.
pub const MANIFEST_MEDIA_TYPES: [&str; 4] = [
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
];

/// Fixed so that fixtures (and thus digests) are identical on every run.
const CREATED: &str = "2024-01-01T00:00:00Z";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Oci,
    Docker,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    /// `sha256:<hex>` of `bytes`.
    pub digest: String,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

impl Blob {
    fn new(media_type: &str, bytes: Vec<u8>) -> Blob {
        Blob {
            digest: sha256_digest(&bytes),
            media_type: media_type.to_string(),
            bytes,
        }
    }

    /// The OCI descriptor for this blob.
    pub fn descriptor(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.bytes.len()})
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub media_type: String,
    /// Manifest or index JSON exactly as pushed.
    pub bytes: Vec<u8>,
    /// `sha256:<hex>` of `bytes`.
    pub digest: String,
    /// Config first, then layers; empty for an index.
    pub blobs: Vec<Blob>,
    /// Child manifests of an index; empty for a manifest.
    pub children: Vec<Image>,
}

impl Image {
    fn new(media_type: &str, manifest: &Value, blobs: Vec<Blob>, children: Vec<Image>) -> Image {
        // Pretty-printed on purpose: a copier that re-serializes the JSON
        // instead of moving the bytes changes the digest and fails tests.
        let bytes = serde_json::to_vec_pretty(manifest).expect("serialize manifest");
        Image {
            media_type: media_type.to_string(),
            digest: sha256_digest(&bytes),
            bytes,
            blobs,
            children,
        }
    }

    /// The descriptor pointing at this manifest, as an index would carry it.
    pub fn descriptor(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.bytes.len()})
    }

    pub fn config(&self) -> Option<&Blob> {
        self.blobs.first()
    }

    pub fn layers(&self) -> &[Blob] {
        self.blobs.get(1..).unwrap_or(&[])
    }

    /// Every blob of this image and its children, deduplicated by digest.
    pub fn all_blobs(&self) -> Vec<&Blob> {
        let mut out: Vec<&Blob> = Vec::new();
        for child in &self.children {
            for blob in child.all_blobs() {
                if !out.iter().any(|b| b.digest == blob.digest) {
                    out.push(blob);
                }
            }
        }
        for blob in &self.blobs {
            if !out.iter().any(|b| b.digest == blob.digest) {
                out.push(blob);
            }
        }
        out
    }
}

pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Deterministic, incompressible bytes (splitmix64), so layer sizes on the
/// wire are close to `size` and different seeds never collide.
fn pseudo_random(seed: u64, size: usize) -> Vec<u8> {
    let mut state = seed ^ 0x5851_f42d_4c95_7f2d;
    let mut out = Vec::with_capacity(size + 8);
    while out.len() < size {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(size);
    out
}

/// A gzip'd tar holding one file of `size` pseudo-random bytes from `seed`.
/// The media type is provisional: [`image`] sets the one its format needs.
pub fn layer(seed: u64, size: usize) -> Blob {
    let data = pseudo_random(seed, size);
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(size as u64);
    header.set_mode(0o644);
    // Fixed mtime keeps the tar (and digest) identical across runs.
    header.set_mtime(0);
    header.set_cksum();
    tar.append_data(&mut header, format!("fixture-{seed}.bin"), data.as_slice())
        .expect("append file to layer tar");
    let tar = tar.into_inner().expect("finish layer tar");

    // GzEncoder writes a zero mtime, so compression is deterministic too.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gzip layer");
    Blob::new(OCI_LAYER_GZIP, gz.finish().expect("finish layer gzip"))
}

/// sha256 of the uncompressed tar, i.e. the layer's `diff_id`.
fn diff_id(layer: &Blob) -> String {
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(layer.bytes.as_slice())
        .read_to_end(&mut tar)
        .expect("gunzip layer to compute diff_id (is it gzip?)");
    sha256_digest(&tar)
}

/// A single-platform image manifest with its config. Different `label`s
/// give different config (and manifest) digests for the same layers.
pub fn image(layers: &[Blob], os: &str, arch: &str, format: Format, label: &str) -> Image {
    let (manifest_type, config_type, layer_type) = match format {
        Format::Oci => (OCI_MANIFEST, OCI_CONFIG, OCI_LAYER_GZIP),
        Format::Docker => (DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER_GZIP),
    };
    let layers: Vec<Blob> = layers
        .iter()
        .map(|l| Blob {
            media_type: layer_type.to_string(),
            ..l.clone()
        })
        .collect();
    let config = json!({
        "architecture": arch,
        "os": os,
        "created": CREATED,
        "config": {"Labels": {"fixture": label}},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(diff_id).collect::<Vec<_>>()},
        "history": layers.iter().map(|_| json!({"created": CREATED, "created_by": "ferry test fixture"})).collect::<Vec<_>>(),
    });
    let config = Blob::new(
        config_type,
        serde_json::to_vec(&config).expect("serialize image config"),
    );
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": config.descriptor(),
        "layers": layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
    });
    let mut blobs = vec![config];
    blobs.extend(layers);
    Image::new(manifest_type, &manifest, blobs, Vec::new())
}

/// An OCI index or Docker manifest list over `children`, with each child's
/// platform read from its config.
pub fn index(children: Vec<Image>, format: Format) -> Image {
    let media_type = match format {
        Format::Oci => OCI_INDEX,
        Format::Docker => DOCKER_MANIFEST_LIST,
    };
    let manifests: Vec<Value> = children
        .iter()
        .map(|child| {
            let config = child
                .config()
                .expect("index child must be an image manifest with a config");
            let config: Value =
                serde_json::from_slice(&config.bytes).expect("parse child config JSON");
            let mut desc = child.descriptor();
            desc["platform"] = json!({"architecture": config["architecture"], "os": config["os"]});
            desc
        })
        .collect();
    let manifest = json!({"schemaVersion": 2, "mediaType": media_type, "manifests": manifests});
    Image::new(media_type, &manifest, Vec::new(), children)
}

/// A cosign-style signature for `subject`, to be pushed under the returned
/// tag (`sha256-<hex>.sig`) in the same repository. `repo` is the
/// docker-reference named in the signed payload.
pub fn cosign_signature(subject: &Image, repo: &str) -> (String, Image) {
    let payload = json!({
        "critical": {
            "identity": {"docker-reference": repo},
            "image": {"docker-manifest-digest": subject.digest},
            "type": "cosign container image signature",
        },
        "optional": null,
    });
    let layer = Blob::new(
        COSIGN_SIMPLESIGNING,
        serde_json::to_vec(&payload).expect("serialize simple-signing payload"),
    );
    // Not a real signature (nothing verifies it); deterministic so the
    // signature manifest digest is stable.
    let fake_signature = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(format!(
        "ferry-fixture-signature:{}",
        subject.digest
    )));
    let config = json!({
        "architecture": "",
        "os": "",
        "created": "0001-01-01T00:00:00Z",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
        "history": [{"created": "0001-01-01T00:00:00Z"}],
    });
    let config = Blob::new(
        OCI_CONFIG,
        serde_json::to_vec(&config).expect("serialize cosign config"),
    );
    let mut layer_desc = layer.descriptor();
    layer_desc["annotations"] = json!({"dev.cosignproject.cosign/signature": fake_signature});
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [layer_desc],
    });
    let hex = subject
        .digest
        .strip_prefix("sha256:")
        .expect("subject digest is sha256");
    (
        format!("sha256-{hex}.sig"),
        Image::new(OCI_MANIFEST, &manifest, vec![config, layer], Vec::new()),
    )
}

/// The DSSE envelope media type of cosign attestations (`.att` tags).
pub const DSSE_ENVELOPE: &str = "application/vnd.dsse.envelope.v1+json";
/// The OCI 1.1 empty config descriptor's media type.
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// An in-toto attestation as an OCI 1.1 artifact type.
pub const IN_TOTO: &str = "application/vnd.in-toto+json";
/// An SPDX SBOM as an OCI 1.1 artifact type.
pub const SPDX: &str = "application/spdx+json";

/// The hex of a sha256 digest.
pub fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").expect("a sha256 digest")
}

/// An in-toto statement (SLSA provenance shaped) about `subject`, in a DSSE envelope, as
/// `cosign attest` writes it.
fn in_toto_envelope(subject: &Image, repo: &str) -> Vec<u8> {
    use base64::Engine;
    let statement = json!({
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": "https://slsa.dev/provenance/v0.2",
        "subject": [{"name": repo, "digest": {"sha256": hex_of(&subject.digest)}}],
        "predicate": {"builder": {"id": "https://ferry.test/builder"}, "buildType": "https://ferry.test/build"},
    });
    let payload = base64::engine::general_purpose::STANDARD
        .encode(serde_json::to_vec(&statement).expect("statement"));
    serde_json::to_vec(&json!({
        "payloadType": "application/vnd.in-toto+json",
        "payload": payload,
        "signatures": [{"keyid": "", "sig": base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&payload))}],
    }))
    .expect("envelope")
}

/// A cosign tag-scheme artifact for `subject`: one layer of `layer_type` holding `payload`,
/// the generic image config, to be pushed under `sha256-<hex>.<suffix>`.
fn cosign_artifact(
    subject: &Image,
    suffix: &str,
    layer_type: &str,
    payload: Vec<u8>,
    annotations: Value,
) -> (String, Image) {
    let layer = Blob::new(layer_type, payload);
    let config = json!({
        "architecture": "", "os": "", "created": "0001-01-01T00:00:00Z", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
    });
    let config = Blob::new(OCI_CONFIG, serde_json::to_vec(&config).expect("config"));
    let mut layer_desc = layer.descriptor();
    layer_desc["annotations"] = annotations;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [layer_desc],
    });
    (
        format!("sha256-{}.{suffix}", hex_of(&subject.digest)),
        Image::new(OCI_MANIFEST, &manifest, vec![config, layer], Vec::new()),
    )
}

/// A cosign in-toto attestation (`sha256-<hex>.att`) of `subject`.
pub fn cosign_attestation(subject: &Image, repo: &str) -> (String, Image) {
    cosign_artifact(
        subject,
        "att",
        DSSE_ENVELOPE,
        in_toto_envelope(subject, repo),
        json!({"predicateType": "https://slsa.dev/provenance/v0.2"}),
    )
}

/// A cosign-attached SPDX SBOM (`sha256-<hex>.sbom`) of `subject`.
pub fn cosign_sbom(subject: &Image) -> (String, Image) {
    let sbom = json!({"spdxVersion": "SPDX-2.3", "name": format!("sbom of {}", subject.digest), "packages": []});
    cosign_artifact(
        subject,
        "sbom",
        "text/spdx+json",
        serde_json::to_vec(&sbom).expect("sbom"),
        json!({}),
    )
}

/// An OCI 1.1 referrer of `subject`: `artifactType`, the empty config, one layer holding
/// `payload`, the `subject` descriptor and an annotation, pushed untagged (by digest).
pub fn oci_referrer(subject: &Image, artifact_type: &str, payload: &[u8]) -> Image {
    let empty = Blob::new(OCI_EMPTY, b"{}".to_vec());
    let layer = Blob::new(artifact_type, payload.to_vec());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": empty.descriptor(),
        "layers": [layer.descriptor()],
        "subject": subject.descriptor(),
        "annotations": {"org.opencontainers.image.created": "2024-01-02T00:00:00Z"},
    });
    Image::new(OCI_MANIFEST, &manifest, vec![empty, layer], Vec::new())
}

/// An in-toto attestation of `subject` as an OCI 1.1 referrer.
pub fn oci_attestation(subject: &Image, repo: &str) -> Image {
    oci_referrer(subject, IN_TOTO, &in_toto_envelope(subject, repo))
}

/// The referrers tag schema's index (`sha256-<hex>` tag) listing `referrers`, as a client
/// pushing to a registry without the referrers API writes it.
pub fn fallback_index(referrers: &[&Image]) -> Image {
    let manifests: Vec<Value> = referrers
        .iter()
        .map(|r| {
            let m: Value = serde_json::from_slice(&r.bytes).expect("referrer json");
            let mut d = r.descriptor();
            if let Some(t) = m.get("artifactType") {
                d["artifactType"] = t.clone();
            }
            if let Some(a) = m.get("annotations") {
                d["annotations"] = a.clone();
            }
            d
        })
        .collect();
    let manifest = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
    Image::new(OCI_INDEX, &manifest, Vec::new(), Vec::new())
}

/// A non-container OCI artifact: an image manifest whose config has
/// `artifact_type_config` as media type, with one layer holding `payload`.
/// Helm configs get the Helm chart layer type; anything else gets
/// `application/octet-stream`.
pub fn artifact(artifact_type_config: &str, payload: &[u8]) -> Image {
    let layer_type = if artifact_type_config == HELM_CONFIG {
        HELM_CHART_LAYER
    } else {
        "application/octet-stream"
    };
    let config = json!({"name": "ferry-fixture", "version": "1.0.0", "apiVersion": "v2"});
    let config = Blob::new(
        artifact_type_config,
        serde_json::to_vec(&config).expect("serialize artifact config"),
    );
    let layer = Blob::new(layer_type, payload.to_vec());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [layer.descriptor()],
    });
    Image::new(OCI_MANIFEST, &manifest, vec![config, layer], Vec::new())
}

/// How a [`Pusher`] answers registry auth challenges.
#[derive(Clone)]
pub enum Credentials {
    /// Anonymous; Bearer challenges are answered with anonymous tokens.
    Anonymous,
    /// Basic challenges get these directly; Bearer challenges fetch a token
    /// from the realm with these as Basic credentials.
    Basic { user: String, password: String },
    /// Bearer challenges are answered with `TokenServer::mint`, bypassing
    /// the token endpoint so fixture set-up is not recorded.
    Minted(Arc<TokenServer>),
}

/// A minimal registry client for fixtures and assertions.
pub struct Pusher {
    base: String,
    credentials: Credentials,
    client: reqwest::Client,
    /// Last Authorization value that worked, sent up front to avoid a 401
    /// round trip per request; replaced when a new challenge comes.
    auth: Mutex<Option<String>>,
}

impl Pusher {
    /// `base_url` like `http://127.0.0.1:PORT`; `creds` are (user, password).
    pub fn new(base_url: &str, creds: Option<(&str, &str)>) -> Pusher {
        let credentials = match creds {
            Some((user, password)) => Credentials::Basic {
                user: user.to_string(),
                password: password.to_string(),
            },
            None => Credentials::Anonymous,
        };
        Pusher::with_credentials(base_url, credentials)
    }

    pub fn with_credentials(base_url: &str, credentials: Credentials) -> Pusher {
        Pusher::with_client(base_url, credentials, reqwest::Client::new())
    }

    /// With a client of the caller's (one that trusts a test CA, say).
    pub fn with_client(
        base_url: &str,
        credentials: Credentials,
        client: reqwest::Client,
    ) -> Pusher {
        Pusher {
            base: base_url.trim_end_matches('/').to_string(),
            credentials,
            client,
            auth: Mutex::new(None),
        }
    }

    /// Sends one request, answering a single 401 challenge (Basic or
    /// Bearer) and retrying once. `path` is either absolute (`http://...`)
    /// or relative to the registry (`/v2/...`). Returns whatever the
    /// registry finally answered, so tests can assert on failures too.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Response {
        let url = if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{}", self.base, path)
        };
        let build = |auth: Option<&str>| {
            let mut req = self.client.request(method.clone(), &url);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            if let Some(auth) = auth {
                req = req.header(reqwest::header::AUTHORIZATION, auth);
            }
            if let Some(body) = &body {
                req = req.body(body.clone());
            }
            req
        };

        let cached = self.auth.lock().expect("pusher auth poisoned").clone();
        let resp = build(cached.as_deref())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        if resp.status() != StatusCode::UNAUTHORIZED {
            return resp;
        }
        let Some(auth) = self.answer_challenge(resp.headers()).await else {
            return resp;
        };
        *self.auth.lock().expect("pusher auth poisoned") = Some(auth.clone());
        build(Some(&auth))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url} (after auth): {e}"))
    }

    /// Turns a `WWW-Authenticate` challenge into an Authorization value,
    /// or `None` if we cannot answer it.
    async fn answer_challenge(&self, headers: &HeaderMap) -> Option<String> {
        let challenge = headers.get(WWW_AUTHENTICATE)?.to_str().ok()?;
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        let params = parse_challenge_params(params);
        let param = |k: &str| {
            params
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
        };

        if scheme.eq_ignore_ascii_case("basic") {
            let Credentials::Basic { user, password } = &self.credentials else {
                return None;
            };
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            return Some(format!("Basic {encoded}"));
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let scopes: Vec<String> = param("scope")
            .map(|s| s.split(' ').map(str::to_string).collect())
            .unwrap_or_default();

        if let Credentials::Minted(server) = &self.credentials {
            let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
            return Some(format!("Bearer {}", server.mint(&scopes)));
        }

        let realm = param("realm")?;
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(service) = param("service") {
            query.push(("service", service));
        }
        for scope in &scopes {
            query.push(("scope", scope.clone()));
        }
        let mut req = self.client.get(&realm).query(&query);
        if let Credentials::Basic { user, password } = &self.credentials {
            req = req.basic_auth(user, Some(password));
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET token realm {realm}: {e}"));
        if !resp.status().is_success() {
            // Let the caller see the registry's 401 rather than panicking,
            // so tests can assert on rejected credentials.
            return None;
        }
        let body: Value = resp.json().await.expect("token response is JSON");
        let token = body["token"]
            .as_str()
            .or_else(|| body["access_token"].as_str())
            .expect("token response has token or access_token");
        Some(format!("Bearer {token}"))
    }

    /// Pushes `image` (children first, by digest; then blobs; then the
    /// manifest bytes exactly as built) and tags it `reference`.
    pub async fn push(&self, repo: &str, reference: &str, image: &Image) {
        for child in &image.children {
            Box::pin(self.push(repo, &child.digest, child)).await;
        }
        for blob in &image.blobs {
            self.push_blob(repo, blob).await;
        }
        let resp = self
            .send(
                Method::PUT,
                &format!("/v2/{repo}/manifests/{reference}"),
                &[(CONTENT_TYPE.as_str(), &image.media_type)],
                Some(image.bytes.clone()),
            )
            .await;
        expect_status(
            resp,
            StatusCode::CREATED,
            &format!("PUT manifest {repo}:{reference}"),
        )
        .await;
    }

    /// Monolithic blob upload (POST then PUT), skipped if already present.
    pub async fn push_blob(&self, repo: &str, blob: &Blob) {
        if self.blob_exists(repo, &blob.digest).await {
            return;
        }
        let resp = self
            .send(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/"),
                &[],
                None,
            )
            .await;
        let what = format!("POST blob upload {repo} {}", blob.digest);
        let resp = expect_status(resp, StatusCode::ACCEPTED, &what).await;
        let location = resp
            .headers()
            .get(LOCATION)
            .unwrap_or_else(|| panic!("{what}: no Location header"))
            .to_str()
            .expect("Location header is ASCII")
            .to_string();
        // Location may be relative and usually already has a query (_state).
        let location = if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            location
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{sep}digest={}", blob.digest.replace(':', "%3A"));
        let resp = self
            .send(
                Method::PUT,
                &url,
                &[(CONTENT_TYPE.as_str(), "application/octet-stream")],
                Some(blob.bytes.clone()),
            )
            .await;
        expect_status(
            resp,
            StatusCode::CREATED,
            &format!("PUT blob {repo} {}", blob.digest),
        )
        .await;
    }

    /// `(content type, bytes, Docker-Content-Digest)`, or `None` on 404.
    pub async fn manifest(&self, repo: &str, reference: &str) -> Option<(String, Vec<u8>, String)> {
        let accept = MANIFEST_MEDIA_TYPES.join(", ");
        let resp = self
            .send(
                Method::GET,
                &format!("/v2/{repo}/manifests/{reference}"),
                &[(ACCEPT.as_str(), &accept)],
                None,
            )
            .await;
        if resp.status() == StatusCode::NOT_FOUND {
            return None;
        }
        let what = format!("GET manifest {repo}:{reference}");
        let resp = expect_status(resp, StatusCode::OK, &what).await;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .map(|v| v.to_str().expect("header is ASCII").to_string())
                .unwrap_or_default()
        };
        let content_type = header(CONTENT_TYPE.as_str());
        let digest = header("docker-content-digest");
        let bytes = resp.bytes().await.expect("read manifest body").to_vec();
        Some((content_type, bytes, digest))
    }

    /// All tags of `repo`, sorted; empty if the repository does not exist.
    pub async fn tags(&self, repo: &str) -> Vec<String> {
        let mut tags = Vec::new();
        let mut next = Some(format!("/v2/{repo}/tags/list?n=1000"));
        while let Some(path) = next.take() {
            let resp = self.send(Method::GET, &path, &[], None).await;
            if resp.status() == StatusCode::NOT_FOUND {
                break;
            }
            let resp = expect_status(resp, StatusCode::OK, &format!("GET tags {repo}")).await;
            // Pagination: Link: </v2/...?last=x&n=1000>; rel="next"
            next = resp
                .headers()
                .get(reqwest::header::LINK)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| Some(v[v.find('<')? + 1..v.find('>')?].to_string()));
            let body: Value = resp.json().await.expect("tags list is JSON");
            if let Some(list) = body["tags"].as_array() {
                tags.extend(list.iter().filter_map(|t| t.as_str().map(str::to_string)));
            }
        }
        tags.sort();
        tags
    }

    pub async fn blob_exists(&self, repo: &str, digest: &str) -> bool {
        let resp = self
            .send(
                Method::HEAD,
                &format!("/v2/{repo}/blobs/{digest}"),
                &[],
                None,
            )
            .await;
        match resp.status() {
            StatusCode::OK => true,
            StatusCode::NOT_FOUND => false,
            other => panic!("HEAD blob {repo} {digest}: unexpected status {other}"),
        }
    }

    /// Blob content, or `None` on 404.
    pub async fn blob(&self, repo: &str, digest: &str) -> Option<Vec<u8>> {
        let resp = self
            .send(
                Method::GET,
                &format!("/v2/{repo}/blobs/{digest}"),
                &[],
                None,
            )
            .await;
        if resp.status() == StatusCode::NOT_FOUND {
            return None;
        }
        let resp = expect_status(resp, StatusCode::OK, &format!("GET blob {repo} {digest}")).await;
        Some(resp.bytes().await.expect("read blob body").to_vec())
    }
}

/// Panics with status and body unless `resp` has `expected` status.
async fn expect_status(resp: Response, expected: StatusCode, what: &str) -> Response {
    if resp.status() == expected {
        return resp;
    }
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    panic!("{what}: expected {expected}, got {status}: {body}");
}

/// Parses `key="value",key2=value2` from a WWW-Authenticate header; commas
/// inside quotes (scope lists like `pull,push`) do not split.
fn parse_challenge_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq].trim().trim_start_matches(',').trim().to_string();
        rest = &rest[eq + 1..];
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => v.push(c),
                }
            }
            value = v;
            rest = &quoted[end.min(quoted.len())..];
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_string();
            rest = &rest[end..];
        }
        out.push((key, value));
        rest = rest.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

/// Writes a valid OCI image layout at `dir`: `oci-layout`, `index.json`
/// with one entry per tag (`org.opencontainers.image.ref.name`), and
/// `blobs/sha256/<hex>` for every manifest, child, config and layer.
pub fn write_oci_layout(dir: &Path, images: &[(&str, &Image)]) {
    std::fs::create_dir_all(dir.join("blobs").join("sha256")).expect("create OCI layout dir");
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("write oci-layout");
    let mut manifests = Vec::new();
    for (tag, image) in images {
        write_layout_blobs(dir, image);
        let mut desc = image.descriptor();
        desc["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
        manifests.push(desc);
    }
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec_pretty(&index).expect("serialize index.json"),
    )
    .expect("write index.json");
}

/// Writes `image` (manifest, children, config and layers) under `dir/blobs/sha256/` without
/// listing it in `index.json`: untagged content of a layout, such as an OCI referrer that only
/// a fallback index names.
pub fn write_layout_blobs(dir: &Path, image: &Image) {
    let blobs = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).expect("create OCI layout blobs dir");
    let write_blob = |digest: &str, bytes: &[u8]| {
        std::fs::write(blobs.join(hex_of(digest)), bytes).expect("write OCI layout blob");
    };
    write_blob(&image.digest, &image.bytes);
    for blob in &image.blobs {
        write_blob(&blob.digest, &blob.bytes);
    }
    for child in &image.children {
        write_layout_blobs(dir, child);
    }
}

/// `skopeo inspect --raw` of `reference`, or skopeo's stderr on failure.
pub async fn try_skopeo_inspect_raw(
    reference: &str,
    creds: Option<(&str, &str)>,
) -> Result<Vec<u8>, String> {
    let mut cmd = tokio::process::Command::new("skopeo");
    cmd.args(["inspect", "--raw"]);
    // Our registries are plain HTTP on loopback; the flag only exists for
    // registry transports.
    if reference.starts_with("docker://") {
        cmd.arg("--tls-verify=false");
    }
    if let Some((user, password)) = creds {
        cmd.arg("--creds").arg(format!("{user}:{password}"));
    }
    cmd.arg(reference);
    let out = cmd.output().await.expect("run skopeo (is it installed?)");
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// `skopeo inspect --raw`; panics with skopeo's stderr on failure.
pub async fn skopeo_inspect_raw(reference: &str, creds: Option<(&str, &str)>) -> Vec<u8> {
    try_skopeo_inspect_raw(reference, creds)
        .await
        .unwrap_or_else(|stderr| panic!("skopeo inspect --raw {reference} failed: {stderr}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenge_with_commas_in_quotes() {
        let params = parse_challenge_params(
            r#"realm="http://127.0.0.1:1/token",service="svc",scope="repository:a/b:pull,push",error="insufficient_scope""#,
        );
        assert_eq!(
            params,
            vec![
                ("realm".to_string(), "http://127.0.0.1:1/token".to_string()),
                ("service".to_string(), "svc".to_string()),
                ("scope".to_string(), "repository:a/b:pull,push".to_string()),
                ("error".to_string(), "insufficient_scope".to_string()),
            ]
        );
        assert_eq!(
            parse_challenge_params("realm=plain, charset=\"UTF-8\""),
            vec![
                ("realm".to_string(), "plain".to_string()),
                ("charset".to_string(), "UTF-8".to_string()),
            ]
        );
    }

    #[test]
    fn fixtures_are_deterministic_and_distinct() {
        assert_eq!(layer(7, 1000), layer(7, 1000));
        assert_ne!(layer(7, 1000).digest, layer(8, 1000).digest);
        let l = [layer(7, 1000)];
        let a = image(&l, "linux", "amd64", Format::Oci, "a");
        assert_eq!(a, image(&l, "linux", "amd64", Format::Oci, "a"));
        assert_ne!(
            a.digest,
            image(&l, "linux", "amd64", Format::Oci, "b").digest
        );
        // Incompressible: gzip barely shrinks it.
        assert!(layer(1, 100_000).bytes.len() > 100_000);
    }
}
