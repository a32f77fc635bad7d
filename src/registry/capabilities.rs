//! What a registry can do, as one value ([`Capabilities`], from
//! [`Registry::capabilities`](crate::registry::Registry::capabilities)): questions whose
//! answer is known without a request, so the engines ask them as often as they like. What
//! needs a request to learn (does the registry answer the referrers API?) stays a method of
//! the trait.
//!
//! A leaf: it imports nothing from its siblings.

/// How a registry's own API records manifests
/// ([`Registry::manifest_records`](crate::registry::Registry::manifest_records)), for a
/// simulation that must record its writes the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordStyle {
    /// No such API (CNCF distribution, OCI layouts).
    None,
    /// Every manifest pushed is a version of its own, tagged or not (GHCR packages).
    Versions,
    /// One entry per tag, with the platforms of an index (Docker Hub's tag API).
    Tags,
}

/// What a registry can do, known without asking it. `Default` is a registry with no API of
/// its own, whose uploads end with the process and which can mount blobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// How [`Registry::manifest_records`](crate::registry::Registry::manifest_records)
    /// describes a repository.
    pub record_style: RecordStyle,
    /// Can an upload outlive the process that began it (an upload session a later run
    /// continues)? Only then is a large blob worth spooling on its way here.
    pub resumable_uploads: bool,
    /// Does a manifest GET cost more than a HEAD here (Docker Hub counts each GET as a pull
    /// against its limit)? Then a tag is resolved with a HEAD before its manifest is read.
    pub counts_pulls: bool,
    /// Can [`Registry::mount_blob`](crate::registry::Registry::mount_blob) ever succeed
    /// here? (A layout never mounts.)
    pub can_mount: bool,
    /// Does the registry's own API list every tag of a repository with its digest, a page at
    /// a time ([`Registry::tag_digests`](crate::registry::Registry::tag_digests): Docker Hub's
    /// tags, GHCR's package versions)? Then one listing can answer what a request per tag
    /// would.
    pub lists_tag_digests: bool,
}

impl Default for Capabilities {
    fn default() -> Capabilities {
        Capabilities {
            record_style: RecordStyle::None,
            resumable_uploads: false,
            counts_pulls: false,
            can_mount: true,
            lists_tag_digests: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 23, item 3: the default is what the trait answered before the questions were
    /// one value: no records API, no resumable uploads, GETs as cheap as HEADs, mounts tried;
    /// and (issue 24) no listing of tags with digests.
    #[test]
    fn the_default_is_a_plain_distribution_registry() {
        let d = Capabilities::default();
        assert_eq!(d.record_style, RecordStyle::None);
        assert!(!d.resumable_uploads && !d.counts_pulls && d.can_mount);
        assert!(!d.lists_tag_digests);
    }
}
