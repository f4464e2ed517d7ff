//! The import pipelines: fetch → detect and inspect (safety) → decode once, on every core,
//! into a pending snapshot (import-image: and into the task's encrypted intermediate volume
//! in the same pass) → validate the guest and boot it (import-image) → publish the snapshots
//! → describe the image. Nothing is published before the checks pass; a pending snapshot
//! that is not published is abandoned (see [`crate::fill`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use blockstore::{PutRequest, SnapshotWriter};
use catalog::{BlockDevice, Image, Snapshot};
use diskfmt::{Disk, DiskError, Format, Refusal, Source};
use kms::Caller;

use crate::ctx::{Ctx, Outcome, snapshot_id};
use crate::error::{EngineError, Failure};
use crate::fill::Trailing;
use crate::request::{DiskContainer, ImportImageRequest, ImportSnapshotRequest};
use crate::scratch::Scratch;
use crate::source::{HttpsImage, Location, locate};
use crate::{DiskDetail, TaskDetail};

/// A decoded disk in its intermediate volume.
struct Volume {
    disk: Arc<dyn Disk>,
    detail: DiskDetail,
    /// Its snapshot, pending until commit.
    pending: Pending,
    /// Bytes of the disk the store is done with.
    done: Arc<AtomicU64>,
}

const GIB: u64 = 1 << 30;

/// A disk opened from a source, with the format name Describe shows.
type Opened = (Box<dyn Disk>, String);

fn bad_request(e: &dyn std::fmt::Display) -> Failure {
    Failure::Server(format!("the stored request does not parse: {e}"))
}

/// "Disk validation failed [...]" for an error of the image reader.
fn disk_failure(n: usize, shown: &str, format: Option<Format>, e: &DiskError) -> Failure {
    let f = format.map_or_else(
        || "disk image".to_string(),
        |f| f.name().to_ascii_uppercase(),
    );
    let (label, hint) = match e {
        DiskError::Io { .. } => {
            // With its causes (a remote source says what went wrong there), query strings
            // removed.
            return Failure::Server(format!(
                "reading disk {n} ({shown}) failed: {}",
                crate::source::error_chain(e)
            ));
        }
        DiskError::Refused(Refusal::Unread(_) | Refusal::NotADisk { .. }) => (
            "Unsupported Disk Image Format".to_string(),
            "upload the disk image itself, in a format vmie reads (OVA, VMDK, VHD, VHDX, qcow2, VDI or raw)",
        ),
        DiskError::Refused(_) => (
            format!("Unsafe {f} File"),
            "vmie refuses images that refer to other files or break its safety rules; export the disk again as one self-contained file",
        ),
        DiskError::InvalidFormat { .. } | DiskError::Corrupt { .. } => (
            format!("Invalid {f} File Format"),
            "the file is damaged, truncated or not what it claims to be; export and upload it again",
        ),
        DiskError::Unsupported { .. } => (
            format!("Unsupported {f} File Format"),
            "convert it to a supported variant (stream-optimized or monolithic sparse VMDK, fixed or dynamic VHD, VHDX, qcow2, raw)",
        ),
    };
    Failure::Client(format!(
        "Disk validation failed [{label}] on disk {n} ({shown}): {e}; {hint}"
    ))
}

