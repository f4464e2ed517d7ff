//! CloudTrail's trail actions (JSON protocol 1.1), over the deployment's one trail (named by
//! `trail.name`, default `vmie`, in each account): `DescribeTrails`, `GetTrail`,
//! `GetTrailStatus`, `ListPublicKeys` (the digest signing keys, DER `RSAPublicKey`, with
//! their validity and fingerprints — what `aws cloudtrail validate-logs` fetches), and
//! `StartLogging` / `StopLogging` (allowed only by a policy that names them; recorded
//! whatever the status).

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::handler::{Cx, Declaration, Env, Handler, Input};
use crate::identity::Principal;
use crate::spec::{Authz, Service, Spec, Tags};

/// The trail's name in `env` (its default when no activity log is kept).
fn trail_name(env: &Env) -> String {
    env.audit.as_ref().map_or_else(
        || trail::DEFAULT_NAME.to_string(),
        |a| a.trail().config().name.clone(),
    )
}

fn trail_arn(env: &Env, account: &str) -> String {
    format!(
        "arn:aws:cloudtrail:{}:{account}:trail/{}",
        env.region,
        trail_name(env)
    )
}

fn not_found(name: &str, account: &str) -> ApiError {
    ApiError::client(
        "TrailNotFoundException",
        format!(
            "Unknown trail: {} for the user: {account}",
            engine::request::shown(name)
        ),
    )
}

fn no_log() -> ApiError {
    ApiError::client(
        "TrailNotFoundException",
        "this deployment keeps no activity log",
    )
}

fn internal(e: &trail::TrailError) -> ApiError {
    let mut e = ApiError::internal("activity log", e);
    e.code = "InternalFailure".into();
    e.message = "the activity log could not be read; the request may be retried".into();
    e
}

fn bad_body(e: &serde_json::Error) -> ApiError {
    ApiError::client(
        "SerializationException",
        format!("the request body does not parse: {e}"),
    )
}

/// Whether `name` (a name or an ARN) is the trail of `account`.
fn names_trail(env: &Env, account: &str, name: &str) -> bool {
    name == trail_name(env) || name == trail_arn(env, account)
}

/// The trail's description (`Trail`).
fn describe(env: &Env, account: &str) -> Option<Value> {
    let a = env.audit.as_ref()?;
    let t = a.trail();
    Some(json!({
        "Name": t.config().name,
        "S3BucketName": t.bucket().name(),
        "IncludeGlobalServiceEvents": true,
        "IsMultiRegionTrail": false,
        "HomeRegion": env.region,
        "TrailARN": trail_arn(env, account),
        "LogFileValidationEnabled": true,
        "HasCustomEventSelectors": false,
        "HasInsightSelectors": false,
        "IsOrganizationTrail": false,
    }))
}

