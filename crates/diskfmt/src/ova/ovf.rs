//! The OVF descriptor (DMTF DSP0243, OVF 1.x and 2.x): what an appliance holds.
//!
//! Read: the file references, the disk section (capacities, formats), the operating system
//! section and the virtual hardware (CPUs, memory, disk controllers, disks). Elements and
//! attributes are matched by local name, whatever namespace prefixes the producer chose. The
//! descriptor is bounded in size before it is parsed; entities other than XML's predefined
//! ones and character references are refused (no DTD, no external entities).
//!
//! Written: a descriptor for one virtual machine with its disks, in the structure VMware's and
//! VirtualBox's importers accept (OVF 1.0 namespaces, RASD items in schema order).

use quick_xml::events::Event;

use crate::detect::Format;
use crate::error::{DiskError, Result};

const F: Format = Format::Ova;
/// Most elements of one kind (files, disks, hardware items) a descriptor may list.
const MAX_ITEMS: usize = 1024;
/// Deepest element nesting accepted.
const MAX_DEPTH: usize = 64;
/// Longest text or attribute value kept.
const MAX_TEXT: usize = 4096;

/// The VMware URL naming stream-optimized VMDK disks in `ovf:format`.
pub const VMDK_STREAM_URL: &str =
    "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized";

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

/// Parses a descriptor (already bounded in size by the caller).
pub fn parse(xml: &[u8]) -> Result<Ovf> {
    let text = std::str::from_utf8(xml).map_err(|_| bad("not UTF-8"))?;
    let mut r = quick_xml::Reader::from_str(text);
    // Text is trimmed per element at its end, not per event (an entity splits the events).
    let mut ovf = Ovf::default();
    let mut stack: Vec<String> = Vec::new();
    let mut buf_text = String::new();
    let mut item: Option<Item> = None;
    let mut in_first_vs = false;
    let mut seen_envelope = false;

    let attr = |e: &quick_xml::events::BytesStart<'_>, name: &str| -> Result<Option<String>> {
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
    };

    loop {
        let ev = r.read_event().map_err(|e| bad(format!("{e}")))?;
        match ev {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(ev, Event::Empty(_));
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if stack.is_empty() {
                    if name != "Envelope" {
                        return Err(bad(format!(
                            "root element is {:?}, not Envelope",
                            cut(&name)
                        )));
                    }
                    seen_envelope = true;
                    for a in e.attributes().flatten() {
                        let v = String::from_utf8_lossy(&a.value).into_owned();
                        if v.starts_with("http://schemas.dmtf.org/ovf/envelope/") {
                            ovf.version = v
                                .trim_start_matches("http://schemas.dmtf.org/ovf/envelope/")
                                .to_string();
                        }
                    }
                }
                let parent = stack.last().map(String::as_str);
                match (parent, name.as_str()) {
                    (Some("References"), "File") => {
                        if ovf.files.len() >= MAX_ITEMS {
                            return Err(bad("too many files"));
                        }
                        let num = |v: Option<String>, w: &str| -> Result<Option<u64>> {
                            v.map(|s| number(&s, w)).transpose()
                        };
                        ovf.files.push(FileRef {
                            id: attr(e, "id")?.ok_or_else(|| bad("File without ovf:id"))?,
                            href: attr(e, "href")?.ok_or_else(|| bad("File without ovf:href"))?,
                            size: num(attr(e, "size")?, "file size")?,
                            compression: attr(e, "compression")?,
                            chunk_size: num(attr(e, "chunkSize")?, "chunk size")?,
                        });
                    }
                    (Some("DiskSection" | "VirtualDiskDescSection"), "Disk") => {
                        if ovf.disks.len() >= MAX_ITEMS {
                            return Err(bad("too many disks"));
                        }
                        let cap =
                            attr(e, "capacity")?.ok_or_else(|| bad("Disk without capacity"))?;
                        let unit = units(&attr(e, "capacityAllocationUnits")?.unwrap_or_default())?;
                        let capacity = number(&cap, "disk capacity")?
                            .checked_mul(unit)
                            .ok_or_else(|| bad("disk capacity overflows"))?;
                        ovf.disks.push(DiskRef {
                            disk_id: attr(e, "diskId")?
                                .ok_or_else(|| bad("Disk without diskId"))?,
                            file_ref: attr(e, "fileRef")?,
                            capacity,
                            format: attr(e, "format")?,
                            populated_size: attr(e, "populatedSize")?
                                .map(|s| number(&s, "populated size"))
                                .transpose()?,
                        });
                    }
                    (_, "VirtualSystem") => {
                        ovf.virtual_systems += 1;
                        in_first_vs = ovf.virtual_systems == 1;
                        if in_first_vs && ovf.name.is_none() {
                            ovf.name = attr(e, "id")?;
                        }
                    }
                    (_, "OperatingSystemSection") if in_first_vs => {
                        ovf.os_id = attr(e, "id")?.and_then(|s| s.trim().parse().ok());
                        ovf.os_type = attr(e, "osType")?;
                    }
                    (
                        Some("VirtualHardwareSection"),
                        "Item" | "StorageItem" | "EthernetPortItem",
                    ) if in_first_vs => {
                        item = Some(Item::default());
                    }
                    _ => {}
                }
                if !empty {
                    if stack.len() >= MAX_DEPTH {
                        return Err(bad("elements nested too deeply"));
                    }
                    stack.push(name);
                    buf_text.clear();
                } else if matches!(name.as_str(), "Item" | "StorageItem" | "EthernetPortItem") {
                    item = None;
                }
            }
            Event::Text(t) => {
                let s = t.decode().map_err(|e| bad(format!("{e}")))?;
                if buf_text.len() + s.len() <= MAX_TEXT {
                    buf_text.push_str(&s);
                }
            }
            Event::CData(t) => {
                let s = t.decode().map_err(|e| bad(format!("{e}")))?;
                if buf_text.len() + s.len() <= MAX_TEXT {
                    buf_text.push_str(&s);
                }
            }
            Event::GeneralRef(g) => {
                let name = g.decode().map_err(|e| bad(format!("{e}")))?;
                let c = resolve_entity(&name)?;
                if buf_text.len() < MAX_TEXT {
                    buf_text.push(c);
                }
            }
            Event::End(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if stack.pop().as_deref() != Some(name.as_str()) {
                    return Err(bad("mismatched end tag"));
                }
                let parent = stack.last().map(String::as_str);
                let value = buf_text.trim().to_string();
                match (parent, name.as_str()) {
                    (Some("VirtualSystem"), "Name") if in_first_vs && !value.is_empty() => {
                        ovf.name = Some(value.clone());
                    }
                    (Some("OperatingSystemSection"), "Description") if in_first_vs => {
                        ovf.os_description = Some(value.clone());
                    }
                    (Some("Item" | "StorageItem" | "EthernetPortItem"), field) => {
                        if let Some(it) = item.as_mut()
                            && it.fields.len() < 64
                        {
                            it.fields.push((field.to_string(), value.clone()));
                        }
                    }
                    (_, "Item" | "StorageItem" | "EthernetPortItem") => {
                        if let Some(it) = item.take() {
                            add_item(&mut ovf, &it)?;
                        }
                    }
                    (_, "VirtualSystem") => in_first_vs = false,
                    _ => {}
                }
                buf_text.clear();
            }
            Event::DocType(_) => return Err(bad("a DOCTYPE is not allowed")),
            Event::Eof => break,
            _ => {}
        }
    }
    if !seen_envelope {
        return Err(bad("no Envelope element"));
    }
    if !stack.is_empty() {
        return Err(bad("the document ends inside an element"));
    }
    Ok(ovf)
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

