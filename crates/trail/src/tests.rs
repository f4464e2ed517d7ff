//! The log written by several nodes, in both layouts, checked and tampered with.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde_json::json;

use crate::digest::Digest;
use crate::*;

fn root() -> Arc<kms::RootKey> {
    Arc::new(kms::RootKey::from_hex(&"11".repeat(32)).unwrap())
}

struct World {
    _dir: tempfile::TempDir,
    objects: Arc<dyn ObjectStore>,
    buckets: std::path::PathBuf,
    catalog: catalog::Catalog,
}

impl World {
    async fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let catalog =
            catalog::Catalog::open(&format!("sqlite://{}", dir.path().join("c.db").display()))
                .await
                .unwrap();
        World {
            objects: Arc::new(InMemory::new()),
            buckets: dir.path().join("buckets"),
            _dir: dir,
            catalog,
        }
    }

    fn trail(&self, root: Arc<kms::RootKey>, interval_ms: i64) -> Arc<Trail> {
        Arc::new(Trail::new(
            self.objects.clone(),
            "trail",
            Bucket::local(&self.buckets, "trail").unwrap(),
            root,
            Some(self.catalog.clone()),
            TrailConfig {
                account: "111122223333".into(),
                digest_interval_ms: interval_ms,
                ..TrailConfig::default()
            },
        ))
    }

    fn file(&self, key: &str) -> std::path::PathBuf {
        self.buckets.join("trail").join(key)
    }

    fn files(&self, part: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![self.buckets.join("trail")];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let k = p
                        .strip_prefix(self.buckets.join("trail"))
                        .unwrap()
                        .to_string_lossy()
                        .into_owned();
                    if k.contains(part) {
                        out.push(k);
                    }
                }
            }
        }
        out.sort();
        out
    }
}

/// The old layout, as the previous version wrote it: one batch per flush, an Ed25519 digest.
async fn legacy_batches(w: &World, node: &str, n: u64) {
    use aws_lc_rs::signature::Ed25519KeyPair;
    let trail = w.trail(root(), 3_600_000);
    let (key, _) = node::signing_key(&trail).await.unwrap();
    let mut previous = None;
    for seq in 1..=n {
        let line = format!("{}\n", json!({"eventName": "Old", "n": seq}));
        let batch = gzip(line.as_bytes()).unwrap();
        let batch_path = format!("trail/batches/{node}/{seq:016}.json.gz");
        let body = node::LegacyBody {
            node: node.into(),
            seq,
            batch: batch_path.clone(),
            batch_sha256: sha256_hex(&batch),
            records: 1,
            previous_sha256: previous.clone(),
            created_ms: 1,
        };
        let signed = serde_json::to_vec(&body).unwrap();
        let file = node::DigestFile {
            signature: hex::encode(Ed25519KeyPair::sign(&key, &signed).as_ref()),
            body,
        };
        let d = serde_json::to_vec(&file).unwrap();
        w.objects
            .put(&Path::from(batch_path.as_str()), PutPayload::from(batch))
            .await
            .unwrap();
        w.objects
            .put(
                &Path::from(format!("trail/digests/{node}/{seq:016}.json")),
                PutPayload::from(d.clone()),
            )
            .await
            .unwrap();
        previous = Some(sha256_hex(&d));
    }
}

/// Two nodes of the new layout (a continuing the old chain), records of two accounts.
async fn written(w: &World) -> Arc<Trail> {
    legacy_batches(w, "a", 2).await;
    let trail = w.trail(root(), 3_600_000);
    for node in ["a", "b"] {
        let wr = TrailWriter::open(trail.clone(), node).await.unwrap();
        for batch in 0..3 {
            for i in 0..4 {
                wr.record(json!({"eventName": "DescribeImages", "n": batch * 4 + i,
                    "eventTime": "2026-11-29T05:00:00Z",
                    "recipientAccountId": if i == 0 { "444455556666" } else { "111122223333" }}));
            }
            wr.flush().await.unwrap().unwrap();
        }
        assert!(
            wr.flush().await.unwrap().is_none(),
            "nothing queued, nothing written"
        );
    }
    // A restarted node continues its chain.
    let wr = TrailWriter::open(trail.clone(), "a").await.unwrap();
    wr.record(json!({"eventName": "ImportImage"}));
    assert_eq!(wr.flush().await.unwrap(), Some(6));
    trail
}

