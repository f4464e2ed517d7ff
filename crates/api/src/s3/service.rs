//! The S3 operations, over [`super::store`]: each runs after [`super::auth::Access`] has
//! authorized it (DeleteObjects decides each key here, through the same authorization).
//! Digests are checked as S3 checks them: `Content-MD5`, and `x-amz-checksum-*` given as a
//! header or an `aws-chunked` trailer; a body that does not match is refused (`BadDigest`)
//! and nothing is stored.

use std::collections::BTreeMap;
use std::str::FromStr;

use futures::StreamExt;
use s3s::dto::{
    AbortMultipartUploadInput, AbortMultipartUploadOutput, Bucket, Checksum, CommonPrefix,
    CompleteMultipartUploadInput, CompleteMultipartUploadOutput, CopyObjectInput, CopyObjectOutput,
    CopyObjectResult, CopySource, CreateBucketInput, CreateBucketOutput,
    CreateMultipartUploadInput, CreateMultipartUploadOutput, DeleteBucketInput, DeleteBucketOutput,
    DeleteObjectInput, DeleteObjectOutput, DeleteObjectsInput, DeleteObjectsOutput, DeletedObject,
    ETag, GetBucketLocationInput, GetBucketLocationOutput, GetObjectInput, GetObjectOutput,
    HeadBucketInput, HeadBucketOutput, HeadObjectInput, HeadObjectOutput, ListBucketsInput,
    ListBucketsOutput, ListMultipartUploadsInput, ListMultipartUploadsOutput, ListObjectsInput,
    ListObjectsOutput, ListObjectsV2Input, ListObjectsV2Output, ListPartsInput, ListPartsOutput,
    MetadataDirective, MultipartUpload, Object, Owner, Part, PutObjectInput, PutObjectOutput,
    StreamingBlob, Timestamp, UploadPartInput, UploadPartOutput,
};
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, TrailingHeaders};

use crate::handler::Env;
use crate::spec::Service;

use super::store::{Body, Digests, Listed, Meta, Received, Store, StoreError};
use super::{Caller, Target};

/// The S3 operations over vmie's buckets.
pub struct Vmie {
    /// The buckets.
    pub store: Store,
    /// The environment (for DeleteObjects' per-key decisions).
    pub env: Env,
}

fn err(e: StoreError) -> S3Error {
    let code = S3ErrorCode::from_str(e.code).unwrap_or(S3ErrorCode::InternalError);
    let mut x = S3Error::with_message(code, e.message);
    if e.code == "InternalError" {
        x.set_status_code(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    } else if x.status_code().is_none() {
        x.set_status_code(axum::http::StatusCode::BAD_REQUEST);
    }
    x
}

fn etag(quoted: &str) -> ETag {
    ETag::Strong(quoted.trim_matches('"').to_string())
}

/// The owner shown in listings: the caller's account.
fn owner(req_who: Option<&Caller>) -> Owner {
    let id = req_who.map_or_else(|| "vmie".to_string(), |c| c.who.account.clone());
    Owner {
        display_name: Some(id.clone()),
        id: Some(id),
    }
}

fn body_of(b: Option<StreamingBlob>) -> Body {
    match b {
        Some(b) => {
            Box::pin(b.map(|r| r.map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { e })))
        }
        None => Box::pin(futures::stream::empty()),
    }
}

/// The checksums a request asks to be checked (headers now; trailers at the end).
struct Expect {
    md5: Option<String>,
    given: Checksum,
    algorithm: Option<String>,
    trailers: Option<TrailingHeaders>,
}

