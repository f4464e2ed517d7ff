//! The snapshot store's behaviour, run against a local folder and against a real S3 server.
#![allow(clippy::cast_possible_truncation, clippy::unwrap_used, missing_docs)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use blockstore::{PutRequest, StoreError, new_snapshot_id};
use common::{Env, Kind, admin, env, make_raw, open_disk, raw_path, write_sparse};
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Kind::Local).await })*
        }
        mod s3 {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Kind::S3).await })*
        }
    };
}

both_backends!(
    roundtrip_sparse_disk,
    same_disk_twice_adds_almost_nothing,
    incremental_snapshot_stores_only_changes,
    flipped_byte_detected,
    swapped_chunks_detected,
    chunk_from_other_snapshot_detected,
    truncated_manifest_detected,
    disabled_and_deleted_keys_refuse_reads,
    rotated_key_still_decrypts,
    delete_and_gc_reclaims_unreferenced_only,
    sealed_objects_round_trip_and_detect_tampering,
    format_1_snapshots_still_read_verify_and_parent,
);

fn req(id: &str, parent: Option<&str>) -> PutRequest {
    PutRequest {
        snapshot_id: id.into(),
        kms_key: None,
        parent: parent.map(str::to_string),
        caller: admin(),
    }
}

async fn put(env: &Env, file: &str, id: &str, parent: Option<&str>) -> blockstore::SnapshotSummary {
    let disk = open_disk(&raw_path(env, file));
    env.store.put(disk, req(id, parent), None).await.unwrap()
}

async fn read_all(env: &Env, id: &str) -> Result<Vec<u8>, StoreError> {
    let r = env.store.open(&admin(), id).await?;
    let mut out = vec![0u8; r.size() as usize];
    // Odd-sized reads that straddle chunks.
    let mut pos = 0usize;
    while pos < out.len() {
        let n = (100_000).min(out.len() - pos);
        r.read_at(&mut out[pos..pos + n], pos as u64).await?;
        pos += n;
    }
    Ok(out)
}

async fn chunk_objects(env: &Env) -> Vec<object_store::ObjectMeta> {
    let prefix = object_store::path::Path::from("snapshots/chunks");
    env.objects.list(Some(&prefix)).try_collect().await.unwrap()
}

async fn roundtrip_sparse_disk(kind: Kind) {
    let env = env(kind).await;
    let data = make_raw(&raw_path(&env, "a.raw"), 3 << 20, 1);
    let id = new_snapshot_id();
    let s = put(&env, "a.raw", &id, None).await;
    assert_eq!(s.volume_size, data.len() as u64);
    assert!(
        s.chunks < 48,
        "zero chunks must not be stored ({} of 48)",
        s.chunks
    );
    assert_eq!(read_all(&env, &id).await.unwrap(), data);
    let listed = env.store.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].snapshot_id, id);
    // Extents: stored chunks are data, the rest zero, covering the volume.
    let r = env.store.open(&admin(), &id).await.unwrap();
    let ex = r.extents(0, u64::MAX);
    assert_eq!(ex.first().unwrap().offset, 0);
    assert_eq!(ex.last().unwrap().end(), data.len() as u64);
    // Compressible text is compressed, random data is not inflated much: stored < data.
    assert!(
        s.added_bytes < s.data_bytes,
        "{} vs {}",
        s.added_bytes,
        s.data_bytes
    );
    let v = env.store.verify(&admin(), &id).await.unwrap();
    assert_eq!((v.chunks_checked, v.failures.len()), (s.chunks, 0));
    // Through the blocking Disk view, as inspection and export use it.
    let reader = Arc::new(r);
    let handle = tokio::runtime::Handle::current();
    let back = tokio::task::spawn_blocking(move || {
        let d = reader.blocking(handle);
        let mut buf = vec![0u8; 4096];
        diskfmt::Disk::read_at(&d, &mut buf, 65_536 + 17).unwrap();
        buf
    })
    .await
    .unwrap();
    assert_eq!(back, data[65_536 + 17..65_536 + 17 + 4096]);
    // Nothing of the plaintext is visible in the stored objects.
    let needle = &data[0..64];
    for m in chunk_objects(&env).await {
        let b = env
            .objects
            .get(&m.location)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert!(!b.windows(64).any(|w| w == needle));
    }
}

