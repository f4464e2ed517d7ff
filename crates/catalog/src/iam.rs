//! Identities: users and roles of an account, their access keys (the secret stored only as
//! sealed by the caller, never in the clear), policy documents and which principal has which
//! policy attached. Policies are stored as text; parsing and evaluation belong to the API.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Catalog, CatalogError, Result, now_ms};

/// A user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Account.
    pub account: String,
    /// Name.
    pub name: String,
    /// Creation (ms).
    pub created_ms: i64,
}

/// What counts failed attempts in a row, with back-off: a user's MFA device, or the
/// password of their console login profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counted {
    /// `iam_mfa_devices`.
    MfaDevice,
    /// `iam_login_profiles`.
    LoginProfile,
}

impl Counted {
    fn table(self) -> &'static str {
        match self {
            Counted::MfaDevice => "iam_mfa_devices",
            Counted::LoginProfile => "iam_login_profiles",
        }
    }
}

/// What [`Catalog::mfa_attempt`] and [`Catalog::login_attempt`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MfaAttempt {
    /// The user has no MFA device (for a sign-in: no login profile).
    NoDevice,
    /// Refused unchecked: an earlier failure's back-off or lockout runs until `until_ms`.
    Wait {
        /// When the next attempt may be made (ms).
        until_ms: i64,
        /// Failed codes in a row so far.
        failures: i64,
    },
    /// Check the code; it is already counted as failure number `failures` in a row.
    Go {
        /// Failed codes in a row, this attempt included.
        failures: i64,
    },
}

/// The failure count of one MFA device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MfaState {
    /// The device's user.
    pub user: String,
    /// Failed codes in a row since the last right one (or unlock).
    pub failures: i64,
    /// The last failure (ms; 0: none).
    pub last_failure_ms: i64,
    /// No attempt is checked before this time (ms).
    pub next_attempt_ms: i64,
}

/// An access key.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessKey {
    /// `AKIA…`
    pub access_key_id: String,
    /// Account.
    pub account: String,
    /// Owner.
    pub user_name: String,
    /// The secret, sealed (opaque to the catalog).
    pub secret_sealed: Vec<u8>,
    /// `Active` or `Inactive`.
    pub status: String,
    /// Creation (ms).
    pub created_ms: i64,
    /// Last authenticated use (ms).
    pub last_used_ms: Option<i64>,
}

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKey")
            .field("access_key_id", &self.access_key_id)
            .field("account", &self.account)
            .field("user_name", &self.user_name)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// A stored policy document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDoc {
    /// Account.
    pub account: String,
    /// Name.
    pub name: String,
    /// The JSON document.
    pub document: String,
}

/// Who a policy is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    /// A user.
    User,
    /// A role.
    Role,
}

impl PrincipalKind {
    fn table(self) -> &'static str {
        match self {
            PrincipalKind::User => "iam_users",
            PrincipalKind::Role => "iam_roles",
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::User => "user",
            PrincipalKind::Role => "role",
        }
    }
}

fn key_of(r: &AnyRow) -> Result<AccessKey> {
    let sealed: String = r.try_get("secret_sealed")?;
    Ok(AccessKey {
        access_key_id: r.try_get("access_key_id")?,
        account: r.try_get("account")?,
        user_name: r.try_get("user_name")?,
        secret_sealed: hex::decode(&sealed)
            .map_err(|e| CatalogError::Corrupt("access key".into(), e.to_string()))?,
        status: r.try_get("status")?,
        created_ms: r.try_get("created_ms")?,
        last_used_ms: r.try_get("last_used_ms")?,
    })
}

fn conflict(what: &str) -> CatalogError {
    CatalogError::Conflict(what.to_string())
}

/// Temporary credentials issued by GetSessionToken.
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    /// `ASIA…`
    pub access_key_id: String,
    /// Account.
    pub account: String,
    /// The user they were issued to.
    pub user_name: String,
    /// The secret, sealed.
    pub secret_sealed: Vec<u8>,
    /// SHA-256 (hex) of the session token.
    pub token_hash: String,
    /// Issued after multi-factor authentication.
    pub mfa: bool,
    /// Expiry (ms).
    pub expires_ms: i64,
    /// For AssumeRole: the role (then `user_name` is the caller who assumed it).
    pub role_name: Option<String>,
    /// For AssumeRole: the session name.
    pub session_name: Option<String>,
    /// For AssumeRole: the session policy, which narrows what the role's policies allow.
    pub session_policy: Option<String>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("access_key_id", &self.access_key_id)
            .field("user_name", &self.user_name)
            .field("mfa", &self.mfa)
            .field("expires_ms", &self.expires_ms)
            .field("role_name", &self.role_name)
            .field("session_name", &self.session_name)
            .finish_non_exhaustive()
    }
}

