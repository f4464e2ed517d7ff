//! KMS on the endpoint (JSON 1.1, `X-Amz-Target: TrentService.<Action>`, signed for `kms`)
//! over the `kms` crate — the keys `vmie kms` and the import pipeline use. A call is allowed
//! when the caller's IAM policies allow it on the key's ARN
//! (`arn:aws:kms:REGION:ACCOUNT:key/ID`, and `…:alias/NAME` for alias actions), decided in
//! [`crate::authz`] like every action, **and** the key's own policy allows it (checked by
//! the `kms` crate). Errors carry KMS's names (`NotFoundException`, `DisabledException`,
//! `KMSInvalidStateException`, `AccessDeniedException`, …).

use std::marker::PhantomData;

use base64::Engine as _;
use serde_json::{Map, Value, json};

use kms::{KeyManager, KeyMetadata, KeyState, KmsError};

use crate::error::ApiError;
use crate::handler::{Cx, Declaration, Env, Handler, Input, Target};
use crate::identity::Principal;
use crate::op::{Op, ops};
use crate::query::Params;
use crate::spec::{Authz, Field, Kind, Service, Spec, Tags, field, plain};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// KMS's answer to a key error.
#[must_use]
pub fn kms_error(e: &KmsError) -> ApiError {
    let code = e.code();
    match code {
        "KMSInternalException" => {
            let mut a = ApiError::internal("KMS", e);
            a.code = code.into();
            a
        }
        "DependencyTimeoutException" => ApiError {
            status: 503,
            code: code.into(),
            message: "the key store did not answer; the request may be retried".into(),
        },
        _ => ApiError::client(code, e.to_string()),
    }
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::client("ValidationException", message)
}

/// The parameters of a KMS request as the activity log records them: the JSON body
/// flattened to dotted names (`Tags.1.TagKey`; an encryption context as
/// `EncryptionContext.N.Key`/`.Value`), each then redacted by the kind the table gives it.
/// `None` when the body is not a JSON object within the Query limits.
#[must_use]
pub fn recorded_params(body: &[u8]) -> Option<Params> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let mut pairs = Vec::new();
    flatten("", &v, &mut pairs, 0);
    let form = pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                crate::sigv4::uri_encode(k, false),
                crate::sigv4::uri_encode(v, false)
            )
        })
        .collect::<Vec<_>>()
        .join("&");
    Params::parse(form.as_bytes()).ok()
}

fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>, depth: usize) {
    if depth > 8 || out.len() > crate::query::MAX_PARAMS {
        return;
    }
    let name = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        Value::Object(o) if prefix == "EncryptionContext" => {
            for (i, (k, x)) in o.iter().enumerate() {
                out.push((name(&format!("{}.Key", i + 1)), k.clone()));
                flatten(&name(&format!("{}.Value", i + 1)), x, out, depth + 1);
            }
        }
        Value::Object(o) => {
            for (k, x) in o {
                flatten(&name(k), x, out, depth + 1);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                flatten(&name(&(i + 1).to_string()), x, out, depth + 1);
            }
        }
        Value::String(s) => out.push((prefix.to_string(), s.clone())),
        Value::Null => {}
        x => out.push((prefix.to_string(), x.to_string())),
    }
}

/// A parsed KMS request of the action `O`, with the keys it touches once looked up.
pub struct KCall<O> {
    body: Map<String, Value>,
    /// Key id the request acts on (resolved from an id, ARN, alias or ciphertext).
    key: Option<String>,
    /// What authorization decides on: the keys' ARNs with their tags, alias ARNs.
    targets: Vec<Target>,
    _op: PhantomData<O>,
}

