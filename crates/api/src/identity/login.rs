//! Console sign-in and login profiles (shared by IAM's `*LoginProfile` actions, `vmie
//! admin login-profile` and the console).
//!
//! A sign-in is up to three steps, each answered before the next is asked: the password
//! (argon2id, [`crate::password`]; failures counted in a row and backed off, then locked,
//! exactly like MFA codes, [`crate::mfa`]); then, when the user has an MFA device, a code
//! from it; then, when the password must be changed, a new one. Between steps the browser
//! holds a [`Pending`] ticket: who, which step, until when — sealed under the root key, so
//! it cannot be made or altered, and good for five minutes. The last step mints temporary
//! credentials (marked MFA-authenticated when a code was given) that the console's session
//! cookie carries.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use catalog::iam::MfaAttempt;

use super::{Identity, NewSession, Principal, check_name};
use crate::error::ApiError;
use crate::iam::{Context, Decision, evaluate};

/// How long a console session lasts (seconds).
pub const SESSION_SECONDS: i64 = 3600;
/// How long a step of a sign-in waits for the next (seconds).
const PENDING_SECONDS: i64 = 300;
/// What a wrong user name or password is told (the same for both).
pub const INCORRECT: &str = "Your authentication information is incorrect. Please try again.";

/// The step a sign-in is at, between requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// The password was right; a code from the MFA device is wanted.
    Code,
    /// Password (and code) right; the password must be changed.
    NewPassword,
}

/// A sign-in between two steps, sealed for the browser to hand back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    /// Account.
    pub account: String,
    /// User.
    pub user: String,
    /// The step wanted.
    pub step: Step,
    /// Whether an MFA code was given and right.
    pub mfa: bool,
    /// Until when (seconds).
    pub until: i64,
}

/// What a step of a sign-in came to.
pub enum SignIn {
    /// Signed in: the session, and whether MFA was used.
    Done(NewSession, bool),
    /// The next step is wanted: its sealed ticket (hex).
    Next(Step, String),
}

/// A refused step: the message shown, and whether the password was right (for the log's
/// `ConsoleLogin` record, which says which factor failed).
#[derive(Debug, Clone)]
pub struct Refused {
    /// What the person is told.
    pub message: String,
    /// The refusal concerns the MFA code.
    pub mfa: bool,
}

fn refused(message: impl Into<String>) -> Refused {
    Refused {
        message: message.into(),
        mfa: false,
    }
}

const PENDING_AAD: &[u8] = b"vmie console sign-in step";

/// Actions whose decision, when it depends on `aws:MultiFactorAuthPresent`, shows that the
/// user's policies require MFA.
const MFA_PROBES: &[&str] = &[
    "ec2:DescribeImages",
    "ec2:DescribeImportImageTasks",
    "ec2:ImportImage",
    "iam:ListUsers",
    "kms:ListKeys",
    "cloudtrail:LookupEvents",
];

/// Whether `who`'s policies allow something only with MFA (a condition on
/// `aws:MultiFactorAuthPresent` that changes a decision).
#[must_use]
pub fn requires_mfa(who: &Principal) -> bool {
    MFA_PROBES.iter().any(|a| {
        let base = Context::new(a, "*").with("aws:SecureTransport", &["true"]);
        let with = evaluate(
            &who.policies,
            &base.clone().with("aws:MultiFactorAuthPresent", &["true"]),
        );
        let without = evaluate(
            &who.policies,
            &base.with("aws:MultiFactorAuthPresent", &["false"]),
        );
        with == Decision::Allow && without != Decision::Allow
    })
}

impl Identity {
    /// Gives `user` a console password; false when they already have one (IAM's
    /// `EntityAlreadyExists`). The password must meet [`crate::password::check_policy`].
    pub async fn create_login_profile(
        &self,
        account: &str,
        user: &str,
        password: Zeroizing<String>,
        reset_required: bool,
    ) -> Result<bool, ApiError> {
        self.user_must_exist(account, user).await?;
        crate::password::check_policy(&password)?;
        let hash = crate::password::hash(password).await?;
        Ok(self
            .catalog
            .create_login_profile(account, user, &hash, reset_required)
            .await?)
    }

    /// Changes `user`'s console password and/or whether it must be reset at the next
    /// sign-in; false when the user has no login profile.
    pub async fn update_login_profile(
        &self,
        account: &str,
        user: &str,
        password: Option<Zeroizing<String>>,
        reset_required: Option<bool>,
    ) -> Result<bool, ApiError> {
        self.user_must_exist(account, user).await?;
        let hash = match password {
            Some(p) => {
                crate::password::check_policy(&p)?;
                Some(crate::password::hash(p).await?)
            }
            None => None,
        };
        Ok(self
            .catalog
            .update_login_profile(account, user, hash.as_deref(), reset_required)
            .await?)
    }

