//! `vmie import-image`, `import-snapshot`, `export-image`, `tasks`, `cancel`, `wait`, `work`
//! and `images`: the task engine of a data folder, driven from the command line.
//!
//! Where things live (besides what `vmie snapshot` uses): the catalog
//! (`DATA/catalog.db`, or `$VMIE_CATALOG_URL`: `sqlite://PATH` or `postgres://…`), the
//! buckets (bucket `B` is the folder `DATA/buckets/B/`), and the intermediate volumes
//! (`DATA/scratch/`, mode 0700). Submitting checks the request at once and creates the task;
//! unless `--no-wait` is given the command then runs workers in this process until the task
//! ends, showing its progress. `vmie work` runs workers until it is stopped.

use std::path::Path;
use std::time::Duration;

use clap::Args;

use catalog::{Task, TaskKind, status};
use engine::{
    DiskContainer, Engine, ExportImageRequest, ExportLocation, ImportImageRequest,
    ImportSnapshotRequest, Submit, TaskDetail, UserBucket,
};

use crate::cli_remote::Remote;
use crate::print_json;
use crate::{CliError, EXIT_FAILED};

/// Options every task command shares.
#[derive(Debug, Args)]
pub struct EngineOpts {
    /// Lease on a claimed task, in seconds: a task whose worker died is taken over this long
    /// after its last heartbeat.
    #[arg(long, env = "VMIE_LEASE_SECONDS", default_value_t = 60)]
    pub lease_seconds: u64,
    /// Networks that `https://` sources may be fetched from although they are loopback,
    /// private or link-local (CIDR, repeatable), e.g. an internal mirror.
    #[arg(
        long = "url-allow",
        value_name = "CIDR",
        env = "VMIE_URL_ALLOW",
        value_delimiter = ','
    )]
    pub url_allow: Vec<ipnet::IpNet>,
    /// Extra CA certificates (PEM) trusted for `https://` sources.
    #[arg(long = "url-ca-file", value_name = "PEM", env = "VMIE_URL_CA_FILE")]
    pub url_ca_file: Option<std::path::PathBuf>,
    /// Folder of intermediate volumes (default DIR/scratch): local disk, one per process.
    #[arg(long, value_name = "DIR", env = "VMIE_SCRATCH_DIR")]
    pub scratch_dir: Option<std::path::PathBuf>,
    /// Boot-check imported images in a sandboxed QEMU (the `booting` stage): auto (when QEMU
    /// and the firmware are installed; otherwise the task records why not), off, or
    /// required (an import fails when the check cannot run).
    #[arg(
        long,
        value_name = "MODE",
        env = "VMIE_BOOT_CHECK",
        default_value = "auto"
    )]
    pub boot_check: engine::BootCheckMode,
    /// Boot-check time limit per disk bus with KVM, in seconds.
    #[arg(
        long,
        value_name = "SECS",
        env = "VMIE_BOOT_CHECK_KVM_TIMEOUT",
        default_value_t = 180
    )]
    pub boot_check_kvm_timeout: u64,
    /// Boot-check time limit per disk bus with TCG (no KVM: emulation), in seconds.
    #[arg(
        long,
        value_name = "SECS",
        env = "VMIE_BOOT_CHECK_TCG_TIMEOUT",
        default_value_t = 600
    )]
    pub boot_check_tcg_timeout: u64,
    /// Guest memory of the boot check, in MiB.
    #[arg(
        long,
        value_name = "MIB",
        env = "VMIE_BOOT_CHECK_MEMORY",
        default_value_t = 2048
    )]
    pub boot_check_memory: u32,
    /// The unprivileged user QEMU runs as when vmie runs as root (default nobody).
    #[arg(long, value_name = "USER", env = "VMIE_BOOT_CHECK_USER")]
    pub boot_check_user: Option<String>,
}

impl EngineOpts {
    /// The engine's settings for the data folder `data_dir`.
    #[must_use]
    pub fn settings(&self, data_dir: &Path) -> deployment::EngineSettings {
        deployment::EngineSettings {
            scratch_dir: scratch_dir(data_dir, self.scratch_dir.as_deref()),
            lease: Duration::from_secs(self.lease_seconds.max(1)),
            boot_check: self.boot_check(),
            url_allow: self.url_allow.clone(),
            url_ca_file: self.url_ca_file.clone(),
            bucket_keys: std::collections::BTreeMap::new(),
        }
    }

