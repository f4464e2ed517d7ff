//! Tests of the VMDK reader against images made by qemu-img.

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation, missing_docs)]

use std::path::Path;

use crate::testutil::{assert_same_as_qemu, qemu_img, tmp, write_sample_raw};

const SAMPLE: u64 = 8 << 20;

fn make(dir: &Path, name: &str, opts: &[&str]) -> std::path::PathBuf {
    let raw = dir.join("s.raw");
    if !raw.exists() {
        write_sample_raw(&raw, SAMPLE);
    }
    let out = dir.join(name);
    let mut args = vec!["convert", "-O", "vmdk"];
    args.extend_from_slice(opts);
    args.push(raw.to_str().unwrap());
    args.push(out.to_str().unwrap());
    qemu_img(&args);
    out
}

#[test]
fn test_monolithic_sparse_same_as_qemu() {
    let d = tmp();
    let p = make(d.path(), "m.vmdk", &[]);
    let disk = assert_same_as_qemu(&p);
    let info = disk.info();
    assert_eq!(info.subformat.as_deref(), Some("monolithicSparse"));
    assert_eq!(info.cluster_size, Some(65536));
}

#[test]
fn test_stream_optimized_same_as_qemu() {
    let d = tmp();
    let p = make(d.path(), "so.vmdk", &["-o", "subformat=streamOptimized"]);
    let disk = assert_same_as_qemu(&p);
    let info = disk.info();
    assert_eq!(info.subformat.as_deref(), Some("streamOptimized"));
    assert!(info.details.contains(&("compressed".into(), "true".into())));
}

#[test]
fn test_compat6_same_as_qemu() {
    let d = tmp();
    let p = make(d.path(), "c6.vmdk", &["-o", "compat6"]);
    assert_same_as_qemu(&p);
}

#[test]
fn test_adapter_type_lsilogic_same_as_qemu() {
    let d = tmp();
    let p = make(d.path(), "lsi.vmdk", &["-o", "adapter_type=lsilogic"]);
    let disk = assert_same_as_qemu(&p);
    assert!(
        disk.info()
            .details
            .contains(&("adapter_type".into(), "lsilogic".into()))
    );
}

#[test]
fn test_zeroed_grain_same_as_qemu() {
    let d = tmp();
    let p = make(d.path(), "z.vmdk", &["-o", "zeroed_grain=on"]);
    let out = std::process::Command::new("qemu-io")
        .args(["-f", "vmdk", "-c", "write -z 0 128k", p.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let disk = assert_same_as_qemu(&p);
    let ext = disk.extents(0, 1 << 20).unwrap();
    assert_eq!(ext[0].kind, crate::disk::ExtentKind::Zero);
    assert_eq!(ext[0].length, 128 << 10);
}
