//! One folder per format, each with the same shape: `mod.rs` (the `<Fmt>Disk` reader and its
//! `open`), `header.rs`, the format's tables, `tests.rs`. The registry
//! ([`crate::registry::FORMATS`]) names each format's `open`.

pub mod qcow2;
pub mod raw;
pub mod vdi;
pub mod vhd;
pub mod vhdx;
pub mod vmdk;
