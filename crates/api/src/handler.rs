//! What a handler of one action is given and does: its typed request declares what it
//! touches ([`Declaration`]) and runs with an authorized context ([`Cx`]). Every action file
//! (`crate::ec2::*`, `crate::sts`, `crate::cloudtrail`) implements [`Handler`].

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;

use catalog::Tag;
use engine::Engine;

use crate::error::ApiError;
use crate::identity::{Identity, Principal};
use crate::query::Params;
use crate::spec::Spec;

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
    /// What an S3 request names (its bucket, key, …), as the S3 protocol layer read it.
    S3(&'a S3Target),
}

/// What an S3 request names, as authorization sees it (the S3 endpoint, `crate::s3`,
/// fills it from the request s3s parsed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Target {
    /// The bucket (empty for ListBuckets).
    pub bucket: String,
    /// The object's key (empty for bucket operations).
    pub key: String,
    /// `prefix` of a listing.
    pub prefix: Option<String>,
    /// `delimiter` of a listing.
    pub delimiter: Option<String>,
    /// The keys a DeleteObjects body names.
    pub keys: Vec<String>,
}

impl<'a> Input<'a> {
    /// The Query parameters; an error for a JSON request.
    pub fn params(&self) -> Result<&'a Params, ApiError> {
        match self {
            Input::Query(p) => Ok(p),
            Input::Json(_) | Input::S3(_) => Err(ApiError::client(
                "InvalidAction",
                "this action takes Query parameters",
            )),
        }
    }

    /// The JSON body; an error for a Query request.
    pub fn json(&self) -> Result<&'a [u8], ApiError> {
        match self {
            Input::Json(b) => Ok(b),
            Input::Query(_) | Input::S3(_) => Err(ApiError::client(
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

    /// Looks up, before the declaration, what it needs and the request alone does not say
    /// (the key an alias names, a key's tags); nothing is changed. Most actions need nothing.
    fn prepare(
        &mut self,
        _env: &Env,
        _who: &Principal,
    ) -> impl Future<Output = Result<(), ApiError>> + Send {
        async { Ok(()) }
    }

    /// States what the request touches and the conditions it fills.
    fn declare(&self, env: &Env, who: &Principal, d: &mut Declaration);

    /// Does it, once authorized; returns the answer's body.
    fn run(self, cx: &Cx<'_>) -> impl Future<Output = Result<String, ApiError>> + Send;
}

/// What every handler may use.
#[derive(Debug, Clone)]
pub struct Env {
    /// The task engine (and through it the catalog, store and sources).
    pub engine: Engine,
    /// Identities.
    pub identity: Identity,
    /// Our region.
    pub region: String,
    /// What to do with sensitive data in free-form fields.
    pub guard: crate::guard::Policy,
    /// The activity log (`None`: not kept, which `vmie compliance` reports).
    pub audit: Option<Arc<crate::audit::Audit>>,
    /// What runs the deployment's compliance controls (`None`: not available).
    pub compliance: Option<Arc<dyn ComplianceSource>>,
}

/// What runs a deployment's compliance controls (what `vmie compliance` checks): the
/// program that assembled the deployment gives one to [`Env`].
pub trait ComplianceSource: Send + Sync + std::fmt::Debug {
    /// The controls, as JSON (a list of `{control, pass, detail, remedy}`).
    fn report(
        &self,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<serde_json::Value, String>> + Send + '_>>;
}

/// Where a request came from, for policy conditions.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The client's address.
    pub source_ip: IpAddr,
    /// Whether it arrived over TLS.
    pub secure: bool,
    /// Whether the credentials were issued after multi-factor authentication.
    pub mfa: bool,
}

/// One authorized request, as its handler sees it.
#[derive(Debug, Clone, Copy)]
pub struct Cx<'a> {
    /// The environment.
    pub env: &'a Env,
    /// The caller.
    pub who: &'a Principal,
    /// Where the request came from.
    pub origin: &'a Origin,
    /// Its request id.
    pub request_id: &'a str,
    /// Now, in seconds since the Unix epoch.
    pub now: i64,
}
