//! What S3 keeps beside an object's bytes — the ETag as S3 computes it, `Content-Type`,
//! `x-amz-meta-*` — for the objects of the deployment's buckets, in one record format.
//!
//! The S3 endpoint writes these records for uploads and serves them on `GET`/`HEAD`; the
//! activity log writes them for its digest files (their `x-amz-meta-signature`), so that
//! `aws cloudtrail validate-logs` reading through the endpoint finds them. One format, one
//! place:
//!
//! - in the embedded default (a folder per bucket under `BUCKETS`), the record of
//!   `BUCKET/KEY` is `BUCKETS/.vmie-meta/BUCKET/KEY.json`;
//! - in a bucket of an S3-compatible service, it is the bucket's object `.vmie-meta/KEY.json`.
//!
//! A record names the stored bytes it describes ([`Stat::tag`]: a local file's inode,
//! modification time and size; a remote object's ETag), so a record left behind by bytes
//! replaced some other way (an export writing the key again) is ignored rather than served
//! with the wrong ETag. Names with a part starting `.vmie-` are the service's own: the S3
//! endpoint refuses them as keys, and bucket names cannot start with a dot.

pub mod seal;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use md5::Digest as _;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

/// The prefix of names the service keeps for itself in buckets.
pub const RESERVED: &str = ".vmie-";

/// The largest record read (a record holds a few headers and at most S3's 2 KB of user
/// metadata; anything larger is not one of ours).
const MAX_RECORD: u64 = 1 << 20;

/// What S3 keeps beside an object's bytes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Meta {
    /// The ETag, quoted, as S3 computes it.
    pub etag: String,
    /// `Content-Type`.
    #[serde(default)]
    pub content_type: Option<String>,
    /// `x-amz-meta-*`, names without the prefix.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// The stored bytes it describes (see [`Stat::tag`]).
    #[serde(default)]
    pub stored: String,
    /// How the bytes are encrypted at rest, when they are ([`seal`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sse: Option<Sse>,
}

/// Server-side encryption of an object: its bytes are sealed ([`seal`]) under a data key of
/// its own, kept here wrapped under a KMS key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Sse {
    /// What the client asked for and is told: `aws:kms` or `AES256`.
    pub algorithm: String,
    /// The ARN of the KMS key wrapping the data key.
    pub key_id: String,
    /// The data key's ciphertext blob under that key (hex), with the encryption context
    /// [`Sse::context`] of the object.
    pub data_key: String,
    /// Plaintext bytes of the object.
    pub size: u64,
}

impl Sse {
    /// The KMS encryption context an object's data key is bound to, as S3 uses:
    /// `aws:s3:arn` = the object's ARN.
    #[must_use]
    pub fn context(bucket: &str, key: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(
            "aws:s3:arn".to_string(),
            format!("arn:aws:s3:::{bucket}/{key}"),
        )])
    }
}

impl Meta {
    /// This record if it describes the bytes `stat` says are stored (else they were replaced
    /// by another write since).
    #[must_use]
    pub fn describing(self, stat: &Stat) -> Option<Meta> {
        (self.stored == stat.tag).then_some(self)
    }

    /// The record of an object written whole in one `PUT` of `data` (ETag: the MD5 of the
    /// bytes, as S3 computes it), with user metadata `metadata`; [`Meta::stored`] is set
    /// once the bytes are stored.
    #[must_use]
    pub fn for_bytes(data: &[u8], metadata: BTreeMap<String, String>) -> Meta {
        Meta {
            etag: quoted(&hex::encode(md5::Md5::digest(data))),
            content_type: None,
            metadata,
            stored: String::new(),
            sse: None,
        }
    }

    /// The record an object without one gets: its stored tag as the ETag.
    #[must_use]
    pub fn from_stat(stat: &Stat) -> Meta {
        Meta {
            etag: if stat.tag.starts_with('"') {
                stat.tag.clone()
            } else {
                quoted(&stat.tag)
            },
            ..Meta::default()
        }
    }
}

/// `"hex"`: an ETag.
#[must_use]
pub fn quoted(hex: &str) -> String {
    format!("\"{hex}\"")
}

/// An object as stored.
#[derive(Debug, Clone)]
pub struct Stat {
    /// Bytes.
    pub size: u64,
    /// Last modified.
    pub modified: SystemTime,
    /// What identifies these very bytes (a local file's inode, modification and size; a
    /// remote object's ETag).
    pub tag: String,
}

impl Stat {
    /// The stat of a local file (its tag survives a rename, which keeps inode and times).
    #[must_use]
    pub fn local(m: &std::fs::Metadata) -> Stat {
        use std::os::unix::fs::MetadataExt as _;
        let modified = m.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let ns = modified
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        Stat {
            size: m.len(),
            modified,
            tag: format!("{:x}-{ns:x}-{:x}", m.ino(), m.len()),
        }
    }
}

/// A record could not be read or written.
#[derive(Debug)]
pub struct RecordError(pub String);

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "object record: {}", self.0)
    }
}

impl std::error::Error for RecordError {}