impl<O> std::fmt::Debug for KCall<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KCall")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl<O> KCall<O> {
    fn str(&self, k: &str) -> Result<Option<&str>, ApiError> {
        match self.body.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ApiError::client(
                "SerializationException",
                format!("{k} must be a string"),
            )),
        }
    }

    fn int(&self, k: &str, range: std::ops::RangeInclusive<i64>) -> Result<Option<i64>, ApiError> {
        match self.body.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_i64() {
                Some(n) if range.contains(&n) => Ok(Some(n)),
                _ => Err(invalid(format!(
                    "{k} must be an integer from {} to {}",
                    range.start(),
                    range.end()
                ))),
            },
        }
    }

    fn bool(&self, k: &str) -> Result<Option<bool>, ApiError> {
        match self.body.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(ApiError::client(
                "SerializationException",
                format!("{k} must be a boolean"),
            )),
        }
    }

    fn blob(&self, k: &str) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, ApiError> {
        self.str(k)?
            .map(|s| {
                B64.decode(s).map(zeroize::Zeroizing::new).map_err(|_| {
                    ApiError::client("SerializationException", format!("{k} is not base64"))
                })
            })
            .transpose()
    }

    fn context(&self) -> Result<kms::Context, ApiError> {
        match self.body.get("EncryptionContext") {
            None | Some(Value::Null) => Ok(kms::Context::new()),
            Some(Value::Object(o)) => o
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k.clone(), s.clone())),
                    _ => Err(ApiError::client(
                        "SerializationException",
                        "EncryptionContext values are strings",
                    )),
                })
                .collect(),
            Some(_) => Err(ApiError::client(
                "SerializationException",
                "EncryptionContext is a map of strings",
            )),
        }
    }

    fn tags(&self) -> Result<Vec<(String, String)>, ApiError> {
        let Some(v) = self.body.get("Tags") else {
            return Ok(Vec::new());
        };
        let bad = || {
            ApiError::client(
                "SerializationException",
                "Tags is a list of {TagKey, TagValue}",
            )
        };
        v.as_array()
            .ok_or_else(bad)?
            .iter()
            .map(|t| {
                let k = t.get("TagKey").and_then(Value::as_str).ok_or_else(bad)?;
                let v = t.get("TagValue").and_then(Value::as_str).ok_or_else(bad)?;
                Ok((k.to_string(), v.to_string()))
            })
            .collect()
    }

    fn key(&self) -> Result<&str, ApiError> {
        self.key
            .as_deref()
            .ok_or_else(|| ApiError::client("NotFoundException", "no key was named"))
    }
}

fn lower_camel(s: &str) -> String {
    let mut c = s.chars();
    c.next().map_or(String::new(), |f| {
        f.to_ascii_lowercase().to_string() + c.as_str()
    })
}

/// The members of `spec`: the first segment of each parameter's name.
fn member_known(spec: &Spec, member: &str) -> bool {
    spec.params
        .iter()
        .any(|f| f.name.split('.').next() == Some(member))
}

impl<O: Op> Handler for KCall<O> {
    const SPEC: Spec = O::SPEC;

    fn parse(input: Input<'_>, _env: &Env, _who: &Principal) -> Result<Self, ApiError> {
        let body = input.json()?;
        let body = if body.iter().all(u8::is_ascii_whitespace) {
            b"{}".as_slice()
        } else {
            body
        };
        let v: Value = serde_json::from_slice(body).map_err(|e| {
            ApiError::client(
                "SerializationException",
                format!("the request body is not JSON: {e}"),
            )
        })?;
        let Value::Object(body) = v else {
            return Err(ApiError::client(
                "SerializationException",
                "the request body is not a JSON object",
            ));
        };
        for k in body.keys() {
            if !member_known(&O::SPEC, k) {
                return Err(invalid(format!(
                    "{} is not a member of {}",
                    engine::request::shown(k),
                    O::SPEC.name
                )));
            }
        }
        for r in O::REQUIRED {
            if body.get(*r).is_none_or(Value::is_null) {
                return Err(invalid(format!(
                    "1 validation error detected: Value null at '{}' failed to satisfy constraint: Member must not be null",
                    lower_camel(r)
                )));
            }
        }
        Ok(KCall {
            body,
            key: None,
            targets: Vec::new(),
            _op: PhantomData,
        })
    }