fn secs(ms: i64) -> f64 {
    // Times in range of f64's integers.
    #[allow(clippy::cast_precision_loss)]
    let s = ms as f64 / 1000.0;
    s
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Named {
    #[serde(rename = "Name")]
    name: String,
}

fn named(input: Input<'_>) -> Result<String, ApiError> {
    let n: Named = serde_json::from_slice(input.json()?).map_err(|e| bad_body(&e))?;
    if n.name.is_empty() || n.name.len() > 1024 {
        return Err(ApiError::client(
            "InvalidTrailNameException",
            "Name must be 1 to 1024 characters",
        ));
    }
    Ok(n.name)
}

const fn spec(name: &'static str, iam: &'static str, read_only: bool, on_trail: bool) -> Spec {
    Spec {
        service: Service::CloudTrail,
        name,
        iam_action: iam,
        read_only,
        authz: Authz::Policy,
        resources: if on_trail { &["trail"] } else { &[] },
        tags: Tags::None,
        condition_keys: &[],
        params: &[],
    }
}

/// `DescribeTrails`: the deployment's trail, when the caller names it or names none.
#[derive(Debug)]
pub struct DescribeTrails(Option<Vec<String>>);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DescribeRequest {
    #[serde(rename = "trailNameList")]
    names: Option<Vec<String>>,
    #[serde(rename = "includeShadowTrails")]
    _shadow: Option<bool>,
}

impl Handler for DescribeTrails {
    const SPEC: Spec = spec("DescribeTrails", "cloudtrail:DescribeTrails", true, false);

    fn parse(input: Input<'_>, _env: &Env, _who: &Principal) -> Result<Self, ApiError> {
        let r: DescribeRequest = serde_json::from_slice(input.json()?).map_err(|e| bad_body(&e))?;
        if r.names.as_ref().is_some_and(|n| n.len() > 100) {
            return Err(ApiError::client(
                "InvalidTrailNameException",
                "at most 100 trail names",
            ));
        }
        Ok(DescribeTrails(r.names))
    }

    fn declare(&self, _env: &Env, _who: &Principal, _d: &mut Declaration) {}

    async fn run(self, cx: &Cx<'_>) -> Result<String, ApiError> {
        let account = &cx.who.account;
        let wanted = self.0.as_ref().is_none_or(|names| {
            names.is_empty() || names.iter().any(|n| names_trail(cx.env, account, n))
        });
        let list: Vec<Value> = describe(cx.env, account)
            .filter(|_| wanted)
            .into_iter()
            .collect();
        Ok(json!({ "trailList": list }).to_string())
    }
}

/// `GetTrail`.
#[derive(Debug)]
pub struct GetTrail(String);

impl Handler for GetTrail {
    const SPEC: Spec = spec("GetTrail", "cloudtrail:GetTrail", true, true);

    fn parse(input: Input<'_>, _env: &Env, _who: &Principal) -> Result<Self, ApiError> {
        named(input).map(GetTrail)
    }

    fn declare(&self, env: &Env, who: &Principal, d: &mut Declaration) {
        d.touches(trail_arn(env, &who.account));
    }

    async fn run(self, cx: &Cx<'_>) -> Result<String, ApiError> {
        let account = &cx.who.account;
        let t = describe(cx.env, account).ok_or_else(no_log)?;
        if !names_trail(cx.env, account, &self.0) {
            return Err(not_found(&self.0, account));
        }
        Ok(json!({ "Trail": t }).to_string())
    }
}

/// `GetTrailStatus`.
#[derive(Debug)]
pub struct GetTrailStatus(String);

impl Handler for GetTrailStatus {
    const SPEC: Spec = spec("GetTrailStatus", "cloudtrail:GetTrailStatus", true, true);

    fn parse(input: Input<'_>, _env: &Env, _who: &Principal) -> Result<Self, ApiError> {
        named(input).map(GetTrailStatus)
    }

    fn declare(&self, env: &Env, who: &Principal, d: &mut Declaration) {
        d.touches(trail_arn(env, &who.account));
    }

    async fn run(self, cx: &Cx<'_>) -> Result<String, ApiError> {
        let account = &cx.who.account;
        let audit = cx.env.audit.as_ref().ok_or_else(no_log)?;
        if !names_trail(cx.env, account, &self.0) {
            return Err(not_found(&self.0, account));
        }
        let s = audit
            .trail()
            .status(account)
            .await
            .map_err(|e| internal(&e))?;
        let mut out = json!({ "IsLogging": s.logging });
        let mut put = |k: &str, ms: Option<i64>| {
            if let Some(ms) = ms {
                out[k] = json!(secs(ms));
            }
        };
        put("StartLoggingTime", s.start_ms);
        put("StopLoggingTime", s.stop_ms);
        put("LatestDeliveryTime", s.delivered_ms);
        put("LatestDigestDeliveryTime", s.digest_ms);
        if let Some(ms) = s.start_ms {
            out["TimeLoggingStarted"] = json!(trail::iso(ms));
        }
        if let Some(ms) = s.stop_ms {
            out["TimeLoggingStopped"] = json!(trail::iso(ms));
        }
        Ok(out.to_string())
    }
}

/// `ListPublicKeys`: the keys valid at some time in the range (by default, now).
#[derive(Debug)]
pub struct ListPublicKeys {
    start_ms: Option<i64>,
    end_ms: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysRequest {
    #[serde(rename = "StartTime")]
    start: Option<f64>,
    #[serde(rename = "EndTime")]
    end: Option<f64>,
    #[serde(rename = "NextToken")]
    next_token: Option<String>,
}

fn ms_of(s: Option<f64>, name: &str) -> Result<Option<i64>, ApiError> {
    s.map(|s| {
        // In range by the check, so the conversion cannot truncate.
        #[allow(clippy::cast_possible_truncation)]
        (s.is_finite() && (0.0..=1e11).contains(&s))
            .then_some((s * 1000.0) as i64)
            .ok_or_else(|| {
                ApiError::client(
                    "InvalidTimeRangeException",
                    format!("{name} is out of range"),
                )
            })
    })
    .transpose()
}

impl Handler for ListPublicKeys {
    const SPEC: Spec = spec("ListPublicKeys", "cloudtrail:ListPublicKeys", true, false);

    fn parse(input: Input<'_>, _env: &Env, _who: &Principal) -> Result<Self, ApiError> {
        let r: KeysRequest = serde_json::from_slice(input.json()?).map_err(|e| bad_body(&e))?;
        if r.next_token.is_some() {
            return Err(ApiError::client(
                "InvalidTokenException",
                "NextToken is not one this endpoint gave (every key fits one page)",
            ));
        }
        let (start_ms, end_ms) = (ms_of(r.start, "StartTime")?, ms_of(r.end, "EndTime")?);
        if let (Some(a), Some(b)) = (start_ms, end_ms)
            && a > b
        {
            return Err(ApiError::client(
                "InvalidTimeRangeException",
                "StartTime is after EndTime",
            ));
        }
        Ok(ListPublicKeys { start_ms, end_ms })
    }

    fn declare(&self, _env: &Env, _who: &Principal, _d: &mut Declaration) {}

    async fn run(self, cx: &Cx<'_>) -> Result<String, ApiError> {
        let audit = cx.env.audit.as_ref().ok_or_else(no_log)?;
        let now = catalog::now_ms();
        let end = self.end_ms.unwrap_or(now);
        let start = self.start_ms.unwrap_or(end);
        let keys = audit
            .trail()
            .public_keys(start, end)
            .await
            .map_err(|e| internal(&e))?;
        let b64 = &base64::engine::general_purpose::STANDARD;
        let list: Vec<Value> = keys
            .iter()
            .map(|k| {
                json!({
                    // A blob: the DER key, base64 in JSON (the aws CLI keeps blobs as that
                    // text, and validate-logs decodes it).
                    "Value": b64.encode(&k.der),
                    "ValidityStartTime": secs(k.start_ms),
                    "ValidityEndTime": secs(k.end_ms),
                    "Fingerprint": k.fingerprint,
                })
            })
            .collect();
        Ok(json!({ "PublicKeyList": list }).to_string())
    }
}

/// `StartLogging`.
#[derive(Debug)]
pub struct StartLogging(String);

/// `StopLogging`: the account's records are no longer delivered (the call itself, and a
/// later `StartLogging`, are).
#[derive(Debug)]
pub struct StopLogging(String);

async fn set_logging(cx: &Cx<'_>, name: &str, on: bool) -> Result<String, ApiError> {
    let account = &cx.who.account;
    let audit = cx.env.audit.as_ref().ok_or_else(no_log)?;
    if !names_trail(cx.env, account, name) {
        return Err(not_found(name, account));
    }
    audit
        .trail()
        .set_logging(account, on, catalog::now_ms())
        .await
        .map_err(|e| internal(&e))?;
    Ok("{}".into())
}

impl Handler for StartLogging {
    const SPEC: Spec = spec("StartLogging", "cloudtrail:StartLogging", false, true);

    fn parse(input: Input<'_>, _env: &Env, _who: &Principal) -> Result<Self, ApiError> {
        named(input).map(StartLogging)
    }

    fn declare(&self, env: &Env, who: &Principal, d: &mut Declaration) {
        d.touches(trail_arn(env, &who.account));
    }

    async fn run(self, cx: &Cx<'_>) -> Result<String, ApiError> {
        set_logging(cx, &self.0, true).await
    }
}

impl Handler for StopLogging {
    const SPEC: Spec = spec("StopLogging", "cloudtrail:StopLogging", false, true);

    fn parse(input: Input<'_>, _env: &Env, _who: &Principal) -> Result<Self, ApiError> {
        named(input).map(StopLogging)
    }

    fn declare(&self, env: &Env, who: &Principal, d: &mut Declaration) {
        d.touches(trail_arn(env, &who.account));
    }

    async fn run(self, cx: &Cx<'_>) -> Result<String, ApiError> {
        set_logging(cx, &self.0, false).await
    }
}
