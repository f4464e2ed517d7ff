"""Drives a running `vmie serve` with the real aws CLI and boto3 (run by tests/api_cli.rs).

Arguments: ENDPOINT CA_BUNDLE DATA_DIR RAW_DISK VMIE_BINARY
Environment: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY of the admin user.

Every response is parsed by botocore (through the CLI's JSON output or boto3); every refusal
is checked for its EC2 error code, and for nothing having been done.
"""

import datetime
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import ssl
from unittest import mock

import boto3
import botocore.auth
import botocore.awsrequest
import botocore.credentials
import botocore.exceptions

ENDPOINT, CA, DATA, RAW, VMIE = sys.argv[1:6]
ADMIN = (os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])

# Every EC2 answer, to the CLI and to boto3, is checked against botocore's model
# (tests/modelcheck.py); problems collect in MODELCHECK_LOG and fail the run at the end.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import modelcheck  # noqa: E402

WORK = os.path.dirname(os.path.abspath(DATA))
MODELCHECK_LOG = os.path.join(WORK, "modelcheck.log")
AWS_CONFIG = os.path.join(WORK, "aws-config")
with open(AWS_CONFIG, "w") as f:
    f.write("[plugins]\nmodelcheck = modelcheck\n")
os.environ.update(VMIE_MODELCHECK_LOG=MODELCHECK_LOG, AWS_CONFIG_FILE=AWS_CONFIG,
                  PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))


def aws(*args, keys=ADMIN, ok=True):
    env = dict(os.environ, AWS_ACCESS_KEY_ID=keys[0], AWS_SECRET_ACCESS_KEY=keys[1],
               AWS_DEFAULT_REGION="us-east-1", AWS_CA_BUNDLE=CA, AWS_MAX_ATTEMPTS="1",
               AWS_PAGER="")
    p = subprocess.run(["aws", "--endpoint-url", ENDPOINT, "--output", "json", "ec2", *args],
                       capture_output=True, text=True, env=env)
    if ok:
        assert p.returncode == 0, f"aws ec2 {' '.join(args)}: {p.stderr}"
        return json.loads(p.stdout) if p.stdout.strip() else {}
    assert p.returncode != 0, f"aws ec2 {' '.join(args)} should have failed: {p.stdout}"
    return p.stderr


def refused(code, *args, keys=ADMIN):
    err = aws(*args, keys=keys, ok=False)
    assert f"({code})" in err, f"expected {code}: {err}"


