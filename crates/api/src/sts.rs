//! The STS actions vmie serves: `GetSessionToken` (query protocol, 2011-06-15), which turns
//! a user's long-term key — plus, optionally, a code from the user's virtual MFA device —
//! into temporary credentials. Requests signed for the service `sts` arrive here.

use quick_xml::escape::escape;

use zeroize::Zeroizing;

use crate::error::ApiError;
use crate::handler::{Cx, Env};
use crate::handler::{Declaration, Handler, Input};
use crate::identity::Principal;
use crate::spec::{Authz, Kind, Service, Spec, Tags, field, plain};

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

/// A parsed `GetSessionToken`.
#[derive(Debug)]
pub struct GetSessionToken {
    duration: i64,
    mfa: Option<(String, Zeroizing<String>)>,
}

impl Handler for GetSessionToken {
    const SPEC: Spec = Spec {
        service: Service::Sts,
        name: "GetSessionToken",
        iam_action: "sts:GetSessionToken",
        read_only: false,
        authz: Authz::UnlessDenied,
        resources: &[],
        tags: Tags::None,
        condition_keys: &[],
        params: &[
            plain("DurationSeconds"),
            plain("SerialNumber"),
            field("TokenCode", Kind::Secret),
        ],
    };

    fn parse(input: Input<'_>, _env: &Env, _who: &Principal) -> Result<Self, ApiError> {
        let p = input.params()?;
        let duration = p.int("DurationSeconds", 900..=129_600)?.unwrap_or(43_200);
        let mfa = match (p.get("SerialNumber"), p.get("TokenCode")) {
            (Some(s), Some(c)) => Some((s.to_string(), Zeroizing::new(c.to_string()))),
            (None, None) => None,
            _ => {
                return Err(ApiError::client(
                    "ValidationError",
                    "SerialNumber and TokenCode go together",
                ));
            }
        };
        Ok(GetSessionToken { duration, mfa })
    }

    fn declare(&self, _env: &Env, _who: &Principal, _d: &mut Declaration) {}

    async fn run(self, cx: &Cx<'_>) -> Result<String, ApiError> {
        let mfa = self.mfa.as_ref().map(|(s, c)| (s.as_str(), c.as_str()));
        let s = cx
            .env
            .identity
            .get_session_token(cx.who, mfa, self.duration, cx.now)
            .await
            .map_err(|(code, message)| {
                if code == "AccessDenied" {
                    ApiError {
                        status: 403,
                        code: code.into(),
                        message,
                    }
                } else {
                    // The catalog's own words stay in the service log.
                    let mut e = ApiError::internal("GetSessionToken failed", &message);
                    e.code = code.into();
                    e
                }
            })?;
        Ok(format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>{}<GetSessionTokenResponse xmlns="{NS}"><GetSessionTokenResult><Credentials><AccessKeyId>{}</AccessKeyId><SecretAccessKey>{}</SecretAccessKey><SessionToken>{}</SessionToken><Expiration>{}</Expiration></Credentials></GetSessionTokenResult><ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata></GetSessionTokenResponse>"#,
            "\n",
            s.access_key_id,
            escape(s.secret_access_key.as_str()),
            escape(s.session_token.as_str()),
            crate::sigv4::format_iso8601(s.expires.saturating_mul(1000)),
            cx.request_id
        ))
    }
}
