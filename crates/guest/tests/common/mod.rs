//! Helpers shared by the guest tests: real tools make the disks.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap
)]

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use testkit::ToolExt;

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

pub fn tool(name: &str, args: &[&str]) {
    let o = Command::new(name).args(args).output_named();
    assert!(
        o.status.success(),
        "{name} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Runs `name args` with `input` on its standard input; it must succeed.
pub fn piped(name: &str, args: &[&str], input: &str) {
    let mut c = Command::new(name)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn_named();
    c.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    assert!(c.wait().unwrap().success(), "{name} {args:?} failed");
}

pub fn sfdisk(disk: &Path, script: &str) {
    piped("sfdisk", &["-q", s(disk)], script);
}

/// A xorshift64 sequence: repeatable random numbers for mutation tests.
pub fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

/// Copies `file` into `disk` at `offset`, a MiB at a time, leaving zero runs as holes.
pub fn put(disk: &Path, file: &Path, offset: u64) {
    let src = std::fs::File::open(file).unwrap();
    let dst = std::fs::OpenOptions::new().write(true).open(disk).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    loop {
        let n = src.read_at(&mut buf, at).unwrap();
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|&b| b != 0) {
            dst.write_all_at(&buf[..n], offset + at).unwrap();
        }
        at += n as u64;
    }
}

/// Writes boot code into the first bytes of the MBR, as GRUB's boot.img leaves it.
pub fn boot_code(disk: &Path) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(disk)
        .unwrap()
        .write_all_at(&[0xeb, 0x63, 0x90, 0x10, 0x8e, 0xd0, 0xbc, 0x00], 0)
        .unwrap();
}

/// A filesystem image mounted on a folder (loop device or FUSE), unmounted when dropped.
pub struct Mount(pub PathBuf);

