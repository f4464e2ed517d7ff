//! vmie's key management service.
//!
//! Symmetric customer keys (AES-256) with ids, ARNs and aliases; a default key for snapshots
//! under the alias `alias/aws/ebs`; enable/disable; scheduled deletion after a waiting period of
//! 7–30 days, with cancellation; automatic rotation (yearly by default) that keeps every old
//! version so old ciphertexts still decrypt; and envelope encryption: [`Kms::generate_data_key`],
//! [`Kms::decrypt`], [`Kms::re_encrypt`]. Every use is checked against the key's policy.
//!
//! Key records live in an object store (the same one as the snapshots: a local folder by
//! default, S3 at scale), so every vmie process sees the same keys. Key material is stored only
//! sealed under the [`RootKey`]; in memory it is held in zeroizing buffers and dropped after use.
//!
//! A ciphertext blob is `"VKB1" ‖ key id (16) ‖ key version (u32 BE) ‖ AES-256-GCM sealed
//! plaintext`, bound by its associated data to the key id, the version and the caller's
//! encryption context.

pub mod aead;
pub mod error;
pub mod policy;
pub mod root;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub use error::{KmsError, Result};
pub use policy::{Caller, KeyPolicy};
pub use root::RootKey;

/// The alias EC2 clients use for the default snapshot key.
pub const EBS_DEFAULT_ALIAS: &str = "alias/aws/ebs";
/// The alias of the default key for objects encrypted at rest in buckets.
pub const S3_DEFAULT_ALIAS: &str = "alias/aws/s3";
/// Shortest deletion waiting period, in days (as AWS KMS).
pub const MIN_DELETION_DAYS: u32 = 7;
/// Longest deletion waiting period, in days.
pub const MAX_DELETION_DAYS: u32 = 30;
/// Default rotation period, in days.
pub const DEFAULT_ROTATION_DAYS: u32 = 365;
/// Largest plaintext [`Kms::encrypt`] takes (as AWS KMS: 4 KiB).
pub const MAX_PLAINTEXT: usize = 4096;
/// Rotations a key may accumulate; beyond this rotation stops (decades of yearly rotation).
pub const MAX_VERSIONS: usize = 1000;

const DAY: u64 = 86_400;
const BLOB_MAGIC: &[u8; 4] = b"VKB1";
const BLOB_HEADER: usize = 4 + 16 + 4;

/// A source of the current time (seconds since the Unix epoch), replaceable in tests.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now.
    fn now(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// A clock that moves only when told to (tests of rotation and deletion).
#[derive(Debug)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock reading `now`.
    #[must_use]
    pub fn new(now: u64) -> Self {
        ManualClock(AtomicU64::new(now))
    }
    /// Moves the clock forward by `days`.
    pub fn advance_days(&self, days: u64) {
        self.0.fetch_add(days * DAY, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Where a key stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyState {
    /// Usable.
    Enabled,
    /// Not usable until enabled.
    Disabled,
    /// Not usable; deleted on the deletion date unless cancelled.
    PendingDeletion,
    /// Deleted: the key material is gone; the record stays as a tombstone so that users get
    /// a clear error instead of "not found".
    Deleted,
}

/// Who manages a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyManager {
    /// A customer key.
    Customer,
    /// A key the service made for itself (`alias/aws/ebs`).
    Aws,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SealedVersion {
    version: u32,
    created: u64,
    /// Hex of the key material sealed under the root key.
    sealed: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeyRecord {
    key_id: String,
    arn: String,
    description: String,
    state: KeyState,
    deletion_date: Option<u64>,
    creation_date: u64,
    manager: KeyManager,
    rotation_enabled: bool,
    rotation_period_days: u32,
    next_rotation: Option<u64>,
    last_rotation: Option<u64>,
    current_version: u32,
    versions: Vec<SealedVersion>,
    policy: String,
    /// Grants: uses of the key allowed to principals the policy does not name (the service
    /// grants another account `Decrypt` on a key whose image was shared with it).
    #[serde(default)]
    grants: Vec<Grant>,
    /// Tags (key → value).
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

/// Most tags one key holds (as AWS KMS).
pub const MAX_TAGS: usize = 50;

/// Operations a grant may allow.
pub const GRANT_OPERATIONS: &[&str] = &[
    "Decrypt",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "ReEncryptFrom",
    "ReEncryptTo",
    "DescribeKey",
    "CreateGrant",
    "RetireGrant",
];
/// Most grants one key holds.
pub const MAX_GRANTS: usize = 500;

/// A grant: `grantee` (an IAM principal ARN or an account's root ARN) may do `operations`
/// with the key, whatever the key policy says, unless it explicitly denies them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Id (64 hex digits).
    pub grant_id: String,
    /// Who it is for.
    pub grantee: String,
    /// What it allows (`Decrypt`, `DescribeKey`, …; without the `kms:` prefix, as KMS names
    /// them).
    pub operations: Vec<String>,
    /// A name the creator gave it (grants are idempotent on grantee, operations and name).
    pub name: Option<String>,
    /// Who made it.
    pub issuer: String,
    /// When (seconds since the Unix epoch).
    pub creation_date: u64,
}

/// What [`Kms::describe_key`] returns: everything but key material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyMetadata {
    /// Key id (a UUID).
    pub key_id: String,
    /// Key ARN.
    pub arn: String,
    /// Description.
    pub description: String,
    /// State.
    pub state: KeyState,
    /// Deletion date when pending deletion or deleted.
    pub deletion_date: Option<u64>,
    /// Creation time.
    pub creation_date: u64,
    /// Customer or AWS managed.
    pub manager: KeyManager,
    /// Automatic rotation on.
    pub rotation_enabled: bool,
    /// Days between automatic rotations.
    pub rotation_period_days: u32,
    /// When the next automatic rotation is due.
    pub next_rotation: Option<u64>,
    /// The version new ciphertexts use.
    pub current_version: u32,
    /// Versions kept for decryption.
    pub versions: u32,
}

impl From<&KeyRecord> for KeyMetadata {
    fn from(r: &KeyRecord) -> Self {
        KeyMetadata {
            key_id: r.key_id.clone(),
            arn: r.arn.clone(),
            description: r.description.clone(),
            state: r.state,
            deletion_date: r.deletion_date,
            creation_date: r.creation_date,
            manager: r.manager,
            rotation_enabled: r.rotation_enabled,
            rotation_period_days: r.rotation_period_days,
            next_rotation: r.next_rotation,
            current_version: r.current_version,
            versions: u32::try_from(r.versions.len()).unwrap_or(u32::MAX),
        }
    }
}

/// A fresh data key: use `plaintext`, store `ciphertext`, forget `plaintext`.
pub struct DataKey {
    /// Key id of the KMS key that wraps it.
    pub key_id: String,
    /// The 32-byte data key, zeroized on drop.
    pub plaintext: Zeroizing<[u8; 32]>,
    /// The wrapped data key (a ciphertext blob).
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey")
            .field("key_id", &self.key_id)
            .field("plaintext", &"<redacted>")
            .finish()
    }
}

/// An encryption context: non-secret pairs bound to a ciphertext, which must be presented
/// again to decrypt it.
pub type Context = BTreeMap<String, String>;

/// Options of [`Kms::create_key`].
#[derive(Debug, Clone, Default)]
pub struct CreateKey {
    /// Description.
    pub description: String,
    /// Key policy document; the default policy (the account may use it) when `None`.
    pub policy: Option<String>,
    /// Automatic yearly rotation.
    pub rotation: bool,
}

/// Region and account the keys belong to (they appear in ARNs).
#[derive(Debug, Clone)]
pub struct KmsConfig {
    /// Region name, e.g. `us-east-1`.
    pub region: String,
    /// Account id, 12 digits.
    pub account: String,
}

/// What [`Kms::run_maintenance`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Maintenance {
    /// Keys rotated.
    pub rotated: Vec<String>,
    /// Keys whose deletion date passed and whose material was destroyed.
    pub deleted: Vec<String>,
}

/// The key management service.
#[derive(Debug, Clone)]
pub struct Kms {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    root: Arc<RootKey>,
    cfg: KmsConfig,
    clock: Arc<dyn Clock>,
    observer: Arc<std::sync::OnceLock<Observer>>,
}

/// One authorization decision on a key: who asked to do what with which key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUse {
    /// The action, e.g. `kms:GenerateDataKey`.
    pub action: String,
    /// The key's ARN.
    pub key_arn: String,
    /// The caller.
    pub caller: Caller,
    /// Whether the key policy allowed it.
    pub allowed: bool,
}

