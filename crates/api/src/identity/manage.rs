//! Identity management shared by the IAM and STS actions of the endpoint and `vmie admin`:
//! roles with trust policies, inline and managed policies, virtual MFA devices, AssumeRole
//! and the policy simulator. Every function checks names and documents before anything is
//! stored, and answers with IAM's error codes.

use zeroize::Zeroizing;

use catalog::CatalogError;
use catalog::iam::PrincipalKind;
use catalog::iam_api::Role;

use super::{
    Identity, IdentityError, NewSession, Principal, aad, check_name, random_text, sha256_hex,
};
use crate::error::ApiError;
use crate::iam::{Context, Decision, Policy, evaluate};

/// Longest session of a role chained from another role's session (as AWS: one hour).
pub const CHAINED_MAX: i64 = 3600;

/// IAM's answer to an identity error.
#[must_use]
pub fn iam_error(e: IdentityError) -> ApiError {
    match e {
        IdentityError::Catalog(CatalogError::NotFound(what)) => ApiError {
            status: 404,
            code: "NoSuchEntity".into(),
            message: format!(
                "The entity {} cannot be found.",
                engine::request::shown(&what)
            ),
        },
        IdentityError::Catalog(CatalogError::Conflict(m)) => ApiError {
            status: 409,
            code: "EntityAlreadyExists".into(),
            message: m,
        },
        IdentityError::Policy(p) => ApiError::client("MalformedPolicyDocument", p.0),
        IdentityError::Invalid(m) => ApiError::client("ValidationError", m),
        IdentityError::Catalog(c) => ApiError::internal("identity store", &c),
    }
}

/// A 403 `AccessDenied` with `message`.
#[must_use]
pub fn access_denied(message: impl Into<String>) -> ApiError {
    ApiError {
        status: 403,
        code: "AccessDenied".into(),
        message: message.into(),
    }
}

/// The serial number of the virtual MFA device `name`.
#[must_use]
pub fn device_serial(account: &str, name: &str) -> String {
    format!("arn:aws:iam::{account}:mfa/{name}")
}

/// What AssumeRole gave.
pub struct Assumed {
    /// The credentials (shown once).
    pub session: NewSession,
    /// `arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`.
    pub arn: String,
    /// `AROA…:SESSION`.
    pub assumed_role_id: String,
}

/// What AssumeRole is asked.
#[derive(Debug)]
pub struct AssumeRequest<'a> {
    /// The role's name.
    pub role: &'a str,
    /// `RoleSessionName`.
    pub session: &'a str,
    /// Seconds.
    pub duration: Option<i64>,
    /// `SerialNumber` and `TokenCode`.
    pub mfa: Option<(&'a str, &'a str)>,
    /// A session policy.
    pub policy: Option<&'a str>,
}

/// What SimulatePrincipalPolicy asks.
#[derive(Debug, Clone, Copy)]
pub struct Simulation<'a> {
    /// Policies evaluated with the principal's own (`PolicyInputList`).
    pub extra: &'a [Policy],
    /// IAM actions.
    pub actions: &'a [String],
    /// Resource ARNs (`*` when empty).
    pub resources: &'a [String],
    /// Context keys and their values.
    pub keys: &'a [(String, Vec<String>)],
}

impl Identity {
    /// Creates a role with its trust policy (checked), description and longest session
    /// (1 to 12 hours).
    pub async fn create_role_with(
        &self,
        account: &str,
        name: &str,
        trust: Option<&str>,
        description: &str,
        max_session: i64,
    ) -> Result<(), IdentityError> {
        check_name("role", name)?;
        if let Some(t) = trust {
            Policy::parse_trust(t)?;
        }
        if !(3600..=43_200).contains(&max_session) {
            return Err(IdentityError::Invalid(
                "MaxSessionDuration is 3600 to 43200 seconds".into(),
            ));
        }
        if description.chars().count() > 1000 {
            return Err(IdentityError::Invalid(
                "a description is at most 1000 characters".into(),
            ));
        }
        Ok(self
            .catalog
            .create_role_with(
                account,
                &Role {
                    name: name.into(),
                    created_ms: 0,
                    trust_policy: trust.map(str::to_string),
                    description: description.into(),
                    max_session,
                },
            )
            .await?)
    }