    async fn user_must_exist(&self, account: &str, user: &str) -> Result<(), ApiError> {
        let exists = self
            .catalog
            .principal_exists(account, catalog::iam::PrincipalKind::User, user)
            .await?;
        if exists {
            Ok(())
        } else {
            Err(ApiError {
                status: 404,
                code: "NoSuchEntity".into(),
                message: format!(
                    "The user with name {} cannot be found.",
                    engine::request::shown(user)
                ),
            })
        }
    }

    /// The first step: `user`'s password, at `now` (seconds).
    pub async fn sign_in(
        &self,
        account: &str,
        user: &str,
        password: Zeroizing<String>,
        now: i64,
    ) -> Result<SignIn, Refused> {
        let internal = |e: catalog::CatalogError| {
            tracing::error!(error = %e, "console sign-in: the identity store failed");
            refused("Sign-in is not available right now; try again later.")
        };
        let well_formed = check_name("user", user).is_ok()
            && account.len() == 12
            && account.bytes().all(|b| b.is_ascii_digit());
        let now_ms = now.saturating_mul(1000);
        let attempt = if well_formed {
            self.catalog
                .login_attempt(account, user, now_ms, crate::mfa::delay_ms)
                .await
                .map_err(internal)?
        } else {
            MfaAttempt::NoDevice
        };
        let failures = match attempt {
            MfaAttempt::NoDevice => {
                // As long as a wrong password takes.
                crate::password::verify(password, None).await;
                return Err(refused(INCORRECT));
            }
            MfaAttempt::Wait { until_ms, failures } => {
                let until = crate::sigv4::format_iso8601(until_ms);
                return Err(refused(if crate::mfa::locks(failures) {
                    format!(
                        "Sign-in for this user is locked until {until} after {failures} failed attempts in a row; the password was not checked. An administrator can unlock it (vmie admin login-profile unlock USER)."
                    )
                } else {
                    format!("Too many failed sign-ins; try again after {until}.")
                }));
            }
            MfaAttempt::Go { failures } => failures,
        };
        let stored = self
            .catalog
            .login_profile(account, user)
            .await
            .map_err(internal)?;
        let reset = stored.as_ref().is_some_and(|p| p.reset_required);
        if !crate::password::verify(password, stored.map(|p| p.password_hash)).await {
            if crate::mfa::locks(failures) {
                let until = crate::sigv4::format_iso8601(
                    now_ms.saturating_add(crate::mfa::delay_ms(failures)),
                );
                tracing::warn!(account, failures, until = %until, "console sign-in locked after failed passwords");
                return Err(refused(format!(
                    "{INCORRECT} Sign-in for this user is now locked until {until} after {failures} failed attempts in a row."
                )));
            }
            return Err(refused(INCORRECT));
        }
        self.catalog
            .login_success(account, user)
            .await
            .map_err(internal)?;
        let has_device = self
            .catalog
            .mfa_serial(account, user)
            .await
            .map_err(internal)?
            .is_some();
        if has_device {
            return Ok(self.next(account, user, Step::Code, false, now));
        }
        let who = self
            .principal(account.into(), user.into(), String::new(), None, false)
            .await
            .map_err(|e| refused(e.to_string()))?;
        if requires_mfa(&who) {
            return Err(refused(
                "Your policies allow some actions only with multi-factor authentication, and you have no MFA device: ask an administrator to enable one (aws iam enable-mfa-device, vmie admin mfa enable) before signing in.",
            ));
        }
        if reset {
            return Ok(self.next(account, user, Step::NewPassword, false, now));
        }
        self.finish(&who, false, now).await
    }

    /// The MFA step: `code` for the sign-in `ticket` holds.
    pub async fn sign_in_code(
        &self,
        ticket: &str,
        code: &str,
        now: i64,
    ) -> Result<SignIn, Refused> {
        let p = self.open_pending(ticket, Step::Code, now)?;
        let who = self
            .principal(
                p.account.clone(),
                p.user.clone(),
                String::new(),
                None,
                false,
            )
            .await
            .map_err(|e| refused(e.to_string()))?;
        let serial = match self.catalog.mfa_serial(&p.account, &p.user).await {
            Ok(Some(Some(s))) => s,
            _ => super::mfa_serial(&p.account, &p.user),
        };
        self.check_mfa(&who, &serial, code.trim(), now)
            .await
            .map_err(|(_, m)| Refused {
                message: m,
                mfa: true,
            })?;
        let reset = self
            .catalog
            .login_profile(&p.account, &p.user)
            .await
            .ok()
            .flatten()
            .is_some_and(|l| l.reset_required);
        if reset {
            return Ok(self.next(&p.account, &p.user, Step::NewPassword, true, now));
        }
        self.finish(&who, true, now).await
    }

