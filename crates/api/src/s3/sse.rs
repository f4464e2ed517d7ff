//! Server-side encryption of objects (SSE-KMS, and SSE-S3 under the service's key): which
//! writes are sealed, under which KMS key, and who may unwrap an object's data key.
//!
//! An object is sealed at rest ([`objectmeta::seal`]) when the request asks
//! (`x-amz-server-side-encryption: aws:kms`, optionally with
//! `x-amz-server-side-encryption-aws-kms-key-id`; or `AES256`) or when the deployment marks
//! its bucket (`bucket_keys`: every object written there is sealed under the bucket's key).
//! Its data key is drawn by KMS for it, bound to the encryption context
//! `aws:s3:arn = arn:aws:s3:::BUCKET/KEY`, and kept wrapped in the object's record.
//!
//! Authorization follows S3's: under a customer key, writing needs `kms:GenerateDataKey` and
//! reading `kms:Decrypt` — decided as those KMS actions are (the caller's IAM policies, in the
//! one action table, then the key's policy). Under the service's own key (`alias/aws/s3`:
//! `AES256`, or `aws:kms` naming no key in an unmarked bucket) S3 itself unwraps the key, as
//! AWS's managed key policy allows for any principal of the account through S3.

use s3s::S3Error;
use s3s::dto::ServerSideEncryption;
use zeroize::Zeroizing;

use crate::action::Action;
use crate::error::ApiError;
use crate::handler::{Env, Input};
use crate::spec::Service;

use super::Caller;
use super::store::{SealKey, Sse};

fn s3_err(e: &ApiError) -> S3Error {
    super::auth::refusal(e)
}

fn invalid(message: impl Into<String>) -> S3Error {
    let mut e = S3Error::with_message(s3s::S3ErrorCode::InvalidArgument, message.into());
    e.set_status_code(axum::http::StatusCode::BAD_REQUEST);
    e
}

fn kms_refusal(e: &kms::KmsError) -> S3Error {
    let a = crate::kms_api::kms_error(e);
    let (code, status) = if a.status >= 500 {
        (s3s::S3ErrorCode::InternalError, a.status)
    } else if a.code.contains("AccessDenied") {
        (s3s::S3ErrorCode::AccessDenied, 403)
    } else {
        (s3s::S3ErrorCode::InvalidArgument, 400)
    };
    let mut x = S3Error::with_message(code, format!("KMS: {} ({})", a.message, a.code));
    if let Ok(s) = axum::http::StatusCode::from_u16(status) {
        x.set_status_code(s);
    }
    x
}

/// Decides the KMS action `name` for `caller` on the JSON request `body`, as that action is
/// decided on the KMS endpoint (its row of the action table).
async fn decide_kms(env: &Env, caller: &Caller, name: &str, body: &str) -> Result<(), S3Error> {
    let spec = Action::spec_of(Service::Kms, name)
        .ok_or_else(|| invalid(format!("KMS {name} is not in the action table")))?;
    let action = Action::parse(spec, Input::Json(body.as_bytes()), env, &caller.who)
        .map_err(|e| s3_err(&e))?;
    let decl = action.declare(env, &caller.who);
    crate::authz::authorize(env, &caller.who, &caller.origin, spec, &decl)
        .await
        .map_err(|e| s3_err(&e))
}

/// The response headers of a sealed object.
#[must_use]
pub fn headers(sse: Option<&Sse>) -> (Option<ServerSideEncryption>, Option<String>) {
    match sse {
        Some(e) if e.algorithm == ServerSideEncryption::AES256 => (
            Some(ServerSideEncryption::from_static(
                ServerSideEncryption::AES256,
            )),
            None,
        ),
        Some(e) => (
            Some(ServerSideEncryption::from_static(
                ServerSideEncryption::AWS_KMS,
            )),
            Some(e.key_id.clone()),
        ),
        None => (None, None),
    }
}

