//! Finding QEMU and the firmware, and choosing the accelerator.
//!
//! Debian's packages: `qemu-system-x86` (`qemu-system-x86_64`, SeaBIOS through
//! `seabios`), `ovmf` (`/usr/share/OVMF/OVMF_CODE_4M.fd` and its variable store),
//! `qemu-system-arm` (`qemu-system-aarch64`) and `qemu-efi-aarch64`
//! (`/usr/share/AAVMF/AAVMF_CODE.fd`). They must come from the same suite as the installed
//! `qemu-utils` (`apt-get install -t bookworm-backports …` on bookworm), or apt replaces it.
//!
//! KVM is used only when a probe shows it really runs a guest: `/dev/kvm` opened by vmie
//! (QEMU gets the open descriptor, so the sandbox user needs no access to the device), then
//! a QEMU in the same sandbox runs SeaBIOS to its end with no disk ("No bootable device" on
//! the firmware port). Some hosts have the device but fail to run a vCPU, or fail with
//! `-cpu host` only (nested virtualisation hiding MSRs): CPU models are tried in order
//! (`host`, `host,-arch-capabilities`, `qemu64`). The answer is kept for the process.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::BootError;
use crate::{Arch, BootMode};

/// The accelerator a boot uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "accel", rename_all = "lowercase")]
pub enum Accel {
    /// KVM with this `-cpu` model.
    Kvm {
        /// The CPU model.
        cpu: String,
    },
    /// TCG (emulation), and why not KVM.
    Tcg {
        /// Why KVM was not used.
        why: String,
    },
}

impl Accel {
    /// `kvm (cpu host)` or `tcg (…why…)`.
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Accel::Kvm { cpu } => format!("kvm (cpu {cpu})"),
            Accel::Tcg { why } => format!("tcg ({why})"),
        }
    }
}

/// The firmware a boot uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firmware {
    /// `SeaBIOS`, `OVMF` or `AAVMF`.
    pub name: &'static str,
    /// The code image (UEFI; SeaBIOS is QEMU's default and has none here).
    pub code: Option<PathBuf>,
    /// The variable-store template, copied into memory for each boot.
    pub vars: Option<PathBuf>,
}

impl Firmware {
    /// `OVMF (/usr/share/OVMF/OVMF_CODE_4M.fd)` or `SeaBIOS`.
    #[must_use]
    pub fn describe(&self) -> String {
        match &self.code {
            Some(c) => format!("{} ({})", self.name, c.display()),
            None => self.name.to_string(),
        }
    }
}

