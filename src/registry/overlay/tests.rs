//! Unit tests of [`super`].

use super::*;
use crate::registry::layout::LayoutRegistry;

fn manifest(body: &str) -> Manifest {
    let bytes = bytes::Bytes::from(body.to_string());
    Manifest {
        media_type: manifest::OCI_MANIFEST.to_string(),
        digest: Digest::sha256_of(&bytes),
        bytes,
    }
}

fn image(n: u32) -> Manifest {
    manifest(&format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{}","size":{n}}},"layers":[]}}"#,
        manifest::OCI_MANIFEST,
        "a".repeat(64)
    ))
}

#[tokio::test]
async fn writes_stay_in_memory_and_reads_see_them() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("new/layout").display().to_string();
    let o = Overlay::new(Arc::new(LayoutRegistry::new()));
    // A layout that does not exist: the run would create it.
    assert!(o.list_tags(&repo).await.is_err());
    let m = image(1);
    o.put_manifest(&repo, "v1", &m).await.unwrap();
    assert_eq!(o.list_tags(&repo).await.unwrap(), vec!["v1".to_string()]);
    let head = o.head_manifest(&repo, "v1").await.unwrap().unwrap();
    assert_eq!(head.digest, m.digest);
    assert_eq!(o.get_manifest(&repo, "v1").await.unwrap().bytes, m.bytes);
    // Another spelling of the same layout path is the same repository.
    let dotted = format!("./{}", repo.trim_start_matches('/'));
    if !repo.starts_with('/') {
        assert!(o.head_manifest(&dotted, "v1").await.unwrap().is_some());
    }
    // A wildcard over the parent lists it, named as the layout registry would.
    let parent = format!("{}/new/", dir.path().display());
    assert_eq!(
        o.list_repositories(&parent).await.unwrap(),
        vec![format!("{parent}layout")]
    );
    assert!(!dir.path().join("new").exists(), "nothing written");
}

/// A layout in `dir`, written for real: `v1` and `latest` on one image, `v2` on another.
async fn two_images(dir: &std::path::Path) -> (String, Arc<LayoutRegistry>, Manifest, Manifest) {
    let repo = dir.join("l").display().to_string();
    let layouts = Arc::new(LayoutRegistry::new());
    let (one, two) = (image(1), image(2));
    for (tag, m) in [("v1", &one), ("latest", &one), ("v2", &two)] {
        layouts.put_manifest(&repo, tag, m).await.unwrap();
    }
    (repo, layouts, one, two)
}

#[tokio::test]
async fn deleting_a_manifest_takes_every_tag_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, layouts, one, _) = two_images(dir.path()).await;
    let o = Overlay::new(layouts.clone());
    o.delete_manifest(&repo, &one.digest).await.unwrap();
    assert_eq!(o.list_tags(&repo).await.unwrap(), vec!["v2".to_string()]);
    assert!(o.head_manifest(&repo, "latest").await.unwrap().is_none());
    assert!(o.get_manifest(&repo, one.digest.as_str()).await.is_err());
    // Untouched underneath.
    assert_eq!(layouts.list_tags(&repo).await.unwrap().len(), 3);
    // Pushed again (a copy after the deletion): back.
    o.put_manifest(&repo, "v1", &one).await.unwrap();
    assert_eq!(
        o.list_tags(&repo).await.unwrap(),
        vec!["v1".to_string(), "v2".to_string()]
    );
}

#[tokio::test]
async fn deleting_a_tag_takes_that_tag_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, layouts, one, _) = two_images(dir.path()).await;
    let o = Overlay::new(layouts.clone());
    let before = o.requests();
    assert_eq!(
        o.delete_tag(&repo, "latest", &one.digest).await.unwrap(),
        None
    );
    // The check (a HEAD) and the deletion.
    assert_eq!(o.requests() - before, 2);
    assert_eq!(o.list_tags(&repo).await.unwrap(), ["v1", "v2"]);
    assert!(o.head_manifest(&repo, "latest").await.unwrap().is_none());
    assert!(o.get_manifest(&repo, "latest").await.is_err());
    assert_eq!(
        o.get_manifest(&repo, "v1").await.unwrap().digest,
        one.digest
    );
    assert_eq!(
        o.get_manifest(&repo, one.digest.as_str())
            .await
            .unwrap()
            .bytes,
        one.bytes
    );
    // Gone: nothing more to do. Elsewhere: left alone.
    assert_eq!(
        o.delete_tag(&repo, "latest", &one.digest).await.unwrap(),
        None
    );
    assert!(matches!(
        o.delete_tag(&repo, "v2", &one.digest).await,
        Err(RegistryError::TagMoved { .. })
    ));
    assert_eq!(o.list_tags(&repo).await.unwrap(), ["v1", "v2"]);
    // Untouched underneath.
    assert_eq!(layouts.list_tags(&repo).await.unwrap().len(), 3);
    // Pushed again: back.
    o.put_manifest(&repo, "latest", &one).await.unwrap();
    assert_eq!(o.list_tags(&repo).await.unwrap(), ["latest", "v1", "v2"]);
}