impl Mount {
    /// Mounts `image` with `cmd` (e.g. `["mount", "-o", "loop"]` or `["ntfs-3g"]`).
    pub fn new(cmd: &[&str], image: &Path, at: &Path) -> Mount {
        std::fs::create_dir_all(at).unwrap();
        let mut args: Vec<&str> = cmd[1..].to_vec();
        args.push(s(image));
        args.push(s(at));
        let o = Command::new(cmd[0]).args(&args).output_named();
        assert!(
            o.status.success(),
            "this test mounts a filesystem image to populate it (as root, with loop devices and \
             /dev/fuse): {cmd:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Mount(at.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// An empty registry hive: base block, one bin, a root key and its security cell. This is the
/// starting point `hivexsh` needs (it cannot create a hive); every key and value in the test
/// hives is then written by hivex.
pub fn empty_hive() -> Vec<u8> {
    fn cell(bin: &mut [u8], at: usize, data: &[u8]) -> usize {
        let size = (data.len() + 4).div_ceil(8) * 8;
        bin[at..at + 4].copy_from_slice(&(-(size as i32)).to_le_bytes());
        bin[at + 4..at + 4 + data.len()].copy_from_slice(data);
        at + size
    }
    let le = |v: u32| v.to_le_bytes();
    let mut bin = vec![0u8; 4096];
    bin[0..4].copy_from_slice(b"hbin");
    bin[8..12].copy_from_slice(&le(4096));
    let name = b"ROOT";
    let sk_at = 0x78u32;
    let mut nk = vec![0u8; 76];
    nk[0..2].copy_from_slice(b"nk");
    nk[2..4].copy_from_slice(&0x2cu16.to_le_bytes());
    for (at, v) in [
        (28, u32::MAX),
        (32, u32::MAX),
        (40, u32::MAX),
        (44, sk_at),
        (48, u32::MAX),
    ] {
        nk[at..at + 4].copy_from_slice(&le(v));
    }
    nk[72..74].copy_from_slice(&(name.len() as u16).to_le_bytes());
    nk.extend_from_slice(name);
    let end = cell(&mut bin, 0x20, &nk);
    assert_eq!(end, sk_at as usize);
    // Self-relative security descriptor: revision 1, DACL present, nothing else.
    let sd = [
        1u8, 0, 0x04, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let mut sk = b"sk\0\0".to_vec();
    for v in [sk_at, sk_at, 1, sd.len() as u32] {
        sk.extend_from_slice(&le(v));
    }
    sk.extend_from_slice(&sd);
    let free = cell(&mut bin, sk_at as usize, &sk);
    bin[free..free + 4].copy_from_slice(&((4096 - free) as i32).to_le_bytes());
    let mut h = vec![0u8; 4096];
    h[0..4].copy_from_slice(b"regf");
    for (at, v) in [
        (4, 1),
        (8, 1),
        (20, 1),
        (24, 3),
        (32, 1),
        (36, 0x20),
        (40, 4096),
        (44, 1),
    ] {
        h[at..at + 4].copy_from_slice(&le(v));
    }
    let sum = (0..127).fold(0u32, |a, i| {
        a ^ u32::from_le_bytes(h[i * 4..i * 4 + 4].try_into().unwrap())
    });
    h[508..512].copy_from_slice(&le(sum));
    h.extend_from_slice(&bin);
    h
}

/// A SOFTWARE hive whose `Microsoft\Windows NT\CurrentVersion` holds `values`
/// (`("Name", "string:…")` or `("Name", "dword:0x…")`), written by `hivexsh`.
pub fn software_hive(path: &Path, values: &[(&str, &str)]) {
    std::fs::write(path, empty_hive()).unwrap();
    let mut script = String::from(
        "add Microsoft\ncd Microsoft\nadd Windows NT\ncd Windows NT\nadd CurrentVersion\ncd CurrentVersion\n",
    );
    script.push_str(&format!("setval {}\n", values.len()));
    for (k, v) in values {
        script.push_str(&format!("{k}\n{v}\n"));
    }
    // Siblings enough for hash-leaf subkey lists that are searched, not just read.
    script.push_str("cd ..\ncd ..\n");
    for i in 0..40 {
        script.push_str(&format!("add Vendor{i:03}\n"));
    }
    script.push_str("commit\n");
    piped("hivexsh", &["-w", s(path)], &script);
}

/// A Windows PE program of the host's Python installation (pip's launchers), by architecture:
/// `x86_64` or `arm64`.
pub fn pe_program(arch: &str) -> PathBuf {
    let o = Command::new("python3")
        .args(["-c", "import pip, os; print(os.path.dirname(pip.__file__))"])
        .output_named();
    let pip = String::from_utf8(o.stdout).unwrap();
    let name = if arch == "arm64" {
        "w64-arm.exe"
    } else {
        "w64.exe"
    };
    let p = Path::new(pip.trim()).join("_vendor/distlib").join(name);
    assert!(p.exists(), "{} is missing", p.display());
    p
}

pub fn blank(path: &Path, size: u64) {
    std::fs::File::create(path).unwrap().set_len(size).unwrap();
}

pub fn open(path: &Path) -> Arc<dyn diskfmt::Disk> {
    let src: diskfmt::Source = Arc::new(diskfmt::FileSource::open(path).unwrap());
    Arc::from(diskfmt::open(src, &diskfmt::Limits::default()).unwrap())
}

/// The raw disk and its VMDK, VHD and qcow2 wraps by qemu-img.
pub fn wraps(raw: &Path) -> Vec<PathBuf> {
    let mut out = vec![raw.to_path_buf()];
    for (fmt, ext, opts) in [
        ("vmdk", "vmdk", "subformat=streamOptimized"),
        ("vpc", "vhd", "subformat=dynamic"),
        ("qcow2", "qcow2", "compat=1.1"),
    ] {
        let p = raw.with_extension(ext);
        tool(
            "qemu-img",
            &["convert", "-f", "raw", "-O", fmt, "-o", opts, s(raw), s(&p)],
        );
        out.push(p);
    }
    out
}
