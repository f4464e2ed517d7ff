//! The trail bucket: one of the deployment's buckets, where log and digest files land as
//! CloudTrail delivers them, with their object metadata (`x-amz-meta-signature`,
//! `x-amz-meta-signature-algorithm` on digest files).
//!
//! An object's metadata is kept as the S3 endpoint keeps it for every object of the
//! deployment's buckets (the [`objectmeta`] record: `DATA/buckets/.vmie-meta/NAME/KEY.json`
//! in the embedded default, the bucket's `.vmie-meta/KEY.json` at scale), so that
//! `aws cloudtrail validate-logs` reading the trail bucket through vmie's own S3 endpoint
//! gets each digest's signature as `x-amz-meta-signature`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload};
use objectmeta::{Meta, Records, Stat};

use crate::TrailError;

/// Where the trail bucket is.
#[derive(Clone)]
pub enum Bucket {
    /// The folder `root/name`.
    Local {
        /// The buckets folder.
        root: PathBuf,
        /// The bucket's name.
        name: String,
        /// The bucket's folder as an object store.
        store: Arc<dyn ObjectStore>,
    },
    /// A bucket of an S3-compatible service.
    S3 {
        /// The bucket's name.
        name: String,
        /// The bucket.
        store: Arc<dyn ObjectStore>,
    },
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bucket")
            .field("name", &self.name())
            .finish_non_exhaustive()
    }
}

fn record_error(e: objectmeta::RecordError) -> TrailError {
    TrailError::Bucket(e.to_string())
}

