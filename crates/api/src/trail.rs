//! The activity log's storage: records in compressed batches, each batch covered by a digest
//! that holds the batch's SHA-256 and the SHA-256 of the node's previous digest, signed with
//! Ed25519. The signing key is made on first use and stored sealed under the root key.
//! [`verify`] walks every node's chain and names each batch or digest that was deleted,
//! altered, inserted or reordered.
//!
//! Object layout under the prefix:
//!
//! ```text
//! signing.key                        the Ed25519 key (PKCS#8), sealed under the root key
//! batches/<node>/<seq>.json.gz       records, one JSON object per line, gzip
//! digests/<node>/<seq>.json          {"body": {...}, "signature": hex}
//! ```
//!
//! `<seq>` is 16 decimal digits and starts at 1 for each node; a node continues its chain
//! from its last digest when it restarts.

use std::io::Write;
use std::sync::{Arc, Mutex};

use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use kms::RootKey;

const KEY_AAD: &[u8] = b"vmie trail signing key";
/// Catalog settings "account" under which each node's chain head is kept.
pub const HEADS: &str = "vmie:trail-heads";

/// Errors of the activity log's storage.
#[derive(Debug, thiserror::Error)]
pub enum TrailError {
    /// The object store failed.
    #[error("activity log store: {0}")]
    Store(#[from] object_store::Error),
    /// The signing key could not be made, opened or used.
    #[error("activity log signing key: {0}")]
    Key(String),
    /// A record did not serialize, or a batch did not compress.
    #[error("activity log: {0}")]
    Encode(String),
    /// The catalog, which keeps the chain heads, failed.
    #[error("activity log chain heads: {0}")]
    Heads(#[from] catalog::CatalogError),
}

/// What a digest says (signed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestBody {
    /// Node that wrote the batch.
    pub node: String,
    /// Position in the node's chain, from 1.
    pub seq: u64,
    /// Path of the batch.
    pub batch: String,
    /// Hex SHA-256 of the batch object.
    pub batch_sha256: String,
    /// Records in the batch.
    pub records: u64,
    /// Hex SHA-256 of the node's previous digest object (`None` for the first).
    pub previous_sha256: Option<String>,
    /// When the digest was made (ms since the epoch).
    pub created_ms: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct DigestFile {
    body: DigestBody,
    signature: String,
}

struct Chain {
    seq: u64,
    previous_sha256: Option<String>,
    buffer: Vec<serde_json::Value>,
}

/// Writes records for one node.
pub struct TrailWriter {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    node: String,
    key: Ed25519KeyPair,
    fingerprint: aws_lc_rs::hmac::Key,
    heads: Option<catalog::Catalog>,
    chain: tokio::sync::Mutex<Chain>,
    pending: Mutex<Vec<serde_json::Value>>,
}

impl std::fmt::Debug for TrailWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrailWriter")
            .field("prefix", &self.prefix)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b))
}

fn join(prefix: &Path, parts: &[&str]) -> Path {
    let mut p = prefix.clone();
    for part in parts {
        p = p.join(*part);
    }
    p
}

