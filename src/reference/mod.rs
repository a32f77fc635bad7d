//! The leaf types every layer shares, as regclient's `types/ref`: image references as users
//! write them in a plan (`docker.io/library/nginx:1.27`, `ghcr.io/org/app@sha256:…`,
//! `127.0.0.1:5000/team/*`, `oci:./layout:tag`), content digests ([`digest`]) and the grammar
//! of the names registries hand out ([`names`]). Nothing here depends on the rest of ferry.
//!
//! Parsing follows docker's rules (a first component with a `.` or `:`, or `localhost`, is a
//! registry host; otherwise the registry is `docker.io`, and a single-name repository there
//! gets `library/`) so a reference means in ferry what it means in `docker pull`.

use std::fmt;
use std::sync::LazyLock;

use regex::Regex;

pub mod digest;
pub mod midstate;
pub mod names;
pub mod version;

pub use digest::{Digest, Hasher};
pub use midstate::{Midstate, MidstateError};
use names::canonical_layout_path;

/// The host name docker uses for Docker Hub in references and credentials.
pub const DOCKER_HUB: &str = "docker.io";

/// Where images live: a registry host (as keyed in the plan) or a local OCI image layout.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Location {
    /// A registry, by the host name (and port) the plan uses; `docker.io` for Docker Hub.
    Registry(String),
    /// Local OCI image layout directories; the repository is the directory path.
    Layout,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Registry(host) => f.write_str(host),
            Location::Layout => f.write_str("oci:"),
        }
    }
}

/// What a reference points at inside its repository.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Selector {
    /// Every tag (subject to the rule's tag filters).
    AllTags,
    /// Every repository under this prefix (the reference ended in `/*`).
    Wildcard,
    Tag(String),
    Digest(String),
}

/// A parsed reference: location, repository path and selector.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    pub location: Location,
    /// Repository path (`library/nginx`), the path prefix for a wildcard (`myorg/`, possibly
    /// empty), or for a layout the directory path.
    pub repository: String,
    pub selector: Selector,
}

/// Why a reference did not parse; the plan layer adds file, line and field. Says which part
/// is wrong without repeating it: a reference comes from the plan, and no plan value is echoed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ReferenceError(pub String);

static HOST: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")
        .expect("static regex")
});

// The grammar is [`names`], which the registry layer also checks names against when a
// registry lists them: a plan and a registry cannot disagree about what a name is.

/// Is this a valid tag (`[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`)?
pub fn is_valid_tag(tag: &str) -> bool {
    names::tag(tag).is_ok()
}

/// Is this a digest ferry can verify (`sha256:<64 hex>` or `sha512:<128 hex>`)?
pub fn is_valid_digest(digest: &str) -> bool {
    names::digest(digest).is_ok()
}

/// Is this a valid repository path (`component/component`, lowercase)?
pub fn is_valid_repository(repo: &str) -> bool {
    names::repository(repo).is_ok()
}

/// A registry host as references write it: a name or address, with an optional `:PORT`.
pub fn is_valid_host(host: &str) -> bool {
    HOST.is_match(host)
}

/// Normalise a registry host as docker does: Docker Hub's several names become `docker.io`.
pub fn normalize_host(host: &str) -> String {
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DOCKER_HUB.to_string()
        }
        other => other.to_string(),
    }
}

