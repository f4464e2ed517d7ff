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
    /// `Format`: OVA, VMDK, VHD, VHDX, RAW (and QCOW2, VDI beyond the EC2 set): the formats
    /// of `diskfmt::registry` with an EC2 name.
    pub format: Option<String>,
    /// `Url`: `s3://bucket/key` or `https://…` (a presigned URL, say).
    pub url: Option<String>,
    /// `UserBucket`.
    pub user_bucket: Option<UserBucket>,
    /// `SnapshotId` (ImportImage): an image from a snapshot already stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    /// Bytes of the image file, found when the request was checked (set by the engine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_image_size: Option<u64>,
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
    /// `Hypervisor` (`xen`: the only value EC2 takes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hypervisor: Option<String>,
    /// `UsageOperation`: the billing code the image reports (`RunInstances…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_operation: Option<String>,
    /// `LicenseSpecifications.N.LicenseConfigurationArn`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub license_specifications: Vec<String>,
    /// Tags for the image (`TagSpecification` with resource type `image`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_tags: Vec<catalog::Tag>,
    /// Tags for its snapshots (`TagSpecification` with resource type `snapshot`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshot_tags: Vec<catalog::Tag>,
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
    /// Tags for the snapshot (`TagSpecification` with resource type `snapshot`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshot_tags: Vec<catalog::Tag>,
}

/// CopyImage: the image and its snapshots copied, re-encrypted under the key asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CopyImageRequest {
    /// `SourceImageId`.
    pub source_image_id: String,
    /// `SourceRegion` (this region: there is one).
    pub source_region: String,
    /// `Name` of the copy.
    pub name: String,
    /// `Description` of the copy.
    pub description: Option<String>,
    /// `Encrypted`.
    pub encrypted: Option<bool>,
    /// `KmsKeyId`.
    pub kms_key_id: Option<String>,
    /// `CopyImageTags`: the source's tags go to the copy.
    pub copy_image_tags: bool,
    /// Tags for the copy (`TagSpecification` with resource type `image`).
    #[serde(default)]
    pub image_tags: Vec<catalog::Tag>,
    /// The copy's id (chosen when the request is made, as EC2 answers it at once).
    #[serde(default)]
    pub image_id: String,
    /// Its snapshots' ids, one per volume of the source.
    #[serde(default)]
    pub snapshot_ids: Vec<String>,
}

/// CopySnapshot: the snapshot copied, re-encrypted under the key asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CopySnapshotRequest {
    /// `SourceSnapshotId`.
    pub source_snapshot_id: String,
    /// `SourceRegion`.
    pub source_region: String,
    /// `Description` of the copy.
    pub description: Option<String>,
    /// `Encrypted`.
    pub encrypted: Option<bool>,
    /// `KmsKeyId`.
    pub kms_key_id: Option<String>,
    /// Tags for the copy.
    #[serde(default)]
    pub tags: Vec<catalog::Tag>,
    /// The copy's id (chosen when the request is made).
    #[serde(default)]
    pub snapshot_id: String,
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
    /// `DiskImageFormat`: VMDK, RAW, VHD (and VHDX, QCOW2, OVA beyond the EC2 set): the
    /// formats of `diskfmt::registry` vmie writes.
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
        .ok_or_else(|| not_one_of(field, value, allowed))
}

/// The refusal of a value outside an enumeration.
fn not_one_of(field: &str, value: &str, allowed: &[&str]) -> EngineError {
    invalid(format!(
        "{field} must be one of {}; got {:?}",
        allowed.join(", "),
        shown(value)
    ))
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

/// The `diskfmt` format an import's `Format` names (`DiskContainer.N.Format`): any format of
/// the registry that has an EC2 name, in any case.
pub fn input_format(field: &str, f: &str) -> Result<diskfmt::Format, EngineError> {
    diskfmt::Format::from_ec2_name(f).ok_or_else(|| {
        let names: Vec<&str> = diskfmt::registry::importable()
            .filter_map(|e| e.ec2_name)
            .collect();
        not_one_of(field, f, &names)
    })
}

/// An export's `DiskImageFormat`: (canonical name, file extension, format); any format of the
/// registry that vmie writes.
pub fn output_format(
    f: &str,
) -> Result<(&'static str, &'static str, diskfmt::Format), EngineError> {
    diskfmt::registry::writable()
        .find_map(|e| {
            e.ec2_name
                .filter(|n| n.eq_ignore_ascii_case(f))
                .map(|n| (n, e.extension, e.format))
        })
        .ok_or_else(|| {
            let names: Vec<&str> = diskfmt::registry::writable()
                .filter_map(|e| e.ec2_name)
                .collect();
            not_one_of("DiskImageFormat", f, &names)
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
    if let Some(h) = &r.hypervisor {
        one_of("Hypervisor", h, &["xen"])?;
    }
    if let Some(u) = &r.usage_operation {
        check_usage_operation(u)?;
    }
    for arn in &r.license_specifications {
        if !arn.starts_with("arn:aws:license-manager:") || arn.len() > 2048 {
            return Err(invalid(format!(
                "LicenseConfigurationArn must be a License Manager configuration ARN (arn:aws:license-manager:…); got {:?}",
                shown(arn)
            )));
        }
    }
    check_description("Description", r.description.as_deref())
}

/// Checks a `UsageOperation`: `RunInstances` or `RunInstances:` and four digits, as EC2's
/// billing codes are spelled.
pub fn check_usage_operation(u: &str) -> Result<(), EngineError> {
    let ok = u == "RunInstances"
        || u.strip_prefix("RunInstances:")
            .is_some_and(|c| c.len() == 4 && c.bytes().all(|b| b.is_ascii_digit()));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "UsageOperation must be RunInstances or RunInstances:NNNN (e.g. RunInstances:0002 for Windows); got {:?}",
            shown(u)
        )))
    }
}

/// The billing code of an image of `platform` when the request gives none.
#[must_use]
pub fn default_usage_operation(platform: &str) -> &'static str {
    if platform.eq_ignore_ascii_case("windows") {
        "RunInstances:0002"
    } else {
        "RunInstances"
    }
}

/// The device name of disk `i` (0-based) of an image: the boot disk `/dev/sda1`, then
/// `/dev/sdb`, `/dev/sdc`, …
#[must_use]
pub fn device_name(i: usize) -> String {
    const LETTERS: &[u8] = b"bcdefghijklmnopqrstuvwxyz";
    match i {
        0 => "/dev/sda1".into(),
        n => format!(
            "/dev/sd{}",
            char::from(LETTERS.get(n - 1).copied().unwrap_or(b'z'))
        ),
    }
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