/// Loads the signing key, making it on first use; with it, the key of the fingerprints of
/// redacted values (derived from it, so every node fingerprints alike).
async fn signing_key(
    store: &Arc<dyn ObjectStore>,
    prefix: &Path,
    root: &RootKey,
) -> Result<(Ed25519KeyPair, aws_lc_rs::hmac::Key), TrailError> {
    let path = join(prefix, &["signing.key"]);
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
fn parse_head(v: &str) -> Option<(u64, String)> {
    let (seq, sha) = v.split_once(' ')?;
    Some((seq.parse().ok()?, sha.to_string()))
}

fn seq_of(p: &Path) -> Option<u64> {
    p.filename()?.split('.').next()?.parse().ok()
}

impl TrailWriter {
    /// A writer for `node` under `prefix`, continuing the node's chain where it ended. With
    /// `heads`, each flush also records the chain's head in the catalog, so that deleting the
    /// newest files of a chain (which leaves no gap in it) is still caught by [`verify`]; a
    /// chain whose newest files are gone continues after the recorded head.
    pub async fn open(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        root: &RootKey,
        node: &str,
        heads: Option<catalog::Catalog>,
    ) -> Result<TrailWriter, TrailError> {
        let prefix = Path::from(prefix);
        let (key, fingerprint) = signing_key(&store, &prefix, root).await?;
        let digests: Vec<_> = store
            .list(Some(&join(&prefix, &["digests", node])))
            .try_collect()
            .await?;
        let last = digests
            .iter()
            .filter_map(|m| seq_of(&m.location).map(|s| (s, m.location.clone())))
            .max_by_key(|(s, _)| *s);
        let (seq, previous_sha256) = match last {
            Some((s, path)) => {
                let bytes = store.get(&path).await?.bytes().await?;
                (s, Some(sha256_hex(&bytes)))
            }
            None => (0, None),
        };
        let head = match &heads {
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
            store,
            prefix,
            node: node.to_string(),
            key,
            fingerprint,
            heads,
            chain: tokio::sync::Mutex::new(Chain {
                seq,
                previous_sha256,
                buffer: Vec::new(),
            }),
            pending: Mutex::new(Vec::new()),
        })
    }

    /// Queues a record for the next batch.
    pub fn record(&self, r: serde_json::Value) {
        if let Ok(mut p) = self.pending.lock() {
            p.push(r);
        }
    }

    /// Writes the queued records as one batch with its signed digest (nothing when none are
    /// queued). Batches of one node are written one at a time, in order.
    pub async fn flush(&self) -> Result<Option<DigestBody>, TrailError> {
        let mut chain = self.chain.lock().await;
        if let Ok(mut p) = self.pending.lock() {
            chain.buffer.append(&mut p);
        }
        if chain.buffer.is_empty() {
            return Ok(None);
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        for r in &chain.buffer {
            serde_json::to_writer(&mut gz, r).map_err(|e| TrailError::Encode(e.to_string()))?;
            gz.write_all(b"\n")
                .map_err(|e| TrailError::Encode(e.to_string()))?;
        }
        let batch = gz.finish().map_err(|e| TrailError::Encode(e.to_string()))?;
        let seq = chain.seq + 1;
        let name = format!("{seq:016}");
        let batch_path = join(
            &self.prefix,
            &["batches", &self.node, &format!("{name}.json.gz")],
        );
        let body = DigestBody {
            node: self.node.clone(),
            seq,
            batch: batch_path.to_string(),
            batch_sha256: sha256_hex(&batch),
            records: chain.buffer.len() as u64,
            previous_sha256: chain.previous_sha256.clone(),
            created_ms: catalog::now_ms(),
        };
        let signed = serde_json::to_vec(&body).map_err(|e| TrailError::Encode(e.to_string()))?;
        let file = DigestFile {
            signature: hex::encode(self.key.sign(&signed).as_ref()),
            body: body.clone(),
        };
        let digest = serde_json::to_vec(&file).map_err(|e| TrailError::Encode(e.to_string()))?;
        self.store.put(&batch_path, PutPayload::from(batch)).await?;
        let digest_path = join(
            &self.prefix,
            &["digests", &self.node, &format!("{name}.json")],
        );
        self.store
            .put(&digest_path, PutPayload::from(digest.clone()))
            .await?;
        chain.seq = seq;
        let digest_sha = sha256_hex(&digest);
        chain.previous_sha256 = Some(digest_sha.clone());
        chain.buffer.clear();
        if let Some(c) = &self.heads {
            c.set_setting(HEADS, &self.node, &format!("{seq} {digest_sha}"))
                .await?;
        }
        Ok(Some(body))
    }

    /// This writer's node.
    #[must_use]
    pub fn node(&self) -> &str {
        &self.node
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

    /// The public key digests are signed with (hex).
    #[must_use]
    pub fn public_key(&self) -> String {
        hex::encode(self.key.public_key().as_ref())
    }
}

/// What [`verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Digests checked.
    pub digests: u64,
    /// Batches whose hash matched.
    pub batches: u64,
    /// Records those batches hold.
    pub records: u64,
    /// Every problem, in words (empty: the log is intact).
    pub problems: Vec<String>,
}

/// Checks every node's chain under `prefix`: signatures, sequence, links to the previous
/// digest, batch hashes, and batches no digest covers.
///
/// With `heads` (the catalog the writers recorded their chain heads in), a chain whose
/// newest digests were deleted, or that was deleted whole, is reported too.
pub async fn verify(
    store: &Arc<dyn ObjectStore>,
    prefix: &str,
    root: &RootKey,
    heads: Option<&catalog::Catalog>,
) -> Result<VerifyReport, TrailError> {
    let prefix = Path::from(prefix);
    let (key, _) = signing_key(store, &prefix, root).await?;
    let public = UnparsedPublicKey::new(&ED25519, key.public_key().as_ref().to_vec());
    let mut report = VerifyReport::default();
    let digests: Vec<_> = store
        .list(Some(&join(&prefix, &["digests"])))
        .try_collect()
        .await?;
    let mut by_node: std::collections::BTreeMap<String, Vec<(u64, Path)>> = Default::default();
    for m in digests {
        let parts: Vec<_> = m.location.parts().map(|p| p.as_ref().to_string()).collect();
        let node = parts
            .get(parts.len().saturating_sub(2))
            .cloned()
            .unwrap_or_default();
        match seq_of(&m.location) {
            Some(s) => by_node.entry(node).or_default().push((s, m.location)),
            None => report
                .problems
                .push(format!("{}: not a digest name (inserted)", m.location)),
        }
    }
    let mut covered = std::collections::HashSet::new();
    let mut last: std::collections::BTreeMap<String, (u64, String)> = Default::default();
    for (node, mut list) in by_node {
        list.sort_by_key(|(s, _)| *s);
        let mut previous: Option<String> = None;
        let mut expect = 1u64;
        for (seq, path) in list {
            report.digests += 1;
            if seq != expect {
                report.problems.push(format!(
                    "node {node}: digests {expect} to {} are missing (deleted)",
                    seq.saturating_sub(1)
                ));
                previous = None;
            }
            expect = seq + 1;
            let bytes = store.get(&path).await?.bytes().await?;
            let file: DigestFile = match serde_json::from_slice(&bytes) {
                Ok(f) => f,
                Err(_) => {
                    report
                        .problems
                        .push(format!("{path}: does not parse (altered)"));
                    previous = Some(sha256_hex(&bytes));
                    continue;
                }
            };
            let body_bytes = serde_json::to_vec(&file.body).unwrap_or_default();
            let sig = hex::decode(&file.signature).unwrap_or_default();
            if public.verify(&body_bytes, &sig).is_err() {
                report
                    .problems
                    .push(format!("{path}: signature does not verify (altered)"));
            }
            if file.body.seq != seq || file.body.node != node {
                report.problems.push(format!(
                    "{path}: names another place in the chain (moved or reordered)"
                ));
            }
            if previous.is_some() && file.body.previous_sha256 != previous {
                report.problems.push(format!(
                    "{path}: does not follow the digest before it (altered, inserted or reordered)"
                ));
            }
            previous = Some(sha256_hex(&bytes));
            last.insert(node.clone(), (seq, sha256_hex(&bytes)));
            covered.insert(file.body.batch.clone());
            match store.get(&Path::from(file.body.batch.as_str())).await {
                Ok(b) => {
                    let data = b.bytes().await?;
                    if sha256_hex(&data) == file.body.batch_sha256 {
                        report.batches += 1;
                        report.records += file.body.records;
                    } else {
                        report
                            .problems
                            .push(format!("{}: content changed (altered)", file.body.batch));
                    }
                }
                Err(object_store::Error::NotFound { .. }) => {
                    report
                        .problems
                        .push(format!("{}: missing (deleted)", file.body.batch));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    if let Some(c) = heads {
        let recorded = c.settings(HEADS).await?;
        for (node, v) in recorded {
            let Some((hs, sha)) = parse_head(&v) else {
                report.problems.push(format!(
                    "node {node}: its recorded chain head does not parse"
                ));
                continue;
            };
            match last.get(&node) {
                None => report.problems.push(format!(
                    "node {node}: digests 1 to {hs} are missing (deleted)"
                )),
                Some((ls, _)) if *ls < hs => report.problems.push(format!(
                    "node {node}: digests {} to {hs} are missing (deleted)",
                    ls + 1
                )),
                Some((ls, lsha)) if *ls == hs && *lsha != sha => report.problems.push(format!(
                    "node {node}: digest {hs} is not the one written (altered or replaced)"
                )),
                _ => {}
            }
        }
    }
    let batches: Vec<_> = store
        .list(Some(&join(&prefix, &["batches"])))
        .try_collect()
        .await?;
    for b in batches {
        if !covered.contains(&b.location.to_string()) {
            report
                .problems
                .push(format!("{}: no digest covers it (inserted)", b.location));
        }
    }
    Ok(report)
}

/// Reads the records of every batch written at or after `since_ms` (a batch is written after
/// the records it holds, so older batches hold only older records), oldest batch first.
pub async fn records(
    store: &Arc<dyn ObjectStore>,
    prefix: &str,
    since_ms: Option<i64>,
) -> Result<Vec<serde_json::Value>, TrailError> {
    use std::io::Read;
    let prefix = Path::from(prefix);
    let mut list: Vec<_> = store
        .list(Some(&join(&prefix, &["batches"])))
        .try_collect()
        .await?;
    if let Some(t) = since_ms {
        list.retain(|m| m.last_modified.timestamp_millis() >= t);
    }
    list.sort_by(|a, b| {
        a.last_modified
            .cmp(&b.last_modified)
            .then(a.location.cmp(&b.location))
    });
    let mut out = Vec::new();
    for m in list {
        let data = store.get(&m.location).await?.bytes().await?;
        let mut text = String::new();
        flate2::read::GzDecoder::new(&data[..])
            .take(64 << 20)
            .read_to_string(&mut text)
            .map_err(|e| TrailError::Encode(format!("{}: {e}", m.location)))?;
        out.extend(text.lines().filter_map(|l| serde_json::from_str(l).ok()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use object_store::memory::InMemory;

    fn root() -> RootKey {
        RootKey::from_hex(&"11".repeat(32)).unwrap()
    }

    async fn written() -> (Arc<dyn ObjectStore>, RootKey) {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let root = root();
        for node in ["a", "b"] {
            let w = TrailWriter::open(store.clone(), "trail", &root, node, None)
                .await
                .unwrap();
            for batch in 0..3 {
                for i in 0..4 {
                    w.record(
                        serde_json::json!({"eventName": "DescribeImages", "n": batch * 4 + i}),
                    );
                }
                w.flush().await.unwrap().unwrap();
            }
            assert!(
                w.flush().await.unwrap().is_none(),
                "nothing queued, nothing written"
            );
        }
        // A restarted node continues its chain.
        let w = TrailWriter::open(store.clone(), "trail", &root, "a", None)
            .await
            .unwrap();
        w.record(serde_json::json!({"eventName": "ImportImage"}));
        assert_eq!(w.flush().await.unwrap().unwrap().seq, 4);
        (store, root)
    }

    #[tokio::test]
    async fn an_intact_log_verifies() {
        let (store, root) = written().await;
        let r = verify(&store, "trail", &root, None).await.unwrap();
        assert_eq!(r.problems, Vec::<String>::new());
        assert_eq!((r.digests, r.batches, r.records), (7, 7, 25));
        assert_eq!(records(&store, "trail", None).await.unwrap().len(), 25);
        let other = RootKey::from_hex(&"22".repeat(32)).unwrap();
        assert!(
            verify(&store, "trail", &other, None).await.is_err(),
            "another root key cannot open the signing key"
        );
    }

    async fn problems_after(f: impl AsyncFnOnce(&Arc<dyn ObjectStore>)) -> Vec<String> {
        let (store, root) = written().await;
        f(&store).await;
        verify(&store, "trail", &root, None).await.unwrap().problems
    }

    #[tokio::test]
    async fn deletions_alterations_insertions_and_reordering_are_caught() {
        let p = |s: &str| Path::from(s);
        // A batch deleted.
        let v = problems_after(async |s| {
            s.delete(&p("trail/batches/a/0000000000000002.json.gz"))
                .await
                .unwrap()
        })
        .await;
        assert!(
            v.iter()
                .any(|x| x.contains("0000000000000002.json.gz: missing (deleted)")),
            "{v:?}"
        );
        // A batch altered.
        let v = problems_after(async |s| {
            s.put(
                &p("trail/batches/b/0000000000000001.json.gz"),
                PutPayload::from_static(b"x"),
            )
            .await
            .unwrap();
        })
        .await;
        assert!(
            v.iter().any(|x| x.contains("content changed (altered)")),
            "{v:?}"
        );
        // A digest deleted (with its batch): the gap is named.
        let v = problems_after(async |s| {
            s.delete(&p("trail/digests/a/0000000000000002.json"))
                .await
                .unwrap();
            s.delete(&p("trail/batches/a/0000000000000002.json.gz"))
                .await
                .unwrap();
        })
        .await;
        assert!(
            v.iter()
                .any(|x| x.contains("digests 2 to 2 are missing (deleted)")),
            "{v:?}"
        );
        // A digest edited (records count raised): the signature fails.
        let v = problems_after(async |s| {
            let path = p("trail/digests/b/0000000000000002.json");
            let t = String::from_utf8(s.get(&path).await.unwrap().bytes().await.unwrap().to_vec())
                .unwrap();
            s.put(
                &path,
                PutPayload::from(t.replace("\"records\":4", "\"records\":5")),
            )
            .await
            .unwrap();
        })
        .await;
        assert!(
            v.iter().any(|x| x.contains("signature does not verify")),
            "{v:?}"
        );
        // A batch inserted without a digest.
        let v = problems_after(async |s| {
            s.put(
                &p("trail/batches/a/0000000000000099.json.gz"),
                PutPayload::from_static(b"y"),
            )
            .await
            .unwrap();
        })
        .await;
        assert!(
            v.iter()
                .any(|x| x.contains("no digest covers it (inserted)")),
            "{v:?}"
        );
        // Two digests swapped (with their batches).
        let v = problems_after(async |s| {
            for kind in [("digests", "json"), ("batches", "json.gz")] {
                let a = p(&format!("trail/{}/a/0000000000000001.{}", kind.0, kind.1));
                let b = p(&format!("trail/{}/a/0000000000000003.{}", kind.0, kind.1));
                let x = s.get(&a).await.unwrap().bytes().await.unwrap();
                let y = s.get(&b).await.unwrap().bytes().await.unwrap();
                s.put(&a, PutPayload::from(y)).await.unwrap();
                s.put(&b, PutPayload::from(x)).await.unwrap();
            }
        })
        .await;
        assert!(v.iter().any(|x| x.contains("reordered")), "{v:?}");
    }
}