/// Where the records of the deployment's buckets are kept.
#[derive(Clone)]
pub enum Records {
    /// Buckets are the folders of `root`: records under `root/.vmie-meta/`.
    Local {
        /// The buckets folder.
        root: PathBuf,
    },
    /// A bucket of an S3-compatible service: records under its `.vmie-meta/`.
    Remote {
        /// The bucket.
        store: Arc<dyn ObjectStore>,
    },
}

impl std::fmt::Debug for Records {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Records::Local { root } => write!(f, "Records::Local({})", root.display()),
            Records::Remote { .. } => f.write_str("Records::Remote"),
        }
    }
}

impl Records {
    /// The store holding the records and the path of the record of `bucket`/`key`.
    fn at(&self, bucket: &str, key: &str) -> Result<(Arc<dyn ObjectStore>, ObjPath), RecordError> {
        let path = |s: String| ObjPath::parse(&s).map_err(|e| RecordError(e.to_string()));
        match self {
            Records::Local { root } => {
                let dir = root.join(".vmie-meta");
                std::fs::create_dir_all(&dir)
                    .map_err(|e| RecordError(format!("{}: {e}", dir.display())))?;
                // Flushed on every write: a sealed object's record holds its wrapped data key,
                // and the object's bytes are flushed before they are published.
                let s = object_store::local::LocalFileSystem::new_with_prefix(dir)
                    .map_err(|e| RecordError(e.to_string()))?
                    .with_fsync(true);
                Ok((Arc::new(s), path(format!("{bucket}/{key}.json"))?))
            }
            Records::Remote { store } => {
                Ok((Arc::clone(store), path(format!(".vmie-meta/{key}.json"))?))
            }
        }
    }

    /// The record of `bucket`/`key` if there is one and it describes the bytes `stat` says
    /// are stored.
    pub async fn get(&self, bucket: &str, key: &str, stat: &Stat) -> Option<Meta> {
        self.fetch(bucket, key).await?.describing(stat)
    }

    /// The record of `bucket`/`key` if there is one, whatever bytes are stored now: check it
    /// with [`Meta::describing`] against a stat taken meanwhile (a remote store can be asked
    /// both at once).
    pub async fn fetch(&self, bucket: &str, key: &str) -> Option<Meta> {
        let (s, p) = self.at(bucket, key).ok()?;
        let got = s.get(&p).await.ok()?;
        // Records are small; in a bucket of another S3 service anyone who may write the
        // bucket could put anything at a record's key.
        if got.meta.size > MAX_RECORD {
            return None;
        }
        let b = got.bytes().await.ok()?;
        serde_json::from_slice::<Meta>(&b).ok()
    }

    /// Writes the record of `bucket`/`key`.
    pub async fn put(&self, bucket: &str, key: &str, meta: &Meta) -> Result<(), RecordError> {
        let (s, p) = self.at(bucket, key)?;
        let b = serde_json::to_vec(meta).map_err(|e| RecordError(e.to_string()))?;
        s.put(&p, PutPayload::from(b))
            .await
            .map(|_| ())
            .map_err(|e| RecordError(e.to_string()))
    }

    /// Removes the record of `bucket`/`key` (nothing when there is none).
    pub async fn delete(&self, bucket: &str, key: &str) {
        if let Ok((s, p)) = self.at(bucket, key) {
            let _ = s.delete(&p).await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn a_record_is_served_only_for_the_bytes_it_describes() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("b/k");
        std::fs::create_dir_all(d.path().join("b")).unwrap();
        std::fs::write(&file, b"hello").unwrap();
        let stat = Stat::local(&std::fs::metadata(&file).unwrap());
        let records = Records::Local {
            root: d.path().to_path_buf(),
        };
        let mut m = Meta::for_bytes(b"hello", [("a".into(), "b".into())].into());
        assert_eq!(m.etag, "\"5d41402abc4b2a76b9719d911017c592\"");
        m.stored.clone_from(&stat.tag);
        records.put("b", "k", &m).await.unwrap();
        assert!(d.path().join(".vmie-meta/b/k.json").is_file());
        assert_eq!(records.get("b", "k", &stat).await, Some(m.clone()));
        // The key written again some other way: the record no longer applies.
        std::fs::remove_file(&file).unwrap();
        std::fs::write(&file, b"other!").unwrap();
        let again = Stat::local(&std::fs::metadata(&file).unwrap());
        assert_eq!(records.get("b", "k", &again).await, None);
        assert!(Meta::from_stat(&again).etag.starts_with('"'));
        records.delete("b", "k").await;
        assert!(!d.path().join(".vmie-meta/b/k.json").exists());
        // Something huge at a record's key is not read as a record.
        let mut big = serde_json::to_vec(&m).unwrap();
        big.resize(usize::try_from(MAX_RECORD).unwrap() + 1, b' ');
        std::fs::write(d.path().join(".vmie-meta/b/k.json"), &big).unwrap();
        assert_eq!(records.fetch("b", "k").await, None);
        big.truncate(1000);
        std::fs::write(d.path().join(".vmie-meta/b/k.json"), &big).unwrap();
        assert_eq!(records.fetch("b", "k").await, Some(m));
    }
}
