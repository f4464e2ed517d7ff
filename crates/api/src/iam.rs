//! IAM identity policies: the standard JSON grammar, evaluated deny-by-default with an
//! explicit `Deny` winning over any `Allow`.
//!
//! Grammar accepted: `Version` (`2012-10-17` or `2008-10-17`), `Id`, and `Statement` (one
//! object or a list) with `Sid`, `Effect` (`Allow` / `Deny`), one of `Action` / `NotAction`,
//! one of `Resource` / `NotResource` (strings or lists; `*` and `?` wildcards), and
//! `Condition` with these operators (each also with `IfExists`, and the `ForAnyValue:` /
//! `ForAllValues:` set prefixes): `StringEquals`, `StringNotEquals`,
//! `StringEqualsIgnoreCase`, `StringNotEqualsIgnoreCase`, `StringLike`, `StringNotLike`,
//! `Bool`, `IpAddress`, `NotIpAddress`, `DateEquals`, `DateNotEquals`, `DateLessThan`,
//! `DateLessThanEquals`, `DateGreaterThan`, `DateGreaterThanEquals`, `NumericEquals`,
//! `NumericNotEquals`, `NumericLessThan`, `NumericLessThanEquals`, `NumericGreaterThan`,
//! `NumericGreaterThanEquals`, `Null`. Anything else — an unknown field, operator or effect, a
//! `Principal` in an identity policy — is refused when the policy is stored, so a policy never
//! grants more (or less) than it says.
//!
//! Condition semantics follow IAM's: every operator block and every key in it must hold; the
//! values listed for one key are alternatives; a key absent from the request makes a
//! positive operator false (true with `IfExists`) and a negated one true.

use std::collections::HashMap;
use std::net::IpAddr;

use serde_json::Value;

/// Largest policy document accepted (bytes).
pub const MAX_POLICY: usize = 10 * 1024;
/// Most statements in one policy.
const MAX_STATEMENTS: usize = 100;

/// Why a policy document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("MalformedPolicyDocument: {0}")]
pub struct PolicyError(pub String);

fn bad(m: impl Into<String>) -> PolicyError {
    PolicyError(m.into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    StrEq,
    StrNe,
    StrEqI,
    StrNeI,
    StrLike,
    StrNotLike,
    Bool,
    Ip,
    NotIp,
    Date(Cmp),
    Num(Cmp),
    Null,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SetMode {
    Single,
    Any,
    All,
}

#[derive(Debug, Clone, PartialEq)]
struct Condition {
    op: Op,
    if_exists: bool,
    set: SetMode,
    key: String,
    values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
struct Statement {
    effect: Effect,
    /// Trust policies only: who the statement is about (`*`, principal ARNs, an account's
    /// `…:root`, `service:NAME` for a service principal).
    principals: Option<Vec<String>>,
    not_principal: bool,
    actions: Vec<String>,
    not_action: bool,
    resources: Vec<String>,
    not_resource: bool,
    conditions: Vec<Condition>,
}

/// A parsed policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    statements: Vec<Statement>,
}

/// What a request is, for evaluation.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// `ec2:ImportImage`, …
    pub action: String,
    /// The resource's ARN (`*` when the action has no resource).
    pub resource: String,
    /// Condition keys (lower-case names) and their values.
    pub keys: HashMap<String, Vec<String>>,
    /// The caller's ARNs and account, for the `Principal` of trust policies.
    pub principals: Vec<String>,
}

impl Context {
    /// A context for `action` on `resource`.
    #[must_use]
    pub fn new(action: &str, resource: &str) -> Self {
        Context {
            action: action.into(),
            resource: resource.into(),
            keys: HashMap::new(),
            principals: Vec::new(),
        }
    }

    /// Sets the condition key `name` to `values`.
    #[must_use]
    pub fn with(mut self, name: &str, values: &[&str]) -> Self {
        self.keys.insert(
            name.to_ascii_lowercase(),
            values.iter().map(|v| (*v).to_string()).collect(),
        );
        self
    }
}

/// The outcome of evaluating policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// An `Allow` matched and no `Deny` did.
    Allow,
    /// A `Deny` matched.
    ExplicitDeny,
    /// Nothing matched.
    ImplicitDeny,
}

