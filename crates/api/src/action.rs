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

use std::future::Future;

use catalog::Tag;

use crate::dispatch::{Cx, Env};
use crate::error::ApiError;
use crate::identity::Principal;
use crate::query::Params;

/// The services on the endpoint, told apart by the SigV4 scope's service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    /// EC2 (Query protocol, 2016-11-15).
    Ec2,
    /// STS (Query protocol, 2011-06-15).
    Sts,
    /// CloudTrail (JSON 1.1, `X-Amz-Target`).
    CloudTrail,
}

impl Service {
    /// The name requests are signed for, and the IAM action prefix.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Service::Ec2 => "ec2",
            Service::Sts => "sts",
            Service::CloudTrail => "cloudtrail",
        }
    }

    /// The activity log's `eventSource`.
    #[must_use]
    pub fn event_source(self) -> &'static str {
        match self {
            Service::Ec2 => "ec2.amazonaws.com",
            Service::Sts => "sts.amazonaws.com",
            Service::CloudTrail => "cloudtrail.amazonaws.com",
        }
    }

    /// The error code a refused authorization answers with, as the service names it.
    #[must_use]
    pub fn denied_code(self) -> &'static str {
        match self {
            Service::Ec2 => "UnauthorizedOperation",
            Service::Sts => "AccessDenied",
            Service::CloudTrail => "AccessDeniedException",
        }
    }
}

/// How an action is authorized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authz {
    /// Deny by default: an `Allow` of the IAM action must match every resource the request
    /// touches, and no `Deny` may.
    Policy,
    /// Allowed unless a `Deny` matches (as AWS treats `sts:GetSessionToken` and
    /// `sts:GetCallerIdentity`: a caller may always learn about its own credentials).
    UnlessDenied,
}

/// Whether a request's tags enter its authorization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tags {
    /// Neither: the action names no resource (lists, account settings, the caller itself).
    None,
    /// `aws:ResourceTag/*` of the existing resources it touches.
    Resource,
    /// `aws:RequestTag/*` and `aws:TagKeys` of the tags it creates.
    Request,
    /// Both (tagging an existing resource).
    Both,
}

/// What a parameter holds, which decides how its value is recorded and guarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An id, a name, a number, a choice: recorded as given (bounded; withheld if the
    /// sensitive-data guard finds something in it).
    Plain,
    /// Free text (a description, a tag value, a comment): fingerprinted, and read by the
    /// sensitive-data guard.
    Free,
    /// A tag key: recorded (it names a tag), read by the guard.
    TagKey,
    /// An idempotency token: fingerprinted.
    Token,
    /// A URL: recorded without user information, query string or fragment.
    Url,
    /// A secret (a one-time code, a password): recorded as present only.
    Secret,
    /// A filter's value: fingerprinted unless its filter names an id or a state (so that
    /// `description` and `tag:…` filters never reach the log in clear).
    FilterValue,
}

/// One parameter an action takes: its dotted name, `N` standing for a list index
/// (`DiskContainer.N.UserBucket.S3Key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// The name pattern.
    pub name: &'static str,
    /// What it holds.
    pub kind: Kind,
}

/// A parameter holding an id, a name, a number or a choice.
#[must_use]
pub const fn plain(name: &'static str) -> Field {
    Field {
        name,
        kind: Kind::Plain,
    }
}

/// A parameter of `kind`.
#[must_use]
pub const fn field(name: &'static str, kind: Kind) -> Field {
    Field { name, kind }
}

/// Filter names whose values are ids, states or other values that are not free text.
const PLAIN_FILTERS: &[&str] = &[
    "image-id",
    "snapshot-id",
    "state",
    "status",
    "task-state",
    "architecture",
    "platform",
    "encrypted",
    "owner-id",
    "is-public",
    "root-device-type",
    "virtualization-type",
    "volume-size",
    "kms-key-id",
    "tag-key",
];

/// What an action is, stated once.
#[derive(Debug)]
pub struct Spec {
    /// Its service.
    pub service: Service,
    /// Its name (`ImportImage`).
    pub name: &'static str,
    /// The IAM action a policy names (`ec2:ImportImage`).
    pub iam_action: &'static str,
    /// Reads only (the activity log's `readOnly`).
    pub read_only: bool,
    /// How it is authorized.
    pub authz: Authz,
    /// The resource types it touches, as IAM names them (`image`, `import-image-task`,
    /// `s3 object (service role)`); empty when it names none (`Resource: *`).
    pub resources: &'static [&'static str],
    /// Whether tags enter its authorization.
    pub tags: Tags,
    /// Condition keys it fills beyond the global ones (`aws:SourceIp`, `aws:username`, …).
    pub condition_keys: &'static [&'static str],
    /// The parameters it takes (Query protocol); others are refused.
    pub params: &'static [Field],
}