def admin(*args):
    p = subprocess.run([VMIE, "--data-dir", DATA, "admin", *args], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return p.stdout


def new_user(name, policy):
    admin("user", "create", name)
    admin("policy", "put", name, "--document", json.dumps(policy))
    admin("policy", "attach", name, "--user", name)
    k = json.loads(admin("access-key", "create", name, "--json"))
    return k["AccessKeyId"], k["SecretAccessKey"]


def wait(kind, task_id, want=("completed",)):
    op, key, ids = {
        "image": ("describe-import-image-tasks", "ImportImageTasks", "--import-task-ids"),
        "snapshot": ("describe-import-snapshot-tasks", "ImportSnapshotTasks", "--import-task-ids"),
        "export": ("describe-export-image-tasks", "ExportImageTasks", "--export-image-task-ids"),
    }[kind]
    for _ in range(600):
        (t,) = aws(op, ids, task_id)[key]
        status = t["SnapshotTaskDetail"]["Status"] if kind == "snapshot" else t["Status"]
        if status in want:
            return t
        assert status in ("active", "deleting"), t
        time.sleep(0.2)
    raise AssertionError(f"{task_id} did not end")


def task_count():
    return sum(len(aws(op)[key]) for op, key in [
        ("describe-import-image-tasks", "ImportImageTasks"),
        ("describe-import-snapshot-tasks", "ImportSnapshotTasks"),
        ("describe-export-image-tasks", "ExportImageTasks")])


# --- the happy paths -----------------------------------------------------------------------
images = {}
for key in ("debian.vmdk", "debian.ova"):
    r = aws("import-image", "--description", f"from {key}", "--client-token", f"tok-{key}",
            "--disk-containers", f"UserBucket={{S3Bucket=src,S3Key={key}}}",
            "--tag-specifications", "ResourceType=import-image-task,Tags=[{Key=team,Value=blue}]")
    assert r["ImportTaskId"].startswith("import-ami-") and r["Status"] == "active", r
    again = aws("import-image", "--description", f"from {key}", "--client-token", f"tok-{key}",
                "--disk-containers", f"UserBucket={{S3Bucket=src,S3Key={key}}}",
                "--tag-specifications", "ResourceType=import-image-task,Tags=[{Key=team,Value=blue}]")
    assert again["ImportTaskId"] == r["ImportTaskId"], "ClientToken is idempotent"
    t = wait("image", r["ImportTaskId"])
    assert t["Platform"] == "Linux" and t["Architecture"] == "x86_64", t
    assert t["Tags"] == [{"Key": "team", "Value": "blue"}], t
    assert t["SnapshotDetails"][0]["SnapshotId"].startswith("snap-"), t
    images[key] = t["ImageId"]
refused("IdempotentParameterMismatch", "import-image", "--client-token", "tok-debian.vmdk",
        "--disk-containers", "UserBucket={S3Bucket=src,S3Key=debian.ova}")

# A card number in a description is accepted in the default (warn) mode; the server log names
# the field only (tests/api_cli.rs searches the log for the number).
aws("import-snapshot", "--dry-run", "--description", "card 4111 1111 1111 1111",
    "--disk-container", "Format=VMDK,UserBucket={S3Bucket=src,S3Key=debian.vmdk}", ok=False)
s = aws("import-snapshot", "--description", "data disk",
        "--disk-container", "Format=VMDK,UserBucket={S3Bucket=src,S3Key=debian.vmdk}")
snap = wait("snapshot", s["ImportTaskId"])["SnapshotTaskDetail"]["SnapshotId"]

# The vmie client commands, against the same endpoint.
p = subprocess.run([VMIE, "import-snapshot", "--endpoint-url", ENDPOINT, "--ca-bundle", CA,
                    "--bucket", "src", "--key", "debian.vmdk", "--json"],
                   capture_output=True, text=True, env=dict(os.environ, AWS_ACCESS_KEY_ID=ADMIN[0],
                                                            AWS_SECRET_ACCESS_KEY=ADMIN[1]))
assert p.returncode == 0, p.stderr
r = json.loads(p.stdout)
assert r["Status"] == "completed" and r["Made"].startswith("snap-"), r
p = subprocess.run([VMIE, "tasks", "--endpoint-url", ENDPOINT, "--ca-bundle", CA, "--json"],
                   capture_output=True, text=True, env=dict(os.environ, AWS_ACCESS_KEY_ID=ADMIN[0],
                                                            AWS_SECRET_ACCESS_KEY=ADMIN[1]))
assert p.returncode == 0 and r["TaskId"] in p.stdout, p.stderr
# Boot evidence through the API, by image (GetImageBootEvidence) and by task
# (GetImportTaskBootEvidence). This server runs with the boot check off, so each answers
# why there is none, naming the image's task.
for ident in (images["debian.vmdk"], aws("describe-import-image-tasks")["ImportImageTasks"][0]["ImportTaskId"]):
    p = subprocess.run([VMIE, "boot-evidence", ident, "--out", os.path.join(WORK, "evidence"),
                        "--endpoint-url", ENDPOINT, "--ca-bundle", CA],
                       capture_output=True, text=True,
                       env=dict(os.environ, AWS_ACCESS_KEY_ID=ADMIN[0], AWS_SECRET_ACCESS_KEY=ADMIN[1]))
    assert p.returncode != 0 and "has no boot evidence" in p.stderr, (ident, p.returncode, p.stderr)

# The deployment's controls from the running server (GetComplianceReport): the same list
# `vmie compliance` prints here; exit 1 when a control fails (this test's server has no
# rotation on its keys, say), never an error of the call.
p = subprocess.run([VMIE, "compliance", "--json", "--endpoint-url", ENDPOINT, "--ca-bundle", CA],
                   capture_output=True, text=True,
                   env=dict(os.environ, AWS_ACCESS_KEY_ID=ADMIN[0], AWS_SECRET_ACCESS_KEY=ADMIN[1]))
assert p.returncode in (0, 1), (p.returncode, p.stderr)
controls = json.loads(p.stdout)
assert {"tls-listeners", "activity-log-verified"} <= {c["control"] for c in controls}, controls
assert all(set(c) == {"control", "pass", "detail", "remedy"} for c in controls), controls

# Describe with ids, filters and pages.
all_images = aws("describe-import-image-tasks")["ImportImageTasks"]
assert len(all_images) == 2
page = aws("describe-import-image-tasks", "--max-results", "1", "--no-paginate")
assert len(page["ImportImageTasks"]) == 1 and "NextToken" in page, page
rest = aws("describe-import-image-tasks", "--max-results", "1", "--no-paginate",
           "--next-token", page["NextToken"])
assert len(rest["ImportImageTasks"]) == 1 and "NextToken" not in rest, rest
assert rest["ImportImageTasks"][0]["ImportTaskId"] != page["ImportImageTasks"][0]["ImportTaskId"]
done = aws("describe-import-image-tasks", "--filters", "Name=task-state,Values=completed")
assert len(done["ImportImageTasks"]) == 2
refused("InvalidConversionTaskId", "describe-import-image-tasks", "--import-task-ids",
        "import-ami-0123456789abcdef0")

# Cancel: a task cancelled before a worker finishes it ends deleted and leaves nothing.
# (boto3 in this process: the cancel follows within milliseconds, not a CLI start later.)
fast = boto3.client("ec2", endpoint_url=ENDPOINT, region_name="us-east-1", verify=CA,
                    aws_access_key_id=ADMIN[0], aws_secret_access_key=ADMIN[1])
modelcheck.register(fast)
c = fast.import_snapshot(DiskContainer={"UserBucket": {"S3Bucket": "src", "S3Key": "big.qcow2"}})
r = fast.cancel_import_task(ImportTaskId=c["ImportTaskId"])
assert r["PreviousState"] == "active" and r["State"] in ("deleting", "deleted"), r
t = wait("snapshot", c["ImportTaskId"], want=("deleted",))
assert "SnapshotId" not in t["SnapshotTaskDetail"], t
refused("IncorrectState", "cancel-import-task", "--import-task-id", c["ImportTaskId"])

# Export each image; check each file against the source disk.
for key, ami in images.items():
    x = aws("export-image", "--image-id", ami, "--disk-image-format", "VMDK",
            "--s3-export-location", "S3Bucket=out,S3Prefix=exports/")
    wait("export", x["ExportImageTaskId"])
    out = os.path.join(DATA, "buckets", "out", "exports", x["ExportImageTaskId"] + ".vmdk")
    subprocess.run(["qemu-img", "compare", "-f", "raw", RAW, out], check=True, capture_output=True)

# Images and snapshots; tags; deregister and delete.
imgs = aws("describe-images", "--image-ids", *images.values())["Images"]
assert {i["ImageId"] for i in imgs} == set(images.values())
assert all(i["State"] == "available" and i["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"] for i in imgs)
aws("create-tags", "--resources", images["debian.ova"], "--tags", "Key=env,Value=prod")
tagged = aws("describe-images", "--filters", "Name=tag:env,Values=prod")["Images"]
assert [i["ImageId"] for i in tagged] == [images["debian.ova"]]
aws("delete-tags", "--resources", images["debian.ova"], "--tags", "Key=env")
assert aws("describe-images", "--filters", "Name=tag:env,Values=prod")["Images"] == []
snaps = aws("describe-snapshots", "--snapshot-ids", snap)["Snapshots"]
assert snaps[0]["State"] == "completed" and snaps[0]["Description"] == "data disk", snaps
in_use = imgs[0]["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
refused("InvalidSnapshot.InUse", "delete-snapshot", "--snapshot-id", in_use)
# A policy conditioned on the image's tags.
owner = new_user("owner", {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "ec2:DeregisterImage", "Resource": "*",
     "Condition": {"StringEquals": {"aws:ResourceTag/owner": "alice"}}}]})
