//! DeleteSnapshot: refused while an image uses the snapshot.

use engine::ResourceKind;

use super::{arn, returns_true};
use crate::error::ApiError;
use crate::handler::{Cx, Env};
use crate::handler::{Declaration, Handler, Input};
use crate::identity::Principal;
use crate::spec::{Authz, Service, Spec, Tags, plain};

/// A parsed DeleteSnapshot.
#[derive(Debug)]
pub struct DeleteSnapshot {
    id: String,
}

impl Handler for DeleteSnapshot {
    const SPEC: Spec = Spec {
        service: Service::Ec2,
        name: "DeleteSnapshot",
        iam_action: "ec2:DeleteSnapshot",
        read_only: false,
        authz: Authz::Policy,
        resources: &["snapshot"],
        tags: Tags::Resource,
        condition_keys: &["aws:ResourceTag/${TagKey}"],
        params: &[plain("SnapshotId"), plain("DryRun")],
    };

    fn parse(input: Input<'_>, _env: &Env, _who: &Principal) -> Result<Self, ApiError> {
        let id = input.params()?.required("SnapshotId")?.to_string();
        engine::resources::check_id(ResourceKind::Snapshot, &id)?;
        Ok(DeleteSnapshot { id })
    }

    fn declare(&self, env: &Env, who: &Principal, d: &mut Declaration) {
        d.existing(arn(env, who, ResourceKind::Snapshot, &self.id), &self.id);
    }

    async fn run(self, cx: &Cx<'_>) -> Result<String, ApiError> {
        cx.env
            .engine
            .delete_snapshot(&cx.who.account, &self.id)
            .await?;
        Ok(returns_true(Self::SPEC.name, cx.request_id))
    }
}