impl Reference {
    pub fn parse(input: &str) -> Result<Reference, ReferenceError> {
        if input.trim() != input || input.is_empty() {
            return Err(ReferenceError(
                "a reference must be non-empty and have no surrounding spaces".into(),
            ));
        }
        if let Some(path) = input.strip_prefix("oci:") {
            return Self::parse_layout(path);
        }
        if input.contains("://") {
            return Err(ReferenceError(
                "write a reference as HOST/REPOSITORY[:TAG|@DIGEST], without a URL scheme".into(),
            ));
        }
        let (name, tag, digest) = split_tag_and_digest(input)?;
        let (host, path) = split_host(name)?;
        let wildcard = path == "*" || path.ends_with("/*");
        let repository = if wildcard {
            if tag.is_some() || digest.is_some() {
                return Err(ReferenceError(
                    "a wildcard reference (`…/*`) selects repositories; it takes no tag or digest"
                        .into(),
                ));
            }
            wildcard_prefix(&host, &path)?
        } else {
            repository(&host, path)?
        };
        let selector = match (wildcard, tag, digest) {
            (true, _, _) => Selector::Wildcard,
            (false, Some(tag), _) => Selector::Tag(tag),
            (false, None, Some(digest)) => Selector::Digest(digest),
            (false, None, None) => Selector::AllTags,
        };
        Ok(Reference {
            location: Location::Registry(host),
            repository,
            selector,
        })
    }

    /// `oci:PATH`, `oci:PATH:TAG`, `oci:PATH@DIGEST`, `oci:DIR/*`.
    fn parse_layout(path: &str) -> Result<Reference, ReferenceError> {
        if path.is_empty() {
            return Err(ReferenceError("`oci:` needs a directory path".into()));
        }
        let (path, digest) = match path.rsplit_once('@') {
            Some((p, d)) if is_valid_digest(d) => (p, Some(d.to_string())),
            _ => (path, None),
        };
        // A tag follows the last ':' only when it looks like a tag, so `oci:C:\x` style
        // paths and paths with colons in directory names still work.
        let (path, tag) = match path.rsplit_once(':') {
            Some((p, t)) if !p.is_empty() && is_valid_tag(t) && !t.contains('/') => {
                (p, Some(t.to_string()))
            }
            _ => (path, None),
        };
        if tag.is_some() && digest.is_some() {
            return Err(ReferenceError(
                "give a tag or a digest, not both (the digest alone names the image)".into(),
            ));
        }
        if path.is_empty() {
            return Err(ReferenceError(
                "`oci:` needs a directory path before the tag or digest".into(),
            ));
        }
        let wildcard = path == "*" || path.ends_with("/*");
        if path[..path.len() - usize::from(wildcard)].contains('*') {
            // `oci:*/` or `oci:a*/b` would name a directory that `oci:DIR/*` can be
            // confused with.
            return Err(ReferenceError(
                "`*` is allowed only as the last path component".into(),
            ));
        }
        if wildcard && (tag.is_some() || digest.is_some()) {
            return Err(ReferenceError(
                "a wildcard reference (`…/*`) selects layouts; it takes no tag or digest".into(),
            ));
        }
        let selector = match (wildcard, tag, digest) {
            (true, _, _) => Selector::Wildcard,
            (false, Some(tag), _) => Selector::Tag(tag),
            (false, None, Some(digest)) => Selector::Digest(digest),
            (false, None, None) => Selector::AllTags,
        };
        // One spelling per directory (`./out//a/` is `out/a`), so that two rules naming one
        // layout two ways meet on it: in stages, conflicts, the checkpoint and retention.
        let repository = if wildcard {
            match canonical_layout_path(&path[..path.len() - 1]) {
                p if p.is_empty() || p.ends_with('/') => p,
                p => format!("{p}/"),
            }
        } else {
            // `dir/` is `dir`; `/` stays the root, `./` the working directory.
            match canonical_layout_path(path) {
                p if p.is_empty() => ".".to_string(),
                p => p,
            }
        };
        if repository.trim() != repository || path.trim() != path {
            return Err(ReferenceError(
                "a layout path must have no surrounding spaces".into(),
            ));
        }
        Ok(Reference {
            location: Location::Layout,
            repository,
            selector,
        })
    }

    /// The repository part as users write it: `docker.io/library/nginx`, `oci:dir`.
    pub fn repo_display(&self) -> String {
        display_repo(&self.location, &self.repository)
    }
}

