//! # catalog — vmie's durable state
//!
//! Tasks (with their event history, leases and idempotency tokens), snapshots, images,
//! per-account settings and identities ([`iam`]: users, access keys, policies, roles), behind one interface over two real backends:
//!
//! - **SQLite** (the embedded default): one file, WAL journal, `synchronous=FULL` so a commit
//!   survives a power cut, a busy timeout so concurrent workers wait rather than fail;
//! - **PostgreSQL** (scale-out): any number of vmie processes share one database; a task is
//!   claimed with `FOR UPDATE SKIP LOCKED`, so two workers never take the same task.
//!
//! The same SQL runs on both (portable types, `$n` placeholders); the schema is migrated on
//! open, in a transaction per step, recorded in `schema_migrations`.
//!
//! Every state change of a task is one statement or one transaction: a task, image or
//! snapshot row is visible complete or not at all.

pub mod iam;
pub mod iam_api;
pub mod login;
pub mod pgtest;
mod schema;

use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, AssertSqlSafe, Row};

/// Errors of the catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The database refused or failed.
    #[error("catalog database: {0}")]
    Db(#[from] sqlx::Error),
    /// A stored JSON field did not parse.
    #[error("catalog record {0}: {1}")]
    Corrupt(String, String),
    /// No such task, image or snapshot (in this account).
    #[error("{0} does not exist")]
    NotFound(String),
    /// A client token was used before with other parameters. The token itself is not in
    /// the message: it is the caller's free text, and messages reach logs.
    #[error(
        "the client token was already used for {action} with different parameters (task {task})"
    )]
    IdempotentParameterMismatch {
        /// The action.
        action: String,
        /// The task it made.
        task: String,
    },
    /// The database URL names no supported backend.
    #[error("catalog URL must start with sqlite:// or postgres:// (got {0})")]
    BadUrl(String),
    /// The request conflicts with the current state (e.g. cancelling an ended task).
    #[error("{0}")]
    Conflict(String),
}

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, CatalogError>;

/// Which database holds the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// Kinds of task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TaskKind {
    /// `import-ami-…`
    ImportImage,
    /// `import-snap-…`
    ImportSnapshot,
    /// `export-ami-…`
    ExportImage,
    /// `copy-ami-…`: CopyImage (the image is visible, `pending`, from the request on).
    CopyImage,
    /// `copy-snap-…`: CopySnapshot (likewise).
    CopySnapshot,
}

impl TaskKind {
    /// Name stored in the catalog.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::ImportImage => "import-image",
            TaskKind::ImportSnapshot => "import-snapshot",
            TaskKind::ExportImage => "export-image",
            TaskKind::CopyImage => "copy-image",
            TaskKind::CopySnapshot => "copy-snapshot",
        }
    }

    /// Id prefix.
    #[must_use]
    pub fn prefix(self) -> &'static str {
        match self {
            TaskKind::ImportImage => "import-ami-",
            TaskKind::ImportSnapshot => "import-snap-",
            TaskKind::ExportImage => "export-ami-",
            TaskKind::CopyImage => "copy-ami-",
            TaskKind::CopySnapshot => "copy-snap-",
        }
    }

    fn parse(s: &str) -> Result<TaskKind> {
        Ok(match s {
            "import-image" => TaskKind::ImportImage,
            "import-snapshot" => TaskKind::ImportSnapshot,
            "export-image" => TaskKind::ExportImage,
            "copy-image" => TaskKind::CopyImage,
            "copy-snapshot" => TaskKind::CopySnapshot,
            o => return Err(CatalogError::Corrupt("task kind".into(), o.into())),
        })
    }
}

/// Task `Status` values, as the EC2 service has them.
pub mod status {
    /// Waiting or running.
    pub const ACTIVE: &str = "active";
    /// Finished with its result.
    pub const COMPLETED: &str = "completed";
    /// Being cancelled.
    pub const DELETING: &str = "deleting";
    /// Cancelled or failed (the reason is in the status message).
    pub const DELETED: &str = "deleted";
}

/// A key/value tag.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tag {
    /// Key.
    pub key: String,
    /// Value.
    pub value: String,
}

/// A task as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// `import-ami-…`, `import-snap-…` or `export-ami-…`.
    pub id: String,
    /// Owning account.
    pub account: String,
    /// Kind.
    pub kind: TaskKind,
    /// `active`, `completed`, `deleting`, `deleted`.
    pub status: String,
    /// Stage or reason.
    pub status_message: String,
    /// 0–100; only grows.
    pub progress: i64,
    /// The request, as JSON (the engine's type).
    pub request: String,
    /// The result, as JSON, once completed.
    pub result: Option<String>,
    /// Tags.
    pub tags: Vec<Tag>,
    /// Creation time (ms).
    pub created_ms: i64,
    /// Last change (ms).
    pub updated_ms: i64,
    /// End time (ms).
    pub ended_ms: Option<i64>,
    /// Worker holding the lease.
    pub lease_owner: Option<String>,
    /// Lease expiry (ms).
    pub lease_until_ms: Option<i64>,
    /// Cancellation was asked for.
    pub cancel_requested: bool,
    /// Times a worker has claimed it.
    pub attempts: i64,
    /// Last durable checkpoint (engine's JSON).
    pub checkpoint: Option<String>,
    /// What of the request must not be stored in clear (a presigned URL's query string),
    /// sealed by the engine; dropped in the transaction that ends the task.
    pub sealed: Option<String>,
}

