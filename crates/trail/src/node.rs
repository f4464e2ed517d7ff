//! Each node's own chain, and the writer that delivers its records.
//!
//! Every write of a node (one log file per account in the trail bucket, see
//! [`crate::Trail`]) is covered by a digest that lists the files with the SHA-256 of each
//! stored object and the SHA-256 of the node's previous digest, signed with the
//! deployment's Ed25519 key. The key is made on first use and stored sealed under the root
//! key. [`crate::verify`] walks every node's chain and names each file or digest that was
//! deleted, altered, inserted or reordered.
//!
//! Internal layout under the prefix (`trail/` in the deployment's object store):
//!
//! ```text
//! signing.key                        the Ed25519 key (PKCS#8), sealed under the root key
//! digests/<node>/<seq>.json          {"body": {node, seq, files, previous_sha256, created_ms}, "signature": hex}
//! batches/<node>/<seq>.json.gz       records of the old layout (before the CloudTrail layout)
//! keys/<period>.key                  digest signing keys (RSA), see [`crate::keys`]
//! ```
//!
//! `<seq>` is 16 decimal digits and starts at 1 for each node; a node continues its chain
//! from its last digest when it restarts, across the change of layout too.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::digest::{LogFile, event_range};
use crate::times::{compact_minute, day_path};
use crate::{Trail, TrailError, gzip, sha256_hex};

const KEY_AAD: &[u8] = b"vmie trail signing key";
/// Catalog settings "account" under which each node's chain head is kept.
pub const HEADS: &str = "vmie:trail-heads";

/// What a digest of the old layout says (signed): one batch of records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LegacyBody {
    pub node: String,
    pub seq: u64,
    pub batch: String,
    pub batch_sha256: String,
    pub records: u64,
    pub previous_sha256: Option<String>,
    pub created_ms: i64,
}

/// A file one write of a node delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FileRef {
    /// Its key in the trail bucket.
    pub key: String,
    /// Hex SHA-256 of the stored (compressed) object.
    pub sha256: String,
    /// Records it holds.
    pub records: u64,
}

/// What a node's digest says (signed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NodeBody {
    pub node: String,
    pub seq: u64,
    pub files: Vec<FileRef>,
    pub previous_sha256: Option<String>,
    pub created_ms: i64,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct DigestFile<B> {
    pub body: B,
    pub signature: String,
}

/// A node digest of either layout.
pub(crate) enum AnyDigest {
    Legacy(DigestFile<LegacyBody>),
    Files(DigestFile<NodeBody>),
}

impl AnyDigest {
    pub(crate) fn parse(b: &[u8]) -> Option<AnyDigest> {
        serde_json::from_slice(b)
            .map(AnyDigest::Files)
            .or_else(|_| serde_json::from_slice(b).map(AnyDigest::Legacy))
            .ok()
    }

    /// Node, sequence, signed bytes, signature.
    pub(crate) fn signed(&self) -> (&str, u64, Vec<u8>, &str) {
        match self {
            AnyDigest::Legacy(f) => (
                &f.body.node,
                f.body.seq,
                serde_json::to_vec(&f.body).unwrap_or_default(),
                &f.signature,
            ),
            AnyDigest::Files(f) => (
                &f.body.node,
                f.body.seq,
                serde_json::to_vec(&f.body).unwrap_or_default(),
                &f.signature,
            ),
        }
    }

    pub(crate) fn previous(&self) -> Option<&String> {
        match self {
            AnyDigest::Legacy(f) => f.body.previous_sha256.as_ref(),
            AnyDigest::Files(f) => f.body.previous_sha256.as_ref(),
        }
    }
}

struct Chain {
    seq: u64,
    previous_sha256: Option<String>,
    buffer: Vec<Value>,
}

/// Writes records for one node.
pub struct TrailWriter {
    trail: Arc<Trail>,
    node: String,
    key: Ed25519KeyPair,
    fingerprint: aws_lc_rs::hmac::Key,
    chain: tokio::sync::Mutex<Chain>,
    pending: Mutex<Vec<Value>>,
}

impl std::fmt::Debug for TrailWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrailWriter")
            .field("trail", &self.trail)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// Loads the node chains' signing key, making it on first use; with it, the key of the
