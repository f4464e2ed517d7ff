//! The engine's operations on what tasks make: images, snapshots, their tags, and the
//! per-account encryption settings. The API and the command-line tool both call these, so a
//! rule (a snapshot an image uses cannot be deleted, an unknown id is named as EC2 names it)
//! lives in one place.

use catalog::{CatalogError, Image, Snapshot, Tag};

use crate::error::{EngineError, not_found_code};
use crate::request::shown;
use crate::{Engine, SETTING_DEFAULT_KMS_KEY, SETTING_ENCRYPTION_BY_DEFAULT};

/// Most tags one resource carries (as in EC2).
pub const MAX_TAGS: usize = 50;

/// The kinds of resource an id names, by its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    /// `ami-…`
    Image,
    /// `snap-…`
    Snapshot,
    /// `import-ami-…`
    ImportImageTask,
    /// `import-snap-…`
    ImportSnapshotTask,
    /// `export-ami-…`
    ExportImageTask,
}

impl ResourceKind {
    /// The kind an id names, from its prefix; `None` for an id of no kind vmie keeps.
    #[must_use]
    pub fn of(id: &str) -> Option<ResourceKind> {
        // Longest prefixes first: `import-ami-` before `ami-` is not an issue (no overlap),
        // but a task id must not be taken for an image.
        [
            ("import-ami-", ResourceKind::ImportImageTask),
            ("import-snap-", ResourceKind::ImportSnapshotTask),
            ("export-ami-", ResourceKind::ExportImageTask),
            ("ami-", ResourceKind::Image),
            ("snap-", ResourceKind::Snapshot),
        ]
        .into_iter()
        .find(|(p, _)| id.starts_with(p))
        .map(|(_, k)| k)
    }

    /// The resource type as IAM and EC2's ARNs name it (`image`, `import-image-task`, …).
    #[must_use]
    pub fn arn_type(self) -> &'static str {
        match self {
            ResourceKind::Image => "image",
            ResourceKind::Snapshot => "snapshot",
            ResourceKind::ImportImageTask => "import-image-task",
            ResourceKind::ImportSnapshotTask => "import-snapshot-task",
            ResourceKind::ExportImageTask => "export-image-task",
        }
    }

    /// The ARN of `id` of this kind. Images and snapshots carry no account in their ARN (as
    /// in EC2: they can be shared); tasks do.
    #[must_use]
    pub fn arn(self, region: &str, account: &str, id: &str) -> String {
        match self {
            ResourceKind::Image | ResourceKind::Snapshot => {
                format!("arn:aws:ec2:{region}::{}/{id}", self.arn_type())
            }
            _ => format!("arn:aws:ec2:{region}:{account}:{}/{id}", self.arn_type()),
        }
    }
}

/// A tag to remove: a key, and the value it must have (`None`: whatever its value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagRemoval {
    /// Key.
    pub key: String,
    /// Value it must have to be removed.
    pub value: Option<String>,
}

fn not_found(id: &str) -> EngineError {
    let code = not_found_code(id);
    let message = match ResourceKind::of(id) {
        Some(ResourceKind::Image) => format!("The image id '[{}]' does not exist", shown(id)),
        Some(ResourceKind::Snapshot) => format!("The snapshot '{}' does not exist.", shown(id)),
        _ => format!("the task {} does not exist", shown(id)),
    };
    EngineError::Request { code, message }
}

/// Maps the catalog's `NotFound` to the EC2 error for `id`.
fn or_not_found(id: &str) -> impl Fn(CatalogError) -> EngineError + '_ {
    move |e| match e {
        CatalogError::NotFound(_) => not_found(id),
        e => e.into(),
    }
}

