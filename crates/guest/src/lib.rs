//! # guest — what is inside a disk image
//!
//! Guest inspection for vmie: partition tables (MBR, GPT), filesystem identification, read-only
//! file access to the filesystems an operating system boots from, and from those the operating
//! system, its version, architecture and boot mode. Everything reads through a
//! [`diskfmt::Disk`], so any supported image format is inspected in place, without converting
//! it first. All input is hostile: every number read from the disk is bounded before it
//! allocates, seeks or loops.

pub mod error;
pub mod fs;
pub mod inspect;
pub mod partition;
pub mod probe;
pub mod volume;

pub use error::{GuestError, Result};
pub use inspect::{Report, inspect};
pub use volume::Volume;
