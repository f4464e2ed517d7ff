//! Key policies: which principals may use which key for what.
//!
//! The grammar is the IAM JSON policy grammar's subset that key policies use:
//! `{"Version": "2012-10-17", "Statement": [{"Sid", "Effect", "Principal": {"AWS": …} | "*",
//! "Action": …, "Resource": "*"}]}`. Evaluation denies by default; an explicit `Deny` wins over
//! any `Allow`. A `Condition` block or a `NotAction` / `NotPrincipal` is refused when the
//! policy is set rather than ignored, so a policy never allows more than it says.

use serde_json::Value;

use crate::error::{KmsError, Result};

/// Who is calling: an IAM principal of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The principal's ARN, e.g. `arn:aws:iam::123456789012:user/alice`.
    pub arn: String,
    /// The account id the principal belongs to.
    pub account: String,
}

impl Caller {
    /// A caller `arn` in `account`.
    #[must_use]
    pub fn new(arn: impl Into<String>, account: impl Into<String>) -> Self {
        Caller {
            arn: arn.into(),
            account: account.into(),
        }
    }

    /// The account's root principal (what the embedded default's admin and the service itself
    /// act as).
    #[must_use]
    pub fn account_root(account: &str) -> Self {
        Caller::new(format!("arn:aws:iam::{account}:root"), account)
    }
}

/// Allow or Deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Grants.
    Allow,
    /// Forbids, whatever else grants.
    Deny,
}

/// One statement of a key policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// Allow or Deny.
    pub effect: Effect,
    /// Principal patterns: `*`, an ARN, an account root ARN, or a bare account id.
    pub principals: Vec<String>,
    /// Action patterns, with `*` and `?` wildcards, e.g. `kms:*`, `kms:GenerateDataKey*`.
    pub actions: Vec<String>,
}

/// Upper bound on a key policy document, as in AWS KMS (32 KiB).
pub const MAX_POLICY_BYTES: usize = 32 * 1024;
/// Upper bound on statements in one policy.
pub const MAX_STATEMENTS: usize = 100;

/// A parsed key policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPolicy {
    /// The statements, in document order.
    pub statements: Vec<Statement>,
}

impl KeyPolicy {
    /// The default policy of a new key: the key's account may do everything with it, and its
    /// IAM policies decide who inside the account may.
    #[must_use]
    pub fn default_document(account: &str) -> String {
        serde_json::json!({
            "Version": "2012-10-17",
            "Id": "key-default-1",
            "Statement": [{
                "Sid": "Enable IAM User Permissions",
                "Effect": "Allow",
                "Principal": {"AWS": format!("arn:aws:iam::{account}:root")},
                "Action": "kms:*",
                "Resource": "*"
            }]
        })
        .to_string()
    }

