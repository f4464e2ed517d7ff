//! The EC2 actions vmie serves: parameters in (as the EC2 model in botocore names them),
//! authorization by the caller's policies (and, for bucket access, by the service role's),
//! the task engine and catalog underneath, XML out.

use std::collections::HashMap;
use std::net::IpAddr;

use catalog::iam::PrincipalKind;
use catalog::{CatalogError, Tag, Task, TaskKind, status};
use engine::{
    DiskContainer, Engine, EngineError, ExportImageRequest, ExportLocation, ImportImageRequest,
    ImportSnapshotRequest, Submit, TaskDetail, UserBucket,
};

use crate::iam::{Context, Decision, evaluate};
use crate::identity::{Identity, Principal};
use crate::query::{ParamError, Params};
use crate::xml::Xml;

/// The service role imports and exports act as, unless `RoleName` names another.
pub const DEFAULT_ROLE: &str = "vmimport";

/// An error answered with the EC2 error document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// EC2 error code.
    pub code: String,
    /// Message.
    pub message: String,
}

impl ApiError {
    /// A 400 with `code`.
    #[must_use]
    pub fn client(code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status: 400,
            code: code.into(),
            message: message.into(),
        }
    }
}

impl From<ParamError> for ApiError {
    fn from(e: ParamError) -> Self {
        ApiError::client(e.code, e.message)
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        if e.is_client() {
            ApiError::client(e.code(), e.to_string())
        } else {
            tracing::error!(error = %e, "internal error");
            ApiError {
                status: 500,
                code: "InternalError".into(),
                message: "an internal error occurred; the request may be retried".into(),
            }
        }
    }
}

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        EngineError::from(e).into()
    }
}

/// Where a request came from, for policy conditions.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The client's address.
    pub source_ip: IpAddr,
    /// Whether it arrived over TLS.
    pub secure: bool,
    /// Whether the credentials were issued after multi-factor authentication.
    pub mfa: bool,
}

/// The action layer.
#[derive(Debug, Clone)]
pub struct Ec2 {
    /// The task engine.
    pub engine: Engine,
    /// Identities.
    pub identity: Identity,
    /// Our region.
    pub region: String,
    /// What to do with sensitive data in descriptions and tags.
    pub guard: crate::guard::Policy,
    /// The activity log (`None`: not kept, which `vmie compliance` reports).
    pub audit: Option<std::sync::Arc<crate::audit::Audit>>,
}

/// Every action served.
pub const ACTIONS: &[&str] = &[
    "ImportImage",
    "ImportSnapshot",
    "DescribeImportImageTasks",
    "DescribeImportSnapshotTasks",
    "CancelImportTask",
    "ExportImage",
    "DescribeExportImageTasks",
    "DescribeImages",
    "DescribeSnapshots",
    "DeregisterImage",
    "DeleteSnapshot",
    "CreateTags",
    "DeleteTags",
    "GetEbsEncryptionByDefault",
    "EnableEbsEncryptionByDefault",
    "DisableEbsEncryptionByDefault",
    "GetEbsDefaultKmsKeyId",
    "ModifyEbsDefaultKmsKeyId",
    "ResetEbsDefaultKmsKeyId",
];

fn tags_of(p: &Params, resource_type: &[&str]) -> Result<Vec<Tag>, ApiError> {
    let mut out = Vec::new();
    for spec in p.list("TagSpecification")? {
        if let Some(rt) = spec.get("ResourceType")
            && !resource_type.contains(&rt)
        {
            return Err(ApiError::client(
                "InvalidParameterValue",
                format!(
                    "TagSpecification ResourceType {rt:?} is not valid here; use {}",
                    resource_type.join(" or ")
                ),
            ));
        }
        out.extend(plain_tags(&spec.list("Tag")?)?);
    }
    Ok(out)
}

fn plain_tags(items: &[Params]) -> Result<Vec<Tag>, ApiError> {
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
    if out.len() > 50 {
        return Err(ApiError::client(
            "TagLimitExceeded",
            "at most 50 tags per resource",
        ));
    }
    Ok(out)
}

