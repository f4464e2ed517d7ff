//! `scripts/bench-boot`: boot-check time per test guest, on TCG and on KVM where it works.
//! Ignored by `cargo test`; the script runs it with `--ignored`. Prints a table; asserts
//! nothing about time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/guests.rs"]
mod guests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bootcheck::{Accel, Arch, BootMode, BootSpec, FileSource, Region};
use guests::{GuestSpec, Initrd, Loader};

fn one(g: &guests::Guest, force_tcg: bool, name: &str) -> (String, f64, String) {
    let scratch = tempfile::tempdir().unwrap();
    let mode = if g.uefi {
        BootMode::Uefi
    } else {
        BootMode::LegacyBios
    };
    let mut bs = BootSpec::new(Arch::X86_64, mode, scratch.path().to_path_buf(), name);
    bs.root = Some(Region {
        start: g.root.0,
        len: g.root.1,
    });
    bs.limits.memory_mib = 512;
    bs.limits.kvm_timeout = Duration::from_secs(300);
    bs.limits.tcg_timeout = Duration::from_secs(1200);
    bs.force_tcg = force_tcg;
    let t = Instant::now();
    let r = bootcheck::check(&bs, Arc::new(FileSource::open(&g.disk).unwrap()), &|| false).unwrap();
    let verdict = match (&r.failure, r.bus) {
        (Some(f), _) => format!("failed: {}", f.chars().take(60).collect::<String>()),
        (None, Some(b)) => format!("passed on {}", b.name()),
        (None, None) => "?".into(),
    };
    (r.accelerator, t.elapsed().as_secs_f64(), verdict)
}

#[test]
#[ignore = "benchmark: run by scripts/bench-boot"]
fn bench_boot() {
    guests::need("qemu-system-x86_64", "qemu-system-x86");
    let work = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, GuestSpec)> = vec![
        ("bios-busybox-serial", GuestSpec::good(Loader::Bios)),
        (
            "uefi-debian-initramfs-no-serial",
            GuestSpec {
                serial: false,
                initrd: Initrd::Debian,
                ..GuestSpec::good(Loader::Uefi)
            },
        ),
        (
            "bios-no-virtio-drivers",
            GuestSpec {
                initrd: Initrd::Busybox { virtio: false },
                ..GuestSpec::good(Loader::Bios)
            },
        ),
        (
            "bios-no-init",
            GuestSpec {
                init: false,
                ..GuestSpec::good(Loader::Bios)
            },
        ),
    ];
    let kvm = {
        let t = bootcheck::find_tools(Arch::X86_64, BootMode::LegacyBios).unwrap();
        let user = bootcheck::sandbox::sandbox_user(None).unwrap();
        bootcheck::tools::accelerator(&t, user)
    };
    println!("KVM probe: {}", kvm.describe());
    println!(
        "{:<34} {:<8} {:>9}  {:<50} result",
        "guest", "asked", "seconds", "accelerator"
    );
    for (name, spec) in &cases {
        let d = work.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        let g = guests::build(&d, spec);
        let (acc, secs, verdict) = one(&g, true, name);
        println!("{name:<34} {:<8} {secs:>9.1}  {acc:<50} {verdict}", "tcg");
        if matches!(kvm, Accel::Kvm { .. }) {
            let (acc, secs, verdict) = one(&g, false, name);
            println!("{name:<34} {:<8} {secs:>9.1}  {acc:<50} {verdict}", "kvm");
        }
    }
}
