//! # engine — vmie's tasks
//!
//! The task engine runs imports and exports. Requests are checked when they are made
//! ([`Engine::import_image`], [`Engine::import_snapshot`], [`Engine::export_image`]: bucket
//! and key present, format as declared, size within limits, KMS key usable) and become task
//! rows in the catalog. Workers ([`Engine::run_workers`]) claim tasks with a lease that a
//! heartbeat extends, move each through its stages as the EC2 service names them, and keep
//! the data-protection promise: a task's intermediate data lives only in its encrypted
//! intermediate volume ([`scratch`]), which is destroyed however the task ends, and what a
//! task makes (snapshots, image) becomes visible in the same transaction that completes it.
//!
//! Stages:
//! - import-image: `pending` → `converting` → `validating` → `booting` → `updating` →
//!   `preparing ami` → `completed` (`booting`: the boot disk booted once in a sandboxed QEMU,
//!   see [`boot`]; a guest that does not come up fails with `FirstBootFailure`);
//! - import-snapshot: `pending` → `downloading/converting` → `completed`;
//! - export-image: `validating` → `converting` → `completed`;
//! - cancel: `deleting` → `deleted`; failure: `deleted` with `ClientError: …` or
//!   `ServerError: …`.
//!
//! A task abandoned by a dead process is claimed again once its lease expires and restarts
//! cleanly: snapshots a previous attempt stored but never published are deleted, the
//! attempt's own snapshot ids are new, and after [`MAX_ATTEMPTS`] interrupted attempts the
//! task fails with a server error.

pub mod addr;
pub mod boot;
mod copy;
mod ctx;
pub mod error;
mod export;
mod fill;
pub mod gc;
mod import;
pub mod request;
pub mod resources;
pub mod scratch;
pub mod sealed_temp;
mod secrets;
pub mod source;
mod worker;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use blockstore::BlockStore;
use catalog::{Catalog, CatalogError, NewTask, Tag, Task, TaskKind};
use kms::Caller;

pub use boot::{BootCheckConfig, BootCheckMode, BootCheckSummary, BootEvidence};
pub use error::{EngineError, Failure};
pub use request::{
    CopyImageRequest, CopySnapshotRequest, DiskContainer, ExportImageRequest, ExportLocation,
    ImportImageRequest, ImportSnapshotRequest, UserBucket,
};
pub use resources::{ResourceKind, TagRemoval};
pub use source::{Buckets, Location, Sources, UrlPolicy};

/// Attempts after which an interrupted task fails.
pub const MAX_ATTEMPTS: i64 = 3;

/// How long ended tasks stay visible to Describe (7 days, as in EC2).
pub const DESCRIBE_WINDOW_MS: i64 = 7 * 24 * 3600 * 1000;

/// Per-account setting: encryption by default (`true` / `false`).
pub const SETTING_ENCRYPTION_BY_DEFAULT: &str = "ebs-encryption-by-default";
/// Per-account setting: the default KMS key for encrypted snapshots.
pub const SETTING_DEFAULT_KMS_KEY: &str = "ebs-default-kms-key-id";

/// Tunables of the engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Folder of intermediate volumes (made 0700).
    pub scratch_dir: PathBuf,
    /// Limits on images.
    pub limits: diskfmt::Limits,
    /// Largest image file accepted, in bytes.
    pub max_image_bytes: u64,
    /// Lease on a claimed task; the heartbeat renews it every third of it.
    pub lease: Duration,
    /// How often an idle worker looks for work.
    pub poll: Duration,
    /// Threads one task uses to decode.
    pub threads: usize,
    /// A name for this process in leases and events.
    pub node: String,
    /// Called on the worker's thread as a task enters each stage, once the stage is
    /// recorded (metrics, tracing, and tests that act at a given stage).
    pub on_stage: Option<StageHook>,
    /// The boot check of imported images (the `booting` stage).
    pub boot_check: BootCheckConfig,
}

