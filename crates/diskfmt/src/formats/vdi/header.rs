//! The VDI header (VirtualBox "VDI" image format, header version 1.1). All numbers are
//! little-endian; offsets are from the start of the file.

use super::rules;
use crate::error::{DiskError, Refusal, Result};
use crate::format::Format;
use crate::io::le;
use crate::limits::MIB;
use crate::text::printable;

const F: Format = Format::Vdi;

/// Bytes of the header read and parsed (text, signature, version and the v1.1 fields up to
/// the parent UUID end at 0x1c8; qemu writes a 512-byte header).
pub const HEADER_SIZE: usize = 0x200;
/// Image signature at 0x40 (VirtualBox `VDI_IMAGE_SIGNATURE`).
pub const SIGNATURE: u32 = 0xbeda_107f;
/// Header version 1.1 (`0x00010001`), the one VirtualBox and qemu write.
pub const VERSION_1_1: u32 = 0x0001_0001;
/// Size of the v1.1 header fields after the pre-header (0x48 .. 0x1c8).
pub const MIN_HEADER_SIZE: u32 = 0x180;
/// Sector size: VDI v1.1 images always use 512-byte sectors.
pub const SECTOR: u64 = 512;
/// Normal (dynamically allocated) image (VirtualBox `VDI_IMAGE_TYPE_NORMAL`).
pub const TYPE_NORMAL: u32 = 1;
/// Fixed (preallocated) image (`VDI_IMAGE_TYPE_FIXED`).
pub const TYPE_FIXED: u32 = 2;
/// Undo image (`VDI_IMAGE_TYPE_UNDO`): needs its base image.
pub const TYPE_UNDO: u32 = 3;
/// Differencing image (`VDI_IMAGE_TYPE_DIFF`): needs its parent.
pub const TYPE_DIFF: u32 = 4;
/// Largest block size accepted. VirtualBox and qemu write 1 MiB blocks; 64 MiB bounds one
/// read run and the per-block arithmetic.
pub const MAX_BLOCK_SIZE: u64 = 64 * MIB;
/// Largest per-block extra data accepted (VirtualBox writes none).
pub const MAX_BLOCK_EXTRA: u64 = MIB;

/// The fields of a VDI v1.1 header this reader uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The text at the start (e.g. `<<< Oracle VM VirtualBox Disk Image >>>`), printable.
    pub text: String,
    /// Image type (0x4c): 1 normal, 2 fixed.
    pub image_type: u32,
    /// Image flags (0x50).
    pub flags: u32,
    /// Offset of the block map (0x154).
    pub offset_bmap: u64,
    /// Offset of the first data block (0x158).
    pub offset_data: u64,
    /// Disk size in bytes (0x170).
    pub disk_size: u64,
    /// Block size in bytes (0x178).
    pub block_size: u64,
    /// Extra data before each block (0x17c).
    pub block_extra: u64,
    /// Number of blocks, entries of the block map (0x180).
    pub blocks: u32,
    /// Number of allocated blocks (0x184).
    pub allocated: u32,
}

/// The fields that say what the file is: signature, version 1.1, a header size that holds
/// the 1.1 fields, a normal or fixed image with no link or parent UUID. Returns the header
/// size.
fn check_identity(b: &[u8; HEADER_SIZE]) -> Result<u32> {
    let sig = le::u32(b, 0x40);
    if sig != SIGNATURE {
        return Err(DiskError::invalid(
            F,
            format!("signature {sig:#010x} at 0x40 is not {SIGNATURE:#010x}"),
        ));
    }
    let version = le::u32(b, 0x44);
    if version != VERSION_1_1 {
        return Err(DiskError::unsupported_rule(
            F,
            rules::VERSION,
            format!(
                "header version {}.{} (only 1.1 is read)",
                version >> 16,
                version & 0xffff
            ),
        ));
    }
    let header_size = le::u32(b, 0x48);
    if header_size < MIN_HEADER_SIZE {
        return Err(DiskError::invalid_rule(
            F,
            rules::HEADER_SIZE,
            format!("header size {header_size:#x} is below the v1.1 size {MIN_HEADER_SIZE:#x}"),
        ));
    }
    match le::u32(b, 0x4c) {
        TYPE_NORMAL | TYPE_FIXED => {}
        TYPE_UNDO | TYPE_DIFF => return Err(Refusal::DifferencingDisk { format: F }.into()),
        t => {
            return Err(DiskError::invalid_rule(
                F,
                rules::IMAGE_TYPE,
                format!("image type {t} (expected 1 normal or 2 fixed)"),
            ));
        }
    }
    // UUIDs: image 0x188, last snapshot 0x198, link 0x1a8, parent 0x1b8. A link or parent
    // UUID ties the image to another one.
    if b[0x1a8..0x1c8].iter().any(|&x| x != 0) {
        return Err(Refusal::DifferencingDisk { format: F }.into());
    }
    Ok(header_size)
}

