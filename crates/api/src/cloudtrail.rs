//! CloudTrail's `LookupEvents` (JSON protocol 1.1, target `CloudTrail_20131101.LookupEvents`)
//! over the activity log, so that `aws cloudtrail lookup-events --endpoint-url …` works:
//! one lookup attribute at most (`EventId`, `EventName`, `ReadOnly`, `Username`,
//! `ResourceType`, `ResourceName`, `EventSource`, `AccessKeyId`), a time range (the last 90
//! days by default), newest first, at most 50 events a page with `NextToken`. Only the
//! caller's account's events are returned.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::handler::{Cx, Env};
use crate::handler::{Declaration, Handler, Input};
use crate::identity::Principal;
use crate::spec::{Authz, Service, Spec, Tags};

/// The `X-Amz-Target` of the one action served.
pub const TARGET: &str = "CloudTrail_20131101.LookupEvents";
/// How far back lookups reach by default (CloudTrail's 90 days).
const DEFAULT_RANGE_MS: i64 = 90 * 86_400_000;
/// Events a page holds at most.
const MAX_RESULTS: usize = 50;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Attribute {
    #[serde(rename = "AttributeKey")]
    key: String,
    #[serde(rename = "AttributeValue")]
    value: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    #[serde(rename = "LookupAttributes", default)]
    attributes: Vec<Attribute>,
    #[serde(rename = "StartTime")]
    start: Option<f64>,
    #[serde(rename = "EndTime")]
    end: Option<f64>,
    #[serde(rename = "EventCategory")]
    category: Option<String>,
    #[serde(rename = "MaxResults")]
    max_results: Option<i64>,
    #[serde(rename = "NextToken")]
    next_token: Option<String>,
}

fn bad(code: &str, message: impl Into<String>) -> ApiError {
    ApiError::client(code, message)
}

/// A lookup, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Lookup {
    /// Attribute key and value to match.
    pub attribute: Option<(String, String)>,
    /// Range, ms, inclusive.
    pub start_ms: i64,
    /// Range end, ms, inclusive.
    pub end_ms: i64,
    /// Page size.
    pub max: usize,
    /// From `NextToken`: the time (ms) and id of the last event of the previous page; this
    /// page starts after it in the order (newest first, then by id), so events recorded
    /// meanwhile never repeat one already returned.
    pub after: Option<(i64, String)>,
    /// `EventCategory` insight: there are no Insights events here.
    pub insight: bool,
}

fn secs_to_ms(s: f64) -> Option<i64> {
    // In range by the check, so the conversion cannot truncate.
    #[allow(clippy::cast_possible_truncation)]
    (s.is_finite() && (0.0..=1e11).contains(&s)).then_some((s * 1000.0) as i64)
}

/// Parses and checks a `LookupEvents` body at `now_ms`.
pub fn parse(body: &[u8], now_ms: i64) -> Result<Lookup, ApiError> {
    let r: Request = serde_json::from_slice(body).map_err(|e| {
        bad(
            "SerializationException",
            format!("the request body is not a LookupEvents request: {e}"),
        )
    })?;
    let insight = r.category.is_some();
    if r.category.is_some_and(|c| c != "insight") {
        return Err(bad(
            "InvalidEventCategoryException",
            "EventCategory must be insight",
        ));
    }
    let attribute = lookup_attribute(&r.attributes)?;
    let (start_ms, end_ms) = time_range(r.start, r.end, now_ms)?;
    let max = match r.max_results {
        None => MAX_RESULTS,
        Some(n) if (1..=50).contains(&n) => usize::try_from(n).unwrap_or(MAX_RESULTS),
        Some(_) => {
            return Err(bad(
                "InvalidMaxResultsException",
                "MaxResults must be 1 to 50",
            ));
        }
    };
    let after = r.next_token.as_deref().map(next_token).transpose()?;
    Ok(Lookup {
        attribute,
        start_ms,
        end_ms,
        max,
        after,
        insight,
    })
}

