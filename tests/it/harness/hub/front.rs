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

/// The tags of `repository` in the registry behind `registry_front`, as the tag API shows
/// them; `None` when the registry does not know the repository.
pub(super) async fn upstream_tags(
    inner: &Inner,
    up: &Upstream,
    repository: &str,
) -> Option<Vec<HubTag>> {
    let client = reqwest::Client::new();
    let resp = client
        .get(format!("{}/v2/{repository}/tags/list", up.url))
        .send()
        .await
        .expect("list tags behind the Hub front");
    if resp.status() == StatusCode::NOT_FOUND {
        return None;
    }
    let listed: serde_json::Value = resp.json().await.expect("a tag list");
    let names: Vec<String> = listed["tags"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    for name in names {
        let resp = client
            .get(format!("{}/v2/{repository}/manifests/{name}", up.url))
            .header("accept", MANIFEST_TYPES)
            .send()
            .await
            .expect("read a manifest behind the Hub front");
        if !resp.status().is_success() {
            continue;
        }
        let digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .expect("the registry names the digest")
            .to_string();
        let doc: serde_json::Value = resp.json().await.expect("a manifest");
        let platforms = doc["manifests"]
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
        let last_pushed = inner
            .pushed
            .lock()
            .expect("hub pushed")
            .get(&(repository.to_string(), name.clone()))
            .cloned()
            .unwrap_or_else(|| "2026-01-01T00:00:00Z".into());
        out.push(HubTag {
            name,
            digest,
            last_pushed,
            platforms,
        });
    }
    Some(out)
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
pub(super) async fn delete_upstream_tag(
    inner: &Inner,
    up: &Upstream,
    repository: &str,
    tag: &str,
) -> Result<(), &'static str> {
    let listed = upstream_tags(inner, up, repository)
        .await
        .ok_or("object not found")?;
    if !listed.iter().any(|t| t.name == tag) {
        return Err("tag not found");
    }
    let dir = up
        .storage
        .join("docker/registry/v2/repositories")
        .join(repository)
        .join("_manifests/tags")
        .join(tag);
    std::fs::remove_dir_all(&dir).expect("remove the tag behind the Hub front");
    Ok(())
}
