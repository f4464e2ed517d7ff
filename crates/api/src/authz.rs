//! Authorization, in one place, on an action's [`Declaration`]: the caller's policies are
//! evaluated for the action's IAM action on every resource the request touches (each with
//! its own `aws:ResourceTag/*`), with the request's condition keys and the global ones; every
//! resource must be allowed and none denied. Then the service role's policies are evaluated
//! for each bucket object the task will read or write. Nothing is authorized anywhere else.

use catalog::iam::PrincipalKind;

use crate::error::ApiError;
use crate::handler::{Declaration, RoleCheck};
use crate::handler::{Env, Origin};
use crate::iam::{Context, Decision, evaluate};
use crate::identity::Principal;
use crate::spec::{Authz, Spec};

/// The condition keys every request fills.
#[must_use]
pub fn global_context(env: &Env, who: &Principal, origin: &Origin, action: &str) -> Context {
    let now = catalog::now_ms();
    let mut c = Context::new(action, "*")
        .with("aws:SourceIp", &[&origin.source_ip.to_string()])
        .with(
            "aws:SecureTransport",
            &[if origin.secure { "true" } else { "false" }],
        )
        .with("aws:CurrentTime", &[&crate::sigv4::format_iso8601(now)])
        .with("aws:EpochTime", &[&(now / 1000).to_string()])
        .with("aws:PrincipalArn", &[&who.principal_arn()])
        .with("aws:PrincipalAccount", &[&who.account])
        .with("aws:RequestedRegion", &[&env.region]);
    if origin.mfa {
        c = c.with("aws:MultiFactorAuthPresent", &["true"]);
    }
    // A role's session has no user name.
    if who.role.is_none() {
        c = c.with("aws:username", &[&who.user]);
    }
    c
}

fn set(c: &mut Context, key: &str, values: &[String]) {
    c.keys.insert(key.to_ascii_lowercase(), values.to_vec());
}

/// Decides `decl` for `who`; the error is the service's refusal, naming the resource.
pub async fn authorize(
    env: &Env,
    who: &Principal,
    origin: &Origin,
    spec: &Spec,
    decl: &Declaration,
) -> Result<(), ApiError> {
    let mut base = global_context(env, who, origin, spec.iam_action);
    for (k, v) in &decl.conditions {
        set(&mut base, k, v);
    }
    let star = [crate::handler::Target {
        arn: "*".into(),
        id: None,
        tags: Vec::new(),
    }];
    let targets = if decl.resources.is_empty() {
        &star[..]
    } else {
        &decl.resources[..]
    };
    for t in targets {
        let mut ctx = base.clone();
        ctx.resource.clone_from(&t.arn);
        for tag in &t.tags {
            let v = [tag.value.clone()];
            set(&mut ctx, &format!("aws:ResourceTag/{}", tag.key), &v);
            set(&mut ctx, &format!("ec2:ResourceTag/{}", tag.key), &v);
        }
        let d = decide(who, &ctx);
        let allowed = d == Decision::Allow
            || (spec.authz == Authz::UnlessDenied && d == Decision::ImplicitDeny)
            || (spec.authz == Authz::Trusted
                && d == Decision::ImplicitDeny
                && env.identity.trusts_by_name(who, &t.arn, &ctx).await);
        if !allowed {
            return Err(denied(spec, who, &t.arn, d));
        }
    }
    for r in &decl.role {
        role_may(env, &who.account, r).await?;
    }
    Ok(())
}

/// The caller's policies decide, narrowed by a session policy when its session has one: an
/// explicit `Deny` in either refuses; an `Allow` needs both.
#[must_use]
pub fn decide(who: &Principal, ctx: &Context) -> Decision {
    let d = evaluate(&who.policies, ctx);
    match (&who.session_policy, d) {
        (Some(sp), Decision::Allow | Decision::ImplicitDeny) => match evaluate([sp], ctx) {
            Decision::ExplicitDeny => Decision::ExplicitDeny,
            Decision::Allow => d,
            Decision::ImplicitDeny => Decision::ImplicitDeny,
        },
        _ => d,
    }
}

fn denied(spec: &Spec, who: &Principal, resource: &str, d: Decision) -> ApiError {
    ApiError {
        status: if spec.service.is_json() { 400 } else { 403 },
        code: spec.service.denied_code().into(),
        message: format!(
            "You are not authorized to perform this operation. User: {} is not authorized to perform: {} on resource: {} {}",
            who.arn,
            spec.iam_action,
            resource,
            if d == Decision::ExplicitDeny {
                "with an explicit deny in an identity-based policy"
            } else {
                "because no identity-based policy allows the action"
            }
        ),
    }
}

/// Checks that the service role may do what `r` says.
async fn role_may(env: &Env, account: &str, r: &RoleCheck) -> Result<(), ApiError> {
    let (role, action, arn) = (&r.role, r.action, &r.arn);
    let cat = env.identity.catalog();
    if !cat
        .principal_exists(account, PrincipalKind::Role, role)
        .await?
    {
        return Err(ApiError::client(
            "InvalidParameter",
            format!(
                "the service role {role} does not exist; create it (vmie admin role create {role}) and attach a policy that allows {action}"
            ),
        ));
    }
    let policies = env
        .identity
        .policies(account, PrincipalKind::Role, role)
        .await
        .map_err(|e| ApiError::client("InvalidParameter", e.to_string()))?;
    if evaluate(&policies, &Context::new(action, arn)) == Decision::Allow {
        Ok(())
    } else {
        Err(ApiError::client(
            "InvalidParameter",
            format!(
                "the service role {role} does not have permission to {action} on {arn}; attach a policy to the role that allows it"
            ),
        ))
    }
}
