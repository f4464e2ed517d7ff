//! DescribeTags: the tags of the caller's images, snapshots and tasks, filtered (`key`,
//! `value`, `resource-id`, `resource-type`) and paged.

use std::collections::HashMap;

use engine::ResourceKind;

use super::{filters, matches, page};
use crate::error::ApiError;
use crate::handler::{Cx, Env};
use crate::handler::{Declaration, Handler, Input};
use crate::identity::Principal;
use crate::query::Params;
use crate::spec::{Authz, Kind, Service, Spec, Tags};
use crate::spec::{field, plain};
use crate::xml::Xml;

const TAG_FILTERS: &[&str] = &["key", "value", "resource-id", "resource-type"];

/// A parsed DescribeTags.
#[derive(Debug)]
pub struct DescribeTags {
    filters: Vec<super::Filter>,
    params: Params,
}

impl Handler for DescribeTags {
    const SPEC: Spec = Spec {
        service: Service::Ec2,
        name: "DescribeTags",
        iam_action: "ec2:DescribeTags",
        read_only: true,
        authz: Authz::Policy,
        resources: &[],
        tags: Tags::None,
        condition_keys: &[],
        params: &[
            plain("DryRun"),
            plain("Filter.N.Name"),
            field("Filter.N.Value.N", Kind::FilterValue),
            plain("MaxResults"),
            plain("NextToken"),
        ],
    };

    fn parse(input: Input<'_>, _env: &Env, _who: &Principal) -> Result<Self, ApiError> {
        let p = input.params()?;
        Ok(DescribeTags {
            filters: filters(p, "Filter", TAG_FILTERS)?,
            params: p.clone(),
        })
    }

    fn declare(&self, _env: &Env, _who: &Principal, _d: &mut Declaration) {}

    async fn run(self, cx: &Cx<'_>) -> Result<String, ApiError> {
        let mut all = cx.env.engine.all_tags(&cx.who.account).await?;
        all.retain(|(id, t)| {
            let f: HashMap<&str, String> = [
                ("key", t.key.clone()),
                ("value", t.value.clone()),
                ("resource-id", id.clone()),
                ("resource-type", resource_type(id).to_string()),
            ]
            .into();
            matches(&self.filters, &f, &[])
        });
        let (items, next) = page(&self.params, &all, 5..=1000)?;
        let name = Self::SPEC.name;
        let mut x = Xml::response(name, cx.request_id);
        x.open("tagSet");
        for (id, t) in &items {
            x.open("item")
                .leaf("key", &t.key)
                .leaf("resourceId", id)
                .leaf("resourceType", resource_type(id))
                .leaf("value", &t.value)
                .close("item");
        }
        x.close("tagSet");
        x.opt("nextToken", next.as_deref());
        Ok(x.finish(name))
    }
}

fn resource_type(id: &str) -> &'static str {
    ResourceKind::of(id).map_or("", ResourceKind::arn_type)
}
