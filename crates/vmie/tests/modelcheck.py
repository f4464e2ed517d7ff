"""Checks every EC2 answer against botocore's model of the EC2 API (2016-11-15), as shipped
with the installed botocore: each XML element must be a member the model names for its shape
(nothing botocore would silently drop), and each member the model documents must be present
unless it is listed below with the reason vmie does not send it.

Used two ways by tests/api_client.py: registered on boto3 clients (`register(client)`), and
loaded by the aws CLI as a plugin (`[plugins] modelcheck = modelcheck` in the CLI's config,
this folder on PYTHONPATH), so every answer the API suite receives is checked. Problems are
appended, one JSON line each, to the file named by $VMIE_MODELCHECK_LOG.
"""

import json
import os
import xml.etree.ElementTree as ET

# Members vmie does not send, by shape, and why. Anything else the model names must be there.
ABSENT = {
    "Image": {
        "EnaSupport": "no instances run here",
        "SriovNetSupport": "no instances run here",
        "ImageOwnerAlias": "only amazon and aws-marketplace images have an alias",
        "StateReason": "sent only for a failed image",
        "TpmSupport": "set only by RegisterImage with TpmSupport",
        "DeprecationTime": "sent only once deprecation is enabled",
        "ImdsSupport": "set only by RegisterImage with ImdsSupport",
        "SourceInstanceId": "no instances: images come from imports",
        "DeregistrationProtection": "sent only when enabled",
        "LastLaunchedTime": "no instances are launched",
        "ImageAllowed": "Allowed AMIs is not in use",
        "SourceImageId": "sent only for a copy",
        "SourceImageRegion": "sent only for a copy",
        "FreeTierEligible": "no billing here",
        "ProductCodes": "no marketplace products",
        "KernelId": "HVM images have none",
        "RamdiskId": "HVM images have none",
        "Platform": "sent only for Windows, as EC2 does",
        "BootMode": "sent only when known",
        "RootDeviceName": "sent only when the image has volumes",
        "Description": "sent only when there is one",
    },
    "Snapshot": {
        "SseType": "reserved for future use (the model says so)",
        "OwnerAlias": "only amazon snapshots have an alias",
        "OutpostArn": "no Outposts",
        "RestoreExpiryTime": "sent only for a restored archived snapshot",
        "AvailabilityZone": "sent only for snapshots in Local Zones",
        "TransferType": "sent only for a copy",
        "CompletionDurationMinutes": "sent only for a time-based copy",
        "CompletionTime": "sent only for a copy",
        "FullSnapshotSizeInBytes": "sent only for archived snapshots",
        "DataEncryptionKeyId": "a per-volume identifier of EC2's; vmie keys chunks, not volumes",
        "StateMessage": "sent only for an error",
        "Description": "sent only when there is one",
    },
    "EbsBlockDevice": {
        "Iops": "no provisioned IOPS",
        "Throughput": "no provisioned throughput",
        "OutpostArn": "no Outposts",
        "AvailabilityZone": "not a volume",
        "VolumeInitializationRate": "not a volume",
        "AvailabilityZoneId": "not a volume",
        "EbsCardIndex": "not a volume",
    },
    "BlockDeviceMapping": {
        "NoDevice": "only to suppress a device",
        "VirtualName": "no instance store volumes",
    },
    "ImportImageTask": {
        "ImageId": "sent once the task completed",
        "Progress": "sent while the task is active",
        "Description": "sent only when there is one",
        "Hypervisor": "sent only when given",
        "LicenseSpecifications": "sent only when given",
        "UsageOperation": "sent only when given",
        "BootMode": "sent once known",
        "Architecture": "sent once known",
        "Platform": "sent once known",
        "LicenseType": "sent once known",
    },
    "SnapshotDetail": {
        "Progress": "sent while the task is active",
        "SnapshotId": "sent once stored",
        "Url": "sent for a Url source",
        "UserBucket": "sent for a bucket source",
        "Description": "sent only when there is one",
        "Format": "sent once detected",
    },
    "SnapshotTaskDetail": {
        "Progress": "sent while the task is active",
        "SnapshotId": "sent once stored",
        "Url": "sent for a Url source",
        "UserBucket": "sent for a bucket source",
        "Description": "sent only when there is one",
        "Format": "sent once detected",
    },
    "ImportSnapshotTask": {"Description": "sent only when there is one"},
    "ExportImageTask": {
        "Progress": "sent while the task is active",
        "Description": "sent only when there is one",
    },
    "ExportImageResult": {
        "Progress": "sent while the task is active",
        "Description": "sent only when there is one",
        "RoleName": "sent only when given",
    },
    "ImportImageResult": {
        "ImageId": "sent once the task completed",
        "Progress": "sent while the task is active",
        "Description": "sent only when there is one",
        "Hypervisor": "sent only when given",
        "LicenseSpecifications": "sent only when given",
        "UsageOperation": "sent only when given",
        "Architecture": "sent once known",
        "Platform": "sent once known",
        "LicenseType": "sent once known",
    },
    "ImportSnapshotResult": {"Description": "sent only when there is one"},
    "GetEbsEncryptionByDefaultResult": {"SseType": "reserved for future use (the model says so)"},
    "ImageAttribute": {
        m: "only the attribute asked for is answered"
        for m in ("Description", "KernelId", "RamdiskId", "SriovNetSupport", "BootMode", "TpmSupport",
                  "UefiData", "LastLaunchedTime", "ImdsSupport", "DeregistrationProtection",
                  "LaunchPermissions", "ProductCodes", "BlockDeviceMappings")
    },
    "DescribeSnapshotAttributeResult": {
        "ProductCodes": "only the attribute asked for is answered",
        "CreateVolumePermissions": "only the attribute asked for is answered",
    },
    "AttributeValue": {"Value": "absent when the attribute has no value"},
    "LaunchPermission": {
        "OrganizationArn": "no AWS Organizations here",
        "OrganizationalUnitArn": "no AWS Organizations here",
        "UserId": "a permission names an account or the group all",
        "Group": "a permission names an account or the group all",
    },
    "CreateVolumePermission": {
        "UserId": "a permission names an account or the group all",
        "Group": "a permission names an account or the group all",
    },
    "Region": {"Geography": "a region of this service has no geography"},
    "AvailabilityZone": {
        "ParentZoneName": "sent only for Local and Wavelength Zones",
        "ParentZoneId": "sent only for Local and Wavelength Zones",
        "Geography": "a zone of this service has no geography",
        "SubGeography": "a zone of this service has no geography",
    },
    "ExportTaskS3Location": {"S3Prefix": "sent only when given"},
}

