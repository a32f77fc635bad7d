//! What a copy rule is for the engine: where it reads (`from`), where it writes (`to`), which
//! tags ([`TagFilter`]), which referrers and which platforms travel, built by the plan layer
//! from a `[[copy]]` block. A block with several targets (`to = [...]`, a fan-out) is one
//! rule per target: (block, target) pairs that everything after the plan treats as rules of
//! their own, each with its own `number`. Pure: no I/O.

use std::fmt;
use std::sync::Arc;

use super::tag_filter::TagFilter;
use crate::reference::{Location, Reference, Selector};

/// One copy rule.
#[derive(Clone, Debug)]
pub struct CopyRule {
    /// 1-based position among the plan's rules, a fan-out's pairs each counted: the rule's
    /// identity in the run (items, listings, claims, prune scopes). Without a fan-out before
    /// it, the position of its `[[copy]]` block.
    pub number: usize,
    /// 1-based position of its `[[copy]]` block: the `copy #N` people see.
    pub block: usize,
    /// For one target of a block with several (`to = [...]`): which one (1-based) and how
    /// many the block has. `None` for a block with one target.
    pub fanout: Option<(usize, usize)>,
    /// Line and column of its `from` field, for messages.
    pub line: usize,
    pub column: usize,
    pub from: Reference,
    pub to: Reference,
    pub tags: TagFilter,
    /// Carry the signatures, attestations and SBOMs of every selected image (referrer tags,
    /// the referrers API, the fallback tag index), even where the tag filters leave them out.
    pub referrers: Referrers,
    /// Only these platforms of each index; `None` copies every one.
    pub platforms: Option<Arc<Platforms>>,
    /// Selecting nothing (a wildcard that lists no repository, tag filters that keep no tag)
    /// is accepted, not a failure of the rule.
    pub allow_empty: bool,
    /// Keep what the source listed (a repository's tags, a wildcard's catalog) in the
    /// selection's `listings`, for a caller that acts on what is gone there (pruning).
    pub keep_listings: bool,
}

impl CopyRule {
    /// A rule copying every tag `from` selects to `to`, with its referrers and every
    /// platform; the plan layer then sets what the file says.
    pub fn new(number: usize, from: Reference, to: Reference) -> CopyRule {
        CopyRule {
            number,
            block: number,
            fanout: None,
            line: 0,
            column: 0,
            from,
            to,
            tags: TagFilter::default(),
            referrers: Referrers::All,
            platforms: None,
            allow_empty: false,
            keep_listings: false,
        }
    }

    /// Could this rule write into what `other` names (a repository, or every repository
    /// under a wildcard prefix)?
    pub fn writes_into(&self, other: &Reference) -> bool {
        writes_into(&self.to, other)
    }

    /// How people find it: `copy #2`, or for one target of a fan-out `copy #2 -> TARGET`
    /// (its `to` as the plan writes it).
    pub fn name(&self) -> String {
        match self.fanout {
            None => format!("copy #{}", self.block),
            Some(_) => format!("copy #{} -> {}", self.block, self.to),
        }
    }
}

impl fmt::Display for CopyRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "copy #{} ({} -> {})", self.block, self.from, self.to)
    }
}

/// Could a target `to` write into what `other` names? Both sides may be wildcards; layout
/// paths compare in one spelling.
fn writes_into(to: &Reference, other: &Reference) -> bool {
    if to.location != other.location {
        return false;
    }
    let norm = |r: &Reference| match r.location {
        Location::Layout => r.repository.trim_start_matches("./").to_string(),
        Location::Registry(_) => r.repository.clone(),
    };
    let (a, b) = (norm(to), norm(other));
    match (
        to.selector == Selector::Wildcard,
        other.selector == Selector::Wildcard,
    ) {
        (false, false) => a.trim_end_matches('/') == b.trim_end_matches('/'),
        (true, false) => b.starts_with(&a),
        (false, true) => a.starts_with(&b),
        (true, true) => a.starts_with(&b) || b.starts_with(&a),
    }
}

/// Which referrers (signatures, attestations, SBOMs) travel with the images a rule copies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Referrers {
    /// `referrers = false`: none, and the referrer tags are not copied as ordinary tags either.
    None,
    /// `referrers = true` (the default): every one, whatever its type.
    #[default]
    All,
    /// `referrers = { artifact_types = [...] }`: those of these artifact types.
    Only(Vec<String>),
}

impl Referrers {
    pub fn enabled(&self) -> bool {
        !matches!(self, Referrers::None)
    }

    /// Does a referrer of these types (its artifact type, and for cosign's tag-scheme
    /// artifacts its first layer's media type) travel?
    pub fn admits<S: AsRef<str>>(&self, kinds: &[S]) -> bool {
        match self {
            Referrers::None => false,
            Referrers::All => true,
            Referrers::Only(types) => kinds.iter().any(|k| types.iter().any(|t| t == k.as_ref())),
        }
    }

