//! Inline and managed policies, their attachment, and the policy simulator.

use catalog::iam::PrincipalKind;
use catalog::iam_api::Managed;

use super::{
    cfail, check_path, date, document, fail, leaf, page, policy_arn, policy_name, principal_of,
    truncation,
};
use crate::error::ApiError;
use crate::handler::Cx;
use crate::iam::{Decision, Policy};
use crate::query::Params;

/// Runs the policy action `name`; the result element's content.
pub(super) async fn run(name: &str, p: &Params, cx: &Cx<'_>) -> Result<Option<String>, ApiError> {
    match name {
        "PutUserPolicy" | "GetUserPolicy" | "ListUserPolicies" | "DeleteUserPolicy"
        | "PutRolePolicy" | "GetRolePolicy" | "ListRolePolicies" | "DeleteRolePolicy" => {
            inline(name, p, cx).await
        }
        "AttachUserPolicy"
        | "DetachUserPolicy"
        | "ListAttachedUserPolicies"
        | "AttachRolePolicy"
        | "DetachRolePolicy"
        | "ListAttachedRolePolicies" => attached(name, p, cx).await,
        "SimulatePrincipalPolicy" => simulate(p, cx).await,
        _ => managed(name, p, cx).await,
    }
}

/// The user or role the request names, which must exist.
async fn subject(name: &str, p: &Params, cx: &Cx<'_>) -> Result<(PrincipalKind, String), ApiError> {
    let (kind, key) = principal_of(name);
    let who = p.get(key).unwrap_or_default().to_string();
    if !cx
        .env
        .identity
        .catalog()
        .principal_exists(&cx.who.account, kind, &who)
        .await
        .map_err(cfail)?
    {
        return Err(match kind {
            PrincipalKind::User => super::users::no_user(&who),
            PrincipalKind::Role => super::roles::no_role(&who),
        });
    }
    Ok((kind, who))
}

fn no_policy(what: &str) -> ApiError {
    ApiError {
        status: 404,
        code: "NoSuchEntity".into(),
        message: format!(
            "The policy {} cannot be found.",
            engine::request::shown(what)
        ),
    }
}

async fn inline(name: &str, p: &Params, cx: &Cx<'_>) -> Result<Option<String>, ApiError> {
    let id = &cx.env.identity;
    let c = id.catalog();
    let a = &cx.who.account;
    let (kind, who) = subject(name, p, cx).await?;
    let policy = p.get("PolicyName").unwrap_or_default();
    let key = if kind == PrincipalKind::Role {
        "RoleName"
    } else {
        "UserName"
    };
    Ok(if name.starts_with("Put") {
        id.put_inline_policy(
            a,
            kind,
            &who,
            policy,
            p.get("PolicyDocument").unwrap_or_default(),
        )
        .await
        .map_err(fail)?;
        None
    } else if name.starts_with("Get") {
        let doc = c
            .inline_policies(a, kind, &who)
            .await
            .map_err(cfail)?
            .into_iter()
            .find(|(n, _)| n == policy)
            .ok_or_else(|| no_policy(policy))?
            .1;
        Some(format!(
            "{}{}{}",
            leaf(key, &who),
            leaf("PolicyName", policy),
            leaf("PolicyDocument", &document(&doc))
        ))
    } else if name.starts_with("List") {
        let names: Vec<String> = c
            .inline_policies(a, kind, &who)
            .await
            .map_err(cfail)?
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let (names, next) = page(p, names)?;
        let items: String = names.iter().map(|n| leaf("member", n)).collect();
        Some(format!(
            "<PolicyNames>{items}</PolicyNames>{}",
            truncation(next.as_deref())
        ))
    } else {
        c.delete_inline_policy(a, kind, &who, policy)
            .await
            .map_err(|_| no_policy(policy))?;
        None
    })
}

async fn attached(name: &str, p: &Params, cx: &Cx<'_>) -> Result<Option<String>, ApiError> {
    let c = cx.env.identity.catalog();
    let a = &cx.who.account;
    let (kind, who) = subject(name, p, cx).await?;
    if name.starts_with("List") {
        let ps = c.attached_policies(a, kind, &who).await.map_err(cfail)?;
        let (ps, next) = page(p, ps)?;
        let items: String = ps
            .iter()
            .map(|d| {
                format!(
                    "<member>{}{}</member>",
                    leaf("PolicyName", &d.name),
                    leaf("PolicyArn", &policy_arn(a, &d.name))
                )
            })
            .collect();
        return Ok(Some(format!(
            "<AttachedPolicies>{items}</AttachedPolicies>{}",
            truncation(next.as_deref())
        )));
    }
    let arn = p.get("PolicyArn").unwrap_or_default();
    let policy = policy_name(arn, a)?;
    if name.starts_with("Attach") {
        if c.managed_policy(a, policy).await.map_err(cfail)?.is_none() {
            return Err(no_policy(arn));
        }
        c.attach_policy(a, kind, &who, policy)
            .await
            .map_err(cfail)?;
    } else {
        c.detach_policy(a, kind, &who, policy)
            .await
            .map_err(|_| no_policy(arn))?;
    }
    Ok(None)
}

fn policy_body(account: &str, m: &Managed) -> String {
    format!(
        "{}{}{}<Path>/</Path><DefaultVersionId>v1</DefaultVersionId>{}<PermissionsBoundaryUsageCount>0</PermissionsBoundaryUsageCount><IsAttachable>true</IsAttachable>{}{}",
        leaf("PolicyName", &m.name),
        leaf(
            "PolicyId",
            &crate::identity::unique_id("ANPA", account, &m.name)
        ),
        leaf("Arn", &policy_arn(account, &m.name)),
        leaf("AttachmentCount", &m.attachments.to_string()),
        leaf("CreateDate", &date(m.created_ms)),
        leaf("UpdateDate", &date(m.updated_ms)),
    )
}

