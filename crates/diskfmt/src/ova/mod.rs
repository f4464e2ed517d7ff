//! OVA appliances: a tar archive holding an OVF descriptor, its disks and a manifest.
//!
//! [`Appliance::open`] is the safety inspection of an OVA: it lists the members with a
//! bounded tar reader and refuses, by reason code,
//! - `ova-unsafe-name`: a member name that is absolute, holds `..`, a backslash or a NUL;
//! - `ova-link`: hard or symbolic links; `ova-special-file`: devices, FIFOs, sparse files;
//! - `ova-duplicate-member`: two members with one name;
//! - `ova-no-descriptor` / `ova-several-descriptors`: not exactly one `.ovf`;
//! - `limit-exceeded`: a descriptor or manifest above the descriptor size limit;
//! - `ova-missing-file`: a file the OVF references is not in the archive;
//! - `ova-unreferenced-file`: a member that neither the OVF nor the OVA format explains;
//! - `ova-manifest-mismatch` ([`Appliance::verify`]): a digest that differs, a file the
//!   manifest lists but the archive lacks, or a file the manifest leaves out.
//!
//! Disks are read in place through a window of the archive ([`crate::io::SubSource`]): no
//! member is extracted to disk. Writing an OVA is [`crate::write::ova`].

pub mod ovf;
pub mod tar;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::Digest;

use crate::disk::Disk;
use crate::error::{DiskError, Refusal, Result};
use crate::format::Format;
use crate::image::open;
use crate::io::{ReadAt, Source, SubSource, read_checked};
use crate::limits::Limits;
use crate::text::hex;

pub use ovf::Ovf;
pub use tar::{Kind, Member};

const F: Format = Format::Ova;

fn refuse(code: &'static str, detail: String) -> DiskError {
    DiskError::Refused(Refusal::Appliance { code, detail })
}

/// A disk of the appliance.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ApplianceDisk {
    /// `ovf:diskId`.
    pub disk_id: String,
    /// Member name of its file.
    pub file: String,
    /// Capacity the OVF declares.
    pub capacity: u64,
    /// `ovf:format` URL.
    pub format: Option<String>,
    /// Offset of the file in the archive.
    #[serde(skip)]
    pub offset: u64,
    /// Size of the file.
    pub size: u64,
}

/// A digest line of the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestEntry {
    /// `SHA1`, `SHA256` or `SHA512`.
    pub algorithm: String,
    /// Member name.
    pub file: String,
    /// Expected digest, lowercase hex.
    pub digest: String,
}

/// An opened, inspected OVA.
pub struct Appliance {
    src: Source,
    /// Members in archive order.
    pub members: Vec<Member>,
    /// Member name of the descriptor.
    pub descriptor_name: String,
    /// The descriptor.
    pub ovf: Ovf,
    /// Disks with files, in disk-section order.
    pub disks: Vec<ApplianceDisk>,
    /// The manifest, if the OVA has one.
    pub manifest: Option<Vec<ManifestEntry>>,
    /// Things worth telling that do not stop an import.
    pub warnings: Vec<String>,
}

fn safe_name(name: &str) -> Result<String> {
    let n = name.strip_prefix("./").unwrap_or(name);
    let bad = n.is_empty()
        || n.starts_with('/')
        || n.contains('\\')
        || n.contains('\0')
        || n.split('/').any(|c| c == "..");
    if bad {
        return Err(refuse(
            "ova-unsafe-name",
            format!(
                "member name {} is absolute or leaves the archive",
                tar::shown(name)
            ),
        ));
    }
    Ok(n.trim_end_matches('/').to_string())
}

