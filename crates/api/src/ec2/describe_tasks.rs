//! DescribeImportImageTasks, DescribeImportSnapshotTasks, DescribeExportImageTasks: the
//! caller's tasks of one kind that are active or ended in the last 7 days, by id, filtered
//! (`task-state`, `tag:KEY`, `tag-key`) and paged.

use std::collections::HashMap;

use catalog::{Task, TaskKind};

use super::{export_task_xml, filters, image_task_xml, matches, page, snapshot_task_xml};
use crate::error::ApiError;
use crate::handler::{Cx, Env};
use crate::handler::{Declaration, Handler, Input};
use crate::identity::Principal;
use crate::query::Params;
use crate::spec::{Authz, Field, Kind, Service, Spec, Tags};
use crate::spec::{field, plain};
use crate::xml::Xml;

/// Filter names the task lists take (besides `tag:KEY` and `tag-key`).
const TASK_FILTERS: &[&str] = &["task-state"];

/// One describe of tasks, whatever their kind.
#[derive(Debug)]
pub struct Describe {
    ids: Vec<String>,
    filters: Vec<super::Filter>,
    params: Params,
}

struct Shape {
    kind: TaskKind,
    ids: &'static str,
    filters: &'static str,
    set: &'static str,
    max: std::ops::RangeInclusive<i64>,
    item: fn(&mut Xml, &Task),
}

fn parse(p: &Params, s: &Shape) -> Result<Describe, ApiError> {
    Ok(Describe {
        ids: p.strings(s.ids)?,
        filters: filters(p, s.filters, TASK_FILTERS)?,
        params: p.clone(),
    })
}

async fn run(d: Describe, s: &Shape, name: &str, cx: &Cx<'_>) -> Result<String, ApiError> {
    let all = cx
        .env
        .engine
        .describe(&cx.who.account, s.kind, &d.ids)
        .await?;
    let kept: Vec<Task> = all
        .into_iter()
        .filter(|t| {
            let f: HashMap<&str, String> = [("task-state", t.status.clone())].into();
            matches(&d.filters, &f, &t.tags)
        })
        .collect();
    let (items, next) = page(&d.params, &kept, s.max.clone())?;
    let mut x = Xml::response(name, cx.request_id);
    x.open(s.set);
    for t in &items {
        x.open("item");
        (s.item)(&mut x, t);
        x.close("item");
    }
    x.close(s.set);
    x.opt("nextToken", next.as_deref());
    Ok(x.finish(name))
}

const fn spec(name: &'static str, iam: &'static str, params: &'static [Field]) -> Spec {
    Spec {
        service: Service::Ec2,
        name,
        iam_action: iam,
        read_only: true,
        authz: Authz::Policy,
        resources: &[],
        tags: Tags::None,
        condition_keys: &[],
        params,
    }
}

macro_rules! describe_tasks {
    ($ty:ident, $name:literal, $shape:expr, $params:expr) => {
        #[doc = concat!("A parsed ", $name, ".")]
        #[derive(Debug)]
        pub struct $ty(Describe);

        impl Handler for $ty {
            const SPEC: Spec = spec($name, concat!("ec2:", $name), $params);

            fn parse(input: Input<'_>, _env: &Env, _who: &Principal) -> Result<Self, ApiError> {
                parse(input.params()?, &$shape).map($ty)
            }

            fn declare(&self, _env: &Env, _who: &Principal, _d: &mut Declaration) {}

            async fn run(self, cx: &Cx<'_>) -> Result<String, ApiError> {
                run(self.0, &$shape, $name, cx).await
            }
        }
    };
}

describe_tasks!(
    DescribeImportImageTasks,
    "DescribeImportImageTasks",
    Shape {
        kind: TaskKind::ImportImage,
        ids: "ImportTaskId",
        filters: "Filters",
        set: "importImageTaskSet",
        max: 1..=1000,
        item: |x, t| image_task_xml(x, t, false),
    },
    &[
        plain("DryRun"),
        plain("Filters.N.Name"),
        field("Filters.N.Value.N", Kind::FilterValue),
        plain("ImportTaskId.N"),
        plain("MaxResults"),
        plain("NextToken"),
    ]
);

describe_tasks!(
    DescribeImportSnapshotTasks,
    "DescribeImportSnapshotTasks",
    Shape {
        kind: TaskKind::ImportSnapshot,
        ids: "ImportTaskId",
        filters: "Filters",
        set: "importSnapshotTaskSet",
        max: 1..=1000,
        item: snapshot_task_xml,
    },
    &[
        plain("DryRun"),
        plain("Filters.N.Name"),
        field("Filters.N.Value.N", Kind::FilterValue),
        plain("ImportTaskId.N"),
        plain("MaxResults"),
        plain("NextToken"),
    ]
);

describe_tasks!(
    DescribeExportImageTasks,
    "DescribeExportImageTasks",
    Shape {
        kind: TaskKind::ExportImage,
        ids: "ExportImageTaskId",
        filters: "Filter",
        set: "exportImageTaskSet",
        max: 1..=500,
        item: |x, t| export_task_xml(x, t, false),
    },
    &[
        plain("DryRun"),
        plain("Filter.N.Name"),
        field("Filter.N.Value.N", Kind::FilterValue),
        plain("ExportImageTaskId.N"),
        plain("MaxResults"),
        plain("NextToken"),
    ]
);