    async fn prepare(&mut self, env: &Env, who: &Principal) -> Result<(), ApiError> {
        let kms = env.engine.store().kms();
        let name = O::SPEC.name;
        let alias_arn = |a: &str| format!("arn:aws:kms:{}:{}:{a}", env.region, who.account);
        let mut refs: Vec<String> = Vec::new();
        match name {
            "CreateKey" | "ListKeys" | "ListAliases" => return Ok(()),
            "CreateAlias" | "UpdateAlias" | "DeleteAlias" => {
                let alias = self.str("AliasName")?.unwrap_or_default().to_string();
                if name != "CreateAlias" {
                    refs.push(alias.clone());
                }
                if let Some(t) = self.str("TargetKeyId")? {
                    refs.push(t.to_string());
                }
                self.targets.push(Target {
                    arn: alias_arn(&alias),
                    id: None,
                    tags: Vec::new(),
                });
            }
            "Decrypt" => {
                let blob = self.blob("CiphertextBlob")?.unwrap_or_default();
                let id = kms::Kms::blob_key_id(&blob).map_err(|e| kms_error(&e))?;
                if let Some(k) = self.str("KeyId")? {
                    let named = kms.resolve(k).await.map_err(|e| kms_error(&e))?;
                    if named != id {
                        return Err(ApiError::client(
                            "IncorrectKeyException",
                            "the ciphertext was not encrypted under the KeyId given",
                        ));
                    }
                }
                refs.push(id);
            }
            _ => refs.push(self.str("KeyId")?.unwrap_or_default().to_string()),
        }
        for (i, r) in refs.iter().enumerate() {
            let (meta, tags) = kms.key_info(r).await.map_err(|e| kms_error(&e))?;
            // The key acted on is the last named (the target of an alias action).
            if i + 1 == refs.len() {
                self.key = Some(meta.key_id.clone());
            }
            self.targets.push(Target {
                arn: meta.arn,
                id: None,
                tags: tags
                    .into_iter()
                    .map(|(key, value)| catalog::Tag { key, value })
                    .collect(),
            });
        }
        Ok(())
    }

    fn declare(&self, _env: &Env, who: &Principal, d: &mut Declaration) {
        d.resources.extend(self.targets.iter().cloned());
        d.condition("kms:CallerAccount", vec![who.account.clone()]);
        let tags = |v: Vec<(String, String)>| -> Vec<catalog::Tag> {
            v.into_iter()
                .map(|(key, value)| catalog::Tag { key, value })
                .collect()
        };
        match O::SPEC.name {
            "CreateKey" | "TagResource" => d.request_tags(&tags(self.tags().unwrap_or_default())),
            "UntagResource" => {
                let keys: Vec<String> = self
                    .body
                    .get("TagKeys")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|k| k.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                if !keys.is_empty() {
                    d.condition("aws:TagKeys", keys);
                }
            }
            "Encrypt" | "Decrypt" | "GenerateDataKey" => {
                let ctx = self.context().unwrap_or_default();
                for (k, v) in &ctx {
                    d.condition(&format!("kms:EncryptionContext:{k}"), vec![v.clone()]);
                }
                if !ctx.is_empty() {
                    d.condition("kms:EncryptionContextKeys", ctx.keys().cloned().collect());
                }
            }
            _ => {}
        }
    }

    async fn run(self, cx: &Cx<'_>) -> Result<String, ApiError> {
        let v = match O::SPEC.name {
            "CreateKey" | "DescribeKey" | "ListKeys" | "CreateAlias" | "ListAliases"
            | "DeleteAlias" | "UpdateAlias" => keys(&self, cx).await?,
            "Encrypt" | "Decrypt" | "GenerateDataKey" => crypto(&self, cx).await?,
            _ => state(&self, cx).await?,
        };
        Ok(v.to_string())
    }
}