/// Issue 24: where the plan deletes nothing, the overlay keeps nothing per tag it reads (a
/// no-op plan of 100,000 tags held every tag's digest); were something deleted all the same,
/// its answers stay those of an overlay that remembers, at the cost of asking again.
#[tokio::test]
async fn an_overlay_where_nothing_is_deleted_keeps_nothing_per_tag() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, layouts, one, two) = two_images(dir.path()).await;
    let forgetful = Overlay::new(layouts.clone()).deletes_nothing();
    let remembering = Overlay::new(layouts.clone());
    for o in [&forgetful, &remembering] {
        for tag in ["v1", "latest", "v2"] {
            o.head_manifest(&repo, tag).await.unwrap().unwrap();
        }
        assert_eq!(
            o.get_manifest(&repo, "v2").await.unwrap().digest,
            two.digest
        );
    }
    let kept = |o: &Overlay| o.with(&repo, |v| v.seen.len());
    assert_eq!((kept(&forgetful), kept(&remembering)), (0, 3));
    for o in [&forgetful, &remembering] {
        o.delete_manifest(&repo, &one.digest).await.unwrap();
        assert_eq!(o.list_tags(&repo).await.unwrap(), ["v2"]);
        assert!(o.head_manifest(&repo, "latest").await.unwrap().is_none());
        assert!(o.get_manifest(&repo, "v1").await.is_err());
    }
    // The listing asked underneath for the two tags it had not kept (and v2's).
    assert!(forgetful.requests() > remembering.requests());
}

/// A registry whose own API keeps records (GHCR's versions, Docker Hub's tags), empty.
struct Records(RecordStyle);

#[async_trait]
impl Registry for Records {
    fn name(&self) -> &str {
        "records.example"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            record_style: self.0,
            ..Capabilities::default()
        }
    }
    async fn check_push(&self, _: &str) -> Result<()> {
        Ok(())
    }
    async fn list_repositories(&self, _: &str) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
    async fn list_tags(&self, _: &str) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
    async fn head_manifest(&self, _: &str, _: &str) -> Result<Option<ManifestHead>> {
        Ok(None)
    }
    async fn get_manifest(&self, repo: &str, reference: &str) -> Result<Manifest> {
        Err(RegistryError::NotFound {
            what: "manifest".into(),
            url: format!("{repo}:{reference}"),
        })
    }
    async fn put_manifest(&self, _: &str, _: &str, _: &Manifest) -> Result<Pushed> {
        unreachable!("an overlay never writes through")
    }
    async fn blob_exists(&self, _: &str, _: &Digest) -> Result<bool> {
        Ok(false)
    }
    async fn get_blob(&self, _: &str, _: &Digest, _: u64) -> Result<BlobStream> {
        unreachable!()
    }
    async fn put_blob(&self, _: &str, _: BlobUpload<'_>) -> Result<()> {
        unreachable!("an overlay never writes through")
    }
    async fn delete_manifest(&self, _: &str, _: &Digest) -> Result<Option<String>> {
        unreachable!("an overlay never writes through")
    }
    async fn delete_tag(&self, _: &str, _: &str, _: &Digest) -> Result<Option<String>> {
        unreachable!("an overlay never writes through")
    }
    async fn manifest_records(&self, _: &str) -> Result<Option<Vec<ManifestRecord>>> {
        Ok(Some(Vec::new()))
    }
    async fn mount_blob(&self, _: &str, _: &Digest, _: &str) -> Result<bool> {
        unreachable!("an overlay never writes through")
    }
}

#[tokio::test]
async fn records_grow_the_way_the_registry_keeps_them() {
    let index = manifest(&format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{}","digest":"{}","size":10,"platform":{{"os":"linux","architecture":"arm64"}}}}]}}"#,
        manifest::OCI_INDEX,
        manifest::OCI_MANIFEST,
        image(3).digest
    ));
    let index = Manifest {
        media_type: manifest::OCI_INDEX.to_string(),
        ..index
    };
    let child = image(3);
    for style in [RecordStyle::Versions, RecordStyle::Tags] {
        let o = Overlay::new(Arc::new(Records(style)));
        o.put_manifest("o/p", child.digest.as_str(), &child)
            .await
            .unwrap();
        o.put_manifest("o/p", "v1", &index).await.unwrap();
        let records = o.manifest_records("o/p").await.unwrap().unwrap();
        let tagged = records.iter().find(|r| r.digest == index.digest).unwrap();
        assert_eq!(tagged.tags, vec!["v1".to_string()]);
        assert!(tagged.created.is_some());
        match style {
            // GHCR: the child is a version of its own, untagged; children are read.
            RecordStyle::Versions => {
                assert_eq!(records.len(), 2);
                assert!(tagged.children.is_none());
            }
            // Docker Hub: one entry per tagged digest, with the index's platforms.
            _ => {
                assert_eq!(records.len(), 1);
                assert_eq!(
                    tagged.children,
                    Some(vec![(child.digest.clone(), Some("linux/arm64".into()))])
                );
            }
        }
        o.delete_manifest("o/p", &index.digest).await.unwrap();
        let left = o.manifest_records("o/p").await.unwrap().unwrap();
        assert!(left.iter().all(|r| r.digest != index.digest));
    }
}

