//! Bootable test guests, built at test time from Debian's packages without loop devices,
//! mounts or root-only tools: the installed Debian kernel (`linux-image-amd64`), an
//! initramfs (Debian's own from `initramfs-tools`, or a small busybox one made here with
//! `cpio`), a root filesystem made by `mkfs.ext4 -d`, an EFI system partition made by
//! `mkfs.vfat` + `mtools` holding systemd-boot (UEFI), or a FAT partition with SYSLINUX and its
//! MBR (legacy BIOS), laid into a partitioned raw disk by `sfdisk` and `dd`.
//!
//! The guest's `/sbin/init` remounts the root filesystem read-write and writes
//! [`MARKER`] into it — composed at run time, so the text is not in the image — then idles.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::missing_panics_doc
)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// What the guest writes into its root filesystem once it runs (never in the image).
pub const MARKER: &str = "VMIE-GUEST-WROTE-THIS";

/// How the disk boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loader {
    /// SYSLINUX on a FAT partition, SYSLINUX's MBR.
    Bios,
    /// systemd-boot on an EFI system partition (GPT).
    Uefi,
    /// The Bios layout without boot code or boot loader.
    None,
}

/// Which initramfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initrd {
    /// Debian's (`/boot/initrd.img-<version>`, made by initramfs-tools).
    Debian,
    /// A small busybox one; `virtio: false` leaves out virtio_blk (SATA only).
    Busybox {
        /// Whether virtio_blk is in it.
        virtio: bool,
    },
}

/// A test guest.
#[derive(Debug, Clone)]
pub struct GuestSpec {
    /// Boot loader.
    pub loader: Loader,
    /// `console=ttyS0` on the kernel command line.
    pub serial: bool,
    /// The initramfs.
    pub initrd: Initrd,
    /// Whether the root filesystem has `/sbin/init`.
    pub init: bool,
    /// A `root=` other than the root filesystem's UUID.
    pub root: Option<String>,
}

impl GuestSpec {
    /// A guest that boots: busybox initramfs with virtio, serial console.
    pub fn good(loader: Loader) -> Self {
        GuestSpec {
            loader,
            serial: true,
            initrd: Initrd::Busybox { virtio: true },
            init: true,
            root: None,
        }
    }
}

/// A built guest disk.
#[derive(Debug)]
pub struct Guest {
    /// The raw disk image.
    pub disk: PathBuf,
    /// The root partition (offset, length) in bytes.
    pub root: (u64, u64),
    /// UEFI or legacy BIOS.
    pub uefi: bool,
}

const MIB: u64 = 1 << 20;
const BOOT_START: u64 = MIB;
const ROOT_SIZE: u64 = 48 * MIB;

/// Fails the test with the package to install when `tool` is missing.
pub fn need(tool: &str, package: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let p = Path::new(dir).join(tool);
        if p.exists() {
            return p;
        }
    }
    panic!("{tool} is not installed: apt-get install {package} (see .ci/run)");
}

fn need_file(path: &Path, package: &str) -> PathBuf {
    assert!(
        path.exists(),
        "{} is missing: apt-get install {package} (see .ci/run)",
        path.display()
    );
    path.to_path_buf()
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The installed Debian kernel's version (`/lib/modules/<version>` with a `/boot/vmlinuz-`).
pub fn kernel_version() -> String {
    let mut v: Vec<String> = std::fs::read_dir("/lib/modules")
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|v| Path::new(&format!("/boot/vmlinuz-{v}")).exists())
        .collect();
    v.sort();
    v.pop()
        .expect("no Debian kernel installed: apt-get install linux-image-amd64 (see .ci/run)")
}

fn symlinks(dir: &Path, applets: &[&str]) {
    for a in applets {
        std::os::unix::fs::symlink("busybox", dir.join(a)).unwrap();
    }
}

const APPLETS: &[&str] = &[
    "sh",
    "mount",
    "umount",
    "sleep",
    "sync",
    "cat",
    "echo",
    "printf",
    "mkdir",
    "insmod",
    "findfs",
    "switch_root",
    "ls",
];