fn strings(v: &Value, what: &str) -> Result<Vec<String>, PolicyError> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(a) if !a.is_empty() => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad(format!("{what} must hold strings")))
            })
            .collect(),
        _ => Err(bad(format!(
            "{what} must be a string or a non-empty list of strings"
        ))),
    }
}

fn condition_values(v: &Value, what: &str) -> Result<Vec<String>, PolicyError> {
    let one = |x: &Value| match x {
        Value::String(s) => Ok(s.clone()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(bad(format!(
            "{what}: condition values are strings, numbers or booleans"
        ))),
    };
    match v {
        Value::Array(a) if !a.is_empty() => a.iter().map(one).collect(),
        Value::Array(_) => Err(bad(format!("{what}: an empty list of values"))),
        x => Ok(vec![one(x)?]),
    }
}

fn parse_op(name: &str) -> Result<(Op, bool, SetMode), PolicyError> {
    let (set, rest) = if let Some(r) = name.strip_prefix("ForAnyValue:") {
        (SetMode::Any, r)
    } else if let Some(r) = name.strip_prefix("ForAllValues:") {
        (SetMode::All, r)
    } else {
        (SetMode::Single, name)
    };
    let (base, if_exists) = match rest.strip_suffix("IfExists") {
        Some(b) => (b, true),
        None => (rest, false),
    };
    let op = match base {
        "StringEquals" => Op::StrEq,
        "StringNotEquals" => Op::StrNe,
        "StringEqualsIgnoreCase" => Op::StrEqI,
        "StringNotEqualsIgnoreCase" => Op::StrNeI,
        "StringLike" => Op::StrLike,
        "StringNotLike" => Op::StrNotLike,
        "Bool" => Op::Bool,
        "IpAddress" => Op::Ip,
        "NotIpAddress" => Op::NotIp,
        "DateEquals" => Op::Date(Cmp::Eq),
        "DateNotEquals" => Op::Date(Cmp::Ne),
        "DateLessThan" => Op::Date(Cmp::Lt),
        "DateLessThanEquals" => Op::Date(Cmp::Le),
        "DateGreaterThan" => Op::Date(Cmp::Gt),
        "DateGreaterThanEquals" => Op::Date(Cmp::Ge),
        "NumericEquals" => Op::Num(Cmp::Eq),
        "NumericNotEquals" => Op::Num(Cmp::Ne),
        "NumericLessThan" => Op::Num(Cmp::Lt),
        "NumericLessThanEquals" => Op::Num(Cmp::Le),
        "NumericGreaterThan" => Op::Num(Cmp::Gt),
        "NumericGreaterThanEquals" => Op::Num(Cmp::Ge),
        "Null" if !if_exists => Op::Null,
        _ => return Err(bad(format!("unsupported condition operator {name:?}"))),
    };
    Ok((op, if_exists, set))
}

/// Seconds since the epoch of an ISO 8601 date (`2026-11-23`, `2026-11-23T12:00:00Z`, with
/// optional fractional seconds) or of a number of epoch seconds.
fn parse_date(s: &str) -> Option<i64> {
    if let Ok(n) = s.parse::<i64>() {
        return Some(n);
    }
    let t = s.strip_suffix('Z').unwrap_or(s);
    let t = t.split('.').next().unwrap_or(t);
    let compact: String = t.chars().filter(|c| *c != '-' && *c != ':').collect();
    let full = if compact.len() == 8 {
        format!("{compact}T000000Z")
    } else {
        format!("{compact}Z")
    };
    crate::sigv4::parse_amz_date(&full)
}

fn check_values(op: Op, values: &[String], what: &str) -> Result<(), PolicyError> {
    let ok = match op {
        Op::Ip | Op::NotIp => values.iter().all(|v| parse_net(v).is_some()),
        Op::Date(_) => values.iter().all(|v| parse_date(v).is_some()),
        Op::Num(_) => values.iter().all(|v| v.parse::<f64>().is_ok()),
        Op::Bool | Op::Null => values
            .iter()
            .all(|v| v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false")),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(bad(format!("{what}: a value does not suit its operator")))
    }
}

fn parse_net(v: &str) -> Option<ipnet::IpNet> {
    v.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| v.parse::<IpAddr>().ok().map(ipnet::IpNet::from))
}

/// Which kind of document is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// An identity policy: `Resource`, no `Principal`.
    Identity,
    /// A role's trust policy: `Principal`, `Resource` optional.
    Trust,
}

