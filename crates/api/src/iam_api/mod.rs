//! IAM on the endpoint (Query protocol, version 2010-05-08, requests signed for `iam`):
//! users, access keys, roles with trust policies, inline and managed policies, virtual MFA
//! devices and the policy simulator, over [`crate::identity`] — the same code `vmie admin`
//! calls. Each action is a marker type ([`ops`]) of the generic handler [`Call`]; what it
//! touches is declared in [`declare`] and what it does is in the files of this folder.

use std::marker::PhantomData;

use quick_xml::escape::escape;

use catalog::iam::PrincipalKind;

use crate::error::ApiError;
use crate::handler::{Cx, Declaration, Env, Handler, Input};
use crate::identity::Principal;
use crate::op::{Op, ops};
use crate::query::Params;
use crate::spec::{Authz, Kind, Service, Spec, Tags, field, plain};

mod login;
mod mfa;
mod policies;
mod roles;
mod users;

/// The IAM namespace.
pub const NS: &str = "https://iam.amazonaws.com/doc/2010-05-08/";

/// IAM's error document.
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

/// `<ActionResponse><ActionResult>body</ActionResult>…` (no result element when `body` is
/// `None`).
fn answer(action: &str, rid: &str, body: Option<&str>) -> String {
    let result = body.map_or(String::new(), |b| {
        format!("<{action}Result>{b}</{action}Result>")
    });
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>{}<{action}Response xmlns="{NS}">{result}<ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata></{action}Response>"#,
        "\n",
        escape(rid)
    )
}

/// `<tag>text</tag>`, escaped.
fn leaf(tag: &str, text: &str) -> String {
    format!("<{tag}>{}</{tag}>", escape(text))
}

/// A time as IAM shows it.
fn date(ms: i64) -> String {
    crate::sigv4::format_iso8601(ms)
}

/// A policy document as IAM answers it: URL-encoded (botocore decodes it).
fn document(doc: &str) -> String {
    crate::sigv4::uri_encode(doc, false)
}

/// One page of `items` by `MaxItems` (1 to 1,000, default 100) and `Marker` (the index to
/// start at, as an earlier page gave it): the items, and the marker of the next page.
fn page<T>(p: &Params, items: Vec<T>) -> Result<(Vec<T>, Option<String>), ApiError> {
    let max = usize::try_from(p.int("MaxItems", 1..=1000)?.unwrap_or(100)).unwrap_or(100);
    let start = match p.get("Marker") {
        None => 0,
        Some(m) => m.parse::<usize>().map_err(|_| {
            ApiError::client("InvalidInput", "Marker is not one this endpoint gave")
        })?,
    };
    let total = items.len();
    let out: Vec<T> = items.into_iter().skip(start).take(max).collect();
    let next = (start + out.len() < total).then(|| (start + out.len()).to_string());
    Ok((out, next))
}

/// `<IsTruncated>…</IsTruncated>` and the `Marker` of the next page.
fn truncation(next: Option<&str>) -> String {
    match next {
        Some(m) => format!("<IsTruncated>true</IsTruncated>{}", leaf("Marker", m)),
        None => "<IsTruncated>false</IsTruncated>".into(),
    }
}

/// `Path` is accepted as `/` only (vmie keeps no paths).
fn check_path(p: &Params, name: &str) -> Result<(), ApiError> {
    match p.get(name) {
        None | Some("/") => Ok(()),
        Some(_) => Err(ApiError::client(
            "ValidationError",
            format!("{name}: vmie keeps every identity at the path /"),
        )),
    }
}

/// The user a request names, or the caller itself when it names none (IAM's rule for
/// access keys, GetUser and MFA devices).
fn user_or_self(p: &Params, who: &Principal) -> String {
    match p.get("UserName") {
        Some(u) => u.to_string(),
        None if who.role.is_none() => who.user.clone(),
        None => String::new(),
    }
}

/// The name of a managed policy from its ARN in `account`.
fn policy_name<'a>(arn: &'a str, account: &str) -> Result<&'a str, ApiError> {
    arn.strip_prefix(&format!("arn:aws:iam::{account}:policy/"))
        .filter(|n| !n.is_empty() && !n.contains('/'))
        .ok_or_else(|| ApiError {
            status: 404,
            code: "NoSuchEntity".into(),
            message: format!(
                "Policy {} does not exist or is not attachable.",
                engine::request::shown(arn)
            ),
        })
}

