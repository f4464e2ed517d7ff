//! `vmie compliance` against a running deployment: each control fails when its condition is
//! broken (admin without MFA, encryption by default off, an MFA device locked by invalid
//! codes sent with the aws CLI, a plain-HTTP listener, a readable root key, a key without
//! rotation, an orphaned intermediate volume, an altered activity log), names the remedy,
//! and the command exits 1; once every remedy is applied it exits 0.

#![allow(clippy::unwrap_used, missing_docs)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use testkit::ToolExt;

mod support;
use support::{free_port, terminate, vmie, wait_port};

struct Server(Child);

impl Server {
    fn stop(mut self) {
        terminate(&mut self.0);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts another `vmie serve` on a deployment that already exists.
fn serve(data: &Path, port: u16, extra: &[&str]) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_vmie"))
        .env("VMIE_BOOT_CHECK", "off")
        .arg("--data-dir")
        .arg(data)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_port(port);
    // The registry entry is written at start; give it a moment.
    std::thread::sleep(Duration::from_millis(500));
    Server(child)
}

/// Runs `vmie compliance --json`: exit success and each control's pass flag.
fn check(data: &Path) -> (bool, serde_json::Value) {
    let o = vmie(data, &["compliance", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|_| {
        panic!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    });
    (o.status.success(), v)
}

fn failing(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .filter(|c| c["pass"] == false)
        .map(|c| c["control"].as_str().unwrap().to_string())
        .collect()
}

fn base32_decode(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
            .iter()
            .position(|x| *x == c)
            .unwrap();
        acc = (acc << 5) | u32::try_from(v).unwrap();
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).unwrap());
        }
    }
    out
}

/// A code no step within a minute of now accepts.
fn wrong_code(secret: &[u8]) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let near: Vec<String> = (0..5)
        .map(|i| api::totp::code(secret, now - 60 + i * 30))
        .collect();
    (0..)
        .map(|i| format!("{i:06}"))
        .find(|c| !near.contains(c))
        .unwrap()
}

