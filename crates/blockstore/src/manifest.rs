//! The manifest: the list of a snapshot's chunks, committed last and authenticated.
//!
//! A snapshot is visible exactly when its manifest object exists. The manifest is JSON with a
//! MAC (HMAC-SHA256 under a key derived from the snapshot's data key) over its body, so a
//! truncated, edited or substituted manifest is detected before any chunk is trusted.

use serde::{Deserialize, Serialize};

use crate::chunk::Origin;

/// Manifest format version written now: 2 names chunks by keyed BLAKE3, 1 (still read) by
/// HMAC-SHA256 (see [`crate::naming`]); nothing else differs.
pub const FORMAT: u32 = 2;

/// Manifest formats this store reads.
pub const READABLE: [u32; 2] = [1, 2];

/// One stored chunk: `[index, name, origin number, origin index]`, where the origin number
/// points into [`ManifestBody::origins`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry(pub u64, pub String, pub u32, pub u64);

/// What the MAC covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestBody {
    /// [`FORMAT`] when written now; one of [`READABLE`].
    pub format: u32,
    /// Snapshot id.
    pub snapshot_id: String,
    /// Size of the volume in bytes.
    pub volume_size: u64,
    /// Chunk size in bytes.
    pub chunk_size: u32,
    /// KMS key that wraps the data keys of every chunk this snapshot references.
    pub kms_key_id: String,
    /// The snapshot this one was taken incrementally from, if any.
    pub parent: Option<String>,
    /// Commit time, seconds since the Unix epoch.
    pub created: u64,
    /// Bytes of non-zero data in the volume.
    pub data_bytes: u64,
    /// Bytes of chunk objects this snapshot added to the store.
    pub added_bytes: u64,
    /// Snapshots whose data keys encrypt the referenced chunks.
    pub origins: Vec<String>,
    /// Non-zero chunks, sorted by index; chunks not listed read as zeros.
    pub chunks: Vec<Entry>,
}

impl ManifestBody {
    /// The origin of entry `e`.
    #[must_use]
    pub fn origin(&self, e: &Entry) -> Option<Origin> {
        let snap = self.origins.get(usize::try_from(e.2).ok()?)?;
        Some(Origin {
            snapshot: snap.clone(),
            index: e.3,
        })
    }
}

/// The stored manifest: body and MAC.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestFile {
    /// The body.
    pub body: ManifestBody,
    /// Hex HMAC-SHA256 of the body's JSON.
    pub mac: String,
}

/// The MAC key of a snapshot's manifest, derived from its data key.
#[must_use]
pub fn mac_key(data_key: &[u8; 32]) -> [u8; 32] {
    kms::aead::hmac_sha256(data_key, b"vmie-manifest-mac-v1")
}

/// Seals a body into a manifest file.
pub fn seal(body: ManifestBody, data_key: &[u8; 32]) -> Result<Vec<u8>, String> {
    let json = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
    let mac = hex::encode(kms::aead::hmac_sha256(&mac_key(data_key), &json));
    serde_json::to_vec(&ManifestFile { body, mac }).map_err(|e| e.to_string())
}

/// Parses a manifest without checking its MAC (listing, GC).
pub fn parse(bytes: &[u8]) -> Result<ManifestFile, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("does not parse ({e})"))
}

/// Checks the MAC of a parsed manifest.
pub fn verify(file: &ManifestFile, data_key: &[u8; 32]) -> Result<(), String> {
    let json = serde_json::to_vec(&file.body).map_err(|e| e.to_string())?;
    let want = kms::aead::hmac_sha256(&mac_key(data_key), &json);
    let got = hex::decode(&file.mac).map_err(|_| "its MAC is not hex".to_string())?;
    if kms::aead::mac_eq(&want, &got) {
        Ok(())
    } else {
        Err("its MAC does not match (the manifest was altered)".into())
    }
}
