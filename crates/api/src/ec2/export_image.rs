//! ExportImage: an image's boot disk is written to a bucket as VMDK, VHD, VHDX, qcow2, raw or
//! OVA. The service role must be allowed to write the very key the export will write
//! (`<prefix><task id>.<extension>`, the task id chosen before authorization).

use catalog::TaskKind;
use engine::{ExportImageRequest, ExportLocation, ResourceKind};

use super::{TAG_SPECS, arn, export_task_xml, role_name, s3_arn, submit, tag_specs, tags_for};
use crate::error::ApiError;
use crate::handler::{Cx, Env};
use crate::handler::{Declaration, Handler, Input, RoleCheck};
use crate::identity::Principal;
use crate::spec::{Authz, Kind, Service, Spec, Tags};
use crate::spec::{field, plain};
use crate::xml::Xml;

/// A parsed ExportImage.
#[derive(Debug)]
pub struct ExportImage {
    id: String,
    req: ExportImageRequest,
    key: String,
    role: String,
    tags: Vec<catalog::Tag>,
    client_token: Option<String>,
}

impl Handler for ExportImage {
    const SPEC: Spec = Spec {
        service: Service::Ec2,
        name: "ExportImage",
        iam_action: "ec2:ExportImage",
        read_only: false,
        authz: Authz::Policy,
        resources: &[
            "image",
            "export-image-task",
            "s3 object (service role: s3:PutObject)",
        ],
        tags: Tags::Both,
        condition_keys: &[
            "aws:ResourceTag/${TagKey}",
            "aws:RequestTag/${TagKey}",
            "aws:TagKeys",
        ],
        params: &[
            field("ClientToken", Kind::Token),
            field("Description", Kind::Free),
            plain("DiskImageFormat"),
            plain("DryRun"),
            plain("ImageId"),
            plain("S3ExportLocation.S3Bucket"),
            plain("S3ExportLocation.S3Prefix"),
            plain("RoleName"),
            TAG_SPECS[0],
            TAG_SPECS[1],
            TAG_SPECS[2],
        ],
    };

    fn parse(input: Input<'_>, _env: &Env, _who: &Principal) -> Result<Self, ApiError> {
        let p = input.params()?;
        engine::resources::check_id(ResourceKind::Image, p.required("ImageId")?)?;
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
        let id = engine::new_task_id(TaskKind::ExportImage);
        let key = engine::export_key(
            req.s3_export_location.s3_prefix.as_deref(),
            &id,
            &req.disk_image_format,
        )?;
        Ok(ExportImage {
            id,
            key,
            tags: tags_for(&tag_specs(p, &["export-image-task"])?, "export-image-task"),
            role: role_name(p),
            client_token: p.get("ClientToken").map(str::to_string),
            req,
        })
    }

    fn declare(&self, env: &Env, who: &Principal, d: &mut Declaration) {
        d.existing(
            arn(env, who, ResourceKind::Image, &self.req.image_id),
            &self.req.image_id,
        );
        d.touches(arn(env, who, ResourceKind::ExportImageTask, &self.id));
        d.request_tags(&self.tags);
        d.role.push(RoleCheck {
            role: self.role.clone(),
            action: "s3:PutObject",
            arn: s3_arn(&self.req.s3_export_location.s3_bucket, &self.key),
        });
    }

    async fn run(self, cx: &Cx<'_>) -> Result<String, ApiError> {
        let sub = submit(cx.who, self.id, self.client_token, self.tags);
        let t = cx.env.engine.export_image(sub, self.req).await?;
        let mut x = Xml::response(Self::SPEC.name, cx.request_id);
        export_task_xml(&mut x, &t, true);
        Ok(x.finish(Self::SPEC.name))
    }
}
