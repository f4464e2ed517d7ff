//! CancelImportTask: the task becomes `deleting`; its worker stops at its next check and ends
//! it `deleted`, destroying its intermediate volume and anything it stored.

use engine::ResourceKind;

use super::arn;
use crate::error::ApiError;
use crate::handler::{Cx, Env};
use crate::handler::{Declaration, Handler, Input};
use crate::identity::Principal;
use crate::spec::{Authz, Kind, Service, Spec, Tags};
use crate::spec::{field, plain};
use crate::xml::Xml;

/// A parsed CancelImportTask.
#[derive(Debug)]
pub struct CancelImportTask {
    id: String,
    kind: ResourceKind,
}

fn unknown(id: &str) -> ApiError {
    ApiError::client(
        "InvalidConversionTaskId.Malformed",
        format!(
            "the import task {} does not exist",
            engine::request::shown(id)
        ),
    )
}

impl Handler for CancelImportTask {
    const SPEC: Spec = Spec {
        service: Service::Ec2,
        name: "CancelImportTask",
        iam_action: "ec2:CancelImportTask",
        read_only: false,
        authz: Authz::Policy,
        resources: &[
            "import-image-task",
            "import-snapshot-task",
            "export-image-task",
        ],
        tags: Tags::Resource,
        condition_keys: &["aws:ResourceTag/${TagKey}"],
        params: &[
            field("CancelReason", Kind::Free),
            plain("DryRun"),
            plain("ImportTaskId"),
        ],
    };

    fn parse(input: Input<'_>, _env: &Env, _who: &Principal) -> Result<Self, ApiError> {
        let p = input.params()?;
        let id = p.required("ImportTaskId")?.to_string();
        let kind = match ResourceKind::of(&id) {
            Some(
                k @ (ResourceKind::ImportImageTask
                | ResourceKind::ImportSnapshotTask
                | ResourceKind::ExportImageTask),
            ) => k,
            _ => return Err(unknown(&id)),
        };
        engine::resources::check_id(kind, &id)?;
        Ok(CancelImportTask { id, kind })
    }

    fn declare(&self, env: &Env, who: &Principal, d: &mut Declaration) {
        d.existing(arn(env, who, self.kind, &self.id), &self.id);
    }

    async fn run(self, cx: &Cx<'_>) -> Result<String, ApiError> {
        let a = &cx.who.account;
        let before = cx
            .env
            .engine
            .task(a, &self.id)
            .await
            .map_err(|_| unknown(&self.id))?;
        let t = cx.env.engine.cancel(a, &self.id).await?;
        let mut x = Xml::response(Self::SPEC.name, cx.request_id);
        x.leaf("importTaskId", &t.id)
            .leaf("previousState", &before.status)
            .leaf("state", &t.status);
        Ok(x.finish(Self::SPEC.name))
    }
}
