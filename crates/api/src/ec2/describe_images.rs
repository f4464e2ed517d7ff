//! DescribeImages: the caller's images, by id, filtered and paged.

use std::collections::HashMap;

use super::{filters, matches, page};
use crate::error::ApiError;
use crate::handler::{Cx, Env};
use crate::handler::{Declaration, Handler, Input};
use crate::identity::Principal;
use crate::query::Params;
use crate::spec::{Authz, Kind, Service, Spec, Tags};
use crate::spec::{field, plain};
use crate::xml::Xml;

const IMAGE_FILTERS: &[&str] = &[
    "image-id",
    "name",
    "state",
    "architecture",
    "platform",
    "description",
    "owner-id",
    "is-public",
    "root-device-type",
    "root-device-name",
    "virtualization-type",
    "hypervisor",
    "image-type",
    "block-device-mapping.device-name",
    "block-device-mapping.snapshot-id",
    "block-device-mapping.volume-size",
    "block-device-mapping.volume-type",
    "block-device-mapping.encrypted",
    "block-device-mapping.delete-on-termination",
];

/// A parsed DescribeImages.
#[derive(Debug)]
pub struct DescribeImages {
    ids: Vec<String>,
    owners: Vec<String>,
    executable_by: Vec<String>,
    include_disabled: bool,
    filters: Vec<super::Filter>,
    params: Params,
}

impl Handler for DescribeImages {
    const SPEC: Spec = Spec {
        service: Service::Ec2,
        name: "DescribeImages",
        iam_action: "ec2:DescribeImages",
        read_only: true,
        authz: Authz::Policy,
        resources: &[],
        tags: Tags::None,
        condition_keys: &[],
        params: &[
            plain("ExecutableBy.N"),
            plain("ImageId.N"),
            plain("Owner.N"),
            plain("IncludeDeprecated"),
            plain("IncludeDisabled"),
            plain("MaxResults"),
            plain("NextToken"),
            plain("DryRun"),
            plain("Filter.N.Name"),
            field("Filter.N.Value.N", Kind::FilterValue),
        ],
    };

    fn parse(input: Input<'_>, _env: &Env, _who: &Principal) -> Result<Self, ApiError> {
        let p = input.params()?;
        let ids = p.strings("ImageId")?;
        for id in &ids {
            engine::resources::check_id(engine::ResourceKind::Image, id)?;
        }
        Ok(DescribeImages {
            ids,
            owners: p.strings("Owner")?,
            executable_by: p.strings("ExecutableBy")?,
            include_disabled: p.bool("IncludeDisabled")?.unwrap_or(false),
            filters: filters(p, "Filter", IMAGE_FILTERS)?,
            params: p.clone(),
        })
    }

    fn declare(&self, _env: &Env, _who: &Principal, _d: &mut Declaration) {}

    async fn run(self, cx: &Cx<'_>) -> Result<String, ApiError> {
        let a = &cx.who.account;
        let engine = &cx.env.engine;
        // Own images, and those shared with the account; then narrowed by Owner (self, an
        // account id; amazon and aws-marketplace own nothing here) and ExecutableBy (images
        // with an explicit launch permission for the account named, self, or all).
        let mut imgs = engine.visible_images(a).await?;
        for id in &self.ids {
            if !imgs.iter().any(|i| &i.id == id) {
                return Err(ApiError::client(
                    "InvalidAMIID.NotFound",
                    format!(
                        "The image id '[{}]' does not exist",
                        engine::request::shown(id)
                    ),
                ));
            }
        }
        let mut shared_with = std::collections::HashMap::new();
        for i in &imgs {
            if i.account == *a {
                shared_with.insert(i.id.clone(), engine.shared_with_whom(a, &i.id).await?);
            }
        }
        imgs.retain(|i| {
            let grantees = shared_with.get(&i.id);
            let owner_ok = self.owners.is_empty()
                || self
                    .owners
                    .iter()
                    .any(|o| (o == "self" && i.account == *a) || *o == i.account);
            let exec_ok = self.executable_by.is_empty()
                || self.executable_by.iter().any(|e| {
                    let who = if e == "self" { a.as_str() } else { e.as_str() };
                    // Shared with the caller (from another account), or — for the caller's
                    // own images — an explicit permission for the account named.
                    (i.account != *a && who == a.as_str())
                        || grantees.is_some_and(|g| g.iter().any(|x| x == who))
                });
            let state_ok = self.include_disabled || i.state != "disabled";
            let f = fields(i);
            (self.ids.is_empty() || self.ids.contains(&i.id))
                && owner_ok
                && exec_ok
                && state_ok
                && matches(&self.filters, &f, &i.tags)
        });
        let (items, next) = page(&self.params, &imgs, 1..=1000)?;
        let mut x = Xml::response(Self::SPEC.name, cx.request_id);
        x.open("imagesSet");
        for i in &items {
            image_xml(&mut x, i);
        }
        x.close("imagesSet");
        x.opt("nextToken", next.as_deref());
        Ok(x.finish(Self::SPEC.name))
    }
}