/// What to say about the machine in a descriptor we write.
#[derive(Debug, Clone)]
pub struct MachineSpec {
    /// Name of the virtual system.
    pub name: String,
    /// Virtual CPUs.
    pub cpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// VMware guest OS type (`vmw:osType`), e.g. `otherGuest64`, `ubuntu64Guest`.
    pub os_type: String,
    /// CIM operating system id for `OperatingSystemSection ovf:id` (1 = Other, 101/102 =
    /// Linux 32/64-bit, 103 = Windows 64-bit…).
    pub os_id: u32,
    /// Disk controller: `lsilogic` (SCSI), `ide`, `buslogic`.
    pub adapter: String,
}

/// One disk to describe: member name, its size in the archive, capacity, populated bytes.
#[derive(Debug, Clone)]
pub struct DiskSpec {
    /// Member name of the VMDK.
    pub href: String,
    /// Size of the VMDK file.
    pub file_size: u64,
    /// Virtual size in bytes.
    pub capacity: u64,
    /// Bytes of data the disk holds.
    pub populated: u64,
}

fn esc(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

/// Writes an OVF 1.0 descriptor for one virtual machine with `disks` (stream-optimized VMDK).
#[must_use]
pub fn write(m: &MachineSpec, disks: &[DiskSpec]) -> String {
    use std::fmt::Write as _;
    let mut x = String::new();
    let name = esc(&m.name);
    x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str(concat!(
        "<Envelope xmlns=\"http://schemas.dmtf.org/ovf/envelope/1\"",
        " xmlns:cim=\"http://schemas.dmtf.org/wbem/wscim/1/common\"",
        " xmlns:ovf=\"http://schemas.dmtf.org/ovf/envelope/1\"",
        " xmlns:rasd=\"http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData\"",
        " xmlns:vmw=\"http://www.vmware.com/schema/ovf\"",
        " xmlns:vssd=\"http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData\"",
        " xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\n"
    ));
    x.push_str("  <References>\n");
    for (i, d) in disks.iter().enumerate() {
        let _ = writeln!(
            x,
            "    <File ovf:href=\"{}\" ovf:id=\"file{}\" ovf:size=\"{}\"/>",
            esc(&d.href),
            i + 1,
            d.file_size
        );
    }
    x.push_str("  </References>\n  <DiskSection>\n    <Info>Virtual disk information</Info>\n");
    for (i, d) in disks.iter().enumerate() {
        let _ = writeln!(
            x,
            "    <Disk ovf:capacity=\"{}\" ovf:capacityAllocationUnits=\"byte\" ovf:diskId=\"vmdisk{n}\" ovf:fileRef=\"file{n}\" ovf:format=\"{VMDK_STREAM_URL}\" ovf:populatedSize=\"{}\"/>",
            d.capacity,
            d.populated,
            n = i + 1
        );
    }
    x.push_str("  </DiskSection>\n");
    let _ = writeln!(x, "  <VirtualSystem ovf:id=\"{name}\">");
    x.push_str("    <Info>A virtual machine</Info>\n");
    let _ = writeln!(x, "    <Name>{name}</Name>");
    let _ = writeln!(
        x,
        "    <OperatingSystemSection ovf:id=\"{}\" vmw:osType=\"{}\">\n      <Info>The kind of installed guest operating system</Info>\n    </OperatingSystemSection>",
        m.os_id,
        esc(&m.os_type)
    );
    x.push_str("    <VirtualHardwareSection>\n      <Info>Virtual hardware requirements</Info>\n");
    let _ = writeln!(
        x,
        "      <System>\n        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>\n        <vssd:InstanceID>0</vssd:InstanceID>\n        <vssd:VirtualSystemIdentifier>{name}</vssd:VirtualSystemIdentifier>\n        <vssd:VirtualSystemType>vmx-10</vssd:VirtualSystemType>\n      </System>"
    );
    // RASD elements in schema (alphabetical) order.
    let _ = writeln!(
        x,
        "      <Item>\n        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>\n        <rasd:Description>Number of Virtual CPUs</rasd:Description>\n        <rasd:ElementName>{c} virtual CPU(s)</rasd:ElementName>\n        <rasd:InstanceID>1</rasd:InstanceID>\n        <rasd:ResourceType>3</rasd:ResourceType>\n        <rasd:VirtualQuantity>{c}</rasd:VirtualQuantity>\n      </Item>",
        c = m.cpus
    );
    let _ = writeln!(
        x,
        "      <Item>\n        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>\n        <rasd:Description>Memory Size</rasd:Description>\n        <rasd:ElementName>{mem}MB of memory</rasd:ElementName>\n        <rasd:InstanceID>2</rasd:InstanceID>\n        <rasd:ResourceType>4</rasd:ResourceType>\n        <rasd:VirtualQuantity>{mem}</rasd:VirtualQuantity>\n      </Item>",
        mem = m.memory_mib
    );
    let (ctl_name, ctl_sub, ctl_type) = if m.adapter == "ide" {
        ("IDE Controller 0", None, 5)
    } else {
        ("SCSI Controller 0", Some(m.adapter.as_str()), 6)
    };
    let sub = ctl_sub.map_or(String::new(), |s| {
        format!(
            "\n        <rasd:ResourceSubType>{}</rasd:ResourceSubType>",
            esc(s)
        )
    });
    let _ = writeln!(
        x,
        "      <Item>\n        <rasd:Address>0</rasd:Address>\n        <rasd:Description>{ctl_name}</rasd:Description>\n        <rasd:ElementName>{ctl_name}</rasd:ElementName>\n        <rasd:InstanceID>3</rasd:InstanceID>{sub}\n        <rasd:ResourceType>{ctl_type}</rasd:ResourceType>\n      </Item>"
    );
    for i in 0..disks.len() {
        let _ = writeln!(
            x,
            "      <Item>\n        <rasd:AddressOnParent>{i}</rasd:AddressOnParent>\n        <rasd:ElementName>Hard Disk {n}</rasd:ElementName>\n        <rasd:HostResource>ovf:/disk/vmdisk{n}</rasd:HostResource>\n        <rasd:InstanceID>{id}</rasd:InstanceID>\n        <rasd:Parent>3</rasd:Parent>\n        <rasd:ResourceType>17</rasd:ResourceType>\n      </Item>",
            n = i + 1,
            id = 4 + i
        );
    }
    x.push_str("    </VirtualHardwareSection>\n  </VirtualSystem>\n</Envelope>\n");
    x
}