    /// Does the type filter need each referrer's own manifest to decide (a tag-scheme
    /// referrer has no descriptor telling its type)?
    pub fn filters(&self) -> bool {
        matches!(self, Referrers::Only(_))
    }

    /// The one artifact type to ask a referrers API for, when there is exactly one.
    pub fn api_filter(&self) -> Option<&str> {
        match self {
            Referrers::Only(types) if types.len() == 1 => Some(&types[0]),
            _ => None,
        }
    }
}

/// `os/architecture[/variant]`, as `docker --platform` and the index's `platform` say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    /// When absent, any variant matches (`linux/arm64` matches `linux/arm64/v8`).
    pub variant: Option<String>,
}

/// What a platform must look like.
#[derive(Debug, thiserror::Error)]
#[error("a platform is `os/architecture` or `os/architecture/variant`, like `linux/amd64` or `linux/arm/v7`")]
pub struct PlatformSyntax;

impl Platform {
    pub fn parse(s: &str) -> Result<Platform, PlatformSyntax> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        };
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, variant] if ok(os) && ok(arch) && ok(variant) => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(variant.to_string()),
            }),
            _ => Err(PlatformSyntax),
        }
    }

    /// Does an index child's platform (`linux/arm64/v8`, as the manifest module writes it)
    /// match?
    pub fn matches(&self, child: &str) -> bool {
        let mut parts = child.split('/');
        let (os, arch, variant) = (parts.next(), parts.next(), parts.next());
        os == Some(self.os.as_str())
            && arch == Some(self.architecture.as_str())
            && match &self.variant {
                None => true,
                Some(v) => variant == Some(v.as_str()),
            }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// How an index is copied when only some of its platforms are wanted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlatformMode {
    /// The original index, unchanged (its digest kept), with only the chosen children copied.
    Sparse,
    /// A new index listing only the chosen children: a new digest, reported.
    Rewrite,
}

impl fmt::Display for PlatformMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PlatformMode::Sparse => "sparse",
            PlatformMode::Rewrite => "rewrite",
        })
    }
}

/// `platforms = [...]` with its `platform_mode`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platforms {
    pub wanted: Vec<Platform>,
    pub mode: PlatformMode,
}

impl Platforms {
    /// Is an index child with this platform wanted? A child without a platform (an
    /// attestation manifest, say) is decided by the caller.
    pub fn wants(&self, platform: &str) -> bool {
        self.wanted.iter().any(|p| p.matches(platform))
    }
}

impl fmt::Display for Platforms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list: Vec<String> = self.wanted.iter().map(|p| p.to_string()).collect();
        write!(f, "{} ({})", list.join(","), self.mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_rules() {
        let w = |to: &str, from: &str| {
            CopyRule::new(
                1,
                Reference::parse("oci:src").unwrap(),
                Reference::parse(to).unwrap(),
            )
            .writes_into(&Reference::parse(from).unwrap())
        };
        assert!(w("ghcr.io/org/*", "ghcr.io/org/api"));
        assert!(w("ghcr.io/org/api", "ghcr.io/org/*"));
        assert!(w("ghcr.io/org/*", "ghcr.io/*"));
        assert!(!w("ghcr.io/org/api", "ghcr.io/org/web"));
        assert!(!w("ghcr.io/org/api", "quay.io/org/api"));
        assert!(w("oci:./out", "oci:out:v1"));
    }

    #[test]
    fn platforms_match_like_docker() {
        let p = Platform::parse("linux/arm64").unwrap();
        assert!(p.matches("linux/arm64/v8") && p.matches("linux/arm64"));
        assert!(!p.matches("linux/amd64") && !p.matches("windows/arm64"));
        let v7 = Platform::parse("linux/arm/v7").unwrap();
        assert!(v7.matches("linux/arm/v7") && !v7.matches("linux/arm/v6"));
        assert!(!v7.matches("linux/arm"));
        for bad in ["linux", "linux/", "/amd64", "a/b/c/d", "linux/amd 64"] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(v7.to_string(), "linux/arm/v7");
    }

    #[test]
    fn referrer_filters() {
        let only = Referrers::Only(vec!["application/vnd.dsse.envelope.v1+json".into()]);
        assert!(only.admits(&["x/y", "application/vnd.dsse.envelope.v1+json"]));
        assert!(!only.admits(&["x/y"]));
        assert!(only.filters());
        assert_eq!(
            only.api_filter(),
            Some("application/vnd.dsse.envelope.v1+json")
        );
        assert!(Referrers::All.admits::<&str>(&[]));
        assert!(!Referrers::None.admits(&["x/y"]) && !Referrers::None.enabled());
    }
}
