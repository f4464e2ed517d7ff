//! # diskfmt — virtual disk image formats for vmie
//!
//! Detection, safety inspection, readers and writers for the disk images people export from
//! VMware, Hyper-V, VirtualBox and KVM. Everything here takes bytes from strangers: every
//! number read from an image passes [`Limits`] and checked arithmetic before it allocates,
//! seeks or loops, and nothing inside an image can make us open another file.
//!
//! Where to start:
//! - [`registry`]: one row per format (names, EC2 name, signatures, reader, writer) and one
//!   per container recognized but refused (Parallels, LUKS, gzip, …);
//! - [`detect()`]: the format of a file from its content;
//! - [`open`] / [`open_as`]: detect, inspect and return a [`Disk`]; [`write_image`];
//! - [`Disk`]: virtual size, positioned reads and the extent map;
//! - [`convert::convert_to_raw`]: sparse, parallel, constant-memory conversion;
//! - `formats/<fmt>`: one folder per format; `write/<fmt>.rs`: one writer per format;
//! - [`ova`]: appliances (a tar of an OVF descriptor and its disks).
//!
//! The crate is synchronous and knows nothing of networks, databases or tasks.
//!
//! Layers, each using only those before it: `format`, `error`, `limits`, `io`, `disk`
//! (names, errors, bounds, positioned reads) → `formats/*`, `write/*` (readers, writers) →
//! `registry` → `detect`, `image` (entry points) → `ova`.

pub mod cache;
pub mod codec;
pub mod convert;
pub mod detect;
pub mod disk;
pub mod error;
pub mod format;
pub mod formats;
pub mod image;
pub mod io;
pub mod limits;
pub mod ova;
pub mod registry;
#[cfg(test)]
pub mod testutil;
pub mod text;
pub mod write;

pub use detect::{Detection, detect};
pub use disk::{Disk, Extent, ExtentKind, ImageInfo, allocated_bytes};
pub use error::{DiskError, Refusal, Result};
pub use format::{Format, Unread, UnreadKind};
pub use image::{Inspection, Verdict, inspect, open, open_as, open_with, write_image};
pub use io::{FileSource, ReadAt, Source};
pub use limits::Limits;