/// Deletes the snapshot `id` of `account`: refused while an image uses it
/// (`InvalidSnapshot.InUse`); otherwise its catalog row goes, then its data in the store. With
/// `store_only`, a snapshot the store holds but the catalog does not know (one made by
/// `vmie snapshot create`) may be deleted too; without it, it is `InvalidSnapshot.NotFound`.
/// A store failure after the row is gone leaves a manifest no row names, which
/// [`blockstore::BlockStore::gc`] removes. The API and the command line both come here.
pub async fn delete_snapshot(
    catalog: &catalog::Catalog,
    store: &blockstore::BlockStore,
    account: &str,
    id: &str,
    store_only: bool,
) -> Result<(), EngineError> {
    if let Some(img) = catalog.image_using(account, id).await? {
        return Err(EngineError::Request {
            code: "InvalidSnapshot.InUse",
            message: format!("the snapshot {} is currently in use by {img}", shown(id)),
        });
    }
    let had_row = match catalog.delete_snapshot(account, id).await {
        Ok(()) => true,
        Err(CatalogError::NotFound(_)) if store_only => false,
        Err(CatalogError::Conflict(m)) => {
            return Err(EngineError::Request {
                code: "InvalidSnapshot.InUse",
                message: m,
            });
        }
        Err(e) => return Err(or_not_found(id)(e)),
    };
    match store.delete(id).await {
        Ok(()) => Ok(()),
        Err(blockstore::StoreError::NotFound(_)) if had_row => Ok(()),
        Err(blockstore::StoreError::NotFound(_)) => Err(not_found(id)),
        Err(e) if had_row => {
            tracing::warn!(snapshot = id, error = %e, "snapshot row deleted but its data was not; the store's gc removes manifests no snapshot row names");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

impl Engine {
    /// The images of `account`.
    pub async fn images(&self, account: &str) -> Result<Vec<Image>, EngineError> {
        Ok(self.inner.catalog.images(account).await?)
    }

    /// The image `id` of `account` (`InvalidAMIID.NotFound` when there is none).
    pub async fn image(&self, account: &str, id: &str) -> Result<Image, EngineError> {
        self.inner
            .catalog
            .image(account, id)
            .await
            .map_err(or_not_found(id))
    }

    /// The task `id` of `account` (`InvalidConversionTaskId` when there is none).
    pub async fn task(&self, account: &str, id: &str) -> Result<catalog::Task, EngineError> {
        self.inner
            .catalog
            .task(account, id)
            .await
            .map_err(or_not_found(id))
    }

    /// The snapshots of `account`.
    pub async fn snapshots(&self, account: &str) -> Result<Vec<Snapshot>, EngineError> {
        Ok(self.inner.catalog.snapshots(account).await?)
    }

    /// DeregisterImage: the image goes; its snapshots stay (as in EC2).
    pub async fn deregister_image(&self, account: &str, id: &str) -> Result<(), EngineError> {
        self.inner
            .catalog
            .delete_image(account, id)
            .await
            .map_err(or_not_found(id))
    }

    /// DeleteSnapshot: refused while an image uses the snapshot (`InvalidSnapshot.InUse`);
    /// otherwise its row goes, then its data in the store (see [`delete_snapshot`]).
    pub async fn delete_snapshot(&self, account: &str, id: &str) -> Result<(), EngineError> {
        delete_snapshot(&self.inner.catalog, &self.inner.store, account, id, false).await
    }

    /// The tags of the image, snapshot or task `id` of `account`; `None` when it does not
    /// exist (for authorization, which evaluates a missing resource without tags).
    pub async fn tags_of(&self, account: &str, id: &str) -> Result<Option<Vec<Tag>>, EngineError> {
        let cat = &self.inner.catalog;
        let r = match ResourceKind::of(id) {
            None => return Ok(None),
            Some(ResourceKind::Image) => cat.image(account, id).await.map(|i| i.tags),
            Some(ResourceKind::Snapshot) => cat.snapshot(account, id).await.map(|s| s.tags),
            Some(_) => cat.task(account, id).await.map(|t| t.tags),
        };
        match r {
            Ok(t) => Ok(Some(t)),
            Err(CatalogError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// CreateTags: adds or replaces `tags` on every resource in `ids`. Every id is checked
    /// first, so an unknown one changes nothing.
    pub async fn create_tags(
        &self,
        account: &str,
        ids: &[String],
        tags: &[Tag],
    ) -> Result<(), EngineError> {
        let mut updated = Vec::with_capacity(ids.len());
        for id in ids {
            let mut current = self.existing_tags(account, id).await?;
            for t in tags {
                current.retain(|o| o.key != t.key);
                current.push(t.clone());
            }
            if current.len() > MAX_TAGS {
                return Err(EngineError::Request {
                    code: "TagLimitExceeded",
                    message: format!("{} would have more than {MAX_TAGS} tags", shown(id)),
                });
            }
            updated.push((id, current));
        }
        for (id, t) in updated {
            self.inner.catalog.set_tags(account, id, &t).await?;
        }
        Ok(())
    }

    /// DeleteTags: removes the tags named (each by key, and by value when one is given) from
    /// every resource in `ids`; no tags named removes them all.
    pub async fn delete_tags(
        &self,
        account: &str,
        ids: &[String],
        remove: &[TagRemoval],
    ) -> Result<(), EngineError> {
        let mut updated = Vec::with_capacity(ids.len());
        for id in ids {
            let mut current = self.existing_tags(account, id).await?;
            if remove.is_empty() {
                current.clear();
            } else {
                current.retain(|o| {
                    !remove
                        .iter()
                        .any(|r| r.key == o.key && r.value.as_ref().is_none_or(|v| *v == o.value))
                });
            }
            updated.push((id, current));
        }
        for (id, t) in updated {
            self.inner.catalog.set_tags(account, id, &t).await?;
        }
        Ok(())
    }

    async fn existing_tags(&self, account: &str, id: &str) -> Result<Vec<Tag>, EngineError> {
        self.tags_of(account, id)
            .await?
            .ok_or_else(|| EngineError::Request {
                code: if ResourceKind::of(id).is_some() {
                    not_found_code(id)
                } else {
                    "InvalidID"
                },
                message: format!("The ID '{}' is not valid", shown(id)),
            })
    }

    /// Whether new snapshots of `account` are encrypted under its default key by default.
    pub async fn encryption_by_default(&self, account: &str) -> Result<bool, EngineError> {
        Ok(self
            .inner
            .catalog
            .setting(account, SETTING_ENCRYPTION_BY_DEFAULT)
            .await?
            .is_some_and(|v| v == "true"))
    }

    /// Enables or disables encryption by default for `account`.
    pub async fn set_encryption_by_default(
        &self,
        account: &str,
        on: bool,
    ) -> Result<(), EngineError> {
        Ok(self
            .inner
            .catalog
            .set_setting(
                account,
                SETTING_ENCRYPTION_BY_DEFAULT,
                if on { "true" } else { "false" },
            )
            .await?)
    }

    /// The ARN of the KMS key `account`'s encrypted snapshots use by default: the one set,
    /// else the service's `alias/aws/ebs` key.
    pub async fn default_kms_key(&self, account: &str) -> Result<String, EngineError> {
        if let Some(k) = self
            .inner
            .catalog
            .setting(account, SETTING_DEFAULT_KMS_KEY)
            .await?
            .filter(|v| !v.is_empty())
        {
            return Ok(k);
        }
        self.inner
            .store
            .kms()
            .default_ebs_key()
            .await
            .map(|m| m.arn)
            .map_err(|e| {
                // The key store's own words stay in the service log, not in the answer.
                tracing::error!(error = %e, "the default EBS key could not be read");
                EngineError::Internal("the default KMS key could not be read".into())
            })
    }

    /// Sets `account`'s default KMS key (checked to exist and be usable by the account), or
    /// with `None` goes back to the service's `alias/aws/ebs` key; returns the key's ARN.
    pub async fn set_default_kms_key(
        &self,
        account: &str,
        key: Option<&str>,
    ) -> Result<String, EngineError> {
        let cat = &self.inner.catalog;
        match key {
            None => {
                cat.set_setting(account, SETTING_DEFAULT_KMS_KEY, "")
                    .await?;
                self.default_kms_key(account).await
            }
            Some(k) => {
                let meta = self
                    .inner
                    .store
                    .kms()
                    .describe_key(&kms::Caller::account_root(account), k)
                    .await
                    .map_err(|e| EngineError::Request {
                        code: "InvalidParameterValue",
                        message: format!("KmsKeyId cannot be used: {e}"),
                    })?;
                cat.set_setting(account, SETTING_DEFAULT_KMS_KEY, &meta.arn)
                    .await?;
                Ok(meta.arn)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ResourceKind;

    #[test]
    fn ids_name_their_kind_and_arn() {
        assert_eq!(ResourceKind::of("ami-0123"), Some(ResourceKind::Image));
        assert_eq!(
            ResourceKind::of("import-ami-0123"),
            Some(ResourceKind::ImportImageTask)
        );
        assert_eq!(
            ResourceKind::of("import-snap-1"),
            Some(ResourceKind::ImportSnapshotTask)
        );
        assert_eq!(
            ResourceKind::of("export-ami-1"),
            Some(ResourceKind::ExportImageTask)
        );
        assert_eq!(ResourceKind::of("snap-1"), Some(ResourceKind::Snapshot));
        assert_eq!(ResourceKind::of("vol-1"), None);
        assert_eq!(
            ResourceKind::Image.arn("us-east-1", "123", "ami-1"),
            "arn:aws:ec2:us-east-1::image/ami-1"
        );
        assert_eq!(
            ResourceKind::ImportImageTask.arn("us-east-1", "123", "import-ami-1"),
            "arn:aws:ec2:us-east-1:123:import-image-task/import-ami-1"
        );
    }
}
