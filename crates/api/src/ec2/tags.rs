//! CreateTags and DeleteTags on images, snapshots and tasks. Each resource is authorized on
//! its own ARN with its current tags (`aws:ResourceTag/*`), and the tags written or removed
//! fill `aws:RequestTag/*` and `aws:TagKeys`: a policy that protects tagged resources also
//! protects their tags.

use catalog::Tag;
use engine::{ResourceKind, TagRemoval};

use super::{arn, plain_tags, returns_true};
use crate::error::ApiError;
use crate::handler::{Cx, Env};
use crate::handler::{Declaration, Handler, Input};
use crate::identity::Principal;
use crate::query::Params;
use crate::spec::{Authz, Field, Kind, Service, Spec, Tags};
use crate::spec::{field, plain};

const PARAMS: &[Field] = &[
    plain("DryRun"),
    plain("ResourceId.N"),
    field("Tag.N.Key", Kind::TagKey),
    field("Tag.N.Value", Kind::Free),
];

/// The resources named, each of a kind vmie keeps (`InvalidID` otherwise).
fn resource_ids(p: &Params) -> Result<Vec<(ResourceKind, String)>, ApiError> {
    let ids = p.strings("ResourceId")?;
    if ids.is_empty() {
        return Err(ApiError::client(
            "MissingParameter",
            "the request must contain the parameter ResourceId.1",
        ));
    }
    ids.into_iter()
        .map(|id| match ResourceKind::of(&id) {
            Some(k) => {
                engine::resources::check_id(k, &id)?;
                Ok((k, id))
            }
            None => Err(ApiError::client(
                "InvalidID",
                format!("The ID '{}' is not valid", engine::request::shown(&id)),
            )),
        })
        .collect()
}

fn declare_resources(
    ids: &[(ResourceKind, String)],
    env: &Env,
    who: &Principal,
    d: &mut Declaration,
) {
    for (kind, id) in ids {
        d.existing(arn(env, who, *kind, id), id);
    }
}

fn plain_ids(ids: Vec<(ResourceKind, String)>) -> Vec<String> {
    ids.into_iter().map(|(_, id)| id).collect()
}

/// A parsed CreateTags.
#[derive(Debug)]
pub struct CreateTags {
    ids: Vec<(ResourceKind, String)>,
    tags: Vec<Tag>,
}

impl Handler for CreateTags {
    const SPEC: Spec = Spec {
        service: Service::Ec2,
        name: "CreateTags",
        iam_action: "ec2:CreateTags",
        read_only: false,
        authz: Authz::Policy,
        resources: &[
            "image",
            "snapshot",
            "import-image-task",
            "import-snapshot-task",
            "export-image-task",
        ],
        tags: Tags::Both,
        condition_keys: &[
            "aws:ResourceTag/${TagKey}",
            "aws:RequestTag/${TagKey}",
            "aws:TagKeys",
        ],
        params: PARAMS,
    };

    fn parse(input: Input<'_>, _env: &Env, _who: &Principal) -> Result<Self, ApiError> {
        let p = input.params()?;
        Ok(CreateTags {
            ids: resource_ids(p)?,
            tags: plain_tags(&p.list("Tag")?)?,
        })
    }

    fn declare(&self, env: &Env, who: &Principal, d: &mut Declaration) {
        declare_resources(&self.ids, env, who, d);
        d.request_tags(&self.tags);
    }

    async fn run(self, cx: &Cx<'_>) -> Result<String, ApiError> {
        cx.env
            .engine
            .create_tags(&cx.who.account, &plain_ids(self.ids), &self.tags)
            .await?;
        Ok(returns_true(Self::SPEC.name, cx.request_id))
    }
}

/// A parsed DeleteTags.
#[derive(Debug)]
pub struct DeleteTags {
    ids: Vec<(ResourceKind, String)>,
    remove: Vec<TagRemoval>,
}

impl Handler for DeleteTags {
    const SPEC: Spec = Spec {
        service: Service::Ec2,
        name: "DeleteTags",
        iam_action: "ec2:DeleteTags",
        read_only: false,
        authz: Authz::Policy,
        resources: &[
            "image",
            "snapshot",
            "import-image-task",
            "import-snapshot-task",
            "export-image-task",
        ],
        tags: Tags::Both,
        condition_keys: &[
            "aws:ResourceTag/${TagKey}",
            "aws:RequestTag/${TagKey}",
            "aws:TagKeys",
        ],
        params: PARAMS,
    };

    fn parse(input: Input<'_>, _env: &Env, _who: &Principal) -> Result<Self, ApiError> {
        let p = input.params()?;
        // Checked as CreateTags checks them; a key given without a value removes the key
        // whatever its value.
        let items = p.list("Tag")?;
        plain_tags(&items)?;
        let remove = items
            .iter()
            .map(|t| {
                Ok(TagRemoval {
                    key: t.required("Key")?.to_string(),
                    value: t.get("Value").map(str::to_string),
                })
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        Ok(DeleteTags {
            ids: resource_ids(p)?,
            remove,
        })
    }

    fn declare(&self, env: &Env, who: &Principal, d: &mut Declaration) {
        declare_resources(&self.ids, env, who, d);
        let with_values: Vec<Tag> = self
            .remove
            .iter()
            .filter_map(|r| {
                r.value.as_ref().map(|v| Tag {
                    key: r.key.clone(),
                    value: v.clone(),
                })
            })
            .collect();
        d.request_tags(&with_values);
        if !self.remove.is_empty() {
            d.condition(
                "aws:TagKeys",
                self.remove.iter().map(|r| r.key.clone()).collect(),
            );
        }
    }

    async fn run(self, cx: &Cx<'_>) -> Result<String, ApiError> {
        cx.env
            .engine
            .delete_tags(&cx.who.account, &plain_ids(self.ids), &self.remove)
            .await?;
        Ok(returns_true(Self::SPEC.name, cx.request_id))
    }
}