/// See [`EngineConfig::on_stage`]: called with the task id and the stage's status message.
#[derive(Clone)]
pub struct StageHook(pub Arc<StageFn>);

/// The function behind a [`StageHook`].
pub type StageFn = dyn Fn(&str, &str) + Send + Sync;

impl std::fmt::Debug for StageHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StageHook")
    }
}

impl EngineConfig {
    /// Defaults with intermediate volumes in `scratch_dir`.
    #[must_use]
    pub fn new(scratch_dir: PathBuf) -> Self {
        EngineConfig {
            scratch_dir,
            limits: diskfmt::Limits::default(),
            max_image_bytes: source::DEFAULT_MAX_IMAGE,
            lease: Duration::from_secs(60),
            poll: Duration::from_millis(500),
            threads: std::thread::available_parallelism().map_or(2, std::num::NonZero::get),
            node: format!("{}-{}", hostname(), std::process::id()),
            on_stage: None,
            boot_check: BootCheckConfig::default(),
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "vmie".into())
}

/// A disk of a task, as Describe shows it (`SnapshotDetail` / `SnapshotTaskDetail`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskDetail {
    /// `DeviceName`.
    pub device_name: Option<String>,
    /// `Description`.
    pub description: Option<String>,
    /// `DiskImageSize`: bytes of the image file, once known.
    pub disk_image_size: Option<u64>,
    /// `Format`, once detected (`VMDK`, `VHD`, …).
    pub format: Option<String>,
    /// `SnapshotId`, once stored.
    pub snapshot_id: Option<String>,
    /// `Url` (without its query string).
    pub url: Option<String>,
    /// `UserBucket`.
    pub user_bucket: Option<UserBucket>,
    /// Size of the virtual disk in bytes, once known.
    pub virtual_size: Option<u64>,
}

/// Where an export went (`S3ExportLocation` plus the key written).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportDetail {
    /// Bucket.
    pub s3_bucket: String,
    /// Prefix given.
    pub s3_prefix: String,
    /// Key of the file written.
    pub s3_key: String,
    /// `DiskImageFormat`.
    pub disk_image_format: String,
    /// Bytes written.
    pub size: Option<u64>,
}

/// What a task has found and made so far (kept as its checkpoint while it runs, and as its
/// result when it ends).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskDetail {
    /// `ImageId` (import-image; export-image: the image exported).
    pub image_id: Option<String>,
    /// `Architecture`.
    pub architecture: Option<String>,
    /// `Platform`.
    pub platform: Option<String>,
    /// `BootMode`.
    pub boot_mode: Option<String>,
    /// `LicenseType`.
    pub license_type: Option<String>,
    /// `Description` of the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `Hypervisor`, as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hypervisor: Option<String>,
    /// `UsageOperation`: as given, else the platform's once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_operation: Option<String>,
    /// `LicenseSpecifications`, as given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub license_specifications: Vec<String>,
    /// Operating system found, in words.
    pub os_name: Option<String>,
    /// `Encrypted`.
    pub encrypted: Option<bool>,
    /// `KmsKeyId` used.
    pub kms_key_id: Option<String>,
    /// The disks.
    pub disks: Vec<DiskDetail>,
    /// Export destination.
    pub export: Option<ExportDetail>,
    /// Things worth knowing that did not stop the task.
    pub warnings: Vec<String>,
    /// The boot check (import-image), once made or skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_check: Option<BootCheckSummary>,
}

impl TaskDetail {
    /// The detail of `t`: its result when ended, else its checkpoint, else what the request
    /// says.
    #[must_use]
    pub fn of(t: &Task) -> TaskDetail {
        t.result
            .as_deref()
            .or(t.checkpoint.as_deref())
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_else(|| initial_detail(t))
    }
}

