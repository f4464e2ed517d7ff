//! Console passwords: `CreateLoginProfile`, `GetLoginProfile`, `UpdateLoginProfile`,
//! `DeleteLoginProfile` (over [`crate::identity::login`], which `vmie admin login-profile`
//! calls too). The password is a secret parameter: recorded as present only.

use zeroize::Zeroizing;

use super::{cfail, date, leaf};
use crate::error::ApiError;
use crate::handler::Cx;
use crate::query::Params;

fn no_profile(user: &str) -> ApiError {
    ApiError {
        status: 404,
        code: "NoSuchEntity".into(),
        message: format!(
            "Login Profile for User {} cannot be found.",
            engine::request::shown(user)
        ),
    }
}

fn profile_body(user: &str, created_ms: i64, reset: bool) -> String {
    format!(
        "<LoginProfile>{}{}<PasswordResetRequired>{reset}</PasswordResetRequired></LoginProfile>",
        leaf("UserName", user),
        leaf("CreateDate", &date(created_ms)),
    )
}

/// `<LoginProfile>…</LoginProfile>` of `user`.
async fn profile(cx: &Cx<'_>, user: &str) -> Result<String, ApiError> {
    let l = cx
        .env
        .identity
        .catalog()
        .login_profile(&cx.who.account, user)
        .await
        .map_err(cfail)?
        .ok_or_else(|| no_profile(user))?;
    Ok(profile_body(user, l.created_ms, l.reset_required))
}

/// Runs the login profile action `name`; the result element's content.
pub(super) async fn run(name: &str, p: &Params, cx: &Cx<'_>) -> Result<Option<String>, ApiError> {
    let id = &cx.env.identity;
    let a = &cx.who.account;
    let user = super::user_or_self(p, cx.who);
    let password = || p.get("Password").map(|s| Zeroizing::new(s.to_string()));
    let reset = p.bool("PasswordResetRequired")?;
    Ok(match name {
        "CreateLoginProfile" => {
            let pw = password().unwrap_or_default();
            if !id
                .create_login_profile(a, &user, pw, reset.unwrap_or(false))
                .await?
            {
                return Err(ApiError {
                    status: 409,
                    code: "EntityAlreadyExists".into(),
                    message: format!(
                        "Login Profile for user {} already exists.",
                        engine::request::shown(&user)
                    ),
                });
            }
            Some(profile(cx, &user).await?)
        }
        "GetLoginProfile" => Some(profile(cx, &user).await?),
        "UpdateLoginProfile" => {
            if !id.update_login_profile(a, &user, password(), reset).await? {
                return Err(no_profile(&user));
            }
            None
        }
        _ => {
            if !id
                .catalog()
                .delete_login_profile(a, &user)
                .await
                .map_err(cfail)?
            {
                return Err(no_profile(&user));
            }
            None
        }
    })
}
