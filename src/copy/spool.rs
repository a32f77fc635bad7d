//! The spool: a local copy of the bytes of large blobs in flight, so an upload whose target
//! session did not survive (a PATCH cut by SIGKILL cancels it on CNCF distribution; sessions
//! expire) is rebuilt from disk instead of read from the source again.
//!
//! One file per blob (`<dir>/<algorithm>-<hex>`), written as the bytes stream from the source
//! and before they are handed on, so every byte an upload session confirmed is in the file.
//! A file is trusted only up to an offset whose SHA-256 state the checkpoint holds, and only
//! once it hashed to that state; anything else is discarded. A file is removed when its blob
//! is complete, and the whole spool at the end of a run that finished everything. Disk use is
//! bounded: a blob is spooled only if its whole size fits under the limit beside the others.

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use crate::reference::{Digest, Midstate};
use crate::registry::{BlobStream, RegistryError};

/// Blobs smaller than this are not spooled: re-reading them costs little.
pub const SPOOL_MIN: u64 = 64 * 1024 * 1024;

/// Bytes gathered before one write to the spool file.
const WRITE_BATCH: usize = 1024 * 1024;

/// See the module docs.
pub struct Spool {
    dir: PathBuf,
    limit: u64,
    min: u64,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Bytes reserved by the blobs being spooled.
    reserved: u64,
    /// Blobs with a writer in this run (one writer per file).
    writing: HashSet<Digest>,
}

/// The right to write one blob's spool file, released when dropped.
pub struct Lease<'a> {
    spool: &'a Spool,
    digest: Digest,
    size: u64,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let mut inner = self.spool.inner.lock().expect("spool");
        inner.reserved -= self.size;
        inner.writing.remove(&self.digest);
    }
}

/// Room reserved under the spool's limit ([`Spool::reserve`]), given back when dropped.
pub struct Room {
    spool: Arc<Spool>,
    size: u64,
}

impl Drop for Room {
    fn drop(&mut self) {
        self.spool.inner.lock().expect("spool").reserved -= self.size;
    }
}

impl Spool {
    /// A spool in `dir` holding at most `limit` bytes; blobs from `min` bytes up.
    pub fn new(dir: PathBuf, limit: u64, min: u64) -> Spool {
        Spool {
            dir,
            limit,
            min,
            inner: Mutex::default(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.dir
            .join(format!("{}-{}", digest.algorithm(), digest.hex()))
    }

    /// Reserve room for a blob of `size` bytes; `None` when it is small, already being
    /// spooled, or does not fit under the limit.
    pub fn lease(&self, digest: &Digest, size: u64) -> Option<Lease<'_>> {
        if size < self.min || digest.algorithm() != "sha256" {
            return None;
        }
        let mut inner = self.inner.lock().expect("spool");
        if inner.reserved + size > self.limit || inner.writing.contains(digest) {
            return None;
        }
        inner.reserved += size;
        inner.writing.insert(digest.clone());
        Some(Lease {
            spool: self,
            digest: digest.clone(),
            size,
        })
    }

    /// Room for `size` bytes under the limit, beside the blobs being spooled, until the
    /// [`Room`] is dropped: for a file the spool does not name by digest (a fan-out's one
    /// read of a blob, see `shared_read`), of any size. `None` when it does not fit.
    pub fn reserve(self: &Arc<Self>, size: u64) -> Option<Room> {
        let mut inner = self.inner.lock().expect("spool");
        if inner.reserved + size > self.limit {
            return None;
        }
        inner.reserved += size;
        Some(Room {
            spool: self.clone(),
            size,
        })
    }

    /// Remove a blob's file (it is complete at the target, or cannot be trusted).
    pub fn discard(&self, digest: &Digest) {
        let _ = std::fs::remove_file(self.path(digest));
    }

    /// Remove every file but those of `keep` (blobs with a parked upload).
    pub fn retain_only(&self, keep: &HashSet<Digest>) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let digest = name
                .split_once('-')
                .and_then(|(alg, hex)| Digest::parse(&format!("{alg}:{hex}")));
            if !digest.is_some_and(|d| keep.contains(&d)) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

impl Lease<'_> {
    /// The first `state.offset()` bytes of the file, if they hash to `state`: read on a
    /// blocking thread. A file that is shorter or hashes otherwise is discarded.
    pub async fn verified_prefix(&self, state: &Midstate) -> bool {
        let path = self.spool.path(&self.digest);
        let want = state.clone();
        let ok =
            tokio::task::spawn_blocking(move || hash_prefix(&path, want.offset()) == Some(want))
                .await
                .unwrap_or(false);
        if !ok {
            tracing::info!(digest = %self.digest, "spool file does not match the checkpoint; discarded");
            self.spool.discard(&self.digest);
        }
        ok
    }

    /// Bytes `from..to` of the file, as a stream (verified beforehand by
    /// [`Lease::verified_prefix`]).
    pub fn read(&self, from: u64, to: u64) -> BlobStream {
        read_file(self.spool.path(&self.digest), from, to)
    }

    /// Pass `data` (the blob from byte `at` on) through, writing it to the file from `at`
    /// first: a batch is handed on only once it is written. A write that fails (a full disk)
    /// stops the spooling, not the stream.
    pub fn tee(&self, data: BlobStream, at: u64) -> BlobStream {
        let path = self.spool.path(&self.digest);
        let file = open_at(self.spool.dir(), &path, at);
        let digest = self.digest.clone();
        let state = Tee {
            data,
            file,
            batch: BytesMut::new(),
            digest,
            done: false,
        };
        Box::pin(futures::stream::unfold(state, |mut t| async move {
            t.next().await.map(|item| (item, t))
        }))
    }
}

struct Tee {
    data: BlobStream,
    file: Option<std::fs::File>,
    batch: BytesMut,
    digest: Digest,
    done: bool,
}

impl Tee {
    async fn next(&mut self) -> Option<Result<Bytes, RegistryError>> {
        if self.file.is_none() {
            if !self.batch.is_empty() {
                return Some(Ok(self.batch.split().freeze()));
            }
            return self.data.next().await;
        }
        while !self.done && self.batch.len() < WRITE_BATCH {
            match self.data.next().await {
                Some(Ok(b)) => self.batch.extend_from_slice(&b),
                Some(Err(e)) => {
                    // What was read before the error is still good: write it first.
                    self.write().await;
                    return Some(Err(e));
                }
                None => self.done = true,
            }
        }
        if self.batch.is_empty() {
            return None;
        }
        self.write().await;
        Some(Ok(self.batch.split().freeze()))
    }

