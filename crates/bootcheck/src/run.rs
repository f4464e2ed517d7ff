//! One boot check: each bus in turn until the guest boots.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::console::{Capture, spawn_reader};
use crate::error::BootError;
use crate::marks::{self, RootFs};
use crate::overlay::Overlay;
use crate::qemu::{FDSET_SCREEN, Fds};
use crate::qmp::Qmp;
use crate::sandbox::{ProcLimits, sandbox_user, spawn};
use crate::signals::{Event, Seen, Stream};
use crate::source::DiskSource;
use crate::tools::{Accel, Tools, accelerator, find_tools, open_kvm, qemu_version};
use crate::{Arch, Attempt, BootSpec, Bus, Outcome, Region, Report};

/// Guest resets before a boot counts as a reset loop.
pub const MAX_RESETS: u32 = 3;
/// How long the screen is given to catch up after the deciding signal.
const SETTLE_OK: Duration = Duration::from_secs(2);
const SETTLE_FAIL: Duration = Duration::from_secs(1);
/// Largest screenshot kept.
const MAX_PNG: u64 = 16 << 20;
/// How often the loop looks at the overlay and asks whether to stop.
const TICK: Duration = Duration::from_millis(200);

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Boots `disk` as `spec` says, each bus in turn until one boots. `stop` is asked several
/// times a second; when it answers true, QEMU is killed and [`BootError::Stopped`]
/// returned.
pub fn check(
    spec: &BootSpec,
    disk: Arc<dyn DiskSource>,
    stop: &dyn Fn() -> bool,
) -> Result<Report, BootError> {
    let t0 = Instant::now();
    let tools = find_tools(spec.arch, spec.boot_mode)?;
    let user = sandbox_user(spec.user.as_deref())?;
    let mut accel = if spec.force_tcg {
        Accel::Tcg {
            why: "asked for".into(),
        }
    } else {
        accelerator(&tools, user)
    };
    let limit_of = |a: &Accel| match a {
        Accel::Kvm { .. } => spec.limits.kvm_timeout,
        Accel::Tcg { .. } => spec.limits.tcg_timeout,
    };
    let root = spec.root.unwrap_or(Region {
        start: 0,
        len: disk.size(),
    });
    let fs = marks::probe(&*disk, root);
    let mut watch = vec![root];
    watch.extend(fs.regions());
    let preflight = match spec.boot_mode {
        crate::BootMode::LegacyBios => empty_boot_code(&*disk),
        crate::BootMode::Uefi => None,
    };
    let mut attempts: Vec<Attempt> = Vec::new();
    for &bus in &spec.buses {
        let a = loop {
            let b = Boot {
                spec,
                tools: &tools,
                accel: &accel,
                user,
                bus,
                disk: disk.clone(),
                fs: &fs,
                watch: &watch,
                limit: limit_of(&accel),
                preflight: preflight.as_deref(),
            };
            match b.run(stop)? {
                Ran::Done(a, disk_level) => break (a, disk_level),
                // KVM that runs firmware but cannot emulate what this guest's boot loader
                // does (seen with nested virtualisation): the same boot again under TCG.
                Ran::AcceleratorFailed(why) => {
                    tracing::warn!(task = %spec.name, why = %why, "boot check: KVM failed; again under TCG");
                    crate::tools::kvm_failed(spec.arch, &why);
                    accel = Accel::Tcg {
                        why: format!("KVM failed to run this guest: {why}"),
                    };
                }
            }
        };
        let (a, disk_level) = a;
        let booted = matches!(a.outcome, Outcome::Booted { .. });
        attempts.push(a);
        // Booted; or the firmware, which drives every bus alike, found nothing to boot.
        if booted || disk_level {
            break;
        }
    }
    let booted = attempts
        .iter()
        .find(|a| matches!(a.outcome, Outcome::Booted { .. }));
    let bus = booted.map(|a| a.bus);
    let warning = match bus {
        Some(Bus::Sata) if attempts.len() > 1 => Some(
            "the guest booted on SATA but not on virtio: it lacks virtio drivers (virtio_blk in its initramfs, or viostor on Windows) and will need them to boot on KVM or OpenStack"
                .to_string(),
        ),
        _ => None,
    };
    let failure = if booted.is_some() {
        None
    } else {
        let reasons: Vec<(Bus, &str)> = attempts
            .iter()
            .filter_map(|a| match &a.outcome {
                Outcome::Failed { reason } => Some((a.bus, reason.as_str())),
                Outcome::Booted { .. } => None,
            })
            .collect();
        Some(match reasons.as_slice() {
            [(_, r)] => r.to_string(),
            [(_, a), rest @ ..] if rest.iter().all(|(_, r)| r == a) => {
                let buses: Vec<&str> = reasons.iter().map(|(b, _)| b.name()).collect();
                format!("{a} (on {})", buses.join(" and "))
            }
            _ => reasons
                .iter()
                .map(|(b, r)| format!("on {}: {r}", b.name()))
                .collect::<Vec<_>>()
                .join("; "),
        })
    };
    Ok(Report {
        passed: booted.is_some(),
        failure,
        bus,
        warning,
        firmware: tools.firmware.describe(),
        accelerator: accel.describe(),
        qemu: qemu_version(&tools.qemu),
        arch: spec.arch,
        boot_mode: spec.boot_mode,
        limit_secs: limit_of(&accel).as_secs(),
        total_ms: ms(t0.elapsed()),
        attempts,
    })
}