/// Fetches the container's data: a bucket object is read in place, and so is an `https://`
/// image whose server answers range requests; one whose server does not is downloaded into
/// its own encrypted volume.
fn fetch(
    ctx: &Ctx,
    n: usize,
    dc: &DiskContainer,
    stage: &str,
    detail: &mut DiskDetail,
) -> Result<(Source, String), Failure> {
    let inner = &ctx.inner;
    let loc = locate(dc, inner.sources.allow()).map_err(|e| Failure::Client(e.to_string()))?;
    let shown = loc.shown();
    match loc {
        Location::Bucket(b) => {
            let (stat, sealed) = ctx.wait(
                async {
                    let fail = |e: EngineError| Failure::Client(e.to_string());
                    inner
                        .sources
                        .lookup(&b, inner.store.kms(), &ctx.task.account)
                        .await
                        .map_err(fail)
                },
                None,
            )?;
            let size = sealed.as_ref().map_or(stat.size, |u| u.size);
            if size > inner.cfg.max_image_bytes {
                return Err(Failure::Client(format!(
                    "disk {n} ({shown}) is {size} bytes, more than the limit of {} bytes",
                    inner.cfg.max_image_bytes
                )));
            }
            detail.disk_image_size = Some(size);
            Ok((
                inner
                    .sources
                    .open(&b, &stat, sealed.as_ref(), &ctx.handle, true)?,
                shown,
            ))
        }
        Location::Https(url) => {
            let max = inner.cfg.max_image_bytes;
            let (mut resp, len) = match ctx.wait(inner.sources.get(&url, max, &ctx.handle), None)? {
                HttpsImage::Ranged { source, size } => {
                    detail.disk_image_size = Some(size);
                    return Ok((source, shown));
                }
                HttpsImage::Whole { resp, size } => (resp, size),
            };
            detail.disk_image_size = Some(len);
            let mut vol = Scratch::create(
                &inner.cfg.scratch_dir,
                &format!("{}-download{n}", ctx.task.id),
                len,
            )?;
            let mut off = 0u64;
            loop {
                let chunk = ctx.wait(
                    async {
                        resp.chunk().await.map_err(|e| {
                            Failure::Client(format!(
                                "the download of disk {n} ({shown}) broke off: {}",
                                crate::source::error_chain(&e)
                            ))
                        })
                    },
                    None,
                )?;
                let Some(chunk) = chunk else { break };
                if off + chunk.len() as u64 > len {
                    return Err(Failure::Client(format!(
                        "the server of disk {n} ({shown}) sent more than the {len} bytes it announced"
                    )));
                }
                vol.write_at(&chunk, off)?;
                off += chunk.len() as u64;
                ctx.report(stage, 2 + i64::try_from(off * 8 / len.max(1)).unwrap_or(0))?;
            }
            if off != len {
                return Err(Failure::Client(format!(
                    "the download of disk {n} ({shown}) ended after {off} of {len} bytes"
                )));
            }
            vol.finish()?;
            Ok((Arc::new(vol), shown))
        }
        Location::Snapshot(_) => Err(Failure::Server(format!(
            "disk {n} ({shown}) is a snapshot, read in place, not fetched"
        ))),
    }
}

/// Detects, inspects and opens the disks in `src` (an OVA holds several).
fn open_disks(
    ctx: &Ctx,
    n: usize,
    src: Source,
    shown: &str,
    declared: Option<&str>,
) -> Result<Vec<Opened>, Failure> {
    let limits = &ctx.inner.cfg.limits;
    let detected = diskfmt::detect(&*src)
        .map_err(|e| disk_failure(n, shown, None, &e))?
        .format;
    if let Some(d) = declared {
        let want = crate::request::input_format("Format", d)
            .map_err(|e| Failure::Client(e.to_string()))?;
        if want != detected && !(want == Format::Raw && detected == Format::Iso) {
            return Err(Failure::Client(format!(
                "Disk validation failed [Format mismatch] on disk {n} ({shown}): the request says {} but the content is {}; correct Format or leave it out",
                want.name().to_ascii_uppercase(),
                detected.name().to_ascii_uppercase()
            )));
        }
    }
    let fail = |e: DiskError| disk_failure(n, shown, Some(detected), &e);
    if detected == Format::Ova {
        let app = diskfmt::ova::Appliance::open(src, limits).map_err(fail)?;
        if app.disks.is_empty() {
            return Err(Failure::Client(format!(
                "Disk validation failed [OVA without disks] on disk {n} ({shown}): its OVF names no disk file"
            )));
        }
        let hashed = Arc::new(AtomicU64::new(0));
        app.verify(&hashed).map_err(fail)?;
        ctx.check()?;
        let mut out = Vec::new();
        for i in 0..app.disks.len() {
            let d = app.open_disk(i, limits).map_err(fail)?;
            let fmt = d.info().format.name().to_ascii_uppercase();
            out.push((d, format!("OVA/{fmt}")));
        }
        return Ok(out);
    }
    let d = diskfmt::open_as(src, detected, limits).map_err(fail)?;
    Ok(vec![(d, detected.name().to_ascii_uppercase())])
}

/// Where a disk's pending snapshot stands when decoding ends.
enum Pending {
    /// Read from a stored snapshot (ImportImage's `SnapshotId`): stored at commit.
    Stored,
    /// import-image: the store follows the decoders, reading from the intermediate volume
    /// what it had no room for; published after validation and the boot check.
    Trailing(Trailing),
    /// import-snapshot: every chunk is handed over; publishing waits for those in flight.
    Written(SnapshotWriter),
}