fn parse_manifest(text: &str) -> Result<Vec<ManifestEntry>> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let parsed = (|| {
            let open = line.find('(')?;
            let close = line.rfind(")=")?;
            let algorithm = line[..open].trim().to_ascii_uppercase();
            let file = line.get(open + 1..close)?.to_string();
            let digest = line.get(close + 2..)?.trim().to_ascii_lowercase();
            Some(ManifestEntry {
                algorithm,
                file,
                digest,
            })
        })();
        let e = parsed.ok_or_else(|| {
            refuse(
                "ova-manifest-mismatch",
                format!(
                    "manifest line {} is not ALG(file)= digest",
                    tar::shown(line)
                ),
            )
        })?;
        let want_len = match e.algorithm.as_str() {
            "SHA1" => 40,
            "SHA256" => 64,
            "SHA512" => 128,
            _ => {
                return Err(refuse(
                    "ova-manifest-mismatch",
                    format!(
                        "manifest digest algorithm {} is not SHA1, SHA256 or SHA512",
                        tar::shown(&e.algorithm)
                    ),
                ));
            }
        };
        if e.digest.len() != want_len || !e.digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(refuse(
                "ova-manifest-mismatch",
                format!("manifest digest for {} is malformed", tar::shown(&e.file)),
            ));
        }
        out.push(e);
    }
    Ok(out)
}

/// Whether member `m`'s name ends in `.ext`, in any case.
fn has_ext(m: &Member, ext: &str) -> bool {
    m.name
        .rsplit_once('.')
        .is_some_and(|(_, x)| x.eq_ignore_ascii_case(ext))
}

/// The archive's regular files, with safe names: links, devices, FIFOs and sparse files are
/// refused (a link could point anywhere on the host), directories skipped, a name used twice
/// refused (which of the two would be read is up to the reader).
fn list_members(src: &dyn ReadAt) -> Result<Vec<Member>> {
    let raw = tar::members(src)?;
    let mut members: Vec<Member> = Vec::with_capacity(raw.len());
    for m in raw {
        let name = safe_name(&m.name)?;
        match m.kind {
            Kind::Link => {
                return Err(refuse(
                    "ova-link",
                    format!("member {} is a link", tar::shown(&name)),
                ));
            }
            Kind::Special | Kind::Sparse => {
                return Err(refuse(
                    "ova-special-file",
                    format!(
                        "member {} is a device, FIFO or sparse file",
                        tar::shown(&name)
                    ),
                ));
            }
            Kind::Directory => continue,
            Kind::File => {}
        }
        if members.iter().any(|x| x.name == name) {
            return Err(refuse(
                "ova-duplicate-member",
                format!("member {} appears twice", tar::shown(&name)),
            ));
        }
        members.push(Member { name, ..m });
    }
    Ok(members)
}

/// The one `.ovf` member: none or several make the appliance ambiguous.
fn the_descriptor(members: &[Member]) -> Result<Member> {
    let descriptors: Vec<&Member> = members.iter().filter(|m| has_ext(m, "ovf")).collect();
    match descriptors.as_slice() {
        [] => Err(refuse(
            "ova-no-descriptor",
            "the archive holds no .ovf descriptor".into(),
        )),
        [one] => Ok((*one).clone()),
        _ => Err(refuse(
            "ova-several-descriptors",
            format!("the archive holds {} .ovf descriptors", descriptors.len()),
        )),
    }
}

/// The `.mf` manifest, if any (bounded like the descriptor); two are refused.
fn read_manifest(
    src: &dyn ReadAt,
    members: &[Member],
    limits: &Limits,
) -> Result<Option<Vec<ManifestEntry>>> {
    match members
        .iter()
        .filter(|m| has_ext(m, "mf"))
        .collect::<Vec<_>>()[..]
    {
        [] => Ok(None),
        [m] => {
            let len = limits.check_descriptor(F, m.size)?;
            let text = read_checked(src, F, "manifest", m.offset, len)?;
            let text = String::from_utf8(text).map_err(|_| {
                refuse(
                    "ova-manifest-mismatch",
                    "the manifest is not UTF-8 text".into(),
                )
            })?;
            Ok(Some(parse_manifest(&text)?))
        }
        _ => Err(refuse(
            "ova-duplicate-member",
            "the archive holds more than one .mf manifest".into(),
        )),
    }
}

