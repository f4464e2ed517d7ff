//! `vmie trail verify`: every node's chain (both layouts), every file it covers, files no
//! chain covers, each chain against its head in the catalog, and every account's chain of
//! CloudTrail digests (signatures with the deployment's keys, links, the log files' hashes,
//! the newest digest against the head in the catalog) — and reading the records back.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use aws_lc_rs::signature::{ED25519, KeyPair, UnparsedPublicKey};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use serde::Serialize;
use serde_json::Value;

use crate::digest::{DIGEST_HEADS, Digest, Head, string_to_sign};
use crate::node::{AnyDigest, HEADS, parse_head, seq_of, signing_key};
use crate::{Trail, TrailError, gunzip, keys, sha256_hex};

/// What [`verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Node digests checked.
    pub digests: u64,
    /// Files (log files, and batches of the old layout) whose hash matched.
    pub batches: u64,
    /// Records those files hold.
    pub records: u64,
    /// CloudTrail digest files checked.
    pub cloudtrail_digests: u64,
    /// Every problem, in words (empty: the log is intact).
    pub problems: Vec<String>,
}

struct Walk<'a> {
    trail: &'a Trail,
    report: VerifyReport,
    problems: BTreeSet<String>,
    covered: HashSet<String>,
}

impl Walk<'_> {
    fn problem(&mut self, p: String) {
        if self.problems.insert(p.clone()) {
            self.report.problems.push(p);
        }
    }

    fn shown(&self, key: &str) -> String {
        format!("{}/{key}", self.trail.bucket.name())
    }
}

/// Checks the whole activity log: see the module's summary. The report names every
/// problem; an `Err` is a failure to read, not a finding.
pub async fn verify(trail: &Trail) -> Result<VerifyReport, TrailError> {
    let mut w = Walk {
        trail,
        report: VerifyReport::default(),
        problems: BTreeSet::new(),
        covered: HashSet::new(),
    };
    node_chains(&mut w).await?;
    uncovered(&mut w).await?;
    cloudtrail_digests(&mut w).await?;
    Ok(w.report)
}

async fn node_chains(w: &mut Walk<'_>) -> Result<(), TrailError> {
    let trail = w.trail;
    let (key, _) = signing_key(trail).await?;
    let public = UnparsedPublicKey::new(&ED25519, key.public_key().as_ref().to_vec());
    let digests: Vec<_> = trail
        .objects
        .list(Some(&trail.internal(&["digests"])))
        .try_collect()
        .await?;
    let mut by_node: BTreeMap<String, Vec<(u64, Path)>> = BTreeMap::new();
    for m in digests {
        let parts: Vec<_> = m.location.parts().map(|p| p.as_ref().to_string()).collect();
        let node = parts
            .get(parts.len().saturating_sub(2))
            .cloned()
            .unwrap_or_default();
        match seq_of(&m.location) {
            Some(s) => by_node.entry(node).or_default().push((s, m.location)),
            None => w.problem(format!("{}: not a digest name (inserted)", m.location)),
        }
    }
    let mut last: BTreeMap<String, (u64, String)> = BTreeMap::new();
    for (node, mut list) in by_node {
        list.sort_by_key(|(s, _)| *s);
        let mut previous: Option<String> = None;
        let mut expect = 1u64;
        for (seq, path) in list {
            w.report.digests += 1;
            if seq != expect {
                w.problem(format!(
                    "node {node}: digests {expect} to {} are missing (deleted)",
                    seq.saturating_sub(1)
                ));
                previous = None;
            }
            expect = seq + 1;
            let bytes = trail.objects.get(&path).await?.bytes().await?;
            let this = sha256_hex(&bytes);
            last.insert(node.clone(), (seq, this.clone()));
            let Some(file) = AnyDigest::parse(&bytes) else {
                w.problem(format!("{path}: does not parse (altered)"));
                previous = Some(this);
                continue;
            };
            let (n, s, signed, sig) = file.signed();
            let sig = hex::decode(sig).unwrap_or_default();
            if public.verify(&signed, &sig).is_err() {
                w.problem(format!("{path}: signature does not verify (altered)"));
            }
            if s != seq || n != node {
                w.problem(format!(
                    "{path}: names another place in the chain (moved or reordered)"
                ));
            }
            if previous.is_some() && file.previous() != previous.as_ref() {
                w.problem(format!(
                    "{path}: does not follow the digest before it (altered, inserted or reordered)"
                ));
            }
            previous = Some(this);
            covered_files(w, &file).await?;
        }
    }
    if let Some(c) = &trail.catalog {
        for (node, v) in c.settings(HEADS).await? {
            let Some((hs, sha)) = parse_head(&v) else {
                w.problem(format!(
                    "node {node}: its recorded chain head does not parse"
                ));
                continue;
            };
            match last.get(&node) {
                None => w.problem(format!(
                    "node {node}: digests 1 to {hs} are missing (deleted)"
                )),
                Some((ls, _)) if *ls < hs => w.problem(format!(
                    "node {node}: digests {} to {hs} are missing (deleted)",
                    ls + 1
                )),
                Some((ls, lsha)) if *ls == hs && *lsha != sha => w.problem(format!(
                    "node {node}: digest {hs} is not the one written (altered or replaced)"
                )),
                _ => {}
            }
        }
    }
    Ok(())
}

