//! The S3 rows of the action table: one type per S3 operation, each stating its IAM action
//! as AWS documents it (`s3:GetObject` for GetObject and HeadObject, `s3:ListBucket` for
//! ListObjects(V2) and HeadBucket, `s3:PutObject` for every step of a multipart upload but
//! its abort, …) and the resources it touches: `arn:aws:s3:::BUCKET` or
//! `arn:aws:s3:::BUCKET/KEY`.
//!
//! The S3 protocol itself is s3s's: the access hook ([`super::auth`]) builds the [`Target`]
//! of a request, parses it into the typed [`Action`](crate::action::Action) here, and has
//! [`crate::authz`] decide on its declaration — the same steps `dispatch` takes for Query
//! and JSON actions. The operation then runs in [`super::service`]: these types are never
//! run through `dispatch` (their `parse` refuses Query and JSON input).

use crate::error::ApiError;
use crate::handler::{Cx, Declaration, Env, Handler, Input, S3Target as Target};
use crate::identity::Principal;
use crate::spec::{Authz, Service, Spec, Tags, plain};

/// The parameters S3 records carry (CloudTrail's data events name them so); keys are
/// recorded, bodies and signatures never.
const PARAMS: &[crate::spec::Field] = &[
    plain("bucketName"),
    plain("key"),
    plain("prefix"),
    plain("delimiter"),
    plain("uploadId"),
    plain("partNumber"),
    plain("x-amz-copy-source"),
    plain("range"),
    plain("Host"),
];

/// The `s3:prefix` condition key of the listing operations.
const LIST_KEYS: &[&str] = &["s3:prefix", "s3:delimiter"];

/// What an S3 operation's row touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// The account's buckets (`Resource: *`).
    Account,
    /// The bucket.
    Bucket,
    /// The object.
    Object,
    /// The objects a DeleteObjects body names.
    Objects,
}

fn arns(target: &Target, scope: Scope) -> Vec<String> {
    match scope {
        Scope::Account => Vec::new(),
        Scope::Bucket => vec![format!("arn:aws:s3:::{}", target.bucket)],
        Scope::Object => vec![format!("arn:aws:s3:::{}/{}", target.bucket, target.key)],
        Scope::Objects => target
            .keys
            .iter()
            .map(|k| format!("arn:aws:s3:::{}/{k}", target.bucket))
            .collect(),
    }
}

macro_rules! s3_actions {
    ($($(#[$doc:meta])* $name:ident: $iam:literal, $read:expr, $scope:ident, $res:expr, $keys:expr;)*) => {
        $(
            $(#[$doc])*
            #[derive(Debug)]
            pub struct $name(pub Target);

            impl Handler for $name {
                const SPEC: Spec = Spec {
                    service: Service::S3,
                    name: stringify!($name),
                    iam_action: $iam,
                    read_only: $read,
                    authz: Authz::Policy,
                    resources: $res,
                    tags: Tags::None,
                    condition_keys: $keys,
                    params: PARAMS,
                };

                fn parse(input: Input<'_>, _env: &Env, _who: &Principal) -> Result<Self, ApiError> {
                    match input {
                        Input::S3(t) => Ok($name(t.clone())),
                        _ => Err(ApiError::client(
                            "InvalidAction",
                            "S3 operations are served by the S3 protocol, not the Query protocol",
                        )),
                    }
                }

                fn declare(&self, _env: &Env, _who: &Principal, d: &mut Declaration) {
                    for a in arns(&self.0, Scope::$scope) {
                        d.touches(a);
                    }
                    if !$keys.is_empty() {
                        d.condition("s3:prefix", vec![self.0.prefix.clone().unwrap_or_default()]);
                        d.condition("s3:delimiter", vec![self.0.delimiter.clone().unwrap_or_default()]);
                    }
                }

                async fn run(self, _cx: &Cx<'_>) -> Result<String, ApiError> {
                    // Parsing refuses anything but S3 input, which only the S3 endpoint
                    // makes; it runs the operation itself (`super::service`).
                    Err(ApiError::client(
                        "InvalidAction",
                        "S3 operations are served by the S3 protocol, not the Query protocol",
                    ))
                }
            }
        )*
    };
}

const BUCKET: &[&str] = &["bucket"];
const OBJECT: &[&str] = &["object"];
const NONE: &[&str] = &[];

s3_actions! {
    /// ListBuckets (`aws s3 ls`).
    ListBuckets: "s3:ListAllMyBuckets", true, Account, NONE, NONE;
    /// CreateBucket (`aws s3 mb`).
    CreateBucket: "s3:CreateBucket", false, Bucket, BUCKET, NONE;
    /// DeleteBucket (`aws s3 rb`); the bucket must be empty.
    DeleteBucket: "s3:DeleteBucket", false, Bucket, BUCKET, NONE;
    /// HeadBucket.
    HeadBucket: "s3:ListBucket", true, Bucket, BUCKET, NONE;
    /// GetBucketLocation.
    GetBucketLocation: "s3:GetBucketLocation", true, Bucket, BUCKET, NONE;
    /// ListObjects (version 1).
    ListObjects: "s3:ListBucket", true, Bucket, BUCKET, LIST_KEYS;
    /// ListObjectsV2.
    ListObjectsV2: "s3:ListBucket", true, Bucket, BUCKET, LIST_KEYS;
    /// PutObject.
    PutObject: "s3:PutObject", false, Object, OBJECT, NONE;
    /// GetObject (with `Range`).
    GetObject: "s3:GetObject", true, Object, OBJECT, NONE;
    /// HeadObject.
    HeadObject: "s3:GetObject", true, Object, OBJECT, NONE;
    /// DeleteObject.
    DeleteObject: "s3:DeleteObject", false, Object, OBJECT, NONE;
    /// DeleteObjects: `s3:DeleteObject` on each key its body names, decided key by key once
    /// the body is read (a denied key is in the answer's errors; the others are deleted).
    DeleteObjects: "s3:DeleteObject", false, Objects, OBJECT, NONE;
    /// CopyObject: `s3:PutObject` on the copy; the source needs `s3:GetObject` (decided as
    /// a GetObject of it).
    CopyObject: "s3:PutObject", false, Object, OBJECT, NONE;
    /// CreateMultipartUpload.
    CreateMultipartUpload: "s3:PutObject", false, Object, OBJECT, NONE;
    /// UploadPart.
    UploadPart: "s3:PutObject", false, Object, OBJECT, NONE;
    /// CompleteMultipartUpload.
    CompleteMultipartUpload: "s3:PutObject", false, Object, OBJECT, NONE;
    /// AbortMultipartUpload.
    AbortMultipartUpload: "s3:AbortMultipartUpload", false, Object, OBJECT, NONE;
    /// ListParts.
    ListParts: "s3:ListMultipartUploadParts", true, Object, OBJECT, NONE;
    /// ListMultipartUploads: the uploads of a bucket in progress (to resume or abort them).
    ListMultipartUploads: "s3:ListBucketMultipartUploads", true, Bucket, BUCKET, NONE;
}
