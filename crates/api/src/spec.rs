//! What each action states about itself, once: its service, IAM action, how it is
//! authorized, the resource types it touches, whether tags enter the decision, and the
//! parameters it takes with the [`Kind`] of each (which decides how a value is recorded in
//! the activity log and whether the sensitive-data guard reads it). Pure data: the table in
//! [`crate::action`] lists one [`Spec`] per action.

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
    /// KMS (JSON 1.1, `X-Amz-Target: TrentService.…`).
    Kms,
    /// IAM (Query protocol, 2010-05-08).
    Iam,
    /// S3 (REST, through s3s; see [`crate::s3`]).
    S3,
}

impl Service {
    /// Whether it speaks JSON 1.1 (`X-Amz-Target`) rather than the Query protocol.
    #[must_use]
    pub fn is_json(self) -> bool {
        matches!(self, Service::CloudTrail | Service::Kms)
    }

    /// The name requests are signed for, and the IAM action prefix.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Service::Ec2 => "ec2",
            Service::Sts => "sts",
            Service::CloudTrail => "cloudtrail",
            Service::Kms => "kms",
            Service::Iam => "iam",
            Service::S3 => "s3",
        }
    }

    /// The activity log's `eventSource`.
    #[must_use]
    pub fn event_source(self) -> &'static str {
        match self {
            Service::Ec2 => "ec2.amazonaws.com",
            Service::Sts => "sts.amazonaws.com",
            Service::CloudTrail => "cloudtrail.amazonaws.com",
            Service::Kms => "kms.amazonaws.com",
            Service::Iam => "iam.amazonaws.com",
            Service::S3 => "s3.amazonaws.com",
        }
    }

    /// The error code a refused authorization answers with, as the service names it.
    #[must_use]
    pub fn denied_code(self) -> &'static str {
        match self {
            Service::Ec2 => "UnauthorizedOperation",
            Service::Sts => "AccessDenied",
            Service::CloudTrail | Service::Kms => "AccessDeniedException",
            Service::Iam => "AccessDenied",
            Service::S3 => "AccessDenied",
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
    /// A role's trust decides with the caller's policies, as AWS does within one account
    /// (`sts:AssumeRole`): an `Allow` of the caller's policies, or else the role's trust
    /// policy naming the caller itself (its ARN, not only its account); any `Deny` refuses.
    Trusted,
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

#[cfg(test)]
mod tests {
    use super::pattern_matches;

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
}
