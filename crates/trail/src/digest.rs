//! CloudTrail digest files, as `aws cloudtrail validate-logs` reads them.
//!
//! For each account and digest period `[start, end)` (`end` a multiple of the interval; the
//! first period of a chain starts one interval before its end, a later one where the
//! previous ended) one gzip JSON file lands at
//! `AWSLogs/<account>/CloudTrail-Digest/<region>/YYYY/MM/DD/<account>_CloudTrail-Digest_<region>_<trail>_<region>_<YYYYMMDDTHHmmssZ>.json.gz`
//! (the time is `end`), holding `digestStartTime`, `digestEndTime`, `digestS3Bucket`,
//! `digestS3Object`, `digestPublicKeyFingerprint`, `digestSignatureAlgorithm`,
//! `oldestEventTime` / `newestEventTime`, the previous digest's bucket, object, SHA-256 and
//! signature (`null` for the first), and `logFiles`: every log file delivered for the
//! account since the previous digest, with the SHA-256 of its *uncompressed* content
//! (`hashValue`, `hashAlgorithm` `SHA-256`) and its oldest and newest event times.
//!
//! The signature (hex, in `x-amz-meta-signature`; `x-amz-meta-signature-algorithm` is
//! `SHA256withRSA`) is over the text
//! `<digestEndTime>\n<digestS3Bucket>/<digestS3Object>\n<hex SHA-256 of the uncompressed digest>\n<previousDigestSignature or null>`.
//!
//! Several nodes share one chain per account. Delivered log files wait in the catalog
//! (settings `vmie:trail-pending:<account>`); the chain's head (settings
//! `vmie:trail-digests`) is advanced by compare-and-swap, so exactly one node writes each
//! digest, and the log files it names leave the waiting list only then. A node that dies
//! between advancing the head and writing the file leaves that digest missing, which
//! `validate-logs` and `vmie trail verify` report.

use serde::{Deserialize, Serialize};

use crate::keys::ALGORITHM;
use crate::times::{compact_second, day_path, iso, parse_iso};
use crate::{Trail, TrailError, gzip, sha256_hex};

/// Catalog settings "account" holding each account's digest chain head.
pub(crate) const DIGEST_HEADS: &str = "vmie:trail-digests";
/// Catalog settings "account" listing the accounts with log files (value: the last
/// delivery, ms).
pub(crate) const ACCOUNTS: &str = "vmie:trail-accounts";
/// Catalog settings "account" holding each account's logging status.
pub(crate) const STATUS: &str = "vmie:trail-status";

pub(crate) fn pending_of(account: &str) -> String {
    format!("vmie:trail-pending:{account}")
}

/// A log file as a digest names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogFile {
    /// Its bucket.
    pub s3_bucket: String,
    /// Its key.
    pub s3_object: String,
    /// Hex SHA-256 of its uncompressed content.
    pub hash_value: String,
    /// `SHA-256`.
    pub hash_algorithm: String,
    /// Newest `eventTime` in it.
    pub newest_event_time: String,
    /// Oldest `eventTime` in it.
    pub oldest_event_time: String,
}

/// A digest file's content.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Digest {
    pub aws_account_id: String,
    pub digest_start_time: String,
    pub digest_end_time: String,
    #[serde(rename = "digestS3Bucket")]
    pub digest_s3_bucket: String,
    #[serde(rename = "digestS3Object")]
    pub digest_s3_object: String,
    pub digest_public_key_fingerprint: String,
    pub digest_signature_algorithm: String,
    pub newest_event_time: Option<String>,
    pub oldest_event_time: Option<String>,
    #[serde(rename = "previousDigestS3Bucket")]
    pub previous_digest_s3_bucket: Option<String>,
    #[serde(rename = "previousDigestS3Object")]
    pub previous_digest_s3_object: Option<String>,
    pub previous_digest_hash_value: Option<String>,
    pub previous_digest_hash_algorithm: Option<String>,
    pub previous_digest_signature: Option<String>,
    pub log_files: Vec<LogFile>,
}

/// An account's digest chain head, as the catalog keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Head {
    pub key: String,
    pub signature: String,
    pub sha256: String,
    pub end_ms: i64,
}

/// Whether a trail is logging, and when things last happened.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrailStatus {
    /// Records are delivered.
    pub logging: bool,
    /// Last `StartLogging` (ms).
    pub start_ms: Option<i64>,
    /// Last `StopLogging` (ms).
    pub stop_ms: Option<i64>,
    /// Last log file delivered (ms).
    #[serde(default)]
    pub delivered_ms: Option<i64>,
    /// End of the last digest period (ms).
    #[serde(default)]
    pub digest_ms: Option<i64>,
}

