//! CopyImage and CopySnapshot: a copy re-encrypted under the key asked for — the documented
//! way to move an image to another key, or to make one that can be shared (images under the
//! service's own `alias/aws/ebs` key cannot be).
//!
//! As in EC2 the copy's id is answered at once and the copy is visible from then on, `pending`
//! (`available` / `completed` when done, `failed` / `error` if the copy fails). A copy task
//! (`copy-ami-…`, `copy-snap-…`) reads each source snapshot from the store as the copying
//! account (a snapshot shared from another account is readable only under a grant of its key)
//! and stores it again under the target key; chunks already stored are not written twice.

use std::sync::Arc;

use blockstore::PutRequest;
use catalog::{BlockDevice, Image, ImageExtra, Snapshot, SnapshotExtra, TaskKind};
use kms::Caller;

use crate::ctx::{Ctx, Outcome};
use crate::error::{EngineError, Failure};
use crate::request::{CopyImageRequest, CopySnapshotRequest, check_description, shown};
use crate::{Engine, Submit, TaskDetail};

fn pending_snapshot(
    id: &str,
    account: &str,
    task: &str,
    src: &Snapshot,
    description: &str,
    key: &str,
) -> Snapshot {
    Snapshot {
        id: id.to_string(),
        account: account.to_string(),
        task_id: Some(task.to_string()),
        volume_size: src.volume_size,
        encrypted: true,
        kms_key_id: Some(key.to_string()),
        state: "pending".into(),
        description: description.to_string(),
        tags: Vec::new(),
        created_ms: catalog::now_ms(),
        extra: SnapshotExtra {
            source_snapshot_id: Some(src.id.clone()),
        },
    }
}

fn check_region(engine: &Engine, region: &str) -> Result<(), EngineError> {
    if region.is_empty() || region == engine.region() {
        Ok(())
    } else {
        Err(EngineError::Request {
            code: "InvalidParameterValue",
            message: format!(
                "SourceRegion {} is not this service's region ({}); vmie copies within its region",
                shown(region),
                engine.region()
            ),
        })
    }
}

impl Engine {
    /// CopyImage: checks the request, records the copy (`pending`) and its task; returns the
    /// task (the copy's id is in its request).
    pub async fn copy_image(
        &self,
        sub: Submit,
        mut req: CopyImageRequest,
    ) -> Result<catalog::Task, EngineError> {
        let kind = TaskKind::CopyImage;
        let (done, token) = self.replay(kind, &sub, &req).await?;
        if let Some(t) = done {
            return Ok(t);
        }
        check_region(self, &req.source_region)?;
        check_description("Description", req.description.as_deref())?;
        if req.name.is_empty() || req.name.len() > 128 {
            return Err(EngineError::Request {
                code: "InvalidParameterValue",
                message: "Name is 1 to 128 characters".into(),
            });
        }
        let src = self
            .visible_image(&sub.account, &req.source_image_id)
            .await?;
        if src.state != "available" {
            return Err(EngineError::Request {
                code: "IncorrectState",
                message: format!(
                    "the image {} is {}; only an available image can be copied",
                    src.id, src.state
                ),
            });
        }
        let (key, task_id) = self
            .copy_key_and_task(&sub, kind, req.encrypted, req.kms_key_id.as_deref())
            .await?;
        req.kms_key_id = Some(key.clone());
        req.encrypted = Some(true);
        req.image_id = catalog::derived_id("ami-", &[&task_id]);
        req.snapshot_ids = (0..src.block_devices.len())
            .map(|i| catalog::derived_id("snap-", &[&task_id, &i.to_string()]))
            .collect();
        let (snaps, image) = self
            .copy_rows(&sub.account, &task_id, &src, &req, &key)
            .await?;
        let sub = Submit {
            task_id: Some(task_id),
            ..sub
        };
        // The rows first (pending), then the task: a copy never runs without them.
        for s in &snaps {
            self.inner.catalog.put_snapshot(s).await?;
        }
        self.inner.catalog.put_image(&image).await?;
        self.create(kind, sub, token, &req, "pending").await
    }

