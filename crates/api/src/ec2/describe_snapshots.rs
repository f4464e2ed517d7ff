//! DescribeSnapshots: the caller's snapshots, by id, filtered and paged.

use std::collections::HashMap;

use super::{filters, matches, page};
use crate::action::{Authz, Declaration, Handler, Input, Kind, Service, Spec, Tags};
use crate::action::{field, plain};
use crate::dispatch::{Cx, Env};
use crate::error::ApiError;
use crate::identity::Principal;
use crate::query::Params;
use crate::xml::Xml;

const SNAPSHOT_FILTERS: &[&str] = &["snapshot-id", "status", "description", "encrypted"];

/// A parsed DescribeSnapshots.
#[derive(Debug)]
pub struct DescribeSnapshots {
    ids: Vec<String>,
    filters: Vec<super::Filter>,
    params: Params,
}

impl Handler for DescribeSnapshots {
    const SPEC: Spec = Spec {
        service: Service::Ec2,
        name: "DescribeSnapshots",
        iam_action: "ec2:DescribeSnapshots",
        read_only: true,
        authz: Authz::Policy,
        resources: &[],
        tags: Tags::None,
        condition_keys: &[],
        params: &[
            plain("MaxResults"),
            plain("NextToken"),
            plain("Owner.N"),
            plain("RestorableBy.N"),
            plain("SnapshotId.N"),
            plain("DryRun"),
            plain("Filter.N.Name"),
            field("Filter.N.Value.N", Kind::FilterValue),
        ],
    };

    fn parse(input: Input<'_>, _env: &Env, _who: &Principal) -> Result<Self, ApiError> {
        let p = input.params()?;
        Ok(DescribeSnapshots {
            ids: p.strings("SnapshotId")?,
            filters: filters(p, "Filter", SNAPSHOT_FILTERS)?,
            params: p.clone(),
        })
    }

    fn declare(&self, _env: &Env, _who: &Principal, _d: &mut Declaration) {}

    async fn run(self, cx: &Cx<'_>) -> Result<String, ApiError> {
        let a = &cx.who.account;
        let mut snaps = cx.env.engine.snapshots(a).await?;
        for id in &self.ids {
            if !snaps.iter().any(|s| &s.id == id) {
                return Err(ApiError::client(
                    "InvalidSnapshot.NotFound",
                    format!(
                        "The snapshot '{}' does not exist.",
                        engine::request::shown(id)
                    ),
                ));
            }
        }
        snaps.retain(|s| {
            let f: HashMap<&str, String> = [
                ("snapshot-id", s.id.clone()),
                ("status", s.state.clone()),
                ("description", s.description.clone()),
                ("encrypted", s.encrypted.to_string()),
            ]
            .into();
            (self.ids.is_empty() || self.ids.contains(&s.id)) && matches(&self.filters, &f, &s.tags)
        });
        let (items, next) = page(&self.params, &snaps, 1..=1000)?;
        let mut x = Xml::response(Self::SPEC.name, cx.request_id);
        x.open("snapshotSet");
        for s in &items {
            let gib = u64::try_from(s.volume_size)
                .unwrap_or(0)
                .div_ceil(1 << 30)
                .max(1);
            x.open("item")
                .leaf("snapshotId", &s.id)
                .leaf("volumeId", "vol-ffffffff")
                .leaf("status", &s.state)
                .leaf("startTime", &crate::sigv4::format_iso8601(s.created_ms))
                .leaf("progress", "100%")
                .leaf("ownerId", a)
                .leaf("volumeSize", &gib.to_string())
                .leaf("description", &s.description)
                .leaf("encrypted", &s.encrypted.to_string())
                .opt("kmsKeyId", s.kms_key_id.as_deref())
                .tags(&s.tags)
                .close("item");
        }
        x.close("snapshotSet");
        x.opt("nextToken", next.as_deref());
        Ok(x.finish(Self::SPEC.name))
    }
}
