//! The export pipeline: image → its snapshot (decrypted and verified chunk by chunk) → VMDK,
//! VHD, VHDX, qcow2, raw or OVA → `<prefix><export-task-id>.<ext>` in the bucket.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use diskfmt::write::{Output, TempOutputs, WriteOptions};
use diskfmt::write_image;
use diskfmt::{Disk, DiskError, Extent, ImageInfo};
use kms::Caller;

use crate::ctx::{Ctx, Outcome};
use crate::error::Failure;
use crate::request::{ExportImageRequest, output_format};
use crate::sealed_temp::SealedTemp;
use crate::{ExportDetail, TaskDetail};

/// A disk whose reads fail once `stop` is set, so a writer stops at its next read.
struct Stoppable<'a> {
    inner: &'a dyn Disk,
    stop: &'a AtomicBool,
}

impl Disk for Stoppable<'_> {
    fn info(&self) -> ImageInfo {
        self.inner.info()
    }
    fn virtual_size(&self) -> u64 {
        self.inner.virtual_size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> diskfmt::Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(DiskError::io(
                "exporting",
                std::io::Error::new(std::io::ErrorKind::Interrupted, "the task stopped"),
            ));
        }
        self.inner.read_at(buf, offset)
    }
    fn extents(&self, offset: u64, length: u64) -> diskfmt::Result<Vec<Extent>> {
        self.inner.extents(offset, length)
    }
}

/// export-image.
pub(crate) fn export_image(ctx: &Ctx) -> Result<Outcome, Failure> {
    let inner = &ctx.inner;
    let req: ExportImageRequest = serde_json::from_str(&ctx.task.request)
        .map_err(|e| Failure::Server(format!("the stored request does not parse: {e}")))?;
    let (canon, _, fmt) =
        output_format(&req.disk_image_format).map_err(|e| Failure::Client(e.to_string()))?;
    ctx.report("validating", 2)?;
    let img = exported_image(ctx, &req.image_id)?;
    let dev = img
        .block_devices
        .first()
        .ok_or_else(|| Failure::Client(format!("the image {} has no volumes", img.id)))?;
    let caller = Caller::account_root(&ctx.task.account);
    let reader = ctx
        .handle
        .block_on(inner.store.open(&caller, &dev.snapshot_id))?;
    let disk = Arc::new(reader).blocking(ctx.handle.clone());
    let loc = &req.s3_export_location;
    let prefix = loc.s3_prefix.clone().unwrap_or_default();
    // The key the request was authorized for (the API declared the same one).
    let key = crate::export_key(Some(&prefix), &ctx.task.id, &req.disk_image_format)
        .map_err(|e| Failure::Client(e.to_string()))?;
    let mut detail = TaskDetail {
        image_id: Some(img.id.clone()),
        export: Some(ExportDetail {
            s3_bucket: loc.s3_bucket.clone(),
            s3_prefix: prefix,
            s3_key: key.clone(),
            disk_image_format: canon.to_string(),
            size: None,
        }),
        ..TaskDetail::default()
    };
    ctx.save(&detail)?;
    let sink = inner
        .sources
        .export_sink(&loc.s3_bucket, &key, &inner.cfg.scratch_dir)?;
    // A bucket kept encrypted at rest gets the export sealed under its key.
    let sink = ctx.wait(
        inner.sources.seal_export(
            sink,
            &loc.s3_bucket,
            &key,
            inner.store.kms(),
            &ctx.task.account,
            &inner.cfg.scratch_dir,
        ),
        None,
    )?;

    ctx.report("converting", 5)?;
    // An OVA's VMDK, made before the archive, is encrypted on its way too.
    let scratch = inner.cfg.scratch_dir.clone();
    let temp =
        TempOutputs::new(move || Ok(Box::new(SealedTemp::create(&scratch)?) as Box<dyn Output>));
    let opts = WriteOptions {
        name: key.rsplit('/').next().map(str::to_string),
        temp: Some(temp),
        threads: inner.cfg.threads.max(1),
        ..WriteOptions::default()
    };
    let written = write_reporting(
        ctx,
        &disk,
        (sink.output(), sink.published_file()),
        (canon, fmt),
        &opts,
    )?;
    inner
        .stats
        .bytes_exported
        .fetch_add(written.file_size, Ordering::Relaxed);
    ctx.report("converting", 92)?;
    // Publishing is the one irreversible step: the task must still be ours and not
    // cancelled.
    ctx.confirm()?;
    ctx.wait(sink.commit(), None)?;
    if let Some(e) = detail.export.as_mut() {
        e.size = Some(written.file_size);
    }
    Ok(Outcome {
        detail,
        snapshots: Vec::new(),
        image: None,
    })
}

/// The image to export: the account's own, or one shared with it (checked again here: it
/// may have been deregistered or unshared since the request).
fn exported_image(ctx: &Ctx, image_id: &str) -> Result<catalog::Image, Failure> {
    ctx.handle
        .block_on(ctx.engine().visible_image(&ctx.task.account, image_id))
        .map_err(|e| match e {
            crate::EngineError::Request { .. } => Failure::Client(format!(
                "the image {image_id} was deregistered or unshared before it could be exported"
            )),
            e => Failure::Server(e.to_string()),
        })
}

/// Writes `disk` to `out` in `fmt` on a thread of its own while this one reports progress
/// (5 to 90 %). The writer cannot be interrupted from outside, so a cancel or a lost lease
/// (seen by the progress report) makes the disk's next read fail, which stops it.
fn write_reporting(
    ctx: &Ctx,
    disk: &dyn Disk,
    (out, published): (&dyn Output, Option<&std::fs::File>),
    (canon, fmt): (&str, diskfmt::Format),
    opts: &WriteOptions,
) -> Result<diskfmt::write::WriteStats, Failure> {
    let size = disk.virtual_size().max(1);
    let progress = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    // The writer says when it ends, so the task does not sleep past it.
    let (ended, ends) = std::sync::mpsc::channel::<()>();
    let (progress, stop) = (&progress, &stop);
    std::thread::scope(|s| {
        let w = s.spawn(move || {
            let d = Stoppable { inner: disk, stop };
            let r = write_image(&d, out, fmt, opts, progress);
            drop(ended);
            r
        });
        let mut stopped = None;
        // Progress is recorded at most once a second whatever the tick (Ctx::report).
        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
            ends.recv_timeout(Duration::from_millis(50))
        {
            if stopped.is_some() {
                continue;
            }
            if let Some(file) = published {
                // The file is flushed to disk before it is published: what is written so far
                // goes on its way now (POSIX_FADV_DONTNEED starts the writeback of dirty
                // pages without waiting, and drops those already written: vmie does not read
                // them again), so the final flush waits for the last part only, not for the
                // whole file. Advice only: a failure changes nothing.
                let _ = rustix::fs::fadvise(file, 0, None, rustix::fs::Advice::DontNeed);
            }
            let p = progress.load(Ordering::Relaxed).min(size);
            if let Err(f) = ctx.report("converting", 5 + i64::try_from(p * 85 / size).unwrap_or(0))
            {
                stop.store(true, Ordering::Relaxed);
                stopped = Some(f);
            }
        }
        let r = w.join().unwrap_or_else(|_| {
            Err(DiskError::io(
                "exporting",
                std::io::Error::other("the writer panicked"),
            ))
        });
        match stopped {
            Some(f) => Err(f),
            None => r.map_err(|e| Failure::Server(format!("writing the {canon} file failed: {e}"))),
        }
    })
}
