//! vmie's activity log: where its records go and how their integrity is shown.
//!
//! The records themselves (their shape, their redaction) are made by the API (`api::audit`);
//! this crate stores and checks them:
//!
//! - **Log files in CloudTrail's layout** ([`TrailWriter`]): each node queues records and
//!   writes them, per account, as `{"Records": [...]}` gzip files in the trail bucket the
//!   deployment names, under
//!   `AWSLogs/<account>/CloudTrail/<region>/YYYY/MM/DD/<account>_CloudTrail_<region>_<YYYYMMDDTHHmmZ>_<unique>.json.gz`,
//!   so that tools that read CloudTrail from S3 read vmie's log as is.
//! - **CloudTrail digest files** ([`Trail::make_digests`], `digest.rs`): one per account and
//!   digest period (an hour by default), even for a period without log files, naming each
//!   log file with the SHA-256 of its content, chained by the previous digest's signature and
//!   signed SHA256withRSA with a key of the deployment ([`keys`], sealed under the root key,
//!   rotated), the signature in the object's `x-amz-meta-signature` — what
//!   `aws cloudtrail validate-logs` checks.
//! - **Each node's own chain** (`node.rs`): every write of a node is covered by an Ed25519
//!   signed digest linking to the node's previous one, with the chain's head kept in the
//!   catalog, so that `vmie trail verify` ([`verify`]) names deleted, altered, inserted or
//!   reordered files and chains cut short, which digests alone cannot show.
//!
//! Logs written before the CloudTrail layout (`trail/batches/…` in the deployment's object
//! store) stay readable and are verified with the rest: a node's chain continues across the
//! change.

mod bucket;
mod digest;
pub mod keys;
mod node;
#[cfg(test)]
mod tests;
mod times;
mod verify;

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::path::Path;

pub use bucket::Bucket;
pub use digest::{LogFile, TrailStatus};
pub use keys::PublicKeyInfo;
pub use node::{HEADS, TrailWriter};
pub use times::{iso, parse_iso};
pub use verify::{VerifyReport, records, verify};

/// Errors of the activity log's storage.
#[derive(Debug, thiserror::Error)]
pub enum TrailError {
    /// The object store failed.
    #[error("activity log store: {0}")]
    Store(#[from] object_store::Error),
    /// The signing key could not be made, opened or used.
    #[error("activity log signing key: {0}")]
    Key(String),
    /// A record did not serialize, or a file did not compress.
    #[error("activity log: {0}")]
    Encode(String),
    /// The catalog, which keeps the chain heads, failed.
    #[error("activity log chain heads: {0}")]
    Heads(#[from] catalog::CatalogError),
    /// The trail bucket could not be used.
    #[error("activity log bucket: {0}")]
    Bucket(String),
}

/// How a deployment's trail is set up.
#[derive(Debug, Clone)]
pub struct TrailConfig {
    /// The trail's name (its ARN ends `trail/<name>`; digest files carry it).
    pub name: String,
    /// The region the deployment serves (log and digest paths carry it).
    pub region: String,
    /// The deployment's own account: records that name no account are delivered to it.
    pub account: String,
    /// How long a digest period lasts (ms); CloudTrail's is an hour.
    pub digest_interval_ms: i64,
    /// How long a digest signing key is used before the next one (ms).
    pub key_rotation_ms: i64,
}

impl Default for TrailConfig {
    fn default() -> Self {
        TrailConfig {
            name: DEFAULT_NAME.into(),
            region: "us-east-1".into(),
            account: "000000000000".into(),
            digest_interval_ms: 3_600_000,
            key_rotation_ms: DEFAULT_KEY_ROTATION_MS,
        }
    }
}

/// The trail's default name.
pub const DEFAULT_NAME: &str = "vmie";
/// The trail bucket's default name.
pub const DEFAULT_BUCKET: &str = "trail";
/// Signing keys are rotated every 30 days by default.
pub const DEFAULT_KEY_ROTATION_MS: i64 = 30 * 86_400_000;

/// A deployment's activity log: the internal store (signing keys, the nodes' chains, logs of
/// the old layout), the trail bucket (log and digest files), the root key and the catalog.
pub struct Trail {
    pub(crate) objects: Arc<dyn ObjectStore>,
    pub(crate) prefix: Path,
    pub(crate) bucket: Bucket,
    pub(crate) root: Arc<kms::RootKey>,
    pub(crate) catalog: Option<catalog::Catalog>,
    pub(crate) cfg: TrailConfig,
    pub(crate) keys: keys::KeyCache,
}

impl std::fmt::Debug for Trail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trail")
            .field("prefix", &self.prefix)
            .field("bucket", &self.bucket.name())
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl Trail {
    /// The trail of a deployment: internal objects under `prefix` of `objects`, files in
    /// `bucket`. Without `catalog`, no chain heads are kept and no digests are made (tests).
    #[must_use]
    pub fn new(
        objects: Arc<dyn ObjectStore>,
        prefix: &str,
        bucket: Bucket,
        root: Arc<kms::RootKey>,
        catalog: Option<catalog::Catalog>,
        cfg: TrailConfig,
    ) -> Trail {
        Trail {
            objects,
            prefix: Path::from(prefix),
            bucket,
            root,
            catalog,
            cfg,
            keys: keys::KeyCache::default(),
        }
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &TrailConfig {
        &self.cfg
    }

    /// The trail bucket.
    #[must_use]
    pub fn bucket(&self) -> &Bucket {
        &self.bucket
    }

    /// The trail's ARN in `account`.
    #[must_use]
    pub fn arn(&self, account: &str) -> String {
        format!(
            "arn:aws:cloudtrail:{}:{account}:trail/{}",
            self.cfg.region, self.cfg.name
        )
    }

    pub(crate) fn internal(&self, parts: &[&str]) -> Path {
        let mut p = self.prefix.clone();
        for part in parts {
            p = p.join(*part);
        }
        p
    }
}

pub(crate) fn sha256_hex(b: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b))
}

/// Gzip of `data`.
pub(crate) fn gzip(data: &[u8]) -> Result<Vec<u8>, TrailError> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(data)
        .map_err(|e| TrailError::Encode(e.to_string()))?;
    gz.finish().map_err(|e| TrailError::Encode(e.to_string()))
}

/// Longest inflated file read back (a node delivers every 5 seconds: its files are far
/// smaller); a longer one reads as cut short, so its hash does not match.
pub(crate) const MAX_INFLATED: u64 = 64 << 20;

/// The content of a gzip file, bounded.
pub(crate) fn gunzip(data: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .take(MAX_INFLATED)
        .read_to_end(&mut out)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// What `vmie trail verify` makes of one file of the trail bucket or of a node's chain,
/// taken from anyone who could write there: a CloudTrail digest (gzip JSON), a log file
/// (gzip `{"Records": [...]}`), a node digest, a time. Whether each parsed; never a panic,
/// never more than [`MAX_INFLATED`] bytes inflated (the fuzz target `trail_files` drives it).
#[doc(hidden)]
#[must_use]
pub fn parse_untrusted(data: &[u8]) -> [bool; 4] {
    let inflated = gunzip(data).unwrap_or_default();
    let digest = serde_json::from_slice::<digest::Digest>(&inflated).is_ok();
    let log = serde_json::from_slice::<serde_json::Value>(&inflated)
        .is_ok_and(|v| v.get("Records").is_some_and(serde_json::Value::is_array));
    let node = node::AnyDigest::parse(data).is_some();
    let time = std::str::from_utf8(data).is_ok_and(|s| parse_iso(s).is_some());
    [digest, log, node, time]
}