/// Checks the files one node digest covers.
async fn covered_files(w: &mut Walk<'_>, file: &AnyDigest) -> Result<(), TrailError> {
    let trail = w.trail;
    match file {
        AnyDigest::Legacy(f) => {
            let b = &f.body;
            w.covered.insert(format!("batch:{}", b.batch));
            match trail.objects.get(&Path::from(b.batch.as_str())).await {
                Ok(r) => {
                    let data = r.bytes().await?;
                    if sha256_hex(&data) == b.batch_sha256 {
                        w.report.batches += 1;
                        w.report.records += b.records;
                    } else {
                        w.problem(format!("{}: content changed (altered)", b.batch));
                    }
                }
                Err(object_store::Error::NotFound { .. }) => {
                    w.problem(format!("{}: missing (deleted)", b.batch));
                }
                Err(e) => return Err(e.into()),
            }
        }
        AnyDigest::Files(f) => {
            for r in &f.body.files {
                w.covered.insert(r.key.clone());
                match trail.bucket.get(&r.key).await? {
                    Some(data) if sha256_hex(&data) == r.sha256 => {
                        w.report.batches += 1;
                        w.report.records += r.records;
                    }
                    Some(_) => w.problem(format!("{}: content changed (altered)", w.shown(&r.key))),
                    None => w.problem(format!("{}: missing (deleted)", w.shown(&r.key))),
                }
            }
        }
    }
    Ok(())
}

/// Batches and log files no node digest covers.
async fn uncovered(w: &mut Walk<'_>) -> Result<(), TrailError> {
    let trail = w.trail;
    let batches: Vec<_> = trail
        .objects
        .list(Some(&trail.internal(&["batches"])))
        .try_collect()
        .await?;
    for b in batches {
        if !w.covered.contains(&format!("batch:{}", b.location)) {
            w.problem(format!("{}: no digest covers it (inserted)", b.location));
        }
    }
    for m in trail.bucket.list("AWSLogs").await? {
        let key = m.location.to_string();
        if is_log_file(&key) && !w.covered.contains(&key) {
            w.problem(format!("{}: no digest covers it (inserted)", w.shown(&key)));
        }
    }
    Ok(())
}

fn is_log_file(key: &str) -> bool {
    key.split('/').nth(2) == Some("CloudTrail") && key.ends_with(".json.gz")
}

fn is_digest_file(key: &str) -> bool {
    key.split('/').nth(2) == Some("CloudTrail-Digest") && key.ends_with(".json.gz")
}

/// The time in a digest file's name (`YYYYMMDDTHHmmssZ`), which orders a chain.
fn digest_time(key: &str) -> &str {
    key.len()
        .checked_sub(24)
        .and_then(|i| key.get(i..key.len() - 8))
        .unwrap_or("")
}

async fn cloudtrail_digests(w: &mut Walk<'_>) -> Result<(), TrailError> {
    let trail = w.trail;
    let mut by_account: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in trail.bucket.list("AWSLogs").await? {
        let key = m.location.to_string();
        if is_digest_file(&key) {
            let account = key.split('/').nth(1).unwrap_or_default().to_string();
            by_account.entry(account).or_default().push(key);
        }
    }
    let heads: BTreeMap<String, Head> = match &trail.catalog {
        Some(c) => c
            .settings(DIGEST_HEADS)
            .await?
            .into_iter()
            .filter_map(|(a, v)| serde_json::from_str(&v).ok().map(|h| (a, h)))
            .collect(),
        None => BTreeMap::new(),
    };
    for (account, head) in &heads {
        if !by_account.contains_key(account) {
            w.problem(format!("{}: missing (deleted)", w.shown(&head.key)));
        }
    }
    for (account, mut keys) in by_account {
        keys.sort_by(|a, b| digest_time(a).cmp(digest_time(b)).then(a.cmp(b)));
        let listed: HashSet<String> = keys.iter().cloned().collect();
        let mut previous: Option<(String, String)> = None;
        for key in &keys {
            w.report.cloudtrail_digests += 1;
            let sig = one_digest(w, key, previous.as_ref(), &listed).await?;
            previous = Some((key.clone(), sig));
        }
        if let Some(h) = heads.get(&account) {
            if !listed.contains(&h.key) {
                w.problem(format!("{}: missing (deleted)", w.shown(&h.key)));
            }
            for k in keys.iter().filter(|k| digest_time(k) > digest_time(&h.key)) {
                w.problem(format!(
                    "{}: after the newest digest the catalog recorded (inserted)",
                    w.shown(k)
                ));
            }
        }
    }
    Ok(())
}