impl Task {
    /// True once the task has ended.
    #[must_use]
    pub fn ended(&self) -> bool {
        self.status == status::COMPLETED || self.status == status::DELETED
    }
}

/// A new task.
#[derive(Debug, Clone)]
pub struct NewTask {
    /// Id (see [`new_id`]).
    pub id: String,
    /// Account.
    pub account: String,
    /// Kind.
    pub kind: TaskKind,
    /// First status message.
    pub status_message: String,
    /// The request as JSON; hashed for idempotency.
    pub request: String,
    /// Tags.
    pub tags: Vec<Tag>,
    /// `ClientToken`, with the hash of the request as the caller gave it.
    pub client_token: Option<ClientToken>,
    /// See [`Task::sealed`]; not part of the idempotency hash (it is sealed with a fresh
    /// nonce each time): the hash is of the request as the caller gave it.
    pub sealed: Option<String>,
}

/// An idempotency token and what it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientToken {
    /// The token the caller gave.
    pub token: String,
    /// [`token_hash`] of the request as the caller gave it.
    pub params_hash: String,
}

/// The hash a client token is bound to: the request as the caller gave it (before the
/// service resolved defaults into it) and its tags.
#[must_use]
pub fn token_hash(request: &str, tags: &[Tag]) -> String {
    hash(&format!("{request}\n{}", tags_json(tags)))
}

/// A snapshot row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// `snap-…`
    pub id: String,
    /// Account.
    pub account: String,
    /// Task that made it.
    pub task_id: Option<String>,
    /// Bytes.
    pub volume_size: i64,
    /// Encrypted (every snapshot is encrypted at rest, under `kms_key_id`).
    pub encrypted: bool,
    /// KMS key.
    pub kms_key_id: Option<String>,
    /// `pending`, `completed` or `error`.
    pub state: String,
    /// Description.
    pub description: String,
    /// Tags.
    pub tags: Vec<Tag>,
    /// Creation (ms).
    pub created_ms: i64,
    /// What else is known of it.
    pub extra: SnapshotExtra,
}

/// Details of a snapshot beyond its columns (kept as JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SnapshotExtra {
    /// The snapshot it was copied from (CopySnapshot).
    pub source_snapshot_id: Option<String>,
}

/// Details of an image beyond its columns (kept as JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ImageExtra {
    /// `UsageOperation` (`RunInstances`, `RunInstances:0002` for Windows, …).
    pub usage_operation: Option<String>,
    /// `LicenseType` of the import (`AWS`, `BYOL`).
    pub license_type: Option<String>,
    /// When the image is deprecated (ms), once deprecation is enabled.
    pub deprecation_ms: Option<i64>,
    /// The image it was copied from (CopyImage), and that image's region.
    pub source_image_id: Option<String>,
    /// The region of `source_image_id`.
    pub source_region: Option<String>,
}

/// A block device mapping of an image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BlockDevice {
    /// `/dev/sda1`, `/dev/sdb`, …
    pub device_name: String,
    /// Snapshot.
    pub snapshot_id: String,
    /// Size in GiB (rounded up).
    pub volume_size_gib: i64,
}

/// An image row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// `ami-…`
    pub id: String,
    /// Account.
    pub account: String,
    /// Task that made it.
    pub task_id: Option<String>,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// `x86_64`, `arm64`, `i386`.
    pub architecture: String,
    /// `Linux/UNIX` or `Windows`.
    pub platform: String,
    /// `uefi`, `legacy-bios`, `uefi-preferred`.
    pub boot_mode: Option<String>,
    /// Disks.
    pub block_devices: Vec<BlockDevice>,
    /// Encrypted.
    pub encrypted: bool,
    /// KMS key.
    pub kms_key_id: Option<String>,
    /// `pending`, `available`, `failed` or `disabled`.
    pub state: String,
    /// Tags.
    pub tags: Vec<Tag>,
    /// Creation (ms).
    pub created_ms: i64,
    /// What else is known of it.
    pub extra: ImageExtra,
}

/// One entry of a task's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEvent {
    /// Order within the task.
    pub seq: i64,
    /// When (ms).
    pub at_ms: i64,
    /// Status.
    pub status: String,
    /// Message.
    pub message: String,
    /// Progress.
    pub progress: i64,
    /// Worker.
    pub worker: Option<String>,
}

/// Milliseconds since the Unix epoch.
#[must_use]
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A fresh id: `prefix` and 17 lowercase hex digits, as EC2 makes them.
#[must_use]
pub fn new_id(prefix: &str) -> String {
    let mut b = [0u8; 9];
    kms::aead::random(&mut b);
    let h = hex::encode(b);
    format!("{prefix}{}", &h[..17])
}

/// A deterministic id derived from `parts` (so a retried step makes the same row, never a
/// duplicate).
#[must_use]
pub fn derived_id(prefix: &str, parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    format!("{prefix}{}", &hex::encode(h.finalize())[..17])
}

