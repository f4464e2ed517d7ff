//! Who an S3 request is, and whether it may: s3s verifies the SigV4 signature (header,
//! presigned, `aws-chunked`) with the secret [`Auth`] opens from vmie's identities; then
//! [`Access`] — s3s's access hook, run before any operation — checks the scope (this region,
//! service `s3`), resolves the principal (a session key needs its token), and has
//! [`crate::authz`] decide on the action table row's declaration. Nothing S3 does is
//! authorized anywhere else.

use axum::http::{HeaderMap, Uri, header};
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::path::S3Path;
use s3s::{S3Error, S3ErrorCode, S3Result, s3_error};

use crate::action::Action;
use crate::error::ApiError;
use crate::handler::{Env, Input, Origin};
use crate::identity::Identity;
use crate::sigv4::AuthError;
use crate::spec::{Service, Spec};

use super::{Caller, Slot, Target};

/// The secrets of vmie's access keys, for s3s's signature check.
pub struct Auth {
    /// The identities.
    pub identity: Identity,
}

fn auth_error(e: &AuthError) -> S3Error {
    match e {
        AuthError::UnknownKey(_) => s3_error!(
            InvalidAccessKeyId,
            "The AWS Access Key Id you provided does not exist in our records."
        ),
        AuthError::Expired(m) => S3Error::with_message(S3ErrorCode::ExpiredToken, m.clone()),
        e => S3Error::with_message(S3ErrorCode::AccessDenied, e.to_string()),
    }
}

#[async_trait::async_trait]
impl S3Auth for Auth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        let now = catalog::now_ms() / 1000;
        let s = self
            .identity
            .signing_secret(access_key, now)
            .await
            .map_err(|e| auth_error(&e))?;
        Ok(SecretKey::from(s.as_str()))
    }
}

/// vmie's authorization of S3 operations.
pub struct Access {
    /// The environment (identities, policies, the region).
    pub env: Env,
    /// The per-user request rate the whole endpoint shares (`rate_limit`): S3 requests
    /// count against the same budget as EC2, KMS, IAM, STS and CloudTrail ones.
    pub limiter: std::sync::Arc<crate::limiter::Limiter>,
}

/// The access key a request names, from `Authorization` or `X-Amz-Credential`.
#[must_use]
pub fn access_key_of(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    let cred = if let Some(a) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        a.split("Credential=")
            .nth(1)?
            .split('/')
            .next()?
            .to_string()
    } else {
        query(uri, "X-Amz-Credential")?
            .split('/')
            .next()?
            .to_string()
    };
    (!cred.is_empty() && cred.len() <= 128).then_some(cred)
}

fn query(uri: &Uri, name: &str) -> Option<String> {
    form_urlencoded::parse(uri.query()?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The scope (region, service) a SigV4 request was signed for; `None` for anything else
/// (SigV2 is not served).
fn scope(headers: &HeaderMap, uri: &Uri) -> Option<(String, String)> {
    let cred = match headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        Some(a) if a.starts_with("AWS4-HMAC-SHA256 ") => a
            .split("Credential=")
            .nth(1)?
            .split(',')
            .next()?
            .to_string(),
        Some(_) => return None,
        None if query(uri, "X-Amz-Algorithm").as_deref() == Some("AWS4-HMAC-SHA256") => {
            query(uri, "X-Amz-Credential")?
        }
        None => return None,
    };
    let mut p = cred.trim().split('/');
    let (_, _, region, service) = (p.next()?, p.next()?, p.next()?, p.next()?);
    Some((region.to_string(), service.to_string()))
}

/// The bucket and key of a path as s3s read it.
fn target_of(path: &S3Path, uri: &Uri) -> Target {
    let (bucket, key) = match path {
        S3Path::Root => (String::new(), String::new()),
        S3Path::Bucket { bucket } => (bucket.to_string(), String::new()),
        S3Path::Object { bucket, key } => (bucket.to_string(), key.to_string()),
    };
    Target {
        bucket,
        key,
        prefix: query(uri, "prefix"),
        delimiter: query(uri, "delimiter"),
        keys: Vec::new(),
    }
}

/// The parameters an S3 record carries: bucket, key, listing and upload parameters, the
/// copy source and the host; never a signature or a body.
#[must_use]
pub fn record_params(uri: &Uri, headers: &HeaderMap, domains: &[String]) -> Vec<(String, String)> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let mut out = Vec::new();
    let path = percent(uri.path().trim_start_matches('/'));
    let (bucket, key) = match super::virtual_bucket(&host, domains) {
        Some((b, _)) => (b.to_string(), path),
        None => match path.split_once('/') {
            Some((b, k)) => (b.to_string(), k.to_string()),
            None => (path, String::new()),
        },
    };
    if !bucket.is_empty() {
        out.push(("bucketName".into(), bucket));
    }
    if !key.is_empty() {
        out.push(("key".into(), key));
    }
    for name in ["prefix", "delimiter", "uploadId", "partNumber"] {
        if let Some(v) = query(uri, name) {
            out.push((name.into(), v));
        }
    }
    for name in ["x-amz-copy-source", "range"] {
        if let Some(v) = headers.get(name).and_then(|v| v.to_str().ok()) {
            out.push((name.into(), v.to_string()));
        }
    }
    if !host.is_empty() {
        out.push(("Host".into(), host));
    }
    out
}