/// Decodes `disk` once, on every core: each chunk that holds data goes to the pending
/// snapshot `snap` and, with `volume`, into a new intermediate volume in the same pass (see
/// [`crate::fill`]). `on_bytes` gets the data bytes decoded so far; `done` counts the bytes
/// the store is done with.
#[allow(clippy::too_many_arguments)]
fn decode(
    ctx: &Ctx,
    (name, volume): (&str, bool),
    disk: &dyn Disk,
    (n, shown): (usize, &str),
    (snap, kms_key): (&str, Option<&str>),
    done: &Arc<AtomicU64>,
    mut on_bytes: impl FnMut(u64) -> Result<(), Failure>,
) -> Result<(Option<Arc<Scratch>>, Pending), Failure> {
    let size = disk.virtual_size();
    let fmt = disk.info().format;
    let fail = |e: DiskError| disk_failure(n, shown, Some(fmt), &e);
    let req = PutRequest {
        snapshot_id: snap.to_string(),
        kms_key: kms_key.map(str::to_string),
        parent: None,
        caller: Caller::account_root(&ctx.task.account),
    };
    let store = &ctx.inner.store;
    let writer = ctx.wait(
        async { Ok(store.begin(req, size, Some(done.clone())).await?) },
        None,
    )?;
    let cs = writer.chunk_size();
    let threads = ctx.inner.cfg.threads.max(1);
    if !volume {
        let sink = |i: u64, buf: Vec<u8>| Ok(writer.write_chunk(i, buf)?);
        let buffers = writer.buffers();
        let r = crate::fill::decode_chunks(ctx, disk, cs, &buffers, &fail, &sink, &mut on_bytes);
        return match r {
            Ok(()) => Ok((None, Pending::Written(writer))),
            Err(f) => {
                ctx.handle.block_on(writer.abort());
                Err(f)
            }
        };
    }
    let vol = Arc::new(Scratch::create(&ctx.inner.cfg.scratch_dir, name, size)?);
    let (trailing, feeder) = Trailing::start(ctx, vol.clone(), writer, threads);
    let sink = |i: u64, buf: Vec<u8>| {
        vol.put_blocks(&buf, i * cs)?;
        feeder.offer(i, buf)
    };
    let r =
        crate::fill::decode_chunks(ctx, disk, cs, feeder.buffers(), &fail, &sink, &mut on_bytes);
    // The decoders are done: the store reads what it had no room for from the volume.
    drop(feeder);
    r?;
    Ok((Some(vol), Pending::Trailing(trailing)))
}

/// Disk `n` read from the stored snapshot `id` (ImportImage's `SnapshotId`), as the task's
/// account: a snapshot another account shared is readable only if its key lets this one.
fn from_snapshot(ctx: &Ctx, n: usize, id: &str, mut dd: DiskDetail) -> Result<Volume, Failure> {
    let caller = Caller::account_root(&ctx.task.account);
    let reader = ctx
        .wait(async { Ok(ctx.inner.store.open(&caller, id).await?) }, None)
        .map_err(|f| match f {
            Failure::Server(m) => Failure::Client(format!("disk {n} (snapshot {id}): {m}")),
            f => f,
        })?;
    let disk: Arc<dyn Disk> = Arc::new(Arc::new(reader).blocking(ctx.handle.clone()));
    dd.virtual_size = Some(disk.virtual_size());
    dd.disk_image_size = dd.disk_image_size.or(Some(disk.virtual_size()));
    dd.snapshot_id = None;
    Ok(Volume {
        disk,
        detail: dd,
        pending: Pending::Stored,
        done: Arc::default(),
    })
}