pub(crate) fn initial_detail(t: &Task) -> TaskDetail {
    let disk = |dc: &DiskContainer| DiskDetail {
        device_name: dc.device_name.clone(),
        disk_image_size: dc.disk_image_size,
        description: dc.description.clone(),
        url: dc
            .url
            .as_deref()
            .map(|u| u.split(['?', '#']).next().unwrap_or("").to_string()),
        user_bucket: dc.user_bucket.clone(),
        format: dc.format.as_ref().map(|f| f.to_ascii_uppercase()),
        ..DiskDetail::default()
    };
    match t.kind {
        TaskKind::ImportImage => serde_json::from_str::<ImportImageRequest>(&t.request)
            .map(|r| TaskDetail {
                architecture: r.architecture.clone(),
                platform: r.platform.clone(),
                boot_mode: r.boot_mode.clone(),
                license_type: r.license_type.clone(),
                description: r.description.clone(),
                hypervisor: r.hypervisor.clone(),
                usage_operation: r.usage_operation.clone(),
                license_specifications: r.license_specifications.clone(),
                encrypted: r.encrypted,
                kms_key_id: r.kms_key_id.clone(),
                disks: r.disk_containers.iter().map(disk).collect(),
                ..TaskDetail::default()
            })
            .unwrap_or_default(),
        TaskKind::ImportSnapshot => serde_json::from_str::<ImportSnapshotRequest>(&t.request)
            .map(|r| TaskDetail {
                description: r.description.clone(),
                encrypted: r.encrypted,
                kms_key_id: r.kms_key_id.clone(),
                disks: vec![disk(&r.disk_container)],
                ..TaskDetail::default()
            })
            .unwrap_or_default(),
        TaskKind::ExportImage => serde_json::from_str::<ExportImageRequest>(&t.request)
            .map(|r| TaskDetail {
                image_id: Some(r.image_id.clone()),
                ..TaskDetail::default()
            })
            .unwrap_or_default(),
        TaskKind::CopyImage => serde_json::from_str::<CopyImageRequest>(&t.request)
            .map(|r| TaskDetail {
                image_id: Some(r.image_id.clone()),
                kms_key_id: r.kms_key_id.clone(),
                encrypted: Some(true),
                ..TaskDetail::default()
            })
            .unwrap_or_default(),
        TaskKind::CopySnapshot => serde_json::from_str::<CopySnapshotRequest>(&t.request)
            .map(|r| TaskDetail {
                kms_key_id: r.kms_key_id.clone(),
                encrypted: Some(true),
                ..TaskDetail::default()
            })
            .unwrap_or_default(),
    }
}

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct Stats {
    /// Bytes of virtual disk decoded by imports.
    pub bytes_imported: AtomicU64,
    /// Bytes written by exports.
    pub bytes_exported: AtomicU64,
    /// Tasks completed.
    pub completed: AtomicU64,
    /// Tasks that failed.
    pub failed: AtomicU64,
    /// Tasks cancelled.
    pub cancelled: AtomicU64,
}

pub(crate) struct Inner {
    pub(crate) catalog: Catalog,
    pub(crate) store: BlockStore,
    pub(crate) sources: Sources,
    pub(crate) cfg: EngineConfig,
    pub(crate) stats: Stats,
    pub(crate) events: std::sync::OnceLock<EventHook>,
    /// Woken whenever a worker of this process ends a task.
    pub(crate) ended: tokio::sync::Notify,
}

/// A change in a task's state, as a worker saw it (for the activity log).
#[derive(Debug, Clone, Copy)]
pub struct TaskEvent<'a> {
    /// The task, as claimed.
    pub task: &'a Task,
    /// `claimed`, `stage`, `completed`, `cancelled`, `failed` or `lease-lost`.
    pub event: &'static str,
    /// The stage's status message for `stage`; `ClientError` or `ServerError` for `failed`;
    /// otherwise empty. Never the failure's message (it may quote the request).
    pub detail: &'a str,
    /// The worker.
    pub worker: &'a str,
}

/// Called with every [`TaskEvent`]; see [`Engine::set_event_hook`].
#[derive(Clone)]
pub struct EventHook(pub Arc<dyn Fn(&TaskEvent<'_>) + Send + Sync>);

impl std::fmt::Debug for EventHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventHook")
    }
}