/// Every file the OVF references is a member, stored as is (a compressed or chunked file
/// would need unpacking we do not do); a size that disagrees with the archive is a warning.
fn check_references(ovf: &Ovf, members: &[Member], warnings: &mut Vec<String>) -> Result<()> {
    for f in &ovf.files {
        let href = safe_name(&f.href)?;
        let Some(m) = members.iter().find(|m| m.name == href) else {
            return Err(refuse(
                "ova-missing-file",
                format!(
                    "the OVF references {} but the archive does not hold it",
                    tar::shown(&href)
                ),
            ));
        };
        if f.compression.is_some() || f.chunk_size.is_some() {
            return Err(DiskError::unsupported(
                F,
                format!(
                    "file {} is compressed or chunked inside the OVA; repackage it uncompressed",
                    tar::shown(&href)
                ),
            ));
        }
        if f.size.is_some_and(|s| s != m.size) {
            warnings.push(format!(
                "the OVF gives {} a size of {} bytes; the archive holds {}",
                tar::shown(&href),
                f.size.unwrap_or(0),
                m.size
            ));
        }
    }
    Ok(())
}

/// Every member is the descriptor, the manifest, a certificate or a file the OVF references:
/// anything else is something we were not told about.
fn check_nothing_unreferenced(ovf: &Ovf, members: &[Member], desc: &Member) -> Result<()> {
    for m in members {
        let known = m.name == desc.name
            || has_ext(m, "mf")
            || has_ext(m, "cert")
            || ovf
                .files
                .iter()
                .any(|f| safe_name(&f.href).is_ok_and(|h| h == m.name));
        if !known {
            return Err(refuse(
                "ova-unreferenced-file",
                format!(
                    "member {} is not referenced by the OVF descriptor",
                    tar::shown(&m.name)
                ),
            ));
        }
    }
    Ok(())
}

/// The disks of the disk section that have a file, in order (a blank disk is a warning); an
/// OVF without any is refused.
fn disks_with_files(
    ovf: &Ovf,
    members: &[Member],
    warnings: &mut Vec<String>,
) -> Result<Vec<ApplianceDisk>> {
    let mut disks = Vec::new();
    for d in &ovf.disks {
        let Some(fref) = &d.file_ref else {
            warnings.push(format!(
                "disk {} has no file (a blank disk); it is not imported",
                tar::shown(&d.disk_id)
            ));
            continue;
        };
        let file = ovf.files.iter().find(|f| &f.id == fref).ok_or_else(|| {
            refuse(
                "ova-missing-file",
                format!(
                    "disk {} names file id {} that References does not list",
                    tar::shown(&d.disk_id),
                    tar::shown(fref)
                ),
            )
        })?;
        let href = safe_name(&file.href)?;
        let m = members
            .iter()
            .find(|m| m.name == href)
            .ok_or_else(|| refuse("ova-missing-file", tar::shown(&href)))?;
        disks.push(ApplianceDisk {
            disk_id: d.disk_id.clone(),
            file: href,
            capacity: d.capacity,
            format: d.format.clone(),
            offset: m.offset,
            size: m.size,
        });
    }
    if disks.is_empty() {
        return Err(refuse(
            "ova-missing-file",
            "the OVF describes no disk with a file".into(),
        ));
    }
    Ok(disks)
}

impl Appliance {
    /// Lists and checks the archive, parses the descriptor and the manifest; refuses the
    /// appliance by reason code (see the module documentation). Digests are checked by
    /// [`Appliance::verify`].
    pub fn open(src: Source, limits: &Limits) -> Result<Appliance> {
        let members = list_members(&*src)?;
        let desc = the_descriptor(&members)?;
        let mut warnings = Vec::new();
        if members.first().map(|m| &m.name) != Some(&desc.name) {
            warnings.push(
                "the OVF descriptor is not the first member (the OVF standard puts it first)"
                    .into(),
            );
        }
        let len = limits.check_descriptor(F, desc.size)?;
        let xml = read_checked(&*src, F, "OVF descriptor", desc.offset, len)?;
        let ovf = ovf::parse(&xml)?;
        let manifest = read_manifest(&*src, &members, limits)?;
        check_references(&ovf, &members, &mut warnings)?;
        check_nothing_unreferenced(&ovf, &members, &desc)?;
        let disks = disks_with_files(&ovf, &members, &mut warnings)?;
        if ovf.virtual_systems > 1 {
            warnings.push(format!(
                "the OVF holds {} virtual systems; only the first is described",
                ovf.virtual_systems
            ));
        }
        if manifest.is_none() {
            warnings.push("the OVA has no manifest: its files cannot be checked".into());
        }
        Ok(Appliance {
            src,
            descriptor_name: desc.name,
            members,
            ovf,
            disks,
            manifest,
            warnings,
        })
    }