fn sealed_of(s: &str, what: &str) -> Result<Vec<u8>> {
    hex::decode(s).map_err(|e| CatalogError::Corrupt(what.into(), e.to_string()))
}

impl Catalog {
    /// Enrols (or replaces) the virtual MFA device of `user`.
    pub async fn put_mfa_device(
        &self,
        account: &str,
        user: &str,
        secret_sealed: &[u8],
    ) -> Result<()> {
        if !self
            .principal_exists(account, PrincipalKind::User, user)
            .await?
        {
            return Err(CatalogError::NotFound(user.into()));
        }
        sqlx::query(
            "INSERT INTO iam_mfa_devices (account, user_name, secret_sealed, last_step, created_ms) VALUES ($1, $2, $3, 0, $4) \
             ON CONFLICT (account, user_name) DO UPDATE SET secret_sealed = excluded.secret_sealed, last_step = 0, created_ms = excluded.created_ms, \
             failures = 0, last_failure_ms = 0, next_attempt_ms = 0",
        )
        .bind(account)
        .bind(user)
        .bind(hex::encode(secret_sealed))
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The sealed secret and last used step of `user`'s MFA device.
    pub async fn mfa_device(&self, account: &str, user: &str) -> Result<Option<(Vec<u8>, i64)>> {
        let row = sqlx::query(
            "SELECT secret_sealed, last_step FROM iam_mfa_devices WHERE account = $1 AND user_name = $2",
        )
        .bind(account)
        .bind(user)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            let s: String = r.try_get(0)?;
            Ok((sealed_of(&s, "mfa device")?, r.try_get(1)?))
        })
        .transpose()
    }

    /// Asks to check a code of `user`'s MFA device at `now_ms`. Every node shares the count:
    /// in one transaction (the device's row locked), the attempt is refused while an earlier
    /// failure's back-off runs, else counted as a failure in advance — so that concurrent
    /// guesses cannot slip past the back-off — and the next attempt is held back by
    /// `delay_ms(failures)`. A right code then clears the count ([`Catalog::mfa_success`]).
    pub async fn mfa_attempt(
        &self,
        account: &str,
        user: &str,
        now_ms: i64,
        delay_ms: impl Fn(i64) -> i64,
    ) -> Result<MfaAttempt> {
        self.counted_attempt(Counted::MfaDevice, account, user, now_ms, delay_ms)
            .await
    }

    /// One attempt counted in `what`'s row of `user` (see [`Catalog::mfa_attempt`]);
    /// `NoDevice` when there is no such row.
    pub(crate) async fn counted_attempt(
        &self,
        what: Counted,
        account: &str,
        user: &str,
        now_ms: i64,
        delay_ms: impl Fn(i64) -> i64,
    ) -> Result<MfaAttempt> {
        let table = what.table();
        let mut tx = self.pool.begin().await?;
        // A write first: it locks the row (PostgreSQL) or the database (SQLite) until the
        // transaction ends, so two nodes decide one after the other.
        let locked = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {table} SET failures = failures WHERE account = $1 AND user_name = $2"
        )))
        .bind(account)
        .bind(user)
        .execute(&mut *tx)
        .await?;
        if locked.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(MfaAttempt::NoDevice);
        }
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT failures, next_attempt_ms FROM {table} WHERE account = $1 AND user_name = $2"
        )))
        .bind(account)
        .bind(user)
        .fetch_one(&mut *tx)
        .await?;
        let (failures, next): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
        if now_ms < next {
            tx.rollback().await?;
            return Ok(MfaAttempt::Wait {
                until_ms: next,
                failures,
            });
        }
        let failures = failures.saturating_add(1);
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {table} SET failures = $1, last_failure_ms = $2, next_attempt_ms = $3 \
             WHERE account = $4 AND user_name = $5"
        )))
        .bind(failures)
        .bind(now_ms)
        .bind(now_ms.saturating_add(delay_ms(failures)))
        .bind(account)
        .bind(user)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(MfaAttempt::Go { failures })
    }

    /// A right code of `user`'s device for time step `step`: accepted once (false for a
    /// replayed step, which stays counted as a failure), and the failure count cleared.
    pub async fn mfa_success(&self, account: &str, user: &str, step: i64) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE iam_mfa_devices SET last_step = $1, failures = 0, next_attempt_ms = 0 \
             WHERE account = $2 AND user_name = $3 AND last_step < $1",
        )
        .bind(step)
        .bind(account)
        .bind(user)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Clears the failure count and any lockout of `user`'s device (an administrator's
    /// decision); false when the user has no device.
    pub async fn mfa_unlock(&self, account: &str, user: &str) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE iam_mfa_devices SET failures = 0, next_attempt_ms = 0 WHERE account = $1 AND user_name = $2",
        )
        .bind(account)
        .bind(user)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// The failure counts of `account`'s MFA devices, by user.
    pub async fn mfa_states(&self, account: &str) -> Result<Vec<MfaState>> {
        let rows = sqlx::query(
            "SELECT user_name, failures, last_failure_ms, next_attempt_ms FROM iam_mfa_devices \
             WHERE account = $1 ORDER BY user_name",
        )
        .bind(account)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(MfaState {
                    user: r.try_get(0)?,
                    failures: r.try_get(1)?,
                    last_failure_ms: r.try_get(2)?,
                    next_attempt_ms: r.try_get(3)?,
                })
            })
            .collect()
    }

    /// Users of `account` with an MFA device.
    pub async fn mfa_users(&self, account: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT user_name FROM iam_mfa_devices WHERE account = $1 ORDER BY user_name",
        )
        .bind(account)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// Stores temporary credentials (and drops expired ones).
    pub async fn put_session(&self, s: &Session) -> Result<()> {
        let now = now_ms();
        sqlx::query("DELETE FROM iam_sessions WHERE expires_ms < $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO iam_sessions (access_key_id, account, user_name, secret_sealed, token_hash, mfa, expires_ms, created_ms, \
             role_name, session_name, session_policy) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&s.access_key_id)
        .bind(&s.account)
        .bind(&s.user_name)
        .bind(hex::encode(&s.secret_sealed))
        .bind(&s.token_hash)
        .bind(i64::from(s.mfa))
        .bind(s.expires_ms)
        .bind(now)
        .bind(s.role_name.as_deref())
        .bind(s.session_name.as_deref())
        .bind(s.session_policy.as_deref())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The temporary credentials `id`, if they exist (expired or not).
    pub async fn session(&self, id: &str) -> Result<Option<Session>> {
        let row = sqlx::query("SELECT * FROM iam_sessions WHERE access_key_id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            let sealed: String = r.try_get("secret_sealed")?;
            Ok(Session {
                access_key_id: r.try_get("access_key_id")?,
                account: r.try_get("account")?,
                user_name: r.try_get("user_name")?,
                secret_sealed: sealed_of(&sealed, "session")?,
                token_hash: r.try_get("token_hash")?,
                mfa: r.try_get::<i64, _>("mfa")? != 0,
                expires_ms: r.try_get("expires_ms")?,
                role_name: r.try_get("role_name")?,
                session_name: r.try_get("session_name")?,
                session_policy: r.try_get("session_policy")?,
            })
        })
        .transpose()
    }

    async fn insert_named(&self, table: &str, account: &str, name: &str, what: &str) -> Result<()> {
        let r = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {table} (account, name, created_ms) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
        )))
        .bind(account)
        .bind(name)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        if r.rows_affected() == 0 {
            return Err(conflict(&format!("the {what} {name} already exists")));
        }
        Ok(())
    }

    async fn names(&self, table: &str, account: &str) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT name, created_ms FROM {table} WHERE account = $1 ORDER BY name"
        )))
        .bind(account)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Creates the user `name`.
    pub async fn create_user(&self, account: &str, name: &str) -> Result<()> {
        self.insert_named("iam_users", account, name, "user").await
    }

    /// The users of `account`.
    pub async fn users(&self, account: &str) -> Result<Vec<User>> {
        Ok(self
            .names("iam_users", account)
            .await?
            .into_iter()
            .map(|(name, created_ms)| User {
                account: account.into(),
                name,
                created_ms,
            })
            .collect())
    }

    /// Creates the role `name` (a principal that services act as, e.g. `vmimport`).
    pub async fn create_role(&self, account: &str, name: &str) -> Result<()> {
        self.insert_named("iam_roles", account, name, "role").await
    }

    /// The roles of `account`.
    pub async fn roles(&self, account: &str) -> Result<Vec<String>> {
        Ok(self
            .names("iam_roles", account)
            .await?
            .into_iter()
            .map(|(n, _)| n)
            .collect())
    }

    /// Whether `kind` `name` exists in `account`.
    pub async fn principal_exists(
        &self,
        account: &str,
        kind: PrincipalKind,
        name: &str,
    ) -> Result<bool> {
        let table = kind.table();
        Ok(sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT 1 FROM {table} WHERE account = $1 AND name = $2"
        )))
        .bind(account)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?
        .is_some())
    }

    /// Deletes a user or role with its access keys and attachments, in one transaction.
    pub async fn delete_principal(
        &self,
        account: &str,
        kind: PrincipalKind,
        name: &str,
    ) -> Result<()> {
        let table = kind.table();
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE account = $1 AND name = $2"
        )))
        .bind(account)
        .bind(name)
        .execute(&mut *tx)
        .await?;
        crate::found(&r, name)?;
        if kind == PrincipalKind::User {
            for sql in [
                "DELETE FROM iam_access_keys WHERE account = $1 AND user_name = $2",
                "DELETE FROM iam_mfa_devices WHERE account = $1 AND user_name = $2",
                "DELETE FROM iam_login_profiles WHERE account = $1 AND user_name = $2",
                "UPDATE iam_virtual_mfa SET user_name = NULL, enabled_ms = NULL WHERE account = $1 AND user_name = $2",
            ] {
                sqlx::query(sql)
                    .bind(account)
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        sqlx::query(
            "DELETE FROM iam_inline_policies WHERE account = $1 AND principal_kind = $2 AND principal = $3",
        )
        .bind(account)
        .bind(kind.as_str())
        .bind(name)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM iam_attachments WHERE account = $1 AND principal_kind = $2 AND principal = $3",
        )
        .bind(account)
        .bind(kind.as_str())
        .bind(name)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Stores a new access key of an existing user.
    pub async fn create_access_key(&self, k: &AccessKey) -> Result<()> {
        if !self
            .principal_exists(&k.account, PrincipalKind::User, &k.user_name)
            .await?
        {
            return Err(CatalogError::NotFound(k.user_name.clone()));
        }
        sqlx::query(
            "INSERT INTO iam_access_keys (access_key_id, account, user_name, secret_sealed, status, created_ms, last_used_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, NULL)",
        )
        .bind(&k.access_key_id)
        .bind(&k.account)
        .bind(&k.user_name)
        .bind(hex::encode(&k.secret_sealed))
        .bind(&k.status)
        .bind(k.created_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The access key `id`, in any account.
    pub async fn access_key(&self, id: &str) -> Result<Option<AccessKey>> {
        let row = sqlx::query("SELECT * FROM iam_access_keys WHERE access_key_id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(key_of).transpose()
    }

    /// The access keys of `account` (of `user` when given).
    pub async fn access_keys(&self, account: &str, user: Option<&str>) -> Result<Vec<AccessKey>> {
        let rows = sqlx::query(
            "SELECT * FROM iam_access_keys WHERE account = $1 AND ($2 IS NULL OR user_name = $2) ORDER BY created_ms, access_key_id",
        )
        .bind(account)
        .bind(user)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key_of).collect()
    }

    /// Sets a key `Active` or `Inactive`.
    pub async fn set_access_key_status(&self, account: &str, id: &str, status: &str) -> Result<()> {
        let r = sqlx::query(
            "UPDATE iam_access_keys SET status = $1 WHERE account = $2 AND access_key_id = $3",
        )
        .bind(status)
        .bind(account)
        .bind(id)
        .execute(&self.pool)
        .await?;
        crate::found(&r, id)
    }

    /// Deletes an access key.
    pub async fn delete_access_key(&self, account: &str, id: &str) -> Result<()> {
        let r =
            sqlx::query("DELETE FROM iam_access_keys WHERE account = $1 AND access_key_id = $2")
                .bind(account)
                .bind(id)
                .execute(&self.pool)
                .await?;
        crate::found(&r, id)
    }

    /// Records that `id` authenticated a request now (at most once a minute is written).
    pub async fn touch_access_key(&self, id: &str) -> Result<()> {
        let now = now_ms();
        sqlx::query(
            "UPDATE iam_access_keys SET last_used_ms = $1 WHERE access_key_id = $2 \
             AND (last_used_ms IS NULL OR last_used_ms < $3)",
        )
        .bind(now)
        .bind(id)
        .bind(now - 60_000)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Creates or replaces the policy `name`.
    pub async fn put_policy(&self, account: &str, name: &str, document: &str) -> Result<()> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO iam_policies (account, name, document, created_ms, updated_ms) VALUES ($1, $2, $3, $4, $4) \
             ON CONFLICT (account, name) DO UPDATE SET document = excluded.document, updated_ms = excluded.updated_ms",
        )
        .bind(account)
        .bind(name)
        .bind(document)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The policies of `account`.
    pub async fn policies(&self, account: &str) -> Result<Vec<PolicyDoc>> {
        let rows =
            sqlx::query("SELECT name, document FROM iam_policies WHERE account = $1 ORDER BY name")
                .bind(account)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok(PolicyDoc {
                    account: account.into(),
                    name: r.try_get(0)?,
                    document: r.try_get(1)?,
                })
            })
            .collect()
    }

    /// Deletes a policy that nothing has attached.
    pub async fn delete_policy(&self, account: &str, name: &str) -> Result<()> {
        let used =
            sqlx::query("SELECT principal FROM iam_attachments WHERE account = $1 AND policy = $2")
                .bind(account)
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        if let Some(r) = used {
            let p: String = r.try_get(0)?;
            return Err(conflict(&format!(
                "the policy {name} is attached to {p}; detach it first"
            )));
        }
        let r = sqlx::query("DELETE FROM iam_policies WHERE account = $1 AND name = $2")
            .bind(account)
            .bind(name)
            .execute(&self.pool)
            .await?;
        crate::found(&r, name)
    }

    /// Attaches the policy `policy` to a principal (both must exist).
    pub async fn attach_policy(
        &self,
        account: &str,
        kind: PrincipalKind,
        principal: &str,
        policy: &str,
    ) -> Result<()> {
        if !self.principal_exists(account, kind, principal).await? {
            return Err(CatalogError::NotFound(principal.into()));
        }
        let exists = sqlx::query("SELECT 1 FROM iam_policies WHERE account = $1 AND name = $2")
            .bind(account)
            .bind(policy)
            .fetch_optional(&self.pool)
            .await?;
        if exists.is_none() {
            return Err(CatalogError::NotFound(policy.into()));
        }
        sqlx::query(
            "INSERT INTO iam_attachments (account, principal_kind, principal, policy) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(account)
        .bind(kind.as_str())
        .bind(principal)
        .bind(policy)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Detaches a policy.
    pub async fn detach_policy(
        &self,
        account: &str,
        kind: PrincipalKind,
        principal: &str,
        policy: &str,
    ) -> Result<()> {
        let r = sqlx::query(
            "DELETE FROM iam_attachments WHERE account = $1 AND principal_kind = $2 AND principal = $3 AND policy = $4",
        )
        .bind(account)
        .bind(kind.as_str())
        .bind(principal)
        .bind(policy)
        .execute(&self.pool)
        .await?;
        crate::found(&r, policy)
    }

    /// The policy documents attached to a principal.
    pub async fn attached_policies(
        &self,
        account: &str,
        kind: PrincipalKind,
        principal: &str,
    ) -> Result<Vec<PolicyDoc>> {
        let rows = sqlx::query(
            "SELECT p.name, p.document FROM iam_attachments a JOIN iam_policies p \
             ON p.account = a.account AND p.name = a.policy \
             WHERE a.account = $1 AND a.principal_kind = $2 AND a.principal = $3 ORDER BY p.name",
        )
        .bind(account)
        .bind(kind.as_str())
        .bind(principal)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PolicyDoc {
                    account: account.into(),
                    name: r.try_get(0)?,
                    document: r.try_get(1)?,
                })
            })
            .collect()
    }
}
