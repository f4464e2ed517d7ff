//! A bounded reader of the tar members an OVA holds (POSIX ustar, pax and GNU long names).
//!
//! It only lists members: name, kind, where the data starts and how long it is; the data is
//! read in place. We do not use the `tar` crate to read: it loads pax and GNU long-name
//! records wholly into memory whatever size their header states, so a hostile archive could
//! make it allocate as much as the file holds. Here every record is bounded and every header
//! checksum verified.

use crate::error::{DiskError, Refusal, Result};
use crate::format::Format;
use crate::io::{ReadAt, read_checked};

const F: Format = Format::Ova;
const BLOCK: u64 = 512;
/// Largest pax or GNU long-name record accepted.
const MAX_EXTENSION: u64 = 64 * 1024;
/// Most members an OVA may hold.
pub const MAX_MEMBERS: usize = 4096;

/// What a member is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A hard or symbolic link.
    Link,
    /// A device, FIFO or other special file.
    Special,
    /// A GNU sparse file.
    Sparse,
}

/// One member of the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Name as stored (pax `path` or GNU long name when present).
    pub name: String,
    /// Kind of member.
    pub kind: Kind,
    /// Offset of the data in the archive.
    pub offset: u64,
    /// Size of the data.
    pub size: u64,
}

fn refuse(code: &'static str, detail: String) -> DiskError {
    DiskError::Refused(Refusal::Appliance { code, detail })
}

/// A member name made safe to print: control characters escaped, long names cut.
#[must_use]
pub fn shown(name: &str) -> String {
    let mut s: String = name
        .chars()
        .take(120)
        .flat_map(char::escape_debug)
        .collect();
    if name.chars().count() > 120 {
        s.push('…');
    }
    format!("\"{s}\"")
}

fn octal(field: &[u8], what: &str) -> Result<u64> {
    // Base-256 (GNU): high bit of the first byte set.
    if let Some(&first) = field.first()
        && first & 0x80 != 0
    {
        if first & 0x40 != 0 {
            return Err(DiskError::invalid(
                F,
                format!("negative {what} in a tar header"),
            ));
        }
        let mut v: u64 = u64::from(first & 0x3f);
        for &b in &field[1..] {
            v = v
                .checked_mul(256)
                .and_then(|v| v.checked_add(u64::from(b)))
                .ok_or_else(|| {
                    DiskError::invalid(F, format!("{what} overflows in a tar header"))
                })?;
        }
        return Ok(v);
    }
    let mut v: u64 = 0;
    let mut seen = false;
    for &b in field {
        match b {
            b'0'..=b'7' => {
                seen = true;
                v = v
                    .checked_mul(8)
                    .and_then(|v| v.checked_add(u64::from(b - b'0')))
                    .ok_or_else(|| {
                        DiskError::invalid(F, format!("{what} overflows in a tar header"))
                    })?;
            }
            b' ' | 0 if !seen => {}
            b' ' | 0 => break,
            _ => {
                return Err(DiskError::invalid(
                    F,
                    format!("{what} in a tar header is not an octal number"),
                ));
            }
        }
    }
    Ok(v)
}

fn cstr(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..end]
}

fn text(bytes: &[u8]) -> Result<String> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| refuse("ova-unsafe-name", "a member name is not valid UTF-8".into()))
}

/// Parses pax records (`"<len> <key>=<value>\n"`) and returns `path` and `size` if set.
fn pax(data: &[u8]) -> Result<(Option<String>, Option<u64>)> {
    let (mut path, mut size) = (None, None);
    let mut rest = data;
    while !rest.is_empty() {
        let sp = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or_else(|| DiskError::invalid(F, "pax record without a length"))?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|&l| l > sp + 1 && l <= rest.len())
            .ok_or_else(|| DiskError::invalid(F, "pax record length out of range"))?;
        let record = &rest[sp + 1..len];
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        if let Some(eq) = record.iter().position(|&b| b == b'=') {
            let (k, v) = (&record[..eq], &record[eq + 1..]);
            match k {
                b"path" => path = Some(text(v)?),
                b"size" => {
                    size = Some(
                        std::str::from_utf8(v)
                            .ok()
                            .and_then(|s| s.parse().ok())
                            .ok_or_else(|| DiskError::invalid(F, "pax size is not a number"))?,
                    );
                }
                _ => {}
            }
        }
        rest = &rest[len..];
    }
    Ok((path, size))
}

/// What extension headers (GNU long names, pax records) said about the next member.
#[derive(Default)]
struct Pending {
    long_name: Option<String>,
    pax_path: Option<String>,
    pax_size: Option<u64>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.long_name.is_none() && self.pax_path.is_none()
    }
}

/// Checks the header block at `pos`: its checksum is the sum of its bytes with the checksum
/// field counted as spaces.
fn check_header(h: &[u8], pos: u64) -> Result<()> {
    let stored = octal(&h[148..156], "checksum")?;
    let sum: u64 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(b)
            }
        })
        .sum();
    if stored != sum {
        return Err(DiskError::invalid(
            F,
            format!("tar header at offset {pos} has a bad checksum"),
        ));
    }
    Ok(())
}

