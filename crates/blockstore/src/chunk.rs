//! The chunk object: one compressed, encrypted chunk of a snapshot.
//!
//! ```text
//! "VBC1"                       magic
//! u8  n, n bytes               origin snapshot id (the snapshot that wrote it; its data key
//!                              encrypts it)
//! u64 BE                       origin chunk index
//! u8                           flags: bit 0 = payload is a zstd frame
//! nonce ‖ ciphertext ‖ tag     AES-256-GCM of the payload
//! ```
//!
//! The associated data binds the origin snapshot id, the origin index, the flags and the
//! chunk's name (its keyed hash), so a chunk cannot be moved to another name, another index or
//! another snapshot without failing authentication. The name itself is checked again against
//! the keyed hash of the decrypted plaintext.

use zeroize::Zeroizing;

use kms::aead::AeadKey;

const MAGIC: &[u8; 4] = b"VBC1";
const FLAG_ZSTD: u8 = 1;
/// Longest snapshot id a chunk header carries.
pub const MAX_ID_LEN: usize = 64;
/// Bytes of header before the sealed payload, at most.
pub const MAX_HEADER: usize = 4 + 1 + MAX_ID_LEN + 8 + 1;

/// Who wrote a chunk: the snapshot whose data key encrypts it, and the index it had there.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    /// Snapshot id.
    pub snapshot: String,
    /// Chunk index in that snapshot.
    pub index: u64,
}

fn aad(origin: &Origin, flags: u8, name: &str) -> Vec<u8> {
    let mut a = Vec::with_capacity(32 + origin.snapshot.len() + name.len());
    a.extend_from_slice(b"vmie-chunk-v1\0");
    a.extend_from_slice(origin.snapshot.as_bytes());
    a.push(0);
    a.extend_from_slice(&origin.index.to_be_bytes());
    a.push(flags);
    a.extend_from_slice(name.as_bytes());
    a
}

/// A zstd compression context and its output buffer, kept for the next chunk: a fresh
/// context per chunk (what `zstd::bulk::compress` makes) allocates and clears its tables
/// every time, and a fresh output buffer is fresh pages to fault in.
struct Squeezer {
    cctx: zstd::bulk::Compressor<'static>,
    out: Vec<u8>,
}

/// The compression contexts of one writer at one level: as many exist as chunks were ever
/// compressed at once (a writer bounds that: one per core and one more), each reused.
pub struct Squeezers {
    level: i32,
    free: std::sync::Mutex<Vec<Squeezer>>,
}

