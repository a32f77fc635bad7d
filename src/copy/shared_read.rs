//! One read of the source for every target of a fan-out (a `[[copy]]` rule with `to = [...]`,
//! run as one rule per target): the first of its targets that needs a blob reads it from the
//! source once, whole and verified, into a file of the spool (`<spool>/fanout/`), and every
//! target that needs it uploads from that file, each at its own pace: a slow target holds up
//! no other. A target that already has the blob (or mounts it) reads nothing and waits for
//! nothing. The file goes when every target of the rule is done with the blob, or at the end
//! of the run.
//!
//! Manifests read by digest are shared the same way, in memory (a few thousand at most): on
//! Docker Hub each is a pull.
//!
//! Disk use counts against the spool's limit: a blob that does not fit is read from the
//! source by each target that needs it (counted: `reread_blobs`). No network of its own: it
//! reads through the source's [`crate::registry::Registry`].

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use super::item::Endpoint;
use super::spool::{Room, Spool};
use crate::reference::{Digest, Midstate};
use crate::registry::{Manifest, RegistryError};

/// A blob of one fan-out, read from one source registry.
type Key = (usize, String, Digest);

/// A manifest of one fan-out's source repository, by digest.
type ManifestKey = (usize, String, String, Digest);

/// Manifests kept for the other targets at most: past it, each target reads its own (a
/// manifest that some target never asks for stays until the run ends).
const MANIFESTS_KEPT: usize = 10_000;

/// See the module docs.
pub struct SharedReads {
    /// Where blobs are kept; `None` (`--spool-limit 0`, `ferry plan`): each target reads
    /// its blobs from the source, and only manifests are shared.
    spool: Option<Arc<Spool>>,
    dir: Option<PathBuf>,
    /// The fan-out rules, by number: their group (the `[[copy]]` block) and how many rules
    /// (targets) it has.
    groups: HashMap<usize, (usize, usize)>,
    entries: Mutex<HashMap<Key, Arc<Entry>>>,
    manifests: Mutex<HashMap<ManifestKey, Arc<Kept>>>,
    spooled: AtomicU64,
    reread: AtomicU64,
}

/// One blob of one fan-out.
#[derive(Default)]
struct Entry {
    /// Its file, once read; `None` when the spool had no room for it.
    file: tokio::sync::OnceCell<Option<Shared>>,
    /// The rules (targets) done with it.
    done: Mutex<HashSet<usize>>,
    /// Targets that read the source themselves (no room in the spool).
    direct: AtomicUsize,
}

/// One manifest of a fan-out's source, read once for its targets.
#[derive(Default)]
struct Kept {
    manifest: tokio::sync::OnceCell<Manifest>,
    /// The rules (targets) that took it.
    taken: Mutex<HashSet<usize>>,
}

struct Shared {
    path: PathBuf,
    _room: Room,
}

/// What [`SharedReads::open`] gives a target's upload.
pub enum Read {
    /// Upload from this file: the blob, whole and verified.
    File(PathBuf),
    /// Read the source, as a rule with one target does.
    Source,
}

impl SharedReads {
    /// Shared reads for the fan-out rules in `groups` (rule number -> (group, targets in
    /// the group)), their files under the spool's directory.
    pub fn new(spool: Option<Arc<Spool>>, groups: HashMap<usize, (usize, usize)>) -> SharedReads {
        let dir = spool.as_ref().map(|s| s.dir().join("fanout"));
        SharedReads {
            spool,
            dir,
            groups,
            entries: Mutex::default(),
            manifests: Mutex::default(),
            spooled: AtomicU64::new(0),
            reread: AtomicU64::new(0),
        }
    }

    /// Blobs read once for several targets, and blob reads past the first of a fan-out
    /// because the spool had no room.
    pub fn counts(&self) -> (u64, u64) {
        (self.spooled.load(Relaxed), self.reread.load(Relaxed))
    }

    fn entry(&self, rule: usize, source: &Endpoint, digest: &Digest) -> Option<Arc<Entry>> {
        self.spool.as_ref()?;
        let (group, _) = self.groups.get(&rule)?;
        let key = (*group, source.registry.name().to_string(), digest.clone());
        Some(
            self.entries
                .lock()
                .expect("shared reads")
                .entry(key)
                .or_default()
                .clone(),
        )
    }