/// Seconds since the epoch, as the JSON protocol's timestamps.
#[allow(clippy::cast_precision_loss)]
fn secs(t: u64) -> Value {
    json!(t as f64)
}

/// `KeyMetadata` as KMS answers it.
fn metadata(m: &KeyMetadata, account: &str) -> Value {
    let mut v = json!({
        "AWSAccountId": account,
        "KeyId": m.key_id,
        "Arn": m.arn,
        "CreationDate": secs(m.creation_date),
        "Enabled": m.state == KeyState::Enabled,
        "Description": m.description,
        "KeyUsage": "ENCRYPT_DECRYPT",
        "KeyState": match m.state {
            KeyState::Enabled => "Enabled",
            KeyState::Disabled => "Disabled",
            KeyState::PendingDeletion => "PendingDeletion",
            KeyState::Deleted => "Unavailable",
        },
        "Origin": "AWS_KMS",
        "KeyManager": if m.manager == KeyManager::Aws { "AWS" } else { "CUSTOMER" },
        "CustomerMasterKeySpec": "SYMMETRIC_DEFAULT",
        "KeySpec": "SYMMETRIC_DEFAULT",
        "EncryptionAlgorithms": ["SYMMETRIC_DEFAULT"],
        "MultiRegion": false,
    });
    if let Some(d) = m.deletion_date {
        v["DeletionDate"] = secs(d);
    }
    v
}

/// One page of `items` by `Limit` (1 to 1,000, default 100) and `Marker`.
fn page<O>(call: &KCall<O>, items: Vec<Value>, member: &str) -> Result<Value, ApiError> {
    let limit = usize::try_from(call.int("Limit", 1..=1000)?.unwrap_or(100)).unwrap_or(100);
    let start = match call.str("Marker")? {
        None => 0,
        Some(m) => m.parse::<usize>().map_err(|_| {
            ApiError::client(
                "InvalidMarkerException",
                "Marker is not one this endpoint gave",
            )
        })?,
    };
    let total = items.len();
    let page: Vec<Value> = items.into_iter().skip(start).take(limit).collect();
    let mut out = json!({ member: page, "Truncated": false });
    if start + limit < total {
        out["Truncated"] = json!(true);
        out["NextMarker"] = json!((start + limit).to_string());
    }
    Ok(out)
}

fn check_choice<O>(call: &KCall<O>, member: &str, allowed: &str) -> Result<(), ApiError> {
    match call.str(member)? {
        None => Ok(()),
        Some(v) if v == allowed => Ok(()),
        Some(v) => Err(ApiError::client(
            "UnsupportedOperationException",
            format!(
                "{member} {} is not supported; vmie keys are {allowed}",
                engine::request::shown(v)
            ),
        )),
    }
}

