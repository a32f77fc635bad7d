//! Content digests (`sha256:<64 hex>`, `sha512:<128 hex>`): parsing, and hashing bytes to one.
//! A leaf: what a digest is does not depend on where it came from.

use std::fmt;

use sha2::{Digest as _, Sha256, Sha512};

use super::names::{self, NameError};

/// A validated `algorithm:hex` content digest (sha256 or sha512).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    pub fn parse(s: &str) -> Option<Digest> {
        // Asked of every tag too ("is this reference a digest?"): no error is built to be
        // thrown away.
        names::is_digest(s).then(|| Digest(s.to_string()))
    }

    /// A digest a registry sent, or the error that names it and says what is wrong with it.
    pub fn checked(s: &str) -> Result<Digest, NameError> {
        names::digest(s).map(|()| Digest(s.to_string()))
    }

    /// The sha256 digest of these bytes.
    pub fn sha256_of(bytes: &[u8]) -> Digest {
        Digest(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
    }

    /// The digest of `bytes` computed with this digest's algorithm.
    pub fn recompute(&self, bytes: &[u8]) -> Digest {
        let mut h = Hasher::for_digest(self);
        h.update(bytes);
        h.finish()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn algorithm(&self) -> &str {
        self.0.split_once(':').map_or("", |(a, _)| a)
    }

    pub fn hex(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, h)| h)
    }

    /// `sha256:0123456789ab`, for human output.
    pub fn short(&self) -> &str {
        let end = (self.algorithm().len() + 13).min(self.0.len());
        &self.0[..end]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An incremental hash for a digest's algorithm.
pub enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    pub fn for_digest(d: &Digest) -> Hasher {
        match d.algorithm() {
            "sha512" => Hasher::Sha512(Sha512::new()),
            _ => Hasher::Sha256(Sha256::new()),
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    pub fn finish(self) -> Digest {
        match self {
            Hasher::Sha256(h) => Digest(format!("sha256:{}", hex::encode(h.finalize()))),
            Hasher::Sha512(h) => Digest(format!("sha512:{}", hex::encode(h.finalize()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_parts() {
        let d = Digest::sha256_of(b"");
        assert_eq!(d.algorithm(), "sha256");
        assert_eq!(d.short(), "sha256:e3b0c44298fc");
        assert_eq!(Digest::parse(d.as_str()), Some(d.clone()));
        assert_eq!(Digest::parse("sha256:xyz"), None);
        assert_eq!(d.recompute(b""), d);
    }
}
