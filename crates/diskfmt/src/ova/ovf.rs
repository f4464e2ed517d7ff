//! The OVF descriptor (DMTF DSP0243, OVF 1.x and 2.x): what an appliance holds.
//!
//! Read: the file references, the disk section (capacities, formats), the operating system
//! section and the virtual hardware (CPUs, memory, disk controllers, disks). Elements and
//! attributes are matched by local name, whatever namespace prefixes the producer chose. The
//! descriptor is bounded in size before it is parsed; entities other than XML's predefined
//! ones and character references are refused (no DTD, no external entities). Descriptors are
//! written by [`crate::write::ova`].

use quick_xml::events::Event;

use crate::error::{DiskError, Result};
use crate::format::Format;

const F: Format = Format::Ova;
/// Most elements of one kind (files, disks, hardware items) a descriptor may list.
const MAX_ITEMS: usize = 1024;
/// Deepest element nesting accepted.
const MAX_DEPTH: usize = 64;
/// Longest text or attribute value kept.
const MAX_TEXT: usize = 4096;

/// A file the descriptor references.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileRef {
    /// `ovf:id`.
    pub id: String,
    /// `ovf:href`: the member name.
    pub href: String,
    /// `ovf:size`, if given.
    pub size: Option<u64>,
    /// `ovf:compression`, if given (e.g. `gzip`).
    pub compression: Option<String>,
    /// `ovf:chunkSize`, if given.
    pub chunk_size: Option<u64>,
}

/// A virtual disk of the disk section.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DiskRef {
    /// `ovf:diskId`.
    pub disk_id: String,
    /// `ovf:fileRef`: id of the file holding the disk (absent for a blank disk).
    pub file_ref: Option<String>,
    /// Capacity in bytes (`ovf:capacity` × `ovf:capacityAllocationUnits`).
    pub capacity: u64,
    /// `ovf:format` URL.
    pub format: Option<String>,
    /// `ovf:populatedSize`, if given.
    pub populated_size: Option<u64>,
}

/// A disk controller of the virtual hardware.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Controller {
    /// `ide`, `scsi`, `sata`, `nvme` or `other`.
    pub kind: String,
    /// `rasd:ResourceSubType` (e.g. `lsilogic`, `AHCI`).
    pub subtype: Option<String>,
    /// `rasd:InstanceID`.
    pub instance_id: String,
}

/// What the descriptor says about the appliance.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Ovf {
    /// OVF version from the namespace (`1.x` or `2.x`).
    pub version: String,
    /// Referenced files, in order.
    pub files: Vec<FileRef>,
    /// Disks of the disk section, in order.
    pub disks: Vec<DiskRef>,
    /// Name of the virtual system (`Name`, or its `ovf:id`).
    pub name: Option<String>,
    /// `OperatingSystemSection` `ovf:id` (CIM OS type number).
    pub os_id: Option<u32>,
    /// `vmw:osType` or the OS description.
    pub os_type: Option<String>,
    /// OS description text.
    pub os_description: Option<String>,
    /// Virtual CPUs.
    pub cpus: Option<u64>,
    /// Memory in MiB.
    pub memory_mib: Option<u64>,
    /// Disk controllers.
    pub controllers: Vec<Controller>,
    /// Disk ids attached to the virtual hardware, in item order.
    pub attached_disks: Vec<String>,
    /// Number of virtual systems (more than one is a collection; only the first is read).
    pub virtual_systems: usize,
}

fn bad(why: impl Into<String>) -> DiskError {
    DiskError::invalid(F, format!("OVF descriptor: {}", why.into()))
}