/// Fetches and decodes every container; progress runs from 2 to `upto` percent. The disks
/// found are counted against `max_disks` before any is decoded: an OVA brings several, and
/// each becomes a snapshot whose id a retry must be able to derive (see
/// [`crate::ctx::snapshot_id`]).
fn load(
    ctx: &Ctx,
    containers: &[DiskContainer],
    stage: &str,
    upto: i64,
    max_disks: usize,
    (kms_key, volume): (Option<&str>, bool),
    detail: &mut TaskDetail,
) -> Result<Vec<Volume>, Failure> {
    let mut vols = Vec::new();
    let parts = i64::try_from(containers.len()).unwrap_or(1).max(1);
    for (i, dc) in containers.iter().enumerate() {
        let n = i + 1;
        let mut base = detail.disks.get(i).cloned().unwrap_or_default();
        if let Some(id) = &dc.snapshot_id {
            // Already decoded and encrypted in the store: read in place, no volume needed.
            vols.push(from_snapshot(ctx, n, id, base)?);
            continue;
        }
        let (src, shown) = fetch(ctx, n, dc, stage, &mut base)?;
        let disks = open_disks(ctx, n, src, &shown, dc.format.as_deref())?;
        let total = vols.len() + disks.len();
        if total > max_disks {
            return Err(Failure::Client(if max_disks == 1 {
                format!(
                    "import-snapshot takes one disk, but {shown} holds {}; use import-image for appliances with several disks",
                    disks.len()
                )
            } else {
                format!(
                    "an image takes at most {max_disks} disks, but disk container {n} ({shown}) brings the count to {total}; import the other disks with import-snapshot"
                )
            }));
        }
        let lo = 10 + (upto - 10) * i64::try_from(i).unwrap_or(0) / parts;
        let hi = 10 + (upto - 10) * i64::try_from(n).unwrap_or(1) / parts;
        for (j, (d, fmt)) in disks.into_iter().enumerate() {
            let total = diskfmt::allocated_bytes(d.as_ref())
                .map_err(|e| disk_failure(n, &shown, Some(d.info().format), &e))?
                .max(1);
            let name = format!("{}-v{}-{j}", ctx.task.id, n);
            let snap = snapshot_id(&ctx.task.id, vols.len(), ctx.task.attempts);
            let done = Arc::new(AtomicU64::new(0));
            let d: Arc<dyn Disk> = Arc::from(d);
            let (vol, pending) = decode(
                ctx,
                (&name, volume),
                d.as_ref(),
                (n, &shown),
                (&snap, kms_key),
                &done,
                |done| {
                    let p = lo
                        + (hi - lo) * i64::try_from(done.min(total) * 100 / total).unwrap_or(0)
                            / 100;
                    ctx.report(stage, p)
                },
            )?;
            let mut dd = base.clone();
            dd.format = Some(fmt);
            dd.virtual_size = Some(d.virtual_size());
            // import-image reads the decoded disk from its volume from now on; import-snapshot
            // has handed every chunk over and keeps the disk only to count its data.
            let disk = match vol {
                Some(vol) => {
                    drop(d);
                    let src: Source = vol;
                    Arc::from(
                        diskfmt::open_as(src, Format::Raw, &ctx.inner.cfg.limits).map_err(|e| {
                            Failure::Server(format!("reopening the intermediate volume: {e}"))
                        })?,
                    )
                }
                None => d,
            };
            vols.push(Volume {
                disk,
                detail: dd,
                pending,
                done,
            });
        }
    }
    detail.disks = vols.iter().map(|v| v.detail.clone()).collect();
    ctx.save(detail)?;
    Ok(vols)
}

