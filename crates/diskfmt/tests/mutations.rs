//! Property test: mutated images of every format, made by `qemu-img`, go through detection and
//! reading; each must give an `Err` or a valid bounded read — never a panic, never a hang.

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation, missing_docs)]

use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use diskfmt::{Disk, Limits, Source};
use proptest::prelude::*;

/// (name, qemu-img format, options) of every variant mutated.
const VARIANTS: &[(&str, &str, &[&str])] = &[
    ("qcow2-v2", "qcow2", &["-o", "compat=0.10"]),
    ("qcow2-v3", "qcow2", &[]),
    ("qcow2-zlib", "qcow2", &["-c"]),
    (
        "qcow2-zstd",
        "qcow2",
        &["-c", "-o", "compression_type=zstd"],
    ),
    ("qcow2-l2ext", "qcow2", &["-o", "extended_l2=on"]),
    ("vmdk-sparse", "vmdk", &[]),
    ("vmdk-stream", "vmdk", &["-o", "subformat=streamOptimized"]),
    ("vhd-dynamic", "vpc", &[]),
    ("vhd-fixed", "vpc", &["-o", "subformat=fixed"]),
    ("vhdx", "vhdx", &["-o", "block_size=1M"]),
    ("vdi", "vdi", &[]),
    ("vdi-static", "vdi", &["-o", "static=on"]),
];

fn images() -> &'static Vec<(String, Vec<u8>)> {
    static IMAGES: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("src.raw");
        // 3 MiB: the host's /bin/sh (real, incompressible-ish code), a text run and zeros.
        let mut img = vec![0u8; 3 << 20];
        let sh = std::fs::read("/bin/sh").unwrap();
        let n = sh.len().min(1 << 20);
        img[..n].copy_from_slice(&sh[..n]);
        for (i, b) in img[(2 << 20)..(2 << 20) + 70_000].iter_mut().enumerate() {
            *b = b"mutation test text "[i % 19];
        }
        std::fs::write(&raw, img).unwrap();
        VARIANTS
            .iter()
            .map(|(name, fmt, opts)| {
                let out = dir.path().join(name);
                qemu_convert(&raw, &out, fmt, opts);
                ((*name).to_string(), std::fs::read(out).unwrap())
            })
            .collect()
    })
}

fn qemu_convert(src: &Path, out: &Path, fmt: &str, opts: &[&str]) {
    let st = Command::new("qemu-img")
        .args(["convert", "-O", fmt])
        .args(opts)
        .arg(src)
        .arg(out)
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "this test needs `qemu-img` (Debian package qemu-utils), which cannot be run: {e}"
            )
        });
    assert!(st.success());
}

/// Opens and reads `bytes` (bounded); returns whether it opened.
fn exercise(bytes: Vec<u8>) -> bool {
    let limits = Limits {
        max_virtual_size: 1 << 40,
        max_table_size: 64 << 20,
        ..Limits::default()
    };
    let src: Source = Arc::new(bytes);
    let Ok(disk) = diskfmt::open(src, &limits) else {
        return false;
    };
    read_some(&*disk);
    true
}

fn read_some(disk: &dyn Disk) {
    let size = disk.virtual_size();
    let mut buf = vec![0u8; 1 << 16];
    if let Ok(ext) = disk.extents(0, size) {
        let mut budget: u64 = 4 << 20;
        for e in ext {
            let mut off = e.offset;
            while off < e.end() && budget > 0 {
                let n = (e.end() - off).min(buf.len() as u64);
                let _ = disk.read_at(&mut buf[..n as usize], off);
                budget = budget.saturating_sub(n);
                off += n;
            }
        }
    }
    let _ = disk.read_at(&mut buf[..5], size.saturating_sub(5));
}

/// Runs `exercise` on a thread and fails the case if it takes more than 20 s.
fn exercise_with_deadline(bytes: Vec<u8>) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(exercise(bytes));
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(_) => {}
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("reader hung on a mutated image"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("reader panicked on a mutated image"),
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    /// XOR a byte in the first 128 KiB (headers and tables).
    HeadXor(usize, u8),
    /// XOR a byte in the last 4 KiB (footers).
    TailXor(usize, u8),
    /// Overwrite 8 bytes anywhere with an extreme value.
    Word(usize, u64),
    /// Cut the file.
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (0usize..131_072, 1u8..=255).prop_map(|(p, x)| Mutation::HeadXor(p, x)),
        2 => (0usize..4096, 1u8..=255).prop_map(|(p, x)| Mutation::TailXor(p, x)),
        2 => (any::<usize>(), prop_oneof![Just(u64::MAX), Just(0u64), Just(1u64 << 63), any::<u64>()])
            .prop_map(|(p, v)| Mutation::Word(p, v)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(mut b: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let len = b.len();
        if len == 0 {
            break;
        }
        match *m {
            Mutation::HeadXor(p, x) => b[p % len] ^= x,
            Mutation::TailXor(p, x) => b[len - 1 - (p % len.min(4096))] ^= x,
            Mutation::Word(p, v) => {
                let p = p % len;
                let end = (p + 8).min(len);
                b[p..end].copy_from_slice(&v.to_be_bytes()[..end - p]);
            }
            Mutation::Truncate(p) => b.truncate(p % len),
        }
    }
    b
}

#[test]
fn test_unmutated_images_open() {
    for (name, bytes) in images() {
        assert!(exercise(bytes.clone()), "{name} did not open");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn prop_mutated_image_errs_or_reads(which in 0usize..64, muts in prop::collection::vec(mutation(), 1..6)) {
        let imgs = images();
        let (_, bytes) = &imgs[which % imgs.len()];
        exercise_with_deadline(apply(bytes.clone(), &muts));
    }
}