#[tokio::test]
async fn an_intact_log_of_both_layouts_verifies_and_reads_back() {
    let w = World::new().await;
    let trail = written(&w).await;
    let r = verify(&trail).await.unwrap();
    assert_eq!(r.problems, Vec::<String>::new());
    // 2 old digests + 3 (a) + 3 (b) + 1 (a again); files: 2 batches + 6 × 2 accounts + 1.
    assert_eq!((r.digests, r.batches, r.records), (9, 15, 27));
    let all = records(&trail, None).await.unwrap();
    assert_eq!(all.len(), 27);
    assert_eq!(all[0]["eventName"], "Old", "oldest first");
    // CloudTrail's layout: one file per account per write.
    let logs = w.files("_CloudTrail_");
    assert_eq!(logs.len(), 13);
    assert_eq!(
        logs.iter()
            .filter(|k| k.starts_with("AWSLogs/444455556666/CloudTrail/us-east-1/"))
            .count(),
        6
    );
    let content = gunzip(&std::fs::read(w.file(&logs[0])).unwrap()).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&content).unwrap();
    assert!(v["Records"].is_array());
    let other = w.trail(
        Arc::new(kms::RootKey::from_hex(&"22".repeat(32)).unwrap()),
        3_600_000,
    );
    assert!(
        verify(&other).await.is_err(),
        "another root key cannot open the signing key"
    );
}

fn digest_of(w: &World, key: &str) -> (Vec<u8>, Digest) {
    let inflated = gunzip(&std::fs::read(w.file(key)).unwrap()).unwrap();
    let d = serde_json::from_slice(&inflated).unwrap();
    (inflated, d)
}

#[tokio::test]
async fn digests_chain_sign_and_name_every_log_file() {
    let w = World::new().await;
    let trail = written(&w).await;
    let every = 3_600_000;
    let t0 = 1_795_928_405_000i64; // 2026-11-29T05:00:05Z
    // No period has ended for the first chain: its first digest ends at the next boundary.
    let first = trail.make_digests(t0).await.unwrap();
    assert_eq!(first.len(), 2, "one digest per account: {first:?}");
    assert!(
        trail.make_digests(t0 + 1000).await.unwrap().is_empty(),
        "once per period"
    );
    // An hour without log files still has its digest, linked to the one before.
    let second = trail.make_digests(t0 + every).await.unwrap();
    assert_eq!(second.len(), 2);
    let k1 = first.iter().find(|k| k.contains("/111122223333/")).unwrap();
    let k2 = second
        .iter()
        .find(|k| k.contains("/111122223333/"))
        .unwrap();
    assert_eq!(
        k1,
        "AWSLogs/111122223333/CloudTrail-Digest/us-east-1/2026/11/29/111122223333_CloudTrail-Digest_us-east-1_vmie_us-east-1_20261129T050000Z.json.gz"
    );
    let (i1, d1) = digest_of(&w, k1);
    let (i2, d2) = digest_of(&w, k2);
    assert_eq!(d1.log_files.len(), 7);
    assert!(d2.log_files.is_empty());
    assert_eq!(d1.previous_digest_signature, None);
    assert_eq!(d1.digest_start_time, "2026-11-29T04:00:00Z");
    assert_eq!(d2.digest_start_time, d1.digest_end_time);
    assert_eq!(d2.previous_digest_s3_object.as_deref(), Some(k1.as_str()));
    assert_eq!(d2.previous_digest_hash_value, Some(sha256_hex(&i1)));
    // Each log file's hash is of its uncompressed content.
    for lf in &d1.log_files {
        let c = gunzip(&std::fs::read(w.file(&lf.s3_object)).unwrap()).unwrap();
        assert_eq!(sha256_hex(&c), lf.hash_value);
    }
    // The signature, as validate-logs checks it, with the key ListPublicKeys gives.
    let meta = trail.bucket().metadata(k2).await.unwrap();
    assert_eq!(
        d2.previous_digest_signature.as_ref(),
        Some(&trail.bucket().metadata(k1).await.unwrap()["signature"])
    );
    let keys = trail.public_keys(t0, t0 + every).await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].fingerprint, d2.digest_public_key_fingerprint);
    let text = format!(
        "{}\ntrail/{k2}\n{}\n{}",
        d2.digest_end_time,
        sha256_hex(&i2),
        d2.previous_digest_signature.clone().unwrap()
    );
    assert!(keys::verifies(
        &keys[0].der,
        text.as_bytes(),
        &hex::decode(&meta["signature"]).unwrap()
    ));
    assert_eq!(meta["signature-algorithm"], "SHA256withRSA");
    assert_eq!(verify(&trail).await.unwrap().problems, Vec::<String>::new());
    assert_eq!(verify(&trail).await.unwrap().cloudtrail_digests, 4);
}

