//! The STS actions vmie serves (query protocol, 2011-06-15): `GetSessionToken`, which turns
//! a user's long-term key — plus, optionally, a code from the user's virtual MFA device —
//! into temporary credentials; `GetCallerIdentity`; and `AssumeRole`, which gives temporary
//! credentials of a role whose trust policy allows the caller. Requests signed for the
//! service `sts` arrive here.

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

/// `<{action}Response>` of STS with `result` inside its result element.
fn sts_answer(action: &str, result: &str, request_id: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>{}<{action}Response xmlns="{NS}"><{action}Result>{result}</{action}Result><ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata></{action}Response>"#,
        "\n",
        escape(request_id)
    )
}

/// A parsed `GetCallerIdentity`: who the credentials are — a user, a user's session, or a
/// session of an assumed role (`arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`).
#[derive(Debug)]
pub struct GetCallerIdentity;

impl Handler for GetCallerIdentity {
    const SPEC: Spec = Spec {
        service: Service::Sts,
        name: "GetCallerIdentity",
        iam_action: "sts:GetCallerIdentity",
        read_only: true,
        authz: Authz::UnlessDenied,
        resources: &[],
        tags: Tags::None,
        condition_keys: &[],
        params: &[],
    };

    fn parse(input: Input<'_>, _env: &Env, _who: &Principal) -> Result<Self, ApiError> {
        input.params()?;
        Ok(GetCallerIdentity)
    }

    fn declare(&self, _env: &Env, _who: &Principal, _d: &mut Declaration) {}

    async fn run(self, cx: &Cx<'_>) -> Result<String, ApiError> {
        let w = cx.who;
        let user_id = match &w.role {
            Some(r) => format!(
                "{}:{}",
                crate::identity::unique_id("AROA", &w.account, &r.role),
                r.session
            ),
            None => crate::identity::unique_id("AIDA", &w.account, &w.user),
        };
        Ok(sts_answer(
            "GetCallerIdentity",
            &format!(
                "<Arn>{}</Arn><UserId>{}</UserId><Account>{}</Account>",
                escape(&w.arn),
                escape(&user_id),
                escape(&w.account)
            ),
            cx.request_id,
        ))
    }
}

/// A parsed `AssumeRole`: temporary credentials of a role whose trust policy allows the
/// caller (an MFA code, when given and right, fills `aws:MultiFactorAuthPresent`; a session
/// policy narrows what the role's policies allow).
#[derive(Debug)]
pub struct AssumeRole {
    role: String,
    session: String,
    duration: Option<i64>,
    mfa: Option<(String, Zeroizing<String>)>,
    policy: Option<String>,
    external_id: Option<String>,
}

impl Handler for AssumeRole {
    const SPEC: Spec = Spec {
        service: Service::Sts,
        name: "AssumeRole",
        iam_action: "sts:AssumeRole",
        read_only: false,
        authz: Authz::Trusted,
        resources: &["role"],
        tags: Tags::None,
        condition_keys: &[],
        params: &[
            plain("RoleArn"),
            plain("RoleSessionName"),
            plain("DurationSeconds"),
            plain("SerialNumber"),
            field("TokenCode", Kind::Secret),
            field("Policy", Kind::Token),
            field("ExternalId", Kind::Token),
        ],
    };

    fn parse(input: Input<'_>, _env: &Env, who: &Principal) -> Result<Self, ApiError> {
        let p = input.params()?;
        let arn = p.required("RoleArn")?;
        let prefix = format!("arn:aws:iam::{}:role/", who.account);
        let role = arn
            .strip_prefix(&prefix)
            .filter(|r| !r.is_empty() && !r.contains('/'))
            .ok_or_else(|| {
                ApiError::client(
                    "ValidationError",
                    format!("RoleArn must be a role of this account ({prefix}NAME)"),
                )
            })?;
        let session = p.required("RoleSessionName")?;
        let ok = (2..=64).contains(&session.len())
            && session
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"+=,.@_-".contains(&c));
        if !ok {
            return Err(ApiError::client(
                "ValidationError",
                "RoleSessionName is 2 to 64 letters, digits and +=,.@_- characters",
            ));
        }
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
        Ok(AssumeRole {
            role: role.to_string(),
            session: session.to_string(),
            duration: p.int("DurationSeconds", 900..=43_200)?,
            mfa,
            policy: p.get("Policy").map(str::to_string),
            external_id: p.get("ExternalId").map(str::to_string),
        })
    }

    fn declare(&self, _env: &Env, who: &Principal, d: &mut Declaration) {
        d.touches(format!("arn:aws:iam::{}:role/{}", who.account, self.role));
    }

    async fn run(self, cx: &Cx<'_>) -> Result<String, ApiError> {
        let mut ctx = crate::authz::global_context(cx.env, cx.who, cx.origin, "sts:AssumeRole");
        if let Some(e) = &self.external_id {
            ctx = ctx.with("sts:ExternalId", &[e]);
        }
        let req = crate::identity::manage::AssumeRequest {
            role: &self.role,
            session: &self.session,
            duration: self.duration,
            mfa: self.mfa.as_ref().map(|(s, c)| (s.as_str(), c.as_str())),
            policy: self.policy.as_deref(),
        };
        let a = cx
            .env
            .identity
            .assume_role(cx.who, &req, ctx, cx.now)
            .await?;
        let s = &a.session;
        Ok(sts_answer(
            "AssumeRole",
            &format!(
                "<Credentials><AccessKeyId>{}</AccessKeyId><SecretAccessKey>{}</SecretAccessKey><SessionToken>{}</SessionToken><Expiration>{}</Expiration></Credentials><AssumedRoleUser><AssumedRoleId>{}</AssumedRoleId><Arn>{}</Arn></AssumedRoleUser><PackedPolicySize>0</PackedPolicySize>",
                s.access_key_id,
                escape(s.secret_access_key.as_str()),
                escape(s.session_token.as_str()),
                crate::sigv4::format_iso8601(s.expires.saturating_mul(1000)),
                escape(&a.assumed_role_id),
                escape(&a.arn),
            ),
            cx.request_id,
        ))
    }
}
