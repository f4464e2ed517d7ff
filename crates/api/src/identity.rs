//! Identities: users, their access keys, roles and attached policies, and the
//! authentication of a signed request to a principal.
//!
//! A secret access key is made here from 240 random bits, shown once to whoever creates it,
//! and stored only sealed under the deployment's root key (AES-256-GCM, bound to its access
//! key id). Authenticating a request opens it in memory, derives the SigV4 signing key and
//! drops it (zeroized).

use std::sync::Arc;

use zeroize::Zeroizing;

use catalog::iam::{AccessKey, MfaAttempt, PrincipalKind};
use catalog::{Catalog, CatalogError};
use kms::RootKey;

use crate::iam::{Policy, PolicyError};
use crate::sigv4::{self, AuthError};

pub mod login;
pub mod manage;

/// The policy the embedded default gives its first user.
pub const ADMIN_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"FullAccess","Effect":"Allow","Action":"*","Resource":"*"}]}"#;

/// Errors of identity management.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The catalog failed or refused.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A policy document is malformed.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// A name is not acceptable.
    #[error("{0}")]
    Invalid(String),
}

/// A new access key: the only moment its secret is visible.
#[derive(serde::Serialize)]
pub struct NewKey {
    /// `AccessKeyId`.
    #[serde(rename = "AccessKeyId")]
    pub access_key_id: String,
    /// `SecretAccessKey`.
    #[serde(rename = "SecretAccessKey", serialize_with = "reveal")]
    pub secret_access_key: Zeroizing<String>,
    /// `UserName`.
    #[serde(rename = "UserName")]
    pub user_name: String,
}

fn reveal<S: serde::Serializer>(v: &Zeroizing<String>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v.as_str())
}

impl std::fmt::Debug for NewKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewKey")
            .field("access_key_id", &self.access_key_id)
            .field("user_name", &self.user_name)
            .finish_non_exhaustive()
    }
}

/// The role an assumed-role session acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssumedRole {
    /// The role's name.
    pub role: String,
    /// The session's name (`RoleSessionName`).
    pub session: String,
    /// The user who assumed it.
    pub source_user: String,
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Account.
    pub account: String,
    /// User name (for an assumed role: the role's name).
    pub user: String,
    /// `arn:aws:iam::ACCOUNT:user/NAME` (an assumed role:
    /// `arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`).
    pub arn: String,
    /// The access key used.
    pub access_key_id: String,
    /// Session token presented, if any.
    pub session_token: Option<String>,
    /// Authenticated with temporary credentials issued after an MFA code.
    pub mfa: bool,
    /// Its policies.
    pub policies: Vec<Policy>,
    /// For a session of an assumed role: the role and session.
    pub role: Option<AssumedRole>,
    /// A session policy given to AssumeRole: what it does not allow is not allowed.
    pub session_policy: Option<Policy>,
}

impl Principal {
    /// The ARN policies see as `aws:PrincipalArn` and key policies as the caller: the user's,
    /// or for an assumed role the role's (`arn:aws:iam::ACCOUNT:role/ROLE`).
    #[must_use]
    pub fn principal_arn(&self) -> String {
        match &self.role {
            Some(r) => format!("arn:aws:iam::{}:role/{}", self.account, r.role),
            None => self.arn.clone(),
        }
    }

    /// The caller as KMS key policies see it.
    #[must_use]
    pub fn kms_caller(&self) -> kms::Caller {
        kms::Caller::new(self.principal_arn(), self.account.clone())
    }
}

/// A stable IAM-style unique id (`AIDA…` for users, `AROA…` for roles): the prefix and 16
/// characters derived from the account and name.
#[must_use]
pub fn unique_id(prefix: &str, account: &str, name: &str) -> String {
    let d = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        format!("{account}/{name}").as_bytes(),
    );
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let id: String = d.as_ref()[..16]
        .iter()
        .map(|b| char::from(alphabet[usize::from(b & 31)]))
        .collect();
    format!("{prefix}{id}")
}

/// Identity management over the catalog.
#[derive(Debug, Clone)]
pub struct Identity {
    catalog: Catalog,
    root: Arc<RootKey>,
}