/// QEMU and firmware for one architecture and boot mode.
#[derive(Debug, Clone)]
pub struct Tools {
    /// The architecture.
    pub arch: Arch,
    /// `qemu-system-x86_64` or `qemu-system-aarch64`.
    pub qemu: PathBuf,
    /// The firmware.
    pub firmware: Firmware,
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn first_pair(pairs: &[(&str, &str)]) -> Option<(PathBuf, PathBuf)> {
    pairs.iter().find_map(|(c, v)| {
        let (c, v) = (Path::new(c), Path::new(v));
        (c.is_file() && v.is_file()).then(|| (c.to_path_buf(), v.to_path_buf()))
    })
}

/// Finds QEMU and the firmware for `arch` and `mode`, or says which Debian package is
/// missing.
pub fn find_tools(arch: Arch, mode: BootMode) -> Result<Tools, BootError> {
    let (bin, pkg) = match arch {
        Arch::X86_64 => ("qemu-system-x86_64", "qemu-system-x86"),
        Arch::Arm64 => ("qemu-system-aarch64", "qemu-system-arm"),
    };
    let qemu = which(bin).ok_or_else(|| {
        BootError::Unavailable(format!(
            "{bin} is not installed (Debian package {pkg}, from the same suite as qemu-utils)"
        ))
    })?;
    let firmware = match (arch, mode) {
        (Arch::X86_64, BootMode::LegacyBios) => {
            let found = [
                "/usr/share/qemu/bios-256k.bin",
                "/usr/share/seabios/bios-256k.bin",
            ]
            .iter()
            .any(|p| Path::new(p).is_file());
            if !found {
                return Err(BootError::Unavailable(
                    "SeaBIOS is not installed (Debian package seabios, brought by qemu-system-x86)"
                        .into(),
                ));
            }
            Firmware {
                name: "SeaBIOS",
                code: None,
                vars: None,
            }
        }
        (Arch::X86_64, BootMode::Uefi) => {
            let (c, v) = first_pair(&[
                (
                    "/usr/share/OVMF/OVMF_CODE_4M.fd",
                    "/usr/share/OVMF/OVMF_VARS_4M.fd",
                ),
                (
                    "/usr/share/OVMF/OVMF_CODE.fd",
                    "/usr/share/OVMF/OVMF_VARS.fd",
                ),
                (
                    "/usr/share/edk2/ovmf/OVMF_CODE.fd",
                    "/usr/share/edk2/ovmf/OVMF_VARS.fd",
                ),
            ])
            .ok_or_else(|| {
                BootError::Unavailable(
                    "OVMF (UEFI firmware for x86_64) is not installed (Debian package ovmf)".into(),
                )
            })?;
            Firmware {
                name: "OVMF",
                code: Some(c),
                vars: Some(v),
            }
        }
        (Arch::Arm64, BootMode::Uefi) => {
            let (c, v) = first_pair(&[
                (
                    "/usr/share/AAVMF/AAVMF_CODE.fd",
                    "/usr/share/AAVMF/AAVMF_VARS.fd",
                ),
                (
                    "/usr/share/edk2/aarch64/QEMU_EFI-pflash.raw",
                    "/usr/share/edk2/aarch64/vars-template-pflash.raw",
                ),
            ])
            .ok_or_else(|| {
                BootError::Unavailable(
                    "AAVMF (UEFI firmware for arm64) is not installed (Debian package qemu-efi-aarch64)"
                        .into(),
                )
            })?;
            Firmware {
                name: "AAVMF",
                code: Some(c),
                vars: Some(v),
            }
        }
        (Arch::Arm64, BootMode::LegacyBios) => {
            return Err(BootError::Unavailable(
                "arm64 guests boot with UEFI only".into(),
            ));
        }
    };
    Ok(Tools {
        arch,
        qemu,
        firmware,
    })
}

/// QEMU's version line (`QEMU emulator version 10.0.2 (…)`), kept per binary.
#[must_use]
pub fn qemu_version(qemu: &Path) -> String {
    static CACHE: Mutex<Vec<(PathBuf, String)>> = Mutex::new(Vec::new());
    if let Ok(c) = CACHE.lock()
        && let Some((_, v)) = c.iter().find(|(p, _)| p == qemu)
    {
        return v.clone();
    }
    let v = std::process::Command::new(qemu)
        .arg("--version")
        .env_clear()
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "unknown".into());
    if let Ok(mut c) = CACHE.lock() {
        c.push((qemu.to_path_buf(), v.clone()));
    }
    v
}

/// Opens `/dev/kvm` for a boot (QEMU gets the descriptor).
pub fn open_kvm() -> std::io::Result<OwnedFd> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(OwnedFd::from)
}

/// The accelerator chosen per architecture, for the process.
static ACCEL_CACHE: Mutex<Vec<(Arch, Accel)>> = Mutex::new(Vec::new());

/// CPU models tried with KVM, in order.
pub const KVM_CPUS: [&str; 3] = ["host", "host,-arch-capabilities", "qemu64"];

/// The accelerator for `tools` (probed once per process and architecture; TCG for a guest
/// of another architecture than the host's).
pub fn accelerator(tools: &Tools, user: Option<(u32, u32)>) -> Accel {
    let host_arm = cfg!(target_arch = "aarch64");
    let native = match tools.arch {
        Arch::X86_64 => cfg!(target_arch = "x86_64"),
        Arch::Arm64 => host_arm,
    };
    if !native {
        return Accel::Tcg {
            why: "the guest's architecture differs from the host's".into(),
        };
    }
    if let Ok(c) = ACCEL_CACHE.lock()
        && let Some((_, a)) = c.iter().find(|(a, _)| *a == tools.arch)
    {
        return a.clone();
    }
    let a = probe_kvm(tools, user);
    tracing::info!(accelerator = %a.describe(), "boot check: accelerator chosen");
    if let Ok(mut c) = ACCEL_CACHE.lock() {
        c.push((tools.arch, a.clone()));
    }
    a
}

