//! The activity log's records, shaped like CloudTrail's: one per API call (accepted or
//! refused, authenticated or not), one per task state change a worker makes, one per use of
//! a KMS key, and one per administrative command. Records are queued on the node's
//! [`TrailWriter`] and delivered by [`Audit::run_flusher`] (log files in CloudTrail's layout,
//! then the CloudTrail digests whose period has ended: see the `trail` crate).
//!
//! Nothing sensitive is recorded verbatim:
//! - descriptions, tag values, client data and idempotency tokens become
//!   `"HMAC-SHA256:<fingerprint>"` (see [`TrailWriter::fingerprint`]), so equal values can be
//!   matched without being readable;
//! - URLs lose their user-info, query string and fragment;
//! - one-time codes and anything else the sensitive-data guard recognizes are recorded as
//!   present only;
//! - error messages lose URL query strings, and are withheld when they quote sensitive data.
//!
//! Findings of the sensitive-data guard are listed in `additionalEventData` by field name.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::identity::Principal;
use crate::query::Params;
use crate::spec::{Kind, Spec};
use trail::{Trail, TrailError, TrailWriter};

/// The version of the record format (CloudTrail's current one).
pub const EVENT_VERSION: &str = "1.09";
/// Longest free text (user agent, error message) kept in a record.
const MAX_TEXT: usize = 512;
/// Response elements copied into `responseElements` (never secrets).
const RESPONSE_ELEMENTS: &[&str] = &[
    "importTaskId",
    "exportImageTaskId",
    "imageId",
    "snapshotId",
    "status",
    "return",
    "ebsEncryptionByDefault",
    "kmsKeyId",
    "AccessKeyId",
    "Expiration",
];

/// Writes records for one node.
pub struct Audit {
    writer: Arc<TrailWriter>,
    region: String,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("node", &self.writer.node())
            .finish_non_exhaustive()
    }
}

/// One API call, as the server saw it.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    /// `ec2.amazonaws.com`, `sts.amazonaws.com` or `cloudtrail.amazonaws.com`.
    pub source: &'a str,
    /// The action (unknown actions are recorded as `UnknownAction`).
    pub action: &'a str,
    /// The action's table entry (`None` for an unknown action): whether it only reads, and
    /// how each parameter is recorded.
    pub spec: Option<&'a Spec>,
    /// When the request arrived (ms).
    pub time_ms: i64,
    /// The client's address.
    pub source_ip: IpAddr,
    /// The `User-Agent` header.
    pub user_agent: &'a str,
    /// The authenticated caller (`None` when authentication failed).
    pub who: Option<&'a Principal>,
    /// The access key id the request named, when authentication failed.
    pub access_key_id: Option<&'a str>,
    /// The parameters.
    pub params: Option<&'a Params>,
    /// The answer's body when the call succeeded.
    pub response: Option<&'a str>,
    /// The error when it did not.
    pub error: Option<&'a ApiError>,
    /// The request id the client was given.
    pub request_id: &'a str,
    /// The account of the access key named, when authentication failed (the record goes to
    /// it).
    pub account: Option<&'a str>,
}

/// A console sign-in or sign-out, for [`Audit::console`].
#[derive(Debug, Clone)]
pub struct ConsoleEvent<'a> {
    /// `ConsoleLogin` or `ConsoleLogout`.
    pub name: &'a str,
    /// The account signed in to.
    pub account: &'a str,
    /// The user, when it is one of the account's (`None`: withheld).
    pub user: Option<&'a str>,
    /// The client's address.
    pub source_ip: IpAddr,
    /// The `User-Agent` header.
    pub user_agent: &'a str,
    /// Whether an MFA code was given and right.
    pub mfa_used: bool,
    /// Why it failed (`None`: it succeeded).
    pub error: Option<&'a str>,
}

