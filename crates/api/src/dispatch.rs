//! One authenticated request, from its parameters to its answer, in the same steps for every
//! action of the table: the parameters are checked against the action's [`Spec`], parsed into
//! the typed [`Action`], its [`Declaration`](crate::action::Declaration) made and the tags of
//! the resources it touches looked up, authorization decided ([`crate::authz`]), the
//! sensitive-data guard run over the fields the table marks as free text, `DryRun` answered,
//! and only then the handler run.

use crate::action::Action;
use crate::error::ApiError;
use crate::handler::Input;
pub use crate::handler::{Cx, Env, Origin};
use crate::identity::Principal;
use crate::query::Params;
use crate::spec::{Kind, Service, Spec};

/// The API version each Query service speaks.
fn version(service: Service) -> Option<&'static str> {
    match service {
        Service::Ec2 => Some("2016-11-15"),
        Service::Sts => Some("2011-06-15"),
        Service::CloudTrail | Service::Kms | Service::S3 => None,
        Service::Iam => Some("2010-05-08"),
    }
}

/// Refuses a Query request whose version is not ours or that names a parameter the action
/// does not take (as EC2 does: `UnknownParameter`), so nothing is silently ignored.
fn check_params(spec: &Spec, p: &Params) -> Result<(), ApiError> {
    if let (Some(v), Some(want)) = (p.get("Version"), version(spec.service))
        && v != want
    {
        return Err(ApiError::client(
            "InvalidParameterValue",
            format!(
                "API version {} is not supported; use {want}",
                engine::request::shown(v)
            ),
        ));
    }
    for name in p.names() {
        if matches!(name, "Action" | "Version") || spec.field(name).is_some() {
            continue;
        }
        return Err(ApiError::client(
            "UnknownParameter",
            format!(
                "The parameter {} is not recognized by {}",
                engine::request::shown(name),
                spec.name
            ),
        ));
    }
    Ok(())
}

/// The sensitive-data guard over the fields the table marks as free text or tag keys: in
/// reject mode the request is refused naming the field; in warn mode the service log names
/// the field (never the value).
fn guard(env: &Env, spec: &Spec, p: &Params, who: &Principal) -> Result<(), ApiError> {
    for name in p.names() {
        if !spec
            .field(name)
            .is_some_and(|f| matches!(f.kind, Kind::Free | Kind::TagKey))
        {
            continue;
        }
        let found = crate::guard::scan(p.get(name).unwrap_or_default());
        if let Some(f) = found.first() {
            if env.guard == crate::guard::Policy::Reject {
                return Err(ApiError::client(
                    "InvalidParameterValue",
                    format!(
                        "{name} appears to contain {}; this deployment refuses sensitive data in descriptions and tags",
                        f.describe()
                    ),
                ));
            }
            tracing::warn!(field = %name, found = ?found, user = %who.arn, "sensitive data in a free-form field");
        }
    }
    Ok(())
}

/// Runs one authenticated request for the action `spec`.
pub async fn dispatch(
    env: &Env,
    who: &Principal,
    origin: &Origin,
    spec: &'static Spec,
    input: Input<'_>,
    request_id: &str,
    now: i64,
) -> Result<String, ApiError> {
    if let Input::Query(p) = input {
        check_params(spec, p)?;
    }
    let mut action = Action::parse(spec, input, env, who)?;
    action.prepare(env, who).await?;
    let mut decl = action.declare(env, who);
    for t in &mut decl.resources {
        if let Some(id) = &t.id {
            t.tags = env
                .engine
                .tags_of(&who.account, id)
                .await?
                .unwrap_or_default();
        }
    }
    crate::authz::authorize(env, who, origin, spec, &decl).await?;
    if let Input::Query(p) = input {
        guard(env, spec, p, who)?;
        if spec.has_dry_run() && p.bool("DryRun")? == Some(true) {
            return Err(ApiError {
                status: 412,
                code: "DryRunOperation".into(),
                message: "Request would have succeeded, but DryRun flag is set.".into(),
            });
        }
    }
    let cx = Cx {
        env,
        who,
        origin,
        request_id,
        now,
    };
    action.run(&cx).await
}