/// The one lookup attribute CloudTrail allows (none is fine): a key it knows, a value of 1
/// to 2000 characters.
fn lookup_attribute(attributes: &[Attribute]) -> Result<Option<(String, String)>, ApiError> {
    const KEYS: &[&str] = &[
        "EventId",
        "EventName",
        "ReadOnly",
        "Username",
        "ResourceType",
        "ResourceName",
        "EventSource",
        "AccessKeyId",
    ];
    let a = match attributes {
        [] => return Ok(None),
        [a] => a,
        _ => {
            return Err(bad(
                "InvalidLookupAttributesException",
                "at most one lookup attribute may be given",
            ));
        }
    };
    if !KEYS.contains(&a.key.as_str()) {
        return Err(bad(
            "InvalidLookupAttributesException",
            format!(
                "AttributeKey {} is not one of {}",
                engine::request::shown(&a.key),
                KEYS.join(", ")
            ),
        ));
    }
    if a.value.is_empty() || a.value.len() > 2000 {
        return Err(bad(
            "InvalidLookupAttributesException",
            "AttributeValue must be 1 to 2000 characters",
        ));
    }
    Ok(Some((a.key.clone(), a.value.clone())))
}

/// `StartTime` and `EndTime` (seconds) as a range in ms: the end defaults to now, the start
/// to [`DEFAULT_RANGE_MS`] before the end.
fn time_range(start: Option<f64>, end: Option<f64>, now_ms: i64) -> Result<(i64, i64), ApiError> {
    let time = |v: Option<f64>, name: &str| -> Result<Option<i64>, ApiError> {
        v.map(|s| {
            secs_to_ms(s).ok_or_else(|| {
                bad(
                    "InvalidTimeRangeException",
                    format!("{name} is out of range"),
                )
            })
        })
        .transpose()
    };
    let end_ms = time(end, "EndTime")?.unwrap_or(now_ms);
    let start_ms = time(start, "StartTime")?.unwrap_or(end_ms - DEFAULT_RANGE_MS);
    if start_ms > end_ms {
        return Err(bad(
            "InvalidTimeRangeException",
            "StartTime is after EndTime",
        ));
    }
    Ok((start_ms, end_ms))
}

/// A `NextToken` this endpoint gave: `<ms>.<event id>` of the last event returned.
fn next_token(t: &str) -> Result<(i64, String), ApiError> {
    let parsed = t.split_once('.').and_then(|(ms, id)| {
        let ok = !id.is_empty()
            && id.len() <= 64
            && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
        Some((ms.parse::<i64>().ok()?, id.to_string())).filter(|_| ok)
    });
    parsed.ok_or_else(|| {
        bad(
            "InvalidNextTokenException",
            "NextToken is not one this endpoint gave",
        )
    })
}

fn time_ms(r: &Value) -> Option<i64> {
    let s = r.get("eventTime")?.as_str()?;
    let compact: String = s.chars().filter(char::is_ascii_digit).collect();
    if compact.len() < 14 {
        return None;
    }
    let amz = format!("{}T{}Z", &compact[..8], &compact[8..14]);
    crate::sigv4::parse_amz_date(&amz).map(|t| t * 1000)
}

fn resource_name(arn: &str) -> &str {
    arn.rsplit(['/', ':']).next().unwrap_or(arn)
}

fn matches(r: &Value, attr: &(String, String)) -> bool {
    let s = |v: &Value| v.as_str().map(str::to_string);
    let (k, want) = attr;
    let resources = || r["resources"].as_array().cloned().unwrap_or_default();
    match k.as_str() {
        "EventId" => s(&r["eventID"]).as_deref() == Some(want),
        "EventName" => s(&r["eventName"]).as_deref() == Some(want),
        "EventSource" => s(&r["eventSource"]).as_deref() == Some(want),
        "ReadOnly" => r["readOnly"].as_bool().map(|b| b.to_string()).as_deref() == Some(want),
        "Username" => s(&r["userIdentity"]["userName"]).as_deref() == Some(want),
        "AccessKeyId" => s(&r["userIdentity"]["accessKeyId"]).as_deref() == Some(want),
        "ResourceType" => resources().iter().any(|x| x["type"] == want.as_str()),
        "ResourceName" => resources().iter().any(|x| {
            x["ARN"]
                .as_str()
                .is_some_and(|a| a == want || resource_name(a) == want)
        }),
        _ => false,
    }
}