impl Header {
    /// Parses and checks the first [`HEADER_SIZE`] bytes of a VDI file: the identity fields
    /// (signature, version, header size, type, no parent), then the sizes, then the layout of
    /// header, block map and data.
    pub fn parse(b: &[u8; HEADER_SIZE]) -> Result<Header> {
        let header_size = check_identity(b)?;
        let h = Header {
            text: printable(
                b[..0x40]
                    .split(|&c| c == 0 || c == b'\n')
                    .next()
                    .unwrap_or(&[]),
            )
            .trim()
            .to_string(),
            image_type: le::u32(b, 0x4c),
            flags: le::u32(b, 0x50),
            offset_bmap: u64::from(le::u32(b, 0x154)),
            offset_data: u64::from(le::u32(b, 0x158)),
            disk_size: le::u64(b, 0x170),
            block_size: u64::from(le::u32(b, 0x178)),
            block_extra: u64::from(le::u32(b, 0x17c)),
            blocks: le::u32(b, 0x180),
            allocated: le::u32(b, 0x184),
        };
        h.check_sizes(le::u32(b, 0x168))?;
        h.check_layout(header_size)?;
        Ok(h)
    }

    /// Sector size, block size, block extra data, allocated count.
    fn check_sizes(&self, sector_size: u32) -> Result<()> {
        if u64::from(sector_size) != SECTOR {
            return Err(DiskError::unsupported_rule(
                F,
                rules::SECTOR_SIZE,
                format!("sector size {sector_size} (only 512 is defined)"),
            ));
        }
        let bs = self.block_size;
        if !bs.is_power_of_two() || !(SECTOR..=MAX_BLOCK_SIZE).contains(&bs) {
            return Err(DiskError::invalid_rule(
                F,
                rules::BLOCK_SIZE,
                format!(
                    "block size {bs} is not a power of two between 512 bytes and {} MiB",
                    MAX_BLOCK_SIZE / MIB
                ),
            ));
        }
        if self.block_extra > MAX_BLOCK_EXTRA || !self.block_extra.is_multiple_of(SECTOR) {
            return Err(DiskError::invalid_rule(
                F,
                rules::BLOCK_EXTRA,
                format!(
                    "block extra data size {} is not supported",
                    self.block_extra
                ),
            ));
        }
        if self.allocated > self.blocks {
            return Err(DiskError::corrupt_rule(
                F,
                rules::ALLOCATED_COUNT,
                format!(
                    "{} blocks allocated out of {} blocks",
                    self.allocated, self.blocks
                ),
            ));
        }
        Ok(())
    }

