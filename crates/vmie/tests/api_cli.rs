//! `vmie serve` driven by the real aws CLI and boto3 (installed from PyPI by `.ci/run`):
//! import-image from a bucket (VMDK and OVA), import-snapshot, describe with ids, filters and
//! pages, cancel, export (checked with `qemu-img compare`), images and snapshots, tags,
//! deregister, delete; and the refusals: wrong secret, unknown key, expired and tampered
//! signatures, an expired presigned URL, a user without `ec2:ImportImage`, an explicit deny,
//! a service role that may not read the bucket — each with its EC2 error code and nothing
//! done. The checks themselves are in `tests/api_client.py`.

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation, missing_docs)]

#[path = "../../engine/tests/harness/mod.rs"]
mod harness;
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use testkit::ToolExt;

use harness::*;
use support::{free_port, terminate, vmie, wait_port};

const MARKER: &str = "VMIE-API-MARKER-c41d09";

struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every record of the log, through `vmie trail lookup`.
fn records(data: &std::path::Path) -> Vec<serde_json::Value> {
    let o = vmie(data, &["trail", "lookup"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The activity log after the API suite: one record per request the server answered, task
/// and key records, nothing secret in any record or log, and `vmie trail verify` catching
/// every kind of tampering.
fn activity_log(work: &std::path::Path, data: &std::path::Path, secrets: &[&str]) {
    let checks: serde_json::Value =
        serde_json::from_slice(&std::fs::read(work.join("checks.json")).unwrap()).unwrap();
    let all = records(data);
    let calls: Vec<&serde_json::Value> = all
        .iter()
        .filter(|r| {
            r["vmieNode"] == "api-test"
                && r["eventType"] == "AwsApiCall"
                && r["userIdentity"]["invokedBy"].is_null()
        })
        .collect();
    // One record per request: as many as the server counted, each with its own request id.
    assert_eq!(
        calls.len() as u64,
        checks["requests"].as_u64().unwrap(),
        "records of API calls versus requests answered"
    );
    let ids: std::collections::HashSet<&str> = calls
        .iter()
        .map(|r| r["requestID"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), calls.len(), "request ids are unique");
    let names: std::collections::HashSet<&str> = calls
        .iter()
        .map(|r| r["eventName"].as_str().unwrap())
        .collect();
    // S3's rows are exercised, and their records checked, by tests/api_s3.rs.
    for action in api::action::TABLE
        .iter()
        .filter(|s| s.service != api::action::Service::S3)
        .map(|s| s.name)
        .chain(["UnknownAction"])
    {
        assert!(names.contains(action), "no record of {action}");
    }
    for r in &calls {
        for field in [
            "eventVersion",
            "eventTime",
            "eventSource",
            "awsRegion",
            "sourceIPAddress",
            "userAgent",
            "userIdentity",
            "requestParameters",
            "responseElements",
            "requestID",
            "eventID",
            "readOnly",
            "managementEvent",
        ] {
            assert!(r.get(field).is_some(), "{field} missing from {r}");
        }
    }
    // Task state changes and key usage.
    let task_events: Vec<_> = all
        .iter()
        .filter(|r| r["eventName"] == "TaskStateChange")
        .collect();
    for e in ["claimed", "stage", "completed", "cancelled"] {
        assert!(
            task_events
                .iter()
                .any(|r| r["serviceEventDetails"]["event"] == e),
            "no task event {e}"
        );
    }
    assert!(
        all.iter().any(|r| r["eventSource"] == "kms.amazonaws.com"
            && r["eventName"] == "GenerateDataKey"),
        "no key usage recorded"
    );
    assert!(
        all.iter().any(|r| r["eventSource"] == "iam.amazonaws.com"
            && r["eventName"] == "EnableMFADevice"),
        "administrative commands are recorded"
    );

    // Secrets, the URL's query string, the tag value and the description: in no record, no
    // log; secrets and the query string nowhere in the data folder outside the buckets.
    let mut needles: Vec<String> = checks["needles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    needles.extend(secrets.iter().map(|s| s.to_string()));
    let text = serde_json::to_string(&all).unwrap();
    let log = std::fs::read_to_string(work.join("server.log")).unwrap();
    for n in &needles {
        assert!(!text.contains(n.as_str()), "{n} is in an activity record");
        assert!(!log.contains(n.as_str()), "{n} is in the service log");
    }
    for n in needles
        .iter()
        .filter(|n| !n.starts_with("TAGVALUE") && !n.starts_with("DESC"))
    {
        let hits = files_containing(data, n.as_bytes(), &data.join("buckets"));
        assert!(hits.is_empty(), "{n} in {hits:?}");
    }

    // Tampering, each kind caught by `vmie trail verify` (and the log intact once undone).
    let verify = || {
        let o = vmie(data, &["trail", "verify"]);
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    let (ok, out) = verify();
    assert!(ok && out.contains("intact"), "{out}");
    let node = data.join("objects/trail");
    let digest = |n: u64| node.join(format!("digests/api-test/{n:016}.json"));
    // The first log file (in the trail bucket) each node digest covers.
    let batch = |n: u64| {
        let d: serde_json::Value =
            serde_json::from_slice(&std::fs::read(digest(n)).unwrap()).unwrap();
        data.join("buckets/trail")
            .join(d["body"]["files"][0]["key"].as_str().unwrap())
    };
    let last = (1..).take_while(|n| digest(*n).exists()).last().unwrap();
    assert!(last >= 3, "several batches were written ({last})");
    let (batch1, batch2, batch_last) = (batch(1), batch(2), batch(last));
    let inserted = batch_last.with_file_name(
        "000000000000_CloudTrail_us-east-1_20260101T0000Z_INSERTEDxxxxxxxx.json.gz",
    );
    let keep = |p: &std::path::Path| std::fs::read(p).unwrap();
    let (b1, b2, d2, dl, bl) = (
        keep(&batch1),
        keep(&batch2),
        keep(&digest(2)),
        keep(&digest(last)),
        keep(&batch_last),
    );
    type Step<'a> = Box<dyn Fn() + 'a>;
    let cases: Vec<(String, Step, Step)> = vec![
        (
            "content changed (altered)".to_string(),
            Box::new(|| {
                let mut b = b2.clone();
                let i = b.len() / 2;
                b[i] ^= 1;
                std::fs::write(&batch2, b).unwrap();
            }),
            Box::new(|| std::fs::write(&batch2, &b2).unwrap()),
        ),
        (
            "digests 2 to 2 are missing (deleted)".to_string(),
            Box::new(|| std::fs::remove_file(digest(2)).unwrap()),
            Box::new(|| std::fs::write(digest(2), &d2).unwrap()),
        ),
        (
            "content changed (altered)".to_string(),
            Box::new(|| {
                std::fs::write(&batch1, &b2).unwrap();
                std::fs::write(&batch2, &b1).unwrap();
            }),
            Box::new(|| {
                std::fs::write(&batch1, &b1).unwrap();
                std::fs::write(&batch2, &b2).unwrap();
            }),
        ),
        (
            "names another place in the chain (moved or reordered)".to_string(),
            Box::new(|| {
                std::fs::write(digest(2), &dl).unwrap();
                std::fs::write(digest(last), &d2).unwrap();
            }),
            Box::new(|| {
                std::fs::write(digest(2), &d2).unwrap();
                std::fs::write(digest(last), &dl).unwrap();
            }),
        ),
        (
            "no digest covers it (inserted)".to_string(),
            Box::new(|| std::fs::write(&inserted, &b1).unwrap()),
            Box::new(|| std::fs::remove_file(&inserted).unwrap()),
        ),
        (
            format!("digests {last} to {last} are missing (deleted)"),
            Box::new(|| {
                std::fs::remove_file(digest(last)).unwrap();
                std::fs::remove_file(&batch_last).unwrap();
            }),
            Box::new(|| {
                std::fs::write(digest(last), &dl).unwrap();
                std::fs::write(&batch_last, &bl).unwrap();
            }),
        ),
    ];
    for (want, tamper, undo) in cases {
        tamper();
        let (ok, out) = verify();
        assert!(!ok && out.contains(&want), "expected {want:?}: {out}");
        undo();
    }
    let (ok, out) = verify();
    assert!(ok, "{out}");
}

#[test]
fn the_aws_cli_and_boto3_drive_the_api() {
    let have = Command::new("python3")
        .args(["-c", "import boto3, awscli"])
        .status_named();
    assert!(
        have.success(),
        "this test needs the aws CLI and boto3 from PyPI: run scripts/test, which installs them"
    );
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    for b in ["src", "out"] {
        std::fs::create_dir_all(data.join("buckets").join(b)).unwrap();
    }
    let raw = debian_disk(work.path(), MARKER, 16);
    let vmdk = qemu_convert(&raw, "vmdk", "subformat=streamOptimized", "d.vmdk");
    std::fs::copy(&vmdk, data.join("buckets/src/debian.vmdk")).unwrap();
    std::fs::copy(ova(&raw), data.join("buckets/src/debian.ova")).unwrap();
    // A disk big enough to be cancelled before it finishes.
    let big = work.path().join("big.raw");
    blank(&big, 256 << 20);
    fill_random(&big, 0..256, 7);
    let q = qemu_convert(&big, "qcow2", "", "big.qcow2");
    std::fs::rename(q, data.join("buckets/src/big.qcow2")).unwrap();

    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmie"))
        .env("VMIE_BOOT_CHECK", "off")
        .arg("--data-dir")
        .arg(&data)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--workers",
            "2",
            "--node",
            "api-test",
        ])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(work.path().join("server.log")).unwrap())
        .env("RUST_LOG", "info")
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let server = Server(child);
    let (mut id, mut secret) = (String::new(), String::new());
    for line in BufReader::new(out).lines() {
        let line = line.unwrap();
        if let Some(v) = line.strip_prefix("AccessKeyId:") {
            id = v.trim().into();
        }
        if let Some(v) = line.strip_prefix("SecretAccessKey:") {
            secret = v.trim().into();
            break;
        }
    }
    assert!(
        id.starts_with("AKIA") && secret.len() == 40,
        "the admin key was not printed"
    );
    let endpoint = format!("https://127.0.0.1:{port}");
    let ca = data.join("tls/cert.pem");
    wait_port(port);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api_client.py");
    let status = Command::new("python3")
        .arg(script)
        .args([
            &endpoint,
            s(&ca),
            s(&data),
            s(&raw),
            env!("CARGO_BIN_EXE_vmie"),
        ])
        .env("AWS_ACCESS_KEY_ID", &id)
        .env("AWS_SECRET_ACCESS_KEY", &secret)
        .status_named();
    assert!(status.success(), "the API checks failed (see above)");
    // A clean stop writes the last records.
    let mut server = server;
    assert!(terminate(&mut server.0).success());
    drop(server);
    activity_log(work.path(), &data, &[secret.as_str()]);

    // The server's log holds neither the admin secret nor the card number of a description.
    let log = std::fs::read_to_string(work.path().join("server.log")).unwrap();
    assert!(log.contains("serving the EC2 API"), "{log}");
    assert!(
        !log.contains(&secret) && !log.contains("4111 1111"),
        "{log}"
    );

    // With --sensitive-data reject, the same description is refused, naming the field only.
    let port2 = free_port();
    let _strict = Server(
        Command::new(env!("CARGO_BIN_EXE_vmie"))
            .env("VMIE_BOOT_CHECK", "off")
            .arg("--data-dir")
            .arg(&data)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port2}"),
                "--sensitive-data",
                "reject",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(port2);
    let o = Command::new("aws")
        .args([
            "--endpoint-url",
            &format!("https://127.0.0.1:{port2}"),
            "ec2",
            "import-snapshot",
        ])
        .args(["--description", "card 4111 1111 1111 1111"])
        .args([
            "--disk-container",
            "Format=VMDK,UserBucket={S3Bucket=src,S3Key=debian.vmdk}",
        ])
        .env("AWS_ACCESS_KEY_ID", &id)
        .env("AWS_SECRET_ACCESS_KEY", &secret)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CA_BUNDLE", &ca)
        .output_named();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains("(InvalidParameterValue)")
            && err.contains("Description appears to contain a payment card number")
            && !err.contains("4111"),
        "{err}"
    );
    drop(_strict);

    // Plain HTTP is served on loopback only.
    let o = Command::new(env!("CARGO_BIN_EXE_vmie"))
        .env("VMIE_BOOT_CHECK", "off")
        .arg("--data-dir")
        .arg(&data)
        .args(["serve", "--plain-http", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("only on a loopback address"),
        "{err}"
    );

    // No intermediate volume remains, and the guest's bytes are only in the buckets.
    let vols: Vec<_> = std::fs::read_dir(data.join("scratch")).unwrap().collect();
    assert!(vols.is_empty(), "{vols:?}");
    let hits = files_containing(&data, MARKER.as_bytes(), &data.join("buckets"));
    assert!(hits.is_empty(), "plaintext in {hits:?}");
}
