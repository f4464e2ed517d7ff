//! # bootcheck — does this disk boot?
//!
//! vmie boots every imported disk once in QEMU before it calls the import complete, the way
//! EC2's VM Import does in its `booting` stage, and keeps evidence of what it saw. Start at
//! [`check`]: it takes a [`BootSpec`] and a [`DiskSource`] (positioned reads and a size — the
//! engine gives its encrypted intermediate volume; nothing here knows where the bytes come
//! from) and returns a [`Report`]: passed or failed, why, and the evidence (serial console,
//! firmware log, a PNG screenshot, bus, firmware, accelerator, timings).
//!
//! How one boot runs ([`run`]):
//! - **The disk is served by vmie.** QEMU reads it over NBD ([`nbd`], fixed-newstyle
//!   handshake, simple replies) from one end of a socket pair whose other end QEMU inherits
//!   as a file descriptor: the socket has no name, so no other process can reach it. Guest
//!   writes land in a throw-away [`overlay`] sealed with AES-256-GCM under a key held only in
//!   memory; the image is never written and no guest byte is on disk in plaintext.
//! - **The sandbox** ([`sandbox`], [`qemu`]): no network device, no shared folders, QEMU's
//!   seccomp filter (`-sandbox on` with obsolete, privilege, spawn and resource-control calls
//!   denied), an unprivileged user when vmie runs as root, no new privileges, limits on
//!   address space, CPU time and open files, no core dumps, a wall-clock limit, an empty
//!   environment, and `PR_SET_PDEATHSIG` so QEMU dies with the thread that started it — also
//!   when vmie is SIGKILLed. The monitor (QMP, [`qmp`]), the serial console and the firmware
//!   log are socket pairs too; screenshots go to a memory file.
//! - **Firmware** ([`tools`]): SeaBIOS for legacy BIOS, OVMF for UEFI, AAVMF with
//!   `qemu-system-aarch64` for arm64; KVM when a probe shows it really runs a guest, TCG
//!   otherwise.
//! - **Buses**: virtio first, then SATA; a guest that boots only on SATA passes with a
//!   warning that it lacks virtio drivers.
//! - **Signals** ([`signals`], [`marks`]): success is the guest's kernel mounting its root
//!   filesystem read-write — writes inside the root partition seen by the overlay, plus the
//!   filesystem's own mount mark (ext4 mount count or time, a write to the XFS log or to NTFS's
//!   `$LogFile`). No guest agent and no serial console are needed. Failure is a kernel panic,
//!   the firmware finding no bootable device, a boot loader's error, the initramfs giving up
//!   on the root device, a reset loop, the guest powering off, QEMU exiting, or no write
//!   before the time limit.

pub mod console;
pub mod error;
pub mod marks;
pub mod nbd;
pub mod overlay;
pub mod qemu;
pub mod qmp;
pub mod run;
pub mod sandbox;
pub mod signals;
pub mod source;
pub mod tools;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use error::BootError;
pub use run::check;
pub use source::{DiskSource, FileSource};
pub use tools::{Accel, Tools, find_tools};

/// The guest's architecture, as QEMU needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Arch {
    /// x86_64 or i386: `qemu-system-x86_64`, machine q35.
    #[serde(rename = "x86_64")]
    X86_64,
    /// arm64: `qemu-system-aarch64`, machine virt, UEFI only.
    #[serde(rename = "arm64")]
    Arm64,
}

impl Arch {
    /// From an EC2 architecture name (`x86_64`, `i386`, `arm64`).
    #[must_use]
    pub fn from_ec2(a: &str) -> Option<Arch> {
        match a {
            "x86_64" | "i386" => Some(Arch::X86_64),
            "arm64" | "aarch64" => Some(Arch::Arm64),
            _ => None,
        }
    }
}

/// How the guest boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootMode {
    /// Legacy BIOS (SeaBIOS).
    LegacyBios,
    /// UEFI (OVMF, AAVMF).
    Uefi,
}

/// The disk's bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bus {
    /// virtio-blk (the disk bus of a KVM or OpenStack target).
    Virtio,
    /// SATA (AHCI), which every operating system drives.
    Sata,
}

impl Bus {
    /// `virtio` or `SATA`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Bus::Virtio => "virtio",
            Bus::Sata => "SATA",
        }
    }
}

/// A byte range of the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Region {
    /// First byte.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
}

impl Region {
    /// One past the last byte.
    #[must_use]
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.len)
    }

    /// Whether `[offset, offset + len)` overlaps the region.
    #[must_use]
    pub fn overlaps(&self, offset: u64, len: u64) -> bool {
        len > 0 && offset < self.end() && offset.saturating_add(len) > self.start
    }
}

/// Limits of one boot check.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Wall-clock limit per bus under KVM.
    pub kvm_timeout: Duration,
    /// Wall-clock limit per bus under TCG (emulation is 5–20 times slower).
    pub tcg_timeout: Duration,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Most bytes of guest writes the overlay keeps; writes beyond fail in the guest
    /// (ENOSPC).
    pub overlay_max: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            kvm_timeout: Duration::from_secs(180),
            tcg_timeout: Duration::from_secs(600),
            memory_mib: 2048,
            overlay_max: 4 << 30,
        }
    }
}

