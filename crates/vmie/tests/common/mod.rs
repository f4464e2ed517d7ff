//! Shared helpers of the `vmie` integration tests: images are made with real tools
//! (`qemu-img`, `sfdisk`, `mkfs.ext4`, `xorriso`), and the real `vmie` binary is driven.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    missing_docs
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use testkit::ToolExt;

/// The `vmie` binary built for this test run, with boot checks off (these tests' images are
/// not bootable; crates/engine/tests/booting.rs boots real guests).
pub fn vmie() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vmie"));
    c.env("VMIE_BOOT_CHECK", "off");
    c
}

/// Runs a command; panics with its output when it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output_named();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs a tool by name with arguments; panics on failure.
pub fn tool(name: &str, args: &[&str]) -> Output {
    run(Command::new(name).args(args))
}

/// `path` as `&str`.
pub fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Deterministic pseudo-random bytes (xorshift64*).
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    v.truncate(len);
    v
}

/// A 12 MiB raw disk with random, text and zero regions, unaligned edges and data in the last
/// sector.
pub fn mixed_raw(dir: &Path) -> PathBuf {
    let size = 12usize << 20;
    let mut img = vec![0u8; size];
    img[..1 << 20].copy_from_slice(&pseudo_random(11, 1 << 20));
    let text = b"Lorem ipsum dolor sit amet, vmie test pattern 0123456789\n";
    for (i, b) in img[(3 << 20) + 100..(5 << 20) + 3].iter_mut().enumerate() {
        *b = text[i % text.len()];
    }
    let at = (7 << 20) + 4095;
    img[at..at + 777_777].copy_from_slice(&pseudo_random(12, 777_777));
    img[size - 512..].copy_from_slice(&pseudo_random(13, 512));
    let p = dir.join("mixed.raw");
    std::fs::write(&p, img).unwrap();
    p
}

/// A 32 MiB raw disk with an MBR partition table (made by `sfdisk`) and one ext4 partition
/// made by `mkfs.ext4 -d` from a small tree holding an os-release file and a real ELF binary.
pub fn ext4_disk(dir: &Path) -> PathBuf {
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::create_dir_all(tree.join("bin")).unwrap();
    std::fs::write(
        tree.join("etc/os-release"),
        "NAME=\"Debian GNU/Linux\"\nID=debian\nVERSION_ID=\"12\"\n",
    )
    .unwrap();
    std::fs::copy("/bin/sh", tree.join("bin/sh")).unwrap();
    std::fs::write(tree.join("etc/big"), pseudo_random(21, 3 << 20)).unwrap();
    let fs = dir.join("part.ext4");
    tool("mkfs.ext4", &["-q", "-F", "-d", s(&tree), s(&fs), "30M"]);
    let disk = dir.join("ext4disk.raw");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let mut sf = Command::new("sfdisk");
    sf.args(["-q", s(&disk)])
        .stdin(std::process::Stdio::piped());
    let mut child = sf.spawn_named();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(b"label: dos\nstart=2048, size=61440, type=83, bootable\n")
            .unwrap();
    }
    assert!(child.wait().unwrap().success(), "sfdisk failed");
    let fsb = std::fs::read(&fs).unwrap();
    use std::os::unix::fs::FileExt;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&disk)
        .unwrap()
        .write_all_at(&fsb, 2048 * 512)
        .unwrap();
    disk
}

/// What `qemu-img convert -f FMT -O raw` makes of `img` (the format is named: qemu-img probes a
/// fixed VHD, whose only header is a footer, as raw).
pub fn qemu_raw(img: &Path, fmt: &str, dir: &Path) -> Vec<u8> {
    let out = dir.join(format!(
        "{}.qemu.raw",
        img.file_name().unwrap().to_string_lossy()
    ));
    tool(
        "qemu-img",
        &["convert", "-f", fmt, "-O", "raw", s(img), s(&out)],
    );
    std::fs::read(out).unwrap()
}

/// Asserts `a == b` without printing megabytes on failure.
pub fn assert_same(a: &[u8], b: &[u8], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: sizes differ");
    if let Some(i) = a.iter().zip(b).position(|(x, y)| x != y) {
        panic!("{what}: first difference at byte {i}");
    }
}

/// Asserts `out` starts with `src` and anything after it is zeros (formats such as VHD round
/// the virtual size up to their geometry).
pub fn assert_source_then_zeros(out: &[u8], src: &[u8], what: &str) {
    assert!(
        out.len() >= src.len(),
        "{what}: output is shorter than the source"
    );
    assert_same(&out[..src.len()], src, what);
    assert!(
        out[src.len()..].iter().all(|&b| b == 0),
        "{what}: tail is not zero"
    );
}

/// Lists the file names in `dir`.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
