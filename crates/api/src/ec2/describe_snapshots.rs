//! DescribeSnapshots: the caller's snapshots, by id, filtered and paged.

use std::collections::HashMap;

use super::{filters, matches, page};
use crate::error::ApiError;
use crate::handler::{Cx, Env};
use crate::handler::{Declaration, Handler, Input};
use crate::identity::Principal;
use crate::query::Params;
use crate::spec::{Authz, Kind, Service, Spec, Tags};
use crate::spec::{field, plain};
use crate::xml::Xml;

const SNAPSHOT_FILTERS: &[&str] = &[
    "snapshot-id",
    "status",
    "description",
    "encrypted",
    "owner-id",
    "volume-size",
    "kms-key-id",
    "storage-tier",
];

/// A parsed DescribeSnapshots.
#[derive(Debug)]
pub struct DescribeSnapshots {
    ids: Vec<String>,
    owners: Vec<String>,
    restorable_by: Vec<String>,
    filters: Vec<super::Filter>,
    params: Params,
}

fn gib(s: &catalog::Snapshot) -> u64 {
    u64::try_from(s.volume_size)
        .unwrap_or(0)
        .div_ceil(1 << 30)
        .max(1)
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
        let ids = p.strings("SnapshotId")?;
        for id in &ids {
            engine::resources::check_id(engine::ResourceKind::Snapshot, id)?;
        }
        Ok(DescribeSnapshots {
            ids,
            owners: p.strings("Owner")?,
            restorable_by: p.strings("RestorableBy")?,
            filters: filters(p, "Filter", SNAPSHOT_FILTERS)?,
            params: p.clone(),
        })
    }

    fn declare(&self, _env: &Env, _who: &Principal, _d: &mut Declaration) {}

    async fn run(self, cx: &Cx<'_>) -> Result<String, ApiError> {
        let a = &cx.who.account;
        let engine = &cx.env.engine;
        let mut snaps = engine.visible_snapshots(a).await?;
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
        let mut shared_with = std::collections::HashMap::new();
        for s in &snaps {
            if s.account == *a && !self.restorable_by.is_empty() {
                shared_with.insert(s.id.clone(), engine.shared_with_whom(a, &s.id).await?);
            }
        }
        snaps.retain(|s| {
            let owner_ok = self.owners.is_empty()
                || self
                    .owners
                    .iter()
                    .any(|o| (o == "self" && s.account == *a) || *o == s.account);
            let restorable_ok = self.restorable_by.is_empty()
                || self.restorable_by.iter().any(|r| {
                    let who = if r == "self" { a.as_str() } else { r.as_str() };
                    s.account == who
                        || (s.account != *a && who == a.as_str())
                        || shared_with
                            .get(&s.id)
                            .is_some_and(|g| g.iter().any(|x| x == who))
                });
            let f: HashMap<&str, String> = [
                ("snapshot-id", s.id.clone()),
                ("status", s.state.clone()),
                ("description", s.description.clone()),
                ("encrypted", "true".into()),
                ("owner-id", s.account.clone()),
                ("volume-size", gib(s).to_string()),
                ("kms-key-id", s.kms_key_id.clone().unwrap_or_default()),
                ("storage-tier", "standard".into()),
            ]
            .into();
            (self.ids.is_empty() || self.ids.contains(&s.id))
                && owner_ok
                && restorable_ok
                && matches(&self.filters, &f, &s.tags)
        });
        let (items, next) = page(&self.params, &snaps, 5..=1000)?;
        let mut x = Xml::response(Self::SPEC.name, cx.request_id);
        x.open("snapshotSet");
        for s in &items {
            x.open("item")
                .leaf("snapshotId", &s.id)
                .leaf("volumeId", "vol-ffffffff")
                .leaf("status", &s.state)
                .leaf("startTime", &crate::sigv4::format_iso8601(s.created_ms))
                .leaf(
                    "progress",
                    if s.state == "completed" { "100%" } else { "0%" },
                )
                .leaf("ownerId", &s.account)
                .leaf("volumeSize", &gib(s).to_string())
                .opt(
                    "description",
                    Some(s.description.as_str()).filter(|d| !d.is_empty()),
                )
                // Every snapshot is encrypted at rest, under the key named beside it.
                .leaf("encrypted", "true")
                .opt("kmsKeyId", s.kms_key_id.as_deref())
                .leaf("storageTier", "standard")
                .tags(&s.tags)
                .close("item");
        }
        x.close("snapshotSet");
        x.opt("nextToken", next.as_deref());
        Ok(x.finish(Self::SPEC.name))
    }
}