fn user_arn(account: &str, name: &str) -> String {
    format!("arn:aws:iam::{account}:user/{name}")
}

fn role_arn(account: &str, name: &str) -> String {
    format!("arn:aws:iam::{account}:role/{name}")
}

fn policy_arn(account: &str, name: &str) -> String {
    format!("arn:aws:iam::{account}:policy/{name}")
}

/// An identity error as IAM answers it.
fn fail(e: crate::identity::IdentityError) -> ApiError {
    crate::identity::manage::iam_error(e)
}

/// A catalog error as IAM answers it.
fn cfail(e: catalog::CatalogError) -> ApiError {
    fail(e.into())
}

/// A parsed IAM request of the action `O`.
pub struct Call<O> {
    p: Params,
    /// GetAccessKeyLastUsed: the key's user, looked up before the declaration.
    owner: Option<String>,
    _op: PhantomData<O>,
}

impl<O> std::fmt::Debug for Call<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call").finish_non_exhaustive()
    }
}

fn lower_camel(s: &str) -> String {
    let mut c = s.chars();
    c.next().map_or(String::new(), |f| {
        f.to_ascii_lowercase().to_string() + c.as_str()
    })
}

impl<O: Op> Handler for Call<O> {
    const SPEC: Spec = O::SPEC;

    fn parse(input: Input<'_>, _env: &Env, _who: &Principal) -> Result<Self, ApiError> {
        let p = input.params()?;
        for r in O::REQUIRED {
            if p.get(r).is_none_or(str::is_empty) {
                return Err(ApiError::client(
                    "ValidationError",
                    format!(
                        "1 validation error detected: Value null at '{}' failed to satisfy constraint: Member must not be null",
                        lower_camel(r)
                    ),
                ));
            }
        }
        Ok(Call {
            p: p.clone(),
            owner: None,
            _op: PhantomData,
        })
    }

    async fn prepare(&mut self, env: &Env, who: &Principal) -> Result<(), ApiError> {
        if O::SPEC.name == "GetAccessKeyLastUsed" {
            let id = self.p.get("AccessKeyId").unwrap_or_default();
            self.owner = env
                .identity
                .catalog()
                .access_key(id)
                .await?
                .filter(|k| k.account == who.account)
                .map(|k| k.user_name);
        }
        Ok(())
    }

    fn declare(&self, _env: &Env, who: &Principal, d: &mut Declaration) {
        if let Some(o) = &self.owner {
            d.touches(user_arn(&who.account, o));
            return;
        }
        declare(O::SPEC.name, &self.p, who, d);
    }

    async fn run(self, cx: &Cx<'_>) -> Result<String, ApiError> {
        let name = O::SPEC.name;
        let body = match name {
            "CreateUser"
            | "GetUser"
            | "ListUsers"
            | "DeleteUser"
            | "CreateAccessKey"
            | "ListAccessKeys"
            | "UpdateAccessKey"
            | "DeleteAccessKey"
            | "GetAccessKeyLastUsed" => users::run(name, &self.p, cx).await?,
            "CreateRole" | "GetRole" | "ListRoles" | "DeleteRole" | "UpdateAssumeRolePolicy" => {
                roles::run(name, &self.p, cx).await?
            }
            "CreateVirtualMFADevice"
            | "EnableMFADevice"
            | "DeactivateMFADevice"
            | "ListMFADevices"
            | "ListVirtualMFADevices"
            | "DeleteVirtualMFADevice" => mfa::run(name, &self.p, cx).await?,
            "CreateLoginProfile" | "GetLoginProfile" | "UpdateLoginProfile"
            | "DeleteLoginProfile" => login::run(name, &self.p, cx).await?,
            _ => policies::run(name, &self.p, cx).await?,
        };
        Ok(answer(name, cx.request_id, body.as_deref()))
    }
}