fn principals(v: &Value, n: usize) -> Result<Vec<String>, PolicyError> {
    let what = format!("statement {n}: Principal");
    if v.as_str() == Some("*") {
        return Ok(vec!["*".into()]);
    }
    let o = v.as_object().filter(|o| !o.is_empty()).ok_or_else(|| {
        bad(format!(
            "{what} must be \"*\" or an object of AWS or Service principals"
        ))
    })?;
    let mut out = Vec::new();
    for (k, list) in o {
        for p in strings(list, &what)? {
            out.push(match k.as_str() {
                "AWS" if p == "*" => p,
                "AWS" if p.len() == 12 && p.bytes().all(|b| b.is_ascii_digit()) => {
                    format!("arn:aws:iam::{p}:root")
                }
                "AWS" if p.starts_with("arn:aws:iam::") || p.starts_with("arn:aws:sts::") => p,
                "AWS" => {
                    return Err(bad(format!(
                        "{what}: {p:?} is not an account id or an IAM principal ARN"
                    )));
                }
                "Service" => format!("service:{p}"),
                _ => {
                    return Err(bad(format!(
                        "{what}: {k} principals are not supported (AWS and Service are)"
                    )));
                }
            });
        }
    }
    Ok(out)
}

impl Policy {
    /// Parses and checks a policy document.
    pub fn parse(doc: &str) -> Result<Policy, PolicyError> {
        Self::parse_as(doc, Mode::Identity)
    }

    /// Parses and checks a role's trust policy (who may assume it): statements name a
    /// `Principal` (`*`, `{"AWS": ARN or account id}`, `{"Service": NAME}`) and usually
    /// `sts:AssumeRole`; a `Resource` is not needed.
    pub fn parse_trust(doc: &str) -> Result<Policy, PolicyError> {
        Self::parse_as(doc, Mode::Trust)
    }

