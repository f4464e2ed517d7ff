//! Roles with their trust policies.

use catalog::iam::PrincipalKind;
use catalog::iam_api::Role;

use super::{cfail, check_path, date, document, fail, leaf, page, role_arn, truncation};
use crate::error::ApiError;
use crate::handler::Cx;
use crate::query::Params;

/// Runs the role action `name`; the result element's content.
pub(super) async fn run(name: &str, p: &Params, cx: &Cx<'_>) -> Result<Option<String>, ApiError> {
    let id = &cx.env.identity;
    let c = id.catalog();
    let a = &cx.who.account;
    let role = p.get("RoleName").unwrap_or_default();
    Ok(match name {
        "CreateRole" => {
            check_path(p, "Path")?;
            let max = p.int("MaxSessionDuration", 3600..=43_200)?.unwrap_or(3600);
            id.create_role_with(
                a,
                role,
                p.get("AssumeRolePolicyDocument"),
                p.get("Description").unwrap_or_default(),
                max,
            )
            .await
            .map_err(fail)?;
            Some(format!(
                "<Role>{}</Role>",
                role_body(a, &find(cx, role).await?)
            ))
        }
        "GetRole" => Some(format!(
            "<Role>{}</Role>",
            role_body(a, &find(cx, role).await?)
        )),
        "ListRoles" => {
            let roles = c.roles_full(a).await.map_err(cfail)?;
            let (roles, next) = page(p, roles)?;
            let items: String = roles
                .iter()
                .map(|r| format!("<member>{}</member>", role_body(a, r)))
                .collect();
            Some(format!(
                "<Roles>{items}</Roles>{}",
                truncation(next.as_deref())
            ))
        }
        "DeleteRole" => {
            if let Some(why) = id
                .deletion_conflict(a, PrincipalKind::Role, role)
                .await
                .map_err(|e| match e {
                    crate::identity::IdentityError::Catalog(catalog::CatalogError::NotFound(_)) => {
                        no_role(role)
                    }
                    e => fail(e),
                })?
            {
                return Err(super::users::conflict(why));
            }
            c.delete_principal(a, PrincipalKind::Role, role)
                .await
                .map_err(cfail)?;
            None
        }
        _ => {
            // UpdateAssumeRolePolicy
            find(cx, role).await?;
            id.update_trust_policy(a, role, p.get("PolicyDocument").unwrap_or_default())
                .await
                .map_err(fail)?;
            None
        }
    })
}

pub(super) fn no_role(name: &str) -> ApiError {
    ApiError {
        status: 404,
        code: "NoSuchEntity".into(),
        message: format!(
            "The role with name {} cannot be found.",
            engine::request::shown(name)
        ),
    }
}

async fn find(cx: &Cx<'_>, name: &str) -> Result<Role, ApiError> {
    cx.env
        .identity
        .catalog()
        .role(&cx.who.account, name)
        .await
        .map_err(cfail)?
        .ok_or_else(|| no_role(name))
}

fn role_body(account: &str, r: &Role) -> String {
    let mut out = format!(
        "<Path>/</Path>{}{}{}{}",
        leaf("RoleName", &r.name),
        leaf(
            "RoleId",
            &crate::identity::unique_id("AROA", account, &r.name)
        ),
        leaf("Arn", &role_arn(account, &r.name)),
        leaf("CreateDate", &date(r.created_ms)),
    );
    if let Some(t) = &r.trust_policy {
        out.push_str(&leaf("AssumeRolePolicyDocument", &document(t)));
    }
    if !r.description.is_empty() {
        out.push_str(&leaf("Description", &r.description));
    }
    out.push_str(&leaf("MaxSessionDuration", &r.max_session.to_string()));
    out
}