/// An image's values by filter name (a filter on block devices matches any of them: their
/// values are joined with newlines, which no filter value holds).
fn fields(i: &catalog::Image) -> HashMap<&'static str, String> {
    let bd = |f: &dyn Fn(&catalog::BlockDevice) -> String| -> String {
        i.block_devices.iter().map(f).collect::<Vec<_>>().join("\n")
    };
    [
        ("image-id", i.id.clone()),
        ("name", i.name.clone()),
        ("state", i.state.clone()),
        ("architecture", i.architecture.clone()),
        ("platform", i.platform.to_ascii_lowercase()),
        ("description", i.description.clone()),
        ("owner-id", i.account.clone()),
        ("is-public", "false".into()),
        ("root-device-type", "ebs".into()),
        (
            "root-device-name",
            i.block_devices
                .first()
                .map(|b| b.device_name.clone())
                .unwrap_or_default(),
        ),
        ("virtualization-type", "hvm".into()),
        ("hypervisor", "xen".into()),
        ("image-type", "machine".into()),
        (
            "block-device-mapping.device-name",
            bd(&|b| b.device_name.clone()),
        ),
        (
            "block-device-mapping.snapshot-id",
            bd(&|b| b.snapshot_id.clone()),
        ),
        (
            "block-device-mapping.volume-size",
            bd(&|b| b.volume_size_gib.to_string()),
        ),
        ("block-device-mapping.volume-type", bd(&|_| "gp3".into())),
        ("block-device-mapping.encrypted", bd(&|_| "true".into())),
        (
            "block-device-mapping.delete-on-termination",
            bd(&|_| "true".into()),
        ),
    ]
    .into()
}

fn image_xml(x: &mut Xml, i: &catalog::Image) {
    let owner = &i.account;
    let usage = i
        .extra
        .usage_operation
        .clone()
        .unwrap_or_else(|| engine::request::default_usage_operation(&i.platform).into());
    x.open("item")
        .leaf("imageId", &i.id)
        .leaf("imageLocation", &format!("{owner}/{}", i.name))
        .leaf("imageState", &i.state)
        .leaf("imageOwnerId", owner)
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
        .leaf("usageOperation", &usage)
        .leaf("name", &i.name)
        .opt(
            "description",
            Some(i.description.as_str()).filter(|d| !d.is_empty()),
        )
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
            // Every snapshot is encrypted at rest, under the key named beside it.
            .leaf("encrypted", "true")
            .opt("kmsKeyId", i.kms_key_id.as_deref())
            .close("ebs")
            .close("item");
    }
    x.close("blockDeviceMapping")
        .leaf("virtualizationType", "hvm")
        .leaf("hypervisor", "xen")
        .opt("bootMode", i.boot_mode.as_deref())
        .opt(
            "deprecationTime",
            i.extra
                .deprecation_ms
                .map(crate::sigv4::format_iso8601)
                .as_deref(),
        )
        .opt("sourceImageId", i.extra.source_image_id.as_deref())
        .opt("sourceImageRegion", i.extra.source_region.as_deref())
        .tags(&i.tags)
        .close("item");
}