fn check_name(what: &str, n: &str) -> Result<(), IdentityError> {
    let ok = (1..=64).contains(&n.len())
        && n.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"+=,.@_-".contains(&c));
    if ok {
        Ok(())
    } else {
        Err(IdentityError::Invalid(format!(
            "{what} names are 1 to 64 letters, digits and +=,.@_- characters"
        )))
    }
}

fn aad(access_key_id: &str) -> Vec<u8> {
    format!("vmie access key {access_key_id}").into_bytes()
}

/// `n` characters drawn uniformly from `alphabet` (whose length divides 256).
fn random_text(alphabet: &[u8], n: usize) -> Zeroizing<String> {
    let mut b = Zeroizing::new(vec![0u8; n]);
    kms::aead::random(&mut b);
    Zeroizing::new(
        b.iter()
            .map(|x| char::from(alphabet[usize::from(*x) % alphabet.len()]))
            .collect(),
    )
}

impl Identity {
    /// Identities in `catalog`, secrets sealed under `root`.
    #[must_use]
    pub fn new(catalog: Catalog, root: Arc<RootKey>) -> Self {
        Identity { catalog, root }
    }

    /// The catalog.
    #[must_use]
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Creates a user.
    pub async fn create_user(&self, account: &str, name: &str) -> Result<(), IdentityError> {
        check_name("user", name)?;
        Ok(self.catalog.create_user(account, name).await?)
    }

    /// Creates a role.
    pub async fn create_role(&self, account: &str, name: &str) -> Result<(), IdentityError> {
        check_name("role", name)?;
        Ok(self.catalog.create_role(account, name).await?)
    }

    /// Stores a policy after checking that it parses.
    pub async fn put_policy(
        &self,
        account: &str,
        name: &str,
        doc: &str,
    ) -> Result<(), IdentityError> {
        check_name("policy", name)?;
        Policy::parse(doc)?;
        Ok(self.catalog.put_policy(account, name, doc).await?)
    }

    /// Makes an access key for `user`; the secret is in the result and nowhere else.
    pub async fn create_access_key(
        &self,
        account: &str,
        user: &str,
    ) -> Result<NewKey, IdentityError> {
        // 16 characters of base32 after AKIA, as AWS key ids look; 40 of base64 for the secret.
        let id = format!(
            "AKIA{}",
            *random_text(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)
        );
        let secret = random_text(
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
            40,
        );
        self.catalog
            .create_access_key(&AccessKey {
                access_key_id: id.clone(),
                account: account.into(),
                user_name: user.into(),
                secret_sealed: self.root.seal(&aad(&id), secret.as_bytes()),
                status: "Active".into(),
                created_ms: catalog::now_ms(),
                last_used_ms: None,
            })
            .await?;
        Ok(NewKey {
            access_key_id: id,
            secret_access_key: secret,
            user_name: user.into(),
        })
    }

    /// On a catalog without users, creates the user `admin` with full access and an access
    /// key, and returns the key; otherwise `None`. Processes started together on one empty
    /// catalog race here: the one whose insert of `admin` lands does the rest and gets the key,
    /// the others return `None`.
    pub async fn bootstrap(&self, account: &str) -> Result<Option<NewKey>, IdentityError> {
        if !self.catalog.users(account).await?.is_empty() {
            return Ok(None);
        }
        match self.create_user(account, "admin").await {
            Err(IdentityError::Catalog(CatalogError::Conflict(_))) => return Ok(None),
            r => r?,
        }
        self.put_policy(account, "AdministratorAccess", ADMIN_POLICY)
            .await?;
        self.catalog
            .attach_policy(account, PrincipalKind::User, "admin", "AdministratorAccess")
            .await?;
        Ok(Some(self.create_access_key(account, "admin").await?))
    }

