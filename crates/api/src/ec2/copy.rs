//! CopyImage and CopySnapshot: a copy under the key asked for (re-encrypting an image, or
//! making one that can be shared). The copy's id is answered at once; it is `pending` until
//! its copy task has stored every snapshot again.

use catalog::TaskKind;
use engine::{CopyImageRequest, CopySnapshotRequest, ResourceKind};

use super::{TAG_SPECS, arn, submit, tag_specs, tags_for};
use crate::error::ApiError;
use crate::handler::{Cx, Env};
use crate::handler::{Declaration, Handler, Input};
use crate::identity::Principal;
use crate::spec::{Authz, Kind, Service, Spec, Tags};
use crate::spec::{field, plain};
use crate::xml::Xml;

/// A parsed CopyImage.
#[derive(Debug)]
pub struct CopyImage {
    id: String,
    req: CopyImageRequest,
    client_token: Option<String>,
}

impl Handler for CopyImage {
    const SPEC: Spec = Spec {
        service: Service::Ec2,
        name: "CopyImage",
        iam_action: "ec2:CopyImage",
        read_only: false,
        authz: Authz::Policy,
        resources: &["image (the source)", "image (the copy)"],
        tags: Tags::Both,
        condition_keys: &[
            "ec2:Encrypted",
            "aws:ResourceTag/${TagKey}",
            "aws:RequestTag/${TagKey}",
            "aws:TagKeys",
        ],
        params: &[
            field("ClientToken", Kind::Token),
            field("Description", Kind::Free),
            plain("Encrypted"),
            plain("KmsKeyId"),
            field("Name", Kind::Free),
            plain("SourceImageId"),
            plain("SourceRegion"),
            plain("DestinationOutpostArn"),
            plain("CopyImageTags"),
            TAG_SPECS[0],
            TAG_SPECS[1],
            TAG_SPECS[2],
            plain("SnapshotCopyCompletionDurationMinutes"),
            plain("DestinationAvailabilityZone"),
            plain("DestinationAvailabilityZoneId"),
            plain("DryRun"),
        ],
    };

    fn parse(input: Input<'_>, env: &Env, _who: &Principal) -> Result<Self, ApiError> {
        let p = input.params()?;
        for unsupported in [
            "DestinationOutpostArn",
            "DestinationAvailabilityZone",
            "DestinationAvailabilityZoneId",
            "SnapshotCopyCompletionDurationMinutes",
        ] {
            if p.get(unsupported).is_some() {
                return Err(ApiError::client(
                    "UnsupportedOperation",
                    format!(
                        "{unsupported}: vmie has no Outposts, zones or time-based copies; copy within the region without it"
                    ),
                ));
            }
        }
        let source = p.required("SourceImageId")?.to_string();
        engine::resources::check_id(ResourceKind::Image, &source)?;
        let specs = tag_specs(p, &["image"])?;
        Ok(CopyImage {
            id: engine::new_task_id(TaskKind::CopyImage),
            client_token: p.get("ClientToken").map(str::to_string),
            req: CopyImageRequest {
                source_image_id: source,
                source_region: p.get("SourceRegion").unwrap_or(&env.region).to_string(),
                name: p.required("Name")?.to_string(),
                description: p.get("Description").map(str::to_string),
                encrypted: p.bool("Encrypted")?,
                kms_key_id: p.get("KmsKeyId").map(str::to_string),
                copy_image_tags: p.bool("CopyImageTags")?.unwrap_or(false),
                image_tags: tags_for(&specs, "image"),
                ..CopyImageRequest::default()
            },
        })
    }

    fn declare(&self, env: &Env, who: &Principal, d: &mut Declaration) {
        let src = &self.req.source_image_id;
        d.existing(arn(env, who, ResourceKind::Image, src), src);
        d.touches(arn(env, who, ResourceKind::Image, "*"));
        d.condition(
            "ec2:Encrypted",
            vec![self.req.encrypted.unwrap_or(false).to_string()],
        );
        d.request_tags(&self.req.image_tags);
    }

