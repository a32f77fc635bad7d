//! A blob's bytes cut into the chunks of a chunked upload and verified as they are cut: each
//! chunk carries the hash state at its end (what the checkpoint keeps once the registry
//! confirms it), and the last chunk is handed on only after the whole blob matched its digest
//! and size, so a wrong blob never completes at the target.

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::sync::mpsc::Sender;

use crate::reference::Digest;
use crate::reference::{Hasher, Midstate};
use crate::registry::error::{RegistryError, Result};
use crate::registry::BlobStream;

/// One chunk, ending at byte `end` of the blob.
#[derive(Debug)]
pub struct Chunk {
    pub bytes: Bytes,
    pub end: u64,
    /// The hash of bytes `0..end` (SHA-256 blobs; other algorithms cannot be resumed).
    pub state: Option<Midstate>,
}

/// The hash of what was read so far.
enum Running {
    Resumable(Midstate),
    Plain(Box<Hasher>),
}

impl Running {
    fn start(digest: &Digest, from: Midstate) -> Running {
        match digest.algorithm() {
            "sha256" => Running::Resumable(from),
            _ => Running::Plain(Box::new(Hasher::for_digest(digest))),
        }
    }
    fn update(&mut self, bytes: &[u8]) {
        match self {
            Running::Resumable(m) => m.update(bytes),
            Running::Plain(h) => h.update(bytes),
        }
    }
    fn state(&self) -> Option<Midstate> {
        match self {
            Running::Resumable(m) => Some(m.clone()),
            Running::Plain(_) => None,
        }
    }
    fn finish(self) -> Digest {
        match self {
            Running::Resumable(m) => m.finish(),
            Running::Plain(h) => h.finish(),
        }
    }
}

/// What the chunks are cut from, and how.
pub struct Cut<'a> {
    pub digest: &'a Digest,
    pub size: u64,
    /// The hash of the bytes before the first one `data` yields.
    pub from: Midstate,
    pub chunk_size: usize,
    /// Names the source in errors.
    pub what: String,
}

/// Read `data` into chunks sent on `tx` until the blob ends, an error (also sent) or the
/// receiver goes away. Errors are the source's (`SourceFailed`): a read error, or bytes that
/// are not the blob's.
pub async fn produce(mut data: BlobStream, cut: Cut<'_>, tx: Sender<Result<Chunk>>) {
    let fail = |e: RegistryError| RegistryError::SourceFailed {
        source: Box::new(e),
    };
    let mut at = cut.from.offset();
    if at > cut.size || (at > 0 && cut.digest.algorithm() != "sha256") {
        let _ = tx.send(Err(fail(size_error(&cut, at)))).await;
        return;
    }
    let mut hash = Running::start(cut.digest, cut.from.clone());
    let mut pending = BytesMut::with_capacity(chunk_len(&cut, at));
    loop {
        match data.next().await {
            Some(Ok(mut c)) => {
                while !c.is_empty() {
                    let want = chunk_len(&cut, at);
                    if want == 0 {
                        // Bytes past the end the descriptor gives.
                        let _ = tx.send(Err(fail(size_error(&cut, at + 1)))).await;
                        return;
                    }
                    // Fill chunks exactly, so each is one allocation of its size.
                    let take = (want - pending.len()).min(c.len());
                    pending.extend_from_slice(&c.split_to(take));
                    if pending.len() < want {
                        continue;
                    }
                    let bytes = std::mem::replace(
                        &mut pending,
                        BytesMut::with_capacity(chunk_len(&cut, at + want as u64)),
                    )
                    .freeze();
                    hash.update(&bytes);
                    at += bytes.len() as u64;
                    if at == cut.size {
                        // The last chunk waits for the end of the stream and the digest.
                        return finish(data, cut, hash, bytes, tx).await;
                    }
                    let chunk = Chunk {
                        bytes,
                        end: at,
                        state: hash.state(),
                    };
                    if tx.send(Ok(chunk)).await.is_err() {
                        return;
                    }
                }
            }
            Some(Err(e)) => {
                let _ = tx.send(Err(fail(e))).await;
                return;
            }
            None => {
                // Fewer bytes than the descriptor gives (an empty blob ends here whole).
                let outcome = if at + pending.len() as u64 == cut.size && cut.size == 0 {
                    return finish(data, cut, hash, Bytes::new(), tx).await;
                } else {
                    size_error(&cut, at + pending.len() as u64)
                };
                let _ = tx.send(Err(fail(outcome))).await;
                return;
            }
        }
    }
}

