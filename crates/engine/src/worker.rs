//! Workers: claim a task with a lease, keep the lease alive with a heartbeat, run the
//! task's pipeline on a blocking thread, and end the task in the catalog.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use catalog::{Task, TaskKind, status};

use crate::ctx::{Ctx, Outcome, snapshot_id};
use crate::error::Failure;
use crate::{Engine, MAX_ATTEMPTS};

impl Engine {
    /// Runs `n` workers until `shutdown` turns true. Each claims tasks one at a time.
    pub async fn run_workers(&self, n: usize, shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut set = tokio::task::JoinSet::new();
        {
            // Boot evidence of tasks that left the Describe window or whose image is gone.
            let e = self.clone();
            let mut stop = shutdown.clone();
            set.spawn(async move {
                loop {
                    match e.expire_boot_evidence().await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(count = n, "expired boot evidence deleted"),
                        Err(err) => tracing::warn!(error = %err, "could not expire boot evidence"),
                    }
                    tokio::select! {
                        _ = stop.changed() => return,
                        () = tokio::time::sleep(Duration::from_secs(3600)) => {}
                    }
                }
            });
        }
        for i in 0..n.max(1) {
            let e = self.clone();
            let mut stop = shutdown.clone();
            let mut tag = [0u8; 4];
            kms::aead::random(&mut tag);
            let worker = format!("{}-w{i}-{}", e.inner.cfg.node, hex::encode(tag));
            set.spawn(async move {
                loop {
                    if *stop.borrow() {
                        return;
                    }
                    match e.run_one(&worker).await {
                        Ok(true) => continue,
                        Ok(false) => {}
                        Err(err) => {
                            tracing::error!(worker = %worker, error = %err, "worker could not reach the catalog");
                        }
                    }
                    tokio::select! {
                        _ = stop.changed() => {}
                        () = tokio::time::sleep(e.inner.cfg.poll) => {}
                    }
                }
            });
        }
        while set.join_next().await.is_some() {}
    }

    /// Claims and runs one task as `worker`; false when there was none.
    pub async fn run_one(&self, worker: &str) -> Result<bool, catalog::CatalogError> {
        let lease_ms = i64::try_from(self.inner.cfg.lease.as_millis()).unwrap_or(60_000);
        let Some(task) = self.inner.catalog.claim(worker, lease_ms).await? else {
            return Ok(false);
        };
        self.run_claimed(task, worker, lease_ms).await?;
        Ok(true)
    }

    async fn run_claimed(
        &self,
        task: Task,
        worker: &str,
        lease_ms: i64,
    ) -> Result<(), catalog::CatalogError> {
        let inner = &self.inner;
        tracing::info!(task = %task.id, attempt = task.attempts, worker, "task claimed");
        self.event(&task, "claimed", "", worker);
        if task.status == status::DELETING || task.cancel_requested {
            self.discard_attempts(&task, task.attempts + 1).await;
            return self.end(&task, worker, Err(Failure::Cancelled)).await;
        }
        if task.attempts > MAX_ATTEMPTS {
            self.discard_attempts(&task, task.attempts + 1).await;
            let f = Failure::Server(format!(
                "the task was interrupted {} times (its worker stopped without ending it); submit it again",
                task.attempts - 1
            ));
            return self.end(&task, worker, Err(f)).await;
        }
        // Snapshots stored by attempts that never published them are removed first.
        self.discard_attempts(&task, task.attempts).await;
        // The request's sealed part (a presigned URL's query) is opened in memory only.
        let task = match crate::secrets::open(inner.store.kms(), task.clone()) {
            Ok(t) => t,
            Err(f) => return self.end(&task, worker, Err(f)).await,
        };

        let cancel = Arc::new(AtomicBool::new(false));
        let lost = Arc::new(AtomicBool::new(false));
        let hb = {
            let (cat, id, w) = (inner.catalog.clone(), task.id.clone(), worker.to_string());
            let (cancel, lost) = (cancel.clone(), lost.clone());
            let every = Duration::from_millis(u64::try_from(lease_ms / 3).unwrap_or(1000).max(50));
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    match cat.heartbeat(&id, &w, lease_ms).await {
                        Ok(Some(t)) => {
                            if t.cancel_requested || t.status == status::DELETING {
                                cancel.store(true, Ordering::Relaxed);
                            }
                        }
                        Ok(None) => {
                            lost.store(true, Ordering::Relaxed);
                            return;
                        }
                        Err(e) => tracing::warn!(task = %id, error = %e, "heartbeat failed"),
                    }
                }
            })
        };
        let ctx = Ctx::new(
            inner.clone(),
            task.clone(),
            worker,
            tokio::runtime::Handle::current(),
            cancel,
            lost,
        );
        let result = tokio::task::spawn_blocking(move || {
            let r = match ctx.task.kind {
                TaskKind::ImportImage => crate::import::import_image(&ctx),
                TaskKind::ImportSnapshot => crate::import::import_snapshot(&ctx),
                TaskKind::ExportImage => crate::export::export_image(&ctx),
                TaskKind::CopyImage => crate::copy::copy_image(&ctx),
                TaskKind::CopySnapshot => crate::copy::copy_snapshot(&ctx),
            };
            // A cancel that arrived while the last step ran still wins over completion.
            match (r, ctx.check()) {
                (Ok(_), Err(f)) => Err(f),
                (r, _) => r,
            }
        })
        .await
        .unwrap_or_else(|e| Err(Failure::Server(format!("the task's worker crashed: {e}"))));
        hb.abort();
        self.end(&task, worker, result).await
    }

    /// Ends `task`: publishes its outcome, or records why it stopped and removes what it
    /// stored.
    async fn end(
        &self,
        task: &Task,
        worker: &str,
        result: Result<Outcome, Failure>,
    ) -> Result<(), catalog::CatalogError> {
        let r = self.end_inner(task, worker, result).await;
        let now = self.inner.catalog.task(&task.account, &task.id).await?;
        if now.ended() {
            self.scrub(&now).await;
        }
        self.inner.ended.notify_waiters();
        r
    }

    async fn end_inner(
        &self,
        task: &Task,
        worker: &str,
        result: Result<Outcome, Failure>,
    ) -> Result<(), catalog::CatalogError> {
        let cat = &self.inner.catalog;
        let stats = &self.inner.stats;
        match result {
            Ok(out) => {
                let body = serde_json::to_string(&out.detail).unwrap_or_default();
                let ok = cat
                    .finish_with(
                        &task.id,
                        Some(worker),
                        status::COMPLETED,
                        "completed",
                        Some(&body),
                        &out.snapshots,
                        out.image.as_ref(),
                    )
                    .await?;
                if ok {
                    stats.completed.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(task = %task.id, "task completed");
                    self.event(task, "completed", "", worker);
                } else {
                    // Cancelled or taken at the last moment: withdraw what was made.
                    for s in &out.snapshots {
                        self.delete_stored(&s.id).await;
                    }
                    if let Some(x) = &out.detail.export
                        && let Err(e) = self.inner.sources.delete(&x.s3_bucket, &x.s3_key).await
                    {
                        tracing::warn!(task = %task.id, error = %e, "could not withdraw the export of a cancelled task");
                    }
                    let t = cat.task(&task.account, &task.id).await?;
                    if t.status == status::DELETING && t.lease_owner.as_deref() == Some(worker) {
                        return Box::pin(self.end_inner(task, worker, Err(Failure::Cancelled)))
                            .await;
                    }
                    tracing::warn!(task = %task.id, "lease lost before completion; nothing published");
                }
            }
            Err(Failure::LeaseLost) => {
                tracing::warn!(task = %task.id, worker, "lease lost; another worker has the task");
                self.event(task, "lease-lost", "", worker);
            }
            Err(f) => {
                self.discard_attempts(task, task.attempts + 1).await;
                let msg = f.message();
                let ended = cat
                    .finish(&task.id, Some(worker), status::DELETED, &msg, None)
                    .await?;
                if ended {
                    crate::copy::failed(&self.inner, task).await;
                    if f == Failure::Cancelled && task.kind == TaskKind::ImportImage {
                        // A cancelled import keeps no boot evidence.
                        if let Err(e) = self
                            .inner
                            .store
                            .delete_sealed(crate::boot::EVIDENCE_KIND, &task.id)
                            .await
                        {
                            tracing::warn!(task = %task.id, error = %e, "could not delete the boot evidence of a cancelled task");
                        }
                    }
                    if f == Failure::Cancelled {
                        stats.cancelled.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(task = %task.id, "task cancelled");
                        self.event(task, "cancelled", "", worker);
                    } else {
                        stats.failed.fetch_add(1, Ordering::Relaxed);
                        // The message may quote the request (keys, names): not logged.
                        let class = if matches!(f, Failure::Client(_)) {
                            "ClientError"
                        } else {
                            "ServerError"
                        };
                        tracing::warn!(task = %task.id, kind = class, "task failed");
                        self.event(task, "failed", class, worker);
                    }
                }
            }
        }
        Ok(())
    }

    /// Once a task has ended, drops the query strings of its URLs from the stored request
    /// (requests stored before queries were sealed kept them in clear) and its sealed part
    /// (the transaction that ended it already did): a presigned URL's signature must not
    /// outlive the task that needed it. Then the catalog's write-ahead log is checkpointed
    /// so that the old row does not linger there.
    async fn scrub(&self, task: &Task) {
        self.scrub_request(task).await;
        match self.inner.catalog.checkpoint_log().await {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(task = %task.id, "catalog log checkpoint postponed by a reader");
            }
            Err(e) => tracing::warn!(task = %task.id, error = %e, "catalog log not checkpointed"),
        }
    }

    async fn scrub_request(&self, task: &Task) {
        let Ok(mut v) = serde_json::from_str::<serde_json::Value>(&task.request) else {
            return;
        };
        let mut changed = false;
        let mut strip = |dc: &mut serde_json::Value| {
            if let Some(serde_json::Value::String(u)) = dc.get_mut("url")
                && let Some(q) = u.find(['?', '#'])
            {
                u.truncate(q);
                changed = true;
            }
        };
        if let Some(list) = v.get_mut("disk_containers").and_then(|d| d.as_array_mut()) {
            list.iter_mut().for_each(&mut strip);
        }
        if let Some(dc) = v.get_mut("disk_container") {
            strip(dc);
        }
        if (changed || task.sealed.is_some())
            && let Err(e) = self
                .inner
                .catalog
                .redact_request(&task.id, &v.to_string())
                .await
        {
            tracing::warn!(task = %task.id, error = %e, "could not scrub the stored request");
        }
    }

    /// Deletes the snapshots that attempts `1..upto` of `task` may have stored.
    async fn discard_attempts(&self, task: &Task, upto: i64) {
        // An export stores no snapshot; a copy's snapshots have fixed ids, replaced by each
        // attempt and removed with the copy if it fails.
        if matches!(
            task.kind,
            TaskKind::ExportImage | TaskKind::CopyImage | TaskKind::CopySnapshot
        ) {
            return;
        }
        for attempt in 1..upto.max(1) {
            for disk in 0..crate::request::MAX_DISKS {
                self.delete_stored(&snapshot_id(&task.id, disk, attempt))
                    .await;
            }
        }
    }

    async fn delete_stored(&self, id: &str) {
        match self.inner.store.delete(id).await {
            Ok(()) => tracing::info!(snapshot = id, "removed a snapshot no task published"),
            Err(blockstore::StoreError::NotFound(_)) => {}
            Err(e) => {
                tracing::warn!(snapshot = id, error = %e, "could not remove an unpublished snapshot")
            }
        }
    }
}