async fn managed(name: &str, p: &Params, cx: &Cx<'_>) -> Result<Option<String>, ApiError> {
    let id = &cx.env.identity;
    let c = id.catalog();
    let a = &cx.who.account;
    let find = |policy: String| async move {
        c.managed_policy(a, &policy)
            .await
            .map_err(cfail)?
            .ok_or_else(|| no_policy(&policy))
    };
    Ok(match name {
        "CreatePolicy" => {
            check_path(p, "Path")?;
            let policy = p.get("PolicyName").unwrap_or_default();
            id.create_policy(a, policy, p.get("PolicyDocument").unwrap_or_default())
                .await
                .map_err(fail)?;
            let m = find(policy.to_string()).await?;
            Some(format!("<Policy>{}</Policy>", policy_body(a, &m)))
        }
        "GetPolicy" => {
            let m = find(policy_name(p.get("PolicyArn").unwrap_or_default(), a)?.into()).await?;
            Some(format!("<Policy>{}</Policy>", policy_body(a, &m)))
        }
        "GetPolicyVersion" => {
            let m = find(policy_name(p.get("PolicyArn").unwrap_or_default(), a)?.into()).await?;
            if p.get("VersionId") != Some("v1") {
                return Err(no_policy("version (vmie keeps one version, v1)"));
            }
            Some(format!(
                "<PolicyVersion>{}<VersionId>v1</VersionId><IsDefaultVersion>true</IsDefaultVersion>{}</PolicyVersion>",
                leaf("Document", &document(&m.document)),
                leaf("CreateDate", &date(m.updated_ms))
            ))
        }
        "ListPolicies" => {
            let aws_only = p.get("Scope") == Some("AWS");
            let only_attached = p.bool("OnlyAttached")?.unwrap_or(false);
            let ps: Vec<Managed> = if aws_only {
                Vec::new()
            } else {
                c.managed_policies(a)
                    .await
                    .map_err(cfail)?
                    .into_iter()
                    .filter(|m| !only_attached || m.attachments > 0)
                    .collect()
            };
            let (ps, next) = page(p, ps)?;
            let items: String = ps
                .iter()
                .map(|m| format!("<member>{}</member>", policy_body(a, m)))
                .collect();
            Some(format!(
                "<Policies>{items}</Policies>{}",
                truncation(next.as_deref())
            ))
        }
        _ => {
            // DeletePolicy
            let policy = policy_name(p.get("PolicyArn").unwrap_or_default(), a)?;
            let m = find(policy.to_string()).await?;
            if m.attachments > 0 {
                return Err(super::users::conflict(format!(
                    "Cannot delete a policy attached to entities: {policy} is attached {} times.",
                    m.attachments
                )));
            }
            c.delete_policy(a, policy).await.map_err(cfail)?;
            None
        }
    })
}

/// SimulatePrincipalPolicy: what the one evaluator decides for the user or role, with the
/// context keys given (and the extra policies of `PolicyInputList`).
async fn simulate(p: &Params, cx: &Cx<'_>) -> Result<Option<String>, ApiError> {
    let a = &cx.who.account;
    let arn = p.get("PolicySourceArn").unwrap_or_default();
    let (kind, name) = if let Some(u) = arn.strip_prefix(&format!("arn:aws:iam::{a}:user/")) {
        (PrincipalKind::User, u)
    } else if let Some(r) = arn.strip_prefix(&format!("arn:aws:iam::{a}:role/")) {
        (PrincipalKind::Role, r)
    } else {
        return Err(ApiError::client(
            "InvalidInput",
            "PolicySourceArn must be a user or role ARN of this account",
        ));
    };
    let actions = p.strings("ActionNames.member")?;
    if actions.is_empty() {
        return Err(ApiError::client(
            "ValidationError",
            "ActionNames must name at least one action",
        ));
    }
    let resources = p.strings("ResourceArns.member")?;
    let extra = p
        .strings("PolicyInputList.member")?
        .iter()
        .map(|d| Policy::parse(d))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::client("MalformedPolicyDocument", e.0))?;
    let mut keys = Vec::new();
    for e in p.list("ContextEntries.member")? {
        let key = e.required("ContextKeyName")?.to_string();
        keys.push((key, e.strings("ContextKeyValues.member")?));
    }
    let results = cx
        .env
        .identity
        .simulate(
            a,
            kind,
            name,
            &crate::identity::manage::Simulation {
                extra: &extra,
                actions: &actions,
                resources: &resources,
                keys: &keys,
            },
        )
        .await
        .map_err(fail)?;
    let (results, next) = page(p, results)?;
    let items: String = results
        .iter()
        .map(|(action, resource, d)| {
            format!(
                "<member>{}{}{}<MatchedStatements/><MissingContextValues/></member>",
                leaf("EvalActionName", action),
                leaf("EvalResourceName", resource),
                leaf(
                    "EvalDecision",
                    match d {
                        Decision::Allow => "allowed",
                        Decision::ExplicitDeny => "explicitDeny",
                        Decision::ImplicitDeny => "implicitDeny",
                    }
                )
            )
        })
        .collect();
    Ok(Some(format!(
        "<EvaluationResults>{items}</EvaluationResults>{}",
        truncation(next.as_deref())
    )))
}
