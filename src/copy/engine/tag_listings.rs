//! One listing per repository instead of a request per tag, where the registry lists every tag
//! with its digest a page at a time
//! ([`Capabilities::lists_tag_digests`](crate::registry::capabilities::Capabilities): Docker
//! Hub's tags API, GHCR's package versions). What a run asks tag by tag (has a source tag
//! moved since its record? what does a target tag point at?) is answered from the listing of
//! the tag's repository: read the first time an item asks, kept while a batch naming the
//! repository runs, dropped when the last one is done. So a run holds the listings of the
//! repositories in flight, never the organisation's.
//!
//! What is trusted: a listing is a snapshot of the registry's own API, taken while its pages
//! were read, as a `HEAD` is a snapshot of the moment it was answered; a tag moved after it
//! is found by the next run, as one moved after a `HEAD` is. A tag the listing does not name
//! (pushed since, left out as unreadable, or seen with two digests while it paged) is asked
//! about on its own, and so is every tag of a repository whose listing fails or would take
//! more than half the requests it saves.
//!
//! A leaf of the engine: `source` and `graph` ask it; it imports none of them.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::OnceCell;

use crate::copy::item::{Endpoint, Item};
use crate::reference::Digest;
use crate::registry::tag_digests::TagDigests;

/// A listing is read only where it takes at most one page per this many tags the run may ask
/// about in the repository: at most half the requests it saves.
const TAGS_PER_PAGE: usize = 2;

/// A repository's listing, once read (`None`: there is none, ask each tag).
type Cell = Arc<OnceCell<Option<Arc<TagDigests>>>>;

/// A repository's listing, with how many batches in flight name the repository and how many
/// of their items may ask it.
struct Shared {
    batches: usize,
    asking: usize,
    cell: Cell,
}

/// (registry, repository).
type RepoKey = (String, String);

/// The listings of the repositories batches in flight name (see the module docs).
#[derive(Default)]
pub(super) struct Listings(std::sync::Mutex<HashMap<RepoKey, Shared>>);

/// A batch's hold on the listings its items may ask: let go when the batch is done.
pub(super) struct Held<'a> {
    listings: &'a Listings,
    asking: HashMap<RepoKey, usize>,
}

fn key(end: &Endpoint) -> RepoKey {
    (end.registry.name().to_string(), end.repo.clone())
}

impl Listings {
    /// Hold the listings `items` may ask: of each source repository an item reads by tag, of
    /// each target repository an item writes a tag into, where the registry has one.
    pub(super) fn hold(&self, items: &[Item]) -> Held<'_> {
        let mut asking: HashMap<RepoKey, usize> = HashMap::new();
        let lists = |end: &Endpoint| end.registry.capabilities().lists_tag_digests;
        for item in items {
            if lists(&item.source) && Digest::parse(&item.source_ref).is_none() {
                *asking.entry(key(&item.source)).or_default() += 1;
            }
            if lists(&item.target) && item.target_tag.is_some() {
                *asking.entry(key(&item.target)).or_default() += 1;
            }
        }
        let mut all = self.0.lock().expect("tag listings");
        for (k, n) in &asking {
            let shared = all.entry(k.clone()).or_insert_with(|| Shared {
                batches: 0,
                asking: 0,
                cell: Arc::default(),
            });
            shared.batches += 1;
            shared.asking += n;
        }
        drop(all);
        Held {
            listings: self,
            asking,
        }
    }

    /// The digest `tag` of `end`'s repository had when the repository was listed; `None`
    /// where there is no listing to answer it (the registry has none, no batch holds it, it
    /// failed, it would cost too much, or it does not name the tag): ask the registry.
    pub(super) async fn digest(&self, end: &Endpoint, tag: &str) -> Option<Digest> {
        if !end.registry.capabilities().lists_tag_digests {
            return None;
        }
        let (cell, asking) = self.cell(end)?;
        // Boxed: the listing's future is large, and an image's copy future holds it.
        let listing = Box::pin(cell.get_or_init(|| async {
            let max_pages = asking / TAGS_PER_PAGE;
            if max_pages == 0 {
                return None;
            }
            match end.registry.tag_digests(&end.repo, max_pages).await {
                Ok(listing) => listing.map(Arc::new),
                Err(e) => {
                    tracing::debug!(error = %e, repo = %end.repo, "tags not listed; asking each");
                    None
                }
            }
        }))
        .await;
        listing.as_ref()?.get(tag).cloned()
    }

    /// The listing cell of `end`'s repository and how many items may ask it, while a batch
    /// holds it.
    fn cell(&self, end: &Endpoint) -> Option<(Cell, usize)> {
        let all = self.0.lock().expect("tag listings");
        all.get(&key(end)).map(|s| (s.cell.clone(), s.asking))
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut all = self.listings.0.lock().expect("tag listings");
        for (k, n) in self.asking.drain() {
            if let Some(shared) = all.get_mut(&k) {
                shared.batches -= 1;
                shared.asking -= n;
                if shared.batches == 0 {
                    all.remove(&k);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
