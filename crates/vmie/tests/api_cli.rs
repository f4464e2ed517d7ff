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

use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::process::{Command, Stdio};

use harness::*;

const MARKER: &str = "VMIE-API-MARKER-c41d09";

struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_aws_cli_and_boto3_drive_the_api() {
    let have = Command::new("python3")
        .args(["-c", "import boto3, awscli"])
        .status()
        .unwrap();
    assert!(
        have.success(),
        "this test needs the aws CLI and boto3 from PyPI: pip install awscli boto3 (.ci/run does)"
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
    let f = std::fs::OpenOptions::new().write(true).open(&big).unwrap();
    let mut next = common::xorshift(7);
    let mut block = vec![0u8; 1 << 20];
    for mib in 0..256u64 {
        for w in block.chunks_exact_mut(8) {
            w.copy_from_slice(&next().to_le_bytes());
        }
        f.write_all_at(&block, mib << 20).unwrap();
    }
    let q = qemu_convert(&big, "qcow2", "", "big.qcow2");
    std::fs::rename(q, data.join("buckets/src/big.qcow2")).unwrap();

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmie"))
        .arg("--data-dir")
        .arg(&data)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--workers",
            "2",
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
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
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
        .status()
        .unwrap();
    assert!(status.success(), "the API checks failed (see above)");
    drop(server);

    // The server's log holds neither the admin secret nor the card number of a description.
    let log = std::fs::read_to_string(work.path().join("server.log")).unwrap();
    assert!(log.contains("serving the EC2 API"), "{log}");
    assert!(
        !log.contains(&secret) && !log.contains("4111 1111"),
        "{log}"
    );

    // With --sensitive-data reject, the same description is refused, naming the field only.
    let port2 = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _strict = Server(
        Command::new(env!("CARGO_BIN_EXE_vmie"))
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
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port2)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
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
        .output()
        .unwrap();
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
