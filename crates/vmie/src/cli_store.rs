//! `vmie snapshot …` and `vmie kms …`: the snapshot store and key service of a deployment,
//! driven directly (operators, scripts, benchmarks). Where they live: see
//! [`crate::cli_deploy`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use blockstore::PutRequest;
use clap::Subcommand;
use deployment::Deployment;
use kms::CreateKey;
use tokio::runtime::Runtime;

use crate::progress::Progress;
use crate::{CliError, EXIT_FAILED, input_format, print_json};

/// `vmie snapshot` subcommands.
#[derive(Debug, Subcommand)]
pub enum SnapshotCmd {
    /// Store an image as an encrypted, deduplicated snapshot.
    ///
    /// The image is detected and passes the safety inspection first; zero ranges are skipped;
    /// chunks are compressed and encrypted under a fresh data key wrapped by the KMS key
    /// (default: alias/aws/ebs). The snapshot becomes visible only when complete.
    Create {
        /// Show progress on standard error.
        #[arg(short = 'p', long)]
        progress: bool,
        /// Input format, checked against the content.
        #[arg(short = 'f', long = "format", value_parser = input_format())]
        input_format: Option<diskfmt::Format>,
        /// KMS key id, ARN or alias (default alias/aws/ebs).
        #[arg(long)]
        kms_key_id: Option<String>,
        /// An earlier snapshot of the same disk: unchanged chunks are reused from it.
        #[arg(long)]
        parent: Option<String>,
        /// Snapshot id to use (default: a fresh snap-…).
        #[arg(long)]
        snapshot_id: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// The image.
        image: PathBuf,
    },
    /// List committed snapshots.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a snapshot out as a sparse raw disk.
    Export {
        /// Show progress on standard error.
        #[arg(short = 'p', long)]
        progress: bool,
        /// Flush the output to stable storage before renaming it into place.
        #[arg(long)]
        sync: bool,
        /// Snapshot id.
        snapshot: String,
        /// Output file.
        output: PathBuf,
    },
    /// Re-read and authenticate every chunk of a snapshot. Exits 1 on any failure.
    Verify {
        /// Snapshot id.
        snapshot: String,
    },
    /// Delete a snapshot (its chunks go at the next gc unless others share them).
    Delete {
        /// Snapshot id.
        snapshot: String,
    },
    /// Remove manifests no catalog row owns (snapshots a task stored but never recorded),
    /// then chunks and keys no snapshot references, and what crashed writers left.
    Gc {
        /// Leave objects younger than this alone (seconds).
        #[arg(long, default_value_t = 3600)]
        grace_seconds: u64,
    },
}

/// `vmie kms` subcommands. Output is JSON, like `aws kms`.
#[derive(Debug, Subcommand)]
pub enum KmsCmd {
    /// Create a customer key (AES-256).
    CreateKey {
        /// Description.
        #[arg(long, default_value = "")]
        description: String,
        /// Key policy document (JSON file); default: the account may use the key.
        #[arg(long)]
        policy_file: Option<PathBuf>,
        /// Rotate automatically every year.
        #[arg(long)]
        enable_rotation: bool,
    },
    /// List keys.
    ListKeys,
    /// Describe a key.
    DescribeKey {
        /// Key id, ARN or alias.
        key_id: String,
    },
    /// Point an alias at a key.
    CreateAlias {
        /// alias/NAME.
        alias: String,
        /// Key id, ARN or alias.
        key_id: String,
    },
    /// List aliases.
    ListAliases,
    /// Enable a key.
    EnableKey {
        /// Key id, ARN or alias.
        key_id: String,
    },
    /// Disable a key: snapshots under it cannot be read until it is enabled.
    DisableKey {
        /// Key id, ARN or alias.
        key_id: String,
    },
    /// Schedule deletion after a waiting period of 7 to 30 days.
    ScheduleKeyDeletion {
        /// Key id, ARN or alias.
        key_id: String,
        /// Days to wait.
        #[arg(long, default_value_t = 30)]
        pending_window_in_days: u32,
    },
    /// Cancel a scheduled deletion (the key comes back disabled).
    CancelKeyDeletion {
        /// Key id, ARN or alias.
        key_id: String,
    },
    /// Turn on automatic rotation.
    EnableKeyRotation {
        /// Key id, ARN or alias.
        key_id: String,
        /// Days between rotations (90 to 2560).
        #[arg(long)]
        rotation_period_in_days: Option<u32>,
    },
    /// Rotate a key now; old versions stay for decryption.
    RotateKeyOnDemand {
        /// Key id, ARN or alias.
        key_id: String,
    },
    /// Run due rotations and deletions.
    Maintenance,
}

