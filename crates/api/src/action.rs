//! The action table: every action the endpoint serves, in one list ([`TABLE`]), each a type
//! that declares what it is before anything runs.
//!
//! A request becomes one typed [`Action`] (parsed once, from the service's protocol). Its
//! [`Spec`] states the IAM action, how it is authorized, the resource types it touches, the
//! condition keys it fills and the parameters it takes, each with a [`Kind`] that decides how
//! the value is recorded in the activity log and whether the sensitive-data guard reads it.
//! Its [`Declaration`] (made per request, from the parsed values) lists the ARNs of every
//! resource it touches, the request's condition values, and what the service role must be
//! allowed on the buckets it reads or writes. [`crate::authz`] decides on that declaration,
//! in one place, before the handler runs; the handler then calls the engine with the same
//! parsed values that were authorized.
//!
//! Adding an action: a file with its type implementing [`Handler`], and one line in the
//! `actions!` list at the bottom of this file. The deny test (`tests/deny.rs`) walks
//! [`TABLE`] and fails for an action it has no sample request for.

pub use crate::handler::{Declaration, Handler, Input, RoleCheck, Target};
pub use crate::spec::{Authz, Field, Kind, Service, Spec, Tags, field, plain};

use crate::error::ApiError;
use crate::handler::{Cx, Env};
use crate::identity::Principal;

macro_rules! actions {
    ($($variant:ident => $ty:path,)*) => {
        /// One parsed request of any action the endpoint serves.
        #[derive(Debug)]
        pub enum Action {
            $(
                #[doc = concat!("`", stringify!($variant), "`.")]
                $variant($ty),
            )*
        }

        /// Every action the endpoint serves.
        pub static TABLE: &[&Spec] = &[$(&<$ty as Handler>::SPEC,)*];

        impl Action {
            /// The table entry of `service`'s action `name`.
            #[must_use]
            pub fn spec_of(service: Service, name: &str) -> Option<&'static Spec> {
                TABLE.iter().copied().find(|s| s.service == service && s.name == name)
            }

            /// Parses a request for the action `spec`.
            pub fn parse(
                spec: &Spec,
                input: Input<'_>,
                env: &Env,
                who: &Principal,
            ) -> Result<Action, ApiError> {
                $(
                    if spec.service == <$ty as Handler>::SPEC.service
                        && spec.name == <$ty as Handler>::SPEC.name
                    {
                        return <$ty as Handler>::parse(input, env, who).map(Action::$variant);
                    }
                )*
                Err(ApiError::client("InvalidAction", "unknown action"))
            }

            /// The action's table entry.
            #[must_use]
            pub fn spec(&self) -> &'static Spec {
                match self {
                    $(Action::$variant(_) => &<$ty as Handler>::SPEC,)*
                }
            }

            /// Looks up what the declaration needs (see [`Handler::prepare`]).
            pub async fn prepare(&mut self, env: &Env, who: &Principal) -> Result<(), ApiError> {
                match self {
                    $(Action::$variant(a) => a.prepare(env, who).await,)*
                }
            }

            /// What the request touches (see [`Handler::declare`]).
            #[must_use]
            pub fn declare(&self, env: &Env, who: &Principal) -> Declaration {
                let mut d = Declaration::default();
                match self {
                    $(Action::$variant(a) => a.declare(env, who, &mut d),)*
                }
                d
            }

            /// Runs the action (see [`Handler::run`]).
            pub async fn run(self, cx: &Cx<'_>) -> Result<String, ApiError> {
                match self {
                    $(Action::$variant(a) => a.run(cx).await,)*
                }
            }
        }
    };
}