fn event(r: &Value, t: i64) -> Value {
    let resources: Vec<Value> = r["resources"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    json!({
                        "ResourceType": x["type"],
                        "ResourceName": x["ARN"].as_str().map(resource_name),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let mut e = json!({
        "EventId": r["eventID"],
        "EventName": r["eventName"],
        "ReadOnly": r["readOnly"].as_bool().unwrap_or(false).to_string(),
        "EventTime": t as f64 / 1000.0,
        "EventSource": r["eventSource"],
        "Resources": resources,
        "CloudTrailEvent": r.to_string(),
    });
    if let Some(k) = r["userIdentity"]["accessKeyId"].as_str() {
        e["AccessKeyId"] = json!(k);
    }
    if let Some(u) = r["userIdentity"]["userName"].as_str() {
        e["Username"] = json!(u);
    }
    e
}

/// Answers `l` for `account` from `records` (any order): the JSON body.
#[must_use]
pub fn answer(l: &Lookup, account: &str, records: &[Value]) -> Value {
    if l.insight {
        return json!({ "Events": [] });
    }
    let mut hits: Vec<(i64, &Value)> = records
        .iter()
        .filter(|r| r["recipientAccountId"] == account)
        .filter_map(|r| time_ms(r).map(|t| (t, r)))
        .filter(|(t, _)| *t >= l.start_ms - 999 && *t <= l.end_ms)
        .filter(|(_, r)| l.attribute.as_ref().is_none_or(|a| matches(r, a)))
        .collect();
    let id = |r: &Value| r["eventID"].as_str().unwrap_or("").to_string();
    // Newest first; equal times by event id, so pages are stable.
    hits.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| id(b.1).cmp(&id(a.1))));
    if let Some((t, last)) = &l.after {
        hits.retain(|(ht, r)| (*ht, id(r)) < (*t, last.clone()));
    }
    let page: Vec<Value> = hits.iter().take(l.max).map(|(t, r)| event(r, *t)).collect();
    let mut out = json!({ "Events": page });
    if hits.len() > l.max
        && let Some((t, r)) = hits.get(l.max - 1)
    {
        out["NextToken"] = json!(format!("{t}.{}", id(r)));
    }
    out
}

/// The targets `X-Amz-Target` may name for `action`: older SDKs send
/// `CloudTrail_20131101.<action>`, newer ones prefix the namespace.
#[must_use]
pub fn action_of_target(target: &str) -> Option<&str> {
    target
        .strip_prefix("com.amazonaws.cloudtrail.v20131101.")
        .unwrap_or(target)
        .strip_prefix("CloudTrail_20131101.")
}

/// A parsed `LookupEvents`.
#[derive(Debug)]
pub struct LookupEvents(Lookup);

impl Handler for LookupEvents {
    const SPEC: Spec = Spec {
        service: Service::CloudTrail,
        name: "LookupEvents",
        iam_action: "cloudtrail:LookupEvents",
        read_only: true,
        authz: Authz::Policy,
        resources: &[],
        tags: Tags::None,
        condition_keys: &[],
        params: &[],
    };

    fn parse(input: Input<'_>, _env: &Env, _who: &Principal) -> Result<Self, ApiError> {
        parse(input.json()?, catalog::now_ms()).map(LookupEvents)
    }

    fn declare(&self, _env: &Env, _who: &Principal, _d: &mut Declaration) {}

    /// This node's queued records are written first, so a caller sees its own calls at once
    /// (other nodes' within their flush interval).
    async fn run(self, cx: &Cx<'_>) -> Result<String, ApiError> {
        let Some(audit) = &cx.env.audit else {
            return Err(ApiError::client(
                "TrailNotFoundException",
                "this deployment keeps no activity log",
            ));
        };
        let internal = |e: trail::TrailError| {
            let mut e = ApiError::internal("activity log lookup failed", &e);
            e.code = "InternalFailure".into();
            e.message = "the activity log could not be read; the request may be retried".into();
            e
        };
        audit.flush().await.map_err(internal)?;
        let records = trail::records(audit.trail(), Some(self.0.start_ms))
            .await
            .map_err(internal)?;
        Ok(answer(&self.0, &cx.who.account, &records).to_string())
    }
}

/// The JSON protocol's error body.
#[must_use]
pub fn error_body(e: &ApiError) -> String {
    json!({"__type": e.code, "message": e.message}).to_string()
}

/// The JSON protocol's name for an authentication failure.
#[must_use]
pub fn auth_code(code: &str) -> &'static str {
    match code {
        "SignatureDoesNotMatch" => "InvalidSignatureException",
        "RequestExpired" => "ExpiredTokenException",
        "UnauthorizedOperation" => "AccessDeniedException",
        _ => "UnrecognizedClientException",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn rec(id: &str, name: &str, time: &str) -> Value {
        json!({"eventID": id, "eventName": name, "eventTime": time, "readOnly": name.starts_with("Describe"),
               "eventSource": "ec2.amazonaws.com", "recipientAccountId": "1",
               "userIdentity": {"userName": "admin", "accessKeyId": "AKIA1"},
               "resources": [{"ARN": "arn:aws:ec2:r:1:image/ami-1", "type": "AWS::EC2::Image"}]})
    }

    #[test]
    fn filters_pages_and_orders_newest_first() {
        let now = crate::sigv4::parse_amz_date("20261123T120000Z").unwrap() * 1000;
        let records = vec![
            rec("a", "ImportImage", "2026-11-23T10:00:00Z"),
            rec("b", "DescribeImages", "2026-11-23T11:00:00Z"),
            rec("c", "ImportImage", "2026-11-23T11:30:00Z"),
            rec("d", "ImportImage", "2026-01-01T00:00:00Z"),
            rec("e", "ImportImage", "2026-11-23T11:30:00Z"),
        ];
        // One ImportImage event a page, after `token` if there is one.
        let page = |token: Option<&str>| {
            let next = token.map_or(String::new(), |t| format!(r#","NextToken":"{t}""#));
            parse(
                format!(r#"{{"LookupAttributes":[{{"AttributeKey":"EventName","AttributeValue":"ImportImage"}}],"MaxResults":1{next}}}"#).as_bytes(),
                now,
            )
            .unwrap()
        };
        let a = answer(&page(None), "1", &records);
        assert_eq!(a["Events"][0]["EventId"], "e");
        let token = a["NextToken"].as_str().unwrap();
        let b = answer(&page(Some(token)), "1", &records);
        assert_eq!(b["Events"][0]["EventId"], "c", "same second, next id");
        // An event recorded after the first page does not shift the next ones.
        let mut more = records.clone();
        more.push(rec("f", "ImportImage", "2026-11-23T11:59:00Z"));
        let t2 = b["NextToken"].as_str().unwrap();
        let b = answer(&page(Some(t2)), "1", &more);
        assert_eq!(b["Events"][0]["EventId"], "a");
        assert!(b.get("NextToken").is_none(), "d is outside 90 days");
        let ro = parse(
            br#"{"LookupAttributes":[{"AttributeKey":"ReadOnly","AttributeValue":"true"}]}"#,
            now,
        )
        .unwrap();
        assert_eq!(
            answer(&ro, "1", &records)["Events"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        let rn = parse(
            br#"{"LookupAttributes":[{"AttributeKey":"ResourceName","AttributeValue":"ami-1"}]}"#,
            now,
        )
        .unwrap();
        assert_eq!(
            answer(&rn, "1", &records)["Events"]
                .as_array()
                .unwrap()
                .len(),
            4
        );
        assert_eq!(
            answer(&rn, "2", &records)["Events"]
                .as_array()
                .unwrap()
                .len(),
            0
        );
    }

    #[test]
    fn refuses_what_cloudtrail_refuses() {
        for (body, code) in [
            (&br#"{"LookupAttributes":[{"AttributeKey":"Nope","AttributeValue":"x"}]}"#[..], "InvalidLookupAttributesException"),
            (br#"{"LookupAttributes":[{"AttributeKey":"EventName","AttributeValue":"a"},{"AttributeKey":"EventName","AttributeValue":"b"}]}"#, "InvalidLookupAttributesException"),
            (br#"{"StartTime":2000,"EndTime":1000}"#, "InvalidTimeRangeException"),
            (br#"{"StartTime":-1}"#, "InvalidTimeRangeException"),
            (br#"{"MaxResults":51}"#, "InvalidMaxResultsException"),
            (br#"{"NextToken":"zzz"}"#, "InvalidNextTokenException"),
            (br#"{"NextToken":"12.<script>"}"#, "InvalidNextTokenException"),
            (br#"{"EventCategory":"data"}"#, "InvalidEventCategoryException"),
            (br#"{"Surprise":1}"#, "SerializationException"),
            (b"not json", "SerializationException"),
        ] {
            assert_eq!(parse(body, 1_000_000_000_000).unwrap_err().code, code);
        }
    }
}