/// What to boot and how.
#[derive(Debug, Clone)]
pub struct BootSpec {
    /// Architecture.
    pub arch: Arch,
    /// Boot mode.
    pub boot_mode: BootMode,
    /// The root filesystem's partition, when inspection found it; `None` watches the whole
    /// disk.
    pub root: Option<Region>,
    /// Folder (mode 0700) for the encrypted overlay file; the engine's intermediate-volume
    /// folder, so that a crash leaves nothing its next start does not sweep.
    pub work_dir: PathBuf,
    /// A name for the overlay file and the logs (the task id).
    pub name: String,
    /// Limits.
    pub limits: Limits,
    /// User QEMU runs as when vmie runs as root (`nobody` when unset).
    pub user: Option<String>,
    /// Buses to try, in order (virtio, then SATA).
    pub buses: Vec<Bus>,
    /// Use TCG even when KVM works (benchmarks).
    pub force_tcg: bool,
}

impl BootSpec {
    /// A spec with default limits, virtio then SATA, for `arch` and `boot_mode`.
    #[must_use]
    pub fn new(arch: Arch, boot_mode: BootMode, work_dir: PathBuf, name: &str) -> Self {
        BootSpec {
            arch,
            boot_mode,
            root: None,
            work_dir,
            name: name.to_string(),
            limits: Limits::default(),
            user: None,
            buses: vec![Bus::Virtio, Bus::Sata],
            force_tcg: false,
        }
    }
}

/// How one boot on one bus ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "lowercase")]
pub enum Outcome {
    /// The guest mounted and wrote its root filesystem.
    Booted {
        /// What showed it, in words (`ext4 root filesystem mounted read-write (mount count 1
        /// → 2)`).
        signal: String,
    },
    /// The guest did not come up.
    Failed {
        /// What was seen, in words (`kernel panic: VFS: Unable to mount root fs …`).
        reason: String,
    },
}

/// One boot of the disk on one bus.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// The disk's bus.
    pub bus: Bus,
    /// How it ended.
    pub outcome: Outcome,
    /// Milliseconds from starting QEMU to the deciding signal.
    pub elapsed_ms: u64,
    /// Milliseconds from starting QEMU to the first write into the root filesystem.
    pub first_root_write_ms: Option<u64>,
    /// Guest resets seen.
    pub resets: u32,
    /// Bytes the guest wrote (kept in the overlay, then discarded).
    pub bytes_written: u64,
    /// Serial console text (bounded; the middle of a long log is left out).
    pub console: String,
    /// Firmware debug log (SeaBIOS and OVMF write it to I/O port 0x402).
    pub firmware_log: String,
    /// QEMU's own messages (standard error), bounded.
    pub qemu_log: String,
    /// Screenshot at success or at the moment of failure, PNG.
    #[serde(with = "b64", default, skip_serializing_if = "Option::is_none")]
    pub screen_png: Option<Vec<u8>>,
}

impl std::fmt::Debug for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attempt")
            .field("bus", &self.bus)
            .field("outcome", &self.outcome)
            .field("elapsed_ms", &self.elapsed_ms)
            .field("first_root_write_ms", &self.first_root_write_ms)
            .field("resets", &self.resets)
            .field("bytes_written", &self.bytes_written)
            .field("console_bytes", &self.console.len())
            .field("firmware_log_bytes", &self.firmware_log.len())
            .field("qemu_log", &self.qemu_log)
            .field("screen_png_bytes", &self.screen_png.as_ref().map(Vec::len))
            .finish()
    }
}

/// The outcome of a boot check, with its evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Whether the guest booted on some bus.
    pub passed: bool,
    /// Why it failed (the failures of every bus tried), when it did.
    pub failure: Option<String>,
    /// The bus it booted on.
    pub bus: Option<Bus>,
    /// A warning, e.g. that it booted only on SATA and lacks virtio drivers.
    pub warning: Option<String>,
    /// `SeaBIOS`, `OVMF (/usr/share/OVMF/OVMF_CODE_4M.fd)`, …
    pub firmware: String,
    /// `kvm` or `tcg`, with the CPU model, and why TCG when KVM was not used.
    pub accelerator: String,
    /// QEMU's version line.
    pub qemu: String,
    /// Architecture booted.
    pub arch: Arch,
    /// Boot mode booted.
    pub boot_mode: BootMode,
    /// Wall-clock limit per bus, seconds.
    pub limit_secs: u64,
    /// Milliseconds the whole check took.
    pub total_ms: u64,
    /// Each bus tried, in order.
    pub attempts: Vec<Attempt>,
}

impl Report {
    /// The attempt that decided the result: the successful one, else the last.
    #[must_use]
    pub fn deciding(&self) -> Option<&Attempt> {
        self.attempts
            .iter()
            .find(|a| matches!(a.outcome, Outcome::Booted { .. }))
            .or_else(|| self.attempts.last())
    }
}

mod b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    #[allow(clippy::ref_option)]
    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_some(&STANDARD.encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| STANDARD.decode(s).map_err(serde::de::Error::custom))
            .transpose()
    }
}
