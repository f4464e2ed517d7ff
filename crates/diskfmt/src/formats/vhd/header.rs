//! The VHD hard disk footer and the dynamic disk header ("Virtual Hard Disk Image Format
//! Specification", Microsoft, 2006). All fields are big-endian.

use super::rules;
use crate::error::{DiskError, Refusal, Result};
use crate::format::Format;
use crate::io::be;
use crate::limits::MIB;

const F: Format = Format::Vhd;

/// Sector size of every VHD (spec: "sectors are 512 bytes").
pub const SECTOR: u64 = 512;
/// Size of the hard disk footer (spec, "Hard Disk Footer Format": 512 bytes).
pub const FOOTER_SIZE: usize = 512;
/// Size of the dynamic disk header (spec, "Dynamic Disk Header Format": 1024 bytes).
pub const DYN_HEADER_SIZE: usize = 1024;
/// Footer cookie (spec: "conectix").
pub const FOOTER_COOKIE: &[u8; 8] = b"conectix";
/// Dynamic header cookie (spec: "cxsparse").
pub const DYN_COOKIE: &[u8; 8] = b"cxsparse";
/// Feature bits the specification defines: 0 (temporary) and 1 (reserved, always set).
pub const FEATURES_KNOWN: u32 = 0b11;
/// Fixed hard disk (spec, "Disk Type" field: 2).
pub const TYPE_FIXED: u32 = 2;
/// Dynamic hard disk (spec, "Disk Type" field: 3).
pub const TYPE_DYNAMIC: u32 = 3;
/// Differencing hard disk (spec, "Disk Type" field: 4).
pub const TYPE_DIFFERENCING: u32 = 4;
/// Largest block size accepted. The spec's default is 2 MiB (Hyper-V also writes 512 KiB);
/// 256 MiB keeps one block's sector bitmap at 64 KiB.
pub const MAX_BLOCK_SIZE: u64 = 256 * MIB;
/// Largest virtual disk in sectors: the spec limits VHD to 2040 GiB, as qemu does.
pub const MAX_SECTORS: u64 = 0xff00_0000;
/// The largest CHS geometry the spec's algorithm yields (65535 cylinders, 16 heads, 255
/// sectors): a disk with this geometry is sized by its current size field.
pub const MAX_GEOMETRY_SECTORS: u64 = 65_535 * 16 * 255;

/// Creator applications whose images are sized by the CHS geometry (Virtual PC, qemu without
/// force_size); every other creator (Hyper-V `win `, `qem2`, Disk2vhd `d2v `, XenServer,
/// XenConverter, unknown ones) is sized by the footer's current size, as qemu-img does.
const CHS_CREATORS: [&[u8; 4]; 2] = [b"vpc ", b"qemu"];

/// One's complement of the byte sum of `b`, the bytes `skip..skip + 4` (the checksum field)
/// counted as zero.
#[must_use]
pub fn checksum(b: &[u8], skip: usize) -> u32 {
    let mut sum = 0u32;
    for (i, &x) in b.iter().enumerate() {
        if !(skip..skip + 4).contains(&i) {
            sum = sum.wrapping_add(u32::from(x));
        }
    }
    !sum
}

/// The hard disk footer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footer {
    /// Feature bits (offset 8).
    pub features: u32,
    /// File format version (offset 12), 0x00010000.
    pub version: u32,
    /// Offset of the dynamic disk header (offset 16); all ones for fixed disks.
    pub data_offset: u64,
    /// Creator application (offset 28), e.g. `vpc `, `qemu`, `win `.
    pub creator_app: [u8; 4],
    /// Creator host OS (offset 36).
    pub creator_os: u32,
    /// Current size in bytes (offset 48).
    pub current_size: u64,
    /// Cylinders (offset 56).
    pub cylinders: u16,
    /// Heads (offset 58).
    pub heads: u8,
    /// Sectors per track (offset 59).
    pub sectors: u8,
    /// Disk type (offset 60): 2 fixed, 3 dynamic, 4 differencing.
    pub disk_type: u32,
    /// Unique id (offset 68).
    pub unique_id: [u8; 16],
    /// Saved state (offset 84): 1 when the disk is in a saved state.
    pub saved_state: u8,
}

impl Footer {
    /// Whether `b` starts with the footer cookie.
    #[must_use]
    pub fn has_cookie(b: &[u8]) -> bool {
        b.get(..8) == Some(FOOTER_COOKIE.as_slice())
    }

