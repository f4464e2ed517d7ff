//! Key lifecycle, envelope encryption and policy checks against a real local-folder store.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;

use kms::{Caller, Context, CreateKey, KeyState, Kms, KmsConfig, KmsError, ManualClock, RootKey};
use object_store::local::LocalFileSystem;

const ACCOUNT: &str = "111122223333";
const T0: u64 = 1_800_000_000;

fn setup(dir: &std::path::Path) -> (Kms, Arc<ManualClock>) {
    let store = Arc::new(LocalFileSystem::new_with_prefix(dir).unwrap());
    let root = Arc::new(RootKey::load_or_create(&dir.join("root.key")).unwrap());
    let clock = Arc::new(ManualClock::new(T0));
    let kms = Kms::new(
        store,
        "kms",
        root,
        KmsConfig {
            region: "us-east-1".into(),
            account: ACCOUNT.into(),
        },
    )
    .with_clock(clock.clone());
    (kms, clock)
}

fn admin() -> Caller {
    Caller::account_root(ACCOUNT)
}

fn ctx(snap: &str) -> Context {
    [("snapshot".to_string(), snap.to_string())]
        .into_iter()
        .collect()
}

#[tokio::test]
async fn test_data_key_roundtrip_and_context_binding() {
    let dir = tempfile::tempdir().unwrap();
    let (kms, _) = setup(dir.path());
    let key = kms
        .create_key(
            &admin(),
            CreateKey {
                description: "d".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let dk = kms
        .generate_data_key(&admin(), &key.key_id, &ctx("snap-1"))
        .await
        .unwrap();
    let back = kms
        .decrypt_data_key(&admin(), &dk.ciphertext, &ctx("snap-1"))
        .await
        .unwrap();
    assert_eq!(*back, *dk.plaintext);
    let wrong = kms
        .decrypt_data_key(&admin(), &dk.ciphertext, &ctx("snap-2"))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), "InvalidCiphertextException", "{wrong}");
    let mut flipped = dk.ciphertext.clone();
    *flipped.last_mut().unwrap() ^= 1;
    assert!(matches!(
        kms.decrypt(&admin(), &flipped, &ctx("snap-1")).await,
        Err(KmsError::InvalidCiphertext(_))
    ));
    assert!(matches!(
        kms.decrypt(&admin(), b"garbage", &ctx("snap-1")).await,
        Err(KmsError::InvalidCiphertext(_))
    ));

    // The data key never reaches the store in the clear.
    let needle = hex::encode(dk.plaintext.as_ref());
    for entry in walk(dir.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains(&needle));
        assert!(!bytes.windows(32).any(|w| w == dk.plaintext.as_ref()));
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn test_disabled_key_refuses_then_enabled_works() {
    let dir = tempfile::tempdir().unwrap();
    let (kms, _) = setup(dir.path());
    let key = kms
        .create_key(&admin(), CreateKey::default())
        .await
        .unwrap();
    let blob = kms
        .encrypt(&admin(), &key.key_id, b"secret", &Context::new())
        .await
        .unwrap();
    kms.disable_key(&admin(), &key.key_id).await.unwrap();
    let err = kms
        .decrypt(&admin(), &blob, &Context::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "DisabledException");
    assert!(err.to_string().contains("disabled"), "{err}");
    assert!(
        kms.generate_data_key(&admin(), &key.key_id, &Context::new())
            .await
            .is_err()
    );
    kms.enable_key(&admin(), &key.key_id).await.unwrap();
    assert_eq!(
        kms.decrypt(&admin(), &blob, &Context::new())
            .await
            .unwrap()
            .1
            .as_slice(),
        b"secret"
    );
}

#[tokio::test]
async fn test_scheduled_deletion_waits_cancels_and_destroys() {
    let dir = tempfile::tempdir().unwrap();
    let (kms, clock) = setup(dir.path());
    let key = kms
        .create_key(&admin(), CreateKey::default())
        .await
        .unwrap();
    let blob = kms
        .encrypt(&admin(), &key.key_id, b"secret", &Context::new())
        .await
        .unwrap();
    for bad in [0, 6, 31] {
        assert_eq!(
            kms.schedule_key_deletion(&admin(), &key.key_id, bad)
                .await
                .unwrap_err()
                .code(),
            "ValidationException"
        );
    }
    kms.schedule_key_deletion(&admin(), &key.key_id, 7)
        .await
        .unwrap();
    assert_eq!(
        kms.decrypt(&admin(), &blob, &Context::new())
            .await
            .unwrap_err()
            .code(),
        "KMSInvalidStateException"
    );
    let m = kms
        .cancel_key_deletion(&admin(), &key.key_id)
        .await
        .unwrap();
    assert_eq!(m.state, KeyState::Disabled);
    kms.enable_key(&admin(), &key.key_id).await.unwrap();
    assert!(kms.decrypt(&admin(), &blob, &Context::new()).await.is_ok());

    kms.schedule_key_deletion(&admin(), &key.key_id, 7)
        .await
        .unwrap();
    clock.advance_days(6);
    assert!(kms.run_maintenance().await.unwrap().deleted.is_empty());
    clock.advance_days(2);
    assert_eq!(
        kms.run_maintenance().await.unwrap().deleted,
        vec![key.key_id.clone()]
    );
    let err = kms
        .decrypt(&admin(), &blob, &Context::new())
        .await
        .unwrap_err();
    assert!(matches!(err, KmsError::Deleted(_)), "{err}");
    assert!(
        kms.cancel_key_deletion(&admin(), &key.key_id)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn test_rotation_keeps_old_versions() {
    let dir = tempfile::tempdir().unwrap();
    let (kms, clock) = setup(dir.path());
    let key = kms
        .create_key(
            &admin(),
            CreateKey {
                rotation: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let old = kms
        .generate_data_key(&admin(), &key.key_id, &Context::new())
        .await
        .unwrap();
    clock.advance_days(364);
    assert!(kms.run_maintenance().await.unwrap().rotated.is_empty());
    clock.advance_days(2);
    assert_eq!(
        kms.run_maintenance().await.unwrap().rotated,
        vec![key.key_id.clone()]
    );
    let meta = kms.describe_key(&admin(), &key.key_id).await.unwrap();
    assert_eq!((meta.current_version, meta.versions), (2, 2));
    let new = kms
        .generate_data_key(&admin(), &key.key_id, &Context::new())
        .await
        .unwrap();
    assert_ne!(old.ciphertext[20..24], new.ciphertext[20..24]);
    assert_eq!(
        *kms.decrypt_data_key(&admin(), &old.ciphertext, &Context::new())
            .await
            .unwrap(),
        *old.plaintext
    );
    assert_eq!(
        *kms.decrypt_data_key(&admin(), &new.ciphertext, &Context::new())
            .await
            .unwrap(),
        *new.plaintext
    );
    // Re-encrypting moves an old blob to the current version.
    let re = kms
        .re_encrypt(
            &admin(),
            &old.ciphertext,
            &Context::new(),
            &key.key_id,
            &Context::new(),
        )
        .await
        .unwrap();
    assert_eq!(re[20..24], 2u32.to_be_bytes());
    assert_eq!(
        *kms.decrypt_data_key(&admin(), &re, &Context::new())
            .await
            .unwrap(),
        *old.plaintext
    );
}

#[tokio::test]
async fn test_default_ebs_key_and_aliases() {
    let dir = tempfile::tempdir().unwrap();
    let (kms, _) = setup(dir.path());
    let a = kms.default_ebs_key().await.unwrap();
    let b = kms.default_ebs_key().await.unwrap();
    assert_eq!(a.key_id, b.key_id);
    assert!(a.rotation_enabled);
    assert_eq!(kms.resolve("alias/aws/ebs").await.unwrap(), a.key_id);
    assert_eq!(
        kms.resolve(&format!("arn:aws:kms:us-east-1:{ACCOUNT}:alias/aws/ebs"))
            .await
            .unwrap(),
        a.key_id
    );
    assert_eq!(kms.resolve(&a.arn).await.unwrap(), a.key_id);
    assert!(
        kms.create_alias(&admin(), "alias/aws/mine", &a.key_id)
            .await
            .is_err()
    );
    let k = kms
        .create_key(&admin(), CreateKey::default())
        .await
        .unwrap();
    kms.create_alias(&admin(), "alias/backup", &k.key_id)
        .await
        .unwrap();
    assert_eq!(
        kms.create_alias(&admin(), "alias/backup", &a.key_id)
            .await
            .unwrap_err()
            .code(),
        "AlreadyExistsException"
    );
    assert_eq!(kms.resolve("alias/backup").await.unwrap(), k.key_id);
    assert_eq!(
        kms.resolve("alias/nope").await.unwrap_err().code(),
        "NotFoundException"
    );
    assert!(kms.resolve("alias/../etc").await.is_err());
    assert_eq!(kms.list_aliases().await.unwrap().len(), 2);
    assert!(
        kms.schedule_key_deletion(&admin(), "alias/aws/ebs", 7)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn test_key_policy_limits_principals() {
    let dir = tempfile::tempdir().unwrap();
    let (kms, _) = setup(dir.path());
    let alice = Caller::new(format!("arn:aws:iam::{ACCOUNT}:user/alice"), ACCOUNT);
    let mallory = Caller::new("arn:aws:iam::999999999999:user/mallory", "999999999999");
    let doc = format!(
        r#"{{"Version":"2012-10-17","Statement":[
        {{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{ACCOUNT}:root"}},"Action":"kms:*","Resource":"*"}},
        {{"Effect":"Deny","Principal":{{"AWS":"arn:aws:iam::{ACCOUNT}:user/alice"}},"Action":"kms:Decrypt","Resource":"*"}}]}}"#
    );
    let key = kms
        .create_key(
            &admin(),
            CreateKey {
                policy: Some(doc),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let blob = kms
        .encrypt(&alice, &key.key_id, b"x", &Context::new())
        .await
        .unwrap();
    assert_eq!(
        kms.decrypt(&alice, &blob, &Context::new())
            .await
            .unwrap_err()
            .code(),
        "AccessDeniedException"
    );
    assert_eq!(
        kms.decrypt(&mallory, &blob, &Context::new())
            .await
            .unwrap_err()
            .code(),
        "AccessDeniedException"
    );
    assert!(kms.decrypt(&admin(), &blob, &Context::new()).await.is_ok());
    // A policy that locks its creator out is refused.
    let lockout = r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::999999999999:root"},"Action":"kms:*"}]}"#;
    assert!(
        kms.put_key_policy(&admin(), &key.key_id, lockout)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn test_other_root_key_cannot_unseal() {
    let dir = tempfile::tempdir().unwrap();
    let (kms, _) = setup(dir.path());
    let key = kms
        .create_key(&admin(), CreateKey::default())
        .await
        .unwrap();
    let blob = kms
        .encrypt(&admin(), &key.key_id, b"x", &Context::new())
        .await
        .unwrap();
    let store = Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    let other = Kms::new(
        store,
        "kms",
        Arc::new(RootKey::from_hex(&"11".repeat(32)).unwrap()),
        KmsConfig {
            region: "us-east-1".into(),
            account: ACCOUNT.into(),
        },
    );
    let err = other
        .decrypt(&admin(), &blob, &Context::new())
        .await
        .unwrap_err();
    assert!(matches!(err, KmsError::Unseal(_)), "{err}");
}

#[tokio::test]
async fn test_grants_let_another_account_decrypt_until_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let (kms, _) = setup(dir.path());
    let other = Caller::new("arn:aws:iam::222233334444:user/bob", "222233334444");
    let key = kms
        .create_key(&admin(), CreateKey::default())
        .await
        .unwrap();
    let blob = kms
        .encrypt(&admin(), &key.key_id, b"shared", &Context::new())
        .await
        .unwrap();
    fn denied<T>(r: Result<T, KmsError>) -> Option<&'static str> {
        r.err().map(|e| e.code())
    }
    assert_eq!(
        denied(kms.decrypt(&other, &blob, &Context::new()).await),
        Some("AccessDeniedException")
    );
    // Bad grants are refused.
    for (grantee, ops) in [
        ("222233334444", &["Decrypt"][..]),
        (
            "arn:aws:iam::222233334444:root",
            &["ScheduleKeyDeletion"][..],
        ),
        ("arn:aws:iam::222233334444:root", &[][..]),
    ] {
        assert!(
            kms.create_grant(&admin(), &key.key_id, grantee, ops, None)
                .await
                .is_err(),
            "{grantee} {ops:?}"
        );
    }
    let g = kms
        .create_grant(
            &admin(),
            &key.key_id,
            "arn:aws:iam::222233334444:root",
            &["Decrypt", "DescribeKey"],
            Some("shared-image"),
        )
        .await
        .unwrap();
    // Idempotent on grantee, operations and name.
    let again = kms
        .create_grant(
            &admin(),
            &key.key_id,
            "arn:aws:iam::222233334444:root",
            &["DescribeKey", "Decrypt"],
            Some("shared-image"),
        )
        .await
        .unwrap();
    assert_eq!(g, again);
    assert_eq!(
        kms.decrypt(&other, &blob, &Context::new())
            .await
            .unwrap()
            .1
            .as_slice(),
        b"shared"
    );
    // Only what was granted: the other account may not encrypt, nor grant itself more.
    assert_eq!(
        denied(
            kms.encrypt(&other, &key.key_id, b"x", &Context::new())
                .await
        ),
        Some("AccessDeniedException")
    );
    assert!(
        kms.create_grant(
            &other,
            &key.key_id,
            "arn:aws:iam::222233334444:root",
            &["Encrypt"],
            None
        )
        .await
        .is_err()
    );
    assert_eq!(
        kms.list_grants(&admin(), &key.key_id).await.unwrap().len(),
        1
    );
    kms.revoke_grant(&admin(), &key.key_id, &g).await.unwrap();
    assert_eq!(
        denied(kms.decrypt(&other, &blob, &Context::new()).await),
        Some("AccessDeniedException")
    );
    assert!(kms.revoke_grant(&admin(), &key.key_id, &g).await.is_err());
}

#[test]
fn test_service_secrets_open_only_for_their_purpose_and_root_key() {
    let dir = tempfile::tempdir().unwrap();
    let (kms, _) = setup(dir.path());
    let sealed = kms.seal_secret("task import-snap-1", b"?X-Amz-Signature=abc");
    assert!(!sealed.windows(3).any(|w| w == b"abc"));
    assert_eq!(
        kms.open_secret("task import-snap-1", &sealed)
            .unwrap()
            .as_slice(),
        b"?X-Amz-Signature=abc"
    );
    assert!(kms.open_secret("task import-snap-2", &sealed).is_none());
    let mut altered = sealed.clone();
    altered[20] ^= 1;
    assert!(kms.open_secret("task import-snap-1", &altered).is_none());
    let store = Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    let other = Kms::new(
        store,
        "kms",
        Arc::new(RootKey::from_hex(&"11".repeat(32)).unwrap()),
        KmsConfig {
            region: "us-east-1".into(),
            account: ACCOUNT.into(),
        },
    );
    assert!(other.open_secret("task import-snap-1", &sealed).is_none());
}
