//! XFS and Windows guests on real disks: XFS made by `mkfs.xfs -p` (a prototype file, no
//! mount) and, for fragmented files, by the kernel through a loop mount; NTFS by `mkntfs` and
//! populated through `ntfs-3g`; the SOFTWARE hive written by `hivexsh`; the kernel a real PE
//! program. Disks are partitioned by `sfdisk`, wrapped by `qemu-img` in VMDK, VHD and qcow2,
//! and inspected through vmie's readers.

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation, missing_docs)]

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use guest::fs::{EntryKind, GuestFs};
use guest::xfs::Xfs;

mod common;
use common::*;

const ROCKY: &str = "NAME=\"Rocky Linux\"\nVERSION=\"9.4 (Blue Onyx)\"\nID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\nVERSION_ID=\"9.4\"\nPRETTY_NAME=\"Rocky Linux 9.4 (Blue Onyx)\"\n";
const KERNEL: &str = "5.14.0-427.13.1.el9_4.x86_64";
/// Entries in the large directory: enough for a node-form directory with 1 KiB blocks.
const MANY: usize = 700;

/// A Rocky Linux root tree and the `mkfs.xfs` prototype file that copies it: usr-merged
/// (`/bin`, `/lib` are links), a kernel, its modules folder, and a directory of [`MANY`] files.
fn rocky_proto(dir: &Path) -> PathBuf {
    let files = dir.join("files");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("os-release"), ROCKY).unwrap();
    std::fs::write(files.join("fstab"), "UUID=x / xfs defaults 0 0\n").unwrap();
    std::fs::write(files.join("kernel"), vec![0x4du8; 20_000]).unwrap();
    std::fs::copy("/bin/sh", files.join("sh")).unwrap();
    let f = |n: &str| s(&files.join(n)).to_string();
    let mut p = String::from("/dev/null\n0 0\nd--755 0 0\n");
    p += &format!(
        "etc d--755 0 0\nos-release ---644 0 0 {}\nfstab ---644 0 0 {}\n$\n",
        f("os-release"),
        f("fstab")
    );
    p += &format!(
        "boot d--755 0 0\nvmlinuz-{KERNEL} ---755 0 0 {}\n$\n",
        f("kernel")
    );
    p += "bin l--777 0 0 usr/bin\nlib l--777 0 0 usr/lib\n";
    p += &format!(
        "usr d--755 0 0\nbin d--755 0 0\nsh ---755 0 0 {}\n$\n",
        f("sh")
    );
    p += &format!("lib d--755 0 0\nmodules d--755 0 0\n{KERNEL} d--755 0 0\n$\n$\n$\n");
    p += "share d--755 0 0\nmany d--755 0 0\n";
    for i in 0..MANY {
        p += &format!(
            "file-with-a-longish-name-{i:05} ---644 0 0 {}\n",
            f("fstab")
        );
    }
    p += "$\n$\n$\n$\n";
    let proto = dir.join("proto");
    std::fs::write(&proto, p).unwrap();
    proto
}

/// An XFS image of 320 MiB (mkfs.xfs's minimum is 300 MB) built from the Rocky tree.
fn rocky_xfs(dir: &Path, extra: &[&str]) -> PathBuf {
    let proto = rocky_proto(dir);
    let fs = dir.join("root.xfs");
    blank(&fs, 320 << 20);
    let mut args = vec!["-q", "-f", "-L", "root", "-p", s(&proto)];
    args.extend_from_slice(extra);
    args.push(s(&fs));
    tool("mkfs.xfs", &args);
    fs
}

fn check_rocky(r: &guest::Report) {
    assert_eq!(r.platform.as_deref(), Some("linux"), "{r:?}");
    assert_eq!(r.distribution.as_deref(), Some("rocky"));
    assert_eq!(r.version.as_deref(), Some("9.4"));
    assert_eq!(r.name.as_deref(), Some("Rocky Linux 9.4 (Blue Onyx)"));
    assert_eq!(
        r.architecture.as_deref(),
        Some(std::env::consts::ARCH).map(|a| { if a == "aarch64" { "arm64" } else { a } })
    );
    assert_eq!(r.kernels, vec![KERNEL.to_string()]);
}

