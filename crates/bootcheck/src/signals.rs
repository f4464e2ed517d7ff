//! What a boot shows: console lines that mean failure, and the events one boot's threads
//! send to it.

use serde_json::Value;

/// Which text stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The guest's first serial port.
    Serial,
    /// The firmware's debug port (0x402).
    Firmware,
    /// QEMU's standard error.
    Qemu,
}

/// Something a console line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// `Kernel panic - not syncing: …`.
    Panic(String),
    /// The firmware found nothing to boot.
    NoBootableDevice(String),
    /// The firmware fell through to its UEFI shell (no boot option worked).
    UefiShell,
    /// The boot loader stopped with an error.
    Loader(String),
    /// The initramfs gave up waiting for the root device.
    RootMissing(String),
    /// The root filesystem has no init.
    NoInit(String),
    /// SeaBIOS jumped to the disk's boot sector (firmware log).
    BootSector,
    /// QEMU's accelerator failed (`KVM internal error`): not the guest's fault.
    Accelerator(String),
}

impl Seen {
    /// Whether this failure is the disk's whatever its bus: the firmware, which drives
    /// virtio and SATA alike, found nothing to boot (no second bus is tried).
    #[must_use]
    pub fn firmware_level(&self) -> bool {
        matches!(self, Seen::NoBootableDevice(_) | Seen::UefiShell)
    }

    /// The failure in words, as `FirstBootFailure: …` shows it.
    #[must_use]
    pub fn reason(&self) -> String {
        match self {
            Seen::Panic(m) => format!("kernel panic: {m}"),
            Seen::NoBootableDevice(l) => format!("no bootable device (the firmware said: {l:?})"),
            Seen::UefiShell => {
                "no bootable device (no UEFI boot option worked; the firmware fell through to its shell)"
                    .into()
            }
            Seen::Loader(l) => format!("the boot loader failed: {l:?}"),
            Seen::RootMissing(l) => format!("the root filesystem was not found: {l:?}"),
            Seen::NoInit(l) => format!("no init on the root filesystem: {l:?}"),
            Seen::Accelerator(l) => format!("the accelerator failed: {l:?}"),
            Seen::BootSector => "the firmware started the disk's boot sector".into(),
        }
    }
}

/// What one boot's helper threads tell it.
#[derive(Debug, Clone)]
pub enum Event {
    /// A console line that means failure.
    Console(Stream, Seen),
    /// A QMP event (`RESET`, `SHUTDOWN`, `GUEST_PANICKED`, `STOP`, …) and its data.
    Qmp(String, Value),
    /// A stream ended (QEMU closed it or exited).
    Closed(Stream),
}

fn shorten(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() > 200 {
        let mut t: String = s.chars().take(200).collect();
        t.push('…');
        t
    } else {
        s.to_string()
    }
}

/// Recognises a line QEMU printed on its standard error that means the accelerator, not the
/// guest, failed (nested KVM that cannot emulate an instruction of the boot loader).
#[must_use]
pub fn classify_qemu(line: &str) -> Option<Seen> {
    (line.contains("KVM internal error") || line.starts_with("KVM: entry failed"))
        .then(|| Seen::Accelerator(shorten(line)))
}

/// Recognises a console line (already cleaned of escapes) that means the boot failed, or
/// SeaBIOS's line as it starts the boot sector.
#[must_use]
pub fn classify(line: &str) -> Option<Seen> {
    if line.starts_with("Booting from 0000:7c00") {
        return Some(Seen::BootSector);
    }
    const PANIC: &str = "Kernel panic - not syncing:";
    if let Some(i) = line.find(PANIC) {
        return Some(Seen::Panic(shorten(&line[i + PANIC.len()..])));
    }
    // SeaBIOS: "No bootable device." (then it retries); OVMF: "BdsDxe: No bootable option or
    // device was found."; also seen from other BIOSes.
    if line.contains("No bootable device")
        || line.contains("No bootable option or device was found")
        || line.contains("no bootable device")
    {
        return Some(Seen::NoBootableDevice(shorten(line)));
    }
    if line.contains("UEFI Interactive Shell") || line.starts_with("Shell>") {
        return Some(Seen::UefiShell);
    }
    // Boot loaders: a partition-table MBR with nothing active, GRUB's rescue prompt,
    // SYSLINUX without its kernel or its ldlinux.
    for pat in [
        "Missing operating system",
        "Operating system not found",
        "Invalid partition table",
        "grub rescue>",
        "Could not find kernel image",
        "Failed to load ldlinux",
        "Boot error",
        "Failed to start image",
        "Error loading operating system",
        "BOOTMGR is missing",
    ] {
        if line.contains(pat) {
            return Some(Seen::Loader(shorten(line)));
        }
    }
    // Debian's initramfs-tools ("Gave up waiting for root file system device", "ALERT!
    // UUID=… does not exist.  Dropping to a shell!"), dracut ("Could not boot", "…does not
    // exist"), and the same words from minimal initramfs images.
    for pat in [
        "Gave up waiting for root",
        "does not exist.  Dropping to a shell",
        "does not exist. Dropping to a shell",
        "Cannot open root device",
        "Could not boot.",
        "Unable to mount root fs",
    ] {
        if line.contains(pat) {
            return Some(Seen::RootMissing(shorten(line)));
        }
    }
    for pat in [
        "No init found",
        "No working init found",
        "Failed to execute /init",
    ] {
        if line.contains(pat) {
            return Some(Seen::NoInit(shorten(line)));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_classify_failure_lines_and_ignores_ordinary_ones() {
        assert_eq!(
            classify(
                "[    2.1] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)"
            ),
            Some(Seen::Panic(
                "VFS: Unable to mount root fs on unknown-block(0,0)".into()
            ))
        );
        assert!(matches!(
            classify("No bootable device.  Retrying in 60 seconds."),
            Some(Seen::NoBootableDevice(_))
        ));
        assert!(matches!(
            classify("BdsDxe: No bootable option or device was found."),
            Some(Seen::NoBootableDevice(_))
        ));
        assert_eq!(
            classify("UEFI Interactive Shell v2.2"),
            Some(Seen::UefiShell)
        );
        assert!(matches!(
            classify("Could not find kernel image: /vmlinuz"),
            Some(Seen::Loader(_))
        ));
        assert!(matches!(
            classify("ALERT!  UUID=1234 does not exist.  Dropping to a shell!"),
            Some(Seen::RootMissing(_))
        ));
        assert!(matches!(
            classify("No init found. Try passing init= bootarg."),
            Some(Seen::NoInit(_))
        ));
        for ok in [
            "Booting from Hard Disk...",
            "[    0.000000] Linux version 6.12",
            "EXT4-fs (vda1): mounted filesystem",
            "",
        ] {
            assert_eq!(classify(ok), None, "{ok}");
        }
        let long = format!("Kernel panic - not syncing: {}", "x".repeat(1000));
        let Some(Seen::Panic(m)) = classify(&long) else {
            panic!("not a panic")
        };
        assert!(m.chars().count() <= 201);
        assert!(
            Seen::Panic("VFS".into())
                .reason()
                .starts_with("kernel panic: VFS")
        );
    }
}