pub(crate) fn store_err(e: blockstore::StoreError) -> CliError {
    crate::cli_deploy::err(&deployment::DeploymentError::Store(e))
}

fn kms_err(e: kms::KmsError) -> CliError {
    crate::cli_deploy::err(&deployment::DeploymentError::Kms(e))
}

/// Runs `f` on the data folder's deployment (store and keys, no engine) with this process
/// attached to the activity log (key usage is recorded), then writes the records it queued.
fn with_store<T>(
    data_dir: &Path,
    f: impl FnOnce(&Runtime, &Deployment) -> Result<T, CliError>,
) -> Result<T, CliError> {
    let rt = crate::cli_deploy::runtime()?;
    let mut cfg = crate::cli_deploy::config(data_dir)?;
    cfg.node = Some(crate::cli_deploy::cli_node());
    let d = rt.block_on(crate::cli_deploy::open(&cfg))?;
    let r = f(&rt, &d);
    rt.block_on(crate::cli_deploy::flush(&d));
    r
}

/// Runs a `vmie snapshot` command.
pub fn run_snapshot(
    cmd: SnapshotCmd,
    data_dir: &Path,
    limits: &diskfmt::Limits,
) -> Result<(), CliError> {
    with_store(data_dir, |rt, d| snapshot_cmd(cmd, rt, d, limits))
}

/// The values of `vmie snapshot create`.
struct SnapshotCreate {
    progress: bool,
    input_format: Option<diskfmt::Format>,
    kms_key_id: Option<String>,
    parent: Option<String>,
    snapshot_id: Option<String>,
    json: bool,
    image: PathBuf,
}

/// `vmie snapshot create`: decodes an image straight into the store.
fn snapshot_create(
    rt: &Runtime,
    env: &Deployment,
    limits: &diskfmt::Limits,
    c: SnapshotCreate,
) -> Result<(), CliError> {
    let SnapshotCreate {
        progress,
        input_format,
        kms_key_id,
        parent,
        snapshot_id,
        json,
        image,
    } = c;
    let src = Arc::new(diskfmt::FileSource::open(&image)?);
    let disk: Arc<dyn diskfmt::Disk> = Arc::from(diskfmt::open_with(src, input_format, limits)?);
    let total = diskfmt::allocated_bytes(disk.as_ref())?;
    let done = Arc::new(AtomicU64::new(0));
    let ticker = Progress::start(progress, total, done.clone());
    let req = PutRequest {
        snapshot_id: snapshot_id.unwrap_or_else(blockstore::new_snapshot_id),
        kms_key: kms_key_id,
        parent,
        caller: env.caller.clone(),
    };
    let result = rt.block_on(env.store.put(disk, req, Some(done)));
    ticker.finish();
    let s = result.map_err(store_err)?;
    if json {
        print_json(&s)?;
    } else {
        println!("{}", s.snapshot_id);
        eprintln!(
            "stored {} of data in {} chunks; {} new bytes written (key {})",
            crate::human::size(s.data_bytes),
            s.chunks,
            crate::human::size(s.added_bytes),
            s.kms_key_id
        );
    }
    Ok(())
}

/// `vmie snapshot list`.
fn snapshot_list(rt: &Runtime, env: &Deployment, json: bool) -> Result<(), CliError> {
    let list = rt.block_on(env.store.list()).map_err(store_err)?;
    if json {
        return print_json(&list);
    }
    println!(
        "{:<24} {:>12} {:>12} {:>12}  KMS KEY",
        "SNAPSHOT", "SIZE", "DATA", "ADDED"
    );
    for s in list {
        println!(
            "{:<24} {:>12} {:>12} {:>12}  {}",
            s.snapshot_id,
            crate::human::size(s.volume_size),
            crate::human::size(s.data_bytes),
            crate::human::size(s.added_bytes),
            s.kms_key_id
        );
    }
    Ok(())
}

/// `vmie snapshot verify`: every chunk read back and authenticated.
fn snapshot_verify(rt: &Runtime, env: &Deployment, snapshot: &str) -> Result<(), CliError> {
    let report = rt
        .block_on(env.store.verify(&env.caller, snapshot))
        .map_err(store_err)?;
    for (idx, why) in &report.failures {
        eprintln!("chunk {idx}: {why}");
    }
    if report.failures.is_empty() {
        println!("{snapshot}: {} chunks verified", report.chunks_checked);
        Ok(())
    } else {
        Err(CliError {
            message: format!(
                "{snapshot}: {} of {} chunks failed verification",
                report.failures.len(),
                report.chunks_checked
            ),
            exit: EXIT_FAILED,
        })
    }
}