    /// Replaces a role's trust policy (checked first).
    pub async fn update_trust_policy(
        &self,
        account: &str,
        role: &str,
        doc: &str,
    ) -> Result<(), IdentityError> {
        Policy::parse_trust(doc)?;
        Ok(self.catalog.set_trust_policy(account, role, doc).await?)
    }

    /// Creates or replaces an inline policy of a user or role (checked first).
    pub async fn put_inline_policy(
        &self,
        account: &str,
        kind: PrincipalKind,
        principal: &str,
        name: &str,
        doc: &str,
    ) -> Result<(), IdentityError> {
        check_name("policy", name)?;
        Policy::parse(doc)?;
        Ok(self
            .catalog
            .put_inline_policy(account, kind, principal, name, doc)
            .await?)
    }

    /// Creates a managed policy (checked first); a conflict when the name is taken.
    pub async fn create_policy(
        &self,
        account: &str,
        name: &str,
        doc: &str,
    ) -> Result<(), IdentityError> {
        check_name("policy", name)?;
        Policy::parse(doc)?;
        Ok(self.catalog.create_policy(account, name, doc).await?)
    }

    /// Why a user or role cannot be deleted as IAM's DeleteUser and DeleteRole require (it
    /// still has access keys, policies or an MFA device); `None` when it can.
    pub async fn deletion_conflict(
        &self,
        account: &str,
        kind: PrincipalKind,
        name: &str,
    ) -> Result<Option<String>, IdentityError> {
        let c = &self.catalog;
        if !c.principal_exists(account, kind, name).await? {
            return Err(CatalogError::NotFound(name.into()).into());
        }
        let what = if kind == PrincipalKind::User {
            "user"
        } else {
            "role"
        };
        let why = if !c.attached_policies(account, kind, name).await?.is_empty() {
            "attached policies"
        } else if !c.inline_policies(account, kind, name).await?.is_empty() {
            "inline policies"
        } else if kind == PrincipalKind::User
            && !c.access_keys(account, Some(name)).await?.is_empty()
        {
            "access keys"
        } else if kind == PrincipalKind::User && c.mfa_serial(account, name).await?.is_some() {
            "an MFA device"
        } else if kind == PrincipalKind::User && c.login_profile(account, name).await?.is_some() {
            "the login profile"
        } else {
            return Ok(None);
        };
        Ok(Some(format!(
            "Cannot delete entity, must remove {why} from the {what} {name} first."
        )))
    }

    /// Makes a virtual MFA device `name`, not yet enabled for anybody: its serial number and
    /// secret (Base32, and as an `otpauth://` URI) — the only time the secret is shown.
    pub async fn create_virtual_mfa(
        &self,
        account: &str,
        name: &str,
    ) -> Result<(String, Zeroizing<String>, Zeroizing<String>), IdentityError> {
        check_name("MFA device", name)?;
        let mut secret = Zeroizing::new([0u8; 20]);
        kms::aead::random(secret.as_mut());
        let serial = device_serial(account, name);
        self.catalog
            .create_virtual_mfa(
                account,
                &serial,
                &self.root.seal(serial.as_bytes(), secret.as_ref()),
            )
            .await?;
        let seed = Zeroizing::new(crate::totp::base32(secret.as_ref()));
        let uri = Zeroizing::new(crate::totp::uri(
            "vmie",
            &format!("{name}@{account}"),
            secret.as_ref(),
        ));
        Ok((serial, seed, uri))
    }

