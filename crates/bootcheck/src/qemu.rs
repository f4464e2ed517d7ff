//! QEMU's command line for one boot.
//!
//! Nothing in it names a path QEMU could write, or a socket another process could reach:
//! the disk (NBD), the monitor (QMP), the serial console and the firmware port are socket
//! pairs QEMU inherited; the screenshot file and the UEFI variable store are memory files
//! passed in descriptor sets (`/dev/fdset/N`); `/dev/kvm` is passed open. No network device
//! (`-nic none` with `-nodefaults`), no USB, no shared folders, no user configuration
//! files, a seccomp filter (`-sandbox`), guest resets counted rather than forbidden, a guest
//! panic (pvpanic) or power-off pausing the VM so the screen can still be read.

use std::os::fd::RawFd;

use crate::tools::{Accel, Tools};
use crate::{Arch, Bus};

/// Descriptor set of the screenshot memory file.
pub const FDSET_SCREEN: u32 = 1;
/// Descriptor set of the UEFI variable store.
pub const FDSET_VARS: u32 = 2;
/// Descriptor set of `/dev/kvm`.
pub const FDSET_KVM: u32 = 3;

/// The descriptors QEMU inherits for one boot.
#[derive(Debug, Clone, Copy)]
pub struct Fds {
    /// NBD socket (the disk).
    pub nbd: RawFd,
    /// QMP socket.
    pub qmp: RawFd,
    /// Serial console socket.
    pub serial: RawFd,
    /// Firmware debug port socket (x86_64).
    pub debugcon: Option<RawFd>,
    /// Screenshot memory file, opened write-only.
    pub screen: RawFd,
    /// UEFI variable store memory file, read-write.
    pub vars: Option<RawFd>,
    /// `/dev/kvm`, when KVM is used.
    pub kvm: Option<RawFd>,
}

/// The arguments of `qemu-system-*` for booting on `bus`.
#[must_use]
pub fn args(tools: &Tools, accel: &Accel, bus: Bus, memory_mib: u32, fds: &Fds) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| (*s).to_string()));
    push(&[
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-nic",
        "none",
        "-sandbox",
        crate::sandbox::QEMU_SECCOMP,
        "-msg",
        "timestamp=off",
        "-smp",
        "1",
        "-m",
        &memory_mib.to_string(),
        "-rtc",
        "base=utc",
        "-boot",
        "strict=on",
        "-action",
        "panic=pause",
        "-action",
        "shutdown=pause",
        "-add-fd",
        &format!("fd={},set={FDSET_SCREEN}", fds.screen),
    ]);
    let mut machine = match tools.arch {
        Arch::X86_64 => "q35".to_string(),
        Arch::Arm64 => "virt".to_string(),
    };
    if let (Some(code), Some(vars)) = (&tools.firmware.code, fds.vars) {
        push(&[
            "-add-fd",
            &format!("fd={vars},set={FDSET_VARS}"),
            "-blockdev",
            &format!(
                "driver=file,node-name=fw-code,filename={},read-only=on",
                code.display()
            ),
            "-blockdev",
            &format!("driver=file,node-name=fw-vars,filename=/dev/fdset/{FDSET_VARS},locking=off"),
        ]);
        machine.push_str(",pflash0=fw-code,pflash1=fw-vars");
    }
    push(&["-machine", &machine]);
    match (accel, fds.kvm) {
        (Accel::Kvm { cpu }, Some(kvm)) => push(&[
            "-add-fd",
            &format!("fd={kvm},set={FDSET_KVM}"),
            "-accel",
            &format!("kvm,device=/dev/fdset/{FDSET_KVM}"),
            "-cpu",
            cpu,
        ]),
        _ => push(&["-accel", "tcg", "-cpu", "max"]),
    }
    push(&[
        "-chardev",
        &format!("socket,id=qmp,fd={}", fds.qmp),
        "-mon",
        "chardev=qmp,mode=control",
        "-chardev",
        &format!("socket,id=ser0,fd={}", fds.serial),
        "-serial",
        "chardev:ser0",
        "-blockdev",
        &format!(
            "driver=nbd,node-name=disk0,server.type=fd,server.str={},export={}",
            fds.nbd,
            crate::nbd::EXPORT
        ),
    ]);
    a.extend(devices(tools, bus, fds));
    a
}

/// The guest's devices: display, panic device, firmware debug port, and the disk on `bus`.
fn devices(tools: &Tools, bus: Bus, fds: &Fds) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| (*s).to_string()));
    match tools.arch {
        Arch::X86_64 => {
            push(&["-device", "VGA", "-device", "pvpanic"]);
            if let Some(d) = fds.debugcon {
                push(&[
                    "-chardev",
                    &format!("socket,id=dbg,fd={d}"),
                    "-device",
                    "isa-debugcon,iobase=0x402,chardev=dbg",
                ]);
            }
        }
        Arch::Arm64 => push(&["-device", "virtio-gpu-pci", "-device", "pvpanic-pci"]),
    }
    match (bus, tools.arch) {
        (Bus::Virtio, _) => push(&["-device", "virtio-blk-pci,drive=disk0,bootindex=1"]),
        // q35 has an AHCI controller built in; virt needs one.
        (Bus::Sata, Arch::X86_64) => push(&["-device", "ide-hd,drive=disk0,bus=ide.0,bootindex=1"]),
        (Bus::Sata, Arch::Arm64) => push(&[
            "-device",
            "ich9-ahci,id=sata",
            "-device",
            "ide-hd,drive=disk0,bus=sata.0,bootindex=1",
        ]),
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::Firmware;
    use std::path::PathBuf;

    fn fds() -> Fds {
        Fds {
            nbd: 10,
            qmp: 11,
            serial: 12,
            debugcon: Some(13),
            screen: 14,
            vars: Some(15),
            kvm: Some(16),
        }
    }

    #[test]
    fn test_args_sandboxed_no_network_no_paths_to_write() {
        let tools = Tools {
            arch: Arch::X86_64,
            qemu: PathBuf::from("/usr/bin/qemu-system-x86_64"),
            firmware: Firmware {
                name: "OVMF",
                code: Some(PathBuf::from("/usr/share/OVMF/OVMF_CODE_4M.fd")),
                vars: Some(PathBuf::from("/usr/share/OVMF/OVMF_VARS_4M.fd")),
            },
        };
        let a = args(
            &tools,
            &Accel::Kvm { cpu: "host".into() },
            Bus::Sata,
            512,
            &fds(),
        );
        let s = a.join(" ");
        assert!(s.contains("-nodefaults"));
        assert!(s.contains("-nic none"));
        assert!(s.contains("-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny"));
        assert!(s.contains("kvm,device=/dev/fdset/3"));
        assert!(s.contains("server.type=fd,server.str=10"));
        assert!(s.contains("pflash0=fw-code,pflash1=fw-vars"));
        assert!(s.contains("ide-hd,drive=disk0,bus=ide.0"));
        assert!(!s.contains("virtfs") && !s.contains("-net ") && !s.contains("usb"));
        // No file path but the read-only firmware code.
        for w in &a {
            if w.contains('/') && !w.contains("/dev/fdset/") {
                assert!(
                    w.contains("OVMF_CODE_4M.fd") && w.contains("read-only=on"),
                    "{w}"
                );
            }
        }
        let t = args(
            &tools,
            &Accel::Tcg { why: "test".into() },
            Bus::Virtio,
            512,
            &Fds { kvm: None, ..fds() },
        )
        .join(" ");
        assert!(t.contains("-accel tcg -cpu max"));
        assert!(t.contains("virtio-blk-pci,drive=disk0"));
    }
}
