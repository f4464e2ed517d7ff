//! AES-256-GCM with a random 96-bit nonce per message: the one sealing primitive of vmie.
//!
//! A sealed message is `nonce (12) ‖ ciphertext ‖ tag (16)`. Random nonces are safe for far
//! more messages than one key ever seals here (the NIST bound is 2^32 messages per key; one
//! snapshot data key seals one message per chunk).

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use zeroize::Zeroizing;

/// Bytes a sealed message adds to its plaintext (nonce and tag).
pub const OVERHEAD: usize = NONCE_LEN + 16;

/// An AES-256-GCM key ready to seal and open messages. The key schedule lives inside aws-lc,
/// which wipes it when the value is dropped.
pub struct AeadKey(LessSafeKey);

impl std::fmt::Debug for AeadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AeadKey(..)")
    }
}

impl AeadKey {
    /// A key from 32 bytes of key material.
    #[must_use]
    pub fn new(material: &[u8; 32]) -> Self {
        // AES-256 accepts every 32-byte key: construction cannot fail for this length.
        let unbound = match UnboundKey::new(&AES_256_GCM, material) {
            Ok(k) => k,
            Err(_) => unreachable!("AES-256-GCM accepts any 32-byte key"),
        };
        AeadKey(LessSafeKey::new(unbound))
    }

    /// Seals `plaintext` bound to `aad`.
    #[must_use]
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + OVERHEAD);
        let mut nonce = [0u8; NONCE_LEN];
        random(&mut nonce);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let mut body = out.split_off(NONCE_LEN);
        // Sealing only fails for messages above GCM's 64 GiB limit, far beyond what we seal.
        if self
            .0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut body,
            )
            .is_err()
        {
            unreachable!("AES-GCM sealing fails only above 64 GiB per message");
        }
        out.extend_from_slice(&body);
        out
    }

    /// Seals `plaintext` bound to `aad` and appends the sealed message to `out` (what
    /// [`AeadKey::seal`] returns), copying the plaintext once: for large messages whose
    /// container already holds a header.
    pub fn seal_append(&self, aad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) {
        let mut nonce = [0u8; NONCE_LEN];
        random(&mut nonce);
        out.reserve(plaintext.len() + OVERHEAD);
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plaintext);
        // Sealing only fails for messages above GCM's 64 GiB limit, far beyond what we seal.
        let Ok(tag) = self.0.seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut out[start..],
        ) else {
            unreachable!("AES-GCM sealing fails only above 64 GiB per message");
        };
        out.extend_from_slice(tag.as_ref());
    }

    /// Opens a sealed message; `None` when it was altered, truncated, sealed under another key
    /// or bound to other associated data.
    #[must_use]
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        if sealed.len() < OVERHEAD {
            return None;
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = Zeroizing::new(body.to_vec());
        let len = self
            .0
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .ok()?
            .len();
        buf.truncate(len);
        Some(buf)
    }

    /// Opens a sealed message in place: `sealed` (nonce ‖ ciphertext ‖ tag) is overwritten
    /// and the plaintext returned is the part of it after the nonce. `None` as for
    /// [`AeadKey::open`]; the buffer is then left in an unspecified state (possibly partly
    /// decrypted), which the caller wipes.
    pub fn open_in_place<'a>(&self, aad: &[u8], sealed: &'a mut [u8]) -> Option<&'a mut [u8]> {
        if sealed.len() < OVERHEAD {
            return None;
        }
        let (nonce, body) = sealed.split_at_mut(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        self.0.open_in_place(nonce, Aad::from(aad), body).ok()
    }
}

/// Fills `buf` from the operating system's CSPRNG.
pub fn random(buf: &mut [u8]) {
    if aws_lc_rs::rand::fill(buf).is_err() {
        // aws-lc aborts the process itself when the system RNG is unusable; this is unreachable.
        unreachable!("system random number generator failed");
    }
}

/// 32 fresh random bytes of key material.
#[must_use]
pub fn random_key() -> Zeroizing<[u8; 32]> {
    let mut k = Zeroizing::new([0u8; 32]);
    random(k.as_mut());
    k
}

/// HMAC-SHA256 of `data` under `key`.
#[must_use]
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    let tag = aws_lc_rs::hmac::sign(&k, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Constant-time comparison of two MACs.
#[must_use]
pub fn mac_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_seal_open_roundtrip_and_tamper_detected() {
        let key = AeadKey::new(&random_key());
        let sealed = key.seal(b"ctx", b"hello");
        assert_eq!(sealed.len(), 5 + OVERHEAD);
        assert_eq!(
            key.open(b"ctx", &sealed).as_deref().map(Vec::as_slice),
            Some(&b"hello"[..])
        );
        assert!(key.open(b"other", &sealed).is_none());
        let mut bad = sealed.clone();
        bad[14] ^= 1;
        assert!(key.open(b"ctx", &bad).is_none());
        assert!(key.open(b"ctx", &sealed[..10]).is_none());
        let other = AeadKey::new(&random_key());
        assert!(other.open(b"ctx", &sealed).is_none());
    }

    #[test]
    fn test_seal_append_opens_like_seal_after_the_header() {
        let key = AeadKey::new(&random_key());
        let mut out = b"HDR".to_vec();
        key.seal_append(b"ctx", b"hello world", &mut out);
        assert_eq!(&out[..3], b"HDR");
        assert_eq!(out.len(), 3 + 11 + OVERHEAD);
        assert_eq!(
            key.open(b"ctx", &out[3..]).as_deref().map(Vec::as_slice),
            Some(&b"hello world"[..])
        );
        assert!(key.open(b"other", &out[3..]).is_none());
    }
}