    /// The parsed policies attached to a principal (a stored document that no longer parses
    /// is skipped and reported: it grants nothing).
    pub async fn policies(
        &self,
        account: &str,
        kind: PrincipalKind,
        name: &str,
    ) -> Result<Vec<Policy>, IdentityError> {
        let mut docs: Vec<(String, String)> = self
            .catalog
            .attached_policies(account, kind, name)
            .await?
            .into_iter()
            .map(|d| (d.name, d.document))
            .collect();
        docs.extend(self.catalog.inline_policies(account, kind, name).await?);
        Ok(docs
            .iter()
            .filter_map(|(n, d)| match Policy::parse(d) {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::error!(policy = %n, error = %e, "a stored policy does not parse; it grants nothing");
                    None
                }
            })
            .collect())
    }

    /// Authenticates a signed request for `service` in `region` at `now` (epoch seconds).
    pub async fn authenticate(
        &self,
        req: &sigv4::Request<'_>,
        region: &str,
        service: &str,
        now: i64,
    ) -> Result<Principal, AuthError> {
        let signed = sigv4::parse(req)?;
        if let Some(token) = &signed.session_token {
            return self
                .authenticate_session(req, &signed, token, region, service, now)
                .await;
        }
        let internal =
            |e: CatalogError| AuthError::Malformed(format!("the identity store failed: {e}"));
        let key = self
            .catalog
            .access_key(&signed.access_key_id)
            .await
            .map_err(internal)?
            .filter(|k| k.status == "Active")
            .ok_or_else(|| AuthError::UnknownKey(signed.access_key_id.clone()))?;
        let secret = self
            .root
            .open(&aad(&key.access_key_id), &key.secret_sealed)
            .ok_or_else(|| AuthError::UnknownKey(signed.access_key_id.clone()))?;
        let secret = Zeroizing::new(String::from_utf8_lossy(&secret).into_owned());
        sigv4::verify(req, &signed, &secret, region, service, now)?;
        self.catalog
            .touch_access_key(&key.access_key_id)
            .await
            .map_err(internal)?;
        self.principal(key.account, key.user_name, key.access_key_id, None, false)
            .await
    }

    /// The principal `user` of `account`, with its policies.
    async fn principal(
        &self,
        account: String,
        user: String,
        access_key_id: String,
        session_token: Option<String>,
        mfa: bool,
    ) -> Result<Principal, AuthError> {
        let policies = self
            .policies(&account, PrincipalKind::User, &user)
            .await
            .map_err(|e| AuthError::Malformed(e.to_string()))?;
        Ok(Principal {
            arn: format!("arn:aws:iam::{account}:user/{user}"),
            account,
            user,
            access_key_id,
            session_token,
            mfa,
            policies,
            role: None,
            session_policy: None,
        })
    }

    /// The principal of a session of an assumed role.
    async fn role_principal(
        &self,
        s: catalog::iam::Session,
        role: String,
        token: &str,
    ) -> Result<Principal, AuthError> {
        let gone = || {
            AuthError::UnknownKey(format!(
                "{}: the role of this session no longer exists",
                s.access_key_id
            ))
        };
        let exists = self
            .catalog
            .principal_exists(&s.account, PrincipalKind::Role, &role)
            .await
            .map_err(|e| AuthError::Malformed(format!("the identity store failed: {e}")))?;
        if !exists {
            return Err(gone());
        }
        let policies = self
            .policies(&s.account, PrincipalKind::Role, &role)
            .await
            .map_err(|e| AuthError::Malformed(e.to_string()))?;
        let session_policy = match &s.session_policy {
            Some(d) => Some(Policy::parse(d).map_err(|e| AuthError::Malformed(e.to_string()))?),
            None => None,
        };
        let session = s.session_name.clone().unwrap_or_default();
        Ok(Principal {
            arn: format!("arn:aws:sts::{}:assumed-role/{role}/{session}", s.account),
            account: s.account,
            user: role.clone(),
            access_key_id: s.access_key_id,
            session_token: Some(token.to_string()),
            mfa: s.mfa,
            policies,
            role: Some(AssumedRole {
                role,
                session,
                source_user: s.user_name,
            }),
            session_policy,
        })
    }

    async fn authenticate_session(
        &self,
        req: &sigv4::Request<'_>,
        signed: &sigv4::Signed,
        token: &str,
        region: &str,
        service: &str,
        now: i64,
    ) -> Result<Principal, AuthError> {
        let internal =
            |e: CatalogError| AuthError::Malformed(format!("the identity store failed: {e}"));
        let invalid = || {
            AuthError::UnknownKey(format!(
                "{} with the session token given",
                signed.access_key_id
            ))
        };
        let s = self
            .catalog
            .session(&signed.access_key_id)
            .await
            .map_err(internal)?
            .ok_or_else(invalid)?;
        let hash = sha256_hex(token.as_bytes());
        if aws_lc_rs::constant_time::verify_slices_are_equal(
            hash.as_bytes(),
            s.token_hash.as_bytes(),
        )
        .is_err()
        {
            return Err(invalid());
        }
        if now.saturating_mul(1000) > s.expires_ms {
            return Err(AuthError::Expired(
                "the security token included in the request is expired".into(),
            ));
        }
        let secret = self
            .root
            .open(&aad(&s.access_key_id), &s.secret_sealed)
            .ok_or_else(invalid)?;
        let secret = Zeroizing::new(String::from_utf8_lossy(&secret).into_owned());
        sigv4::verify(req, signed, &secret, region, service, now)?;
        if let Some(role) = s.role_name.clone() {
            return self.role_principal(s, role, token).await;
        }
        self.principal(
            s.account,
            s.user_name,
            s.access_key_id,
            Some(token.to_string()),
            s.mfa,
        )
        .await
    }

    /// Enrols a virtual MFA device for `user`; returns its serial number and the
    /// `otpauth://` URI (the only time its secret is shown).
    pub async fn enable_mfa(
        &self,
        account: &str,
        user: &str,
    ) -> Result<(String, Zeroizing<String>), IdentityError> {
        let mut secret = Zeroizing::new([0u8; 20]);
        kms::aead::random(secret.as_mut());
        let serial = mfa_serial(account, user);
        self.catalog
            .enrol_mfa(
                account,
                user,
                &serial,
                Some(&self.root.seal(serial.as_bytes(), secret.as_ref())),
                0,
            )
            .await?;
        let uri = Zeroizing::new(crate::totp::uri(
            "vmie",
            &format!("{user}@{account}"),
            secret.as_ref(),
        ));
        Ok((serial, uri))
    }

    /// GetSessionToken for `who`: temporary credentials for `duration` seconds, marked as
    /// MFA-authenticated when `serial` and `code` are given and the code is right (each code
    /// is accepted once).
    pub async fn get_session_token(
        &self,
        who: &Principal,
        mfa: Option<(&str, &str)>,
        duration: i64,
        now: i64,
    ) -> Result<NewSession, (&'static str, String)> {
        let internal = |e: CatalogError| ("InternalFailure", e.to_string());
        if who.session_token.is_some() {
            return Err((
                "AccessDenied",
                "Cannot call GetSessionToken with session credentials".into(),
            ));
        }
        let with_mfa = match mfa {
            Some((serial, code)) => {
                self.check_mfa(who, serial, code, now).await?;
                true
            }
            None => false,
        };
        self.mint(who, now + duration, with_mfa, None)
            .await
            .map_err(internal)
    }
}

