"""Drives S3 on a running `vmie serve` with the real aws CLI and boto3 (run by tests/api_s3.rs).

Arguments: ENDPOINT CA_BUNDLE DATA_DIR RAW_DISK VMIE_BINARY
Environment: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY of the admin user.

The server trusts its own address for URL imports (--url-allow 127.0.0.1/32, --url-ca-file
its certificate), so a presigned URL of one of its objects can be imported.
"""

import base64
import hashlib
import json
import os
import subprocess
import sys
import time

import boto3
import botocore.config
import botocore.exceptions

ENDPOINT, CA, DATA, RAW, VMIE = sys.argv[1:6]
ADMIN = (os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])
WORK = os.path.dirname(os.path.abspath(DATA))
BUCKETS = os.path.join(DATA, "buckets")
# The aws CLI (v1) presigns with SigV2 unless told otherwise; vmie accepts SigV4 only.
AWS_CONFIG = os.path.join(WORK, "aws-config")
with open(AWS_CONFIG, "w") as f:
    f.write("[default]\ns3 =\n    signature_version = s3v4\n")
os.environ["AWS_CONFIG_FILE"] = AWS_CONFIG


def cli(*args, keys=ADMIN, ok=True):
    env = dict(os.environ, AWS_ACCESS_KEY_ID=keys[0], AWS_SECRET_ACCESS_KEY=keys[1],
               AWS_DEFAULT_REGION="us-east-1", AWS_CA_BUNDLE=CA, AWS_MAX_ATTEMPTS="1",
               AWS_PAGER="")
    p = subprocess.run(["aws", "--endpoint-url", ENDPOINT, "--output", "json", *args],
                       capture_output=True, text=True, env=env)
    if ok:
        assert p.returncode == 0, \
            f"aws {' '.join(args)}: exit {p.returncode}; stderr: {p.stderr}; stdout: {p.stdout[-2000:]}"
        out = p.stdout.strip()
        return json.loads(out) if out.startswith(("{", "[")) else out
    assert p.returncode != 0, f"aws {' '.join(args)} should have failed: {p.stdout}"
    return p.stderr


def ec2(*args):
    return cli("ec2", *args)


def wait(op, key, ids, task_id):
    for _ in range(1500):
        (t,) = ec2(op, ids, task_id)[key]
        if t["Status"] == "completed":
            return t
        assert t["Status"] == "active", t
        time.sleep(0.2)
    raise AssertionError(f"{task_id} did not end")


def admin(*args):
    p = subprocess.run([VMIE, "--data-dir", DATA, "admin", *args], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return p.stdout


def files_under(path):
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs)


def s3_etag(path, part=8 << 20):
    """The ETag S3 gives a file uploaded in `part`-byte parts."""
    md5s, n = b"", 0
    with open(path, "rb") as f:
        while True:
            b = f.read(part)
            if not b:
                break
            md5s += hashlib.md5(b).digest()
            n += 1
    return f'"{hashlib.md5(md5s).hexdigest()}-{n}"'


# --- buckets: mb, ls, HeadBucket, GetBucketLocation --------------------------------------
cli("s3", "mb", "s3://uploads")
assert "uploads" in cli("s3", "ls"), cli("s3", "ls")
assert os.path.isdir(os.path.join(BUCKETS, "uploads"))
assert "(BucketAlreadyOwnedByYou)" in cli("s3api", "create-bucket", "--bucket", "uploads", ok=False)
cli("s3api", "head-bucket", "--bucket", "uploads")
assert cli("s3api", "get-bucket-location", "--bucket", "uploads")["LocationConstraint"] is None

# --- a 1 GiB image (mostly holes) in parts, then import-image from it ----------------------
big = os.path.join(WORK, "big.raw")
subprocess.run(["qemu-img", "create", "-q", "-f", "raw", big, "1G"], check=True)
with open(RAW, "rb") as src, open(big, "r+b") as dst:
    dst.write(src.read())
    dst.seek((1 << 30) - 4096)
    dst.write(os.urandom(4096))
t0 = time.monotonic()
cli("s3", "cp", big, "s3://uploads/images/big.raw", "--only-show-errors",
    "--metadata", "owner=alice", "--content-type", "application/octet-stream")
upload_s = time.monotonic() - t0
head = cli("s3api", "head-object", "--bucket", "uploads", "--key", "images/big.raw")
assert head["ContentLength"] == 1 << 30, head
assert head["ETag"] == s3_etag(big), (head["ETag"], s3_etag(big))
assert head["Metadata"] == {"owner": "alice"}, head
assert head["ContentType"] == "application/octet-stream", head
# The object is the bucket's file: what import-image reads.
def same(a, b):
    with open(a, "rb") as x, open(b, "rb") as y:
        while True:
            p, q = x.read(1 << 20), y.read(1 << 20)
            if p != q:
                return False
            if not p:
                return True


