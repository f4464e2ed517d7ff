//! The instance-based conversion and export actions of EC2 (ImportInstance and
//! ImportVolume's tasks, CreateInstanceExportTask). vmie runs no instances, so there are no
//! such tasks: each answers `UnsupportedOperation` saying what to use instead. They are
//! declared and authorized like every other action (a Deny of them is honoured and recorded).

use super::TAG_SPECS;
use crate::error::ApiError;
use crate::handler::{Cx, Env};
use crate::handler::{Declaration, Handler, Input};
use crate::identity::Principal;
use crate::spec::{Authz, Field, Kind, Service, Spec, Tags};
use crate::spec::{field, plain};

const fn spec(
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

macro_rules! unsupported {
    ($ty:ident, $name:literal, $read_only:expr, $params:expr, $instead:literal) => {
        #[doc = concat!("A parsed ", $name, " (always `UnsupportedOperation`).")]
        #[derive(Debug)]
        pub struct $ty;

        impl Handler for $ty {
            const SPEC: Spec = spec($name, concat!("ec2:", $name), $read_only, $params);

            fn parse(input: Input<'_>, _env: &Env, _who: &Principal) -> Result<Self, ApiError> {
                input.params()?;
                Ok($ty)
            }

            fn declare(&self, _env: &Env, _who: &Principal, _d: &mut Declaration) {}

            async fn run(self, _cx: &Cx<'_>) -> Result<String, ApiError> {
                Err(ApiError::client(
                    "UnsupportedOperation",
                    concat!(
                        $name,
                        " is not supported: vmie runs no instances. ",
                        $instead
                    ),
                ))
            }
        }
    };
}

unsupported!(
    DescribeConversionTasks,
    "DescribeConversionTasks",
    true,
    &[plain("DryRun"), plain("ConversionTaskId.N")],
    "Use ImportImage or ImportSnapshot, and DescribeImportImageTasks or DescribeImportSnapshotTasks to follow them."
);
unsupported!(
    DescribeExportTasks,
    "DescribeExportTasks",
    true,
    &[
        plain("Filter.N.Name"),
        field("Filter.N.Value.N", Kind::FilterValue),
        plain("ExportTaskId.N")
    ],
    "Use ExportImage, and DescribeExportImageTasks to follow it."
);
unsupported!(
    CancelExportTask,
    "CancelExportTask",
    false,
    &[plain("ExportTaskId")],
    "Export images with ExportImage; cancel an export with CancelImportTask and its export-ami-… id."
);
unsupported!(
    CreateInstanceExportTask,
    "CreateInstanceExportTask",
    false,
    &[
        TAG_SPECS[0],
        TAG_SPECS[1],
        TAG_SPECS[2],
        field("Description", Kind::Free),
        plain("InstanceId"),
        plain("TargetEnvironment"),
        plain("ExportToS3.DiskImageFormat"),
        plain("ExportToS3.ContainerFormat"),
        plain("ExportToS3.S3Bucket"),
        plain("ExportToS3.S3Prefix")
    ],
    "Export an image with ExportImage (VMDK, VHD, RAW; and OVA, VHDX, QCOW2 here)."
);
