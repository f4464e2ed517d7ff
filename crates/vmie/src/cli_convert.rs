//! `vmie convert`.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use diskfmt::write::{TempOutputs, WriteOptions};
use diskfmt::write_image;
use diskfmt::{FileSource, Format, Limits};

use crate::progress::Progress;
use crate::{CliError, EXIT_FAILED};

/// Arguments of `vmie convert`.
pub struct Args<'a> {
    /// Input image.
    pub input: &'a Path,
    /// Output file.
    pub output: &'a Path,
    /// Input format named by the caller.
    pub input_format: Option<Format>,
    /// Show a progress bar.
    pub progress: bool,
    /// Worker threads.
    pub threads: Option<usize>,
    /// Flush the output to stable storage before renaming it into place.
    pub sync: bool,
    /// Output format.
    pub output_format: Format,
    /// `-o key=value,…` options of the output format.
    pub options: Option<&'a str>,
    /// Limits on untrusted numbers.
    pub limits: &'a Limits,
    /// Disk of an OVA input (1-based).
    pub disk: usize,
}

/// Removes the temporary output unless disarmed.
struct TempOutput {
    path: PathBuf,
    armed: bool,
}

impl Drop for TempOutput {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

pub(crate) fn fail(context: &str, e: &std::io::Error) -> CliError {
    CliError {
        message: format!("{context}: {e}"),
        exit: EXIT_FAILED,
    }
}

/// Converts `args.input` to a sparse raw `args.output`.
pub fn run(args: &Args<'_>) -> Result<(), CliError> {
    let src: diskfmt::Source = Arc::new(FileSource::open(args.input)?);
    // Detection and the whole safety inspection happen here, before OUT is touched.
    let disk = if args.input_format.is_none() && diskfmt::detect(&*src)?.format == Format::Ova {
        open_ova_disk(src, args)?
    } else {
        diskfmt::open_with(src, args.input_format, args.limits)?
    };

    if let (Ok(a), Ok(b)) = (args.input.canonicalize(), args.output.canonicalize())
        && a == b
    {
        return Err(CliError {
            message: "input and output are the same file".into(),
            exit: EXIT_FAILED,
        });
    }
    let mut opts = parse_options(args.options)?;
    if let Some(t) = args.threads {
        opts.threads = t.max(1);
    }
    opts.name = args
        .output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    opts.temp = Some(TempOutputs::files_in(
        args.output
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
    ));
    write_output(
        &*disk,
        args.output,
        args.output_format,
        &opts,
        args.progress,
        args.sync,
    )
}

/// Opens disk `args.disk` of an OVA after checking its manifest (every digest, read once).
fn open_ova_disk(
    src: diskfmt::Source,
    args: &Args<'_>,
) -> Result<Box<dyn diskfmt::Disk>, CliError> {
    let a = diskfmt::ova::Appliance::open(src, args.limits)?;
    for w in &a.warnings {
        eprintln!("vmie: warning: {w}");
    }
    if a.manifest.is_some() {
        let total: u64 = a.members.iter().map(|m| m.size).sum();
        let done = Arc::new(AtomicU64::new(0));
        let ticker = Progress::start(args.progress, total, Arc::clone(&done));
        let r = a.verify(&done);
        ticker.finish();
        r?;
    }
    if args.disk == 0 || args.disk > a.disks.len() {
        return Err(CliError {
            message: format!(
                "the appliance has {} disk(s); --disk takes 1 to {}",
                a.disks.len(),
                a.disks.len()
            ),
            exit: crate::EXIT_USAGE,
        });
    }
    Ok(a.open_disk(args.disk - 1, args.limits)?)
}

/// Parses `-o key=value,…`: `subformat`, `compression`, `adapter_type`, `cpus`, `memory`,
/// `os_type`.
pub fn parse_options(text: Option<&str>) -> Result<WriteOptions, CliError> {
    let mut opts = WriteOptions::default();
    let usage = |m: String| CliError {
        message: m,
        exit: crate::EXIT_USAGE,
    };
    for item in text.unwrap_or("").split(',').filter(|i| !i.is_empty()) {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| usage(format!("option {item:?} is not key=value")))?;
        match k {
            "subformat" => opts.subformat = Some(v.to_string()),
            "compression" | "compression_type" => opts.compression = Some(v.to_string()),
            "adapter_type" => opts.adapter_type = Some(v.to_string()),
            "cpus" => {
                opts.cpus = Some(
                    v.parse()
                        .ok()
                        .filter(|&c| (1..=768).contains(&c))
                        .ok_or_else(|| usage(format!("cpus={v:?}: give 1 to 768")))?,
                );
            }
            "memory" => {
                opts.memory_mib = Some(
                    v.parse()
                        .ok()
                        .filter(|&m| (4..=(24u64 << 20)).contains(&m))
                        .ok_or_else(|| usage(format!("memory={v:?}: give MiB, 4 to 25165824")))?,
                );
            }
            "os_type" => {
                if v.is_empty()
                    || v.len() > 64
                    || !v
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    return Err(usage(format!(
                        "os_type={v:?}: a VMware guest id such as otherGuest64 or ubuntu64Guest"
                    )));
                }
                opts.os_type = Some(v.to_string());
            }
            _ => {
                return Err(usage(format!(
                    "unknown option {k:?}; known: subformat, compression, adapter_type, cpus, memory, os_type"
                )));
            }
        }
    }
    Ok(opts)
}

/// Writes `disk` as a sparse raw file at `output` (see [`write_output`]).
pub fn write_raw(
    disk: &dyn diskfmt::Disk,
    output: &Path,
    progress: bool,
    threads: Option<usize>,
    sync: bool,
) -> Result<(), CliError> {
    let mut opts = WriteOptions::default();
    if let Some(t) = threads {
        opts.threads = t.max(1);
    }
    write_output(disk, output, Format::Raw, &opts, progress, sync)
}

/// Writes `disk` in `format` at `output`: into a private temporary file beside it, renamed
/// into place only when complete (a failure leaves `output` untouched).
pub fn write_output(
    disk: &dyn diskfmt::Disk,
    output: &Path,
    format: Format,
    opts: &WriteOptions,
    progress: bool,
    sync: bool,
) -> Result<(), CliError> {
    let name = output
        .file_name()
        .ok_or_else(|| CliError {
            message: format!("{} is not a file name", output.display()),
            exit: EXIT_FAILED,
        })?
        .to_string_lossy()
        .into_owned();
    let tmp_path = output.with_file_name(format!(".{name}.{}.partial", std::process::id()));
    let out: File = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp_path)
        .map_err(|e| fail(&format!("cannot create {}", tmp_path.display()), &e))?;
    let mut guard = TempOutput {
        path: tmp_path.clone(),
        armed: true,
    };

    let done = Arc::new(AtomicU64::new(0));
    let ticker = Progress::start(progress, disk.virtual_size(), Arc::clone(&done));
    let result = write_image(disk, &out, format, opts, &done);
    ticker.finish();
    result?;
    if sync {
        out.sync_all()
            .map_err(|e| fail(&format!("cannot flush {}", tmp_path.display()), &e))?;
    }
    drop(out);
    std::fs::rename(&tmp_path, output).map_err(|e| {
        fail(
            &format!("cannot move the output into {}", output.display()),
            &e,
        )
    })?;
    guard.armed = false;
    Ok(())
}
