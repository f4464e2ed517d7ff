//! Object store backends: a local folder (the embedded default) or any S3-compatible endpoint.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::{BackoffConfig, ObjectStore, RetryConfig};

use crate::error::{Result, StoreError};

/// Where objects live.
#[derive(Debug, Clone)]
pub enum Backend {
    /// A folder on the local filesystem (created if missing).
    Local {
        /// The folder.
        root: std::path::PathBuf,
    },
    /// An S3-compatible service.
    S3(S3Config),
}

/// Settings of an S3-compatible backend. Credentials that are `None` come from the
/// environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`).
#[derive(Clone, Default)]
pub struct S3Config {
    /// Bucket name.
    pub bucket: String,
    /// Region, e.g. `us-east-1`.
    pub region: String,
    /// Endpoint URL, e.g. `https://s3.example.internal:9000`; AWS when `None`.
    pub endpoint: Option<String>,
    /// Path-style requests (`https://host/bucket/key`), which MinIO, Ceph and Garage expect.
    pub path_style: bool,
    /// Allow a plain `http://` endpoint (loopback test servers only).
    pub allow_http: bool,
    /// Access key id.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
    /// Session token.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("path_style", &self.path_style)
            .field("allow_http", &self.allow_http)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Retries with exponential backoff and jitter: 100 ms doubling up to 5 s, at most 8
/// attempts within 2 minutes.
#[must_use]
pub fn retry_policy() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: 8,
        retry_timeout: Duration::from_secs(120),
    }
}

impl Backend {
    /// Opens the backend.
    pub fn open(&self) -> Result<Arc<dyn ObjectStore>> {
        match self {
            Backend::Local { root } => {
                std::fs::create_dir_all(root).map_err(|e| {
                    StoreError::Invalid(format!("cannot create {}: {e}", root.display()))
                })?;
                // Durable when a write returns, as an S3 acknowledgement is: each object and
                // the folders it was added to are flushed (a manifest is written only after
                // its chunks, so a published snapshot survives a power loss whole).
                Ok(Arc::new(
                    LocalFileSystem::new_with_prefix(root)?.with_fsync(true),
                ))
            }
            Backend::S3(c) => {
                if let Some(ep) = &c.endpoint
                    && ep.starts_with("http://")
                    && !c.allow_http
                {
                    return Err(StoreError::Invalid(format!(
                        "the S3 endpoint {ep} is plain HTTP; use https, or allow HTTP explicitly for a loopback test server"
                    )));
                }
                let mut b = AmazonS3Builder::from_env()
                    .with_bucket_name(&c.bucket)
                    .with_region(&c.region)
                    .with_virtual_hosted_style_request(!c.path_style)
                    .with_allow_http(c.allow_http)
                    .with_retry(retry_policy());
                if let Some(ep) = &c.endpoint {
                    b = b.with_endpoint(ep);
                }
                if let Some(k) = &c.access_key_id {
                    b = b.with_access_key_id(k);
                }
                if let Some(s) = &c.secret_access_key {
                    b = b.with_secret_access_key(s);
                }
                if let Some(t) = &c.session_token {
                    b = b.with_token(t);
                }
                Ok(Arc::new(b.build()?))
            }
        }
    }
}