/// `NAME[:TAG][@DIGEST]` -> name, tag, digest (a tag is a `:` after the last `/`).
fn split_tag_and_digest(
    input: &str,
) -> Result<(&str, Option<String>, Option<String>), ReferenceError> {
    let (rest, digest) = match input.split_once('@') {
        Some((rest, digest)) => {
            if !is_valid_digest(digest) {
                return Err(ReferenceError(
                    "the digest is not one ferry can verify (sha256:<64 hex> or sha512:<128 hex>)"
                        .into(),
                ));
            }
            (rest, Some(digest.to_string()))
        }
        None => (input, None),
    };
    let (name, tag) = match rest.rfind(':') {
        Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(rest[i + 1..].to_string())),
        _ => (rest, None),
    };
    if tag.as_deref().is_some_and(|t| !is_valid_tag(t)) {
        return Err(ReferenceError(
            "the tag is not valid ([A-Za-z0-9_][A-Za-z0-9_.-], at most 128 characters)".into(),
        ));
    }
    if tag.is_some() && digest.is_some() {
        return Err(ReferenceError(
            "give a tag or a digest, not both (the digest alone names the image)".into(),
        ));
    }
    Ok((name, tag, digest))
}

/// The registry host (docker's rule: a first component with `.` or `:`, or `localhost`;
/// otherwise Docker Hub) and the path after it.
fn split_host(name: &str) -> Result<(String, String), ReferenceError> {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            if !HOST.is_match(first) {
                return Err(ReferenceError(
                    "the registry host is not valid (a name or address, with an optional :PORT)"
                        .into(),
                ));
            }
            Ok((normalize_host(first), rest.to_string()))
        }
        _ => Ok((DOCKER_HUB.to_string(), name.to_string())),
    }
}

/// The prefix of `PREFIX/*` (empty for `*`: the whole registry).
fn wildcard_prefix(host: &str, path: &str) -> Result<String, ReferenceError> {
    let prefix = &path[..path.len() - 1];
    if path.trim_end_matches('*').contains('*') {
        return Err(ReferenceError(
            "`*` is allowed only as the last path component".into(),
        ));
    }
    if !prefix.is_empty() && !is_valid_repository(prefix.trim_end_matches('/')) {
        return Err(ReferenceError(
            "the repository prefix before `*` is not valid (lowercase letters, digits, separators . _ __ -)".into(),
        ));
    }
    if host == DOCKER_HUB && prefix.is_empty() {
        return Err(ReferenceError(
            "Docker Hub has no catalog: name a namespace, as in docker.io/myorg/*".into(),
        ));
    }
    Ok(prefix.to_string())
}

/// A repository path, checked; a single name on Docker Hub gets `library/`.
fn repository(host: &str, path: String) -> Result<String, ReferenceError> {
    if path.contains('*') {
        return Err(ReferenceError(
            "`*` is allowed only as the last path component".into(),
        ));
    }
    if !is_valid_repository(&path) {
        return Err(ReferenceError(
            "the repository is not valid (lowercase letters, digits, separators . _ __ -, components joined by /)".into(),
        ));
    }
    Ok(match host == DOCKER_HUB && !path.contains('/') {
        true => format!("library/{path}"),
        false => path,
    })
}