actions! {
    ImportImage => crate::ec2::import_image::ImportImage,
    ImportSnapshot => crate::ec2::import_snapshot::ImportSnapshot,
    ExportImage => crate::ec2::export_image::ExportImage,
    DescribeImportImageTasks => crate::ec2::describe_tasks::DescribeImportImageTasks,
    DescribeImportSnapshotTasks => crate::ec2::describe_tasks::DescribeImportSnapshotTasks,
    DescribeExportImageTasks => crate::ec2::describe_tasks::DescribeExportImageTasks,
    CancelImportTask => crate::ec2::cancel_import_task::CancelImportTask,
    DescribeImages => crate::ec2::describe_images::DescribeImages,
    DescribeSnapshots => crate::ec2::describe_snapshots::DescribeSnapshots,
    DeregisterImage => crate::ec2::deregister_image::DeregisterImage,
    DeleteSnapshot => crate::ec2::delete_snapshot::DeleteSnapshot,
    CreateTags => crate::ec2::tags::CreateTags,
    DeleteTags => crate::ec2::tags::DeleteTags,
    GetEbsEncryptionByDefault => crate::ec2::ebs_defaults::GetEbsEncryptionByDefault,
    EnableEbsEncryptionByDefault => crate::ec2::ebs_defaults::EnableEbsEncryptionByDefault,
    DisableEbsEncryptionByDefault => crate::ec2::ebs_defaults::DisableEbsEncryptionByDefault,
    GetEbsDefaultKmsKeyId => crate::ec2::ebs_defaults::GetEbsDefaultKmsKeyId,
    ModifyEbsDefaultKmsKeyId => crate::ec2::ebs_defaults::ModifyEbsDefaultKmsKeyId,
    ResetEbsDefaultKmsKeyId => crate::ec2::ebs_defaults::ResetEbsDefaultKmsKeyId,
    CopyImage => crate::ec2::copy::CopyImage,
    CopySnapshot => crate::ec2::copy::CopySnapshot,
    DescribeImageAttribute => crate::ec2::attributes::DescribeImageAttribute,
    ModifyImageAttribute => crate::ec2::attributes::ModifyImageAttribute,
    ResetImageAttribute => crate::ec2::attributes::ResetImageAttribute,
    DescribeSnapshotAttribute => crate::ec2::attributes::DescribeSnapshotAttribute,
    ModifySnapshotAttribute => crate::ec2::attributes::ModifySnapshotAttribute,
    ResetSnapshotAttribute => crate::ec2::attributes::ResetSnapshotAttribute,
    DescribeTags => crate::ec2::describe_tags::DescribeTags,
    DescribeRegions => crate::ec2::regions::DescribeRegions,
    DescribeAvailabilityZones => crate::ec2::regions::DescribeAvailabilityZones,
    EnableImageDeprecation => crate::ec2::image_state::EnableImageDeprecation,
    DisableImageDeprecation => crate::ec2::image_state::DisableImageDeprecation,
    DisableImage => crate::ec2::image_state::DisableImage,
    EnableImage => crate::ec2::image_state::EnableImage,
    DescribeConversionTasks => crate::ec2::unsupported::DescribeConversionTasks,
    DescribeExportTasks => crate::ec2::unsupported::DescribeExportTasks,
    CancelExportTask => crate::ec2::unsupported::CancelExportTask,
    CreateInstanceExportTask => crate::ec2::unsupported::CreateInstanceExportTask,
    GetImageBootEvidence => crate::ec2::boot_evidence::GetImageBootEvidence,
    GetImportTaskBootEvidence => crate::ec2::boot_evidence::GetImportTaskBootEvidence,
    GetComplianceReport => crate::ec2::compliance::GetComplianceReport,
    GetSessionToken => crate::sts::GetSessionToken,
    LookupEvents => crate::cloudtrail::LookupEvents,
    DescribeTrails => crate::cloudtrail_trail::DescribeTrails,
    GetTrail => crate::cloudtrail_trail::GetTrail,
    GetTrailStatus => crate::cloudtrail_trail::GetTrailStatus,
    ListPublicKeys => crate::cloudtrail_trail::ListPublicKeys,
    StartLogging => crate::cloudtrail_trail::StartLogging,
    StopLogging => crate::cloudtrail_trail::StopLogging,
    StsGetCallerIdentity => crate::sts::GetCallerIdentity,
    StsAssumeRole => crate::sts::AssumeRole,
    KmsCreateKey => crate::kms_api::KCall<crate::kms_api::CreateKey>,
    KmsDescribeKey => crate::kms_api::KCall<crate::kms_api::DescribeKey>,
    KmsListKeys => crate::kms_api::KCall<crate::kms_api::ListKeys>,
    KmsCreateAlias => crate::kms_api::KCall<crate::kms_api::CreateAlias>,
    KmsListAliases => crate::kms_api::KCall<crate::kms_api::ListAliases>,
    KmsDeleteAlias => crate::kms_api::KCall<crate::kms_api::DeleteAlias>,
    KmsUpdateAlias => crate::kms_api::KCall<crate::kms_api::UpdateAlias>,
    KmsEnableKey => crate::kms_api::KCall<crate::kms_api::EnableKey>,
    KmsDisableKey => crate::kms_api::KCall<crate::kms_api::DisableKey>,
    KmsEnableKeyRotation => crate::kms_api::KCall<crate::kms_api::EnableKeyRotation>,
    KmsDisableKeyRotation => crate::kms_api::KCall<crate::kms_api::DisableKeyRotation>,
    KmsGetKeyRotationStatus => crate::kms_api::KCall<crate::kms_api::GetKeyRotationStatus>,
    KmsRotateKeyOnDemand => crate::kms_api::KCall<crate::kms_api::RotateKeyOnDemand>,
    KmsScheduleKeyDeletion => crate::kms_api::KCall<crate::kms_api::ScheduleKeyDeletion>,
    KmsCancelKeyDeletion => crate::kms_api::KCall<crate::kms_api::CancelKeyDeletion>,
    KmsGetKeyPolicy => crate::kms_api::KCall<crate::kms_api::GetKeyPolicy>,
    KmsPutKeyPolicy => crate::kms_api::KCall<crate::kms_api::PutKeyPolicy>,
    KmsTagResource => crate::kms_api::KCall<crate::kms_api::TagResource>,
    KmsUntagResource => crate::kms_api::KCall<crate::kms_api::UntagResource>,
    KmsListResourceTags => crate::kms_api::KCall<crate::kms_api::ListResourceTags>,
    KmsEncrypt => crate::kms_api::KCall<crate::kms_api::Encrypt>,
    KmsDecrypt => crate::kms_api::KCall<crate::kms_api::Decrypt>,
    KmsGenerateDataKey => crate::kms_api::KCall<crate::kms_api::GenerateDataKey>,
    IamCreateUser => crate::iam_api::Call<crate::iam_api::CreateUser>,
    IamGetUser => crate::iam_api::Call<crate::iam_api::GetUser>,
    IamListUsers => crate::iam_api::Call<crate::iam_api::ListUsers>,
    IamDeleteUser => crate::iam_api::Call<crate::iam_api::DeleteUser>,
    IamCreateAccessKey => crate::iam_api::Call<crate::iam_api::CreateAccessKey>,
    IamListAccessKeys => crate::iam_api::Call<crate::iam_api::ListAccessKeys>,
    IamUpdateAccessKey => crate::iam_api::Call<crate::iam_api::UpdateAccessKey>,
    IamDeleteAccessKey => crate::iam_api::Call<crate::iam_api::DeleteAccessKey>,
    IamGetAccessKeyLastUsed => crate::iam_api::Call<crate::iam_api::GetAccessKeyLastUsed>,
    IamCreateRole => crate::iam_api::Call<crate::iam_api::CreateRole>,
    IamGetRole => crate::iam_api::Call<crate::iam_api::GetRole>,
    IamListRoles => crate::iam_api::Call<crate::iam_api::ListRoles>,
    IamDeleteRole => crate::iam_api::Call<crate::iam_api::DeleteRole>,
    IamUpdateAssumeRolePolicy => crate::iam_api::Call<crate::iam_api::UpdateAssumeRolePolicy>,
    IamPutUserPolicy => crate::iam_api::Call<crate::iam_api::PutUserPolicy>,
    IamGetUserPolicy => crate::iam_api::Call<crate::iam_api::GetUserPolicy>,
    IamListUserPolicies => crate::iam_api::Call<crate::iam_api::ListUserPolicies>,
    IamDeleteUserPolicy => crate::iam_api::Call<crate::iam_api::DeleteUserPolicy>,
    IamPutRolePolicy => crate::iam_api::Call<crate::iam_api::PutRolePolicy>,
    IamGetRolePolicy => crate::iam_api::Call<crate::iam_api::GetRolePolicy>,
    IamListRolePolicies => crate::iam_api::Call<crate::iam_api::ListRolePolicies>,
    IamDeleteRolePolicy => crate::iam_api::Call<crate::iam_api::DeleteRolePolicy>,
    IamCreatePolicy => crate::iam_api::Call<crate::iam_api::CreatePolicy>,
    IamGetPolicy => crate::iam_api::Call<crate::iam_api::GetPolicy>,
    IamGetPolicyVersion => crate::iam_api::Call<crate::iam_api::GetPolicyVersion>,
    IamListPolicies => crate::iam_api::Call<crate::iam_api::ListPolicies>,
    IamDeletePolicy => crate::iam_api::Call<crate::iam_api::DeletePolicy>,
    IamAttachUserPolicy => crate::iam_api::Call<crate::iam_api::AttachUserPolicy>,
    IamDetachUserPolicy => crate::iam_api::Call<crate::iam_api::DetachUserPolicy>,
    IamListAttachedUserPolicies => crate::iam_api::Call<crate::iam_api::ListAttachedUserPolicies>,
    IamAttachRolePolicy => crate::iam_api::Call<crate::iam_api::AttachRolePolicy>,
    IamDetachRolePolicy => crate::iam_api::Call<crate::iam_api::DetachRolePolicy>,
    IamListAttachedRolePolicies => crate::iam_api::Call<crate::iam_api::ListAttachedRolePolicies>,
    IamCreateVirtualMFADevice => crate::iam_api::Call<crate::iam_api::CreateVirtualMFADevice>,
    IamEnableMFADevice => crate::iam_api::Call<crate::iam_api::EnableMFADevice>,
    IamDeactivateMFADevice => crate::iam_api::Call<crate::iam_api::DeactivateMFADevice>,
    IamListMFADevices => crate::iam_api::Call<crate::iam_api::ListMFADevices>,
    IamListVirtualMFADevices => crate::iam_api::Call<crate::iam_api::ListVirtualMFADevices>,
    IamDeleteVirtualMFADevice => crate::iam_api::Call<crate::iam_api::DeleteVirtualMFADevice>,
    IamCreateLoginProfile => crate::iam_api::Call<crate::iam_api::CreateLoginProfile>,
    IamGetLoginProfile => crate::iam_api::Call<crate::iam_api::GetLoginProfile>,
    IamUpdateLoginProfile => crate::iam_api::Call<crate::iam_api::UpdateLoginProfile>,
    IamDeleteLoginProfile => crate::iam_api::Call<crate::iam_api::DeleteLoginProfile>,
    IamSimulatePrincipalPolicy => crate::iam_api::Call<crate::iam_api::SimulatePrincipalPolicy>,
    S3ListBuckets => crate::s3::actions::ListBuckets,
    S3CreateBucket => crate::s3::actions::CreateBucket,
    S3DeleteBucket => crate::s3::actions::DeleteBucket,
    S3HeadBucket => crate::s3::actions::HeadBucket,
    S3GetBucketLocation => crate::s3::actions::GetBucketLocation,
    S3ListObjects => crate::s3::actions::ListObjects,
    S3ListObjectsV2 => crate::s3::actions::ListObjectsV2,
    S3PutObject => crate::s3::actions::PutObject,
    S3GetObject => crate::s3::actions::GetObject,
    S3HeadObject => crate::s3::actions::HeadObject,
    S3DeleteObject => crate::s3::actions::DeleteObject,
    S3DeleteObjects => crate::s3::actions::DeleteObjects,
    S3CopyObject => crate::s3::actions::CopyObject,
    S3CreateMultipartUpload => crate::s3::actions::CreateMultipartUpload,
    S3UploadPart => crate::s3::actions::UploadPart,
    S3CompleteMultipartUpload => crate::s3::actions::CompleteMultipartUpload,
    S3AbortMultipartUpload => crate::s3::actions::AbortMultipartUpload,
    S3ListParts => crate::s3::actions::ListParts,
    S3ListMultipartUploads => crate::s3::actions::ListMultipartUploads,
}