refused("UnauthorizedOperation", "deregister-image", "--image-id", imgs[0]["ImageId"], keys=owner)
aws("create-tags", "--resources", imgs[0]["ImageId"], "--tags", "Key=owner,Value=alice")
aws("deregister-image", "--image-id", imgs[0]["ImageId"], keys=owner)
aws("delete-snapshot", "--snapshot-id", in_use)
aws("delete-snapshot", "--snapshot-id", snap)
refused("InvalidAMIID.NotFound", "describe-images", "--image-ids", imgs[0]["ImageId"])
refused("InvalidSnapshot.NotFound", "delete-snapshot", "--snapshot-id", snap)
assert aws("enable-ebs-encryption-by-default")["EbsEncryptionByDefault"] is True
assert aws("get-ebs-encryption-by-default")["EbsEncryptionByDefault"] is True
assert aws("get-ebs-default-kms-key-id")["KmsKeyId"].startswith("arn:aws:kms:")

# boto3 parses the same documents.
ec2 = boto3.client("ec2", endpoint_url=ENDPOINT, region_name="us-east-1", verify=CA,
                   aws_access_key_id=ADMIN[0], aws_secret_access_key=ADMIN[1])
modelcheck.register(ec2)
assert len(ec2.describe_import_image_tasks()["ImportImageTasks"]) == 2
assert ec2.describe_export_image_tasks()["ExportImageTasks"][0]["Status"] == "completed"
try:
    ec2.import_image(DryRun=True, DiskContainers=[{"UserBucket": {"S3Bucket": "src", "S3Key": "debian.vmdk"}}])
    raise AssertionError("DryRun must fail")
except botocore.exceptions.ClientError as e:
    assert e.response["Error"]["Code"] == "DryRunOperation", e.response

# --- EC2 fidelity (issue 23): what botocore's model and EC2's documentation say ----------
def admin_in(account, *args):
    p = subprocess.run([VMIE, "--data-dir", DATA, "admin", *args], capture_output=True, text=True,
                       env=dict(os.environ, VMIE_ACCOUNT_ID=account))
    assert p.returncode == 0, p.stderr
    return p.stdout


kept_ami = [i for i in images.values() if i != imgs[0]["ImageId"]][0]
# Filters as the model serializes them (Filters.N for the import tasks), applied.
# (boto3: the cancel follows within milliseconds, while the large disk is still converting.)
x = fast.import_image(DiskContainers=[{"UserBucket": {"S3Bucket": "src", "S3Key": "big.qcow2"}}])
fast.cancel_import_task(ImportTaskId=x["ImportTaskId"])
wait("image", x["ImportTaskId"], want=("deleted",))
states = lambda *f: sorted(t["Status"] for t in aws("describe-import-image-tasks", "--filters", *f)["ImportImageTasks"])
assert states("Name=task-state,Values=completed") == ["completed", "completed"], "a cancelled task is not completed"
assert states("Name=task-state,Values=deleted") == ["deleted"]
refused("InvalidParameterValue", "describe-import-image-tasks", "--filters", "Name=colour,Values=x")
# ImportImage's other members reach the task and the image; tags reach image and snapshots.
r = aws("import-image", "--description", "fidelity", "--hypervisor", "xen",
        "--usage-operation", "RunInstances:0010",
        "--license-specifications", "LicenseConfigurationArn=arn:aws:license-manager:us-east-1:000000000000:license-configuration:lic-0123456789abcdef0123456789abcdef",
        "--disk-containers", "UserBucket={S3Bucket=src,S3Key=debian.vmdk}",
        "--tag-specifications", "ResourceType=image,Tags=[{Key=tier,Value=gold}]",
        "ResourceType=snapshot,Tags=[{Key=tier,Value=disk}]")
