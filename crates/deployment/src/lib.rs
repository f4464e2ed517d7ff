//! One deployment of vmie, assembled: the catalog, the object store, the root key, the key
//! service, the snapshot store, the sources, the task engine and the activity log of one
//! data folder. `vmie serve`, `vmie work`, `vmie admin`, the offline store commands and the
//! tests all open it with [`Deployment::open`] from one [`Config`], so they agree on where
//! each part lives and how the parts are wired (the key service and the engine report to the
//! activity log).
//!
//! Nothing here is process-global: two deployments (two data folders, or one folder under two
//! node names) can be open in one process. Settings come in as a [`Config`]; reading them
//! from flags, the environment or a file is the caller's business.
//!
//! Where things live in the data folder `DIR` (each can be moved by a setting):
//! - the catalog: `sqlite://DIR/catalog.db` ([`Config::catalog_url`]);
//! - the root key: `DIR/root.key`, made mode 0600 on first use ([`Config::root_key_file`],
//!   or `$VMIE_ROOT_KEY`, which the `kms` crate reads);
//! - the object store (snapshots under `snapshots/`, keys under `kms/`, the activity log's
//!   keys and chains under `trail/`): `DIR/objects/`, or the S3 service of [`Config::s3`];
//! - the buckets tasks read and write: `DIR/buckets/NAME/`, or the S3 service's
//!   ([`Config::buckets`]);
//! - the activity log's files: the bucket [`TrailSettings::bucket`];
//! - the intermediate volumes: [`EngineSettings::scratch_dir`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use api::audit::Audit;
use blockstore::{Backend, BlockStore, S3Config, StoreOptions};
use catalog::Catalog;
use engine::{Buckets, Engine, EngineConfig, Sources, UrlPolicy};
use kms::{Caller, Kms, KmsConfig, RootKey};
use trail::{Bucket, Trail, TrailConfig, TrailWriter};

/// Where the activity log's keys and node chains live in the object store.
pub const TRAIL_PREFIX: &str = "trail";

/// Where task buckets (`S3Bucket` names) point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BucketPlace {
    /// Folders `DIR/buckets/NAME`.
    #[default]
    Local,
    /// Buckets of the S3 service of [`Config::s3`].
    S3,
}

/// The activity log's settings.
#[derive(Debug, Clone)]
pub struct TrailSettings {
    /// The bucket of the log and digest files.
    pub bucket: String,
    /// The trail's name (in its ARN and its files' names).
    pub name: String,
    /// How long a CloudTrail digest period lasts.
    pub digest_interval: Duration,
    /// How often the digest signing key rotates.
    pub key_rotation: Duration,
}

impl Default for TrailSettings {
    fn default() -> Self {
        TrailSettings {
            bucket: trail::DEFAULT_BUCKET.into(),
            name: trail::DEFAULT_NAME.into(),
            digest_interval: Duration::from_secs(3600),
            key_rotation: Duration::from_secs(30 * 86_400),
        }
    }
}

/// The task engine's settings (when the deployment runs or submits tasks).
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// The folder of intermediate volumes: local disk, one per process.
    pub scratch_dir: PathBuf,
    /// Lease on a claimed task.
    pub lease: Duration,
    /// The boot check of imported images.
    pub boot_check: engine::BootCheckConfig,
    /// Networks `https://` sources may be fetched from although they are private.
    pub url_allow: Vec<ipnet::IpNet>,
    /// Extra CA certificates (PEM file) trusted for `https://` sources.
    pub url_ca_file: Option<PathBuf>,
    /// The buckets kept encrypted at rest and their KMS keys (`bucket_keys`; an empty key:
    /// `alias/aws/s3`), see [`engine::Sources::with_bucket_keys`].
    pub bucket_keys: std::collections::BTreeMap<String, String>,
}

impl EngineSettings {
    /// Defaults, with intermediate volumes in `DIR/scratch`.
    #[must_use]
    pub fn new(data_dir: &Path) -> Self {
        EngineSettings {
            scratch_dir: data_dir.join("scratch"),
            lease: Duration::from_secs(60),
            boot_check: engine::BootCheckConfig::default(),
            url_allow: Vec::new(),
            url_ca_file: None,
            bucket_keys: std::collections::BTreeMap::new(),
        }
    }
}

