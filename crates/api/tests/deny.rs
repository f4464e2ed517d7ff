//! The deny test, generated from the action table: every action in `api::action::TABLE` is
//! sent, with a sample request that succeeds when allowed, by a caller whose policy allows
//! everything except that action — by an explicit `Deny` of the action, by a `Deny` on the
//! ARN of each resource the request declares, by a `Deny` conditioned on the tags of the
//! resources it touches or creates, and (for imports and exports) with a service role that
//! may not touch the bucket object. Each must be refused and leave the catalog, the buckets
//! and the store as they were; then the same request, allowed, must succeed. An action in the
//! table without a sample here fails the test: a new action cannot land untested.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc, missing_docs)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use api::action::{Action, Authz, Input, Spec, TABLE, Tags};
use api::dispatch::{Env, Origin, dispatch};
use api::iam::Policy;
use api::identity::{Identity, Principal};
use api::query::Params;
use blockstore::{Backend, BlockStore, StoreOptions};
use catalog::{BlockDevice, Catalog, Image, NewTask, Snapshot, Tag, TaskKind};
use engine::{Buckets, Engine, EngineConfig, Sources, UrlPolicy};
use kms::{Kms, KmsConfig, RootKey};

const ACCOUNT: &str = "111122223333";
const REGION: &str = "us-east-1";

/// The resources every sample acts on, all tagged `protected=true` (where tags apply).
struct Fixtures {
    image: String,
    used_snapshot: String,
    free_snapshot: String,
    image_task: String,
    /// A customer key behind `alias/fixture`, and a second one pending deletion.
    key: String,
    key2: String,
    /// A ciphertext under `key`, base64.
    blob: String,
    /// An access key of the user alice.
    alice_key: String,
    /// Two consecutive codes of the unassigned virtual MFA device `pending`.
    codes: (String, String),
}

struct World {
    dir: tempfile::TempDir,
    env: Env,
    fx: Fixtures,
}

fn protected() -> Vec<Tag> {
    vec![Tag {
        key: "protected".into(),
        value: "true".into(),
    }]
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    for b in ["src", "out"] {
        std::fs::create_dir_all(data.join("buckets").join(b)).unwrap();
    }
    // A small disk: an MBR signature on a 1 MiB raw image.
    let mut disk = vec![0u8; 1 << 20];
    disk[510] = 0x55;
    disk[511] = 0xaa;
    std::fs::write(data.join("buckets/src/disk.raw"), &disk).unwrap();
    let catalog = Catalog::open(&format!("sqlite://{}", data.join("catalog.db").display()))
        .await
        .unwrap();
    let objects = Backend::Local {
        root: data.join("objects"),
    }
    .open()
    .unwrap();
    let root = Arc::new(RootKey::load_or_create(&data.join("root.key")).unwrap());
    let kms = Kms::new(
        objects.clone(),
        "kms",
        root.clone(),
        KmsConfig {
            region: REGION.into(),
            account: ACCOUNT.into(),
        },
    );
    let store = BlockStore::new(objects, "snapshots", kms, StoreOptions::default()).unwrap();
    let sources = Sources::new(
        Buckets::Local {
            root: data.join("buckets"),
        },
        &UrlPolicy::default(),
    )
    .unwrap();
    let engine = Engine::new(
        catalog.clone(),
        store,
        sources,
        EngineConfig::new(data.join("scratch")),
    );
    let identity = Identity::new(catalog.clone(), root);
    identity.create_role(ACCOUNT, "vmimport").await.unwrap();
    role_policy(&identity, &allow_all()).await;
    let now = catalog::now_ms();
    let snapshot = |id: &str| Snapshot {
        id: id.into(),
        account: ACCOUNT.into(),
        task_id: None,
        volume_size: 1 << 20,
        encrypted: true,
        kms_key_id: None,
        state: "completed".into(),
        description: String::new(),
        tags: protected(),
        created_ms: now,
        extra: catalog::SnapshotExtra::default(),
    };
    let (key, key2, blob) = kms_fixtures(engine.store().kms()).await;
    let (alice_key, codes) = iam_fixtures(&identity).await;
    let fx = Fixtures {
        image: "ami-0123456789abcdef0".into(),
        used_snapshot: "snap-0123456789abcdef0".into(),
        free_snapshot: "snap-0fedcba9876543210".into(),
        image_task: "import-ami-0123456789abcdef0".into(),
        key,
        key2,
        blob,
        alice_key,
        codes,
    };
    catalog
        .put_snapshot(&snapshot(fx.used_snapshot.as_str()))
        .await
        .unwrap();
    catalog
        .put_snapshot(&snapshot(fx.free_snapshot.as_str()))
        .await
        .unwrap();
    catalog
        .put_image(&Image {
            id: fx.image.clone(),
            account: ACCOUNT.into(),
            task_id: None,
            name: "fixture".into(),
            description: String::new(),
            architecture: "x86_64".into(),
            platform: "Linux/UNIX".into(),
            boot_mode: None,
            block_devices: vec![BlockDevice {
                device_name: "/dev/sda1".into(),
                snapshot_id: fx.used_snapshot.clone(),
                volume_size_gib: 1,
            }],
            encrypted: true,
            kms_key_id: None,
            state: "available".into(),
            tags: protected(),
            created_ms: now,
            extra: catalog::ImageExtra::default(),
        })
        .await
        .unwrap();
    catalog
        .create_task(NewTask {
            id: fx.image_task.clone(),
            account: ACCOUNT.into(),
            kind: TaskKind::ImportImage,
            status_message: "pending".into(),
            request: "{}".into(),
            tags: protected(),
            client_token: None,
            sealed: None,
        })
        .await
        .unwrap();
    // The service's default key exists, as after a first encrypted import.
    engine.store().kms().default_ebs_key().await.unwrap();
    let env = Env {
        engine,
        identity,
        region: REGION.into(),
        guard: api::guard::Policy::Warn,
        audit: None,
        compliance: None,
    };
    World { dir, env, fx }
}

/// Two customer keys, the first tagged `protected=true` behind `alias/fixture`, and a
/// ciphertext under it.
async fn kms_fixtures(kms: &Kms) -> (String, String, String) {
    use base64::Engine as _;
    let root = kms::Caller::account_root(ACCOUNT);
    let key = kms
        .create_key(&root, kms::CreateKey::default())
        .await
        .unwrap()
        .key_id;
    let key2 = kms
        .create_key(&root, kms::CreateKey::default())
        .await
        .unwrap()
        .key_id;
    let tag = [("protected".to_string(), "true".to_string())];
    kms.tag_resource(&root, &key, &tag).await.unwrap();
    kms.tag_resource(&root, &key2, &tag).await.unwrap();
    kms.create_alias(&root, "alias/fixture", &key)
        .await
        .unwrap();
    kms.schedule_key_deletion(&root, &key2, 7).await.unwrap();
    let blob = kms
        .encrypt(&root, &key, b"fixture", &kms::Context::new())
        .await
        .unwrap();
    (
        key,
        key2,
        base64::engine::general_purpose::STANDARD.encode(blob),
    )
}

const TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/tester"},"Action":"sts:AssumeRole"}]}"#;
const DOC: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ec2:Describe*","Resource":"*"}]}"#;

fn base32_decode(s: &str) -> Vec<u8> {
    let (mut acc, mut bits, mut out) = (0u32, 0u32, Vec::new());
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'2'..=b'7' => u32::from(c - b'2') + 26,
            _ => continue,
        };
        acc = (acc << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).unwrap());
        }
    }
    out
}

/// Users alice (an access key, an inline and a managed policy, an MFA device) and bare
/// (nothing); the role deployer (trusting the tester, with an inline and a managed policy)
/// and the bare role barerole; the unattached policy loose; the virtual MFA devices spare and
/// pending (unassigned). Returns alice's key and two codes of pending.
async fn iam_fixtures(id: &Identity) -> (String, (String, String)) {
    use catalog::iam::PrincipalKind::{Role, User};
    let c = id.catalog();
    for u in ["alice", "bare"] {
        id.create_user(ACCOUNT, u).await.unwrap();
    }
    let k = id.create_access_key(ACCOUNT, "alice").await.unwrap();
    id.put_inline_policy(ACCOUNT, User, "alice", "inline-a", DOC)
        .await
        .unwrap();
    id.create_policy(ACCOUNT, "managed-p", DOC).await.unwrap();
    id.create_policy(ACCOUNT, "loose", DOC).await.unwrap();
    c.attach_policy(ACCOUNT, User, "alice", "managed-p")
        .await
        .unwrap();
    id.enable_mfa(ACCOUNT, "alice").await.unwrap();
    id.create_login_profile(
        ACCOUNT,
        "alice",
        zeroize::Zeroizing::new("Alice-pass-1".into()),
        false,
    )
    .await
    .unwrap();
    for r in ["deployer", "barerole"] {
        id.create_role_with(ACCOUNT, r, Some(TRUST), "", 3600)
            .await
            .unwrap();
    }
    id.put_inline_policy(ACCOUNT, Role, "deployer", "rinline", DOC)
        .await
        .unwrap();
    c.attach_policy(ACCOUNT, Role, "deployer", "managed-p")
        .await
        .unwrap();
    id.create_virtual_mfa(ACCOUNT, "spare").await.unwrap();
    let (_, seed, _) = id.create_virtual_mfa(ACCOUNT, "pending").await.unwrap();
    let secret = base32_decode(&seed);
    let now = u64::try_from(catalog::now_ms() / 1000).unwrap();
    let codes = (
        api::totp::code(&secret, now),
        api::totp::code(&secret, now + 30),
    );
    (k.access_key_id, codes)
}

fn allow_all() -> String {
    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#
        .into()
}

/// Allow everything, and deny with `deny` (a statement's JSON).
fn allow_all_but(deny: &str) -> String {
    format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"*","Resource":"*"}},{deny}]}}"#
    )
}

async fn role_policy(identity: &Identity, doc: &str) {
    identity
        .put_policy(ACCOUNT, "vmimport-access", doc)
        .await
        .unwrap();
    let cat = identity.catalog();
    let _ = cat
        .attach_policy(
            ACCOUNT,
            catalog::iam::PrincipalKind::Role,
            "vmimport",
            "vmimport-access",
        )
        .await;
}

fn caller(policy: &str) -> Principal {
    Principal {
        account: ACCOUNT.into(),
        user: "tester".into(),
        arn: format!("arn:aws:iam::{ACCOUNT}:user/tester"),
        access_key_id: "AKIATESTTESTTESTTEST".into(),
        session_token: None,
        mfa: false,
        policies: vec![Policy::parse(policy).unwrap()],
        role: None,
        session_policy: None,
    }
}

/// A request of each action that succeeds when allowed; `None` for an action with no
/// sample (which fails the test).
fn sample(name: &str, fx: &Fixtures) -> Option<Vec<(String, String)>> {
    let p = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect::<Vec<_>>()
    };
    let tag_spec = |rt: &str| {
        vec![
            (
                "TagSpecification.1.ResourceType".to_string(),
                rt.to_string(),
            ),
            ("TagSpecification.1.Tag.1.Key".into(), "protected".into()),
            ("TagSpecification.1.Tag.1.Value".into(), "true".into()),
        ]
    };
    Some(match name {
        "ImportImage" => [
            p(&[
                ("DiskContainer.1.UserBucket.S3Bucket", "src"),
                ("DiskContainer.1.UserBucket.S3Key", "disk.raw"),
            ]),
            tag_spec("import-image-task"),
        ]
        .concat(),
        "ImportSnapshot" => [
            p(&[("DiskContainer.Url", "S3://src/disk.raw")]),
            tag_spec("import-snapshot-task"),
        ]
        .concat(),
        "ExportImage" => [
            p(&[
                ("ImageId", fx.image.as_str()),
                ("DiskImageFormat", "RAW"),
                ("S3ExportLocation.S3Bucket", "out"),
                ("S3ExportLocation.S3Prefix", "exports/"),
            ]),
            tag_spec("export-image-task"),
        ]
        .concat(),
        "DescribeImportImageTasks"
        | "DescribeImportSnapshotTasks"
        | "DescribeExportImageTasks"
        | "DescribeImages"
        | "DescribeSnapshots"
        | "GetEbsEncryptionByDefault"
        | "EnableEbsEncryptionByDefault"
        | "DisableEbsEncryptionByDefault"
        | "GetEbsDefaultKmsKeyId"
        | "ResetEbsDefaultKmsKeyId"
        | "GetSessionToken"
        | "LookupEvents"
        | "DescribeTrails"
        | "GetTrail"
        | "GetTrailStatus"
        | "ListPublicKeys"
        | "StartLogging"
        | "StopLogging" => Vec::new(),
        "ModifyEbsDefaultKmsKeyId" => p(&[("KmsKeyId", "alias/aws/ebs")]),
        "CancelImportTask" => p(&[("ImportTaskId", fx.image_task.as_str())]),
        "DeregisterImage" => p(&[("ImageId", fx.image.as_str())]),
        "DeleteSnapshot" => p(&[("SnapshotId", fx.free_snapshot.as_str())]),
        "CreateTags" => p(&[
            ("ResourceId.1", fx.image.as_str()),
            ("ResourceId.2", fx.image_task.as_str()),
            ("Tag.1.Key", "owner"),
            ("Tag.1.Value", "alice"),
        ]),
        "DeleteTags" => p(&[
            ("ResourceId.1", fx.image.as_str()),
            ("ResourceId.2", fx.used_snapshot.as_str()),
            ("Tag.1.Key", "protected"),
        ]),
        "CopyImage" => [
            p(&[("SourceImageId", fx.image.as_str()), ("Name", "copy")]),
            tag_spec("image"),
        ]
        .concat(),
        "CopySnapshot" => [
            p(&[("SourceSnapshotId", fx.used_snapshot.as_str())]),
            tag_spec("snapshot"),
        ]
        .concat(),
        "DescribeImageAttribute" => p(&[
            ("ImageId", fx.image.as_str()),
            ("Attribute", "launchPermission"),
        ]),
        "ModifyImageAttribute" => p(&[
            ("ImageId", fx.image.as_str()),
            ("Description.Value", "renamed"),
        ]),
        "ResetImageAttribute" => p(&[
            ("ImageId", fx.image.as_str()),
            ("Attribute", "launchPermission"),
        ]),
        "DescribeSnapshotAttribute" => p(&[
            ("SnapshotId", fx.used_snapshot.as_str()),
            ("Attribute", "createVolumePermission"),
        ]),
        "ModifySnapshotAttribute" => p(&[
            ("SnapshotId", fx.free_snapshot.as_str()),
            ("CreateVolumePermission.Remove.1.UserId", "222233334444"),
        ]),
        "ResetSnapshotAttribute" => p(&[
            ("SnapshotId", fx.free_snapshot.as_str()),
            ("Attribute", "createVolumePermission"),
        ]),
        "DescribeTags"
        | "DescribeRegions"
        | "DescribeAvailabilityZones"
        | "DescribeConversionTasks"
        | "DescribeExportTasks" => Vec::new(),
        "EnableImageDeprecation" => p(&[
            ("ImageId", fx.image.as_str()),
            ("DeprecateAt", "2030-01-01T00:00:00Z"),
        ]),
        "DisableImageDeprecation" | "DisableImage" | "EnableImage" => {
            p(&[("ImageId", fx.image.as_str())])
        }
        "CancelExportTask" => p(&[("ExportTaskId", "export-i-0123456789abcdef0")]),
        "GetImageBootEvidence" => p(&[("ImageId", fx.image.as_str())]),
        "GetComplianceReport" => p(&[]),
        "GetImportTaskBootEvidence" => p(&[("ImportTaskId", fx.image_task.as_str())]),
        "CreateInstanceExportTask" => p(&[
            ("InstanceId", "i-0123456789abcdef0"),
            ("TargetEnvironment", "vmware"),
        ]),
        // KMS takes JSON (json_sample).
        n if kms_json(n, fx).is_some() => Vec::new(),
        n => return iam_sample(n, fx).map(|v| p(&v)),
    })
}