    async fn write(&mut self) {
        let (Some(mut file), bytes) = (self.file.take(), self.batch.clone().freeze()) else {
            return;
        };
        let written = tokio::task::spawn_blocking(move || {
            let r = file.write_all(&bytes);
            (file, r)
        })
        .await;
        match written {
            Ok((file, Ok(()))) => self.file = Some(file),
            Ok((_, Err(e))) => {
                tracing::warn!(digest = %self.digest, error = %e, "spool write failed; this blob is no longer spooled")
            }
            Err(_) => {}
        }
    }
}

/// Bytes `from..to` of the file at `path`, as a stream read on a blocking thread.
pub(crate) fn read_file(path: PathBuf, from: u64, to: u64) -> BlobStream {
    let shown = path.display().to_string();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, RegistryError>>(2);
    tokio::task::spawn_blocking(move || {
        let read = || -> std::io::Result<()> {
            let mut f = std::fs::File::open(&path)?;
            f.seek(SeekFrom::Start(from))?;
            let mut left = to - from;
            while left > 0 {
                let mut buf = vec![0u8; WRITE_BATCH.min(left as usize)];
                f.read_exact(&mut buf)?;
                left -= buf.len() as u64;
                if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                    return Ok(());
                }
            }
            Ok(())
        };
        if let Err(e) = read() {
            let _ = tx.blocking_send(Err(RegistryError::Protocol {
                url: shown,
                reason: format!("reading the spool: {e}"),
            }));
        }
    });
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

/// The file open for writing from byte `at` (cut there); `None` when it holds fewer bytes or
/// cannot be opened.
pub(crate) fn open_at(dir: &Path, path: &Path, at: u64) -> Option<std::fs::File> {
    let open = || -> std::io::Result<Option<std::fs::File>> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
        // The spool holds image bytes: the owner's only, as the checkpoint is.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(path)?;
        let meta = f.metadata()?;
        // `mode` applies only to a file this call creates: one left looser is tightened.
        if meta.permissions().mode() & 0o077 != 0 {
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        if meta.len() < at {
            return Ok(None);
        }
        f.set_len(at)?;
        f.seek(SeekFrom::Start(at))?;
        Ok(Some(f))
    };
    match open() {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot spool");
            None
        }
    }
}

