//! Image and snapshot attributes: Describe/Modify/ResetImageAttribute (`description`,
//! `launchPermission`, `bootMode`, `blockDeviceMapping`, `productCodes`) and
//! Describe/Modify/ResetSnapshotAttribute (`createVolumePermission`, `productCodes`).
//! Sharing with another account gives it use of the image or snapshot — to describe, export
//! or copy it, not to deregister or delete it — and a grant on the keys behind it
//! (`engine::Engine::share`).

use engine::ResourceKind;

use super::{arn, returns_true};
use crate::error::ApiError;
use crate::handler::{Cx, Env};
use crate::handler::{Declaration, Handler, Input};
use crate::identity::Principal;
use crate::query::Params;
use crate::spec::{Authz, Field, Kind, Service, Spec, Tags};
use crate::spec::{field, plain};
use crate::xml::Xml;

const fn spec(
    name: &'static str,
    iam: &'static str,
    read_only: bool,
    resources: &'static [&'static str],
    params: &'static [Field],
) -> Spec {
    Spec {
        service: Service::Ec2,
        name,
        iam_action: iam,
        read_only,
        authz: Authz::Policy,
        resources,
        tags: Tags::Resource,
        condition_keys: &["aws:ResourceTag/${TagKey}"],
        params,
    }
}

/// `all` or account ids from `<list>.Add.N` / `<list>.Remove.N` (`UserId`, `Group`), and
/// from the older `OperationType` + `UserId.N` / `UserGroup.N` form.
fn permission_changes(p: &Params, list: &str) -> Result<(Vec<String>, Vec<String>), ApiError> {
    let mut add = Vec::new();
    let mut remove = Vec::new();
    for (name, into) in [("Add", &mut add), ("Remove", &mut remove)] {
        for item in p.member(list).list(name)? {
            if item.get("OrganizationArn").is_some() || item.get("OrganizationalUnitArn").is_some()
            {
                return Err(ApiError::client(
                    "UnsupportedOperation",
                    "vmie has no AWS Organizations: share with account ids",
                ));
            }
            if let Some(u) = item.get("UserId") {
                into.push(u.to_string());
            }
            if let Some(g) = item.get("Group") {
                into.push(g.to_string());
            }
        }
    }
    if let Some(op) = p.get("OperationType") {
        let into = match op {
            "add" => &mut add,
            "remove" => &mut remove,
            other => {
                return Err(ApiError::client(
                    "InvalidParameterValue",
                    format!(
                        "OperationType is add or remove, not {}",
                        engine::request::shown(other)
                    ),
                ));
            }
        };
        into.extend(p.strings("UserId")?);
        into.extend(p.strings("UserGroup")?);
    }
    Ok((add, remove))
}

fn permission_items(x: &mut Xml, set: &str, grantees: &[String]) {
    x.open(set);
    for g in grantees {
        x.open("item");
        if g == "all" {
            x.leaf("group", "all");
        } else {
            x.leaf("userId", g);
        }
        x.close("item");
    }
    x.close(set);
}

/// A parsed DescribeImageAttribute.
#[derive(Debug)]
pub struct DescribeImageAttribute {
    id: String,
    attribute: String,
}

impl Handler for DescribeImageAttribute {
    const SPEC: Spec = spec(
        "DescribeImageAttribute",
        "ec2:DescribeImageAttribute",
        true,
        &["image"],
        &[plain("Attribute"), plain("ImageId"), plain("DryRun")],
    );

    fn parse(input: Input<'_>, _env: &Env, _who: &Principal) -> Result<Self, ApiError> {
        let p = input.params()?;
        let id = p.required("ImageId")?.to_string();
        engine::resources::check_id(ResourceKind::Image, &id)?;
        let attribute = engine::request::one_of(
            "Attribute",
            p.required("Attribute")?,
            &[
                "description",
                "launchPermission",
                "bootMode",
                "blockDeviceMapping",
                "productCodes",
                "kernel",
                "ramdisk",
                "sriovNetSupport",
                "tpmSupport",
                "uefiData",
                "lastLaunchedTime",
                "imdsSupport",
            ],
        )?
        .to_string();
        Ok(DescribeImageAttribute { id, attribute })
    }

