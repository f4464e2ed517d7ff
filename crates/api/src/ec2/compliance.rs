//! `GetComplianceReport`, vmie's own action (EC2 has none): the deployment checked against
//! its controls — what `vmie compliance` prints — for the console's compliance page. The
//! checks belong to the program that assembled the deployment (`vmie serve` hands them to
//! [`Env::compliance`], a [`crate::handler::ComplianceSource`]); this action only authorizes and answers, as
//! `vmie:GetComplianceReport` on `*`.

use crate::error::ApiError;
use crate::handler::{Cx, Declaration, Env, Handler, Input};
use crate::identity::Principal;
use crate::spec::{Authz, Service, Spec, Tags};
use crate::xml::Xml;

/// A parsed GetComplianceReport.
#[derive(Debug)]
pub struct GetComplianceReport;

impl Handler for GetComplianceReport {
    const SPEC: Spec = Spec {
        service: Service::Ec2,
        name: "GetComplianceReport",
        iam_action: "vmie:GetComplianceReport",
        read_only: true,
        authz: Authz::Policy,
        resources: &[],
        tags: Tags::None,
        condition_keys: &[],
        params: &[],
    };

    fn parse(_input: Input<'_>, _env: &Env, _who: &Principal) -> Result<Self, ApiError> {
        Ok(GetComplianceReport)
    }

    fn declare(&self, _env: &Env, _who: &Principal, _d: &mut Declaration) {}

    async fn run(self, cx: &Cx<'_>) -> Result<String, ApiError> {
        let Some(source) = &cx.env.compliance else {
            return Err(ApiError::client(
                "UnsupportedOperation",
                "the compliance report is not available from this endpoint (run vmie compliance on the server)",
            ));
        };
        let report = source
            .report()
            .await
            .map_err(|e| ApiError::internal("compliance report", &e))?;
        let mut x = Xml::response(Self::SPEC.name, cx.request_id);
        x.leaf("report", &report.to_string());
        Ok(x.finish(Self::SPEC.name))
    }
}
