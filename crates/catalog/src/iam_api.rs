//! What the IAM API adds to identities: roles with trust policies, inline policies of users
//! and roles, managed policies looked up one by one, and virtual MFA devices known by their
//! serial number (made, then enabled for a user with two codes, deactivated, deleted).

use sqlx::Row;

use crate::iam::PrincipalKind;
use crate::{Catalog, CatalogError, Result, now_ms};

/// A role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    /// Name.
    pub name: String,
    /// Creation (ms).
    pub created_ms: i64,
    /// Who may assume it (a trust policy); `None`: nobody (a service role such as `vmimport`).
    pub trust_policy: Option<String>,
    /// Description.
    pub description: String,
    /// Longest session AssumeRole gives, in seconds.
    pub max_session: i64,
}

/// A managed policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Managed {
    /// Name.
    pub name: String,
    /// The document.
    pub document: String,
    /// Creation (ms).
    pub created_ms: i64,
    /// Last change (ms).
    pub updated_ms: i64,
    /// Principals it is attached to.
    pub attachments: i64,
}

/// A virtual MFA device.
#[derive(Clone, PartialEq, Eq)]
pub struct VirtualMfa {
    /// `arn:aws:iam::ACCOUNT:mfa/NAME`.
    pub serial: String,
    /// Its secret, sealed by the caller (bound to the serial number).
    pub secret_sealed: Vec<u8>,
    /// The user it is enabled for.
    pub user_name: Option<String>,
    /// Creation (ms).
    pub created_ms: i64,
    /// When it was enabled (ms).
    pub enabled_ms: Option<i64>,
}

impl std::fmt::Debug for VirtualMfa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtualMfa")
            .field("serial", &self.serial)
            .field("user_name", &self.user_name)
            .finish_non_exhaustive()
    }
}

fn kind_str(k: PrincipalKind) -> &'static str {
    match k {
        PrincipalKind::User => "user",
        PrincipalKind::Role => "role",
    }
}

fn role_of(r: &sqlx::any::AnyRow) -> Result<Role> {
    Ok(Role {
        name: r.try_get("name")?,
        created_ms: r.try_get("created_ms")?,
        trust_policy: r.try_get("trust_policy")?,
        description: r.try_get("description")?,
        max_session: r.try_get("max_session")?,
    })
}

fn vmfa_of(r: &sqlx::any::AnyRow) -> Result<VirtualMfa> {
    let sealed: String = r.try_get("secret_sealed")?;
    Ok(VirtualMfa {
        serial: r.try_get("serial")?,
        secret_sealed: hex::decode(&sealed)
            .map_err(|e| CatalogError::Corrupt("virtual mfa device".into(), e.to_string()))?,
        user_name: r.try_get("user_name")?,
        created_ms: r.try_get("created_ms")?,
        enabled_ms: r.try_get("enabled_ms")?,
    })
}

impl Catalog {
    /// Creates a role with its trust policy, description and longest session.
    pub async fn create_role_with(&self, account: &str, r: &Role) -> Result<()> {
        let done = sqlx::query(
            "INSERT INTO iam_roles (account, name, created_ms, trust_policy, description, max_session) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(account)
        .bind(&r.name)
        .bind(now_ms())
        .bind(r.trust_policy.as_deref())
        .bind(&r.description)
        .bind(r.max_session)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(CatalogError::Conflict(format!(
                "the role {} already exists",
                r.name
            )));
        }
        Ok(())
    }

    /// The role `name`.
    pub async fn role(&self, account: &str, name: &str) -> Result<Option<Role>> {
        let row = sqlx::query("SELECT * FROM iam_roles WHERE account = $1 AND name = $2")
            .bind(account)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(role_of).transpose()
    }

    /// Every role of `account`, by name.
    pub async fn roles_full(&self, account: &str) -> Result<Vec<Role>> {
        let rows = sqlx::query("SELECT * FROM iam_roles WHERE account = $1 ORDER BY name")
            .bind(account)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(role_of).collect()
    }

    /// Replaces a role's trust policy.
    pub async fn set_trust_policy(&self, account: &str, name: &str, doc: &str) -> Result<()> {
        let r =
            sqlx::query("UPDATE iam_roles SET trust_policy = $1 WHERE account = $2 AND name = $3")
                .bind(doc)
                .bind(account)
                .bind(name)
                .execute(&self.pool)
                .await?;
        crate::found(&r, name)
    }

