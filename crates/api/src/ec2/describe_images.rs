//! DescribeImages: the caller's images, by id, filtered and paged.

use std::collections::HashMap;

use super::{filters, matches, page};
use crate::action::{Authz, Declaration, Handler, Input, Kind, Service, Spec, Tags};
use crate::action::{field, plain};
use crate::dispatch::{Cx, Env};
use crate::error::ApiError;
use crate::identity::Principal;
use crate::query::Params;
use crate::xml::Xml;

const IMAGE_FILTERS: &[&str] = &[
    "image-id",
    "name",
    "state",
    "architecture",
    "platform",
    "description",
];

/// A parsed DescribeImages.
#[derive(Debug)]
pub struct DescribeImages {
    ids: Vec<String>,
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
        Ok(DescribeImages {
            ids: p.strings("ImageId")?,
            filters: filters(p, "Filter", IMAGE_FILTERS)?,
            params: p.clone(),
        })
    }

    fn declare(&self, _env: &Env, _who: &Principal, _d: &mut Declaration) {}

    async fn run(self, cx: &Cx<'_>) -> Result<String, ApiError> {
        let a = &cx.who.account;
        let mut imgs = cx.env.engine.images(a).await?;
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
            (self.ids.is_empty() || self.ids.contains(&i.id)) && matches(&self.filters, &f, &i.tags)
        });
        let (items, next) = page(&self.params, &imgs, 1..=1000)?;
        let mut x = Xml::response(Self::SPEC.name, cx.request_id);
        x.open("imagesSet");
        for i in &items {
            image_xml(&mut x, a, i);
        }
        x.close("imagesSet");
        x.opt("nextToken", next.as_deref());
        Ok(x.finish(Self::SPEC.name))
    }
}

fn image_xml(x: &mut Xml, owner: &str, i: &catalog::Image) {
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