/// Everything [`Deployment::open`] needs to know.
#[derive(Debug, Clone)]
pub struct Config {
    /// The data folder.
    pub data_dir: PathBuf,
    /// The region ARNs name.
    pub region: String,
    /// The account the deployment's own commands act in (and the key service's default).
    pub account: String,
    /// The catalog's URL (`sqlite://PATH` or `postgres://…`); default `sqlite://DIR/catalog.db`.
    pub catalog_url: Option<String>,
    /// The root key file; default `DIR/root.key`.
    pub root_key_file: Option<PathBuf>,
    /// The S3 service that holds the object store (and, with [`BucketPlace::S3`], the
    /// buckets); `None`: the folder `DIR/objects`.
    pub s3: Option<S3Config>,
    /// Where task buckets point.
    pub buckets: BucketPlace,
    /// The activity log.
    pub trail: TrailSettings,
    /// Open the task engine too.
    pub engine: Option<EngineSettings>,
    /// Attach to the activity log as this node: from then on the key service's key uses and
    /// the engine's task events are recorded. `None`: not attached.
    pub node: Option<String>,
    /// The zstd level of snapshot chunks (`snapshot_zstd_level`): 1 by default; negative
    /// levels compress faster and less, higher ones slower and more. Only new chunks follow
    /// a change; every level reads back the same.
    pub snapshot_zstd_level: i32,
}

impl Config {
    /// Defaults for the data folder `data_dir`: region us-east-1, account 000000000000,
    /// everything in the folder, no engine, not attached to the activity log.
    #[must_use]
    pub fn new(data_dir: &Path) -> Self {
        Config {
            data_dir: data_dir.to_path_buf(),
            region: "us-east-1".into(),
            account: "000000000000".into(),
            catalog_url: None,
            root_key_file: None,
            s3: None,
            buckets: BucketPlace::Local,
            trail: TrailSettings::default(),
            engine: None,
            node: None,
            snapshot_zstd_level: StoreOptions::default().zstd_level,
        }
    }

    /// Where the root key file is (when it does not come from `$VMIE_ROOT_KEY`).
    #[must_use]
    pub fn root_key_path(&self) -> PathBuf {
        self.root_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("root.key"))
    }
}

