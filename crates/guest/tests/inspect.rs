//! Guest inspection of real disks: partition tables by `sfdisk`, filesystems by `mkfs.ext4 -d`
//! and `mkfs.vfat` + `mtools`, wrapped by `qemu-img` in VMDK, VHD and qcow2, inspected through
//! vmie's readers.

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation, missing_docs)]

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use std::sync::Arc;

mod common;
use common::*;

/// An ext4 filesystem image of `mib` MiB holding a Linux root tree.
fn linux_root(dir: &Path, os_release: &str, kernel: &str, usr_merged: bool) -> PathBuf {
    let tree = dir.join("tree");
    for d in ["etc", "boot", "usr/bin", "sbin"] {
        std::fs::create_dir_all(tree.join(d)).unwrap();
    }
    std::fs::create_dir_all(tree.join(format!("lib/modules/{kernel}"))).unwrap();
    std::fs::write(tree.join("etc/os-release"), os_release).unwrap();
    std::fs::write(tree.join("etc/fstab"), "/dev/sda1 / ext4 defaults 0 1\n").unwrap();
    std::fs::write(
        tree.join(format!("boot/vmlinuz-{kernel}")),
        vec![0x4du8; 8192],
    )
    .unwrap();
    if usr_merged {
        std::fs::copy("/bin/sh", tree.join("usr/bin/sh")).unwrap();
        std::os::unix::fs::symlink("usr/bin", tree.join("bin")).unwrap();
    } else {
        std::fs::create_dir_all(tree.join("bin")).unwrap();
        std::fs::copy("/bin/sh", tree.join("bin/sh")).unwrap();
    }
    let fs = dir.join("root.ext4");
    tool(
        "mkfs.ext4",
        &["-q", "-F", "-L", "root", "-d", s(&tree), s(&fs), "24M"],
    );
    fs
}

/// MBR disk: boot code, one active Linux partition holding Debian 12.
fn mbr_debian(dir: &Path) -> PathBuf {
    let root = linux_root(
        dir,
        "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n",
        "6.1.0-9-amd64",
        false,
    );
    let disk = dir.join("mbr.raw");
    blank(&disk, 32 << 20);
    sfdisk(
        &disk,
        "label: dos\nstart=2048, size=49152, type=83, bootable\n",
    );
    put(&disk, &root, 2048 * 512);
    boot_code(&disk);
    disk
}

/// GPT disk: an EFI system partition (FAT32, `EFI/BOOT/BOOTX64.EFI`) and a Linux partition
/// with Ubuntu 24.04 (usr-merged: `/bin` is a symbolic link).
fn gpt_ubuntu(dir: &Path) -> PathBuf {
    let esp = dir.join("esp.fat");
    blank(&esp, 40 << 20);
    tool("mkfs.vfat", &["-F", "32", "-n", "ESP", s(&esp)]);
    let loader = dir.join("BOOTX64.EFI");
    std::fs::write(&loader, b"MZ not really a loader").unwrap();
    let img = format!("-i{}", s(&esp));
    tool("mmd", &[&img, "::EFI", "::EFI/BOOT"]);
    tool("mcopy", &[&img, s(&loader), "::EFI/BOOT/BOOTX64.EFI"]);
    let root = linux_root(
        dir,
        "PRETTY_NAME=\"Ubuntu 24.04.1 LTS\"\nNAME=\"Ubuntu\"\nVERSION_ID=\"24.04\"\nID=ubuntu\nID_LIKE=debian\n",
        "6.8.0-45-generic",
        true,
    );
    let disk = dir.join("gpt.raw");
    blank(&disk, 80 << 20);
    sfdisk(
        &disk,
        "label: gpt\nstart=2048, size=81920, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=\"EFI System\"\nstart=83968, size=49152, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=root\n",
    );
    put(&disk, &esp, 2048 * 512);
    put(&disk, &root, 83968 * 512);
    disk
}

#[test]
fn test_inspect_mbr_debian_through_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let raw = mbr_debian(dir.path());
    for img in wraps(&raw) {
        let r = guest::inspect(open(&img)).unwrap();
        let what = s(&img);
        assert_eq!(r.platform.as_deref(), Some("linux"), "{what}");
        assert_eq!(r.distribution.as_deref(), Some("debian"), "{what}");
        assert_eq!(r.version.as_deref(), Some("12"), "{what}");
        assert_eq!(r.name.as_deref(), Some("Debian GNU/Linux 12 (bookworm)"));
        assert_eq!(
            r.architecture.as_deref(),
            Some(std::env::consts::ARCH.replace("aarch64", "arm64").as_str())
        );
        assert_eq!(r.boot_mode.as_deref(), Some("legacy-bios"), "{what}");
        assert_eq!(r.kernels, vec!["6.1.0-9-amd64".to_string()]);
        assert_eq!(r.root, Some(1));
        assert_eq!(r.partition_scheme, Some(guest::partition::Scheme::Mbr));
        let fs = r.volumes[0].filesystem.as_ref().unwrap();
        assert_eq!(fs.kind, guest::probe::FsKind::Ext4);
        assert_eq!(fs.label.as_deref(), Some("root"));
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    }
}