/// `s` with `%XX` escapes decoded (a path: `+` stays a plus).
fn percent(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| char::from(c).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The S3 error of a refusal.
pub fn refusal(e: &ApiError) -> S3Error {
    let mut err = S3Error::with_message(
        e.code
            .parse::<S3ErrorCode>()
            .unwrap_or(S3ErrorCode::AccessDenied),
        e.message.clone(),
    );
    if let Ok(s) = axum::http::StatusCode::from_u16(e.status) {
        err.set_status_code(s);
    }
    err
}

impl Access {
    /// Decides `spec` on `target` for `caller`, as every action is decided.
    pub async fn decide(
        env: &Env,
        caller: &Caller,
        spec: &'static Spec,
        target: &Target,
    ) -> Result<(), ApiError> {
        let action = Action::parse(spec, Input::S3(target), env, &caller.who)?;
        let decl = action.declare(env, &caller.who);
        crate::authz::authorize(env, &caller.who, &caller.origin, spec, &decl).await
    }

    /// CopyObject reads its source: `s3:GetObject` on it, decided as a GetObject of it.
    async fn copy_source_readable(
        env: &Env,
        caller: &Caller,
        headers: &HeaderMap,
    ) -> Result<(), ApiError> {
        let src = headers
            .get("x-amz-copy-source")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| s3s::dto::CopySource::parse(v).ok());
        let Some(s3s::dto::CopySource::Bucket { bucket, key, .. }) = src else {
            return Err(ApiError::client(
                "InvalidArgument",
                "x-amz-copy-source must name BUCKET/KEY",
            ));
        };
        let get = Action::spec_of(Service::S3, "GetObject").ok_or_else(|| ApiError {
            status: 403,
            code: "AccessDenied".into(),
            message: "GetObject is not in the table".into(),
        })?;
        let source = Target {
            bucket: bucket.to_string(),
            key: key.to_string(),
            ..Target::default()
        };
        Self::decide(env, caller, get, &source).await
    }

    async fn check_inner(&self, cx: &mut S3AccessContext<'_>, slot: &Slot) -> Result<(), ApiError> {
        let denied = |m: &str| ApiError {
            status: 403,
            code: "AccessDenied".into(),
            message: m.to_string(),
        };
        let name = cx.s3_op().name().to_string();
        let name = name.as_str();
        let spec = Action::spec_of(Service::S3, name).ok_or_else(|| ApiError {
            status: 501,
            code: "NotImplemented".into(),
            message: format!("{name} is not an operation this endpoint serves"),
        })?;
        slot.with(|s| s.spec = Some(spec));
        let Some(cred) = cx.credentials() else {
            return Err(denied(
                "Anonymous requests are not served: sign the request (SigV4)",
            ));
        };
        let access_key = cred.access_key.clone();
        let (region, service) = scope(cx.headers(), cx.uri())
            .ok_or_else(|| denied("Only AWS Signature Version 4 (AWS4-HMAC-SHA256) is accepted"))?;
        if region != self.env.region || service != "s3" {
            return Err(ApiError {
                status: 400,
                code: "AuthorizationHeaderMalformed".into(),
                message: format!(
                    "the credential should be scoped to the region {} and the service s3, not {region:?} and {service:?}",
                    self.env.region
                ),
            });
        }
        let token = cx
            .headers()
            .get("x-amz-security-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| query(cx.uri(), "X-Amz-Security-Token"));
        let now = catalog::now_ms() / 1000;
        let who = self
            .env
            .identity
            .principal_of_key(&access_key, token.as_deref(), now)
            .await
            .map_err(|e| ApiError {
                status: 403,
                code: match e {
                    AuthError::Expired(_) => "ExpiredToken",
                    AuthError::UnknownKey(_) => "InvalidToken",
                    _ => "AccessDenied",
                }
                .into(),
                message: e.to_string(),
            })?;
        slot.with(|s| s.who = Some(who.clone()));
        if !self.limiter.allow_async(&who.arn).await {
            // S3's own answer to a caller over its rate; the SDKs retry it with back-off.
            return Err(ApiError {
                status: 503,
                code: "SlowDown".into(),
                message: "Please reduce your request rate.".into(),
            });
        }
        let mut origin = cx
            .extensions_mut()
            .get::<Origin>()
            .cloned()
            .unwrap_or(Origin {
                source_ip: std::net::IpAddr::from([127, 0, 0, 1]),
                secure: false,
                mfa: false,
            });
        origin.mfa = who.mfa;
        let caller = Caller { who, origin };
        let target = target_of(cx.s3_path(), cx.uri());
        cx.extensions_mut().insert(caller.clone());
        // DeleteObjects is decided key by key once its body is read (the operation does).
        if name == "DeleteObjects" {
            return Ok(());
        }
        Self::decide(&self.env, &caller, spec, &target).await?;
        if name == "CopyObject" {
            Self::copy_source_readable(&self.env, &caller, cx.headers()).await?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl S3Access for Access {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let slot = cx
            .extensions_mut()
            .get::<Slot>()
            .cloned()
            .unwrap_or_default();
        match self.check_inner(cx, &slot).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let err = refusal(&e);
                slot.with(|s| s.error = Some(e));
                Err(err)
            }
        }
    }
}
