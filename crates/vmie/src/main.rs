//! # vmie — command-line tool
//!
//! `vmie info` and `vmie convert` work offline on image files; `vmie snapshot` and `vmie kms`
//! drive the encrypted snapshot store and key service of a data folder; `vmie import-image`,
//! `import-snapshot`, `export-image`, `tasks`, `cancel`, `wait`, `work` and `images` drive its
//! task engine. Start reading at [`Command`].

mod cli_admin;
mod cli_boot;
mod cli_compliance;
mod cli_convert;
mod cli_deploy;
mod cli_info;
mod cli_inspect;
mod cli_remote;
mod cli_serve;
mod cli_store;
mod cli_tasks;
mod cli_trail;
mod config;
mod human;
mod progress;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand};

/// Exit code: the image was refused by the safety inspection or is not a valid image.
pub const EXIT_REFUSED: u8 = 3;
/// Exit code: any other failure (I/O, output).
pub const EXIT_FAILED: u8 = 1;
/// Exit code: the command line is wrong.
pub const EXIT_USAGE: u8 = 2;

/// vmie: self-hosted VM Import/Export.
#[derive(Debug, Parser)]
#[command(name = "vmie", version, about, long_about = None)]
#[command(
    after_help = "Exit status: 0 success, 1 failure (I/O, output), 2 usage error, \
3 image refused by the safety inspection or not a valid image."
)]
struct Cli {
    /// Data folder of the deployment (root key, local object store).
    #[arg(long, global = true, env = "VMIE_DATA", default_value = "vmie-data")]
    data_dir: PathBuf,
    /// Configuration file (TOML; see docs/config.md): its values are the defaults that the
    /// environment and flags override.
    #[arg(long, global = true, env = "VMIE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// `-f`: the formats the registry reads as one disk, with their aliases (`vpc` for vhd).
pub fn input_format() -> impl TypedValueParser<Value = diskfmt::Format> {
    format_parser(diskfmt::registry::readable().map(|e| (e, e.description)))
}

/// `-O`: the formats the registry writes.
fn output_format() -> impl TypedValueParser<Value = diskfmt::Format> {
    format_parser(
        diskfmt::registry::writable().filter_map(|e| e.writer.map(|w| (e, w.description()))),
    )
}

/// A value parser over registry rows: each row's name (and aliases) with its help line.
fn format_parser<'a>(
    rows: impl Iterator<Item = (&'a diskfmt::registry::Entry, &'static str)>,
) -> impl TypedValueParser<Value = diskfmt::Format> {
    let values: Vec<PossibleValue> = rows
        .map(|(e, help)| {
            PossibleValue::new(e.name)
                .help(help)
                .aliases(e.aliases.iter().copied())
        })
        .collect();
    PossibleValuesParser::new(values).try_map(|name: String| {
        diskfmt::Format::from_name(&name).ok_or_else(|| format!("unknown format {name:?}"))
    })
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show an image's format, sizes and safety verdict (like `qemu-img info`).
    ///
    /// The format is detected from the content, never from the file name. The safety
    /// inspection parses every header and table without reading the payload; a refused image
    /// prints its reason and exits with status 3. For an OVA: the appliance (machine, OS,
    /// hardware, disks) and the inspection of each disk; the manifest is checked by
    /// `vmie convert`.
    Info {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// The image.
        file: PathBuf,
    },
    /// Inspect the guest inside an image: partitions, filesystems, operating system,
    /// version, architecture, kernels and boot mode (what an import validates).
    ///
    /// Reads through any supported format in place, without converting it first. Prints
    /// warnings in plain words: "no operating system found", "no bootloader found", "root
    /// filesystem is encrypted".
    Inspect {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Which disk of an OVA to inspect (1 = the first).
        #[arg(long, default_value_t = 1)]
        disk: usize,
        /// The image.
        file: PathBuf,
    },
    /// Convert an image to another format.
    ///
    /// The input is detected and inspected before anything is written; a refused input leaves
    /// OUT untouched. The output is written to a temporary file beside OUT and renamed into
    /// place only when complete.
    Convert {
        /// Show a progress bar on standard error.
        #[arg(short = 'p', long)]
        progress: bool,
        /// Input format. Checked against the content: naming the wrong format is an error.
        #[arg(short = 'f', long = "format", value_parser = input_format())]
        input_format: Option<diskfmt::Format>,
        /// Output format.
        #[arg(short = 'O', long = "output-format", value_parser = output_format(), default_value = "raw")]
        output_format: diskfmt::Format,
        /// Output options, `key=value,…`: `subformat=` (vhd: dynamic|fixed), `compression=`
        /// (qcow2: zlib|zstd), `adapter_type=` (vmdk, ova: ide|lsilogic|buslogic|legacyESX),
        /// `cpus=`, `memory=` (MiB), `os_type=` (ova: what the OVF declares).
        #[arg(short = 'o', long = "options")]
        options: Option<String>,
        /// Which disk of an OVA input to convert (1 = the first of its disk section).
        #[arg(long, default_value_t = 1)]
        disk: usize,
        /// Worker threads (default: one per core).
        #[arg(long)]
        threads: Option<usize>,
        /// Flush the output to stable storage before renaming it into place (like
        /// `qemu-img convert -t writeback`; by default, as qemu-img, the page cache writes it
        /// back later).
        #[arg(long)]
        sync: bool,
        /// Input image.
        input: PathBuf,
        /// Output file.
        output: PathBuf,
    },
    /// Encrypted snapshots: create from an image, list, export, verify, delete, gc.
    #[command(subcommand)]
    Snapshot(cli_store::SnapshotCmd),
    /// Keys: create, alias, enable/disable, rotate, schedule deletion.
    #[command(subcommand)]
    Kms(cli_store::KmsCmd),
    /// Import a disk image from a bucket or URL as a machine image (ami-…).
    ///
    /// The request is checked at once (object present, format as declared, size, KMS key).
    /// The task then fetches the image, checks and decodes it into an encrypted intermediate
    /// volume, inspects the guest (OS, architecture, boot mode), stores encrypted snapshots
    /// and registers the image; the boot disk is booted once in a sandboxed QEMU first (see
    /// --boot-check). Stages: pending, converting, validating, booting, updating, preparing
    /// ami, completed. Without --no-wait, workers run in this process until it ends.
    ImportImage(cli_tasks::ImportImageArgs),
    /// Import a disk image as an encrypted snapshot (snap-…), without guest checks.
    ImportSnapshot(cli_tasks::ImportSnapshotArgs),
    /// Export a machine image to a bucket as VMDK, VHD, RAW, VHDX, QCOW2 or OVA.
    ExportImage(cli_tasks::ExportImageArgs),
    /// List the tasks of the last 7 days.
    Tasks {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        engine: cli_tasks::EngineOpts,
        #[command(flatten)]
        remote: cli_tasks::RemoteOpts,
    },
    /// Cancel a task: it becomes `deleting`, then `deleted` with nothing left behind.
    Cancel {
        /// Task id.
        task: String,
        #[command(flatten)]
        engine: cli_tasks::EngineOpts,
        #[command(flatten)]
        remote: cli_tasks::RemoteOpts,
    },
    /// Run workers in this process until a task ends, with its progress.
    Wait {
        /// Task id.
        task: String,
        /// Print the task as JSON when it ends.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        engine: cli_tasks::EngineOpts,
        #[command(flatten)]
        remote: cli_tasks::RemoteOpts,
    },
    /// Run task workers until stopped (SIGINT, SIGTERM). Destroys intermediate volumes a
    /// crashed process left, first.
    Work {
        /// Workers (tasks run at once).
        #[arg(long, env = "VMIE_WORKERS", default_value_t = 2)]
        workers: usize,
        #[command(flatten)]
        engine: cli_tasks::EngineOpts,
    },
    /// Serve the EC2-compatible API (HTTPS) and run task workers.
    ///
    /// First start: a self-signed certificate in DIR/tls/, a user `admin` with full access
    /// (its access key printed once) and the service role `vmimport`.
    Serve(cli_serve::ServeArgs),
    /// Users, access keys, policies and roles of the deployment.
    #[command(subcommand)]
    Admin(cli_admin::AdminCmd),
    /// The activity log: verify its integrity, print its records.
    #[command(subcommand)]
    Trail(cli_trail::TrailCmd),
    /// Check the deployment against its security controls (TLS, encryption by default,
    /// activity log intact, root key file, MFA for administrators, unused access keys, key
    /// rotation, orphaned intermediate volumes); prints each with its remedy and exits 1
    /// when any fails.
    Compliance(cli_compliance::ComplianceArgs),
    /// Write what the boot check of an import saw: console.log, screen.png, firmware.log and
    /// evidence.json (result, bus, firmware, accelerator, timings) into a folder.
    ///
    /// ID is the import task (import-ami-…) or the image it made (ami-…). Evidence is kept
    /// with the image, or with a failed task for the 7 days it stays visible.
    BootEvidence(cli_boot::BootEvidenceArgs),
    /// List machine images.
    Images {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        engine: cli_tasks::EngineOpts,
    },
}

