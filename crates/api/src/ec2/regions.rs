//! DescribeRegions and DescribeAvailabilityZones: the one region this service is, and one
//! zone in it, so that tools that ask first (many do) get an answer that is true.

use std::collections::HashMap;

use super::{filters, matches};
use crate::error::ApiError;
use crate::handler::{Cx, Env};
use crate::handler::{Declaration, Handler, Input};
use crate::identity::Principal;
use crate::spec::{Authz, Kind, Service, Spec, Tags};
use crate::spec::{field, plain};
use crate::xml::Xml;

const fn spec(
    name: &'static str,
    iam: &'static str,
    params: &'static [crate::spec::Field],
) -> Spec {
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

/// A parsed DescribeRegions.
#[derive(Debug)]
pub struct DescribeRegions {
    names: Vec<String>,
    filters: Vec<super::Filter>,
}

impl Handler for DescribeRegions {
    const SPEC: Spec = spec(
        "DescribeRegions",
        "ec2:DescribeRegions",
        &[
            plain("RegionName.N"),
            plain("AllRegions"),
            plain("DryRun"),
            plain("Filter.N.Name"),
            field("Filter.N.Value.N", Kind::FilterValue),
        ],
    );

    fn parse(input: Input<'_>, _env: &Env, _who: &Principal) -> Result<Self, ApiError> {
        let p = input.params()?;
        p.bool("AllRegions")?;
        Ok(DescribeRegions {
            names: p.strings("RegionName")?,
            filters: filters(p, "Filter", &["endpoint", "region-name", "opt-in-status"])?,
        })
    }

    fn declare(&self, _env: &Env, _who: &Principal, _d: &mut Declaration) {}

    async fn run(self, cx: &Cx<'_>) -> Result<String, ApiError> {
        let region = &cx.env.region;
        if let Some(n) = self.names.iter().find(|n| *n != region) {
            return Err(ApiError::client(
                "InvalidParameterValue",
                format!(
                    "Invalid region: {} (this service is the region {region})",
                    engine::request::shown(n)
                ),
            ));
        }
        let endpoint = format!("ec2.{region}.amazonaws.com");
        let f: HashMap<&str, String> = [
            ("endpoint", endpoint.clone()),
            ("region-name", region.clone()),
            ("opt-in-status", "opt-in-not-required".into()),
        ]
        .into();
        let name = Self::SPEC.name;
        let mut x = Xml::response(name, cx.request_id);
        x.open("regionInfo");
        if matches(&self.filters, &f, &[]) {
            x.open("item")
                .leaf("regionName", region)
                .leaf("regionEndpoint", &endpoint)
                .leaf("optInStatus", "opt-in-not-required")
                .close("item");
        }
        x.close("regionInfo");
        Ok(x.finish(name))
    }
}

/// A parsed DescribeAvailabilityZones.
#[derive(Debug)]
pub struct DescribeAvailabilityZones {
    names: Vec<String>,
    ids: Vec<String>,
    filters: Vec<super::Filter>,
}

impl Handler for DescribeAvailabilityZones {
    const SPEC: Spec = spec(
        "DescribeAvailabilityZones",
        "ec2:DescribeAvailabilityZones",
        &[
            plain("ZoneName.N"),
            plain("ZoneId.N"),
            plain("AllAvailabilityZones"),
            plain("DryRun"),
            plain("Filter.N.Name"),
            field("Filter.N.Value.N", Kind::FilterValue),
        ],
    );

    fn parse(input: Input<'_>, _env: &Env, _who: &Principal) -> Result<Self, ApiError> {
        let p = input.params()?;
        p.bool("AllAvailabilityZones")?;
        Ok(DescribeAvailabilityZones {
            names: p.strings("ZoneName")?,
            ids: p.strings("ZoneId")?,
            filters: filters(
                p,
                "Filter",
                &[
                    "zone-name",
                    "zone-id",
                    "region-name",
                    "state",
                    "zone-type",
                    "group-name",
                    "opt-in-status",
                ],
            )?,
        })
    }

    fn declare(&self, _env: &Env, _who: &Principal, _d: &mut Declaration) {}

    async fn run(self, cx: &Cx<'_>) -> Result<String, ApiError> {
        let region = &cx.env.region;
        let zone = format!("{region}a");
        let zone_id = format!("vmie-{region}-az1");
        if let Some(n) = self.names.iter().find(|n| **n != zone) {
            return Err(ApiError::client(
                "InvalidParameterValue",
                format!(
                    "Invalid availability zone: [{}] (this service has one: {zone})",
                    engine::request::shown(n)
                ),
            ));
        }
        if let Some(n) = self.ids.iter().find(|n| **n != zone_id) {
            return Err(ApiError::client(
                "InvalidParameterValue",
                format!(
                    "Invalid availability zone id: [{}] (this service has one: {zone_id})",
                    engine::request::shown(n)
                ),
            ));
        }
        let f: HashMap<&str, String> = [
            ("zone-name", zone.clone()),
            ("zone-id", zone_id.clone()),
            ("region-name", region.clone()),
            ("state", "available".into()),
            ("zone-type", "availability-zone".into()),
            ("group-name", region.clone()),
            ("opt-in-status", "opt-in-not-required".into()),
        ]
        .into();
        let name = Self::SPEC.name;
        let mut x = Xml::response(name, cx.request_id);
        x.open("availabilityZoneInfo");
        if matches(&self.filters, &f, &[]) {
            x.open("item")
                .leaf("optInStatus", "opt-in-not-required")
                .open("messageSet")
                .close("messageSet")
                .leaf("regionName", region)
                .leaf("zoneName", &zone)
                .leaf("zoneId", &zone_id)
                .leaf("groupName", region)
                .leaf("networkBorderGroup", region)
                .leaf("zoneType", "availability-zone")
                .leaf("groupLongName", region)
                .leaf("zoneState", "available")
                .close("item");
        }
        x.close("availabilityZoneInfo");
        Ok(x.finish(name))
    }
}
