//! # guest — what is inside a disk image
//!
//! Guest inspection for vmie: partition tables (MBR, GPT), filesystem identification, read-only
//! file access to the filesystems an operating system boots from (ext2/3/4, XFS, FAT, NTFS),
//! Windows registry hives, and from those the operating system (Linux or Windows), its
//! version, architecture and boot mode. Everything reads through a
//! [`diskfmt::Disk`], so any supported image format is inspected in place, without converting
//! it first. All input is hostile: every number read from the disk is bounded before it
//! allocates, seeks or loops.

pub mod error;
pub mod fs;
pub mod inspect;
pub mod ntfs_fs;
pub mod partition;
pub mod probe;
pub mod regf;
pub mod volume;
pub mod xfs;

pub use error::{GuestError, Result};
pub use inspect::{Report, inspect};
pub use volume::Volume;
