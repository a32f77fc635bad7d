//! In use: the images that run, or are about to, gathered from the plan's `[in_use]` sources
//! (Kubernetes clusters, GitOps files, ArgoCD Applications and what its Image Updater deploys
//! next, a GitOps repository's recent commits) so retention keeps them as it keeps a kept
//! tag. A source that cannot be read whole makes retention delete nothing: protection fails
//! closed.
//!
//! Each source says what it found as [`Use`]s (an image reference as written, and who uses
//! it); [`Target::of`] turns a reference into the registry, repository and tag or digest it
//! names, the way container runtimes read it (`nginx` is `docker.io/library/nginx:latest`),
//! after the plan's `aliases`. Sources live behind [`Source`], so retention never sees a
//! cluster or a file.

pub mod argocd;
pub mod error;
pub mod gitops;
pub mod history;
pub mod kube;
pub mod sources;
pub mod updater;
pub mod uses;

use uses::{Source, Use};

use self::error::{Reason, SourceError};
use crate::reference::{Digest, Location, Reference, Selector};
use sources::InUse;

/// What the sources said.
#[derive(Debug, Default)]
pub struct Gathered {
    pub uses: Vec<Use>,
    /// Images the ArgoCD Image Updater tracks: the run keeps the tag it would pick next.
    pub tracked: Vec<updater::Tracked>,
    pub failures: Vec<SourceError>,
}

/// Ask every source of `[in_use]`.
pub async fn gather(in_use: &InUse) -> Gathered {
    let mut sources: Vec<Box<dyn Source>> = Vec::new();
    if !in_use.files.is_empty() {
        sources.push(Box::new(gitops::FileSource::new(in_use.files.clone())));
    }
    for k in &in_use.kubernetes {
        sources.push(Box::new(kube::KubeSource::new(k.clone())));
    }
    for g in &in_use.git {
        sources.push(Box::new(history::History::new(g.clone())));
    }
    let mut out = gather_from(&sources).await;
    for a in &in_use.argocd {
        match argocd::ArgoCd::new(a.clone()).read().await {
            Ok(found) => {
                out.uses.extend(found.uses);
                out.tracked.extend(found.tracked);
            }
            Err(e) => out.failures.push(e),
        }
    }
    out
}

pub async fn gather_from(sources: &[Box<dyn Source>]) -> Gathered {
    let mut out = Gathered::default();
    for s in sources {
        match s.uses().await {
            Ok(u) => out.uses.extend(u),
            Err(e) => out.failures.push(e),
        }
    }
    out
}

/// `ferry check --online`: can each source be read? (what, Ok(detail) or Err(why)).
pub async fn preflight(in_use: &InUse) -> Vec<(String, Result<String, Reason>)> {
    let mut out = Vec::new();
    for f in &in_use.files {
        let what = format!("in use: files (plan line {})", f.line);
        let source = gitops::FileSource::new(vec![f.clone()]);
        out.push(match source.uses().await {
            Ok(uses) => (what, Ok(format!("{} image references", uses.len()))),
            Err(e) => (what, Err(e.reason)),
        });
    }
    for g in &in_use.git {
        let what = format!("in use: git (plan line {})", g.line);
        out.push(match history::History::new(g.clone()).uses().await {
            Ok(uses) => (what, Ok(format!("{} image references", uses.len()))),
            Err(e) => (what, Err(e.reason)),
        });
    }
    for a in &in_use.argocd {
        let what = format!("in use: argocd (plan line {})", a.line);
        out.push(match argocd::ArgoCd::new(a.clone()).read().await {
            Ok(f) => (
                what,
                Ok(format!(
                    "{} images deployed, {} tracked by the Image Updater",
                    f.uses.len(),
                    f.tracked.len()
                )),
            ),
            Err(e) => (what, Err(e.reason)),
        });
    }
    for k in &in_use.kubernetes {
        for (what, result) in kube::KubeSource::new(k.clone()).preflight().await {
            out.push((format!("in use: {what}"), result));
        }
    }
    out
}

/// What a reference names: a tag or a digest in a repository of a registry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    /// The registry host as a plan keys it (`docker.io` for Docker Hub).
    pub registry: String,
    pub repo: String,
    pub what: Pinned,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Pinned {
    Tag(String),
    Digest(Digest),
}

