//! The account's encryption defaults for new snapshots: encryption by default
//! (Get/Enable/DisableEbsEncryptionByDefault) and the default KMS key
//! (Get/Modify/ResetEbsDefaultKmsKeyId). Account settings: no resource ARN.

use crate::error::ApiError;
use crate::handler::{Cx, Env};
use crate::handler::{Declaration, Handler, Input};
use crate::identity::Principal;
use crate::spec::{Authz, Field, Service, Spec, Tags, plain};
use crate::xml::Xml;

const fn setting(
    name: &'static str,
    iam: &'static str,
    read_only: bool,
    params: &'static [Field],
) -> Spec {
    Spec {
        service: Service::Ec2,
        name,
        iam_action: iam,
        read_only,
        authz: Authz::Policy,
        resources: &[],
        tags: Tags::None,
        condition_keys: &[],
        params,
    }
}

const DRY_RUN: &[Field] = &[plain("DryRun")];

/// What a setting action does to the account's setting.
#[derive(Debug)]
enum Change<T> {
    Read,
    Set(T),
}

async fn encryption(cx: &Cx<'_>, name: &str, change: Change<bool>) -> Result<String, ApiError> {
    let (e, a) = (&cx.env.engine, &cx.who.account);
    if let Change::Set(on) = change {
        e.set_encryption_by_default(a, on).await?;
    }
    let on = e.encryption_by_default(a).await?;
    let mut x = Xml::response(name, cx.request_id);
    x.leaf("ebsEncryptionByDefault", &on.to_string());
    Ok(x.finish(name))
}

async fn kms_key(
    cx: &Cx<'_>,
    name: &str,
    change: Change<Option<String>>,
) -> Result<String, ApiError> {
    let (e, a) = (&cx.env.engine, &cx.who.account);
    let key = match change {
        Change::Set(k) => e.set_default_kms_key(a, k.as_deref()).await?,
        Change::Read => e.default_kms_key(a).await?,
    };
    let mut x = Xml::response(name, cx.request_id);
    x.leaf("kmsKeyId", &key);
    Ok(x.finish(name))
}

macro_rules! setting_action {
    ($ty:ident, $name:literal, $read_only:expr, $params:expr, |$p:ident| $change:expr, $run:ident) => {
        #[doc = concat!("A parsed ", $name, ".")]
        #[derive(Debug)]
        pub struct $ty(Change<setting_action!(@t $run)>);

        impl Handler for $ty {
            const SPEC: Spec = setting($name, concat!("ec2:", $name), $read_only, $params);

            fn parse(input: Input<'_>, _env: &Env, _who: &Principal) -> Result<Self, ApiError> {
                let $p = input.params()?;
                Ok($ty($change))
            }

            fn declare(&self, _env: &Env, _who: &Principal, _d: &mut Declaration) {}

            async fn run(self, cx: &Cx<'_>) -> Result<String, ApiError> {
                $run(cx, $name, self.0).await
            }
        }
    };
    (@t encryption) => { bool };
    (@t kms_key) => { Option<String> };
}

setting_action!(
    GetEbsEncryptionByDefault,
    "GetEbsEncryptionByDefault",
    true,
    DRY_RUN,
    |_p| Change::Read,
    encryption
);
setting_action!(
    EnableEbsEncryptionByDefault,
    "EnableEbsEncryptionByDefault",
    false,
    DRY_RUN,
    |_p| Change::Set(true),
    encryption
);
setting_action!(
    DisableEbsEncryptionByDefault,
    "DisableEbsEncryptionByDefault",
    false,
    DRY_RUN,
    |_p| Change::Set(false),
    encryption
);
setting_action!(
    GetEbsDefaultKmsKeyId,
    "GetEbsDefaultKmsKeyId",
    true,
    DRY_RUN,
    |_p| Change::Read,
    kms_key
);
setting_action!(
    ModifyEbsDefaultKmsKeyId,
    "ModifyEbsDefaultKmsKeyId",
    false,
    &[plain("KmsKeyId"), plain("DryRun")],
    |p| Change::Set(Some(p.required("KmsKeyId")?.to_string())),
    kms_key
);
setting_action!(
    ResetEbsDefaultKmsKeyId,
    "ResetEbsDefaultKmsKeyId",
    false,
    DRY_RUN,
    |_p| Change::Set(None),
    kms_key
);
