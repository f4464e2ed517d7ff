//! Objects encrypted at rest (server-side encryption, SSE-KMS): the bytes of an object are
//! cut into blocks of [`BLOCK`] plaintext bytes, each sealed with AES-256-GCM under the
//! object's own data key (drawn for it, kept only wrapped under a KMS key in its record).
//!
//! The nonce of block *i* of stream *s* is `s` (4 bytes) ‖ `i` (8 bytes, big-endian): a data
//! key seals each (stream, block) once, so no nonce repeats. Stream 0 is the object itself;
//! a multipart upload seals part *n* as stream *n* under the upload's key, and completion
//! opens the parts and seals the object anew as stream 0. The associated data names the
//! stream, the block and whether it is the last, so blocks cannot be moved, swapped, dropped
//! or the object cut short without the read failing. The last block may be short, or empty
//! for an empty object: an object of *n* bytes is stored in `max(1, ⌈n / BLOCK⌉)` blocks,
//! [`sealed_len`] bytes.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

/// Plaintext bytes per block.
pub const BLOCK: usize = 64 * 1024;
/// Bytes the seal adds to a block.
pub const TAG: usize = 16;

/// The stored size of an object of `plain` bytes.
#[must_use]
pub fn sealed_len(plain: u64) -> u64 {
    plain + TAG as u64 * blocks(plain)
}

/// Blocks of an object of `plain` bytes (at least one).
#[must_use]
pub fn blocks(plain: u64) -> u64 {
    plain.div_ceil(BLOCK as u64).max(1)
}

/// Where block `index` of an object of `plain` bytes is stored: offset and length.
#[must_use]
pub fn slot(plain: u64, index: u64) -> (u64, usize) {
    let slot = (BLOCK + TAG) as u64;
    let start = index * BLOCK as u64;
    let len = plain.saturating_sub(start).min(BLOCK as u64);
    // `len` is at most BLOCK.
    (index * slot, usize::try_from(len).unwrap_or(BLOCK) + TAG)
}

fn key(material: &[u8; 32]) -> LessSafeKey {
    // A 32-byte key is always valid for AES-256-GCM.
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, material).unwrap_or_else(|_| unreachable!()))
}

fn nonce_aad(stream: u32, index: u64, last: bool) -> (Nonce, [u8; 24]) {
    let mut n = [0u8; 12];
    n[..4].copy_from_slice(&stream.to_be_bytes());
    n[4..].copy_from_slice(&index.to_be_bytes());
    let mut aad = [0u8; 24];
    aad[..11].copy_from_slice(b"vmie-sse-v1");
    aad[11..15].copy_from_slice(&stream.to_be_bytes());
    aad[15..23].copy_from_slice(&index.to_be_bytes());
    aad[23] = u8::from(last);
    (Nonce::assume_unique_for_key(n), aad)
}

/// Seals a stream of bytes block by block as they arrive.
pub struct Sealer {
    key: LessSafeKey,
    stream: u32,
    next: u64,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("stream", &self.stream)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// A sealer of stream `stream` under the data key `material`.
    #[must_use]
    pub fn new(material: &[u8; 32], stream: u32) -> Sealer {
        Sealer {
            key: key(material),
            stream,
            next: 0,
            buf: Vec::with_capacity(BLOCK),
        }
    }

    fn seal(&mut self, last: bool, out: &mut Vec<u8>) {
        let (nonce, aad) = nonce_aad(self.stream, self.next, last);
        let mut block = std::mem::replace(&mut self.buf, Vec::with_capacity(BLOCK));
        // Sealing in place cannot fail for a block this size.
        if self
            .key
            .seal_in_place_append_tag(nonce, Aad::from(&aad[..]), &mut block)
            .is_ok()
        {
            out.extend_from_slice(&block);
        }
        self.next += 1;
    }

    /// Takes `data`, appending to `out` every block it completes. A full block is held back
    /// until more follows: only [`Sealer::finish`] knows which block is the last.
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<u8>) {
        while !data.is_empty() {
            if self.buf.len() == BLOCK {
                self.seal(false, out);
            }
            let n = (BLOCK - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
    }

    /// Seals what is left as the last block (an empty one for an empty stream).
    pub fn finish(mut self, out: &mut Vec<u8>) {
        self.seal(true, out);
    }
}

/// Opens the blocks of a sealed stream.
pub struct Opener {
    key: LessSafeKey,
    stream: u32,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl Opener {
    /// An opener of stream `stream` under the data key `material`.
    #[must_use]
    pub fn new(material: &[u8; 32], stream: u32) -> Opener {
        Opener {
            key: key(material),
            stream,
        }
    }

    /// The plaintext of block `index` of an object of `plain` bytes from its stored bytes
    /// `sealed` ([`slot`]); `None` when they were altered, moved or cut.
    #[must_use]
    pub fn open(&self, plain: u64, index: u64, sealed: &[u8]) -> Option<Vec<u8>> {
        let last = index + 1 == blocks(plain);
        if index >= blocks(plain) || sealed.len() != slot(plain, index).1 {
            return None;
        }
        let (nonce, aad) = nonce_aad(self.stream, index, last);
        let mut b = sealed.to_vec();
        let n = self
            .key
            .open_in_place(nonce, Aad::from(&aad[..]), &mut b)
            .ok()?
            .len();
        b.truncate(n);
        Some(b)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sealed(data: &[u8], pieces: usize) -> Vec<u8> {
        let mut s = Sealer::new(&[7; 32], 0);
        let mut out = Vec::new();
        for c in data.chunks(pieces.max(1)) {
            s.push(c, &mut out);
        }
        s.finish(&mut out);
        out
    }

    fn opened(stored: &[u8], plain: u64) -> Option<Vec<u8>> {
        let o = Opener::new(&[7; 32], 0);
        let mut out = Vec::new();
        for i in 0..blocks(plain) {
            let (at, len) = slot(plain, i);
            let at = usize::try_from(at).unwrap();
            out.extend(o.open(plain, i, stored.get(at..at + len)?)?);
        }
        Some(out)
    }

    #[test]
    fn round_trips_at_every_size_around_a_block() {
        for n in [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK, 3 * BLOCK + 5] {
            let data: Vec<u8> = (0..n).map(|i| u8::try_from(i % 251).unwrap()).collect();
            for pieces in [1000, BLOCK, 7 * BLOCK] {
                let s = sealed(&data, pieces);
                assert_eq!(s.len() as u64, sealed_len(n as u64), "{n}");
                assert_eq!(opened(&s, n as u64).unwrap(), data, "{n}");
            }
        }
    }

    #[test]
    fn altered_moved_or_cut_blocks_do_not_open() {
        let data = vec![5u8; 2 * BLOCK + 10];
        let s = sealed(&data, BLOCK);
        let n = data.len() as u64;
        let mut flipped = s.clone();
        flipped[100] ^= 1;
        assert!(opened(&flipped, n).is_none());
        // Cut after the first two blocks: the second is not the last.
        let cut = &s[..2 * (BLOCK + TAG)];
        assert!(opened(cut, 2 * BLOCK as u64).is_none());
        // Swapped blocks.
        let mut swapped = s.clone();
        let (a, b) = swapped.split_at_mut(BLOCK + TAG);
        a.swap_with_slice(&mut b[..BLOCK + TAG]);
        assert!(opened(&swapped, n).is_none());
        // Another stream's block.
        let o = Opener::new(&[7; 32], 1);
        assert!(o.open(n, 0, &s[..BLOCK + TAG]).is_none());
    }
}
