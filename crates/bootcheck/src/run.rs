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
    let (bus, warning, failure) = verdict(&attempts);
    Ok(Report {
        passed: failure.is_none(),
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

/// What the attempts add up to: the bus the guest booted on, the warning when that took a
/// second bus, and the reason when no attempt booted (one reason said once when every bus
/// failed alike).
fn verdict(attempts: &[Attempt]) -> (Option<Bus>, Option<String>, Option<String>) {
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
    (bus, warning, failure)
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

/// The descriptors of one boot: this side's ends, and what QEMU inherits.
struct Channels {
    nbd: (UnixStream, UnixStream),
    qmp: (UnixStream, UnixStream),
    serial: (UnixStream, UnixStream),
    /// The firmware log (x86 only: I/O port 0x402).
    debugcon: Option<(UnixStream, UnixStream)>,
    screen: OwnedFd,
    screen_w: File,
    vars: Option<File>,
    kvm: Option<OwnedFd>,
}

/// A running QEMU and the threads that read what it says and serve its disk.
struct Running {
    child: std::process::Child,
    readers: Vec<std::thread::JoinHandle<()>>,
    nbd: std::thread::JoinHandle<()>,
    serial: Arc<Mutex<Capture>>,
    firmware: Arc<Mutex<Capture>>,
    qemu_err: Arc<Mutex<Capture>>,
}

impl Running {
    fn text(c: &Arc<Mutex<Capture>>) -> String {
        c.lock().map(|c| c.text()).unwrap_or_default()
    }

    /// Kills QEMU and waits for every thread (QEMU's exit ends them).
    fn stop(mut self) -> (String, String, String) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for r in self.readers {
            let _ = r.join();
        }
        let _ = self.nbd.join();
        (
            Self::text(&self.serial),
            Self::text(&self.firmware),
            Self::text(&self.qemu_err),
        )
    }
}

/// What the boot has shown so far: the deciding signal, once there is one.
#[derive(Default)]
struct Watch {
    decided: Option<(Outcome, Instant)>,
    resets: u32,
    exited: bool,
    accel_failed: Option<String>,
    /// The firmware found nothing to boot (the same on every bus).
    disk_level: bool,
}

impl Watch {
    fn fail(&mut self, reason: String, now: Instant) {
        if self.decided.is_none() {
            self.decided = Some((Outcome::Failed { reason }, now));
        }
    }

    /// Whether the boot may stop: decided, and the screen given time to catch up.
    fn settled(&self) -> bool {
        let Some((outcome, at)) = &self.decided else {
            return false;
        };
        let settle = if matches!(outcome, Outcome::Booted { .. }) {
            SETTLE_OK
        } else {
            SETTLE_FAIL
        };
        self.exited || at.elapsed() >= settle
    }

    /// What one event from QEMU, its console or the firmware says about the guest.
    fn on_event(&mut self, boot: &Boot<'_>, ev: Event, now: Instant) {
        match ev {
            Event::Console(_, Seen::Accelerator(line))
                if self.decided.is_none() && matches!(boot.accel, Accel::Kvm { .. }) =>
            {
                self.accel_failed = Some(line);
                self.fail("the accelerator failed".into(), now);
            }
            Event::Console(_, Seen::BootSector) => {
                if let (Some(reason), None) = (boot.preflight, &self.decided) {
                    self.disk_level = true;
                    self.fail(reason.to_string(), now);
                }
            }
            Event::Console(_, seen) if self.decided.is_none() => {
                self.disk_level = seen.firmware_level();
                self.fail(seen.reason(), now);
            }
            Event::Qmp(name, data) => match name.as_str() {
                "RESET" => {
                    self.resets += 1;
                    if self.resets >= MAX_RESETS {
                        self.fail(
                            format!(
                                "reset loop: the guest restarted {} times without mounting its root filesystem",
                                self.resets
                            ),
                            now,
                        );
                    }
                }
                "GUEST_PANICKED" => {
                    self.fail("the guest panicked (reported through pvpanic)".into(), now);
                }
                "SHUTDOWN" if data["guest"].as_bool() == Some(true) => self.fail(
                    "the guest powered off without mounting its root filesystem".into(),
                    now,
                ),
                _ => {}
            },
            _ => {}
        }
    }
}

impl Boot<'_> {
    /// The socket pairs, memory files and devices of one boot.
    fn channels(&self) -> Result<Channels, BootError> {
        let screen = memfd("vmie-screen")?;
        let screen_w = File::options()
            .write(true)
            .open(format!("/proc/self/fd/{}", screen.as_raw_fd()))
            .map_err(BootError::io("opening the screenshot memory file"))?;
        // UEFI keeps its variables in a writable copy of the template, in memory.
        let vars = match &self.tools.firmware.vars {
            Some(template) => {
                let mut f = File::from(memfd("vmie-uefi-vars")?);
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
        Ok(Channels {
            nbd: pair("NBD")?,
            qmp: pair("QMP")?,
            serial: pair("the serial console")?,
            debugcon: if self.tools.arch == Arch::X86_64 {
                Some(pair("the firmware log")?)
            } else {
                None
            },
            screen,
            screen_w,
            vars,
            kvm,
        })
    }

    /// Starts QEMU in its sandbox with the descriptors of `ch` (QEMU names no path it could
    /// write: everything it touches is inherited).
    fn launch(&self, ch: &Channels) -> Result<std::process::Child, BootError> {
        let fds = Fds {
            nbd: ch.nbd.1.as_raw_fd(),
            qmp: ch.qmp.1.as_raw_fd(),
            serial: ch.serial.1.as_raw_fd(),
            debugcon: ch.debugcon.as_ref().map(|(_, t)| t.as_raw_fd()),
            screen: ch.screen_w.as_raw_fd(),
            vars: ch.vars.as_ref().map(AsRawFd::as_raw_fd),
            kvm: ch.kvm.as_ref().map(AsRawFd::as_raw_fd),
        };
        let args = crate::qemu::args(
            self.tools,
            self.accel,
            self.bus,
            self.spec.limits.memory_mib,
            &fds,
        );
        let mut pass: Vec<BorrowedFd<'_>> = vec![
            ch.nbd.1.as_fd(),
            ch.qmp.1.as_fd(),
            ch.serial.1.as_fd(),
            ch.screen_w.as_fd(),
        ];
        pass.extend(ch.debugcon.as_ref().map(|(_, t)| t.as_fd()));
        pass.extend(ch.vars.as_ref().map(AsFd::as_fd));
        pass.extend(ch.kvm.as_ref().map(AsFd::as_fd));
        let limits = ProcLimits {
            // The guest's one vCPU thread plus QEMU's own threads, with room to spare.
            cpu_secs: 2 * self.limit.as_secs() + 60,
            // Guest memory, TCG's 1 GiB translation cache, libraries and thread stacks.
            address_space: (u64::from(self.spec.limits.memory_mib) << 20) + (6 << 30),
            open_files: 1024,
        };
        tracing::info!(task = %self.spec.name, bus = self.bus.name(), accel = %self.accel.describe(), "boot check: starting QEMU");
        spawn(&self.tools.qemu, &args, &pass, self.user, limits)
    }

    /// The threads that capture the console, the firmware log and QEMU's messages (each
    /// sending what it recognizes on `tx`), and the one that serves the disk.
    fn start_io(
        mut child: std::process::Child,
        ch: Channels,
        overlay: &Arc<Overlay>,
        tx: &std::sync::mpsc::Sender<Event>,
    ) -> (Running, UnixStream, OwnedFd, File) {
        let serial = Arc::new(Mutex::new(Capture::new(256 << 10, 768 << 10)));
        let firmware = Arc::new(Mutex::new(Capture::new(64 << 10, 192 << 10)));
        let qemu_err = Arc::new(Mutex::new(Capture::new(16 << 10, 16 << 10)));
        let mut readers = vec![spawn_reader(
            ch.serial.0,
            Stream::Serial,
            serial.clone(),
            tx.clone(),
        )];
        if let Some((mine, _)) = ch.debugcon {
            readers.push(spawn_reader(
                mine,
                Stream::Firmware,
                firmware.clone(),
                tx.clone(),
            ));
        }
        if let Some(e) = child.stderr.take() {
            readers.push(spawn_reader(e, Stream::Qemu, qemu_err.clone(), tx.clone()));
        }
        let ov = overlay.clone();
        let nbd_mine = ch.nbd.0;
        let nbd = std::thread::spawn(move || {
            if let Err(e) = crate::nbd::serve(nbd_mine, &ov) {
                tracing::warn!(error = %e, "boot check: NBD connection ended");
            }
        });
        // QEMU holds its ends now; ours of them close here.
        drop((ch.qmp.1, ch.kvm, ch.vars));
        let running = Running {
            child,
            readers,
            nbd,
            serial,
            firmware,
            qemu_err,
        };
        (running, ch.qmp.0, ch.screen, ch.screen_w)
    }

    /// Watches the boot until it is decided and settled, `stop` says so (true), or QEMU
    /// exits; the time limit decides a boot that showed nothing.
    fn watch(
        &self,
        run: &mut Running,
        overlay: &Overlay,
        rx: &std::sync::mpsc::Receiver<Event>,
        start: Instant,
        stop: &dyn Fn() -> bool,
    ) -> (Watch, bool) {
        let deadline = start + self.limit;
        let limit_secs = self.limit.as_secs();
        let mut w = Watch::default();
        loop {
            if stop() {
                return (w, true);
            }
            if w.settled() {
                return (w, false);
            }
            let ev = rx.recv_timeout(TICK);
            let now = Instant::now();
            match ev {
                Ok(ev) => w.on_event(self, ev, now),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => std::thread::sleep(TICK),
            }
            if w.decided.is_none()
                && let Some(signal) = self.booted(overlay)
            {
                w.decided = Some((Outcome::Booted { signal }, now));
            }
            if let Ok(Some(status)) = run.child.try_wait() {
                w.exited = true;
                if w.decided.is_none() {
                    // Give the stderr reader a moment to collect QEMU's last words.
                    std::thread::sleep(Duration::from_millis(200));
                    w.fail(
                        format!(
                            "QEMU exited ({status}) before the guest mounted its root filesystem: {}",
                            last_error(&Running::text(&run.qemu_err))
                        ),
                        now,
                    );
                }
            }
            if w.decided.is_none() && now >= deadline {
                let root_writes = overlay.watches().first().map_or(0, |x| x.writes);
                w.fail(
                    if root_writes > 0 {
                        format!(
                            "the guest wrote its root partition but did not mount its root filesystem read-write within {limit_secs} s"
                        )
                    } else {
                        format!("no filesystem write within {limit_secs} s")
                    },
                    now,
                );
            }
        }
    }

    fn run(&self, stop: &dyn Fn() -> bool) -> Result<Ran, BootError> {
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
        let ch = self.channels()?;
        let start = Instant::now();
        let child = self.launch(&ch)?;
        let (tx, rx) = channel::<Event>();
        let (mut run, qmp_mine, screen, screen_w) = Self::start_io(child, ch, &overlay, &tx);
        let mut qmp = match Qmp::connect(qmp_mine, tx.clone(), Duration::from_secs(60)) {
            Ok(q) => q,
            Err(e) => {
                let (_, _, qemu_log) = run.stop();
                return Err(BootError::Qemu(format!(
                    "{e}; QEMU said: {}",
                    last_error(&qemu_log)
                )));
            }
        };
        drop(tx);
        let (w, stopped) = self.watch(&mut run, &overlay, &rx, start, stop);
        let decided_at = w.decided.as_ref().map_or_else(Instant::now, |(_, at)| *at);
        // The screen as the guest left it (not after it stopped, exited, or the accelerator
        // failed: there is nothing to see then).
        let screen_png = if stopped || w.exited || w.accel_failed.is_some() {
            None
        } else {
            self.screenshot(&mut qmp, &screen, &screen_w)
        };
        if !stopped && !w.exited {
            let _ = qmp.call("quit", None, Duration::from_secs(5));
        }
        let (console, firmware_log, qemu_log) = run.stop();
        if stopped {
            return Err(BootError::Stopped);
        }
        if let Some(why) = w.accel_failed {
            return Ok(Ran::AcceleratorFailed(why));
        }
        let watches = overlay.watches();
        let outcome = w.decided.map_or_else(
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
                    .and_then(|x| x.first)
                    .map(|t| ms(t.saturating_duration_since(start))),
                resets: w.resets,
                bytes_written: overlay.bytes_written(),
                console,
                firmware_log,
                qemu_log,
                screen_png,
            },
            w.disk_level,
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
