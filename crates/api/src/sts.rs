//! The STS action vmie serves: `GetSessionToken` (query protocol, 2011-06-15), which turns
//! a user's long-term key — plus, optionally, a code from the user's virtual MFA device —
//! into temporary credentials. Requests signed for the service `sts` arrive here.

use quick_xml::escape::escape;

use crate::ec2::ApiError;
use crate::identity::{Identity, Principal};
use crate::query::Params;

/// The STS namespace.
pub const NS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";

/// The STS error document.
#[must_use]
pub fn error(e: &ApiError, request_id: &str) -> String {
    let kind = if e.status >= 500 {
        "Receiver"
    } else {
        "Sender"
    };
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>{}<ErrorResponse xmlns="{NS}"><Error><Type>{kind}</Type><Code>{}</Code><Message>{}</Message></Error><RequestId>{}</RequestId></ErrorResponse>"#,
        "\n",
        escape(&e.code),
        escape(&e.message),
        escape(request_id)
    )
}

/// Handles one authenticated STS request.
pub async fn handle(
    identity: &Identity,
    who: &Principal,
    p: &Params,
    request_id: &str,
    now: i64,
) -> Result<String, ApiError> {
    let action = p.required("Action")?;
    if action != "GetSessionToken" {
        return Err(ApiError::client(
            "InvalidAction",
            format!(
                "the action {} is not valid for this web service",
                engine::request::shown(action)
            ),
        ));
    }
    let duration = p.int("DurationSeconds", 900..=129_600)?.unwrap_or(43_200);
    let mfa = match (p.get("SerialNumber"), p.get("TokenCode")) {
        (Some(s), Some(c)) => Some((s, c)),
        (None, None) => None,
        _ => {
            return Err(ApiError::client(
                "ValidationError",
                "SerialNumber and TokenCode go together",
            ));
        }
    };
    let s = identity
        .get_session_token(who, mfa, duration, now)
        .await
        .map_err(|(code, message)| ApiError {
            status: if code == "AccessDenied" { 403 } else { 500 },
            code: code.into(),
            message,
        })?;
    Ok(format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>{}<GetSessionTokenResponse xmlns="{NS}"><GetSessionTokenResult><Credentials><AccessKeyId>{}</AccessKeyId><SecretAccessKey>{}</SecretAccessKey><SessionToken>{}</SessionToken><Expiration>{}</Expiration></Credentials></GetSessionTokenResult><ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata></GetSessionTokenResponse>"#,
        "\n",
        s.access_key_id,
        escape(s.secret_access_key.as_str()),
        escape(s.session_token.as_str()),
        crate::sigv4::format_iso8601(s.expires.saturating_mul(1000)),
        request_id
    ))
}