impl Bucket {
    /// The bucket `name` in the buckets folder `root` (its folder made if missing).
    pub fn local(root: &std::path::Path, name: &str) -> Result<Bucket, TrailError> {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| TrailError::Bucket(format!("{}: {e}", dir.display())))?;
        // Flushed on every write: a delivered log file or digest is on disk, as S3 would have
        // it, before the trail moves on (a lost one would break the digest chain).
        let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)?.with_fsync(true);
        Ok(Bucket::Local {
            root: root.to_path_buf(),
            name: name.to_string(),
            store: Arc::new(store),
        })
    }

    /// The bucket `name` of an S3 service, opened as `store`.
    #[must_use]
    pub fn s3(name: &str, store: Arc<dyn ObjectStore>) -> Bucket {
        Bucket::S3 {
            name: name.to_string(),
            store,
        }
    }

    /// The bucket's name.
    #[must_use]
    pub fn name(&self) -> &str {
        match self {
            Bucket::Local { name, .. } | Bucket::S3 { name, .. } => name,
        }
    }

    fn store(&self) -> &Arc<dyn ObjectStore> {
        match self {
            Bucket::Local { store, .. } | Bucket::S3 { store, .. } => store,
        }
    }

    fn records(&self) -> Records {
        match self {
            Bucket::Local { root, .. } => Records::Local { root: root.clone() },
            Bucket::S3 { store, .. } => Records::Remote {
                store: Arc::clone(store),
            },
        }
    }

    /// The stored object at `key` as the S3 endpoint identifies it (`None` when missing).
    async fn stat(&self, key: &str) -> Result<Option<Stat>, TrailError> {
        match self {
            Bucket::Local { root, name, .. } => {
                match tokio::fs::metadata(root.join(name).join(key)).await {
                    Ok(m) => Ok(Some(Stat::local(&m))),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(TrailError::Bucket(format!("{key}: {e}"))),
                }
            }
            Bucket::S3 { store, .. } => match store.head(&Path::from(key)).await {
                Ok(m) => Ok(Some(Stat {
                    size: m.size,
                    modified: m.last_modified.into(),
                    tag: m.e_tag.unwrap_or_default(),
                })),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e.into()),
            },
        }
    }

    /// Writes `data` at `key` with user metadata `meta` (`x-amz-meta-<name>`), and its
    /// record (ETag, metadata) as the S3 endpoint keeps it.
    pub async fn put(
        &self,
        key: &str,
        data: Vec<u8>,
        meta: &[(&str, &str)],
    ) -> Result<(), TrailError> {
        let mut record = Meta::for_bytes(
            &data,
            meta.iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
        );
        let put = self
            .store()
            .put(&Path::from(key), PutPayload::from(data))
            .await?;
        record.stored = match self {
            Bucket::Local { .. } => {
                self.stat(key)
                    .await?
                    .ok_or_else(|| TrailError::Bucket(format!("{key}: gone after it was written")))?
                    .tag
            }
            Bucket::S3 { .. } => put.e_tag.unwrap_or_default(),
        };
        self.records()
            .put(self.name(), key, &record)
            .await
            .map_err(record_error)
    }

    /// The object at `key` (`None` when there is none).
    pub async fn get(&self, key: &str) -> Result<Option<bytes::Bytes>, TrailError> {
        match self.store().get(&Path::from(key)).await {
            Ok(r) => Ok(Some(r.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The user metadata of the object at `key` (empty when it has none or is missing).
    pub async fn metadata(&self, key: &str) -> Result<BTreeMap<String, String>, TrailError> {
        let Some(stat) = self.stat(key).await? else {
            return Ok(BTreeMap::new());
        };
        if let Some(m) = self.records().get(self.name(), key, &stat).await {
            return Ok(m.metadata);
        }
        Ok(self.legacy_metadata(key).await)
    }

    /// Metadata written by the first CloudTrail-layout release beside a local bucket, in
    /// s3s-fs's form (`.bucket-<b64 name>.object-<b64 key>.metadata.json` holding
    /// `{"user_metadata": {...}}`): still read, so digests written then keep verifying.
    async fn legacy_metadata(&self, key: &str) -> BTreeMap<String, String> {
        use base64::Engine as _;
        #[derive(serde::Deserialize)]
        struct Sidecar {
            user_metadata: Option<BTreeMap<String, String>>,
        }
        let Bucket::Local { root, name, .. } = self else {
            return BTreeMap::new();
        };
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let side = root.join(format!(
            ".bucket-{}.object-{}.metadata.json",
            b64(name),
            b64(key)
        ));
        tokio::fs::read(&side)
            .await
            .ok()
            .and_then(|b| serde_json::from_slice::<Sidecar>(&b).ok())
            .and_then(|s| s.user_metadata)
            .unwrap_or_default()
    }

    /// Every object under `prefix`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, TrailError> {
        Ok(self
            .store()
            .list(Some(&Path::from(prefix)))
            .try_collect()
            .await?)
    }

    /// Deletes the object at `key` and its record (tests: tampering).
    pub async fn delete(&self, key: &str) -> Result<(), TrailError> {
        match self.store().delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        self.records().delete(self.name(), key).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn local_buckets_keep_metadata_as_the_s3_endpoint_does() {
        let d = tempfile::tempdir().unwrap();
        let b = Bucket::local(d.path(), "trail").unwrap();
        b.put("AWSLogs/a.json.gz", b"x".to_vec(), &[("signature", "ab")])
            .await
            .unwrap();
        assert_eq!(
            std::fs::read(d.path().join("trail/AWSLogs/a.json.gz")).unwrap(),
            b"x"
        );
        let record: Meta = serde_json::from_slice(
            &std::fs::read(d.path().join(".vmie-meta/trail/AWSLogs/a.json.gz.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(record.metadata["signature"], "ab");
        // The ETag S3 computes for a single PUT: the MD5 of the bytes.
        assert_eq!(record.etag, "\"9dd4e461268c8034f5c8564e155c67a6\"");
        assert_eq!(
            b.metadata("AWSLogs/a.json.gz").await.unwrap()["signature"],
            "ab"
        );
        assert!(b.metadata("nope").await.unwrap().is_empty());
        assert_eq!(b.list("AWSLogs").await.unwrap().len(), 1);
        b.delete("AWSLogs/a.json.gz").await.unwrap();
        assert!(b.get("AWSLogs/a.json.gz").await.unwrap().is_none());
        assert!(
            !d.path()
                .join(".vmie-meta/trail/AWSLogs/a.json.gz.json")
                .exists()
        );
    }

    #[tokio::test]
    async fn metadata_written_in_the_first_layout_is_still_read() {
        let d = tempfile::tempdir().unwrap();
        let b = Bucket::local(d.path(), "trail").unwrap();
        std::fs::create_dir_all(d.path().join("trail/AWSLogs")).unwrap();
        std::fs::write(d.path().join("trail/AWSLogs/a.json.gz"), b"x").unwrap();
        std::fs::write(
            d.path()
                .join(".bucket-dHJhaWw.object-QVdTTG9ncy9hLmpzb24uZ3o.metadata.json"),
            r#"{"user_metadata":{"signature":"ab"}}"#,
        )
        .unwrap();
        assert_eq!(
            b.metadata("AWSLogs/a.json.gz").await.unwrap()["signature"],
            "ab"
        );
    }
}