/// Keys and aliases: create, describe, list.
async fn keys<O: Op>(call: &KCall<O>, cx: &Cx<'_>) -> Result<Value, ApiError> {
    let kms = cx.env.engine.store().kms();
    let caller = cx.who.kms_caller();
    let a = &cx.who.account;
    let e = |e: KmsError| kms_error(&e);
    Ok(match O::SPEC.name {
        "CreateKey" => {
            check_choice(call, "KeyUsage", "ENCRYPT_DECRYPT")?;
            check_choice(call, "KeySpec", "SYMMETRIC_DEFAULT")?;
            check_choice(call, "CustomerMasterKeySpec", "SYMMETRIC_DEFAULT")?;
            check_choice(call, "Origin", "AWS_KMS")?;
            if call.bool("MultiRegion")? == Some(true) {
                return Err(ApiError::client(
                    "UnsupportedOperationException",
                    "vmie keys are single-region",
                ));
            }
            if call.bool("BypassPolicyLockoutSafetyCheck")? == Some(true) {
                return Err(invalid(
                    "vmie always applies the policy lockout safety check",
                ));
            }
            let tags = call.tags()?;
            let m = kms
                .create_key(
                    &caller,
                    kms::CreateKey {
                        description: call.str("Description")?.unwrap_or_default().into(),
                        policy: call.str("Policy")?.map(str::to_string),
                        rotation: false,
                    },
                )
                .await
                .map_err(e)?;
            if !tags.is_empty() {
                kms.tag_resource(&caller, &m.key_id, &tags)
                    .await
                    .map_err(e)?;
            }
            json!({ "KeyMetadata": metadata(&m, a) })
        }
        "DescribeKey" => {
            let m = kms
                .metadata_for(&caller, call.key()?, "kms:DescribeKey")
                .await
                .map_err(e)?;
            json!({ "KeyMetadata": metadata(&m, a) })
        }
        "ListKeys" => {
            let ks: Vec<Value> = kms
                .list_keys()
                .await
                .map_err(e)?
                .iter()
                .filter(|k| k.state != KeyState::Deleted)
                .map(|k| json!({"KeyId": k.key_id, "KeyArn": k.arn}))
                .collect();
            page(call, ks, "Keys")?
        }
        "ListAliases" => {
            let only = match call.str("KeyId")? {
                Some(k) => Some(kms.resolve(k).await.map_err(e)?),
                None => None,
            };
            let region = &cx.env.region;
            let al: Vec<Value> = kms
                .list_aliases()
                .await
                .map_err(e)?
                .into_iter()
                .filter(|(_, id)| only.as_ref().is_none_or(|o| o == id))
                .map(|(alias, id)| {
                    json!({"AliasName": alias, "AliasArn": format!("arn:aws:kms:{region}:{a}:{alias}"), "TargetKeyId": id})
                })
                .collect();
            page(call, al, "Aliases")?
        }
        "CreateAlias" => {
            let alias = call.str("AliasName")?.unwrap_or_default();
            kms.create_alias(&caller, alias, call.key()?)
                .await
                .map_err(e)?;
            json!({})
        }
        "UpdateAlias" => {
            let alias = call.str("AliasName")?.unwrap_or_default();
            kms.update_alias(&caller, alias, call.key()?)
                .await
                .map_err(e)?;
            json!({})
        }
        _ => {
            // DeleteAlias
            let alias = call.str("AliasName")?.unwrap_or_default();
            kms.delete_alias(&caller, alias).await.map_err(e)?;
            json!({})
        }
    })
}

/// A key's state: enable, disable, rotation, deletion, policy, tags.
async fn state<O: Op>(call: &KCall<O>, cx: &Cx<'_>) -> Result<Value, ApiError> {
    let kms = cx.env.engine.store().kms();
    let caller = cx.who.kms_caller();
    let key = call.key()?;
    let e = |e: KmsError| kms_error(&e);
    Ok(match O::SPEC.name {
        "EnableKey" => {
            kms.enable_key(&caller, key).await.map_err(e)?;
            json!({})
        }
        "DisableKey" => {
            kms.disable_key(&caller, key).await.map_err(e)?;
            json!({})
        }
        "EnableKeyRotation" => {
            let days = call
                .int("RotationPeriodInDays", 90..=2560)?
                .map(|d| u32::try_from(d).unwrap_or(kms::DEFAULT_ROTATION_DAYS));
            kms.enable_key_rotation(&caller, key, days)
                .await
                .map_err(e)?;
            json!({})
        }
        "DisableKeyRotation" => {
            kms.disable_key_rotation(&caller, key).await.map_err(e)?;
            json!({})
        }
        "GetKeyRotationStatus" => {
            let m = kms
                .metadata_for(&caller, key, "kms:GetKeyRotationStatus")
                .await
                .map_err(e)?;
            let mut v = json!({"KeyRotationEnabled": m.rotation_enabled, "KeyId": m.arn});
            if m.rotation_enabled {
                v["RotationPeriodInDays"] = json!(m.rotation_period_days);
                if let Some(n) = m.next_rotation {
                    v["NextRotationDate"] = secs(n);
                }
            }
            v
        }
        "RotateKeyOnDemand" => {
            let m = kms.rotate_key_on_demand(&caller, key).await.map_err(e)?;
            json!({"KeyId": m.key_id})
        }
        "ScheduleKeyDeletion" => {
            let days = call.int("PendingWindowInDays", 7..=30)?.unwrap_or(30);
            let m = kms
                .schedule_key_deletion(&caller, key, u32::try_from(days).unwrap_or(30))
                .await
                .map_err(e)?;
            json!({
                "KeyId": m.arn,
                "DeletionDate": secs(m.deletion_date.unwrap_or(0)),
                "KeyState": "PendingDeletion",
                "PendingWindowInDays": days,
            })
        }
        "CancelKeyDeletion" => {
            let m = kms
                .cancel_key_deletion(&caller, key)
                .await
                .map_err(|err| match err {
                    KmsError::Validation(m) => ApiError::client("KMSInvalidStateException", m),
                    err => kms_error(&err),
                })?;
            json!({"KeyId": m.arn})
        }
        _ => policy_and_tags(call, cx).await?,
    })
}

