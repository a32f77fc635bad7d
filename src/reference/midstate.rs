//! [`Midstate`]: SHA-256 stopped part-way, in a form a checkpoint can keep, so a blob transfer
//! interrupted at byte N continues hashing at byte N instead of reading bytes 0..N again. The
//! 32-byte chaining value, the byte count and the bytes of the unfinished 64-byte block are all
//! SHA-256 keeps between blocks; the compression function is sha2's own (`compress256`, with
//! its SHA-NI and AVX2 paths). Equal to `sha2::Sha256` over any split of any input (tested).

use std::fmt;

use sha2::digest::generic_array::GenericArray;

use super::digest::Digest;

const BLOCK: usize = 64;

/// The initial chaining value of SHA-256 (FIPS 180-4, 5.3.3).
const H0: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// SHA-256 over the first [`Midstate::offset`] bytes of something, resumable.
#[derive(Clone, PartialEq, Eq)]
pub struct Midstate {
    h: [u32; 8],
    /// Bytes hashed so far.
    len: u64,
    /// The bytes of the unfinished block (fewer than 64).
    tail: Vec<u8>,
}

impl Default for Midstate {
    fn default() -> Self {
        Midstate::new()
    }
}

impl fmt::Debug for Midstate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Midstate(sha256 at byte {})", self.len)
    }
}

/// Why a stored midstate cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a SHA-256 midstate ({0})")]
pub struct MidstateError(&'static str);

impl Midstate {
    /// The state before any byte.
    pub fn new() -> Midstate {
        Midstate {
            h: H0,
            len: 0,
            tail: Vec::with_capacity(BLOCK),
        }
    }

    /// How many bytes have been hashed.
    pub fn offset(&self) -> u64 {
        self.len
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if !self.tail.is_empty() {
            let take = (BLOCK - self.tail.len()).min(data.len());
            self.tail.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.tail.len() < BLOCK {
                return;
            }
            let block = std::mem::take(&mut self.tail);
            self.compress(&block);
        }
        let whole = data.len() - data.len() % BLOCK;
        self.compress(&data[..whole]);
        self.tail.extend_from_slice(&data[whole..]);
    }

    /// Compress whole blocks (`blocks.len()` is a multiple of 64).
    fn compress(&mut self, blocks: &[u8]) {
        // Batches, so sha2 runs its multi-block loop, without an allocation per call.
        let mut batch = [GenericArray::default(); 32];
        for group in blocks.chunks(BLOCK * batch.len()) {
            let n = group.len() / BLOCK;
            for (slot, block) in batch.iter_mut().zip(group.chunks_exact(BLOCK)) {
                slot.copy_from_slice(block);
            }
            sha2::compress256(&mut self.h, &batch[..n]);
        }
    }

    /// The digest of everything hashed.
    pub fn finish(mut self) -> Digest {
        let bits = self.len.wrapping_mul(8);
        let mut pad = std::mem::take(&mut self.tail);
        pad.push(0x80);
        while pad.len() % BLOCK != BLOCK - 8 {
            pad.push(0);
        }
        pad.extend_from_slice(&bits.to_be_bytes());
        self.compress(&pad);
        let mut out = String::with_capacity(7 + 64);
        out.push_str("sha256:");
        for word in self.h {
            out.push_str(&format!("{word:08x}"));
        }
        Digest::parse(&out).expect("64 hex digits")
    }

    /// `sha256@<offset>:<chaining value, 64 hex>:<unfinished block, hex>`: what the checkpoint
    /// stores.
    pub fn encode(&self) -> String {
        let mut h = String::with_capacity(64);
        for word in self.h {
            h.push_str(&format!("{word:08x}"));
        }
        format!("sha256@{}:{h}:{}", self.len, hex::encode(&self.tail))
    }

    /// Read back [`Midstate::encode`]; anything else (another version, a damaged value) is an
    /// error, and the transfer starts over.
    pub fn decode(s: &str) -> Result<Midstate, MidstateError> {
        let rest = s
            .strip_prefix("sha256@")
            .ok_or(MidstateError("algorithm"))?;
        let mut parts = rest.split(':');
        let (Some(len), Some(h), Some(tail), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(MidstateError("shape"));
        };
        let len: u64 = len.parse().map_err(|_| MidstateError("offset"))?;
        let h = hex::decode(h).map_err(|_| MidstateError("chaining value"))?;
        let tail = hex::decode(tail).map_err(|_| MidstateError("unfinished block"))?;
        if h.len() != 32 || tail.len() >= BLOCK || len % BLOCK as u64 != tail.len() as u64 {
            return Err(MidstateError("lengths"));
        }
        let mut words = [0u32; 8];
        for (w, b) in words.iter_mut().zip(h.chunks_exact(4)) {
            *w = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        }
        Ok(Midstate {
            h: words,
            len,
            tail,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_answers() {
        assert_eq!(Midstate::new().finish(), Digest::sha256_of(b""));
        let mut m = Midstate::new();
        m.update(b"abc");
        assert_eq!(
            m.finish().as_str(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // 55, 56, 63, 64, 65 bytes: every padding case.
        for n in [55usize, 56, 63, 64, 65, 119, 120, 128, 4096 + 7] {
            let data = vec![0x61u8; n];
            let mut m = Midstate::new();
            m.update(&data);
            assert_eq!(m.finish(), Digest::sha256_of(&data), "{n} bytes");
        }
    }

    #[test]
    fn damaged_encodings_are_refused() {
        let mut m = Midstate::new();
        m.update(&[7u8; 100]);
        let e = m.encode();
        assert_eq!(Midstate::decode(&e), Ok(m));
        for bad in [
            "",
            "sha512@100:00:00",
            &e.replace("sha256@100", "sha256@101"),
            &e[..e.len() - 2],
            &format!("{e}:00"),
            "sha256@0:zz:",
        ] {
            assert!(Midstate::decode(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        /// Any input, split anywhere, stored and read back between the parts: the digest of
        /// the whole.
        #[test]
        fn equals_sha256_over_any_split(
            data in proptest::collection::vec(any::<u8>(), 0..3000),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(data.len() + 1)).collect();
            cuts.sort();
            let mut m = Midstate::new();
            let mut at = 0;
            for cut in cuts.into_iter().chain([data.len()]) {
                m.update(&data[at..cut]);
                at = cut;
                m = Midstate::decode(&m.encode()).unwrap();
                prop_assert_eq!(m.offset(), at as u64);
            }
            prop_assert_eq!(m.finish(), Digest::sha256_of(&data));
        }
    }
}