impl Identity {
    /// Checks a code of `who`'s virtual MFA device at `now` (epoch seconds), under the
    /// shared back-off and lockout of [`crate::mfa`]: each code accepted once, a refusal
    /// says when the device is locked.
    async fn check_mfa(
        &self,
        who: &Principal,
        serial: &str,
        code: &str,
        now: i64,
    ) -> Result<(), (&'static str, String)> {
        const INVALID: &str =
            "MultiFactorAuthentication failed with invalid MFA one time pass code.";
        let internal = |e: CatalogError| ("InternalFailure", e.to_string());
        let denied = |m: String| ("AccessDenied", m);
        if who.role.is_some() {
            return Err(denied(INVALID.into()));
        }
        let stored = self
            .catalog
            .mfa_serial(&who.account, &who.user)
            .await
            .map_err(internal)?;
        let expected = match stored {
            Some(Some(s)) => s,
            _ => mfa_serial(&who.account, &who.user),
        };
        if serial != expected {
            return Err(denied(INVALID.into()));
        }
        let now_ms = now.saturating_mul(1000);
        let failures = match self
            .catalog
            .mfa_attempt(&who.account, &who.user, now_ms, crate::mfa::delay_ms)
            .await
            .map_err(internal)?
        {
            MfaAttempt::NoDevice => return Err(denied(INVALID.into())),
            MfaAttempt::Wait { until_ms, failures } => {
                let until = crate::sigv4::format_iso8601(until_ms);
                return Err(denied(if crate::mfa::locks(failures) {
                    format!(
                        "MultiFactorAuthentication failed: the MFA device is locked until {until} after {failures} invalid codes in a row; the code was not checked"
                    )
                } else {
                    format!(
                        "MultiFactorAuthentication failed: too many invalid codes; retry after {until}"
                    )
                }));
            }
            MfaAttempt::Go { failures } => failures,
        };
        let refused = || {
            if crate::mfa::locks(failures) {
                let until = crate::sigv4::format_iso8601(
                    now_ms.saturating_add(crate::mfa::delay_ms(failures)),
                );
                tracing::warn!(user = %who.arn, failures, until = %until, "MFA device locked after invalid codes");
                denied(format!(
                    "{INVALID} The MFA device is locked until {until} after {failures} invalid codes in a row; an administrator can unlock it (vmie admin mfa unlock {})",
                    who.user
                ))
            } else {
                tracing::info!(user = %who.arn, failures, "invalid MFA code");
                denied(INVALID.into())
            }
        };
        let (sealed, last) = self
            .catalog
            .mfa_device(&who.account, &who.user)
            .await
            .map_err(internal)?
            .ok_or_else(refused)?;
        let secret = self
            .root
            .open(serial.as_bytes(), &sealed)
            .ok_or_else(refused)?;
        let step = crate::totp::verify(
            &secret,
            code,
            u64::try_from(now).unwrap_or(0),
            u64::try_from(last).ok().filter(|l| *l > 0),
        )
        .ok_or_else(refused)?;
        let fresh = self
            .catalog
            .mfa_success(
                &who.account,
                &who.user,
                i64::try_from(step).unwrap_or(i64::MAX),
            )
            .await
            .map_err(internal)?;
        if fresh { Ok(()) } else { Err(refused()) }
    }
}