/// The text a digest's signature covers.
pub(crate) fn string_to_sign(d: &Digest, inflated: &[u8]) -> String {
    format!(
        "{}\n{}/{}\n{}\n{}",
        d.digest_end_time,
        d.digest_s3_bucket,
        d.digest_s3_object,
        sha256_hex(inflated),
        d.previous_digest_signature.as_deref().unwrap_or("null")
    )
}

impl Trail {
    /// The key of `account`'s digest file for the period ending at `end_ms`.
    #[must_use]
    pub fn digest_key(&self, account: &str, end_ms: i64) -> String {
        let r = &self.cfg.region;
        format!(
            "AWSLogs/{account}/CloudTrail-Digest/{r}/{}/{account}_CloudTrail-Digest_{r}_{}_{r}_{}.json.gz",
            day_path(end_ms),
            self.cfg.name,
            compact_second(end_ms)
        )
    }

    /// Writes every digest whose period has ended by `now_ms`, for every account with log
    /// files; the keys written. Any node may call it at any time: each digest is written
    /// once.
    pub async fn make_digests(&self, now_ms: i64) -> Result<Vec<String>, TrailError> {
        let Some(cat) = &self.catalog else {
            return Ok(Vec::new());
        };
        let every = self.cfg.digest_interval_ms.max(1000);
        let end = now_ms.div_euclid(every) * every;
        let mut written = Vec::new();
        for (account, _) in cat.settings(ACCOUNTS).await? {
            if let Some(k) = self.digest_for(cat, &account, end, now_ms).await? {
                written.push(k);
            }
        }
        Ok(written)
    }

    async fn digest_for(
        &self,
        cat: &catalog::Catalog,
        account: &str,
        end: i64,
        now_ms: i64,
    ) -> Result<Option<String>, TrailError> {
        let every = self.cfg.digest_interval_ms.max(1000);
        let raw = cat.setting(DIGEST_HEADS, account).await?;
        let head: Option<Head> = raw.as_deref().and_then(|r| serde_json::from_str(r).ok());
        let start = head.as_ref().map_or(end - every, |h| h.end_ms);
        if start >= end {
            return Ok(None);
        }
        let pending = cat.settings(&pending_of(account)).await?;
        let mut logs: Vec<(String, LogFile)> = pending
            .into_iter()
            .filter_map(|(k, v)| serde_json::from_str(&v).ok().map(|l| (k, l)))
            .collect();
        logs.sort_by(|a, b| a.1.oldest_event_time.cmp(&b.1.oldest_event_time));
        let key = self.digest_key(account, end);
        let signer = self.signing_key(now_ms).await?;
        let bucket = self.bucket.name().to_string();
        let times = || {
            logs.iter()
                .flat_map(|(_, l)| [&l.oldest_event_time, &l.newest_event_time])
        };
        let digest = Digest {
            aws_account_id: account.to_string(),
            digest_start_time: iso(start),
            digest_end_time: iso(end),
            digest_s3_bucket: bucket.clone(),
            digest_s3_object: key.clone(),
            digest_public_key_fingerprint: signer.info.fingerprint.clone(),
            digest_signature_algorithm: ALGORITHM.into(),
            newest_event_time: times().max().cloned(),
            oldest_event_time: times().min().cloned(),
            previous_digest_s3_bucket: head.as_ref().map(|_| bucket.clone()),
            previous_digest_s3_object: head.as_ref().map(|h| h.key.clone()),
            previous_digest_hash_value: head.as_ref().map(|h| h.sha256.clone()),
            previous_digest_hash_algorithm: head.as_ref().map(|_| "SHA-256".into()),
            previous_digest_signature: head.as_ref().map(|h| h.signature.clone()),
            log_files: logs.iter().map(|(_, l)| l.clone()).collect(),
        };
        let inflated =
            serde_json::to_vec(&digest).map_err(|e| TrailError::Encode(e.to_string()))?;
        let signature = signer.sign(string_to_sign(&digest, &inflated).as_bytes())?;
        let next = Head {
            key: key.clone(),
            signature: signature.clone(),
            sha256: sha256_hex(&inflated),
            end_ms: end,
        };
        let next = serde_json::to_string(&next).map_err(|e| TrailError::Encode(e.to_string()))?;
        if !cat
            .swap_setting(DIGEST_HEADS, account, raw.as_deref(), &next)
            .await?
        {
            // Another node wrote this period's digest.
            return Ok(None);
        }
        self.bucket
            .put(
                &key,
                gzip(&inflated)?,
                &[
                    ("signature", &signature),
                    ("signature-algorithm", ALGORITHM),
                ],
            )
            .await?;
        let pending = pending_of(account);
        for (name, _) in &logs {
            cat.delete_setting(&pending, name).await?;
        }
        Ok(Some(key))
    }

