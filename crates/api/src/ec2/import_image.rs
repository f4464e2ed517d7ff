//! ImportImage: one to sixteen disks (the boot disk first) become an image and its
//! snapshots. The service role must be allowed to read every bucket object named, as the
//! engine's own parser locates it.

use catalog::TaskKind;
use engine::{DiskContainer, ImportImageRequest, Location, ResourceKind, UserBucket};

use super::{TAG_SPECS, arn, image_task_xml, role_name, s3_arn, submit, tag_specs, tags_for};
use crate::error::ApiError;
use crate::handler::{Cx, Env};
use crate::handler::{Declaration, Handler, Input, RoleCheck};
use crate::identity::Principal;
use crate::query::Params;
use crate::spec::{Authz, Kind, Service, Spec, Tags};
use crate::spec::{field, plain};
use crate::xml::Xml;

/// A parsed ImportImage.
#[derive(Debug)]
pub struct ImportImage {
    id: String,
    req: ImportImageRequest,
    locations: Vec<Location>,
    role: String,
    tags: Vec<catalog::Tag>,
    client_token: Option<String>,
}

/// A `DiskContainer` of ImportImage or ImportSnapshot.
pub(crate) fn container(p: &Params) -> DiskContainer {
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
        snapshot_id: p.get("SnapshotId").map(str::to_string),
        disk_image_size: None,
    }
}

/// What reading `locations` touches: the service role's read of every bucket object, and
/// every snapshot an image is made from (authorized as a resource of the request).
pub(crate) fn role_reads(
    env: &Env,
    who: &Principal,
    role: &str,
    locations: &[Location],
    d: &mut Declaration,
) {
    for l in locations {
        match l {
            Location::Bucket(b) => d.role.push(RoleCheck {
                role: role.to_string(),
                action: "s3:GetObject",
                arn: s3_arn(&b.s3_bucket, &b.s3_key),
            }),
            Location::Snapshot(id) => d.existing(arn(env, who, ResourceKind::Snapshot, id), id),
            Location::Https(_) => {}
        }
    }
}

impl Handler for ImportImage {
    const SPEC: Spec = Spec {
        service: Service::Ec2,
        name: "ImportImage",
        iam_action: "ec2:ImportImage",
        read_only: false,
        authz: Authz::Policy,
        resources: &[
            "import-image-task",
            "s3 object (service role: s3:GetObject)",
        ],
        tags: Tags::Request,
        condition_keys: &["ec2:Encrypted", "aws:RequestTag/${TagKey}", "aws:TagKeys"],
        params: &[
            plain("Architecture"),
            field("ClientData.Comment", Kind::Free),
            plain("ClientData.UploadEnd"),
            plain("ClientData.UploadSize"),
            plain("ClientData.UploadStart"),
            field("ClientToken", Kind::Token),
            field("Description", Kind::Free),
            field("DiskContainer.N.Description", Kind::Free),
            plain("DiskContainer.N.DeviceName"),
            plain("DiskContainer.N.Format"),
            plain("DiskContainer.N.SnapshotId"),
            field("DiskContainer.N.Url", Kind::Url),
            plain("DiskContainer.N.UserBucket.S3Bucket"),
            plain("DiskContainer.N.UserBucket.S3Key"),
            plain("DryRun"),
            plain("Encrypted"),
            plain("Hypervisor"),
            plain("KmsKeyId"),
            plain("LicenseType"),
            plain("Platform"),
            plain("RoleName"),
            plain("LicenseSpecifications.N.LicenseConfigurationArn"),
            TAG_SPECS[0],
            TAG_SPECS[1],
            TAG_SPECS[2],
            plain("UsageOperation"),
            plain("BootMode"),
        ],
    };

    fn parse(input: Input<'_>, env: &Env, _who: &Principal) -> Result<Self, ApiError> {
        let p = input.params()?;
        let specs = tag_specs(p, &["import-image-task", "image", "snapshot"])?;
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
            hypervisor: p.get("Hypervisor").map(str::to_string),
            usage_operation: p.get("UsageOperation").map(str::to_string),
            license_specifications: p
                .list("LicenseSpecifications")?
                .iter()
                .filter_map(|l| l.get("LicenseConfigurationArn").map(str::to_string))
                .collect(),
            image_tags: tags_for(&specs, "image"),
            snapshot_tags: tags_for(&specs, "snapshot"),
        };
        let locations = req
            .disk_containers
            .iter()
            .map(|dc| env.engine.locate(dc))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ImportImage {
            id: engine::new_task_id(TaskKind::ImportImage),
            tags: tags_for(&specs, "import-image-task"),
            role: role_name(p),
            client_token: p.get("ClientToken").map(str::to_string),
            locations,
            req,
        })
    }

    fn declare(&self, env: &Env, who: &Principal, d: &mut Declaration) {
        d.touches(arn(env, who, ResourceKind::ImportImageTask, &self.id));
        d.condition(
            "ec2:Encrypted",
            vec![self.req.encrypted.unwrap_or(false).to_string()],
        );
        d.request_tags(
            &[
                self.tags.as_slice(),
                &self.req.image_tags,
                &self.req.snapshot_tags,
            ]
            .concat(),
        );
        role_reads(env, who, &self.role, &self.locations, d);
    }

    async fn run(self, cx: &Cx<'_>) -> Result<String, ApiError> {
        let sub = submit(cx.who, self.id, self.client_token, self.tags);
        let t = cx.env.engine.import_image(sub, self.req).await?;
        let mut x = Xml::response(Self::SPEC.name, cx.request_id);
        image_task_xml(&mut x, &t, true);
        Ok(x.finish(Self::SPEC.name))
    }
}