    fn declare(&self, env: &Env, who: &Principal, d: &mut Declaration) {
        d.existing(arn(env, who, ResourceKind::Image, &self.id), &self.id);
    }

    async fn run(self, cx: &Cx<'_>) -> Result<String, ApiError> {
        let (e, a) = (&cx.env.engine, &cx.who.account);
        let img = e.visible_image(a, &self.id).await?;
        let name = Self::SPEC.name;
        let mut x = Xml::response(name, cx.request_id);
        x.leaf("imageId", &img.id);
        match self.attribute.as_str() {
            "description" => {
                x.open("description")
                    .opt(
                        "value",
                        Some(img.description.as_str()).filter(|d| !d.is_empty()),
                    )
                    .close("description");
            }
            "launchPermission" => {
                // Only the owner sees whom its image is shared with.
                let who = e.shared_with_whom(a, &img.id).await?;
                permission_items(&mut x, "launchPermission", &who);
            }
            "bootMode" => {
                x.open("bootMode")
                    .opt("value", img.boot_mode.as_deref())
                    .close("bootMode");
            }
            "blockDeviceMapping" => {
                x.open("blockDeviceMapping");
                for b in &img.block_devices {
                    x.open("item")
                        .leaf("deviceName", &b.device_name)
                        .open("ebs")
                        .leaf("snapshotId", &b.snapshot_id)
                        .leaf("volumeSize", &b.volume_size_gib.to_string())
                        .leaf("deleteOnTermination", "true")
                        .leaf("volumeType", "gp3")
                        .leaf("encrypted", "true")
                        .opt("kmsKeyId", img.kms_key_id.as_deref())
                        .close("ebs")
                        .close("item");
                }
                x.close("blockDeviceMapping");
            }
            "productCodes" => {
                x.open("productCodes").close("productCodes");
            }
            // Attributes of instances' images that imported images do not have: empty.
            other => {
                x.open(other).close(other);
            }
        }
        Ok(x.finish(name))
    }
}

/// What a ModifyImageAttribute changes.
#[derive(Debug)]
enum ImageChange {
    Description(String),
    Share {
        add: Vec<String>,
        remove: Vec<String>,
    },
}

/// A parsed ModifyImageAttribute.
#[derive(Debug)]
pub struct ModifyImageAttribute {
    id: String,
    change: ImageChange,
}

impl Handler for ModifyImageAttribute {
    const SPEC: Spec = spec(
        "ModifyImageAttribute",
        "ec2:ModifyImageAttribute",
        false,
        &["image"],
        &[
            plain("Attribute"),
            field("Description.Value", Kind::Free),
            plain("ImageId"),
            plain("LaunchPermission.Add.N.OrganizationArn"),
            plain("LaunchPermission.Add.N.OrganizationalUnitArn"),
            plain("LaunchPermission.Add.N.UserId"),
            plain("LaunchPermission.Add.N.Group"),
            plain("LaunchPermission.Remove.N.OrganizationArn"),
            plain("LaunchPermission.Remove.N.OrganizationalUnitArn"),
            plain("LaunchPermission.Remove.N.UserId"),
            plain("LaunchPermission.Remove.N.Group"),
            plain("OperationType"),
            plain("ProductCode.N"),
            plain("UserGroup.N"),
            plain("UserId.N"),
            field("Value", Kind::Free),
            plain("OrganizationArn.N"),
            plain("OrganizationalUnitArn.N"),
            plain("ImdsSupport.Value"),
            plain("DryRun"),
        ],
    );

