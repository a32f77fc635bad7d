//! The engine against a source that serves whatever it likes for a digest (no verification):
//! nesting limits, cycles, descriptors that do not match what they describe. Nothing may be
//! written at the target for an image that fails.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;

use super::*;
use crate::copy::Silent;
use crate::registry::manifest::{OCI_INDEX, OCI_MANIFEST};
use crate::registry::verifying::VerifyingStream;
use std::time::Duration;

use crate::reference::Digest;
use crate::registry::manifest::{Desc, MAX_INDEX_DEPTH};
use crate::registry::{
    BlobStream, BlobUpload, Manifest, ManifestHead, Pushed, Registry, RegistryError, Result,
};
use futures::StreamExt;

/// An in-memory registry. As a source it answers a manifest request with what is stored
/// under that reference, unverified: the lies a broken or hostile registry could tell if
/// ferry did not check. As a target it records what was written.
#[derive(Default)]
struct Memory {
    manifests: HashMap<String, Manifest>,
    blobs: HashMap<Digest, Bytes>,
    written: Mutex<Vec<String>>,
}

impl Memory {
    fn put(&mut self, reference: &str, media_type: &str, bytes: &str) -> Desc {
        let digest =
            Digest::parse(reference).unwrap_or_else(|| Digest::sha256_of(bytes.as_bytes()));
        self.manifests.insert(
            reference.to_string(),
            Manifest {
                media_type: media_type.to_string(),
                bytes: Bytes::from(bytes.to_string()),
                digest: digest.clone(),
            },
        );
        Desc {
            digest,
            size: bytes.len() as u64,
            media_type: media_type.to_string(),
            platform: None,
            about: None,
        }
    }

    fn blob(&mut self, data: &'static [u8]) -> String {
        let d = Digest::sha256_of(data);
        self.blobs.insert(d.clone(), Bytes::from_static(data));
        format!(
            r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{d}","size":{}}}"#,
            data.len()
        )
    }

    fn written(&self) -> Vec<String> {
        self.written.lock().unwrap().clone()
    }
}

fn image_json(config: &str, layers: &[String]) -> String {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{config},"layers":[{}]}}"#,
        layers.join(",")
    )
}

fn index_json(children: &[(&Digest, u64, &str)]) -> String {
    let children: Vec<String> = children
        .iter()
        .map(|(d, size, mt)| format!(r#"{{"mediaType":"{mt}","digest":"{d}","size":{size}}}"#))
        .collect();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{}]}}"#,
        children.join(",")
    )
}

#[async_trait]
impl Registry for Memory {
    fn name(&self) -> &str {
        "memory.test"
    }
    async fn check_push(&self, _repo: &str) -> Result<()> {
        Ok(())
    }
    async fn list_repositories(&self, _prefix: &str) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
    async fn list_tags(&self, _repo: &str) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
    async fn head_manifest(&self, _repo: &str, reference: &str) -> Result<Option<ManifestHead>> {
        Ok(self.manifests.get(reference).map(|m| ManifestHead {
            digest: m.digest.clone(),
            media_type: Some(m.media_type.clone()),
        }))
    }
    async fn get_manifest(&self, repo: &str, reference: &str) -> Result<Manifest> {
        self.manifests
            .get(reference)
            .cloned()
            .ok_or_else(|| RegistryError::NotFound {
                what: format!("manifest {reference}"),
                url: format!("memory.test/{repo}"),
            })
    }
    async fn put_manifest(&self, repo: &str, reference: &str, _m: &Manifest) -> Result<Pushed> {
        self.written
            .lock()
            .unwrap()
            .push(format!("manifest {repo}:{reference}"));
        Ok(Pushed::default())
    }
    async fn blob_exists(&self, _repo: &str, _digest: &Digest) -> Result<bool> {
        Ok(false)
    }
    async fn get_blob(&self, repo: &str, digest: &Digest, size: u64) -> Result<BlobStream> {
        let data = self.blobs.get(digest).cloned().unwrap_or_default();
        let s = futures::stream::iter([Ok(data)]);
        Ok(Box::pin(VerifyingStream::new(
            s,
            format!("memory.test/{repo}/{digest}"),
            digest.clone(),
            size,
        )))
    }
    async fn put_blob(&self, repo: &str, upload: BlobUpload<'_>) -> Result<()> {
        let mut data = upload
            .source
            .open(&crate::reference::Midstate::new())
            .await?;
        while let Some(chunk) = data.next().await {
            chunk?;
        }
        self.written
            .lock()
            .unwrap()
            .push(format!("blob {repo}@{}", upload.digest));
        Ok(())
    }
    async fn delete_manifest(&self, _repo: &str, _digest: &Digest) -> Result<Option<String>> {
        Ok(None)
    }
    async fn delete_tag(
        &self,
        _repo: &str,
        _tag: &str,
        _digest: &Digest,
    ) -> Result<Option<String>> {
        Ok(None)
    }
    async fn mount_blob(&self, _repo: &str, _digest: &Digest, _from: &str) -> Result<bool> {
        Ok(false)
    }
}

/// Copy `reference` from `src` into an empty target; the error (if any) and what was written.
async fn copy(src: Memory, reference: &str) -> (Result<Outcome, CopyError>, Vec<String>) {
    let target = Arc::new(Memory::default());
    let item = Item {
        source: Endpoint {
            registry: Arc::new(src),
            repo: "team/app".into(),
        },
        source_ref: reference.to_string(),
        target: Endpoint {
            registry: target.clone(),
            repo: "team/app".into(),
        },
        target_tag: Some("v1".into()),
        subject: None,
        platforms: None,
        rule: 1,
        after: None,
        seen: None,
        read: None,
        contest: None,
    };
    let engine = Engine::new(Arc::new(Silent), 4);
    let result = tokio::time::timeout(Duration::from_secs(10), engine.copy_one(&item))
        .await
        .expect("no hang");
    (result, target.written())
}