/// Parses `byte`, `byte * 2^N`, `byte * 10^N` and the common `KB`/`MB`/`GB` forms (with or
/// without "bytes") into a multiplier.
fn units(text: &str) -> Result<u64> {
    let t: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let t = t.to_ascii_lowercase();
    let pow = |base: u64, exp: &str| -> Result<u64> {
        let e: u32 = exp
            .parse()
            .map_err(|_| bad(format!("allocation units {text:?}")))?;
        base.checked_pow(e)
            .ok_or_else(|| bad(format!("allocation units {text:?} overflow")))
    };
    Ok(match t.as_str() {
        "" | "byte" | "bytes" => 1,
        "kb" | "kilobytes" | "kib" => 1 << 10,
        "mb" | "megabytes" | "mib" => 1 << 20,
        "gb" | "gigabytes" | "gib" => 1 << 30,
        "tb" | "terabytes" | "tib" => 1 << 40,
        _ => {
            if let Some(e) = t.strip_prefix("byte*2^") {
                pow(2, e)?
            } else if let Some(e) = t.strip_prefix("byte*10^") {
                pow(10, e)?
            } else {
                return Err(bad(format!("unknown allocation units {text:?}")));
            }
        }
    })
}

fn number(text: &str, what: &str) -> Result<u64> {
    text.trim()
        .parse()
        .map_err(|_| bad(format!("{what} {:?} is not a number", cut(text))))
}

fn cut(s: &str) -> String {
    s.chars().take(64).collect()
}

/// A hardware item being read.
#[derive(Default)]
struct Item {
    fields: Vec<(String, String)>,
}

impl Item {
    fn get(&self, k: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

fn resolve_entity(name: &str) -> Result<char> {
    Ok(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        _ => {
            let code = if let Some(h) = name.strip_prefix("#x") {
                u32::from_str_radix(h, 16).ok()
            } else if let Some(d) = name.strip_prefix('#') {
                d.parse().ok()
            } else {
                None
            };
            return code
                .and_then(char::from_u32)
                .ok_or_else(|| bad(format!("entity &{};  is not allowed", cut(name))));
        }
    })
}

/// The value of attribute `name` (matched by local name) of element `e`, unescaped and
/// bounded in length.
fn attr(e: &quick_xml::events::BytesStart<'_>, name: &str) -> Result<Option<String>> {
    for a in e.attributes() {
        let a = a.map_err(|e| bad(format!("attribute: {e}")))?;
        if a.key.local_name().as_ref() == name.as_bytes() {
            // OVF descriptors are XML 1.0 (the DMTF schema says so).
            let v = a
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|e| bad(format!("attribute {name}: {e}")))?;
            if v.len() > MAX_TEXT {
                return Err(bad(format!("attribute {name} is too long")));
            }
            return Ok(Some(v.into_owned()));
        }
    }
    Ok(None)
}

/// A `File` of `References`.
fn file_ref(e: &quick_xml::events::BytesStart<'_>) -> Result<FileRef> {
    let num = |v: Option<String>, w: &str| -> Result<Option<u64>> {
        v.map(|s| number(&s, w)).transpose()
    };
    Ok(FileRef {
        id: attr(e, "id")?.ok_or_else(|| bad("File without ovf:id"))?,
        href: attr(e, "href")?.ok_or_else(|| bad("File without ovf:href"))?,
        size: num(attr(e, "size")?, "file size")?,
        compression: attr(e, "compression")?,
        chunk_size: num(attr(e, "chunkSize")?, "chunk size")?,
    })
}

/// A `Disk` of the disk section: its capacity is `capacity` times its allocation units.
fn disk_ref(e: &quick_xml::events::BytesStart<'_>) -> Result<DiskRef> {
    let cap = attr(e, "capacity")?.ok_or_else(|| bad("Disk without capacity"))?;
    let unit = units(&attr(e, "capacityAllocationUnits")?.unwrap_or_default())?;
    let capacity = number(&cap, "disk capacity")?
        .checked_mul(unit)
        .ok_or_else(|| bad("disk capacity overflows"))?;
    Ok(DiskRef {
        disk_id: attr(e, "diskId")?.ok_or_else(|| bad("Disk without diskId"))?,
        file_ref: attr(e, "fileRef")?,
        capacity,
        format: attr(e, "format")?,
        populated_size: attr(e, "populatedSize")?
            .map(|s| number(&s, "populated size"))
            .transpose()?,
    })
}

