//! Sealed objects: small blobs kept beside the snapshots and encrypted like them (a KMS data
//! key per object, AES-256-GCM), such as a boot check's evidence. An object lives at
//! `<prefix>/sealed/<kind>/<id>` as `VMIESEAL1`, the wrapped data key's length (u32, big
//! endian), the wrapped data key, and the sealed content; the encryption context and the
//! associated data name the kind and id, so an object copied to another name fails to open.

use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use zeroize::Zeroizing;

use kms::aead::AeadKey;
use kms::{Caller, Context};

use crate::BlockStore;
use crate::error::{Result, StoreError};

const MAGIC: &[u8] = b"VMIESEAL1";
/// Largest sealed object (a boot check's evidence is well below).
pub const MAX_SEALED: usize = 64 << 20;

fn check_name(s: &str) -> Result<()> {
    if !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "invalid sealed object name {:?}",
            s.chars().take(80).collect::<String>()
        )))
    }
}

fn context(kind: &str, id: &str) -> Context {
    [("vmie:sealed".to_string(), format!("{kind}/{id}"))]
        .into_iter()
        .collect()
}

impl BlockStore {
    fn sealed_path(&self, kind: &str, id: &str) -> object_store::path::Path {
        self.path(&["sealed", kind, id])
    }

    /// Stores `data` as the sealed object `kind/id` under `kms_key` (the service default key
    /// when `None`), replacing one of that name.
    pub async fn put_sealed(
        &self,
        caller: &Caller,
        kms_key: Option<&str>,
        kind: &str,
        id: &str,
        data: &[u8],
    ) -> Result<()> {
        check_name(kind)?;
        check_name(id)?;
        if data.len() > MAX_SEALED {
            return Err(StoreError::Invalid(format!(
                "a sealed object holds at most {MAX_SEALED} bytes"
            )));
        }
        let name = format!("{kind}/{id}");
        let key_err = |source| StoreError::Key {
            snapshot: name.clone(),
            source,
        };
        let key_ref = match kms_key {
            Some(k) => k.to_string(),
            None => self.kms().default_ebs_key().await.map_err(key_err)?.key_id,
        };
        let dk = self
            .kms()
            .generate_data_key(caller, &key_ref, &context(kind, id))
            .await
            .map_err(key_err)?;
        let sealed = AeadKey::new(&dk.plaintext).seal(name.as_bytes(), data);
        let mut blob = Vec::with_capacity(MAGIC.len() + 4 + dk.ciphertext.len() + sealed.len());
        blob.extend_from_slice(MAGIC);
        blob.extend_from_slice(
            &u32::try_from(dk.ciphertext.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        blob.extend_from_slice(&dk.ciphertext);
        blob.extend_from_slice(&sealed);
        self.object_store()
            .put(&self.sealed_path(kind, id), PutPayload::from(blob))
            .await?;
        Ok(())
    }

    /// Opens the sealed object `kind/id`; [`StoreError::NotFound`] when there is none.
    pub async fn get_sealed(
        &self,
        caller: &Caller,
        kind: &str,
        id: &str,
    ) -> Result<Zeroizing<Vec<u8>>> {
        check_name(kind)?;
        check_name(id)?;
        let name = format!("{kind}/{id}");
        let blob = match self.object_store().get(&self.sealed_path(kind, id)).await {
            Ok(g) => g.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => return Err(StoreError::NotFound(name)),
            Err(e) => return Err(e.into()),
        };
        let bad = |d: &str| StoreError::Integrity {
            snapshot: name.clone(),
            what: "sealed object".into(),
            detail: d.into(),
        };
        if blob.len() > MAX_SEALED + 4096 || !blob.starts_with(MAGIC) {
            return Err(bad("not a sealed object"));
        }
        let rest = &blob[MAGIC.len()..];
        let len = rest
            .get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| bad("truncated"))?;
        let len = usize::try_from(len).map_err(|_| bad("bad key length"))?;
        let wrapped = rest.get(4..4 + len).ok_or_else(|| bad("truncated"))?;
        let sealed = &rest[4 + len..];
        let key = self
            .kms()
            .decrypt_data_key(caller, wrapped, &context(kind, id))
            .await
            .map_err(|source| match source {
                kms::KmsError::InvalidCiphertext(d) => bad(&d),
                source => StoreError::Key {
                    snapshot: name.clone(),
                    source,
                },
            })?;
        AeadKey::new(&key)
            .open(name.as_bytes(), sealed)
            .ok_or_else(|| bad("it was altered or belongs to another name"))
    }

    /// The ids of the sealed objects of `kind`.
    pub async fn list_sealed(&self, kind: &str) -> Result<Vec<String>> {
        check_name(kind)?;
        let prefix = self.path(&["sealed", kind]);
        let objs: Vec<object_store::ObjectMeta> = self
            .object_store()
            .list(Some(&prefix))
            .try_collect()
            .await?;
        Ok(objs
            .iter()
            .filter_map(|o| o.location.filename().map(str::to_string))
            .filter(|n| check_name(n).is_ok())
            .collect())
    }

    /// Deletes the sealed object `kind/id` (no error when there is none).
    pub async fn delete_sealed(&self, kind: &str, id: &str) -> Result<()> {
        check_name(kind)?;
        check_name(id)?;
        match self
            .object_store()
            .delete(&self.sealed_path(kind, id))
            .await
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