    /// The boot-check settings.
    #[must_use]
    pub fn boot_check(&self) -> engine::BootCheckConfig {
        engine::BootCheckConfig {
            mode: self.boot_check,
            kvm_timeout: Duration::from_secs(self.boot_check_kvm_timeout.max(1)),
            tcg_timeout: Duration::from_secs(self.boot_check_tcg_timeout.max(1)),
            memory_mib: self.boot_check_memory.clamp(64, 1 << 20),
            user: self.boot_check_user.clone(),
        }
    }
}

/// The intermediate-volume folder: the option, else the setting, else `DIR/scratch`.
pub fn scratch_dir(data_dir: &Path, opt: Option<&Path>) -> std::path::PathBuf {
    opt.map(Path::to_path_buf)
        .or_else(|| crate::config::var("VMIE_SCRATCH_DIR").map(Into::into))
        .unwrap_or_else(|| data_dir.join("scratch"))
}

/// Where client commands send their requests.
#[derive(Debug, Args)]
pub struct RemoteOpts {
    /// Send the command to this API endpoint (a running `vmie serve`) instead of working on
    /// the data folder; credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, region
    /// from AWS_REGION / AWS_DEFAULT_REGION (default us-east-1).
    #[arg(long, env = "VMIE_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
    /// CA bundle (PEM) that signed the endpoint's certificate, e.g. DIR/tls/cert.pem.
    #[arg(long, env = "AWS_CA_BUNDLE", value_name = "PEM")]
    pub ca_bundle: Option<std::path::PathBuf>,
}

impl RemoteOpts {
    /// The API client, when `--endpoint-url` is given.
    pub(crate) fn remote(&self) -> Result<Option<Remote>, CliError> {
        let Some(ep) = &self.endpoint_url else {
            return Ok(None);
        };
        let region = std::env::var("AWS_REGION")
            .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|_| "us-east-1".into());
        Remote::new(ep, &region, self.ca_bundle.as_deref()).map(Some)
    }
}

/// Prints a task the API described and fails unless it completed.
fn remote_ended(t: &crate::cli_remote::RemoteTask, json: bool) -> Result<(), CliError> {
    if json {
        print_json(t)?;
    } else {
        println!("{}", t.id);
        if let Some(m) = &t.made {
            println!("{m}");
        }
    }
    if t.status == "completed" {
        Ok(())
    } else {
        Err(CliError {
            message: format!("{} ended {}: {}", t.id, t.status, t.message),
            exit: EXIT_FAILED,
        })
    }
}

async fn remote_submitted(
    r: &Remote,
    id: String,
    no_wait: bool,
    json: bool,
) -> Result<(), CliError> {
    if no_wait {
        if json {
            return print_json(&serde_json::json!({ "TaskId": id }));
        }
        println!("{id}");
        return Ok(());
    }
    let t = r.wait(&id).await?;
    remote_ended(&t, json)
}

/// Where a disk comes from.
#[derive(Debug, Args)]
pub struct SourceOpts {
    /// Bucket holding the image (`--key`).
    #[arg(long, requires = "key")]
    pub bucket: Option<String>,
    /// Key of the image in `--bucket` (repeat for more disks of one image, boot disk first).
    #[arg(long)]
    pub key: Vec<String>,
    /// `s3://bucket/key` or `https://…` (a presigned URL, say) instead of bucket and key.
    #[arg(long, conflicts_with = "bucket")]
    pub url: Vec<String>,
    /// Format of the image (OVA, VMDK, VHD, VHDX, RAW, QCOW2, VDI); checked against the content.
    #[arg(long)]
    pub format: Option<String>,
}

impl SourceOpts {
    fn containers(&self) -> Vec<DiskContainer> {
        let base = DiskContainer {
            format: self.format.clone(),
            ..DiskContainer::default()
        };
        match &self.bucket {
            Some(b) => self
                .key
                .iter()
                .map(|k| DiskContainer {
                    user_bucket: Some(UserBucket {
                        s3_bucket: b.clone(),
                        s3_key: k.clone(),
                    }),
                    ..base.clone()
                })
                .collect(),
            None => self
                .url
                .iter()
                .map(|u| DiskContainer {
                    url: Some(u.clone()),
                    ..base.clone()
                })
                .collect(),
        }
    }
}

