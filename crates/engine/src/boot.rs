//! The `booting` stage of import-image: the boot disk, still in its encrypted intermediate
//! volume, booted once in a sandboxed QEMU ([`bootcheck`]) before it becomes a snapshot; and
//! the evidence that boot left (serial console, screenshot, bus, firmware, accelerator,
//! timings), sealed in the snapshot store under the import's KMS key.
//!
//! The evidence is kept with the image (for a completed import) or with the failed task, and
//! goes with them: [`Engine::boot_evidence`] refuses it once the image is deregistered or the
//! task has left the 7-day Describe window, and [`Engine::expire_boot_evidence`] deletes it.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use bootcheck::{Arch, BootError, BootMode, BootSpec, Region};
use catalog::{CatalogError, TaskKind};
use diskfmt::Disk;
use kms::Caller;

use crate::ctx::Ctx;
use crate::error::{EngineError, Failure};
use crate::{DESCRIBE_WINDOW_MS, Engine, TaskDetail, request};

/// The sealed-object kind evidence is stored under.
pub const EVIDENCE_KIND: &str = "boot-evidence";

/// Whether imports are boot-checked (`boot_check`, `--boot-check`, `VMIE_BOOT_CHECK`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootCheckMode {
    /// When QEMU and the firmware are installed; otherwise the task records why not.
    #[default]
    Auto,
    /// Never.
    Off,
    /// Always: an import fails (`ServerError`) when the check cannot run.
    Required,
}

impl std::str::FromStr for BootCheckMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(BootCheckMode::Auto),
            "off" => Ok(BootCheckMode::Off),
            "required" => Ok(BootCheckMode::Required),
            _ => Err(format!(
                "boot_check is {s:?}; it must be auto, off or required"
            )),
        }
    }
}

/// Settings of the boot check.
#[derive(Debug, Clone)]
pub struct BootCheckConfig {
    /// Whether to boot-check.
    pub mode: BootCheckMode,
    /// Wall-clock limit per bus with KVM.
    pub kvm_timeout: Duration,
    /// Wall-clock limit per bus with TCG.
    pub tcg_timeout: Duration,
    /// Guest memory, MiB.
    pub memory_mib: u32,
    /// The user QEMU runs as when vmie is root (`nobody` when unset).
    pub user: Option<String>,
}

impl Default for BootCheckConfig {
    fn default() -> Self {
        let l = bootcheck::Limits::default();
        BootCheckConfig {
            mode: BootCheckMode::Auto,
            kvm_timeout: l.kvm_timeout,
            tcg_timeout: l.tcg_timeout,
            memory_mib: l.memory_mib,
            user: None,
        }
    }
}

/// What Describe shows of a task's boot check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootCheckSummary {
    /// `passed`, `failed` or `not checked`.
    pub status: String,
    /// Why it failed, or why it was not made.
    pub reason: Option<String>,
    /// The bus it booted on (`virtio`, `SATA`).
    pub bus: Option<String>,
    /// Firmware.
    pub firmware: Option<String>,
    /// Accelerator.
    pub accelerator: Option<String>,
    /// Seconds the check took.
    pub seconds: Option<u64>,
    /// Whether evidence was stored (`vmie boot-evidence`).
    pub evidence: bool,
}

/// A boot check's evidence, as [`Engine::boot_evidence`] returns it.
#[derive(Debug, Clone)]
pub struct BootEvidence {
    /// The import task.
    pub task_id: String,
    /// The image it made, if it completed.
    pub image_id: Option<String>,
    /// The report: result, bus, firmware, accelerator, timings, and per bus the serial
    /// console, firmware log and screenshot.
    pub report: bootcheck::Report,
}

/// The intermediate volume as the boot check reads it.
struct VolumeSource(Arc<dyn Disk>);

impl bootcheck::DiskSource for VolumeSource {
    fn size(&self) -> u64 {
        self.0.virtual_size()
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_at(buf, offset).map_err(io::Error::other)
    }
}

fn not_checked(detail: &mut TaskDetail, why: String) {
    detail
        .warnings
        .push(format!("the image was not boot-checked: {why}"));
    detail.boot_check = Some(BootCheckSummary {
        status: "not checked".into(),
        reason: Some(why),
        ..BootCheckSummary::default()
    });
}