    /// Parses and checks a 512-byte footer.
    pub fn parse(b: &[u8; FOOTER_SIZE]) -> Result<Footer> {
        if !Self::has_cookie(b) {
            return Err(DiskError::invalid(F, "no \"conectix\" footer cookie"));
        }
        let stored = be::u32(b, 64);
        let computed = checksum(b, 64);
        if stored != computed {
            return Err(DiskError::corrupt_rule(
                F,
                rules::FOOTER_CHECKSUM,
                format!("footer checksum is {stored:#010x}, the footer sums to {computed:#010x}"),
            ));
        }
        let mut creator_app = [0u8; 4];
        creator_app.copy_from_slice(&b[28..32]);
        let f = Footer {
            features: be::u32(b, 8),
            version: be::u32(b, 12),
            data_offset: be::u64(b, 16),
            creator_app,
            creator_os: be::u32(b, 36),
            current_size: be::u64(b, 48),
            cylinders: be::u16(b, 56),
            heads: b[58],
            sectors: b[59],
            disk_type: be::u32(b, 60),
            unique_id: {
                let mut id = [0u8; 16];
                id.copy_from_slice(&b[68..84]);
                id
            },
            saved_state: b[84],
        };
        if f.features & !FEATURES_KNOWN != 0 {
            return Err(DiskError::invalid_rule(
                F,
                rules::FEATURES,
                format!(
                    "footer features {:#010x} set reserved bits (only bit 0, temporary, and bit 1 are defined)",
                    f.features
                ),
            ));
        }
        if f.saved_state > 1 {
            return Err(DiskError::invalid_rule(
                F,
                rules::SAVED_STATE,
                format!("saved state {} is neither 0 nor 1", f.saved_state),
            ));
        }
        if f.version >> 16 != 1 {
            return Err(DiskError::unsupported_rule(
                F,
                rules::VERSION,
                format!(
                    "file format version {:#010x} (only 1.x is defined)",
                    f.version
                ),
            ));
        }
        match f.disk_type {
            TYPE_FIXED | TYPE_DYNAMIC => {}
            TYPE_DIFFERENCING => return Err(Refusal::DifferencingDisk { format: F }.into()),
            t => {
                return Err(DiskError::invalid_rule(
                    F,
                    rules::DISK_TYPE,
                    format!("disk type {t} (expected 2 fixed or 3 dynamic)"),
                ));
            }
        }
        Ok(f)
    }

    /// Whether `other` (the copy at the start of a dynamic disk) describes the same disk: type,
    /// sizes, geometry, creator (which decides the size source), header offset and id.
    #[must_use]
    pub fn same_disk_as(&self, other: &Footer) -> bool {
        self.disk_type == other.disk_type
            && self.current_size == other.current_size
            && (self.cylinders, self.heads, self.sectors)
                == (other.cylinders, other.heads, other.sectors)
            && self.creator_app == other.creator_app
            && self.data_offset == other.data_offset
            && self.unique_id == other.unique_id
    }

    /// Sectors given by the CHS geometry.
    #[must_use]
    pub fn chs_sectors(&self) -> u64 {
        u64::from(self.cylinders) * u64::from(self.heads) * u64::from(self.sectors)
    }

    /// Whether the virtual size comes from the current size field (true) or the CHS geometry
    /// (false). Virtual PC and old qemu size disks by geometry; Hyper-V and others by the
    /// current size; a disk with the maximum geometry is always sized by its current size.
    #[must_use]
    pub fn sized_by_current_size(&self) -> bool {
        !CHS_CREATORS.contains(&&self.creator_app) || self.chs_sectors() == MAX_GEOMETRY_SECTORS
    }

    /// The virtual size in bytes, as qemu-img reports it (a whole number of sectors).
    pub fn virtual_size(&self) -> Result<u64> {
        let sectors = if self.sized_by_current_size() {
            self.current_size / SECTOR
        } else {
            self.chs_sectors()
        };
        if sectors > MAX_SECTORS {
            return Err(DiskError::unsupported(
                F,
                format!("virtual size of {sectors} sectors is above the VHD maximum of 2040 GiB"),
            ));
        }
        Ok(sectors * SECTOR)
    }

    /// The creator application as printable text.
    #[must_use]
    pub fn creator_text(&self) -> String {
        self.creator_app
            .iter()
            .map(|&c| {
                if c.is_ascii_graphic() || c == b' ' {
                    c as char
                } else {
                    '?'
                }
            })
            .collect::<String>()
            .trim_end()
            .to_string()
    }
}

/// The dynamic disk header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynHeader {
    /// Offset of the block allocation table (offset 16).
    pub table_offset: u64,
    /// Header version (offset 24), 0x00010000.
    pub version: u32,
    /// Number of BAT entries (offset 28).
    pub max_table_entries: u32,
    /// Block size in bytes (offset 32), a power of two.
    pub block_size: u32,
}