impl Expect {
    fn digests(&self) -> Digests {
        let mut d = Digests::default();
        let want = |given: &Option<String>, name: &str| {
            given.is_some()
                || self
                    .algorithm
                    .as_deref()
                    .is_some_and(|a| a.eq_ignore_ascii_case(name))
        };
        let c = &mut d.checksums;
        if want(&self.given.checksum_crc32, "CRC32") {
            c.crc32 = Some(Default::default());
        }
        if want(&self.given.checksum_crc32c, "CRC32C") {
            c.crc32c = Some(Default::default());
        }
        if want(&self.given.checksum_sha1, "SHA1") {
            c.sha1 = Some(Default::default());
        }
        if want(&self.given.checksum_sha256, "SHA256") {
            c.sha256 = Some(Default::default());
        }
        if want(&self.given.checksum_crc64nvme, "CRC64NVME") {
            c.crc64nvme = Some(Default::default());
        }
        d
    }

    /// Checks what was received against what was given.
    fn check(self, got: &Received) -> Result<(), StoreError> {
        let bad = |what: &str| StoreError {
            code: "BadDigest",
            message: format!("The {what} you specified did not match what we received"),
        };
        if let Some(m) = &self.md5 {
            let ours = base64(&got.md5);
            if ours != *m {
                return Err(bad("Content-MD5"));
            }
        }
        let mut given = self.given;
        if let Some(t) = self.trailers.and_then(|t| t.take()) {
            let get = |n: &str| t.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
            given.checksum_crc32 = given.checksum_crc32.or_else(|| get("x-amz-checksum-crc32"));
            given.checksum_crc32c = given
                .checksum_crc32c
                .or_else(|| get("x-amz-checksum-crc32c"));
            given.checksum_sha1 = given.checksum_sha1.or_else(|| get("x-amz-checksum-sha1"));
            given.checksum_sha256 = given
                .checksum_sha256
                .or_else(|| get("x-amz-checksum-sha256"));
            given.checksum_crc64nvme = given
                .checksum_crc64nvme
                .or_else(|| get("x-amz-checksum-crc64nvme"));
        }
        let c = &got.checksums;
        for (name, g, ours) in [
            (
                "x-amz-checksum-crc32",
                &given.checksum_crc32,
                &c.checksum_crc32,
            ),
            (
                "x-amz-checksum-crc32c",
                &given.checksum_crc32c,
                &c.checksum_crc32c,
            ),
            (
                "x-amz-checksum-sha1",
                &given.checksum_sha1,
                &c.checksum_sha1,
            ),
            (
                "x-amz-checksum-sha256",
                &given.checksum_sha256,
                &c.checksum_sha256,
            ),
            (
                "x-amz-checksum-crc64nvme",
                &given.checksum_crc64nvme,
                &c.checksum_crc64nvme,
            ),
        ] {
            if let Some(g) = g
                && Some(g) != ours.as_ref()
            {
                return Err(bad(name));
            }
        }
        Ok(())
    }
}