    /// Enables the virtual device `serial` for `user` with two consecutive codes from it.
    pub async fn enable_mfa_device(
        &self,
        account: &str,
        user: &str,
        serial: &str,
        codes: (&str, &str),
        now: i64,
    ) -> Result<(), ApiError> {
        let d = self
            .catalog
            .virtual_mfa(account, serial)
            .await
            .map_err(|e| iam_error(e.into()))?
            .ok_or_else(|| iam_error(CatalogError::NotFound(serial.into()).into()))?;
        if let Some(u) = &d.user_name {
            return Err(iam_error(
                CatalogError::Conflict(format!("the MFA device is already enabled for {u}")).into(),
            ));
        }
        let invalid = || ApiError {
            status: 403,
            code: "InvalidAuthenticationCode".into(),
            message: "Authentication code for device is not valid.".into(),
        };
        let secret = self
            .root
            .open(serial.as_bytes(), &d.secret_sealed)
            .ok_or_else(invalid)?;
        let now = u64::try_from(now).unwrap_or(0);
        let first = crate::totp::verify(&secret, codes.0, now, None).ok_or_else(invalid)?;
        let second =
            crate::totp::verify(&secret, codes.1, now + 30, Some(first)).ok_or_else(invalid)?;
        if second != first + 1 {
            return Err(invalid());
        }
        self.catalog
            .enrol_mfa(
                account,
                user,
                serial,
                None,
                i64::try_from(second).unwrap_or(i64::MAX),
            )
            .await
            .map_err(|e| iam_error(e.into()))
    }

    /// What the one evaluator decides for the principal `kind` `name` doing each of
    /// `actions` on each of `resources` (`*` when none), with the context keys given: the
    /// answer of SimulatePrincipalPolicy.
    pub async fn simulate(
        &self,
        account: &str,
        kind: PrincipalKind,
        name: &str,
        q: &Simulation<'_>,
    ) -> Result<Vec<(String, String, Decision)>, IdentityError> {
        let Simulation {
            extra,
            actions,
            resources,
            keys,
        } = *q;
        if !self.catalog.principal_exists(account, kind, name).await? {
            return Err(CatalogError::NotFound(name.into()).into());
        }
        let mut policies = self.policies(account, kind, name).await?;
        policies.extend(extra.iter().cloned());
        let star = ["*".to_string()];
        let resources = if resources.is_empty() {
            &star[..]
        } else {
            resources
        };
        let mut out = Vec::new();
        for a in actions {
            for r in resources {
                let mut ctx = Context::new(a, r);
                for (k, v) in keys {
                    ctx.keys.insert(k.to_ascii_lowercase(), v.clone());
                }
                out.push((a.clone(), r.clone(), evaluate(&policies, &ctx)));
            }
        }
        Ok(out)
    }

    /// Whether the trust policy of the role `role_arn` (of the caller's account) allows the
    /// caller by name — its ARN, or `*` — under the request context `ctx`. Statements
    /// trusting the whole account (`…:root`) do not count: within one account AWS lets a
    /// role's trust alone grant `sts:AssumeRole` only to principals it names, and defers to
    /// the caller's own policies otherwise ([`crate::spec::Authz::Trusted`]).
    pub async fn trusts_by_name(&self, who: &Principal, role_arn: &str, ctx: &Context) -> bool {
        let prefix = format!("arn:aws:iam::{}:role/", who.account);
        let Some(name) = role_arn.strip_prefix(&prefix) else {
            return false;
        };
        let Ok(Some(role)) = self.catalog.role(&who.account, name).await else {
            return false;
        };
        let Some(trust) = role
            .trust_policy
            .as_deref()
            .and_then(|t| Policy::parse_trust(t).ok())
        else {
            return false;
        };
        let mut ctx = ctx.clone();
        ctx.action = "sts:AssumeRole".into();
        ctx.resource = role_arn.to_string();
        ctx.principals = vec![who.arn.clone(), who.principal_arn()];
        ctx.keys.remove("aws:principalaccount");
        evaluate([&trust], &ctx) == Decision::Allow
    }