    /// The new-password step of the sign-in `ticket` holds.
    pub async fn sign_in_new_password(
        &self,
        ticket: &str,
        password: Zeroizing<String>,
        now: i64,
    ) -> Result<SignIn, Refused> {
        let p = self.open_pending(ticket, Step::NewPassword, now)?;
        self.update_login_profile(&p.account, &p.user, Some(password), Some(false))
            .await
            .map_err(|e| refused(e.message))?;
        let who = self
            .principal(p.account, p.user, String::new(), None, false)
            .await
            .map_err(|e| refused(e.to_string()))?;
        self.finish(&who, p.mfa, now).await
    }

    fn next(&self, account: &str, user: &str, step: Step, mfa: bool, now: i64) -> SignIn {
        let p = Pending {
            account: account.into(),
            user: user.into(),
            step,
            mfa,
            until: now + PENDING_SECONDS,
        };
        let json = serde_json::to_vec(&p).unwrap_or_default();
        SignIn::Next(step, hex::encode(self.root.seal(PENDING_AAD, &json)))
    }

    fn open_pending(&self, ticket: &str, step: Step, now: i64) -> Result<Pending, Refused> {
        let expired = || refused("This sign-in has expired; start again.");
        let sealed = hex::decode(ticket.trim()).map_err(|_| expired())?;
        let json = self.root.open(PENDING_AAD, &sealed).ok_or_else(expired)?;
        let p: Pending = serde_json::from_slice(&json).map_err(|_| expired())?;
        if p.step != step || now > p.until {
            return Err(expired());
        }
        Ok(p)
    }

    async fn finish(&self, who: &Principal, mfa: bool, now: i64) -> Result<SignIn, Refused> {
        let s = self
            .mint(who, now + SESSION_SECONDS, mfa, None)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "console sign-in: the session was not stored");
                refused("Sign-in is not available right now; try again later.")
            })?;
        Ok(SignIn::Done(s, mfa))
    }

    /// Ends a console session at once (sign-out).
    pub async fn end_session(&self, access_key_id: &str) -> Result<(), ApiError> {
        self.catalog.delete_session(access_key_id).await?;
        Ok(())
    }
}

impl Identity {
    /// The account and user a sign-in ticket names (for the activity log), whatever its
    /// step or age; `None` for a ticket this deployment did not seal.
    #[must_use]
    pub fn pending_user(&self, ticket: &str) -> Option<(String, String)> {
        let sealed = hex::decode(ticket.trim()).ok()?;
        let json = self.root.open(PENDING_AAD, &sealed)?;
        let p: Pending = serde_json::from_slice(&json).ok()?;
        Some((p.account, p.user))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::iam::Policy;

    fn who(docs: &[&str]) -> Principal {
        Principal {
            account: "111122223333".into(),
            user: "u".into(),
            arn: "arn:aws:iam::111122223333:user/u".into(),
            access_key_id: String::new(),
            session_token: None,
            mfa: false,
            policies: docs.iter().map(|d| Policy::parse(d).unwrap()).collect(),
            role: None,
            session_policy: None,
        }
    }

    #[test]
    fn policies_that_allow_only_with_mfa_require_it_at_sign_in() {
        let plain = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ec2:Describe*","Resource":"*"}]}"#;
        let with_mfa = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ec2:*","Resource":"*",
            "Condition":{"Bool":{"aws:MultiFactorAuthPresent":"true"}}}]}"#;
        let deny_without = r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Action":"*","Resource":"*"},
            {"Effect":"Deny","Action":"*","Resource":"*","Condition":{"BoolIfExists":{"aws:MultiFactorAuthPresent":"false"}}}]}"#;
        assert!(!requires_mfa(&who(&[plain])));
        assert!(!requires_mfa(&who(&[])), "nothing allowed either way");
        assert!(requires_mfa(&who(&[with_mfa])));
        assert!(requires_mfa(&who(&[plain, deny_without])));
    }
}