/// A random id in the UUID (version 4) shape: event ids, and the request ids clients get.
pub(crate) fn event_id() -> String {
    let mut b = [0u8; 16];
    kms::aead::random(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// CloudTrail's time format: seconds, UTC, `Z`.
fn event_time(ms: i64) -> String {
    let s = crate::sigv4::format_iso8601(ms);
    format!("{}Z", &s[..19])
}

/// Text from a stranger, made safe to keep: control characters dropped, bounded.
fn text(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(MAX_TEXT)
        .collect()
}

/// A URL without user-info, query string and fragment.
#[must_use]
pub fn strip_url(u: &str) -> String {
    let cut = u.find(['?', '#']).unwrap_or(u.len());
    let u = &u[..cut];
    match u.find("://") {
        Some(i) => {
            let (scheme, rest) = u.split_at(i + 3);
            let auth_end = rest.find('/').unwrap_or(rest.len());
            let (auth, path) = rest.split_at(auth_end);
            let host = auth.rsplit_once('@').map_or(auth, |(_, h)| h);
            format!("{scheme}{host}{path}")
        }
        None => u.to_string(),
    }
}

/// Free text (an error message) with every URL stripped, withheld entirely when the
/// sensitive-data guard finds something in it.
#[must_use]
pub fn clean_message(m: &str) -> String {
    let words: Vec<String> = m
        .split(' ')
        .map(|w| {
            if w.contains("://") {
                strip_url(w)
            } else {
                w.to_string()
            }
        })
        .collect();
    let m = text(&words.join(" "));
    let found = crate::guard::scan(&m);
    if found.is_empty() {
        m
    } else {
        format!(
            "(message withheld: it quoted {})",
            found.first().map_or("sensitive data", |f| f.describe())
        )
    }
}

fn lower_camel(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Puts `leaf` at the dotted path `segs` under `node`, numbered members under their number
/// (see [`densify`]).
fn put(node: &mut Value, segs: &[&str], leaf: Value) {
    let Some((first, rest)) = segs.split_first() else {
        *node = leaf;
        return;
    };
    if !node.is_object() {
        *node = Value::Object(Map::new());
    }
    if let Value::Object(o) = node {
        let key = if first.parse::<u64>().is_ok() {
            (*first).to_string()
        } else {
            lower_camel(first)
        };
        put(o.entry(key).or_insert(Value::Null), rest, leaf);
    }
}

/// Turns every object whose keys are exactly `1..=n` into an array (numbered members, as
/// CloudTrail shows lists); sparse or odd numbering stays an object, so the record never
/// grows beyond the parameters.
fn densify(v: &mut Value) {
    match v {
        Value::Object(o) => {
            o.values_mut().for_each(densify);
            let n = o.len();
            if n > 0 && (1..=n).all(|i| o.contains_key(&i.to_string())) {
                let items = (1..=n)
                    .map(|i| o.remove(&i.to_string()).unwrap_or(Value::Null))
                    .collect();
                *v = Value::Array(items);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(densify),
        _ => {}
    }
}

/// The recorded form of a value of `kind` (see [`Kind`]).
fn redact(kind: Kind, value: &str, fingerprint: &dyn Fn(&str) -> String) -> Value {
    let withheld = || !crate::guard::scan(value).is_empty();
    match kind {
        Kind::Secret => json!("(present)"),
        Kind::Free | Kind::Token | Kind::FilterValue => {
            json!(format!("HMAC-SHA256:{}", fingerprint(value)))
        }
        _ if withheld() => json!("(present; withheld: sensitive data)"),
        Kind::Url => Value::String(text(&strip_url(value))),
        Kind::Plain if value.contains("://") => Value::String(text(&strip_url(value))),
        Kind::Plain | Kind::TagKey => Value::String(text(value)),
    }
}

/// The kind a parameter is recorded as: the table's, or — for a name the action does not
/// take, or a request whose action is unknown — free text, so that nothing unexpected is
/// recorded in clear.
fn kind_of(spec: Option<&Spec>, p: &Params, name: &str) -> Kind {
    spec.and_then(|s| s.kind_of(p, name)).unwrap_or(Kind::Free)
}

/// `requestParameters`: every parameter but `Action` and `Version`, nested as the dotted
/// names say, each value redacted by the kind the action table gives it.
#[must_use]
pub fn request_parameters(
    p: &Params,
    spec: Option<&Spec>,
    fingerprint: &dyn Fn(&str) -> String,
) -> Value {
    let mut root = Value::Object(Map::new());
    for name in p.names() {
        if matches!(name, "Action" | "Version") {
            continue;
        }
        let v = redact(
            kind_of(spec, p, name),
            p.get(name).unwrap_or_default(),
            fingerprint,
        );
        let segs: Vec<&str> = name.split('.').collect();
        put(&mut root, &segs, v);
    }
    densify(&mut root);
    root
}

/// An error message as it may be recorded: every value of a parameter the table says is not
/// recorded in clear (free text, tokens, secrets, free-text filter values) replaced by its
/// recorded form wherever the message quotes it, then cleaned as [`clean_message`] does.
#[must_use]
pub fn redact_message(
    m: &str,
    p: Option<&Params>,
    spec: Option<&Spec>,
    fingerprint: &dyn Fn(&str) -> String,
) -> String {
    let mut m = m.to_string();
    if let Some(p) = p {
        for name in p.names() {
            let kind = kind_of(spec, p, name);
            let v = p.get(name).unwrap_or_default();
            // Values of one or two characters would match everywhere and say nothing.
            if v.chars().count() < 3 || matches!(kind, Kind::Plain | Kind::TagKey | Kind::Url) {
                continue;
            }
            if let Value::String(r) = redact(kind, v, fingerprint) {
                m = m.replace(v, &r);
            }
        }
    }
    clean_message(&m)
}

/// `responseElements`: the ids and states an answer carries (never a secret).
#[must_use]
pub fn response_elements(body: &str) -> Value {
    let mut out = Map::new();
    for tag in RESPONSE_ELEMENTS {
        let open = format!("<{tag}>");
        let close = format!("</{tag}>");
        if let Some(i) = body.find(&open) {
            let from = i + open.len();
            if let Some(j) = body[from..].find(&close) {
                let v = quick_xml::escape::unescape(&body[from..from + j])
                    .map_or_else(|_| body[from..from + j].to_string(), |c| c.into_owned());
                out.insert(lower_camel(tag), Value::String(text(&v)));
            }
        }
    }
    if out.is_empty() {
        Value::Null
    } else {
        Value::Object(out)
    }
}

/// The resources a call names: ids in its parameters and answer.
fn resources(region: &str, account: &str, p: Option<&Params>, response: &Value) -> Value {
    let mut out = Vec::new();
    let mut add = |id: &str| {
        let (kind, path) = if id.starts_with("ami-") {
            ("AWS::EC2::Image", "image")
        } else if id.starts_with("snap-") {
            ("AWS::EC2::Snapshot", "snapshot")
        } else if id.starts_with("import-") || id.starts_with("export-") {
            ("AWS::EC2::ImportExportTask", "task")
        } else {
            return;
        };
        let id = text(id);
        let arn = format!("arn:aws:ec2:{region}:{account}:{path}/{id}");
        if !out.iter().any(|r: &Value| r["ARN"] == arn.as_str()) {
            out.push(json!({"ARN": arn, "accountId": account, "type": kind}));
        }
    };
    if let Some(p) = p {
        for name in p.names() {
            let leaf = name
                .rsplit('.')
                .find(|s| s.parse::<u64>().is_err())
                .unwrap_or(name);
            if matches!(
                leaf,
                "ImageId" | "SnapshotId" | "ImportTaskId" | "ExportImageTaskId" | "ResourceId"
            ) {
                add(p.get(name).unwrap_or_default());
            }
        }
    }
    if let Value::Object(o) = response {
        for v in o.values() {
            if let Value::String(s) = v {
                add(s);
            }
        }
    }
    Value::Array(out)
}

/// `additionalEventData.sensitiveDataFindings`: which free-form fields held what kind of
/// sensitive data (never the data).
fn findings(p: Option<&Params>, spec: Option<&Spec>) -> Vec<Value> {
    let Some(p) = p else { return Vec::new() };
    p.names()
        .filter(|n| matches!(kind_of(spec, p, n), Kind::Free | Kind::TagKey))
        .flat_map(|n| {
            crate::guard::scan(p.get(n).unwrap_or_default())
                .into_iter()
                .map(move |f| json!({"field": n, "found": f.describe()}))
        })
        .collect()
}

/// A principal id in the IAM style (`AIDA` + 16 characters), stable for a user.
fn principal_id(account: &str, user: &str) -> String {
    let d = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        format!("{account}/{user}").as_bytes(),
    );
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let id: String = d.as_ref()[..16]
        .iter()
        .map(|b| alphabet[usize::from(b & 31)] as char)
        .collect();
    format!("AIDA{id}")
}

fn user_identity(who: &Principal) -> Value {
    if let Some(r) = &who.role {
        let role_id = crate::identity::unique_id("AROA", &who.account, &r.role);
        return json!({
            "type": "AssumedRole",
            "principalId": format!("{role_id}:{}", r.session),
            "arn": who.arn,
            "accountId": who.account,
            "accessKeyId": who.access_key_id,
            "sessionContext": {
                "sessionIssuer": {
                    "type": "Role",
                    "principalId": role_id,
                    "arn": who.principal_arn(),
                    "accountId": who.account,
                    "userName": r.role,
                },
                "attributes": {
                    "mfaAuthenticated": if who.mfa { "true" } else { "false" },
                }
            }
        });
    }
    json!({
        "type": "IAMUser",
        "principalId": principal_id(&who.account, &who.user),
        "arn": who.arn,
        "accountId": who.account,
        "accessKeyId": who.access_key_id,
        "userName": who.user,
        "sessionContext": {
            "attributes": {
                "mfaAuthenticated": if who.mfa { "true" } else { "false" },
            }
        }
    })
}

/// An access key id as it may be recorded (its shape checked: it comes from a stranger).
fn key_id_of(k: &str) -> Option<String> {
    (k.len() <= 32 && k.len() >= 16 && k.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then(|| k.to_string())
}

impl Audit {
    /// Records for `writer`'s node, in `region`.
    #[must_use]
    pub fn new(writer: Arc<TrailWriter>, region: &str) -> Self {
        Audit {
            writer,
            region: region.to_string(),
        }
    }

    /// The trail the records go to.
    #[must_use]
    pub fn trail(&self) -> &Arc<Trail> {
        self.writer.trail()
    }

    /// The writer.
    #[must_use]
    pub fn writer(&self) -> &TrailWriter {
        &self.writer
    }

    fn fp(&self) -> impl Fn(&str) -> String + '_ {
        |v| self.writer.fingerprint(v)
    }

    fn base(&self, time_ms: i64, source: &str, name: &str, kind: &str) -> Map<String, Value> {
        let mut r = Map::new();
        r.insert("eventVersion".into(), json!(EVENT_VERSION));
        r.insert("eventTime".into(), json!(event_time(time_ms)));
        r.insert("eventSource".into(), json!(source));
        r.insert("eventName".into(), json!(name));
        r.insert("awsRegion".into(), json!(self.region));
        r.insert("eventID".into(), json!(event_id()));
        r.insert("eventType".into(), json!(kind));
        r.insert("managementEvent".into(), json!(true));
        r.insert("eventCategory".into(), json!("Management"));
        r.insert("vmieNode".into(), json!(self.writer.node()));
        r
    }

    /// The record of one API call.
    #[must_use]
    pub fn call_record(&self, c: &Call<'_>) -> Value {
        let mut r = self.base(c.time_ms, c.source, c.action, "AwsApiCall");
        let identity = match (c.who, c.access_key_id.and_then(key_id_of)) {
            (Some(w), _) => user_identity(w),
            (None, Some(k)) => json!({"type": "Unknown", "accessKeyId": k}),
            (None, None) => json!({"type": "Unknown"}),
        };
        let account = c.who.map(|w| w.account.as_str()).or(c.account);
        r.insert("userIdentity".into(), identity);
        r.insert("sourceIPAddress".into(), json!(c.source_ip.to_string()));
        r.insert("userAgent".into(), json!(text(c.user_agent)));
        r.insert(
            "requestParameters".into(),
            c.params
                .map_or(Value::Null, |p| request_parameters(p, c.spec, &self.fp())),
        );
        let read_only = c.spec.is_some_and(|s| s.read_only);
        let response = match (c.response, read_only) {
            (Some(b), false) => response_elements(b),
            _ => Value::Null,
        };
        r.insert(
            "resources".into(),
            resources(&self.region, account.unwrap_or(""), c.params, &response),
        );
        r.insert("responseElements".into(), response);
        if let Some(e) = c.error {
            r.insert("errorCode".into(), json!(text(&e.code)));
            r.insert(
                "errorMessage".into(),
                json!(redact_message(&e.message, c.params, c.spec, &self.fp())),
            );
        }
        r.insert("requestID".into(), json!(c.request_id));
        r.insert("readOnly".into(), json!(read_only));
        if let Some(a) = account {
            r.insert("recipientAccountId".into(), json!(a));
        }
        let f = findings(c.params, c.spec);
        if !f.is_empty() {
            r.insert(
                "additionalEventData".into(),
                json!({"sensitiveDataFindings": f}),
            );
        }
        Value::Object(r)
    }

    /// Queues the record of one API call.
    pub fn call(&self, c: &Call<'_>) {
        self.writer.record(self.call_record(c));
    }

    /// Queues the record of a task state change.
    pub fn task_event(&self, e: &engine::TaskEvent<'_>) {
        let t = e.task;
        let mut r = self.base(
            catalog::now_ms(),
            "ec2.amazonaws.com",
            "TaskStateChange",
            "AwsServiceEvent",
        );
        r.insert(
            "userIdentity".into(),
            json!({"type": "AWSService", "invokedBy": "ec2.amazonaws.com"}),
        );
        r.insert("sourceIPAddress".into(), json!("ec2.amazonaws.com"));
        r.insert("userAgent".into(), json!("ec2.amazonaws.com"));
        r.insert("requestParameters".into(), Value::Null);
        r.insert("responseElements".into(), Value::Null);
        r.insert(
            "serviceEventDetails".into(),
            json!({
                "taskId": t.id,
                "taskKind": t.kind.as_str(),
                "event": e.event,
                "detail": text(e.detail),
                "attempt": t.attempts,
                "worker": e.worker,
            }),
        );
        r.insert(
            "resources".into(),
            json!([{
                "ARN": format!("arn:aws:ec2:{}:{}:task/{}", self.region, t.account, t.id),
                "accountId": t.account,
                "type": "AWS::EC2::ImportExportTask",
            }]),
        );
        r.insert("requestID".into(), json!(event_id()));
        r.insert("readOnly".into(), json!(false));
        r.insert("recipientAccountId".into(), json!(t.account));
        self.writer.record(Value::Object(r));
    }

    /// Queues the record of a use of a KMS key (made by the service on a caller's behalf).
    pub fn key_use(&self, u: &kms::KeyUse) {
        let name = u.action.strip_prefix("kms:").unwrap_or(&u.action);
        let mut r = self.base(catalog::now_ms(), "kms.amazonaws.com", name, "AwsApiCall");
        let kind = if u.caller.arn.ends_with(":root") {
            "Root"
        } else {
            "IAMUser"
        };
        r.insert(
            "userIdentity".into(),
            json!({
                "type": kind,
                "arn": u.caller.arn,
                "accountId": u.caller.account,
                "invokedBy": "ec2.amazonaws.com",
            }),
        );
        r.insert("sourceIPAddress".into(), json!("ec2.amazonaws.com"));
        r.insert("userAgent".into(), json!("ec2.amazonaws.com"));
        r.insert("requestParameters".into(), json!({"keyId": u.key_arn}));
        r.insert("responseElements".into(), Value::Null);
        r.insert(
            "resources".into(),
            json!([{"ARN": u.key_arn, "accountId": u.caller.account, "type": "AWS::KMS::Key"}]),
        );
        if !u.allowed {
            r.insert("errorCode".into(), json!("AccessDeniedException"));
            r.insert(
                "errorMessage".into(),
                json!(format!(
                    "{} is not authorized to perform {} on this key",
                    u.caller.arn, u.action
                )),
            );
        }
        r.insert("requestID".into(), json!(event_id()));
        r.insert(
            "readOnly".into(),
            json!(matches!(
                name,
                "Decrypt"
                    | "Encrypt"
                    | "GenerateDataKey"
                    | "DescribeKey"
                    | "GetKeyPolicy"
                    | "ReEncrypt"
            )),
        );
        r.insert("recipientAccountId".into(), json!(u.caller.account));
        self.writer.record(Value::Object(r));
    }

    /// Queues the record of a console sign-in or sign-out (`ConsoleLogin`,
    /// `ConsoleLogout`), as CloudTrail records them: event source `signin.amazonaws.com`,
    /// type `AwsConsoleSignIn`, the outcome in `responseElements`, whether MFA was used in
    /// `additionalEventData`. A user name that is not a user of the account is withheld
    /// (people type passwords into the wrong field).
    pub fn console(&self, e: &ConsoleEvent<'_>) {
        let mut r = self.base(
            catalog::now_ms(),
            "signin.amazonaws.com",
            e.name,
            "AwsConsoleSignIn",
        );
        let identity = match e.user {
            Some(u) => json!({
                "type": "IAMUser",
                "principalId": principal_id(e.account, u),
                "arn": format!("arn:aws:iam::{}:user/{u}", e.account),
                "accountId": e.account,
                "userName": u,
            }),
            None => json!({
                "type": "IAMUser",
                "accountId": e.account,
                "accessKeyId": "",
                "userName": "HIDDEN_DUE_TO_SECURITY_REASONS",
            }),
        };
        r.insert("userIdentity".into(), identity);
        r.insert("sourceIPAddress".into(), json!(e.source_ip.to_string()));
        r.insert("userAgent".into(), json!(text(e.user_agent)));
        r.insert("requestParameters".into(), Value::Null);
        r.insert(
            "responseElements".into(),
            json!({ e.name: if e.error.is_none() { "Success" } else { "Failure" } }),
        );
        r.insert(
            "additionalEventData".into(),
            json!({
                "LoginTo": "/console/",
                "MobileVersion": "No",
                "MFAUsed": if e.mfa_used { "Yes" } else { "No" },
            }),
        );
        if let Some(m) = e.error {
            r.insert("errorMessage".into(), json!(clean_message(m)));
        }
        r.insert("requestID".into(), json!(event_id()));
        r.insert("readOnly".into(), json!(false));
        r.insert("recipientAccountId".into(), json!(e.account));
        self.writer.record(Value::Object(r));
    }

    /// Queues the record of an administrative command run on the deployment's host
    /// (`vmie admin …`), made by the operator as the account's root.
    pub fn operator(
        &self,
        account: &str,
        source: &str,
        name: &str,
        params: &[(&str, &str)],
        error: Option<&str>,
    ) {
        let mut r = self.base(catalog::now_ms(), source, name, "AwsApiCall");
        r.insert(
            "userIdentity".into(),
            json!({
                "type": "Root",
                "principalId": account,
                "arn": format!("arn:aws:iam::{account}:root"),
                "accountId": account,
                "invokedBy": "vmie command line",
            }),
        );
        r.insert("sourceIPAddress".into(), json!("localhost"));
        r.insert(
            "userAgent".into(),
            json!(format!("vmie/{}", env!("CARGO_PKG_VERSION"))),
        );
        let mut p = Map::new();
        for (k, v) in params {
            // Administrative commands name users, roles, policies and keys: plain values,
            // still withheld when the guard finds something in them.
            p.insert(lower_camel(k), redact(Kind::Plain, v, &self.fp()));
        }
        r.insert("requestParameters".into(), Value::Object(p));
        r.insert("responseElements".into(), Value::Null);
        if let Some(e) = error {
            r.insert("errorCode".into(), json!("Failed"));
            r.insert("errorMessage".into(), json!(clean_message(e)));
        }
        r.insert("requestID".into(), json!(event_id()));
        r.insert("readOnly".into(), json!(false));
        r.insert("recipientAccountId".into(), json!(account));
        self.writer.record(Value::Object(r));
    }

    /// Writes what is queued (a log file per account, under one signed node digest).
    pub async fn flush(&self) -> Result<(), TrailError> {
        self.writer.flush().await.map(|_| ())
    }

    /// Flushes every `every` until `shutdown` turns true, then once more; after each flush,
    /// writes the CloudTrail digests whose period has ended.
    pub async fn run_flusher(
        self: Arc<Self>,
        every: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            let stop = tokio::select! {
                () = tokio::time::sleep(every) => false,
                _ = shutdown.changed() => true,
            };
            if let Err(e) = self.flush().await {
                tracing::error!(error = %e, pending = self.writer.pending(), "activity log: records not written; will retry");
            }
            if let Err(e) = self.trail().make_digests(catalog::now_ms()).await {
                tracing::error!(error = %e, "activity log: digest not written; will retry");
            }
            if stop || *shutdown.borrow() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn fp(v: &str) -> String {
        format!("fp({})", v.len())
    }

    #[test]
    fn urls_lose_user_info_query_and_fragment() {
        assert_eq!(
            strip_url("https://u:p@h.example:8443/a/b.vmdk?X-Amz-Signature=abc#f"),
            "https://h.example:8443/a/b.vmdk"
        );
        assert_eq!(strip_url("s3://bucket/key"), "s3://bucket/key");
        assert_eq!(
            clean_message("could not fetch https://h/x?token=SECRET: 404"),
            "could not fetch https://h/x 404"
        );
        assert!(!clean_message("bad AKIAIOSFODNN7EXAMPLE here").contains("AKIA"));
    }

    #[test]
    fn parameters_nest_and_free_form_fields_are_fingerprinted() {
        let p = Params::parse(
            b"Action=ImportImage&Version=2016-11-15&Description=secret%20plan\
&DiskContainer.1.Url=https%3A%2F%2Fh%2Fd.vmdk%3Fsig%3Dx&DiskContainer.1.Format=VMDK\
&DiskContainer.2.UserBucket.S3Bucket=src&TagSpecification.1.ResourceType=import-image-task\
&TagSpecification.1.Tag.1.Key=env&TagSpecification.1.Tag.1.Value=prod-4111\
&ClientToken=tok&TokenCode=123456",
        )
        .unwrap();
        let spec = crate::action::Action::spec_of(crate::action::Service::Ec2, "ImportImage");
        let v = request_parameters(&p, spec, &fp);
        assert_eq!(v["description"], "HMAC-SHA256:fp(11)");
        assert_eq!(v["diskContainer"][0]["url"], "https://h/d.vmdk");
        assert_eq!(v["diskContainer"][0]["format"], "VMDK");
        assert_eq!(v["diskContainer"][1]["userBucket"]["s3Bucket"], "src");
        assert_eq!(v["tagSpecification"][0]["tag"][0]["key"], "env");
        assert_eq!(
            v["tagSpecification"][0]["tag"][0]["value"],
            "HMAC-SHA256:fp(9)"
        );
        assert_eq!(v["clientToken"], "HMAC-SHA256:fp(3)");
        // A name ImportImage does not take is recorded as free text.
        assert_eq!(v["tokenCode"], "HMAC-SHA256:fp(6)");
        assert!(v.get("action").is_none());
        let text = v.to_string();
        for secret in ["secret plan", "sig=x", "prod-4111", "123456"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }

    #[test]
    fn filter_values_and_quoted_free_text_are_redacted() {
        use crate::action::Action;
        use crate::spec::Service;
        let spec = Action::spec_of(Service::Ec2, "DescribeImages");
        let p = Params::parse(
            b"Filter.1.Name=description&Filter.1.Value.1=quarterly+secret+plan\
&Filter.2.Name=state&Filter.2.Value.1=available",
        )
        .unwrap();
        let v = request_parameters(&p, spec, &fp);
        assert_eq!(v["filter"][0]["value"][0], "HMAC-SHA256:fp(21)");
        assert_eq!(v["filter"][1]["value"][0], "available");
        let m = redact_message(
            "no image matches quarterly secret plan in state available",
            Some(&p),
            spec,
            &fp,
        );
        assert!(!m.contains("quarterly"), "{m}");
        assert!(
            m.contains("HMAC-SHA256:fp(21)") && m.contains("available"),
            "{m}"
        );
        // A token quoted by an error message is replaced the way its parameter is.
        let spec = Action::spec_of(Service::Ec2, "ImportImage");
        let p = Params::parse(b"ClientToken=my-idem-token-7").unwrap();
        let m = redact_message("token my-idem-token-7 reused", Some(&p), spec, &fp);
        assert!(!m.contains("my-idem-token-7"), "{m}");
    }

    #[test]
    fn response_elements_take_ids_and_never_secrets() {
        let body = "<R><importTaskId>import-ami-1</importTaskId><description>d</description></R>";
        assert_eq!(
            response_elements(body),
            json!({"importTaskId": "import-ami-1"})
        );
        let sts = "<Credentials><AccessKeyId>ASIAX</AccessKeyId><SecretAccessKey>s</SecretAccessKey>\
<SessionToken>t</SessionToken><Expiration>2026</Expiration></Credentials>";
        assert_eq!(
            response_elements(sts),
            json!({"accessKeyId": "ASIAX", "expiration": "2026"})
        );
        assert_eq!(response_elements("<R/>"), Value::Null);
    }

    #[test]
    fn hostile_parameter_names_do_not_panic_or_grow_without_bound() {
        let mut root = Value::Object(Map::new());
        put(&mut root, &["A", "18446744073709551615", "B"], json!(1));
        put(&mut root, &["", "", "0"], json!(2));
        put(&mut root, &["A", "x"], json!(3));
        put(&mut root, &["L", "1111"], json!(4));
        for i in 1..=12 {
            put(&mut root, &["M", &i.to_string()], json!(i));
        }
        densify(&mut root);
        assert!(root.to_string().len() < 1_000, "{root}");
        assert_eq!(root["a"]["x"], 3);
        assert_eq!(root["l"]["1111"], 4, "sparse numbering stays an object");
        assert_eq!(root["m"][11], 12, "1..=n becomes a list, in numeric order");
    }
}