/// The name of the member whose header is `h`: a pax path, else a GNU long name, else the
/// ustar prefix and name.
fn member_name(h: &[u8], pending: &mut Pending) -> Result<String> {
    let ustar = &h[257..263] == b"ustar\0";
    let mut name = cstr(&h[0..100]).to_vec();
    if ustar && h[345] != 0 {
        let mut full = cstr(&h[345..500]).to_vec();
        full.push(b'/');
        full.extend_from_slice(&name);
        name = full;
    }
    match (pending.pax_path.take(), pending.long_name.take()) {
        (Some(p), _) | (None, Some(p)) => Ok(p),
        (None, None) => text(&name),
    }
}

/// The kind of a member from its type flag.
fn kind_of(flag: u8) -> Kind {
    match flag {
        b'0' | 0 | b'7' => Kind::File,
        b'5' => Kind::Directory,
        b'1' | b'2' => Kind::Link,
        b'S' => Kind::Sparse,
        _ => Kind::Special,
    }
}

/// Lists the members of the tar archive in `src`, in archive order.
pub fn members(src: &dyn ReadAt) -> Result<Vec<Member>> {
    let file_size = src.size();
    let mut out = Vec::new();
    let mut pos = 0u64;
    let mut pending = Pending::default();
    loop {
        if pos.checked_add(BLOCK).is_none_or(|end| end > file_size) {
            // No end-of-archive blocks: tolerated as GNU tar does, if nothing is pending.
            if !pending.is_empty() {
                return Err(DiskError::invalid(
                    F,
                    "archive ends after an extended header",
                ));
            }
            break;
        }
        let h = read_checked(src, F, "tar header", pos, 512)?;
        if h.iter().all(|&b| b == 0) {
            break;
        }
        check_header(&h, pos)?;
        let size = octal(&h[124..136], "size")?;
        let flag = h[156];
        let data = pos + BLOCK;
        let is_extension = matches!(flag, b'L' | b'K' | b'x' | b'g');
        if is_extension && size > MAX_EXTENSION {
            return Err(DiskError::Refused(Refusal::LimitExceeded {
                format: F,
                what: "tar extended header",
                value: size,
                limit: MAX_EXTENSION,
            }));
        }
        // Whatever the member, the size its header states must stay inside the archive.
        let next = data
            .checked_add(size.div_ceil(BLOCK) * BLOCK)
            .filter(|&n| n <= file_size.div_ceil(BLOCK) * BLOCK)
            .ok_or(DiskError::Refused(Refusal::PointerOutOfBounds {
                format: F,
                what: "tar member",
                offset: data,
                file_size,
            }))?;
        pos = match flag {
            _ if is_extension => {
                extension(src, flag, data, size, &mut pending)?;
                next
            }
            _ => {
                let name = member_name(&h, &mut pending)?;
                let size = pending.pax_size.take().unwrap_or(size);
                let m = member(name, kind_of(flag), data, size, file_size)?;
                if out.len() >= MAX_MEMBERS {
                    return Err(DiskError::Refused(Refusal::LimitExceeded {
                        format: F,
                        what: "member count",
                        value: out.len() as u64 + 1,
                        limit: MAX_MEMBERS as u64,
                    }));
                }
                out.push(m);
                data.checked_add(size.div_ceil(BLOCK) * BLOCK)
                    .ok_or_else(|| DiskError::invalid(F, "tar member size overflows"))?
            }
        };
    }
    Ok(out)
}

/// Reads an extension header's data (`size` bytes at `data`, already bounded) into
/// `pending`.
fn extension(
    src: &dyn ReadAt,
    flag: u8,
    data: u64,
    size: u64,
    pending: &mut Pending,
) -> Result<()> {
    let read = || -> Result<Vec<u8>> {
        let len = usize::try_from(size).map_err(|_| DiskError::invalid(F, "extension"))?;
        read_checked(src, F, "tar extended header", data, len)
    };
    match flag {
        b'L' => pending.long_name = Some(text(cstr(&read()?))?),
        b'x' => {
            let (p, s) = pax(&read()?)?;
            pending.pax_path = p.or(pending.pax_path.take());
            pending.pax_size = s.or(pending.pax_size);
        }
        // 'K': a GNU long link name (the link itself is refused); 'g': global pax records,
        // nothing an OVA needs.
        _ => {}
    }
    Ok(())
}

/// A member at `data` of `size` bytes; a regular file's data must lie inside the archive.
fn member(name: String, kind: Kind, data: u64, size: u64, file_size: u64) -> Result<Member> {
    if kind == Kind::File && data.checked_add(size).is_none_or(|end| end > file_size) {
        return Err(DiskError::Refused(Refusal::PointerOutOfBounds {
            format: F,
            what: "tar member data",
            offset: data,
            file_size,
        }));
    }
    Ok(Member {
        name,
        kind,
        offset: data,
        size: if kind == Kind::File { size } else { 0 },
    })
}
