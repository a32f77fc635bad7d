//! Reading an item's source: its digest (from the reference, what selection saw, the
//! repository's listing, or a HEAD) or its whole manifest (one GET, where the copy or a whole
//! check needs the body anyway), by digest shared by the targets of a fan-out.

use super::destined::source_at;
use super::Engine;
use crate::copy::item::Item;
use crate::copy::outcome::CopyError;
use crate::reference::Digest;
use crate::registry::{Manifest, RegistryError};

impl Engine {
    /// The source digest, and the manifest itself where it was read whole: a tag no fresh
    /// record vouches for (`unconfirmed`) is read with one GET (digest and body, which a copy
    /// or a whole check needs), except where a GET counts as a pull and a HEAD saves it, and
    /// where the repository's listing names the tag (the body is read by digest if needed).
    pub(super) async fn source_of(
        &self,
        item: &Item,
        unconfirmed: bool,
    ) -> Result<(Digest, Option<Manifest>), CopyError> {
        let by_tag = Digest::parse(&item.source_ref).is_none();
        match unconfirmed && by_tag && !item.source.registry.capabilities().counts_pulls {
            true if item.read.is_some() => Ok(self.read_by_selection(item)),
            true => match self.listed_source(item).await {
                Some(digest) => Ok((digest, None)),
                None => Box::pin(self.source_manifest(item)).await,
            },
            false => Ok((self.source_digest(item).await?, None)),
        }
    }

    /// The source digest: from the reference itself, else from what selection saw moments
    /// ago, else from the repository's listing, else a HEAD (which Docker Hub does not count
    /// as a pull).
    pub(super) async fn source_digest(&self, item: &Item) -> Result<Digest, CopyError> {
        if let Some(d) = Digest::parse(&item.source_ref) {
            return Ok(d);
        }
        let src = &item.source;
        if let Some(d) = &item.seen {
            self.journal.tag_seen(src, &item.source_ref, d);
            return Ok(d.clone());
        }
        if let Some(d) = self.listed_source(item).await {
            return Ok(d);
        }
        let source_err = |e| CopyError::Source {
            reference: item.source_display(),
            source: e,
        };
        let digest = src
            .registry
            .head_manifest(&src.repo, &item.source_ref)
            .await
            .map_err(source_err)?
            .ok_or_else(|| {
                source_err(RegistryError::NotFound {
                    what: "manifest".into(),
                    url: item.source_display(),
                })
            })?
            .digest;
        self.journal.tag_seen(src, &item.source_ref, &digest);
        Ok(digest)
    }

    /// The digest the source repository's listing gives the item's tag, where it has one
    /// that names it (see [`super::tag_listings`]).
    async fn listed_source(&self, item: &Item) -> Option<Digest> {
        let src = &item.source;
        let digest = self.listings.digest(src, &item.source_ref).await?;
        self.journal.tag_seen(src, &item.source_ref, &digest);
        Some(digest)
    }

    /// The source manifest by the item's tag, in one GET: its digest and body.
    async fn source_manifest(&self, item: &Item) -> Result<(Digest, Option<Manifest>), CopyError> {
        let m = source_at(item, &item.source_ref).await?;
        self.journal
            .tag_seen(&item.source, &item.source_ref, &m.digest);
        Ok((m.digest.clone(), Some(m)))
    }

    /// The manifest selection read whole for this item moments ago.
    fn read_by_selection(&self, item: &Item) -> (Digest, Option<Manifest>) {
        let m = item.read.clone().expect("read by selection");
        self.journal
            .tag_seen(&item.source, &item.source_ref, &m.digest);
        (m.digest.clone(), Some(m))
    }

    /// A source manifest of the item by `digest` (`shown` names it in errors): the targets
    /// of a fan-out share one read of it, and where a GET counts as a pull (Docker Hub) it is
    /// read once per run for every tag and index that names it ([`Pulled`]).
    pub(super) async fn manifest_by_digest(
        &self,
        item: &Item,
        digest: &Digest,
        shown: &str,
    ) -> Result<Manifest, CopyError> {
        let src = &item.source;
        let read = || {
            let get = async {
                (src.registry.get_manifest(&src.repo, digest.as_str()).await).map_err(|e| {
                    CopyError::Source {
                        reference: shown.to_string(),
                        source: e,
                    }
                })
            };
            self.pulled.get(item, digest, get)
        };
        match &self.shared {
            Some(shared) => shared.manifest(item.rule, src, digest, read).await,
            None => read().await,
        }
    }
}