/// Service logs on standard error: `RUST_LOG` filters (default: warnings, and info for
/// `serve` and `work`). Free-form fields, secrets and URL query strings are never logged.
fn service_log(command: &Command) {
    let default = if matches!(command, Command::Serve(_) | Command::Work { .. }) {
        "info"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Err(e) = config::load(&args) {
        eprintln!("vmie: {}", e.message);
        return ExitCode::from(e.exit);
    }
    let matches = config::apply(<Cli as clap::CommandFactory>::command()).get_matches_from(args);
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    service_log(&cli.command);
    // Whatever the data folder gets (catalog and its log, keys, certificate, buckets files
    // vmie writes, activity log) is readable by this user only, whatever the umask; the
    // offline image commands leave their output files to the caller's umask.
    if !matches!(
        cli.command,
        Command::Info { .. } | Command::Inspect { .. } | Command::Convert { .. }
    ) {
        rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    }
    let limits = diskfmt::Limits::default();
    let result = match cli.command {
        Command::Info { json, file } => cli_info::run(&file, json, &limits),
        Command::Inspect { json, disk, file } => cli_inspect::run(&file, json, disk, &limits),
        Command::Convert {
            progress,
            input_format,
            output_format,
            options,
            threads,
            sync,
            disk,
            input,
            output,
        } => cli_convert::run(&cli_convert::Args {
            disk,
            input: &input,
            output: &output,
            input_format,
            progress,
            threads,
            sync,
            output_format,
            options: options.as_deref(),
            limits: &limits,
        }),
        Command::Snapshot(cmd) => cli_store::run_snapshot(cmd, &cli.data_dir, &limits),
        Command::Kms(cmd) => cli_store::run_kms(cmd, &cli.data_dir),
        Command::ImportImage(a) => cli_tasks::import_image(a, &cli.data_dir),
        Command::ImportSnapshot(a) => cli_tasks::import_snapshot(a, &cli.data_dir),
        Command::ExportImage(a) => cli_tasks::export_image(a, &cli.data_dir),
        Command::Tasks {
            json,
            engine,
            remote,
        } => cli_tasks::tasks(json, &engine, &remote, &cli.data_dir),
        Command::Cancel {
            task,
            engine,
            remote,
        } => cli_tasks::cancel(&task, &engine, &remote, &cli.data_dir),
        Command::Wait {
            task,
            json,
            engine,
            remote,
        } => cli_tasks::wait(&task, json, &engine, &remote, &cli.data_dir),
        Command::Work { workers, engine } => cli_tasks::work(workers, &engine, &cli.data_dir),
        Command::Admin(cmd) => cli_admin::run(cmd, &cli.data_dir),
        Command::Serve(a) => cli_serve::run(
            a,
            &cli.data_dir,
            cli_compliance::Controls::of(&cli.data_dir),
        ),
        Command::Trail(cmd) => cli_trail::run(cmd, &cli.data_dir),
        Command::Compliance(a) => cli_compliance::run(&a, &cli.data_dir),
        Command::Images { json, engine } => cli_tasks::images(json, &engine, &cli.data_dir),
        Command::BootEvidence(a) => cli_boot::run(&a, &cli.data_dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmie: {}", e.message);
            ExitCode::from(e.exit)
        }
    }
}

/// A failure of a command: what to print and which exit status to use.
#[derive(Debug)]
pub struct CliError {
    /// The message.
    pub message: String,
    /// The exit status.
    pub exit: u8,
}

impl From<diskfmt::DiskError> for CliError {
    fn from(e: diskfmt::DiskError) -> Self {
        let exit = match e {
            diskfmt::DiskError::Io { .. } => EXIT_FAILED,
            _ => EXIT_REFUSED,
        };
        let mut message = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            message.push_str(": ");
            message.push_str(&s.to_string());
            src = s.source();
        }
        CliError { message, exit }
    }
}

/// Prints `v` as indented JSON on standard output.
pub(crate) fn print_json(v: &impl serde::Serialize) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(v).map_err(|e| CliError {
        message: format!("cannot encode JSON: {e}"),
        exit: EXIT_FAILED,
    })?;
    println!("{text}");
    Ok(())
}