fn hash(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn tags_json(t: &[Tag]) -> String {
    serde_json::to_string(t).unwrap_or_else(|_| "[]".into())
}

fn tags_of(s: &str, what: &str) -> Result<Vec<Tag>> {
    serde_json::from_str(s).map_err(|e| CatalogError::Corrupt(what.into(), e.to_string()))
}

const TASK_COLS: &str = "id, account, kind, status, status_message, progress, request, result, tags, \
     created_ms, updated_ms, ended_ms, lease_owner, lease_until_ms, cancel_requested, attempts, checkpoint, sealed";

fn task_of(r: &AnyRow) -> Result<Task> {
    let id: String = r.try_get("id")?;
    Ok(Task {
        kind: TaskKind::parse(&r.try_get::<String, _>("kind")?)?,
        account: r.try_get("account")?,
        status: r.try_get("status")?,
        status_message: r.try_get("status_message")?,
        progress: r.try_get("progress")?,
        request: r.try_get("request")?,
        result: r.try_get("result")?,
        tags: tags_of(&r.try_get::<String, _>("tags")?, &id)?,
        created_ms: r.try_get("created_ms")?,
        updated_ms: r.try_get("updated_ms")?,
        ended_ms: r.try_get("ended_ms")?,
        lease_owner: r.try_get("lease_owner")?,
        lease_until_ms: r.try_get("lease_until_ms")?,
        cancel_requested: r.try_get::<i64, _>("cancel_requested")? != 0,
        attempts: r.try_get("attempts")?,
        checkpoint: r.try_get("checkpoint")?,
        sealed: r.try_get("sealed")?,
        id,
    })
}

fn snapshot_of(r: &AnyRow) -> Result<Snapshot> {
    let id: String = r.try_get("id")?;
    Ok(Snapshot {
        account: r.try_get("account")?,
        task_id: r.try_get("task_id")?,
        volume_size: r.try_get("volume_size")?,
        encrypted: r.try_get::<i64, _>("encrypted")? != 0,
        kms_key_id: r.try_get("kms_key_id")?,
        state: r.try_get("state")?,
        description: r.try_get("description")?,
        tags: tags_of(&r.try_get::<String, _>("tags")?, &id)?,
        created_ms: r.try_get("created_ms")?,
        extra: extra_of(&r.try_get::<String, _>("extra")?, &id)?,
        id,
    })
}

fn extra_of<T: serde::de::DeserializeOwned>(json: &str, id: &str) -> Result<T> {
    serde_json::from_str(json).map_err(|e| CatalogError::Corrupt(id.to_string(), e.to_string()))
}

fn extra_json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "{}".into())
}

fn image_of(r: &AnyRow) -> Result<Image> {
    let id: String = r.try_get("id")?;
    let bd: String = r.try_get("block_devices")?;
    Ok(Image {
        account: r.try_get("account")?,
        task_id: r.try_get("task_id")?,
        name: r.try_get("name")?,
        description: r.try_get("description")?,
        architecture: r.try_get("architecture")?,
        platform: r.try_get("platform")?,
        boot_mode: r.try_get("boot_mode")?,
        block_devices: serde_json::from_str(&bd)
            .map_err(|e| CatalogError::Corrupt(id.clone(), e.to_string()))?,
        encrypted: r.try_get::<i64, _>("encrypted")? != 0,
        kms_key_id: r.try_get("kms_key_id")?,
        state: r.try_get("state")?,
        tags: tags_of(&r.try_get::<String, _>("tags")?, &id)?,
        created_ms: r.try_get("created_ms")?,
        extra: extra_of(&r.try_get::<String, _>("extra")?, &id)?,
        id,
    })
}

/// Makes the SQLite database file `path` (and its `-wal` and `-shm` files, which SQLite
/// creates with the database's permissions) readable by its owner only, whatever the umask:
/// created 0600 when new, and narrowed to 0600 when an older version left it readable by
/// others.
fn private_files(path: &str) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if path.is_empty() || path.starts_with(':') {
        return Ok(());
    }
    let db = std::path::Path::new(path);
    if !db.exists() {
        if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(db)
        {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
    }
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let p = std::path::PathBuf::from(format!("{path}{suffix}"));
        if let Ok(m) = std::fs::metadata(&p)
            && m.permissions().mode() & 0o077 != 0
        {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

/// The catalog.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub(crate) pool: AnyPool,
    backend: Backend,
}

/// A status change a worker reports.
#[derive(Debug, Clone)]
pub struct Progress<'a> {
    /// Status message (stage).
    pub message: &'a str,
    /// Percentage; a lower value than stored is ignored.
    pub progress: i64,
}

/// The PostgreSQL advisory lock key under which a catalog's first table is created
/// ("vmie" in ASCII).
const MIGRATION_LOCK: i64 = 0x766d_6965;