    fn parse(input: Input<'_>, _env: &Env, _who: &Principal) -> Result<Self, ApiError> {
        let p = input.params()?;
        let id = p.required("ImageId")?.to_string();
        engine::resources::check_id(ResourceKind::Image, &id)?;
        if p.has("ProductCode") || p.has("OrganizationArn") || p.has("OrganizationalUnitArn") {
            return Err(ApiError::client(
                "UnsupportedOperation",
                "vmie has no product codes or AWS Organizations",
            ));
        }
        if p.get("ImdsSupport.Value").is_some() {
            return Err(ApiError::client(
                "UnsupportedOperation",
                "imdsSupport is an instance metadata setting; no instances run here",
            ));
        }
        let description = p
            .get("Description.Value")
            .or_else(|| (p.get("Attribute") == Some("description")).then(|| p.get("Value"))?);
        let change = match description {
            Some(d) => ImageChange::Description(d.to_string()),
            None => {
                let (add, remove) = permission_changes(p, "LaunchPermission")?;
                if add.is_empty() && remove.is_empty() {
                    return Err(ApiError::client(
                        "MissingParameter",
                        "give Description.Value, or LaunchPermission.Add/Remove (or OperationType with UserId.N / UserGroup.N)",
                    ));
                }
                ImageChange::Share { add, remove }
            }
        };
        Ok(ModifyImageAttribute { id, change })
    }

    fn declare(&self, env: &Env, who: &Principal, d: &mut Declaration) {
        d.existing(arn(env, who, ResourceKind::Image, &self.id), &self.id);
    }

    async fn run(self, cx: &Cx<'_>) -> Result<String, ApiError> {
        let (e, a) = (&cx.env.engine, &cx.who.account);
        match self.change {
            ImageChange::Description(d) => e.set_image_description(a, &self.id, &d).await?,
            ImageChange::Share { add, remove } => e.share(a, &self.id, &add, &remove).await?,
        }
        Ok(returns_true(Self::SPEC.name, cx.request_id))
    }
}

/// A parsed ResetImageAttribute (`launchPermission`: shared with no one).
#[derive(Debug)]
pub struct ResetImageAttribute {
    id: String,
}

impl Handler for ResetImageAttribute {
    const SPEC: Spec = spec(
        "ResetImageAttribute",
        "ec2:ResetImageAttribute",
        false,
        &["image"],
        &[plain("Attribute"), plain("ImageId"), plain("DryRun")],
    );

    fn parse(input: Input<'_>, _env: &Env, _who: &Principal) -> Result<Self, ApiError> {
        let p = input.params()?;
        engine::request::one_of("Attribute", p.required("Attribute")?, &["launchPermission"])?;
        let id = p.required("ImageId")?.to_string();
        engine::resources::check_id(ResourceKind::Image, &id)?;
        Ok(ResetImageAttribute { id })
    }

    fn declare(&self, env: &Env, who: &Principal, d: &mut Declaration) {
        d.existing(arn(env, who, ResourceKind::Image, &self.id), &self.id);
    }

    async fn run(self, cx: &Cx<'_>) -> Result<String, ApiError> {
        cx.env.engine.unshare_all(&cx.who.account, &self.id).await?;
        Ok(returns_true(Self::SPEC.name, cx.request_id))
    }
}

/// A parsed DescribeSnapshotAttribute.
#[derive(Debug)]
pub struct DescribeSnapshotAttribute {
    id: String,
    attribute: String,
}

impl Handler for DescribeSnapshotAttribute {
    const SPEC: Spec = spec(
        "DescribeSnapshotAttribute",
        "ec2:DescribeSnapshotAttribute",
        true,
        &["snapshot"],
        &[plain("Attribute"), plain("SnapshotId"), plain("DryRun")],
    );

    fn parse(input: Input<'_>, _env: &Env, _who: &Principal) -> Result<Self, ApiError> {
        let p = input.params()?;
        let id = p.required("SnapshotId")?.to_string();
        engine::resources::check_id(ResourceKind::Snapshot, &id)?;
        let attribute = engine::request::one_of(
            "Attribute",
            p.required("Attribute")?,
            &["createVolumePermission", "productCodes"],
        )?
        .to_string();
        Ok(DescribeSnapshotAttribute { id, attribute })
    }

    fn declare(&self, env: &Env, who: &Principal, d: &mut Declaration) {
        d.existing(arn(env, who, ResourceKind::Snapshot, &self.id), &self.id);
    }