assert "BootMode" not in r, "ImportImageResult has no BootMode"
assert r["SnapshotDetails"][0]["DiskImageSize"] > 0 and r["SnapshotDetails"][0]["DeviceName"] == "/dev/sda1", r
assert r["Hypervisor"] == "xen" and r["Description"] == "fidelity" and r["UsageOperation"] == "RunInstances:0010", r
t = wait("image", r["ImportTaskId"])
assert t["LicenseType"] == "BYOL" and t["Encrypted"] is True and t["KmsKeyId"].startswith("arn:aws:kms:"), t
assert t["LicenseSpecifications"][0]["LicenseConfigurationArn"].startswith("arn:aws:license-manager:"), t
assert t["SnapshotDetails"][0]["DeviceName"] == "/dev/sda1", t
(fid,) = aws("describe-images", "--image-ids", t["ImageId"])["Images"]
assert fid["UsageOperation"] == "RunInstances:0010" and fid["Tags"] == [{"Key": "tier", "Value": "gold"}], fid
fsnap = fid["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
(fs,) = aws("describe-snapshots", "--snapshot-ids", fsnap)["Snapshots"]
assert fs["Tags"] == [{"Key": "tier", "Value": "disk"}] and fs["StorageTier"] == "standard", fs
assert fs["Encrypted"] is True and fs["KmsKeyId"] == t["KmsKeyId"], fs
# An image from a snapshot already stored (DiskContainer.SnapshotId).
r = aws("import-image", "--disk-containers", f"SnapshotId={fsnap}")
t2 = wait("image", r["ImportTaskId"])
(from_snap,) = aws("describe-images", "--image-ids", t2["ImageId"])["Images"]
assert from_snap["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"] != fsnap and t2["Platform"] == "Linux", t2
# Owners and ExecutableUsers, and the filters the model documents.
assert aws("describe-images", "--owners", "amazon")["Images"] == []
assert {i["ImageId"] for i in aws("describe-images", "--owners", "self")["Images"]} >= {t["ImageId"], kept_ami}
assert aws("describe-images", "--executable-users", "self")["Images"] == [], "nothing is shared with the admin"
for f in ("Name=owner-id,Values=000000000000", "Name=is-public,Values=false", "Name=root-device-type,Values=ebs",
          "Name=virtualization-type,Values=hvm", f"Name=block-device-mapping.snapshot-id,Values={fsnap}"):
    assert t["ImageId"] in {i["ImageId"] for i in aws("describe-images", "--filters", f)["Images"]}, f
assert [s["SnapshotId"] for s in aws("describe-snapshots", "--filters", f"Name=kms-key-id,Values={t['KmsKeyId']}",
                                     f"Name=snapshot-id,Values={fsnap}", "Name=owner-id,Values=000000000000")["Snapshots"]] == [fsnap]
# Error codes as EC2 answers them.
refused("InvalidAMIID.Malformed", "describe-images", "--image-ids", "ami-zzz")
refused("InvalidAMIID.Malformed", "deregister-image", "--image-id", "ami-zzz")
refused("InvalidSnapshotID.Malformed", "delete-snapshot", "--snapshot-id", "snap-zzz")
refused("InvalidConversionTaskId.Malformed", "cancel-import-task", "--import-task-id", "import-ami-zzz")
refused("InvalidAMIID.NotFound", "create-tags", "--resources", "ami-0123456789abcdef0", "--tags", "Key=a,Value=b")
refused("InvalidParameterValue", "describe-snapshots", "--max-results", "3")
refused("UnsupportedOperation", "describe-conversion-tasks")
refused("UnsupportedOperation", "create-instance-export-task", "--instance-id", "i-0123456789abcdef0",
        "--target-environment", "vmware", "--export-to-s3-task", "DiskImageFormat=VMDK,S3Bucket=out")
# Tools ask these first.
assert [r["RegionName"] for r in aws("describe-regions")["Regions"]] == ["us-east-1"]
assert aws("describe-availability-zones")["AvailabilityZones"][0]["State"] == "available"
assert {"Key": "tier", "Value": "gold", "ResourceId": t["ImageId"], "ResourceType": "image"} in \
    aws("describe-tags", "--filters", "Name=key,Values=tier")["Tags"]
# CopyImage re-encrypts under another key; the copy exports identical.
key = json.loads(subprocess.run([VMIE, "--data-dir", DATA, "kms", "create-key", "--description", "share"],
                                capture_output=True, text=True, check=True).stdout)["arn"]
c = aws("copy-image", "--source-region", "us-east-1", "--source-image-id", kept_ami, "--name", "reencrypted",
        "--encrypted", "--kms-key-id", key)
copy = c["ImageId"]
for _ in range(600):
    (ci,) = aws("describe-images", "--image-ids", copy)["Images"]
    if ci["State"] != "pending":
        break
    time.sleep(0.2)
assert ci["State"] == "available" and ci["SourceImageId"] == kept_ami, ci
assert ci["BlockDeviceMappings"][0]["Ebs"]["KmsKeyId"] == key, ci
xc = aws("export-image", "--image-id", copy, "--disk-image-format", "RAW", "--s3-export-location", "S3Bucket=out,S3Prefix=copies/")
wait("export", xc["ExportImageTaskId"])
subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw", RAW,
                os.path.join(DATA, "buckets", "out", "copies", xc["ExportImageTaskId"] + ".raw")], check=True)
# Sharing with a second account: it can describe and export the image, not deregister it, and
# loses it when the permission goes. Images under the service's own key cannot be shared.
OTHER = "222233334444"
admin_in(OTHER, "user", "create", "bob")
admin_in(OTHER, "policy", "put", "bob-ec2", "--document", json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "ec2:*", "Resource": "*"}]}))
admin_in(OTHER, "policy", "attach", "bob-ec2", "--user", "bob")
bk = json.loads(admin_in(OTHER, "access-key", "create", "bob", "--json"))
bob = (bk["AccessKeyId"], bk["SecretAccessKey"])
admin_in(OTHER, "role", "create", "vmimport")
admin_in(OTHER, "policy", "put", "bob-buckets", "--document", json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
admin_in(OTHER, "policy", "attach", "bob-buckets", "--role", "vmimport")
refused("InvalidAMIID.NotFound", "describe-images", "--image-ids", copy, keys=bob)
refused("InvalidParameter", "modify-image-attribute", "--image-id", kept_ami,
        "--launch-permission", f"Add=[{{UserId={OTHER}}}]")
aws("modify-image-attribute", "--image-id", copy, "--launch-permission", f"Add=[{{UserId={OTHER}}}]")
perms = aws("describe-image-attribute", "--image-id", copy, "--attribute", "launchPermission")
assert perms["LaunchPermissions"] == [{"UserId": OTHER}], perms
assert [i["ImageId"] for i in aws("describe-images", "--image-ids", copy, keys=bob)["Images"]] == [copy]
assert copy in [i["ImageId"] for i in aws("describe-images", "--executable-users", "self", keys=bob)["Images"]]
xb = aws("export-image", "--image-id", copy, "--disk-image-format", "RAW",
         "--s3-export-location", "S3Bucket=out,S3Prefix=bob/", keys=bob)
for _ in range(600):
    (bt,) = aws("describe-export-image-tasks", "--export-image-task-ids", xb["ExportImageTaskId"], keys=bob)["ExportImageTasks"]
    if bt["Status"] != "active":
        break
    time.sleep(0.2)
assert bt["Status"] == "completed", bt
subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw", RAW,
                os.path.join(DATA, "buckets", "out", "bob", xb["ExportImageTaskId"] + ".raw")], check=True)
refused("AuthFailure", "deregister-image", "--image-id", copy, keys=bob)
aws("modify-image-attribute", "--image-id", copy, "--launch-permission", f"Remove=[{{UserId={OTHER}}}]")
refused("InvalidAMIID.NotFound", "describe-images", "--image-ids", copy, keys=bob)
refused("InvalidAMIID.NotFound", "export-image", "--image-id", copy, "--disk-image-format", "RAW",
        "--s3-export-location", "S3Bucket=out,S3Prefix=bob/", keys=bob)