impl Catalog {
    /// Opens (creating if needed) the catalog at `url` — `sqlite://PATH` or
    /// `postgres://USER@HOST:PORT/DB` — and migrates its schema.
    pub async fn open(url: &str) -> Result<Catalog> {
        sqlx::any::install_default_drivers();
        let (backend, url, max) = if let Some(path) = url.strip_prefix("sqlite://") {
            private_files(path.split('?').next().unwrap_or(""))
                .map_err(|e| CatalogError::Db(sqlx::Error::Io(e)))?;
            let sep = if path.contains('?') { '&' } else { '?' };
            (Backend::Sqlite, format!("sqlite://{path}{sep}mode=rwc"), 4)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_string(), 8)
        } else {
            return Err(CatalogError::BadUrl(
                url.split('@').next_back().unwrap_or("").to_string(),
            ));
        };
        let opts = AnyPoolOptions::new().max_connections(max);
        let opts = if backend == Backend::Sqlite {
            opts.after_connect(|conn, _| {
                Box::pin(async move {
                    for p in [
                        "PRAGMA journal_mode=WAL",
                        "PRAGMA synchronous=FULL",
                        "PRAGMA busy_timeout=10000",
                        "PRAGMA foreign_keys=ON",
                        // Freed content (a scrubbed secret's old row) is overwritten.
                        "PRAGMA secure_delete=ON",
                    ] {
                        sqlx::query(p).execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            })
        } else {
            opts
        };
        let pool = opts.connect(&url).await?;
        let c = Catalog { pool, backend };
        c.migrate().await?;
        Ok(c)
    }

    /// The backend in use.
    #[must_use]
    pub fn backend(&self) -> Backend {
        self.backend
    }

    async fn migrate(&self) -> Result<()> {
        // Processes opening one new PostgreSQL catalog together would race on creating this
        // table (`CREATE TABLE IF NOT EXISTS` is not safe against a concurrent create): a
        // transaction-scoped advisory lock lets one create it while the others wait.
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(MIGRATION_LOCK)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL, applied_ms BIGINT NOT NULL)",
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        for (version, description, steps) in schema::MIGRATIONS {
            let mut tx = self.pool.begin().await?;
            if self.backend == Backend::Postgres {
                // One migrator at a time across processes.
                sqlx::query("LOCK TABLE schema_migrations IN EXCLUSIVE MODE")
                    .execute(&mut *tx)
                    .await?;
            }
            let done = sqlx::query("SELECT version FROM schema_migrations WHERE version = $1")
                .bind(*version)
                .fetch_optional(&mut *tx)
                .await?;
            if done.is_some() {
                continue;
            }
            for s in *steps {
                sqlx::query(*s).execute(&mut *tx).await?;
            }
            sqlx::query(
                "INSERT INTO schema_migrations (version, description, applied_ms) VALUES ($1, $2, $3)",
            )
            .bind(*version)
            .bind(*description)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
        Ok(())
    }

    /// Creates a task, or — when `client_token` was used before by this account for this
    /// kind with the same request — returns the task it made. The same token with another
    /// request is [`CatalogError::IdempotentParameterMismatch`].
    pub async fn create_task(&self, t: NewTask) -> Result<(Task, bool)> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        if let Some(ct) = &t.client_token {
            let ins = sqlx::query(
                "INSERT INTO client_tokens (account, action, token, params_hash, task_id, created_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            )
            .bind(&t.account)
            .bind(t.kind.as_str())
            .bind(&ct.token)
            .bind(&ct.params_hash)
            .bind(&t.id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if ins.rows_affected() == 0 {
                // Another request with this token won the race: answer as a replay.
                tx.rollback().await?;
                return match self.task_of_token(&t.account, t.kind, ct).await? {
                    Some(task) => Ok((task, false)),
                    None => Err(CatalogError::NotFound(ct.token.clone())),
                };
            }
        }
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO tasks ({TASK_COLS}) VALUES ($1, $2, $3, $4, $5, 0, $6, NULL, $7, $8, $8, NULL, NULL, NULL, 0, 0, NULL, $9)"
        )))
        .bind(&t.id)
        .bind(&t.account)
        .bind(t.kind.as_str())
        .bind(status::ACTIVE)
        .bind(&t.status_message)
        .bind(&t.request)
        .bind(tags_json(&t.tags))
        .bind(now)
        .bind(&t.sealed)
        .execute(&mut *tx)
        .await?;
        Self::event(&mut tx, &t.id, status::ACTIVE, &t.status_message, 0, None).await?;
        tx.commit().await?;
        Ok((self.task(&t.account, &t.id).await?, true))
    }

    /// The task `token` made for `account` and `kind`, if it was used before;
    /// [`CatalogError::IdempotentParameterMismatch`] when it was used with other parameters.
    pub async fn task_of_token(
        &self,
        account: &str,
        kind: TaskKind,
        token: &ClientToken,
    ) -> Result<Option<Task>> {
        let row = sqlx::query(
            "SELECT params_hash, task_id FROM client_tokens WHERE account = $1 AND action = $2 AND token = $3",
        )
        .bind(account)
        .bind(kind.as_str())
        .bind(&token.token)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let (ph, task): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        if ph != token.params_hash {
            return Err(CatalogError::IdempotentParameterMismatch {
                action: kind.as_str().into(),
                task,
            });
        }
        Ok(Some(self.task(account, &task).await?))
    }

