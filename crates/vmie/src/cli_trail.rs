//! The activity log from the command line: `vmie trail verify|lookup` read it. Every command
//! that opens the deployment attaches this process to it (task state changes, key usage and
//! administrative commands are recorded; `vmie serve` adds every API call, and writes the
//! CloudTrail digests): see the `deployment` crate. The log's storage is the `trail` crate's.

use std::path::Path;

use clap::Subcommand;

use trail::{records, verify};

use crate::print_json;
use crate::{CliError, EXIT_FAILED};

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

/// Runs a `vmie trail` command.
pub fn run(cmd: TrailCmd, data_dir: &Path) -> Result<(), CliError> {
    let cfg = crate::cli_deploy::config(data_dir)?;
    crate::cli_deploy::block_on(crate::cli_deploy::with(&cfg, async |d| {
        let trail = d.trail().map_err(|e| crate::cli_deploy::err(&e))?;
        match cmd {
            TrailCmd::Verify { json } => {
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
    }))
}