# Output shapes whose members are all optional in practice (lists, pages, single values).
LOOSE = {"NextToken", "Tags", "Tag"}


def _local(tag):
    return tag.rsplit("}", 1)[-1]


def _xml_name(name, member):
    return member.serialization.get("name", name)


def _walk(shape, el, path, problems, top=False):
    t = shape.type_name
    if t == "structure":
        by_xml = {_xml_name(n, m): (n, m) for n, m in shape.members.items()}
        seen = set()
        for child in el:
            tag = _local(child.tag)
            if top and tag == "requestId":
                continue
            if top and tag == "return" and "Return" not in shape.members:
                continue  # botocore drops it on actions whose model has no output
            if tag not in by_xml:
                problems.append(f"{path}/{tag}: not a member of {shape.name}")
                continue
            name, member = by_xml[tag]
            seen.add(name)
            _walk(member, child, f"{path}/{tag}", problems)
        if not (top and not len(el)):
            allowed = ABSENT.get(shape.name, {})
            for name in shape.members:
                if name not in seen and name not in allowed and name not in LOOSE:
                    problems.append(f"{path}: {shape.name}.{name} is documented but missing")
    elif t == "list":
        member = shape.member
        want = member.serialization.get("name", "item")
        for child in el:
            tag = _local(child.tag)
            if tag != want:
                problems.append(f"{path}/{tag}: a list of {shape.name} holds <{want}>")
            _walk(member, child, f"{path}/{tag}", problems)
    elif len(el):
        problems.append(f"{path}: {shape.name} is a {t}, not a structure")


def check(operation_model, body):
    """The problems of one answer (`body`, the XML) to `operation_model`."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError as e:
        return [f"{operation_model.name}: not XML: {e}"]
    if _local(root.tag) == "Response":  # the error document
        return []
    out = operation_model.output_shape
    if out is None:
        return []
    problems = []
    _walk(out, root, operation_model.name, problems, top=True)
    return problems


def _log(problems):
    path = os.environ.get("VMIE_MODELCHECK_LOG")
    if not path or not problems:
        return
    with open(path, "a") as f:
        for p in problems:
            f.write(json.dumps(p) + "\n")


def _after_call(http_response=None, model=None, **_):
    if http_response is None or model is None or http_response.status_code != 200:
        return
    _log(check(model, http_response.content))


def register(client):
    """Checks every answer `client` (a boto3 EC2 client) receives."""
    client.meta.events.register("after-call.ec2", _after_call)


def awscli_initialize(cli):
    """The aws CLI's plugin entry point."""
    cli.register("after-call.ec2", _after_call)