#[test]
fn test_inspect_gpt_esp_ubuntu_is_uefi_through_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let raw = gpt_ubuntu(dir.path());
    for img in wraps(&raw) {
        let r = guest::inspect(open(&img)).unwrap();
        let what = s(&img);
        assert_eq!(r.distribution.as_deref(), Some("ubuntu"), "{what}");
        assert_eq!(r.version.as_deref(), Some("24.04"), "{what}");
        assert!(r.architecture.is_some(), "{what}: /bin -> usr/bin followed");
        assert_eq!(r.boot_mode.as_deref(), Some("uefi"), "{what}");
        assert_eq!(r.root, Some(2));
        assert_eq!(r.partition_scheme, Some(guest::partition::Scheme::Gpt));
        assert_eq!(r.volumes[0].type_name, Some("EFI System"));
        assert_eq!(
            r.volumes[0].filesystem.as_ref().unwrap().kind,
            guest::probe::FsKind::Fat32
        );
    }
}

#[test]
fn test_inspect_disk_without_os_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.fat");
    blank(&data, 16 << 20);
    tool("mkfs.vfat", &["-n", "DATA", s(&data)]);
    let disk = dir.path().join("data.raw");
    blank(&disk, 20 << 20);
    sfdisk(&disk, "label: dos\nstart=2048, size=32768, type=c\n");
    put(&disk, &data, 2048 * 512);
    let r = guest::inspect(open(&disk)).unwrap();
    assert!(r.platform.is_none());
    assert!(
        r.warnings.iter().any(|w| w == "no operating system found"),
        "{:?}",
        r.warnings
    );
    assert!(
        r.warnings.iter().any(|w| w == "no bootloader found"),
        "{:?}",
        r.warnings
    );
    assert_eq!(
        r.volumes[0].filesystem.as_ref().unwrap().label.as_deref(),
        Some("DATA")
    );
    // A blank disk too.
    let empty = dir.path().join("empty.raw");
    blank(&empty, 8 << 20);
    let r = guest::inspect(open(&empty)).unwrap();
    assert!(r.warnings.iter().any(|w| w == "no operating system found"));
}

#[test]
fn test_partitions_mbr_logicals_and_gpt_backup_header() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("ext.raw");
    blank(&disk, 64 << 20);
    sfdisk(
        &disk,
        "label: dos\nstart=2048, size=8192, type=83\nstart=10240, size=8192, type=82\nstart=18432, size=100000, type=5\nstart=20480, size=4096, type=83\nstart=26624, size=4096, type=8e\n",
    );
    let t = guest::partition::read_partitions(&guest::Volume::whole(open(&disk))).unwrap();
    let numbers: Vec<u32> = t.partitions.iter().map(|p| p.number).collect();
    assert_eq!(numbers, vec![1, 2, 3, 5, 6]);
    assert_eq!(t.partitions[3].start, 20480 * 512);
    assert_eq!(t.partitions[4].type_name, Some("Linux LVM"));

    let gpt = gpt_ubuntu(dir.path());
    // Damage the primary header: the backup at the last sector is used.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&gpt)
        .unwrap()
        .write_all_at(&[0xff; 16], 512 + 24)
        .unwrap();
    let t = guest::partition::read_partitions(&guest::Volume::whole(open(&gpt))).unwrap();
    assert_eq!(t.partitions.len(), 2);
    assert_eq!(t.partitions[1].name.as_deref(), Some("root"));
    assert!(
        t.warnings.iter().any(|w| w.contains("used the backup")),
        "{:?}",
        t.warnings
    );
    // Both entry arrays damaged: refused with a named structure.
    let f = std::fs::OpenOptions::new().write(true).open(&gpt).unwrap();
    f.write_all_at(&[0x11; 64], 1024).unwrap();
    f.write_all_at(&[0x11; 64], (80 << 20) - 33 * 512).unwrap();
    let e = guest::partition::read_partitions(&guest::Volume::whole(open(&gpt))).unwrap_err();
    assert!(e.to_string().contains("GPT"), "{e}");
}

#[test]
fn test_inspect_mutated_tables_and_superblocks_do_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let raw = gpt_ubuntu(dir.path());
    let image = std::fs::read(&raw).unwrap();
    let mut next = xorshift(0x9E37_79B9_7F4A_7C15u64);
    // Hot spots: MBR and GPT (first 34 sectors), ESP boot sector and FAT, ext4 superblock and
    // group descriptors.
    let spots = [
        (0usize, 34 * 512),
        (2048 * 512, 64 * 1024),
        (83968 * 512, 64 * 1024),
    ];
    for round in 0..150 {
        let mut m = image.clone();
        let (at, len) = spots[round % spots.len()];
        for _ in 0..1 + next() % 16 {
            let i = at + (next() as usize) % len;
            m[i] = next() as u8;
        }
        let src: diskfmt::Source = Arc::new(m);
        let disk: Arc<dyn diskfmt::Disk> =
            Arc::from(diskfmt::open(src, &diskfmt::Limits::default()).unwrap());
        let _ = guest::inspect(disk);
    }
}

#[test]
fn test_inspect_unread_filesystem_is_named_in_warning() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("btrfs.raw");
    blank(&disk, 128 << 20);
    tool("mkfs.btrfs", &["-q", "-f", "-L", "data", s(&disk)]);
    let r = guest::inspect(open(&disk)).unwrap();
    let fs = r.volumes[0].filesystem.as_ref().unwrap();
    assert_eq!(fs.kind, guest::probe::FsKind::Btrfs);
    assert_eq!(fs.label.as_deref(), Some("data"));
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("btrfs filesystem on the disk is not read")),
        "{:?}",
        r.warnings
    );
}
