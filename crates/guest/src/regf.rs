//! A bounded, read-only reader of Windows registry hive files (`regf`), enough to look up a
//! key by path and read its values.
//!
//! Format facts (all little-endian): a 4096-byte base block (`regf`, sequence numbers, the
//! root cell offset at 36, the size of the hive-bins data at 40, an XOR checksum of the first
//! 508 bytes at 508), then hive bins holding cells. A cell is an `i32` size (negative when
//! allocated) and its data; offsets are relative to the first hive bin. Keys are `nk` cells,
//! subkey lists are `lf`/`lh` (offset + hash), `li` (offsets) or `ri` (a list of lists),
//! values are `vk` cells whose data is inline (at most 4 bytes), in one cell, or in a `db`
//! list of segments.
//!
//! Crates exist (`notatin`), but they read the whole hive into memory, pull in a terminal
//! library, and unwrap on malformed cells; a SOFTWARE hive is 50–150 MB and arrives from a
//! stranger, so this reader reads only the cells a lookup touches, and checks each one.

use std::io::{Read, Seek, SeekFrom};

use crate::error::{GuestError, Result};

/// Largest cell read.
const MAX_CELL: u64 = 1 << 20;
/// Largest value data read.
const MAX_VALUE: usize = 1 << 20;
/// Most subkeys examined in one key.
const MAX_SUBKEYS: usize = 1 << 16;
/// Most values listed in one key.
const MAX_VALUES: usize = 1 << 14;
/// Data larger than this is stored in `db` segments (hive minor version ≥ 4).
const BIG_DATA: usize = 16344;

/// Something a hive can be read from.
pub trait ReadSeek: Read + Seek {}
impl<T: Read + Seek> ReadSeek for T {}

/// A value's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `REG_SZ`, `REG_EXPAND_SZ`: text up to its first NUL.
    String(String),
    /// `REG_MULTI_SZ`.
    Strings(Vec<String>),
    /// `REG_DWORD`.
    Dword(u32),
    /// `REG_QWORD`.
    Qword(u64),
    /// Any other type, with its type number and raw bytes.
    Other(u32, Vec<u8>),
}

/// An open hive.
pub struct Hive<'a> {
    r: &'a mut dyn ReadSeek,
    bins_end: u64,
    root: u32,
    minor: u32,
    /// The hive was not closed cleanly (its sequence numbers differ): some changes may live
    /// only in the transaction logs, so values can be out of date.
    pub dirty: bool,
}

fn bad(why: impl Into<String>) -> GuestError {
    GuestError::invalid("registry hive", why)
}

fn u16le(b: &[u8], at: usize) -> Result<u16> {
    b.get(at..at + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or_else(|| bad(format!("a cell of {} bytes is too short", b.len())))
}

fn u32le(b: &[u8], at: usize) -> Result<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| bad(format!("a cell of {} bytes is too short", b.len())))
}

fn utf16(b: &[u8]) -> String {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16_lossy(&units)
}

fn name(b: &[u8], compressed: bool) -> String {
    if compressed {
        b.iter().map(|&c| char::from(c)).collect()
    } else {
        utf16(b)
    }
}

fn same(a: &str, b: &str) -> bool {
    a.chars()
        .flat_map(char::to_uppercase)
        .eq(b.chars().flat_map(char::to_uppercase))
}