/// The task engine: submission, cancel, lookup, and the workers.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("cfg", &self.inner.cfg)
            .finish_non_exhaustive()
    }
}

/// Tags and idempotency token of a submission.
#[derive(Debug, Clone, Default)]
pub struct Submit {
    /// Account submitting.
    pub account: String,
    /// The id the task gets when it is created (see [`new_task_id`]): chosen before the
    /// request is authorized, so that what is authorized (the task's ARN, an export's key)
    /// is what is made. `None`: a new one.
    pub task_id: Option<String>,
    /// `ClientToken`.
    pub client_token: Option<String>,
    /// Tags for the task (`TagSpecification` with resource type `import-image-task`, …).
    pub tags: Vec<Tag>,
}

/// A new task id of `kind` (`import-ami-…`, `import-snap-…`, `export-ami-…`).
#[must_use]
pub fn new_task_id(kind: TaskKind) -> String {
    catalog::new_id(kind.prefix())
}

/// The key an export of task `task_id` writes: `<prefix><task id>.<extension>`.
pub fn export_key(
    prefix: Option<&str>,
    task_id: &str,
    disk_image_format: &str,
) -> Result<String, EngineError> {
    let (_, ext, _) = request::output_format(disk_image_format)?;
    Ok(format!("{}{task_id}.{ext}", prefix.unwrap_or_default()))
}

impl Inner {
    /// Tells the event hook, if one is set, of a task state change.
    pub(crate) fn event(&self, task: &Task, event: &'static str, detail: &str, worker: &str) {
        if let Some(h) = self.events.get() {
            (h.0)(&TaskEvent {
                task,
                event,
                detail,
                worker,
            });
        }
    }
}

impl Engine {
    /// An engine over its catalog, snapshot store and sources.
    #[must_use]
    pub fn new(catalog: Catalog, store: BlockStore, sources: Sources, cfg: EngineConfig) -> Self {
        Engine {
            inner: Arc::new(Inner {
                catalog,
                store,
                sources,
                cfg,
                stats: Stats::default(),
                events: std::sync::OnceLock::new(),
                ended: tokio::sync::Notify::new(),
            }),
        }
    }

    /// Resolves when a worker of this process next ends a task (whichever): a waiter for one
    /// task looks at it again then instead of on its next poll.
    pub async fn task_ended(&self) {
        self.inner.ended.notified().await;
    }

    /// Sets, once, the function told of every task state change this engine's workers make
    /// (claimed, each stage, and how the task ended). False when one was already set.
    pub fn set_event_hook(&self, hook: EventHook) -> bool {
        self.inner.events.set(hook).is_ok()
    }

    pub(crate) fn event(&self, task: &Task, event: &'static str, detail: &str, worker: &str) {
        self.inner.event(task, event, detail, worker);
    }

    /// The catalog.
    #[must_use]
    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    /// The snapshot store.
    #[must_use]
    pub fn store(&self) -> &BlockStore {
        &self.inner.store
    }

    /// Where buckets live (the S3 endpoint serves them).
    #[must_use]
    pub fn sources(&self) -> &Sources {
        &self.inner.sources
    }

