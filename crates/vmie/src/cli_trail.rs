//! The activity log from the command line: every command that opens the deployment attaches
//! this process to it (task state changes, key usage and administrative commands are
//! recorded; `vmie serve` adds every API call, and writes the CloudTrail digests), and
//! `vmie trail verify|lookup` read it. The log's storage is the `trail` crate's.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use clap::Subcommand;

use api::audit::Audit;
use trail::{Bucket, Trail, TrailConfig, TrailWriter, records, verify};

use crate::cli_store::{open_catalog, open_env};
use crate::print_json;
use crate::{CliError, EXIT_FAILED};

/// Where the activity log lives in the object store.
pub const PREFIX: &str = "trail";
/// How often queued records are written by long-running commands.
pub const FLUSH_EVERY: Duration = Duration::from_secs(5);

static AUDIT: OnceLock<Arc<Audit>> = OnceLock::new();
/// `vmie serve --trail-digest-interval`, when given.
static DIGEST_INTERVAL: OnceLock<u64> = OnceLock::new();

/// Sets the digest period of this process's trail (before it is opened).
pub fn set_digest_interval(seconds: u64) {
    let _ = DIGEST_INTERVAL.set(seconds);
}

fn seconds_setting(name: &str, default: u64) -> Result<u64, CliError> {
    match crate::config::var(name) {
        None => Ok(default),
        Some(v) => v.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
            fail(format!(
                "{name} is {v:?}; it must be a positive whole number"
            ))
        }),
    }
}

/// The deployment's trail: the log and digest files in the trail bucket (`trail.bucket`,
/// default `trail`: with local buckets the folder `DIR/buckets/trail`, made if missing;
/// with `buckets = s3` that bucket of the S3 service), keys and node chains under `trail/`
/// in the object store.
pub fn open_trail(
    data_dir: &Path,
    objects: Arc<dyn object_store::ObjectStore>,
    root: &Arc<kms::RootKey>,
    catalog: &catalog::Catalog,
) -> Result<Arc<Trail>, CliError> {
    let name =
        crate::config::var("VMIE_TRAIL_BUCKET").unwrap_or_else(|| trail::DEFAULT_BUCKET.into());
    if engine::request::check_bucket("trail.bucket", &name).is_err() {
        return Err(fail(format!("trail.bucket is {name:?}: not a bucket name")));
    }
    let bucket = match crate::config::var("VMIE_BUCKETS").as_deref() {
        Some("s3") => {
            let cfg = crate::cli_store::s3_settings()
                .ok_or_else(|| fail("buckets = s3 needs the S3 service: set s3.bucket (VMIE_S3_BUCKET) and s3.endpoint"))?;
            let store = blockstore::Backend::S3(blockstore::S3Config {
                bucket: name.clone(),
                ..cfg
            })
            .open()
            .map_err(crate::cli_store::store_err)?;
            Bucket::s3(&name, store)
        }
        _ => Bucket::local(&data_dir.join("buckets"), &name).map_err(fail)?,
    };
    let interval = match DIGEST_INTERVAL.get() {
        Some(s) => *s,
        None => seconds_setting("VMIE_TRAIL_DIGEST_INTERVAL", 3600)?,
    };
    let rotation_days = seconds_setting("VMIE_TRAIL_KEY_ROTATION_DAYS", 30)?;
    let trail_name =
        crate::config::var("VMIE_TRAIL_NAME").unwrap_or_else(|| trail::DEFAULT_NAME.into());
    if trail_name.is_empty()
        || trail_name.len() > 128
        || !trail_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(fail(format!(
            "trail.name is {trail_name:?}: letters, digits, '-', '_' and '.' only, at most 128"
        )));
    }
    let cfg = TrailConfig {
        name: trail_name,
        region: crate::config::var("VMIE_REGION").unwrap_or_else(|| "us-east-1".into()),
        account: crate::cli_tasks::account(),
        digest_interval_ms: i64::try_from(interval.saturating_mul(1000)).unwrap_or(i64::MAX),
        key_rotation_ms: i64::try_from(rotation_days.saturating_mul(86_400_000))
            .unwrap_or(i64::MAX),
    };
    Ok(Arc::new(Trail::new(
        objects,
        PREFIX,
        bucket,
        root.clone(),
        Some(catalog.clone()),
        cfg,
    )))
}