    /// AssumeRole: `who` gets temporary credentials of the role when its trust policy
    /// allows them `sts:AssumeRole` in `ctx` (the request's global condition keys; an MFA
    /// code given and right adds `aws:MultiFactorAuthPresent`).
    pub async fn assume_role(
        &self,
        who: &Principal,
        req: &AssumeRequest<'_>,
        mut ctx: Context,
        now: i64,
    ) -> Result<Assumed, ApiError> {
        let account = &who.account;
        let role_arn = format!("arn:aws:iam::{account}:role/{}", req.role);
        let not_allowed = || {
            access_denied(format!(
                "User: {} is not authorized to perform: sts:AssumeRole on resource: {role_arn}",
                who.arn
            ))
        };
        let role = self
            .catalog
            .role(account, req.role)
            .await
            .map_err(|e| iam_error(e.into()))?
            .ok_or_else(not_allowed)?;
        let trust = role
            .trust_policy
            .as_deref()
            .and_then(|t| Policy::parse_trust(t).ok())
            .ok_or_else(not_allowed)?;
        let max = if who.role.is_some() {
            CHAINED_MAX
        } else {
            role.max_session
        };
        let duration = req.duration.unwrap_or(3600);
        if !(900..=max).contains(&duration) {
            return Err(ApiError::client(
                "ValidationError",
                format!(
                    "The requested DurationSeconds exceeds the MaxSessionDuration set for this role (900 to {max} seconds)."
                ),
            ));
        }
        let session_policy = match req.policy {
            Some(d) => {
                Policy::parse(d).map_err(|e| ApiError::client("MalformedPolicyDocument", e.0))?;
                Some(d.to_string())
            }
            None => None,
        };
        let mfa = match req.mfa {
            Some((serial, code)) => {
                self.check_mfa(who, serial, code, now)
                    .await
                    .map_err(|(code, message)| {
                        if code == "AccessDenied" {
                            access_denied(message)
                        } else {
                            ApiError::internal("AssumeRole MFA check", &message)
                        }
                    })?;
                true
            }
            None => false,
        };
        if mfa {
            ctx.keys
                .insert("aws:multifactorauthpresent".into(), vec!["true".into()]);
        }
        ctx.action = "sts:AssumeRole".into();
        ctx.resource.clone_from(&role_arn);
        ctx.principals = vec![who.arn.clone(), who.principal_arn()];
        if evaluate([&trust], &ctx) != Decision::Allow {
            return Err(not_allowed());
        }
        let session = self
            .mint(who, now + duration, mfa, Some((req, session_policy)))
            .await
            .map_err(|e| ApiError::internal("AssumeRole", &e))?;
        Ok(Assumed {
            session,
            arn: format!(
                "arn:aws:sts::{account}:assumed-role/{}/{}",
                req.role, req.session
            ),
            assumed_role_id: format!(
                "{}:{}",
                super::unique_id("AROA", account, req.role),
                req.session
            ),
        })
    }

    /// Makes and stores temporary credentials for `who` until `expires` (seconds), of the
    /// role `assumed` names when it is given.
    pub(super) async fn mint(
        &self,
        who: &Principal,
        expires: i64,
        mfa: bool,
        assumed: Option<(&AssumeRequest<'_>, Option<String>)>,
    ) -> Result<NewSession, CatalogError> {
        let id = format!(
            "ASIA{}",
            *random_text(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)
        );
        let secret = random_text(
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
            40,
        );
        let token = random_text(
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
            128,
        );
        let source_user = who
            .role
            .as_ref()
            .map_or_else(|| who.user.clone(), |r| r.source_user.clone());
        self.catalog
            .put_session(&catalog::iam::Session {
                access_key_id: id.clone(),
                account: who.account.clone(),
                user_name: source_user,
                secret_sealed: self.root.seal(&aad(&id), secret.as_bytes()),
                token_hash: sha256_hex(token.as_bytes()),
                mfa,
                expires_ms: expires.saturating_mul(1000),
                role_name: assumed.as_ref().map(|(r, _)| r.role.to_string()),
                session_name: assumed.as_ref().map(|(r, _)| r.session.to_string()),
                session_policy: assumed.and_then(|(_, p)| p),
            })
            .await?;
        Ok(NewSession {
            access_key_id: id,
            secret_access_key: secret,
            session_token: token,
            expires,
        })
    }
}
