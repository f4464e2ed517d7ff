//! Writer tests: outputs checked by qemu-img (compare, check, info) and read back by our readers.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicU64;

use super::WriteOptions;
use crate::testutil::{open_path, qemu_img, read_all, tmp, write_sample_raw};
use crate::{Format, write_image};

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn write(src: &Path, out: &Path, format: Format, opts: &WriteOptions) -> crate::Result<()> {
    let disk = open_path(src).unwrap();
    let f = std::fs::File::create(out).unwrap();
    write_image(&*disk, &f, format, opts, &AtomicU64::new(0)).map(|_| ())
}

fn qemu_ok(args: &[&str]) -> String {
    let o = crate::testutil::output(Command::new("qemu-img").args(args));
    assert!(
        o.status.success(),
        "qemu-img {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn test_write_vmdk_stream_checks_clean_and_reads_back_identical() {
    let dir = tmp();
    for size in [8u64 << 20, (8 << 20) + 1536] {
        let src = dir.path().join(format!("src{size}.raw"));
        write_sample_raw(&src, size);
        let out = dir.path().join(format!("out{size}.vmdk"));
        let opts = WriteOptions {
            name: Some("out.vmdk".into()),
            ..WriteOptions::default()
        };
        write(&src, &out, Format::Vmdk, &opts).unwrap();
        qemu_ok(&["compare", "-f", "raw", "-F", "vmdk", p(&src), p(&out)]);
        assert!(qemu_ok(&["check", "-f", "vmdk", p(&out)]).contains("No errors"));
        let info: serde_json::Value =
            serde_json::from_str(&qemu_ok(&["info", "--output=json", p(&out)])).unwrap();
        assert_eq!(info["format"], "vmdk");
        assert_eq!(info["virtual-size"], size);
        assert_eq!(
            info["format-specific"]["data"]["create-type"],
            "streamOptimized"
        );
        let back = read_all(&*open_path(&out).unwrap());
        assert_eq!(back, std::fs::read(&src).unwrap());
        // Size close to qemu-img's own stream-optimized output.
        let theirs = dir.path().join("theirs.vmdk");
        qemu_img(&[
            "convert",
            "-O",
            "vmdk",
            "-o",
            "subformat=streamOptimized",
            p(&src),
            p(&theirs),
        ]);
        let (ours, q) = (
            std::fs::metadata(&out).unwrap().len(),
            std::fs::metadata(&theirs).unwrap().len(),
        );
        println!("size {size}: vmie {ours} bytes, qemu-img {q} bytes");
        assert!(ours * 100 <= q * 110, "vmie {ours} vs qemu-img {q}");
    }
}

#[test]
fn test_write_vmdk_empty_and_scsi_disks_are_valid() {
    let dir = tmp();
    let src = dir.path().join("zero.raw");
    std::fs::File::create(&src)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let out = dir.path().join("zero.vmdk");
    let opts = WriteOptions {
        adapter_type: Some("lsilogic".into()),
        ..WriteOptions::default()
    };
    write(&src, &out, Format::Vmdk, &opts).unwrap();
    qemu_ok(&["compare", "-f", "raw", "-F", "vmdk", p(&src), p(&out)]);
    assert!(
        std::fs::metadata(&out).unwrap().len() < 200 << 10,
        "an empty disk must stay small"
    );
    let text = String::from_utf8_lossy(&std::fs::read(&out).unwrap()[512..512 * 21]).to_string();
    assert!(
        text.contains("ddb.adapterType = \"lsilogic\"")
            && text.contains("ddb.geometry.heads = \"255\""),
        "{text}"
    );
}

#[test]
fn test_write_vmdk_other_subformat_or_adapter_refused() {
    let dir = tmp();
    let src = dir.path().join("s.raw");
    write_sample_raw(&src, 4 << 20);
    let out = dir.path().join("x.vmdk");
    let flat = WriteOptions {
        subformat: Some("monolithicFlat".into()),
        ..WriteOptions::default()
    };
    assert!(write(&src, &out, Format::Vmdk, &flat).is_err());
    let bad = WriteOptions {
        adapter_type: Some("nvme\"; rm".into()),
        ..WriteOptions::default()
    };
    assert!(write(&src, &out, Format::Vmdk, &bad).is_err());
}

#[test]
fn test_write_vhd_dynamic_and_fixed_keep_size_and_data() {
    let dir = tmp();
    for size in [8u64 << 20, (8 << 20) + 1536, 5 << 20] {
        let src = dir.path().join(format!("src{size}.raw"));
        write_sample_raw(&src, size);
        for sub in ["dynamic", "fixed"] {
            let out = dir.path().join(format!("out{size}{sub}.vhd"));
            let opts = WriteOptions {
                subformat: Some(sub.into()),
                ..WriteOptions::default()
            };
            write(&src, &out, Format::Vhd, &opts).unwrap();
            qemu_ok(&["compare", "-f", "raw", "-F", "vpc", p(&src), p(&out)]);
            let info: serde_json::Value =
                serde_json::from_str(&qemu_ok(&["info", "-f", "vpc", "--output=json", p(&out)]))
                    .unwrap();
            assert_eq!(info["virtual-size"], size, "{sub} {size}");
            let disk = open_path(&out).unwrap();
            assert_eq!(disk.info().subformat.as_deref(), Some(sub));
            assert_eq!(
                read_all(&*disk),
                std::fs::read(&src).unwrap(),
                "{sub} {size}"
            );
        }
    }
}

/// Checks that the image at `out` reads as the raw disk at `src`, reading only the ranges where
/// either one has data (both read as zeros elsewhere by their extent maps).
fn assert_reads_as(out: &Path, src: &Path) {
    let (a, b) = (open_path(src).unwrap(), open_path(out).unwrap());
    assert_eq!(a.virtual_size(), b.virtual_size());
    let size = a.virtual_size();
    let mut ranges = Vec::new();
    for d in [&a, &b] {
        for e in d.extents(0, size).unwrap() {
            if e.kind != crate::ExtentKind::Zero {
                ranges.push((e.offset, e.end()));
            }
        }
    }
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    for (mut at, end) in ranges {
        while at < end {
            let n = (end - at).min(1 << 20) as usize;
            a.read_at(&mut x[..n], at).unwrap();
            b.read_at(&mut y[..n], at).unwrap();
            assert!(
                x[..n] == y[..n],
                "{} differs from {} near {at}",
                p(out),
                p(src)
            );
            at += n as u64;
        }
    }
}

/// A sparse raw disk of `size` bytes with pseudo-random data at each of `at`.
fn sparse_raw(path: &Path, size: u64, at: &[u64]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    for (i, &off) in at.iter().enumerate() {
        let data = crate::testutil::pseudo_random(i as u64 + 7, 200_000);
        let n = data.len().min((size - off) as usize);
        f.write_all_at(&data[..n], off).unwrap();
    }
}

#[test]
fn test_write_qcow2_plain_and_compressed_check_clean_and_read_back() {
    let dir = tmp();
    let small = dir.path().join("small.raw");
    write_sample_raw(&small, 8 << 20);
    // Data in three L2 tables' ranges and a tail that is not a whole cluster.
    let wide = dir.path().join("wide.raw");
    let wide_size = (1100 << 20) + 1536;
    sparse_raw(
        &wide,
        wide_size,
        &[0, 300 << 20, 600 << 20, wide_size - 100_000],
    );
    for src in [&small, &wide] {
        for comp in [None, Some("zlib"), Some("zstd")] {
            let out = dir.path().join(format!("out-{comp:?}.qcow2"));
            let opts = WriteOptions {
                compression: comp.map(Into::into),
                ..WriteOptions::default()
            };
            write(src, &out, Format::Qcow2, &opts).unwrap();
            qemu_ok(&["compare", "-f", "raw", "-F", "qcow2", p(src), p(&out)]);
            let check = qemu_ok(&["check", "-f", "qcow2", p(&out)]);
            assert!(check.contains("No errors"), "{comp:?}: {check}");
            let info: serde_json::Value =
                serde_json::from_str(&qemu_ok(&["info", "--output=json", p(&out)])).unwrap();
            assert_eq!(info["virtual-size"], std::fs::metadata(src).unwrap().len());
            assert_eq!(info["format-specific"]["data"]["compat"], "1.1");
            let want_type = if comp == Some("zstd") { "zstd" } else { "zlib" };
            assert_eq!(
                info["format-specific"]["data"]["compression-type"],
                want_type
            );
            assert_reads_as(&out, src);
            let size = std::fs::metadata(&out).unwrap().len();
            println!("{} {comp:?}: {size} bytes", p(src));
            if comp.is_some() && src == &small {
                // The sample's text and zero runs must shrink (the wide disk's data is random).
                let plain = dir.path().join("out-None.qcow2");
                assert!(size < std::fs::metadata(plain).unwrap().len());
            }
        }
    }
}

#[test]
fn test_write_qcow2_unknown_compression_refused() {
    let dir = tmp();
    let src = dir.path().join("s.raw");
    write_sample_raw(&src, 4 << 20);
    let out = dir.path().join("x.qcow2");
    let bad = WriteOptions {
        compression: Some("lz4".into()),
        ..WriteOptions::default()
    };
    let e = write(&src, &out, Format::Qcow2, &bad).unwrap_err();
    assert!(e.to_string().contains("zlib, zstd"), "{e}");
}

#[test]
fn test_write_vhdx_checks_clean_keeps_size_and_data() {
    let dir = tmp();
    let small = dir.path().join("small.raw");
    write_sample_raw(&small, (8 << 20) + 1536);
    // Sparse data in blocks far apart, past a 16 MiB-block chunk boundary (chunk = 256 blocks).
    let wide = dir.path().join("wide.raw");
    let wide_size = 5u64 << 30;
    sparse_raw(
        &wide,
        wide_size,
        &[0, 40 << 20, 4200 << 20, wide_size - 100_000],
    );
    for src in [&small, &wide] {
        let out = dir.path().join("out.vhdx");
        write(src, &out, Format::Vhdx, &WriteOptions::default()).unwrap();
        qemu_ok(&["compare", "-f", "raw", "-F", "vhdx", p(src), p(&out)]);
        let check = qemu_ok(&["check", "-f", "vhdx", p(&out)]);
        assert!(check.contains("No errors"), "{check}");
        let info: serde_json::Value =
            serde_json::from_str(&qemu_ok(&["info", "--output=json", p(&out)])).unwrap();
        assert_eq!(info["format"], "vhdx");
        assert_eq!(info["virtual-size"], std::fs::metadata(src).unwrap().len());
        assert_eq!(open_path(&out).unwrap().info().format, crate::Format::Vhdx);
        assert_reads_as(&out, src);
    }
}

/// A disk of non-zero bytes whose first 2 MiB job is read only once the third job is being
/// read: by then the worker that read the second job has handed it on, so a finished later
/// job is waiting when the first reaches the sink.
struct FirstJobLast {
    size: u64,
    later_read: std::sync::Mutex<bool>,
    cond: std::sync::Condvar,
}

impl crate::Disk for FirstJobLast {
    fn info(&self) -> crate::ImageInfo {
        crate::ImageInfo {
            format: crate::Format::Raw,
            subformat: None,
            virtual_size: self.size,
            cluster_size: None,
            details: Vec::new(),
        }
    }
    fn virtual_size(&self) -> u64 {
        self.size
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> crate::Result<()> {
        let mut done = self.later_read.lock().unwrap();
        if offset == 0 {
            while !*done {
                done = self.cond.wait(done).unwrap();
            }
        } else if offset >= 4 << 20 {
            *done = true;
            self.cond.notify_all();
        }
        buf.fill(0x5a);
        Ok(())
    }
    fn extents(&self, offset: u64, length: u64) -> crate::Result<Vec<crate::Extent>> {
        let end = crate::disk::clip_end(offset, length, self.size);
        Ok(vec![crate::Extent {
            offset,
            length: end - offset,
            kind: crate::ExtentKind::Data,
        }])
    }
}

#[test]
fn test_ordered_grains_sink_error_stops_later_grains() {
    let disk = FirstJobLast {
        size: 8 << 20,
        later_read: std::sync::Mutex::new(false),
        cond: std::sync::Condvar::new(),
    };
    let mut calls = Vec::new();
    let out = super::ordered_grains(
        &disk,
        64 << 10,
        2,
        &AtomicU64::new(0),
        &|_| Ok(None),
        &mut |g, _| {
            calls.push(g);
            Err(crate::DiskError::invalid(
                crate::Format::Raw,
                "the sink broke",
            ))
        },
    );
    assert!(out.is_err());
    assert_eq!(calls, [0], "the sink was called again after it failed");
}