/// How one boot ended.
enum Ran {
    /// With a decision about the guest; true when the firmware found nothing to boot (the
    /// same on every bus).
    Done(Attempt, bool),
    /// The accelerator failed; the guest was not judged.
    AcceleratorFailed(String),
}

/// One boot on one bus.
struct Boot<'a> {
    spec: &'a BootSpec,
    tools: &'a Tools,
    accel: &'a Accel,
    user: Option<(u32, u32)>,
    bus: Bus,
    disk: Arc<dyn DiskSource>,
    fs: &'a RootFs,
    watch: &'a [Region],
    limit: Duration,
    /// A failure known before booting (legacy BIOS, no boot code), decided once the firmware
    /// starts the boot sector; the boot runs only for the evidence.
    preflight: Option<&'a str>,
}

/// A legacy-BIOS disk whose master boot record holds no boot code: the firmware would run
/// zeros (its partition table's signature makes it look bootable).
fn empty_boot_code(disk: &dyn DiskSource) -> Option<String> {
    let mut mbr = [0u8; 512];
    disk.read_exact_at(&mut mbr, 0).ok()?;
    (mbr[510..] == [0x55, 0xAA] && mbr[..440].iter().all(|b| *b == 0)).then(|| {
        "no bootable device: the disk's master boot record holds no boot code (no boot loader is installed)"
            .to_string()
    })
}

fn memfd(name: &str) -> Result<OwnedFd, BootError> {
    rustix::fs::memfd_create(name, rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(|e| BootError::io(format!("memfd {name}"))(e.into()))
}

fn pair(what: &str) -> Result<(UnixStream, UnixStream), BootError> {
    UnixStream::pair().map_err(BootError::io(format!("socket pair for {what}")))
}

/// The last meaningful line QEMU printed.
fn last_error(text: &str) -> String {
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.contains("warning:"))
        .unwrap_or("no message")
        .chars()
        .take(300)
        .collect()
}