    /// The header (0x48 + `header_size` bytes), then the block map, then the data, each
    /// sector aligned.
    fn check_layout(&self, header_size: u32) -> Result<()> {
        let (bmap, data) = (self.offset_bmap, self.offset_data);
        if !bmap.is_multiple_of(SECTOR) || !data.is_multiple_of(SECTOR) {
            return Err(DiskError::invalid_rule(
                F,
                rules::UNALIGNED,
                format!("block map offset {bmap} or data offset {data} is not sector-aligned"),
            ));
        }
        let header_end = 0x48 + u64::from(header_size);
        if bmap < header_end {
            return Err(DiskError::invalid_rule(
                F,
                rules::MAP_OVER_HEADER,
                format!(
                    "the block map at {bmap:#x} starts inside the header (which ends at {header_end:#x})"
                ),
            ));
        }
        let map_end = bmap + u64::from(self.blocks) * 4;
        if data < map_end {
            return Err(DiskError::invalid_rule(
                F,
                rules::DATA_OVER_MAP,
                format!(
                    "the data at {data:#x} starts inside the block map (which ends at {map_end:#x})"
                ),
            ));
        }
        Ok(())
    }

    /// The virtual size as qemu-img reports it: the disk size rounded up to a sector
    /// (`VBoxManage convertfromraw` can write odd sizes).
    #[must_use]
    pub fn virtual_size(&self) -> u64 {
        self.disk_size.div_ceil(SECTOR).saturating_mul(SECTOR)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A header as VirtualBox writes it for a 4 MiB dynamic image.
    fn header() -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        let text = b"<<< Oracle VM VirtualBox Disk Image >>>\n";
        b[..text.len()].copy_from_slice(text); // pre-header text
        b[0x40..0x44].copy_from_slice(&SIGNATURE.to_le_bytes()); // signature
        b[0x44..0x48].copy_from_slice(&VERSION_1_1.to_le_bytes()); // version 1.1
        b[0x48..0x4c].copy_from_slice(&0x190u32.to_le_bytes()); // header size
        b[0x4c..0x50].copy_from_slice(&TYPE_NORMAL.to_le_bytes()); // image type
        b[0x154..0x158].copy_from_slice(&0x200u32.to_le_bytes()); // block map offset
        b[0x158..0x15c].copy_from_slice(&0x400u32.to_le_bytes()); // data offset
        b[0x168..0x16c].copy_from_slice(&512u32.to_le_bytes()); // sector size
        b[0x170..0x178].copy_from_slice(&(4u64 << 20).to_le_bytes()); // disk size
        b[0x178..0x17c].copy_from_slice(&(1u32 << 20).to_le_bytes()); // block size
        b[0x180..0x184].copy_from_slice(&4u32.to_le_bytes()); // blocks
        b[0x188] = 0x42; // image UUID
        b
    }

    #[test]
    fn test_header_virtualbox_parses() {
        let h = Header::parse(&header()).unwrap();
        assert_eq!(h.text, "<<< Oracle VM VirtualBox Disk Image >>>");
        assert_eq!(h.virtual_size(), 4 << 20);
        assert_eq!(h.blocks, 4);
    }

    #[test]
    fn test_header_odd_disk_size_rounds_up() {
        let mut b = header();
        b[0x170..0x178].copy_from_slice(&((4u64 << 20) - 100).to_le_bytes());
        assert_eq!(Header::parse(&b).unwrap().virtual_size(), 4 << 20);
    }

    #[test]
    fn test_header_parent_uuid_refused_as_differencing() {
        let mut b = header();
        b[0x1b8] = 1;
        let e = Header::parse(&b).unwrap_err();
        assert_eq!(e.reason_code(), "differencing-disk");
    }

    #[test]
    fn test_header_undo_type_refused_as_differencing() {
        let mut b = header();
        b[0x4c] = 3;
        assert_eq!(
            Header::parse(&b).unwrap_err().reason_code(),
            "differencing-disk"
        );
    }

    #[test]
    fn test_header_version_1_0_unsupported() {
        let mut b = header();
        b[0x44..0x48].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        assert_eq!(Header::parse(&b).unwrap_err().reason_code(), "unsupported");
    }

    #[test]
    fn test_header_block_size_not_power_of_two_invalid() {
        let mut b = header();
        b[0x178..0x17c].copy_from_slice(&3_000_000u32.to_le_bytes());
        assert_eq!(
            Header::parse(&b).unwrap_err().reason_code(),
            "invalid-format"
        );
    }
}
