//! Docker Hub's registry side: a push creates the repository and the tag; the tag API reads
//! the real registry behind the front.

use super::*;

/// A manifest pushed through `registry_front`: Hub creates the repository (public, as an
/// account's default visibility is) and, for a tag, records when it was pushed.
pub(super) fn record_push(inner: &Inner, name: &str, reference: &str) {
    let Some((namespace, repo)) = name.split_once('/') else {
        return;
    };
    {
        let mut repos = inner.repos.lock().expect("hub repos");
        let list = repos.entry(namespace.to_string()).or_default();
        if !list.iter().any(|(r, _)| r == repo) {
            list.push((repo.to_string(), false));
        }
    }
    if !reference.starts_with("sha256:") {
        let now = humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string();
        inner
            .pushed
            .lock()
            .expect("hub pushed")
            .insert((name.to_string(), reference.to_string()), now);
    }
}

/// The manifest types a tag may name, for reading them from the registry.
pub(super) const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// Where the registry behind `registry_front` keeps `repository`'s tags: distribution keeps
/// each as `_manifests/tags/<tag>/current/link`, naming the digest it points at.
fn tags_dir(up: &Upstream, repository: &str) -> std::path::PathBuf {
    up.storage
        .join("docker/registry/v2/repositories")
        .join(repository)
        .join("_manifests/tags")
}

/// The tags of `repository` in the registry behind `registry_front`, sorted, read from its
/// storage as distribution reads them; `None` when the registry does not know the repository.
pub(super) fn upstream_tag_names(up: &Upstream, repository: &str) -> Option<Vec<String>> {
    let dir = tags_dir(up, repository);
    if !dir.parent()?.exists() {
        return None;
    }
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    Some(names)
}

/// Tag `name` of `repository` as the tag API shows it: the digest it points at and, for an
/// index, its platforms (read from the registry once per digest); `None` when it does not
/// resolve.
async fn upstream_tag(
    inner: &Inner,
    up: &Upstream,
    repository: &str,
    name: &str,
) -> Option<HubTag> {
    let link = tags_dir(up, repository).join(name).join("current/link");
    let digest = std::fs::read_to_string(link).ok()?.trim().to_string();
    let platforms = platforms_of(inner, up, repository, &digest).await?;
    let last_pushed = inner
        .pushed
        .lock()
        .expect("hub pushed")
        .get(&(repository.to_string(), name.to_string()))
        .cloned()
        .unwrap_or_else(|| "2026-01-01T00:00:00Z".into());
    Some(HubTag {
        name: name.to_string(),
        digest,
        last_pushed,
        platforms,
    })
}

/// The platforms of manifest `digest` (none for an image), read from the registry the first
/// time (a digest's content never changes); `None` when the registry cannot read it.
async fn platforms_of(
    inner: &Inner,
    up: &Upstream,
    repository: &str,
    digest: &str,
) -> Option<Platforms> {
    if let Some(known) = inner.platforms.lock().expect("hub platforms").get(digest) {
        return Some(known.clone());
    }
    let resp = reqwest::Client::new()
        .get(format!("{}/v2/{repository}/manifests/{digest}", up.url))
        .header("accept", MANIFEST_TYPES)
        .send()
        .await
        .expect("read a manifest behind the Hub front");
    if !resp.status().is_success() {
        return None;
    }
    let doc: serde_json::Value = resp.json().await.expect("a manifest");
    let platforms: Platforms = doc["manifests"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|c| {
                    let field =
                        |k: &str| c["platform"][k].as_str().unwrap_or("unknown").to_string();
                    (
                        c["digest"].as_str().unwrap_or_default().to_string(),
                        field("os"),
                        field("architecture"),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let mut known = inner.platforms.lock().expect("hub platforms");
    known.insert(digest.to_string(), platforms.clone());
    Some(platforms)
}

/// How many tags `repository` has and the `size` of them from `start` on, as the tag API
/// pages them: the registry's behind `registry_front`, else what `set_tags` gave it; `None`
/// for a repository unknown there.
pub(super) async fn tags_page(
    inner: &Inner,
    repository: &str,
    start: usize,
    size: usize,
) -> Option<(usize, Vec<HubTag>)> {
    let Some(up) = upstream(inner) else {
        let all = set_tags_of(inner, repository)?;
        let page = all.iter().skip(start).take(size).cloned().collect();
        return Some((all.len(), page));
    };
    let names = upstream_tag_names(&up, repository)?;
    let mut page = Vec::new();
    for name in names.iter().skip(start).take(size) {
        page.extend(upstream_tag(inner, &up, repository, name).await);
    }
    Some((names.len(), page))
}

/// What `set_tags` gave `repository`.
pub(super) fn set_tags_of(inner: &Inner, repository: &str) -> Option<Vec<HubTag>> {
    inner
        .tags
        .lock()
        .expect("hub tags")
        .get(repository)
        .cloned()
}

pub(super) fn upstream(inner: &Inner) -> Option<Upstream> {
    inner.upstream.lock().expect("hub upstream").clone()
}

/// Removes `tag` of `repository` from the registry behind `registry_front`, as distribution
/// removes a tag; or Hub's 404 message when there is no such repository or tag.
pub(super) fn delete_upstream_tag(
    up: &Upstream,
    repository: &str,
    tag: &str,
) -> Result<(), &'static str> {
    let listed = upstream_tag_names(up, repository).ok_or("object not found")?;
    if !listed.iter().any(|t| t == tag) {
        return Err("tag not found");
    }
    let dir = tags_dir(up, repository).join(tag);
    std::fs::remove_dir_all(&dir).expect("remove the tag behind the Hub front");
    Ok(())
}