    /// Where a target of rule `rule` reads the blob from: the shared file (read from the
    /// source now if no target read it yet; `counted` is told of each byte read), or the
    /// source itself (not a fan-out, or no room).
    pub async fn open(
        &self,
        rule: usize,
        source: &Endpoint,
        digest: &Digest,
        size: u64,
        counted: &(dyn Fn(u64) + Sync),
    ) -> Result<Read, RegistryError> {
        let Some(entry) = self.entry(rule, source, digest) else {
            return Ok(Read::Source);
        };
        let file = entry
            .file
            .get_or_try_init(|| self.fetch(source, digest, size, counted))
            .await?;
        match file {
            Some(shared) => Ok(Read::File(shared.path.clone())),
            None => {
                if entry.direct.fetch_add(1, Relaxed) > 0 {
                    self.reread.fetch_add(1, Relaxed);
                }
                Ok(Read::Source)
            }
        }
    }

    /// Read the blob from the source into a file of its own, verifying its digest; `None`
    /// when it does not fit in the spool, or the spool cannot be written (a full disk): the
    /// targets then read the source themselves.
    async fn fetch(
        &self,
        source: &Endpoint,
        digest: &Digest,
        size: u64,
        counted: &(dyn Fn(u64) + Sync),
    ) -> Result<Option<Shared>, RegistryError> {
        let (Some(spool), Some(dir)) = (&self.spool, &self.dir) else {
            return Ok(None);
        };
        let Some(room) = spool.reserve(size) else {
            return Ok(None);
        };
        let path = dir.join(format!("{}-{}", digest.algorithm(), digest.hex()));
        let tail = source
            .registry
            .get_blob_from(&source.repo, digest, size, 0)
            .await?;
        let (url, mut stream) = (tail.url, tail.stream);
        let mut file = create(dir, &path).await;
        let mut hash = Midstate::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            counted(chunk.len() as u64);
            hash.update(&chunk);
            if let Ok(f) = &mut file {
                if let Err(e) = f.write_all(&chunk).await {
                    file = Err(e);
                }
            }
        }
        let written = match file {
            Ok(mut f) => f.flush().await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "cannot spool a fan-out's blob; each target reads the source");
            let _ = std::fs::remove_file(&path);
            return Ok(None);
        }
        let got = hash.offset();
        let actual = hash.finish();
        if got != size || actual != *digest {
            let _ = std::fs::remove_file(&path);
            return Err(match got != size {
                true => RegistryError::SizeMismatch {
                    url,
                    expected: size,
                    actual: got,
                },
                false => RegistryError::DigestMismatch {
                    url,
                    expected: digest.to_string(),
                    actual: actual.to_string(),
                },
            });
        }
        self.spooled.fetch_add(1, Relaxed);
        Ok(Some(Shared { path, _room: room }))
    }

    /// The source manifest `digest` for a target of rule `rule`: read by `read` for the first
    /// target of a fan-out that asks, kept until every target took it. `read` alone for a
    /// rule with one target.
    pub async fn manifest<E, F, Fut>(
        &self,
        rule: usize,
        source: &Endpoint,
        digest: &Digest,
        read: F,
    ) -> Result<Manifest, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Manifest, E>>,
    {
        let Some(&(group, targets)) = self.groups.get(&rule) else {
            return read().await;
        };
        let key = (
            group,
            source.registry.name().to_string(),
            source.repo.clone(),
            digest.clone(),
        );
        let kept = {
            let mut manifests = self.manifests.lock().expect("manifests");
            let room = manifests.len() < MANIFESTS_KEPT || manifests.contains_key(&key);
            room.then(|| manifests.entry(key.clone()).or_default().clone())
        };
        let Some(kept) = kept else {
            return read().await;
        };
        let manifest = kept.manifest.get_or_try_init(read).await?.clone();
        let all = {
            let mut taken = kept.taken.lock().expect("taken");
            taken.insert(rule);
            taken.len() >= targets
        };
        if all {
            self.manifests.lock().expect("manifests").remove(&key);
        }
        Ok(manifest)
    }

    /// A target of rule `rule` is done with the blob (it has it, or failed): once every
    /// target of the fan-out is, its file goes.
    pub fn finished(&self, rule: usize, source: &Endpoint, digest: &Digest) {
        let Some(&(group, targets)) = self.groups.get(&rule).filter(|_| self.spool.is_some())
        else {
            return;
        };
        let key = (group, source.registry.name().to_string(), digest.clone());
        let mut entries = self.entries.lock().expect("shared reads");
        // Marked even before any target read it: a target that had it counts too.
        let entry = entries.entry(key.clone()).or_default();
        let all = {
            let mut done = entry.done.lock().expect("done");
            done.insert(rule);
            done.len() >= targets
        };
        if all {
            if let Some(Some(shared)) = entries.remove(&key).as_ref().and_then(|e| e.file.get()) {
                let _ = std::fs::remove_file(&shared.path);
            }
        }
    }
}

