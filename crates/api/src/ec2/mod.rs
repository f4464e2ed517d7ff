//! The EC2 actions vmie serves, one file each (related ones share a file), and what they
//! share: tags, filters, pages, and the XML of tasks. Every action is declared in
//! [`crate::action`]'s table; nothing here authorizes anything.

pub mod attributes;
pub mod boot_evidence;
pub mod cancel_import_task;
pub mod compliance;
pub mod copy;
pub mod delete_snapshot;
pub mod deregister_image;
pub mod describe_images;
pub mod describe_snapshots;
pub mod describe_tags;
pub mod describe_tasks;
pub mod ebs_defaults;
pub mod export_image;
pub mod image_state;
pub mod import_image;
pub mod import_snapshot;
pub mod regions;
pub mod tags;
pub mod unsupported;

use std::collections::HashMap;

use catalog::{Tag, Task};
use engine::{ResourceKind, Submit, TaskDetail};

use crate::error::ApiError;
use crate::handler::Env;
use crate::identity::Principal;
use crate::query::Params;
use crate::spec::{Field, Kind, field, plain};
use crate::xml::Xml;

/// The service role imports and exports act as, unless `RoleName` names another.
pub const DEFAULT_ROLE: &str = "vmimport";

/// The `TagSpecification.N` parameters of an action that tags what it creates.
pub(crate) const TAG_SPECS: [Field; 3] = [
    plain("TagSpecification.N.ResourceType"),
    field("TagSpecification.N.Tag.N.Key", Kind::TagKey),
    field("TagSpecification.N.Tag.N.Value", Kind::Free),
];

/// The tags of `TagSpecification.N`, by the resource type each is for; a resource type not
/// in `resource_types` is refused.
pub(crate) fn tag_specs(
    p: &Params,
    resource_types: &[&str],
) -> Result<HashMap<String, Vec<Tag>>, ApiError> {
    let mut out: HashMap<String, Vec<Tag>> = HashMap::new();
    for spec in p.list("TagSpecification")? {
        let rt = spec.get("ResourceType").unwrap_or(resource_types[0]);
        if !resource_types.contains(&rt) {
            return Err(ApiError::client(
                "InvalidParameterValue",
                format!(
                    "TagSpecification ResourceType {} is not valid here; use {}",
                    engine::request::shown(rt),
                    resource_types.join(" or ")
                ),
            ));
        }
        out.entry(rt.to_string())
            .or_default()
            .extend(plain_tags(&spec.list("Tag")?)?);
    }
    Ok(out)
}

/// The tags in `specs` for `resource_type`.
pub(crate) fn tags_for(specs: &HashMap<String, Vec<Tag>>, resource_type: &str) -> Vec<Tag> {
    specs.get(resource_type).cloned().unwrap_or_default()
}

/// `Tag.N.Key` / `Tag.N.Value` items, checked as EC2 checks them.
pub(crate) fn plain_tags(items: &[Params]) -> Result<Vec<Tag>, ApiError> {
    let mut out = Vec::new();
    for t in items {
        let key = t.required("Key")?;
        if key.is_empty() || key.len() > 128 || key.starts_with("aws:") {
            return Err(ApiError::client(
                "InvalidParameterValue",
                "tag keys are 1 to 128 characters and may not start with aws:",
            ));
        }
        let value = t.get("Value").unwrap_or("");
        if value.len() > 256 {
            return Err(ApiError::client(
                "InvalidParameterValue",
                "tag values are at most 256 characters",
            ));
        }
        out.push(Tag {
            key: key.into(),
            value: value.into(),
        });
    }
    if out.len() > engine::resources::MAX_TAGS {
        return Err(ApiError::client(
            "TagLimitExceeded",
            "at most 50 tags per resource",
        ));
    }
    Ok(out)
}

/// The submission of a task: the caller's account, its idempotency token, its tags, and
/// the id the task will have (chosen now, so that the ARN authorized is the task's).
pub(crate) fn submit(
    who: &Principal,
    id: String,
    client_token: Option<String>,
    tags: Vec<Tag>,
) -> Submit {
    Submit {
        account: who.account.clone(),
        task_id: Some(id),
        client_token,
        tags,
    }
}