impl<'a> Hive<'a> {
    /// Opens a hive of `len` bytes read from `r`, checking its base block.
    pub fn open(r: &'a mut dyn ReadSeek, len: u64) -> Result<Hive<'a>> {
        if len < 8192 {
            return Err(bad(format!(
                "{len} bytes is smaller than a base block and one bin"
            )));
        }
        let mut h = [0u8; 512];
        r.seek(SeekFrom::Start(0))
            .and_then(|_| r.read_exact(&mut h))
            .map_err(|e| bad(format!("reading the base block: {e}")))?;
        if &h[0..4] != b"regf" {
            return Err(bad("no regf signature"));
        }
        let mut sum = 0u32;
        for i in 0..127 {
            sum ^= u32le(&h, i * 4)?;
        }
        let sum = match sum {
            0 => 1,
            0xffff_ffff => 0xffff_fffe,
            s => s,
        };
        if sum != u32le(&h, 508)? {
            return Err(bad("the base block checksum does not match"));
        }
        let (major, minor) = (u32le(&h, 20)?, u32le(&h, 24)?);
        if major != 1 || !(2..=6).contains(&minor) {
            return Err(GuestError::unsupported(
                "registry hive",
                format!("version {major}.{minor}"),
            ));
        }
        let data = u64::from(u32le(&h, 40)?);
        if data == 0 || data % 4096 != 0 || 4096 + data > len {
            return Err(bad(format!(
                "hive bins of {data} bytes do not fit a {len}-byte file"
            )));
        }
        Ok(Hive {
            r,
            bins_end: 4096 + data,
            root: u32le(&h, 36)?,
            minor,
            dirty: u32le(&h, 4)? != u32le(&h, 8)?,
        })
    }

    /// The data of the cell at `off` (relative to the first bin).
    fn cell(&mut self, off: u32) -> Result<Vec<u8>> {
        let at = 4096 + u64::from(off);
        if off == u32::MAX || at + 4 > self.bins_end {
            return Err(bad(format!("cell offset {off:#x} lies outside the hive")));
        }
        let mut s = [0u8; 4];
        self.r
            .seek(SeekFrom::Start(at))
            .and_then(|_| self.r.read_exact(&mut s))
            .map_err(|e| bad(format!("reading cell {off:#x}: {e}")))?;
        let size = u64::from(i32::from_le_bytes(s).unsigned_abs());
        if !(8..=MAX_CELL).contains(&size) || at + size > self.bins_end {
            return Err(bad(format!("cell {off:#x} has size {size}")));
        }
        let mut b = vec![0u8; usize::try_from(size - 4).unwrap_or(0)];
        self.r
            .read_exact(&mut b)
            .map_err(|e| bad(format!("reading cell {off:#x}: {e}")))?;
        Ok(b)
    }

    fn key_cell(&mut self, off: u32) -> Result<Vec<u8>> {
        let b = self.cell(off)?;
        if b.get(0..2) != Some(b"nk") || b.len() < 76 {
            return Err(bad(format!("cell {off:#x} is not a key")));
        }
        Ok(b)
    }

    fn key_name(nk: &[u8]) -> Result<String> {
        let n = usize::from(u16le(nk, 72)?);
        let raw = nk
            .get(76..76 + n)
            .ok_or_else(|| bad("a key name runs past its cell"))?;
        Ok(name(raw, u16le(nk, 2)? & 0x20 != 0))
    }

    /// Offsets of the subkeys listed at `list` (following one level of `ri`).
    fn subkeys(&mut self, list: u32, depth: u8, out: &mut Vec<u32>) -> Result<()> {
        let b = self.cell(list)?;
        let n = usize::from(u16le(&b, 2)?);
        let (stride, nested) = match b.get(0..2) {
            Some(b"lf" | b"lh") => (8, false),
            Some(b"li") => (4, false),
            Some(b"ri") if depth == 0 => (4, true),
            _ => return Err(bad(format!("cell {list:#x} is not a subkey list"))),
        };
        for i in 0..n {
            let off = u32le(&b, 4 + i * stride)?;
            if nested {
                self.subkeys(off, depth + 1, out)?;
            } else {
                out.push(off);
            }
            if out.len() > MAX_SUBKEYS {
                return Err(bad("a key has too many subkeys"));
            }
        }
        Ok(())
    }

    /// Finds the key at `path` (`\`-separated, case-insensitive), returning its cell offset.
    pub fn key(&mut self, path: &str) -> Result<u32> {
        let mut cur = self.root;
        self.key_cell(cur)?;
        for part in path.split('\\').filter(|p| !p.is_empty()) {
            let nk = self.key_cell(cur)?;
            let count = u32le(&nk, 20)?;
            let mut subs = Vec::new();
            if count > 0 {
                self.subkeys(u32le(&nk, 28)?, 0, &mut subs)?;
            }
            let mut found = None;
            for off in subs {
                let child = self.key_cell(off)?;
                if same(&Self::key_name(&child)?, part) {
                    found = Some(off);
                    break;
                }
            }
            cur = found.ok_or_else(|| GuestError::NotFound(path.to_string()))?;
        }
        Ok(cur)
    }

    fn value_data(&mut self, vk: &[u8]) -> Result<Vec<u8>> {
        let raw = u32le(vk, 4)?;
        let off = u32le(vk, 8)?;
        if raw & 0x8000_0000 != 0 {
            let n = usize::try_from(raw & 0x7fff_ffff).unwrap_or(0).min(4);
            return Ok(off.to_le_bytes()[..n].to_vec());
        }
        let len = usize::try_from(raw).unwrap_or(usize::MAX);
        if len > MAX_VALUE {
            return Err(bad(format!("a value of {len} bytes is too large")));
        }
        if len == 0 {
            return Ok(Vec::new());
        }
        let b = self.cell(off)?;
        if len > BIG_DATA && self.minor >= 4 && b.get(0..2) == Some(b"db") {
            let n = usize::from(u16le(&b, 2)?);
            let list = self.cell(u32le(&b, 4)?)?;
            let mut out = Vec::new();
            for i in 0..n {
                let seg = self.cell(u32le(&list, i * 4)?)?;
                let want = (len - out.len()).min(BIG_DATA);
                out.extend_from_slice(seg.get(..want).unwrap_or(&seg));
                if out.len() >= len {
                    break;
                }
            }
            return Ok(out);
        }
        b.get(..len)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| bad(format!("value data of {len} bytes runs past its cell")))
    }

