//! The text descriptor (VMware "Virtual Disk Format 1.1", "The Descriptor File"): a header
//! section of `key=value` lines (`version`, `CID`, `parentCID`, `createType`), the extent
//! description (`RW 16384 SPARSE "disk.vmdk"`) and the disk database (`ddb.*`).
//!
//! The descriptor is embedded in monolithicSparse and streamOptimized files, or is the
//! whole file for every multi-file layout. vmie reads only self-contained images: any
//! descriptor that names another file is refused, and no path taken from it is ever opened.

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

fn unquote(v: &str) -> &str {
    let v = v.trim();
    v.strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .unwrap_or(v)
}

fn parse_extent(line: &str) -> Result<ExtentLine> {
    let mut rest = line;
    let mut next = || {
        let t = rest.trim_start();
        let end = t.find(char::is_whitespace).unwrap_or(t.len());
        let (tok, r) = t.split_at(end);
        rest = r;
        tok
    };
    let access = next().to_string();
    let sectors_s = next();
    let kind = next().to_string();
    let sectors = sectors_s.parse::<u64>().map_err(|_| {
        DiskError::invalid(
            F,
            format!(
                "descriptor extent line has an invalid size \"{}\"",
                sanitize(sectors_s)
            ),
        )
    })?;
    if kind.is_empty() {
        return Err(DiskError::invalid(F, "descriptor extent line has no type"));
    }
    let tail = rest.trim();
    let file = if let Some(q) = tail.strip_prefix('"') {
        Some(q.find('"').map_or(q, |e| &q[..e]).to_string())
    } else {
        tail.split_whitespace().next().map(str::to_string)
    };
    Ok(ExtentLine {
        access,
        sectors,
        kind,
        file,
    })
}

/// Parses descriptor text (already bounded by [`Limits::check_descriptor`]); the text
/// ends at the first NUL byte.
pub fn parse(bytes: &[u8], limits: &Limits) -> Result<Descriptor> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let text = String::from_utf8_lossy(&bytes[..end]);
    let mut d = Descriptor::default();
    let (mut cyl, mut heads, mut secs) = (None, None, None);
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let first = line.split_whitespace().next().unwrap_or("");
        if matches!(first, "RW" | "RDONLY" | "NOACCESS") {
            limits.check_entries(F, "descriptor extent count", d.extents.len() as u64 + 1)?;
            d.extents.push(parse_extent(line)?);
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = unquote(v).to_string();
        match k.trim() {
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
    /// self-contained `createType` and exactly one `SPARSE` extent (the image itself).
    pub fn check_embedded(&self) -> Result<()> {
        self.check_no_parent()?;
        if let Some(ct) = &self.create_type
            && !SELF_CONTAINED_TYPES.contains(&ct.as_str())
        {
            return Err(Refusal::ExternalExtent {
                detail: self.describe(),
            }
            .into());
        }
        let mut sparse = 0usize;
        for e in &self.extents {
            if e.kind == "SPARSE" {
                sparse += 1;
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
        if sparse > 1 {
            return Err(Refusal::ExternalExtent {
                detail: format!("{sparse} SPARSE extents: all but one are other files"),
            }
            .into());
        }
        Ok(())
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
        d.check_embedded().unwrap();
    }

    #[test]
    fn test_descriptor_flat_extent_external_extent() {
        let d = parse(
            b"createType=\"monolithicSparse\"\nRW 8 FLAT \"/etc/passwd\" 0\n",
            &Limits::default(),
        )
        .unwrap();
        let e = d.check_embedded().unwrap_err();
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
            d.check_embedded().unwrap_err().reason_code(),
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
