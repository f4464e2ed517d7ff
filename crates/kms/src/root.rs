//! The root key: the one secret that seals all key material at rest.
//!
//! It comes from the environment variable [`ROOT_KEY_ENV`] (64 hex digits) or from a file that
//! only its owner may read (mode 0600 or stricter). The embedded default creates that file on
//! first start. A root key file readable by group or others is refused, never silently used.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use zeroize::Zeroizing;

use crate::aead::{AeadKey, random_key};
use crate::error::{KmsError, Result};

/// Environment variable that may carry the root key as 64 hex digits.
pub const ROOT_KEY_ENV: &str = "VMIE_ROOT_KEY";

/// The root key. Its bytes live only inside the AES key schedule (wiped on drop); the copies
/// made while loading are zeroized.
#[derive(Debug)]
pub struct RootKey {
    key: AeadKey,
    fingerprint: String,
}

impl RootKey {
    /// A root key from 32 bytes.
    #[must_use]
    pub fn from_bytes(material: &Zeroizing<[u8; 32]>) -> Self {
        let fp = crate::aead::hmac_sha256(material.as_ref(), b"vmie root key fingerprint");
        RootKey {
            key: AeadKey::new(material),
            fingerprint: hex::encode(&fp[..8]),
        }
    }

    /// A root key from 64 hex digits (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<Self> {
        let text = text.trim();
        let mut bytes = Zeroizing::new([0u8; 32]);
        if text.len() != 64 || hex::decode_to_slice(text, bytes.as_mut()).is_err() {
            return Err(KmsError::RootKey(
                "a root key is 64 hexadecimal digits (32 bytes); generate one with `openssl rand -hex 32`".into(),
            ));
        }
        Ok(Self::from_bytes(&bytes))
    }

    /// Loads the root key from `path`, refusing a file that group or others may access.
    pub fn load(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path)
            .map_err(|e| KmsError::RootKey(format!("cannot read {}: {e}", path.display())))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KmsError::RootKey(format!(
                "{} has mode {mode:04o}; a root key file must be readable by its owner only: run `chmod 600 {}`",
                path.display(),
                path.display()
            )));
        }
        if meta.len() > 1024 {
            return Err(KmsError::RootKey(format!(
                "{} is {} bytes; a root key file holds 64 hex digits",
                path.display(),
                meta.len()
            )));
        }
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| KmsError::RootKey(format!("cannot read {}: {e}", path.display())))?,
        );
        Self::from_hex(&text)
    }

    /// Loads the root key from `path`, creating it (mode 0600, fresh random bytes) when the
    /// file does not exist yet: the embedded default's first start.
    pub fn load_or_create(path: &Path) -> Result<Self> {
        if path.exists() {
            return Self::load(path);
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| KmsError::RootKey(format!("cannot create {}: {e}", dir.display())))?;
        }
        let material = random_key();
        let text = Zeroizing::new(hex::encode(material.as_ref()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| KmsError::RootKey(format!("cannot create {}: {e}", path.display())))?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .and_then(|()| f.write_all(text.as_bytes()))
            .and_then(|()| f.write_all(b"\n"))
            .and_then(|()| f.sync_all())
            .map_err(|e| KmsError::RootKey(format!("cannot write {}: {e}", path.display())))?;
        Ok(Self::from_bytes(&material))
    }

    /// The root key from [`ROOT_KEY_ENV`] when set, else from (or created at) `path`.
    pub fn from_env_or_file(path: &Path) -> Result<Self> {
        match std::env::var(ROOT_KEY_ENV) {
            Ok(v) => {
                let v = Zeroizing::new(v);
                Self::from_hex(&v)
            }
            Err(_) => Self::load_or_create(path),
        }
    }

    /// A short, non-secret fingerprint that tells two root keys apart (first 8 bytes of an
    /// HMAC of the key), for diagnostics.
    #[must_use]
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Seals `plaintext` bound to `aad`.
    #[must_use]
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        self.key.seal(aad, plaintext)
    }

    /// Opens what [`RootKey::seal`] sealed; `None` if altered or sealed under another root key.
    #[must_use]
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        self.key.open(aad, sealed)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn test_root_key_created_0600_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/root.key");
        let a = RootKey::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = RootKey::load_or_create(&path).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        let sealed = a.seal(b"x", b"secret");
        assert_eq!(b.open(b"x", &sealed).unwrap().as_slice(), b"secret");
    }

    #[test]
    fn test_root_key_world_readable_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.key");
        std::fs::write(&path, "00".repeat(32)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = RootKey::load(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }

    #[test]
    fn test_root_key_bad_hex_refused() {
        assert!(RootKey::from_hex("abc").is_err());
        assert!(RootKey::from_hex(&"zz".repeat(32)).is_err());
        assert!(RootKey::from_hex(&"ab".repeat(32)).is_ok());
    }
}
