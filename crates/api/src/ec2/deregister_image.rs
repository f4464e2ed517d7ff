//! DeregisterImage: the image goes; its snapshots stay (as in EC2).

use engine::ResourceKind;

use super::arn;
use crate::error::ApiError;
use crate::handler::{Cx, Env};
use crate::handler::{Declaration, Handler, Input};
use crate::identity::Principal;
use crate::spec::{Authz, Service, Spec, Tags, plain};
use crate::xml::Xml;

/// A parsed DeregisterImage.
#[derive(Debug)]
pub struct DeregisterImage {
    id: String,
    delete_snapshots: bool,
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
        let p = input.params()?;
        let id = p.required("ImageId")?.to_string();
        engine::resources::check_id(ResourceKind::Image, &id)?;
        Ok(DeregisterImage {
            id,
            delete_snapshots: p.bool("DeleteAssociatedSnapshots")?.unwrap_or(false),
        })
    }

    fn declare(&self, env: &Env, who: &Principal, d: &mut Declaration) {
        d.existing(arn(env, who, ResourceKind::Image, &self.id), &self.id);
    }

    /// With `DeleteAssociatedSnapshots`, the image's snapshots go too, each reported with
    /// how its deletion went (`success`, `skipped` when another image still uses it,
    /// `client-error`, `internal-error`).
    async fn run(self, cx: &Cx<'_>) -> Result<String, ApiError> {
        let (e, a) = (&cx.env.engine, &cx.who.account);
        let snapshots: Vec<String> = if self.delete_snapshots {
            e.image(a, &self.id)
                .await?
                .block_devices
                .into_iter()
                .map(|b| b.snapshot_id)
                .collect()
        } else {
            Vec::new()
        };
        e.deregister_image(a, &self.id).await?;
        let name = Self::SPEC.name;
        let mut x = Xml::response(name, cx.request_id);
        x.leaf("return", "true");
        x.open("deleteSnapshotResultSet");
        for s in &snapshots {
            let code = match e.delete_snapshot(a, s).await {
                Ok(()) => "success",
                Err(engine::EngineError::Request {
                    code: "InvalidSnapshot.InUse",
                    ..
                }) => "skipped",
                Err(err) if err.is_client() => "client-error",
                Err(_) => "internal-error",
            };
            x.open("item")
                .leaf("snapshotId", s)
                .leaf("returnCode", code)
                .close("item");
        }
        x.close("deleteSnapshotResultSet");
        Ok(x.finish(name))
    }
}