/// Called with every [`KeyUse`] (the activity log's key-usage records).
#[derive(Clone)]
pub struct Observer(pub Arc<dyn Fn(&KeyUse) + Send + Sync>);

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observer")
    }
}

impl Kms {
    /// A service keeping its records under `prefix` in `store`.
    #[must_use]
    pub fn new(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        root: Arc<RootKey>,
        cfg: KmsConfig,
    ) -> Self {
        Kms {
            store,
            prefix: Path::from(prefix),
            root,
            cfg,
            clock: Arc::new(SystemClock),
            observer: Arc::new(std::sync::OnceLock::new()),
        }
    }

    /// Sets, once, the function told of every authorization decision on a key; every clone
    /// of this service shares it. False when one was already set.
    pub fn set_observer(&self, o: Observer) -> bool {
        self.observer.set(o).is_ok()
    }

    /// Replaces the clock (tests).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &KmsConfig {
        &self.cfg
    }

    fn key_path(&self, id: &str) -> Path {
        self.prefix.clone().join("keys").join(format!("{id}.json"))
    }

    fn alias_path(&self, alias: &str) -> Path {
        self.prefix
            .clone()
            .join("aliases")
            .join(format!("{}.json", hex::encode(alias)))
    }

    fn arn(&self, id: &str) -> String {
        format!(
            "arn:aws:kms:{}:{}:key/{id}",
            self.cfg.region, self.cfg.account
        )
    }

    fn material_aad(id: &str, version: u32) -> Vec<u8> {
        format!("vmie-kms-material-v1\0{id}\0{version}").into_bytes()
    }

    async fn load(&self, id: &str) -> Result<(KeyRecord, Option<object_store::UpdateVersion>)> {
        let got = match self.store.get(&self.key_path(id)).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Err(KmsError::NotFound(id.into())),
            Err(e) => return Err(e.into()),
        };
        let version = object_store::UpdateVersion {
            e_tag: got.meta.e_tag.clone(),
            version: got.meta.version.clone(),
        };
        let bytes = got.bytes().await?;
        let rec: KeyRecord = serde_json::from_slice(&bytes)
            .map_err(|e| KmsError::Record(id.into(), e.to_string()))?;
        if rec.key_id != id {
            return Err(KmsError::Record(
                id.into(),
                "record names another key".into(),
            ));
        }
        Ok((rec, Some(version)))
    }

    async fn save(&self, rec: &KeyRecord, create: bool) -> Result<()> {
        let body = serde_json::to_vec_pretty(rec)
            .map_err(|e| KmsError::Record(rec.key_id.clone(), e.to_string()))?;
        let mode = if create {
            PutMode::Create
        } else {
            PutMode::Overwrite
        };
        self.store
            .put_opts(
                &self.key_path(&rec.key_id),
                PutPayload::from(body),
                PutOptions::from(mode),
            )
            .await?;
        Ok(())
    }

    /// Resolves a key id, key ARN, alias name (`alias/…`) or alias ARN to a key id.
    pub async fn resolve(&self, key_ref: &str) -> Result<String> {
        let alias = if let Some(rest) = key_ref.strip_prefix("arn:aws:kms:") {
            // arn:aws:kms:REGION:ACCOUNT:key/ID | alias/NAME
            let mut parts = rest.splitn(3, ':');
            let (region, account, res) = (parts.next(), parts.next(), parts.next());
            if region != Some(self.cfg.region.as_str())
                || account != Some(self.cfg.account.as_str())
            {
                return Err(KmsError::NotFound(key_ref.into()));
            }
            match res {
                Some(r) if r.starts_with("alias/") => r.to_string(),
                Some(r) => match r.strip_prefix("key/") {
                    Some(id) => return Self::check_id(id),
                    None => return Err(KmsError::NotFound(key_ref.into())),
                },
                None => return Err(KmsError::NotFound(key_ref.into())),
            }
        } else if key_ref.starts_with("alias/") {
            key_ref.to_string()
        } else {
            return Self::check_id(key_ref);
        };
        validate_alias(&alias)?;
        match self.store.get(&self.alias_path(&alias)).await {
            Ok(g) => {
                let b = g.bytes().await?;
                let rec: AliasRecord = serde_json::from_slice(&b)
                    .map_err(|e| KmsError::Record(alias.clone(), e.to_string()))?;
                Self::check_id(&rec.key_id)
            }
            Err(object_store::Error::NotFound { .. }) => Err(KmsError::NotFound(alias)),
            Err(e) => Err(e.into()),
        }
    }

    fn check_id(id: &str) -> Result<String> {
        match uuid::Uuid::parse_str(id) {
            Ok(u) if u.hyphenated().to_string() == id => Ok(id.to_string()),
            _ => Err(KmsError::NotFound(id.chars().take(80).collect())),
        }
    }

    fn authorize(&self, rec: &KeyRecord, caller: &Caller, action: &str) -> Result<()> {
        let policy = KeyPolicy::parse(&rec.policy)?;
        // The policy's explicit Deny wins; otherwise its Allow, or a grant, allows.
        let allowed = policy.decide(caller, action).unwrap_or_else(|| {
            let op = action.strip_prefix("kms:").unwrap_or(action);
            rec.grants.iter().any(|g| {
                policy::principal_matches(&g.grantee, caller)
                    && g.operations.iter().any(|o| o == op)
            })
        });
        if let Some(o) = self.observer.get() {
            (o.0)(&KeyUse {
                action: action.to_string(),
                key_arn: self.arn(&rec.key_id),
                caller: caller.clone(),
                allowed,
            });
        }
        if allowed {
            Ok(())
        } else {
            Err(KmsError::AccessDenied {
                principal: caller.arn.clone(),
                action: action.into(),
                key: rec.key_id.clone(),
            })
        }
    }

    fn usable(rec: &KeyRecord) -> Result<()> {
        match rec.state {
            KeyState::Enabled => Ok(()),
            KeyState::Disabled => Err(KmsError::Disabled(rec.key_id.clone())),
            KeyState::PendingDeletion => Err(KmsError::PendingDeletion {
                key: rec.key_id.clone(),
                date: rec.deletion_date.unwrap_or(0),
            }),
            KeyState::Deleted => Err(KmsError::Deleted(rec.key_id.clone())),
        }
    }

    fn new_version(&self, id: &str, version: u32) -> SealedVersion {
        let material = aead::random_key();
        SealedVersion {
            version,
            created: self.clock.now(),
            sealed: hex::encode(
                self.root
                    .seal(&Self::material_aad(id, version), material.as_ref()),
            ),
        }
    }

    fn material(&self, rec: &KeyRecord, version: u32) -> Result<aead::AeadKey> {
        let v = rec
            .versions
            .iter()
            .find(|v| v.version == version)
            .ok_or_else(|| {
                KmsError::InvalidCiphertext(format!("key {} has no version {version}", rec.key_id))
            })?;
        let sealed = hex::decode(&v.sealed)
            .map_err(|e| KmsError::Record(rec.key_id.clone(), e.to_string()))?;
        let opened = self
            .root
            .open(&Self::material_aad(&rec.key_id, version), &sealed)
            .ok_or_else(|| KmsError::Unseal(rec.key_id.clone()))?;
        let mut k = Zeroizing::new([0u8; 32]);
        if opened.len() != 32 {
            return Err(KmsError::Unseal(rec.key_id.clone()));
        }
        k.copy_from_slice(&opened);
        Ok(aead::AeadKey::new(&k))
    }

    fn secret_aad(purpose: &str) -> Vec<u8> {
        format!("vmie service secret\0{purpose}").into_bytes()
    }

    /// Seals a secret the service must keep for a while but never in clear (a presigned
    /// URL's query string while its task runs, say) under the root key, bound to `purpose`
    /// (its owner and use, e.g. a task id). Not for key material. Only [`Kms::open_secret`]
    /// with the same `purpose` opens it; no key policy applies and no key use is recorded.
    #[must_use]
    pub fn seal_secret(&self, purpose: &str, plaintext: &[u8]) -> Vec<u8> {
        self.root.seal(&Self::secret_aad(purpose), plaintext)
    }

    /// Opens what [`Kms::seal_secret`] sealed for `purpose`; `None` when it was altered,
    /// sealed for another purpose, or under another root key.
    #[must_use]
    pub fn open_secret(&self, purpose: &str, sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        self.root.open(&Self::secret_aad(purpose), sealed)
    }

    /// Creates a customer key.
    pub async fn create_key(&self, caller: &Caller, opts: CreateKey) -> Result<KeyMetadata> {
        self.create(caller, opts, KeyManager::Customer).await
    }

    async fn create(
        &self,
        caller: &Caller,
        opts: CreateKey,
        manager: KeyManager,
    ) -> Result<KeyMetadata> {
        if opts.description.len() > 8192 {
            return Err(KmsError::Validation(
                "a description is at most 8192 characters".into(),
            ));
        }
        let policy = opts
            .policy
            .unwrap_or_else(|| KeyPolicy::default_document(&self.cfg.account));
        // The creator must not lock itself out (AWS's "lockout safety check").
        if !KeyPolicy::parse(&policy)?.allows(caller, "kms:PutKeyPolicy") {
            return Err(KmsError::MalformedPolicy(
                "the policy would not allow its creator to change it later (lockout safety check)"
                    .into(),
            ));
        }
        let id = uuid::Uuid::new_v4().hyphenated().to_string();
        let now = self.clock.now();
        let rec = KeyRecord {
            arn: self.arn(&id),
            description: opts.description,
            state: KeyState::Enabled,
            deletion_date: None,
            creation_date: now,
            manager,
            rotation_enabled: opts.rotation,
            rotation_period_days: DEFAULT_ROTATION_DAYS,
            next_rotation: opts
                .rotation
                .then(|| now + u64::from(DEFAULT_ROTATION_DAYS) * DAY),
            last_rotation: None,
            current_version: 1,
            versions: vec![self.new_version(&id, 1)],
            policy,
            grants: Vec::new(),
            tags: BTreeMap::new(),
            key_id: id,
        };
        self.save(&rec, true).await?;
        Ok(KeyMetadata::from(&rec))
    }

    /// Describes a key.
    pub async fn describe_key(&self, caller: &Caller, key_ref: &str) -> Result<KeyMetadata> {
        let id = self.resolve(key_ref).await?;
        let (rec, _) = self.load(&id).await?;
        self.authorize(&rec, caller, "kms:DescribeKey")?;
        Ok(KeyMetadata::from(&rec))
    }

    /// Every key, deleted ones included (as tombstones).
    pub async fn list_keys(&self) -> Result<Vec<KeyMetadata>> {
        let prefix = self.prefix.clone().join("keys");
        let metas: Vec<_> = self.store.list(Some(&prefix)).try_collect().await?;
        let mut out = Vec::new();
        for m in metas {
            let Some(name) = m.location.filename() else {
                continue;
            };
            let Some(id) = name.strip_suffix(".json") else {
                continue;
            };
            let (rec, _) = self.load(id).await?;
            out.push(KeyMetadata::from(&rec));
        }
        out.sort_by(|a, b| {
            a.creation_date
                .cmp(&b.creation_date)
                .then(a.key_id.cmp(&b.key_id))
        });
        Ok(out)
    }

    /// Points `alias` (`alias/NAME`) at a key. Names under `alias/aws/` are reserved.
    pub async fn create_alias(&self, caller: &Caller, alias: &str, key_ref: &str) -> Result<()> {
        validate_alias(alias)?;
        if alias.starts_with("alias/aws/") {
            return Err(KmsError::Validation(format!(
                "{alias}: names beginning with alias/aws/ are reserved for keys the service manages"
            )));
        }
        let id = self.resolve(key_ref).await?;
        let (rec, _) = self.load(&id).await?;
        self.authorize(&rec, caller, "kms:CreateAlias")?;
        self.put_alias(alias, &id).await
    }

    async fn put_alias(&self, alias: &str, id: &str) -> Result<()> {
        let body = serde_json::to_vec(&AliasRecord {
            alias: alias.into(),
            key_id: id.into(),
        })
        .map_err(|e| KmsError::Record(alias.into(), e.to_string()))?;
        match self
            .store
            .put_opts(
                &self.alias_path(alias),
                PutPayload::from(body),
                PutOptions::from(PutMode::Create),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => {
                Err(KmsError::AlreadyExists(alias.into()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Removes an alias (the key stays).
    pub async fn delete_alias(&self, caller: &Caller, alias: &str) -> Result<()> {
        let id = self.resolve(alias).await?;
        let (rec, _) = self.load(&id).await?;
        self.authorize(&rec, caller, "kms:DeleteAlias")?;
        self.store.delete(&self.alias_path(alias)).await?;
        Ok(())
    }

    /// Every alias with its key id.
    pub async fn list_aliases(&self) -> Result<Vec<(String, String)>> {
        let prefix = self.prefix.clone().join("aliases");
        let metas: Vec<_> = self.store.list(Some(&prefix)).try_collect().await?;
        let mut out = Vec::new();
        for m in metas {
            let b = self.store.get(&m.location).await?.bytes().await?;
            let rec: AliasRecord = serde_json::from_slice(&b)
                .map_err(|e| KmsError::Record(m.location.to_string(), e.to_string()))?;
            out.push((rec.alias, rec.key_id));
        }
        out.sort();
        Ok(out)
    }

    /// The default key for snapshots (`alias/aws/ebs`), created with yearly rotation the first
    /// time anyone asks. Safe to call from several processes at once: one alias wins.
    pub async fn default_ebs_key(&self) -> Result<KeyMetadata> {
        self.managed_key(
            EBS_DEFAULT_ALIAS,
            "Default key that protects my EBS volumes when no other key is defined",
        )
        .await
    }

    /// The default key for objects encrypted at rest in buckets (`alias/aws/s3`), made as
    /// [`Kms::default_ebs_key`] is.
    pub async fn default_s3_key(&self) -> Result<KeyMetadata> {
        self.managed_key(
            S3_DEFAULT_ALIAS,
            "Default key that protects my S3 objects when no other key is defined",
        )
        .await
    }

    /// The AWS-managed key behind `alias`, created with yearly rotation the first time anyone
    /// asks. Safe to call from several processes at once: one alias wins.
    async fn managed_key(&self, alias: &str, description: &str) -> Result<KeyMetadata> {
        match self.resolve(alias).await {
            Ok(id) => return Ok(KeyMetadata::from(&self.load(&id).await?.0)),
            Err(KmsError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let root = Caller::account_root(&self.cfg.account);
        let meta = self
            .create(
                &root,
                CreateKey {
                    description: description.into(),
                    policy: None,
                    rotation: true,
                },
                KeyManager::Aws,
            )
            .await?;
        match self.put_alias(alias, &meta.key_id).await {
            Ok(()) => Ok(meta),
            Err(KmsError::AlreadyExists(_)) => {
                // Another process won the race; retire our key and use theirs.
                let (mut rec, _) = self.load(&meta.key_id).await?;
                rec.state = KeyState::Deleted;
                rec.versions.clear();
                self.save(&rec, false).await?;
                let id = self.resolve(alias).await?;
                Ok(KeyMetadata::from(&self.load(&id).await?.0))
            }
            Err(e) => Err(e),
        }
    }

    async fn change(
        &self,
        caller: &Caller,
        key_ref: &str,
        action: &str,
        f: impl FnOnce(&mut KeyRecord, u64) -> Result<()>,
    ) -> Result<KeyMetadata> {
        let id = self.resolve(key_ref).await?;
        let (mut rec, _) = self.load(&id).await?;
        self.authorize(&rec, caller, action)?;
        if rec.state == KeyState::Deleted {
            return Err(KmsError::Deleted(id));
        }
        f(&mut rec, self.clock.now())?;
        self.save(&rec, false).await?;
        Ok(KeyMetadata::from(&rec))
    }

    /// Creates a grant on the key for `grantee` (a principal ARN or `arn:aws:iam::ACCOUNT:root`)
    /// allowing `operations`; the same grantee, operations and name give the same grant back.
    /// Returns its id.
    pub async fn create_grant(
        &self,
        caller: &Caller,
        key_ref: &str,
        grantee: &str,
        operations: &[&str],
        name: Option<&str>,
    ) -> Result<String> {
        if !grantee.starts_with("arn:aws:iam::") || grantee.len() > 256 {
            return Err(KmsError::Validation(
                "a grantee is an IAM principal ARN (arn:aws:iam::ACCOUNT:root, …:user/NAME, …:role/NAME)".into(),
            ));
        }
        if operations.is_empty() || operations.iter().any(|o| !GRANT_OPERATIONS.contains(o)) {
            return Err(KmsError::Validation(format!(
                "grant operations are some of {}",
                GRANT_OPERATIONS.join(", ")
            )));
        }
        let mut ops: Vec<String> = operations.iter().map(|o| (*o).to_string()).collect();
        ops.sort();
        ops.dedup();
        let issuer = caller.arn.clone();
        let mut id = None;
        self.change(caller, key_ref, "kms:CreateGrant", |r, now| {
            Self::usable(r)?;
            if let Some(g) = r
                .grants
                .iter()
                .find(|g| g.grantee == grantee && g.operations == ops && g.name.as_deref() == name)
            {
                id = Some(g.grant_id.clone());
                return Ok(());
            }
            if r.grants.len() >= MAX_GRANTS {
                return Err(KmsError::Validation(format!(
                    "key {} holds {MAX_GRANTS} grants, the most it may",
                    r.key_id
                )));
            }
            let mut b = [0u8; 32];
            aead::random(&mut b);
            let gid = hex::encode(b);
            r.grants.push(Grant {
                grant_id: gid.clone(),
                grantee: grantee.to_string(),
                operations: ops.clone(),
                name: name.map(str::to_string),
                issuer: issuer.clone(),
                creation_date: now,
            });
            id = Some(gid);
            Ok(())
        })
        .await?;
        id.ok_or_else(|| KmsError::Validation("no grant was made".into()))
    }

    /// Revokes the grant `grant_id` of the key (a grant that does not exist is `NotFound`).
    pub async fn revoke_grant(&self, caller: &Caller, key_ref: &str, grant_id: &str) -> Result<()> {
        self.change(caller, key_ref, "kms:RevokeGrant", |r, _| {
            let before = r.grants.len();
            r.grants.retain(|g| g.grant_id != grant_id);
            if r.grants.len() == before {
                return Err(KmsError::NotFound(format!(
                    "grant {}",
                    grant_id.chars().take(80).collect::<String>()
                )));
            }
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// The grants of the key.
    pub async fn list_grants(&self, caller: &Caller, key_ref: &str) -> Result<Vec<Grant>> {
        let id = self.resolve(key_ref).await?;
        let (rec, _) = self.load(&id).await?;
        self.authorize(&rec, caller, "kms:ListGrants")?;
        Ok(rec.grants)
    }

    /// Enables a disabled key.
    pub async fn enable_key(&self, caller: &Caller, key_ref: &str) -> Result<KeyMetadata> {
        self.change(caller, key_ref, "kms:EnableKey", |r, _| match r.state {
            KeyState::PendingDeletion => Err(KmsError::PendingDeletion {
                key: r.key_id.clone(),
                date: r.deletion_date.unwrap_or(0),
            }),
            _ => {
                r.state = KeyState::Enabled;
                Ok(())
            }
        })
        .await
    }

    /// Disables a key: it can neither encrypt nor decrypt until enabled again.
    pub async fn disable_key(&self, caller: &Caller, key_ref: &str) -> Result<KeyMetadata> {
        self.change(caller, key_ref, "kms:DisableKey", |r, _| match r.state {
            KeyState::PendingDeletion => Err(KmsError::PendingDeletion {
                key: r.key_id.clone(),
                date: r.deletion_date.unwrap_or(0),
            }),
            _ => {
                r.state = KeyState::Disabled;
                Ok(())
            }
        })
        .await
    }

    /// Schedules deletion after `days` (7–30). The key is unusable from now on; its material is
    /// destroyed by [`Kms::run_maintenance`] once the date has passed.
    pub async fn schedule_key_deletion(
        &self,
        caller: &Caller,
        key_ref: &str,
        days: u32,
    ) -> Result<KeyMetadata> {
        if !(MIN_DELETION_DAYS..=MAX_DELETION_DAYS).contains(&days) {
            return Err(KmsError::Validation(format!(
                "the waiting period is {MIN_DELETION_DAYS} to {MAX_DELETION_DAYS} days, not {days}"
            )));
        }
        self.change(caller, key_ref, "kms:ScheduleKeyDeletion", |r, now| {
            if r.manager == KeyManager::Aws {
                return Err(KmsError::Validation(format!(
                    "{} is managed by the service and cannot be deleted",
                    r.key_id
                )));
            }
            r.state = KeyState::PendingDeletion;
            r.deletion_date = Some(now + u64::from(days) * DAY);
            Ok(())
        })
        .await
    }

    /// Cancels a scheduled deletion; the key comes back disabled, as in AWS KMS.
    pub async fn cancel_key_deletion(&self, caller: &Caller, key_ref: &str) -> Result<KeyMetadata> {
        self.change(caller, key_ref, "kms:CancelKeyDeletion", |r, _| {
            if r.state != KeyState::PendingDeletion {
                return Err(KmsError::Validation(format!(
                    "key {} is not pending deletion",
                    r.key_id
                )));
            }
            r.state = KeyState::Disabled;
            r.deletion_date = None;
            Ok(())
        })
        .await
    }

    /// Turns automatic rotation on, every `period_days` (90–2560, default 365).
    pub async fn enable_key_rotation(
        &self,
        caller: &Caller,
        key_ref: &str,
        period_days: Option<u32>,
    ) -> Result<KeyMetadata> {
        let days = period_days.unwrap_or(DEFAULT_ROTATION_DAYS);
        if !(90..=2560).contains(&days) {
            return Err(KmsError::Validation(format!(
                "the rotation period is 90 to 2560 days, not {days}"
            )));
        }
        self.change(caller, key_ref, "kms:EnableKeyRotation", |r, now| {
            r.rotation_enabled = true;
            r.rotation_period_days = days;
            r.next_rotation = Some(now + u64::from(days) * DAY);
            Ok(())
        })
        .await
    }

    /// Turns automatic rotation off (AWS-managed keys always rotate).
    pub async fn disable_key_rotation(
        &self,
        caller: &Caller,
        key_ref: &str,
    ) -> Result<KeyMetadata> {
        self.change(caller, key_ref, "kms:DisableKeyRotation", |r, _| {
            if r.manager == KeyManager::Aws {
                return Err(KmsError::Validation(format!(
                    "{} is managed by the service and always rotates",
                    r.key_id
                )));
            }
            r.rotation_enabled = false;
            r.next_rotation = None;
            Ok(())
        })
        .await
    }

    /// Rotates now: new ciphertexts use a new version; old versions stay for decryption.
    pub async fn rotate_key_on_demand(
        &self,
        caller: &Caller,
        key_ref: &str,
    ) -> Result<KeyMetadata> {
        let id = self.resolve(key_ref).await?;
        let (rec, _) = self.load(&id).await?;
        self.authorize(&rec, caller, "kms:RotateKeyOnDemand")?;
        Self::usable(&rec)?;
        self.rotate(rec).await
    }

    async fn rotate(&self, mut rec: KeyRecord) -> Result<KeyMetadata> {
        if rec.versions.len() >= MAX_VERSIONS {
            return Err(KmsError::Validation(format!(
                "key {} has {MAX_VERSIONS} versions; create a new key instead",
                rec.key_id
            )));
        }
        let now = self.clock.now();
        let version = rec.current_version.saturating_add(1);
        let v = self.new_version(&rec.key_id, version);
        rec.versions.push(v);
        rec.current_version = version;
        rec.last_rotation = Some(now);
        if rec.rotation_enabled {
            rec.next_rotation = Some(now + u64::from(rec.rotation_period_days) * DAY);
        }
        self.save(&rec, false).await?;
        Ok(KeyMetadata::from(&rec))
    }

    /// Runs what is due: automatic rotations, and deletion of keys whose waiting period has
    /// ended (their material is destroyed; a tombstone remains). Idempotent; every process may
    /// run it periodically.
    pub async fn run_maintenance(&self) -> Result<Maintenance> {
        let now = self.clock.now();
        let mut done = Maintenance::default();
        for meta in self.list_keys().await? {
            let (mut rec, _) = self.load(&meta.key_id).await?;
            match rec.state {
                KeyState::PendingDeletion if rec.deletion_date.is_some_and(|d| d <= now) => {
                    rec.state = KeyState::Deleted;
                    rec.versions.clear();
                    self.save(&rec, false).await?;
                    done.deleted.push(rec.key_id);
                }
                KeyState::Enabled | KeyState::Disabled
                    if rec.rotation_enabled && rec.next_rotation.is_some_and(|t| t <= now) =>
                {
                    let id = rec.key_id.clone();
                    self.rotate(rec).await?;
                    done.rotated.push(id);
                }
                _ => {}
            }
        }
        Ok(done)
    }

    /// Replaces a key's policy (the new policy must still let the caller change it).
    pub async fn put_key_policy(
        &self,
        caller: &Caller,
        key_ref: &str,
        doc: &str,
    ) -> Result<KeyMetadata> {
        let parsed = KeyPolicy::parse(doc)?;
        if !parsed.allows(caller, "kms:PutKeyPolicy") {
            return Err(KmsError::MalformedPolicy(
                "the policy would not allow you to change it later (lockout safety check)".into(),
            ));
        }
        let doc = doc.to_string();
        self.change(caller, key_ref, "kms:PutKeyPolicy", move |r, _| {
            r.policy = doc;
            Ok(())
        })
        .await
    }

    /// The key's policy document.
    pub async fn get_key_policy(&self, caller: &Caller, key_ref: &str) -> Result<String> {
        let id = self.resolve(key_ref).await?;
        let (rec, _) = self.load(&id).await?;
        self.authorize(&rec, caller, "kms:GetKeyPolicy")?;
        Ok(rec.policy)
    }

    /// What the endpoint's authorization needs of a key before the call: its metadata and
    /// tags. No key policy applies and no key use is recorded (the call itself checks both).
    pub async fn key_info(&self, key_ref: &str) -> Result<(KeyMetadata, Context)> {
        let id = self.resolve(key_ref).await?;
        let (rec, _) = self.load(&id).await?;
        Ok((KeyMetadata::from(&rec), rec.tags))
    }

    /// The key's metadata for a caller the key policy allows `action` (`kms:DescribeKey`,
    /// `kms:GetKeyRotationStatus`, …).
    pub async fn metadata_for(
        &self,
        caller: &Caller,
        key_ref: &str,
        action: &str,
    ) -> Result<KeyMetadata> {
        let id = self.resolve(key_ref).await?;
        let (rec, _) = self.load(&id).await?;
        self.authorize(&rec, caller, action)?;
        Ok(KeyMetadata::from(&rec))
    }

    /// Points the existing alias `alias` at another key (the caller needs `kms:UpdateAlias`
    /// on both keys).
    pub async fn update_alias(&self, caller: &Caller, alias: &str, key_ref: &str) -> Result<()> {
        validate_alias(alias)?;
        if alias.starts_with("alias/aws/") {
            return Err(KmsError::Validation(format!(
                "{alias}: names beginning with alias/aws/ are reserved for keys the service manages"
            )));
        }
        let old = self.resolve(alias).await?;
        let (old_rec, _) = self.load(&old).await?;
        self.authorize(&old_rec, caller, "kms:UpdateAlias")?;
        let id = self.resolve(key_ref).await?;
        let (rec, _) = self.load(&id).await?;
        self.authorize(&rec, caller, "kms:UpdateAlias")?;
        if rec.state == KeyState::Deleted {
            return Err(KmsError::Deleted(id));
        }
        let body = serde_json::to_vec(&AliasRecord {
            alias: alias.into(),
            key_id: id,
        })
        .map_err(|e| KmsError::Record(alias.into(), e.to_string()))?;
        self.store
            .put_opts(
                &self.alias_path(alias),
                PutPayload::from(body),
                PutOptions::from(PutMode::Overwrite),
            )
            .await?;
        Ok(())
    }

    /// Adds or replaces tags of a key (at most [`MAX_TAGS`]; keys 1 to 128 characters,
    /// values at most 256, none beginning with `aws:`).
    pub async fn tag_resource(
        &self,
        caller: &Caller,
        key_ref: &str,
        tags: &[(String, String)],
    ) -> Result<()> {
        for (k, v) in tags {
            if k.is_empty() || k.chars().count() > 128 || v.chars().count() > 256 {
                return Err(KmsError::Validation(
                    "a tag key is 1 to 128 characters and a value at most 256".into(),
                ));
            }
            if k.starts_with("aws:") {
                return Err(KmsError::Tag(format!(
                    "tag keys beginning with aws: are reserved ({k})"
                )));
            }
        }
        self.change(caller, key_ref, "kms:TagResource", |r, _| {
            for (k, v) in tags {
                r.tags.insert(k.clone(), v.clone());
            }
            if r.tags.len() > MAX_TAGS {
                return Err(KmsError::Tag(format!(
                    "a key holds at most {MAX_TAGS} tags"
                )));
            }
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// Removes tags of a key by their keys (absent ones are ignored).
    pub async fn untag_resource(
        &self,
        caller: &Caller,
        key_ref: &str,
        keys: &[String],
    ) -> Result<()> {
        self.change(caller, key_ref, "kms:UntagResource", |r, _| {
            for k in keys {
                r.tags.remove(k);
            }
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// The tags of a key.
    pub async fn list_resource_tags(&self, caller: &Caller, key_ref: &str) -> Result<Context> {
        let id = self.resolve(key_ref).await?;
        let (rec, _) = self.load(&id).await?;
        self.authorize(&rec, caller, "kms:ListResourceTags")?;
        Ok(rec.tags)
    }

    /// A data key of `len` bytes (1 to 1024) under `key_ref`: its key id, the plaintext and
    /// the ciphertext blob.
    pub async fn generate_data_key_len(
        &self,
        caller: &Caller,
        key_ref: &str,
        ctx: &Context,
        len: usize,
    ) -> Result<(String, Zeroizing<Vec<u8>>, Vec<u8>)> {
        if !(1..=1024).contains(&len) {
            return Err(KmsError::Validation(format!(
                "a data key is 1 to 1024 bytes, not {len}"
            )));
        }
        let mut plaintext = Zeroizing::new(vec![0u8; len]);
        aead::random(&mut plaintext);
        let (key_id, ciphertext) = self
            .encrypt_with(caller, key_ref, "kms:GenerateDataKey", &plaintext, ctx)
            .await?;
        Ok((key_id, plaintext, ciphertext))
    }

    fn blob_aad(id: &uuid::Uuid, version: u32, ctx: &Context) -> Vec<u8> {
        let mut aad = b"vmie-kms-blob-v1\0".to_vec();
        aad.extend_from_slice(id.as_bytes());
        aad.extend_from_slice(&version.to_be_bytes());
        for (k, v) in ctx {
            for part in [k, v] {
                aad.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
                aad.extend_from_slice(part.as_bytes());
            }
        }
        aad
    }

    async fn encrypt_with(
        &self,
        caller: &Caller,
        key_ref: &str,
        action: &str,
        plaintext: &[u8],
        ctx: &Context,
    ) -> Result<(String, Vec<u8>)> {
        if plaintext.is_empty() || plaintext.len() > MAX_PLAINTEXT {
            return Err(KmsError::Validation(format!(
                "plaintext is 1 to {MAX_PLAINTEXT} bytes, not {}",
                plaintext.len()
            )));
        }
        let id = self.resolve(key_ref).await?;
        let (rec, _) = self.load(&id).await?;
        self.authorize(&rec, caller, action)?;
        Self::usable(&rec)?;
        let uuid =
            uuid::Uuid::parse_str(&id).map_err(|e| KmsError::Record(id.clone(), e.to_string()))?;
        let key = self.material(&rec, rec.current_version)?;
        let mut blob = Vec::with_capacity(BLOB_HEADER + plaintext.len() + aead::OVERHEAD);
        blob.extend_from_slice(BLOB_MAGIC);
        blob.extend_from_slice(uuid.as_bytes());
        blob.extend_from_slice(&rec.current_version.to_be_bytes());
        blob.extend_from_slice(
            &key.seal(&Self::blob_aad(&uuid, rec.current_version, ctx), plaintext),
        );
        Ok((id, blob))
    }

    /// Encrypts up to 4 KiB under a key.
    pub async fn encrypt(
        &self,
        caller: &Caller,
        key_ref: &str,
        plaintext: &[u8],
        ctx: &Context,
    ) -> Result<Vec<u8>> {
        Ok(self
            .encrypt_with(caller, key_ref, "kms:Encrypt", plaintext, ctx)
            .await?
            .1)
    }

    /// A fresh 256-bit data key and its ciphertext under `key_ref`.
    pub async fn generate_data_key(
        &self,
        caller: &Caller,
        key_ref: &str,
        ctx: &Context,
    ) -> Result<DataKey> {
        let plaintext = aead::random_key();
        let (key_id, ciphertext) = self
            .encrypt_with(
                caller,
                key_ref,
                "kms:GenerateDataKey",
                plaintext.as_ref(),
                ctx,
            )
            .await?;
        Ok(DataKey {
            key_id,
            plaintext,
            ciphertext,
        })
    }

    /// The key id a ciphertext blob names (without decrypting it).
    pub fn blob_key_id(blob: &[u8]) -> Result<String> {
        Ok(parse_blob(blob)?.0.hyphenated().to_string())
    }

    async fn open_blob(
        &self,
        caller: &Caller,
        blob: &[u8],
        ctx: &Context,
        action: &str,
    ) -> Result<(String, Zeroizing<Vec<u8>>)> {
        let (uuid, version, sealed) = parse_blob(blob)?;
        let id = uuid.hyphenated().to_string();
        let (rec, _) = match self.load(&id).await {
            Err(KmsError::NotFound(_)) => {
                return Err(KmsError::InvalidCiphertext(format!(
                    "it names key {id}, which does not exist here"
                )));
            }
            r => r?,
        };
        self.authorize(&rec, caller, action)?;
        Self::usable(&rec)?;
        let key = self.material(&rec, version)?;
        let plain = key
            .open(&Self::blob_aad(&uuid, version, ctx), sealed)
            .ok_or_else(|| {
                KmsError::InvalidCiphertext(
                    "it was altered, or the encryption context differs from the one used to encrypt".into(),
                )
            })?;
        Ok((id, plain))
    }

    /// Decrypts a ciphertext blob; returns the key id and the plaintext.
    pub async fn decrypt(
        &self,
        caller: &Caller,
        blob: &[u8],
        ctx: &Context,
    ) -> Result<(String, Zeroizing<Vec<u8>>)> {
        self.open_blob(caller, blob, ctx, "kms:Decrypt").await
    }

    /// Decrypts a data key blob into a 32-byte key.
    pub async fn decrypt_data_key(
        &self,
        caller: &Caller,
        blob: &[u8],
        ctx: &Context,
    ) -> Result<Zeroizing<[u8; 32]>> {
        let (_, plain) = self.decrypt(caller, blob, ctx).await?;
        let mut k = Zeroizing::new([0u8; 32]);
        if plain.len() != 32 {
            return Err(KmsError::InvalidCiphertext(
                "it does not hold a 256-bit data key".into(),
            ));
        }
        k.copy_from_slice(&plain);
        Ok(k)
    }

    /// Re-encrypts a blob under another key (or the same key's current version) without the
    /// plaintext leaving the service.
    pub async fn re_encrypt(
        &self,
        caller: &Caller,
        blob: &[u8],
        ctx: &Context,
        dest_key: &str,
        dest_ctx: &Context,
    ) -> Result<Vec<u8>> {
        let (_, plain) = self
            .open_blob(caller, blob, ctx, "kms:ReEncryptFrom")
            .await?;
        Ok(self
            .encrypt_with(caller, dest_key, "kms:ReEncryptTo", &plain, dest_ctx)
            .await?
            .1)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct AliasRecord {
    alias: String,
    key_id: String,
}

fn validate_alias(alias: &str) -> Result<()> {
    let ok = alias.len() <= 256
        && alias.len() > "alias/".len()
        && alias.starts_with("alias/")
        && alias
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(KmsError::Validation(
            "an alias is alias/NAME: letters, digits, '/', '_' and '-', at most 256 characters"
                .into(),
        ))
    }
}

fn parse_blob(blob: &[u8]) -> Result<(uuid::Uuid, u32, &[u8])> {
    if blob.len() < BLOB_HEADER + aead::OVERHEAD
        || blob.len() > BLOB_HEADER + aead::OVERHEAD + MAX_PLAINTEXT
        || &blob[..4] != BLOB_MAGIC
    {
        return Err(KmsError::InvalidCiphertext(
            "it is not a vmie KMS ciphertext blob".into(),
        ));
    }
    let mut id = [0u8; 16];
    id.copy_from_slice(&blob[4..20]);
    let version = u32::from_be_bytes([blob[20], blob[21], blob[22], blob[23]]);
    Ok((uuid::Uuid::from_bytes(id), version, &blob[BLOB_HEADER..]))
}