/// Whether `name` is a virtual hardware item element.
fn is_item(name: &str) -> bool {
    matches!(name, "Item" | "StorageItem" | "EthernetPortItem")
}

/// The state of a parse: what has been read, where we are.
#[derive(Default)]
struct Parser {
    ovf: Ovf,
    /// Local names of the open elements.
    stack: Vec<String>,
    /// Text of the innermost element so far (trimmed at its end, not per event: an entity
    /// splits the events), bounded.
    text: String,
    /// The hardware item being read.
    item: Option<Item>,
    /// Inside the first virtual system (the one described).
    in_first_vs: bool,
    seen_envelope: bool,
}

impl Parser {
    /// An element opens (`empty`: and closes at once).
    fn start(&mut self, e: &quick_xml::events::BytesStart<'_>, empty: bool) -> Result<()> {
        let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
        if self.stack.is_empty() {
            self.root(e, &name)?;
        }
        self.element(e, &name)?;
        if !empty {
            if self.stack.len() >= MAX_DEPTH {
                return Err(bad("elements nested too deeply"));
            }
            self.stack.push(name);
            self.text.clear();
        } else if is_item(&name) {
            self.item = None;
        }
        Ok(())
    }

    /// The root must be an `Envelope`; its namespace gives the OVF version.
    fn root(&mut self, e: &quick_xml::events::BytesStart<'_>, name: &str) -> Result<()> {
        if name != "Envelope" {
            return Err(bad(format!(
                "root element is {:?}, not Envelope",
                cut(name)
            )));
        }
        self.seen_envelope = true;
        for a in e.attributes().flatten() {
            let v = String::from_utf8_lossy(&a.value).into_owned();
            if let Some(version) = v.strip_prefix("http://schemas.dmtf.org/ovf/envelope/") {
                self.ovf.version = version.to_string();
            }
        }
        Ok(())
    }

    /// What an opening element means where it is.
    fn element(&mut self, e: &quick_xml::events::BytesStart<'_>, name: &str) -> Result<()> {
        let parent = self.stack.last().map(String::as_str);
        match (parent, name) {
            (Some("References"), "File") => {
                if self.ovf.files.len() >= MAX_ITEMS {
                    return Err(bad("too many files"));
                }
                self.ovf.files.push(file_ref(e)?);
            }
            (Some("DiskSection" | "VirtualDiskDescSection"), "Disk") => {
                if self.ovf.disks.len() >= MAX_ITEMS {
                    return Err(bad("too many disks"));
                }
                self.ovf.disks.push(disk_ref(e)?);
            }
            (_, "VirtualSystem") => {
                self.ovf.virtual_systems += 1;
                self.in_first_vs = self.ovf.virtual_systems == 1;
                if self.in_first_vs && self.ovf.name.is_none() {
                    self.ovf.name = attr(e, "id")?;
                }
            }
            (_, "OperatingSystemSection") if self.in_first_vs => {
                self.ovf.os_id = attr(e, "id")?.and_then(|s| s.trim().parse().ok());
                self.ovf.os_type = attr(e, "osType")?;
            }
            (Some("VirtualHardwareSection"), n) if self.in_first_vs && is_item(n) => {
                self.item = Some(Item::default());
            }
            _ => {}
        }
        Ok(())
    }

    /// Text (or a CDATA section, or a resolved entity) inside the current element.
    fn push_text(&mut self, s: &str) {
        if self.text.len() + s.len() <= MAX_TEXT {
            self.text.push_str(s);
        }
    }

