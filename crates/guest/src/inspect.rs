//! What an import needs to know about a disk: partitions, filesystems, the operating system
//! (distribution, version, kernels), its architecture and how it boots.
//!
//! - Linux: `/etc/os-release` (or `/usr/lib/os-release`, or `/etc/redhat-release`), kernels
//!   from `/boot/vmlinuz-*` and `/lib/modules/*`, the architecture from the ELF header of
//!   `/bin/sh` (or `/sbin/init`, `/usr/bin/sh`), symbolic links followed.
//! - Windows: product name, version and build from `Microsoft\Windows NT\CurrentVersion` in
//!   the SOFTWARE hive (`/Windows/System32/config/SOFTWARE`), the architecture from the PE
//!   header of `/Windows/System32/ntoskrnl.exe`. Windows 11 still calls itself "Windows 10" in
//!   `ProductName`; a client build from 22000 on is named Windows 11.
//! - Boot mode: `uefi` when an EFI system partition (or any FAT partition) carries
//!   `EFI/BOOT/BOOT*.EFI` or a vendor loader `EFI/<vendor>/*.efi`; `legacy-bios` when the MBR
//!   holds boot code and an active partition (or, on GPT, a BIOS boot partition);
//!   `uefi-preferred` when both.

use std::sync::Arc;

use diskfmt::Disk;

use crate::error::Result;
use crate::fs::{EntryKind, Ext4, Fat, GuestFs};
use crate::ntfs_fs::Ntfs;
use crate::partition::{GPT_BIOS_BOOT, Scheme, read_partitions};
use crate::probe::{FsInfo, FsKind, probe};
use crate::regf::{Hive, Value};
use crate::volume::Volume;
use crate::xfs::Xfs;

/// Most bytes read from a text file of the guest.
const MAX_TEXT: u64 = 64 * 1024;

/// A partition (or the whole disk) and what lives on it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VolumeReport {
    /// Partition number; 0 for a partitionless disk.
    pub number: u32,
    /// Offset in bytes.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
    /// Partition type name, where known.
    pub type_name: Option<&'static str>,
    /// Filesystem found.
    pub filesystem: Option<FsInfo>,
}

/// The inspection report.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    /// `linux` or `windows` when an operating system was found.
    pub platform: Option<String>,
    /// Distribution id (`debian`, `ubuntu`, `rhel`, …).
    pub distribution: Option<String>,
    /// Human name (`PRETTY_NAME`).
    pub name: Option<String>,
    /// Version (`VERSION_ID`).
    pub version: Option<String>,
    /// `x86_64`, `arm64`, `i386`, `arm`, `riscv64`, `ppc64le`, `s390x`.
    pub architecture: Option<String>,
    /// `uefi`, `legacy-bios` or `uefi-preferred`.
    pub boot_mode: Option<String>,
    /// Kernel versions found.
    pub kernels: Vec<String>,
    /// Partition number of the root filesystem (0: the whole disk).
    pub root: Option<u32>,
    /// `none`, `mbr` or `gpt`.
    pub partition_scheme: Option<Scheme>,
    /// Partitions and filesystems.
    pub volumes: Vec<VolumeReport>,
    /// Plain-words warnings.
    pub warnings: Vec<String>,
}

fn open_fs(vol: &Volume, kind: FsKind) -> Option<Result<Box<dyn GuestFs>>> {
    fn boxed<F: GuestFs + 'static>(r: Result<F>) -> Result<Box<dyn GuestFs>> {
        r.map(|f| Box::new(f) as _)
    }
    Some(match kind {
        FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 => boxed(Ext4::open(vol.clone())),
        FsKind::Fat12 | FsKind::Fat16 | FsKind::Fat32 => boxed(Fat::open(vol.clone())),
        FsKind::Xfs => boxed(Xfs::open(vol.clone())),
        _ => return None,
    })
}

/// Text from the guest, without control characters, at most 256 characters.
fn clean(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(256).collect()
}