impl DynHeader {
    /// Parses and checks a 1024-byte dynamic disk header.
    pub fn parse(b: &[u8; DYN_HEADER_SIZE]) -> Result<DynHeader> {
        if &b[..8] != DYN_COOKIE {
            return Err(DiskError::invalid_rule(
                F,
                rules::DYNAMIC_COOKIE,
                "no \"cxsparse\" cookie in the dynamic disk header",
            ));
        }
        let stored = be::u32(b, 36);
        let computed = checksum(b, 36);
        if stored != computed {
            return Err(DiskError::corrupt_rule(
                F,
                rules::DYNAMIC_CHECKSUM,
                format!(
                    "dynamic disk header checksum is {stored:#010x}, the header sums to {computed:#010x}"
                ),
            ));
        }
        let h = DynHeader {
            table_offset: be::u64(b, 16),
            version: be::u32(b, 24),
            max_table_entries: be::u32(b, 28),
            block_size: be::u32(b, 32),
        };
        if h.version >> 16 != 1 {
            return Err(DiskError::unsupported_rule(
                F,
                rules::DYNAMIC_VERSION,
                format!("dynamic disk header version {:#010x}", h.version),
            ));
        }
        // Parent locator entries: 8 entries of 24 bytes at offset 576, platform code first;
        // the parent's name, UTF-16, at 64. Any of them in use means the disk needs a parent,
        // whatever its type says.
        let has_locator = (0..8).any(|i| be::u32(b, 576 + 24 * i) != 0);
        let has_parent_name = b[64..576].iter().any(|&x| x != 0);
        if has_locator || has_parent_name {
            return Err(Refusal::DifferencingDisk { format: F }.into());
        }
        let bs = u64::from(h.block_size);
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
        if !h.table_offset.is_multiple_of(SECTOR) {
            return Err(DiskError::invalid_rule(
                F,
                rules::BAT_UNALIGNED,
                format!("the BAT offset {} is not sector aligned", h.table_offset),
            ));
        }
        Ok(h)
    }

    /// Size of one block's sector bitmap on disk: one bit per sector, padded to a sector.
    #[must_use]
    pub fn bitmap_size(&self) -> u64 {
        let sectors = u64::from(self.block_size) / SECTOR;
        sectors.div_ceil(8).div_ceil(SECTOR) * SECTOR
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A footer as qemu writes it for a 4 MiB dynamic disk.
    fn footer_bytes(creator: &[u8; 4], cyl: u16, heads: u8, spt: u8, size: u64) -> [u8; 512] {
        let mut b = [0u8; 512];
        b[..8].copy_from_slice(b"conectix"); // cookie
        b[8..12].copy_from_slice(&2u32.to_be_bytes()); // features: reserved bit
        b[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes()); // version 1.0
        b[16..24].copy_from_slice(&512u64.to_be_bytes()); // data offset
        b[28..32].copy_from_slice(creator); // creator application
        b[40..48].copy_from_slice(&size.to_be_bytes()); // original size
        b[48..56].copy_from_slice(&size.to_be_bytes()); // current size
        b[56..58].copy_from_slice(&cyl.to_be_bytes()); // cylinders
        b[58] = heads; // heads
        b[59] = spt; // sectors per track
        b[60..64].copy_from_slice(&TYPE_DYNAMIC.to_be_bytes()); // disk type
        let c = checksum(&b, 64);
        b[64..68].copy_from_slice(&c.to_be_bytes()); // checksum
        b
    }

    #[test]
    fn test_footer_chs_creator_sized_by_geometry() {
        let f = Footer::parse(&footer_bytes(b"vpc ", 120, 4, 17, 5 << 20)).unwrap();
        assert_eq!(f.virtual_size().unwrap(), 120 * 4 * 17 * 512);
    }

    #[test]
    fn test_footer_hyperv_creator_sized_by_current_size() {
        let f = Footer::parse(&footer_bytes(b"win ", 120, 4, 17, 5 << 20)).unwrap();
        assert_eq!(f.virtual_size().unwrap(), 5 << 20);
    }

    #[test]
    fn test_footer_max_geometry_sized_by_current_size() {
        let f = Footer::parse(&footer_bytes(b"vpc ", 65535, 16, 255, 5 << 20)).unwrap();
        assert_eq!(f.virtual_size().unwrap(), 5 << 20);
    }

    #[test]
    fn test_footer_bad_checksum_is_corrupt() {
        let mut b = footer_bytes(b"vpc ", 120, 4, 17, 5 << 20);
        b[100] ^= 1;
        let e = Footer::parse(&b).unwrap_err();
        assert_eq!(e.reason_code(), "corrupt");
    }

    #[test]
    fn test_footer_too_large_is_unsupported() {
        let f = Footer::parse(&footer_bytes(b"win ", 0, 0, 0, 3 << 40)).unwrap();
        assert_eq!(f.virtual_size().unwrap_err().reason_code(), "unsupported");
    }

    #[test]
    fn test_bitmap_size_rounds_to_sector() {
        let h = |bs: u32| DynHeader {
            table_offset: 0,
            version: 0x0001_0000,
            max_table_entries: 1,
            block_size: bs,
        };
        assert_eq!(h(2 << 20).bitmap_size(), 512);
        assert_eq!(h(512).bitmap_size(), 512);
        assert_eq!(h(8 << 20).bitmap_size(), 2048);
    }
}