    /// The rows a copy of `src` starts with: its snapshots and the image, all `pending`,
    /// under the ids `req` derived from `task_id`, encrypted under `key`.
    async fn copy_rows(
        &self,
        account: &str,
        task_id: &str,
        src: &Image,
        req: &CopyImageRequest,
        key: &str,
    ) -> Result<(Vec<Snapshot>, Image), EngineError> {
        let description = req.description.clone().unwrap_or_default();
        let mut snaps = Vec::new();
        let mut devices = Vec::new();
        for (b, id) in src.block_devices.iter().zip(&req.snapshot_ids) {
            let s = self
                .inner
                .catalog
                .snapshot_by_id(&b.snapshot_id)
                .await
                .map_err(|_| EngineError::Request {
                    code: "InvalidSnapshot.NotFound",
                    message: format!(
                        "the image {} names the snapshot {}, which is gone",
                        src.id, b.snapshot_id
                    ),
                })?;
            snaps.push(pending_snapshot(
                id,
                account,
                task_id,
                &s,
                &description,
                key,
            ));
            devices.push(BlockDevice {
                snapshot_id: id.clone(),
                ..b.clone()
            });
        }
        let mut tags = req.image_tags.clone();
        if req.copy_image_tags {
            for t in &src.tags {
                if !tags.iter().any(|x| x.key == t.key) {
                    tags.push(t.clone());
                }
            }
        }
        let image = Image {
            id: req.image_id.clone(),
            account: account.to_string(),
            task_id: Some(task_id.to_string()),
            name: req.name.clone(),
            description,
            architecture: src.architecture.clone(),
            platform: src.platform.clone(),
            boot_mode: src.boot_mode.clone(),
            block_devices: devices,
            encrypted: true,
            kms_key_id: Some(key.to_string()),
            state: "pending".into(),
            tags,
            created_ms: catalog::now_ms(),
            extra: ImageExtra {
                source_image_id: Some(src.id.clone()),
                source_region: Some(self.region().to_string()),
                usage_operation: src.extra.usage_operation.clone(),
                license_type: src.extra.license_type.clone(),
                deprecation_ms: None,
            },
        };
        Ok((snaps, image))
    }

    /// The key a copy is encrypted under (the one asked for, else the account's default) and
    /// the copy task's id (pre-allocated by the API, else new): what both copies start with.
    async fn copy_key_and_task(
        &self,
        sub: &Submit,
        kind: TaskKind,
        encrypted: Option<bool>,
        kms_key_id: Option<&str>,
    ) -> Result<(String, String), EngineError> {
        let (_, key) = self.kms_key(&sub.account, encrypted, kms_key_id).await?;
        let task_id = sub
            .task_id
            .clone()
            .unwrap_or_else(|| crate::new_task_id(kind));
        Ok((key.unwrap_or_default(), task_id))
    }

    /// CopySnapshot: checks the request, records the copy (`pending`) and its task.
    pub async fn copy_snapshot(
        &self,
        sub: Submit,
        mut req: CopySnapshotRequest,
    ) -> Result<catalog::Task, EngineError> {
        let kind = TaskKind::CopySnapshot;
        let (done, token) = self.replay(kind, &sub, &req).await?;
        if let Some(t) = done {
            return Ok(t);
        }
        check_region(self, &req.source_region)?;
        check_description("Description", req.description.as_deref())?;
        let src = self
            .visible_snapshot(&sub.account, &req.source_snapshot_id)
            .await?;
        if src.state != "completed" {
            return Err(EngineError::Request {
                code: "IncorrectState",
                message: format!(
                    "the snapshot {} is {}; only a completed snapshot can be copied",
                    src.id, src.state
                ),
            });
        }
        let (key, task_id) = self
            .copy_key_and_task(&sub, kind, req.encrypted, req.kms_key_id.as_deref())
            .await?;
        req.kms_key_id = Some(key.clone());
        req.encrypted = Some(true);
        req.snapshot_id = catalog::derived_id("snap-", &[&task_id, "0"]);
        let mut snap = pending_snapshot(
            &req.snapshot_id,
            &sub.account,
            &task_id,
            &src,
            req.description.as_deref().unwrap_or_default(),
            &key,
        );
        snap.tags.clone_from(&req.tags);
        self.inner.catalog.put_snapshot(&snap).await?;
        let sub = Submit {
            task_id: Some(task_id),
            ..sub
        };
        self.create(kind, sub, token, &req, "pending").await
    }
}