#[test]
fn test_inspect_xfs_rocky_gpt_bios_and_uefi_through_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let root = rocky_xfs(dir.path(), &["-b", "size=1024", "-n", "size=8192"]);
    let esp = dir.path().join("esp.fat");
    blank(&esp, 33 << 20);
    tool("mkfs.vfat", &["-F", "32", s(&esp)]);
    let loader = dir.path().join("shimx64.efi");
    std::fs::write(&loader, b"MZ").unwrap();
    let img = format!("-i{}", s(&esp));
    tool("mmd", &[&img, "::EFI", "::EFI/rocky"]);
    tool("mcopy", &[&img, s(&loader), "::EFI/rocky/shimx64.efi"]);
    let disk = dir.path().join("rocky.raw");
    blank(&disk, 360 << 20);
    sfdisk(
        &disk,
        "label: gpt\n\
         start=2048, size=2048, type=21686148-6449-6E6F-744E-656564454649\n\
         start=4096, size=67584, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\n\
         start=71680, size=655360, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n",
    );
    boot_code(&disk);
    put(&disk, &esp, 4096 * 512);
    put(&disk, &root, 71680 * 512);
    for image in wraps(&disk) {
        let r = guest::inspect(open(&image)).unwrap();
        check_rocky(&r);
        assert_eq!(r.root, Some(3), "{}", image.display());
        assert_eq!(r.boot_mode.as_deref(), Some("uefi-preferred"));
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    }
    // The node-form directory (8 KiB directory blocks over 1 KiB filesystem blocks) lists
    // every entry, and a file in it reads back; `..` after a link goes up from the link's
    // target, as POSIX has it (`/lib` is `usr/lib`, so `/lib/..` is `/usr`).
    let vol = guest::Volume::whole(open(&disk))
        .slice(71680 * 512, 320 << 20)
        .unwrap();
    let fs = Xfs::open(vol).unwrap();
    let many = fs.list_dir("/usr/share/many").unwrap();
    assert_eq!(many.len(), MANY);
    assert!(many.iter().all(|e| e.kind == EntryKind::File));
    assert_eq!(
        fs.read_file("/lib/../share/many/file-with-a-longish-name-00642", 1024)
            .unwrap(),
        b"UUID=x / xfs defaults 0 0\n"
    );
    assert!(matches!(
        fs.read_file("/etc/nothing", 10),
        Err(guest::GuestError::NotFound(_))
    ));
    assert_eq!(
        fs.read_file(&format!("/boot/vmlinuz-{KERNEL}"), 100)
            .unwrap()
            .len(),
        100
    );
}

#[test]
fn test_inspect_xfs_v4_without_ftype_partitionless() {
    let dir = tempfile::tempdir().unwrap();
    let root = rocky_xfs(
        dir.path(),
        &["-m", "crc=0", "-n", "ftype=0", "-i", "size=256"],
    );
    let r = guest::inspect(open(&root)).unwrap();
    check_rocky(&r);
    assert_eq!(r.root, Some(0));
    let fs = Xfs::open(guest::Volume::whole(open(&root))).unwrap();
    let bin = fs.list_dir("/").unwrap();
    assert!(
        bin.iter()
            .any(|e| e.name == "bin" && e.kind == EntryKind::Symlink)
    );
    assert_eq!(fs.list_dir("/usr/share/many").unwrap().len(), MANY);
}

/// Files the kernel lays out: holes every other block (a data-fork B+tree two levels deep with
/// 1 KiB blocks), preallocated (unwritten) ranges, a symbolic link too long to sit in its inode.
#[test]
fn test_xfs_btree_files_unwritten_extents_and_remote_links_written_by_the_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("frag.xfs");
    blank(&image, 320 << 20);
    tool("mkfs.xfs", &["-q", "-f", "-b", "size=1024", s(&image)]);
    let mut holes = vec![0u8; 1500 * 2048];
    for i in 0..1500 {
        holes[i * 2048..i * 2048 + 1024].fill((i % 251) as u8 + 1);
    }
    let long = format!("{}usr", "./".repeat(300));
    {
        let m = Mount::new(&["mount", "-o", "loop"], &image, &dir.path().join("m"));
        let f = std::fs::File::create(m.0.join("holes")).unwrap();
        for i in 0..1500u64 {
            f.write_all_at(
                &holes[i as usize * 2048..i as usize * 2048 + 1024],
                i * 2048,
            )
            .unwrap();
        }
        f.set_len(holes.len() as u64).unwrap();
        f.sync_all().unwrap();
        tool("fallocate", &["-l", "1048576", s(&m.0.join("prealloc"))]);
        let p = std::fs::OpenOptions::new()
            .write(true)
            .open(m.0.join("prealloc"))
            .unwrap();
        p.write_all_at(b"written", 4096).unwrap();
        p.sync_all().unwrap();
        std::fs::create_dir_all(m.0.join("usr/bin")).unwrap();
        std::fs::write(m.0.join("usr/bin/tool"), b"found through a long link").unwrap();
        std::os::unix::fs::symlink(&long, m.0.join("far")).unwrap();
        std::os::unix::fs::symlink("loop2", m.0.join("loop1")).unwrap();
        std::os::unix::fs::symlink("loop1", m.0.join("loop2")).unwrap();
    }
    let fs = Xfs::open(guest::Volume::whole(open(&image))).unwrap();
    assert_eq!(fs.read_file("/holes", u64::MAX).unwrap(), holes);
    let pre = fs.read_file("/prealloc", u64::MAX).unwrap();
    assert_eq!(pre.len(), 1 << 20);
    assert_eq!(&pre[4096..4103], b"written");
    assert!(pre[..4096].iter().chain(&pre[4103..]).all(|&b| b == 0));
    assert_eq!(
        fs.read_file("/far/bin/tool", 100).unwrap(),
        b"found through a long link"
    );
    let e = fs.read_file("/loop1", 10).unwrap_err();
    assert!(e.to_string().contains("too many symbolic links"), "{e}");
}