/// What to do after submitting.
#[derive(Debug, Args)]
pub struct SubmitOpts {
    /// Return once the task is created (print its id) instead of running it to the end.
    #[arg(long)]
    pub no_wait: bool,
    /// Idempotency token: submitting again with it returns the same task.
    #[arg(long)]
    pub client_token: Option<String>,
    /// Print the task as JSON.
    #[arg(long)]
    pub json: bool,
    /// Encrypt under `--kms-key-id` (or the account's default key).
    #[arg(long)]
    pub encrypted: bool,
    /// KMS key id, ARN or alias (needs `--encrypted`).
    #[arg(long)]
    pub kms_key_id: Option<String>,
    /// Description.
    #[arg(long)]
    pub description: Option<String>,
}

/// `vmie import-image`.
#[derive(Debug, Args)]
pub struct ImportImageArgs {
    #[command(flatten)]
    source: SourceOpts,
    #[command(flatten)]
    submit: SubmitOpts,
    /// `Linux` or `Windows`; given, a disk whose OS is not identified is still imported.
    #[arg(long)]
    platform: Option<String>,
    /// `x86_64`, `i386` or `arm64` (default: what inspection finds).
    #[arg(long)]
    architecture: Option<String>,
    /// `legacy-bios`, `uefi` or `uefi-preferred` (default: what inspection finds).
    #[arg(long)]
    boot_mode: Option<String>,
    /// `AWS` or `BYOL`.
    #[arg(long)]
    license_type: Option<String>,
    #[command(flatten)]
    engine: EngineOpts,
    #[command(flatten)]
    remote: RemoteOpts,
}

/// `vmie import-snapshot`.
#[derive(Debug, Args)]
pub struct ImportSnapshotArgs {
    #[command(flatten)]
    source: SourceOpts,
    #[command(flatten)]
    submit: SubmitOpts,
    #[command(flatten)]
    engine: EngineOpts,
    #[command(flatten)]
    remote: RemoteOpts,
}

/// `vmie export-image`.
#[derive(Debug, Args)]
pub struct ExportImageArgs {
    /// The image (`ami-…`).
    #[arg(long)]
    image_id: String,
    /// VMDK, VHD, RAW, VHDX, QCOW2 or OVA.
    #[arg(long = "disk-image-format")]
    format: String,
    /// Bucket to write to.
    #[arg(long)]
    bucket: String,
    /// Prefix of the key: the file is `<prefix><export-task-id>.<ext>`.
    #[arg(long)]
    prefix: Option<String>,
    /// Return once the task is created.
    #[arg(long)]
    no_wait: bool,
    /// Idempotency token.
    #[arg(long)]
    client_token: Option<String>,
    /// Print the task as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    engine: EngineOpts,
    #[command(flatten)]
    remote: RemoteOpts,
}

fn err(e: impl std::fmt::Display) -> CliError {
    CliError {
        message: e.to_string(),
        exit: EXIT_FAILED,
    }
}

pub fn engine_err(e: &engine::EngineError) -> CliError {
    CliError {
        message: format!("{}: {e}", e.code()),
        exit: EXIT_FAILED,
    }
}

/// The data folder's deployment with the engine `o` describes, attached to the activity log
/// as `node` (default: this process's own name, see [`crate::cli_deploy::cli_node`]).
pub fn engine_config(
    data_dir: &Path,
    o: &EngineOpts,
    node: Option<String>,
) -> Result<deployment::Config, CliError> {
    let mut cfg = crate::cli_deploy::config(data_dir)?;
    let mut settings = o.settings(data_dir);
    settings.bucket_keys = bucket_keys(crate::config::var("VMIE_BUCKET_KEYS").as_deref())?;
    cfg.engine = Some(settings);
    cfg.node = Some(node.unwrap_or_else(crate::cli_deploy::cli_node));
    Ok(cfg)
}

/// Runs `f` on the engine of the data folder (catalog, snapshot store, buckets,
/// intermediate volumes), then writes the activity records it queued.
pub async fn with_engine<T>(
    data_dir: &Path,
    o: &EngineOpts,
    f: impl AsyncFnOnce(&Engine) -> Result<T, CliError>,
) -> Result<T, CliError> {
    let cfg = engine_config(data_dir, o, None)?;
    crate::cli_deploy::with(&cfg, async |d| match d.engine() {
        Some(e) => f(e).await,
        None => Err(err("the deployment was opened without its engine")),
    })
    .await
}