/// The data key the object `bucket`/`key` is to be sealed with, or `None` when it is
/// stored as it comes: asked by the request (`algorithm`, `key_id`) or by the bucket's mark.
pub async fn for_write(
    env: &Env,
    caller: &Caller,
    bucket: &str,
    key: &str,
    algorithm: Option<&ServerSideEncryption>,
    key_id: Option<&str>,
) -> Result<Option<SealKey>, S3Error> {
    let asked = algorithm.map(ServerSideEncryption::as_str);
    let kms_asked = matches!(asked, Some("aws:kms" | "aws:kms:dsse"));
    if let Some(a) = asked
        && !kms_asked
        && a != ServerSideEncryption::AES256
    {
        return Err(invalid(format!(
            "x-amz-server-side-encryption is {a:?}; it must be aws:kms or AES256"
        )));
    }
    if key_id.is_some() && !kms_asked {
        return Err(invalid(
            "x-amz-server-side-encryption-aws-kms-key-id needs x-amz-server-side-encryption: aws:kms",
        ));
    }
    // The bucket's mark: `Some("")` is the default key.
    let mark = env.engine.sources().bucket_key(bucket);
    if asked.is_none() && mark.is_none() {
        return Ok(None);
    }
    let marked = mark.filter(|k| !k.is_empty());
    let kms = env.engine.store().kms();
    // The customer key named, or the bucket's; otherwise the service's own.
    let customer = if asked == Some(ServerSideEncryption::AES256) {
        None
    } else {
        key_id.or(marked)
    };
    let context = Sse::context(bucket, key);
    let (kcaller, key_ref) = match customer {
        Some(k) => {
            let body = serde_json::json!({ "KeyId": k, "KeySpec": "AES_256",
                "EncryptionContext": context })
            .to_string();
            decide_kms(env, caller, "GenerateDataKey", &body).await?;
            (caller.who.kms_caller(), k.to_string())
        }
        None => {
            let m = kms.default_s3_key().await.map_err(|e| kms_refusal(&e))?;
            (kms::Caller::account_root(&caller.who.account), m.key_id)
        }
    };
    let dk = kms
        .generate_data_key(&kcaller, &key_ref, &context)
        .await
        .map_err(|e| kms_refusal(&e))?;
    let (meta, _) = kms
        .key_info(&dk.key_id)
        .await
        .map_err(|e| kms_refusal(&e))?;
    let algorithm = if asked == Some(ServerSideEncryption::AES256) {
        ServerSideEncryption::AES256
    } else {
        ServerSideEncryption::AWS_KMS
    };
    Ok(Some(SealKey {
        sse: Sse {
            algorithm: algorithm.to_string(),
            key_id: meta.arn,
            data_key: hex::encode(&dk.ciphertext),
            size: 0,
        },
        material: dk.plaintext,
    }))
}

/// The data key of the object `bucket`/`key` when it is sealed (`sse`), unwrapped for
/// `caller`; `None` for an object stored as it came.
pub async fn key_if_sealed(
    env: &Env,
    caller: &Caller,
    bucket: &str,
    key: &str,
    sse: Option<&Sse>,
) -> Result<Option<Zeroizing<[u8; 32]>>, S3Error> {
    match sse {
        Some(e) => Ok(Some(for_read(env, caller, bucket, key, e).await?)),
        None => Ok(None),
    }
}

/// The data key of the sealed object `bucket`/`key`, unwrapped for `caller`.
pub async fn for_read(
    env: &Env,
    caller: &Caller,
    bucket: &str,
    key: &str,
    sse: &Sse,
) -> Result<Zeroizing<[u8; 32]>, S3Error> {
    let kms = env.engine.store().kms();
    let blob = hex::decode(&sse.data_key)
        .map_err(|_| invalid("the object's encryption record is damaged"))?;
    let context = Sse::context(bucket, key);
    let managed = match kms.resolve(kms::S3_DEFAULT_ALIAS).await {
        Ok(id) => sse.key_id.ends_with(&format!("key/{id}")),
        Err(_) => false,
    };
    let kcaller = if managed {
        kms::Caller::account_root(&caller.who.account)
    } else {
        use base64::Engine as _;
        let body = serde_json::json!({
            "CiphertextBlob": base64::engine::general_purpose::STANDARD.encode(&blob),
            "EncryptionContext": context,
        })
        .to_string();
        decide_kms(env, caller, "Decrypt", &body).await?;
        caller.who.kms_caller()
    };
    kms.decrypt_data_key(&kcaller, &blob, &context)
        .await
        .map_err(|e| kms_refusal(&e))
}