/// The resources an IAM request touches: the user, role, policy or MFA device it names.
fn declare(name: &str, p: &Params, who: &Principal, d: &mut Declaration) {
    let a = &who.account;
    let get = |k: &str| p.get(k).unwrap_or_default().to_string();
    match name {
        "CreateUser"
        | "DeleteUser"
        | "PutUserPolicy"
        | "GetUserPolicy"
        | "ListUserPolicies"
        | "DeleteUserPolicy"
        | "ListAttachedUserPolicies"
        | "EnableMFADevice" => {
            d.touches(user_arn(a, &get("UserName")));
        }
        "GetUser"
        | "CreateAccessKey"
        | "ListAccessKeys"
        | "UpdateAccessKey"
        | "DeleteAccessKey"
        | "ListMFADevices"
        | "DeactivateMFADevice"
        | "CreateLoginProfile"
        | "GetLoginProfile"
        | "UpdateLoginProfile"
        | "DeleteLoginProfile" => {
            d.touches(user_arn(a, &user_or_self(p, who)));
        }
        // A key of nobody here: authorized on every user, then not found.
        "GetAccessKeyLastUsed" => d.touches(user_arn(a, "*")),
        "CreateRole"
        | "GetRole"
        | "DeleteRole"
        | "UpdateAssumeRolePolicy"
        | "PutRolePolicy"
        | "GetRolePolicy"
        | "ListRolePolicies"
        | "DeleteRolePolicy"
        | "ListAttachedRolePolicies" => d.touches(role_arn(a, &get("RoleName"))),
        "AttachUserPolicy" | "DetachUserPolicy" => {
            d.touches(user_arn(a, &get("UserName")));
            d.condition("iam:PolicyARN", vec![get("PolicyArn")]);
        }
        "AttachRolePolicy" | "DetachRolePolicy" => {
            d.touches(role_arn(a, &get("RoleName")));
            d.condition("iam:PolicyARN", vec![get("PolicyArn")]);
        }
        "CreatePolicy" => d.touches(policy_arn(a, &get("PolicyName"))),
        "GetPolicy" | "GetPolicyVersion" | "DeletePolicy" => d.touches(get("PolicyArn")),
        "CreateVirtualMFADevice" => d.touches(crate::identity::manage::device_serial(
            a,
            &get("VirtualMFADeviceName"),
        )),
        "DeleteVirtualMFADevice" => d.touches(get("SerialNumber")),
        "SimulatePrincipalPolicy" => d.touches(get("PolicySourceArn")),
        _ => {}
    }
}

/// `<User>…</User>`.
fn answer_user(account: &str, name: &str, created_ms: i64) -> String {
    format!(
        "<User>{}</User>",
        users::user_body(account, name, created_ms)
    )
}

/// A user or a role named by `UserName`/`RoleName` in the action `name`.
fn principal_of(name: &str) -> (PrincipalKind, &'static str) {
    if name.contains("Role") {
        (PrincipalKind::Role, "RoleName")
    } else {
        (PrincipalKind::User, "UserName")
    }
}

const USER: &[&str] = &["user"];
const ROLE: &[&str] = &["role"];
const POLICY: &[&str] = &["policy"];
const PAGE: [crate::spec::Field; 2] = [plain("MaxItems"), plain("Marker")];
const DOC: Kind = Kind::Token;

