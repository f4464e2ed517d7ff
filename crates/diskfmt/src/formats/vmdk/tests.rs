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
