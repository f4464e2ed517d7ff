//! `vmie convert`.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use diskfmt::convert::{ConvertOptions, convert_to_raw};
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
    /// Limits on untrusted numbers.
    pub limits: &'a Limits,
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
    let src = Arc::new(FileSource::open(args.input)?);
    // Detection and the whole safety inspection happen here, before OUT is touched.
    let disk = diskfmt::open_with(src, args.input_format, args.limits)?;

    if let (Ok(a), Ok(b)) = (args.input.canonicalize(), args.output.canonicalize())
        && a == b
    {
        return Err(CliError {
            message: "input and output are the same file".into(),
            exit: EXIT_FAILED,
        });
    }
    write_raw(&*disk, args.output, args.progress, args.threads, args.sync)
}

/// Writes `disk` as a sparse raw file at `output`: into a private temporary file beside it,
/// renamed into place only when complete (a failure leaves `output` untouched).
pub fn write_raw(
    disk: &dyn diskfmt::Disk,
    output: &Path,
    progress: bool,
    threads: Option<usize>,
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

    let mut opts = ConvertOptions::default();
    if let Some(t) = threads {
        opts.threads = t.max(1);
    }
    let done = Arc::new(AtomicU64::new(0));
    let ticker = Progress::start(progress, disk.virtual_size(), Arc::clone(&done));
    let result = convert_to_raw(disk, &out, &opts, &done);
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