    /// Parses a policy document, refusing what this evaluator would not honour.
    pub fn parse(doc: &str) -> Result<Self> {
        if doc.len() > MAX_POLICY_BYTES {
            return Err(KmsError::MalformedPolicy(format!(
                "the document is {} bytes; the limit is {MAX_POLICY_BYTES}",
                doc.len()
            )));
        }
        let v: Value = serde_json::from_str(doc)
            .map_err(|e| KmsError::MalformedPolicy(format!("not JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| KmsError::MalformedPolicy("the document is not a JSON object".into()))?;
        if let Some(ver) = obj.get("Version")
            && ver != "2012-10-17"
            && ver != "2008-10-17"
        {
            return Err(KmsError::MalformedPolicy(
                "Version must be \"2012-10-17\"".into(),
            ));
        }
        let stmts = match obj.get("Statement") {
            Some(Value::Array(a)) => a.clone(),
            Some(o @ Value::Object(_)) => vec![o.clone()],
            _ => {
                return Err(KmsError::MalformedPolicy(
                    "Statement must be an object or a list of objects".into(),
                ));
            }
        };
        if stmts.len() > MAX_STATEMENTS {
            return Err(KmsError::MalformedPolicy(format!(
                "{} statements; at most {MAX_STATEMENTS}",
                stmts.len()
            )));
        }
        let mut statements = Vec::with_capacity(stmts.len());
        for (i, s) in stmts.iter().enumerate() {
            let s = s.as_object().ok_or_else(|| {
                KmsError::MalformedPolicy(format!("statement {i} is not an object"))
            })?;
            for unsupported in ["Condition", "NotAction", "NotPrincipal", "NotResource"] {
                if s.contains_key(unsupported) {
                    return Err(KmsError::MalformedPolicy(format!(
                        "statement {i}: {unsupported} is not supported in key policies here; express the rule with Principal and Action"
                    )));
                }
            }
            let effect = match s.get("Effect").and_then(Value::as_str) {
                Some("Allow") => Effect::Allow,
                Some("Deny") => Effect::Deny,
                _ => {
                    return Err(KmsError::MalformedPolicy(format!(
                        "statement {i}: Effect must be \"Allow\" or \"Deny\""
                    )));
                }
            };
            let principals = match s.get("Principal") {
                Some(Value::String(p)) if p == "*" => vec!["*".to_string()],
                Some(Value::Object(p)) => match p.get("AWS") {
                    Some(v) => string_or_list(v, i, "Principal.AWS")?,
                    None => {
                        return Err(KmsError::MalformedPolicy(format!(
                            "statement {i}: Principal must name AWS principals"
                        )));
                    }
                },
                _ => {
                    return Err(KmsError::MalformedPolicy(format!(
                        "statement {i}: Principal is required"
                    )));
                }
            };
            let actions = match s.get("Action") {
                Some(v) => string_or_list(v, i, "Action")?,
                None => {
                    return Err(KmsError::MalformedPolicy(format!(
                        "statement {i}: Action is required"
                    )));
                }
            };
            if let Some(r) = s.get("Resource")
                && string_or_list(r, i, "Resource")?.iter().any(|r| r != "*")
            {
                return Err(KmsError::MalformedPolicy(format!(
                    "statement {i}: in a key policy Resource must be \"*\" (the key itself)"
                )));
            }
            statements.push(Statement {
                effect,
                principals,
                actions,
            });
        }
        Ok(KeyPolicy { statements })
    }

    /// Whether `caller` may perform `action` (e.g. `kms:Decrypt`): some statement allows it
    /// and none denies it.
    #[must_use]
    pub fn allows(&self, caller: &Caller, action: &str) -> bool {
        self.decide(caller, action) == Some(true)
    }

    /// What the policy says of `caller` doing `action`: `Some(false)` for an explicit
    /// `Deny`, `Some(true)` for an `Allow` (and no `Deny`), `None` when no statement applies
    /// (then a grant may still allow it).
    #[must_use]
    pub fn decide(&self, caller: &Caller, action: &str) -> Option<bool> {
        let mut allowed = None;
        for s in &self.statements {
            let principal_hit = s.principals.iter().any(|p| principal_matches(p, caller));
            let action_hit = s.actions.iter().any(|a| wildcard_match(a, action, true));
            if principal_hit && action_hit {
                match s.effect {
                    Effect::Deny => return Some(false),
                    Effect::Allow => allowed = Some(true),
                }
            }
        }
        allowed
    }
}

fn string_or_list(v: &Value, i: usize, field: &str) -> Result<Vec<String>> {
    let bad = || {
        KmsError::MalformedPolicy(format!(
            "statement {i}: {field} must be a string or a list of strings"
        ))
    };
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(a) if a.len() <= 1000 => a
            .iter()
            .map(|x| x.as_str().map(str::to_string).ok_or_else(bad))
            .collect(),
        _ => Err(bad()),
    }
}

pub(crate) fn principal_matches(pattern: &str, caller: &Caller) -> bool {
    if pattern == "*" || pattern == caller.arn {
        return true;
    }
    // An account root ARN or a bare account id stands for every principal of that account.
    let root = format!("arn:aws:iam::{}:root", caller.account);
    pattern == root || pattern == caller.account
}

/// Matches `text` against `pattern` with `*` (any run) and `?` (any one character), as IAM
/// does for actions (case-insensitive) and resources (case-sensitive). Linear time: no
/// backtracking blow-up on hostile patterns.
#[must_use]
pub fn wildcard_match(pattern: &str, text: &str, ignore_case: bool) -> bool {
    let norm = |c: char| {
        if ignore_case {
            c.to_ascii_lowercase()
        } else {
            c
        }
    };
    let p: Vec<char> = pattern.chars().map(norm).collect();
    let t: Vec<char> = text.chars().map(norm).collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn test_wildcard_match_cases() {
        assert!(wildcard_match("kms:*", "kms:Decrypt", true));
        assert!(wildcard_match(
            "KMS:generatedatakey*",
            "kms:GenerateDataKey",
            true
        ));
        assert!(wildcard_match("kms:?ecrypt", "kms:Decrypt", true));
        assert!(!wildcard_match("kms:Encrypt", "kms:Decrypt", true));
        assert!(!wildcard_match("a*b", "aXc", false));
        assert!(wildcard_match(&"*".repeat(200), "x", false));
    }

    #[test]
    fn test_policy_default_allows_account_only() {
        let p = KeyPolicy::parse(&KeyPolicy::default_document("111122223333")).unwrap();
        assert!(p.allows(
            &Caller::new("arn:aws:iam::111122223333:user/a", "111122223333"),
            "kms:Decrypt"
        ));
        assert!(!p.allows(
            &Caller::new("arn:aws:iam::999999999999:user/a", "999999999999"),
            "kms:Decrypt"
        ));
    }

    #[test]
    fn test_policy_explicit_deny_wins() {
        let doc = r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"kms:*","Resource":"*"},
            {"Effect":"Deny","Principal":{"AWS":["arn:aws:iam::111122223333:user/bob"]},"Action":"kms:Decrypt"}]}"#;
        let p = KeyPolicy::parse(doc).unwrap();
        let bob = Caller::new("arn:aws:iam::111122223333:user/bob", "111122223333");
        assert!(!p.allows(&bob, "kms:Decrypt"));
        assert!(p.allows(&bob, "kms:GenerateDataKey"));
    }

    #[test]
    fn test_policy_condition_refused() {
        let doc =
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","Condition":{}}]}"#;
        assert!(matches!(
            KeyPolicy::parse(doc),
            Err(KmsError::MalformedPolicy(_))
        ));
        assert!(KeyPolicy::parse("[]").is_err());
        assert!(KeyPolicy::parse(&"x".repeat(40_000)).is_err());
    }
}