/// The table as Markdown rows (docs/api.md carries it between `<!-- action-table -->` marks,
/// and a test keeps the two the same).
#[must_use]
pub fn markdown() -> String {
    let mut out = String::from(
        "| service | action | IAM action | authorized | resources (ARN types) | tags in the decision | condition keys |\n|---|---|---|---|---|---|---|\n",
    );
    for s in TABLE {
        let list = |v: &[&str]| {
            if v.is_empty() {
                "—".to_string()
            } else {
                v.iter()
                    .map(|x| format!("`{x}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        out.push_str(&format!(
            "| {} | {}{} | `{}` | {} | {} | {} | {} |\n",
            s.service.name(),
            s.name,
            if s.read_only { " (read)" } else { "" },
            s.iam_action,
            match s.authz {
                Authz::Policy => "an Allow, no Deny",
                Authz::UnlessDenied => "unless denied",
                Authz::Trusted => "an Allow, or the role's trust policy naming the caller; no Deny",
            },
            if s.resources.is_empty() {
                "`*`".to_string()
            } else {
                list(s.resources)
            },
            match s.tags {
                Tags::None => "—",
                Tags::Resource => "resource",
                Tags::Request => "request",
                Tags::Both => "resource, request",
            },
            list(s.condition_keys),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::Params;

    #[test]
    fn docs_carry_the_table() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api.md");
        let doc = std::fs::read_to_string(path).unwrap_or_default();
        let start = doc.find("<!-- action-table -->\n").map(|i| i + 22);
        let end = doc.find("<!-- /action-table -->");
        let (a, b) = match (start, end) {
            (Some(a), Some(b)) if a <= b => (a, b),
            _ => panic!("docs/api.md has no <!-- action-table --> marks"),
        };
        let shown = &doc[a..b];
        if shown != markdown() && std::env::var_os("VMIE_BLESS").is_some() {
            let blessed = format!("{}{}{}", &doc[..a], markdown(), &doc[b..]);
            std::fs::write(path, blessed).unwrap_or_default();
            return;
        }
        assert_eq!(
            shown,
            markdown(),
            "docs/api.md's action table is out of date: rerun this test with VMIE_BLESS=1"
        );
    }

    #[test]
    fn the_table_is_consistent() {
        let mut seen = std::collections::HashSet::new();
        for s in TABLE {
            assert!(
                seen.insert((s.service, s.name)),
                "{} is in the table twice",
                s.name
            );
            // An action's IAM action is its service's and, but for vmie's own actions that
            // read what a describe shows (boot evidence) and S3's (whose IAM actions are
            // named apart from its operations: `s3:ListBucket` for ListObjectsV2), its name.
            // vmie's own actions that read nothing of a service (the compliance report) are
            // in the `vmie:` namespace, so that no `ec2:Get*` grants them.
            assert!(
                s.iam_action == format!("{}:{}", s.service.name(), s.name)
                    || s.iam_action == format!("vmie:{}", s.name)
                    || (s.service == Service::S3 && s.iam_action.starts_with("s3:"))
                    || (s.name.ends_with("BootEvidence")
                        && s.iam_action
                            .starts_with(&format!("{}:Describe", s.service.name()))),
                "the IAM action of {} is {}",
                s.name,
                s.iam_action
            );
            // A tag condition on an action that names no resource could never match.
            if s.resources.is_empty() {
                assert!(
                    matches!(s.tags, Tags::None | Tags::Request),
                    "{} names no resource but claims resource tags",
                    s.name
                );
            }
            for f in s.params {
                assert!(!f.name.is_empty(), "{}: an empty parameter name", s.name);
            }
        }
    }

    #[test]
    fn filter_values_are_plain_only_for_id_and_state_filters() {
        let spec = Action::spec_of(Service::Ec2, "DescribeImages").unwrap_or_else(|| {
            panic!("DescribeImages is in the table");
        });
        let p = Params::parse(
            b"Filter.1.Name=description&Filter.1.Value.1=secret+project&Filter.2.Name=state&Filter.2.Value.1=available&Filter.3.Name=tag%3Aowner&Filter.3.Value.1=alice",
        )
        .unwrap_or_default();
        assert_eq!(spec.kind_of(&p, "Filter.1.Value.1"), Some(Kind::Free));
        assert_eq!(spec.kind_of(&p, "Filter.2.Value.1"), Some(Kind::Plain));
        assert_eq!(spec.kind_of(&p, "Filter.3.Value.1"), Some(Kind::Free));
        assert_eq!(spec.kind_of(&p, "Filter.1.Name"), Some(Kind::Plain));
        assert_eq!(spec.kind_of(&p, "Nope"), None);
    }
}