/// A key's policy and tags.
async fn policy_and_tags<O: Op>(call: &KCall<O>, cx: &Cx<'_>) -> Result<Value, ApiError> {
    let kms = cx.env.engine.store().kms();
    let caller = cx.who.kms_caller();
    let key = call.key()?;
    let e = |e: KmsError| kms_error(&e);
    Ok(match O::SPEC.name {
        "GetKeyPolicy" => {
            check_choice(call, "PolicyName", "default")?;
            let p = kms.get_key_policy(&caller, key).await.map_err(e)?;
            json!({"Policy": p, "PolicyName": "default"})
        }
        "PutKeyPolicy" => {
            check_choice(call, "PolicyName", "default")?;
            if call.bool("BypassPolicyLockoutSafetyCheck")? == Some(true) {
                return Err(invalid(
                    "vmie always applies the policy lockout safety check",
                ));
            }
            let doc = call.str("Policy")?.unwrap_or_default();
            kms.put_key_policy(&caller, key, doc).await.map_err(e)?;
            json!({})
        }
        "TagResource" => {
            kms.tag_resource(&caller, key, &call.tags()?)
                .await
                .map_err(e)?;
            json!({})
        }
        "UntagResource" => {
            let keys: Vec<String> = call
                .body
                .get("TagKeys")
                .and_then(Value::as_array)
                .ok_or_else(|| {
                    ApiError::client("SerializationException", "TagKeys is a list of strings")
                })?
                .iter()
                .map(|k| {
                    k.as_str().map(str::to_string).ok_or_else(|| {
                        ApiError::client("SerializationException", "TagKeys is a list of strings")
                    })
                })
                .collect::<Result<_, _>>()?;
            kms.untag_resource(&caller, key, &keys).await.map_err(e)?;
            json!({})
        }
        _ => {
            // ListResourceTags
            let tags: Vec<Value> = kms
                .list_resource_tags(&caller, key)
                .await
                .map_err(e)?
                .into_iter()
                .map(|(k, v)| json!({"TagKey": k, "TagValue": v}))
                .collect();
            page(call, tags, "Tags")?
        }
    })
}

