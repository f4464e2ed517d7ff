//! The text descriptor (VMware "Virtual Disk Format 1.1", "The Descriptor File"): a header
//! section of `key=value` lines (`version`, `CID`, `parentCID`, `createType`), the extent
//! description (`RW 16384 SPARSE "disk.vmdk"`) and the disk database (`ddb.*`).
//!
//! The descriptor is embedded in monolithicSparse and streamOptimized files, or is the
//! whole file for every multi-file layout. vmie reads only self-contained images: any
//! descriptor that names another file is refused, and no path taken from it is ever opened.

use super::rules;
use crate::error::{DiskError, Refusal, Result};
use crate::format::Format;
use crate::limits::Limits;

const F: Format = Format::Vmdk;

/// `parentCID` of a disk without a parent (spec: "ffffffff" means no parent).
const NO_PARENT: &str = "ffffffff";

/// The `createType` values of a single-file image vmie reads.
pub const SELF_CONTAINED_TYPES: [&str; 2] = ["monolithicSparse", "streamOptimized"];

/// Longest piece of an untrusted name shown in a message.
const MAX_SHOWN: usize = 64;

/// One extent line: `ACCESS SECTORS TYPE ["FILE" [OFFSET]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtentLine {
    /// `RW`, `RDONLY` or `NOACCESS`.
    pub access: String,
    /// Size in sectors.
    pub sectors: u64,
    /// `SPARSE`, `FLAT`, `ZERO`, `VMFS`, `VMFSSPARSE`, `VMFSRDM`, `VMFSRAW`, …
    pub kind: String,
    /// The file it names, if any.
    pub file: Option<String>,
}

/// What vmie uses from a descriptor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Descriptor {
    /// `version` of the descriptor.
    pub version: Option<String>,
    /// `createType`.
    pub create_type: Option<String>,
    /// `CID`.
    pub cid: Option<String>,
    /// `parentCID`.
    pub parent_cid: Option<String>,
    /// `parentFileNameHint`.
    pub parent_hint: Option<String>,
    /// The extent lines, in order.
    pub extents: Vec<ExtentLine>,
    /// `ddb.adapterType`.
    pub adapter_type: Option<String>,
    /// `ddb.geometry.cylinders/heads/sectors` as `C/H/S`, when all three are present.
    pub geometry: Option<String>,
}

/// A printable, bounded view of an untrusted string for messages.
#[must_use]
pub fn sanitize(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(MAX_SHOWN)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if s.chars().count() > MAX_SHOWN {
        out.push_str("...");
    }
    out
}

/// The access modes of an extent line.
pub const ACCESS_MODES: [&str; 3] = ["RW", "RDONLY", "NOACCESS"];
/// The extent types the specification defines (and SESPARSE, vSphere's newer sparse type).
pub const EXTENT_TYPES: [&str; 8] = [
    "FLAT",
    "SPARSE",
    "ZERO",
    "VMFS",
    "VMFSSPARSE",
    "VMFSRDM",
    "VMFSRAW",
    "SESPARSE",
];

fn invalid(rule: &'static str, reason: impl Into<String>) -> DiskError {
    DiskError::invalid_rule(F, rule, reason)
}

/// A `key = value` line: the key made of letters, digits, `.`, `_` and `-`; a value that
/// opens a quote closes it. `None` when the line is not one (it may be an extent line whose
/// file name holds a `=`).
fn key_value(line: &str) -> Option<std::result::Result<(&str, &str), ()>> {
    let (k, v) = line.split_once('=')?;
    let k = k.trim();
    let key_ok = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !key_ok {
        return None;
    }
    let v = v.trim();
    if let Some(q) = v.strip_prefix('"') {
        return Some(match q.strip_suffix('"') {
            Some(inner) if !inner.contains('"') => Ok((k, inner)),
            _ => Err(()),
        });
    }
    Some(Ok((k, v)))
}

