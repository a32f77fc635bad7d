//! [`TagDigests`]: every tag of one repository with the digest it points at, as a registry's
//! own API lists them a page at a time (Docker Hub's tags API, GHCR's package versions; see
//! [`Registry::tag_digests`](crate::registry::Registry::tag_digests)). One listing answers
//! what a request per tag would (has a source tag moved? what does a target tag point at?).
//!
//! A listing is a snapshot taken while its pages were read, and an untrusted one: a name or
//! digest that fails its check is left out (that tag is then asked about on its own), and so
//! is a tag listed twice with two digests (it moved while the listing paged). A leaf: it
//! imports nothing from its siblings.

use std::collections::HashMap;

use crate::reference::{names, Digest};

/// A tag listed with two digests: not known.
const MOVED: u32 = u32::MAX;

/// See the module docs. Digests are kept once each (many tags share few manifests).
#[derive(Clone, Debug, Default)]
pub struct TagDigests {
    /// Tag -> index into `digests` ([`MOVED`]: listed with two).
    tags: HashMap<String, u32>,
    digests: Vec<Digest>,
    by_digest: HashMap<Digest, u32>,
    /// Requests the listing took (its pages, and a login where the API needs one).
    pub requests: u64,
}

impl TagDigests {
    /// The digest `tag` pointed at when it was listed; `None` when it was not listed (or was,
    /// with two digests).
    pub fn get(&self, tag: &str) -> Option<&Digest> {
        match self.tags.get(tag) {
            Some(&i) if i != MOVED => self.digests.get(i as usize),
            _ => None,
        }
    }

    /// Take in one entry of a listing, as the API sent it: a tag or digest that fails its
    /// check is left out, and a tag already listed with another digest becomes unknown.
    pub fn listed(&mut self, tag: &str, digest: &str) {
        let Ok(digest) = Digest::checked(digest) else {
            return;
        };
        if names::tag(tag).is_err() {
            return;
        }
        let index = match self.by_digest.get(&digest) {
            Some(&i) => i,
            None => {
                let i = u32::try_from(self.digests.len()).unwrap_or(MOVED);
                if i == MOVED {
                    return;
                }
                self.digests.push(digest.clone());
                self.by_digest.insert(digest, i);
                i
            }
        };
        let entry = self.tags.entry(tag.to_string()).or_insert(index);
        if *entry != index {
            *entry = MOVED;
        }
    }

    /// `tag` now points at `digest` (`None`: it is gone), whatever was listed: a simulated
    /// write ([`Overlay`](crate::registry::overlay::Overlay)).
    pub fn set(&mut self, tag: &str, digest: Option<&Digest>) {
        self.tags.remove(tag);
        if let Some(d) = digest {
            self.listed(tag, d.as_str());
        }
    }

    /// Drop every tag that points at a digest `gone` says is gone.
    pub fn forget_digests(&mut self, gone: impl Fn(&Digest) -> bool) {
        let digests = &self.digests;
        self.tags
            .retain(|_, i| *i == MOVED || !gone(&digests[*i as usize]));
    }

    /// How many tags the listing names (with one digest).
    pub fn len(&self) -> usize {
        self.tags.values().filter(|&&i| i != MOVED).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> Digest {
        Digest::sha256_of(&[n])
    }

    /// Issue 24, below the floor: a listing answers only what it names once, with one digest.
    #[test]
    fn a_listing_names_each_tag_once_and_leaves_out_what_fails_its_check() {
        let mut l = TagDigests::default();
        l.listed("v1", digest(1).as_str());
        l.listed("v2", digest(1).as_str());
        l.listed("v3", digest(2).as_str());
        // Moved while the listing paged: on two pages with two digests.
        l.listed("moving", digest(1).as_str());
        l.listed("moving", digest(2).as_str());
        // The same entry twice (a page read again) is still one tag.
        l.listed("v3", digest(2).as_str());
        l.listed("bad tag", digest(1).as_str());
        l.listed("v4", "sha256:nothex");
        assert_eq!(l.get("v1"), Some(&digest(1)));
        assert_eq!(l.get("v2"), Some(&digest(1)));
        assert_eq!(l.get("v3"), Some(&digest(2)));
        assert_eq!(l.get("moving"), None);
        assert_eq!(l.get("bad tag"), None);
        assert_eq!(l.get("v4"), None);
        assert_eq!(l.len(), 3);
        assert_eq!(l.digests.len(), 2, "digests are kept once each");
    }

    #[test]
    fn simulated_writes_and_deletions_change_what_it_says() {
        let mut l = TagDigests::default();
        l.listed("a", digest(1).as_str());
        l.listed("b", digest(2).as_str());
        l.listed("c", digest(2).as_str());
        l.set("a", Some(&digest(3)));
        l.set("b", None);
        l.forget_digests(|d| *d == digest(2));
        assert_eq!(l.get("a"), Some(&digest(3)));
        assert_eq!(l.get("b"), None);
        assert_eq!(l.get("c"), None);
        assert_eq!(l.len(), 1);
    }
}