/// Copies `from` into a new snapshot `to` under `key`, as the task's account.
fn copy_one(ctx: &Ctx, from: &str, to: &str, key: &str) -> Result<u64, Failure> {
    let inner = &ctx.inner;
    let caller = Caller::account_root(&ctx.task.account);
    // A manifest an interrupted attempt stored under this id is replaced.
    match ctx.handle.block_on(inner.store.delete(to)) {
        Ok(()) | Err(blockstore::StoreError::NotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let reader = ctx.wait(async { Ok(inner.store.open(&caller, from).await?) }, None)?;
    let disk: Arc<dyn diskfmt::Disk> = Arc::new(Arc::new(reader).blocking(ctx.handle.clone()));
    let req = PutRequest {
        snapshot_id: to.to_string(),
        kms_key: Some(key.to_string()),
        parent: None,
        caller,
    };
    let summary = ctx.wait(async { Ok(inner.store.put(disk, req, None).await?) }, None)?;
    Ok(summary.volume_size)
}

/// The rows of a finished copy: what was pending, now done.
fn done_snapshot(ctx: &Ctx, id: &str) -> Result<Snapshot, Failure> {
    let mut s = ctx
        .handle
        .block_on(ctx.inner.catalog.snapshot(&ctx.task.account, id))?;
    s.state = "completed".into();
    Ok(s)
}

/// copy-image.
pub(crate) fn copy_image(ctx: &Ctx) -> Result<Outcome, Failure> {
    let req: CopyImageRequest = serde_json::from_str(&ctx.task.request)
        .map_err(|e| Failure::Server(format!("the stored request does not parse: {e}")))?;
    let src = ctx
        .handle
        .block_on(ctx.inner.catalog.image_by_id(&req.source_image_id))
        .map_err(|_| {
            Failure::Client(format!(
                "the image {} was deregistered before it could be copied",
                req.source_image_id
            ))
        })?;
    let key = req.kms_key_id.clone().unwrap_or_default();
    let n = i64::try_from(req.snapshot_ids.len()).unwrap_or(1).max(1);
    let mut snapshots = Vec::new();
    for (i, (b, to)) in src.block_devices.iter().zip(&req.snapshot_ids).enumerate() {
        ctx.report("copying", 5 + 90 * i64::try_from(i).unwrap_or(0) / n)?;
        copy_one(ctx, &b.snapshot_id, to, &key)?;
        snapshots.push(done_snapshot(ctx, to)?);
    }
    let mut image = ctx
        .handle
        .block_on(ctx.inner.catalog.image(&ctx.task.account, &req.image_id))?;
    image.state = "available".into();
    Ok(Outcome {
        detail: TaskDetail {
            image_id: Some(req.image_id.clone()),
            kms_key_id: Some(key),
            encrypted: Some(true),
            ..TaskDetail::default()
        },
        snapshots,
        image: Some(image),
    })
}

/// copy-snapshot.
pub(crate) fn copy_snapshot(ctx: &Ctx) -> Result<Outcome, Failure> {
    let req: CopySnapshotRequest = serde_json::from_str(&ctx.task.request)
        .map_err(|e| Failure::Server(format!("the stored request does not parse: {e}")))?;
    let key = req.kms_key_id.clone().unwrap_or_default();
    ctx.report("copying", 5)?;
    copy_one(ctx, &req.source_snapshot_id, &req.snapshot_id, &key)?;
    Ok(Outcome {
        detail: TaskDetail {
            kms_key_id: Some(key),
            encrypted: Some(true),
            ..TaskDetail::default()
        },
        snapshots: vec![done_snapshot(ctx, &req.snapshot_id)?],
        image: None,
    })
}

/// A copy that ended without completing: its rows say so (`failed`, `error`) and its data
/// goes.
pub(crate) async fn failed(engine_inner: &crate::Inner, task: &catalog::Task) {
    let cat = &engine_inner.catalog;
    let (image, snaps) = match task.kind {
        TaskKind::CopyImage => match serde_json::from_str::<CopyImageRequest>(&task.request) {
            Ok(r) => (Some(r.image_id), r.snapshot_ids),
            Err(_) => return,
        },
        TaskKind::CopySnapshot => {
            match serde_json::from_str::<CopySnapshotRequest>(&task.request) {
                Ok(r) => (None, vec![r.snapshot_id]),
                Err(_) => return,
            }
        }
        _ => return,
    };
    for s in &snaps {
        if let Err(e) = cat.set_snapshot_state(&task.account, s, "error").await {
            tracing::warn!(snapshot = %s, error = %e, "could not mark a failed copy");
        }
        match engine_inner.store.delete(s).await {
            Ok(()) | Err(blockstore::StoreError::NotFound(_)) => {}
            Err(e) => tracing::warn!(snapshot = %s, error = %e, "could not remove a failed copy"),
        }
    }
    if let Some(id) = image
        && let Ok(mut img) = cat.image(&task.account, &id).await
    {
        img.state = "failed".into();
        if let Err(e) = cat.update_image(&img).await {
            tracing::warn!(image = %id, error = %e, "could not mark a failed copy");
        }
    }
}