impl Spec {
    /// The field `name` matches, if any.
    #[must_use]
    pub fn field(&self, name: &str) -> Option<&'static Field> {
        self.params.iter().find(|f| pattern_matches(f.name, name))
    }

    /// Whether the action takes `DryRun`.
    #[must_use]
    pub fn has_dry_run(&self) -> bool {
        self.params.iter().any(|f| f.name == "DryRun")
    }

    /// The kind of the value of parameter `name` in `p`, resolving a filter value by its
    /// filter's name; `None` for a name the action does not take.
    #[must_use]
    pub fn kind_of(&self, p: &Params, name: &str) -> Option<Kind> {
        let f = self.field(name)?;
        if f.kind != Kind::FilterValue {
            return Some(f.kind);
        }
        // `Filter.3.Value.2` → the name is `Filter.3.Name`.
        let mut segs: Vec<&str> = name.split('.').collect();
        segs.truncate(2);
        let filter = p.get(&format!("{}.Name", segs.join(".")));
        Some(match filter {
            Some(n) if PLAIN_FILTERS.contains(&n) => Kind::Plain,
            _ => Kind::Free,
        })
    }
}

/// Whether `name` matches `pattern`, where `N` in the pattern stands for a list index.
fn pattern_matches(pattern: &str, name: &str) -> bool {
    let mut p = pattern.split('.');
    let mut n = name.split('.');
    loop {
        match (p.next(), n.next()) {
            (None, None) => return true,
            (Some("N"), Some(s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {}
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// One resource a request touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Its ARN (`…/*` for one the request creates).
    pub arn: String,
    /// The id of an existing resource, whose tags fill `aws:ResourceTag/*`.
    pub id: Option<String>,
    /// Those tags, once resolved.
    pub tags: Vec<Tag>,
}

/// What the service role must be allowed to do for a request (read the image it imports,
/// write the file it exports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleCheck {
    /// The role.
    pub role: String,
    /// `s3:GetObject`, `s3:PutObject`.
    pub action: &'static str,
    /// The object's ARN.
    pub arn: String,
}

/// What one request touches and the conditions it fills: what authorization decides on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Declaration {
    /// The resources (none: the action is authorized on `*`).
    pub resources: Vec<Target>,
    /// Request condition keys and their values (`ec2:Encrypted`, `aws:RequestTag/team`, …).
    pub conditions: Vec<(String, Vec<String>)>,
    /// What the service role must be allowed.
    pub role: Vec<RoleCheck>,
}

impl Declaration {
    /// Adds a resource the request creates or names without looking it up.
    pub fn touches(&mut self, arn: String) {
        self.resources.push(Target {
            arn,
            id: None,
            tags: Vec::new(),
        });
    }

    /// Adds an existing resource `id` (its tags are looked up before authorization).
    pub fn existing(&mut self, arn: String, id: &str) {
        self.resources.push(Target {
            arn,
            id: Some(id.to_string()),
            tags: Vec::new(),
        });
    }

    /// Sets a request condition key.
    pub fn condition(&mut self, key: &str, values: Vec<String>) {
        self.conditions.push((key.to_string(), values));
    }

    /// Sets `aws:RequestTag/K` for every tag, and `aws:TagKeys`.
    pub fn request_tags(&mut self, tags: &[Tag]) {
        for t in tags {
            self.condition(&format!("aws:RequestTag/{}", t.key), vec![t.value.clone()]);
        }
        if !tags.is_empty() {
            self.condition("aws:TagKeys", tags.iter().map(|t| t.key.clone()).collect());
        }
    }
}

/// What a request carries, as its protocol delivers it.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// Query protocol parameters (EC2, STS).
    Query(&'a Params),
    /// A JSON 1.1 body (CloudTrail).
    Json(&'a [u8]),
}

impl<'a> Input<'a> {
    /// The Query parameters; an error for a JSON request.
    pub fn params(&self) -> Result<&'a Params, ApiError> {
        match self {
            Input::Query(p) => Ok(p),
            Input::Json(_) => Err(ApiError::client(
                "InvalidAction",
                "this action takes Query parameters",
            )),
        }
    }

    /// The JSON body; an error for a Query request.
    pub fn json(&self) -> Result<&'a [u8], ApiError> {
        match self {
            Input::Json(b) => Ok(b),
            Input::Query(_) => Err(ApiError::client(
                "SerializationException",
                "this action takes a JSON body",
            )),
        }
    }
}

/// What the handler of one action does.
pub trait Handler: Sized + Send {
    /// The action's table entry.
    const SPEC: Spec;

    /// Reads the request into the action's typed form (nothing is looked up or changed).
    fn parse(input: Input<'_>, env: &Env, who: &Principal) -> Result<Self, ApiError>;

    /// States what the request touches and the conditions it fills.
    fn declare(&self, env: &Env, who: &Principal, d: &mut Declaration);

    /// Does it, once authorized; returns the answer's body.
    fn run(self, cx: &Cx<'_>) -> impl Future<Output = Result<String, ApiError>> + Send;
}

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
    GetSessionToken => crate::sts::GetSessionToken,
    LookupEvents => crate::cloudtrail::LookupEvents,
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
    fn patterns_match_numbered_members_only() {
        assert!(pattern_matches(
            "DiskContainer.N.UserBucket.S3Key",
            "DiskContainer.12.UserBucket.S3Key"
        ));
        assert!(!pattern_matches(
            "DiskContainer.N.UserBucket.S3Key",
            "DiskContainer.x.UserBucket.S3Key"
        ));
        assert!(!pattern_matches("DiskContainer.N.Url", "DiskContainer.1"));
        assert!(!pattern_matches("Description", "DescriptionX"));
        assert!(pattern_matches("ImageId", "ImageId"));
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
            // read what a describe shows (boot evidence), its name.
            assert!(
                s.iam_action == format!("{}:{}", s.service.name(), s.name)
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
