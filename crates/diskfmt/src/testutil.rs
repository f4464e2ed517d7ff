//! Helpers shared by the format modules' unit tests: images are made with `qemu-img`, and what
//! our readers return is compared with what `qemu-img convert -O raw` produces.

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use crate::disk::{Disk, ExtentKind};
use crate::error::Result;
use crate::io::FileSource;
use crate::limits::Limits;

/// A temporary folder removed on drop.
pub fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Runs `cmd` and returns its output; panics naming the program when it cannot be started
/// (not installed: `.ci/run` installs every tool the tests use).
pub fn output(cmd: &mut Command) -> std::process::Output {
    cmd.output().unwrap_or_else(|e| {
        panic!(
            "this test needs `{}`, which cannot be run: {e}; install it or run .ci/run",
            cmd.get_program().to_string_lossy()
        )
    })
}

/// Runs the tool `name` (from the Debian package `package`) with `args`; panics naming the
/// tool and its package when it is missing, and with its output when it fails.
pub fn tool(name: &str, package: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new(name).args(args).output().unwrap_or_else(|e| {
        panic!("this test needs `{name}` (Debian package {package}), which cannot be run: {e}; install it or run .ci/run")
    });
    assert!(
        out.status.success(),
        "{name} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `qemu-img` with `args`; panics with its stderr on failure.
pub fn qemu_img(args: &[&str]) {
    tool("qemu-img", "qemu-utils", args);
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

/// Writes a raw disk of `size` bytes (a multiple of 512, at least 4 MiB) with random, text
/// and zero regions, some of them unaligned, and data in the last sector.
pub fn write_sample_raw(path: &Path, size: u64) {
    assert!(size >= 4 << 20 && size.is_multiple_of(512));
    let mut img = vec![0u8; size as usize];
    let n = img.len();
    img[..1 << 20].copy_from_slice(&pseudo_random(1, 1 << 20));
    let text = b"vmie sample text region: the quick brown fox jumps over the lazy dog.\n";
    for (i, b) in img[(3 << 19)..(2 << 20)].iter_mut().enumerate() {
        *b = text[i % text.len()];
    }
    let odd = (5 << 19) + 777;
    let odd_len = 300_000.min(n - odd - 4096);
    img[odd..odd + odd_len].copy_from_slice(&pseudo_random(2, odd_len));
    img[n - 512..].copy_from_slice(&pseudo_random(3, 512));
    std::fs::write(path, img).unwrap();
}

/// Opens `path` with detection and the default limits.
pub fn open_path(path: &Path) -> Result<Box<dyn Disk>> {
    let src = Arc::new(FileSource::open(path)?);
    crate::open(src, &Limits::default())
}

/// Reads the whole virtual disk through `read_at`, in odd-sized pieces to exercise
/// boundaries.
pub fn read_all(disk: &dyn Disk) -> Vec<u8> {
    let size = disk.virtual_size() as usize;
    let mut out = vec![0u8; size];
    let mut off = 0usize;
    let mut step = 65_536 + 512 * 3 + 17;
    while off < size {
        let len = step.min(size - off);
        disk.read_at(&mut out[off..off + len], off as u64).unwrap();
        off += len;
        step = if step > 300_000 { 4097 } else { step * 2 + 1 };
    }
    out
}

/// What `qemu-img convert -O raw` makes of `path`.
pub fn qemu_raw(path: &Path) -> Vec<u8> {
    qemu_raw_as(path, None)
}

/// Like [`qemu_raw`] with the input format named (`-f`): qemu-img probes a fixed VHD, whose
/// only header is a footer, as raw.
pub fn qemu_raw_as(path: &Path, format: Option<&str>) -> Vec<u8> {
    let dir = tmp();
    let out: PathBuf = dir.path().join("out.raw");
    let mut args = vec!["convert"];
    if let Some(f) = format {
        args.extend(["-f", f]);
    }
    args.extend(["-O", "raw", path.to_str().unwrap(), out.to_str().unwrap()]);
    qemu_img(&args);
    std::fs::read(out).unwrap()
}

/// `qemu-img info -f FORMAT`'s virtual size of `path`.
pub fn qemu_virtual_size(path: &Path, format: &str) -> u64 {
    let out = output(Command::new("qemu-img").args([
        "info",
        "-f",
        format,
        "--output=json",
        path.to_str().unwrap(),
    ]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["virtual-size"].as_u64().unwrap()
}

/// Opens `path`, reads it whole and checks it equals `qemu-img convert -O raw` of the same
/// file; checks the extent map covers the disk and that zero extents read as zeros.
/// Returns the opened disk for further checks.
pub fn assert_same_as_qemu(path: &Path) -> Box<dyn Disk> {
    check_same(path, &qemu_raw(path))
}

/// [`assert_same_as_qemu`] with the format named to qemu-img, which also checks the virtual
/// size against `qemu-img info`.
pub fn assert_same_as_qemu_as(path: &Path, format: &str) -> Box<dyn Disk> {
    let disk = check_same(path, &qemu_raw_as(path, Some(format)));
    assert_eq!(disk.virtual_size(), qemu_virtual_size(path, format));
    disk
}

fn check_same(path: &Path, theirs: &[u8]) -> Box<dyn Disk> {
    let disk = open_path(path).unwrap();
    let ours = read_all(&*disk);
    assert_eq!(
        ours.len(),
        theirs.len(),
        "virtual size differs from qemu-img"
    );
    if let Some(i) = ours.iter().zip(theirs).position(|(a, b)| a != b) {
        panic!("content differs from qemu-img at byte {i}");
    }
    let ext = disk.extents(0, disk.virtual_size()).unwrap();
    let mut at = 0u64;
    for e in &ext {
        assert_eq!(e.offset, at, "extent map has a gap or overlap");
        if e.kind == ExtentKind::Zero {
            let s = &ours[e.offset as usize..e.end() as usize];
            assert!(
                s.iter().all(|&b| b == 0),
                "zero extent at {} holds data",
                e.offset
            );
        }
        at = e.end();
    }
    assert_eq!(
        at,
        disk.virtual_size(),
        "extent map does not cover the disk"
    );
    disk
}

/// Feeds `image` and many mutations of it (bit flips, truncations, overwritten words)
/// through detection and reading: each must give an `Err` or a successful bounded read,
/// never a panic. Reads at most `max_read` bytes of each opened disk.
pub fn assert_mutations_do_not_panic(image: &[u8], rounds: u32, max_read: usize) {
    let limits = Limits {
        max_virtual_size: 1 << 40,
        ..Limits::default()
    };
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for round in 0..rounds {
        let mut m = image.to_vec();
        match round % 4 {
            0 => {
                for _ in 0..(1 + next() % 8) {
                    let i = (next() as usize) % m.len().max(1);
                    if let Some(b) = m.get_mut(i) {
                        *b ^= 1 << (next() % 8);
                    }
                }
            }
            1 => {
                let cut = (next() as usize) % m.len().max(1);
                m.truncate(cut);
            }
            2 => {
                // Overwrite a word with an extreme value: half the time in the first 64 KiB
                // (headers, tables), else anywhere (VHDX regions, trailing tables, footers).
                let span = if next() % 2 == 0 {
                    m.len().clamp(8, 65_536)
                } else {
                    m.len().max(8)
                };
                let i = (next() as usize) % (span - 7);
                let v: u64 = match next() % 4 {
                    0 => u64::MAX,
                    1 => 0,
                    2 => 1 << (next() % 64),
                    _ => next(),
                };
                if i + 8 <= m.len() {
                    m[i..i + 8].copy_from_slice(&v.to_le_bytes());
                }
            }
            _ => {
                let i = (next() as usize) % m.len().max(1);
                let end = (i + 1 + (next() as usize) % 4096).min(m.len());
                for b in &mut m[i..end] {
                    *b = next() as u8;
                }
            }
        }
        let src: crate::io::Source = Arc::new(m);
        if let Ok(disk) = crate::open(src, &limits) {
            let size = disk.virtual_size();
            if let Ok(ext) = disk.extents(0, size) {
                let mut budget = max_read;
                let mut buf = vec![0u8; 65_536];
                for e in ext {
                    let mut off = e.offset;
                    while off < e.end() && budget > 0 {
                        let n = (e.end() - off).min(buf.len() as u64) as usize;
                        let _ = disk.read_at(&mut buf[..n], off);
                        budget = budget.saturating_sub(n);
                        off += n as u64;
                    }
                }
            }
            let _ = disk.read_at(&mut buf_small(), size.saturating_sub(7));
        }
    }
}

fn buf_small() -> [u8; 7] {
    [0u8; 7]
}