    /// Creates or replaces the inline policy `name` of a principal (which must exist).
    pub async fn put_inline_policy(
        &self,
        account: &str,
        kind: PrincipalKind,
        principal: &str,
        name: &str,
        doc: &str,
    ) -> Result<()> {
        if !self.principal_exists(account, kind, principal).await? {
            return Err(CatalogError::NotFound(principal.into()));
        }
        sqlx::query(
            "INSERT INTO iam_inline_policies (account, principal_kind, principal, name, document) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (account, principal_kind, principal, name) DO UPDATE SET document = excluded.document",
        )
        .bind(account)
        .bind(kind_str(kind))
        .bind(principal)
        .bind(name)
        .bind(doc)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The inline policies of a principal: (name, document), by name.
    pub async fn inline_policies(
        &self,
        account: &str,
        kind: PrincipalKind,
        principal: &str,
    ) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT name, document FROM iam_inline_policies WHERE account = $1 AND principal_kind = $2 AND principal = $3 ORDER BY name",
        )
        .bind(account)
        .bind(kind_str(kind))
        .bind(principal)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Deletes an inline policy.
    pub async fn delete_inline_policy(
        &self,
        account: &str,
        kind: PrincipalKind,
        principal: &str,
        name: &str,
    ) -> Result<()> {
        let r = sqlx::query(
            "DELETE FROM iam_inline_policies WHERE account = $1 AND principal_kind = $2 AND principal = $3 AND name = $4",
        )
        .bind(account)
        .bind(kind_str(kind))
        .bind(principal)
        .bind(name)
        .execute(&self.pool)
        .await?;
        crate::found(&r, name)
    }

    /// Creates the managed policy `name`; a conflict when it exists.
    pub async fn create_policy(&self, account: &str, name: &str, doc: &str) -> Result<()> {
        let now = now_ms();
        let r = sqlx::query(
            "INSERT INTO iam_policies (account, name, document, created_ms, updated_ms) VALUES ($1, $2, $3, $4, $4) ON CONFLICT DO NOTHING",
        )
        .bind(account)
        .bind(name)
        .bind(doc)
        .bind(now)
        .execute(&self.pool)
        .await?;
        if r.rows_affected() == 0 {
            return Err(CatalogError::Conflict(format!(
                "A policy called {name} already exists. Duplicate names are not allowed."
            )));
        }
        Ok(())
    }