    /// The values of the key at cell `key`: (name, value); the default value is named "".
    pub fn values(&mut self, key: u32) -> Result<Vec<(String, Value)>> {
        let nk = self.key_cell(key)?;
        let n = usize::try_from(u32le(&nk, 36)?).unwrap_or(usize::MAX);
        if n == 0 {
            return Ok(Vec::new());
        }
        if n > MAX_VALUES {
            return Err(bad(format!("a key with {n} values")));
        }
        let list = self.cell(u32le(&nk, 40)?)?;
        let mut out = Vec::new();
        for i in 0..n {
            let vk = self.cell(u32le(&list, i * 4)?)?;
            if vk.get(0..2) != Some(b"vk") || vk.len() < 20 {
                return Err(bad("a value list points at a cell that is not a value"));
            }
            let nlen = usize::from(u16le(&vk, 2)?);
            let raw_name = vk
                .get(20..20 + nlen)
                .ok_or_else(|| bad("a value name runs past its cell"))?;
            let vname = name(raw_name, u16le(&vk, 16)? & 1 != 0);
            let ty = u32le(&vk, 12)?;
            let data = self.value_data(&vk)?;
            let text = |d: &[u8]| {
                let s = utf16(d);
                s.split('\0').next().unwrap_or("").to_string()
            };
            let v = match ty {
                1 | 2 => Value::String(text(&data)),
                7 => Value::Strings(
                    utf16(&data)
                        .split('\0')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect(),
                ),
                4 if data.len() >= 4 => Value::Dword(u32le(&data, 0)?),
                11 if data.len() >= 8 => {
                    Value::Qword(u64::from(u32le(&data, 0)?) | (u64::from(u32le(&data, 4)?) << 32))
                }
                t => Value::Other(t, data),
            };
            out.push((vname, v));
        }
        Ok(out)
    }
}