fn base64(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(c.get(1).copied().unwrap_or(0)) << 8)
            | u32::from(c.get(2).copied().unwrap_or(0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn meta_of(
    content_type: Option<String>,
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Meta {
    Meta {
        etag: String::new(),
        content_type,
        metadata: metadata
            .unwrap_or_default()
            .into_iter()
            .collect::<BTreeMap<_, _>>(),
        stored: String::new(),
        sse: None,
    }
}

/// The authorized caller of a request (set by the access check).
fn caller_of(ext: &axum::http::Extensions) -> S3Result<Caller> {
    ext.get::<Caller>()
        .cloned()
        .ok_or_else(|| s3s::s3_error!(AccessDenied))
}

fn objects(page: Vec<Listed>) -> Vec<Object> {
    page.into_iter()
        .map(|l| Object {
            key: Some(l.key),
            size: Some(i64::try_from(l.size).unwrap_or(i64::MAX)),
            last_modified: Some(Timestamp::from(l.modified)),
            e_tag: Some(etag(&l.etag)),
            storage_class: Some(s3s::dto::ObjectStorageClass::from_static("STANDARD")),
            ..Object::default()
        })
        .collect()
}

/// Keys and common prefixes of a page of listed keys, with `delimiter` folding.
fn fold(keys: Vec<Listed>, prefix: &str, delimiter: Option<&str>) -> (Vec<Listed>, Vec<String>) {
    let Some(d) = delimiter.filter(|d| !d.is_empty()) else {
        return (keys, Vec::new());
    };
    let mut out = Vec::new();
    let mut prefixes: Vec<String> = Vec::new();
    for l in keys {
        match l.key[prefix.len()..].find(d) {
            Some(i) => {
                let p = l.key[..prefix.len() + i + d.len()].to_string();
                if prefixes.last() != Some(&p) {
                    prefixes.push(p);
                }
            }
            None => out.push(l),
        }
    }
    (out, prefixes)
}

impl Vmie {
    /// Lists with `delimiter` folding: common prefixes count as one entry, as in S3. The
    /// marker returned (when truncated) is the last entry: a key, or a common prefix, which
    /// resuming skips whole.
    async fn listing(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        after: Option<&str>,
        max: usize,
    ) -> S3Result<(Vec<Listed>, Vec<String>, Option<String>)> {
        let skip_prefix = |a: &str| -> String {
            match delimiter {
                Some(d) if !d.is_empty() && a.starts_with(prefix) && a.ends_with(d) => {
                    format!("{a}\u{10FFFF}")
                }
                _ => a.to_string(),
            }
        };
        let mut keys = Vec::new();
        let mut prefixes: Vec<String> = Vec::new();
        let mut at = after.map(skip_prefix);
        let mut last_name: Option<String> = None;
        loop {
            let (page, more) = self
                .store
                .list(bucket, prefix, at.as_deref(), 1000)
                .await
                .map_err(err)?;
            let last = page.last().map(|l| l.key.clone());
            let (k, p) = fold(page, prefix, delimiter);
            // Merge in key order, stopping at `max` entries.
            let mut entries: Vec<(String, Option<Listed>)> = k
                .into_iter()
                .map(|l| (l.key.clone(), Some(l)))
                .chain(
                    p.into_iter()
                        .filter(|p| !prefixes.contains(p))
                        .map(|p| (p, None)),
                )
                .collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            for (name, l) in entries {
                if keys.len() + prefixes.len() >= max {
                    return Ok((keys, prefixes, last_name));
                }
                last_name = Some(name.clone());
                match l {
                    Some(l) => keys.push(l),
                    None => prefixes.push(name),
                }
            }
            if !more {
                return Ok((keys, prefixes, None));
            }
            at = last.map(|l| match prefixes.last() {
                Some(p) if l.starts_with(p.as_str()) => skip_prefix(p),
                _ => l,
            });
        }
    }
}

#[async_trait::async_trait]
impl S3 for Vmie {
    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let caller = req.extensions.get::<Caller>();
        let buckets = self
            .store
            .list_buckets()
            .await
            .map_err(err)?
            .into_iter()
            .map(|(name, made)| Bucket {
                name: Some(name),
                creation_date: Some(Timestamp::from(made)),
                bucket_region: Some(self.env.region.clone()),
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(owner(caller)),
            ..ListBucketsOutput::default()
        }))
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let b = &req.input.bucket;
        self.store.create_bucket(b).await.map_err(err)?;
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{b}")),
        }))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.store
            .delete_bucket(&req.input.bucket)
            .await
            .map_err(err)?;
        Ok(S3Response::new(DeleteBucketOutput::default()))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        if !self
            .store
            .bucket_exists(&req.input.bucket)
            .await
            .map_err(err)?
        {
            return Err(s3s::s3_error!(NoSuchBucket));
        }
        Ok(S3Response::new(HeadBucketOutput {
            bucket_region: Some(self.env.region.clone()),
            ..HeadBucketOutput::default()
        }))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        if !self
            .store
            .bucket_exists(&req.input.bucket)
            .await
            .map_err(err)?
        {
            return Err(s3s::s3_error!(NoSuchBucket));
        }
        // us-east-1 is the empty constraint, as S3 answers.
        let loc = (self.env.region != "us-east-1")
            .then(|| s3s::dto::BucketLocationConstraint::from(self.env.region.clone()));
        Ok(S3Response::new(GetBucketLocationOutput {
            location_constraint: loc,
        }))
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let i = req.input;
        let prefix = i.prefix.clone().unwrap_or_default();
        let max = usize::try_from(i.max_keys.unwrap_or(1000).clamp(0, 1000)).unwrap_or(1000);
        let (keys, prefixes, next) = self
            .listing(
                &i.bucket,
                &prefix,
                i.delimiter.as_deref(),
                i.marker.as_deref().filter(|m| !m.is_empty()),
                max,
            )
            .await?;
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(i.bucket),
            prefix: Some(prefix),
            marker: i.marker,
            max_keys: i32::try_from(max).ok(),
            is_truncated: Some(next.is_some()),
            next_marker: next,
            contents: Some(objects(keys)),
            common_prefixes: Some(
                prefixes
                    .into_iter()
                    .map(|p| CommonPrefix { prefix: Some(p) })
                    .collect(),
            ),
            delimiter: i.delimiter,
            encoding_type: i.encoding_type,
            ..ListObjectsOutput::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let i = req.input;
        let prefix = i.prefix.clone().unwrap_or_default();
        let max = usize::try_from(i.max_keys.unwrap_or(1000).clamp(0, 1000)).unwrap_or(1000);
        let after = match &i.continuation_token {
            Some(t) => Some(
                hex::decode(t)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| {
                        s3s::s3_error!(
                            InvalidArgument,
                            "The continuation token provided is incorrect"
                        )
                    })?,
            ),
            None => i.start_after.clone().filter(|s| !s.is_empty()),
        };
        let (keys, prefixes, next) = self
            .listing(
                &i.bucket,
                &prefix,
                i.delimiter.as_deref(),
                after.as_deref(),
                max,
            )
            .await?;
        let count = keys.len() + prefixes.len();
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(i.bucket),
            prefix: Some(prefix),
            max_keys: i32::try_from(max).ok(),
            key_count: i32::try_from(count).ok(),
            continuation_token: i.continuation_token,
            is_truncated: Some(next.is_some()),
            next_continuation_token: next.map(|n| hex::encode(n.as_bytes())),
            contents: Some(objects(keys)),
            common_prefixes: Some(
                prefixes
                    .into_iter()
                    .map(|p| CommonPrefix { prefix: Some(p) })
                    .collect(),
            ),
            delimiter: i.delimiter,
            encoding_type: i.encoding_type,
            start_after: i.start_after,
            ..ListObjectsV2Output::default()
        }))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let trailers = req.trailing_headers;
        let i = req.input;
        if i.content_length
            .is_some_and(|n| n < 0 || n.unsigned_abs() > super::store::MAX_PUT)
        {
            return Err(s3s::s3_error!(EntityTooLarge));
        }
        let expect = Expect {
            md5: i.content_md5.clone(),
            given: Checksum {
                checksum_crc32: i.checksum_crc32.clone(),
                checksum_crc32c: i.checksum_crc32c.clone(),
                checksum_sha1: i.checksum_sha1.clone(),
                checksum_sha256: i.checksum_sha256.clone(),
                checksum_crc64nvme: i.checksum_crc64nvme.clone(),
                ..Checksum::default()
            },
            algorithm: i
                .checksum_algorithm
                .as_ref()
                .map(|a| a.as_str().to_string()),
            trailers,
        };
        let digests = expect.digests();
        let meta = meta_of(i.content_type.clone(), i.metadata.clone());
        let caller = caller_of(&req.extensions)?;
        let seal = super::sse::for_write(
            &self.env,
            &caller,
            &i.bucket,
            &i.key,
            i.server_side_encryption.as_ref(),
            i.ssekms_key_id.as_deref(),
        )
        .await?;
        let (w, got) = self
            .store
            .put(
                &i.bucket,
                &i.key,
                body_of(i.body),
                digests,
                meta,
                seal.as_ref(),
                |g| expect.check(g),
            )
            .await
            .map_err(err)?;
        let c = got.checksums;
        let (sse, kms_key) = super::sse::headers(seal.as_ref().map(|k| &k.sse));
        Ok(S3Response::new(PutObjectOutput {
            server_side_encryption: sse,
            ssekms_key_id: kms_key,
            e_tag: Some(etag(&w.etag)),
            checksum_crc32: c.checksum_crc32,
            checksum_crc32c: c.checksum_crc32c,
            checksum_sha1: c.checksum_sha1,
            checksum_sha256: c.checksum_sha256,
            checksum_crc64nvme: c.checksum_crc64nvme,
            ..PutObjectOutput::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let caller = caller_of(&req.extensions)?;
        let i = req.input;
        let o = self.store.head(&i.bucket, &i.key).await.map_err(err)?;
        let size = o.size();
        let key =
            super::sse::key_if_sealed(&self.env, &caller, &i.bucket, &i.key, o.meta.sse.as_ref())
                .await?;
        let range = match &i.range {
            Some(r) => r.check(size).map_err(|_| {
                s3s::s3_error!(InvalidRange, "The requested range is not satisfiable")
            })?,
            None => 0..size,
        };
        let body = self
            .store
            .read(&i.bucket, &i.key, &o, range.clone(), key.as_deref())
            .await
            .map_err(err)?;
        let len = range.end - range.start;
        let (sse, kms_key) = super::sse::headers(o.meta.sse.as_ref());
        Ok(S3Response::new(GetObjectOutput {
            server_side_encryption: sse,
            ssekms_key_id: kms_key,
            body: Some(body),
            content_length: i64::try_from(len).ok(),
            content_range: i.range.as_ref().map(|_| {
                format!(
                    "bytes {}-{}/{size}",
                    range.start,
                    range.end.saturating_sub(1)
                )
            }),
            accept_ranges: Some("bytes".into()),
            e_tag: Some(etag(&o.meta.etag)),
            last_modified: Some(Timestamp::from(o.stat.modified)),
            content_type: o.meta.content_type,
            metadata: Some(o.meta.metadata.into_iter().collect()),
            ..GetObjectOutput::default()
        }))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let i = req.input;
        let o = self.store.head(&i.bucket, &i.key).await.map_err(err)?;
        let (sse, kms_key) = super::sse::headers(o.meta.sse.as_ref());
        Ok(S3Response::new(HeadObjectOutput {
            server_side_encryption: sse,
            ssekms_key_id: kms_key,
            content_length: i64::try_from(o.size()).ok(),
            accept_ranges: Some("bytes".into()),
            e_tag: Some(etag(&o.meta.etag)),
            last_modified: Some(Timestamp::from(o.stat.modified)),
            content_type: o.meta.content_type,
            metadata: Some(o.meta.metadata.into_iter().collect()),
            ..HeadObjectOutput::default()
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let i = req.input;
        self.store.delete(&i.bucket, &i.key).await.map_err(err)?;
        Ok(S3Response::with_status(
            DeleteObjectOutput::default(),
            axum::http::StatusCode::NO_CONTENT,
        ))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let caller = req
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| s3s::s3_error!(AccessDenied))?;
        let i = req.input;
        let spec = crate::action::Action::spec_of(Service::S3, "DeleteObjects")
            .ok_or_else(|| s3s::s3_error!(InternalError))?;
        if i.delete.objects.len() > 1000 {
            return Err(s3s::s3_error!(MalformedXML, "at most 1,000 keys at once"));
        }
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for o in i.delete.objects {
            let target = Target {
                bucket: i.bucket.clone(),
                keys: vec![o.key.clone()],
                ..Target::default()
            };
            let r = match super::auth::Access::decide(&self.env, &caller, spec, &target).await {
                Ok(()) => self
                    .store
                    .delete(&i.bucket, &o.key)
                    .await
                    .map_err(|e| (e.code.to_string(), e.message)),
                Err(e) => Err((e.code, e.message)),
            };
            match r {
                Ok(()) => deleted.push(DeletedObject {
                    key: Some(o.key),
                    ..DeletedObject::default()
                }),
                Err((code, message)) => errors.push(s3s::dto::Error {
                    code: Some(code),
                    key: Some(o.key),
                    message: Some(message),
                    version_id: None,
                }),
            }
        }
        let quiet = i.delete.quiet.unwrap_or(false);
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: (!quiet).then_some(deleted),
            errors: Some(errors),
            ..DeleteObjectsOutput::default()
        }))
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let i = req.input;
        let CopySource::Bucket { bucket, key, .. } = &i.copy_source else {
            return Err(s3s::s3_error!(
                NotImplemented,
                "access points are not served"
            ));
        };
        let replace = i
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        if bucket.as_ref() == i.bucket && key.as_ref() == i.key && !replace {
            return Err(s3s::s3_error!(
                InvalidRequest,
                "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata"
            ));
        }
        let meta = replace.then(|| meta_of(i.content_type.clone(), i.metadata.clone()));
        let caller = caller_of(&req.extensions)?;
        let from = self.store.head(bucket, key).await.map_err(err)?;
        let open =
            super::sse::key_if_sealed(&self.env, &caller, bucket, key, from.meta.sse.as_ref())
                .await?;
        let seal = super::sse::for_write(
            &self.env,
            &caller,
            &i.bucket,
            &i.key,
            i.server_side_encryption.as_ref(),
            i.ssekms_key_id.as_deref(),
        )
        .await?;
        let w = self
            .store
            .copy(
                (bucket, key),
                (&i.bucket, &i.key),
                meta,
                open.as_deref(),
                seal.as_ref(),
            )
            .await
            .map_err(err)?;
        let (sse, kms_key) = super::sse::headers(seal.as_ref().map(|k| &k.sse));
        Ok(S3Response::new(CopyObjectOutput {
            server_side_encryption: sse,
            ssekms_key_id: kms_key,
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(etag(&w.etag)),
                last_modified: Some(Timestamp::from(std::time::SystemTime::now())),
                ..CopyObjectResult::default()
            }),
            ..CopyObjectOutput::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let caller = caller_of(&req.extensions)?;
        let i = req.input;
        let mut meta = meta_of(i.content_type.clone(), i.metadata.clone());
        let seal = super::sse::for_write(
            &self.env,
            &caller,
            &i.bucket,
            &i.key,
            i.server_side_encryption.as_ref(),
            i.ssekms_key_id.as_deref(),
        )
        .await?;
        // The upload's data key, wrapped: each part and the completed object are sealed
        // under it.
        meta.sse = seal.as_ref().map(|k| k.sse.clone());
        let id = self
            .store
            .create_upload(&i.bucket, &i.key, meta)
            .await
            .map_err(err)?;
        let (sse, kms_key) = super::sse::headers(seal.as_ref().map(|k| &k.sse));
        Ok(S3Response::new(CreateMultipartUploadOutput {
            server_side_encryption: sse,
            ssekms_key_id: kms_key,
            bucket: Some(i.bucket),
            key: Some(i.key),
            upload_id: Some(id),
            checksum_algorithm: i.checksum_algorithm,
            ..CreateMultipartUploadOutput::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let trailers = req.trailing_headers;
        let caller = caller_of(&req.extensions)?;
        let i = req.input;
        if i.content_length
            .is_some_and(|n| n < 0 || n.unsigned_abs() > super::store::MAX_PUT)
        {
            return Err(s3s::s3_error!(EntityTooLarge));
        }
        let expect = Expect {
            md5: i.content_md5.clone(),
            given: Checksum {
                checksum_crc32: i.checksum_crc32.clone(),
                checksum_crc32c: i.checksum_crc32c.clone(),
                checksum_sha1: i.checksum_sha1.clone(),
                checksum_sha256: i.checksum_sha256.clone(),
                checksum_crc64nvme: i.checksum_crc64nvme.clone(),
                ..Checksum::default()
            },
            algorithm: i
                .checksum_algorithm
                .as_ref()
                .map(|a| a.as_str().to_string()),
            trailers,
        };
        let digests = expect.digests();
        let up = self
            .store
            .upload(&i.bucket, &i.key, &i.upload_id)
            .await
            .map_err(err)?;
        let key =
            super::sse::key_if_sealed(&self.env, &caller, &i.bucket, &i.key, up.meta.sse.as_ref())
                .await?;
        let (info, got) = self
            .store
            .put_part(
                &i.bucket,
                &i.key,
                &i.upload_id,
                i.part_number,
                body_of(i.body),
                digests,
                key.as_deref(),
                |g| expect.check(g),
            )
            .await
            .map_err(err)?;
        let c = got.checksums;
        let (sse, kms_key) = super::sse::headers(up.meta.sse.as_ref());
        Ok(S3Response::new(UploadPartOutput {
            server_side_encryption: sse,
            ssekms_key_id: kms_key,
            e_tag: Some(etag(&info.etag)),
            checksum_crc32: c.checksum_crc32,
            checksum_crc32c: c.checksum_crc32c,
            checksum_sha1: c.checksum_sha1,
            checksum_sha256: c.checksum_sha256,
            checksum_crc64nvme: c.checksum_crc64nvme,
            ..UploadPartOutput::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let caller = caller_of(&req.extensions)?;
        let i = req.input;
        let chosen: Vec<(i32, String)> = i
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default()
            .into_iter()
            .map(|p| {
                (
                    p.part_number.unwrap_or(0),
                    p.e_tag.map(ETag::into_value).unwrap_or_default(),
                )
            })
            .collect();
        let up = self
            .store
            .upload(&i.bucket, &i.key, &i.upload_id)
            .await
            .map_err(err)?;
        let key =
            super::sse::key_if_sealed(&self.env, &caller, &i.bucket, &i.key, up.meta.sse.as_ref())
                .await?;
        let w = self
            .store
            .complete(&i.bucket, &i.key, &i.upload_id, &chosen, key.as_deref())
            .await
            .map_err(err)?;
        let (sse, kms_key) = super::sse::headers(up.meta.sse.as_ref());
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            server_side_encryption: sse,
            ssekms_key_id: kms_key,
            bucket: Some(i.bucket.clone()),
            key: Some(i.key.clone()),
            e_tag: Some(etag(&w.etag)),
            location: Some(format!("/{}/{}", i.bucket, i.key)),
            ..CompleteMultipartUploadOutput::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let i = req.input;
        self.store
            .abort_upload(&i.bucket, &i.key, &i.upload_id)
            .await
            .map_err(err)?;
        Ok(S3Response::with_status(
            AbortMultipartUploadOutput::default(),
            axum::http::StatusCode::NO_CONTENT,
        ))
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let caller = req.extensions.get::<Caller>().cloned();
        let i = req.input;
        let all = self
            .store
            .parts(&i.bucket, &i.key, &i.upload_id)
            .await
            .map_err(err)?;
        let marker = i.part_number_marker.unwrap_or(0);
        let max = usize::try_from(i.max_parts.unwrap_or(1000).clamp(1, 1000)).unwrap_or(1000);
        let after: Vec<_> = all.into_iter().filter(|p| p.number > marker).collect();
        let truncated = after.len() > max;
        let page: Vec<Part> = after
            .into_iter()
            .take(max)
            .map(|p| Part {
                part_number: Some(p.number),
                e_tag: Some(etag(&p.etag)),
                size: i64::try_from(p.size).ok(),
                last_modified: Some(Timestamp::from(
                    std::time::UNIX_EPOCH
                        + std::time::Duration::from_millis(
                            u64::try_from(p.modified_ms).unwrap_or(0),
                        ),
                )),
                ..Part::default()
            })
            .collect();
        let next = page.last().and_then(|p| p.part_number);
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(i.bucket),
            key: Some(i.key),
            upload_id: Some(i.upload_id),
            max_parts: i32::try_from(max).ok(),
            is_truncated: Some(truncated),
            next_part_number_marker: next,
            part_number_marker: i.part_number_marker,
            owner: Some(owner(caller.as_ref())),
            parts: Some(page),
            ..ListPartsOutput::default()
        }))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let caller = req.extensions.get::<Caller>().cloned();
        let i = req.input;
        let prefix = i.prefix.clone().unwrap_or_default();
        let all = self.store.uploads(&i.bucket, &prefix).await.map_err(err)?;
        let max = usize::try_from(i.max_uploads.unwrap_or(1000).clamp(1, 1000)).unwrap_or(1000);
        // After the markers: keys past `key-marker`, and uploads of that very key past
        // `upload-id-marker` when one is given.
        let key_marker = i.key_marker.clone().unwrap_or_default();
        let start = match (&i.key_marker, &i.upload_id_marker) {
            (Some(k), Some(id)) => all
                .iter()
                .position(|(u, up)| up.key == *k && u == id)
                .map_or_else(
                    || all.iter().take_while(|(_, up)| up.key <= *k).count(),
                    |p| p + 1,
                ),
            (Some(k), None) => all.iter().take_while(|(_, up)| up.key <= *k).count(),
            _ => 0,
        };
        let mut uploads = Vec::new();
        let mut prefixes: Vec<String> = Vec::new();
        let mut truncated = false;
        let mut last: Option<(String, String)> = None;
        for (id, up) in all.into_iter().skip(start) {
            let folded = i
                .delimiter
                .as_deref()
                .filter(|d| !d.is_empty())
                .and_then(|d| {
                    up.key[prefix.len()..]
                        .find(d)
                        .map(|at| up.key[..prefix.len() + at + d.len()].to_string())
                });
            if let Some(p) = &folded
                && prefixes.last() == Some(p)
            {
                continue;
            }
            if uploads.len() + prefixes.len() == max {
                truncated = true;
                break;
            }
            last = Some((up.key.clone(), id.clone()));
            match folded {
                Some(p) => prefixes.push(p),
                None => uploads.push(MultipartUpload {
                    key: Some(up.key),
                    upload_id: Some(id),
                    initiated: Some(Timestamp::from(
                        std::time::UNIX_EPOCH
                            + std::time::Duration::from_millis(
                                u64::try_from(up.initiated_ms).unwrap_or(0),
                            ),
                    )),
                    owner: Some(owner(caller.as_ref())),
                    initiator: None,
                    ..MultipartUpload::default()
                }),
            }
        }
        let (next_key, next_id) = match (truncated, last) {
            (true, Some((k, id))) => (Some(k), Some(id)),
            _ => (None, None),
        };
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(i.bucket),
            prefix: i.prefix,
            delimiter: i.delimiter,
            key_marker: Some(key_marker),
            upload_id_marker: i.upload_id_marker,
            max_uploads: i32::try_from(max).ok(),
            is_truncated: Some(truncated),
            next_key_marker: next_key,
            next_upload_id_marker: next_id,
            uploads: Some(uploads),
            common_prefixes: Some(
                prefixes
                    .into_iter()
                    .map(|p| CommonPrefix { prefix: Some(p) })
                    .collect(),
            ),
            ..ListMultipartUploadsOutput::default()
        }))
    }
}