/// The root filesystem's tree.
fn root_tree(dir: &Path, init: bool) {
    let busybox = need("busybox", "busybox-static");
    for d in [
        "bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "var", "root",
    ] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::copy(&busybox, dir.join("bin/busybox")).unwrap();
    symlinks(&dir.join("bin"), APPLETS);
    std::fs::write(
        dir.join("etc/os-release"),
        "PRETTY_NAME=\"vmie test guest (busybox)\"\nNAME=\"vmie test guest\"\nID=debian\nVERSION_ID=\"12\"\n",
    )
    .unwrap();
    if init {
        let script = "#!/bin/sh\n\
            export PATH=/bin\n\
            mount -t proc proc /proc\n\
            mount -o remount,rw /\n\
            m=GUEST\n\
            printf 'VMIE-%s-WROTE-THIS\\n' $m > /var/vmie-marker.txt\n\
            sync\n\
            echo 'vmie test guest: root filesystem mounted read-write'\n\
            while true; do sleep 3600; done\n";
        let p = dir.join("sbin/init");
        std::fs::write(&p, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// A busybox initramfs: loads the modules, waits up to 20 s for `root=`, mounts it read-only
/// and switches to its `/sbin/init` — printing what Debian's prints when it cannot.
fn busybox_initrd(work: &Path, kver: &str, virtio: bool) -> PathBuf {
    let modprobe = need("modprobe", "kmod");
    need("cpio", "cpio");
    need("xz", "xz-utils");
    let tree = work.join("initrd-tree");
    for d in ["bin", "proc", "sys", "dev", "newroot", "lib/modules", "etc"] {
        std::fs::create_dir_all(tree.join(d)).unwrap();
    }
    std::fs::copy(need("busybox", "busybox-static"), tree.join("bin/busybox")).unwrap();
    symlinks(&tree.join("bin"), APPLETS);
    let mut wanted = vec!["ahci", "sd_mod", "ext4"];
    if virtio {
        wanted.insert(0, "virtio_blk");
    }
    let mut order: Vec<String> = Vec::new();
    for m in wanted {
        let out = Command::new(&modprobe)
            .args(["-S", kver, "--show-depends", m])
            .output()
            .unwrap();
        assert!(out.status.success(), "modprobe --show-depends {m} failed");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some(path) = line.strip_prefix("insmod ") else {
                continue;
            };
            let path = path.trim();
            let name = Path::new(path)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches(".xz")
                .trim_end_matches(".zst")
                .trim_end_matches(".gz")
                .to_string();
            if order.contains(&name) {
                continue;
            }
            let dst = tree.join("lib/modules").join(&name);
            let data = if path.ends_with(".xz") {
                let o = Command::new("xz").args(["-dc", path]).output().unwrap();
                assert!(o.status.success());
                o.stdout
            } else {
                std::fs::read(path).unwrap()
            };
            std::fs::write(dst, data).unwrap();
            order.push(name);
        }
    }
    std::fs::write(tree.join("etc/modules"), order.join("\n")).unwrap();
    let init = "#!/bin/sh\n\
        export PATH=/bin\n\
        mount -t proc proc /proc\n\
        mount -t sysfs sysfs /sys\n\
        mount -t devtmpfs devtmpfs /dev\n\
        echo 'vmie test initramfs'\n\
        for m in $(cat /etc/modules); do insmod /lib/modules/$m 2>/dev/null; done\n\
        root=''\n\
        for a in $(cat /proc/cmdline); do case $a in root=*) root=${a#root=};; esac; done\n\
        dev=''\n\
        i=0\n\
        while [ $i -lt 20 ]; do dev=$(findfs \"$root\" 2>/dev/null) && [ -n \"$dev\" ] && break; sleep 1; i=$((i+1)); done\n\
        if [ -z \"$dev\" ]; then\n\
          echo 'Gave up waiting for root file system device.'\n\
          echo \"ALERT!  $root does not exist.  Dropping to a shell!\"\n\
          exec sh\n\
        fi\n\
        mount -o ro -t ext4 \"$dev\" /newroot || exec sh\n\
        if [ ! -x /newroot/sbin/init ]; then echo 'No init found. Try passing init= bootarg.'; exit 1; fi\n\
        umount /proc /sys\n\
        mount --move /dev /newroot/dev\n\
        exec switch_root /newroot /sbin/init\n";
    let p = tree.join("init");
    std::fs::write(&p, init).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = work.join("initrd.img");
    run(Command::new("sh").current_dir(&tree).arg("-c").arg(format!(
        "find . | cpio -o -H newc --quiet > {}",
        out.display()
    )));
    out
}

fn random_uuid() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .unwrap()
        .trim()
        .to_string()
}

/// Builds the guest `spec` in `work`.
pub fn build(work: &Path, spec: &GuestSpec) -> Guest {
    let kver = kernel_version();
    let vmlinuz = need_file(
        Path::new(&format!("/boot/vmlinuz-{kver}")),
        "linux-image-amd64",
    );
    let initrd = match spec.initrd {
        Initrd::Debian => need_file(
            Path::new(&format!("/boot/initrd.img-{kver}")),
            "linux-image-amd64 initramfs-tools",
        ),
        Initrd::Busybox { virtio } => busybox_initrd(work, &kver, virtio),
    };
    let mkfs_ext4 = need("mkfs.ext4", "e2fsprogs");
    let mkfs_vfat = need("mkfs.vfat", "dosfstools");
    need("mcopy", "mtools");
    need("sfdisk", "fdisk");

    // Root filesystem.
    let tree = work.join("root-tree");
    root_tree(&tree, spec.init);
    let uuid = random_uuid();
    let root_img = work.join("root.img");
    run(Command::new(&mkfs_ext4).args([
        "-q",
        "-F",
        "-U",
        &uuid,
        "-L",
        "vmieroot",
        "-d",
        tree.to_str().unwrap(),
        root_img.to_str().unwrap(),
        &format!("{}M", ROOT_SIZE / MIB),
    ]));

    // Boot partition: kernel, initramfs, loader.
    let uefi = spec.loader == Loader::Uefi;
    let boot_size = 96 * MIB;
    let boot_img = work.join("boot.img");
    run(Command::new(&mkfs_vfat).args([
        "-F",
        "32",
        "-n",
        if uefi { "ESP" } else { "BOOT" },
        "-C",
        boot_img.to_str().unwrap(),
        &(boot_size / 1024).to_string(),
    ]));
    let mcopy = |src: &Path, dst: &str| {
        run(Command::new("mcopy").args([
            "-i",
            boot_img.to_str().unwrap(),
            src.to_str().unwrap(),
            &format!("::{dst}"),
        ]));
    };
    let mmd = |d: &str| {
        run(Command::new("mmd").args(["-i", boot_img.to_str().unwrap(), &format!("::{d}")]));
    };
    let root_arg = spec.root.clone().unwrap_or_else(|| format!("UUID={uuid}"));
    let mut cmdline = format!("root={root_arg} rootdelay=15 panic=0");
    if spec.serial {
        cmdline.push_str(" console=tty0 console=ttyS0,115200");
    }
    if spec.loader != Loader::None {
        mcopy(&vmlinuz, "/vmlinuz");
        mcopy(&initrd, "/initrd.img");
    }
    match spec.loader {
        Loader::Bios => {
            let cfg = work.join("syslinux.cfg");
            std::fs::write(
                &cfg,
                format!(
                    "DEFAULT linux\nPROMPT 0\nTIMEOUT 0\nLABEL linux\n  KERNEL /vmlinuz\n  INITRD /initrd.img\n  APPEND {cmdline}\n"
                ),
            )
            .unwrap();
            mcopy(&cfg, "/syslinux.cfg");
            run(Command::new(need("syslinux", "syslinux"))
                .args(["--install", boot_img.to_str().unwrap()]));
        }
        Loader::Uefi => {
            let sdboot = need_file(
                Path::new("/usr/lib/systemd/boot/efi/systemd-bootx64.efi"),
                "systemd-boot-efi",
            );
            mmd("/EFI");
            mmd("/EFI/BOOT");
            mmd("/loader");
            mmd("/loader/entries");
            mcopy(&sdboot, "/EFI/BOOT/BOOTX64.EFI");
            let conf = work.join("loader.conf");
            std::fs::write(&conf, "default vmie.conf\ntimeout 0\nconsole-mode keep\n").unwrap();
            mcopy(&conf, "/loader/loader.conf");
            let entry = work.join("vmie.conf");
            std::fs::write(
                &entry,
                format!(
                    "title vmie test guest\nlinux /vmlinuz\ninitrd /initrd.img\noptions {cmdline}\n"
                ),
            )
            .unwrap();
            mcopy(&entry, "/loader/entries/vmie.conf");
        }
        Loader::None => {}
    }

    // The disk: partition table, then the partitions copied in.
    let root_start = BOOT_START + boot_size;
    let total = root_start + ROOT_SIZE + MIB;
    let disk = work.join("disk.raw");
    let f = std::fs::File::create(&disk).unwrap();
    f.set_len(total).unwrap();
    drop(f);
    let table = if uefi {
        format!(
            "label: gpt\nstart={}, size={}, type=U\nstart={}, size={}, type=L\n",
            BOOT_START / 512,
            boot_size / 512,
            root_start / 512,
            ROOT_SIZE / 512
        )
    } else {
        let active = if spec.loader == Loader::Bios {
            ", bootable"
        } else {
            ""
        };
        format!(
            "label: dos\nstart={}, size={}, type=c{active}\nstart={}, size={}, type=83\n",
            BOOT_START / 512,
            boot_size / 512,
            root_start / 512,
            ROOT_SIZE / 512
        )
    };
    let mut child = Command::new("sfdisk")
        .args([
            "--quiet",
            "--no-reread",
            "--no-tell-kernel",
            disk.to_str().unwrap(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(table.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "sfdisk failed");
    let dd = |src: &Path, seek: u64| {
        run(Command::new("dd").args([
            &format!("if={}", src.display()),
            &format!("of={}", disk.display()),
            "bs=1M",
            &format!("seek={}", seek / MIB),
            "conv=notrunc,sparse",
            "status=none",
        ]));
    };
    dd(&boot_img, BOOT_START);
    dd(&root_img, root_start);
    if spec.loader == Loader::Bios {
        let mbr = need_file(Path::new("/usr/lib/SYSLINUX/mbr.bin"), "syslinux");
        run(Command::new("dd").args([
            &format!("if={}", mbr.display()),
            &format!("of={}", disk.display()),
            "bs=440",
            "count=1",
            "conv=notrunc",
            "status=none",
        ]));
    }
    for p in [&root_img, &boot_img] {
        let _ = std::fs::remove_file(p);
    }
    let _ = std::fs::remove_dir_all(&tree);
    let _ = std::fs::remove_dir_all(work.join("initrd-tree"));
    Guest {
        disk,
        root: (root_start, ROOT_SIZE),
        uefi,
    }
}