assert same(big, os.path.join(BUCKETS, "uploads/images/big.raw"))
assert files_under(os.path.join(BUCKETS, ".vmie-uploads")) == [], "parts left after completion"
r = ec2("import-image", "--disk-containers",
        "Format=RAW,UserBucket={S3Bucket=uploads,S3Key=images/big.raw}")
t = wait("describe-import-image-tasks", "ImportImageTasks", "--import-task-ids", r["ImportTaskId"])
image = t["ImageId"]

# --- export-image, then aws s3 cp the export back and compare ------------------------------
e = ec2("export-image", "--image-id", image, "--disk-image-format", "RAW",
        "--s3-export-location", "S3Bucket=uploads,S3Prefix=exports/")
wait("describe-export-image-tasks", "ExportImageTasks", "--export-image-task-ids", e["ExportImageTaskId"])
listed = cli("s3api", "list-objects-v2", "--bucket", "uploads", "--prefix", "exports/")
keys = [o["Key"] for o in listed["Contents"]]
assert keys == [f"exports/{e['ExportImageTaskId']}.raw"], keys
back = os.path.join(WORK, "back.raw")
t0 = time.monotonic()
cli("s3", "cp", f"s3://uploads/{keys[0]}", back, "--only-show-errors")
download_s = time.monotonic() - t0
cmp = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw", big, back],
                     capture_output=True, text=True)
assert cmp.returncode == 0, cmp.stdout + cmp.stderr
print(f"1 GiB image: uploaded in {upload_s:.1f} s, its export downloaded in {download_s:.1f} s")

# --- a presigned URL of an object, imported as a Url -----------------------------------
cli("s3", "cp", RAW, "s3://uploads/images/small.raw", "--only-show-errors")
url = cli("s3", "presign", "s3://uploads/images/small.raw", "--expires-in", "600")
assert "X-Amz-Signature=" in url, url
r = ec2("import-image", "--disk-containers", f"Format=RAW,Url={url}")
wait("describe-import-image-tasks", "ImportImageTasks", "--import-task-ids", r["ImportTaskId"])

# --- uploads that fail or are aborted leave nothing ------------------------------------
up = cli("s3api", "create-multipart-upload", "--bucket", "uploads", "--key", "aborted.raw")["UploadId"]
part = os.path.join(WORK, "part.bin")
with open(part, "wb") as f:
    f.write(b"S3-BODY-MARKER" + os.urandom(6 << 20))
cli("s3api", "upload-part", "--bucket", "uploads", "--key", "aborted.raw", "--upload-id", up,
    "--part-number", "1", "--body", part)
parts = cli("s3api", "list-parts", "--bucket", "uploads", "--key", "aborted.raw", "--upload-id", up)
assert [p["PartNumber"] for p in parts["Parts"]] == [1], parts
# An interrupted upload is found again to resume (or abort) it.
pending = cli("s3api", "list-multipart-uploads", "--bucket", "uploads")
assert [(u["Key"], u["UploadId"]) for u in pending["Uploads"]] == [("aborted.raw", up)], pending
assert files_under(os.path.join(BUCKETS, ".vmie-uploads")), "the part is kept apart"
cli("s3api", "abort-multipart-upload", "--bucket", "uploads", "--key", "aborted.raw", "--upload-id", up)
assert files_under(os.path.join(BUCKETS, ".vmie-uploads")) == [], "parts left after abort"
assert not os.path.exists(os.path.join(BUCKETS, "uploads/aborted.raw"))
assert "Uploads" not in cli("s3api", "list-multipart-uploads", "--bucket", "uploads")
assert "(NoSuchUpload)" in cli("s3api", "list-parts", "--bucket", "uploads", "--key", "aborted.raw",
                               "--upload-id", up, ok=False)
# A body that does not match its Content-MD5: refused, nothing stored, no temporary file.
before = files_under(os.path.join(BUCKETS, "uploads"))
wrong = base64.b64encode(hashlib.md5(b"something else").digest()).decode()
assert "(BadDigest)" in cli("s3api", "put-object", "--bucket", "uploads", "--key", "bad.bin",
                            "--body", part, "--content-md5", wrong, ok=False)
assert files_under(os.path.join(BUCKETS, "uploads")) == before
right = base64.b64encode(hashlib.md5(open(part, "rb").read()).digest()).decode()
put = cli("s3api", "put-object", "--bucket", "uploads", "--key", "good.bin", "--body", part,
          "--content-md5", right)