    /// The managed policy `name`, with its attachment count.
    pub async fn managed_policy(&self, account: &str, name: &str) -> Result<Option<Managed>> {
        let row = sqlx::query(
            "SELECT p.name, p.document, p.created_ms, p.updated_ms, \
             (SELECT COUNT(*) FROM iam_attachments a WHERE a.account = p.account AND a.policy = p.name) AS n \
             FROM iam_policies p WHERE p.account = $1 AND p.name = $2",
        )
        .bind(account)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(Managed {
                name: r.try_get(0)?,
                document: r.try_get(1)?,
                created_ms: r.try_get(2)?,
                updated_ms: r.try_get(3)?,
                attachments: r.try_get(4)?,
            })
        })
        .transpose()
    }

    /// Every managed policy of `account`, by name.
    pub async fn managed_policies(&self, account: &str) -> Result<Vec<Managed>> {
        let names: Vec<String> = self
            .policies(account)
            .await?
            .into_iter()
            .map(|p| p.name)
            .collect();
        let mut out = Vec::new();
        for n in names {
            if let Some(m) = self.managed_policy(account, &n).await? {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// Stores a new, unassigned virtual MFA device.
    pub async fn create_virtual_mfa(
        &self,
        account: &str,
        serial: &str,
        sealed: &[u8],
    ) -> Result<()> {
        let r = sqlx::query(
            "INSERT INTO iam_virtual_mfa (account, serial, secret_sealed, user_name, created_ms, enabled_ms) \
             VALUES ($1, $2, $3, NULL, $4, NULL) ON CONFLICT DO NOTHING",
        )
        .bind(account)
        .bind(serial)
        .bind(hex::encode(sealed))
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        if r.rows_affected() == 0 {
            return Err(CatalogError::Conflict(format!(
                "the MFA device {serial} already exists"
            )));
        }
        Ok(())
    }

    /// The virtual MFA device `serial`.
    pub async fn virtual_mfa(&self, account: &str, serial: &str) -> Result<Option<VirtualMfa>> {
        let row = sqlx::query("SELECT * FROM iam_virtual_mfa WHERE account = $1 AND serial = $2")
            .bind(account)
            .bind(serial)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(vmfa_of).transpose()
    }

    /// Every virtual MFA device of `account`, by serial number.
    pub async fn virtual_mfas(&self, account: &str) -> Result<Vec<VirtualMfa>> {
        let rows = sqlx::query("SELECT * FROM iam_virtual_mfa WHERE account = $1 ORDER BY serial")
            .bind(account)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(vmfa_of).collect()
    }

    /// The serial number of `user`'s enabled device (`None`: no device; `Some(None)`: one
    /// enrolled before serial numbers were kept, `arn:aws:iam::ACCOUNT:mfa/USER`).
    pub async fn mfa_serial(&self, account: &str, user: &str) -> Result<Option<Option<String>>> {
        let row =
            sqlx::query("SELECT serial FROM iam_mfa_devices WHERE account = $1 AND user_name = $2")
                .bind(account)
                .bind(user)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| Ok(r.try_get(0)?)).transpose()
    }

    /// Enables the virtual device `serial` (made now when `sealed` is given, else as stored)
    /// for `user`, whose previous device, if any, is deactivated; the codes up to `step`
    /// are spent. In one transaction.
    pub async fn enrol_mfa(
        &self,
        account: &str,
        user: &str,
        serial: &str,
        sealed: Option<&[u8]>,
        step: i64,
    ) -> Result<()> {
        if !self
            .principal_exists(account, PrincipalKind::User, user)
            .await?
        {
            return Err(CatalogError::NotFound(user.into()));
        }
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM iam_mfa_devices WHERE account = $1 AND user_name = $2")
            .bind(account)
            .bind(user)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE iam_virtual_mfa SET user_name = NULL, enabled_ms = NULL WHERE account = $1 AND user_name = $2",
        )
        .bind(account)
        .bind(user)
        .execute(&mut *tx)
        .await?;
        if let Some(s) = sealed {
            sqlx::query(
                "INSERT INTO iam_virtual_mfa (account, serial, secret_sealed, user_name, created_ms, enabled_ms) \
                 VALUES ($1, $2, $3, NULL, $4, NULL) ON CONFLICT (account, serial) DO UPDATE SET \
                 secret_sealed = excluded.secret_sealed, user_name = NULL, created_ms = excluded.created_ms",
            )
            .bind(account)
            .bind(serial)
            .bind(hex::encode(s))
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        let row = sqlx::query(
            "SELECT secret_sealed, user_name FROM iam_virtual_mfa WHERE account = $1 AND serial = $2",
        )
        .bind(account)
        .bind(serial)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(CatalogError::NotFound(serial.into()));
        };
        let (secret, owner): (String, Option<String>) = (row.try_get(0)?, row.try_get(1)?);
        if let Some(o) = owner {
            return Err(CatalogError::Conflict(format!(
                "the MFA device {serial} is enabled for the user {o}"
            )));
        }
        sqlx::query(
            "UPDATE iam_virtual_mfa SET user_name = $1, enabled_ms = $2 WHERE account = $3 AND serial = $4",
        )
        .bind(user)
        .bind(now)
        .bind(account)
        .bind(serial)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO iam_mfa_devices (account, user_name, secret_sealed, last_step, created_ms, serial) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(account)
        .bind(user)
        .bind(secret)
        .bind(step)
        .bind(now)
        .bind(serial)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deactivates `user`'s device `serial` (it stays, unassigned, until deleted).
    pub async fn deactivate_mfa(&self, account: &str, user: &str, serial: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "UPDATE iam_virtual_mfa SET user_name = NULL, enabled_ms = NULL WHERE account = $1 AND user_name = $2 AND serial = $3",
        )
        .bind(account)
        .bind(user)
        .bind(serial)
        .execute(&mut *tx)
        .await?;
        crate::found(&r, serial)?;
        sqlx::query("DELETE FROM iam_mfa_devices WHERE account = $1 AND user_name = $2")
            .bind(account)
            .bind(user)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes an unassigned virtual MFA device.
    pub async fn delete_virtual_mfa(&self, account: &str, serial: &str) -> Result<()> {
        match self.virtual_mfa(account, serial).await? {
            None => Err(CatalogError::NotFound(serial.into())),
            Some(VirtualMfa {
                user_name: Some(u), ..
            }) => Err(CatalogError::Conflict(format!(
                "the MFA device {serial} is enabled for the user {u}; deactivate it first"
            ))),
            Some(_) => {
                let r = sqlx::query(
                    "DELETE FROM iam_virtual_mfa WHERE account = $1 AND serial = $2 AND user_name IS NULL",
                )
                .bind(account)
                .bind(serial)
                .execute(&self.pool)
                .await?;
                crate::found(&r, serial)
            }
        }
    }
}