    /// Notes log files delivered for `account` (they wait for the next digest).
    pub(crate) async fn delivered(
        &self,
        account: &str,
        files: &[LogFile],
        now_ms: i64,
    ) -> Result<(), TrailError> {
        let Some(cat) = &self.catalog else {
            return Ok(());
        };
        let pending = pending_of(account);
        for f in files {
            let v = serde_json::to_string(f).map_err(|e| TrailError::Encode(e.to_string()))?;
            cat.set_setting(&pending, &f.s3_object, &v).await?;
        }
        cat.set_setting(ACCOUNTS, account, &now_ms.to_string())
            .await?;
        Ok(())
    }

    /// The status of `account`'s trail.
    pub async fn status(&self, account: &str) -> Result<TrailStatus, TrailError> {
        let Some(cat) = &self.catalog else {
            return Ok(TrailStatus {
                logging: true,
                ..TrailStatus::default()
            });
        };
        let mut s: TrailStatus = cat
            .setting(STATUS, account)
            .await?
            .and_then(|v| serde_json::from_str(&v).ok())
            .unwrap_or(TrailStatus {
                logging: true,
                ..TrailStatus::default()
            });
        s.delivered_ms = cat
            .setting(ACCOUNTS, account)
            .await?
            .and_then(|v| v.parse().ok());
        s.digest_ms = cat
            .setting(DIGEST_HEADS, account)
            .await?
            .and_then(|v| serde_json::from_str::<Head>(&v).ok())
            .map(|h| h.end_ms);
        Ok(s)
    }

    /// Starts or stops delivering `account`'s records (`StartLogging`, `StopLogging`). The
    /// records of those two calls are delivered whatever the status.
    pub async fn set_logging(
        &self,
        account: &str,
        on: bool,
        now_ms: i64,
    ) -> Result<(), TrailError> {
        let Some(cat) = &self.catalog else {
            return Err(TrailError::Bucket(
                "this trail keeps no status (no catalog)".into(),
            ));
        };
        let mut s = self.status(account).await?;
        s.logging = on;
        if on {
            s.start_ms = Some(now_ms);
        } else {
            s.stop_ms = Some(now_ms);
        }
        s.delivered_ms = None;
        s.digest_ms = None;
        let v = serde_json::to_string(&s).map_err(|e| TrailError::Encode(e.to_string()))?;
        cat.set_setting(STATUS, account, &v).await?;
        Ok(())
    }

    /// The periods in which each account's logging was stopped, as far as they matter to
    /// records still queued: from the last `StopLogging` to the `StartLogging` after it (or
    /// without end while stopped).
    pub(crate) async fn stopped(&self) -> Result<Vec<Stopped>, TrailError> {
        let Some(cat) = &self.catalog else {
            return Ok(Vec::new());
        };
        Ok(cat
            .settings(STATUS)
            .await?
            .into_iter()
            .filter_map(|(account, v)| {
                let s = serde_json::from_str::<TrailStatus>(&v).ok()?;
                let from = s.stop_ms?;
                let until = if s.logging {
                    Some(s.start_ms.filter(|t| *t > from)?)
                } else {
                    None
                };
                Some(Stopped {
                    account,
                    from,
                    until,
                })
            })
            .collect())
    }
}

/// A period in which an account's logging was stopped.
#[derive(Debug, Clone)]
pub(crate) struct Stopped {
    pub account: String,
    pub from: i64,
    pub until: Option<i64>,
}

impl Stopped {
    /// Whether a record of `account` whose `eventTime` is the whole second starting at `ms`
    /// falls in it: the whole second must. A record made in the second logging stopped, or
    /// in the second it started again, is delivered (its time cannot tell).
    pub(crate) fn covers(&self, account: &str, ms: i64) -> bool {
        self.account == account
            && ms >= self.from
            && self.until.is_none_or(|u| ms.saturating_add(999) < u)
    }
}

/// The oldest and newest `eventTime` of `records` (ISO text).
pub(crate) fn event_range(records: &[serde_json::Value]) -> (String, String) {
    let mut times: Vec<i64> = records
        .iter()
        .filter_map(|r| r["eventTime"].as_str().and_then(parse_iso))
        .collect();
    times.sort_unstable();
    let now = catalog::now_ms();
    (
        iso(times.first().copied().unwrap_or(now)),
        iso(times.last().copied().unwrap_or(now)),
    )
}
