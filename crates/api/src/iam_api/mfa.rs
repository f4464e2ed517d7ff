//! Virtual MFA devices: made (their secret shown once), enabled for a user with two
//! consecutive codes, listed, deactivated and deleted.

use base64::Engine as _;

use super::{cfail, check_path, date, fail, leaf, page, truncation, user_or_self};
use crate::error::ApiError;
use crate::handler::Cx;
use crate::query::Params;

/// Runs the MFA action `name`; the result element's content.
pub(super) async fn run(name: &str, p: &Params, cx: &Cx<'_>) -> Result<Option<String>, ApiError> {
    let id = &cx.env.identity;
    let c = id.catalog();
    let a = &cx.who.account;
    let get = |k: &str| p.get(k).unwrap_or_default();
    Ok(match name {
        "CreateVirtualMFADevice" => {
            check_path(p, "Path")?;
            let (serial, seed, _uri) = id
                .create_virtual_mfa(a, get("VirtualMFADeviceName"))
                .await
                .map_err(fail)?;
            // A blob: base64 of the Base32 text an authenticator app takes.
            let seed = zeroize::Zeroizing::new(
                base64::engine::general_purpose::STANDARD.encode(seed.as_bytes()),
            );
            Some(format!(
                "<VirtualMFADevice>{}{}</VirtualMFADevice>",
                leaf("SerialNumber", &serial),
                leaf("Base32StringSeed", &seed)
            ))
        }
        "EnableMFADevice" => {
            id.enable_mfa_device(
                a,
                get("UserName"),
                get("SerialNumber"),
                (get("AuthenticationCode1"), get("AuthenticationCode2")),
                cx.now,
            )
            .await?;
            None
        }
        "DeactivateMFADevice" => {
            let user = user_or_self(p, cx.who);
            c.deactivate_mfa(a, &user, get("SerialNumber"))
                .await
                .map_err(cfail)?;
            None
        }
        "DeleteVirtualMFADevice" => {
            c.delete_virtual_mfa(a, get("SerialNumber"))
                .await
                .map_err(|e| match e {
                    catalog::CatalogError::Conflict(m) => super::users::conflict(m),
                    e => cfail(e),
                })?;
            None
        }
        "ListMFADevices" => {
            let user = user_or_self(p, cx.who);
            if !c
                .principal_exists(a, catalog::iam::PrincipalKind::User, &user)
                .await
                .map_err(cfail)?
            {
                return Err(super::users::no_user(&user));
            }
            let mut items = String::new();
            if let Some(serial) = c.mfa_serial(a, &user).await.map_err(cfail)? {
                let serial = serial.unwrap_or_else(|| crate::identity::mfa_serial(a, &user));
                let enabled = c
                    .virtual_mfa(a, &serial)
                    .await
                    .map_err(cfail)?
                    .and_then(|d| d.enabled_ms)
                    .unwrap_or(0);
                items = format!(
                    "<member>{}{}{}</member>",
                    leaf("UserName", &user),
                    leaf("SerialNumber", &serial),
                    leaf("EnableDate", &date(enabled))
                );
            }
            Some(format!(
                "<MFADevices>{items}</MFADevices><IsTruncated>false</IsTruncated>"
            ))
        }
        _ => list_virtual(p, cx).await?,
    })
}

/// ListVirtualMFADevices.
async fn list_virtual(p: &Params, cx: &Cx<'_>) -> Result<Option<String>, ApiError> {
    let c = cx.env.identity.catalog();
    let a = &cx.who.account;
    let status = p.get("AssignmentStatus").unwrap_or("Any");
    if !matches!(status, "Assigned" | "Unassigned" | "Any") {
        return Err(ApiError::client(
            "ValidationError",
            "AssignmentStatus is Assigned, Unassigned or Any",
        ));
    }
    let users = c.users(a).await.map_err(cfail)?;
    let ds: Vec<_> = c
        .virtual_mfas(a)
        .await
        .map_err(cfail)?
        .into_iter()
        .filter(|d| match status {
            "Assigned" => d.user_name.is_some(),
            "Unassigned" => d.user_name.is_none(),
            _ => true,
        })
        .collect();
    let (ds, next) = page(p, ds)?;
    let items: String = ds
        .iter()
        .map(|d| {
            let user = d.user_name.as_ref().map_or(String::new(), |u| {
                let created = users
                    .iter()
                    .find(|x| x.name == *u)
                    .map_or(0, |x| x.created_ms);
                format!(
                    "<User>{}</User>{}",
                    super::users::user_body(a, u, created),
                    leaf("EnableDate", &date(d.enabled_ms.unwrap_or(0)))
                )
            });
            format!("<member>{}{user}</member>", leaf("SerialNumber", &d.serial))
        })
        .collect();
    Ok(Some(format!(
        "<VirtualMFADevices>{items}</VirtualMFADevices>{}",
        truncation(next.as_deref())
    )))
}