/// Encrypt, Decrypt, GenerateDataKey.
async fn crypto<O: Op>(call: &KCall<O>, cx: &Cx<'_>) -> Result<Value, ApiError> {
    let kms = cx.env.engine.store().kms();
    let caller = cx.who.kms_caller();
    let key = call.key()?;
    let ctx = call.context()?;
    let e = |e: KmsError| kms_error(&e);
    check_choice(call, "EncryptionAlgorithm", "SYMMETRIC_DEFAULT")?;
    let arn = |id: &str| format!("arn:aws:kms:{}:{}:key/{id}", cx.env.region, cx.who.account);
    Ok(match O::SPEC.name {
        "Encrypt" => {
            let plain = call.blob("Plaintext")?.unwrap_or_default();
            let blob = kms.encrypt(&caller, key, &plain, &ctx).await.map_err(e)?;
            json!({"CiphertextBlob": B64.encode(blob), "KeyId": arn(key), "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"})
        }
        "Decrypt" => {
            let blob = call.blob("CiphertextBlob")?.unwrap_or_default();
            let (id, plain) = kms.decrypt(&caller, &blob, &ctx).await.map_err(e)?;
            let b64 = zeroize::Zeroizing::new(B64.encode(plain.as_slice()));
            json!({"KeyId": arn(&id), "Plaintext": b64.as_str(), "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"})
        }
        _ => {
            let len = match (call.str("KeySpec")?, call.int("NumberOfBytes", 1..=1024)?) {
                (Some(_), Some(_)) => {
                    return Err(invalid("give KeySpec or NumberOfBytes, not both"));
                }
                (Some("AES_256") | None, None) => 32,
                (Some("AES_128"), None) => 16,
                (Some(_), None) => return Err(invalid("KeySpec is AES_256 or AES_128")),
                (None, Some(n)) => usize::try_from(n).unwrap_or(32),
            };
            let (id, plain, blob) = kms
                .generate_data_key_len(&caller, key, &ctx, len)
                .await
                .map_err(e)?;
            let b64 = zeroize::Zeroizing::new(B64.encode(plain.as_slice()));
            json!({"CiphertextBlob": B64.encode(blob), "Plaintext": b64.as_str(), "KeyId": arn(&id)})
        }
    })
}

const KEY: &[&str] = &["key"];
const ALIAS: &[&str] = &["alias", "key"];
const ALIAS2: &[&str] = &["alias", "key (the current target)", "key (the new target)"];
const CALLER: &[&str] = &["kms:CallerAccount"];
const TAGGED: &[&str] = &[
    "kms:CallerAccount",
    "aws:RequestTag/${TagKey}",
    "aws:TagKeys",
];
const CONTEXT: &[&str] = &[
    "kms:CallerAccount",
    "kms:EncryptionContext:${Key}",
    "kms:EncryptionContextKeys",
];
const KEY_ID: Field = plain("KeyId");
const GRANTS: Field = plain("GrantTokens.N");
const CTX_KEY: Field = plain("EncryptionContext.N.Key");
const CTX_VALUE: Field = plain("EncryptionContext.N.Value");
const ALGORITHM: Field = plain("EncryptionAlgorithm");
const LIMIT: Field = plain("Limit");
const MARKER: Field = plain("Marker");

