//! # api — vmie's EC2-compatible API
//!
//! Start at [`action`]: the table of every action, then [`dispatch`].
//!
//! The pieces of the EC2 Query protocol that stand on their own:
//! - [`sigv4`]: verification of AWS Signature Version 4 (the `Authorization` header and
//!   presigned query forms), written against the published algorithm;
//! - [`query`]: the form-encoded parameters of an EC2 Query request, with their dotted,
//!   numbered members (`DiskContainer.1.UserBucket.S3Bucket`), parsed under fixed limits;
//! - [`iam`]: identity policies in the standard JSON grammar, deny by default, explicit deny
//!   wins, with conditions (`aws:MultiFactorAuthPresent`, `aws:SourceIp`, tags, dates, …);
//! - [`identity`]: users, access keys (secrets sealed under the root key, shown once), roles,
//!   attached policies, and the authentication of a signed request to a principal;
//! - [`guard`]: the sensitive-data guard on descriptions and tags;
//! - [`totp`]: RFC 6238 one-time passwords for multi-factor authentication, and [`mfa`]:
//!   the back-off and lockout of a device after failed codes;
//! - [`audit`]: the activity log's records (CloudTrail's shape, sensitive values redacted),
//!   stored by the `trail` crate, and [`cloudtrail`]: CloudTrail's API over them
//!   (`LookupEvents`, the trail's description and status, its public keys);
//! - [`action`]: the action table — every action served; [`spec`]: what each states about
//!   itself (IAM action, resources, parameters); [`handler`]: what an action's handler is given
//!   and declares; [`authz`]: the one place authorization is decided; [`dispatch`]: the steps
//!   every request goes through; [`ec2`], [`sts`], [`cloudtrail`]: the actions themselves,
//!   one file each; [`iam_api`] and [`kms_api`]: IAM's and KMS's actions, marker types
//!   ([`op`]) of one generic handler each; [`xml`], [`error`], [`server`]: answers, errors and the HTTPS server, with
//!   [`conn`] (connection limits and timeouts) and [`tls`] (its certificate, renewed and
//!   reloaded while it runs);
//! - [`s3`]: S3 on the same endpoint (the s3s crate's protocol over the deployment's
//!   buckets, vmie's identities and authorization).

pub mod action;
pub mod audit;
pub mod authz;
pub mod cloudtrail;
pub mod cloudtrail_trail;
pub mod conn;
pub mod console;
pub mod dispatch;
pub mod ec2;
pub mod error;
pub mod guard;
pub mod handler;
pub mod iam;
pub mod iam_api;
pub mod identity;
pub mod kms_api;
pub mod limiter;
pub mod mfa;
pub mod op;
pub mod password;
pub mod query;
pub mod s3;
pub mod server;
pub mod sigv4;
pub mod spec;
pub mod sts;
pub mod tls;
pub mod totp;
pub mod xml;