/// Parses os-release text into (key, value) pairs, quotes removed.
#[must_use]
pub fn os_release(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            if l.starts_with('#') {
                return None;
            }
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            Some((k.trim().to_string(), clean(v)))
        })
        .collect()
}

/// Architecture named by an ELF header.
#[must_use]
pub fn elf_arch(h: &[u8]) -> Option<&'static str> {
    if h.len() < 20 || &h[0..4] != b"\x7fELF" {
        return None;
    }
    let machine = match h[5] {
        1 => u16::from_le_bytes([h[18], h[19]]),
        2 => u16::from_be_bytes([h[18], h[19]]),
        _ => return None,
    };
    Some(match (machine, h[4]) {
        (0x3e, _) => "x86_64",
        (0x03, _) => "i386",
        (0xb7, _) => "arm64",
        (0x28, _) => "arm",
        (0xf3, 2) => "riscv64",
        (0x15, _) if h[5] == 1 => "ppc64le",
        (0x15, _) => "ppc64",
        (0x16, _) => "s390x",
        _ => return None,
    })
}

/// Architecture named by a PE header (`MZ`, `e_lfanew` at 60, `PE\0\0`, machine type).
#[must_use]
pub fn pe_arch(b: &[u8]) -> Option<&'static str> {
    if b.len() < 64 || &b[0..2] != b"MZ" {
        return None;
    }
    let pe = usize::try_from(u32::from_le_bytes([b[60], b[61], b[62], b[63]])).ok()?;
    let h = b.get(pe..pe.checked_add(6)?)?;
    if &h[0..4] != b"PE\0\0" {
        return None;
    }
    Some(match u16::from_le_bytes([h[4], h[5]]) {
        0x8664 => "x86_64",
        0x014c => "i386",
        0xaa64 => "arm64",
        0x01c4 => "arm",
        _ => return None,
    })
}

const SOFTWARE_HIVE: &str = "/Windows/System32/config/SOFTWARE";
const NT_KERNEL: &str = "/Windows/System32/ntoskrnl.exe";

/// Reads `Microsoft\Windows NT\CurrentVersion` from the SOFTWARE hive.
fn current_version(fs: &Ntfs) -> Result<(Vec<(String, Value)>, bool)> {
    fs.with_file(SOFTWARE_HIVE, |rs, len| {
        let mut hive = Hive::open(rs, len)?;
        let key = hive.key("Microsoft\\Windows NT\\CurrentVersion")?;
        let dirty = hive.dirty;
        Ok((hive.values(key)?, dirty))
    })
}

fn windows(fs: &Ntfs, r: &mut Report) -> bool {
    let kernel = fs.read_file(NT_KERNEL, 4096);
    let hive = current_version(fs);
    if kernel.is_err() && hive.is_err() {
        return false;
    }
    r.platform = Some("windows".into());
    r.distribution = Some("windows".into());
    match hive {
        Ok((values, dirty)) => {
            let text = |k: &str| {
                values.iter().find_map(|(n, v)| match v {
                    Value::String(s) if n.eq_ignore_ascii_case(k) => Some(clean(s)),
                    _ => None,
                })
            };
            let dword = |k: &str| {
                values.iter().find_map(|(n, v)| match v {
                    Value::Dword(d) if n.eq_ignore_ascii_case(k) => Some(*d),
                    _ => None,
                })
            };
            let build = text("CurrentBuild").or_else(|| text("CurrentBuildNumber"));
            let base = match dword("CurrentMajorVersionNumber") {
                Some(major) => Some(format!(
                    "{major}.{}",
                    dword("CurrentMinorVersionNumber").unwrap_or(0)
                )),
                None => text("CurrentVersion"),
            };
            r.version = match (base, &build) {
                (Some(v), Some(b)) => Some(format!("{v}.{b}")),
                (v, b) => v.or_else(|| b.clone()),
            };
            let mut name = text("ProductName");
            let client = text("InstallationType").is_none_or(|t| t == "Client");
            let build_no = build.as_deref().and_then(|b| b.parse::<u32>().ok());
            if let (Some(n), Some(b)) = (&name, build_no)
                && client
                && b >= 22000
                && n.starts_with("Windows 10")
            {
                name = Some(n.replacen("Windows 10", "Windows 11", 1));
            }
            r.name = name;
            if dirty {
                r.warnings.push(
                    "the Windows SOFTWARE registry hive was not closed cleanly; the version shown may be out of date"
                        .into(),
                );
            }
        }
        Err(e) => r.warnings.push(format!(
            "the Windows SOFTWARE registry hive could not be read ({e}), so the Windows version is unknown"
        )),
    }
    match kernel.as_deref().map(pe_arch) {
        Ok(Some(a)) => r.architecture = Some(a.into()),
        _ => r.warnings.push(format!(
            "the architecture could not be read from {NT_KERNEL}"
        )),
    }
    true
}