/// Parses an extent line, `ACCESS SECTORS TYPE ["FILE" [OFFSET]]` (VMware spec 1.1, "Extent
/// Descriptions"): a known access and type, a decimal size, a quoted file name for every
/// type but ZERO, an optional decimal offset, nothing else.
fn parse_extent(n: usize, line: &str) -> Result<ExtentLine> {
    let mut rest = line;
    let mut next = || {
        let t = rest.trim_start();
        let end = t.find(char::is_whitespace).unwrap_or(t.len());
        let (tok, r) = t.split_at(end);
        rest = r;
        tok
    };
    let access = next();
    let sectors = next().parse::<u64>();
    let kind = next();
    let bad_line = || {
        invalid(
            rules::DESCRIPTOR_LINE,
            format!(
                "descriptor line {n} is neither a comment, a key=value nor an extent line: \"{}\"",
                sanitize(line)
            ),
        )
    };
    let Ok(sectors) = sectors else {
        return Err(bad_line());
    };
    if kind.is_empty() {
        return Err(bad_line());
    }
    if !ACCESS_MODES.contains(&access) {
        return Err(invalid(
            rules::EXTENT_ACCESS,
            format!(
                "descriptor line {n}: extent access \"{}\" is not RW, RDONLY or NOACCESS",
                sanitize(access)
            ),
        ));
    }
    if !EXTENT_TYPES.contains(&kind) {
        return Err(invalid(
            rules::EXTENT_TYPE,
            format!(
                "descriptor line {n}: extent type \"{}\" is not one the specification defines",
                sanitize(kind)
            ),
        ));
    }
    let tail = rest.trim();
    let (file, after) = if tail.is_empty() {
        if kind != "ZERO" {
            return Err(invalid(
                rules::EXTENT_NAME,
                format!("descriptor line {n}: a {kind} extent without a file name"),
            ));
        }
        (None, "")
    } else {
        let (name, after) = tail
            .strip_prefix('"')
            .and_then(|q| q.split_once('"'))
            .ok_or_else(|| {
                invalid(
                    rules::EXTENT_NAME,
                    format!(
                        "descriptor line {n}: the extent's file name is not quoted: \"{}\"",
                        sanitize(tail)
                    ),
                )
            })?;
        (Some(name.to_string()), after.trim())
    };
    if !after.is_empty() && after.parse::<u64>().is_err() {
        return Err(bad_line());
    }
    Ok(ExtentLine {
        access: access.to_string(),
        sectors,
        kind: kind.to_string(),
        file,
    })
}

/// Checks `version` (1 to 3) and the content IDs (8 hexadecimal digits).
fn check_keys(d: &Descriptor) -> Result<()> {
    if let Some(v) = &d.version
        && !matches!(v.as_str(), "1" | "2" | "3")
    {
        return Err(invalid(
            rules::DESCRIPTOR_VERSION,
            format!("descriptor version \"{}\" is not 1, 2 or 3", sanitize(v)),
        ));
    }
    for (key, v) in [("CID", &d.cid), ("parentCID", &d.parent_cid)] {
        if let Some(v) = v
            && (v.is_empty() || v.len() > 8 || !v.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(invalid(
                rules::CID,
                format!("{key} \"{}\" is not 8 hexadecimal digits", sanitize(v)),
            ));
        }
    }
    Ok(())
}

/// Parses descriptor text (already bounded by [`Limits::check_descriptor`]); the text
/// ends at the first NUL byte. Every line must be empty, a comment, a `key=value` or an
/// extent line.
pub fn parse(bytes: &[u8], limits: &Limits) -> Result<Descriptor> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let text = String::from_utf8_lossy(&bytes[..end]);
    let mut d = Descriptor::default();
    let (mut cyl, mut heads, mut secs) = (None, None, None);
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = match key_value(line) {
            Some(Ok(kv)) => kv,
            Some(Err(())) => {
                return Err(invalid(
                    rules::DESCRIPTOR_LINE,
                    format!(
                        "descriptor line {}: an unterminated quoted value: \"{}\"",
                        i + 1,
                        sanitize(line)
                    ),
                ));
            }
            None => {
                limits.check_entries(F, "descriptor extent count", d.extents.len() as u64 + 1)?;
                d.extents.push(parse_extent(i + 1, line)?);
                continue;
            }
        };
        let v = v.to_string();
        match k {
            "version" => d.version = Some(v),
            "createType" => d.create_type = Some(v),
            "CID" => d.cid = Some(v),
            "parentCID" => d.parent_cid = Some(v),
            "parentFileNameHint" => d.parent_hint = Some(v),
            "ddb.adapterType" => d.adapter_type = Some(v),
            "ddb.geometry.cylinders" => cyl = Some(v),
            "ddb.geometry.heads" => heads = Some(v),
            "ddb.geometry.sectors" => secs = Some(v),
            _ => {}
        }
    }
    if let (Some(c), Some(h), Some(s)) = (cyl, heads, secs) {
        d.geometry = Some(format!("{c}/{h}/{s}"));
    }
    check_keys(&d)?;
    Ok(d)
}

impl Descriptor {
    /// Refuses a descriptor that refers to a parent disk.
    pub fn check_no_parent(&self) -> Result<()> {
        let has_parent = self
            .parent_cid
            .as_deref()
            .is_some_and(|p| !p.eq_ignore_ascii_case(NO_PARENT))
            || self.parent_hint.as_deref().is_some_and(|h| !h.is_empty());
        if has_parent {
            return Err(Refusal::BackingFile { format: F }.into());
        }
        Ok(())
    }

    fn describe(&self) -> String {
        let ct = self.create_type.as_deref().map_or_else(
            || "no createType".to_string(),
            |c| format!("createType {}", sanitize(c)),
        );
        match self.extents.iter().find(|e| e.file.is_some()) {
            Some(e) => format!(
                "{ct}, {} extent \"{}\"",
                sanitize(&e.kind),
                sanitize(e.file.as_deref().unwrap_or(""))
            ),
            None => ct,
        }
    }