impl Drop for SharedReads {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A new file, the owner's only (it holds image bytes, as the checkpoint does).
async fn create(dir: &Path, path: &Path) -> std::io::Result<tokio::fs::File> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    tokio::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::memory::MemoryRegistry;
    use crate::registry::Registry;

    fn setup(limit: u64) -> (tempfile::TempDir, SharedReads, Endpoint, Digest) {
        let dir = tempfile::tempdir().unwrap();
        let spool = Arc::new(Spool::new(dir.path().join("spool"), limit, 0));
        // Rules 1 and 2: the two targets of block 1; rule 3 has one target.
        let groups = HashMap::from([(1, (1, 2)), (2, (1, 2))]);
        let registry = Arc::new(MemoryRegistry::new("src.test"));
        let digest = registry.add_blob("team/app", b"0123456789");
        let source = Endpoint {
            registry,
            repo: "team/app".into(),
        };
        (dir, SharedReads::new(Some(spool), groups), source, digest)
    }

    /// Issue 25, part 1: both targets of a fan-out get the blob from one read of the source;
    /// the file goes once both are done with it.
    #[tokio::test]
    async fn two_targets_share_one_read_and_the_file_goes_after_both() {
        let (_dir, shared, source, digest) = setup(1 << 20);
        let read = AtomicU64::new(0);
        let counted = |n: u64| {
            read.fetch_add(n, Relaxed);
        };
        let mut paths = Vec::new();
        for rule in [1, 2] {
            match shared
                .open(rule, &source, &digest, 10, &counted)
                .await
                .unwrap()
            {
                Read::File(path) => paths.push(path),
                Read::Source => panic!("rule {rule} reads the source"),
            }
        }
        assert_eq!(read.load(Relaxed), 10, "one read of 10 bytes");
        assert_eq!(paths[0], paths[1]);
        assert_eq!(std::fs::read(&paths[0]).unwrap(), b"0123456789");
        assert!(matches!(
            shared.open(3, &source, &digest, 10, &counted).await,
            Ok(Read::Source)
        ));
        shared.finished(1, &source, &digest);
        assert!(paths[0].exists(), "target 2 is not done yet");
        shared.finished(2, &source, &digest);
        assert!(!paths[0].exists());
        assert_eq!(shared.counts(), (1, 0));
    }

    /// Issue 25, part 1: a manifest read by digest is read once for both targets of a
    /// fan-out, and not kept once both took it; a rule with one target reads its own.
    #[tokio::test]
    async fn a_manifest_is_read_once_for_both_targets() {
        let (_dir, shared, source, _) = setup(1 << 20);
        let registry = MemoryRegistry::new("src.test");
        let digest = registry.push_image("team/app", "v1", &[b"layer"], "linux/amd64");
        let reads = AtomicUsize::new(0);
        for rule in [1, 2, 3] {
            let read = || async {
                reads.fetch_add(1, Relaxed);
                registry.get_manifest("team/app", digest.as_str()).await
            };
            let m = shared.manifest(rule, &source, &digest, read).await.unwrap();
            assert_eq!(m.digest, digest);
        }
        assert_eq!(
            reads.load(Relaxed),
            2,
            "one for rules 1 and 2, one for rule 3"
        );
        assert!(shared.manifests.lock().unwrap().is_empty());
    }

    /// Past the spool's limit each target reads the source; reads past the first are counted.
    #[tokio::test]
    async fn without_room_each_target_reads_the_source_and_it_is_counted() {
        let (_dir, shared, source, digest) = setup(5);
        for rule in [1, 2] {
            let read = shared.open(rule, &source, &digest, 10, &|_| {}).await;
            assert!(matches!(read, Ok(Read::Source)));
        }
        assert_eq!(shared.counts(), (0, 1));
    }

    /// A read the source fails is the blob's failure (a second target tries again), and
    /// leaves no file.
    #[tokio::test]
    async fn a_failed_read_fails_the_blob_and_leaves_no_file() {
        let (dir, shared, source, _) = setup(1 << 20);
        let missing = Digest::sha256_of(b"other");
        let e = shared.open(1, &source, &missing, 10, &|_| {}).await;
        assert!(e.is_err());
        let left = std::fs::read_dir(dir.path().join("spool/fanout"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(left, 0);
    }
}