fn linux(fs: &dyn GuestFs, r: &mut Report) -> bool {
    let text = ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|p| fs.read_file(p, MAX_TEXT).ok());
    match text {
        Some(t) => {
            let kv = os_release(&String::from_utf8_lossy(&t));
            let get = |k: &str| kv.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            r.distribution = get("ID");
            r.name = get("PRETTY_NAME").or_else(|| get("NAME"));
            r.version = get("VERSION_ID");
        }
        None => {
            let Ok(t) = fs.read_file("/etc/redhat-release", MAX_TEXT) else {
                return false;
            };
            let line = String::from_utf8_lossy(&t)
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            r.name = Some(clean(&line));
            r.distribution = Some(
                if line.starts_with("CentOS") {
                    "centos"
                } else if line.starts_with("Fedora") {
                    "fedora"
                } else {
                    "rhel"
                }
                .into(),
            );
            r.version = line
                .split_whitespace()
                .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))
                .map(str::to_string);
        }
    }
    r.platform = Some("linux".into());
    for p in [
        "/bin/sh",
        "/sbin/init",
        "/usr/bin/sh",
        "/bin/bash",
        "/usr/lib/systemd/systemd",
    ] {
        if let Ok(h) = fs.read_file(p, 64)
            && let Some(a) = elf_arch(&h)
        {
            r.architecture = Some(a.into());
            break;
        }
    }
    let mut kernels = Vec::new();
    if let Ok(entries) = fs.list_dir("/boot") {
        for e in entries {
            for prefix in ["vmlinuz-", "vmlinux-", "Image-", "kernel-"] {
                if let Some(v) = e.name.strip_prefix(prefix) {
                    kernels.push(v.to_string());
                }
            }
        }
    }
    for dir in ["/lib/modules", "/usr/lib/modules"] {
        if let Ok(entries) = fs.list_dir(dir) {
            kernels.extend(
                entries
                    .into_iter()
                    .filter(|e| e.kind == EntryKind::Dir)
                    .map(|e| e.name),
            );
        }
    }
    kernels.sort();
    kernels.dedup();
    kernels.truncate(64);
    r.kernels = kernels;
    true
}

/// A UEFI loader on a FAT filesystem: `EFI/BOOT/BOOT*.EFI`, or a vendor loader
/// `EFI/<vendor>/*.efi` or one folder deeper (`EFI/Microsoft/Boot/bootmgfw.efi`).
fn efi_loader(fs: &dyn GuestFs) -> Option<String> {
    let vendors = fs.list_dir("/EFI").ok()?;
    for v in vendors.iter().filter(|v| v.kind == EntryKind::Dir).take(64) {
        let base = format!("/EFI/{}", v.name);
        let Ok(entries) = fs.list_dir(&base) else {
            continue;
        };
        let mut folders = vec![(base.clone(), entries.clone())];
        for d in entries.iter().filter(|e| e.kind == EntryKind::Dir).take(16) {
            let sub = format!("{base}/{}", d.name);
            if let Ok(e) = fs.list_dir(&sub) {
                folders.push((sub, e));
            }
        }
        for (folder, files) in folders {
            if let Some(f) = files.iter().take(256).find(|f| {
                f.kind == EntryKind::File && f.name.to_ascii_lowercase().ends_with(".efi")
            }) {
                return Some(format!("{}/{}", &folder[1..], f.name));
            }
        }
    }
    None
}