    /// Checks the descriptor embedded in a sparse extent describes that extent alone: a
    /// self-contained `createType` that agrees with the header (`compressed`: deflate grains
    /// with markers) and exactly one `SPARSE` extent (the image itself) of `capacity` sectors.
    pub fn check_embedded(&self, capacity: u64, compressed: bool) -> Result<()> {
        self.check_no_parent()?;
        if self.extents.is_empty() {
            return Err(invalid(
                rules::NO_EXTENT,
                "the embedded descriptor has no extent line",
            ));
        }
        let Some(ct) = &self.create_type else {
            return Err(invalid(
                rules::CREATE_TYPE_MISSING,
                "the embedded descriptor has no createType",
            ));
        };
        if !SELF_CONTAINED_TYPES.contains(&ct.as_str()) {
            return Err(Refusal::ExternalExtent {
                detail: self.describe(),
            }
            .into());
        }
        let own = self.own_extent()?;
        if own.access == "NOACCESS" {
            return Err(DiskError::unsupported_rule(
                F,
                rules::EXTENT_NOACCESS,
                "the image's extent is NOACCESS: its data cannot be read",
            ));
        }
        if own.sectors != capacity {
            return Err(invalid(
                rules::EXTENT_SIZE,
                format!(
                    "the descriptor's extent is {} sectors, the header's capacity {capacity}",
                    own.sectors
                ),
            ));
        }
        if (ct == "streamOptimized") != compressed {
            return Err(invalid(
                rules::CREATE_TYPE_MISMATCH,
                format!(
                    "createType {ct} but the grains are {}compressed with markers",
                    if compressed { "" } else { "not " }
                ),
            ));
        }
        Ok(())
    }

    /// The one `SPARSE` extent of an embedded descriptor; any other extent names another file
    /// (refused) or is a ZERO extent (not supported next to the image's own).
    fn own_extent(&self) -> Result<&ExtentLine> {
        let mut sparse = Vec::new();
        for e in &self.extents {
            if e.kind == "SPARSE" {
                sparse.push(e);
            } else if e.file.is_some() || e.kind != "ZERO" {
                return Err(Refusal::ExternalExtent {
                    detail: format!(
                        "{} extent \"{}\"",
                        sanitize(&e.kind),
                        sanitize(e.file.as_deref().unwrap_or(""))
                    ),
                }
                .into());
            } else {
                return Err(DiskError::unsupported(
                    F,
                    "a ZERO extent next to the sparse extent (only one extent is supported)",
                ));
            }
        }
        match sparse.as_slice() {
            [one] => Ok(one),
            _ => Err(Refusal::ExternalExtent {
                detail: format!(
                    "{} SPARSE extents: all but one are other files",
                    sparse.len()
                ),
            }
            .into()),
        }
    }

    /// The refusal of a stand-alone descriptor file: its extents are always other files.
    #[must_use]
    pub fn standalone_refusal(&self) -> DiskError {
        if let Err(e) = self.check_no_parent() {
            return e;
        }
        Refusal::ExternalExtent {
            detail: format!("stand-alone descriptor, {}", self.describe()),
        }
        .into()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn test_descriptor_monolithic_sparse_accepted() {
        let d = parse(
            b"# Disk DescriptorFile\nversion=1\nCID=1234abcd\nparentCID=ffffffff\ncreateType=\"monolithicSparse\"\nRW 8192 SPARSE \"a b.vmdk\"\nddb.adapterType = \"lsilogic\"\n\0\0garbage",
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(d.cid.as_deref(), Some("1234abcd"));
        assert_eq!(d.version.as_deref(), Some("1"));
        assert_eq!(d.adapter_type.as_deref(), Some("lsilogic"));
        assert_eq!(d.extents[0].file.as_deref(), Some("a b.vmdk"));
        assert_eq!(d.extents[0].sectors, 8192);
        d.check_embedded(8192, false).unwrap();
    }

    #[test]
    fn test_descriptor_flat_extent_external_extent() {
        let d = parse(
            b"createType=\"monolithicSparse\"\nRW 8 FLAT \"/etc/passwd\" 0\n",
            &Limits::default(),
        )
        .unwrap();
        let e = d.check_embedded(8192, false).unwrap_err();
        assert_eq!(e.reason_code(), "external-extent");
        assert!(e.to_string().contains("/etc/passwd"));
    }

    #[test]
    fn test_descriptor_control_chars_sanitized() {
        let name = format!("\x1b[31m{}", "x".repeat(200));
        let text = format!("createType=\"vmfs\"\nRW 8 VMFS \"{name}\"\n");
        let d = parse(text.as_bytes(), &Limits::default()).unwrap();
        let msg = d.standalone_refusal().to_string();
        assert!(!msg.contains('\x1b'));
        assert!(msg.len() < 400, "{msg}");
    }

    #[test]
    fn test_descriptor_parent_cid_backing_file() {
        let d = parse(b"parentCID=12345678\n", &Limits::default()).unwrap();
        assert_eq!(
            d.check_embedded(8192, false).unwrap_err().reason_code(),
            "backing-file"
        );
    }

    #[test]
    fn test_descriptor_too_many_extents_limit() {
        let text = "RW 1 ZERO\n".repeat(3000);
        let e = parse(text.as_bytes(), &Limits::default()).unwrap_err();
        assert_eq!(e.reason_code(), "limit-exceeded");
    }
}