/// An NTFS filesystem image holding `Windows/System32` with a SOFTWARE hive of `values` and
/// `ntoskrnl.exe` for `arch`.
fn windows_ntfs(dir: &Path, size: u64, arch: &str, values: &[(&str, &str)]) -> PathBuf {
    let hive = dir.join("SOFTWARE");
    software_hive(&hive, values);
    let fs = dir.join("windows.ntfs");
    blank(&fs, size);
    tool("mkntfs", &["-F", "-f", "-q", "-L", "Windows", s(&fs)]);
    {
        let m = Mount::new(&["ntfs-3g"], &fs, &dir.join("ntfs"));
        let sys = m.0.join("Windows/System32");
        std::fs::create_dir_all(sys.join("config")).unwrap();
        std::fs::create_dir_all(m.0.join("Program Files")).unwrap();
        std::fs::copy(&hive, sys.join("config/SOFTWARE")).unwrap();
        std::fs::copy(pe_program(arch), sys.join("ntoskrnl.exe")).unwrap();
    }
    fs
}

#[test]
fn test_inspect_windows_server_mbr_bios_through_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let ntfs = windows_ntfs(
        dir.path(),
        48 << 20,
        "x86_64",
        &[
            ("ProductName", "string:Windows Server 2022 Datacenter"),
            ("CurrentBuild", "string:20348"),
            ("CurrentMajorVersionNumber", "dword:0x0000000a"),
            ("CurrentMinorVersionNumber", "dword:0x00000000"),
            ("InstallationType", "string:Server"),
        ],
    );
    let disk = dir.path().join("win.raw");
    blank(&disk, 64 << 20);
    sfdisk(
        &disk,
        "label: dos\nstart=2048, size=98304, type=7, bootable\n",
    );
    boot_code(&disk);
    put(&disk, &ntfs, 2048 * 512);
    for image in wraps(&disk) {
        let r = guest::inspect(open(&image)).unwrap();
        assert_eq!(r.platform.as_deref(), Some("windows"), "{r:?}");
        assert_eq!(r.distribution.as_deref(), Some("windows"));
        assert_eq!(r.name.as_deref(), Some("Windows Server 2022 Datacenter"));
        assert_eq!(r.version.as_deref(), Some("10.0.20348"));
        assert_eq!(r.architecture.as_deref(), Some("x86_64"));
        assert_eq!(r.boot_mode.as_deref(), Some("legacy-bios"));
        assert_eq!(r.root, Some(1));
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    }
    // The same filesystem read directly: case-insensitive lookups, listings without DOS names.
    let fs = guest::ntfs_fs::Ntfs::open(guest::Volume::whole(open(&ntfs))).unwrap();
    let root = fs.list_dir("/").unwrap();
    assert!(
        root.iter()
            .any(|e| e.name == "Program Files" && e.kind == EntryKind::Dir)
    );
    assert!(!root.iter().any(|e| e.name.contains('~')), "{root:?}");
    assert_eq!(
        fs.read_file("/WINDOWS/system32/NTOSKRNL.EXE", 2).unwrap(),
        b"MZ"
    );
}