assert put["ETag"] == '"' + hashlib.md5(open(part, "rb").read()).hexdigest() + '"', put

# --- boto3: ranges, copies, listings, deletes -----------------------------------------
s3 = boto3.client("s3", endpoint_url=ENDPOINT, region_name="us-east-1", verify=CA,
                  aws_access_key_id=ADMIN[0], aws_secret_access_key=ADMIN[1],
                  config=botocore.config.Config(signature_version="s3v4"))
got = s3.get_object(Bucket="uploads", Key="good.bin", Range="bytes=0-13")
assert got["Body"].read() == b"S3-BODY-MARKER" and got["ContentRange"].startswith("bytes 0-13/"), got
s3.copy_object(Bucket="uploads", Key="copies/good.bin", CopySource={"Bucket": "uploads", "Key": "good.bin"})
assert s3.head_object(Bucket="uploads", Key="copies/good.bin")["ETag"] == put["ETag"]
v1 = s3.list_objects(Bucket="uploads", Delimiter="/")
assert sorted(p["Prefix"] for p in v1["CommonPrefixes"]) == ["copies/", "exports/", "images/"], v1
assert sorted(o["Key"] for o in v1["Contents"]) == ["good.bin"], v1
pages = [p for p in s3.get_paginator("list_objects_v2").paginate(Bucket="uploads", PaginationConfig={"PageSize": 2})]
assert len(pages) >= 3 and sum(p["KeyCount"] for p in pages) == 5, pages
d = s3.delete_objects(Bucket="uploads", Delete={"Objects": [{"Key": "good.bin"}, {"Key": "copies/good.bin"}]})
assert sorted(x["Key"] for x in d["Deleted"]) == ["copies/good.bin", "good.bin"], d
try:
    s3.head_object(Bucket="uploads", Key="good.bin")
    raise AssertionError("deleted object still there")
except botocore.exceptions.ClientError as e:
    assert e.response["Error"]["Code"] in ("404", "NoSuchKey"), e.response

