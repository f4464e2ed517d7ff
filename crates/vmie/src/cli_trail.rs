//! The activity log from the command line: every command that opens the deployment attaches
//! this process to it (task state changes, key usage and administrative commands are
//! recorded; `vmie serve` adds every API call), and `vmie trail verify|lookup` read it.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use clap::Subcommand;

use api::audit::Audit;
use api::trail::{TrailWriter, records, verify};

use crate::cli_store::{open_catalog, open_env};
use crate::print_json;
use crate::{CliError, EXIT_FAILED};

/// Where the activity log lives in the object store.
pub const PREFIX: &str = "trail";
/// How often queued records are written by long-running commands.
pub const FLUSH_EVERY: Duration = Duration::from_secs(5);

static AUDIT: OnceLock<Arc<Audit>> = OnceLock::new();

/// `vmie trail`.
#[derive(Debug, Subcommand)]
pub enum TrailCmd {
    /// Check the activity log: every digest's signature, the chain of each node, each
    /// batch's hash, batches no digest covers, and each node's chain against the head the
    /// catalog recorded. Names every deleted, altered, inserted or reordered file; exits 1
    /// when there is any.
    Verify {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print records (JSON, one per line, oldest batch first), optionally only those of
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
    objects: Arc<dyn object_store::ObjectStore>,
    root: &kms::RootKey,
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
            let writer =
                TrailWriter::open(objects.clone(), PREFIX, root, &node, Some(catalog.clone()))
                    .await
                    .map_err(|e| fail(format!("activity log: {e}")))?;
            let region = crate::config::var("VMIE_REGION").unwrap_or_else(|| "us-east-1".into());
            let a = Arc::new(Audit::new(Arc::new(writer), objects, PREFIX, &region));
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
                let r = verify(&env.objects, PREFIX, &env.root, Some(&catalog))
                    .await
                    .map_err(fail)?;
                if json {
                    print_json(&r)?;
                } else {
                    println!(
                        "{} digests, {} batches, {} records checked",
                        r.digests, r.batches, r.records
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
                let all = records(&env.objects, PREFIX, None).await.map_err(fail)?;
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