/// Why a deployment did not open. The messages are the ones `vmie` prints.
#[derive(Debug, thiserror::Error)]
pub enum DeploymentError {
    /// A file or folder of the deployment.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// What happened.
        source: std::io::Error,
    },
    /// A setting that cannot work.
    #[error("{0}")]
    Setting(String),
    /// The catalog.
    #[error("{0}")]
    Catalog(#[from] catalog::CatalogError),
    /// The object store or the snapshot store.
    #[error("{}", store_message(.0))]
    Store(#[from] blockstore::StoreError),
    /// The root key or the key service.
    #[error("{}: {}", .0.code(), .0)]
    Kms(#[from] kms::KmsError),
    /// The engine's sources.
    #[error("{}: {}", .0.code(), .0)]
    Engine(#[from] engine::EngineError),
    /// The activity log.
    #[error("activity log: {0}")]
    Trail(#[from] trail::TrailError),
}

/// A store error with its code and its chain of causes.
fn store_message(e: &blockstore::StoreError) -> String {
    let mut message = format!("{}: {e}", e.code());
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        message.push_str(": ");
        message.push_str(&s.to_string());
        src = s.source();
    }
    message
}

type Result<T> = std::result::Result<T, DeploymentError>;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DeploymentError + '_ {
    move |source| DeploymentError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Makes the data folder (if needed) accessible to its owner only: 0700, also when an
/// earlier version (or the umask) left it open to others. Returns the mode it had then,
/// which the caller should report.
pub fn private_dir(data_dir: &Path) -> Result<Option<u32>> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(data_dir).map_err(io_err(data_dir))?;
    let mode = std::fs::metadata(data_dir)
        .map_err(io_err(data_dir))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 == 0 {
        return Ok(None);
    }
    std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io_err(data_dir))?;
    Ok(Some(mode))
}

/// The catalog of `cfg` (the data folder made private first: the default catalog is in it).
pub async fn open_catalog(cfg: &Config) -> Result<Catalog> {
    private_dir(&cfg.data_dir)?;
    let url = cfg
        .catalog_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", cfg.data_dir.join("catalog.db").display()));
    Ok(Catalog::open(&url).await?)
}

/// The root key of `cfg`: `$VMIE_ROOT_KEY`, else its file (made on first use).
pub fn root_key(cfg: &Config) -> Result<Arc<RootKey>> {
    Ok(Arc::new(RootKey::from_env_or_file(&cfg.root_key_path())?))
}

/// The object store of `cfg`.
pub fn open_objects(cfg: &Config) -> Result<Arc<dyn object_store::ObjectStore>> {
    let backend = match &cfg.s3 {
        Some(c) => Backend::S3(c.clone()),
        None => Backend::Local {
            root: cfg.data_dir.join("objects"),
        },
    };
    Ok(backend.open()?)
}

/// The activity log of `cfg` (for reading and verifying; [`Deployment::open`] attaches a
/// writer to it when [`Config::node`] is set).
pub fn open_trail(
    cfg: &Config,
    objects: Arc<dyn object_store::ObjectStore>,
    root: &Arc<RootKey>,
    catalog: &Catalog,
) -> Result<Arc<Trail>> {
    let t = &cfg.trail;
    if engine::request::check_bucket("trail.bucket", &t.bucket).is_err() {
        return Err(DeploymentError::Setting(format!(
            "trail.bucket is {:?}: not a bucket name",
            t.bucket
        )));
    }
    if !valid_trail_name(&t.name) {
        return Err(DeploymentError::Setting(format!(
            "trail.name is {:?}: letters, digits, '-', '_' and '.' only, at most 128",
            t.name
        )));
    }
    let bucket = match cfg.buckets {
        BucketPlace::S3 => {
            let store = Backend::S3(S3Config {
                bucket: t.bucket.clone(),
                ..s3_service(cfg)?
            })
            .open()?;
            Bucket::s3(&t.bucket, store)
        }
        BucketPlace::Local => Bucket::local(&cfg.data_dir.join("buckets"), &t.bucket)
            .map_err(|e| DeploymentError::Setting(e.to_string()))?,
    };
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let trail_cfg = TrailConfig {
        name: t.name.clone(),
        region: cfg.region.clone(),
        account: cfg.account.clone(),
        digest_interval_ms: ms(t.digest_interval),
        key_rotation_ms: ms(t.key_rotation),
    };
    Ok(Arc::new(Trail::new(
        objects,
        TRAIL_PREFIX,
        bucket,
        root.clone(),
        Some(catalog.clone()),
        trail_cfg,
    )))
}

fn valid_trail_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The S3 service, which `buckets = s3` needs.
fn s3_service(cfg: &Config) -> Result<S3Config> {
    cfg.s3.clone().ok_or_else(|| {
        DeploymentError::Setting(
            "buckets = s3 needs the S3 service: set s3.bucket (VMIE_S3_BUCKET) and s3.endpoint"
                .into(),
        )
    })
}

/// A node name made only of characters safe in an object path.
#[must_use]
pub fn node_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(100)
        .collect()
}

/// This machine's name, for default node names.
#[must_use]
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "vmie".into())
}

/// An open deployment: its parts, wired together.
#[derive(Debug)]
pub struct Deployment {
    /// What it was opened with.
    pub config: Config,
    /// The object store (snapshots, keys, the activity log's chains).
    pub objects: Arc<dyn object_store::ObjectStore>,
    /// The root key every other key is sealed under.
    pub root: Arc<RootKey>,
    /// The key service.
    pub kms: Kms,
    /// The account root of [`Config::account`], for the deployment's own commands.
    pub caller: Caller,
    /// The snapshot store.
    pub store: BlockStore,
    /// The catalog.
    pub catalog: Catalog,
    /// The task engine, when [`Config::engine`] asked for it.
    pub engine: Option<Engine>,
    /// The activity log's writer for [`Config::node`], when attached.
    pub audit: Option<Arc<Audit>>,
}