/// fingerprints of redacted values (derived from it, so every node fingerprints alike).
pub(crate) async fn signing_key(
    trail: &Trail,
) -> Result<(Ed25519KeyPair, aws_lc_rs::hmac::Key), TrailError> {
    let store = &trail.objects;
    let path = trail.internal(&["signing.key"]);
    let root = &trail.root;
    let sealed = match store.get(&path).await {
        Ok(r) => r.bytes().await?.to_vec(),
        Err(object_store::Error::NotFound { .. }) => {
            let rng = aws_lc_rs::rand::SystemRandom::new();
            let pkcs8 =
                Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| TrailError::Key(e.to_string()))?;
            let sealed = root.seal(KEY_AAD, pkcs8.as_ref());
            match store
                .put_opts(
                    &path,
                    PutPayload::from(sealed.clone()),
                    object_store::PutOptions::from(object_store::PutMode::Create),
                )
                .await
            {
                Ok(_) => sealed,
                // Another node made it first: use theirs.
                Err(object_store::Error::AlreadyExists { .. }) => {
                    store.get(&path).await?.bytes().await?.to_vec()
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(e) => return Err(e.into()),
    };
    let pkcs8 = root
        .open(KEY_AAD, &sealed)
        .ok_or_else(|| TrailError::Key("it does not open under this root key".into()))?;
    let derive = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &pkcs8);
    let fp = aws_lc_rs::hmac::sign(&derive, b"vmie trail fingerprint key");
    Ok((
        Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|e| TrailError::Key(e.to_string()))?,
        aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, fp.as_ref()),
    ))
}

/// A chain head as the catalog keeps it: `"<seq> <digest sha256>"`.
pub(crate) fn parse_head(v: &str) -> Option<(u64, String)> {
    let (seq, sha) = v.split_once(' ')?;
    Some((seq.parse().ok()?, sha.to_string()))
}

pub(crate) fn seq_of(p: &Path) -> Option<u64> {
    p.filename()?.split('.').next()?.parse().ok()
}