/// `docker.io/library/nginx`, `oci:./out`.
pub fn display_repo(location: &Location, repository: &str) -> String {
    match location {
        Location::Registry(host) => format!("{host}/{repository}"),
        // A directory whose name ends like `:tag` gets its trailing `/` back, so what is
        // printed reads back as the same directory, not as a tag of its parent.
        Location::Layout
            if repository
                .rsplit_once(':')
                .is_some_and(|(dir, tail)| !dir.is_empty() && is_valid_tag(tail)) =>
        {
            format!("oci:{repository}/")
        }
        Location::Layout => format!("oci:{repository}"),
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let repo = self.repo_display();
        match &self.selector {
            Selector::AllTags => write!(f, "{repo}"),
            Selector::Wildcard => write!(f, "{repo}*"),
            Selector::Tag(t) => write!(f, "{repo}:{t}"),
            Selector::Digest(d) => write!(f, "{repo}@{d}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(host: &str, repo: &str, sel: Selector) -> Reference {
        Reference {
            location: Location::Registry(host.into()),
            repository: repo.into(),
            selector: sel,
        }
    }

    #[test]
    fn docker_hub_normalisation() {
        assert_eq!(
            Reference::parse("nginx").unwrap(),
            reg("docker.io", "library/nginx", Selector::AllTags)
        );
        assert_eq!(
            Reference::parse("docker.io/nginx:1.27.3").unwrap(),
            reg("docker.io", "library/nginx", Selector::Tag("1.27.3".into()))
        );
        assert_eq!(
            Reference::parse("index.docker.io/myorg/api").unwrap(),
            reg("docker.io", "myorg/api", Selector::AllTags)
        );
        assert_eq!(
            Reference::parse("myorg/api:v1").unwrap(),
            reg("docker.io", "myorg/api", Selector::Tag("v1".into()))
        );
    }

    #[test]
    fn hosts_ports_digests_wildcards() {
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            Reference::parse(&format!("127.0.0.1:5000/team/app@{d}")).unwrap(),
            reg("127.0.0.1:5000", "team/app", Selector::Digest(d.clone()))
        );
        assert_eq!(
            Reference::parse("localhost/app").unwrap(),
            reg("localhost", "app", Selector::AllTags)
        );
        assert_eq!(
            Reference::parse("ghcr.io/myorg/*").unwrap(),
            reg("ghcr.io", "myorg/", Selector::Wildcard)
        );
        assert_eq!(
            Reference::parse("127.0.0.1:5000/*").unwrap(),
            reg("127.0.0.1:5000", "", Selector::Wildcard)
        );
    }

    #[test]
    fn rejects_bad_references() {
        for bad in [
            "",
            " nginx",
            "Docker.io/UPPER/app",
            "ghcr.io/org/app:bad tag",
            "ghcr.io/org/app@sha256:short",
            "ghcr.io/org/app:v1@sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "ghcr.io/*/app",
            "docker.io/*",
            "https://ghcr.io/org/app",
            "ghcr.io/org/*:tag",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn layouts() {
        assert_eq!(
            Reference::parse("oci:./state/out:v1").unwrap(),
            Reference {
                location: Location::Layout,
                repository: "state/out".into(),
                selector: Selector::Tag("v1".into())
            }
        );
        assert_eq!(
            Reference::parse("oci:/tmp/layouts/*").unwrap().selector,
            Selector::Wildcard
        );
        assert_eq!(
            Reference::parse("oci:plans/demo/layout")
                .unwrap()
                .repository,
            "plans/demo/layout"
        );
    }

    #[test]
    fn odd_layout_paths_found_by_the_property_tests() {
        let d = format!("sha256:{}", "a".repeat(64));
        for bad in [
            "oci:*/".to_string(),
            "oci:a*/b".to_string(),
            format!("oci:@{d}"),
            "oci: //".to_string(),
            "oci:dir ".to_string(),
        ] {
            assert!(Reference::parse(&bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(Reference::parse("oci:/").unwrap().repository, "/");
        // A directory named like `host:port` keeps its trailing slash when printed, so it
        // is not read back as a tag of `host`.
        let r = Reference::parse("oci:127.0.0.1:0/").unwrap();
        assert_eq!(r.repository, "127.0.0.1:0");
        assert_eq!(r.selector, Selector::AllTags);
        assert_eq!(r.to_string(), "oci:127.0.0.1:0/");
        let r = Reference::parse(&format!("oci:a:b/@{d}")).unwrap();
        assert_eq!(Reference::parse(&r.to_string()).unwrap(), r);
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "docker.io/library/nginx:1.27",
            "ghcr.io/org/*",
            "oci:out:v1",
            "127.0.0.1:5000/a/b",
        ] {
            assert_eq!(Reference::parse(s).unwrap().to_string(), s);
        }
    }
}