/// Inspects `disk`.
pub fn inspect(disk: Arc<dyn Disk>) -> Result<Report> {
    let whole = Volume::whole(disk);
    let table = read_partitions(&whole)?;
    let mut r = Report {
        partition_scheme: Some(table.scheme),
        warnings: table.warnings.clone(),
        ..Report::default()
    };
    let mut vols: Vec<(u32, Volume, Option<&'static str>, bool)> = table
        .partitions
        .iter()
        .map(|p| (p.number, p.volume.clone(), p.type_name, p.bootable))
        .collect();
    if table.scheme == Scheme::None {
        vols.push((0, whole.clone(), None, false));
    }
    let mut uefi = None;
    let mut encrypted = false;
    let mut unread = Vec::new();
    for (number, vol, type_name, _) in &vols {
        if *type_name == Some("Extended") {
            continue;
        }
        let fs = probe(vol)?;
        if let Some(info) = &fs {
            encrypted |= info.encrypted;
            let place = if *number == 0 {
                "the disk".to_string()
            } else {
                format!("partition {number}")
            };
            let kind = format!("{:?}", info.kind).to_lowercase();
            if info.kind == FsKind::Ntfs {
                match Ntfs::open(vol.clone()) {
                    Ok(n) if r.platform.is_none() && windows(&n, &mut r) => r.root = Some(*number),
                    Ok(_) => {}
                    Err(e) => unread.push(format!(
                        "the ntfs filesystem on {place} could not be read ({e})"
                    )),
                }
            }
            match open_fs(vol, info.kind) {
                Some(Ok(g)) => {
                    if r.platform.is_none() && linux(&*g, &mut r) {
                        r.root = Some(*number);
                    }
                    if uefi.is_none()
                        && matches!(info.kind, FsKind::Fat12 | FsKind::Fat16 | FsKind::Fat32)
                    {
                        uefi = efi_loader(&*g);
                    }
                }
                Some(Err(e)) => {
                    unread.push(format!("the {kind} filesystem on {place} could not be read ({e})"));
                }
                None if info.kind == FsKind::Btrfs => unread.push(format!(
                    "the btrfs filesystem on {place} is not read by this version, so an operating system on it cannot be seen; give the platform explicitly"
                )),
                None => {}
            }
        }
        r.volumes.push(VolumeReport {
            number: *number,
            start: vol.start(),
            size: vol.len(),
            type_name: *type_name,
            filesystem: fs,
        });
    }
    let legacy = table.mbr_boot_code
        && match table.scheme {
            Scheme::Mbr => vols.iter().any(|v| v.3),
            Scheme::Gpt => table.partitions.iter().any(|p| p.kind == GPT_BIOS_BOOT),
            Scheme::None => false,
        };
    r.boot_mode = match (uefi.is_some(), legacy) {
        (true, true) => Some("uefi-preferred".into()),
        (true, false) => Some("uefi".into()),
        (false, true) => Some("legacy-bios".into()),
        (false, false) => None,
    };
    if r.platform.is_none() {
        r.warnings.push("no operating system found".into());
        r.warnings.extend(unread);
        if encrypted {
            r.warnings.push("root filesystem is encrypted".into());
        }
    } else if r.architecture.is_none() {
        r.warnings
            .push("the architecture could not be read from the guest's programs".into());
    }
    if r.boot_mode.is_none() {
        r.warnings.push("no bootloader found".into());
    }
    Ok(r)
}