/// Temporary credentials, shown once.
pub struct NewSession {
    /// `ASIA…`
    pub access_key_id: String,
    /// The secret.
    pub secret_access_key: Zeroizing<String>,
    /// The session token.
    pub session_token: Zeroizing<String>,
    /// Expiry (Unix seconds).
    pub expires: i64,
}

/// The serial number of `user`'s virtual MFA device.
#[must_use]
pub fn mfa_serial(account: &str, user: &str) -> String {
    format!("arn:aws:iam::{account}:mfa/{user}")
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b))
}

/// For protocols that verify the signature themselves (S3, through s3s): the signing
/// secret of an access key, and the principal a verified request names.
impl Identity {
    /// The secret of the active long-term key or unexpired session key `id` (opened from its
    /// seal for this one verification).
    pub async fn signing_secret(&self, id: &str, now: i64) -> Result<Zeroizing<String>, AuthError> {
        let internal =
            |e: CatalogError| AuthError::Malformed(format!("the identity store failed: {e}"));
        let unknown = || AuthError::UnknownKey(id.to_string());
        if let Some(k) = self.catalog.access_key(id).await.map_err(internal)? {
            if k.status != "Active" {
                return Err(unknown());
            }
            let s = self
                .root
                .open(&aad(&k.access_key_id), &k.secret_sealed)
                .ok_or_else(unknown)?;
            return Ok(Zeroizing::new(String::from_utf8_lossy(&s).into_owned()));
        }
        let s = self
            .catalog
            .session(id)
            .await
            .map_err(internal)?
            .ok_or_else(unknown)?;
        if now.saturating_mul(1000) > s.expires_ms {
            return Err(AuthError::Expired(
                "the security token included in the request is expired".into(),
            ));
        }
        let secret = self
            .root
            .open(&aad(&s.access_key_id), &s.secret_sealed)
            .ok_or_else(unknown)?;
        Ok(Zeroizing::new(
            String::from_utf8_lossy(&secret).into_owned(),
        ))
    }

