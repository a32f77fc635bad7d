//! A stream adapter that verifies size and digest while bytes flow, so a lying registry is
//! caught before anything is committed at the target. The digest type itself is a leaf
//! ([`crate::reference::Digest`]).

use std::pin::Pin;
use std::task::{Context, Poll};

use super::error::RegistryError;
use crate::reference::{Digest, Hasher};
use bytes::Bytes;
use futures::Stream;

/// Wraps a byte stream and verifies it while it flows. The chunk holding the last expected
/// byte is handed on only once the digest matched and the stream ended: a consumer streaming
/// into an upload never hands the final bytes of a wrong blob, or of a body longer than its
/// descriptor, to the target, so the upload cannot complete. More bytes than `expected_size`,
/// or fewer, are errors.
pub struct VerifyingStream<S> {
    inner: S,
    url: String,
    expected: Digest,
    expected_size: u64,
    seen: u64,
    state: VerifyState,
}

enum VerifyState {
    Hashing(Box<Hasher>),
    /// All expected bytes arrived and matched; the last chunk waits for the end of the
    /// stream (anything else is a body longer than the descriptor).
    Holding(Bytes),
    /// The stream is over (the last chunk was handed on, or an error was).
    Done,
}

impl<S> VerifyingStream<S> {
    pub fn new(inner: S, url: String, expected: Digest, expected_size: u64) -> Self {
        let state = VerifyState::Hashing(Box::new(Hasher::for_digest(&expected)));
        VerifyingStream {
            inner,
            url,
            expected,
            expected_size,
            seen: 0,
            state,
        }
    }

    fn fail(&mut self, e: RegistryError) -> Poll<Option<Result<Bytes, RegistryError>>> {
        self.state = VerifyState::Done;
        Poll::Ready(Some(Err(e)))
    }

    fn size_error(&self) -> RegistryError {
        RegistryError::SizeMismatch {
            url: self.url.clone(),
            expected: self.expected_size,
            actual: self.seen,
        }
    }

    /// Finish the hash; `Err` when the bytes are not the expected ones.
    fn check_digest(&mut self, hasher: Box<Hasher>) -> Result<(), RegistryError> {
        let actual = hasher.finish();
        if actual != self.expected {
            return Err(RegistryError::DigestMismatch {
                url: self.url.clone(),
                expected: self.expected.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(())
    }
}

impl<S> Stream for VerifyingStream<S>
where
    S: Stream<Item = Result<Bytes, RegistryError>> + Unpin,
{
    type Item = Result<Bytes, RegistryError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if matches!(this.state, VerifyState::Done) {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return this.fail(e),
                Poll::Ready(Some(Ok(chunk))) if chunk.is_empty() => continue,
                Poll::Ready(Some(Ok(chunk))) => {
                    this.seen += chunk.len() as u64;
                    if this.seen > this.expected_size {
                        // Also when holding: the held chunk is never handed on.
                        let e = this.size_error();
                        return this.fail(e);
                    }
                    let VerifyState::Hashing(hasher) = &mut this.state else {
                        unreachable!("only hashing takes bytes below the expected size");
                    };
                    hasher.update(&chunk);
                    if this.seen < this.expected_size {
                        return Poll::Ready(Some(Ok(chunk)));
                    }
                    let VerifyState::Hashing(hasher) =
                        std::mem::replace(&mut this.state, VerifyState::Done)
                    else {
                        unreachable!("matched above");
                    };
                    if let Err(e) = this.check_digest(hasher) {
                        return this.fail(e);
                    }
                    this.state = VerifyState::Holding(chunk);
                }
                Poll::Ready(None) => {
                    return match std::mem::replace(&mut this.state, VerifyState::Done) {
                        VerifyState::Holding(last) => Poll::Ready(Some(Ok(last))),
                        _ if this.seen != this.expected_size => {
                            let e = this.size_error();
                            this.fail(e)
                        }
                        // Only an empty blob ends still hashing.
                        VerifyState::Hashing(hasher) => match this.check_digest(hasher) {
                            Ok(()) => Poll::Ready(None),
                            Err(e) => this.fail(e),
                        },
                        VerifyState::Done => Poll::Ready(None),
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{stream, StreamExt};

    async fn run(
        chunks: Vec<&'static [u8]>,
        digest: &Digest,
        size: u64,
    ) -> Result<Vec<u8>, RegistryError> {
        let s = stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from_static(c))));
        let mut v = VerifyingStream::new(s, "u".into(), digest.clone(), size);
        let mut out = Vec::new();
        while let Some(item) = v.next().await {
            out.extend_from_slice(&item?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn verifies_digest_and_size() {
        let d = Digest::sha256_of(b"hello world");
        assert_eq!(
            run(vec![b"hello ", b"world"], &d, 11).await.unwrap(),
            b"hello world"
        );
        assert!(matches!(
            run(vec![b"hello ", b"WORLD"], &d, 11).await,
            Err(RegistryError::DigestMismatch { .. })
        ));
        assert!(matches!(
            run(vec![b"hello ", b"world!"], &d, 11).await,
            Err(RegistryError::SizeMismatch { actual: 12, .. })
        ));
        assert!(matches!(
            run(vec![b"hello"], &d, 11).await,
            Err(RegistryError::SizeMismatch { actual: 5, .. })
        ));
        // Longer, with the extra bytes in a chunk of their own: the right bytes were all
        // there, but the last of them is never handed on.
        assert!(matches!(
            run(vec![b"hello ", b"world", b"!"], &d, 11).await,
            Err(RegistryError::SizeMismatch { actual: 12, .. })
        ));
        let empty = Digest::sha256_of(b"");
        assert_eq!(run(vec![], &empty, 0).await.unwrap(), b"");
        assert_eq!(run(vec![b"", b""], &empty, 0).await.unwrap(), b"");
        assert!(matches!(
            run(vec![b"x"], &empty, 0).await,
            Err(RegistryError::SizeMismatch { actual: 1, .. })
        ));
        assert!(matches!(
            run(vec![], &d, 11).await,
            Err(RegistryError::SizeMismatch { actual: 0, .. })
        ));
    }

    /// What a consumer (an upload) receives before the error: never all `size` bytes of a
    /// body that turns out longer or wrong.
    #[tokio::test]
    async fn a_consumer_never_receives_a_complete_wrong_or_long_body() {
        let d = Digest::sha256_of(b"hello world");
        for chunks in [
            vec![&b"hello world"[..], b"and more"],
            vec![b"hello ", b"world", b"x"],
            vec![b"hello ", b"WORLD"],
            vec![b"hello world!"],
        ] {
            let s = stream::iter(
                chunks
                    .clone()
                    .into_iter()
                    .map(|c| Ok(Bytes::from_static(c))),
            );
            let mut v = VerifyingStream::new(s, "u".into(), d.clone(), 11);
            let mut received = 0;
            let mut failed = false;
            while let Some(item) = v.next().await {
                match item {
                    Ok(c) => received += c.len(),
                    Err(_) => failed = true,
                }
            }
            assert!(failed, "{chunks:?}");
            assert!(received < 11, "{chunks:?}: {received} bytes handed on");
        }
    }
}
