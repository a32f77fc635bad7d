//! Tag selection for a copy rule: regex include/exclude lists, a semver constraint and
//! "the newest N". Pure: tags in, the kept tags out, in a stable order.

use regex::Regex;
use semver::{Version, VersionReq};

use crate::reference::version::parse_version;

/// Which tags of a repository a copy rule takes (a plan's `tags = { … }`). The default keeps
/// every tag.
#[derive(Clone, Debug, Default)]
pub struct TagFilter {
    /// A tag must match at least one of these (when the list is non-empty).
    pub include: Vec<Regex>,
    /// A tag matching any of these is dropped.
    pub exclude: Vec<Regex>,
    /// Only tags that parse as versions and satisfy this are kept.
    pub semver: Option<VersionReq>,
    /// Keep only the N highest versions among the tags that passed the other filters.
    pub newest: Option<usize>,
}

impl TagFilter {
    /// Is every filter off?
    pub fn is_empty(&self) -> bool {
        self.include.is_empty()
            && self.exclude.is_empty()
            && self.semver.is_none()
            && self.newest.is_none()
    }

    /// The reason a single tag is dropped by the per-tag filters, or `None` if it passes.
    pub fn rejects(&self, tag: &str) -> Option<String> {
        if !self.include.is_empty() && !self.include.iter().any(|r| r.is_match(tag)) {
            return Some("matches no `include` pattern".into());
        }
        if let Some(r) = self.exclude.iter().find(|r| r.is_match(tag)) {
            return Some(format!("matches `exclude` pattern {}", r.as_str()));
        }
        if let Some(req) = &self.semver {
            match parse_version(tag) {
                None => return Some("not a version (`semver` is set)".into()),
                Some(v) if !req.matches(&v) => return Some(format!("outside semver {req}")),
                Some(_) => {}
            }
        }
        None
    }

    /// Apply every filter; returns the kept tags sorted (highest version first when `newest`
    /// is set, otherwise by name).
    pub fn select(&self, tags: &[String]) -> Vec<String> {
        let mut kept: Vec<String> = tags
            .iter()
            .filter(|t| self.rejects(t).is_none())
            .cloned()
            .collect();
        match self.newest {
            Some(n) => {
                // Tags without a version have no place in a "newest" order: they are dropped.
                let mut versioned: Vec<(Version, String)> = kept
                    .into_iter()
                    .filter_map(|t| parse_version(&t).map(|v| (v, t)))
                    .collect();
                versioned.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
                versioned.truncate(n);
                versioned.into_iter().map(|(_, t)| t).collect()
            }
            None => {
                kept.sort();
                kept.dedup();
                kept
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn issue_example_filter() {
        let f = TagFilter {
            include: vec![
                Regex::new(r"^v\d+\.\d+\.\d+$").unwrap(),
                Regex::new("^latest$").unwrap(),
            ],
            exclude: vec![Regex::new(r"-rc\d*$").unwrap()],
            semver: Some(VersionReq::parse(">=1.2, <3").unwrap()),
            newest: Some(2),
        };
        let input = tags(&[
            "v1.0.0",
            "v1.2.0",
            "v1.3.0",
            "v2.9.9",
            "v3.0.0",
            "latest",
            "v2.0.0-rc1",
            "main",
        ]);
        assert_eq!(f.select(&input), tags(&["v2.9.9", "v1.3.0"]));
        assert_eq!(f.rejects("main").unwrap(), "matches no `include` pattern");
        assert!(f.rejects("v3.0.0").unwrap().contains("outside semver"));
    }

    #[test]
    fn default_keeps_everything_sorted() {
        let f = TagFilter::default();
        assert!(f.is_empty());
        assert_eq!(f.select(&tags(&["b", "a", "a"])), tags(&["a", "b"]));
    }

    #[test]
    fn newest_drops_unversioned_and_breaks_ties_by_name() {
        let f = TagFilter {
            newest: Some(3),
            ..Default::default()
        };
        assert_eq!(
            f.select(&tags(&["latest", "1.27", "1.27.0", "1.26.1", "1.25"])),
            tags(&["1.27", "1.27.0", "1.26.1"])
        );
    }
}