    /// The principal of a request whose signature under [`Identity::signing_secret`] of
    /// `id` was verified: a session key needs its session token (`token`), unexpired; a
    /// long-term key must still be active and must not come with a token.
    pub async fn principal_of_key(
        &self,
        id: &str,
        token: Option<&str>,
        now: i64,
    ) -> Result<Principal, AuthError> {
        let internal =
            |e: CatalogError| AuthError::Malformed(format!("the identity store failed: {e}"));
        let invalid = || AuthError::UnknownKey(format!("{id} with the session token given"));
        if let Some(k) = self.catalog.access_key(id).await.map_err(internal)? {
            if k.status != "Active" || token.is_some() {
                return Err(invalid());
            }
            self.catalog
                .touch_access_key(&k.access_key_id)
                .await
                .map_err(internal)?;
            return self
                .principal(k.account, k.user_name, k.access_key_id, None, false)
                .await;
        }
        let s = self
            .catalog
            .session(id)
            .await
            .map_err(internal)?
            .ok_or_else(invalid)?;
        let token = token.ok_or_else(invalid)?;
        let hash = sha256_hex(token.as_bytes());
        if aws_lc_rs::constant_time::verify_slices_are_equal(
            hash.as_bytes(),
            s.token_hash.as_bytes(),
        )
        .is_err()
        {
            return Err(invalid());
        }
        if now.saturating_mul(1000) > s.expires_ms {
            return Err(AuthError::Expired(
                "the security token included in the request is expired".into(),
            ));
        }
        self.principal(
            s.account,
            s.user_name,
            s.access_key_id,
            Some(token.to_string()),
            s.mfa,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::iam::{Context, Decision, evaluate};

    async fn identity(dir: &std::path::Path) -> Identity {
        let c = Catalog::open(&format!("sqlite://{}", dir.join("c.db").display()))
            .await
            .unwrap();
        let root = RootKey::load_or_create(&dir.join("root.key")).unwrap();
        Identity::new(c, Arc::new(root))
    }

    #[tokio::test]
    async fn concurrent_bootstraps_make_one_admin_and_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let id = identity(dir.path()).await;
        let a = "111122223333";
        let runs = futures::future::join_all((0..6).map(|_| id.bootstrap(a))).await;
        let keys: Vec<NewKey> = runs.into_iter().filter_map(|r| r.unwrap()).collect();
        assert_eq!(
            keys.len(),
            1,
            "one caller made the admin key, the others none"
        );
        let users = id.catalog().users(a).await.unwrap();
        assert_eq!(users.len(), 1);
        let stored = id.catalog().access_keys(a, Some("admin")).await.unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].access_key_id, keys[0].access_key_id);
    }

    #[tokio::test]
    async fn keys_are_sealed_and_authenticate_their_user() {
        let dir = tempfile::tempdir().unwrap();
        let id = identity(dir.path()).await;
        let a = "111122223333";
        let admin = id.bootstrap(a).await.unwrap().unwrap();
        assert!(id.bootstrap(a).await.unwrap().is_none(), "only once");
        assert!(admin.access_key_id.starts_with("AKIA") && admin.access_key_id.len() == 20);
        assert_eq!(admin.secret_access_key.len(), 40);
        // The secret is nowhere in the catalog's file.
        let db = std::fs::read(dir.path().join("c.db")).unwrap();
        let s = admin.secret_access_key.as_bytes();
        assert!(!db.windows(s.len()).any(|w| w == s));

        let now = 1_795_000_000;
        let date = sigv4::format_amz_date(now);
        let body = b"Action=DescribeImages&Version=2016-11-15";
        let mut headers = vec![
            ("Host".to_string(), "localhost:8443".to_string()),
            ("X-Amz-Date".to_string(), date.clone()),
        ];
        let names = vec!["host".to_string(), "x-amz-date".to_string()];
        let req = sigv4::Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            body,
        };
        let auth = sigv4::authorization(
            &req,
            &admin.access_key_id,
            &admin.secret_access_key,
            "us-east-1",
            "ec2",
            &date,
            &names,
        )
        .unwrap();
        headers.push(("Authorization".into(), auth));
        let req = sigv4::Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            body,
        };
        let p = id
            .authenticate(&req, "us-east-1", "ec2", now)
            .await
            .unwrap();
        assert_eq!(p.arn, format!("arn:aws:iam::{a}:user/admin"));
        assert_eq!(
            evaluate(&p.policies, &Context::new("ec2:ImportImage", "*")),
            Decision::Allow
        );

        id.catalog()
            .set_access_key_status(a, &admin.access_key_id, "Inactive")
            .await
            .unwrap();
        let e = id
            .authenticate(&req, "us-east-1", "ec2", now)
            .await
            .unwrap_err();
        assert_eq!(e.code(), "InvalidClientTokenId");

        // A user without policies authenticates and is allowed nothing.
        id.create_user(a, "bob").await.unwrap();
        let bob = id.create_access_key(a, "bob").await.unwrap();
        assert!(!format!("{bob:?}").contains(bob.secret_access_key.as_str()));
        assert!(id.create_user(a, "bad name").await.is_err());
        assert!(
            id.put_policy(a, "p", r#"{"Version":"2012-10-17"}"#)
                .await
                .is_err()
        );
    }
}
