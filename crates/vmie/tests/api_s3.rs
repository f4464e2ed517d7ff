//! S3 on `vmie serve`'s endpoint, driven by the real aws CLI and boto3: `aws s3 mb`/`ls`/
//! `cp`/`rm`/`rb`, a 1 GiB image uploaded in parts and imported with `import-image`, its
//! export downloaded with `aws s3 cp` and compared with `qemu-img compare`, an import from an
//! `aws s3 presign` URL, an aborted and a refused upload that leave nothing behind, and a
//! user allowed to read only. Then the activity log: a record of every S3 row of the action
//! table, no secret and no body in any. The checks are in `tests/s3_client.py`.

#![allow(clippy::unwrap_used, missing_docs)]

#[path = "../../engine/tests/harness/mod.rs"]
mod harness;
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use testkit::ToolExt;

use harness::*;
use support::{free_port, terminate, vmie, wait_serving};

const MARKER: &str = "VMIE-S3-MARKER-5d2e8a";

struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(data: &std::path::Path, port: u16, log: &std::path::Path, extra: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmie"))
        .env("VMIE_BOOT_CHECK", "off")
        // The bucket "sealed" is kept encrypted at rest (s3_client.py checks it).
        .env("VMIE_BUCKET_KEYS", "sealed=alias/images")
        .arg("--data-dir")
        .arg(data)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--node",
            "s3-test",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    wait_serving(&mut child, port, log);
    Server(child)
}

#[test]
fn the_aws_cli_and_boto3_use_s3_on_the_endpoint() {
    let have = Command::new("python3")
        .args(["-c", "import boto3, awscli"])
        .status_named();
    assert!(
        have.success(),
        "this test needs the aws CLI and boto3 from PyPI: run scripts/test, which installs them"
    );
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let raw = debian_disk(work.path(), MARKER, 16);
    let log = work.path().join("server.log");

    // The first start makes the certificate and prints the admin key; the second trusts
    // the endpoint itself for URL imports (a presigned URL of its own bucket).
    let port = free_port();
    let mut first = serve(&data, port, &log, &[]);
    // Its standard output is read to the end (a closed pipe would fail its last words).
    let out = first.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (mut id, mut secret) = (String::new(), String::new());
    while secret.is_empty() {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the admin key is printed");
        if let Some(v) = line.strip_prefix("AccessKeyId:") {
            id = v.trim().into();
        }
        if let Some(v) = line.strip_prefix("SecretAccessKey:") {
            secret = v.trim().into();
        }
    }
    assert!(id.starts_with("AKIA"), "the admin key was not printed");
    assert!(terminate(&mut first.0).success());
    drop(first);
    let ca = data.join("tls/cert.pem");
    let port = free_port();
    let mut server = serve(
        &data,
        port,
        &log,
        &["--url-allow", "127.0.0.1/32", "--url-ca-file", s(&ca)],
    );

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/s3_client.py");
    let status = Command::new("python3")
        .arg(script)
        .args([
            &format!("https://127.0.0.1:{port}"),
            s(&ca),
            s(&data),
            s(&raw),
            env!("CARGO_BIN_EXE_vmie"),
        ])
        .env("AWS_ACCESS_KEY_ID", &id)
        .env("AWS_SECRET_ACCESS_KEY", &secret)
        .status_named();
    assert!(status.success(), "the S3 checks failed (see above)");
    assert!(terminate(&mut server.0).success());
    drop(server);

    // Every S3 row of the table has its record; S3's event source; no secret, no body.
    let o = vmie(&data, &["trail", "lookup"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let s3: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["eventSource"] == "s3.amazonaws.com")
        .collect();
    for spec in api::action::TABLE
        .iter()
        .filter(|s| s.service == api::action::Service::S3)
    {
        assert!(
            s3.iter().any(|r| r["eventName"] == spec.name),
            "no record of {}",
            spec.name
        );
    }
    let put = s3
        .iter()
        .find(|r| r["eventName"] == "PutObject" && r["errorCode"].is_null())
        .unwrap();
    assert_eq!(put["requestParameters"]["bucketName"], "uploads", "{put}");
    assert!(put["requestParameters"]["key"].is_string(), "{put}");
    assert_eq!(put["managementEvent"], false, "{put}");
    assert_eq!(put["userIdentity"]["userName"], "admin", "{put}");
    let denied = s3
        .iter()
        .find(|r| r["errorCode"] == "AccessDenied" && r["eventName"] == "PutObject")
        .unwrap_or_else(|| panic!("no refused PutObject in {s3:?}"));
    assert_eq!(denied["userIdentity"]["userName"], "reader", "{denied}");
    assert!(
        s3.iter()
            .any(|r| r["eventName"] == "CreateBucket" && r["managementEvent"] == true)
    );
    for needle in [secret.as_str(), "Signature=", "S3-BODY-MARKER"] {
        assert!(!text.contains(needle), "{needle} is in an activity record");
    }
    let server_log = std::fs::read_to_string(&log).unwrap();
    assert!(
        !server_log.contains(&secret),
        "the secret is in the service log"
    );
}
