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

/// Whether `id` is `prefix` and 8 or 17 lower-case hex digits, as EC2 ids are.
#[must_use]
pub fn well_formed(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix).is_some_and(|h| {
        (h.len() == 8 || h.len() == 17)
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Checks that `id` is a well-formed id of `kind`, as EC2 does before looking it up:
/// `InvalidAMIID.Malformed`, `InvalidSnapshotID.Malformed`,
/// `InvalidConversionTaskId.Malformed`.
pub fn check_id(kind: ResourceKind, id: &str) -> Result<(), EngineError> {
    let (prefix, code) = match kind {
        ResourceKind::Image => ("ami-", "InvalidAMIID.Malformed"),
        ResourceKind::Snapshot => ("snap-", "InvalidSnapshotID.Malformed"),
        ResourceKind::ImportImageTask => ("import-ami-", "InvalidConversionTaskId.Malformed"),
        ResourceKind::ImportSnapshotTask => ("import-snap-", "InvalidConversionTaskId.Malformed"),
        ResourceKind::ExportImageTask => ("export-ami-", "InvalidConversionTaskId.Malformed"),
    };
    if well_formed(id, prefix) {
        Ok(())
    } else {
        Err(EngineError::Request {
            code,
            message: format!("Invalid id: \"{}\" (expecting \"{prefix}...\")", shown(id)),
        })
    }
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

fn kind_word(id: &str) -> &'static str {
    match ResourceKind::of(id) {
        Some(ResourceKind::Image) => "image",
        Some(ResourceKind::Snapshot) => "snapshot",
        _ => "resource",
    }
}

fn grant_name(id: &str, grantee: &str) -> String {
    format!("vmie-share-{id}-{grantee}")
}

fn internal_kms(e: kms::KmsError) -> EngineError {
    tracing::error!(error = %e, "the service's default key could not be read");
    EngineError::Internal("the service's default key could not be read".into())
}

/// Whether `id` is shared with `account` or with everyone.
async fn shared(cat: &catalog::Catalog, id: &str, account: &str) -> Result<bool, EngineError> {
    Ok(cat
        .grantees(id)
        .await?
        .iter()
        .any(|g| g == account || g == "all"))
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

    /// The image `id` as `account` may see it: its own, or one another account shared with
    /// it or with everyone. Anything else is `InvalidAMIID.NotFound` (whether it exists
    /// elsewhere is not told).
    pub async fn visible_image(&self, account: &str, id: &str) -> Result<Image, EngineError> {
        let cat = &self.inner.catalog;
        let img = cat.image_by_id(id).await.map_err(or_not_found(id))?;
        if img.account == account || shared(cat, id, account).await? {
            Ok(img)
        } else {
            Err(not_found(id))
        }
    }

    /// The snapshot `id` as `account` may see it (its own, or shared with it).
    pub async fn visible_snapshot(&self, account: &str, id: &str) -> Result<Snapshot, EngineError> {
        let cat = &self.inner.catalog;
        let s = cat.snapshot_by_id(id).await.map_err(or_not_found(id))?;
        if s.account == account || shared(cat, id, account).await? {
            Ok(s)
        } else {
            Err(not_found(id))
        }
    }

    /// Images `account` may see: its own, then those others shared with it.
    pub async fn visible_images(&self, account: &str) -> Result<Vec<Image>, EngineError> {
        let cat = &self.inner.catalog;
        let mut out = cat.images(account).await?;
        for id in cat.shared_with(account).await? {
            if ResourceKind::of(&id) == Some(ResourceKind::Image)
                && let Ok(i) = cat.image_by_id(&id).await
            {
                out.push(i);
            }
        }
        Ok(out)
    }

    /// Snapshots `account` may see: its own, then those others shared with it.
    pub async fn visible_snapshots(&self, account: &str) -> Result<Vec<Snapshot>, EngineError> {
        let cat = &self.inner.catalog;
        let mut out = cat.snapshots(account).await?;
        for id in cat.shared_with(account).await? {
            if ResourceKind::of(&id) == Some(ResourceKind::Snapshot)
                && let Ok(s) = cat.snapshot_by_id(&id).await
            {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// Who `account`'s image or snapshot `id` is shared with (account ids, or `all`).
    pub async fn shared_with_whom(
        &self,
        account: &str,
        id: &str,
    ) -> Result<Vec<String>, EngineError> {
        self.owned(account, id).await?;
        Ok(self.inner.catalog.grantees(id).await?)
    }

    /// Refuses what `account` may see but does not own (as EC2 does: `AuthFailure`), and
    /// what it cannot see at all (`…NotFound`).
    async fn owned(&self, account: &str, id: &str) -> Result<(), EngineError> {
        let owner = match ResourceKind::of(id) {
            Some(ResourceKind::Image) => self.visible_image(account, id).await?.account,
            Some(ResourceKind::Snapshot) => self.visible_snapshot(account, id).await?.account,
            _ => return Err(not_found(id)),
        };
        if owner == account {
            Ok(())
        } else {
            Err(EngineError::Request {
                code: "AuthFailure",
                message: format!("Not authorized for {}:{}", kind_word(id), shown(id)),
            })
        }
    }

    /// Shares `account`'s image (launch permission) or snapshot (create-volume permission)
    /// `id` with the accounts in `add` and stops sharing it with those in `remove`. The
    /// snapshots' KMS keys get a grant (`Decrypt`, `DescribeKey`) for each account added and
    /// lose it for each removed: the other account can read what it may use, nothing more.
    /// Snapshots under the service's own key (`alias/aws/ebs`) cannot be shared, and nothing
    /// encrypted can be made public (`all`), as in EC2: copy the image under a customer key
    /// first (CopyImage with `KmsKeyId`).
    pub async fn share(
        &self,
        account: &str,
        id: &str,
        add: &[String],
        remove: &[String],
    ) -> Result<(), EngineError> {
        self.owned(account, id).await?;
        let cat = &self.inner.catalog;
        for g in add.iter().chain(remove) {
            if g != "all" && !(g.len() == 12 && g.bytes().all(|b| b.is_ascii_digit())) {
                return Err(EngineError::Request {
                    code: "InvalidUserID.Malformed",
                    message: format!(
                        "User ID '{}' is not valid: an account id is 12 digits (or the group all)",
                        shown(g)
                    ),
                });
            }
        }
        if add.iter().any(|g| g == "all") {
            return Err(EngineError::Request {
                code: "InvalidParameter",
                message: format!(
                    "{} is encrypted (every vmie snapshot is), and encrypted images and snapshots cannot be made public; share them with accounts instead",
                    shown(id)
                ),
            });
        }
        let keys = self.keys_of(account, id).await?;
        let kms = self.inner.store.kms();
        let caller = kms::Caller::account_root(account);
        if !add.is_empty() {
            let ebs = kms.default_ebs_key().await.map_err(internal_kms)?;
            if keys.iter().any(|k| *k == ebs.arn || *k == ebs.key_id) {
                return Err(EngineError::Request {
                    code: "InvalidParameter",
                    message: format!(
                        "{} is encrypted under the service's own key (alias/aws/ebs), which cannot be shared; copy it under a customer key (CopyImage or CopySnapshot with KmsKeyId) and share the copy",
                        shown(id)
                    ),
                });
            }
        }
        for g in add.iter().filter(|g| *g != account) {
            for k in &keys {
                kms.create_grant(
                    &caller,
                    k,
                    &format!("arn:aws:iam::{g}:root"),
                    &["Decrypt", "DescribeKey"],
                    Some(&grant_name(id, g)),
                )
                .await
                .map_err(|e| EngineError::Request {
                    code: "InvalidParameter",
                    message: format!("the key of {} cannot be shared: {e}", shown(id)),
                })?;
            }
            cat.grant(id, account, g).await?;
        }
        for g in remove {
            cat.revoke(id, g).await?;
            self.revoke_grants(&caller, &keys, id, g).await;
        }
        Ok(())
    }

    /// Stops sharing `account`'s image or snapshot `id` with anyone.
    pub async fn unshare_all(&self, account: &str, id: &str) -> Result<(), EngineError> {
        let who = self.shared_with_whom(account, id).await?;
        self.share(account, id, &[], &who).await
    }

    async fn revoke_grants(&self, caller: &kms::Caller, keys: &[String], id: &str, grantee: &str) {
        let kms = self.inner.store.kms();
        let name = grant_name(id, grantee);
        for k in keys {
            let Ok(grants) = kms.list_grants(caller, k).await else {
                continue;
            };
            for g in grants
                .iter()
                .filter(|g| g.name.as_deref() == Some(name.as_str()))
            {
                if let Err(e) = kms.revoke_grant(caller, k, &g.grant_id).await {
                    tracing::warn!(key = %k, error = %e, "could not revoke a sharing grant");
                }
            }
        }
    }

    /// The KMS keys (ARNs) of the snapshots behind `account`'s image or snapshot `id`.
    async fn keys_of(&self, account: &str, id: &str) -> Result<Vec<String>, EngineError> {
        let cat = &self.inner.catalog;
        let snaps: Vec<String> = match ResourceKind::of(id) {
            Some(ResourceKind::Image) => cat
                .image(account, id)
                .await?
                .block_devices
                .into_iter()
                .map(|b| b.snapshot_id)
                .collect(),
            _ => vec![id.to_string()],
        };
        let mut keys = Vec::new();
        for s in snaps {
            if let Ok(s) = cat.snapshot_by_id(&s).await
                && let Some(k) = s.kms_key_id
                && !keys.contains(&k)
            {
                keys.push(k);
            }
        }
        Ok(keys)
    }

    /// Sets `account`'s image's description.
    pub async fn set_image_description(
        &self,
        account: &str,
        id: &str,
        description: &str,
    ) -> Result<(), EngineError> {
        crate::request::check_description("Description", Some(description))?;
        self.owned(account, id).await?;
        let mut img = self.image(account, id).await?;
        img.description = description.to_string();
        Ok(self.inner.catalog.update_image(&img).await?)
    }

    /// Deprecates `account`'s image at `at_ms`, or with `None` stops deprecating it.
    pub async fn set_deprecation(
        &self,
        account: &str,
        id: &str,
        at_ms: Option<i64>,
    ) -> Result<(), EngineError> {
        self.owned(account, id).await?;
        let mut img = self.image(account, id).await?;
        img.extra.deprecation_ms = at_ms;
        Ok(self.inner.catalog.update_image(&img).await?)
    }

    /// Disables (`available` → `disabled`) or enables `account`'s image again. A disabled
    /// image is not shared (as in EC2: disabling removes its launch permissions).
    pub async fn set_image_enabled(
        &self,
        account: &str,
        id: &str,
        enabled: bool,
    ) -> Result<(), EngineError> {
        self.owned(account, id).await?;
        let mut img = self.image(account, id).await?;
        let (from, to) = if enabled {
            ("disabled", "available")
        } else {
            ("available", "disabled")
        };
        if img.state != from {
            return Err(EngineError::Request {
                code: "IncorrectState",
                message: format!("the image {} is {}, not {from}", img.id, img.state),
            });
        }
        if !enabled {
            self.unshare_all(account, id).await?;
        }
        img.state = to.into();
        Ok(self.inner.catalog.update_image(&img).await?)
    }

    /// Every tag of `account`'s images, snapshots and tasks: `(resource id, tag)`.
    pub async fn all_tags(&self, account: &str) -> Result<Vec<(String, Tag)>, EngineError> {
        let cat = &self.inner.catalog;
        let mut out = Vec::new();
        for i in cat.images(account).await? {
            out.extend(i.tags.into_iter().map(|t| (i.id.clone(), t)));
        }
        for s in cat.snapshots(account).await? {
            out.extend(s.tags.into_iter().map(|t| (s.id.clone(), t)));
        }
        let since = catalog::now_ms() - crate::DESCRIBE_WINDOW_MS;
        for kind in [
            catalog::TaskKind::ImportImage,
            catalog::TaskKind::ImportSnapshot,
            catalog::TaskKind::ExportImage,
        ] {
            for t in cat.tasks(account, kind, since).await? {
                out.extend(t.tags.into_iter().map(|tag| (t.id.clone(), tag)));
            }
        }
        Ok(out)
    }

    /// DeregisterImage: the image goes; its snapshots stay (as in EC2). An image shared with
    /// the account is not its to deregister (`AuthFailure`); sharing grants go with it.
    pub async fn deregister_image(&self, account: &str, id: &str) -> Result<(), EngineError> {
        self.owned(account, id).await?;
        self.unshare_all(account, id).await?;
        self.inner
            .catalog
            .delete_image(account, id)
            .await
            .map_err(or_not_found(id))
    }

    /// DeleteSnapshot: refused while an image uses the snapshot (`InvalidSnapshot.InUse`);
    /// otherwise its row goes, then its data in the store (see [`delete_snapshot`]).
    pub async fn delete_snapshot(&self, account: &str, id: &str) -> Result<(), EngineError> {
        self.owned(account, id).await?;
        if self.inner.catalog.image_using(account, id).await?.is_none() {
            self.unshare_all(account, id).await?;
        }
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
