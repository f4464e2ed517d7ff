//! What the boot check of an import saw — the serial console, the screen, the firmware log,
//! bus, firmware, accelerator and timings — for `vmie boot-evidence --endpoint-url` and the
//! console. vmie's own actions (EC2 has none): GetImageBootEvidence is authorized as
//! `ec2:DescribeImages` on the image, GetImportTaskBootEvidence as
//! `ec2:DescribeImportImageTasks` on the task, so whoever may describe the one may read its
//! evidence and nobody else.

use engine::ResourceKind;

use super::arn;
use crate::error::ApiError;
use crate::handler::{Cx, Env};
use crate::handler::{Declaration, Handler, Input};
use crate::identity::Principal;
use crate::spec::{Authz, Field, Service, Spec, Tags, plain};
use crate::xml::Xml;

const fn spec(
    name: &'static str,
    iam: &'static str,
    resources: &'static [&'static str],
    params: &'static [Field],
) -> Spec {
    Spec {
        service: Service::Ec2,
        name,
        iam_action: iam,
        read_only: true,
        authz: Authz::Policy,
        resources,
        tags: Tags::Resource,
        condition_keys: &["aws:ResourceTag/${TagKey}"],
        params,
    }
}

async fn answer(cx: &Cx<'_>, name: &str, id: &str) -> Result<String, ApiError> {
    let ev = cx.env.engine.boot_evidence(&cx.who.account, id).await?;
    let report =
        serde_json::to_string(&ev.report).map_err(|e| ApiError::internal("boot evidence", &e))?;
    let mut x = Xml::response(name, cx.request_id);
    x.leaf("importTaskId", &ev.task_id)
        .opt("imageId", ev.image_id.as_deref())
        .leaf("report", &report);
    Ok(x.finish(name))
}

/// A parsed GetImageBootEvidence.
#[derive(Debug)]
pub struct GetImageBootEvidence {
    id: String,
}

impl Handler for GetImageBootEvidence {
    const SPEC: Spec = spec(
        "GetImageBootEvidence",
        "ec2:DescribeImages",
        &["image"],
        &[plain("ImageId")],
    );

    fn parse(input: Input<'_>, _env: &Env, _who: &Principal) -> Result<Self, ApiError> {
        let id = input.params()?.required("ImageId")?.to_string();
        engine::resources::check_id(ResourceKind::Image, &id)?;
        Ok(GetImageBootEvidence { id })
    }

    fn declare(&self, env: &Env, who: &Principal, d: &mut Declaration) {
        d.existing(arn(env, who, ResourceKind::Image, &self.id), &self.id);
    }

    async fn run(self, cx: &Cx<'_>) -> Result<String, ApiError> {
        answer(cx, Self::SPEC.name, &self.id).await
    }
}

/// A parsed GetImportTaskBootEvidence.
#[derive(Debug)]
pub struct GetImportTaskBootEvidence {
    id: String,
}

impl Handler for GetImportTaskBootEvidence {
    const SPEC: Spec = spec(
        "GetImportTaskBootEvidence",
        "ec2:DescribeImportImageTasks",
        &["import-image-task"],
        &[plain("ImportTaskId")],
    );

    fn parse(input: Input<'_>, _env: &Env, _who: &Principal) -> Result<Self, ApiError> {
        let id = input.params()?.required("ImportTaskId")?.to_string();
        engine::resources::check_id(ResourceKind::ImportImageTask, &id)?;
        Ok(GetImportTaskBootEvidence { id })
    }

    fn declare(&self, env: &Env, who: &Principal, d: &mut Declaration) {
        d.existing(
            arn(env, who, ResourceKind::ImportImageTask, &self.id),
            &self.id,
        );
    }

    async fn run(self, cx: &Cx<'_>) -> Result<String, ApiError> {
        answer(cx, Self::SPEC.name, &self.id).await
    }
}
