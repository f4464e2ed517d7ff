"""KMS, IAM and STS on the endpoint, with the real aws CLI and boto3 (called by
tests/api_client.py against its running `vmie serve`).

What a user of AWS VM Import/Export does without logging in to the server: makes a key and an
alias with `aws kms` and imports an image encrypted under that alias; gives a colleague a user,
an access key and a describe-only inline policy with `aws iam`, and checks with the colleague's
keys that describing works and importing is refused (as SimulatePrincipalPolicy says); checks who
they are with `aws sts get-caller-identity` as a user, a session and an assumed role (a role
whose trust policy wants MFA). Then every other KMS, IAM and STS action once, so that each
leaves its record in the activity log (api_cli.rs checks that every action of the table has one).
"""

import base64
import hashlib
import hmac
import json
import os
import struct
import subprocess
import time

import boto3
import botocore.exceptions

ACCOUNT = "000000000000"


def totp(secret, t):
    h = hmac.new(secret, struct.pack(">Q", int(t) // 30), hashlib.sha1).digest()
    o = h[-1] & 15
    return "%06d" % ((struct.unpack(">I", h[o:o + 4])[0] & 0x7FFFFFFF) % 1000000)


def run(endpoint, ca, admin_keys, wait_image):
    """Runs the checks; returns the secrets that must reach no record and no log."""

    def cli(service, *args, keys=admin_keys, token=None, ok=True):
        env = dict(os.environ, AWS_ACCESS_KEY_ID=keys[0], AWS_SECRET_ACCESS_KEY=keys[1],
                   AWS_DEFAULT_REGION="us-east-1", AWS_CA_BUNDLE=ca, AWS_MAX_ATTEMPTS="1",
                   AWS_PAGER="")
        env.pop("AWS_SESSION_TOKEN", None)
        if token:
            env["AWS_SESSION_TOKEN"] = token
        p = subprocess.run(["aws", "--endpoint-url", endpoint, "--output", "json", service, *args],
                           capture_output=True, text=True, env=env)
        if ok:
            assert p.returncode == 0, f"aws {service} {' '.join(args)}: {p.stderr}"
            return json.loads(p.stdout) if p.stdout.strip() else {}
        assert p.returncode != 0, f"aws {service} {' '.join(args)} should have failed: {p.stdout}"
        return p.stderr

    def client(service, keys=admin_keys, token=None):
        return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1", verify=ca,
                            aws_access_key_id=keys[0], aws_secret_access_key=keys[1],
                            aws_session_token=token)

    def refused(code, f, *a, **kw):
        try:
            f(*a, **kw)
        except botocore.exceptions.ClientError as e:
            assert e.response["Error"]["Code"] == code, (code, e.response["Error"])
            return e.response["Error"]["Message"]
        raise AssertionError(f"{f.__name__} should have been refused with {code}")

    needles = []
    kms = client("kms")
    iam = client("iam")

    # --- KMS: a key and an alias, then an import encrypted under the alias ------------------
    key = cli("kms", "create-key", "--description", "imports",
              "--tags", "TagKey=team,TagValue=blue")["KeyMetadata"]
    assert key["KeyState"] == "Enabled" and key["KeyManager"] == "CUSTOMER", key
    cli("kms", "create-alias", "--alias-name", "alias/imports", "--target-key-id", key["KeyId"])
    r = subprocess.run(
        ["aws", "--endpoint-url", endpoint, "--output", "json", "ec2", "import-image",
         "--encrypted", "--kms-key-id", "alias/imports",
         "--disk-containers", "UserBucket={S3Bucket=src,S3Key=debian.vmdk}"],
        capture_output=True, text=True,
        env=dict(os.environ, AWS_ACCESS_KEY_ID=admin_keys[0], AWS_SECRET_ACCESS_KEY=admin_keys[1],
                 AWS_DEFAULT_REGION="us-east-1", AWS_CA_BUNDLE=ca, AWS_MAX_ATTEMPTS="1"))
    assert r.returncode == 0, r.stderr
    task = wait_image(json.loads(r.stdout)["ImportTaskId"])
    snap_id = task["SnapshotDetails"][0]["SnapshotId"]
    ec2 = client("ec2")
    (snap,) = ec2.describe_snapshots(SnapshotIds=[snap_id])["Snapshots"]
    assert snap["Encrypted"] and snap["KmsKeyId"] == key["Arn"], snap

    described = kms.describe_key(KeyId="alias/imports")["KeyMetadata"]
    assert described["KeyId"] == key["KeyId"], described
    assert key["KeyId"] in [k["KeyId"] for k in kms.list_keys()["Keys"]]
    aliases = kms.list_aliases(KeyId=key["KeyId"])["Aliases"]
    assert [a["AliasName"] for a in aliases] == ["alias/imports"], aliases
    assert kms.list_resource_tags(KeyId=key["KeyId"])["Tags"] == [{"TagKey": "team", "TagValue": "blue"}]
    kms.tag_resource(KeyId=key["KeyId"], Tags=[{"TagKey": "env", "TagValue": "test"}])
    kms.untag_resource(KeyId=key["KeyId"], TagKeys=["env"])
    assert len(kms.list_resource_tags(KeyId=key["KeyId"])["Tags"]) == 1
    secret_text = b"KMSPLAINTEXT-3f7c-secret"
    needles.append(secret_text.decode())
    blob = kms.encrypt(KeyId="alias/imports", Plaintext=secret_text,
                       EncryptionContext={"purpose": "test"})["CiphertextBlob"]
    back = kms.decrypt(CiphertextBlob=blob, EncryptionContext={"purpose": "test"})
    assert back["Plaintext"] == secret_text and back["KeyId"] == key["Arn"], back
    refused("InvalidCiphertextException", kms.decrypt, CiphertextBlob=blob)
    dk = kms.generate_data_key(KeyId=key["KeyId"], KeySpec="AES_256")
    assert len(dk["Plaintext"]) == 32 and kms.decrypt(CiphertextBlob=dk["CiphertextBlob"])["Plaintext"] == dk["Plaintext"]
    needles.append(base64.b64encode(dk["Plaintext"]).decode())
    policy = json.loads(kms.get_key_policy(KeyId=key["KeyId"], PolicyName="default")["Policy"])
    kms.enable_key_rotation(KeyId=key["KeyId"])
    assert kms.get_key_rotation_status(KeyId=key["KeyId"])["KeyRotationEnabled"] is True
    kms.rotate_key_on_demand(KeyId=key["KeyId"])
    kms.disable_key_rotation(KeyId=key["KeyId"])
    # Old ciphertexts still decrypt after a rotation.
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext={"purpose": "test"})["Plaintext"] == secret_text

    # A second key: states, deletion, alias moves, and a key policy that refuses a user
    # whom IAM allows.
    other = kms.create_key(Description="other")["KeyMetadata"]
    kms.update_alias(AliasName="alias/imports", TargetKeyId=other["KeyId"])
    assert kms.describe_key(KeyId="alias/imports")["KeyMetadata"]["KeyId"] == other["KeyId"]
    kms.update_alias(AliasName="alias/imports", TargetKeyId=key["KeyId"])
    kms.create_alias(AliasName="alias/other", TargetKeyId=other["KeyId"])
    kms.delete_alias(AliasName="alias/other")
    refused("NotFoundException", kms.describe_key, KeyId="alias/other")
    kms.disable_key(KeyId=other["KeyId"])
    refused("DisabledException", kms.encrypt, KeyId=other["KeyId"], Plaintext=b"x")
    kms.enable_key(KeyId=other["KeyId"])
    d = kms.schedule_key_deletion(KeyId=other["KeyId"], PendingWindowInDays=7)
    assert d["KeyState"] == "PendingDeletion", d
    refused("KMSInvalidStateException", kms.encrypt, KeyId=other["KeyId"], Plaintext=b"x")
    kms.cancel_key_deletion(KeyId=other["KeyId"])
    kms.enable_key(KeyId=other["KeyId"])
    refused("NotFoundException", kms.describe_key, KeyId="11111111-2222-3333-4444-555555555555")

    # --- IAM: a colleague with describe-only rights, with the aws CLI -----------------------
    cli("iam", "create-user", "--user-name", "colleague")
    made = cli("iam", "create-access-key", "--user-name", "colleague")["AccessKey"]
    colleague = (made["AccessKeyId"], made["SecretAccessKey"])
    needles.append(colleague[1])
    describe_only = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["ec2:Describe*", "kms:Encrypt", "kms:DescribeKey"],
         "Resource": "*"}]}
    cli("iam", "put-user-policy", "--user-name", "colleague", "--policy-name", "describe-only",
        "--policy-document", json.dumps(describe_only))
    assert "Images" in cli("ec2", "describe-images", keys=colleague)
    err = cli("ec2", "import-image", "--disk-containers",
              "UserBucket={S3Bucket=src,S3Key=debian.vmdk}", keys=colleague, ok=False)
    assert "(UnauthorizedOperation)" in err and "ec2:ImportImage" in err, err
    sim = cli("iam", "simulate-principal-policy", "--policy-source-arn",
              f"arn:aws:iam::{ACCOUNT}:user/colleague",
              "--action-names", "ec2:DescribeImages", "ec2:ImportImage")["EvaluationResults"]
    assert [(s["EvalActionName"], s["EvalDecision"]) for s in sim] == [
        ("ec2:DescribeImages", "allowed"), ("ec2:ImportImage", "implicitDeny")], sim
    me = cli("sts", "get-caller-identity", keys=colleague)
    assert me["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/colleague" and me["Account"] == ACCOUNT, me
    assert me["UserId"].startswith("AIDA"), me
    # The key policy also decides: IAM allows the colleague kms:Encrypt, the key's policy
    # (after this) does not.
    ck = client("kms", colleague)
    assert ck.describe_key(KeyId=other["KeyId"])["KeyMetadata"]["KeyId"] == other["KeyId"]
    ck.encrypt(KeyId=other["KeyId"], Plaintext=b"x")
    no_colleague = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "kms:*", "Resource": "*"},
        {"Effect": "Deny", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/colleague"},
         "Action": "kms:Encrypt", "Resource": "*"}]}
    kms.put_key_policy(KeyId=other["KeyId"], PolicyName="default", Policy=json.dumps(no_colleague))
    refused("AccessDeniedException", ck.encrypt, KeyId=other["KeyId"], Plaintext=b"x")
    # And IAM decides first: no kms:GenerateDataKey for the colleague.
    msg = refused("AccessDeniedException", ck.generate_data_key, KeyId=key["KeyId"])
    assert "kms:GenerateDataKey" in msg and key["Arn"] in msg, msg
    assert policy["Statement"][0]["Principal"]["AWS"] == f"arn:aws:iam::{ACCOUNT}:root"

    # A session of the colleague (get-session-token), seen by get-caller-identity.
    sess = cli("sts", "get-session-token", keys=colleague)["Credentials"]
    needles += [sess["SecretAccessKey"], sess["SessionToken"]]
    me = cli("sts", "get-caller-identity", keys=(sess["AccessKeyId"], sess["SecretAccessKey"]),
             token=sess["SessionToken"])
    assert me["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/colleague", me

    # --- Access keys ---------------------------------------------------------------------
    keys = iam.list_access_keys(UserName="colleague")["AccessKeyMetadata"]
    assert [k["AccessKeyId"] for k in keys] == [colleague[0]] and keys[0]["Status"] == "Active"
    used = iam.get_access_key_last_used(AccessKeyId=colleague[0])
    assert used["UserName"] == "colleague" and "LastUsedDate" in used["AccessKeyLastUsed"], used
    iam.update_access_key(UserName="colleague", AccessKeyId=colleague[0], Status="Inactive")
    assert "(InvalidClientTokenId)" in cli("sts", "get-caller-identity", keys=colleague, ok=False)
    iam.update_access_key(UserName="colleague", AccessKeyId=colleague[0], Status="Active")
    assert iam.get_user(UserName="colleague")["User"]["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/colleague"
    assert iam.get_user()["User"]["UserName"] == "admin"
    assert {"admin", "colleague"} <= {u["UserName"] for u in iam.list_users()["Users"]}
    refused("NoSuchEntity", iam.get_user, UserName="nobody")
    refused("EntityAlreadyExists", iam.create_user, UserName="colleague")
    iam.create_user(UserName="temp")
    tk = iam.create_access_key(UserName="temp")["AccessKey"]
    needles.append(tk["SecretAccessKey"])
    refused("DeleteConflict", iam.delete_user, UserName="temp")
    iam.delete_access_key(UserName="temp", AccessKeyId=tk["AccessKeyId"])
    iam.delete_user(UserName="temp")
    refused("NoSuchEntity", iam.get_user, UserName="temp")
    # The colleague cannot manage identities.
    refused("AccessDenied", client("iam", colleague).create_user, UserName="mallory")

    # --- Console passwords (login profiles): argon2id hashes, the password never recorded ---
    pw = "Colleague-console-1"
    needles.append(pw)
    lp = iam.create_login_profile(UserName="colleague", Password=pw, PasswordResetRequired=True)["LoginProfile"]
    assert lp["UserName"] == "colleague" and lp["PasswordResetRequired"] is True, lp
    assert iam.get_login_profile(UserName="colleague")["LoginProfile"]["PasswordResetRequired"] is True
    refused("EntityAlreadyExists", iam.create_login_profile, UserName="colleague", Password=pw)
    refused("PasswordPolicyViolation", iam.update_login_profile, UserName="colleague", Password="short")
    refused("NoSuchEntity", iam.create_login_profile, UserName="nobody", Password=pw)
    iam.update_login_profile(UserName="colleague", Password=pw + "x", PasswordResetRequired=False)
    needles.append(pw + "x")
    assert iam.get_login_profile(UserName="colleague")["LoginProfile"]["PasswordResetRequired"] is False
    refused("AccessDenied", client("iam", colleague).get_login_profile, UserName="colleague")
    iam.delete_login_profile(UserName="colleague")
    refused("NoSuchEntity", iam.get_login_profile, UserName="colleague")

    # --- Managed policies and attachments --------------------------------------------------
    doc = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["ec2:Describe*", "kms:*"], "Resource": "*"}]}
    p = iam.create_policy(PolicyName="describers", PolicyDocument=json.dumps(doc))["Policy"]
    arn = p["Arn"]
    assert arn == f"arn:aws:iam::{ACCOUNT}:policy/describers" and p["DefaultVersionId"] == "v1", p
    assert iam.get_policy(PolicyArn=arn)["Policy"]["AttachmentCount"] == 0
    v = iam.get_policy_version(PolicyArn=arn, VersionId="v1")["PolicyVersion"]
    assert v["Document"] == doc and v["IsDefaultVersion"], v
    assert "describers" in [x["PolicyName"] for x in iam.list_policies(Scope="Local")["Policies"]]
    iam.attach_user_policy(UserName="colleague", PolicyArn=arn)
    assert iam.list_attached_user_policies(UserName="colleague")["AttachedPolicies"] == [
        {"PolicyName": "describers", "PolicyArn": arn}]
    refused("DeleteConflict", iam.delete_policy, PolicyArn=arn)
    iam.detach_user_policy(UserName="colleague", PolicyArn=arn)
    assert iam.list_user_policies(UserName="colleague")["PolicyNames"] == ["describe-only"]
    assert iam.get_user_policy(UserName="colleague", PolicyName="describe-only")["PolicyDocument"] == describe_only
    iam.put_user_policy(UserName="colleague", PolicyName="extra", PolicyDocument=json.dumps(doc))
    iam.delete_user_policy(UserName="colleague", PolicyName="extra")

    # --- A role whose trust policy wants MFA, assumed with the aws CLI ------------------------
    operator_doc = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": f"arn:aws:iam::{ACCOUNT}:role/deployer"}]}
    iam.create_user(UserName="operator")
    iam.put_user_policy(UserName="operator", PolicyName="assume", PolicyDocument=json.dumps(operator_doc))
    ok = iam.create_access_key(UserName="operator")["AccessKey"]
    operator = (ok["AccessKeyId"], ok["SecretAccessKey"])
    needles.append(operator[1])
    trust = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/operator"},
         "Action": "sts:AssumeRole", "Condition": {"Bool": {"aws:MultiFactorAuthPresent": "true"}}}]}
    role = cli("iam", "create-role", "--role-name", "deployer", "--assume-role-policy-document",
               json.dumps({"Version": "2012-10-17", "Statement": [
                   {"Effect": "Allow", "Principal": {"AWS": ACCOUNT}, "Action": "sts:AssumeRole"}]}),
               "--description", "deploys")["Role"]
    assert role["Arn"] == f"arn:aws:iam::{ACCOUNT}:role/deployer" and role["RoleId"].startswith("AROA"), role
    iam.update_assume_role_policy(RoleName="deployer", PolicyDocument=json.dumps(trust))
    assert iam.get_role(RoleName="deployer")["Role"]["AssumeRolePolicyDocument"] == trust
    assert "deployer" in [r["RoleName"] for r in iam.list_roles()["Roles"]]
    iam.attach_role_policy(RoleName="deployer", PolicyArn=arn)
    assert iam.list_attached_role_policies(RoleName="deployer")["AttachedPolicies"][0]["PolicyArn"] == arn
    iam.put_role_policy(RoleName="deployer", PolicyName="inline", PolicyDocument=json.dumps(doc))
    assert iam.list_role_policies(RoleName="deployer")["PolicyNames"] == ["inline"]
    assert iam.get_role_policy(RoleName="deployer", PolicyName="inline")["PolicyDocument"] == doc
    iam.delete_role_policy(RoleName="deployer", PolicyName="inline")
    sim = iam.simulate_principal_policy(
        PolicySourceArn=f"arn:aws:iam::{ACCOUNT}:role/deployer",
        ActionNames=["kms:Decrypt", "ec2:ImportImage"], ResourceArns=[key["Arn"]])["EvaluationResults"]
    assert [s["EvalDecision"] for s in sim] == ["allowed", "implicitDeny"], sim

    # The operator's virtual MFA device: made, enabled with two consecutive codes.
    dev = iam.create_virtual_mfa_device(VirtualMFADeviceName="operator-phone")["VirtualMFADevice"]
    serial = dev["SerialNumber"]
    assert serial == f"arn:aws:iam::{ACCOUNT}:mfa/operator-phone", dev
    seed = dev["Base32StringSeed"].decode()
    needles.append(seed)
    secret = base64.b32decode(seed + "=" * (-len(seed) % 8))
    assert [d["SerialNumber"] for d in iam.list_virtual_mfa_devices(AssignmentStatus="Unassigned")["VirtualMFADevices"]] == [serial]
    now = time.time()
    refused("InvalidAuthenticationCode", iam.enable_mfa_device, UserName="operator", SerialNumber=serial,
            AuthenticationCode1=totp(secret, now), AuthenticationCode2=totp(secret, now))
    iam.enable_mfa_device(UserName="operator", SerialNumber=serial,
                          AuthenticationCode1=totp(secret, now), AuthenticationCode2=totp(secret, now + 30))
    assert [d["SerialNumber"] for d in iam.list_mfa_devices(UserName="operator")["MFADevices"]] == [serial]
    assigned = iam.list_virtual_mfa_devices(AssignmentStatus="Assigned")["VirtualMFADevices"]
    assert any(d["SerialNumber"] == serial and d["User"]["UserName"] == "operator" for d in assigned), assigned
    refused("DeleteConflict", iam.delete_virtual_mfa_device, SerialNumber=serial)

    # Without MFA the trust policy refuses; with a fresh code it allows. (The codes of the
    # enabling steps are spent: wait for the next one.)
    err = cli("sts", "assume-role", "--role-arn", role["Arn"], "--role-session-name", "plain",
              keys=operator, ok=False)
    assert "(AccessDenied)" in err, err
    spent = int(now + 30) // 30
    while int(time.time()) // 30 < spent:
        time.sleep(0.5)
    code = totp(secret, time.time() + 30)
    got = cli("sts", "assume-role", "--role-arn", role["Arn"], "--role-session-name", "deploy-1",
              "--serial-number", serial, "--token-code", code, "--duration-seconds", "900",
              keys=operator)
    c = got["Credentials"]
    needles += [c["SecretAccessKey"], c["SessionToken"]]
    assert got["AssumedRoleUser"]["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/deployer/deploy-1", got
    role_keys = (c["AccessKeyId"], c["SecretAccessKey"])
    me = cli("sts", "get-caller-identity", keys=role_keys, token=c["SessionToken"])
    assert me["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/deployer/deploy-1", me
    assert me["UserId"] == got["AssumedRoleUser"]["AssumedRoleId"], me
    # The temporary credentials work on every service of the endpoint, within the role's rights.
    assert "Images" in cli("ec2", "describe-images", keys=role_keys, token=c["SessionToken"])
    assert cli("kms", "describe-key", "--key-id", "alias/imports", keys=role_keys,
               token=c["SessionToken"])["KeyMetadata"]["KeyId"] == key["KeyId"]
    err = cli("iam", "list-users", keys=role_keys, token=c["SessionToken"], ok=False)
    assert "(AccessDenied)" in err and "assumed-role/deployer/deploy-1" in err, err
    err = cli("ec2", "import-image", "--disk-containers", "UserBucket={S3Bucket=src,S3Key=debian.vmdk}",
              keys=role_keys, token=c["SessionToken"], ok=False)
    assert "(UnauthorizedOperation)" in err, err

    # The device's life ends: deactivated, deleted. Roles and policies deleted when bare.
    iam.deactivate_mfa_device(UserName="operator", SerialNumber=serial)
    assert iam.list_mfa_devices(UserName="operator")["MFADevices"] == []
    iam.delete_virtual_mfa_device(SerialNumber=serial)
    refused("DeleteConflict", iam.delete_role, RoleName="deployer")
    iam.detach_role_policy(RoleName="deployer", PolicyArn=arn)
    iam.delete_role(RoleName="deployer")
    refused("NoSuchEntity", iam.get_role, RoleName="deployer")
    iam.delete_policy(PolicyArn=arn)
    refused("NoSuchEntity", iam.get_policy, PolicyArn=arn)
    return needles
