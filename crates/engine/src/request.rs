//! What callers ask for: the parameters of ImportImage, ImportSnapshot and ExportImage, as
//! the EC2 API names them, and the checks made before a task is created (fail fast, with the
//! field named and what to do).

use serde::{Deserialize, Serialize};

use crate::error::EngineError;

/// `UserBucket`: an object in one of the configured buckets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct UserBucket {
    /// `S3Bucket`.
    pub s3_bucket: String,
    /// `S3Key`.
    pub s3_key: String,
}

/// `DiskContainer` (ImportImage) / `SnapshotDiskContainer` (ImportSnapshot).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DiskContainer {
    /// `Description`.
    pub description: Option<String>,
    /// `DeviceName`.
    pub device_name: Option<String>,
    /// `Format`: OVA, VMDK, VHD, VHDX, RAW (and qcow2, VDI beyond the EC2 set).
    pub format: Option<String>,
    /// `Url`: `s3://bucket/key` or `https://…` (a presigned URL, say).
    pub url: Option<String>,
    /// `UserBucket`.
    pub user_bucket: Option<UserBucket>,
}

/// ImportImage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ImportImageRequest {
    /// `Architecture`: `i386`, `x86_64` or `arm64`; inspection decides when absent.
    pub architecture: Option<String>,
    /// `BootMode`: `legacy-bios`, `uefi` or `uefi-preferred`.
    pub boot_mode: Option<String>,
    /// `Description`.
    pub description: Option<String>,
    /// `DiskContainers`, the boot disk first.
    pub disk_containers: Vec<DiskContainer>,
    /// `Encrypted`.
    pub encrypted: Option<bool>,
    /// `KmsKeyId`.
    pub kms_key_id: Option<String>,
    /// `LicenseType`: `AWS` or `BYOL`.
    pub license_type: Option<String>,
    /// `Platform`: `Windows` or `Linux`. Given, it lets a disk whose OS inspection cannot
    /// identify be imported.
    pub platform: Option<String>,
    /// `RoleName` (the service role whose policy decides which buckets may be read).
    pub role_name: Option<String>,
}

/// ImportSnapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ImportSnapshotRequest {
    /// `Description`.
    pub description: Option<String>,
    /// `DiskContainer`.
    pub disk_container: DiskContainer,
    /// `Encrypted`.
    pub encrypted: Option<bool>,
    /// `KmsKeyId`.
    pub kms_key_id: Option<String>,
    /// `RoleName`.
    pub role_name: Option<String>,
}

/// `S3ExportLocation`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ExportLocation {
    /// `S3Bucket`.
    pub s3_bucket: String,
    /// `S3Prefix`.
    pub s3_prefix: Option<String>,
}

/// ExportImage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ExportImageRequest {
    /// `ImageId`.
    pub image_id: String,
    /// `DiskImageFormat`: VMDK, RAW, VHD (and VHDX, QCOW2, OVA beyond the EC2 set).
    pub disk_image_format: String,
    /// `S3ExportLocation`.
    pub s3_export_location: ExportLocation,
    /// `Description`.
    pub description: Option<String>,
    /// `RoleName`.
    pub role_name: Option<String>,
}

/// Longest description accepted (EC2 allows 255 characters).
pub const MAX_DESCRIPTION: usize = 255;
/// Most disks in one ImportImage, counting each disk of an OVA: so also the most snapshots
/// one task stores (a retry derives and discards that many).
pub const MAX_DISKS: usize = 16;

fn invalid(message: impl Into<String>) -> EngineError {
    EngineError::Request {
        code: "InvalidParameterValue",
        message: message.into(),
    }
}

/// Checks one of a fixed set of values, case-insensitively; returns the canonical spelling.
pub fn one_of(
    field: &str,
    value: &str,
    allowed: &[&'static str],
) -> Result<&'static str, EngineError> {
    allowed
        .iter()
        .find(|a| a.eq_ignore_ascii_case(value))
        .copied()
        .ok_or_else(|| {
            invalid(format!(
                "{field} must be one of {}; got {:?}",
                allowed.join(", "),
                shown(value)
            ))
        })
}

/// A caller's value, shortened and without control characters, for an error message.
#[must_use]
pub fn shown(v: &str) -> String {
    let s: String = v.chars().filter(|c| !c.is_control()).take(64).collect();
    if v.chars().count() > 64 { s + "…" } else { s }
}