/// The ARN of the resource `id` of `kind` for `who` in our region.
pub(crate) fn arn(env: &Env, who: &Principal, kind: ResourceKind, id: &str) -> String {
    kind.arn(&env.region, &who.account, id)
}

/// The ARN of a bucket object.
pub(crate) fn s3_arn(bucket: &str, key: &str) -> String {
    format!("arn:aws:s3:::{bucket}/{key}")
}

/// The `RoleName` of a request, or the default service role.
pub(crate) fn role_name(p: &Params) -> String {
    p.get("RoleName").unwrap_or(DEFAULT_ROLE).to_string()
}

/// A page of `items` after `NextToken`, at most `MaxResults` (within `range`).
pub(crate) fn page<T: Clone>(
    p: &Params,
    items: &[T],
    range: std::ops::RangeInclusive<i64>,
) -> Result<(Vec<T>, Option<String>), ApiError> {
    let max = p.int("MaxResults", range.clone())?.unwrap_or(*range.end());
    let start = match p.get("NextToken") {
        None => 0,
        Some(t) => t
            .strip_prefix("vmie-page-")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n <= items.len())
            .ok_or_else(|| {
                ApiError::client(
                    "InvalidNextToken",
                    "the NextToken is not one this service gave",
                )
            })?,
    };
    let end = (start + usize::try_from(max).unwrap_or(1000)).min(items.len());
    let next = (end < items.len()).then(|| format!("vmie-page-{end}"));
    Ok((items[start..end].to_vec(), next))
}

/// A filter: its name and the values any of which must match.
pub(crate) type Filter = (String, Vec<String>);

/// Filters from the list `list` (`Filter` or, for the import tasks, `Filters`):
/// `list.N.Name` and `list.N.Value.M`; a name outside `known` (besides `tag:KEY` and
/// `tag-key`) is refused.
pub(crate) fn filters(p: &Params, list: &str, known: &[&str]) -> Result<Vec<Filter>, ApiError> {
    let mut out = Vec::new();
    for f in p.list(list)? {
        let name = f.required("Name")?.to_string();
        if !known.contains(&name.as_str()) && !name.starts_with("tag:") && name != "tag-key" {
            return Err(ApiError::client(
                "InvalidParameterValue",
                format!(
                    "the filter {} is not supported here; use {}, tag:KEY or tag-key",
                    engine::request::shown(&name),
                    known.join(", ")
                ),
            ));
        }
        out.push((name, f.strings("Value")?));
    }
    Ok(out)
}

/// Whether a resource with `fields` (its values by filter name) and `tags` matches every
/// filter (`*` and `?` wildcards in the filter's values).
pub(crate) fn matches(fs: &[Filter], fields: &HashMap<&str, String>, tags: &[Tag]) -> bool {
    fs.iter().all(|(name, values)| {
        let have: Vec<&str> = if let Some(k) = name.strip_prefix("tag:") {
            tags.iter()
                .filter(|t| t.key == k)
                .map(|t| t.value.as_str())
                .collect()
        } else if name == "tag-key" {
            tags.iter().map(|t| t.key.as_str()).collect()
        } else {
            fields
                .get(name.as_str())
                .map(String::as_str)
                .into_iter()
                .collect()
        };
        have.iter().any(|h| {
            values
                .iter()
                .any(|v| kms::policy::wildcard_match(v, h, false))
        })
    })
}

fn disk_xml(x: &mut Xml, d: &engine::DiskDetail, t: &Task) {
    x.opt("description", d.description.as_deref())
        .opt("deviceName", d.device_name.as_deref())
        .opt(
            "diskImageSize",
            d.disk_image_size.map(|s| s.to_string()).as_deref(),
        )
        .opt("format", d.format.as_deref())
        .opt("snapshotId", d.snapshot_id.as_deref())
        .opt("url", d.url.as_deref());
    if t.ended() {
        x.leaf("status", &t.status);
    } else {
        x.leaf("progress", &t.progress.to_string())
            .leaf("status", &t.status);
    }
    x.leaf("statusMessage", &t.status_message);
    if let Some(b) = &d.user_bucket {
        x.open("userBucket")
            .leaf("s3Bucket", &b.s3_bucket)
            .leaf("s3Key", &b.s3_key)
            .close("userBucket");
    }
}

