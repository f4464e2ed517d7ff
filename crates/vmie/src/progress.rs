//! Progress on standard error: a bar on a terminal, plain "progress: N%" lines otherwise.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A running progress display fed by a shared byte counter.
pub struct Progress {
    finished: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts showing `done` out of `total` bytes when `enabled`.
    pub fn start(enabled: bool, total: u64, done: Arc<AtomicU64>) -> Self {
        let finished = Arc::new(AtomicBool::new(false));
        let thread = enabled.then(|| {
            let finished = Arc::clone(&finished);
            if std::io::stderr().is_terminal() {
                std::thread::spawn(move || bar_ticker(total, &done, &finished))
            } else {
                std::thread::spawn(move || line_ticker(total, &done, &finished))
            }
        });
        Progress { finished, thread }
    }

    /// Stops the display after a last update.
    pub fn finish(mut self) {
        self.finished.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finished.store(true, Ordering::Relaxed);
    }
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
        bar.set_position(done.load(Ordering::Relaxed).min(total));
        std::thread::sleep(Duration::from_millis(100));
    }
    bar.set_position(done.load(Ordering::Relaxed).min(total));
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
        let p = percent(done.load(Ordering::Relaxed).min(total));
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

/// A percentage bar (0–100, with a message) on a terminal; `None` when standard error is not
/// one (callers then print a line per change).
#[must_use]
pub fn percent_bar() -> Option<ProgressBar> {
    std::io::stderr().is_terminal().then(|| {
        let b = ProgressBar::new(100);
        b.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] [{bar:40}] {pos}% {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        b
    })
}