/// The `booting` stage: boots `disk` (the boot disk) as `report` and `detail` describe it.
/// A guest that does not boot fails the task with `ClientError: FirstBootFailure: …`.
pub(crate) fn boot_stage(
    ctx: &Ctx,
    disk: Arc<dyn Disk>,
    report: &guest::Report,
    detail: &mut TaskDetail,
    kms_key: Option<&str>,
) -> Result<(), Failure> {
    let cfg = &ctx.inner.cfg.boot_check;
    if cfg.mode == BootCheckMode::Off {
        not_checked(detail, "boot checks are off (boot_check = off)".into());
        return Ok(());
    }
    let arch_name = detail.architecture.as_deref().unwrap_or("x86_64");
    let Some(arch) = Arch::from_ec2(arch_name) else {
        not_checked(detail, format!("vmie cannot boot {arch_name} guests"));
        return Ok(());
    };
    let mode = match (arch, detail.boot_mode.as_deref()) {
        (Arch::Arm64, _) | (_, Some("uefi" | "uefi-preferred")) => BootMode::Uefi,
        _ => BootMode::LegacyBios,
    };
    if let Err(e) = bootcheck::find_tools(arch, mode) {
        let why = e.to_string();
        if cfg.mode == BootCheckMode::Required {
            return Err(Failure::Server(format!(
                "the boot check is required (boot_check = required) but cannot run: {why}"
            )));
        }
        not_checked(detail, why);
        return Ok(());
    }
    ctx.report("booting", 52)?;
    let root = report.root.and_then(|n| {
        report
            .volumes
            .iter()
            .find(|v| v.number == n)
            .map(|v| Region {
                start: v.start,
                len: v.size,
            })
    });
    let mut spec = BootSpec::new(arch, mode, ctx.inner.cfg.scratch_dir.clone(), &ctx.task.id);
    spec.root = root;
    spec.user.clone_from(&cfg.user);
    spec.limits.kvm_timeout = cfg.kvm_timeout;
    spec.limits.tcg_timeout = cfg.tcg_timeout;
    spec.limits.memory_mib = cfg.memory_mib;
    let src: Arc<dyn bootcheck::DiskSource> = Arc::new(VolumeSource(disk));
    let stop = || ctx.check().is_err();
    let r = match bootcheck::check(&spec, src, &stop) {
        Ok(r) => r,
        Err(BootError::Stopped) => {
            ctx.check()?;
            return Err(Failure::Cancelled);
        }
        Err(BootError::Unavailable(why)) if cfg.mode == BootCheckMode::Auto => {
            not_checked(detail, why);
            return Ok(());
        }
        Err(e) => {
            return Err(Failure::Server(format!(
                "the boot check could not run: {e}"
            )));
        }
    };
    let body = serde_json::to_vec(&r)
        .map_err(|e| Failure::Server(format!("encoding the boot evidence: {e}")))?;
    let caller = Caller::account_root(&ctx.task.account);
    ctx.wait(
        async {
            Ok(ctx
                .inner
                .store
                .put_sealed(&caller, kms_key, EVIDENCE_KIND, &ctx.task.id, &body)
                .await?)
        },
        None,
    )?;
    if let Some(w) = &r.warning {
        detail.warnings.push(w.clone());
    }
    detail.boot_check = Some(BootCheckSummary {
        status: if r.passed { "passed" } else { "failed" }.into(),
        reason: r.failure.clone(),
        bus: r.bus.map(|b| b.name().to_string()),
        firmware: Some(r.firmware.clone()),
        accelerator: Some(r.accelerator.clone()),
        seconds: Some(r.total_ms / 1000),
        evidence: true,
    });
    ctx.save(detail)?;
    match r.failure {
        None => Ok(()),
        Some(reason) => Err(Failure::Client(format!("FirstBootFailure: {reason}"))),
    }
}

fn no_evidence(message: String) -> EngineError {
    EngineError::Request {
        code: "InvalidParameterValue",
        message,
    }
}