ops! { Service::Iam, "iam", Authz::Policy;
    CreateUser { read: false, resources: USER, tags: Tags::None, keys: &[], required: &["UserName"],
        params: &[plain("UserName"), plain("Path")] }
    GetUser { read: true, resources: USER, tags: Tags::None, keys: &[], required: &[],
        params: &[plain("UserName")] }
    ListUsers { read: true, resources: &[], tags: Tags::None, keys: &[], required: &[],
        params: &[plain("PathPrefix"), PAGE[0], PAGE[1]] }
    DeleteUser { read: false, resources: USER, tags: Tags::None, keys: &[], required: &["UserName"],
        params: &[plain("UserName")] }
    CreateAccessKey { read: false, resources: USER, tags: Tags::None, keys: &[], required: &[],
        params: &[plain("UserName")] }
    ListAccessKeys { read: true, resources: USER, tags: Tags::None, keys: &[], required: &[],
        params: &[plain("UserName"), PAGE[0], PAGE[1]] }
    UpdateAccessKey { read: false, resources: USER, tags: Tags::None, keys: &[], required: &["AccessKeyId", "Status"],
        params: &[plain("UserName"), plain("AccessKeyId"), plain("Status")] }
    DeleteAccessKey { read: false, resources: USER, tags: Tags::None, keys: &[], required: &["AccessKeyId"],
        params: &[plain("UserName"), plain("AccessKeyId")] }
    GetAccessKeyLastUsed { read: true, resources: USER, tags: Tags::None, keys: &[], required: &["AccessKeyId"],
        params: &[plain("AccessKeyId")] }
    CreateRole { read: false, resources: ROLE, tags: Tags::None, keys: &[], required: &["RoleName", "AssumeRolePolicyDocument"],
        params: &[plain("RoleName"), plain("Path"), field("AssumeRolePolicyDocument", DOC),
                  field("Description", Kind::Free), plain("MaxSessionDuration")] }
    GetRole { read: true, resources: ROLE, tags: Tags::None, keys: &[], required: &["RoleName"],
        params: &[plain("RoleName")] }
    ListRoles { read: true, resources: &[], tags: Tags::None, keys: &[], required: &[],
        params: &[plain("PathPrefix"), PAGE[0], PAGE[1]] }
    DeleteRole { read: false, resources: ROLE, tags: Tags::None, keys: &[], required: &["RoleName"],
        params: &[plain("RoleName")] }
    UpdateAssumeRolePolicy { read: false, resources: ROLE, tags: Tags::None, keys: &[], required: &["RoleName", "PolicyDocument"],
        params: &[plain("RoleName"), field("PolicyDocument", DOC)] }
    PutUserPolicy { read: false, resources: USER, tags: Tags::None, keys: &[], required: &["UserName", "PolicyName", "PolicyDocument"],
        params: &[plain("UserName"), plain("PolicyName"), field("PolicyDocument", DOC)] }
    GetUserPolicy { read: true, resources: USER, tags: Tags::None, keys: &[], required: &["UserName", "PolicyName"],
        params: &[plain("UserName"), plain("PolicyName")] }
    ListUserPolicies { read: true, resources: USER, tags: Tags::None, keys: &[], required: &["UserName"],
        params: &[plain("UserName"), PAGE[0], PAGE[1]] }
    DeleteUserPolicy { read: false, resources: USER, tags: Tags::None, keys: &[], required: &["UserName", "PolicyName"],
        params: &[plain("UserName"), plain("PolicyName")] }
    PutRolePolicy { read: false, resources: ROLE, tags: Tags::None, keys: &[], required: &["RoleName", "PolicyName", "PolicyDocument"],
        params: &[plain("RoleName"), plain("PolicyName"), field("PolicyDocument", DOC)] }
    GetRolePolicy { read: true, resources: ROLE, tags: Tags::None, keys: &[], required: &["RoleName", "PolicyName"],
        params: &[plain("RoleName"), plain("PolicyName")] }
    ListRolePolicies { read: true, resources: ROLE, tags: Tags::None, keys: &[], required: &["RoleName"],
        params: &[plain("RoleName"), PAGE[0], PAGE[1]] }
    DeleteRolePolicy { read: false, resources: ROLE, tags: Tags::None, keys: &[], required: &["RoleName", "PolicyName"],
        params: &[plain("RoleName"), plain("PolicyName")] }
    CreatePolicy { read: false, resources: POLICY, tags: Tags::None, keys: &[], required: &["PolicyName", "PolicyDocument"],
        params: &[plain("PolicyName"), plain("Path"), field("PolicyDocument", DOC), field("Description", Kind::Free)] }
    GetPolicy { read: true, resources: POLICY, tags: Tags::None, keys: &[], required: &["PolicyArn"],
        params: &[plain("PolicyArn")] }
    GetPolicyVersion { read: true, resources: POLICY, tags: Tags::None, keys: &[], required: &["PolicyArn", "VersionId"],
        params: &[plain("PolicyArn"), plain("VersionId")] }
    ListPolicies { read: true, resources: &[], tags: Tags::None, keys: &[], required: &[],
        params: &[plain("Scope"), plain("OnlyAttached"), plain("PathPrefix"), plain("PolicyUsageFilter"), PAGE[0], PAGE[1]] }
    DeletePolicy { read: false, resources: POLICY, tags: Tags::None, keys: &[], required: &["PolicyArn"],
        params: &[plain("PolicyArn")] }
    AttachUserPolicy { read: false, resources: USER, tags: Tags::None, keys: &["iam:PolicyARN"], required: &["UserName", "PolicyArn"],
        params: &[plain("UserName"), plain("PolicyArn")] }
    DetachUserPolicy { read: false, resources: USER, tags: Tags::None, keys: &["iam:PolicyARN"], required: &["UserName", "PolicyArn"],
        params: &[plain("UserName"), plain("PolicyArn")] }
    ListAttachedUserPolicies { read: true, resources: USER, tags: Tags::None, keys: &[], required: &["UserName"],
        params: &[plain("UserName"), plain("PathPrefix"), PAGE[0], PAGE[1]] }
    AttachRolePolicy { read: false, resources: ROLE, tags: Tags::None, keys: &["iam:PolicyARN"], required: &["RoleName", "PolicyArn"],
        params: &[plain("RoleName"), plain("PolicyArn")] }
    DetachRolePolicy { read: false, resources: ROLE, tags: Tags::None, keys: &["iam:PolicyARN"], required: &["RoleName", "PolicyArn"],
        params: &[plain("RoleName"), plain("PolicyArn")] }
    ListAttachedRolePolicies { read: true, resources: ROLE, tags: Tags::None, keys: &[], required: &["RoleName"],
        params: &[plain("RoleName"), plain("PathPrefix"), PAGE[0], PAGE[1]] }
    CreateVirtualMFADevice { read: false, resources: &["mfa"], tags: Tags::None, keys: &[], required: &["VirtualMFADeviceName"],
        params: &[plain("VirtualMFADeviceName"), plain("Path")] }
    EnableMFADevice { read: false, resources: USER, tags: Tags::None, keys: &[], required: &["UserName", "SerialNumber", "AuthenticationCode1", "AuthenticationCode2"],
        params: &[plain("UserName"), plain("SerialNumber"), field("AuthenticationCode1", Kind::Secret), field("AuthenticationCode2", Kind::Secret)] }
    DeactivateMFADevice { read: false, resources: USER, tags: Tags::None, keys: &[], required: &["SerialNumber"],
        params: &[plain("UserName"), plain("SerialNumber")] }
    ListMFADevices { read: true, resources: USER, tags: Tags::None, keys: &[], required: &[],
        params: &[plain("UserName"), PAGE[0], PAGE[1]] }
    ListVirtualMFADevices { read: true, resources: &[], tags: Tags::None, keys: &[], required: &[],
        params: &[plain("AssignmentStatus"), PAGE[0], PAGE[1]] }
    DeleteVirtualMFADevice { read: false, resources: &["mfa"], tags: Tags::None, keys: &[], required: &["SerialNumber"],
        params: &[plain("SerialNumber")] }
    CreateLoginProfile { read: false, resources: USER, tags: Tags::None, keys: &[], required: &["Password"],
        params: &[plain("UserName"), field("Password", Kind::Secret), plain("PasswordResetRequired")] }
    GetLoginProfile { read: true, resources: USER, tags: Tags::None, keys: &[], required: &[],
        params: &[plain("UserName")] }
    UpdateLoginProfile { read: false, resources: USER, tags: Tags::None, keys: &[], required: &["UserName"],
        params: &[plain("UserName"), field("Password", Kind::Secret), plain("PasswordResetRequired")] }
    DeleteLoginProfile { read: false, resources: USER, tags: Tags::None, keys: &[], required: &[],
        params: &[plain("UserName")] }
    SimulatePrincipalPolicy { read: true, resources: &["user", "role"], tags: Tags::None, keys: &[], required: &["PolicySourceArn"],
        params: &[plain("PolicySourceArn"), plain("ActionNames.member.N"), plain("ResourceArns.member.N"),
                  field("PolicyInputList.member.N", DOC), plain("ContextEntries.member.N.ContextKeyName"),
                  field("ContextEntries.member.N.ContextKeyValues.member.N", Kind::Free),
                  plain("ContextEntries.member.N.ContextKeyType"), plain("CallerArn"), PAGE[0], PAGE[1]] }
}