impl Deployment {
    /// Opens every part `cfg` names, in dependency order: the data folder (made private),
    /// the catalog, the object store, the root key, the key service, the snapshot store, the
    /// engine (with its sources) when asked, and the activity log's writer when a node is
    /// named — the key service and the engine then report to it.
    pub async fn open(cfg: &Config) -> Result<Deployment> {
        let catalog = open_catalog(cfg).await?;
        let objects = open_objects(cfg)?;
        let root = root_key(cfg)?;
        let kms_cfg = KmsConfig {
            region: cfg.region.clone(),
            account: cfg.account.clone(),
        };
        let caller = Caller::account_root(&cfg.account);
        let kms = Kms::new(objects.clone(), "kms", root.clone(), kms_cfg);
        let store = BlockStore::new(
            objects.clone(),
            "snapshots",
            kms.clone(),
            StoreOptions {
                zstd_level: cfg.snapshot_zstd_level,
                ..StoreOptions::default()
            },
        )?;
        let engine = match &cfg.engine {
            Some(e) => Some(open_engine(cfg, e, catalog.clone(), store.clone())?),
            None => None,
        };
        let mut d = Deployment {
            config: cfg.clone(),
            objects,
            root,
            kms,
            caller,
            store,
            catalog,
            engine,
            audit: None,
        };
        if let Some(node) = &cfg.node {
            d.attach(node).await?;
        }
        Ok(d)
    }

    /// The engine, when [`Config::engine`] asked for it.
    #[must_use]
    pub fn engine(&self) -> Option<&Engine> {
        self.engine.as_ref()
    }

    /// The activity log, for reading and verifying.
    pub fn trail(&self) -> Result<Arc<Trail>> {
        open_trail(
            &self.config,
            self.objects.clone(),
            &self.root,
            &self.catalog,
        )
    }

    /// Attaches the deployment to the activity log as `node`: the key service's key uses
    /// and the engine's task events are recorded from now on.
    async fn attach(&mut self, node: &str) -> Result<()> {
        let trail = self.trail()?;
        let writer = TrailWriter::open(trail, &node_name(node)).await?;
        let audit = Arc::new(Audit::new(Arc::new(writer), &self.config.region));
        let a = audit.clone();
        self.kms
            .set_observer(kms::Observer(Arc::new(move |u| a.key_use(u))));
        if let Some(e) = &self.engine {
            let a = audit.clone();
            e.set_event_hook(engine::EventHook(Arc::new(move |ev| a.task_event(ev))));
        }
        self.audit = Some(audit);
        Ok(())
    }

    /// Writes what the activity log queued (at the end of every command, and periodically
    /// in long ones). Nothing to do when not attached.
    pub async fn flush(&self) -> std::result::Result<(), trail::TrailError> {
        match &self.audit {
            Some(a) => a.flush().await,
            None => Ok(()),
        }
    }
}

/// The engine: its sources (the buckets and the URL policy) and its configuration.
fn open_engine(
    cfg: &Config,
    e: &EngineSettings,
    catalog: Catalog,
    store: BlockStore,
) -> Result<Engine> {
    let ca_pem = e
        .url_ca_file
        .as_ref()
        .map(|p| std::fs::read(p).map_err(io_err(p)))
        .transpose()?;
    let buckets = match cfg.buckets {
        BucketPlace::Local => {
            let root = cfg.data_dir.join("buckets");
            std::fs::create_dir_all(&root).map_err(io_err(&root))?;
            Buckets::Local { root }
        }
        BucketPlace::S3 => Buckets::S3(s3_service(cfg)?),
    };
    let policy = UrlPolicy {
        allow: e.url_allow.clone(),
        ca_pem,
    };
    let sources = Sources::new(buckets, &policy)?.with_bucket_keys(e.bucket_keys.clone());
    let mut ecfg = EngineConfig::new(e.scratch_dir.clone());
    ecfg.lease = e.lease.max(Duration::from_secs(1));
    ecfg.boot_check = e.boot_check.clone();
    Ok(Engine::new(catalog, store, sources, ecfg))
}

#[cfg(test)]
mod tests;