#[tokio::test]
async fn records_lose_a_deleted_tag_the_way_the_registry_keeps_them() {
    let m = image(4);
    for style in [RecordStyle::Versions, RecordStyle::Tags] {
        let o = Overlay::new(Arc::new(Records(style)));
        o.put_manifest("o/p", "v1", &m).await.unwrap();
        o.put_manifest("o/p", "v2", &m).await.unwrap();
        o.delete_tag("o/p", "v2", &m.digest).await.unwrap();
        let records = o.manifest_records("o/p").await.unwrap().unwrap();
        assert_eq!(records.len(), 1, "{style:?}");
        assert_eq!(records[0].tags, vec!["v1".to_string()], "{style:?}");
        o.delete_tag("o/p", "v1", &m.digest).await.unwrap();
        let records = o.manifest_records("o/p").await.unwrap().unwrap();
        match style {
            // GHCR: the version stays, untagged.
            RecordStyle::Versions => assert!(records[0].tags.is_empty()),
            // Docker Hub lists tags: an image without one is not listed.
            _ => assert!(records.is_empty()),
        }
    }
}

/// Issue 23, item 3: a simulation answers with the capabilities of the registry underneath
/// (so `plan` asks what `run` asks), except that no upload of its own outlives the process.
#[test]
fn an_overlay_has_the_capabilities_underneath_but_no_resumable_uploads() {
    use crate::registry::memory::MemoryRegistry;
    for style in [RecordStyle::None, RecordStyle::Versions, RecordStyle::Tags] {
        for (flag, resumable) in [(false, false), (true, true)] {
            let under = Capabilities {
                record_style: style,
                resumable_uploads: resumable,
                counts_pulls: flag,
                can_mount: !flag,
                lists_tag_digests: flag,
            };
            let reg = MemoryRegistry::new("reg.example").with_capabilities(under);
            let o = Overlay::new(Arc::new(reg));
            let expected = Capabilities {
                resumable_uploads: false,
                ..under
            };
            assert_eq!(o.capabilities(), expected);
        }
    }
    let layouts = Overlay::new(Arc::new(LayoutRegistry::new()));
    assert!(!layouts.capabilities().can_mount);
}

/// Issue 24: a registry's listing of tags with digests, as the plan sees it, says what the
/// run's writes would leave: a tag put moves, a deleted manifest's tags are gone, and a new
/// repository lists what the simulation put there.
#[tokio::test]
async fn a_tag_listing_shows_the_simulated_writes() {
    use crate::registry::memory::MemoryRegistry;
    let caps = Capabilities {
        lists_tag_digests: true,
        ..Capabilities::default()
    };
    let reg = MemoryRegistry::new("reg.example").with_capabilities(caps);
    let a = reg.push_image("team/app", "a", &[b"one"], "linux/amd64");
    let b = reg.push_image("team/app", "b", &[b"two"], "linux/amd64");
    let o = Overlay::new(Arc::new(reg));
    let m = image(3);
    o.put_manifest("team/app", "a", &m).await.unwrap();
    o.delete_manifest("team/app", &b).await.unwrap();
    o.put_manifest("team/app", "c", &m).await.unwrap();
    let listed = o.tag_digests("team/app", 10).await.unwrap().unwrap();
    assert_eq!(listed.get("a"), Some(&m.digest), "was {a}");
    assert_eq!(listed.get("b"), None);
    assert_eq!(listed.get("c"), Some(&m.digest));
    assert_eq!(listed.len(), 2);
    o.put_manifest("new/app", "v1", &m).await.unwrap();
    let fresh = o.tag_digests("new/app", 10).await.unwrap().unwrap();
    assert_eq!(fresh.get("v1"), Some(&m.digest));
    // A registry without such a listing: none, as underneath.
    let many = Overlay::new(Arc::new(MemoryRegistry::new("plain.example")));
    assert!(many.tag_digests("team/app", 10).await.unwrap().is_none());
}