#[test]
fn test_inspect_windows_11_arm64_gpt_uefi_and_damaged_hive() {
    let dir = tempfile::tempdir().unwrap();
    let ntfs = windows_ntfs(
        dir.path(),
        48 << 20,
        "arm64",
        &[
            ("ProductName", "string:Windows 10 Pro"),
            ("DisplayVersion", "string:23H2"),
            ("CurrentBuild", "string:22631"),
            ("CurrentVersion", "string:6.3"),
            ("CurrentMajorVersionNumber", "dword:0x0000000a"),
            ("CurrentMinorVersionNumber", "dword:0x00000000"),
            ("InstallationType", "string:Client"),
        ],
    );
    let esp = dir.path().join("esp.fat");
    blank(&esp, 33 << 20);
    tool("mkfs.vfat", &["-F", "32", s(&esp)]);
    let img = format!("-i{}", s(&esp));
    tool(
        "mmd",
        &[&img, "::EFI", "::EFI/Microsoft", "::EFI/Microsoft/Boot"],
    );
    tool(
        "mcopy",
        &[
            &img,
            s(&pe_program("arm64")),
            "::EFI/Microsoft/Boot/bootmgfw.efi",
        ],
    );
    let disk = dir.path().join("win11.raw");
    blank(&disk, 100 << 20);
    sfdisk(
        &disk,
        "label: gpt\n\
         start=2048, size=67584, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\n\
         start=69632, size=32768, type=E3C9E316-0B5C-4DB8-817D-F92DF00215AE\n\
         start=102400, size=98304, type=EBD0A0A2-B9E5-4433-87C0-68B6B7C7C7B7\n",
    );
    put(&disk, &esp, 2048 * 512);
    put(&disk, &ntfs, 102_400 * 512);
    for image in wraps(&disk) {
        let r = guest::inspect(open(&image)).unwrap();
        assert_eq!(r.platform.as_deref(), Some("windows"), "{r:?}");
        assert_eq!(r.name.as_deref(), Some("Windows 11 Pro"));
        assert_eq!(r.version.as_deref(), Some("10.0.22631"));
        assert_eq!(r.architecture.as_deref(), Some("arm64"));
        assert_eq!(r.boot_mode.as_deref(), Some("uefi"));
        assert_eq!(r.root, Some(3));
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    }
    // A hive whose base block is damaged: still Windows (the kernel is there), but the
    // version is unknown and a warning says why.
    let hive_at = find(&std::fs::read(&disk).unwrap(), b"regf").unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    f.write_all_at(b"XXXX", hive_at as u64 + 40).unwrap();
    let r = guest::inspect(open(&disk)).unwrap();
    assert_eq!(r.platform.as_deref(), Some("windows"));
    assert_eq!(r.version, None);
    assert_eq!(r.architecture.as_deref(), Some("arm64"));
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("SOFTWARE registry hive could not be read")
                && w.contains("checksum")),
        "{:?}",
        r.warnings
    );
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Random damage to the metadata of a real XFS filesystem and a real hive never panics.
#[test]
fn test_xfs_and_hive_mutations_do_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let root = rocky_xfs(dir.path(), &["-b", "size=1024"]);
    // Metadata lives in the first blocks of the filesystem: superblock, AG headers, the
    // inode chunk and directory blocks of the prototype's tree.
    let used = 4 << 20;
    let mut meta = vec![0u8; used];
    std::fs::File::open(&root)
        .unwrap()
        .read_exact_at(&mut meta, 0)
        .unwrap();
    let mut next = xorshift(0x2545_F491_4F6C_DD1Du64);
    for _ in 0..200 {
        let saved = meta.clone();
        for _ in 0..1 + next() % 24 {
            let i = (next() as usize) % used;
            meta[i] = next() as u8;
        }
        let src: diskfmt::Source = Arc::new(meta.clone());
        let disk: Arc<dyn diskfmt::Disk> = Arc::from(
            diskfmt::open_as(src, diskfmt::Format::Raw, &diskfmt::Limits::default()).unwrap(),
        );
        if let Ok(fs) = Xfs::open(guest::Volume::whole(disk.clone())) {
            let _ = fs.read_file("/etc/os-release", 4096);
            let _ = fs.list_dir("/usr/share/many");
            let _ = fs.read_file("/bin/sh", 64);
        }
        let _ = guest::inspect(disk);
        meta = saved;
    }
    let hive = dir.path().join("SOFTWARE");
    software_hive(&hive, &[("ProductName", "string:Windows 10 Pro")]);
    let hive = std::fs::read(&hive).unwrap();
    for _ in 0..2000 {
        let mut m = hive.clone();
        for _ in 0..1 + next() % 8 {
            let i = (next() as usize) % m.len();
            m[i] = next() as u8;
        }
        // Keep the checksum right half of the time so cells are reached.
        if next().is_multiple_of(2) {
            let sum = (0..127).fold(0u32, |a, i| {
                a ^ u32::from_le_bytes(m[i * 4..i * 4 + 4].try_into().unwrap())
            });
            m[508..512].copy_from_slice(&sum.to_le_bytes());
        }
        let len = m.len() as u64;
        let mut c = std::io::Cursor::new(m);
        if let Ok(mut h) = guest::regf::Hive::open(&mut c, len)
            && let Ok(k) = h.key("Microsoft\\Windows NT\\CurrentVersion")
        {
            let _ = h.values(k);
        }
    }
}