/// The account a record is delivered to: its `recipientAccountId` when that is a plain
/// account id, else the deployment's.
fn account_of<'a>(r: &'a Value, default: &'a str) -> &'a str {
    r["recipientAccountId"]
        .as_str()
        .filter(|a| {
            !a.is_empty()
                && a.len() <= 64
                && a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        .unwrap_or(default)
}

/// Whether a record is delivered although its account's logging is stopped: the calls that
/// start and stop it.
fn always_delivered(r: &Value) -> bool {
    r["eventSource"] == "cloudtrail.amazonaws.com"
        && matches!(
            r["eventName"].as_str(),
            Some("StartLogging" | "StopLogging")
        )
}

/// 16 random letters and digits: the `<unique>` part of a log file's name.
fn unique() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut b = [0u8; 16];
    kms::aead::random(&mut b);
    b.iter()
        .map(|x| ALPHABET[usize::from(*x) % ALPHABET.len()] as char)
        .collect()
}

impl TrailWriter {
    /// A writer for `node`, continuing the node's chain where it ended. With the trail's
    /// catalog, each flush also records the chain's head there, so that deleting the
    /// newest files of a chain (which leaves no gap in it) is still caught by
    /// [`crate::verify`]; a chain whose newest files are gone continues after the recorded
    /// head.
    pub async fn open(trail: Arc<Trail>, node: &str) -> Result<TrailWriter, TrailError> {
        let (key, fingerprint) = signing_key(&trail).await?;
        let digests: Vec<_> = trail
            .objects
            .list(Some(&trail.internal(&["digests", node])))
            .try_collect()
            .await?;
        let last = digests
            .iter()
            .filter_map(|m| seq_of(&m.location).map(|s| (s, m.location.clone())))
            .max_by_key(|(s, _)| *s);
        let (seq, previous_sha256) = match last {
            Some((s, path)) => {
                let bytes = trail.objects.get(&path).await?.bytes().await?;
                (s, Some(sha256_hex(&bytes)))
            }
            None => (0, None),
        };
        let head = match &trail.catalog {
            Some(c) => c
                .setting(HEADS, node)
                .await?
                .as_deref()
                .and_then(parse_head),
            None => None,
        };
        let (seq, previous_sha256) = match head {
            Some((hs, sha)) if hs > seq => (hs, Some(sha)),
            _ => (seq, previous_sha256),
        };
        Ok(TrailWriter {
            trail,
            node: node.to_string(),
            key,
            fingerprint,
            chain: tokio::sync::Mutex::new(Chain {
                seq,
                previous_sha256,
                buffer: Vec::new(),
            }),
            pending: Mutex::new(Vec::new()),
        })
    }

    /// Queues a record for the next write.
    pub fn record(&self, r: Value) {
        if let Ok(mut p) = self.pending.lock() {
            p.push(r);
        }
    }

    /// The key of a log file of `account` delivered at `now_ms`.
    fn log_key(&self, account: &str, now_ms: i64) -> String {
        let r = &self.trail.cfg.region;
        format!(
            "AWSLogs/{account}/CloudTrail/{r}/{}/{account}_CloudTrail_{r}_{}_{}.json.gz",
            day_path(now_ms),
            compact_minute(now_ms),
            unique()
        )
    }

    /// Writes the queued records — one log file per account, covered by one signed node
    /// digest. Writes of one node are made one at a time, in order. The sequence number of
    /// the node digest written (`None`: nothing was queued). CloudTrail digests are made
    /// apart ([`Trail::make_digests`]).
    pub async fn flush(&self) -> Result<Option<u64>, TrailError> {
        let mut chain = self.chain.lock().await;
        if let Ok(mut p) = self.pending.lock() {
            chain.buffer.append(&mut p);
        }
        if chain.buffer.is_empty() {
            return Ok(None);
        }
        let stopped = self.trail.stopped().await?;
        let default = self.trail.cfg.account.clone();
        let mut by_account: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for r in &chain.buffer {
            let account = account_of(r, &default);
            // A record's time is whole seconds: one made in the second logging stopped or
            // started again is delivered.
            let made = r["eventTime"]
                .as_str()
                .and_then(crate::times::parse_iso)
                .unwrap_or_else(catalog::now_ms);
            if stopped.iter().any(|s| s.covers(account, made)) && !always_delivered(r) {
                continue;
            }
            by_account
                .entry(account.to_string())
                .or_default()
                .push(r.clone());
        }
        let now = catalog::now_ms();
        let mut files = Vec::new();
        let mut delivered = Vec::new();
        for (account, records) in by_account {
            let content = serde_json::to_vec(&serde_json::json!({ "Records": records }))
                .map_err(|e| TrailError::Encode(e.to_string()))?;
            let (oldest, newest) = event_range(&records);
            let stored = gzip(&content)?;
            let key = self.log_key(&account, now);
            let sha = sha256_hex(&stored);
            self.trail.bucket.put(&key, stored, &[]).await?;
            files.push(FileRef {
                key: key.clone(),
                sha256: sha,
                records: records.len() as u64,
            });
            delivered.push((
                account,
                LogFile {
                    s3_bucket: self.trail.bucket.name().to_string(),
                    s3_object: key,
                    hash_value: sha256_hex(&content),
                    hash_algorithm: "SHA-256".into(),
                    newest_event_time: newest,
                    oldest_event_time: oldest,
                },
            ));
        }
        if files.is_empty() {
            // Every record belonged to a stopped trail.
            chain.buffer.clear();
            return Ok(None);
        }
        let seq = chain.seq + 1;
        let body = NodeBody {
            node: self.node.clone(),
            seq,
            files,
            previous_sha256: chain.previous_sha256.clone(),
            created_ms: now,
        };
        let signed = serde_json::to_vec(&body).map_err(|e| TrailError::Encode(e.to_string()))?;
        let file = DigestFile {
            signature: hex::encode(self.key.sign(&signed).as_ref()),
            body,
        };
        let digest = serde_json::to_vec(&file).map_err(|e| TrailError::Encode(e.to_string()))?;
        let digest_path = self
            .trail
            .internal(&["digests", &self.node, &format!("{seq:016}.json")]);
        self.trail
            .objects
            .put(&digest_path, PutPayload::from(digest.clone()))
            .await?;
        chain.seq = seq;
        let digest_sha = sha256_hex(&digest);
        chain.previous_sha256 = Some(digest_sha.clone());
        chain.buffer.clear();
        if let Some(c) = &self.trail.catalog {
            c.set_setting(HEADS, &self.node, &format!("{seq} {digest_sha}"))
                .await?;
        }
        for (account, f) in delivered {
            self.trail.delivered(&account, &[f], now).await?;
        }
        Ok(Some(seq))
    }

    /// This writer's node.
    #[must_use]
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The trail it writes to.
    #[must_use]
    pub fn trail(&self) -> &Arc<Trail> {
        &self.trail
    }

    /// Records queued and not yet written.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.pending.lock().map_or(0, |p| p.len())
    }

    /// A keyed fingerprint of `value` (HMAC-SHA256 under a key only the deployment holds,
    /// first 128 bits in hex): equal values can be matched across records without the
    /// value being recoverable from the log.
    #[must_use]
    pub fn fingerprint(&self, value: &str) -> String {
        let tag = aws_lc_rs::hmac::sign(&self.fingerprint, value.as_bytes());
        hex::encode(&tag.as_ref()[..16])
    }

    /// The public key node digests are signed with (hex).
    #[must_use]
    pub fn public_key(&self) -> String {
        hex::encode(self.key.public_key().as_ref())
    }
}
