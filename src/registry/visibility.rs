//! Who may pull a repository, as a hosted registry's own API says
//! ([`Registry::visibility`](crate::registry::Registry::visibility)): a GHCR package's
//! `visibility` (public, private, internal) and where to change it, a Docker Hub repository's
//! `is_private`. Plain data; a leaf that imports nothing of its siblings.

use std::fmt;

/// Who may pull: anyone, only those given access, or the members of the enterprise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Visibility {
    Public,
    Private,
    /// GitHub Enterprise: visible to the enterprise's members.
    Internal,
}

impl Visibility {
    /// As GitHub's API and the plan spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Private => "private",
            Visibility::Internal => "internal",
        }
    }

    /// `public`, `private` or `internal`; `None` for anything else.
    pub fn parse(s: &str) -> Option<Visibility> {
        match s {
            "public" => Some(Visibility::Public),
            "private" => Some(Visibility::Private),
            "internal" => Some(Visibility::Internal),
            _ => None,
        }
    }
}

impl fmt::Display for Visibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A repository's visibility as its registry's API told it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoVisibility {
    pub visibility: Visibility,
    /// The page where a person changes it (GitHub has no API that does), where there is one:
    /// `https://github.com/orgs/ORG/packages/container/PACKAGE/settings`.
    pub settings: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visibility_reads_what_it_writes() {
        for v in [
            Visibility::Public,
            Visibility::Private,
            Visibility::Internal,
        ] {
            assert_eq!(Visibility::parse(v.as_str()), Some(v));
        }
        assert_eq!(Visibility::parse("Public"), None);
    }
}
