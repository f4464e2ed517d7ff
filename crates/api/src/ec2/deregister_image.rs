//! DeregisterImage: the image goes; its snapshots stay (as in EC2).

use engine::ResourceKind;

use super::{arn, returns_true};
use crate::action::{Authz, Declaration, Handler, Input, Service, Spec, Tags, plain};
use crate::dispatch::{Cx, Env};
use crate::error::ApiError;
use crate::identity::Principal;

/// A parsed DeregisterImage.
#[derive(Debug)]
pub struct DeregisterImage {
    id: String,
}

impl Handler for DeregisterImage {
    const SPEC: Spec = Spec {
        service: Service::Ec2,
        name: "DeregisterImage",
        iam_action: "ec2:DeregisterImage",
        read_only: false,
        authz: Authz::Policy,
        resources: &["image"],
        tags: Tags::Resource,
        condition_keys: &["aws:ResourceTag/${TagKey}"],
        params: &[
            plain("ImageId"),
            plain("DeleteAssociatedSnapshots"),
            plain("DryRun"),
        ],
    };

    fn parse(input: Input<'_>, _env: &Env, _who: &Principal) -> Result<Self, ApiError> {
        Ok(DeregisterImage {
            id: input.params()?.required("ImageId")?.to_string(),
        })
    }

    fn declare(&self, env: &Env, who: &Principal, d: &mut Declaration) {
        d.existing(arn(env, who, ResourceKind::Image, &self.id), &self.id);
    }

    async fn run(self, cx: &Cx<'_>) -> Result<String, ApiError> {
        cx.env
            .engine
            .deregister_image(&cx.who.account, &self.id)
            .await?;
        Ok(returns_true(Self::SPEC.name, cx.request_id))
    }
}