/// An import-image task: `ImportImageTask` (Describe), or with `result` the body of
/// ImportImage's answer (`ImportImageResult`, which has no `bootMode`).
pub(crate) fn image_task_xml(x: &mut Xml, t: &Task, result: bool) {
    let d = TaskDetail::of(t);
    x.leaf("importTaskId", &t.id)
        .opt("architecture", d.architecture.as_deref())
        .opt("bootMode", d.boot_mode.as_deref().filter(|_| !result))
        .opt("description", d.description.as_deref())
        .opt("hypervisor", d.hypervisor.as_deref())
        .opt("usageOperation", d.usage_operation.as_deref())
        .opt("encrypted", d.encrypted.map(|e| e.to_string()).as_deref())
        .opt(
            "imageId",
            d.image_id
                .as_deref()
                .filter(|_| t.status == catalog::status::COMPLETED),
        )
        .opt("kmsKeyId", d.kms_key_id.as_deref())
        .opt("licenseType", d.license_type.as_deref())
        .opt("platform", d.platform.as_deref());
    if !t.ended() {
        x.leaf("progress", &t.progress.to_string());
    }
    x.leaf("status", &t.status)
        .leaf("statusMessage", &t.status_message);
    x.open("snapshotDetailSet");
    for disk in &d.disks {
        x.open("item");
        disk_xml(x, disk, t);
        x.close("item");
    }
    x.close("snapshotDetailSet");
    if !d.license_specifications.is_empty() {
        x.open("licenseSpecifications");
        for arn in &d.license_specifications {
            x.open("item")
                .leaf("licenseConfigurationArn", arn)
                .close("item");
        }
        x.close("licenseSpecifications");
    }
    x.tags(&t.tags);
}

/// An import-snapshot task.
pub(crate) fn snapshot_task_xml(x: &mut Xml, t: &Task) {
    let d = TaskDetail::of(t);
    let desc = serde_json::from_str::<engine::ImportSnapshotRequest>(&t.request)
        .ok()
        .and_then(|r| r.description);
    x.leaf("importTaskId", &t.id)
        .opt("description", desc.as_deref());
    x.open("snapshotTaskDetail");
    if let Some(disk) = d.disks.first() {
        disk_xml(x, disk, t);
    } else {
        x.leaf("status", &t.status)
            .leaf("statusMessage", &t.status_message);
    }
    x.opt("encrypted", d.encrypted.map(|e| e.to_string()).as_deref())
        .opt("kmsKeyId", d.kms_key_id.as_deref());
    x.close("snapshotTaskDetail");
    x.tags(&t.tags);
}

/// An export-image task: `ExportImageTask` (Describe), or with `result` the body of
/// ExportImage's answer (`ExportImageResult`, which alone carries `diskImageFormat` and
/// `roleName`).
pub(crate) fn export_task_xml(x: &mut Xml, t: &Task, result: bool) {
    let r = serde_json::from_str::<engine::ExportImageRequest>(&t.request).unwrap_or_default();
    x.leaf("exportImageTaskId", &t.id)
        .opt("description", r.description.as_deref())
        .leaf("imageId", &r.image_id);
    if result {
        x.leaf("diskImageFormat", &r.disk_image_format.to_ascii_uppercase());
    }
    if !t.ended() {
        x.leaf("progress", &t.progress.to_string());
    }
    x.open("s3ExportLocation")
        .leaf("s3Bucket", &r.s3_export_location.s3_bucket)
        .opt("s3Prefix", r.s3_export_location.s3_prefix.as_deref())
        .close("s3ExportLocation");
    if result {
        x.opt("roleName", r.role_name.as_deref());
    }
    x.leaf("status", &t.status)
        .leaf("statusMessage", &t.status_message);
    x.tags(&t.tags);
}

/// The answer of an action that says only `true`.
pub(crate) fn returns_true(action: &str, request_id: &str) -> String {
    let mut x = Xml::response(action, request_id);
    x.leaf("return", "true");
    x.finish(action)
}