/// Records that KVM failed to run a guest of `arch` (an internal error mid-boot): later
/// checks in this process use TCG from the start.
pub fn kvm_failed(arch: Arch, why: &str) {
    if let Ok(mut c) = ACCEL_CACHE.lock() {
        c.retain(|(a, _)| *a != arch);
        c.push((
            arch,
            Accel::Tcg {
                why: format!("KVM failed to run a guest: {why}"),
            },
        ));
    }
}

fn probe_kvm(tools: &Tools, user: Option<(u32, u32)>) -> Accel {
    if let Err(e) = open_kvm() {
        return Accel::Tcg {
            why: format!("/dev/kvm: {e}"),
        };
    }
    if tools.arch != Arch::X86_64 {
        // The probe below runs SeaBIOS; on an arm64 host, trust the device.
        return Accel::Kvm { cpu: "host".into() };
    }
    let mut last = String::new();
    for cpu in KVM_CPUS {
        match probe_once(tools, cpu, user) {
            Ok(()) => return Accel::Kvm { cpu: cpu.into() },
            Err(e) => {
                tracing::info!(cpu, error = %e, "boot check: KVM probe failed");
                last = e;
            }
        }
    }
    Accel::Tcg {
        why: format!("KVM is present but did not run a guest: {last}"),
    }
}

/// Runs SeaBIOS under KVM with `-cpu cpu` and no disk, in the sandbox; Ok when it reaches
/// "No bootable device" within 30 seconds.
fn probe_once(tools: &Tools, cpu: &str, user: Option<(u32, u32)>) -> Result<(), String> {
    use std::io::Read;
    let kvm = open_kvm().map_err(|e| format!("/dev/kvm: {e}"))?;
    let (mine, theirs) = std::os::unix::net::UnixStream::pair().map_err(|e| e.to_string())?;
    let args: Vec<String> = [
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-machine",
        "q35",
        "-m",
        "64",
        "-nic",
        "none",
        "-add-fd",
        &format!("fd={},set=3", std::os::fd::AsRawFd::as_raw_fd(&kvm)),
        "-accel",
        "kvm,device=/dev/fdset/3",
        "-cpu",
        cpu,
        "-chardev",
        &format!(
            "socket,id=dbg,fd={}",
            std::os::fd::AsRawFd::as_raw_fd(&theirs)
        ),
        "-device",
        "isa-debugcon,iobase=0x402,chardev=dbg",
        "-sandbox",
        crate::sandbox::QEMU_SECCOMP,
    ]
    .iter()
    .map(|s| (*s).to_string())
    .collect();
    let mut child = crate::sandbox::spawn(
        &tools.qemu,
        &args,
        &[kvm.as_fd(), theirs.as_fd()],
        user,
        crate::sandbox::ProcLimits {
            cpu_secs: 60,
            address_space: 8 << 30,
            open_files: 256,
        },
    )
    .map_err(|e| e.to_string())?;
    drop(theirs);
    drop(kvm);
    let mut stderr = child.stderr.take();
    let deadline = Instant::now() + Duration::from_secs(30);
    let _ = mine.set_read_timeout(Some(Duration::from_millis(200)));
    let mut log = Vec::new();
    let mut buf = [0u8; 4096];
    let mut r = &mine;
    let result = loop {
        if String::from_utf8_lossy(&log).contains("No bootable device") {
            break Ok(());
        }
        if Instant::now() > deadline {
            break Err("SeaBIOS did not finish within 30 s".to_string());
        }
        match r.read(&mut buf) {
            Ok(0) => {
                // QEMU closed the port: it exited.
                let _ = child.wait();
                let mut e = String::new();
                if let Some(s) = stderr.as_mut() {
                    let _ = s.take(4096).read_to_string(&mut e);
                }
                let first = e
                    .lines()
                    .rfind(|l| !l.contains("warning:"))
                    .unwrap_or("QEMU exited")
                    .to_string();
                break Err(first);
            }
            Ok(n) => log.extend_from_slice(&buf[..n.min(4096)]),
            Err(_) => {}
        }
        if log.len() > 1 << 20 {
            log.drain(..log.len() / 2);
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    result
}