fn snapshot_cmd(
    cmd: SnapshotCmd,
    rt: &Runtime,
    env: &Deployment,
    limits: &diskfmt::Limits,
) -> Result<(), CliError> {
    match cmd {
        SnapshotCmd::Create {
            progress,
            input_format,
            kms_key_id,
            parent,
            snapshot_id,
            json,
            image,
        } => snapshot_create(
            rt,
            env,
            limits,
            SnapshotCreate {
                progress,
                input_format,
                kms_key_id,
                parent,
                snapshot_id,
                json,
                image,
            },
        ),
        SnapshotCmd::List { json } => snapshot_list(rt, env, json),
        SnapshotCmd::Export {
            progress,
            sync,
            snapshot,
            output,
        } => {
            let reader = rt
                .block_on(env.store.open(&env.caller, &snapshot))
                .map_err(store_err)?;
            let disk = Arc::new(reader).blocking(rt.handle().clone());
            crate::cli_convert::write_raw(&disk, &output, progress, None, sync)
        }
        SnapshotCmd::Verify { snapshot } => snapshot_verify(rt, env, &snapshot),
        SnapshotCmd::Delete { snapshot } => {
            // The API's rule: a snapshot an image uses is not deleted.
            rt.block_on(async {
                engine::resources::delete_snapshot(
                    &env.catalog,
                    &env.store,
                    &env.caller.account,
                    &snapshot,
                    true,
                )
                .await
                .map_err(|e| CliError {
                    message: format!("{}: {e}", e.code()),
                    exit: EXIT_FAILED,
                })
            })?;
            println!("{snapshot} deleted");
            Ok(())
        }
        SnapshotCmd::Gc { grace_seconds } => {
            let grace = std::time::Duration::from_secs(grace_seconds);
            let r = rt
                .block_on(engine::gc::collect(&env.catalog, &env.store, grace))
                .map_err(|e| crate::cli_deploy::err(&e.into()))?;
            print_json(&r)
        }
    }
}

/// Runs a `vmie kms` command.
pub fn run_kms(cmd: KmsCmd, data_dir: &Path) -> Result<(), CliError> {
    with_store(data_dir, |rt, d| kms_cmd(cmd, rt, d))
}

fn kms_cmd(cmd: KmsCmd, rt: &Runtime, env: &Deployment) -> Result<(), CliError> {
    let (kms, who) = (&env.kms, &env.caller);
    let meta = match cmd {
        KmsCmd::CreateKey {
            description,
            policy_file,
            enable_rotation,
        } => {
            let policy = match policy_file {
                Some(p) => Some(std::fs::read_to_string(&p).map_err(|e| {
                    crate::cli_convert::fail(&format!("cannot read {}", p.display()), &e)
                })?),
                None => None,
            };
            rt.block_on(kms.create_key(
                who,
                CreateKey {
                    description,
                    policy,
                    rotation: enable_rotation,
                },
            ))
        }
        KmsCmd::ListKeys => return print_json(&rt.block_on(kms.list_keys()).map_err(kms_err)?),
        KmsCmd::ListAliases => {
            let list: Vec<_> = rt
                .block_on(kms.list_aliases())
                .map_err(kms_err)?
                .into_iter()
                .map(|(alias, key)| serde_json::json!({"AliasName": alias, "TargetKeyId": key}))
                .collect();
            return print_json(&list);
        }
        KmsCmd::DescribeKey { key_id } => rt.block_on(kms.describe_key(who, &key_id)),
        KmsCmd::CreateAlias { alias, key_id } => {
            rt.block_on(kms.create_alias(who, &alias, &key_id))
                .map_err(kms_err)?;
            return Ok(());
        }
        KmsCmd::EnableKey { key_id } => rt.block_on(kms.enable_key(who, &key_id)),
        KmsCmd::DisableKey { key_id } => rt.block_on(kms.disable_key(who, &key_id)),
        KmsCmd::ScheduleKeyDeletion {
            key_id,
            pending_window_in_days,
        } => rt.block_on(kms.schedule_key_deletion(who, &key_id, pending_window_in_days)),
        KmsCmd::CancelKeyDeletion { key_id } => rt.block_on(kms.cancel_key_deletion(who, &key_id)),
        KmsCmd::EnableKeyRotation {
            key_id,
            rotation_period_in_days,
        } => rt.block_on(kms.enable_key_rotation(who, &key_id, rotation_period_in_days)),
        KmsCmd::RotateKeyOnDemand { key_id } => rt.block_on(kms.rotate_key_on_demand(who, &key_id)),
        KmsCmd::Maintenance => {
            let m = rt.block_on(kms.run_maintenance()).map_err(kms_err)?;
            return print_json(&serde_json::json!({"Rotated": m.rotated, "Deleted": m.deleted}));
        }
    };
    print_json(&meta.map_err(kms_err)?)
}