    /// The folder of intermediate volumes (and other temporary files of this process).
    #[must_use]
    pub fn scratch_dir(&self) -> &std::path::Path {
        &self.inner.cfg.scratch_dir
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &EngineConfig {
        &self.inner.cfg
    }

    /// The region the service serves (its keys' region).
    #[must_use]
    pub fn region(&self) -> &str {
        &self.inner.store.kms().config().region
    }

    /// Prepares the intermediate-volume folder and destroys volumes a crashed process left;
    /// returns their names. Call once before workers start.
    pub fn startup(&self) -> Result<Vec<String>, EngineError> {
        let dir = &self.inner.cfg.scratch_dir;
        scratch::prepare_dir(dir).map_err(|e| EngineError::Internal(e.to_string()))?;
        let gone = scratch::sweep(dir).map_err(|e| EngineError::Internal(e.to_string()))?;
        for g in &gone {
            tracing::warn!(volume = %g, "destroyed an intermediate volume left by a process that did not end cleanly");
        }
        Ok(gone)
    }

    /// The KMS key a new snapshot of `account` is encrypted under, as an ARN: the one asked
    /// for, else the account's default key, else the service default (`alias/aws/ebs`).
    /// Checked to exist and be usable now, so that a wrong key fails the request rather than
    /// the task. Every snapshot is encrypted at rest, so `Encrypted` is always true; what the
    /// request's flag decides in EC2 (whether to encrypt) is here only the `ec2:Encrypted`
    /// condition of its authorization.
    async fn kms_key(
        &self,
        account: &str,
        encrypted: Option<bool>,
        key: Option<&str>,
    ) -> Result<(bool, Option<String>), EngineError> {
        request::check_encryption(encrypted, key)?;
        let key = match key {
            Some(k) => k.to_string(),
            None => self.default_kms_key(account).await?,
        };
        let caller = Caller::account_root(account);
        let meta = self
            .inner
            .store
            .kms()
            .describe_key(&caller, &key)
            .await
            .map_err(|e| EngineError::Request {
                code: "InvalidParameterValue",
                message: format!("KmsKeyId {:?} cannot be used: {e}", request::shown(&key)),
            })?;
        Ok((true, Some(meta.arn)))
    }

    /// Checks one disk container now: the object exists, is not too large, and its content
    /// is the format it is declared as (a snapshot: that the account may read it). Notes the
    /// image file's size in the container, as `DiskImageSize` is reported from the start.
    async fn check_container(
        &self,
        account: &str,
        i: usize,
        dc: &mut DiskContainer,
    ) -> Result<(), EngineError> {
        let declared = dc
            .format
            .as_deref()
            .map(|f| request::input_format(&format!("DiskContainer.{}.Format", i + 1), f))
            .transpose()?;
        request::check_description("DiskContainer Description", dc.description.as_deref())?;
        let loc = source::locate(dc, self.inner.sources.allow())?;
        if let source::Location::Snapshot(id) = &loc {
            let snap = self.visible_snapshot(account, id).await?;
            dc.disk_image_size = u64::try_from(snap.volume_size).ok();
        }
        if let source::Location::Bucket(b) = &loc {
            let (stat, sealed) = self
                .inner
                .sources
                .lookup(b, self.inner.store.kms(), account)
                .await?;
            let size = sealed.as_ref().map_or(stat.size, |u| u.size);
            dc.disk_image_size = Some(size);
            let max = self.inner.cfg.max_image_bytes;
            if size > max {
                return Err(EngineError::Request {
                    code: "InvalidParameterValue",
                    message: format!(
                        "the image s3://{}/{} is {size} bytes, more than the limit of {max} bytes",
                        b.s3_bucket, b.s3_key
                    ),
                });
            }
            if size == 0 {
                return Err(EngineError::Request {
                    code: "InvalidParameterValue",
                    message: format!("the image s3://{}/{} is empty", b.s3_bucket, b.s3_key),
                });
            }
            let handle = tokio::runtime::Handle::current();
            let sources = self.inner.sources.clone();
            let b2 = b.clone();
            let detected = tokio::task::spawn_blocking(move || {
                let src = sources
                    .open(&b2, &stat, sealed.as_ref(), &handle, false)
                    .map_err(|f| f.message())?;
                diskfmt::detect(&*src).map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))?;
            let detected = detected.map_err(|m| EngineError::Request {
                code: "InvalidParameterValue",
                message: format!(
                    "the image s3://{}/{} is not a disk image vmie can read: {m}",
                    b.s3_bucket, b.s3_key
                ),
            })?;
            if let Some(f) = declared
                && f != detected.format
                && !(f == diskfmt::Format::Raw && detected.format == diskfmt::Format::Iso)
            {
                return Err(EngineError::Request {
                    code: "InvalidParameterValue",
                    message: format!(
                        "DiskContainer.{}.Format is {} but s3://{}/{} is a {} image; correct Format or leave it out",
                        i + 1,
                        f.name().to_ascii_uppercase(),
                        b.s3_bucket,
                        b.s3_key,
                        detected.format.name().to_ascii_uppercase()
                    ),
                });
            }
        }
        Ok(())
    }

    /// The idempotency token of a submission, checked before anything else is: when
    /// `sub`'s `ClientToken` was used before for `kind`, the task it made (or
    /// `IdempotentParameterMismatch` when `given`, the request as the caller gave it, differs),
    /// so a retry costs no bucket read, detection or key lookup.
    async fn replay(
        &self,
        kind: TaskKind,
        sub: &Submit,
        given: &impl Serialize,
    ) -> Result<(Option<Task>, Option<catalog::ClientToken>), EngineError> {
        let Some(token) = &sub.client_token else {
            return Ok((None, None));
        };
        if token.is_empty() || token.len() > 64 {
            return Err(EngineError::Request {
                code: "InvalidParameterValue",
                message: "ClientToken must be 1 to 64 characters".into(),
            });
        }
        let given =
            serde_json::to_string(given).map_err(|e| EngineError::Internal(e.to_string()))?;
        let ct = catalog::ClientToken {
            token: token.clone(),
            params_hash: catalog::token_hash(&given, &sub.tags),
        };
        let existing = self
            .inner
            .catalog
            .task_of_token(&sub.account, kind, &ct)
            .await?;
        Ok((existing, Some(ct)))
    }

    async fn create(
        &self,
        kind: TaskKind,
        sub: Submit,
        token: Option<catalog::ClientToken>,
        request: &impl Serialize,
        message: &str,
    ) -> Result<Task, EngineError> {
        let request =
            serde_json::to_string(request).map_err(|e| EngineError::Internal(e.to_string()))?;
        let id = sub.task_id.unwrap_or_else(|| new_task_id(kind));
        // A URL's query (a presigned URL's signature) is stored only sealed.
        let (request, sealed) = secrets::seal(self.inner.store.kms(), &id, &request)?;
        let (task, created) = self
            .inner
            .catalog
            .create_task(NewTask {
                id,
                account: sub.account,
                kind,
                status_message: message.into(),
                request,
                tags: sub.tags,
                client_token: token,
                sealed,
            })
            .await?;
        if created {
            tracing::info!(task = %task.id, kind = kind.as_str(), "task created");
        }
        Ok(task)
    }

    /// Where a disk container's data comes from, parsed by the one parser the workers use
    /// too: the API authorizes the service role on this value, and the task reads it.
    pub fn locate(&self, dc: &DiskContainer) -> Result<Location, EngineError> {
        source::locate(dc, self.inner.sources.allow())
    }

    /// ImportImage: checks the request and creates the task.
    pub async fn import_image(
        &self,
        sub: Submit,
        mut req: ImportImageRequest,
    ) -> Result<Task, EngineError> {
        let kind = TaskKind::ImportImage;
        if req.disk_containers.is_empty() || req.disk_containers.len() > request::MAX_DISKS {
            return Err(EngineError::Request {
                code: "InvalidParameterValue",
                message: format!(
                    "ImportImage takes 1 to {} disk containers, the boot disk first; got {}",
                    request::MAX_DISKS,
                    req.disk_containers.len()
                ),
            });
        }
        let (done, token) = self.replay(kind, &sub, &req).await?;
        if let Some(t) = done {
            return Ok(t);
        }
        request::check_image_options(&req)?;
        for (i, dc) in req.disk_containers.iter_mut().enumerate() {
            self.check_container(&sub.account, i, dc).await?;
            // Device names are known from the start: the boot disk first.
            dc.device_name
                .get_or_insert_with(|| request::device_name(i));
        }
        let (enc, key) = self
            .kms_key(&sub.account, req.encrypted, req.kms_key_id.as_deref())
            .await?;
        req.encrypted = Some(enc);
        req.kms_key_id = key;
        self.create(kind, sub, token, &req, "pending").await
    }

    /// ImportSnapshot: checks the request and creates the task.
    pub async fn import_snapshot(
        &self,
        sub: Submit,
        mut req: ImportSnapshotRequest,
    ) -> Result<Task, EngineError> {
        let kind = TaskKind::ImportSnapshot;
        let (done, token) = self.replay(kind, &sub, &req).await?;
        if let Some(t) = done {
            return Ok(t);
        }
        request::check_description("Description", req.description.as_deref())?;
        if req.disk_container.snapshot_id.is_some() {
            return Err(EngineError::Request {
                code: "InvalidParameter",
                message: "ImportSnapshot imports an image file (Url or UserBucket); to copy a snapshot, use CopySnapshot".into(),
            });
        }
        let account = sub.account.clone();
        self.check_container(&account, 0, &mut req.disk_container)
            .await?;
        let (enc, key) = self
            .kms_key(&sub.account, req.encrypted, req.kms_key_id.as_deref())
            .await?;
        req.encrypted = Some(enc);
        req.kms_key_id = key;
        self.create(kind, sub, token, &req, "pending").await
    }

    /// ExportImage: checks the request and creates the task.
    pub async fn export_image(
        &self,
        sub: Submit,
        req: ExportImageRequest,
    ) -> Result<Task, EngineError> {
        let kind = TaskKind::ExportImage;
        let (done, token) = self.replay(kind, &sub, &req).await?;
        if let Some(t) = done {
            return Ok(t);
        }
        request::output_format(&req.disk_image_format)?;
        request::check_description("Description", req.description.as_deref())?;
        let loc = &req.s3_export_location;
        request::check_bucket("S3ExportLocation.S3Bucket", &loc.s3_bucket)?;
        if let Some(p) = &loc.s3_prefix {
            request::check_key("S3ExportLocation.S3Prefix", p, true)?;
        }
        // An image shared with the account may be exported by it too.
        let img = self.visible_image(&sub.account, &req.image_id).await?;
        if img.state != "available" {
            return Err(EngineError::Request {
                code: "IncorrectState",
                message: format!(
                    "the image {} is {}; only an available image can be exported",
                    img.id, img.state
                ),
            });
        }
        if img.block_devices.is_empty() {
            return Err(EngineError::Request {
                code: "InvalidParameterValue",
                message: format!("the image {} has no volumes to export", img.id),
            });
        }
        self.inner.sources.check_export_bucket(&loc.s3_bucket)?;
        self.create(kind, sub, token, &req, "validating").await
    }

    /// CancelImportTask (and cancel of an export): the task becomes `deleting`; its worker
    /// stops at its next check and ends it `deleted`.
    pub async fn cancel(&self, account: &str, id: &str) -> Result<Task, EngineError> {
        match self.inner.catalog.request_cancel(account, id).await {
            Err(CatalogError::NotFound(_)) => Err(EngineError::Request {
                code: "InvalidConversionTaskId",
                message: format!("the task {:?} does not exist", request::shown(id)),
            }),
            r => Ok(r?),
        }
    }

    /// Tasks of `kind` visible to Describe: active, or ended in the last 7 days; only `ids`
    /// when given (an unknown id is an error, as in EC2).
    pub async fn describe(
        &self,
        account: &str,
        kind: TaskKind,
        ids: &[String],
    ) -> Result<Vec<Task>, EngineError> {
        let since = catalog::now_ms() - DESCRIBE_WINDOW_MS;
        let all = self.inner.catalog.tasks(account, kind, since).await?;
        if ids.is_empty() {
            return Ok(all);
        }
        let mut out = Vec::new();
        for id in ids {
            match all.iter().find(|t| &t.id == id) {
                Some(t) => out.push(t.clone()),
                None => {
                    return Err(EngineError::Request {
                        code: "InvalidConversionTaskId",
                        message: format!("the task {:?} does not exist", request::shown(id)),
                    });
                }
            }
        }
        Ok(out)
    }
}