impl Target {
    /// The target of an image reference as a container runtime reads it, after `aliases`
    /// (mirror prefix -> registry host, longest first). `None` for what names no image in
    /// a registry (a bare image id, a layout, garbage).
    pub fn of(image: &str, aliases: &[(String, String)]) -> Option<Target> {
        let image = image.trim();
        // Kubernetes' imageID under Docker: `docker-pullable://repo@sha256:…`.
        let image = image.strip_prefix("docker-pullable://").unwrap_or(image);
        // A bare image id (`sha256:…`, what Docker reports for a local build) names nothing.
        if image.is_empty()
            || image.contains("://")
            || image.starts_with("oci:")
            || image.starts_with("sha256:")
        {
            return None;
        }
        let image = apply_alias(image, aliases);
        // `name:tag@digest`: the runtime pulls the digest.
        let (name, digest) = match image.split_once('@') {
            Some((name, digest)) => (name, Some(digest)),
            None => (image.as_str(), None),
        };
        let name = match digest {
            Some(_) => strip_tag(name),
            None => name,
        };
        let reference = match digest {
            Some(d) => Reference::parse(&format!("{name}@{d}")).ok()?,
            None => Reference::parse(name).ok()?,
        };
        let Location::Registry(registry) = reference.location else {
            return None;
        };
        let what = match reference.selector {
            Selector::Tag(t) => Pinned::Tag(t),
            Selector::Digest(d) => Pinned::Digest(Digest::parse(&d)?),
            Selector::AllTags => Pinned::Tag("latest".to_string()),
            Selector::Wildcard => return None,
        };
        Some(Target {
            registry,
            repo: reference.repository,
            what,
        })
    }
}

/// `mirror.internal/hub/library/nginx` with `mirror.internal/hub = docker.io` is
/// `docker.io/library/nginx`.
fn apply_alias(image: &str, aliases: &[(String, String)]) -> String {
    for (prefix, host) in aliases {
        if let Some(rest) = image.strip_prefix(prefix.as_str()) {
            if let Some(rest) = rest.strip_prefix('/') {
                return format!("{host}/{rest}");
            }
        }
    }
    image.to_string()
}

/// `repo:tag` -> `repo` (a port's colon comes before the last `/`).
fn strip_tag(name: &str) -> &str {
    let last = name.rfind('/').map_or(0, |i| i + 1);
    match name[last..].rfind(':') {
        Some(i) => &name[..last + i],
        None => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(image: &str) -> Option<(String, String, Pinned)> {
        let aliases = vec![("mirror.internal/hub".to_string(), "docker.io".to_string())];
        Target::of(image, &aliases).map(|t| (t.registry, t.repo, t.what))
    }

    #[test]
    fn references_read_as_runtimes_read_them() {
        let d = "sha256:".to_string() + &"a".repeat(64);
        let tag = |s: &str| Pinned::Tag(s.to_string());
        let dig = Pinned::Digest(Digest::parse(&d).unwrap());
        let hub = |r: &str, p: Pinned| Some(("docker.io".into(), r.to_string(), p));
        assert_eq!(t("nginx"), hub("library/nginx", tag("latest")));
        assert_eq!(t("nginx:1.27"), hub("library/nginx", tag("1.27")));
        assert_eq!(t("docker.io/org/api:v1"), hub("org/api", tag("v1")));
        assert_eq!(t("index.docker.io/org/api:v1"), hub("org/api", tag("v1")));
        assert_eq!(
            t(&format!("nginx:1.27@{d}")),
            hub("library/nginx", dig.clone())
        );
        assert_eq!(
            t(&format!("docker-pullable://org/api@{d}")),
            hub("org/api", dig.clone())
        );
        assert_eq!(
            t("mirror.internal/hub/library/nginx:1"),
            hub("library/nginx", tag("1"))
        );
        assert_eq!(
            t(&format!("127.0.0.1:5000/team/api@{d}")),
            Some(("127.0.0.1:5000".into(), "team/api".into(), dig))
        );
        assert_eq!(
            t("localhost:5000/team/api:v2"),
            Some(("localhost:5000".into(), "team/api".into(), tag("v2")))
        );
        // Not images in a registry.
        for bad in [
            "",
            "sha256:abc",
            "oci:dir/x",
            "https://x/y",
            "UPPER/Case:1",
            "a b",
        ] {
            assert_eq!(t(bad), None, "{bad}");
        }
    }
}