assert aws("describe-image-attribute", "--image-id", copy, "--attribute", "launchPermission")["LaunchPermissions"] == []
# CopySnapshot, and sharing a snapshot (createVolumePermission) likewise.
csrc = ci["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
cs = aws("copy-snapshot", "--source-region", "us-east-1", "--source-snapshot-id", csrc,
         "--description", "copy of a copy", "--encrypted", "--kms-key-id", key)["SnapshotId"]
for _ in range(600):
    (cst,) = aws("describe-snapshots", "--snapshot-ids", cs)["Snapshots"]
    if cst["State"] != "pending":
        break
    time.sleep(0.2)
assert cst["State"] == "completed" and cst["KmsKeyId"] == key, cst
aws("modify-snapshot-attribute", "--snapshot-id", cs, "--attribute", "createVolumePermission",
    "--operation-type", "add", "--user-ids", OTHER)
assert aws("describe-snapshot-attribute", "--snapshot-id", cs, "--attribute",
           "createVolumePermission")["CreateVolumePermissions"] == [{"UserId": OTHER}]
assert [x["SnapshotId"] for x in aws("describe-snapshots", "--restorable-by-user-ids", "self", keys=bob)["Snapshots"]] == [cs]
refused("AuthFailure", "delete-snapshot", "--snapshot-id", cs, keys=bob)
aws("reset-snapshot-attribute", "--snapshot-id", cs, "--attribute", "createVolumePermission")
refused("InvalidSnapshot.NotFound", "describe-snapshots", "--snapshot-ids", cs, keys=bob)
aws("reset-image-attribute", "--image-id", copy, "--attribute", "launchPermission")
# Deprecation and disabling.
aws("enable-image-deprecation", "--image-id", copy, "--deprecate-at", "2030-01-01T00:00:00Z")
assert aws("describe-images", "--image-ids", copy)["Images"][0]["DeprecationTime"].startswith("2030-01-01T00:00:00")
aws("disable-image-deprecation", "--image-id", copy)
assert "DeprecationTime" not in aws("describe-images", "--image-ids", copy)["Images"][0]
aws("disable-image", "--image-id", copy)
assert copy not in [i["ImageId"] for i in aws("describe-images")["Images"]]
assert aws("describe-images", "--include-disabled", "--image-ids", copy)["Images"][0]["State"] == "disabled"
refused("IncorrectState", "export-image", "--image-id", copy, "--disk-image-format", "RAW",
        "--s3-export-location", "S3Bucket=out")
aws("enable-image", "--image-id", copy)
assert aws("describe-images", "--image-ids", copy)["Images"][0]["State"] == "available"
refused("UnsupportedOperation", "describe-export-tasks")
refused("UnsupportedOperation", "cancel-export-task", "--export-task-id", "export-i-0123456789abcdef0")
# DeregisterImage can take the image's snapshots with it.
d = aws("deregister-image", "--image-id", t["ImageId"], "--delete-associated-snapshots")
assert d["DeleteSnapshotResults"] == [{"SnapshotId": fsnap, "ReturnCode": "success"}], d
refused("InvalidSnapshot.NotFound", "describe-snapshots", "--snapshot-ids", fsnap)

# --- refusals: each with its code, and nothing done ----------------------------------------
before = task_count()
disk = "UserBucket={S3Bucket=src,S3Key=debian.vmdk}"
# EC2 answers AuthFailure for a wrong secret and for an unknown key (the message says which).
refused("AuthFailure", "import-image", "--disk-containers", disk, keys=(ADMIN[0], "wrong-secret"))
refused("AuthFailure", "import-image", "--disk-containers", disk, keys=("AKIAAAAAAAAAAAAAAAAA", ADMIN[1]))
os.environ["AWS_SESSION_TOKEN"] = "not-issued-here"
refused("AuthFailure", "describe-images")
del os.environ["AWS_SESSION_TOKEN"]
readonly = new_user("reader", {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "ec2:Describe*", "Resource": "*"}]})
refused("UnauthorizedOperation", "import-image", "--disk-containers", disk, keys=readonly)
assert aws("describe-images", keys=readonly)["Images"] is not None
denied = new_user("denied", {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "ec2:*", "Resource": "*"},
    {"Effect": "Deny", "Action": "ec2:ImportImage", "Resource": "*"}]})