/// IAM and STS samples.
fn iam_sample<'a>(name: &str, fx: &'a Fixtures) -> Option<Vec<(&'a str, &'a str)>> {
    let alice = "arn:aws:iam::111122223333:user/alice";
    let managed = "arn:aws:iam::111122223333:policy/managed-p";
    let loose = "arn:aws:iam::111122223333:policy/loose";
    Some(match name {
        "GetCallerIdentity"
        | "ListUsers"
        | "ListRoles"
        | "ListPolicies"
        | "ListVirtualMFADevices" => Vec::new(),
        "AssumeRole" => vec![
            ("RoleArn", "arn:aws:iam::111122223333:role/deployer"),
            ("RoleSessionName", "s1"),
        ],
        "CreateUser" => vec![("UserName", "newuser")],
        "DeleteUser" => vec![("UserName", "bare")],
        "GetUser"
        | "CreateAccessKey"
        | "ListAccessKeys"
        | "ListUserPolicies"
        | "ListAttachedUserPolicies"
        | "ListMFADevices" => vec![("UserName", "alice")],
        "UpdateAccessKey" => vec![
            ("UserName", "alice"),
            ("AccessKeyId", fx.alice_key.as_str()),
            ("Status", "Inactive"),
        ],
        "DeleteAccessKey" => vec![
            ("UserName", "alice"),
            ("AccessKeyId", fx.alice_key.as_str()),
        ],
        "GetAccessKeyLastUsed" => vec![("AccessKeyId", fx.alice_key.as_str())],
        "CreateRole" => vec![("RoleName", "newrole"), ("AssumeRolePolicyDocument", TRUST)],
        "GetRole" | "ListRolePolicies" | "ListAttachedRolePolicies" => {
            vec![("RoleName", "deployer")]
        }
        "DeleteRole" => vec![("RoleName", "barerole")],
        "UpdateAssumeRolePolicy" => vec![("RoleName", "deployer"), ("PolicyDocument", TRUST)],
        "PutUserPolicy" => vec![
            ("UserName", "alice"),
            ("PolicyName", "p2"),
            ("PolicyDocument", DOC),
        ],
        "GetUserPolicy" | "DeleteUserPolicy" => {
            vec![("UserName", "alice"), ("PolicyName", "inline-a")]
        }
        "PutRolePolicy" => vec![
            ("RoleName", "deployer"),
            ("PolicyName", "p2"),
            ("PolicyDocument", DOC),
        ],
        "GetRolePolicy" | "DeleteRolePolicy" => {
            vec![("RoleName", "deployer"), ("PolicyName", "rinline")]
        }
        "CreatePolicy" => vec![("PolicyName", "newpol"), ("PolicyDocument", DOC)],
        "GetPolicy" => vec![("PolicyArn", managed)],
        "GetPolicyVersion" => vec![("PolicyArn", managed), ("VersionId", "v1")],
        "DeletePolicy" => vec![("PolicyArn", loose)],
        "AttachUserPolicy" => vec![("UserName", "alice"), ("PolicyArn", loose)],
        "DetachUserPolicy" => vec![("UserName", "alice"), ("PolicyArn", managed)],
        "AttachRolePolicy" => vec![("RoleName", "deployer"), ("PolicyArn", loose)],
        "DetachRolePolicy" => vec![("RoleName", "deployer"), ("PolicyArn", managed)],
        "CreateVirtualMFADevice" => vec![("VirtualMFADeviceName", "newdev")],
        "EnableMFADevice" => vec![
            ("UserName", "bare"),
            ("SerialNumber", "arn:aws:iam::111122223333:mfa/pending"),
            ("AuthenticationCode1", fx.codes.0.as_str()),
            ("AuthenticationCode2", fx.codes.1.as_str()),
        ],
        "DeactivateMFADevice" => vec![
            ("UserName", "alice"),
            ("SerialNumber", "arn:aws:iam::111122223333:mfa/alice"),
        ],
        "DeleteVirtualMFADevice" => {
            vec![("SerialNumber", "arn:aws:iam::111122223333:mfa/spare")]
        }
        "CreateLoginProfile" => vec![("UserName", "bare"), ("Password", "Bare-pass-12")],
        "GetLoginProfile" | "DeleteLoginProfile" => vec![("UserName", "alice")],
        "UpdateLoginProfile" => vec![
            ("UserName", "alice"),
            ("Password", "New-alice-pass-2"),
            ("PasswordResetRequired", "true"),
        ],
        "SimulatePrincipalPolicy" => vec![
            ("PolicySourceArn", alice),
            ("ActionNames.member.1", "ec2:DescribeImages"),
        ],
        _ => return None,
    })
}

