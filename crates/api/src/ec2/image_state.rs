//! EnableImageDeprecation / DisableImageDeprecation (when an image is deprecated) and
//! DisableImage / EnableImage (a disabled image is hidden from DescribeImages unless asked
//! for, cannot be exported or copied, and is shared with no one).

use engine::ResourceKind;

use super::{arn, returns_true};
use crate::error::ApiError;
use crate::handler::{Cx, Env};
use crate::handler::{Declaration, Handler, Input};
use crate::identity::Principal;
use crate::spec::{Authz, Field, Service, Spec, Tags, plain};

const fn spec(name: &'static str, iam: &'static str, params: &'static [Field]) -> Spec {
    Spec {
        service: Service::Ec2,
        name,
        iam_action: iam,
        read_only: false,
        authz: Authz::Policy,
        resources: &["image"],
        tags: Tags::Resource,
        condition_keys: &["aws:ResourceTag/${TagKey}"],
        params,
    }
}

const IMAGE_ONLY: &[Field] = &[plain("ImageId"), plain("DryRun")];

fn image_id(input: Input<'_>) -> Result<String, ApiError> {
    let id = input.params()?.required("ImageId")?.to_string();
    engine::resources::check_id(ResourceKind::Image, &id)?;
    Ok(id)
}

/// Seconds since the epoch of an ISO 8601 time (`2027-01-01T00:00:00Z`, with or without
/// fractional seconds).
fn parse_time(s: &str) -> Option<i64> {
    let t = s.strip_suffix('Z')?;
    let t = t.split('.').next()?;
    let compact: String = t.chars().filter(|c| *c != '-' && *c != ':').collect();
    crate::sigv4::parse_amz_date(&format!("{compact}Z"))
}

/// A parsed EnableImageDeprecation.
#[derive(Debug)]
pub struct EnableImageDeprecation {
    id: String,
    at_ms: i64,
}

impl Handler for EnableImageDeprecation {
    const SPEC: Spec = spec(
        "EnableImageDeprecation",
        "ec2:EnableImageDeprecation",
        &[plain("ImageId"), plain("DeprecateAt"), plain("DryRun")],
    );

    fn parse(input: Input<'_>, _env: &Env, _who: &Principal) -> Result<Self, ApiError> {
        let at = input.params()?.required("DeprecateAt")?;
        let secs = parse_time(at).ok_or_else(|| {
            ApiError::client(
                "InvalidParameterValue",
                format!(
                    "DeprecateAt must be a UTC time such as 2027-01-01T00:00:00Z, not {}",
                    engine::request::shown(at)
                ),
            )
        })?;
        Ok(EnableImageDeprecation {
            id: image_id(input)?,
            // EC2 rounds up to the next minute.
            at_ms: secs
                .div_euclid(60)
                .saturating_add(i64::from(secs % 60 != 0))
                * 60_000,
        })
    }

    fn declare(&self, env: &Env, who: &Principal, d: &mut Declaration) {
        d.existing(arn(env, who, ResourceKind::Image, &self.id), &self.id);
    }

    async fn run(self, cx: &Cx<'_>) -> Result<String, ApiError> {
        cx.env
            .engine
            .set_deprecation(&cx.who.account, &self.id, Some(self.at_ms))
            .await?;
        Ok(returns_true(Self::SPEC.name, cx.request_id))
    }
}

macro_rules! image_switch {
    ($ty:ident, $name:literal, |$e:ident, $a:ident, $id:ident| $body:expr) => {
        #[doc = concat!("A parsed ", $name, ".")]
        #[derive(Debug)]
        pub struct $ty {
            id: String,
        }

        impl Handler for $ty {
            const SPEC: Spec = spec($name, concat!("ec2:", $name), IMAGE_ONLY);

            fn parse(input: Input<'_>, _env: &Env, _who: &Principal) -> Result<Self, ApiError> {
                Ok($ty {
                    id: image_id(input)?,
                })
            }

            fn declare(&self, env: &Env, who: &Principal, d: &mut Declaration) {
                d.existing(arn(env, who, ResourceKind::Image, &self.id), &self.id);
            }

            async fn run(self, cx: &Cx<'_>) -> Result<String, ApiError> {
                let ($e, $a, $id) = (&cx.env.engine, &cx.who.account, &self.id);
                $body.await?;
                Ok(returns_true(Self::SPEC.name, cx.request_id))
            }
        }
    };
}

image_switch!(
    DisableImageDeprecation,
    "DisableImageDeprecation",
    |e, a, id| e.set_deprecation(a, id, None)
);
image_switch!(DisableImage, "DisableImage", |e, a, id| e
    .set_image_enabled(a, id, false));
image_switch!(EnableImage, "EnableImage", |e, a, id| e
    .set_image_enabled(a, id, true));