#[tokio::test]
async fn signing_keys_rotate_with_their_validity() {
    let w = World::new().await;
    let mut trail = Trail::new(
        w.objects.clone(),
        "trail",
        Bucket::local(&w.buckets, "trail").unwrap(),
        root(),
        Some(w.catalog.clone()),
        TrailConfig {
            key_rotation_ms: 10_000,
            digest_interval_ms: 5_000,
            ..TrailConfig::default()
        },
    );
    trail.cfg.account = "111122223333".into();
    let a = trail.signing_key(25_000).await.unwrap();
    let b = trail.signing_key(35_000).await.unwrap();
    assert_ne!(a.info.fingerprint, b.info.fingerprint);
    assert_eq!((a.info.start_ms, a.info.end_ms), (20_000, 30_000));
    let listed = trail.public_keys(0, 100_000).await.unwrap();
    assert_eq!(listed, vec![a.info.clone(), b.info.clone()]);
    assert_eq!(
        trail.public_keys(31_000, 32_000).await.unwrap(),
        vec![b.info.clone()]
    );
    // Another process (empty cache) finds the same keys.
    let again = Trail::new(
        w.objects.clone(),
        "trail",
        Bucket::local(&w.buckets, "trail").unwrap(),
        root(),
        None,
        trail.cfg.clone(),
    );
    assert_eq!(again.public_keys(0, 100_000).await.unwrap(), listed);
}

async fn problems_after(f: impl AsyncFnOnce(&World, &Arc<Trail>)) -> Vec<String> {
    let w = World::new().await;
    let trail = written(&w).await;
    let t0 = 1_795_928_405_000i64;
    trail.make_digests(t0).await.unwrap();
    trail.make_digests(t0 + 3_600_000).await.unwrap();
    trail.make_digests(t0 + 7_200_000).await.unwrap();
    f(&w, &trail).await;
    verify(&trail).await.unwrap().problems
}

fn has(v: &[String], s: &str) -> bool {
    v.iter().any(|x| x.contains(s))
}

#[tokio::test]
async fn deletions_alterations_insertions_and_reordering_are_caught() {
    let p = |s: &str| Path::from(s);
    // An old batch deleted.
    let v = problems_after(async |w, _| {
        w.objects
            .delete(&p("trail/batches/a/0000000000000002.json.gz"))
            .await
            .unwrap()
    })
    .await;
    assert!(
        has(&v, "0000000000000002.json.gz: missing (deleted)"),
        "{v:?}"
    );
    // A log file deleted: both chains name it.
    let v = problems_after(async |w, _| {
        let k = w.files("_CloudTrail_")[3].clone();
        std::fs::remove_file(w.file(&k)).unwrap();
    })
    .await;
    assert!(
        has(&v, ".json.gz: missing (deleted)") && v.len() == 1,
        "{v:?}"
    );
    // A log file altered.
    let v = problems_after(async |w, _| {
        let k = w.files("_CloudTrail_")[5].clone();
        std::fs::write(w.file(&k), gzip(b"{\"Records\":[]}").unwrap()).unwrap();
    })
    .await;
    assert!(has(&v, "content changed (altered)"), "{v:?}");
    // A node digest deleted: the gap is named.
    let v = problems_after(async |w, _| {
        w.objects
            .delete(&p("trail/digests/b/0000000000000002.json"))
            .await
            .unwrap();
    })
    .await;
    assert!(
        has(&v, "node b: digests 2 to 2 are missing (deleted)"),
        "{v:?}"
    );
    // The newest node digest deleted: short of the head in the catalog.
    let v = problems_after(async |w, _| {
        w.objects
            .delete(&p("trail/digests/a/0000000000000006.json"))
            .await
            .unwrap();
    })
    .await;
    assert!(
        has(&v, "node a: digests 6 to 6 are missing (deleted)"),
        "{v:?}"
    );
    // A node digest edited: the signature fails.
    let v = problems_after(async |w, _| {
        let path = p("trail/digests/b/0000000000000002.json");
        let t = String::from_utf8(
            w.objects
                .get(&path)
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
                .to_vec(),
        )
        .unwrap();
        w.objects
            .put(
                &path,
                PutPayload::from(t.replace("\"records\":3", "\"records\":5")),
            )
            .await
            .unwrap();
    })
    .await;
    assert!(has(&v, "signature does not verify"), "{v:?}");
    // A log file inserted.
    let v = problems_after(async |w, _| {
        let k = w.files("_CloudTrail_")[0].replace(".json.gz", "X.json.gz");
        std::fs::write(w.file(&k), b"y").unwrap();
    })
    .await;
    assert!(has(&v, "no digest covers it (inserted)"), "{v:?}");
    // Two node digests swapped.
    let v = problems_after(async |w, _| {
        let a = p("trail/digests/b/0000000000000001.json");
        let b = p("trail/digests/b/0000000000000003.json");
        let x = w.objects.get(&a).await.unwrap().bytes().await.unwrap();
        let y = w.objects.get(&b).await.unwrap().bytes().await.unwrap();
        w.objects.put(&a, PutPayload::from(y)).await.unwrap();
        w.objects.put(&b, PutPayload::from(x)).await.unwrap();
    })
    .await;
    assert!(has(&v, "reordered"), "{v:?}");
    // A CloudTrail digest deleted in the middle of its chain, and the newest one.
    let v = problems_after(async |w, _| {
        let d = w.files("CloudTrail-Digest_");
        let mine: Vec<_> = d.iter().filter(|k| k.contains("/111122223333/")).collect();
        std::fs::remove_file(w.file(mine[1])).unwrap();
    })
    .await;
    assert!(
        has(&v, "20261129T060000Z.json.gz: missing (deleted)"),
        "{v:?}"
    );
    let v = problems_after(async |w, _| {
        let d = w.files("CloudTrail-Digest_");
        let mine: Vec<_> = d.iter().filter(|k| k.contains("/444455556666/")).collect();
        std::fs::remove_file(w.file(mine[2])).unwrap();
    })
    .await;
    assert!(
        has(&v, "20261129T070000Z.json.gz: missing (deleted)"),
        "{v:?}"
    );
    // A CloudTrail digest altered (re-compressed with a change): its signature fails.
    let v = problems_after(async |w, _| {
        let d = w.files("CloudTrail-Digest_");
        let k = w.file(&d[0]);
        let t = String::from_utf8(gunzip(&std::fs::read(&k).unwrap()).unwrap()).unwrap();
        std::fs::write(
            &k,
            gzip(
                t.replace("\"logFiles\":[{", "\"logFiles\":[{\"x\":1,")
                    .as_bytes(),
            )
            .unwrap(),
        )
        .unwrap();
    })
    .await;
    assert!(has(&v, "signature does not verify (altered)"), "{v:?}");
}

