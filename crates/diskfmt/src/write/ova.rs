//! OVA writer: an OVF descriptor, the disk as a stream-optimized VMDK and a SHA-256
//! manifest, as ustar members in that order (the OVF standard puts the descriptor first, and
//! importers such as VMware's stream the archive expecting it).
//!
//! The descriptor states the VMDK's size, so the VMDK is made first, in a temporary output
//! (`WriteOptions::temp`: by default an unnamed file, deleted by the system even if we
//! crash; in the service an encrypted one), then copied into the archive while being hashed
//! for the manifest.

use std::io::{Read, Write};
use std::sync::atomic::AtomicU64;

use sha2::Digest;

use super::vmdk::VmdkWriter;
use super::{Appender, Output, OutputReader, WriteOptions, WriteStats, Writer, no_compression};
use crate::disk::{Disk, allocated_bytes};
use crate::error::{DiskError, Result};
use crate::format::Format;
use crate::text::hex;

const F: Format = Format::Ova;

/// The OVA writer.
#[derive(Debug, Clone, Copy)]
pub struct OvaWriter;

impl Writer for OvaWriter {
    fn description(&self) -> &'static str {
        "OVA appliance: OVF descriptor, stream-optimized VMDK, SHA-256 manifest"
    }

    fn check_compression(&self, compression: &str) -> Result<()> {
        match compression {
            "zlib" | "deflate" => Ok(()),
            c => Err(no_compression(
                F,
                c,
                "an OVA's stream-optimized VMDK is always deflate-compressed",
            )),
        }
    }

    /// `opts.name` names the appliance (`NAME.ova` → `NAME`) and its members.
    fn write(
        &self,
        disk: &dyn Disk,
        out: &dyn Output,
        opts: &WriteOptions,
        progress: &AtomicU64,
    ) -> Result<WriteStats> {
        if let Some(s) = opts.subformat.as_deref() {
            return Err(DiskError::unsupported(
                F,
                format!("subformat {s:?}: an OVA always holds a stream-optimized VMDK"),
            ));
        }
        let names = Names::from_option(opts.name.as_deref());
        let adapter = opts
            .adapter_type
            .clone()
            .unwrap_or_else(|| "lsilogic".into());
        let (vmdk, vmdk_size) = temp_vmdk(disk, opts, &names, &adapter, progress)?;
        let spec = MachineSpec {
            name: names.base.clone(),
            cpus: opts.cpus.unwrap_or(1),
            memory_mib: opts.memory_mib.unwrap_or(1024),
            os_type: opts
                .os_type
                .clone()
                .unwrap_or_else(|| "otherGuest64".into()),
            os_id: 1,
            adapter,
        };
        let descriptor = descriptor(
            &spec,
            &[DiskSpec {
                href: names.vmdk.clone(),
                file_size: vmdk_size,
                capacity: disk.virtual_size(),
                populated: allocated_bytes(disk)?,
            }],
        );
        let file_size = archive(out, &names, &descriptor, &*vmdk, vmdk_size)?;
        Ok(WriteStats {
            virtual_size: disk.virtual_size(),
            file_size,
        })
    }
}

fn io(e: std::io::Error) -> DiskError {
    DiskError::io("writing the OVA", e)
}

/// The member names of an appliance called `base`.
struct Names {
    base: String,
    ovf: String,
    vmdk: String,
    manifest: String,
}

impl Names {
    /// From the output's file name (`NAME.ova` → `NAME`; default `vm`), reduced to characters
    /// every tar reader and importer accepts.
    fn from_option(name: Option<&str>) -> Names {
        let base = name
            .map(|n| n.strip_suffix(".ova").unwrap_or(n))
            .filter(|n| !n.is_empty())
            .unwrap_or("vm");
        let base: String = base
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Names {
            ovf: format!("{base}.ovf"),
            vmdk: format!("{base}-disk1.vmdk"),
            manifest: format!("{base}.mf"),
            base,
        }
    }
}

/// Writes the stream-optimized VMDK into a temporary output of `opts`; returns it with its
/// size.
fn temp_vmdk(
    disk: &dyn Disk,
    opts: &WriteOptions,
    names: &Names,
    adapter: &str,
    progress: &AtomicU64,
) -> Result<(Box<dyn Output>, u64)> {
    let tmp = opts
        .temp_outputs()
        .make()
        .map_err(|e| DiskError::io("making the OVA's temporary VMDK", e))?;
    let vopts = WriteOptions {
        name: Some(names.vmdk.clone()),
        adapter_type: Some(adapter.to_string()),
        ..opts.clone()
    };
    let written = VmdkWriter.write(disk, &*tmp, &vopts, progress)?;
    Ok((tmp, written.file_size))
}

/// Appends the three members to `out`; returns the archive's size.
fn archive(
    out: &dyn Output,
    names: &Names,
    descriptor: &str,
    vmdk: &dyn Output,
    vmdk_size: u64,
) -> Result<u64> {
    let appender = Appender { out, at: 0 };
    let mut b = ::tar::Builder::new(std::io::BufWriter::with_capacity(1 << 20, appender));
    let header = |size: u64| {
        let mut h = ::tar::Header::new_ustar();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        );
        h.set_entry_type(::tar::EntryType::Regular);
        h
    };
    let mut h = header(descriptor.len() as u64);
    b.append_data(&mut h, &names.ovf, descriptor.as_bytes())
        .map_err(io)?;
    let vmdk = OutputReader {
        src: vmdk,
        at: 0,
        len: vmdk_size,
    };
    let mut hashing = HashingReader {
        inner: std::io::BufReader::with_capacity(1 << 20, vmdk),
        hash: sha2::Sha256::new(),
    };
    let mut h = header(vmdk_size);
    b.append_data(&mut h, &names.vmdk, &mut hashing)
        .map_err(io)?;
    let manifest = format!(
        "SHA256({})= {}\nSHA256({})= {}\n",
        names.ovf,
        hex(&sha2::Sha256::digest(descriptor.as_bytes())),
        names.vmdk,
        hex(&hashing.hash.finalize())
    );
    let mut h = header(manifest.len() as u64);
    b.append_data(&mut h, &names.manifest, manifest.as_bytes())
        .map_err(io)?;
    let mut out = b.into_inner().map_err(io)?;
    out.flush().map_err(io)?;
    let appender = out.into_inner().map_err(|e| io(e.into_error()))?;
    Ok(appender.at)
}

/// Hashes what passes through it (the VMDK, on its way into the archive).
struct HashingReader<R> {
    inner: R,
    hash: sha2::Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// The VMware URL naming stream-optimized VMDK disks in `ovf:format`.
pub const VMDK_STREAM_URL: &str =
    "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized";

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

/// An OVF 1.0 descriptor for one virtual machine with `disks` (stream-optimized VMDK), in the
/// structure VMware's and VirtualBox's importers accept (OVF 1.0 namespaces, RASD items in
/// schema order).
#[must_use]
pub fn descriptor(m: &MachineSpec, disks: &[DiskSpec]) -> String {
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