/// Checks a free-form description.
pub fn check_description(field: &str, d: Option<&str>) -> Result<(), EngineError> {
    if let Some(d) = d
        && d.chars().count() > MAX_DESCRIPTION
    {
        return Err(invalid(format!(
            "{field} is {} characters long; at most {MAX_DESCRIPTION} are allowed",
            d.chars().count()
        )));
    }
    Ok(())
}

/// Checks an S3 bucket name (3–63 lowercase letters, digits, dots and hyphens, starting and
/// ending with a letter or digit, not shaped like an IP address).
pub fn check_bucket(field: &str, b: &str) -> Result<(), EngineError> {
    let ok = (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        && b.bytes().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && b.bytes().last().is_some_and(|c| c.is_ascii_alphanumeric())
        && !b.contains("..")
        && b.parse::<std::net::Ipv4Addr>().is_err();
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "{field} {:?} is not a valid bucket name (3 to 63 lowercase letters, digits, dots and hyphens)",
            shown(b)
        )))
    }
}

/// Checks an object key: 1–1024 bytes, relative, no empty, `.` or `..` segments, no control
/// characters.
pub fn check_key(field: &str, k: &str, allow_empty: bool) -> Result<(), EngineError> {
    if k.is_empty() && allow_empty {
        return Ok(());
    }
    let segments_ok = k
        .trim_end_matches('/')
        .split('/')
        .all(|s| !s.is_empty() && s != "." && s != "..");
    if k.is_empty()
        || k.len() > 1024
        || k.starts_with('/')
        || !segments_ok
        || k.chars().any(char::is_control)
        || k.contains('\\')
    {
        return Err(invalid(format!(
            "{field} {:?} is not a valid object key (relative, at most 1024 bytes, no empty, '.' or '..' parts)",
            shown(k)
        )));
    }
    Ok(())
}

/// Input formats and the `diskfmt` format each names.
pub fn input_format(field: &str, f: &str) -> Result<diskfmt::Format, EngineError> {
    let canon = one_of(
        field,
        f,
        &["OVA", "VMDK", "VHD", "VHDX", "RAW", "QCOW2", "VDI"],
    )?;
    Ok(match canon {
        "OVA" => diskfmt::Format::Ova,
        "VMDK" => diskfmt::Format::Vmdk,
        "VHD" => diskfmt::Format::Vhd,
        "VHDX" => diskfmt::Format::Vhdx,
        "QCOW2" => diskfmt::Format::Qcow2,
        "VDI" => diskfmt::Format::Vdi,
        _ => diskfmt::Format::Raw,
    })
}

/// Export formats: (canonical name, file extension, writer).
pub fn output_format(
    f: &str,
) -> Result<(&'static str, &'static str, diskfmt::write::OutputFormat), EngineError> {
    use diskfmt::write::OutputFormat as O;
    let canon = one_of(
        "DiskImageFormat",
        f,
        &["VMDK", "RAW", "VHD", "VHDX", "QCOW2", "OVA"],
    )?;
    Ok(match canon {
        "VMDK" => ("VMDK", "vmdk", O::Vmdk),
        "VHD" => ("VHD", "vhd", O::Vhd),
        "VHDX" => ("VHDX", "vhdx", O::Vhdx),
        "QCOW2" => ("QCOW2", "qcow2", O::Qcow2),
        "OVA" => ("OVA", "ova", O::Ova),
        _ => ("RAW", "raw", O::Raw),
    })
}

/// Checks the optional enumerations of ImportImage.
pub fn check_image_options(r: &ImportImageRequest) -> Result<(), EngineError> {
    if let Some(a) = &r.architecture {
        one_of("Architecture", a, &["i386", "x86_64", "arm64"])?;
    }
    if let Some(p) = &r.platform {
        one_of("Platform", p, &["Windows", "Linux"])?;
    }
    if let Some(b) = &r.boot_mode {
        one_of("BootMode", b, &["legacy-bios", "uefi", "uefi-preferred"])?;
    }
    if let Some(l) = &r.license_type {
        one_of("LicenseType", l, &["AWS", "BYOL"])?;
    }
    check_description("Description", r.description.as_deref())
}

/// Checks `Encrypted` against `KmsKeyId` (as EC2 does: a key needs `Encrypted=true`).
pub fn check_encryption(
    encrypted: Option<bool>,
    kms_key_id: Option<&str>,
) -> Result<(), EngineError> {
    if kms_key_id.is_some() && encrypted != Some(true) {
        return Err(EngineError::Request {
            code: "InvalidParameterCombination",
            message: "KmsKeyId requires Encrypted=true; add --encrypted or leave out the key"
                .into(),
        });
    }
    Ok(())
}
