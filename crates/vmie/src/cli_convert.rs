//! `vmie convert`.

use std::fs::{File, OpenOptions};
use std::io::IsTerminal;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use diskfmt::convert::{ConvertOptions, convert_to_raw};
use diskfmt::{FileSource, Format, Limits};
use indicatif::{ProgressBar, ProgressStyle};

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

fn fail(context: &str, e: &std::io::Error) -> CliError {
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
    let name = args
        .output
        .file_name()
        .ok_or_else(|| CliError {
            message: format!("{} is not a file name", args.output.display()),
            exit: EXIT_FAILED,
        })?
        .to_string_lossy()
        .into_owned();
    let tmp_path = args
        .output
        .with_file_name(format!(".{name}.{}.partial", std::process::id()));
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
    if let Some(t) = args.threads {
        opts.threads = t.max(1);
    }
    let done = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    let total = disk.virtual_size();
    let ticker = args.progress.then(|| {
        let done = Arc::clone(&done);
        let finished = Arc::clone(&finished);
        if std::io::stderr().is_terminal() {
            std::thread::spawn(move || bar_ticker(total, &done, &finished))
        } else {
            std::thread::spawn(move || line_ticker(total, &done, &finished))
        }
    });
    let result = convert_to_raw(&*disk, &out, &opts, &done);
    finished.store(true, Ordering::Relaxed);
    if let Some(t) = ticker {
        let _ = t.join();
    }
    result?;
    out.sync_all()
        .map_err(|e| fail(&format!("cannot flush {}", tmp_path.display()), &e))?;
    drop(out);
    std::fs::rename(&tmp_path, args.output).map_err(|e| {
        fail(
            &format!("cannot move the output into {}", args.output.display()),
            &e,
        )
    })?;
    guard.armed = false;
    Ok(())
}

/// A progress bar on a terminal.
fn bar_ticker(total: u64, done: &AtomicU64, finished: &AtomicBool) {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    while !finished.load(Ordering::Relaxed) {
        bar.set_position(done.load(Ordering::Relaxed));
        std::thread::sleep(Duration::from_millis(100));
    }
    bar.set_position(done.load(Ordering::Relaxed));
    bar.finish();
}

/// Plain lines when standard error is not a terminal (logs, CI): one per 10 %.
fn line_ticker(total: u64, done: &AtomicU64, finished: &AtomicBool) {
    let percent = |d: u64| {
        if total == 0 {
            100
        } else {
            u128::from(d) * 100 / u128::from(total)
        }
    };
    let mut last_decile = None;
    loop {
        let stop = finished.load(Ordering::Relaxed);
        let p = percent(done.load(Ordering::Relaxed));
        let decile = p / 10;
        if last_decile != Some(decile) {
            eprintln!("progress: {p}%");
            last_decile = Some(decile);
        }
        if stop {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