/// `vmie trail`.
#[derive(Debug, Subcommand)]
pub enum TrailCmd {
    /// Check the activity log: every node digest's signature, the chain of each node, each
    /// log file's (and old batch's) hash, files no digest covers, each node's chain against
    /// the head the catalog recorded, and each account's CloudTrail digests (signatures,
    /// links, the hashes they name, the newest against the catalog). Names every deleted,
    /// altered, inserted or reordered file; exits 1 when there is any.
    Verify {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print records (JSON, one per line, oldest file first), optionally only those of
    /// one event name or request id.
    Lookup {
        /// Only records with this `eventName`.
        #[arg(long)]
        event_name: Option<String>,
        /// Only the record of this `requestID`.
        #[arg(long)]
        request_id: Option<String>,
    },
}

fn fail(e: impl std::fmt::Display) -> CliError {
    CliError {
        message: e.to_string(),
        exit: EXIT_FAILED,
    }
}

/// This machine's name, for default node names.
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "vmie".into())
}

/// A node name made only of characters safe in an object path.
pub fn node_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(100)
        .collect()
}

/// Attaches this process to the deployment's activity log as `node` (default: a name of
/// its own, `cli-<host>-<pid>`); the engine's task events and the key service's key uses
/// are recorded from now on. Once per process.
pub async fn attach(
    data_dir: &Path,
    objects: Arc<dyn object_store::ObjectStore>,
    root: &Arc<kms::RootKey>,
    catalog: &catalog::Catalog,
    kms: &kms::Kms,
    engine: Option<&engine::Engine>,
    node: Option<&str>,
) -> Result<Arc<Audit>, CliError> {
    let audit = match AUDIT.get() {
        Some(a) => a.clone(),
        None => {
            let node = node_name(
                &node
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("cli-{}-{}", hostname(), std::process::id())),
            );
            let trail = open_trail(data_dir, objects, root, catalog)?;
            let region = trail.config().region.clone();
            let writer = TrailWriter::open(trail, &node)
                .await
                .map_err(|e| fail(format!("activity log: {e}")))?;
            let a = Arc::new(Audit::new(Arc::new(writer), &region));
            AUDIT.get_or_init(|| a).clone()
        }
    };
    let a = audit.clone();
    kms.set_observer(kms::Observer(Arc::new(move |u| a.key_use(u))));
    if let Some(e) = engine {
        let a = audit.clone();
        e.set_event_hook(engine::EventHook(Arc::new(move |ev| a.task_event(ev))));
    }
    Ok(audit)
}

/// The process's activity log, when attached.
pub fn current() -> Option<Arc<Audit>> {
    AUDIT.get().cloned()
}

/// Writes what this process queued (at the end of every command, and periodically in long
/// ones). A failure is reported, not fatal: the command's own work is done.
pub async fn flush() {
    if let Some(a) = AUDIT.get()
        && let Err(e) = a.flush().await
    {
        eprintln!("vmie: warning: activity log not written: {e}");
    }
}

/// Runs `f` on a fresh runtime, then writes the activity records it queued.
pub fn block_on<T>(f: impl Future<Output = Result<T, CliError>>) -> Result<T, CliError> {
    crate::cli_store::runtime()?.block_on(async {
        let r = f.await;
        flush().await;
        r
    })
}

/// Runs a `vmie trail` command.
pub fn run(cmd: TrailCmd, data_dir: &Path) -> Result<(), CliError> {
    block_on(async {
        let env = open_env(data_dir)?;
        match cmd {
            TrailCmd::Verify { json } => {
                let catalog = open_catalog(data_dir).await?;
                let trail = open_trail(data_dir, env.objects.clone(), &env.root, &catalog)?;
                let r = verify(&trail).await.map_err(fail)?;
                if json {
                    print_json(&r)?;
                } else {
                    println!(
                        "{} digests, {} batches, {} records checked; {} CloudTrail digest files",
                        r.digests, r.batches, r.records, r.cloudtrail_digests
                    );
                    for p in &r.problems {
                        println!("PROBLEM {p}");
                    }
                }
                if r.problems.is_empty() {
                    if !json {
                        println!("the activity log is intact");
                    }
                    Ok(())
                } else {
                    Err(fail(format!(
                        "the activity log failed verification: {} problem(s)",
                        r.problems.len()
                    )))
                }
            }
            TrailCmd::Lookup {
                event_name,
                request_id,
            } => {
                let catalog = open_catalog(data_dir).await?;
                let trail = open_trail(data_dir, env.objects.clone(), &env.root, &catalog)?;
                let all = records(&trail, None).await.map_err(fail)?;
                for r in all {
                    if event_name
                        .as_ref()
                        .is_some_and(|n| r["eventName"] != n.as_str())
                        || request_id
                            .as_ref()
                            .is_some_and(|n| r["requestID"] != n.as_str())
                    {
                        continue;
                    }
                    println!("{r}");
                }
                Ok(())
            }
        }
    })
}