/// Stores each volume as a snapshot; progress runs from `from` to `to` percent.
fn commit(
    ctx: &Ctx,
    vols: Vec<Volume>,
    stage: &str,
    (from, to): (i64, i64),
    kms_key: Option<&str>,
    (description, tags): (&str, &[catalog::Tag]),
    detail: &mut TaskDetail,
) -> Result<Vec<Snapshot>, Failure> {
    let inner = &ctx.inner;
    let caller = Caller::account_root(&ctx.task.account);
    let totals: Vec<u64> = vols
        .iter()
        .map(|v| diskfmt::allocated_bytes(v.disk.as_ref()).unwrap_or(0))
        .collect();
    let all = totals.iter().sum::<u64>().max(1);
    let mut before = 0u64;
    let mut out = Vec::new();
    detail.disks.clear();
    for (i, (v, total)) in vols.into_iter().zip(totals).enumerate() {
        if i >= crate::request::MAX_DISKS {
            // `load` bounds the count; a retry discards only ids it can derive.
            return Err(Failure::Server(format!(
                "disk {} is beyond the {} disks a task may store",
                i + 1,
                crate::request::MAX_DISKS
            )));
        }
        let id = snapshot_id(&ctx.task.id, i, ctx.task.attempts);
        let done = v.done.clone();
        let pct_of = |d: u64| {
            let d = before + d.min(total);
            from + (to - from) * i64::try_from(d * 100 / all).unwrap_or(0) / 100
        };
        let pct = || pct_of(done.load(Ordering::Relaxed));
        // Published now, after the checks, and not before; a failure (or a cancel) drops
        // the volumes, which abandons every pending snapshot.
        let summary = match v.pending {
            Pending::Trailing(t) => t.finish(ctx, stage, &pct_of)?,
            Pending::Written(w) => {
                ctx.wait(async { Ok(w.publish().await?) }, Some((stage, &pct)))?
            }
            Pending::Stored => {
                let req = PutRequest {
                    snapshot_id: id.clone(),
                    kms_key: kms_key.map(str::to_string),
                    parent: None,
                    caller: caller.clone(),
                };
                let disk = v.disk.clone();
                ctx.wait(
                    async { Ok(inner.store.put(disk, req, Some(done.clone())).await?) },
                    Some((stage, &pct)),
                )?
            }
        };
        before += total;
        // The intermediate volume is destroyed as soon as its snapshot is stored.
        drop(v.disk);
        let mut dd = v.detail;
        dd.snapshot_id = Some(id.clone());
        detail.disks.push(dd);
        // Shown as EC2 shows it: the key's ARN.
        let kc = inner.store.kms().config();
        let arn = format!(
            "arn:aws:kms:{}:{}:key/{}",
            kc.region, kc.account, summary.kms_key_id
        );
        detail.kms_key_id = Some(arn.clone());
        out.push(Snapshot {
            id,
            account: ctx.task.account.clone(),
            task_id: Some(ctx.task.id.clone()),
            volume_size: i64::try_from(summary.volume_size).unwrap_or(i64::MAX),
            // Every snapshot is encrypted at rest, under the key named beside it.
            encrypted: true,
            kms_key_id: Some(arn),
            state: "completed".into(),
            description: description.to_string(),
            tags: tags.to_vec(),
            created_ms: catalog::now_ms(),
            extra: catalog::SnapshotExtra::default(),
        });
    }
    Ok(out)
}

fn canonical_arch(a: &str) -> Option<&'static str> {
    match a {
        "x86_64" => Some("x86_64"),
        "i386" => Some("i386"),
        "arm64" | "aarch64" => Some("arm64"),
        _ => None,
    }
}

/// Decides platform, architecture and boot mode from what inspection found and what the
/// request says; a request value may narrow what was found, not contradict it.
fn resolve(
    req: &ImportImageRequest,
    r: &guest::Report,
    detail: &mut TaskDetail,
) -> Result<(), Failure> {
    let platform = resolve_platform(req.platform.as_deref(), r, detail)?;
    let arch = resolve_arch(req.architecture.as_deref(), r, detail)?;
    let boot = resolve_boot_mode(req.boot_mode.as_deref(), r)?;
    if arch == "arm64" && boot.as_deref() == Some("legacy-bios") {
        return Err(Failure::Client(
            "arm64 guests boot with UEFI only, but the disk boots with legacy BIOS".into(),
        ));
    }
    detail.platform = Some(platform);
    detail.architecture = Some(arch);
    detail.boot_mode = boot;
    detail.os_name = r.name.clone().or_else(|| r.distribution.clone());
    detail.warnings.extend(r.warnings.iter().cloned());
    Ok(())
}

/// Where the operating system is looked for (the boot disk), as messages name it.
const BOOT_DISK: &str = "disk 1";

/// `Linux` or `Windows`: what inspection found, else what the request says (with a warning);
/// neither is a client error that lists what the disk holds.
fn resolve_platform(
    wanted: Option<&str>,
    r: &guest::Report,
    detail: &mut TaskDetail,
) -> Result<String, Failure> {
    let found = r
        .platform
        .as_deref()
        .map(|p| if p == "windows" { "Windows" } else { "Linux" });
    match (found, wanted) {
        (Some(f), Some(w)) if !f.eq_ignore_ascii_case(w) => {
            let os = r.name.as_deref().or(r.distribution.as_deref());
            Err(Failure::Client(format!(
                "Platform {w} was requested but {BOOT_DISK} holds {} ({f}); correct Platform or leave it out",
                os.unwrap_or("an operating system")
            )))
        }
        (Some(f), _) => Ok(f.to_string()),
        (None, Some(w)) => {
            detail.warnings.push(format!(
                "no operating system was identified on {BOOT_DISK}; imported as {w} because the request says so"
            ));
            Ok(if w.eq_ignore_ascii_case("windows") {
                "Windows".into()
            } else {
                "Linux".into()
            })
        }
        (None, None) => Err(Failure::Client(no_os_message(r))),
    }
}

