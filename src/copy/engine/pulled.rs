//! Source manifests read by digest where a GET counts as a pull (Docker Hub): each is read
//! once per run and its bytes are kept for every other tag (or index) that names it, so two
//! tags of one image cost one pull (issue 25). What is kept is bounded by bytes
//! ([`PULLED_BYTES`]), the oldest going first, so it does not grow with the number of tags;
//! two items asking for one digest at once wait for one GET. Elsewhere a GET costs nothing
//! but the request, and nothing is kept. A leaf: it imports nothing of the engine.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use crate::copy::item::Item;
use crate::copy::outcome::CopyError;
use crate::reference::Digest;
use crate::registry::Manifest;

/// The most manifest bytes kept at once: a few thousand image manifests (an index of many
/// platforms is a few KiB, an image manifest about one).
pub const PULLED_BYTES: usize = 4 << 20;

/// (source registry, repository, digest).
type Key = (String, String, Digest);

/// The manifests read (see the module docs).
#[derive(Default)]
pub(super) struct Pulled {
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    cells: HashMap<Key, Arc<OnceCell<Manifest>>>,
    /// The cells filled, oldest first, with their sizes.
    order: VecDeque<(Key, usize)>,
    bytes: usize,
}

impl Pulled {
    /// Manifest `digest` of the item's source repository: the one read earlier in this run,
    /// else what `read` reads (kept where the source counts pulls).
    pub(super) async fn get<F>(
        &self,
        item: &Item,
        digest: &Digest,
        read: F,
    ) -> Result<Manifest, CopyError>
    where
        F: Future<Output = Result<Manifest, CopyError>>,
    {
        let src = &item.source;
        if !src.registry.capabilities().counts_pulls {
            return read.await;
        }
        let key = (
            src.registry.name().to_string(),
            src.repo.clone(),
            digest.clone(),
        );
        let cell = self.cell(&key);
        let mut filled = false;
        let got = cell
            .get_or_try_init(|| {
                filled = true;
                read
            })
            .await
            .cloned();
        match &got {
            Ok(m) if filled => self.keep(key, m.bytes.len()),
            Err(_) => self.forget_empty(&key),
            Ok(_) => {}
        }
        got
    }

    fn cell(&self, key: &Key) -> Arc<OnceCell<Manifest>> {
        let mut held = self.held.lock().expect("pulled manifests");
        held.cells.entry(key.clone()).or_default().clone()
    }

    /// A cell just filled is kept; the oldest go while more than [`PULLED_BYTES`] are.
    fn keep(&self, key: Key, size: usize) {
        let mut held = self.held.lock().expect("pulled manifests");
        held.order.push_back((key, size));
        held.bytes += size;
        while held.bytes > PULLED_BYTES {
            let Some((old, size)) = held.order.pop_front() else {
                break;
            };
            held.bytes -= size;
            held.cells.remove(&old);
        }
    }

    /// A read that failed leaves no cell behind (the next asker tries again).
    fn forget_empty(&self, key: &Key) {
        let mut held = self.held.lock().expect("pulled manifests");
        if held.cells.get(key).is_some_and(|c| !c.initialized()) {
            held.cells.remove(key);
        }
    }

    /// How many manifests are kept, and their bytes (for tests).
    #[cfg(test)]
    pub(super) fn held(&self) -> (usize, usize) {
        let held = self.held.lock().expect("pulled manifests");
        (held.order.len(), held.bytes)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;

    use super::*;
    use crate::copy::item::Endpoint;
    use crate::registry::capabilities::Capabilities;
    use crate::registry::memory::MemoryRegistry;
    use crate::registry::Registry;

    fn item(counts_pulls: bool) -> Item {
        let caps = Capabilities {
            counts_pulls,
            ..Capabilities::default()
        };
        let hub: Arc<dyn Registry> =
            Arc::new(MemoryRegistry::new("docker.io").with_capabilities(caps));
        let end = |repo: &str| Endpoint {
            registry: hub.clone(),
            repo: repo.into(),
        };
        Item {
            source: end("myorg/web"),
            source_ref: "v1".into(),
            target: end("mirror/web"),
            target_tag: Some("v1".into()),
            subject: None,
            platforms: None,
            rule: 1,
            after: None,
            seen: None,
            read: None,
            contest: None,
        }
    }

    fn manifest(size: usize, seed: u8) -> Manifest {
        let bytes = Bytes::from(vec![seed; size]);
        Manifest {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: Digest::sha256_of(&bytes),
            bytes,
        }
    }

    /// Issue 25 part 2: two tags of one image, copied at once, cost one pull; where a GET
    /// counts none, nothing is kept.
    #[tokio::test]
    async fn one_read_per_digest_where_reads_are_pulls_and_what_is_kept_is_bounded() {
        let pulled = Pulled::default();
        let reads = AtomicUsize::new(0);
        let m = manifest(1000, 1);
        let read = || async {
            reads.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            Ok(m.clone())
        };
        let hub = item(true);
        let (a, b) = tokio::join!(
            pulled.get(&hub, &m.digest, read()),
            pulled.get(&hub, &m.digest, read())
        );
        assert_eq!(
            (a.unwrap().digest, b.unwrap().digest),
            (m.digest.clone(), m.digest.clone())
        );
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        assert_eq!(pulled.held(), (1, 1000));
        let plain = item(false);
        pulled.get(&plain, &m.digest, read()).await.unwrap();
        pulled.get(&plain, &m.digest, read()).await.unwrap();
        assert_eq!(reads.load(Ordering::SeqCst), 3);
        // Bounded: the oldest go once more than PULLED_BYTES are kept.
        for seed in 2..=6 {
            let big = manifest(PULLED_BYTES / 4, seed);
            pulled
                .get(&hub, &big.digest, async { Ok(big.clone()) })
                .await
                .unwrap();
        }
        let (n, bytes) = pulled.held();
        assert!(
            bytes <= PULLED_BYTES && n == 4,
            "{n} manifests, {bytes} bytes"
        );
        // A failed read keeps nothing: the next asker reads again.
        let gone = manifest(10, 9);
        let failed = pulled
            .get(&hub, &gone.digest, async {
                Err(CopyError::Manifest {
                    reference: "docker.io/myorg/web@x".into(),
                    reason: "cut".into(),
                })
            })
            .await;
        assert!(failed.is_err());
        pulled
            .get(&hub, &gone.digest, async { Ok(gone.clone()) })
            .await
            .unwrap();
    }
}