    async fn event(
        tx: &mut Tx<'_>,
        id: &str,
        status: &str,
        message: &str,
        progress: i64,
        worker: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO task_events (task_id, seq, at_ms, status, message, progress, worker) \
             SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4, $5, $6 FROM task_events WHERE task_id = $1",
        )
        .bind(id)
        .bind(now_ms())
        .bind(status)
        .bind(message)
        .bind(progress)
        .bind(worker)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// The task `id` of `account`.
    pub async fn task(&self, account: &str, id: &str) -> Result<Task> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {TASK_COLS} FROM tasks WHERE id = $1 AND account = $2"
        )))
        .bind(id)
        .bind(account)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| CatalogError::NotFound(id.to_string()))?;
        task_of(&row)
    }

    /// The task `id`, whatever its account (maintenance: expiring what ended tasks left).
    pub async fn task_by_id(&self, id: &str) -> Result<Task> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {TASK_COLS} FROM tasks WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| CatalogError::NotFound(id.to_string()))?;
        task_of(&row)
    }

    /// Tasks of `account` and `kind`, active or ended after `ended_since_ms`, oldest first.
    pub async fn tasks(
        &self,
        account: &str,
        kind: TaskKind,
        ended_since_ms: i64,
    ) -> Result<Vec<Task>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {TASK_COLS} FROM tasks WHERE account = $1 AND kind = $2 \
             AND (ended_ms IS NULL OR ended_ms >= $3) ORDER BY created_ms, id"
        )))
        .bind(account)
        .bind(kind.as_str())
        .bind(ended_since_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(task_of).collect()
    }

    /// Every task of every account that has not ended (pending, active, being deleted).
    pub async fn unfinished_tasks(&self) -> Result<Vec<Task>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {TASK_COLS} FROM tasks WHERE ended_ms IS NULL ORDER BY created_ms, id"
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(task_of).collect()
    }

    /// Claims one runnable task for `worker` for `lease_ms`: an active or deleting task with
    /// no live lease. Returns it with `attempts` counted.
    pub async fn claim(&self, worker: &str, lease_ms: i64) -> Result<Option<Task>> {
        let now = now_ms();
        let lock = if self.backend == Backend::Postgres {
            " FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        let row = sqlx::query(AssertSqlSafe(format!(
            "UPDATE tasks SET lease_owner = $1, lease_until_ms = $2, attempts = attempts + 1, updated_ms = $3 \
             WHERE id = (SELECT id FROM tasks WHERE status IN ('active', 'deleting') \
                         AND (lease_until_ms IS NULL OR lease_until_ms < $3) \
                         ORDER BY created_ms LIMIT 1{lock}) \
             AND status IN ('active', 'deleting') AND (lease_until_ms IS NULL OR lease_until_ms < $3) \
             RETURNING {TASK_COLS}"
        )))
        .bind(worker)
        .bind(now + lease_ms)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(task_of).transpose()
    }

    /// Extends `worker`'s lease on `id`. Returns the task as it stands, or `None` when the
    /// lease was lost (expired and taken by another worker, or the task ended).
    pub async fn heartbeat(&self, id: &str, worker: &str, lease_ms: i64) -> Result<Option<Task>> {
        let now = now_ms();
        let row = sqlx::query(AssertSqlSafe(format!(
            "UPDATE tasks SET lease_until_ms = $1 WHERE id = $2 AND lease_owner = $3 \
             AND status IN ('active', 'deleting') RETURNING {TASK_COLS}"
        )))
        .bind(now + lease_ms)
        .bind(id)
        .bind(worker)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(task_of).transpose()
    }

    /// Records a new stage or progress of an active task held by `worker`. Returns false when
    /// the worker no longer holds it.
    pub async fn progress(&self, id: &str, worker: &str, p: Progress<'_>) -> Result<bool> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let prev = sqlx::query(
            "UPDATE tasks SET status_message = $1, \
             progress = CASE WHEN progress < $2 THEN $2 ELSE progress END, updated_ms = $3 \
             WHERE id = $4 AND lease_owner = $5 AND status = 'active' RETURNING progress",
        )
        .bind(p.message)
        .bind(p.progress)
        .bind(now)
        .bind(id)
        .bind(worker)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = prev else {
            tx.rollback().await?;
            return Ok(false);
        };
        let progress: i64 = row.try_get(0)?;
        Self::event(
            &mut tx,
            id,
            status::ACTIVE,
            p.message,
            progress,
            Some(worker),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Saves the engine's checkpoint for `id`.
    pub async fn checkpoint(&self, id: &str, worker: &str, checkpoint: &str) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE tasks SET checkpoint = $1, updated_ms = $2 WHERE id = $3 AND lease_owner = $4 AND status IN ('active', 'deleting')",
        )
        .bind(checkpoint)
        .bind(now_ms())
        .bind(id)
        .bind(worker)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Asks for `id` to be cancelled: an active task becomes `deleting` (its worker stops at
    /// the next check); an ended task cannot be cancelled.
    pub async fn request_cancel(&self, account: &str, id: &str) -> Result<Task> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "UPDATE tasks SET cancel_requested = 1, status = 'deleting', status_message = 'deleting', updated_ms = $1 \
             WHERE id = $2 AND account = $3 AND status = 'active' RETURNING progress",
        )
        .bind(now_ms())
        .bind(id)
        .bind(account)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = row {
            let p: i64 = row.try_get(0)?;
            Self::event(&mut tx, id, status::DELETING, "deleting", p, None).await?;
            tx.commit().await?;
        } else {
            tx.rollback().await?;
            let t = self.task(account, id).await?;
            if t.ended() {
                return Err(CatalogError::Conflict(format!(
                    "the task {id} has already ended ({})",
                    t.status
                )));
            }
        }
        self.task(account, id).await
    }

    /// Ends `id`: `completed` with its result, or `deleted` with the reason. Only the worker
    /// holding the lease (or anyone, when `worker` is `None`, for tasks nobody holds) may.
    pub async fn finish(
        &self,
        id: &str,
        worker: Option<&str>,
        final_status: &str,
        message: &str,
        result: Option<&str>,
    ) -> Result<bool> {
        self.finish_with(id, worker, final_status, message, result, &[], None)
            .await
    }

    /// Ends `id` as [`Catalog::finish`] does and, in the same transaction, records what it
    /// made: `snapshots` and `image` become visible exactly when the task ends, never before
    /// and never without it. Returns false (and records nothing) when `worker` no longer
    /// holds the task, or when it is to complete but a cancel came first.
    #[allow(clippy::too_many_arguments)]
    pub async fn finish_with(
        &self,
        id: &str,
        worker: Option<&str>,
        final_status: &str,
        message: &str,
        result: Option<&str>,
        snapshots: &[Snapshot],
        image: Option<&Image>,
    ) -> Result<bool> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "UPDATE tasks SET status = $1, status_message = $2, result = $3, ended_ms = $4, updated_ms = $4, \
             lease_owner = NULL, lease_until_ms = NULL, sealed = NULL, \
             progress = CASE WHEN $1 = 'completed' THEN 100 ELSE progress END \
             WHERE id = $5 AND (status = 'active' OR (status = 'deleting' AND $1 <> 'completed')) \
             AND (lease_owner = $6 OR $6 IS NULL) \
             RETURNING progress",
        )
        .bind(final_status)
        .bind(message)
        .bind(result)
        .bind(now)
        .bind(id)
        .bind(worker)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(false);
        };
        let p: i64 = row.try_get(0)?;
        for s in snapshots {
            insert_snapshot(&mut tx, s).await?;
        }
        if let Some(i) = image {
            insert_image(&mut tx, i).await?;
        }
        Self::event(&mut tx, id, final_status, message, p, worker).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Replaces the stored request of an ended task (to drop what must not outlive it, such
    /// as the signature of a presigned URL), and drops its sealed part.
    pub async fn redact_request(&self, id: &str, request: &str) -> Result<()> {
        sqlx::query(
            "UPDATE tasks SET request = $1, sealed = NULL WHERE id = $2 AND ended_ms IS NOT NULL",
        )
        .bind(request)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// After a scrub: on SQLite, moves the write-ahead log into the database and truncates
    /// it, so that the rows' previous versions do not linger in `catalog.db-wal` (the
    /// database itself overwrites freed content: `secure_delete` is on). Returns false when
    /// a reader kept part of the log in use (it is truncated at a later checkpoint). Nothing
    /// to do on PostgreSQL.
    pub async fn checkpoint_log(&self) -> Result<bool> {
        if self.backend != Backend::Sqlite {
            return Ok(true);
        }
        let row = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&self.pool)
            .await?;
        let busy: i64 = row.try_get(0)?;
        Ok(busy == 0)
    }

    /// The history of `id`, in order.
    pub async fn events(&self, id: &str) -> Result<Vec<TaskEvent>> {
        let rows = sqlx::query(
            "SELECT seq, at_ms, status, message, progress, worker FROM task_events WHERE task_id = $1 ORDER BY seq",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(TaskEvent {
                    seq: r.try_get(0)?,
                    at_ms: r.try_get(1)?,
                    status: r.try_get(2)?,
                    message: r.try_get(3)?,
                    progress: r.try_get(4)?,
                    worker: r.try_get(5)?,
                })
            })
            .collect()
    }

    /// Rows of `table` whose `col` is `val`, by id (`table` and `col` are constants).
    async fn rows_by(&self, table: &str, col: &str, val: &str) -> Result<Vec<AnyRow>> {
        Ok(sqlx::query(AssertSqlSafe(format!(
            "SELECT * FROM {table} WHERE {col} = $1 ORDER BY id"
        )))
        .bind(val)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The row `id` of `account` in `table`.
    async fn row_of(&self, table: &str, account: &str, id: &str) -> Result<AnyRow> {
        sqlx::query(AssertSqlSafe(format!(
            "SELECT * FROM {table} WHERE id = $1 AND account = $2"
        )))
        .bind(id)
        .bind(account)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| CatalogError::NotFound(id.to_string()))
    }

    /// Deletes the row `id` of `account` in `table`.
    async fn delete_row(&self, table: &str, account: &str, id: &str) -> Result<()> {
        let r = sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE id = $1 AND account = $2"
        )))
        .bind(id)
        .bind(account)
        .execute(&self.pool)
        .await?;
        found(&r, id)
    }

    /// Records a snapshot (idempotent on its id: a retried step finds it there).
    pub async fn put_snapshot(&self, s: &Snapshot) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        insert_snapshot(&mut tx, s).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Snapshots of `account`, by id.
    pub async fn snapshots(&self, account: &str) -> Result<Vec<Snapshot>> {
        self.rows_by("snapshots", "account", account)
            .await?
            .iter()
            .map(snapshot_of)
            .collect()
    }

    /// The snapshot `id` of `account`.
    pub async fn snapshot(&self, account: &str, id: &str) -> Result<Snapshot> {
        snapshot_of(&self.row_of("snapshots", account, id).await?)
    }

    /// The image of `account` that uses the snapshot `id`, if any.
    pub async fn image_using(&self, account: &str, id: &str) -> Result<Option<String>> {
        Ok(self
            .images(account)
            .await?
            .into_iter()
            .find(|img| img.block_devices.iter().any(|b| b.snapshot_id == id))
            .map(|img| img.id))
    }

    /// Deletes the snapshot `id` of `account`; refused while an image uses it.
    pub async fn delete_snapshot(&self, account: &str, id: &str) -> Result<()> {
        if let Some(img) = self.image_using(account, id).await? {
            return Err(CatalogError::Conflict(format!(
                "the snapshot {id} is currently in use by {img}"
            )));
        }
        self.delete_row("snapshots", account, id).await?;
        self.revoke_all(id).await
    }

    /// Registers an image (one per task: a retried step finds the first).
    pub async fn put_image(&self, i: &Image) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        insert_image(&mut tx, i).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Images of `account`, by id.
    pub async fn images(&self, account: &str) -> Result<Vec<Image>> {
        self.rows_by("images", "account", account)
            .await?
            .iter()
            .map(image_of)
            .collect()
    }

    /// The image `id` of `account`.
    pub async fn image(&self, account: &str, id: &str) -> Result<Image> {
        image_of(&self.row_of("images", account, id).await?)
    }

    /// The image a task registered, if any.
    pub async fn image_of_task(&self, task_id: &str) -> Result<Option<Image>> {
        self.rows_by("images", "task_id", task_id)
            .await?
            .first()
            .map(image_of)
            .transpose()
    }

    /// Snapshots a task recorded.
    pub async fn snapshots_of_task(&self, task_id: &str) -> Result<Vec<Snapshot>> {
        self.rows_by("snapshots", "task_id", task_id)
            .await?
            .iter()
            .map(snapshot_of)
            .collect()
    }

    /// Deregisters the image `id` of `account` (its snapshots stay); who it was shared with
    /// goes with it.
    pub async fn delete_image(&self, account: &str, id: &str) -> Result<()> {
        self.delete_row("images", account, id).await?;
        self.revoke_all(id).await
    }

    /// The image `id`, whoever owns it (for shared images; callers check who may see it).
    pub async fn image_by_id(&self, id: &str) -> Result<Image> {
        self.rows_by("images", "id", id)
            .await?
            .first()
            .map(image_of)
            .transpose()?
            .ok_or_else(|| CatalogError::NotFound(id.to_string()))
    }

    /// The snapshot `id`, whoever owns it.
    pub async fn snapshot_by_id(&self, id: &str) -> Result<Snapshot> {
        self.rows_by("snapshots", "id", id)
            .await?
            .first()
            .map(snapshot_of)
            .transpose()?
            .ok_or_else(|| CatalogError::NotFound(id.to_string()))
    }

    /// Updates the description, state and details of the image `i` (by its id and account).
    pub async fn update_image(&self, i: &Image) -> Result<()> {
        let r = sqlx::query(
            "UPDATE images SET description = $1, state = $2, extra = $3 WHERE id = $4 AND account = $5",
        )
        .bind(&i.description)
        .bind(&i.state)
        .bind(extra_json(&i.extra))
        .bind(&i.id)
        .bind(&i.account)
        .execute(&self.pool)
        .await?;
        found(&r, &i.id)
    }

    /// Sets the state of the snapshot `id` of `account`.
    pub async fn set_snapshot_state(&self, account: &str, id: &str, state: &str) -> Result<()> {
        let r = sqlx::query("UPDATE snapshots SET state = $1 WHERE id = $2 AND account = $3")
            .bind(state)
            .bind(id)
            .bind(account)
            .execute(&self.pool)
            .await?;
        found(&r, id)
    }

    /// Lets `grantee` (an account id, or `all`) use the image or snapshot `resource_id` that
    /// `owner` owns (a launch permission, a create-volume permission).
    pub async fn grant(&self, resource_id: &str, owner: &str, grantee: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO permissions (resource_id, owner, grantee, created_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
        )
        .bind(resource_id)
        .bind(owner)
        .bind(grantee)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Takes back `grantee`'s use of `resource_id`.
    pub async fn revoke(&self, resource_id: &str, grantee: &str) -> Result<()> {
        sqlx::query("DELETE FROM permissions WHERE resource_id = $1 AND grantee = $2")
            .bind(resource_id)
            .bind(grantee)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Takes back every use of `resource_id` by others.
    pub async fn revoke_all(&self, resource_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM permissions WHERE resource_id = $1")
            .bind(resource_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Who may use `resource_id` besides its owner, sorted.
    pub async fn grantees(&self, resource_id: &str) -> Result<Vec<String>> {
        let rows =
            sqlx::query("SELECT grantee FROM permissions WHERE resource_id = $1 ORDER BY grantee")
                .bind(resource_id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// The images and snapshots others shared with `account` (or with everyone), by id.
    pub async fn shared_with(&self, account: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT DISTINCT resource_id FROM permissions WHERE (grantee = $1 OR grantee = 'all') \
             AND owner <> $1 ORDER BY resource_id",
        )
        .bind(account)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// Tasks of every account by kind and status: `(kind, status, count)`.
    pub async fn task_counts(&self) -> Result<Vec<(String, String, i64)>> {
        let rows = sqlx::query(
            "SELECT kind, status, COUNT(*) FROM tasks GROUP BY kind, status ORDER BY kind, status",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect()
    }

    /// Replaces the tags of the task, image (`ami-…`) or snapshot (`snap-…`) `id`.
    pub async fn set_tags(&self, account: &str, id: &str, tags: &[Tag]) -> Result<()> {
        let table = if id.starts_with("ami-") {
            "images"
        } else if id.starts_with("snap-") {
            "snapshots"
        } else {
            "tasks"
        };
        let r = sqlx::query(AssertSqlSafe(format!(
            "UPDATE {table} SET tags = $1 WHERE id = $2 AND account = $3"
        )))
        .bind(tags_json(tags))
        .bind(id)
        .bind(account)
        .execute(&self.pool)
        .await?;
        found(&r, id)
    }

    /// A per-account setting.
    pub async fn setting(&self, account: &str, name: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT value FROM settings WHERE account = $1 AND name = $2")
            .bind(account)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// Counts one request of `principal` in the window starting at `window_start`; returns
    /// the window's count so far, across every process sharing the catalog.
    pub async fn rate_hit(&self, principal: &str, window_start: i64) -> Result<i64> {
        let row = sqlx::query(
            "INSERT INTO rate_windows (principal, window_start, count) VALUES ($1, $2, 1) \
             ON CONFLICT (principal, window_start) DO UPDATE SET count = rate_windows.count + 1 \
             RETURNING count",
        )
        .bind(principal)
        .bind(window_start)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get(0)?)
    }

    /// Forgets request counts of windows that started before `before`.
    pub async fn rate_prune(&self, before: i64) -> Result<()> {
        sqlx::query("DELETE FROM rate_windows WHERE window_start < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every setting of `account`, by name.
    pub async fn settings(&self, account: &str) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT name, value FROM settings WHERE account = $1 ORDER BY name")
            .bind(account)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Sets a per-account setting only if it still holds `old` (`None`: only if it is
    /// unset); whether it was set. Several processes agreeing on one next value (the
    /// activity log's digest chain) use it as a compare-and-swap.
    pub async fn swap_setting(
        &self,
        account: &str,
        name: &str,
        old: Option<&str>,
        new: &str,
    ) -> Result<bool> {
        let r = match old {
            None => {
                sqlx::query(
                    "INSERT INTO settings (account, name, value) VALUES ($1, $2, $3) \
                     ON CONFLICT (account, name) DO NOTHING",
                )
                .bind(account)
                .bind(name)
                .bind(new)
                .execute(&self.pool)
                .await?
            }
            Some(old) => sqlx::query(
                "UPDATE settings SET value = $1 WHERE account = $2 AND name = $3 AND value = $4",
            )
            .bind(new)
            .bind(account)
            .bind(name)
            .bind(old)
            .execute(&self.pool)
            .await?,
        };
        Ok(r.rows_affected() == 1)
    }

    /// Removes a per-account setting (nothing when it is unset).
    pub async fn delete_setting(&self, account: &str, name: &str) -> Result<()> {
        sqlx::query("DELETE FROM settings WHERE account = $1 AND name = $2")
            .bind(account)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Sets a per-account setting.
    pub async fn set_setting(&self, account: &str, name: &str, value: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO settings (account, name, value) VALUES ($1, $2, $3) \
             ON CONFLICT (account, name) DO UPDATE SET value = excluded.value",
        )
        .bind(account)
        .bind(name)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

type Tx<'a> = sqlx::Transaction<'a, sqlx::Any>;

/// `NotFound(what)` when a statement touched no row.
pub(crate) fn found(r: &sqlx::any::AnyQueryResult, what: &str) -> Result<()> {
    if r.rows_affected() == 0 {
        Err(CatalogError::NotFound(what.to_string()))
    } else {
        Ok(())
    }
}

async fn insert_snapshot(tx: &mut Tx<'_>, s: &Snapshot) -> Result<()> {
    sqlx::query(
        "INSERT INTO snapshots (id, account, task_id, volume_size, encrypted, kms_key_id, state, description, tags, created_ms, extra) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
         ON CONFLICT (id) DO UPDATE SET volume_size = excluded.volume_size, state = excluded.state, \
         kms_key_id = excluded.kms_key_id, encrypted = excluded.encrypted",
    )
    .bind(&s.id)
    .bind(&s.account)
    .bind(&s.task_id)
    .bind(s.volume_size)
    .bind(i64::from(s.encrypted))
    .bind(&s.kms_key_id)
    .bind(&s.state)
    .bind(&s.description)
    .bind(tags_json(&s.tags))
    .bind(s.created_ms)
    .bind(extra_json(&s.extra))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_image(tx: &mut Tx<'_>, i: &Image) -> Result<()> {
    sqlx::query(
        "INSERT INTO images (id, account, task_id, name, description, architecture, platform, boot_mode, block_devices, encrypted, kms_key_id, state, tags, created_ms, extra) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
         ON CONFLICT DO NOTHING",
    )
    .bind(&i.id)
    .bind(&i.account)
    .bind(&i.task_id)
    .bind(&i.name)
    .bind(&i.description)
    .bind(&i.architecture)
    .bind(&i.platform)
    .bind(&i.boot_mode)
    .bind(serde_json::to_string(&i.block_devices).unwrap_or_else(|_| "[]".into()))
    .bind(i64::from(i.encrypted))
    .bind(&i.kms_key_id)
    .bind(&i.state)
    .bind(tags_json(&i.tags))
    .bind(i.created_ms)
    .bind(extra_json(&i.extra))
    .execute(&mut **tx)
    .await?;
    // A row made earlier for the same image (a copy's, `pending`) takes the new state.
    sqlx::query("UPDATE images SET state = $1 WHERE id = $2 AND account = $3")
        .bind(&i.state)
        .bind(&i.id)
        .bind(&i.account)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