fn container(p: &Params) -> DiskContainer {
    let ub = p.member("UserBucket");
    DiskContainer {
        description: p.get("Description").map(str::to_string),
        device_name: p.get("DeviceName").map(str::to_string),
        format: p.get("Format").map(str::to_string),
        url: p.get("Url").map(str::to_string),
        user_bucket: p.has("UserBucket").then(|| UserBucket {
            s3_bucket: ub.get("S3Bucket").unwrap_or_default().into(),
            s3_key: ub.get("S3Key").unwrap_or_default().into(),
        }),
    }
}

/// A page of `items` after `NextToken`, at most `MaxResults`.
fn page<T: Clone>(
    p: &Params,
    items: &[T],
    max_default: i64,
) -> Result<(Vec<T>, Option<String>), ApiError> {
    let max = p.int("MaxResults", 1..=1000)?.unwrap_or(max_default);
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

/// Filters (`Filter.N.Name`, `Filter.N.Value.M`): every filter must match one of its values
/// (`*` and `?` wildcards); `fields` gives a resource's values by filter name (`tag:KEY`
/// and `tag-key` are derived from its tags).
fn filters(p: &Params, known: &[&str]) -> Result<Vec<(String, Vec<String>)>, ApiError> {
    let mut out = Vec::new();
    for f in p.list("Filter")? {
        let name = f.required("Name")?.to_string();
        if !known.contains(&name.as_str()) && !name.starts_with("tag:") && name != "tag-key" {
            return Err(ApiError::client(
                "InvalidParameterValue",
                format!(
                    "the filter {name:?} is not supported here; use {}",
                    known.join(", ")
                ),
            ));
        }
        out.push((name, f.strings("Value")?));
    }
    Ok(out)
}

fn matches(fs: &[(String, Vec<String>)], fields: &HashMap<&str, String>, tags: &[Tag]) -> bool {
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

fn image_task_xml(x: &mut Xml, t: &Task) {
    let d = TaskDetail::of(t);
    x.leaf("importTaskId", &t.id)
        .opt("architecture", d.architecture.as_deref())
        .opt("bootMode", d.boot_mode.as_deref())
        .opt("encrypted", d.encrypted.map(|e| e.to_string()).as_deref())
        .opt(
            "imageId",
            d.image_id
                .as_deref()
                .filter(|_| t.status == status::COMPLETED),
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
    x.tags(&t.tags);
}

fn snapshot_task_xml(x: &mut Xml, t: &Task) {
    let d = TaskDetail::of(t);
    let desc = serde_json::from_str::<ImportSnapshotRequest>(&t.request)
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

fn export_task_xml(x: &mut Xml, t: &Task) {
    let r = serde_json::from_str::<ExportImageRequest>(&t.request).unwrap_or_default();
    x.leaf("exportImageTaskId", &t.id)
        .opt("description", r.description.as_deref())
        .leaf("imageId", &r.image_id)
        .leaf("diskImageFormat", &r.disk_image_format.to_ascii_uppercase());
    if !t.ended() {
        x.leaf("progress", &t.progress.to_string());
    }
    x.open("s3ExportLocation")
        .leaf("s3Bucket", &r.s3_export_location.s3_bucket)
        .opt("s3Prefix", r.s3_export_location.s3_prefix.as_deref())
        .close("s3ExportLocation");
    x.opt("roleName", r.role_name.as_deref())
        .leaf("status", &t.status)
        .leaf("statusMessage", &t.status_message);
    x.tags(&t.tags);
}

impl Ec2 {
    /// The policy context of a request.
    /// The policy context of a request for `action` (`service:Action`) on `resource`.
    pub(crate) fn context(
        &self,
        who: &Principal,
        origin: &Origin,
        action: &str,
        resource: &str,
    ) -> Context {
        let now = catalog::now_ms();
        let mut c = Context::new(action, resource)
            .with("aws:SourceIp", &[&origin.source_ip.to_string()])
            .with(
                "aws:SecureTransport",
                &[if origin.secure { "true" } else { "false" }],
            )
            .with("aws:CurrentTime", &[&crate::sigv4::format_iso8601(now)])
            .with("aws:EpochTime", &[&(now / 1000).to_string()])
            .with("aws:username", &[&who.user])
            .with("aws:PrincipalArn", &[&who.arn])
            .with("aws:PrincipalAccount", &[&who.account])
            .with("aws:RequestedRegion", &[&self.region]);
        if origin.mfa {
            c = c.with("aws:MultiFactorAuthPresent", &["true"]);
        }
        c
    }

    pub(crate) fn authorize(&self, who: &Principal, ctx: &Context) -> Result<(), ApiError> {
        match evaluate(&who.policies, ctx) {
            Decision::Allow => Ok(()),
            d => Err(ApiError {
                status: 403,
                code: "UnauthorizedOperation".into(),
                message: format!(
                    "You are not authorized to perform this operation. User: {} is not authorized to perform: {} on resource: {} {}",
                    who.arn,
                    ctx.action,
                    ctx.resource,
                    if d == Decision::ExplicitDeny {
                        "with an explicit deny in an identity-based policy"
                    } else {
                        "because no identity-based policy allows the action"
                    }
                ),
            }),
        }
    }

    /// Checks that the service role may do `s3_action` on `arn`.
    async fn role_may(
        &self,
        account: &str,
        role: &str,
        s3_action: &str,
        arn: &str,
    ) -> Result<(), ApiError> {
        let cat = self.identity.catalog();
        if !cat
            .principal_exists(account, PrincipalKind::Role, role)
            .await?
        {
            return Err(ApiError::client(
                "InvalidParameter",
                format!(
                    "the service role {role} does not exist; create it (vmie admin role create {role}) and attach a policy that allows {s3_action}"
                ),
            ));
        }
        let policies = self
            .identity
            .policies(account, PrincipalKind::Role, role)
            .await
            .map_err(|e| ApiError::client("InvalidParameter", e.to_string()))?;
        if evaluate(&policies, &Context::new(s3_action, arn)) == Decision::Allow {
            Ok(())
        } else {
            Err(ApiError::client(
                "InvalidParameter",
                format!(
                    "the service role {role} does not have permission to {s3_action} on {arn}; attach a policy to the role that allows it"
                ),
            ))
        }
    }

    async fn containers_readable(
        &self,
        account: &str,
        role: &str,
        cs: &[DiskContainer],
    ) -> Result<(), ApiError> {
        for c in cs {
            let b = match (&c.user_bucket, c.url.as_deref()) {
                (Some(b), _) => Some((b.s3_bucket.clone(), b.s3_key.clone())),
                (None, Some(u)) if u.starts_with("s3://") => u
                    .strip_prefix("s3://")
                    .and_then(|r| r.split_once('/'))
                    .map(|(b, k)| (b.to_string(), k.to_string())),
                _ => None,
            };
            if let Some((bucket, key)) = b {
                self.role_may(
                    account,
                    role,
                    "s3:GetObject",
                    &format!("arn:aws:s3:::{bucket}/{key}"),
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Handles one authenticated request; returns the XML body.
    pub async fn handle(
        &self,
        who: &Principal,
        origin: &Origin,
        p: &Params,
        request_id: &str,
    ) -> Result<String, ApiError> {
        let action = p.required("Action")?;
        if !ACTIONS.contains(&action) {
            return Err(ApiError::client(
                "InvalidAction",
                format!(
                    "the action {} is not valid for this web service",
                    engine::request::shown(action)
                ),
            ));
        }
        if let Some(v) = p.get("Version")
            && v != "2016-11-15"
        {
            return Err(ApiError::client(
                "InvalidParameterValue",
                format!(
                    "API version {} is not supported; use 2016-11-15",
                    engine::request::shown(v)
                ),
            ));
        }
        let region = &self.region;
        let resource = |kind: &str, id: &str| format!("arn:aws:ec2:{region}::{kind}/{id}");
        let target = match action {
            "DeregisterImage" => resource("image", p.required("ImageId")?),
            "DeleteSnapshot" => resource("snapshot", p.required("SnapshotId")?),
            "ExportImage" => resource("image", p.required("ImageId")?),
            _ => "*".to_string(),
        };
        let mut ctx = self.context(who, origin, &format!("ec2:{action}"), &target);
        // The resource's tags, for `aws:ResourceTag/…` conditions.
        let cat = self.engine.catalog();
        let resource_tags = match action {
            "DeregisterImage" | "ExportImage" => cat
                .image(&who.account, p.required("ImageId")?)
                .await
                .map(|i| i.tags)
                .unwrap_or_default(),
            "DeleteSnapshot" => cat
                .snapshot(&who.account, p.required("SnapshotId")?)
                .await
                .map(|s| s.tags)
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        for t in &resource_tags {
            ctx = ctx.with(&format!("aws:ResourceTag/{}", t.key), &[&t.value]);
        }
        if matches!(action, "ImportImage" | "ImportSnapshot") {
            let enc = p.bool("Encrypted")?.unwrap_or(false);
            ctx = ctx.with("ec2:Encrypted", &[if enc { "true" } else { "false" }]);
        }
        self.authorize(who, &ctx)?;
        for name in p.names().filter(|n| crate::guard::free_form(n)) {
            let found = crate::guard::scan(p.get(name).unwrap_or_default());
            if let Some(f) = found.first() {
                if self.guard == crate::guard::Policy::Reject {
                    return Err(ApiError::client(
                        "InvalidParameterValue",
                        format!(
                            "{name} appears to contain {}; this deployment refuses sensitive data in descriptions and tags",
                            f.describe()
                        ),
                    ));
                }
                // The field is named, the value never is.
                tracing::warn!(field = %name, found = ?found, user = %who.arn, "sensitive data in a free-form field");
            }
        }
        if p.bool("DryRun")? == Some(true) {
            return Err(ApiError {
                status: 412,
                code: "DryRunOperation".into(),
                message: "Request would have succeeded, but DryRun flag is set.".into(),
            });
        }
        let a = &who.account;
        let mut x = Xml::response(action, request_id);
        let sub = |kinds: &[&str]| -> Result<Submit, ApiError> {
            Ok(Submit {
                account: a.clone(),
                client_token: p.get("ClientToken").map(str::to_string),
                tags: tags_of(p, kinds)?,
            })
        };
        match action {
            "ImportImage" => {
                let req = ImportImageRequest {
                    architecture: p.get("Architecture").map(str::to_string),
                    boot_mode: p.get("BootMode").map(str::to_string),
                    description: p.get("Description").map(str::to_string),
                    disk_containers: p.list("DiskContainer")?.iter().map(container).collect(),
                    encrypted: p.bool("Encrypted")?,
                    kms_key_id: p.get("KmsKeyId").map(str::to_string),
                    license_type: p.get("LicenseType").map(str::to_string),
                    platform: p.get("Platform").map(str::to_string),
                    role_name: p.get("RoleName").map(str::to_string),
                };
                let role = req.role_name.as_deref().unwrap_or(DEFAULT_ROLE);
                self.containers_readable(a, role, &req.disk_containers)
                    .await?;
                let t = self
                    .engine
                    .import_image(sub(&["import-image-task"])?, req)
                    .await?;
                image_task_xml(&mut x, &t);
            }
            "ImportSnapshot" => {
                let req = ImportSnapshotRequest {
                    description: p.get("Description").map(str::to_string),
                    disk_container: container(&p.member("DiskContainer")),
                    encrypted: p.bool("Encrypted")?,
                    kms_key_id: p.get("KmsKeyId").map(str::to_string),
                    role_name: p.get("RoleName").map(str::to_string),
                };
                let role = req.role_name.as_deref().unwrap_or(DEFAULT_ROLE);
                self.containers_readable(a, role, std::slice::from_ref(&req.disk_container))
                    .await?;
                let t = self
                    .engine
                    .import_snapshot(sub(&["import-snapshot-task"])?, req)
                    .await?;
                snapshot_task_xml(&mut x, &t);
            }
            "ExportImage" => {
                let loc = p.member("S3ExportLocation");
                let req = ExportImageRequest {
                    image_id: p.required("ImageId")?.into(),
                    disk_image_format: p.required("DiskImageFormat")?.into(),
                    s3_export_location: ExportLocation {
                        s3_bucket: loc.required("S3Bucket")?.into(),
                        s3_prefix: loc.get("S3Prefix").map(str::to_string),
                    },
                    description: p.get("Description").map(str::to_string),
                    role_name: p.get("RoleName").map(str::to_string),
                };
                let role = req.role_name.as_deref().unwrap_or(DEFAULT_ROLE);
                let l = &req.s3_export_location;
                self.role_may(
                    a,
                    role,
                    "s3:PutObject",
                    &format!(
                        "arn:aws:s3:::{}/{}",
                        l.s3_bucket,
                        l.s3_prefix.as_deref().unwrap_or("")
                    ),
                )
                .await?;
                let t = self
                    .engine
                    .export_image(sub(&["export-image-task"])?, req)
                    .await?;
                export_task_xml(&mut x, &t);
            }
            "DescribeImportImageTasks"
            | "DescribeImportSnapshotTasks"
            | "DescribeExportImageTasks" => {
                let (kind, ids_param, set) = match action {
                    "DescribeImportImageTasks" => {
                        (TaskKind::ImportImage, "ImportTaskId", "importImageTaskSet")
                    }
                    "DescribeImportSnapshotTasks" => (
                        TaskKind::ImportSnapshot,
                        "ImportTaskId",
                        "importSnapshotTaskSet",
                    ),
                    _ => (
                        TaskKind::ExportImage,
                        "ExportImageTaskId",
                        "exportImageTaskSet",
                    ),
                };
                let ids = p.strings(ids_param)?;
                let fs = filters(p, &["task-state", "status"])?;
                let all = self.engine.describe(a, kind, &ids).await?;
                let kept: Vec<Task> = all
                    .into_iter()
                    .filter(|t| {
                        let f: HashMap<&str, String> = [
                            ("task-state", t.status.clone()),
                            ("status", t.status.clone()),
                        ]
                        .into();
                        matches(&fs, &f, &t.tags)
                    })
                    .collect();
                let (items, next) = page(p, &kept, 1000)?;
                x.open(set);
                for t in &items {
                    x.open("item");
                    match kind {
                        TaskKind::ImportImage => image_task_xml(&mut x, t),
                        TaskKind::ImportSnapshot => snapshot_task_xml(&mut x, t),
                        TaskKind::ExportImage => export_task_xml(&mut x, t),
                    }
                    x.close("item");
                }
                x.close(set);
                x.opt("nextToken", next.as_deref());
            }
            "CancelImportTask" => {
                let id = p.required("ImportTaskId")?;
                let before = self
                    .engine
                    .catalog()
                    .task(a, id)
                    .await
                    .map_err(|e| match e {
                        CatalogError::NotFound(_) => ApiError::client(
                            "InvalidConversionTaskId.Malformed",
                            format!(
                                "the import task {} does not exist",
                                engine::request::shown(id)
                            ),
                        ),
                        e => e.into(),
                    })?;
                let t = self.engine.cancel(a, id).await?;
                x.leaf("importTaskId", &t.id)
                    .leaf("previousState", &before.status)
                    .leaf("state", &t.status);
            }
            "DescribeImages" => {
                let ids = p.strings("ImageId")?;
                let fs = filters(
                    p,
                    &[
                        "image-id",
                        "name",
                        "state",
                        "architecture",
                        "platform",
                        "description",
                    ],
                )?;
                let mut imgs = self.engine.catalog().images(a).await?;
                for id in &ids {
                    if !imgs.iter().any(|i| &i.id == id) {
                        return Err(ApiError::client(
                            "InvalidAMIID.NotFound",
                            format!("The image id '[{id}]' does not exist"),
                        ));
                    }
                }
                imgs.retain(|i| {
                    let f: HashMap<&str, String> = [
                        ("image-id", i.id.clone()),
                        ("name", i.name.clone()),
                        ("state", i.state.clone()),
                        ("architecture", i.architecture.clone()),
                        ("platform", i.platform.to_ascii_lowercase()),
                        ("description", i.description.clone()),
                    ]
                    .into();
                    (ids.is_empty() || ids.contains(&i.id)) && matches(&fs, &f, &i.tags)
                });
                let (items, next) = page(p, &imgs, 1000)?;
                x.open("imagesSet");
                for i in &items {
                    x.open("item")
                        .leaf("imageId", &i.id)
                        .leaf("imageLocation", &format!("{a}/{}", i.name))
                        .leaf("imageState", &i.state)
                        .leaf("imageOwnerId", a)
                        .leaf("creationDate", &crate::sigv4::format_iso8601(i.created_ms))
                        .leaf("isPublic", "false")
                        .leaf("architecture", &i.architecture)
                        .leaf("imageType", "machine")
                        .opt("platform", (i.platform == "Windows").then_some("windows"))
                        .leaf(
                            "platformDetails",
                            if i.platform == "Windows" {
                                "Windows"
                            } else {
                                "Linux/UNIX"
                            },
                        )
                        .leaf("name", &i.name)
                        .leaf("description", &i.description)
                        .leaf("rootDeviceType", "ebs")
                        .opt(
                            "rootDeviceName",
                            i.block_devices.first().map(|b| b.device_name.as_str()),
                        )
                        .open("blockDeviceMapping");
                    for b in &i.block_devices {
                        x.open("item")
                            .leaf("deviceName", &b.device_name)
                            .open("ebs")
                            .leaf("snapshotId", &b.snapshot_id)
                            .leaf("volumeSize", &b.volume_size_gib.to_string())
                            .leaf("deleteOnTermination", "true")
                            .leaf("volumeType", "gp3")
                            .leaf("encrypted", &i.encrypted.to_string())
                            .opt("kmsKeyId", i.kms_key_id.as_deref())
                            .close("ebs")
                            .close("item");
                    }
                    x.close("blockDeviceMapping")
                        .leaf("virtualizationType", "hvm")
                        .leaf("hypervisor", "xen")
                        .opt("bootMode", i.boot_mode.as_deref())
                        .tags(&i.tags)
                        .close("item");
                }
                x.close("imagesSet");
                x.opt("nextToken", next.as_deref());
            }
            "DescribeSnapshots" => {
                let ids = p.strings("SnapshotId")?;
                let fs = filters(p, &["snapshot-id", "status", "description", "encrypted"])?;
                let mut snaps = self.engine.catalog().snapshots(a).await?;
                for id in &ids {
                    if !snaps.iter().any(|s| &s.id == id) {
                        return Err(ApiError::client(
                            "InvalidSnapshot.NotFound",
                            format!("The snapshot '{id}' does not exist."),
                        ));
                    }
                }
                snaps.retain(|s| {
                    let f: HashMap<&str, String> = [
                        ("snapshot-id", s.id.clone()),
                        ("status", s.state.clone()),
                        ("description", s.description.clone()),
                        ("encrypted", s.encrypted.to_string()),
                    ]
                    .into();
                    (ids.is_empty() || ids.contains(&s.id)) && matches(&fs, &f, &s.tags)
                });
                let (items, next) = page(p, &snaps, 1000)?;
                x.open("snapshotSet");
                for s in &items {
                    let gib = u64::try_from(s.volume_size)
                        .unwrap_or(0)
                        .div_ceil(1 << 30)
                        .max(1);
                    x.open("item")
                        .leaf("snapshotId", &s.id)
                        .leaf("volumeId", "vol-ffffffff")
                        .leaf("status", &s.state)
                        .leaf("startTime", &crate::sigv4::format_iso8601(s.created_ms))
                        .leaf("progress", "100%")
                        .leaf("ownerId", a)
                        .leaf("volumeSize", &gib.to_string())
                        .leaf("description", &s.description)
                        .leaf("encrypted", &s.encrypted.to_string())
                        .opt("kmsKeyId", s.kms_key_id.as_deref())
                        .tags(&s.tags)
                        .close("item");
                }
                x.close("snapshotSet");
                x.opt("nextToken", next.as_deref());
            }
            "DeregisterImage" => {
                let id = p.required("ImageId")?;
                self.engine
                    .catalog()
                    .delete_image(a, id)
                    .await
                    .map_err(|e| match e {
                        CatalogError::NotFound(_) => ApiError::client(
                            "InvalidAMIID.NotFound",
                            format!("The image id '[{id}]' does not exist"),
                        ),
                        e => e.into(),
                    })?;
                x.leaf("return", "true");
            }
            "DeleteSnapshot" => {
                let id = p.required("SnapshotId")?;
                self.engine
                    .catalog()
                    .delete_snapshot(a, id)
                    .await
                    .map_err(|e| match e {
                        CatalogError::NotFound(_) => ApiError::client(
                            "InvalidSnapshot.NotFound",
                            format!("The snapshot '{id}' does not exist."),
                        ),
                        CatalogError::Conflict(m) => ApiError::client("InvalidSnapshot.InUse", m),
                        e => e.into(),
                    })?;
                match self.engine.store().delete(id).await {
                    Ok(()) | Err(blockstore::StoreError::NotFound(_)) => {}
                    Err(e) => {
                        tracing::warn!(snapshot = id, error = %e, "snapshot row deleted, store delete failed; gc will collect it")
                    }
                }
                x.leaf("return", "true");
            }
            "CreateTags" | "DeleteTags" => {
                let ids = p.strings("ResourceId")?;
                if ids.is_empty() {
                    return Err(ApiError::client(
                        "MissingParameter",
                        "the request must contain the parameter ResourceId.1",
                    ));
                }
                let given = plain_tags(&p.list("Tag")?)?;
                let cat = self.engine.catalog();
                for id in &ids {
                    let current = if id.starts_with("ami-") {
                        cat.image(a, id).await.map(|i| i.tags)
                    } else if id.starts_with("snap-") {
                        cat.snapshot(a, id).await.map(|s| s.tags)
                    } else {
                        cat.task(a, id).await.map(|t| t.tags)
                    }
                    .map_err(|_| {
                        ApiError::client("InvalidID", format!("The ID '{id}' is not valid"))
                    })?;
                    let mut tags = current;
                    if action == "CreateTags" {
                        for t in &given {
                            tags.retain(|o| o.key != t.key);
                            tags.push(t.clone());
                        }
                        if tags.len() > 50 {
                            return Err(ApiError::client(
                                "TagLimitExceeded",
                                format!("{id} would have more than 50 tags"),
                            ));
                        }
                    } else if given.is_empty() {
                        tags.clear();
                    } else {
                        tags.retain(|o| {
                            !given.iter().any(|t| {
                                t.key == o.key
                                    && (p_value_absent(p, &given, t) || t.value == o.value)
                            })
                        });
                    }
                    cat.set_tags(a, id, &tags).await?;
                }
                x.leaf("return", "true");
            }
            "GetEbsEncryptionByDefault"
            | "EnableEbsEncryptionByDefault"
            | "DisableEbsEncryptionByDefault" => {
                let cat = self.engine.catalog();
                let key = engine::SETTING_ENCRYPTION_BY_DEFAULT;
                match action {
                    "EnableEbsEncryptionByDefault" => cat.set_setting(a, key, "true").await?,
                    "DisableEbsEncryptionByDefault" => cat.set_setting(a, key, "false").await?,
                    _ => {}
                }
                let on = cat.setting(a, key).await?.is_some_and(|v| v == "true");
                x.leaf("ebsEncryptionByDefault", &on.to_string());
            }
            "GetEbsDefaultKmsKeyId" | "ModifyEbsDefaultKmsKeyId" | "ResetEbsDefaultKmsKeyId" => {
                let cat = self.engine.catalog();
                let key = engine::SETTING_DEFAULT_KMS_KEY;
                if action == "ModifyEbsDefaultKmsKeyId" {
                    let k = p.required("KmsKeyId")?;
                    let meta = self
                        .engine
                        .store()
                        .kms()
                        .describe_key(&kms::Caller::account_root(a), k)
                        .await
                        .map_err(|e| {
                            ApiError::client(
                                "InvalidParameterValue",
                                format!("KmsKeyId cannot be used: {e}"),
                            )
                        })?;
                    cat.set_setting(a, key, &meta.arn).await?;
                }
                if action == "ResetEbsDefaultKmsKeyId" {
                    cat.set_setting(a, key, "").await?;
                }
                let k = match cat.setting(a, key).await?.filter(|v| !v.is_empty()) {
                    Some(k) => k,
                    None => self
                        .engine
                        .store()
                        .kms()
                        .default_ebs_key()
                        .await
                        .map(|m| m.arn)
                        .map_err(|e| ApiError {
                            status: 500,
                            code: "InternalError".into(),
                            message: e.to_string(),
                        })?,
                };
                x.leaf("kmsKeyId", &k);
            }
            other => {
                return Err(ApiError::client(
                    "InvalidAction",
                    format!("the action {other} is not valid for this web service"),
                ));
            }
        }
        Ok(x.finish(action))
    }
}

/// DeleteTags: a tag given with a key only (no `Value`) removes the key whatever its value.
fn p_value_absent(p: &Params, given: &[Tag], t: &Tag) -> bool {
    let idx = given.iter().position(|g| std::ptr::eq(g, t)).unwrap_or(0) + 1;
    p.get(&format!("Tag.{idx}.Value")).is_none()
}