/// The size of the chunk that starts at `at`.
fn chunk_len(cut: &Cut<'_>, at: u64) -> usize {
    (cut.size.saturating_sub(at)).min(cut.chunk_size as u64) as usize
}

fn size_error(cut: &Cut<'_>, actual: u64) -> RegistryError {
    RegistryError::SizeMismatch {
        url: cut.what.clone(),
        expected: cut.size,
        actual,
    }
}

/// All bytes are in: the stream must end here and the digest match; then the last chunk goes.
async fn finish(
    mut data: BlobStream,
    cut: Cut<'_>,
    hash: Running,
    last: Bytes,
    tx: Sender<Result<Chunk>>,
) {
    let fail = |e: RegistryError| RegistryError::SourceFailed {
        source: Box::new(e),
    };
    while let Some(more) = data.next().await {
        match more {
            Ok(b) if b.is_empty() => continue,
            Ok(b) => {
                let e = size_error(&cut, cut.size + b.len() as u64);
                let _ = tx.send(Err(fail(e))).await;
                return;
            }
            Err(e) => {
                let _ = tx.send(Err(fail(e))).await;
                return;
            }
        }
    }
    let actual = hash.finish();
    if &actual != cut.digest {
        let e = RegistryError::DigestMismatch {
            url: cut.what.clone(),
            expected: cut.digest.to_string(),
            actual: actual.to_string(),
        };
        let _ = tx.send(Err(fail(e))).await;
        return;
    }
    if !last.is_empty() {
        let _ = tx
            .send(Ok(Chunk {
                bytes: last,
                end: cut.size,
                state: None,
            }))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;

    async fn cut(
        blob: &[u8],
        digest: &Digest,
        size: u64,
        skip: usize,
        pieces: usize,
    ) -> Result<Vec<Chunk>> {
        let mut from = Midstate::new();
        from.update(&blob[..skip]);
        let rest: Vec<Result<Bytes>> = blob[skip..]
            .chunks(pieces.max(1))
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let (tx, mut rx) = tokio::sync::mpsc::channel(100);
        let c = Cut {
            digest,
            size,
            from,
            chunk_size: 10,
            what: "test".into(),
        };
        produce(Box::pin(stream::iter(rest)), c, tx).await;
        let mut out = Vec::new();
        while let Some(chunk) = rx.recv().await {
            out.push(chunk?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn chunks_carry_the_state_at_their_end_and_the_last_waits_for_the_digest() {
        let blob: Vec<u8> = (0..35u8).collect();
        let d = Digest::sha256_of(&blob);
        for skip in [0, 10, 13] {
            for pieces in [1, 3, 7, 64] {
                let chunks = cut(&blob, &d, 35, skip, pieces).await.unwrap();
                let mut at = skip as u64;
                for c in &chunks {
                    at += c.bytes.len() as u64;
                    assert_eq!(c.end, at);
                    if let Some(s) = &c.state {
                        let mut m = Midstate::new();
                        m.update(&blob[..at as usize]);
                        assert_eq!(s, &m);
                    }
                }
                assert_eq!(at, 35, "skip {skip} pieces {pieces}");
                assert!(chunks.iter().all(|c| c.bytes.len() <= 10));
            }
        }
    }

    #[tokio::test]
    async fn wrong_bytes_never_yield_the_last_chunk() {
        let blob: Vec<u8> = (0..35u8).collect();
        let d = Digest::sha256_of(&blob);
        let mut wrong = blob.clone();
        wrong[30] ^= 1;
        let e = cut(&wrong, &d, 35, 0, 4).await.unwrap_err();
        assert!(e.to_string().contains("source"), "{e}");
        // Longer and shorter than the descriptor.
        assert!(cut(&blob, &d, 34, 0, 4).await.is_err());
        assert!(cut(&blob[..30], &d, 35, 0, 4).await.is_err());
        // A state that is not the one of the bytes before: the digest does not match.
        let mut other = blob.clone();
        other[0] ^= 1;
        let mut from = Midstate::new();
        from.update(&other[..10]);
        let (tx, mut rx) = tokio::sync::mpsc::channel(100);
        let rest = stream::iter([Ok(Bytes::copy_from_slice(&blob[10..]))]);
        let c = Cut {
            digest: &d,
            size: 35,
            from,
            chunk_size: 10,
            what: "t".into(),
        };
        produce(Box::pin(rest), c, tx).await;
        let mut last = None;
        while let Some(x) = rx.recv().await {
            last = Some(x);
        }
        assert!(last.unwrap().is_err());
    }
}