async fn same_disk_twice_adds_almost_nothing(kind: Kind) {
    let env = env(kind).await;
    make_raw(&raw_path(&env, "a.raw"), 3 << 20, 2);
    let a = put(&env, "a.raw", &new_snapshot_id(), None).await;
    let before = env.store.stored_bytes().await.unwrap();
    let b = put(&env, "a.raw", &new_snapshot_id(), None).await;
    let after = env.store.stored_bytes().await.unwrap();
    assert_eq!(b.added_bytes, 0);
    assert_eq!(a.chunks, b.chunks);
    assert!(
        (after - before) * 100 < before,
        "second copy added {} of {before}",
        after - before
    );
}

async fn incremental_snapshot_stores_only_changes(kind: Kind) {
    let env = env(kind).await;
    let mut data = make_raw(&raw_path(&env, "a.raw"), 4 << 20, 3);
    let a = new_snapshot_id();
    let sa = put(&env, "a.raw", &a, None).await;
    // Change one 64 KiB chunk's worth in the middle, and add data in a hole.
    for b in &mut data[1 << 20..(1 << 20) + 1000] {
        *b ^= 0x5a;
    }
    data[(3 << 20) + 5] = 7;
    write_sparse(&raw_path(&env, "b.raw"), &data);
    let b = new_snapshot_id();
    let sb = put(&env, "b.raw", &b, Some(&a)).await;
    assert!(
        sb.added_bytes > 0 && sb.added_bytes <= 2 * 70_000,
        "added {}",
        sb.added_bytes
    );
    assert!(sb.added_bytes * 10 < sa.added_bytes);
    assert_eq!(read_all(&env, &b).await.unwrap(), data);
    // Deleting the parent keeps the child readable (it references the parent's chunks).
    env.store.delete(&a).await.unwrap();
    env.store.gc(Duration::ZERO).await.unwrap();
    assert_eq!(read_all(&env, &b).await.unwrap(), data);
    assert!(matches!(
        read_all(&env, &a).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn tamper_one(env: &Env, f: impl FnOnce(&mut Vec<u8>)) {
    let m = chunk_objects(env).await.into_iter().next().unwrap();
    let mut b = env
        .objects
        .get(&m.location)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    f(&mut b);
    env.objects
        .put(&m.location, PutPayload::from(b))
        .await
        .unwrap();
}

async fn assert_detected(env: &Env, id: &str) -> String {
    let err = read_all(env, id).await.unwrap_err();
    assert!(matches!(err, StoreError::Integrity { .. }), "{err}");
    let v = env.store.verify(&admin(), id).await.unwrap();
    assert!(!v.failures.is_empty(), "verify missed it");
    err.to_string()
}

async fn flipped_byte_detected(kind: Kind) {
    let env = env(kind).await;
    make_raw(&raw_path(&env, "a.raw"), 1 << 20, 4);
    let id = new_snapshot_id();
    put(&env, "a.raw", &id, None).await;
    tamper_one(&env, |b| {
        let n = b.len();
        b[n - 40] ^= 0x01;
    })
    .await;
    let msg = assert_detected(&env, &id).await;
    assert!(msg.contains("authentication failed"), "{msg}");
}

async fn swapped_chunks_detected(kind: Kind) {
    let env = env(kind).await;
    make_raw(&raw_path(&env, "a.raw"), 1 << 20, 5);
    let id = new_snapshot_id();
    put(&env, "a.raw", &id, None).await;
    let objs = chunk_objects(&env).await;
    let (x, y) = (&objs[0].location, &objs[1].location);
    let bx = env.objects.get(x).await.unwrap().bytes().await.unwrap();
    let by = env.objects.get(y).await.unwrap().bytes().await.unwrap();
    env.objects.put(x, PutPayload::from(by)).await.unwrap();
    env.objects.put(y, PutPayload::from(bx)).await.unwrap();
    let msg = assert_detected(&env, &id).await;
    assert!(msg.contains("swapped"), "{msg}");
}

async fn chunk_from_other_snapshot_detected(kind: Kind) {
    let env = env(kind).await;
    make_raw(&raw_path(&env, "a.raw"), 1 << 20, 6);
    make_raw(&raw_path(&env, "b.raw"), 1 << 20, 7);
    let a = new_snapshot_id();
    put(&env, "a.raw", &a, None).await;
    let before: Vec<_> = chunk_objects(&env)
        .await
        .into_iter()
        .map(|m| m.location)
        .collect();
    put(&env, "b.raw", &new_snapshot_id(), None).await;
    let foreign = chunk_objects(&env)
        .await
        .into_iter()
        .find(|m| !before.contains(&m.location))
        .unwrap();
    // The foreign chunk is rewritten with A's origin index so only the key/AAD can tell.
    let mut fb = env
        .objects
        .get(&foreign.location)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    let own = env
        .objects
        .get(&before[0])
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let hdr = blockstore::chunk::header(&own).unwrap();
    let fhdr = blockstore::chunk::header(&fb).unwrap();
    let mut forged = own[..hdr.2 - 1].to_vec();
    forged.push(fhdr.1);
    forged.extend_from_slice(&fb.split_off(fhdr.2));
    env.objects
        .put(&before[0], PutPayload::from(forged))
        .await
        .unwrap();
    let msg = assert_detected(&env, &a).await;
    assert!(msg.contains("authentication failed"), "{msg}");
}

async fn truncated_manifest_detected(kind: Kind) {
    let env = env(kind).await;
    make_raw(&raw_path(&env, "a.raw"), 1 << 20, 8);
    let id = new_snapshot_id();
    put(&env, "a.raw", &id, None).await;
    let path = object_store::path::Path::from(format!("snapshots/manifests/{id}.json"));
    let b = env.objects.get(&path).await.unwrap().bytes().await.unwrap();
    env.objects
        .put(&path, PutPayload::from(b.slice(..b.len() / 2)))
        .await
        .unwrap();
    let err = env.store.open(&admin(), &id).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Integrity { ref what, .. } if what == "manifest"),
        "{err}"
    );
    assert!(env.store.verify(&admin(), &id).await.is_err());
    // An edited (still valid JSON) manifest fails its MAC.
    let mut f: serde_json::Value = serde_json::from_slice(&b).unwrap();
    f["body"]["volume_size"] = serde_json::json!(12345);
    env.objects
        .put(&path, PutPayload::from(serde_json::to_vec(&f).unwrap()))
        .await
        .unwrap();
    let err = env.store.open(&admin(), &id).await.unwrap_err();
    assert!(err.to_string().contains("MAC"), "{err}");
}

async fn disabled_and_deleted_keys_refuse_reads(kind: Kind) {
    let env = env(kind).await;
    make_raw(&raw_path(&env, "a.raw"), 1 << 20, 9);
    let key = env
        .kms
        .create_key(&admin(), kms::CreateKey::default())
        .await
        .unwrap();
    let id = new_snapshot_id();
    let disk = open_disk(&raw_path(&env, "a.raw"));
    let mut r = req(&id, None);
    r.kms_key = Some(key.key_id.clone());
    env.store.put(disk, r, None).await.unwrap();
    env.kms.disable_key(&admin(), &key.key_id).await.unwrap();
    let err = env.store.open(&admin(), &id).await.unwrap_err();
    assert_eq!(err.code(), "KMSKeyDisabled", "{err}");
    assert!(err.to_string().contains("disabled"), "{err}");
    env.kms.enable_key(&admin(), &key.key_id).await.unwrap();
    assert!(read_all(&env, &id).await.is_ok());
    env.kms
        .schedule_key_deletion(&admin(), &key.key_id, 7)
        .await
        .unwrap();
    let err = env.store.open(&admin(), &id).await.unwrap_err();
    assert!(err.to_string().contains("pending deletion"), "{err}");
}

async fn rotated_key_still_decrypts(kind: Kind) {
    let env = env(kind).await;
    let data = make_raw(&raw_path(&env, "a.raw"), 1 << 20, 10);
    let id = new_snapshot_id();
    put(&env, "a.raw", &id, None).await;
    let key = env.kms.default_ebs_key().await.unwrap();
    env.kms
        .rotate_key_on_demand(&admin(), &key.key_id)
        .await
        .unwrap();
    assert_eq!(read_all(&env, &id).await.unwrap(), data);
    let id2 = new_snapshot_id();
    put(&env, "a.raw", &id2, None).await;
    assert_eq!(read_all(&env, &id2).await.unwrap(), data);
}

async fn delete_and_gc_reclaims_unreferenced_only(kind: Kind) {
    let env = env(kind).await;
    let da = make_raw(&raw_path(&env, "a.raw"), 1 << 20, 11);
    make_raw(&raw_path(&env, "b.raw"), 1 << 20, 12);
    let a = new_snapshot_id();
    let b = new_snapshot_id();
    put(&env, "a.raw", &a, None).await;
    let after_a = chunk_objects(&env).await.len();
    put(&env, "b.raw", &b, None).await;
    let report = env.store.gc(Duration::ZERO).await.unwrap();
    assert_eq!(report.chunks_deleted, 0);
    env.store.delete(&b).await.unwrap();
    let report = env.store.gc(Duration::ZERO).await.unwrap();
    assert!(report.chunks_deleted > 0);
    assert_eq!(report.keys_deleted, 1);
    assert_eq!(chunk_objects(&env).await.len(), after_a);
    assert_eq!(read_all(&env, &a).await.unwrap(), da);
    // A generous grace period keeps fresh unreferenced objects.
    env.store.delete(&a).await.unwrap();
    assert_eq!(
        env.store
            .gc(Duration::from_secs(3600))
            .await
            .unwrap()
            .chunks_deleted,
        0
    );
    assert!(env.store.gc(Duration::ZERO).await.unwrap().chunks_deleted > 0);
    assert!(chunk_objects(&env).await.is_empty());
    assert!(matches!(
        env.store.delete(&a).await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn invalid_ids_refused_before_touching_paths() {
    let env = env(Kind::Local).await;
    for bad in ["../x", "snap-XYZ", "snap-", "snap-0123/../../etc"] {
        assert!(
            matches!(
                env.store.open(&admin(), bad).await,
                Err(StoreError::Invalid(_))
            ),
            "{bad}"
        );
    }
}

async fn sealed_objects_round_trip_and_detect_tampering(kind: Kind) {
    let env = env(kind).await;
    let marker = b"SEALED-EVIDENCE-MARKER-0123456789";
    let mut data = vec![7u8; 100_000];
    data[5000..5000 + marker.len()].copy_from_slice(marker);
    env.store
        .put_sealed(&admin(), None, "boot-evidence", "import-ami-0123", &data)
        .await
        .unwrap();
    let got = env
        .store
        .get_sealed(&admin(), "boot-evidence", "import-ami-0123")
        .await
        .unwrap();
    assert_eq!(&got[..], &data[..]);
    assert_eq!(
        env.store.list_sealed("boot-evidence").await.unwrap(),
        vec!["import-ami-0123".to_string()]
    );
    // Not in plaintext anywhere in the store.
    let objs: Vec<_> = env.objects.list(None).try_collect().await.unwrap();
    for o in &objs {
        let b = env
            .objects
            .get(&o.location)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert!(
            !b.windows(marker.len()).any(|w| w == marker),
            "{}",
            o.location
        );
    }
    // Copied under another name: refused. Altered: refused. Missing: NotFound.
    let from = object_store::path::Path::from("snapshots/sealed/boot-evidence/import-ami-0123");
    let to = object_store::path::Path::from("snapshots/sealed/boot-evidence/import-ami-9999");
    let mut b = env
        .objects
        .get(&from)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    env.objects
        .put(&to, PutPayload::from(b.clone()))
        .await
        .unwrap();
    assert!(matches!(
        env.store
            .get_sealed(&admin(), "boot-evidence", "import-ami-9999")
            .await,
        Err(StoreError::Integrity { .. })
    ));
    let n = b.len();
    b[n - 20] ^= 1;
    env.objects.put(&from, PutPayload::from(b)).await.unwrap();
    assert!(matches!(
        env.store
            .get_sealed(&admin(), "boot-evidence", "import-ami-0123")
            .await,
        Err(StoreError::Integrity { .. })
    ));
    env.store
        .delete_sealed("boot-evidence", "import-ami-0123")
        .await
        .unwrap();
    env.store
        .delete_sealed("boot-evidence", "import-ami-0123")
        .await
        .unwrap();
    assert!(matches!(
        env.store
            .get_sealed(&admin(), "boot-evidence", "import-ami-0123")
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert!(env.store.get_sealed(&admin(), "../x", "y").await.is_err());
}

/// Rewrites the committed snapshot `id` as a store written before manifest format 2 held it:
/// chunks named by HMAC-SHA256 under the dedup key, sealed under those names, manifest of
/// format 1. Returns the format-1 names by index.
async fn rewrite_as_format_1(env: &Env, id: &str) -> Vec<(u64, String)> {
    let get = |p: String| {
        let objects = env.objects.clone();
        async move {
            objects
                .get(&object_store::path::Path::from(p))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
        }
    };
    let ctx = |k: &str, v: &str| -> kms::Context {
        [(k.to_string(), v.to_string())].into_iter().collect()
    };
    let data_key = env
        .kms
        .decrypt_data_key(
            &admin(),
            &get(format!("snapshots/keys/{id}.key")).await,
            &ctx("vmie:snapshot", id),
        )
        .await
        .unwrap();
    let mut file =
        blockstore::manifest::parse(&get(format!("snapshots/manifests/{id}.json")).await).unwrap();
    assert_eq!(file.body.format, 2, "written now as format 2");
    let key_id = file.body.kms_key_id.clone();
    let dedup = env
        .kms
        .decrypt_data_key(
            &admin(),
            &get(format!("snapshots/dedup/{key_id}.key")).await,
            &ctx("vmie:dedup-key", &key_id),
        )
        .await
        .unwrap();
    let aead = kms::aead::AeadKey::new(&data_key);
    let reader = env.store.open(&admin(), id).await.unwrap();
    let cs = u64::from(file.body.chunk_size);
    let mut names = Vec::new();
    for e in &mut file.body.chunks {
        let mut plain = vec![0u8; cs.min(file.body.volume_size - e.0 * cs) as usize];
        reader.read_at(&mut plain, e.0 * cs).await.unwrap();
        let old = hex::encode(kms::aead::hmac_sha256(&dedup[..], &plain));
        let origin = blockstore::Origin {
            snapshot: id.to_string(),
            index: e.0,
        };
        let obj = blockstore::chunk::encode(&aead, &origin, &old, &plain, 1);
        let path = format!("snapshots/chunks/{key_id}/{}/{old}", &old[..2]);
        env.objects
            .put(&path.as_str().into(), PutPayload::from(obj))
            .await
            .unwrap();
        (e.1, e.2, e.3) = (old.clone(), 0, e.0);
        names.push((e.0, old));
    }
    file.body.origins = vec![id.to_string()];
    file.body.format = 1;
    let sealed = blockstore::manifest::seal(file.body, &data_key).unwrap();
    env.objects
        .put(
            &format!("snapshots/manifests/{id}.json").as_str().into(),
            PutPayload::from(sealed),
        )
        .await
        .unwrap();
    names
}

/// Stores written before chunk names moved to keyed BLAKE3 (manifest format 1, HMAC-SHA256
/// names) stay readable and verifiable, and serve as parents of new (format 2) snapshots.
async fn format_1_snapshots_still_read_verify_and_parent(kind: Kind) {
    let env = env(kind).await;
    let data = make_raw(&raw_path(&env, "a.raw"), 3 << 20, 5);
    let old = new_snapshot_id();
    put(&env, "a.raw", &old, None).await;
    let names = rewrite_as_format_1(&env, &old).await;
    assert!(!names.is_empty());
    assert_eq!(read_all(&env, &old).await.unwrap(), data);
    let report = env.store.verify(&admin(), &old).await.unwrap();
    assert!(
        report.failures.is_empty() && report.chunks_checked > 0,
        "format 1 verifies: {report:?}"
    );
    // A child of the format-1 parent is written as format 2 and reads back whole.
    let child = new_snapshot_id();
    put(&env, "a.raw", &child, Some(&old)).await;
    assert_eq!(read_all(&env, &child).await.unwrap(), data);
    let objects = env.objects.clone();
    let bytes = objects
        .get(&format!("snapshots/manifests/{child}.json").as_str().into())
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let body = blockstore::manifest::parse(&bytes).unwrap().body;
    assert_eq!(body.format, 2);
    for e in &body.chunks {
        let (_, old_name) = names.iter().find(|(i, _)| *i == e.0).unwrap();
        assert_ne!(&e.1, old_name, "chunk {} keeps its format-1 name", e.0);
    }
    assert!(
        env.store
            .verify(&admin(), &child)
            .await
            .unwrap()
            .failures
            .is_empty()
    );
}