/// EC2's "Unknown OS" failure, with what each partition holds and what inspection noticed,
/// so that the user can tell a data disk from an unrecognized system.
fn no_os_message(r: &guest::Report) -> String {
    let mut m =
        format!("Unknown OS / Missing OS files: no operating system was found on {BOOT_DISK}");
    let fs: Vec<String> = r
        .volumes
        .iter()
        .map(|v| {
            let kind = v
                .filesystem
                .as_ref()
                .map_or("no filesystem".to_string(), |f| {
                    format!("{:?}", f.kind).to_lowercase()
                });
            format!("partition {}: {kind}", v.number)
        })
        .collect();
    if !fs.is_empty() {
        m.push_str(&format!(" ({})", fs.join(", ")));
    }
    for w in &r.warnings {
        m.push_str("; ");
        m.push_str(w);
    }
    m.push_str(". If the disk holds an operating system vmie cannot identify, import it with Platform (Linux or Windows) and Architecture; to keep a data disk, use import-snapshot");
    m
}

/// The architecture: what the kernel says (it must be one vmie imports, and agree with the
/// request), else the request's, else x86_64 with a warning.
fn resolve_arch(
    wanted: Option<&str>,
    r: &guest::Report,
    detail: &mut TaskDetail,
) -> Result<String, Failure> {
    match (r.architecture.as_deref(), wanted) {
        (Some(f), _) if canonical_arch(f).is_none() => Err(Failure::Client(format!(
            "Unsupported architecture: {BOOT_DISK} holds a {f} operating system; vmie imports x86_64, i386 and arm64 guests"
        ))),
        (Some(f), Some(w)) if canonical_arch(f) != canonical_arch(w) => {
            Err(Failure::Client(format!(
                "Architecture {w} was requested but {BOOT_DISK} holds a {f} operating system; correct Architecture or leave it out"
            )))
        }
        (Some(f), _) => Ok(canonical_arch(f).unwrap_or("x86_64").to_string()),
        (None, Some(w)) => Ok(w.to_string()),
        (None, None) => {
            detail.warnings.push(format!(
                "the architecture of {BOOT_DISK} could not be read from its kernel; x86_64 assumed"
            ));
            Ok("x86_64".into())
        }
    }
}

/// The boot mode: the request's unless the disk can only boot the other way, else what was
/// found (`uefi-preferred` is compatible with both).
fn resolve_boot_mode(wanted: Option<&str>, r: &guest::Report) -> Result<Option<String>, Failure> {
    let found = r.boot_mode.as_deref();
    match (found, wanted) {
        (Some("uefi"), Some("legacy-bios")) | (Some("legacy-bios"), Some("uefi")) => {
            Err(Failure::Client(format!(
                "BootMode {} was requested but {BOOT_DISK} can only boot with {}; correct BootMode or leave it out",
                wanted.unwrap_or_default(),
                found.unwrap_or_default()
            )))
        }
        (_, Some(w)) => Ok(Some(w.to_string())),
        (Some(f), None) => Ok(Some(f.to_string())),
        (None, None) => Ok(None),
    }
}

/// import-image.
pub(crate) fn import_image(ctx: &Ctx) -> Result<Outcome, Failure> {
    let req: ImportImageRequest =
        serde_json::from_str(&ctx.task.request).map_err(|e| bad_request(&e))?;
    let mut detail = crate::initial_detail(&ctx.task);
    ctx.report("converting", 2)?;
    let vols = load(
        ctx,
        &req.disk_containers,
        "converting",
        50,
        crate::request::MAX_DISKS,
        (req.kms_key_id.as_deref(), true),
        &mut detail,
    )?;

    ctx.report("validating", 50)?;
    let boot = vols
        .first()
        .ok_or_else(|| Failure::Client("no disk to import".into()))?;
    let report = guest::inspect(boot.disk.clone()).map_err(|e| {
        Failure::Client(format!(
            "Disk validation failed [Unreadable disk] on disk 1: {e}"
        ))
    })?;
    resolve(&req, &report, &mut detail)?;
    ctx.save(&detail)?;

    // The boot disk, booted once from its intermediate volume; nothing it writes is kept.
    crate::boot::boot_stage(
        ctx,
        boot.disk.clone(),
        &report,
        &mut detail,
        req.kms_key_id.as_deref(),
    )?;
    ctx.save(&detail)?;

    ctx.report("updating", 55)?;
    let description = req.description.clone().unwrap_or_default();
    let snaps = commit(
        ctx,
        vols,
        "updating",
        (55, 90),
        req.kms_key_id.as_deref(),
        (&description, &req.snapshot_tags),
        &mut detail,
    )?;

    ctx.report("preparing ami", 92)?;
    let image = image_of(ctx, &req, &snaps, description, &mut detail);
    Ok(Outcome {
        detail,
        snapshots: snaps,
        image: Some(image),
    })
}

