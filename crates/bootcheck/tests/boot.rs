//! Boots real guests: the Debian kernel, busybox or Debian initramfs, SYSLINUX or
//! systemd-boot, ext4 roots — built at test time by `support/guests.rs`. Each test waits for
//! the boot check's own decision (it never sleeps on the clock); the limits are generous so a
//! busy two-core machine under TCG still finishes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/guests.rs"]
mod guests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bootcheck::{Arch, BootMode, BootSpec, Bus, FileSource, Outcome, Region, Report};
use guests::{GuestSpec, Initrd, Loader};

fn boot(name: &str, spec: &GuestSpec) -> Report {
    guests::need(
        "qemu-system-x86_64",
        "qemu-system-x86 (from the suite of qemu-utils)",
    );
    let work = tempfile::tempdir().unwrap();
    let g = guests::build(work.path(), spec);
    let scratch = work.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let mode = if g.uefi {
        BootMode::Uefi
    } else {
        BootMode::LegacyBios
    };
    let mut bs = BootSpec::new(Arch::X86_64, mode, scratch.clone(), name);
    bs.root = Some(Region {
        start: g.root.0,
        len: g.root.1,
    });
    bs.limits.memory_mib = 512;
    bs.limits.kvm_timeout = Duration::from_secs(240);
    bs.limits.tcg_timeout = Duration::from_secs(1200);
    let before = std::fs::read(&g.disk).unwrap();
    let src = Arc::new(FileSource::open(&g.disk).unwrap());
    let t = Instant::now();
    let report = bootcheck::check(&bs, src, &|| false).unwrap();
    eprintln!(
        "{name}: passed={} in {:.1} s, {} — {:?} {:?}",
        report.passed,
        t.elapsed().as_secs_f64(),
        report.accelerator,
        report.failure,
        report.warning
    );
    for a in &report.attempts {
        eprintln!(
            "  {}: {:?} after {} ms, {} bytes written, console {} bytes, firmware log {} bytes, screen {} bytes",
            a.bus.name(),
            a.outcome,
            a.elapsed_ms,
            a.bytes_written,
            a.console.len(),
            a.firmware_log.len(),
            a.screen_png.as_ref().map_or(0, Vec::len)
        );
    }
    // Nothing the guest wrote reached the image, and no overlay is left behind.
    assert!(
        std::fs::read(&g.disk).unwrap() == before,
        "the disk image changed"
    );
    assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0);
    // VMIE_BOOT_EVIDENCE_DIR=DIR keeps each guest's disk and evidence (to look at them).
    if let Ok(dir) = std::env::var("VMIE_BOOT_EVIDENCE_DIR") {
        let d = std::path::Path::new(&dir).join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(&g.disk, d.join("disk.raw")).unwrap();
        if let Some(a) = report.deciding() {
            std::fs::write(d.join("console.log"), &a.console).unwrap();
            if let Some(p) = &a.screen_png {
                std::fs::write(d.join("screen.png"), p).unwrap();
            }
        }
    }
    report
}

fn png_ok(a: &bootcheck::Attempt) {
    let png = a.screen_png.as_ref().expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    let w = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert!(w >= 320 && h >= 200, "{w}x{h}");
}

#[test]
fn test_boot_legacy_bios_serial_console_passes_on_virtio() {
    let r = boot("legacy-serial", &GuestSpec::good(Loader::Bios));
    assert!(r.passed, "{:?}", r.failure);
    assert_eq!(r.bus, Some(Bus::Virtio));
    assert_eq!(r.attempts.len(), 1);
    assert_eq!(r.firmware, "SeaBIOS");
    let a = &r.attempts[0];
    let Outcome::Booted { signal } = &a.outcome else {
        panic!()
    };
    assert!(
        signal.contains("ext4 root filesystem mounted read-write"),
        "{signal}"
    );
    assert!(a.console.contains("Linux version"), "{}", a.console);
    assert!(a.firmware_log.contains("SeaBIOS"));
    assert!(r.warning.is_none());
    png_ok(a);
}

#[test]
fn test_boot_uefi_no_serial_console_debian_initramfs_passes() {
    let spec = GuestSpec {
        serial: false,
        initrd: Initrd::Debian,
        ..GuestSpec::good(Loader::Uefi)
    };
    let r = boot("uefi-no-serial", &spec);
    assert!(r.passed, "{:?}", r.failure);
    assert_eq!(r.bus, Some(Bus::Virtio));
    assert!(r.firmware.starts_with("OVMF"), "{}", r.firmware);
    let a = &r.attempts[0];
    // The kernel printed nothing on the serial port: success came from the disk.
    assert!(!a.console.contains("Linux version"), "{}", a.console);
    png_ok(a);
}

#[test]
fn test_boot_root_without_init_fails_with_evidence() {
    let spec = GuestSpec {
        init: false,
        ..GuestSpec::good(Loader::Bios)
    };
    let r = boot("no-init", &spec);
    assert!(!r.passed);
    let f = r.failure.clone().unwrap();
    assert!(f.contains("no init on the root filesystem"), "{f}");
    assert_eq!(r.attempts.len(), 2);
    let a = r.deciding().unwrap();
    assert!(a.console.contains("No init found"));
    png_ok(a);
}

#[test]
fn test_boot_wrong_root_fails_with_evidence() {
    let spec = GuestSpec {
        root: Some("UUID=00000000-1111-2222-3333-444444444444".into()),
        ..GuestSpec::good(Loader::Uefi)
    };
    let r = boot("wrong-root", &spec);
    assert!(!r.passed);
    let f = r.failure.clone().unwrap();
    assert!(f.contains("the root filesystem was not found"), "{f}");
    assert!(f.contains("on virtio and SATA"), "{f}");
    let a = r.deciding().unwrap();
    assert!(a.console.contains("does not exist"));
    png_ok(a);
}

#[test]
fn test_boot_no_boot_loader_fails_with_no_bootable_device() {
    let r = boot("no-loader", &GuestSpec::good(Loader::None));
    assert!(!r.passed);
    let f = r.failure.clone().unwrap();
    assert!(f.contains("no bootable device"), "{f}");
    // The firmware drives every bus alike: no second bus is tried.
    assert_eq!(r.attempts.len(), 1);
    let a = r.deciding().unwrap();
    assert!(
        a.firmware_log.contains("Booting from Hard Disk"),
        "{}",
        a.firmware_log
    );
    png_ok(a);
}

#[test]
fn test_boot_initramfs_without_virtio_passes_on_sata_with_warning() {
    let spec = GuestSpec {
        initrd: Initrd::Busybox { virtio: false },
        ..GuestSpec::good(Loader::Bios)
    };
    let r = boot("no-virtio", &spec);
    assert!(r.passed, "{:?}", r.failure);
    assert_eq!(r.bus, Some(Bus::Sata));
    assert_eq!(r.attempts.len(), 2);
    assert!(matches!(r.attempts[0].outcome, Outcome::Failed { .. }));
    let w = r.warning.clone().unwrap();
    assert!(w.contains("lacks virtio drivers"), "{w}");
}