    async fn run(self, cx: &Cx<'_>) -> Result<String, ApiError> {
        let sub = submit(cx.who, self.id, self.client_token, Vec::new());
        let t = cx.env.engine.copy_image(sub, self.req).await?;
        let req: CopyImageRequest = serde_json::from_str(&t.request)
            .map_err(|e| ApiError::internal("a copy task's request", &e))?;
        let mut x = Xml::response(Self::SPEC.name, cx.request_id);
        x.leaf("imageId", &req.image_id);
        Ok(x.finish(Self::SPEC.name))
    }
}

/// A parsed CopySnapshot.
#[derive(Debug)]
pub struct CopySnapshot {
    id: String,
    req: CopySnapshotRequest,
}

impl Handler for CopySnapshot {
    const SPEC: Spec = Spec {
        service: Service::Ec2,
        name: "CopySnapshot",
        iam_action: "ec2:CopySnapshot",
        read_only: false,
        authz: Authz::Policy,
        resources: &["snapshot (the source)", "snapshot (the copy)"],
        tags: Tags::Both,
        condition_keys: &[
            "ec2:Encrypted",
            "aws:ResourceTag/${TagKey}",
            "aws:RequestTag/${TagKey}",
            "aws:TagKeys",
        ],
        params: &[
            field("Description", Kind::Free),
            plain("DestinationOutpostArn"),
            plain("DestinationRegion"),
            plain("Encrypted"),
            plain("KmsKeyId"),
            field("PresignedUrl", Kind::Url),
            plain("SourceRegion"),
            plain("SourceSnapshotId"),
            TAG_SPECS[0],
            TAG_SPECS[1],
            TAG_SPECS[2],
            plain("CompletionDurationMinutes"),
            plain("DestinationAvailabilityZone"),
            plain("DryRun"),
        ],
    };

    fn parse(input: Input<'_>, env: &Env, _who: &Principal) -> Result<Self, ApiError> {
        let p = input.params()?;
        // `PresignedUrl` is what SDKs add for a copy between regions (botocore always does);
        // within one region it is not needed, and it is recorded without its signature.
        for unsupported in [
            "DestinationOutpostArn",
            "CompletionDurationMinutes",
            "DestinationAvailabilityZone",
        ] {
            if p.get(unsupported).is_some() {
                return Err(ApiError::client(
                    "UnsupportedOperation",
                    format!("{unsupported}: vmie copies within its one region; leave it out"),
                ));
            }
        }
        if let Some(r) = p.get("DestinationRegion")
            && r != env.region
        {
            return Err(ApiError::client(
                "InvalidParameterValue",
                format!(
                    "DestinationRegion {} is not this service's region ({})",
                    engine::request::shown(r),
                    env.region
                ),
            ));
        }
        let source = p.required("SourceSnapshotId")?.to_string();
        engine::resources::check_id(ResourceKind::Snapshot, &source)?;
        let specs = tag_specs(p, &["snapshot"])?;
        Ok(CopySnapshot {
            id: engine::new_task_id(TaskKind::CopySnapshot),
            req: CopySnapshotRequest {
                source_snapshot_id: source,
                source_region: p.get("SourceRegion").unwrap_or(&env.region).to_string(),
                description: p.get("Description").map(str::to_string),
                encrypted: p.bool("Encrypted")?,
                kms_key_id: p.get("KmsKeyId").map(str::to_string),
                tags: tags_for(&specs, "snapshot"),
                ..CopySnapshotRequest::default()
            },
        })
    }

    fn declare(&self, env: &Env, who: &Principal, d: &mut Declaration) {
        let src = &self.req.source_snapshot_id;
        d.existing(arn(env, who, ResourceKind::Snapshot, src), src);
        d.touches(arn(env, who, ResourceKind::Snapshot, "*"));
        d.condition(
            "ec2:Encrypted",
            vec![self.req.encrypted.unwrap_or(false).to_string()],
        );
        d.request_tags(&self.req.tags);
    }

    async fn run(self, cx: &Cx<'_>) -> Result<String, ApiError> {
        let sub = submit(cx.who, self.id, None, Vec::new());
        let t = cx.env.engine.copy_snapshot(sub, self.req).await?;
        let req: CopySnapshotRequest = serde_json::from_str(&t.request)
            .map_err(|e| ApiError::internal("a copy task's request", &e))?;
        let mut x = Xml::response(Self::SPEC.name, cx.request_id);
        x.leaf("snapshotId", &req.snapshot_id);
        x.tags(&req.tags);
        Ok(x.finish(Self::SPEC.name))
    }
}