fn print_task(t: &Task, json: bool) -> Result<(), CliError> {
    if json {
        return print_json(&task_json(t));
    }
    println!("{}", t.id);
    Ok(())
}

fn task_json(t: &Task) -> serde_json::Value {
    serde_json::json!({
        "TaskId": t.id,
        "Kind": t.kind.as_str(),
        "Status": t.status,
        "StatusMessage": t.status_message,
        "Progress": t.progress.to_string(),
        "Detail": TaskDetail::of(t),
    })
}

/// Prepares the intermediate-volume folder and destroys, and reports, volumes a crashed
/// process left. Call before workers start.
pub fn startup(e: &Engine) -> Result<(), CliError> {
    let gone = e.startup().map_err(|x| engine_err(&x))?;
    if !gone.is_empty() {
        eprintln!(
            "vmie: destroyed {} intermediate volume(s) left by a process that did not end cleanly: {}",
            gone.len(),
            gone.join(", ")
        );
    }
    Ok(())
}

/// Runs workers in this process until `id` ends; shows its progress.
async fn wait_for(e: &Engine, id: &str) -> Result<Task, CliError> {
    startup(e)?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let workers = {
        let e = e.clone();
        tokio::spawn(async move { e.run_workers(1, rx).await })
    };
    let bar = crate::progress::percent_bar();
    let mut last = String::new();
    let t = loop {
        let t = e
            .catalog()
            .task(&crate::cli_deploy::account(), id)
            .await
            .map_err(err)?;
        let line = format!("{} {}", t.status_message, t.progress);
        if let Some(b) = &bar {
            b.set_position(u64::try_from(t.progress).unwrap_or(0));
            b.set_message(t.status_message.clone());
        } else if line != last {
            eprintln!("{id}: {} ({}%)", t.status_message, t.progress);
        }
        last = line;
        if t.ended() {
            break t;
        }
        // Progress every 200 ms; the end as soon as the worker reaches it.
        tokio::select! {
            () = e.task_ended() => {}
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let _ = tx.send(true);
    let _ = workers.await;
    Ok(t)
}

async fn submitted(e: &Engine, t: Task, no_wait: bool, json: bool) -> Result<(), CliError> {
    if no_wait {
        return print_task(&t, json);
    }
    let t = wait_for(e, &t.id).await?;
    if json {
        print_json(&task_json(&t))?;
    } else {
        println!("{}", t.id);
        let d = TaskDetail::of(&t);
        if let Some(i) = &d.image_id
            && t.kind == TaskKind::ImportImage
        {
            println!("{i}");
        }
        for s in d.disks.iter().filter_map(|d| d.snapshot_id.as_ref()) {
            println!("{s}");
        }
        if let Some(x) = &d.export {
            println!("s3://{}/{}", x.s3_bucket, x.s3_key);
        }
    }
    if t.status == status::COMPLETED {
        Ok(())
    } else {
        Err(CliError {
            message: format!("{} ended {}: {}", t.id, t.status, t.status_message),
            exit: EXIT_FAILED,
        })
    }
}

fn submit_of(o: &SubmitOpts) -> Submit {
    Submit {
        account: crate::cli_deploy::account(),
        task_id: None,
        client_token: o.client_token.clone(),
        tags: Vec::new(),
    }
}

/// `vmie import-image`.
pub fn import_image(a: ImportImageArgs, data_dir: &Path) -> Result<(), CliError> {
    crate::cli_deploy::block_on(async {
        let req = ImportImageRequest {
            architecture: a.architecture,
            boot_mode: a.boot_mode,
            description: a.submit.description.clone(),
            disk_containers: a.source.containers(),
            encrypted: a.submit.encrypted.then_some(true),
            kms_key_id: a.submit.kms_key_id.clone(),
            license_type: a.license_type,
            platform: a.platform,
            role_name: None,
            ..ImportImageRequest::default()
        };
        if let Some(r) = a.remote.remote()? {
            let id = r
                .import_image(&req, a.submit.client_token.as_deref())
                .await?;
            return remote_submitted(&r, id, a.submit.no_wait, a.submit.json).await;
        }
        with_engine(data_dir, &a.engine, async |e| {
            let t = e
                .import_image(submit_of(&a.submit), req)
                .await
                .map_err(|x| engine_err(&x))?;
            submitted(e, t, a.submit.no_wait, a.submit.json).await
        })
        .await
    })
}

/// `vmie import-snapshot`.
pub fn import_snapshot(a: ImportSnapshotArgs, data_dir: &Path) -> Result<(), CliError> {
    crate::cli_deploy::block_on(async {
        let mut cs = a.source.containers();
        if cs.len() != 1 {
            return Err(err(
                "import-snapshot takes one disk: one --key or one --url",
            ));
        }
        let req = ImportSnapshotRequest {
            description: a.submit.description.clone(),
            disk_container: cs.remove(0),
            encrypted: a.submit.encrypted.then_some(true),
            kms_key_id: a.submit.kms_key_id.clone(),
            role_name: None,
            ..ImportSnapshotRequest::default()
        };
        if let Some(r) = a.remote.remote()? {
            let id = r
                .import_snapshot(&req, a.submit.client_token.as_deref())
                .await?;
            return remote_submitted(&r, id, a.submit.no_wait, a.submit.json).await;
        }
        with_engine(data_dir, &a.engine, async |e| {
            let t = e
                .import_snapshot(submit_of(&a.submit), req)
                .await
                .map_err(|x| engine_err(&x))?;
            submitted(e, t, a.submit.no_wait, a.submit.json).await
        })
        .await
    })
}

/// `vmie export-image`.
pub fn export_image(a: ExportImageArgs, data_dir: &Path) -> Result<(), CliError> {
    crate::cli_deploy::block_on(async {
        let req = ExportImageRequest {
            image_id: a.image_id,
            disk_image_format: a.format,
            s3_export_location: ExportLocation {
                s3_bucket: a.bucket,
                s3_prefix: a.prefix,
            },
            description: None,
            role_name: None,
        };
        if let Some(r) = a.remote.remote()? {
            let id = r.export_image(&req, a.client_token.as_deref()).await?;
            return remote_submitted(&r, id, a.no_wait, a.json).await;
        }
        with_engine(data_dir, &a.engine, async |e| {
            let sub = Submit {
                account: crate::cli_deploy::account(),
                task_id: None,
                client_token: a.client_token,
                tags: Vec::new(),
            };
            let t = e.export_image(sub, req).await.map_err(|x| engine_err(&x))?;
            submitted(e, t, a.no_wait, a.json).await
        })
        .await
    })
}

/// `vmie tasks`: every task of the last 7 days.
pub fn tasks(json: bool, o: &EngineOpts, r: &RemoteOpts, data_dir: &Path) -> Result<(), CliError> {
    crate::cli_deploy::block_on(async {
        if let Some(r) = r.remote()? {
            let all = r.tasks(None).await?;
            if json {
                return print_json(&all);
            }
            println!("{:<29} {:<10} {:>4}%  STATUS MESSAGE", "TASK", "STATUS", "");
            for t in &all {
                let p = t.progress.clone().unwrap_or_else(|| {
                    if t.status == "completed" {
                        "100".into()
                    } else {
                        "-".into()
                    }
                });
                println!("{:<29} {:<10} {:>4}%  {}", t.id, t.status, p, t.message);
            }
            return Ok(());
        }
        with_engine(data_dir, o, async |e| {
            let mut all = Vec::new();
            for k in [
                TaskKind::ImportImage,
                TaskKind::ImportSnapshot,
                TaskKind::ExportImage,
            ] {
                all.extend(
                    e.describe(&crate::cli_deploy::account(), k, &[])
                        .await
                        .map_err(|x| engine_err(&x))?,
                );
            }
            all.sort_by_key(|t| t.created_ms);
            if json {
                return print_json(&all.iter().map(task_json).collect::<Vec<_>>());
            }
            println!("{:<29} {:<10} {:>4}%  STATUS MESSAGE", "TASK", "STATUS", "");
            for t in &all {
                println!(
                    "{:<29} {:<10} {:>4}%  {}",
                    t.id, t.status, t.progress, t.status_message
                );
            }
            Ok(())
        })
        .await
    })
}

/// `vmie cancel TASK`.
pub fn cancel(id: &str, o: &EngineOpts, r: &RemoteOpts, data_dir: &Path) -> Result<(), CliError> {
    crate::cli_deploy::block_on(async {
        if let Some(r) = r.remote()? {
            println!("{id} {}", r.cancel(id).await?);
            return Ok(());
        }
        with_engine(data_dir, o, async |e| {
            let t = e
                .cancel(&crate::cli_deploy::account(), id)
                .await
                .map_err(|x| engine_err(&x))?;
            println!("{} {}", t.id, t.status);
            Ok(())
        })
        .await
    })
}

/// `vmie wait TASK`.
pub fn wait(
    id: &str,
    json: bool,
    o: &EngineOpts,
    r: &RemoteOpts,
    data_dir: &Path,
) -> Result<(), CliError> {
    crate::cli_deploy::block_on(async {
        if let Some(r) = r.remote()? {
            let t = r.wait(id).await?;
            return remote_ended(&t, json);
        }
        with_engine(data_dir, o, async |e| {
            let t = e
                .catalog()
                .task(&crate::cli_deploy::account(), id)
                .await
                .map_err(err)?;
            submitted(e, t, false, json).await
        })
        .await
    })
}

/// `vmie work`: workers until SIGINT or SIGTERM.
pub fn work(workers: usize, o: &EngineOpts, data_dir: &Path) -> Result<(), CliError> {
    crate::cli_deploy::block_on(async {
        with_engine(data_dir, o, async |e| {
            startup(e)?;
            let (tx, rx) = tokio::sync::watch::channel(false);
            let run = {
                let e = e.clone();
                tokio::spawn(async move { e.run_workers(workers, rx).await })
            };
            eprintln!("vmie: {workers} worker(s) running; stop with Ctrl-C or SIGTERM");
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .map_err(err)?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            eprintln!("vmie: stopping; tasks in progress are taken over after their lease");
            let _ = tx.send(true);
            let _ = run.await;
            Ok(())
        })
        .await
    })
}

/// `vmie images`.
pub fn images(json: bool, o: &EngineOpts, data_dir: &Path) -> Result<(), CliError> {
    crate::cli_deploy::block_on(async {
        with_engine(data_dir, o, async |e| {
            let list = e
                .catalog()
                .images(&crate::cli_deploy::account())
                .await
                .map_err(err)?;
            if json {
                let v: Vec<_> = list
                    .iter()
                    .map(|i| {
                        serde_json::json!({
                            "ImageId": i.id, "Name": i.name, "Architecture": i.architecture,
                            "Platform": i.platform, "BootMode": i.boot_mode,
                            "BlockDeviceMappings": i.block_devices, "Encrypted": i.encrypted,
                            "KmsKeyId": i.kms_key_id, "State": i.state, "TaskId": i.task_id,
                        })
                    })
                    .collect();
                return print_json(&v);
            }
            println!(
                "{:<22} {:<8} {:<8} {:<15} SNAPSHOTS",
                "IMAGE", "PLATFORM", "ARCH", "BOOT"
            );
            for i in &list {
                let snaps: Vec<&str> = i
                    .block_devices
                    .iter()
                    .map(|b| b.snapshot_id.as_str())
                    .collect();
                println!(
                    "{:<22} {:<8} {:<8} {:<15} {}",
                    i.id,
                    i.platform,
                    i.architecture,
                    i.boot_mode.as_deref().unwrap_or("-"),
                    snaps.join(",")
                );
            }
            Ok(())
        })
        .await
    })
}

/// The buckets kept encrypted at rest (`bucket_keys`): `BUCKET=KEY` or `BUCKET` (the default
/// key), comma-separated.
pub fn bucket_keys(
    spec: Option<&str>,
) -> Result<std::collections::BTreeMap<String, String>, CliError> {
    let mut out = std::collections::BTreeMap::new();
    for entry in spec.unwrap_or_default().split(',').map(str::trim) {
        if entry.is_empty() {
            continue;
        }
        let (bucket, key) = entry.split_once('=').unwrap_or((entry, ""));
        let bucket = bucket.trim();
        engine::request::check_bucket("bucket_keys", bucket).map_err(|e| {
            err(format!(
                "bucket_keys: {e} (each entry is BUCKET=KMS-KEY or BUCKET)"
            ))
        })?;
        out.insert(bucket.to_string(), key.trim().to_string());
    }
    Ok(out)
}