fn error_text(e: &CopyError) -> String {
    crate::error::chain(e)
}

/// A chain of `levels` indexes, each naming the next, around one image.
fn nested(levels: usize) -> (Memory, Digest) {
    let mut src = Memory::default();
    let config = src.blob(b"{}");
    let layer = src.blob(b"layer bytes");
    let mut top = src.put("", OCI_MANIFEST, &image_json(&config, &[layer]));
    let mut mt = OCI_MANIFEST;
    for _ in 0..levels {
        let json = index_json(&[(&top.digest, top.size, mt)]);
        let d = Digest::sha256_of(json.as_bytes());
        top = src.put(d.as_str(), OCI_INDEX, &json);
        mt = OCI_INDEX;
    }
    // By digest too, for the children.
    let by_digest: Vec<(String, Manifest)> = src
        .manifests
        .values()
        .map(|m| (m.digest.to_string(), m.clone()))
        .collect();
    src.manifests.extend(by_digest);
    (src, top.digest)
}

#[tokio::test]
async fn indexes_nest_up_to_the_limit_and_no_deeper() {
    let (src, top) = nested(MAX_INDEX_DEPTH);
    let (result, written) = copy(src, top.as_str()).await;
    assert!(matches!(result, Ok(Outcome::Copied { .. })), "{result:?}");
    assert_eq!(written.len(), 2 + MAX_INDEX_DEPTH + 1, "{written:?}");

    let (src, top) = nested(MAX_INDEX_DEPTH + 1);
    let (result, written) = copy(src, top.as_str()).await;
    let e = result.expect_err("one level too deep");
    let text = error_text(&e);
    assert!(
        text.contains(&format!(
            "indexes nested deeper than {MAX_INDEX_DEPTH} levels"
        )),
        "{text}"
    );
    assert!(text.contains("memory.test/team/app@sha256:"), "{text}");
    assert!(written.is_empty(), "nothing written: {written:?}");
}

#[tokio::test]
async fn an_index_that_names_itself_or_an_ancestor_is_a_cycle() {
    let a = Digest::sha256_of(b"index a");
    let b = Digest::sha256_of(b"index b");
    // A names itself.
    let mut src = Memory::default();
    src.put(a.as_str(), OCI_INDEX, &index_json(&[(&a, 1, OCI_INDEX)]));
    let (result, written) = copy(src, a.as_str()).await;
    let text = error_text(&result.expect_err("a cycle"));
    assert!(
        text.contains(&format!("names {a}")) && text.contains("cycle"),
        "{text}"
    );
    assert!(written.is_empty(), "{written:?}");

    // A names B, B names A; A's descriptor of B is right, so only the cycle is wrong.
    let mut src = Memory::default();
    let b_desc = src.put(b.as_str(), OCI_INDEX, &index_json(&[(&a, 1, OCI_INDEX)]));
    src.put(
        a.as_str(),
        OCI_INDEX,
        &index_json(&[(&b, b_desc.size, OCI_INDEX)]),
    );
    let (result, written) = copy(src, a.as_str()).await;
    let text = error_text(&result.expect_err("a cycle"));
    assert!(
        text.contains(&format!("names {a}")) && text.contains("cycle"),
        "{text}"
    );
    assert!(written.is_empty(), "{written:?}");
}

#[tokio::test]
async fn descriptors_that_lie_cost_the_image_and_write_nothing() {
    // A child manifest bigger than its index says.
    let (mut src, _) = nested(0);
    let image = src
        .manifests
        .values()
        .find(|m| m.media_type == OCI_MANIFEST)
        .unwrap()
        .clone();
    let json = index_json(&[(&image.digest, image.bytes.len() as u64 - 1, OCI_MANIFEST)]);
    let top = Digest::sha256_of(json.as_bytes());
    src.put(top.as_str(), OCI_INDEX, &json);
    let (result, written) = copy(src, top.as_str()).await;
    let text = error_text(&result.expect_err("size lie"));
    assert!(text.contains("the index says"), "{text}");
    assert!(written.is_empty(), "{written:?}");

    // A layer whose descriptor says fewer bytes than the blob has.
    let mut src = Memory::default();
    let config = src.blob(b"{}");
    let layer = src
        .blob(b"layer bytes")
        .replace("\"size\":11", "\"size\":5");
    let json = image_json(&config, &[layer]);
    let d = Digest::sha256_of(json.as_bytes());
    src.put(d.as_str(), OCI_MANIFEST, &json);
    let (result, written) = copy(src, d.as_str()).await;
    let text = error_text(&result.expect_err("blob size lie"));
    assert!(text.contains("size mismatch"), "{text}");
    assert!(
        written.iter().all(|w| !w.starts_with("manifest")),
        "no manifest over a missing blob: {written:?}"
    );

    // Descriptors with an invalid digest or a negative size: refused at parse time.
    for bad in [
        image_json(
            r#"{"mediaType":"x/y","digest":"sha256:0123","size":2}"#,
            &[],
        ),
        image_json(
            &format!(
                r#"{{"mediaType":"x/y","digest":"{}","size":-2}}"#,
                Digest::sha256_of(b"{}")
            ),
            &[],
        ),
    ] {
        let mut src = Memory::default();
        let d = Digest::sha256_of(bad.as_bytes());
        src.put(d.as_str(), OCI_MANIFEST, &bad);
        let (result, written) = copy(src, d.as_str()).await;
        let text = error_text(&result.expect_err("invalid descriptor"));
        assert!(
            text.contains(&format!("memory.test/team/app@{d}")),
            "{text}"
        );
        assert!(written.is_empty(), "{written:?}");
    }
}
