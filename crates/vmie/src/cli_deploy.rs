//! The deployment of the data folder, as the command line opens it: the settings (flags, the
//! environment, the configuration file) become a [`deployment::Config`], and every command
//! that works on the data folder opens it with [`deployment::Deployment::open`] and writes
//! the activity records it queued before it ends ([`with`]).
//!
//! Where things live: the data folder (`--data-dir`, `$VMIE_DATA`, default `./vmie-data`)
//! holds the root key (`root.key`, created mode 0600 on first use, unless `$VMIE_ROOT_KEY`
//! gives it) and, by default, the object store (`objects/`). With `$VMIE_S3_BUCKET` set, objects
//! go to an S3-compatible service instead: `$VMIE_S3_ENDPOINT`, `$VMIE_S3_REGION`,
//! `$VMIE_S3_PATH_STYLE` (default on when an endpoint is given), `$VMIE_S3_ALLOW_HTTP` (loopback
//! test servers only) and the usual `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`.

use std::path::Path;
use std::time::Duration;

use blockstore::S3Config;
use deployment::{BucketPlace, Config, Deployment, DeploymentError, TrailSettings};

use crate::config;
use crate::{CliError, EXIT_FAILED};

/// How often queued activity records are written by long-running commands.
pub const FLUSH_EVERY: Duration = Duration::from_secs(5);

fn fail(e: impl std::fmt::Display) -> CliError {
    CliError {
        message: e.to_string(),
        exit: EXIT_FAILED,
    }
}

/// A deployment that did not open, as the command line reports it.
pub fn err(e: &DeploymentError) -> CliError {
    fail(e)
}

/// The account the data folder's commands act in (`$VMIE_ACCOUNT_ID`).
pub fn account() -> String {
    config::var("VMIE_ACCOUNT_ID").unwrap_or_else(|| "000000000000".into())
}

/// The S3 service of the deployment (`s3.*` settings), when `s3.bucket` is set.
pub fn s3_settings() -> Option<S3Config> {
    let bucket = config::var("VMIE_S3_BUCKET")?;
    let endpoint = config::var("VMIE_S3_ENDPOINT");
    Some(S3Config {
        bucket,
        region: config::var("VMIE_S3_REGION").unwrap_or_else(|| "us-east-1".into()),
        path_style: config::flag("VMIE_S3_PATH_STYLE").unwrap_or(endpoint.is_some()),
        allow_http: config::flag("VMIE_S3_ALLOW_HTTP").unwrap_or(false),
        endpoint,
        access_key_id: config::var("VMIE_S3_ACCESS_KEY_ID"),
        secret_access_key: config::var("VMIE_S3_SECRET_ACCESS_KEY"),
        ..S3Config::default()
    })
}

fn seconds_setting(name: &str, default: u64) -> Result<u64, CliError> {
    match config::var(name) {
        None => Ok(default),
        Some(v) => v.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
            fail(format!(
                "{name} is {v:?}; it must be a positive whole number"
            ))
        }),
    }
}

/// The activity log's settings (`trail.*`).
fn trail_settings() -> Result<TrailSettings, CliError> {
    let interval = seconds_setting("VMIE_TRAIL_DIGEST_INTERVAL", 3600)?;
    let rotation_days = seconds_setting("VMIE_TRAIL_KEY_ROTATION_DAYS", 30)?;
    Ok(TrailSettings {
        bucket: config::var("VMIE_TRAIL_BUCKET").unwrap_or_else(|| trail::DEFAULT_BUCKET.into()),
        name: config::var("VMIE_TRAIL_NAME").unwrap_or_else(|| trail::DEFAULT_NAME.into()),
        digest_interval: Duration::from_secs(interval),
        key_rotation: Duration::from_secs(rotation_days.saturating_mul(86_400)),
    })
}

/// The deployment of `data_dir` as the settings describe it: no engine, not attached to the
/// activity log. The data folder is made private now (and a folder that was not is named).
pub fn config(data_dir: &Path) -> Result<Config, CliError> {
    if let Some(mode) = deployment::private_dir(data_dir).map_err(|e| err(&e))? {
        eprintln!(
            "vmie: {} was mode {mode:04o}; made it 0700 (only this user may read the data folder)",
            data_dir.display()
        );
    }
    let buckets = match config::var("VMIE_BUCKETS").as_deref() {
        None | Some("local") => BucketPlace::Local,
        Some("s3") => BucketPlace::S3,
        Some(other) => return Err(fail(format!("buckets is {other}; it must be local or s3"))),
    };
    Ok(Config {
        data_dir: data_dir.to_path_buf(),
        region: config::var("VMIE_REGION").unwrap_or_else(|| "us-east-1".into()),
        account: account(),
        catalog_url: config::var("VMIE_CATALOG_URL"),
        root_key_file: config::var("VMIE_ROOT_KEY_FILE").map(Into::into),
        s3: s3_settings(),
        buckets,
        trail: trail_settings()?,
        engine: None,
        node: None,
        snapshot_zstd_level: zstd_level()?,
    })
}

/// The zstd level of snapshot chunks (`snapshot_zstd_level`): 1 to 19, or -1 to -7 (zstd's
/// fast levels).
fn zstd_level() -> Result<i32, CliError> {
    let Some(v) = config::var("VMIE_SNAPSHOT_ZSTD_LEVEL") else {
        return Ok(blockstore::StoreOptions::default().zstd_level);
    };
    v.trim()
        .parse::<i32>()
        .ok()
        .filter(|l| (1..=19).contains(l) || (-7..=-1).contains(l))
        .ok_or_else(|| {
            fail(format!(
                "snapshot_zstd_level is {v:?}; it must be 1 to 19, or -1 to -7 (faster, larger)"
            ))
        })
}

/// The node name of a command-line process in the activity log: `cli-<host>-<pid>`.
pub fn cli_node() -> String {
    format!("cli-{}-{}", deployment::hostname(), std::process::id())
}

/// Opens the deployment `cfg` describes.
pub async fn open(cfg: &Config) -> Result<Deployment, CliError> {
    Deployment::open(cfg).await.map_err(|e| err(&e))
}

/// Writes what the deployment queued for the activity log. A failure is reported, not
/// fatal: the command's own work is done.
pub async fn flush(d: &Deployment) {
    if let Err(e) = d.flush().await {
        eprintln!("vmie: warning: activity log not written: {e}");
    }
}

/// Opens `cfg`'s deployment, runs `f` on it, then writes the activity records it queued
/// (also when `f` failed: a refused command is recorded too).
pub async fn with<T>(
    cfg: &Config,
    f: impl AsyncFnOnce(&Deployment) -> Result<T, CliError>,
) -> Result<T, CliError> {
    let d = open(cfg).await?;
    let r = f(&d).await;
    flush(&d).await;
    r
}

/// A fresh async runtime for one command.
pub fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| crate::cli_convert::fail("cannot start the async runtime", &e))
}

/// Runs `f` on a fresh runtime.
pub fn block_on<T>(f: impl Future<Output = Result<T, CliError>>) -> Result<T, CliError> {
    runtime()?.block_on(f)
}