    /// An element closes: its text is stored where it belongs.
    fn end(&mut self, name: &str) -> Result<()> {
        if self.stack.pop().as_deref() != Some(name) {
            return Err(bad("mismatched end tag"));
        }
        let parent = self.stack.last().map(String::as_str);
        let value = self.text.trim().to_string();
        match (parent, name) {
            (Some("VirtualSystem"), "Name") if self.in_first_vs && !value.is_empty() => {
                self.ovf.name = Some(value);
            }
            (Some("OperatingSystemSection"), "Description") if self.in_first_vs => {
                self.ovf.os_description = Some(value);
            }
            (Some(p), field) if is_item(p) => {
                if let Some(it) = self.item.as_mut()
                    && it.fields.len() < 64
                {
                    it.fields.push((field.to_string(), value));
                }
            }
            (_, n) if is_item(n) => {
                if let Some(it) = self.item.take() {
                    add_item(&mut self.ovf, &it)?;
                }
            }
            (_, "VirtualSystem") => self.in_first_vs = false,
            _ => {}
        }
        self.text.clear();
        Ok(())
    }

    /// The document ended: it must have been one whole `Envelope`.
    fn finish(self) -> Result<Ovf> {
        if !self.seen_envelope {
            return Err(bad("no Envelope element"));
        }
        if !self.stack.is_empty() {
            return Err(bad("the document ends inside an element"));
        }
        Ok(self.ovf)
    }
}

/// Parses a descriptor (already bounded in size by the caller).
pub fn parse(xml: &[u8]) -> Result<Ovf> {
    let text = std::str::from_utf8(xml).map_err(|_| bad("not UTF-8"))?;
    let mut r = quick_xml::Reader::from_str(text);
    let mut p = Parser::default();
    loop {
        match r.read_event().map_err(|e| bad(format!("{e}")))? {
            Event::Start(ref e) => p.start(e, false)?,
            Event::Empty(ref e) => p.start(e, true)?,
            Event::Text(t) => p.push_text(&t.decode().map_err(|e| bad(format!("{e}")))?),
            Event::CData(t) => p.push_text(&t.decode().map_err(|e| bad(format!("{e}")))?),
            Event::GeneralRef(g) => {
                let name = g.decode().map_err(|e| bad(format!("{e}")))?;
                let c = resolve_entity(&name)?;
                if p.text.len() < MAX_TEXT {
                    p.text.push(c);
                }
            }
            Event::End(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                p.end(&name)?;
            }
            Event::DocType(_) => return Err(bad("a DOCTYPE is not allowed")),
            Event::Eof => break,
            _ => {}
        }
    }
    p.finish()
}

fn add_item(ovf: &mut Ovf, it: &Item) -> Result<()> {
    let rt: u32 = it
        .get("ResourceType")
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let qty = it
        .get("VirtualQuantity")
        .map(|s| number(s, "VirtualQuantity"))
        .transpose()?;
    match rt {
        3 => ovf.cpus = qty,
        4 => {
            let unit = units(it.get("AllocationUnits").unwrap_or("byte * 2^20"))?;
            ovf.memory_mib = qty.and_then(|q| q.checked_mul(unit)).map(|b| b >> 20);
        }
        5 | 6 | 20 | 24 => {
            if ovf.controllers.len() >= MAX_ITEMS {
                return Err(bad("too many controllers"));
            }
            let kind = match rt {
                5 => "ide",
                6 => "scsi",
                20 => "sata",
                _ => "nvme",
            };
            ovf.controllers.push(Controller {
                kind: kind.into(),
                subtype: it.get("ResourceSubType").map(str::to_string),
                instance_id: it.get("InstanceID").unwrap_or_default().to_string(),
            });
        }
        17 => {
            if let Some(h) = it.get("HostResource") {
                let id = h
                    .trim()
                    .trim_start_matches("ovf:")
                    .trim_start_matches("/disk/")
                    .trim_start_matches("/file/");
                if ovf.attached_disks.len() < MAX_ITEMS {
                    ovf.attached_disks.push(id.to_string());
                }
            }
        }
        _ => {}
    }
    Ok(())
}
