//! One read of the source for every target of a fan-out (a `[[copy]]` rule with `to = [...]`,
//! run as one rule per target): the first of its targets that needs a blob reads it from the
//! source once, whole and verified, into a file of the spool (`<spool>/fanout/`), and every
//! target that needs it uploads from that file, each at its own pace: a slow target holds up
//! no other. A target that already has the blob (or mounts it) reads nothing and waits for
//! nothing. The file goes when every target of the rule is done with the blob, or at the end
//! of the run.
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
use crate::registry::RegistryError;

/// A blob of one fan-out, read from one source registry.
type Key = (usize, String, Digest);

/// See the module docs.
pub struct SharedReads {
    spool: Arc<Spool>,
    dir: PathBuf,
    /// The fan-out rules, by number: their group (the `[[copy]]` block) and how many rules
    /// (targets) it has.
    groups: HashMap<usize, (usize, usize)>,
    entries: Mutex<HashMap<Key, Arc<Entry>>>,
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
    pub fn new(spool: Arc<Spool>, groups: HashMap<usize, (usize, usize)>) -> SharedReads {
        let dir = spool.dir().join("fanout");
        SharedReads {
            spool,
            dir,
            groups,
            entries: Mutex::default(),
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
    /// when it does not fit in the spool.
    async fn fetch(
        &self,
        source: &Endpoint,
        digest: &Digest,
        size: u64,
        counted: &(dyn Fn(u64) + Sync),
    ) -> Result<Option<Shared>, RegistryError> {
        let Some(room) = self.spool.reserve(size) else {
            return Ok(None);
        };
        let path = self
            .dir
            .join(format!("{}-{}", digest.algorithm(), digest.hex()));
        let tail = source
            .registry
            .get_blob_from(&source.repo, digest, size, 0)
            .await?;
        let url = tail.url.clone();
        let mut stream = tail.stream;
        let mut file = create(&self.dir, &path)
            .await
            .map_err(|e| RegistryError::Protocol {
                url: path.display().to_string(),
                reason: format!("writing the spool: {e}"),
            })?;
        let mut hash = Midstate::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            counted(chunk.len() as u64);
            hash.update(&chunk);
            file.write_all(&chunk)
                .await
                .map_err(|e| RegistryError::Protocol {
                    url: path.display().to_string(),
                    reason: format!("writing the spool: {e}"),
                })?;
        }
        file.flush().await.ok();
        let got = hash.offset();
        if got != size {
            return Err(RegistryError::SizeMismatch {
                url,
                expected: size,
                actual: got,
            });
        }
        let actual = hash.finish();
        if actual != *digest {
            let _ = std::fs::remove_file(&path);
            return Err(RegistryError::DigestMismatch {
                url,
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        self.spooled.fetch_add(1, Relaxed);
        Ok(Some(Shared { path, _room: room }))
    }

    /// A target of rule `rule` is done with the blob (it has it, or failed): once every
    /// target of the fan-out is, its file goes.
    pub fn finished(&self, rule: usize, source: &Endpoint, digest: &Digest) {
        let Some(&(group, targets)) = self.groups.get(&rule) else {
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
        let _ = std::fs::remove_dir_all(&self.dir);
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
