//! What a task's pipeline (the stage modules: import, export, copy, fill, boot) sees of the
//! worker running it: [`Ctx`] (its lease, cancel state and progress reporting) and what it
//! hands back ([`Outcome`]). Kept apart from `worker.rs` so that the stages do not import the
//! worker that calls them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use catalog::{Image, Snapshot, Task, status};

use crate::error::Failure;
use crate::{Inner, TaskDetail};

/// What a pipeline made, published when the task completes.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) detail: TaskDetail,
    pub(crate) snapshots: Vec<Snapshot>,
    pub(crate) image: Option<Image>,
}

impl Ctx {
    /// The engine, for its domain operations.
    pub(crate) fn engine(&self) -> crate::Engine {
        crate::Engine {
            inner: self.inner.clone(),
        }
    }
}

/// A running task's view of the world: its lease, cancel state and progress reporting.
pub(crate) struct Ctx {
    pub(crate) inner: Arc<Inner>,
    pub(crate) task: Task,
    pub(crate) worker: String,
    pub(crate) handle: tokio::runtime::Handle,
    cancel: Arc<AtomicBool>,
    lost: Arc<AtomicBool>,
    last: std::sync::Mutex<(String, i64, Instant)>,
    seen: std::sync::Mutex<Vec<String>>,
}

impl Ctx {
    /// Fails with `Cancelled` or `LeaseLost` when the task should stop.
    pub(crate) fn check(&self) -> Result<(), Failure> {
        if self.lost.load(Ordering::Relaxed) {
            return Err(Failure::LeaseLost);
        }
        if self.cancel.load(Ordering::Relaxed) {
            return Err(Failure::Cancelled);
        }
        Ok(())
    }

    /// Records `message` and `progress` (percent) — at once for a new stage, at most once a
    /// second within one.
    pub(crate) fn report(&self, message: &str, progress: i64) -> Result<(), Failure> {
        let new_stage = self.handle.block_on(self.report_async(message, progress))?;
        if new_stage {
            self.inner.event(&self.task, "stage", message, &self.worker);
            if let Some(h) = &self.inner.cfg.on_stage {
                (h.0)(&self.task.id, message);
            }
        }
        Ok(())
    }

    /// [`Ctx::report`] for async code; true when a new stage was recorded (the stage hook
    /// is left to the caller, as it may block).
    async fn report_async(&self, message: &str, progress: i64) -> Result<bool, Failure> {
        self.check()?;
        let new_stage = !self.stages_seen(message);
        {
            let Ok(mut last) = self.last.lock() else {
                return Ok(false);
            };
            let same = last.0 == message;
            if !new_stage
                && same
                && (last.1 >= progress || last.2.elapsed() < Duration::from_secs(1))
            {
                return Ok(false);
            }
            *last = (message.to_string(), progress.max(last.1), Instant::now());
        }
        let ok = self
            .inner
            .catalog
            .progress(
                &self.task.id,
                &self.worker,
                catalog::Progress { message, progress },
            )
            .await?;
        if ok {
            Ok(new_stage)
        } else {
            // Not ours any more: either cancelled (the row went to `deleting`) or taken.
            let t = self
                .inner
                .catalog
                .task(&self.task.account, &self.task.id)
                .await?;
            if t.status == status::DELETING && t.lease_owner.as_deref() == Some(&self.worker) {
                Err(Failure::Cancelled)
            } else {
                Err(Failure::LeaseLost)
            }
        }
    }

    /// Asks the catalog whether the task is still this worker's and not cancelled: the check
    /// made before anything irreversible (publishing an export).
    pub(crate) fn confirm(&self) -> Result<(), Failure> {
        self.check()?;
        let t = self
            .handle
            .block_on(self.inner.catalog.task(&self.task.account, &self.task.id))?;
        if t.lease_owner.as_deref() != Some(&self.worker) {
            Err(Failure::LeaseLost)
        } else if t.status != status::ACTIVE {
            Err(Failure::Cancelled)
        } else {
            Ok(())
        }
    }

    /// Whether `stage` was entered before (and marks it entered).
    fn stages_seen(&self, stage: &str) -> bool {
        let Ok(mut seen) = self.seen.lock() else {
            return true;
        };
        if seen.iter().any(|s| s == stage) {
            true
        } else {
            seen.push(stage.to_string());
            false
        }
    }

    /// Saves what the task knows so far, for Describe.
    pub(crate) fn save(&self, d: &TaskDetail) -> Result<(), Failure> {
        let s = serde_json::to_string(d).unwrap_or_default();
        self.handle.block_on(
            self.inner
                .catalog
                .checkpoint(&self.task.id, &self.worker, &s),
        )?;
        Ok(())
    }

    /// Runs `fut` on the runtime, checking for cancel and lease loss every second; on
    /// either, the future is dropped (which stops it) and the failure returned. With
    /// `progress`, each second also reports `(stage, progress())`.
    pub(crate) fn wait<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, Failure>>,
        progress: Option<(&str, &dyn Fn() -> i64)>,
    ) -> Result<T, Failure> {
        self.handle.block_on(async {
            tokio::pin!(fut);
            loop {
                tokio::select! {
                    r = &mut fut => return r,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {
                        self.check()?;
                        if let Some((stage, p)) = progress {
                            let _ = self.report_async(stage, p()).await?;
                        }
                    }
                }
            }
        })
    }
}

impl Ctx {
    /// The context of `task`, claimed by `worker`; `cancel` and `lost` are set by the
    /// worker's heartbeat.
    pub(crate) fn new(
        inner: Arc<Inner>,
        task: Task,
        worker: &str,
        handle: tokio::runtime::Handle,
        cancel: Arc<AtomicBool>,
        lost: Arc<AtomicBool>,
    ) -> Self {
        let last = (task.status_message.clone(), task.progress, Instant::now());
        Ctx {
            inner,
            task,
            worker: worker.to_string(),
            handle,
            cancel,
            lost,
            last: std::sync::Mutex::new(last),
            seen: std::sync::Mutex::new(Vec::new()),
        }
    }
}

/// The snapshot id of disk `disk` of `task_id` in attempt `attempt`: derived, so a retry
/// knows which snapshots an earlier attempt may have left.
#[must_use]
pub(crate) fn snapshot_id(task_id: &str, disk: usize, attempt: i64) -> String {
    catalog::derived_id("snap-", &[task_id, &disk.to_string(), &attempt.to_string()])
}
