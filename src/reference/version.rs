//! Tags read as versions, for ordering: copy's `tags.newest` and `semver` filters and
//! retention's "newest" both sort tags this way. Pure.

use semver::Version;

/// Parse a tag as a version: an optional leading `v`, then `MAJOR[.MINOR[.PATCH]]` with an
/// optional semver pre-release/build suffix. Docker tags often omit the patch (`1.27`), so
/// missing parts count as 0; `1.27` and `1.27.0` then compare equal and the tag text breaks
/// the tie.
pub fn parse_version(tag: &str) -> Option<Version> {
    let t = tag.strip_prefix('v').unwrap_or(tag);
    if let Ok(v) = Version::parse(t) {
        return Some(v);
    }
    // Pad `1` and `1.2` (and `1.2-rc1`) to three components.
    let (core, suffix) = match t.find(['-', '+']) {
        Some(i) => (&t[..i], &t[i..]),
        None => (t, ""),
    };
    let parts: Vec<&str> = core.split('.').collect();
    if parts.is_empty()
        || parts.len() > 2
        || parts
            .iter()
            .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let padded = match parts.len() {
        1 => format!("{}.0.0{suffix}", parts[0]),
        _ => format!("{}.{}.0{suffix}", parts[0], parts[1]),
    };
    Version::parse(&padded).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_leniently() {
        assert_eq!(parse_version("v1.2.3"), Some(Version::new(1, 2, 3)));
        assert_eq!(parse_version("1.27"), Some(Version::new(1, 27, 0)));
        assert_eq!(parse_version("2"), Some(Version::new(2, 0, 0)));
        assert!(parse_version("1.2.3-rc1").unwrap().pre.as_str() == "rc1");
        assert!(parse_version("1.2-rc1").is_some());
        assert_eq!(parse_version("latest"), None);
        assert_eq!(parse_version("main-abc1234"), None);
        assert_eq!(parse_version("1..2"), None);
    }
}