impl Boot<'_> {
    fn run(&self, stop: &dyn Fn() -> bool) -> Result<Ran, BootError> {
        let x86 = self.tools.arch == Arch::X86_64;
        let overlay = Arc::new(
            Overlay::create(
                &self.spec.work_dir,
                &format!("{}-boot-{}", self.spec.name, self.bus.name().to_lowercase()),
                self.disk.clone(),
                self.spec.limits.overlay_max,
                self.watch,
            )
            .map_err(BootError::io("creating the boot overlay"))?,
        );
        let (nbd_mine, nbd_theirs) = pair("NBD")?;
        let (qmp_mine, qmp_theirs) = pair("QMP")?;
        let (ser_mine, ser_theirs) = pair("the serial console")?;
        let dbg = if x86 {
            Some(pair("the firmware log")?)
        } else {
            None
        };
        let screen = memfd("vmie-screen")?;
        let screen_w = File::options()
            .write(true)
            .open(format!("/proc/self/fd/{}", screen.as_raw_fd()))
            .map_err(BootError::io("opening the screenshot memory file"))?;
        let vars = match &self.tools.firmware.vars {
            Some(template) => {
                let fd = memfd("vmie-uefi-vars")?;
                let mut f = File::from(fd);
                let mut t = File::open(template)
                    .map_err(BootError::io(format!("reading {}", template.display())))?;
                std::io::copy(&mut t, &mut f)
                    .map_err(BootError::io("copying the UEFI variable store"))?;
                Some(f)
            }
            None => None,
        };
        let kvm = match self.accel {
            Accel::Kvm { .. } => Some(open_kvm().map_err(BootError::io("opening /dev/kvm"))?),
            Accel::Tcg { .. } => None,
        };
        let fds = Fds {
            nbd: nbd_theirs.as_raw_fd(),
            qmp: qmp_theirs.as_raw_fd(),
            serial: ser_theirs.as_raw_fd(),
            debugcon: dbg.as_ref().map(|(_, t)| t.as_raw_fd()),
            screen: screen_w.as_raw_fd(),
            vars: vars.as_ref().map(AsRawFd::as_raw_fd),
            kvm: kvm.as_ref().map(AsRawFd::as_raw_fd),
        };
        let args = crate::qemu::args(
            self.tools,
            self.accel,
            self.bus,
            self.spec.limits.memory_mib,
            &fds,
        );
        let mut pass: Vec<BorrowedFd<'_>> = vec![
            nbd_theirs.as_fd(),
            qmp_theirs.as_fd(),
            ser_theirs.as_fd(),
            screen_w.as_fd(),
        ];
        if let Some((_, t)) = &dbg {
            pass.push(t.as_fd());
        }
        if let Some(v) = &vars {
            pass.push(v.as_fd());
        }
        if let Some(k) = &kvm {
            pass.push(k.as_fd());
        }
        let limit_secs = self.limit.as_secs();
        let limits = ProcLimits {
            // The guest's one vCPU thread plus QEMU's own threads, with room to spare.
            cpu_secs: 2 * limit_secs + 60,
            // Guest memory, TCG's 1 GiB translation cache, libraries and thread stacks.
            address_space: (u64::from(self.spec.limits.memory_mib) << 20) + (6 << 30),
            open_files: 1024,
        };
        tracing::info!(task = %self.spec.name, bus = self.bus.name(), accel = %self.accel.describe(), "boot check: starting QEMU");
        let start = Instant::now();
        let mut child = spawn(&self.tools.qemu, &args, &pass, self.user, limits)?;
        drop(pass);
        drop((nbd_theirs, qmp_theirs, ser_theirs, kvm, vars));
        let dbg_mine = dbg.map(|(m, _)| m);
        let (tx, rx) = channel::<Event>();
        let serial = Arc::new(Mutex::new(Capture::new(256 << 10, 768 << 10)));
        let firmware = Arc::new(Mutex::new(Capture::new(64 << 10, 192 << 10)));
        let qemu_err = Arc::new(Mutex::new(Capture::new(16 << 10, 16 << 10)));
        let mut readers = vec![spawn_reader(
            ser_mine,
            Stream::Serial,
            serial.clone(),
            tx.clone(),
        )];
        if let Some(d) = dbg_mine {
            readers.push(spawn_reader(
                d,
                Stream::Firmware,
                firmware.clone(),
                tx.clone(),
            ));
        }
        if let Some(e) = child.stderr.take() {
            readers.push(spawn_reader(e, Stream::Qemu, qemu_err.clone(), tx.clone()));
        }
        let ov = overlay.clone();
        let nbd = std::thread::spawn(move || {
            if let Err(e) = crate::nbd::serve(nbd_mine, &ov) {
                tracing::warn!(error = %e, "boot check: NBD connection ended");
            }
        });
        let text = |c: &Arc<Mutex<Capture>>| c.lock().map(|c| c.text()).unwrap_or_default();
        let kill = |child: &mut std::process::Child| {
            let _ = child.kill();
            let _ = child.wait();
        };

        let mut qmp = match Qmp::connect(qmp_mine, tx.clone(), Duration::from_secs(60)) {
            Ok(q) => q,
            Err(e) => {
                kill(&mut child);
                for r in readers {
                    let _ = r.join();
                }
                return Err(BootError::Qemu(format!(
                    "{e}; QEMU said: {}",
                    last_error(&text(&qemu_err))
                )));
            }
        };
        drop(tx);

        let deadline = start + self.limit;
        let mut resets = 0u32;
        let mut decided: Option<(Outcome, Instant)> = None;
        let mut exited = false;
        let mut accel_failed: Option<String> = None;
        let mut disk_level = false;
        let stopped = loop {
            if stop() {
                break true;
            }
            if let Some((_, at)) = &decided {
                let settle = if matches!(decided, Some((Outcome::Booted { .. }, _))) {
                    SETTLE_OK
                } else {
                    SETTLE_FAIL
                };
                if exited || at.elapsed() >= settle {
                    break false;
                }
            }
            let ev = rx.recv_timeout(TICK);
            let now = Instant::now();
            let fail = |reason: String| Some((Outcome::Failed { reason }, now));
            match ev {
                Ok(Event::Console(_, Seen::Accelerator(line)))
                    if decided.is_none() && matches!(self.accel, Accel::Kvm { .. }) =>
                {
                    accel_failed = Some(line);
                    decided = fail("the accelerator failed".into());
                }
                Ok(Event::Console(_, Seen::BootSector)) => {
                    if let (Some(reason), None) = (self.preflight, &decided) {
                        disk_level = true;
                        decided = fail(reason.to_string());
                    }
                }
                Ok(Event::Console(_, seen)) if decided.is_none() => {
                    disk_level = seen.firmware_level();
                    decided = fail(seen.reason());
                }
                Ok(Event::Qmp(name, data)) => match name.as_str() {
                    "RESET" => {
                        resets += 1;
                        if resets >= MAX_RESETS && decided.is_none() {
                            decided = fail(format!(
                                "reset loop: the guest restarted {resets} times without mounting its root filesystem"
                            ));
                        }
                    }
                    "GUEST_PANICKED" if decided.is_none() => {
                        decided = fail("the guest panicked (reported through pvpanic)".into());
                    }
                    "SHUTDOWN" if data["guest"].as_bool() == Some(true) && decided.is_none() => {
                        decided = fail(
                            "the guest powered off without mounting its root filesystem".into(),
                        );
                    }
                    _ => {}
                },
                Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => std::thread::sleep(TICK),
            }
            if decided.is_none()
                && let Some(signal) = self.booted(&overlay)
            {
                decided = Some((Outcome::Booted { signal }, now));
            }
            if let Ok(Some(status)) = child.try_wait() {
                exited = true;
                if decided.is_none() {
                    // Give the stderr reader a moment to collect QEMU's last words.
                    std::thread::sleep(Duration::from_millis(200));
                    decided = fail(format!(
                        "QEMU exited ({status}) before the guest mounted its root filesystem: {}",
                        last_error(&text(&qemu_err))
                    ));
                }
            }
            if decided.is_none() && now >= deadline {
                let root_writes = overlay.watches().first().map_or(0, |w| w.writes);
                decided = fail(if root_writes > 0 {
                    format!(
                        "the guest wrote its root partition but did not mount its root filesystem read-write within {limit_secs} s"
                    )
                } else {
                    format!("no filesystem write within {limit_secs} s")
                });
            }
        };
        let decided_at = decided.as_ref().map_or_else(Instant::now, |(_, at)| *at);
        let screen_png = if stopped || exited || accel_failed.is_some() {
            None
        } else {
            self.screenshot(&mut qmp, &screen, &screen_w)
        };
        if !stopped && !exited {
            let _ = qmp.call("quit", None, Duration::from_secs(5));
        }
        kill(&mut child);
        for r in readers {
            let _ = r.join();
        }
        let _ = nbd.join();
        if stopped {
            return Err(BootError::Stopped);
        }
        if let Some(why) = accel_failed {
            return Ok(Ran::AcceleratorFailed(why));
        }
        let watches = overlay.watches();
        let outcome = decided.map_or_else(
            || Outcome::Failed {
                reason: "the boot ended without a decision".into(),
            },
            |(o, _)| o,
        );
        tracing::info!(task = %self.spec.name, bus = self.bus.name(), ?outcome, "boot check: QEMU done");
        Ok(Ran::Done(
            Attempt {
                bus: self.bus,
                outcome,
                elapsed_ms: ms(decided_at - start),
                first_root_write_ms: watches
                    .first()
                    .and_then(|w| w.first)
                    .map(|t| ms(t.saturating_duration_since(start))),
                resets,
                bytes_written: overlay.bytes_written(),
                console: text(&serial),
                firmware_log: text(&firmware),
                qemu_log: text(&qemu_err),
                screen_png,
            },
            disk_level,
        ))
    }

    /// The success signal, once the overlay shows it.
    fn booted(&self, overlay: &Overlay) -> Option<String> {
        match self.fs {
            RootFs::Unknown => {
                let w = overlay.watches();
                (w.first()?.writes > 0).then(|| {
                    if self.spec.root.is_some() {
                        "writes inside the root partition (no mount mark known for its filesystem)"
                            .to_string()
                    } else {
                        "writes to the disk (the root filesystem is unknown)".to_string()
                    }
                })
            }
            fs => marks::mounted(fs, &*self.disk, overlay),
        }
    }

    /// A PNG of the screen now, through QMP `screendump` into the memory file.
    fn screenshot(&self, qmp: &mut Qmp, screen: &OwnedFd, screen_w: &File) -> Option<Vec<u8>> {
        rustix::fs::ftruncate(screen, 0).ok()?;
        let mut w = screen_w;
        w.seek(SeekFrom::Start(0)).ok()?;
        let r = qmp.call(
            "screendump",
            Some(json!({"filename": format!("/dev/fdset/{FDSET_SCREEN}"), "format": "png"})),
            Duration::from_secs(30),
        );
        if let Err(e) = r {
            tracing::warn!(error = %e, "boot check: no screenshot");
            return None;
        }
        let f = File::from(screen.try_clone().ok()?);
        let len = f.metadata().ok()?.len().min(MAX_PNG);
        let mut png = vec![0u8; usize::try_from(len).ok()?];
        f.read_exact_at(&mut png, 0).ok()?;
        png.starts_with(b"\x89PNG\r\n\x1a\n").then_some(png)
    }
}