# --- a user who may only read ------------------------------------------------------------
admin("user", "create", "reader")
admin("policy", "put", "reader", "--document", json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": "*"}]}))
admin("policy", "attach", "reader", "--user", "reader")
k = json.loads(admin("access-key", "create", "reader", "--json"))
reader = (k["AccessKeyId"], k["SecretAccessKey"])
assert cli("s3", "ls", "s3://uploads/images/", keys=reader)
before = files_under(os.path.join(BUCKETS, "uploads"))
err = cli("s3", "cp", part, "s3://uploads/images/sneaky.bin", keys=reader, ok=False)
assert "AccessDenied" in err, err
assert "(AccessDenied)" in cli("s3", "rb", "s3://uploads", keys=reader, ok=False)
assert files_under(os.path.join(BUCKETS, "uploads")) == before
# A wrong secret is refused.
assert "SignatureDoesNotMatch" in cli("s3", "ls", keys=(ADMIN[0], "x" * 40), ok=False)

# --- encrypted at rest: SSE-KMS -----------------------------------------------------------
# The server marks the bucket "sealed" (VMIE_BUCKET_KEYS=sealed=alias/images): everything
# written there is sealed under that key; elsewhere, objects are sealed when asked.
key = cli("kms", "create-key", "--description", "images at rest")["KeyMetadata"]
cli("kms", "create-alias", "--alias-name", "alias/images", "--target-key-id", key["KeyId"])
cli("s3", "mb", "s3://sealed")
MARK = b"SSE-PLAINTEXT-MARKER-91c4"


def plaintext_at_rest(root):
    for p in files_under(root):
        with open(p, "rb") as f:
            if MARK in f.read():
                return p
    return None


blob = os.path.join(WORK, "sse.bin")
with open(blob, "wb") as f:
    f.write((MARK + os.urandom(4000)) * 3000)  # 12 MB: aws s3 cp uploads it in parts
cli("s3", "cp", blob, "s3://sealed/blob.bin", "--only-show-errors")
h = cli("s3api", "head-object", "--bucket", "sealed", "--key", "blob.bin")
assert h["ServerSideEncryption"] == "aws:kms" and h["SSEKMSKeyId"] == key["Arn"], h
assert h["ContentLength"] == os.path.getsize(blob), h
assert plaintext_at_rest(BUCKETS) is None, plaintext_at_rest(BUCKETS)
back = os.path.join(WORK, "sse-back.bin")
cli("s3", "cp", "s3://sealed/blob.bin", back, "--only-show-errors")
assert same(blob, back)
with open(blob, "rb") as f:
    f.seek(70000)
    want = f.read(100_000)
got = s3.get_object(Bucket="sealed", Key="blob.bin", Range="bytes=70000-169999")
assert got["Body"].read() == want and got["ServerSideEncryption"] == "aws:kms", got
listed = s3.list_objects_v2(Bucket="sealed")["Contents"]
assert [(o["Key"], o["Size"]) for o in listed] == [("blob.bin", os.path.getsize(blob))], listed
# Asked for per object in a bucket that is not marked: SSE-KMS under a named key, SSE-S3.
small = os.path.join(WORK, "sse-small.bin")
with open(small, "wb") as f:
    f.write(MARK * 10)
cli("s3", "mb", "s3://plain")
put = cli("s3api", "put-object", "--bucket", "plain", "--key", "kms.bin", "--body", small,
          "--server-side-encryption", "aws:kms", "--ssekms-key-id", "alias/images")
assert put["ServerSideEncryption"] == "aws:kms" and put["SSEKMSKeyId"] == key["Arn"], put
put = cli("s3api", "put-object", "--bucket", "plain", "--key", "s3.bin", "--body", small,
          "--server-side-encryption", "AES256")
assert put["ServerSideEncryption"] == "AES256", put
cli("s3api", "put-object", "--bucket", "plain", "--key", "clear.bin", "--body", small)
assert plaintext_at_rest(os.path.join(BUCKETS, "plain")) == os.path.join(BUCKETS, "plain/clear.bin")
for k in ("kms.bin", "s3.bin"):
    assert s3.get_object(Bucket="plain", Key=k)["Body"].read() == MARK * 10
# A copy out of the marked bucket into a plain one, stored as it comes.
s3.copy_object(Bucket="plain", Key="copy.bin", CopySource={"Bucket": "sealed", "Key": "blob.bin"})
assert "ServerSideEncryption" not in s3.head_object(Bucket="plain", Key="copy.bin")
assert same(blob, os.path.join(BUCKETS, "plain/copy.bin"))
# A reader allowed s3:GetObject but not kms:Decrypt on the key sees the object, not its bytes.
assert cli("s3api", "head-object", "--bucket", "sealed", "--key", "blob.bin", keys=reader)
err = cli("s3api", "get-object", "--bucket", "sealed", "--key", "blob.bin", back, keys=reader, ok=False)
assert "AccessDenied" in err, err
# An image in the marked bucket imports; its export there is sealed too.
disk = os.path.join(WORK, "sse-disk.raw")
with open(RAW, "rb") as src, open(disk, "wb") as dst:
    dst.write(src.read())
    dst.write(MARK + bytes((1 << 20) - len(MARK)))
cli("s3", "cp", disk, "s3://sealed/disk.raw", "--only-show-errors")
r = ec2("import-image", "--disk-containers", "Format=RAW,UserBucket={S3Bucket=sealed,S3Key=disk.raw}")
t = wait("describe-import-image-tasks", "ImportImageTasks", "--import-task-ids", r["ImportTaskId"])
e = ec2("export-image", "--image-id", t["ImageId"], "--disk-image-format", "RAW",
        "--s3-export-location", "S3Bucket=sealed,S3Prefix=exports/")
wait("describe-export-image-tasks", "ExportImageTasks", "--export-image-task-ids", e["ExportImageTaskId"])
exported = f"exports/{e['ExportImageTaskId']}.raw"
h = cli("s3api", "head-object", "--bucket", "sealed", "--key", exported)
assert h["ServerSideEncryption"] == "aws:kms" and h["SSEKMSKeyId"] == key["Arn"], h
assert plaintext_at_rest(BUCKETS) == os.path.join(BUCKETS, "plain/clear.bin"), plaintext_at_rest(BUCKETS)
cli("s3", "cp", f"s3://sealed/{exported}", back, "--only-show-errors")
cmp = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw", disk, back],
                     capture_output=True, text=True)
assert cmp.returncode == 0, cmp.stdout + cmp.stderr
cli("s3", "rb", "s3://sealed", "--force")
cli("s3", "rb", "s3://plain", "--force")

# --- rm, rb ------------------------------------------------------------------------------
assert "(BucketNotEmpty)" in cli("s3api", "delete-bucket", "--bucket", "uploads", ok=False)
cli("s3", "rm", "s3://uploads/images/big.raw")
cli("s3", "rm", "s3://uploads", "--recursive")
cli("s3", "rb", "s3://uploads")
assert "uploads" not in cli("s3", "ls")
assert not os.path.exists(os.path.join(BUCKETS, "uploads"))
print("s3 client checks passed")