/// The AMI an import publishes: one block device per snapshot, and the platform, license
/// and billing code EC2 would report (recorded in `detail` too).
fn image_of(
    ctx: &Ctx,
    req: &ImportImageRequest,
    snaps: &[Snapshot],
    description: String,
    detail: &mut TaskDetail,
) -> Image {
    let image_id = catalog::derived_id("ami-", &[&ctx.task.id]);
    detail.image_id = Some(image_id.clone());
    let platform = detail.platform.clone().unwrap_or_else(|| "Linux".into());
    // What EC2 reports of an import: the license asked for, else BYOL for Linux and AWS for
    // Windows; the billing code asked for, else the platform's.
    let license = req.license_type.clone().unwrap_or_else(|| {
        if platform.eq_ignore_ascii_case("windows") {
            "AWS".into()
        } else {
            "BYOL".into()
        }
    });
    detail.license_type = Some(license.clone());
    let usage = req
        .usage_operation
        .clone()
        .unwrap_or_else(|| crate::request::default_usage_operation(&platform).into());
    detail.usage_operation = Some(usage.clone());
    Image {
        id: image_id,
        account: ctx.task.account.clone(),
        task_id: Some(ctx.task.id.clone()),
        name: ctx.task.id.clone(),
        description,
        architecture: detail
            .architecture
            .clone()
            .unwrap_or_else(|| "x86_64".into()),
        platform,
        boot_mode: detail.boot_mode.clone(),
        block_devices: block_devices(snaps, &detail.disks),
        encrypted: true,
        kms_key_id: detail.kms_key_id.clone(),
        state: "available".into(),
        tags: req.image_tags.clone(),
        created_ms: catalog::now_ms(),
        extra: catalog::ImageExtra {
            usage_operation: Some(usage),
            license_type: Some(license),
            ..catalog::ImageExtra::default()
        },
    }
}

/// The image's block devices: each snapshot under its disk's device name (the request's, or
/// `/dev/sda1`, `/dev/sdb`, … in order), sized in whole GiB rounded up.
fn block_devices(snaps: &[Snapshot], disks: &[DiskDetail]) -> Vec<BlockDevice> {
    snaps
        .iter()
        .zip(disks)
        .enumerate()
        .map(|(i, (s, d))| BlockDevice {
            device_name: d
                .device_name
                .clone()
                .unwrap_or_else(|| crate::request::device_name(i)),
            snapshot_id: s.id.clone(),
            volume_size_gib: i64::try_from(
                u64::try_from(s.volume_size)
                    .unwrap_or(0)
                    .div_ceil(GIB)
                    .max(1),
            )
            .unwrap_or(i64::MAX),
        })
        .collect()
}

/// import-snapshot.
pub(crate) fn import_snapshot(ctx: &Ctx) -> Result<Outcome, Failure> {
    const STAGE: &str = "downloading/converting";
    let req: ImportSnapshotRequest =
        serde_json::from_str(&ctx.task.request).map_err(|e| bad_request(&e))?;
    let mut detail = crate::initial_detail(&ctx.task);
    ctx.report(STAGE, 2)?;
    let vols = load(
        ctx,
        std::slice::from_ref(&req.disk_container),
        STAGE,
        96,
        1,
        (req.kms_key_id.as_deref(), false),
        &mut detail,
    )?;
    if vols.len() != 1 {
        return Err(Failure::Client(format!(
            "import-snapshot takes one disk, but the image holds {}; use import-image for appliances with several disks",
            vols.len()
        )));
    }
    let description = req.description.clone().unwrap_or_default();
    let snaps = commit(
        ctx,
        vols,
        STAGE,
        (96, 99),
        req.kms_key_id.as_deref(),
        (&description, &req.snapshot_tags),
        &mut detail,
    )?;
    Ok(Outcome {
        detail,
        snapshots: snaps,
        image: None,
    })
}