#[tokio::test]
async fn stopped_accounts_are_not_delivered_but_their_stop_is() {
    let w = World::new().await;
    let trail = w.trail(root(), 3_600_000);
    trail
        .set_logging("444455556666", false, 1_795_928_405_000)
        .await
        .unwrap();
    let wr = TrailWriter::open(trail.clone(), "n").await.unwrap();
    let rec = |name: &str, time: &str| {
        json!({"eventName": name, "eventSource": "cloudtrail.amazonaws.com",
            "recipientAccountId": "444455556666", "eventTime": time})
    };
    wr.record(rec("Before", "2026-11-29T05:00:04Z"));
    wr.record(rec("During", "2026-11-29T05:00:06Z"));
    wr.record(rec("StopLogging", "2026-11-29T05:00:05Z"));
    wr.flush().await.unwrap().unwrap();
    let names = |all: Vec<serde_json::Value>| -> Vec<String> {
        all.iter()
            .map(|r| r["eventName"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        names(records(&trail, None).await.unwrap()),
        ["Before", "StopLogging"]
    );
    let s = trail.status("444455556666").await.unwrap();
    assert!(!s.logging && s.stop_ms == Some(1_795_928_405_000));
    assert!(trail.status("111122223333").await.unwrap().logging);
    // Started again: what was made while stopped stays out, what follows goes in.
    trail
        .set_logging("444455556666", true, 1_795_928_410_000)
        .await
        .unwrap();
    wr.record(rec("During2", "2026-11-29T05:00:09Z"));
    wr.record(rec("After", "2026-11-29T05:00:10Z"));
    wr.flush().await.unwrap().unwrap();
    assert_eq!(
        names(records(&trail, None).await.unwrap()),
        ["Before", "StopLogging", "After"]
    );
}

#[test]
fn hostile_files_are_refused_not_obeyed() {
    // A gzip bomb inflates no further than the bound; odd bytes parse as nothing.
    let bomb = gzip(&vec![b'{'; 80 << 20]).unwrap();
    assert_eq!(parse_untrusted(&bomb), [false, false, false, false]);
    for sample in [
        &b""[..],
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00",
        b"{\"body\":{\"node\":\"a\",\"seq\":1,\"files\":[{}]},\"signature\":1}",
        b"9999-99-99T99:99:99Z",
        b"2026-02-30T00:00:00Z",
        b"\xff\xfe",
    ] {
        assert_eq!(
            parse_untrusted(sample),
            [false, false, false, false],
            "{sample:?}"
        );
    }
    let good = gzip(br#"{"Records":[]}"#).unwrap();
    assert_eq!(parse_untrusted(&good), [false, true, false, false]);
    assert!(parse_untrusted(b"2026-11-29T05:00:00Z")[3]);
}
