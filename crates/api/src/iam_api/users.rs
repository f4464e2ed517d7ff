//! Users and their access keys.

use catalog::iam::PrincipalKind;

use super::{answer_user, cfail, check_path, date, fail, leaf, page, truncation, user_or_self};
use crate::error::ApiError;
use crate::handler::Cx;
use crate::query::Params;

/// Runs the user and access key action `name`; the result element's content.
pub(super) async fn run(name: &str, p: &Params, cx: &Cx<'_>) -> Result<Option<String>, ApiError> {
    let id = &cx.env.identity;
    let c = id.catalog();
    let a = &cx.who.account;
    let get = |k: &str| p.get(k).unwrap_or_default();
    Ok(match name {
        "CreateUser" => {
            check_path(p, "Path")?;
            id.create_user(a, get("UserName")).await.map_err(fail)?;
            let u = find_user(cx, get("UserName")).await?;
            Some(answer_user(a, &u.name, u.created_ms))
        }
        "GetUser" => {
            let name = user_or_self(p, cx.who);
            if name.is_empty() {
                return Err(ApiError::client(
                    "ValidationError",
                    "Must specify userName when calling with non-User credentials",
                ));
            }
            let u = find_user(cx, &name).await?;
            Some(answer_user(a, &u.name, u.created_ms))
        }
        "ListUsers" => {
            let users = c.users(a).await.map_err(cfail)?;
            let (users, next) = page(p, users)?;
            let items: String = users
                .iter()
                .map(|u| format!("<member>{}</member>", user_body(a, &u.name, u.created_ms)))
                .collect();
            Some(format!(
                "<Users>{items}</Users>{}",
                truncation(next.as_deref())
            ))
        }
        "DeleteUser" => {
            let user = get("UserName");
            if let Some(why) = id
                .deletion_conflict(a, PrincipalKind::User, user)
                .await
                .map_err(fail)?
            {
                return Err(conflict(why));
            }
            c.delete_principal(a, PrincipalKind::User, user)
                .await
                .map_err(cfail)?;
            None
        }
        _ => keys(name, p, cx).await?,
    })
}

/// `DeleteConflict`.
pub(super) fn conflict(message: String) -> ApiError {
    ApiError {
        status: 409,
        code: "DeleteConflict".into(),
        message,
    }
}

async fn find_user(cx: &Cx<'_>, name: &str) -> Result<catalog::iam::User, ApiError> {
    cx.env
        .identity
        .catalog()
        .users(&cx.who.account)
        .await
        .map_err(cfail)?
        .into_iter()
        .find(|u| u.name == name)
        .ok_or_else(|| no_user(name))
}

pub(super) fn no_user(name: &str) -> ApiError {
    ApiError {
        status: 404,
        code: "NoSuchEntity".into(),
        message: format!(
            "The user with name {} cannot be found.",
            engine::request::shown(name)
        ),
    }
}

/// A user's members (`Path`, `UserName`, `UserId`, `Arn`, `CreateDate`).
pub(super) fn user_body(account: &str, name: &str, created_ms: i64) -> String {
    format!(
        "<Path>/</Path>{}{}{}{}",
        leaf("UserName", name),
        leaf("UserId", &crate::identity::unique_id("AIDA", account, name)),
        leaf("Arn", &super::user_arn(account, name)),
        leaf("CreateDate", &date(created_ms))
    )
}

/// The access key actions.
async fn keys(name: &str, p: &Params, cx: &Cx<'_>) -> Result<Option<String>, ApiError> {
    let id = &cx.env.identity;
    let c = id.catalog();
    let a = &cx.who.account;
    let user = user_or_self(p, cx.who);
    if user.is_empty() && name != "GetAccessKeyLastUsed" {
        return Err(ApiError::client(
            "ValidationError",
            "Must specify userName when calling with non-User credentials",
        ));
    }
    let key_of_user = |k: &str| {
        let k = k.to_string();
        let user = user.clone();
        async move {
            c.access_key(&k)
                .await
                .map_err(cfail)?
                .filter(|x| x.account == *a && x.user_name == user)
                .ok_or_else(|| ApiError {
                    status: 404,
                    code: "NoSuchEntity".into(),
                    message: format!(
                        "The Access Key with id {} cannot be found.",
                        engine::request::shown(&k)
                    ),
                })
        }
    };
    Ok(match name {
        "CreateAccessKey" => {
            let k = id.create_access_key(a, &user).await.map_err(|e| match e {
                crate::identity::IdentityError::Catalog(catalog::CatalogError::NotFound(_)) => {
                    no_user(&user)
                }
                e => fail(e),
            })?;
            Some(format!(
                "<AccessKey>{}{}<Status>Active</Status>{}{}</AccessKey>",
                leaf("UserName", &k.user_name),
                leaf("AccessKeyId", &k.access_key_id),
                leaf("SecretAccessKey", k.secret_access_key.as_str()),
                leaf("CreateDate", &date(catalog::now_ms()))
            ))
        }
        "ListAccessKeys" => {
            if !c
                .principal_exists(a, PrincipalKind::User, &user)
                .await
                .map_err(cfail)?
            {
                return Err(no_user(&user));
            }
            let ks = c.access_keys(a, Some(&user)).await.map_err(cfail)?;
            let (ks, next) = page(p, ks)?;
            let items: String = ks
                .iter()
                .map(|k| {
                    format!(
                        "<member>{}{}{}{}</member>",
                        leaf("UserName", &k.user_name),
                        leaf("AccessKeyId", &k.access_key_id),
                        leaf("Status", &k.status),
                        leaf("CreateDate", &date(k.created_ms))
                    )
                })
                .collect();
            Some(format!(
                "<AccessKeyMetadata>{items}</AccessKeyMetadata>{}",
                truncation(next.as_deref())
            ))
        }
        "UpdateAccessKey" => {
            let status = p.get("Status").unwrap_or_default();
            if !matches!(status, "Active" | "Inactive") {
                return Err(ApiError::client(
                    "ValidationError",
                    "Status must be Active or Inactive",
                ));
            }
            let k = key_of_user(p.get("AccessKeyId").unwrap_or_default()).await?;
            c.set_access_key_status(a, &k.access_key_id, status)
                .await
                .map_err(cfail)?;
            None
        }
        "DeleteAccessKey" => {
            let k = key_of_user(p.get("AccessKeyId").unwrap_or_default()).await?;
            c.delete_access_key(a, &k.access_key_id)
                .await
                .map_err(cfail)?;
            None
        }
        _ => last_used(p, cx).await?,
    })
}

/// GetAccessKeyLastUsed: any key of the account.
async fn last_used(p: &Params, cx: &Cx<'_>) -> Result<Option<String>, ApiError> {
    let c = cx.env.identity.catalog();
    let a = &cx.who.account;
    let kid = p.get("AccessKeyId").unwrap_or_default();
    let k = c
        .access_key(kid)
        .await
        .map_err(cfail)?
        .filter(|x| x.account == *a)
        .ok_or_else(|| ApiError {
            status: 404,
            code: "NoSuchEntity".into(),
            message: "The Access Key cannot be found.".into(),
        })?;
    let used = match k.last_used_ms {
        Some(ms) => format!(
            "{}<ServiceName>N/A</ServiceName>{}",
            leaf("LastUsedDate", &date(ms)),
            leaf("Region", &cx.env.region)
        ),
        None => "<ServiceName>N/A</ServiceName><Region>N/A</Region>".into(),
    };
    Ok(Some(format!(
        "{}<AccessKeyLastUsed>{used}</AccessKeyLastUsed>",
        leaf("UserName", &k.user_name)
    )))
}
