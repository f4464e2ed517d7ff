//! The trail bucket: one of the deployment's buckets, where log and digest files land as
//! CloudTrail delivers them, with their object metadata (`x-amz-meta-signature`,
//! `x-amz-meta-signature-algorithm` on digest files).
//!
//! A bucket of the S3 service keeps metadata itself. A local-folder bucket (the embedded
//! default, `DATA/buckets/NAME`) keeps an object's metadata beside the bucket folders in
//! the form s3s-fs uses, `DATA/buckets/.bucket-<b64(NAME)>.object-<b64(key)>.metadata.json`
//! holding `{"user_metadata": {...}}` (base64url without padding), so that an S3 server
//! over the buckets folder serves it; bucket names cannot start with a dot, so these files
//! are in no bucket.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine as _;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{
    Attribute, AttributeValue, Attributes, GetOptions, ObjectMeta, ObjectStore, ObjectStoreExt,
    PutOptions, PutPayload,
};

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

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Sidecar {
    #[serde(default)]
    user_metadata: Option<BTreeMap<String, String>>,
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

impl Bucket {
    /// The bucket `name` in the buckets folder `root` (its folder made if missing).
    pub fn local(root: &std::path::Path, name: &str) -> Result<Bucket, TrailError> {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| TrailError::Bucket(format!("{}: {e}", dir.display())))?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)?;
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

    fn sidecar(&self, key: &str) -> Option<PathBuf> {
        match self {
            Bucket::Local { root, name, .. } => Some(root.join(format!(
                ".bucket-{}.object-{}.metadata.json",
                b64(name),
                b64(key)
            ))),
            Bucket::S3 { .. } => None,
        }
    }

    /// Writes `data` at `key` with user metadata `meta` (`x-amz-meta-<name>`).
    pub async fn put(
        &self,
        key: &str,
        data: Vec<u8>,
        meta: &[(&str, &str)],
    ) -> Result<(), TrailError> {
        let path = Path::from(key);
        match self.sidecar(key) {
            Some(side) => {
                if !meta.is_empty() {
                    // The metadata first: an object is never seen without it.
                    let s = Sidecar {
                        user_metadata: Some(
                            meta.iter()
                                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                                .collect(),
                        ),
                    };
                    let bytes =
                        serde_json::to_vec(&s).map_err(|e| TrailError::Encode(e.to_string()))?;
                    let tmp = side.with_extension("json.tmp");
                    let io =
                        |e: std::io::Error| TrailError::Bucket(format!("{}: {e}", side.display()));
                    tokio::fs::write(&tmp, bytes).await.map_err(io)?;
                    tokio::fs::rename(&tmp, &side).await.map_err(io)?;
                }
                self.store().put(&path, PutPayload::from(data)).await?;
            }
            None => {
                let mut attributes = Attributes::new();
                for (k, v) in meta {
                    attributes.insert(
                        Attribute::Metadata((*k).to_string().into()),
                        AttributeValue::from((*v).to_string()),
                    );
                }
                let opts = PutOptions {
                    attributes,
                    ..PutOptions::default()
                };
                self.store()
                    .put_opts(&path, PutPayload::from(data), opts)
                    .await?;
            }
        }
        Ok(())
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
        match self.sidecar(key) {
            Some(side) => match tokio::fs::read(&side).await {
                Ok(b) => Ok(serde_json::from_slice::<Sidecar>(&b)
                    .ok()
                    .and_then(|s| s.user_metadata)
                    .unwrap_or_default()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
                Err(e) => Err(TrailError::Bucket(format!("{}: {e}", side.display()))),
            },
            None => {
                let opts = GetOptions {
                    head: true,
                    ..GetOptions::default()
                };
                match self.store().get_opts(&Path::from(key), opts).await {
                    Ok(r) => Ok(r
                        .attributes
                        .iter()
                        .filter_map(|(k, v)| match k {
                            Attribute::Metadata(n) => Some((n.to_string(), v.to_string())),
                            _ => None,
                        })
                        .collect()),
                    Err(object_store::Error::NotFound { .. }) => Ok(BTreeMap::new()),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// Every object under `prefix`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, TrailError> {
        Ok(self
            .store()
            .list(Some(&Path::from(prefix)))
            .try_collect()
            .await?)
    }

    /// Deletes the object at `key` and its metadata (tests: tampering).
    pub async fn delete(&self, key: &str) -> Result<(), TrailError> {
        match self.store().delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        if let Some(side) = self.sidecar(key) {
            let _ = tokio::fs::remove_file(side).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn local_buckets_keep_metadata_as_s3s_fs_does() {
        let d = tempfile::tempdir().unwrap();
        let b = Bucket::local(d.path(), "trail").unwrap();
        b.put("AWSLogs/a.json.gz", b"x".to_vec(), &[("signature", "ab")])
            .await
            .unwrap();
        assert_eq!(
            std::fs::read(d.path().join("trail/AWSLogs/a.json.gz")).unwrap(),
            b"x"
        );
        let side = d
            .path()
            .join(".bucket-dHJhaWw.object-QVdTTG9ncy9hLmpzb24uZ3o.metadata.json");
        assert_eq!(
            std::fs::read_to_string(side).unwrap(),
            r#"{"user_metadata":{"signature":"ab"}}"#
        );
        assert_eq!(
            b.metadata("AWSLogs/a.json.gz").await.unwrap()["signature"],
            "ab"
        );
        assert!(b.metadata("nope").await.unwrap().is_empty());
        assert_eq!(b.list("AWSLogs").await.unwrap().len(), 1);
        b.delete("AWSLogs/a.json.gz").await.unwrap();
        assert!(b.get("AWSLogs/a.json.gz").await.unwrap().is_none());
    }
}