#[test]
fn compliance_fails_each_broken_control_and_passes_once_remedied() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let port = free_port();
    let (server, key) = {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vmie"))
            .env("VMIE_BOOT_CHECK", "off")
            .arg("--data-dir")
            .arg(&data)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let mut id = String::new();
        let mut key = None;
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(v) = line.strip_prefix("AccessKeyId:") {
                id = v.trim().to_string();
            }
            if let Some(v) = line.strip_prefix("SecretAccessKey:") {
                key = Some((id.clone(), v.trim().to_string()));
                break;
            }
        }
        wait_port(port);
        (Server(child), key.unwrap())
    };
    let aws = |args: &[&str]| {
        let o = Command::new("aws")
            .args([
                "--endpoint-url",
                &format!("https://127.0.0.1:{port}"),
                "ec2",
            ])
            .args(args)
            .env("AWS_ACCESS_KEY_ID", &key.0)
            .env("AWS_SECRET_ACCESS_KEY", &key.1)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_CA_BUNDLE", data.join("tls/cert.pem"))
            .output_named();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    aws(&["describe-images"]);
    // The call's record is written within the flush interval.
    std::thread::sleep(Duration::from_secs(6));

    // A fresh deployment: the admin has no MFA and encryption by default is off.
    let (ok, v) = check(&data);
    assert!(!ok);
    assert_eq!(
        failing(&v),
        ["encryption-by-default", "admins-have-mfa"],
        "{v:#}"
    );
    let mfa = v
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["control"] == "admins-have-mfa")
        .unwrap();
    assert!(
        mfa["detail"].as_str().unwrap().contains("admin")
            && mfa["remedy"]
                .as_str()
                .unwrap()
                .contains("vmie admin mfa enable"),
        "{mfa}"
    );

    // Remedies.
    aws(&["enable-ebs-encryption-by-default"]);
    let enabled = vmie(&data, &["admin", "mfa", "enable", "admin"]);
    assert!(enabled.status.success());
    let out = String::from_utf8_lossy(&enabled.stdout).into_owned();
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .trim()
            .to_string()
    };
    let serial = field("SerialNumber:");
    let uri = field("URI:");
    let mfa_secret = base32_decode(
        uri.split("secret=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap(),
    );
    let (ok, v) = check(&data);
    assert!(ok, "{v:#}");
    // The text form: a table, every control PASS.
    let o = vmie(&data, &["compliance"]);
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && table.lines().all(|l| l.contains("PASS")),
        "{table}"
    );

    // MFA codes guessed at: five invalid codes in a row lock the device (the server's
    // back-off is waited out by retrying while it says so); compliance names the device
    // until an administrator unlocks it.
    let sts = |code: &str| {
        let o = Command::new("aws")
            .args([
                "--endpoint-url",
                &format!("https://127.0.0.1:{port}"),
                "sts",
            ])
            .args(["get-session-token", "--serial-number", &serial])
            .args(["--token-code", code])
            .env("AWS_ACCESS_KEY_ID", &key.0)
            .env("AWS_SECRET_ACCESS_KEY", &key.1)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_CA_BUNDLE", data.join("tls/cert.pem"))
            .output()
            .unwrap();
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let mut failures = 0;
    while failures < api::mfa::LOCKOUT_AFTER {
        let err = sts(&wrong_code(&mfa_secret));
        assert!(err.contains("AccessDenied"), "{err}");
        if err.contains("retry after") {
            std::thread::sleep(Duration::from_millis(250));
            continue;
        }
        failures += 1;
        assert_eq!(
            err.contains("locked until"),
            failures == api::mfa::LOCKOUT_AFTER,
            "{err}"
        );
    }
    // Locked: even the right code is refused, unchecked.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let err = sts(&api::totp::code(&mfa_secret, now));
    assert!(err.contains("the MFA device is locked until"), "{err}");
    let v = check(&data).1;
    assert_eq!(failing(&v), ["mfa-no-lockouts"], "{v:#}");
    let lock = v
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["control"] == "mfa-no-lockouts")
        .unwrap();
    assert!(
        lock["detail"]
            .as_str()
            .unwrap()
            .contains("admin (locked until")
            && lock["remedy"]
                .as_str()
                .unwrap()
                .contains("vmie admin mfa unlock"),
        "{lock}"
    );
    let o = vmie(&data, &["admin", "mfa", "unlock", "admin"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(check(&data).0);

    // Each control, broken in turn.
    let key_file = data.join("root.key");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    // A readable root key is refused when loaded, so what needs it goes unchecked too.
    let v = check(&data).1;
    assert_eq!(
        failing(&v),
        ["activity-log-verified", "root-key-file", "kms-key-rotation"],
        "{v:#}"
    );
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();

    let orphan = data.join("scratch/import-ami-0123456789abcdef0.vol");
    std::fs::write(&orphan, b"left by a crash").unwrap();
    assert_eq!(failing(&check(&data).1), ["no-orphaned-volumes"]);
    std::fs::remove_file(&orphan).unwrap();

    let o = vmie(
        &data,
        &["kms", "create-key", "--description", "no rotation"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let made: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let key_id = made["key_id"].as_str().unwrap().to_string();
    assert_eq!(failing(&check(&data).1), ["kms-key-rotation"]);
    assert!(
        vmie(&data, &["kms", "enable-key-rotation", &key_id])
            .status
            .success()
    );

    let plain_port = free_port();
    let plain = serve(&data, plain_port, &["--plain-http"]);
    let v = check(&data).1;
    assert_eq!(failing(&v), ["tls-listeners"], "{v:#}");
    plain.stop();

    // An altered activity log.
    let digests = data.join("objects/trail/digests");
    let node_dir = std::fs::read_dir(&digests)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .ends_with(&port.to_string())
        })
        .unwrap();
    let first = node_dir.join(format!("{:016}.json", 1));
    let original = std::fs::read(&first).unwrap();
    let altered =
        String::from_utf8(original.clone())
            .unwrap()
            .replacen("\"records\":", "\"records\":1", 1);
    std::fs::write(&first, altered).unwrap();
    assert_eq!(failing(&check(&data).1), ["activity-log-verified"]);
    std::fs::write(&first, original).unwrap();

    let (ok, v) = check(&data);
    assert!(ok, "{v:#}");
    server.stop();
}
