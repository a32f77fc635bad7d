//! GHCR's registry side, kept in step with the packages: a push makes a version, deleting a
//! version deletes its manifest in the real registry, restoring it puts the manifest back.

use super::*;

/// A manifest `digest` pushed to `name` (`OWNER/PACKAGE`) through `registry_front`, under
/// `tag` or untagged: the version of that digest (new unless an active one has it) takes the
/// tag from whichever version had it.
pub(super) fn record_push(inner: &Inner, name: &str, digest: &str, tag: Option<&str>) {
    let Some((owner, package)) = name.split_once('/') else {
        return;
    };
    let mut guard = inner.data.lock().expect("github data");
    let data = &mut *guard;
    let key = (OwnerKind::Org, owner.to_string(), package.to_string());
    if !data.packages.contains_key(&key) {
        let id = data.next_id;
        data.next_id += 1;
        // A package a push makes is private (GHCR's default for a package no linked
        // repository gives its visibility).
        let package = Package {
            id,
            public: false,
            internal: false,
            versions: Vec::new(),
        };
        data.packages.insert(key.clone(), package);
    }
    let p = data.packages.get_mut(&key).expect("package just added");
    if let Some(tag) = tag {
        for v in &mut p.versions {
            v.tags.retain(|t| t != tag);
        }
    }
    let at = match p
        .versions
        .iter()
        .position(|v| v.digest == digest && !v.deleted)
    {
        Some(at) => at,
        None => {
            p.versions.push(FakeVersion {
                id: data.next_id,
                digest: digest.to_string(),
                created_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
                tags: Vec::new(),
                downloads: 0,
                deleted: false,
                deleted_at: None,
            });
            data.next_id += 1;
            p.versions.len() - 1
        }
    };
    p.versions[at].tags.extend(tag.map(str::to_string));
}

/// Tags of `name` (`OWNER/PACKAGE`) written into the storage of the registry behind
/// `registry_front` (a test's way to make thousands of tags cheaply), pointing at `digest`:
/// what pushes of those tags would have done to the package, in one step. Each tag moves to
/// the version of that digest (made if there is none).
pub(super) fn record_tags(inner: &Inner, name: &str, digest: &str, tags: &[String]) {
    let Some(first) = tags.first() else {
        return;
    };
    record_push(inner, name, digest, Some(first));
    let Some((owner, package)) = name.split_once('/') else {
        return;
    };
    let moving: std::collections::HashSet<&String> = tags.iter().collect();
    let mut data = inner.data.lock().expect("github data");
    let key = (OwnerKind::Org, owner.to_string(), package.to_string());
    let p = data
        .packages
        .get_mut(&key)
        .expect("made by the push of the first");
    for v in &mut p.versions {
        v.tags.retain(|t| !moving.contains(t));
    }
    let v = p
        .versions
        .iter_mut()
        .find(|v| v.digest == digest && !v.deleted)
        .expect("made by the push of the first");
    v.tags.extend(tags.iter().cloned());
}

/// What deleting a version does in the registry behind `registry_front`: its manifest goes,
/// and with it every tag pointing at it (GHCR's deletion removes the digest and its tags).
pub(super) async fn delete_upstream(
    inner: &Inner,
    key: &(OwnerKind, String, String),
    digest: &str,
) {
    let upstream = inner.upstream.lock().expect("github upstream").clone();
    let Some(upstream) = upstream else {
        return;
    };
    let (_, owner, package) = key;
    let url = format!("{upstream}/v2/{owner}/{package}/manifests/{digest}");
    // What GitHub keeps of a deleted version, so that restoring it brings it back.
    let got = reqwest::Client::new()
        .get(&url)
        .header("accept", MANIFEST_TYPES)
        .send()
        .await
        .expect("read the manifest behind the GHCR front");
    if got.status().is_success() {
        let media_type = got
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let bytes = got.bytes().await.expect("manifest bytes").to_vec();
        let at = format!("{owner}/{package}@{digest}");
        inner
            .kept
            .lock()
            .expect("kept")
            .insert(at, (media_type, bytes));
    }
    let resp = reqwest::Client::new()
        .delete(&url)
        .send()
        .await
        .expect("delete in the registry behind the GHCR front");
    assert!(
        resp.status().is_success(),
        "DELETE {url}: {}",
        resp.status()
    );
}

/// Every manifest media type, for reading one back from the registry behind the front.
pub(super) const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// What restoring a version does in the registry behind `registry_front`: the manifest its
/// deletion took comes back, by digest and under `tags`.
pub(super) async fn restore_upstream(
    inner: &Inner,
    key: &(OwnerKind, String, String),
    digest: &str,
    tags: &[String],
) {
    let upstream = inner.upstream.lock().expect("github upstream").clone();
    let Some(upstream) = upstream else {
        return;
    };
    let (_, owner, package) = key;
    let at = format!("{owner}/{package}@{digest}");
    let Some((media_type, bytes)) = inner.kept.lock().expect("kept").get(&at).cloned() else {
        return;
    };
    for reference in std::iter::once(digest).chain(tags.iter().map(String::as_str)) {
        let url = format!("{upstream}/v2/{owner}/{package}/manifests/{reference}");
        let resp = reqwest::Client::new()
            .put(&url)
            .header("content-type", &media_type)
            .body(bytes.clone())
            .send()
            .await
            .expect("put back in the registry behind the GHCR front");
        assert!(resp.status().is_success(), "PUT {url}: {}", resp.status());
    }
}