    /// Checks every digest of the manifest against the archive, reading each file once
    /// (`progress` grows by the bytes hashed). Every member but the manifest and certificate
    /// must be listed. Without a manifest there is nothing to check.
    pub fn verify(&self, progress: &AtomicU64) -> Result<()> {
        let Some(manifest) = &self.manifest else {
            return Ok(());
        };
        for m in &self.members {
            let ext = m.name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
            if matches!(ext.as_deref(), Some("mf" | "cert")) {
                continue;
            }
            if !manifest.iter().any(|e| e.file == m.name) {
                return Err(refuse(
                    "ova-manifest-mismatch",
                    format!("the manifest does not list {}", tar::shown(&m.name)),
                ));
            }
        }
        for e in manifest {
            let Some(m) = self.members.iter().find(|m| m.name == e.file) else {
                return Err(refuse(
                    "ova-manifest-mismatch",
                    format!(
                        "the manifest lists {}, which the archive does not hold",
                        tar::shown(&e.file)
                    ),
                ));
            };
            let got = digest(&*self.src, m.offset, m.size, &e.algorithm, progress)?;
            if got != e.digest {
                return Err(refuse(
                    "ova-manifest-mismatch",
                    format!(
                        "{} digest of {} does not match the manifest: the file was altered or damaged",
                        e.algorithm,
                        tar::shown(&e.file)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Opens disk `i` (0-based, in disk-section order) in place, with detection and the
    /// full safety inspection of its format.
    pub fn open_disk(&self, i: usize, limits: &Limits) -> Result<Box<dyn Disk>> {
        let d = self.disks.get(i).ok_or_else(|| {
            DiskError::invalid(
                F,
                format!(
                    "the appliance has {} disk(s); there is no disk {}",
                    self.disks.len(),
                    i + 1
                ),
            )
        })?;
        let window: Source = Arc::new(SubSource::new(self.src.clone(), d.offset, d.size)?);
        let disk = open(window, limits)?;
        Ok(disk)
    }
}

fn digest(
    src: &dyn ReadAt,
    offset: u64,
    size: u64,
    alg: &str,
    progress: &AtomicU64,
) -> Result<String> {
    enum H {
        S1(sha1::Sha1),
        S256(sha2::Sha256),
        S512(sha2::Sha512),
    }
    let mut h = match alg {
        "SHA1" => H::S1(sha1::Sha1::new()),
        "SHA512" => H::S512(sha2::Sha512::new()),
        _ => H::S256(sha2::Sha256::new()),
    };
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < size {
        let n = usize::try_from((size - at).min(1 << 20)).unwrap_or(1 << 20);
        crate::io::read_exact_at(src, &mut buf[..n], offset + at)
            .map_err(|e| DiskError::io("reading the OVA", e))?;
        match &mut h {
            H::S1(h) => h.update(&buf[..n]),
            H::S256(h) => h.update(&buf[..n]),
            H::S512(h) => h.update(&buf[..n]),
        }
        at += n as u64;
        progress.fetch_add(n as u64, Ordering::Relaxed);
    }
    Ok(match h {
        H::S1(h) => hex(&h.finalize()),
        H::S256(h) => hex(&h.finalize()),
        H::S512(h) => hex(&h.finalize()),
    })
}