ops! { Service::Kms, "kms", Authz::Policy;
    CreateKey { read: false, resources: &[], tags: Tags::Request, keys: TAGGED, required: &[],
        params: &[field("Description", Kind::Free), field("Policy", Kind::Token), plain("KeyUsage"),
                  plain("KeySpec"), plain("CustomerMasterKeySpec"), plain("Origin"), plain("MultiRegion"),
                  plain("BypassPolicyLockoutSafetyCheck"), field("Tags.N.TagKey", Kind::TagKey),
                  field("Tags.N.TagValue", Kind::Free)] }
    DescribeKey { read: true, resources: KEY, tags: Tags::Resource, keys: CALLER, required: &["KeyId"],
        params: &[KEY_ID, GRANTS] }
    ListKeys { read: true, resources: &[], tags: Tags::None, keys: CALLER, required: &[],
        params: &[LIMIT, MARKER] }
    CreateAlias { read: false, resources: ALIAS, tags: Tags::Resource, keys: CALLER, required: &["AliasName", "TargetKeyId"],
        params: &[plain("AliasName"), plain("TargetKeyId")] }
    ListAliases { read: true, resources: &[], tags: Tags::None, keys: CALLER, required: &[],
        params: &[KEY_ID, LIMIT, MARKER] }
    DeleteAlias { read: false, resources: ALIAS, tags: Tags::Resource, keys: CALLER, required: &["AliasName"],
        params: &[plain("AliasName")] }
    UpdateAlias { read: false, resources: ALIAS2, tags: Tags::Resource, keys: CALLER, required: &["AliasName", "TargetKeyId"],
        params: &[plain("AliasName"), plain("TargetKeyId")] }
    EnableKey { read: false, resources: KEY, tags: Tags::Resource, keys: CALLER, required: &["KeyId"],
        params: &[KEY_ID] }
    DisableKey { read: false, resources: KEY, tags: Tags::Resource, keys: CALLER, required: &["KeyId"],
        params: &[KEY_ID] }
    EnableKeyRotation { read: false, resources: KEY, tags: Tags::Resource, keys: CALLER, required: &["KeyId"],
        params: &[KEY_ID, plain("RotationPeriodInDays")] }
    DisableKeyRotation { read: false, resources: KEY, tags: Tags::Resource, keys: CALLER, required: &["KeyId"],
        params: &[KEY_ID] }
    GetKeyRotationStatus { read: true, resources: KEY, tags: Tags::Resource, keys: CALLER, required: &["KeyId"],
        params: &[KEY_ID] }
    RotateKeyOnDemand { read: false, resources: KEY, tags: Tags::Resource, keys: CALLER, required: &["KeyId"],
        params: &[KEY_ID] }
    ScheduleKeyDeletion { read: false, resources: KEY, tags: Tags::Resource, keys: CALLER, required: &["KeyId"],
        params: &[KEY_ID, plain("PendingWindowInDays")] }
    CancelKeyDeletion { read: false, resources: KEY, tags: Tags::Resource, keys: CALLER, required: &["KeyId"],
        params: &[KEY_ID] }
    GetKeyPolicy { read: true, resources: KEY, tags: Tags::Resource, keys: CALLER, required: &["KeyId"],
        params: &[KEY_ID, plain("PolicyName")] }
    PutKeyPolicy { read: false, resources: KEY, tags: Tags::Resource, keys: CALLER, required: &["KeyId", "Policy"],
        params: &[KEY_ID, plain("PolicyName"), field("Policy", Kind::Token), plain("BypassPolicyLockoutSafetyCheck")] }
    TagResource { read: false, resources: KEY, tags: Tags::Both, keys: TAGGED, required: &["KeyId", "Tags"],
        params: &[KEY_ID, field("Tags.N.TagKey", Kind::TagKey), field("Tags.N.TagValue", Kind::Free)] }
    UntagResource { read: false, resources: KEY, tags: Tags::Both, keys: &["kms:CallerAccount", "aws:TagKeys"], required: &["KeyId", "TagKeys"],
        params: &[KEY_ID, field("TagKeys.N", Kind::TagKey)] }
    ListResourceTags { read: true, resources: KEY, tags: Tags::Resource, keys: CALLER, required: &["KeyId"],
        params: &[KEY_ID, LIMIT, MARKER] }
    Encrypt { read: false, resources: KEY, tags: Tags::Resource, keys: CONTEXT, required: &["KeyId", "Plaintext"],
        params: &[KEY_ID, field("Plaintext", Kind::Secret), CTX_KEY, CTX_VALUE, GRANTS, ALGORITHM] }
    Decrypt { read: false, resources: KEY, tags: Tags::Resource, keys: CONTEXT, required: &["CiphertextBlob"],
        params: &[KEY_ID, field("CiphertextBlob", Kind::Secret), CTX_KEY, CTX_VALUE, GRANTS, ALGORITHM] }
    GenerateDataKey { read: false, resources: KEY, tags: Tags::Resource, keys: CONTEXT, required: &["KeyId"],
        params: &[KEY_ID, CTX_KEY, CTX_VALUE, GRANTS, plain("KeySpec"), plain("NumberOfBytes")] }
}