refused("UnauthorizedOperation", "import-image", "--disk-containers", disk, keys=denied)
refused("DryRunOperation", "import-snapshot", "--dry-run", "--disk-container", disk, keys=denied)
admin("role", "create", "limited")
admin("policy", "put", "limited", "--document", json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::other/*"}]}))
admin("policy", "attach", "limited", "--role", "limited")
err = aws("import-image", "--role-name", "limited", "--disk-containers", disk, ok=False)
assert "(InvalidParameter)" in err and "limited" in err, err
refused("InvalidParameter", "import-image", "--role-name", "nosuchrole", "--disk-containers", disk)
refused("InvalidParameter", "import-image", "--disk-containers", "UserBucket={S3Bucket=src,S3Key=missing.vmdk}")

# A request signed 20 minutes ago, by botocore.
creds = botocore.credentials.Credentials(*ADMIN)
req = botocore.awsrequest.AWSRequest(
    method="POST", url=ENDPOINT + "/", data="Action=DescribeImages&Version=2016-11-15",
    headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
old = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - datetime.timedelta(minutes=20)
with mock.patch("botocore.auth.get_current_datetime", return_value=old):
    botocore.auth.SigV4Auth(creds, "ec2", "us-east-1").add_auth(req)
ctx = ssl.create_default_context(cafile=CA)


def body_of(r):
    return r.body if isinstance(r.body, bytes) else r.body.encode()


def send(method, url, data=None, headers=None):
    r = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(r, context=ctx) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


status, body = send("POST", req.url, body_of(req), dict(req.headers.items()))
assert "<Code>RequestExpired</Code>" in body, (status, body)
# Tampered: the same request with another body.
req2 = botocore.awsrequest.AWSRequest(
    method="POST", url=ENDPOINT + "/", data="Action=DescribeImages&Version=2016-11-15",
    headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
botocore.auth.SigV4Auth(creds, "ec2", "us-east-1").add_auth(req2)
status, body = send("POST", req2.url, b"Action=DeregisterImage&Version=2016-11-15&ImageId=ami-1", dict(req2.headers.items()))
assert status == 401 and "<Code>AuthFailure</Code>" in body, (status, body)
status, body = send("POST", req2.url, body_of(req2), dict(req2.headers.items()))
assert status == 200 and "DescribeImagesResponse" in body, (status, body)
# Unsigned.
status, body = send("POST", ENDPOINT + "/", b"Action=DescribeImages&Version=2016-11-15",
                    {"Content-Type": "application/x-www-form-urlencoded"})
assert status == 401 and "<Code>AuthFailure</Code>" in body, (status, body)
# Too large: refused before anything else (and recorded like every other request).
status, body = send("POST", ENDPOINT + "/", b"A=" + b"x" * (2 << 20),
                    {"Content-Type": "application/x-www-form-urlencoded"})
assert status == 413 and "<Code>RequestEntityTooLarge</Code>" in body, (status, body)
# A presigned URL works until it expires, then is refused.
url = ec2.generate_presigned_url("describe_images", Params={}, ExpiresIn=2, HttpMethod="GET")
status, body = send("GET", url)
assert status == 200 and "DescribeImagesResponse" in body, (status, body)
time.sleep(3)
status, body = send("GET", url)
assert "<Code>RequestExpired</Code>" in body, (status, body)
# An action vmie does not serve.
req3 = botocore.awsrequest.AWSRequest(
    method="POST", url=ENDPOINT + "/", data="Action=RunInstances&Version=2016-11-15",
    headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
botocore.auth.SigV4Auth(creds, "ec2", "us-east-1").add_auth(req3)
status, body = send("POST", req3.url, body_of(req3), dict(req3.headers.items()))
assert status == 400 and "<Code>InvalidAction</Code>" in body, (status, body)

# MFA: a policy that requires it refuses plain keys and accepts session credentials issued
# by `aws sts get-session-token` with a TOTP code; a code is accepted once.
import base64, hashlib, hmac, struct, urllib.parse
mfa_user = new_user("mfauser", {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "ec2:Describe*", "Resource": "*",
     "Condition": {"Bool": {"aws:MultiFactorAuthPresent": "true"}}}]})
out = admin("mfa", "enable", "mfauser")
serial = out.split("SerialNumber:")[1].split()[0]
uri = out.split("URI:")[1].split()[0]
b32 = urllib.parse.parse_qs(urllib.parse.urlparse(uri).query)["secret"][0]
secret = base64.b32decode(b32 + "=" * (-len(b32) % 8))


def totp(t):
    h = hmac.new(secret, struct.pack(">Q", int(t) // 30), hashlib.sha1).digest()
    o = h[-1] & 15
    return "%06d" % ((struct.unpack(">I", h[o:o + 4])[0] & 0x7FFFFFFF) % 1000000)


def sts(*args, keys, ok=True):
    env = dict(os.environ, AWS_ACCESS_KEY_ID=keys[0], AWS_SECRET_ACCESS_KEY=keys[1],
               AWS_DEFAULT_REGION="us-east-1", AWS_CA_BUNDLE=CA, AWS_MAX_ATTEMPTS="1")
    p = subprocess.run(["aws", "--endpoint-url", ENDPOINT, "--output", "json", "sts", *args],
                       capture_output=True, text=True, env=env)
    if ok:
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)
    assert p.returncode != 0, p.stdout
    return p.stderr


refused("UnauthorizedOperation", "describe-images", keys=mfa_user)
plain = sts("get-session-token", keys=mfa_user)["Credentials"]
assert plain["AccessKeyId"].startswith("ASIA") and plain["Expiration"], plain
os.environ["AWS_SESSION_TOKEN"] = plain["SessionToken"]
refused("UnauthorizedOperation", "describe-images", keys=(plain["AccessKeyId"], plain["SecretAccessKey"]))
del os.environ["AWS_SESSION_TOKEN"]
code = totp(time.time())
err = sts("get-session-token", "--serial-number", serial, "--token-code", "000000" if code != "000000" else "111111",
          keys=mfa_user, ok=False)
assert "(AccessDenied)" in err, err
# One invalid code holds the device back for a second (crates/api/src/mfa.rs): wait that out.
time.sleep(1.5)
code = totp(time.time())
creds = sts("get-session-token", "--serial-number", serial, "--token-code", code,
            "--duration-seconds", "900", keys=mfa_user)["Credentials"]
err = sts("get-session-token", "--serial-number", serial, "--token-code", code, keys=mfa_user, ok=False)
assert "(AccessDenied)" in err, "a code is accepted once: " + err
os.environ["AWS_SESSION_TOKEN"] = creds["SessionToken"]
assert aws("describe-images", keys=(creds["AccessKeyId"], creds["SecretAccessKey"]))["Images"] is not None
refused("UnauthorizedOperation", "import-image", "--disk-containers", disk,
        keys=(creds["AccessKeyId"], creds["SecretAccessKey"]))
os.environ["AWS_SESSION_TOKEN"] = "x" + creds["SessionToken"][1:]
refused("AuthFailure", "describe-images", keys=(creds["AccessKeyId"], creds["SecretAccessKey"]))
del os.environ["AWS_SESSION_TOKEN"]

# The trust boundary (issue 17), from outside.
# The service role's bucket check follows the engine's own URL parser, whatever the spelling.
for url in ("S3://src/debian.vmdk", "s3://src/debian%2Evmdk", " s3://src/debian.vmdk"):
    err = aws("import-snapshot", "--role-name", "limited", "--disk-container",
              f"Format=VMDK,Url={url}", ok=False)
    assert "(InvalidParameter)" in err, (url, err)
# A tag-conditioned Deny cannot be undone by untagging; a Deny on an image's ARN stops tagging it.
kept = [i for i in images.values() if i != imgs[0]["ImageId"]][0]
aws("create-tags", "--resources", kept, "--tags", "Key=protected,Value=true")
guarded = new_user("guarded", {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "ec2:*", "Resource": "*"},
    {"Effect": "Deny", "Action": ["ec2:DeregisterImage", "ec2:DeleteTags", "ec2:CreateTags"],
     "Resource": "*", "Condition": {"StringEquals": {"aws:ResourceTag/protected": "true"}}}]})
refused("UnauthorizedOperation", "delete-tags", "--resources", kept, "--tags", "Key=protected", keys=guarded)
refused("UnauthorizedOperation", "deregister-image", "--image-id", kept, keys=guarded)
arn_denied = new_user("arndenied", {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "ec2:*", "Resource": "*"},
    {"Effect": "Deny", "Action": "ec2:CreateTags", "Resource": f"arn:aws:ec2:us-east-1::image/{kept}"}]})
refused("UnauthorizedOperation", "create-tags", "--resources", kept, "--tags", "Key=a,Value=b", keys=arn_denied)
assert {"Key": "protected", "Value": "true"} in aws("describe-images", "--image-ids", kept)["Images"][0]["Tags"]
# A signed query's %2B sent as + does not verify (it would act on another value).
signed = botocore.awsrequest.AWSRequest(
    method="GET", url=ENDPOINT + "/?Action=DescribeImages&Version=2016-11-15&ImageId.1=ami-aaa%2Bbbb")
botocore.auth.SigV4Auth(botocore.credentials.Credentials(*ADMIN), "ec2", "us-east-1").add_auth(signed)
status, body = send("GET", signed.url, None, dict(signed.headers.items()))
assert status == 400 and "InvalidAMIID" in body and "ami-aaa+bbb" in body, (status, body)
status, body = send("GET", signed.url.replace("%2B", "+"), None, dict(signed.headers.items()))
assert status == 401 and "<Code>AuthFailure</Code>" in body, (status, body)
# A parameter the action does not take is refused, not silently ignored.
bogus = botocore.awsrequest.AWSRequest(
    method="POST", url=ENDPOINT + "/", data="Action=DescribeImages&Version=2016-11-15&Bogus=1",
    headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
botocore.auth.SigV4Auth(botocore.credentials.Credentials(*ADMIN), "ec2", "us-east-1").add_auth(bogus)
status, body = send("POST", bogus.url, body_of(bogus), dict(bogus.headers.items()))
assert status == 400 and "<Code>UnknownParameter</Code>" in body, (status, body)

assert task_count() == before, "a refused request made a task"

# The remaining actions, so that every action of the API leaves its record.
kms_arn = aws("get-ebs-default-kms-key-id")["KmsKeyId"]
assert aws("modify-ebs-default-kms-key-id", "--kms-key-id", kms_arn)["KmsKeyId"] == kms_arn
assert aws("reset-ebs-default-kms-key-id")["KmsKeyId"].startswith("arn:aws:kms:")
assert aws("disable-ebs-encryption-by-default")["EbsEncryptionByDefault"] is False
assert aws("enable-ebs-encryption-by-default")["EbsEncryptionByDefault"] is True

# Values that must reach neither a log nor an activity record (tests/api_cli.rs searches).
TAG_VALUE, DESCRIPTION, QUERY = "TAGVALUE-5e1a-c0ffee", "DESC-91c0-private", "QUERYSECRET-77aa"
kept = [i for i in images.values() if i != imgs[0]["ImageId"]][0]
aws("create-tags", "--resources", kept, "--tags", f"Key=project,Value={TAG_VALUE}")
refused("InvalidParameterValue", "import-snapshot", "--description", DESCRIPTION, "--disk-container",
        f"Format=VMDK,Url=https://10.1.2.3/d.vmdk?X-Amz-Signature={QUERY}")

# KMS, IAM and STS on the same endpoint (tests/iam_kms_client.py): every action of theirs.
import iam_kms_client  # noqa: E402
iam_needles = iam_kms_client.run(ENDPOINT, CA, ADMIN, lambda t: wait("image", t))

# CloudTrail's LookupEvents, with the real aws CLI.
def trail(*args, keys=ADMIN, ok=True):
    env = dict(os.environ, AWS_ACCESS_KEY_ID=keys[0], AWS_SECRET_ACCESS_KEY=keys[1],
               AWS_DEFAULT_REGION="us-east-1", AWS_CA_BUNDLE=CA, AWS_MAX_ATTEMPTS="1", AWS_PAGER="")
    p = subprocess.run(["aws", "--endpoint-url", ENDPOINT, "--output", "json", "cloudtrail",
                        "lookup-events", *args], capture_output=True, text=True, env=env)
    if ok:
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)
    assert p.returncode != 0, p.stdout
    return p.stderr


def events(*attr):
    args = ["--lookup-attributes", f"AttributeKey={attr[0]},AttributeValue={attr[1]}"] if attr else []
    return [dict(e, Record=json.loads(e["CloudTrailEvent"])) for e in trail(*args)["Events"]]


imports = events("EventName", "ImportImage")
assert len(imports) >= 5, imports  # 2 imports, 2 idempotent repeats, refusals
ok_import = [e["Record"] for e in imports if e["Record"].get("errorCode") is None
             and "description" in e["Record"]["requestParameters"]][0]
assert ok_import["userIdentity"]["type"] == "IAMUser" and ok_import["userIdentity"]["userName"] == "admin"
assert ok_import["requestParameters"]["description"].startswith("HMAC-SHA256:"), ok_import
assert ok_import["responseElements"]["importTaskId"].startswith("import-ami-"), ok_import
assert ok_import["sourceIPAddress"] == "127.0.0.1" and ok_import["userAgent"].startswith("aws-cli/")
times = [e["EventTime"] for e in imports]
assert times == sorted(times, reverse=True), "newest first"
tagged = [e["Record"] for e in events("EventName", "CreateTags")]
assert any(r["requestParameters"]["tag"][0]["key"] == "project" for r in tagged), tagged
refusal = [e["Record"] for e in events("EventName", "ImportSnapshot") if e["Record"].get("errorCode") == "InvalidParameterValue"]
assert refusal and "10.1.2.3/d.vmdk" in json.dumps(refusal[0]), refusal
mfa_calls = [e["Record"] for e in events("AccessKeyId", creds["AccessKeyId"])
             if e["Record"]["userIdentity"]["type"] == "IAMUser"]
assert mfa_calls and all(r["userIdentity"]["sessionContext"]["attributes"]["mfaAuthenticated"] == "true"
                         for r in mfa_calls), mfa_calls
plain_calls = [e["Record"] for e in events("Username", "mfauser")
               if e["Record"]["userIdentity"]["accessKeyId"] == mfa_user[0]]
assert plain_calls and all(r["userIdentity"]["sessionContext"]["attributes"]["mfaAuthenticated"] == "false"
                           for r in plain_calls)
assert [e["EventName"] for e in events("EventName", "GetSessionToken")].count("GetSessionToken") >= 4
# A wrong secret: recorded in the key's account, with the key id and no identity.
failed_auth = [e["Record"] for e in events("AccessKeyId", ADMIN[0])
               if e["Record"].get("errorCode") == "AuthFailure"]
assert failed_auth and failed_auth[0]["userIdentity"]["type"] == "Unknown", failed_auth
page = trail("--max-results", "1", "--no-paginate")
assert len(page["Events"]) == 1 and page["NextToken"], page
second = trail("--max-results", "1", "--no-paginate", "--next-token", page["NextToken"])
assert second["Events"][0]["EventId"] != page["Events"][0]["EventId"]
assert trail("--start-time", "2001-01-01T00:00:00Z", "--end-time", "2001-01-02T00:00:00Z")["Events"] == []
assert "(InvalidLookupAttributesException)" in trail(
    "--lookup-attributes", "AttributeKey=Color,AttributeValue=x", ok=False)
assert "(AccessDeniedException)" in trail(keys=readonly, ok=False)
# KMS, IAM and STS calls are recorded like EC2's, under their own event sources; blobs and
# plaintexts only as present; an assumed role's calls under its session.
for source, name in [("kms.amazonaws.com", "CreateKey"), ("iam.amazonaws.com", "CreateUser"),
                     ("sts.amazonaws.com", "AssumeRole"), ("sts.amazonaws.com", "GetCallerIdentity")]:
    assert any(e["EventName"] == name for e in events("EventSource", source)), (source, name)
enc = [e["Record"] for e in events("EventName", "Encrypt") if e["Record"]["eventSource"] == "kms.amazonaws.com"
       and e["Record"].get("errorCode") is None
       and "encryptionContext" in (e["Record"]["requestParameters"] or {})]
assert enc and enc[0]["requestParameters"]["plaintext"] == "(present)", enc
assert enc[0]["requestParameters"]["encryptionContext"][0]["key"] == "purpose", enc
roles = [e["Record"] for e in events("EventName", "DescribeImages")
         if e["Record"]["userIdentity"]["type"] == "AssumedRole"]
assert roles and roles[0]["userIdentity"]["arn"].endswith("assumed-role/deployer/deploy-1"), roles
assert roles[0]["userIdentity"]["sessionContext"]["sessionIssuer"]["userName"] == "deployer", roles
assert roles[0]["userIdentity"]["sessionContext"]["attributes"]["mfaAuthenticated"] == "true", roles

# CloudTrail's trail actions: the deployment's trail, its status and keys; StopLogging and
# StartLogging only for a policy that allows them (in an account of their own, whose only
# calls while stopped are those two, which are recorded whatever the status).
def ct(*args, keys=ADMIN, ok=True):
    env = dict(os.environ, AWS_ACCESS_KEY_ID=keys[0], AWS_SECRET_ACCESS_KEY=keys[1],
               AWS_DEFAULT_REGION="us-east-1", AWS_CA_BUNDLE=CA, AWS_MAX_ATTEMPTS="1", AWS_PAGER="")
    p = subprocess.run(["aws", "--endpoint-url", ENDPOINT, "--output", "json", "cloudtrail", *args],
                       capture_output=True, text=True, env=env)
    if ok:
        assert p.returncode == 0, f"aws cloudtrail {' '.join(args)}: {p.stderr}"
        return json.loads(p.stdout) if p.stdout.strip() else {}
    assert p.returncode != 0, p.stdout
    return p.stderr


trails = ct("describe-trails")["trailList"]
assert [t["Name"] for t in trails] == ["vmie"] and trails[0]["S3BucketName"] == "trail", trails
assert trails[0]["LogFileValidationEnabled"] is True and trails[0]["HomeRegion"] == "us-east-1", trails
trail_arn = trails[0]["TrailARN"]
assert trail_arn == "arn:aws:cloudtrail:us-east-1:000000000000:trail/vmie", trail_arn
assert ct("get-trail", "--name", trail_arn)["Trail"]["TrailARN"] == trail_arn
assert ct("get-trail-status", "--name", "vmie")["IsLogging"] is True
assert "(TrailNotFoundException)" in ct("get-trail", "--name", "elsewhere", ok=False)
assert isinstance(ct("list-public-keys")["PublicKeyList"], list)
assert "(AccessDeniedException)" in ct("stop-logging", "--name", "vmie", keys=readonly, ok=False)
admin_in("111111111111", "user", "create", "auditor")
admin_in("111111111111", "policy", "put", "auditor", "--document", json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "cloudtrail:*", "Resource": "*"}]}))
admin_in("111111111111", "policy", "attach", "auditor", "--user", "auditor")
k = json.loads(admin_in("111111111111", "access-key", "create", "auditor", "--json"))
auditor = (k["AccessKeyId"], k["SecretAccessKey"])
assert ct("stop-logging", "--name", "vmie", keys=auditor) == {}
assert ct("start-logging", "--name", "vmie", keys=auditor) == {}
st = ct("get-trail-status", "--name", "vmie", keys=auditor)
assert st["IsLogging"] is True and st["StopLoggingTime"] <= st["StartLoggingTime"], st

status, body = send("GET", ENDPOINT + "/metrics")
assert status == 200 and 'vmie_tasks{kind="import-image",status="completed"} 5' in body, body
assert "vmie_auth_failures_total" in body
requests = int(body.split("\nvmie_requests_total ")[1].split()[0])
with open(os.path.join(DATA, "..", "checks.json"), "w") as f:
    json.dump({"requests": requests, "needles": [TAG_VALUE, DESCRIPTION, QUERY, creds["SecretAccessKey"],
               creds["SessionToken"], plain["SecretAccessKey"], mfa_user[1], readonly[1], b32,
               auditor[1]] + iam_needles}, f)
problems = sorted(set(json.loads(l) for l in open(MODELCHECK_LOG))) if os.path.exists(MODELCHECK_LOG) else []
assert not problems, "answers that differ from botocore's EC2 model:\n" + "\n".join(problems)
print("api client checks passed")
