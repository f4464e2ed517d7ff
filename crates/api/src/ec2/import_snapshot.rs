//! ImportSnapshot: one disk becomes a snapshot. The service role must be allowed to read the
//! bucket object named, as the engine's own parser locates it.

use catalog::TaskKind;
use engine::{ImportSnapshotRequest, Location, ResourceKind};

use super::import_image::{container, role_reads};
use super::{TAG_SPECS, arn, role_name, snapshot_task_xml, submit, tag_specs, tags_for};
use crate::error::ApiError;
use crate::handler::{Cx, Env};
use crate::handler::{Declaration, Handler, Input};
use crate::identity::Principal;
use crate::spec::{Authz, Kind, Service, Spec, Tags};
use crate::spec::{field, plain};
use crate::xml::Xml;

/// A parsed ImportSnapshot.
#[derive(Debug)]
pub struct ImportSnapshot {
    id: String,
    req: ImportSnapshotRequest,
    location: Location,
    role: String,
    tags: Vec<catalog::Tag>,
    client_token: Option<String>,
}

impl Handler for ImportSnapshot {
    const SPEC: Spec = Spec {
        service: Service::Ec2,
        name: "ImportSnapshot",
        iam_action: "ec2:ImportSnapshot",
        read_only: false,
        authz: Authz::Policy,
        resources: &[
            "import-snapshot-task",
            "s3 object (service role: s3:GetObject)",
        ],
        tags: Tags::Request,
        condition_keys: &["ec2:Encrypted", "aws:RequestTag/${TagKey}", "aws:TagKeys"],
        params: &[
            field("ClientData.Comment", Kind::Free),
            plain("ClientData.UploadEnd"),
            plain("ClientData.UploadSize"),
            plain("ClientData.UploadStart"),
            field("ClientToken", Kind::Token),
            field("Description", Kind::Free),
            field("DiskContainer.Description", Kind::Free),
            plain("DiskContainer.Format"),
            field("DiskContainer.Url", Kind::Url),
            plain("DiskContainer.UserBucket.S3Bucket"),
            plain("DiskContainer.UserBucket.S3Key"),
            plain("DryRun"),
            plain("Encrypted"),
            plain("KmsKeyId"),
            plain("RoleName"),
            TAG_SPECS[0],
            TAG_SPECS[1],
            TAG_SPECS[2],
        ],
    };

    fn parse(input: Input<'_>, env: &Env, _who: &Principal) -> Result<Self, ApiError> {
        let p = input.params()?;
        let specs = tag_specs(p, &["import-snapshot-task", "snapshot"])?;
        let req = ImportSnapshotRequest {
            description: p.get("Description").map(str::to_string),
            disk_container: container(&p.member("DiskContainer")),
            encrypted: p.bool("Encrypted")?,
            kms_key_id: p.get("KmsKeyId").map(str::to_string),
            role_name: p.get("RoleName").map(str::to_string),
            snapshot_tags: tags_for(&specs, "snapshot"),
        };
        Ok(ImportSnapshot {
            id: engine::new_task_id(TaskKind::ImportSnapshot),
            location: env.engine.locate(&req.disk_container)?,
            tags: tags_for(&specs, "import-snapshot-task"),
            role: role_name(p),
            client_token: p.get("ClientToken").map(str::to_string),
            req,
        })
    }

    fn declare(&self, env: &Env, who: &Principal, d: &mut Declaration) {
        d.touches(arn(env, who, ResourceKind::ImportSnapshotTask, &self.id));
        d.condition(
            "ec2:Encrypted",
            vec![self.req.encrypted.unwrap_or(false).to_string()],
        );
        d.request_tags(&[self.tags.as_slice(), &self.req.snapshot_tags].concat());
        role_reads(
            env,
            who,
            &self.role,
            std::slice::from_ref(&self.location),
            d,
        );
    }

    async fn run(self, cx: &Cx<'_>) -> Result<String, ApiError> {
        let sub = submit(cx.who, self.id, self.client_token, self.tags);
        let t = cx.env.engine.import_snapshot(sub, self.req).await?;
        let mut x = Xml::response(Self::SPEC.name, cx.request_id);
        snapshot_task_xml(&mut x, &t);
        Ok(x.finish(Self::SPEC.name))
    }
}