/// KMS samples (JSON bodies), or `None` for an action that is not KMS's.
fn kms_json(name: &str, fx: &Fixtures) -> Option<String> {
    let key = &fx.key;
    let tags = r#""Tags":[{"TagKey":"protected","TagValue":"true"}]"#;
    Some(match name {
        "CreateKey" => format!(r#"{{"Description":"new",{tags}}}"#),
        "ListKeys" | "ListAliases" => "{}".into(),
        "DescribeKey" => r#"{"KeyId":"alias/fixture"}"#.into(),
        "CreateAlias" => format!(r#"{{"AliasName":"alias/new","TargetKeyId":"{key}"}}"#),
        "DeleteAlias" => r#"{"AliasName":"alias/fixture"}"#.into(),
        "UpdateAlias" => format!(
            r#"{{"AliasName":"alias/fixture","TargetKeyId":"{}"}}"#,
            fx.key2
        ),
        "EnableKey"
        | "DisableKey"
        | "EnableKeyRotation"
        | "DisableKeyRotation"
        | "GetKeyRotationStatus"
        | "RotateKeyOnDemand"
        | "GetKeyPolicy"
        | "ListResourceTags" => {
            format!(r#"{{"KeyId":"{key}"}}"#)
        }
        "CancelKeyDeletion" => format!(r#"{{"KeyId":"{}"}}"#, fx.key2),
        "ScheduleKeyDeletion" => format!(r#"{{"KeyId":"{key}","PendingWindowInDays":7}}"#),
        "PutKeyPolicy" => format!(
            r#"{{"KeyId":"{key}","Policy":{}}}"#,
            serde_json::to_string(&kms::KeyPolicy::default_document(ACCOUNT)).unwrap()
        ),
        "TagResource" => format!(r#"{{"KeyId":"{key}",{tags}}}"#),
        "UntagResource" => format!(r#"{{"KeyId":"{key}","TagKeys":["protected"]}}"#),
        "Encrypt" => r#"{"KeyId":"alias/fixture","Plaintext":"aGVsbG8="}"#.into(),
        "Decrypt" => format!(r#"{{"CiphertextBlob":"{}"}}"#, fx.blob),
        "GenerateDataKey" => format!(r#"{{"KeyId":"{key}","KeySpec":"AES_256"}}"#),
        _ => return None,
    })
}

/// The JSON body of a JSON-protocol action's sample.
fn json_body(spec: &Spec, fx: &Fixtures) -> Vec<u8> {
    match spec.service {
        api::action::Service::Kms => kms_json(spec.name, fx).unwrap_or_default().into_bytes(),
        api::action::Service::CloudTrail => json_sample(spec.name).to_vec(),
        _ => b"{}".to_vec(),
    }
}

/// Everything a request could change: the catalog's tasks, images, snapshots (with tags)
/// and settings, and every file outside the catalog database (buckets, store, keys).
async fn state(w: &World) -> String {
    let cat = w.env.engine.catalog();
    let mut out = BTreeMap::new();
    for kind in [
        TaskKind::ImportImage,
        TaskKind::ImportSnapshot,
        TaskKind::ExportImage,
    ] {
        for t in cat.tasks(ACCOUNT, kind, 0).await.unwrap() {
            out.insert(t.id.clone(), format!("{} {:?}", t.status, t.tags));
        }
    }
    for i in cat.images(ACCOUNT).await.unwrap() {
        out.insert(i.id.clone(), format!("{:?}", i.tags));
    }
    for s in cat.snapshots(ACCOUNT).await.unwrap() {
        out.insert(s.id.clone(), format!("{:?}", s.tags));
    }
    for (k, v) in cat.settings(ACCOUNT).await.unwrap() {
        out.insert(format!("setting {k}"), v);
    }
    for f in files(w.dir.path()) {
        if !f.to_string_lossy().contains("catalog.db") {
            let bytes = std::fs::read(&f).unwrap_or_default();
            let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes);
            out.insert(format!("file {}", f.display()), hex::encode(d.as_ref()));
        }
    }
    // Identities: users, keys, roles, policies, attachments, inline policies, MFA devices.
    use catalog::iam::PrincipalKind::{Role, User};
    for u in cat.users(ACCOUNT).await.unwrap() {
        let keys: Vec<String> = cat
            .access_keys(ACCOUNT, Some(&u.name))
            .await
            .unwrap()
            .iter()
            .map(|k| format!("{} {}", k.access_key_id, k.status))
            .collect();
        let attached = cat.attached_policies(ACCOUNT, User, &u.name).await.unwrap();
        let inline = cat.inline_policies(ACCOUNT, User, &u.name).await.unwrap();
        let mfa = cat.mfa_serial(ACCOUNT, &u.name).await.unwrap();
        out.insert(
            format!("user {}", u.name),
            format!("{keys:?} {attached:?} {inline:?} {mfa:?}"),
        );
    }
    for r in cat.roles_full(ACCOUNT).await.unwrap() {
        let attached = cat.attached_policies(ACCOUNT, Role, &r.name).await.unwrap();
        let inline = cat.inline_policies(ACCOUNT, Role, &r.name).await.unwrap();
        out.insert(
            format!("role {}", r.name),
            format!("{r:?} {attached:?} {inline:?}"),
        );
    }
    for p in cat.managed_policies(ACCOUNT).await.unwrap() {
        out.insert(format!("policy {}", p.name), format!("{p:?}"));
    }
    for d in cat.virtual_mfas(ACCOUNT).await.unwrap() {
        out.insert(format!("mfa {}", d.serial), format!("{d:?}"));
    }
    format!("{out:#?}")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn params_of(pairs: &[(String, String)], spec: &Spec) -> Params {
    let mut form = form_urlencoded_pairs(&[("Action".into(), spec.name.into())]);
    form.push('&');
    form.push_str(&form_urlencoded_pairs(pairs));
    Params::parse(form.as_bytes()).unwrap()
}

fn form_urlencoded_pairs(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                api::sigv4::uri_encode(k, false),
                api::sigv4::uri_encode(v, false)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The JSON body of a CloudTrail action's sample request.
fn json_sample(name: &str) -> &'static [u8] {
    match name {
        "GetTrail" | "GetTrailStatus" | "StartLogging" | "StopLogging" => br#"{"Name":"vmie"}"#,
        _ => b"{}",
    }
}

async fn send(
    w: &World,
    spec: &'static Spec,
    who: &Principal,
    p: &Params,
) -> Result<String, String> {
    let origin = Origin {
        source_ip: "127.0.0.1".parse().unwrap(),
        secure: true,
        mfa: false,
    };
    let body = json_body(spec, &w.fx);
    let input = if spec.service.is_json() {
        Input::Json(&body)
    } else {
        Input::Query(p)
    };
    dispatch(
        &w.env,
        who,
        &origin,
        spec,
        input,
        "req-1",
        catalog::now_ms() / 1000,
    )
    .await
    .map_err(|e| format!("{} {}: {}", e.status, e.code, e.message))
}

/// One way of denying `spec`'s sample: the caller's policy (and the role's, if changed).
struct Denial {
    what: String,
    caller: String,
    role: Option<String>,
}

async fn denials(spec: &Spec, w: &World, p: &Params) -> Vec<Denial> {
    let who = caller(&allow_all());
    let body = json_body(spec, &w.fx);
    let input = if spec.service.is_json() {
        Input::Json(&body)
    } else {
        Input::Query(p)
    };
    let mut action = Action::parse(spec, input, &w.env, &who).unwrap();
    action.prepare(&w.env, &who).await.unwrap();
    let decl = action.declare(&w.env, &who);
    let mut out = vec![Denial {
        what: "an explicit Deny of the action".into(),
        caller: allow_all_but(&format!(
            r#"{{"Effect":"Deny","Action":"{}","Resource":"*"}}"#,
            spec.iam_action
        )),
        role: None,
    }];
    // Resource ARNs: the declaration names them (a new task's ARN ends with the id chosen
    // at parse time, so deny by type with a wildcard for those).
    for t in &decl.resources {
        let arn = if t.id.is_some() {
            t.arn.clone()
        } else {
            format!("{}/*", t.arn.rsplit_once('/').unwrap().0)
        };
        out.push(Denial {
            what: format!("a Deny on the resource {arn}"),
            caller: allow_all_but(&format!(
                r#"{{"Effect":"Deny","Action":"*","Resource":"{arn}"}}"#
            )),
            role: None,
        });
    }
    assert_eq!(
        decl.resources.is_empty(),
        spec.resources.iter().all(|r| r.starts_with("s3 object")),
        "{}: the declaration's resources and the table's disagree",
        spec.name
    );
    if spec.tags != Tags::None {
        out.push(Denial {
            what: "a Deny conditioned on the tags".into(),
            caller: allow_all_but(
                r#"{"Effect":"Deny","Action":"*","Resource":"*","Condition":{"StringEquals":{"aws:ResourceTag/protected":"true"}}},{"Effect":"Deny","Action":"*","Resource":"*","Condition":{"StringEquals":{"aws:RequestTag/protected":"true"}}}"#,
            ),
            role: None,
        });
    }
    for r in &decl.role {
        // An export's key ends with the new task's id: deny the folder it is written to.
        let arn = format!("{}/*", r.arn.rsplit_once('/').unwrap().0);
        out.push(Denial {
            what: format!("a service role that may not {} {arn}", r.action),
            caller: allow_all(),
            role: Some(allow_all_but(&format!(
                r#"{{"Effect":"Deny","Action":"{}","Resource":"{arn}"}}"#,
                r.action
            ))),
        });
    }
    out
}

#[tokio::test]
async fn every_action_in_the_table_is_refused_when_denied_and_changes_nothing() {
    let mut missing = Vec::new();
    let mut checked = 0;
    for spec in TABLE {
        // S3's rows are sent as S3 requests (below).
        if spec.service == api::action::Service::S3 {
            continue;
        }
        let probe = world().await;
        let Some(pairs) = sample(spec.name, &probe.fx) else {
            missing.push(spec.name);
            continue;
        };
        let p = params_of(&pairs, spec);
        for d in denials(spec, &probe, &p).await {
            // A fresh world each time: fixtures as they were, ids as the sample names them.
            let w = world().await;
            let pairs = sample(spec.name, &w.fx).unwrap();
            let p = params_of(&pairs, spec);
            if let Some(role) = &d.role {
                role_policy(&w.env.identity, role).await;
            }
            let before = state(&w).await;
            let r = send(&w, spec, &caller(&d.caller), &p).await;
            let after = state(&w).await;
            let e = r.expect_err(&format!("{} was allowed despite {}", spec.name, d.what));
            assert!(
                e.contains(spec.service.denied_code()) || e.contains("InvalidParameter"),
                "{} with {}: refused with {e}",
                spec.name,
                d.what
            );
            assert_eq!(
                before, after,
                "{} with {} changed something",
                spec.name, d.what
            );
            checked += 1;
        }
        // Allowed, the same request succeeds (so the refusals above are not vacuous).
        let w = world().await;
        let pairs = sample(spec.name, &w.fx).unwrap();
        let p = params_of(&pairs, spec);
        let r = send(&w, spec, &caller(&allow_all()), &p).await;
        // Allowed, a few answer with an error that is not about authorization: no activity
        // log in this world, an action vmie does not serve, an image not disabled.
        let expected = match spec.name {
            "LookupEvents" | "GetTrail" | "GetTrailStatus" | "ListPublicKeys" | "StartLogging"
            | "StopLogging" => Some("TrailNotFoundException"),
            "EnableImage" => Some("IncorrectState"),
            // The fixtures were never boot-checked.
            "GetImageBootEvidence" | "GetImportTaskBootEvidence" => Some("has no boot evidence"),
            // This world has no compliance controls (vmie serve gives them).
            "GetComplianceReport" => Some("not available"),
            "DescribeConversionTasks"
            | "DescribeExportTasks"
            | "CancelExportTask"
            | "CreateInstanceExportTask" => Some("UnsupportedOperation"),
            _ => None,
        };
        match expected {
            Some(code) => {
                let e = r.unwrap_err();
                assert!(e.contains(code), "{} allowed: {e}", spec.name);
            }
            None => {
                r.unwrap_or_else(|e| panic!("{} allowed failed: {e}", spec.name));
            }
        }
        // An action allowed unless denied still needs no Allow.
        if spec.authz == Authz::UnlessDenied {
            let w = world().await;
            let none = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"nothing:Nothing","Resource":"*"}]}"#;
            send(&w, spec, &caller(none), &p).await.unwrap();
        }
    }
    assert!(
        missing.is_empty(),
        "actions in the table without a sample request in tests/deny.rs: {missing:?}"
    );
    let served = TABLE
        .iter()
        .filter(|s| s.service != api::action::Service::S3)
        .count();
    assert!(checked >= served, "{checked} denials checked");
}

/// Resolved resource tags, not the request's `Resource: *`, decide CreateTags and DeleteTags:
/// a caller denied on `protected=true` resources can neither untag one nor tag it (issue 17,
/// finding 3), while an unprotected resource stays writable.
#[tokio::test]
async fn a_tag_conditioned_deny_cannot_be_undone_by_untagging() {
    let w = world().await;
    let policy = allow_all_but(
        r#"{"Effect":"Deny","Action":["ec2:DeregisterImage","ec2:DeleteTags","ec2:CreateTags"],"Resource":"*","Condition":{"StringEquals":{"aws:ResourceTag/protected":"true"}}}"#,
    );
    let who = caller(&policy);
    let spec = |n| Action::spec_of(api::action::Service::Ec2, n).unwrap();
    let untag = params_of(
        &[
            ("ResourceId.1".into(), w.fx.image.clone()),
            ("Tag.1.Key".into(), "protected".into()),
        ],
        spec("DeleteTags"),
    );
    let e = send(&w, spec("DeleteTags"), &who, &untag)
        .await
        .unwrap_err();
    assert!(
        e.contains("UnauthorizedOperation") && e.contains("explicit deny"),
        "{e}"
    );
    let dereg = params_of(
        &[("ImageId".into(), w.fx.image.clone())],
        spec("DeregisterImage"),
    );
    assert!(
        send(&w, spec("DeregisterImage"), &who, &dereg)
            .await
            .is_err()
    );
    assert_eq!(
        w.env.engine.image(ACCOUNT, &w.fx.image).await.unwrap().tags,
        protected()
    );
    // A Deny on one image's ARN stops CreateTags on it.
    let arn = format!("arn:aws:ec2:{REGION}::image/{}", w.fx.image);
    let who = caller(&allow_all_but(&format!(
        r#"{{"Effect":"Deny","Action":"ec2:CreateTags","Resource":"{arn}"}}"#
    )));
    let tag = params_of(
        &[
            ("ResourceId.1".into(), w.fx.image.clone()),
            ("Tag.1.Key".into(), "x".into()),
            ("Tag.1.Value".into(), "y".into()),
        ],
        spec("CreateTags"),
    );
    let e = send(&w, spec("CreateTags"), &who, &tag).await.unwrap_err();
    assert!(e.contains(&arn), "{e}");
}

/// The service role is checked on the bucket object as the engine locates it, whatever the
/// URL's spelling (issue 17, finding 2): `S3://`, mixed case, percent-encoding.
#[tokio::test]
async fn the_service_role_check_follows_the_engine_parser() {
    let w = world().await;
    role_policy(
        &w.env.identity,
        &allow_all_but(
            r#"{"Effect":"Deny","Action":"s3:GetObject","Resource":"arn:aws:s3:::src/*"}"#,
        ),
    )
    .await;
    let spec = Action::spec_of(api::action::Service::Ec2, "ImportSnapshot").unwrap();
    for url in [
        "s3://src/disk.raw",
        "S3://src/disk.raw",
        "s3://src/dis%6B.raw",
        " s3://src/disk.raw",
    ] {
        let before = state(&w).await;
        let p = params_of(&[("DiskContainer.Url".into(), url.into())], spec);
        let r = send(&w, spec, &caller(&allow_all()), &p).await;
        assert!(r.is_err(), "{url} was imported past the role check");
        assert_eq!(before, state(&w).await, "{url}");
    }
}

// ---- S3: the same walk, with signed S3 requests through the S3 endpoint ----------------

/// A user `tester` with an access key, whose policy is replaced by [`s3_policy`].
async fn s3_user(w: &World) -> (String, String) {
    let id = &w.env.identity;
    id.create_user(ACCOUNT, "tester").await.unwrap();
    s3_policy(w, &allow_all()).await;
    id.catalog()
        .attach_policy(
            ACCOUNT,
            catalog::iam::PrincipalKind::User,
            "tester",
            "tester-access",
        )
        .await
        .unwrap();
    let k = id.create_access_key(ACCOUNT, "tester").await.unwrap();
    (k.access_key_id.clone(), k.secret_access_key.to_string())
}

async fn s3_policy(w: &World, doc: &str) {
    w.env
        .identity
        .put_policy(ACCOUNT, "tester-access", doc)
        .await
        .unwrap();
}

/// One S3 request: method, path, query, extra headers, body.
struct S3Req {
    method: &'static str,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn s3_req(method: &'static str, path: &str, query: &str, body: &[u8]) -> S3Req {
    S3Req {
        method,
        path: path.into(),
        query: query.into(),
        headers: Vec::new(),
        body: body.to_vec(),
    }
}

/// Sends `r` signed with `key`; the status and body.
async fn s3_send(ep: &api::s3::Endpoint, key: &(String, String), r: &S3Req) -> (u16, String) {
    let amz_date = api::sigv4::format_amz_date(catalog::now_ms() / 1000);
    let mut headers = vec![
        ("host".to_string(), "localhost:8443".to_string()),
        (
            "x-amz-content-sha256".to_string(),
            api::sigv4::sha256_hex(&r.body),
        ),
        ("x-amz-date".to_string(), amz_date.clone()),
    ];
    headers.extend(r.headers.iter().cloned());
    if !r.body.is_empty() {
        headers.push(("content-length".into(), r.body.len().to_string()));
    }
    let mut names: Vec<String> = headers.iter().map(|(n, _)| n.clone()).collect();
    names.sort();
    let req = api::sigv4::Request {
        method: r.method,
        path: &r.path,
        query: &r.query,
        headers: &headers,
        body: &r.body,
    };
    let auth =
        api::sigv4::authorization(&req, &key.0, &key.1, REGION, "s3", &amz_date, &names).unwrap();
    let uri = if r.query.is_empty() {
        r.path.clone()
    } else {
        format!("{}?{}", r.path, r.query)
    };
    let mut b = axum::http::Request::builder()
        .method(r.method)
        .uri(uri)
        .header("authorization", auth);
    for (n, v) in &headers {
        b = b.header(n.as_str(), v.as_str());
    }
    let req = b.body(axum::body::Body::from(r.body.clone())).unwrap();
    let resp = ep.call(req, "127.0.0.1".parse().unwrap(), true).await;
    let status = resp.status().as_u16();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn md5(b: &[u8]) -> [u8; 16] {
    use s3s::crypto::Checksum as _;
    s3s::crypto::Md5::checksum(b)
}

fn md5_b64(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in md5(b).chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(c.get(1).copied().unwrap_or(0)) << 8)
            | u32::from(c.get(2).copied().unwrap_or(0));
        for i in 0..4 {
            out.push(if i <= c.len() {
                char::from(A[((n >> (18 - 6 * i)) & 63) as usize])
            } else {
                '='
            });
        }
    }
    out
}

/// What an S3 sample needs made first (as an allowed caller): a multipart upload with one
/// part; its id and the part's ETag.
async fn s3_setup(ep: &api::s3::Endpoint, key: &(String, String)) -> (String, String) {
    let (_, body) = s3_send(ep, key, &s3_req("POST", "/out/mp.raw", "uploads", b"")).await;
    let id = body
        .split("<UploadId>")
        .nth(1)
        .and_then(|t| t.split("</UploadId>").next())
        .unwrap()
        .to_string();
    let (status, _) = s3_send(
        ep,
        key,
        &s3_req(
            "PUT",
            "/out/mp.raw",
            &format!("partNumber=1&uploadId={id}"),
            b"part one",
        ),
    )
    .await;
    assert_eq!(status, 200);
    let etag = hex::encode(md5(b"part one"));
    (id, etag)
}

/// The sample request of S3 action `name`, and what it names for authorization.
fn s3_sample(name: &str, upload: &(String, String)) -> Option<(S3Req, api::s3::Target)> {
    let t = |bucket: &str, key: &str| api::s3::Target {
        bucket: bucket.into(),
        key: key.into(),
        ..api::s3::Target::default()
    };
    let id = &upload.0;
    Some(match name {
        "ListBuckets" => (s3_req("GET", "/", "", b""), t("", "")),
        "CreateBucket" => (s3_req("PUT", "/newbucket", "", b""), t("newbucket", "")),
        "DeleteBucket" => {
            // A bucket with nothing in it (the upload's parts are kept apart).
            (s3_req("DELETE", "/empty", "", b""), t("empty", ""))
        }
        "HeadBucket" => (s3_req("HEAD", "/src", "", b""), t("src", "")),
        "GetBucketLocation" => (s3_req("GET", "/src", "location", b""), t("src", "")),
        "ListObjects" => (s3_req("GET", "/src", "", b""), t("src", "")),
        "ListObjectsV2" => (s3_req("GET", "/src", "list-type=2", b""), t("src", "")),
        "PutObject" => (
            s3_req("PUT", "/out/new.bin", "", b"hello"),
            t("out", "new.bin"),
        ),
        "GetObject" => (
            s3_req("GET", "/src/disk.raw", "", b""),
            t("src", "disk.raw"),
        ),
        "HeadObject" => (
            s3_req("HEAD", "/src/disk.raw", "", b""),
            t("src", "disk.raw"),
        ),
        "DeleteObject" => (
            s3_req("DELETE", "/src/disk.raw", "", b""),
            t("src", "disk.raw"),
        ),
        "DeleteObjects" => {
            let body = b"<Delete><Object><Key>disk.raw</Key></Object></Delete>";
            let mut r = s3_req("POST", "/src", "delete", body);
            r.headers.push(("content-md5".into(), md5_b64(body)));
            let mut target = t("src", "");
            target.keys = vec!["disk.raw".into()];
            (r, target)
        }
        "CopyObject" => {
            let mut r = s3_req("PUT", "/out/copy.raw", "", b"");
            r.headers
                .push(("x-amz-copy-source".into(), "/src/disk.raw".into()));
            (r, t("out", "copy.raw"))
        }
        "CreateMultipartUpload" => (
            s3_req("POST", "/out/other.raw", "uploads", b""),
            t("out", "other.raw"),
        ),
        "UploadPart" => (
            s3_req(
                "PUT",
                "/out/mp.raw",
                &format!("partNumber=2&uploadId={id}"),
                b"two",
            ),
            t("out", "mp.raw"),
        ),
        "CompleteMultipartUpload" => {
            let body = format!(
                "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>\"{}\"</ETag></Part></CompleteMultipartUpload>",
                upload.1
            );
            (
                s3_req(
                    "POST",
                    "/out/mp.raw",
                    &format!("uploadId={id}"),
                    body.as_bytes(),
                ),
                t("out", "mp.raw"),
            )
        }
        "AbortMultipartUpload" => (
            s3_req("DELETE", "/out/mp.raw", &format!("uploadId={id}"), b""),
            t("out", "mp.raw"),
        ),
        "ListParts" => (
            s3_req("GET", "/out/mp.raw", &format!("uploadId={id}"), b""),
            t("out", "mp.raw"),
        ),
        "ListMultipartUploads" => (s3_req("GET", "/out", "uploads", b""), t("out", "")),
        _ => return None,
    })
}

fn no_limit() -> Arc<api::server::Limiter> {
    Arc::new(api::server::Limiter::new(0))
}

/// Whether an S3 answer is a refusal of authorization (DeleteObjects refuses key by key,
/// in a 200 answer's errors; HEAD answers have no body).
fn s3_refused(method: &str, status: u16, body: &str) -> bool {
    match (method, status) {
        ("HEAD", 403) => true,
        (_, 403) => body.contains("AccessDenied"),
        ("POST", 200) => body.contains("<Code>AccessDenied</Code>"),
        _ => false,
    }
}

fn s3_ok(method: &str, status: u16, body: &str) -> bool {
    (200..300).contains(&status) && !(method == "POST" && body.contains("<Error>"))
}

#[tokio::test]
async fn every_s3_action_is_refused_when_denied_and_changes_nothing() {
    let mut missing = Vec::new();
    let mut checked = 0;
    for spec in TABLE
        .iter()
        .copied()
        .filter(|s| s.service == api::action::Service::S3)
    {
        let fresh = || async {
            let w = world().await;
            std::fs::create_dir_all(w.dir.path().join("buckets/empty")).unwrap();
            let key = s3_user(&w).await;
            let ep = api::s3::Endpoint::new(&w.env, vec!["localhost".into()], no_limit()).unwrap();
            let upload = s3_setup(&ep, &key).await;
            (w, key, ep, upload)
        };
        let (w, _, _, upload) = fresh().await;
        let Some((_, target)) = s3_sample(spec.name, &upload) else {
            missing.push(spec.name);
            continue;
        };
        let who = caller(&allow_all());
        let decl = Action::parse(spec, Input::S3(&target), &w.env, &who)
            .unwrap()
            .declare(&w.env, &who);
        let mut denials = vec![format!(
            r#"{{"Effect":"Deny","Action":"{}","Resource":"*"}}"#,
            spec.iam_action
        )];
        for t in &decl.resources {
            denials.push(format!(
                r#"{{"Effect":"Deny","Action":"*","Resource":"{}"}}"#,
                t.arn
            ));
        }
        assert_eq!(
            decl.resources.is_empty(),
            spec.resources.is_empty(),
            "{}: the declaration's resources and the table's disagree",
            spec.name
        );
        if spec.name == "CopyObject" {
            // The source must be readable too.
            denials.push(
                r#"{"Effect":"Deny","Action":"s3:GetObject","Resource":"arn:aws:s3:::src/disk.raw"}"#
                    .into(),
            );
        }
        for deny in denials {
            let (w, key, ep, upload) = fresh().await;
            let (r, _) = s3_sample(spec.name, &upload).unwrap();
            s3_policy(&w, &allow_all_but(&deny)).await;
            let before = state(&w).await;
            let (status, body) = s3_send(&ep, &key, &r).await;
            let after = state(&w).await;
            assert!(
                s3_refused(r.method, status, &body),
                "{} was not refused by {deny}: {status} {body}",
                spec.name
            );
            assert_eq!(before, after, "{} with {deny} changed something", spec.name);
            checked += 1;
        }
        // Allowed, it succeeds.
        let (_w, key, ep, upload) = fresh().await;
        let (r, _) = s3_sample(spec.name, &upload).unwrap();
        let (status, body) = s3_send(&ep, &key, &r).await;
        assert!(
            s3_ok(r.method, status, &body),
            "{} allowed failed: {status} {body}",
            spec.name
        );
    }
    assert!(
        missing.is_empty(),
        "S3 actions in the table without a sample request in tests/deny.rs: {missing:?}"
    );
    assert!(checked >= 2 * 18, "{checked} S3 denials checked");
}

#[tokio::test]
async fn s3_requests_count_against_the_users_rate_and_the_uploads_in_progress_are_listed() {
    let w = world().await;
    let key = s3_user(&w).await;
    // One request a second, bursts of two: sent back to back, one soon finds the budget
    // spent (however slow the machine: 100 requests would have to take 98 s for none to).
    let limited = Arc::new(api::server::Limiter::new(1));
    let ep = api::s3::Endpoint::new(&w.env, vec!["localhost".into()], limited).unwrap();
    let list = s3_req("GET", "/src", "list-type=2", b"");
    let mut answers = Vec::new();
    for _ in 0..100 {
        let a = s3_send(&ep, &key, &list).await;
        let over = a.0 == 503;
        answers.push(a);
        if over {
            break;
        }
    }
    let (status, body) = answers.last().unwrap();
    assert_eq!(*status, 503, "never refused: {answers:?}");
    assert!(
        answers.len() >= 3,
        "the burst of two was not served: {answers:?}"
    );
    assert!(body.contains("<Code>SlowDown</Code>"), "{body}");

    // ListMultipartUploads: each upload in progress, by key, paged with the markers, and an
    // upload gone once completed or aborted.
    let ep = api::s3::Endpoint::new(&w.env, vec!["localhost".into()], no_limit()).unwrap();
    let mut ids = Vec::new();
    for k in ["b/two.raw", "a.raw", "b/one.raw"] {
        let (_, body) = s3_send(
            &ep,
            &key,
            &s3_req("POST", &format!("/out/{k}"), "uploads", b""),
        )
        .await;
        ids.push(
            body.split("<UploadId>")
                .nth(1)
                .and_then(|t| t.split("</UploadId>").next())
                .unwrap()
                .to_string(),
        );
    }
    let keys = |body: &str| -> Vec<String> {
        body.split("<Key>")
            .skip(1)
            .map(|t| t.split("</Key>").next().unwrap().to_string())
            .collect()
    };
    let (status, body) = s3_send(&ep, &key, &s3_req("GET", "/out", "uploads", b"")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(keys(&body), ["a.raw", "b/one.raw", "b/two.raw"], "{body}");
    assert!(body.contains(&ids[1]), "{body}");
    let (_, body) = s3_send(
        &ep,
        &key,
        &s3_req("GET", "/out", "delimiter=%2F&uploads=", b""),
    )
    .await;
    assert_eq!(keys(&body), ["a.raw"], "{body}");
    assert!(body.contains("<Prefix>b/</Prefix>"), "{body}");
    let (_, body) = s3_send(
        &ep,
        &key,
        &s3_req("GET", "/out", "max-uploads=2&uploads=", b""),
    )
    .await;
    assert_eq!(keys(&body), ["a.raw", "b/one.raw"], "{body}");
    assert!(body.contains("<IsTruncated>true</IsTruncated>"), "{body}");
    assert!(
        body.contains("<NextKeyMarker>b/one.raw</NextKeyMarker>"),
        "{body}"
    );
    let (_, body) = s3_send(
        &ep,
        &key,
        &s3_req(
            "GET",
            "/out",
            &format!(
                "key-marker=b%2Fone.raw&upload-id-marker={}&uploads=",
                ids[2]
            ),
            b"",
        ),
    )
    .await;
    assert_eq!(keys(&body), ["b/two.raw"], "{body}");
    let (_, body) = s3_send(
        &ep,
        &key,
        &s3_req("GET", "/out", "prefix=b%2Ft&uploads=", b""),
    )
    .await;
    assert_eq!(keys(&body), ["b/two.raw"], "{body}");
    let (status, _) = s3_send(
        &ep,
        &key,
        &s3_req("DELETE", "/out/a.raw", &format!("uploadId={}", ids[1]), b""),
    )
    .await;
    assert_eq!(status, 204);
    let (_, body) = s3_send(&ep, &key, &s3_req("GET", "/out", "uploads", b"")).await;
    assert_eq!(keys(&body), ["b/one.raw", "b/two.raw"], "{body}");
}

/// AssumeRole within one account, as AWS decides it: a role whose trust policy names the
/// caller may be assumed without an identity-policy Allow; one trusting only the account
/// needs the caller's own Allow; an explicit Deny refuses either way.
#[tokio::test]
async fn a_trust_policy_naming_the_caller_grants_assume_role_without_an_allow() {
    let w = world().await;
    let id = &w.env.identity;
    let account_trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"sts:AssumeRole"}]}"#;
    id.create_role_with(ACCOUNT, "accountwide", Some(account_trust), "", 3600)
        .await
        .unwrap();
    let spec = Action::spec_of(api::action::Service::Sts, "AssumeRole").unwrap();
    let assume = |role: &str| {
        Params::parse(
            format!("RoleArn=arn%3Aaws%3Aiam%3A%3A111122223333%3Arole%2F{role}&RoleSessionName=s1")
                .as_bytes(),
        )
        .unwrap()
    };
    // Policies that allow something else entirely.
    let unrelated = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ec2:DescribeImages","Resource":"*"}]}"#;
    let who = caller(unrelated);
    // deployer trusts user/tester by name.
    let r = send(&w, spec, &who, &assume("deployer")).await;
    assert!(r.is_ok(), "named in the trust policy, refused: {r:?}");
    let r = send(&w, spec, &who, &assume("accountwide")).await;
    assert!(
        r.as_ref().is_err_and(|e| e.contains("AccessDenied")),
        "trusted only as one of the account, allowed without an Allow: {r:?}"
    );
    // The caller's own Allow opens the account-wide trust.
    let allowing = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"sts:AssumeRole","Resource":"*"}]}"#;
    let r = send(&w, spec, &caller(allowing), &assume("accountwide")).await;
    assert!(r.is_ok(), "{r:?}");
    // A Deny wins over the trust policy naming the caller.
    let denying = allow_all_but(
        r#"{"Effect":"Deny","Action":"sts:AssumeRole","Resource":"arn:aws:iam::111122223333:role/deployer"}"#,
    );
    let r = send(&w, spec, &caller(&denying), &assume("deployer")).await;
    assert!(
        r.as_ref().is_err_and(|e| e.contains("AccessDenied")),
        "{r:?}"
    );
}