    async fn run(self, cx: &Cx<'_>) -> Result<String, ApiError> {
        let (e, a) = (&cx.env.engine, &cx.who.account);
        let s = e.visible_snapshot(a, &self.id).await?;
        let name = Self::SPEC.name;
        let mut x = Xml::response(name, cx.request_id);
        x.leaf("snapshotId", &s.id);
        if self.attribute == "createVolumePermission" {
            let who = e.shared_with_whom(a, &s.id).await?;
            permission_items(&mut x, "createVolumePermission", &who);
        } else {
            x.open("productCodes").close("productCodes");
        }
        Ok(x.finish(name))
    }
}

/// A parsed ModifySnapshotAttribute.
#[derive(Debug)]
pub struct ModifySnapshotAttribute {
    id: String,
    add: Vec<String>,
    remove: Vec<String>,
}

impl Handler for ModifySnapshotAttribute {
    const SPEC: Spec = spec(
        "ModifySnapshotAttribute",
        "ec2:ModifySnapshotAttribute",
        false,
        &["snapshot"],
        &[
            plain("Attribute"),
            plain("CreateVolumePermission.Add.N.UserId"),
            plain("CreateVolumePermission.Add.N.Group"),
            plain("CreateVolumePermission.Remove.N.UserId"),
            plain("CreateVolumePermission.Remove.N.Group"),
            plain("UserGroup.N"),
            plain("OperationType"),
            plain("SnapshotId"),
            plain("UserId.N"),
            plain("DryRun"),
        ],
    );

    fn parse(input: Input<'_>, _env: &Env, _who: &Principal) -> Result<Self, ApiError> {
        let p = input.params()?;
        let id = p.required("SnapshotId")?.to_string();
        engine::resources::check_id(ResourceKind::Snapshot, &id)?;
        if let Some(a) = p.get("Attribute") {
            engine::request::one_of("Attribute", a, &["createVolumePermission"])?;
        }
        let (add, remove) = permission_changes(p, "CreateVolumePermission")?;
        if add.is_empty() && remove.is_empty() {
            return Err(ApiError::client(
                "MissingParameter",
                "give CreateVolumePermission.Add/Remove (or OperationType with UserId.N / UserGroup.N)",
            ));
        }
        Ok(ModifySnapshotAttribute { id, add, remove })
    }

    fn declare(&self, env: &Env, who: &Principal, d: &mut Declaration) {
        d.existing(arn(env, who, ResourceKind::Snapshot, &self.id), &self.id);
    }

    async fn run(self, cx: &Cx<'_>) -> Result<String, ApiError> {
        cx.env
            .engine
            .share(&cx.who.account, &self.id, &self.add, &self.remove)
            .await?;
        Ok(returns_true(Self::SPEC.name, cx.request_id))
    }
}

/// A parsed ResetSnapshotAttribute (`createVolumePermission`: shared with no one).
#[derive(Debug)]
pub struct ResetSnapshotAttribute {
    id: String,
}

impl Handler for ResetSnapshotAttribute {
    const SPEC: Spec = spec(
        "ResetSnapshotAttribute",
        "ec2:ResetSnapshotAttribute",
        false,
        &["snapshot"],
        &[plain("Attribute"), plain("SnapshotId"), plain("DryRun")],
    );

    fn parse(input: Input<'_>, _env: &Env, _who: &Principal) -> Result<Self, ApiError> {
        let p = input.params()?;
        engine::request::one_of(
            "Attribute",
            p.required("Attribute")?,
            &["createVolumePermission"],
        )?;
        let id = p.required("SnapshotId")?.to_string();
        engine::resources::check_id(ResourceKind::Snapshot, &id)?;
        Ok(ResetSnapshotAttribute { id })
    }

    fn declare(&self, env: &Env, who: &Principal, d: &mut Declaration) {
        d.existing(arn(env, who, ResourceKind::Snapshot, &self.id), &self.id);
    }

    async fn run(self, cx: &Cx<'_>) -> Result<String, ApiError> {
        cx.env.engine.unshare_all(&cx.who.account, &self.id).await?;
        Ok(returns_true(Self::SPEC.name, cx.request_id))
    }
}
