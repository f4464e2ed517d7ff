//! Console passwords: a user's login profile (the password's hash, never the password, and
//! whether it must be changed), and failed sign-ins counted in a row with the same back-off
//! and lockout as MFA codes ([`Catalog::login_attempt`]). Hashing belongs to the API.

use sqlx::Row;

use crate::iam::{Counted, MfaAttempt};
use crate::{Catalog, Result, now_ms};

/// A user's login profile.
#[derive(Clone, PartialEq, Eq)]
pub struct LoginProfile {
    /// The user.
    pub user_name: String,
    /// The password's hash (PHC string).
    pub password_hash: String,
    /// The user must set a new password at the next sign-in.
    pub reset_required: bool,
    /// Creation (ms).
    pub created_ms: i64,
    /// Failed sign-ins in a row.
    pub failures: i64,
    /// No password is checked before this time (ms).
    pub next_attempt_ms: i64,
}

impl std::fmt::Debug for LoginProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginProfile")
            .field("user_name", &self.user_name)
            .field("reset_required", &self.reset_required)
            .field("failures", &self.failures)
            .finish_non_exhaustive()
    }
}

impl Catalog {
    /// Creates `user`'s login profile; false when the user already has one.
    pub async fn create_login_profile(
        &self,
        account: &str,
        user: &str,
        password_hash: &str,
        reset_required: bool,
    ) -> Result<bool> {
        let r = sqlx::query(
            "INSERT INTO iam_login_profiles (account, user_name, password_hash, reset_required, created_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(account)
        .bind(user)
        .bind(password_hash)
        .bind(i64::from(reset_required))
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Changes `user`'s password (when given) and whether it must be reset; a new password
    /// also clears the failed sign-ins. False when the user has no login profile.
    pub async fn update_login_profile(
        &self,
        account: &str,
        user: &str,
        password_hash: Option<&str>,
        reset_required: Option<bool>,
    ) -> Result<bool> {
        // One statement, so that a failed sign-in counted meanwhile is not written over.
        let r = sqlx::query(
            "UPDATE iam_login_profiles SET password_hash = COALESCE($1, password_hash), \
             reset_required = COALESCE($2, reset_required), \
             failures = CASE WHEN $3 = 1 THEN 0 ELSE failures END, \
             next_attempt_ms = CASE WHEN $3 = 1 THEN 0 ELSE next_attempt_ms END \
             WHERE account = $4 AND user_name = $5",
        )
        .bind(password_hash)
        .bind(reset_required.map(i64::from))
        .bind(i64::from(password_hash.is_some()))
        .bind(account)
        .bind(user)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// `user`'s login profile.
    pub async fn login_profile(&self, account: &str, user: &str) -> Result<Option<LoginProfile>> {
        let row = sqlx::query(
            "SELECT user_name, password_hash, reset_required, created_ms, failures, next_attempt_ms \
             FROM iam_login_profiles WHERE account = $1 AND user_name = $2",
        )
        .bind(account)
        .bind(user)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(LoginProfile {
                user_name: r.try_get(0)?,
                password_hash: r.try_get(1)?,
                reset_required: r.try_get::<i64, _>(2)? != 0,
                created_ms: r.try_get(3)?,
                failures: r.try_get(4)?,
                next_attempt_ms: r.try_get(5)?,
            })
        })
        .transpose()
    }

    /// Deletes `user`'s login profile; false when there was none.
    pub async fn delete_login_profile(&self, account: &str, user: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM iam_login_profiles WHERE account = $1 AND user_name = $2")
            .bind(account)
            .bind(user)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Asks to check a password of `user` at `now_ms`, counted and backed off like an MFA
    /// code ([`Catalog::mfa_attempt`]): every node shares the count, an attempt during the
    /// back-off is refused unchecked, and the attempt is counted as a failure until
    /// [`Catalog::login_success`] clears it. `NoDevice`: the user has no login profile.
    pub async fn login_attempt(
        &self,
        account: &str,
        user: &str,
        now_ms: i64,
        delay_ms: impl Fn(i64) -> i64,
    ) -> Result<MfaAttempt> {
        self.counted_attempt(Counted::LoginProfile, account, user, now_ms, delay_ms)
            .await
    }

    /// A right password: the failed sign-ins are cleared.
    pub async fn login_success(&self, account: &str, user: &str) -> Result<()> {
        sqlx::query(
            "UPDATE iam_login_profiles SET failures = 0, next_attempt_ms = 0 \
             WHERE account = $1 AND user_name = $2",
        )
        .bind(account)
        .bind(user)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Ends temporary credentials at once (a console sign-out); false when unknown.
    pub async fn delete_session(&self, access_key_id: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM iam_sessions WHERE access_key_id = $1")
            .bind(access_key_id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn profiles_count_failures_and_a_new_password_clears_them() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(&format!("sqlite://{}", dir.path().join("c.db").display()))
            .await
            .unwrap();
        profiles(&c).await;
    }

    #[tokio::test]
    async fn profiles_on_postgres() {
        let pg = crate::pgtest::TempPostgres::start().expect("start PostgreSQL for the test");
        profiles(&Catalog::open(&pg.url).await.unwrap()).await;
    }

    async fn profiles(c: &Catalog) {
        let a = "111122223333";
        assert_eq!(
            c.login_attempt(a, "alice", 0, |_| 1000).await.unwrap(),
            MfaAttempt::NoDevice
        );
        assert!(
            c.create_login_profile(a, "alice", "h1", true)
                .await
                .unwrap()
        );
        assert!(
            !c.create_login_profile(a, "alice", "h2", false)
                .await
                .unwrap()
        );
        assert_eq!(
            c.login_attempt(a, "alice", 0, |f| f * 1000).await.unwrap(),
            MfaAttempt::Go { failures: 1 }
        );
        assert_eq!(
            c.login_attempt(a, "alice", 500, |f| f * 1000)
                .await
                .unwrap(),
            MfaAttempt::Wait {
                until_ms: 1000,
                failures: 1
            },
            "refused unchecked and not counted during the back-off"
        );
        assert_eq!(
            c.login_attempt(a, "alice", 1000, |f| f * 1000)
                .await
                .unwrap(),
            MfaAttempt::Go { failures: 2 }
        );
        assert!(
            c.update_login_profile(a, "alice", None, Some(false))
                .await
                .unwrap()
        );
        let p = c.login_profile(a, "alice").await.unwrap().unwrap();
        assert_eq!(
            (p.failures, p.reset_required, p.password_hash.as_str()),
            (2, false, "h1")
        );
        assert!(
            c.update_login_profile(a, "alice", Some("h3"), None)
                .await
                .unwrap()
        );
        let p = c.login_profile(a, "alice").await.unwrap().unwrap();
        assert_eq!(
            (p.failures, p.next_attempt_ms, p.password_hash.as_str()),
            (0, 0, "h3")
        );
        assert!(
            !format!("{p:?}").contains("h3"),
            "the hash is not in debug output"
        );
        assert!(c.delete_login_profile(a, "alice").await.unwrap());
        assert!(c.login_profile(a, "alice").await.unwrap().is_none());
        assert!(
            !c.update_login_profile(a, "alice", None, None)
                .await
                .unwrap()
        );
    }
}
