//! `vmie boot-evidence`: what the boot check of an import saw.

use std::path::{Path, PathBuf};

use clap::Args;

use crate::CliError;
use crate::cli_deploy::account;
use crate::cli_tasks::{EngineOpts, RemoteOpts, engine_err, with_engine};

/// `vmie boot-evidence` arguments.
#[derive(Debug, Args)]
pub struct BootEvidenceArgs {
    /// The import task (`import-ami-…`) or the image it made (`ami-…`).
    pub id: String,
    /// Folder to write into (created if needed): console.log (the serial console),
    /// screen.png (the screen at success or at the moment of failure), firmware.log,
    /// evidence.json (result, bus, firmware, accelerator, timings), and the same files
    /// prefixed `attempt-N-BUS-` for each other bus tried.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    #[command(flatten)]
    pub engine: EngineOpts,
    #[command(flatten)]
    pub remote: RemoteOpts,
}

fn write(dir: &Path, name: &str, data: &[u8]) -> Result<(), CliError> {
    let p = dir.join(name);
    std::fs::write(&p, data).map_err(|e| CliError {
        message: format!("{}: {e}", p.display()),
        exit: crate::EXIT_FAILED,
    })
}

/// Writes the evidence files of `a` with `prefix`.
fn write_attempt(dir: &Path, prefix: &str, a: &bootcheck::Attempt) -> Result<(), CliError> {
    write(dir, &format!("{prefix}console.log"), a.console.as_bytes())?;
    write(
        dir,
        &format!("{prefix}firmware.log"),
        a.firmware_log.as_bytes(),
    )?;
    if let Some(p) = &a.screen_png {
        write(dir, &format!("{prefix}screen.png"), p)?;
    }
    Ok(())
}

/// `vmie boot-evidence ID --out DIR`.
pub fn run(a: &BootEvidenceArgs, data_dir: &Path) -> Result<(), CliError> {
    crate::cli_deploy::block_on(async {
        // From a running server (as any caller allowed to describe the image or task), or
        // from the data folder.
        let (task_id, image_id, report) = match a.remote.remote()? {
            Some(r) => r.boot_evidence(&a.id).await?,
            None => {
                let ev = with_engine(data_dir, &a.engine, async |e| {
                    e.boot_evidence(&account(), &a.id)
                        .await
                        .map_err(|x| engine_err(&x))
                })
                .await?;
                (ev.task_id, ev.image_id, ev.report)
            }
        };
        std::fs::create_dir_all(&a.out).map_err(|x| CliError {
            message: format!("{}: {x}", a.out.display()),
            exit: crate::EXIT_FAILED,
        })?;
        let r = &report;
        let deciding = r.deciding();
        for (i, at) in r.attempts.iter().enumerate() {
            if deciding.is_some_and(|d| std::ptr::eq(d, at)) {
                write_attempt(&a.out, "", at)?;
            } else {
                write_attempt(
                    &a.out,
                    &format!("attempt-{}-{}-", i + 1, at.bus.name().to_lowercase()),
                    at,
                )?;
            }
        }
        let summary = serde_json::json!({
            "TaskId": task_id,
            "ImageId": image_id,
            "Passed": r.passed,
            "Failure": r.failure,
            "Warning": r.warning,
            "Bus": r.bus.map(bootcheck::Bus::name),
            "Firmware": r.firmware,
            "Accelerator": r.accelerator,
            "Qemu": r.qemu,
            "Architecture": r.arch,
            "BootMode": r.boot_mode,
            "LimitSeconds": r.limit_secs,
            "TotalMs": r.total_ms,
            "Attempts": r.attempts.iter().map(|at| serde_json::json!({
                "Bus": at.bus.name(),
                "Outcome": at.outcome,
                "ElapsedMs": at.elapsed_ms,
                "FirstRootWriteMs": at.first_root_write_ms,
                "Resets": at.resets,
                "BytesWritten": at.bytes_written,
                "Screenshot": at.screen_png.is_some(),
                "QemuLog": at.qemu_log,
            })).collect::<Vec<_>>(),
        });
        let text = serde_json::to_string_pretty(&summary).unwrap_or_default();
        write(&a.out, "evidence.json", text.as_bytes())?;
        let verdict = match (&r.failure, &r.warning) {
            (Some(f), _) => format!("failed: {f}"),
            (None, Some(w)) => format!(
                "passed on {} ({w})",
                r.bus.map_or("?", bootcheck::Bus::name)
            ),
            (None, None) => format!("passed on {}", r.bus.map_or("?", bootcheck::Bus::name)),
        };
        println!("{task_id}: boot check {verdict}");
        println!(
            "firmware {}, accelerator {}, {:.1} s; evidence in {}",
            r.firmware,
            r.accelerator,
            Duration::from_millis(r.total_ms).as_secs_f64(),
            a.out.display()
        );
        Ok(())
    })
}

use std::time::Duration;