/// Checks one CloudTrail digest; its signature (hex, as found) for the next one's link.
async fn one_digest(
    w: &mut Walk<'_>,
    key: &str,
    previous: Option<&(String, String)>,
    listed: &HashSet<String>,
) -> Result<String, TrailError> {
    let trail = w.trail;
    let shown = w.shown(key);
    let Some(stored) = trail.bucket.get(key).await? else {
        return Ok(String::new());
    };
    let meta = trail.bucket.metadata(key).await?;
    let sig = meta.get("signature").cloned().unwrap_or_default();
    let Some((inflated, d)) = gunzip(&stored)
        .ok()
        .and_then(|i| serde_json::from_slice::<Digest>(&i).ok().map(|d| (i, d)))
    else {
        w.problem(format!("{shown}: does not parse (altered)"));
        return Ok(sig);
    };
    if d.digest_s3_object != key || d.digest_s3_bucket != trail.bucket.name() {
        w.problem(format!("{shown}: names another place (moved)"));
    }
    let verified = match trail
        .public_key_by_fingerprint(&d.digest_public_key_fingerprint)
        .await?
    {
        None => false,
        Some(k) => keys::verifies(
            &k.der,
            string_to_sign(&d, &inflated).as_bytes(),
            &hex::decode(&sig).unwrap_or_default(),
        ),
    };
    if !verified || meta.get("signature-algorithm").map(String::as_str) != Some(keys::ALGORITHM) {
        w.problem(format!("{shown}: signature does not verify (altered)"));
    }
    match (&d.previous_digest_s3_object, previous) {
        (Some(p), _) if !listed.contains(p) => {
            w.problem(format!("{}: missing (deleted)", w.shown(p)));
        }
        (Some(p), Some((pk, psig)))
            if p != pk || d.previous_digest_signature.as_ref() != Some(psig) =>
        {
            w.problem(format!(
                "{shown}: does not follow the digest before it (altered, inserted or reordered)"
            ));
        }
        (None, Some(_)) => w.problem(format!(
            "{shown}: starts a new chain after another (inserted)"
        )),
        _ => {}
    }
    for lf in &d.log_files {
        let shown_log = w.shown(&lf.s3_object);
        match trail.bucket.get(&lf.s3_object).await? {
            None => w.problem(format!("{shown_log}: missing (deleted)")),
            Some(data) => {
                if gunzip(&data).map(|c| sha256_hex(&c)).ok().as_ref() != Some(&lf.hash_value) {
                    w.problem(format!("{shown_log}: content changed (altered)"));
                }
            }
        }
    }
    Ok(sig)
}

/// Reads the records of every file written at or after `since_ms` (a file is written
/// after the records it holds, so older files hold only older records), oldest first:
/// batches of the old layout, then log files in the trail bucket.
pub async fn records(trail: &Trail, since_ms: Option<i64>) -> Result<Vec<Value>, TrailError> {
    let mut found: Vec<(i64, String, bool)> = Vec::new();
    let batches: Vec<_> = trail
        .objects
        .list(Some(&trail.internal(&["batches"])))
        .try_collect()
        .await?;
    for m in batches {
        found.push((
            m.last_modified.timestamp_millis(),
            m.location.to_string(),
            true,
        ));
    }
    for m in trail.bucket.list("AWSLogs").await? {
        let key = m.location.to_string();
        if is_log_file(&key) {
            found.push((m.last_modified.timestamp_millis(), key, false));
        }
    }
    if let Some(t) = since_ms {
        found.retain(|(ms, _, _)| *ms >= t);
    }
    // The old layout was written before this version's first file; files written within
    // one millisecond (a fast disk's timestamps) then go by name, which orders each
    // node's batches and each account's log files.
    found.sort_by(|a, b| (!a.2, a.0, &a.1).cmp(&(!b.2, b.0, &b.1)));
    let mut out = Vec::new();
    for (_, key, legacy) in found {
        let data = if legacy {
            Some(
                trail
                    .objects
                    .get(&Path::from(key.as_str()))
                    .await?
                    .bytes()
                    .await?,
            )
        } else {
            trail.bucket.get(&key).await?
        };
        let Some(data) = data else { continue };
        let text = gunzip(&data).map_err(|e| TrailError::Encode(format!("{key}: {e}")))?;
        if legacy {
            out.extend(
                text.split(|b| *b == b'\n')
                    .filter_map(|l| serde_json::from_slice::<Value>(l).ok()),
            );
        } else if let Ok(mut v) = serde_json::from_slice::<Value>(&text)
            && let Some(Value::Array(a)) = v.get_mut("Records").map(Value::take)
        {
            out.extend(a);
        }
    }
    Ok(out)
}