    fn parse_as(doc: &str, mode: Mode) -> Result<Policy, PolicyError> {
        if doc.len() > MAX_POLICY {
            return Err(bad(format!(
                "the document is longer than {MAX_POLICY} bytes"
            )));
        }
        let v: Value = serde_json::from_str(doc).map_err(|e| bad(format!("not JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| bad("the document must be a JSON object"))?;
        for k in obj.keys() {
            if !matches!(k.as_str(), "Version" | "Id" | "Statement") {
                return Err(bad(format!("unknown field {k:?}")));
            }
        }
        match obj.get("Version").and_then(Value::as_str) {
            Some("2012-10-17" | "2008-10-17") => {}
            _ => return Err(bad("Version must be \"2012-10-17\"")),
        }
        let stmts: Vec<&Value> = match obj.get("Statement") {
            Some(Value::Array(a)) if !a.is_empty() => a.iter().collect(),
            Some(o @ Value::Object(_)) => vec![o],
            _ => return Err(bad("Statement must be an object or a non-empty list")),
        };
        if stmts.len() > MAX_STATEMENTS {
            return Err(bad(format!("more than {MAX_STATEMENTS} statements")));
        }
        let statements = stmts
            .into_iter()
            .enumerate()
            .map(|(i, s)| Self::statement(i + 1, s, mode))
            .collect::<Result<_, _>>()?;
        Ok(Policy { statements })
    }

    fn statement(n: usize, s: &Value, mode: Mode) -> Result<Statement, PolicyError> {
        let o = s
            .as_object()
            .ok_or_else(|| bad(format!("statement {n} must be an object")))?;
        for k in o.keys() {
            match k.as_str() {
                "Sid" | "Effect" | "Action" | "NotAction" | "Resource" | "NotResource"
                | "Condition" => {}
                "Principal" | "NotPrincipal" if mode == Mode::Trust => {}
                "Principal" | "NotPrincipal" => {
                    return Err(bad(format!(
                        "statement {n}: {k} belongs in resource and trust policies, not in an identity policy"
                    )));
                }
                _ => return Err(bad(format!("statement {n}: unknown field {k:?}"))),
            }
        }
        let effect = match o.get("Effect").and_then(Value::as_str) {
            Some("Allow") => Effect::Allow,
            Some("Deny") => Effect::Deny,
            _ => return Err(bad(format!("statement {n}: Effect must be Allow or Deny"))),
        };
        let (actions, not_action) = match (o.get("Action"), o.get("NotAction")) {
            (Some(a), None) => (strings(a, "Action")?, false),
            (None, Some(a)) => (strings(a, "NotAction")?, true),
            _ => {
                return Err(bad(format!(
                    "statement {n}: exactly one of Action and NotAction"
                )));
            }
        };
        let (principals, not_principal) = match (mode, o.get("Principal"), o.get("NotPrincipal")) {
            (Mode::Identity, _, _) => (None, false),
            (Mode::Trust, Some(p), None) => (Some(principals(p, n)?), false),
            (Mode::Trust, None, Some(p)) => (Some(principals(p, n)?), true),
            (Mode::Trust, _, _) => {
                return Err(bad(format!(
                    "statement {n}: a trust policy names exactly one of Principal and NotPrincipal"
                )));
            }
        };
        let (resources, not_resource) = match (o.get("Resource"), o.get("NotResource")) {
            (Some(r), None) => (strings(r, "Resource")?, false),
            (None, Some(r)) => (strings(r, "NotResource")?, true),
            (None, None) if mode == Mode::Trust => (vec!["*".to_string()], false),
            _ => {
                return Err(bad(format!(
                    "statement {n}: exactly one of Resource and NotResource"
                )));
            }
        };
        let mut conditions = Vec::new();
        if let Some(c) = o.get("Condition") {
            let c = c
                .as_object()
                .ok_or_else(|| bad(format!("statement {n}: Condition must be an object")))?;
            for (opname, block) in c {
                let (op, if_exists, set) = parse_op(opname)?;
                let block = block.as_object().filter(|b| !b.is_empty()).ok_or_else(|| {
                    bad(format!(
                        "statement {n}: {opname} must map condition keys to values"
                    ))
                })?;
                for (key, vals) in block {
                    let what = format!("statement {n}: {opname} {key}");
                    let values = condition_values(vals, &what)?;
                    check_values(op, &values, &what)?;
                    conditions.push(Condition {
                        op,
                        if_exists,
                        set,
                        key: key.to_ascii_lowercase(),
                        values,
                    });
                }
            }
        }
        Ok(Statement {
            effect,
            principals,
            not_principal,
            actions,
            not_action,
            resources,
            not_resource,
            conditions,
        })
    }
}

fn any_match(patterns: &[String], text: &str, ignore_case: bool) -> bool {
    patterns
        .iter()
        .any(|p| kms::policy::wildcard_match(p, text, ignore_case))
}

fn cmp(c: Cmp, a: f64, b: f64) -> bool {
    match c {
        Cmp::Eq => a == b,
        Cmp::Ne => a != b,
        Cmp::Lt => a < b,
        Cmp::Le => a <= b,
        Cmp::Gt => a > b,
        Cmp::Ge => a >= b,
    }
}

/// Whether one context value satisfies `op` against the policy's values (the positive
/// reading: for negated operators the caller inverts).
fn value_matches(op: Op, value: &str, wanted: &[String]) -> bool {
    match op {
        Op::StrEq | Op::StrNe => wanted.iter().any(|w| w == value),
        Op::StrEqI | Op::StrNeI => wanted.iter().any(|w| w.eq_ignore_ascii_case(value)),
        Op::StrLike | Op::StrNotLike => any_match(wanted, value, false),
        Op::Bool => wanted.iter().any(|w| w.eq_ignore_ascii_case(value)),
        Op::Ip | Op::NotIp => value.parse::<IpAddr>().is_ok_and(|ip| {
            wanted
                .iter()
                .filter_map(|w| parse_net(w))
                .any(|n| n.contains(&ip))
        }),
        Op::Date(c) => parse_date(value).is_some_and(|v| {
            wanted
                .iter()
                .filter_map(|w| parse_date(w))
                .any(|w| cmp(c, v as f64, w as f64))
        }),
        Op::Num(c) => value.parse::<f64>().is_ok_and(|v| {
            wanted
                .iter()
                .filter_map(|w| w.parse::<f64>().ok())
                .any(|w| cmp(c, v, w))
        }),
        Op::Null => false,
    }
}

fn negated(op: Op) -> bool {
    matches!(
        op,
        Op::StrNe | Op::StrNeI | Op::StrNotLike | Op::NotIp | Op::Date(Cmp::Ne) | Op::Num(Cmp::Ne)
    )
}

fn condition_holds(c: &Condition, ctx: &Context) -> bool {
    let present = ctx.keys.get(&c.key).filter(|v| !v.is_empty());
    if c.op == Op::Null {
        let want_absent = c.values.iter().any(|v| v.eq_ignore_ascii_case("true"));
        return want_absent == present.is_none();
    }
    let Some(values) = present else {
        return c.if_exists || negated(c.op) || c.set == SetMode::All;
    };
    // Negated operators: a value "matches" when it equals none of the listed values.
    let one = |v: &String| {
        let m = match c.op {
            Op::Date(Cmp::Ne) => value_matches(Op::Date(Cmp::Eq), v, &c.values),
            Op::Num(Cmp::Ne) => value_matches(Op::Num(Cmp::Eq), v, &c.values),
            op => value_matches(op, v, &c.values),
        };
        if negated(c.op) { !m } else { m }
    };
    match c.set {
        SetMode::All => values.iter().all(one),
        SetMode::Any => values.iter().any(one),
        // A single-valued operator on several values: IAM reads it as any for positive
        // operators and every for negated ones.
        SetMode::Single if negated(c.op) => values.iter().all(one),
        SetMode::Single => values.iter().any(one),
    }
}

/// Whether the principal pattern `p` of a trust policy names the caller of `ctx`.
fn principal_hit(p: &str, ctx: &Context) -> bool {
    if p == "*" {
        return true;
    }
    if ctx.principals.iter().any(|c| c == p) {
        return true;
    }
    // An account's root stands for every principal of the account.
    p.strip_prefix("arn:aws:iam::")
        .and_then(|r| r.strip_suffix(":root"))
        .is_some_and(|acct| {
            ctx.keys
                .get("aws:principalaccount")
                .is_some_and(|v| v.iter().any(|a| a == acct))
        })
}

fn applies(s: &Statement, ctx: &Context) -> bool {
    if let Some(ps) = &s.principals
        && ps.iter().any(|p| principal_hit(p, ctx)) == s.not_principal
    {
        return false;
    }
    let action = any_match(&s.actions, &ctx.action, true) != s.not_action;
    let resource = any_match(&s.resources, &ctx.resource, false) != s.not_resource;
    action && resource && s.conditions.iter().all(|c| condition_holds(c, ctx))
}

/// Evaluates `policies` for `ctx`: deny by default, an explicit `Deny` wins.
#[must_use]
pub fn evaluate<'a>(policies: impl IntoIterator<Item = &'a Policy>, ctx: &Context) -> Decision {
    let mut allowed = false;
    for p in policies {
        for s in &p.statements {
            if applies(s, ctx) {
                match s.effect {
                    Effect::Deny => return Decision::ExplicitDeny,
                    Effect::Allow => allowed = true,
                }
            }
        }
    }
    if allowed {
        Decision::Allow
    } else {
        Decision::ImplicitDeny
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn p(doc: &str) -> Policy {
        Policy::parse(doc).unwrap()
    }

    const IMAGE: &str = "arn:aws:ec2:us-east-1::image/ami-0123456789abcdef0";

    #[test]
    fn default_deny_allow_and_explicit_deny() {
        let allow = p(
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":["ec2:Describe*","ec2:ImportImage"],"Resource":"*"}}"#,
        );
        let deny = p(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"ec2:ImportImage","Resource":"*"}]}"#,
        );
        let ctx = Context::new("ec2:ImportImage", "*");
        assert_eq!(evaluate([], &ctx), Decision::ImplicitDeny);
        assert_eq!(evaluate([&allow], &ctx), Decision::Allow);
        assert_eq!(evaluate([&allow, &deny], &ctx), Decision::ExplicitDeny);
        assert_eq!(
            evaluate([&allow], &Context::new("ec2:describeimages", "*")),
            Decision::Allow
        );
        assert_eq!(
            evaluate([&allow], &Context::new("ec2:ExportImage", "*")),
            Decision::ImplicitDeny
        );
        let not = p(
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","NotAction":"ec2:Deregister*","NotResource":"arn:aws:ec2:*:*:snapshot/*"}}"#,
        );
        assert_eq!(
            evaluate([&not], &Context::new("ec2:ExportImage", IMAGE)),
            Decision::Allow
        );
        assert_eq!(
            evaluate([&not], &Context::new("ec2:DeregisterImage", IMAGE)),
            Decision::ImplicitDeny
        );
        assert_eq!(
            evaluate(
                [&not],
                &Context::new("ec2:ExportImage", "arn:aws:ec2:us-east-1::snapshot/snap-1")
            ),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn conditions() {
        let mfa = p(
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ec2:*","Resource":"*",
            "Condition":{"Bool":{"aws:MultiFactorAuthPresent":"true","aws:SecureTransport":true},
                         "IpAddress":{"aws:SourceIp":["10.0.0.0/8","192.0.2.7"]},
                         "DateLessThan":{"aws:CurrentTime":"2027-01-01T00:00:00Z"}}}}"#,
        );
        let base = Context::new("ec2:ImportImage", "*")
            .with("aws:SecureTransport", &["true"])
            .with("aws:SourceIp", &["10.1.2.3"])
            .with("aws:CurrentTime", &["2026-11-23T12:00:00Z"]);
        assert_eq!(
            evaluate([&mfa], &base),
            Decision::ImplicitDeny,
            "no MFA key at all"
        );
        let ok = base.clone().with("aws:MultiFactorAuthPresent", &["true"]);
        assert_eq!(evaluate([&mfa], &ok), Decision::Allow);
        assert_eq!(
            evaluate([&mfa], &ok.clone().with("aws:SourceIp", &["192.0.2.8"])),
            Decision::ImplicitDeny
        );
        assert_eq!(
            evaluate([&mfa], &ok.clone().with("aws:SourceIp", &["192.0.2.7"])),
            Decision::Allow
        );
        assert_eq!(
            evaluate([&mfa], &ok.clone().with("aws:CurrentTime", &["2027-02-01"])),
            Decision::ImplicitDeny
        );

        let tags = p(r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Action":"ec2:ExportImage","Resource":"*","Condition":{"StringLike":{"aws:ResourceTag/team":"blue*"}}},
            {"Effect":"Deny","Action":"ec2:*","Resource":"*","Condition":{"StringNotEquals":{"ec2:Encrypted":"true"}}},
            {"Effect":"Deny","Action":"ec2:*","Resource":"*","Condition":{"BoolIfExists":{"aws:ViaAWSService":"true"}}}]}"#);
        let c = Context::new("ec2:ExportImage", IMAGE).with("ec2:Encrypted", &["true"]);
        assert_eq!(
            evaluate(
                [&tags],
                &c.clone().with("aws:ResourceTag/team", &["blue-2"])
            ),
            Decision::ExplicitDeny,
            "IfExists on an absent key holds"
        );
        let tags = p(r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Action":"ec2:ExportImage","Resource":"*","Condition":{"StringLike":{"aws:ResourceTag/team":"blue*"}}},
            {"Effect":"Deny","Action":"ec2:*","Resource":"*","Condition":{"StringNotEquals":{"ec2:Encrypted":"true"}}}]}"#);
        assert_eq!(
            evaluate(
                [&tags],
                &c.clone().with("aws:ResourceTag/Team", &["blue-2"])
            ),
            Decision::Allow,
            "key names ignore case"
        );
        assert_eq!(
            evaluate([&tags], &c.clone().with("aws:ResourceTag/team", &["Blue"])),
            Decision::ImplicitDeny,
            "values do not"
        );
        assert_eq!(evaluate([&tags], &c.clone()), Decision::ImplicitDeny);
        let plain = Context::new("ec2:ExportImage", IMAGE).with("aws:ResourceTag/team", &["blue"]);
        assert_eq!(
            evaluate([&tags], &plain),
            Decision::ExplicitDeny,
            "a negated operator on an absent key holds"
        );
        let null = p(
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Deny","Action":"*","Resource":"*","Condition":{"Null":{"aws:TokenIssueTime":"true"}}}}"#,
        );
        assert_eq!(
            evaluate([&null], &Context::new("ec2:ImportImage", "*")),
            Decision::ExplicitDeny
        );
        let any = p(
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"ForAllValues:StringEquals":{"aws:TagKeys":["team","env"]},"NumericLessThanEquals":{"ec2:VolumeSize":"100"}}}}"#,
        );
        let c = Context::new("ec2:CreateTags", "*").with("ec2:VolumeSize", &["64"]);
        assert_eq!(
            evaluate([&any], &c.clone().with("aws:TagKeys", &["team"])),
            Decision::Allow
        );
        assert_eq!(
            evaluate([&any], &c.clone().with("aws:TagKeys", &["team", "owner"])),
            Decision::ImplicitDeny
        );
        assert_eq!(
            evaluate([&any], &c.with("ec2:VolumeSize", &["101"])),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn documents_that_would_say_something_else_are_refused() {
        for (doc, words) in [
            (
                r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*"}}"#,
                "Version",
            ),
            (
                r#"{"Version":"2012-10-17","Statement":{"Effect":"Permit","Action":"*","Resource":"*"}}"#,
                "Effect",
            ),
            (
                r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"*"}}"#,
                "Resource",
            ),
            (
                r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"*","NotAction":"x","Resource":"*"}}"#,
                "exactly one",
            ),
            (
                r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*"}}"#,
                "identity policy",
            ),
            (
                r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringSoundsLike":{"a":"b"}}}}"#,
                "operator",
            ),
            (
                r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"IpAddress":{"aws:SourceIp":"ten"}}}}"#,
                "does not suit",
            ),
            (
                r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"*","Resource":"*","Extra":1}}"#,
                "unknown field",
            ),
            (r#"{"Version":"2012-10-17","Statement":[]}"#, "Statement"),
            ("[1]", "object"),
        ] {
            let e = Policy::parse(doc).unwrap_err().to_string();
            assert!(e.contains(words), "{doc}: {e}");
        }
        assert!(Policy::parse(&"x".repeat(MAX_POLICY + 1)).is_err());
    }

    #[test]
    fn trust_policies_name_who_may_assume() {
        let t = Policy::parse_trust(
            r#"{"Version":"2012-10-17","Statement":[
                {"Effect":"Allow","Principal":{"AWS":["arn:aws:iam::111122223333:user/bob","444455556666"]},"Action":"sts:AssumeRole",
                 "Condition":{"Bool":{"aws:MultiFactorAuthPresent":"true"}}},
                {"Effect":"Allow","Principal":{"Service":"vmie.amazonaws.com"},"Action":"sts:AssumeRole"},
                {"Effect":"Deny","NotPrincipal":{"AWS":["arn:aws:iam::111122223333:user/bob","arn:aws:iam::444455556666:root"]},"Action":"*"}]}"#,
        )
        .unwrap();
        let ctx = |who: &str, account: &str, mfa: bool| {
            let mut c = Context::new("sts:AssumeRole", "arn:aws:iam::111122223333:role/r")
                .with("aws:PrincipalAccount", &[account]);
            if mfa {
                c = c.with("aws:MultiFactorAuthPresent", &["true"]);
            }
            c.principals = vec![who.to_string()];
            c
        };
        let bob = "arn:aws:iam::111122223333:user/bob";
        assert_eq!(
            evaluate([&t], &ctx(bob, "111122223333", true)),
            Decision::Allow
        );
        assert_eq!(
            evaluate([&t], &ctx(bob, "111122223333", false)),
            Decision::ImplicitDeny,
            "the condition wants MFA"
        );
        let carol = "arn:aws:iam::111122223333:user/carol";
        assert_eq!(
            evaluate([&t], &ctx(carol, "111122223333", true)),
            Decision::ExplicitDeny,
            "NotPrincipal: everybody else is denied"
        );
        let other = "arn:aws:iam::444455556666:user/dave";
        assert_eq!(
            evaluate([&t], &ctx(other, "444455556666", true)),
            Decision::Allow,
            "an account id stands for its root: every principal of it"
        );
        // Identity policies still refuse a Principal; trust policies refuse what they cannot
        // match.
        assert!(Policy::parse(r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*"}}"#).is_err());
        for bad in [
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"sts:AssumeRole"}}"#,
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"Federated":"x"},"Action":"sts:AssumeRole"}}"#,
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"AWS":"bob"},"Action":"sts:AssumeRole"}}"#,
        ] {
            assert!(Policy::parse_trust(bad).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_document_gets_a_verdict(doc in "[ -~]{0,400}") {
            let _ = Policy::parse(&doc);
        }
    }
}