impl Squeezers {
    /// Contexts compressing at zstd `level`.
    #[must_use]
    pub fn new(level: i32) -> Self {
        Squeezers {
            level,
            free: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Runs `f` with `plain` compressed (`None` when zstd refuses, which it does not for
    /// in-memory input it has room for).
    fn with_compressed<R>(&self, plain: &[u8], f: impl FnOnce(Option<&[u8]>) -> R) -> R {
        let taken = self
            .free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        let Some(mut sq) = taken.or_else(|| {
            zstd::bulk::Compressor::new(self.level)
                .ok()
                .map(|cctx| Squeezer {
                    cctx,
                    out: Vec::new(),
                })
        }) else {
            return f(None);
        };
        sq.out.clear();
        sq.out.reserve(zstd::zstd_safe::compress_bound(plain.len()));
        let r = match sq.cctx.compress_to_buffer(plain, &mut sq.out) {
            Ok(n) => f(Some(&sq.out[..n])),
            Err(_) => f(None),
        };
        self.free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(sq);
        r
    }
}

/// Compresses (when it pays) and seals `plain` as chunk `name` written by `origin`.
#[must_use]
pub fn encode(key: &AeadKey, origin: &Origin, name: &str, plain: &[u8], level: i32) -> Vec<u8> {
    encode_with(&Squeezers::new(level), key, origin, name, plain)
}

/// [`encode`] with the compression contexts of `squeezers`.
#[must_use]
pub fn encode_with(
    squeezers: &Squeezers,
    key: &AeadKey,
    origin: &Origin,
    name: &str,
    plain: &[u8],
) -> Vec<u8> {
    squeezers.with_compressed(plain, |compressed| {
        let (flags, payload): (u8, &[u8]) = match compressed {
            // Keep the compressed form only when it saves at least 1/32.
            Some(c) if c.len() < plain.len() - plain.len() / 32 => (FLAG_ZSTD, c),
            _ => (0, plain),
        };
        let id = origin.snapshot.as_bytes();
        let mut out = Vec::with_capacity(MAX_HEADER + payload.len() + kms::aead::OVERHEAD);
        out.extend_from_slice(MAGIC);
        out.push(u8::try_from(id.len().min(MAX_ID_LEN)).unwrap_or(0));
        out.extend_from_slice(&id[..id.len().min(MAX_ID_LEN)]);
        out.extend_from_slice(&origin.index.to_be_bytes());
        out.push(flags);
        key.seal_append(&aad(origin, flags, name), payload, &mut out);
        out
    })
}

/// The origin a chunk object's header names, and where its sealed part starts.
pub fn header(obj: &[u8]) -> Result<(Origin, u8, usize), String> {
    if obj.len() < 6 || &obj[..4] != MAGIC {
        return Err("not a vmie chunk object".into());
    }
    let n = usize::from(obj[4]);
    if n == 0 || n > MAX_ID_LEN || obj.len() < 5 + n + 9 {
        return Err("chunk header is truncated or malformed".into());
    }
    let snapshot = std::str::from_utf8(&obj[5..5 + n])
        .map_err(|_| "chunk header names an invalid snapshot id".to_string())?
        .to_string();
    let mut idx = [0u8; 8];
    idx.copy_from_slice(&obj[5 + n..13 + n]);
    let flags = obj[13 + n];
    if flags & !FLAG_ZSTD != 0 {
        return Err(format!("unknown chunk flags {flags:#x}"));
    }
    Ok((
        Origin {
            snapshot,
            index: u64::from_be_bytes(idx),
        },
        flags,
        14 + n,
    ))
}

/// The header of a chunk object that must have been written by `expected`.
fn expected_header(obj: &[u8], expected: &Origin) -> Result<(Origin, u8, usize), String> {
    let (origin, flags, start) = header(obj)?;
    if &origin != expected {
        return Err(format!(
            "the object was written as chunk {} of {}, but the manifest expects chunk {} of {} (swapped or foreign chunk)",
            origin.index, origin.snapshot, expected.index, expected.snapshot
        ));
    }
    Ok((origin, flags, start))
}

/// Opens a chunk object named `name` that the manifest says `expected` wrote; returns the
/// plaintext, exactly `len` bytes.
pub fn decode(
    key: &AeadKey,
    expected: &Origin,
    name: &str,
    obj: &[u8],
    len: usize,
) -> Result<Zeroizing<Vec<u8>>, String> {
    let (origin, flags, start) = expected_header(obj, expected)?;
    let payload = key
        .open(&aad(&origin, flags, name), &obj[start..])
        .ok_or_else(|| "authentication failed (altered, truncated or moved)".to_string())?;
    if flags & FLAG_ZSTD == 0 {
        if payload.len() != len {
            return Err(format!("holds {} bytes, expected {len}", payload.len()));
        }
        return Ok(payload);
    }
    let mut out = Zeroizing::new(vec![0u8; len]);
    let n = zstd::bulk::decompress_to_buffer(&payload, &mut out[..])
        .map_err(|e| format!("does not decompress: {e}"))?;
    if n != len {
        return Err(format!("decompresses to {n} bytes, expected {len}"));
    }
    Ok(out)
}

/// Opens a chunk object named `name` that the manifest says `expected` wrote, straight into
/// `dst` (exactly the chunk's length): the object's own buffer is decrypted in place and
/// wiped afterwards, and the plaintext is decompressed into `dst` without another copy.
pub fn decode_into(
    key: &AeadKey,
    expected: &Origin,
    name: &str,
    obj: &mut [u8],
    dst: &mut [u8],
) -> Result<(), String> {
    let (origin, flags, start) = expected_header(obj, expected)?;
    let Some(payload) = key.open_in_place(&aad(&origin, flags, name), &mut obj[start..]) else {
        // A failed open may leave the buffer partly decrypted.
        zeroize::Zeroize::zeroize(&mut obj[start..]);
        return Err("authentication failed (altered, truncated or moved)".to_string());
    };
    let len = dst.len();
    let r = if flags & FLAG_ZSTD == 0 {
        if payload.len() == len {
            dst.copy_from_slice(payload);
            Ok(())
        } else {
            Err(format!("holds {} bytes, expected {len}", payload.len()))
        }
    } else {
        match zstd::bulk::decompress_to_buffer(payload, dst) {
            Ok(n) if n == len => Ok(()),
            Ok(n) => Err(format!("decompresses to {n} bytes, expected {len}")),
            Err(e) => Err(format!("does not decompress: {e}")),
        }
    };
    zeroize::Zeroize::zeroize(payload);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip_whatever_the_previous_chunk_and_level() {
        let key = AeadKey::new(&[3u8; 32]);
        let origin = Origin {
            snapshot: "snap-0123456789abcdef".into(),
            index: 9,
        };
        let mut random = vec![0u8; 1 << 20];
        kms::aead::random(&mut random);
        let text: Vec<u8> = b"vmie chunk "
            .iter()
            .copied()
            .cycle()
            .take(1 << 20)
            .collect();
        let small = b"x".to_vec();
        // A context and its buffer are reused from chunk to chunk, across sizes: nothing of
        // one chunk may reach the next.
        let fast = Squeezers::new(-1);
        for (plain, level, compressed) in [
            (&text, 1, true),
            (&random, 1, false),
            (&text, -1, true),
            (&random, -1, false),
            (&small, -1, false),
            (&text, -1, true),
            (&small, 3, false),
            (&text, 1, true),
        ] {
            let obj = if level == -1 {
                encode_with(&fast, &key, &origin, "n", plain)
            } else {
                encode(&key, &origin, "n", plain, level)
            };
            let (_, flags, _) = header(&obj).unwrap();
            assert_eq!(flags & FLAG_ZSTD != 0, compressed);
            assert!(obj.len() < plain.len() / 4 + 200 || !compressed);
            let back = decode(&key, &origin, "n", &obj, plain.len()).unwrap();
            assert_eq!(&back[..], &plain[..]);
            let mut into = vec![0xeeu8; plain.len()];
            decode_into(&key, &origin, "n", &mut obj.clone(), &mut into).unwrap();
            assert_eq!(&into[..], &plain[..]);
            let mut short = vec![0u8; plain.len() + 1];
            assert!(decode_into(&key, &origin, "n", &mut obj.clone(), &mut short).is_err());
            let mut flipped = obj.clone();
            let last = flipped.len() - 1;
            flipped[last] ^= 1;
            assert!(decode_into(&key, &origin, "n", &mut flipped, &mut into).is_err());
            assert!(decode(&key, &origin, "m", &obj, plain.len()).is_err());
        }
    }
}