impl Engine {
    /// The boot evidence of an import of `account`, by its task id (`import-ami-…`) or the
    /// image it made (`ami-…`). The caller must already be allowed to describe that task or
    /// image (the API checks `ec2:DescribeImportImageTasks` / `ec2:DescribeImages`); the
    /// evidence is opened as the account under the import's KMS key.
    pub async fn boot_evidence(
        &self,
        account: &str,
        id: &str,
    ) -> Result<BootEvidence, EngineError> {
        let cat = &self.inner.catalog;
        let task = if id.starts_with("ami-") {
            let img = cat.image(account, id).await.map_err(|e| match e {
                CatalogError::NotFound(_) => EngineError::Request {
                    code: "InvalidAMIID.NotFound",
                    message: format!("the image {:?} does not exist", request::shown(id)),
                },
                e => e.into(),
            })?;
            let tid = img.task_id.ok_or_else(|| {
                no_evidence(format!(
                    "the image {id} was not made by an import: it has no boot evidence"
                ))
            })?;
            cat.task(account, &tid).await?
        } else {
            cat.task(account, id).await.map_err(|e| match e {
                CatalogError::NotFound(_) => EngineError::Request {
                    code: "InvalidConversionTaskId",
                    message: format!("the task {:?} does not exist", request::shown(id)),
                },
                e => e.into(),
            })?
        };
        if task.kind != TaskKind::ImportImage {
            return Err(no_evidence(format!(
                "{} is not an import-image task: only imported images are boot-checked",
                task.id
            )));
        }
        let detail = TaskDetail::of(&task);
        let expired = task
            .ended_ms
            .is_some_and(|e| e < catalog::now_ms() - DESCRIBE_WINDOW_MS);
        let image_gone = match (&task.status[..], &detail.image_id) {
            (catalog::status::COMPLETED, Some(img)) => {
                matches!(
                    cat.image(account, img).await,
                    Err(CatalogError::NotFound(_))
                )
            }
            _ => false,
        };
        if (expired && task.status != catalog::status::COMPLETED) || image_gone {
            self.inner
                .store
                .delete_sealed(EVIDENCE_KIND, &task.id)
                .await?;
            return Err(no_evidence(format!(
                "the boot evidence of {} is gone with {}",
                task.id,
                if image_gone { "its image" } else { "the task" }
            )));
        }
        let caller = Caller::account_root(account);
        let body = match self
            .inner
            .store
            .get_sealed(&caller, EVIDENCE_KIND, &task.id)
            .await
        {
            Ok(b) => b,
            Err(blockstore::StoreError::NotFound(_)) => {
                let why = detail
                    .boot_check
                    .and_then(|b| b.reason.filter(|_| !b.evidence))
                    .unwrap_or_else(|| "it has not been boot-checked yet".into());
                return Err(no_evidence(format!(
                    "{} has no boot evidence: {why}",
                    task.id
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let report: bootcheck::Report = serde_json::from_slice(&body)
            .map_err(|e| EngineError::Internal(format!("the boot evidence does not parse: {e}")))?;
        Ok(BootEvidence {
            task_id: task.id.clone(),
            image_id: detail.image_id,
            report,
        })
    }

    /// Deletes the boot evidence of failed and cancelled imports that left the Describe
    /// window, and of imports whose image was deregistered; returns how many.
    pub async fn expire_boot_evidence(&self) -> Result<usize, EngineError> {
        let mut gone = 0;
        for id in self.inner.store.list_sealed(EVIDENCE_KIND).await? {
            let Ok(task) = self.inner.catalog.task_by_id(&id).await else {
                continue;
            };
            let detail = TaskDetail::of(&task);
            let expired = task.status != catalog::status::COMPLETED
                && task
                    .ended_ms
                    .is_some_and(|e| e < catalog::now_ms() - DESCRIBE_WINDOW_MS);
            let image_gone = task.status == catalog::status::COMPLETED
                && match &detail.image_id {
                    Some(img) => matches!(
                        self.inner.catalog.image(&task.account, img).await,
                        Err(CatalogError::NotFound(_))
                    ),
                    None => false,
                };
            if expired || image_gone {
                self.inner.store.delete_sealed(EVIDENCE_KIND, &id).await?;
                gone += 1;
            }
        }
        Ok(gone)
    }
}