/// The SHA-256 state of the first `len` bytes of the file; `None` when it is shorter.
fn hash_prefix(path: &Path, len: u64) -> Option<Midstate> {
    let mut f = std::fs::File::open(path).ok()?;
    let mut m = Midstate::new();
    let mut buf = vec![0u8; WRITE_BATCH];
    let mut left = len;
    while left > 0 {
        let n = (buf.len() as u64).min(left) as usize;
        f.read_exact(&mut buf[..n]).ok()?;
        m.update(&buf[..n]);
        left -= n as u64;
    }
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;

    fn blob(n: usize) -> (Vec<u8>, Digest) {
        let bytes: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8).collect();
        let d = Digest::sha256_of(&bytes);
        (bytes, d)
    }

    async fn collect(s: BlobStream) -> Vec<u8> {
        let mut out = Vec::new();
        let mut s = s;
        while let Some(b) = s.next().await {
            out.extend_from_slice(&b.unwrap());
        }
        out
    }

    fn pieces(bytes: &[u8]) -> BlobStream {
        let items: Vec<Result<Bytes, RegistryError>> = bytes
            .chunks(300_001)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Box::pin(stream::iter(items))
    }

    #[tokio::test]
    async fn what_passes_through_is_on_disk_and_verified_against_a_state() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path().join("spool"), 1 << 30, 0);
        let (bytes, d) = blob(3_000_000);
        let lease = spool.lease(&d, bytes.len() as u64).unwrap();
        // The first 2 MB, then (as a later run would) the rest from an offset.
        let first = collect(lease.tee(pieces(&bytes[..2_000_000]), 0)).await;
        assert_eq!(first, &bytes[..2_000_000]);
        let mut state = Midstate::new();
        state.update(&bytes[..1_500_000]);
        assert!(lease.verified_prefix(&state).await);
        assert_eq!(
            collect(lease.read(1_000_000, 1_500_000)).await,
            &bytes[1_000_000..1_500_000]
        );
        let rest = collect(lease.tee(pieces(&bytes[1_500_000..]), 1_500_000)).await;
        assert_eq!(rest, &bytes[1_500_000..]);
        assert_eq!(std::fs::read(spool.path(&d)).unwrap(), bytes);

        // A state of other bytes, or of more bytes than the file has: discarded.
        let mut other = Midstate::new();
        other.update(&bytes[1..1_000_001]);
        assert!(!lease.verified_prefix(&other).await);
        assert!(!spool.path(&d).exists());
        let mut long = Midstate::new();
        long.update(&bytes);
        long.update(b"more");
        assert!(!lease.verified_prefix(&long).await);
    }

    /// Issue 21 (what was seen, 6): spool files were 0644 in their 0700 directory.
    #[tokio::test]
    async fn spool_files_are_the_owners_only() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path().join("spool"), 1 << 30, 0);
        let (bytes, d) = blob(1000);
        let lease = spool.lease(&d, bytes.len() as u64).unwrap();
        collect(lease.tee(pieces(&bytes), 0)).await;
        assert_eq!(mode(spool.dir()), 0o700);
        assert_eq!(mode(&spool.path(&d)), 0o600);

        // A file left looser (by an older ferry, or by hand) is tightened when reused.
        std::fs::set_permissions(spool.path(&d), std::fs::Permissions::from_mode(0o644)).unwrap();
        collect(lease.tee(pieces(&bytes[500..]), 500)).await;
        assert_eq!(mode(&spool.path(&d)), 0o600);
        assert_eq!(std::fs::read(spool.path(&d)).unwrap(), bytes);
    }

    #[tokio::test]
    async fn leases_respect_the_limit_the_minimum_and_one_writer() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path().join("spool"), 100, 10);
        let (_, a) = blob(1);
        let (_, b) = blob(2);
        assert!(spool.lease(&a, 9).is_none(), "below the minimum");
        let la = spool.lease(&a, 60).unwrap();
        assert!(spool.lease(&a, 60).is_none(), "one writer per blob");
        assert!(
            spool.lease(&b, 50).is_none(),
            "over the limit beside the other"
        );
        drop(la);
        assert!(spool.lease(&b, 50).is_some());
    }

    #[test]
    fn retain_only_keeps_the_files_of_parked_uploads() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path().to_path_buf(), 100, 0);
        let (_, a) = blob(1);
        let (_, b) = blob(2);
        std::fs::write(spool.path(&a), b"a").unwrap();
        std::fs::write(spool.path(&b), b"b").unwrap();
        std::fs::write(dir.path().join("stray"), b"?").unwrap();
        spool.retain_only(&[a.clone()].into_iter().collect());
        assert!(spool.path(&a).exists());
        assert!(!spool.path(&b).exists());
        assert!(!dir.path().join("stray").exists());
    }
}
