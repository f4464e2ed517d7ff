//! The activity log as CloudTrail delivers it, checked by the unmodified
//! `aws cloudtrail validate-logs`: `vmie serve` with 30-second digest periods, a workload
//! over several periods, then every digest and log file valid; after one log file is
//! altered, one deleted and one digest deleted, each named invalid or missing (and by
//! `vmie trail verify` too). The log files, read with Python's `gzip` and `json`, hold the
//! very records `aws cloudtrail lookup-events` returns.
//!
//! validate-logs sends its CloudTrail calls (DescribeTrails, ListPublicKeys) to
//! `--endpoint-url` and reads the files with S3 clients it builds from the session, which
//! honour `AWS_ENDPOINT_URL_S3`: here vmie's own endpoint too (path-style addressing), so
//! the trail bucket's files and the digests' `x-amz-meta-signature` come through vmie's S3
//! API, under the same authorization and activity log as everything else.

#![allow(clippy::unwrap_used, missing_docs)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use testkit::ToolExt;

mod support;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const ACCOUNT: &str = "000000000000";

struct World {
    data: PathBuf,
    aws_config: PathBuf,
    endpoint: String,
    key: (String, String),
}

impl World {
    /// The `aws` CLI with the admin's key, CloudTrail and S3 at vmie.
    fn aws(&self, args: &[&str]) -> Output {
        Command::new("aws")
            .args(args)
            .args(["--endpoint-url", &self.endpoint, "--region", "us-east-1"])
            .env("AWS_ACCESS_KEY_ID", &self.key.0)
            .env("AWS_SECRET_ACCESS_KEY", &self.key.1)
            .env("AWS_CONFIG_FILE", &self.aws_config)
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_ENDPOINT_URL_S3", &self.endpoint)
            .env_remove("AWS_PROFILE")
            .output_named()
    }

    fn validate(&self, start: &str) -> (bool, String, String) {
        let o = self.aws(&[
            "cloudtrail",
            "validate-logs",
            "--trail-arn",
            &format!("arn:aws:cloudtrail:us-east-1:{ACCOUNT}:trail/vmie"),
            "--start-time",
            start,
            "--verbose",
        ]);
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    fn bucket(&self) -> PathBuf {
        self.data.join("buckets/trail")
    }

    /// The account's digest files, oldest first, with the log files each names.
    fn digests(&self) -> Vec<(String, Vec<String>)> {
        let dir = self
            .bucket()
            .join(format!("AWSLogs/{ACCOUNT}/CloudTrail-Digest/us-east-1"));
        let mut keys = Vec::new();
        walk(&dir, &mut keys);
        keys.sort_by(|a, b| a[a.len() - 24..].cmp(&b[b.len() - 24..]));
        keys.into_iter()
            .filter_map(|p| {
                let data = std::fs::read(&p).ok()?;
                let v: serde_json::Value =
                    serde_json::from_reader(flate2::read::GzDecoder::new(&data[..])).ok()?;
                let logs = v["logFiles"]
                    .as_array()?
                    .iter()
                    .map(|l| l["s3Object"].as_str().unwrap().to_string())
                    .collect();
                Some((self.key_of(&p), logs))
            })
            .collect()
    }

    fn key_of(&self, p: &str) -> String {
        Path::new(p)
            .strip_prefix(self.bucket())
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    /// Some API calls, then waits until a digest names a log file delivered after them.
    fn period_with_calls(&self, calls: usize) {
        let before: usize = self.digests().iter().filter(|d| !d.1.is_empty()).count();
        for _ in 0..calls {
            let o = self.aws(&["cloudtrail", "describe-trails"]);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
        // Digest periods are 30 s: a new one names these calls' files within two periods.
        for _ in 0..200 {
            if self.digests().iter().filter(|d| !d.1.is_empty()).count() > before {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("no digest named the calls' log files: {:?}", self.digests());
    }
}

fn walk(dir: &Path, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p.to_string_lossy().into_owned());
        }
    }
}

fn start(work: &Path) -> (Server, World) {
    let data = work.join("data");
    let port = support::free_port();
    let log = work.join("server.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmie"))
        .env("VMIE_BOOT_CHECK", "off")
        .arg("--data-dir")
        .arg(&data)
        .args([
            "serve",
            "--plain-http",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--node",
            "vl",
            "--trail-digest-interval",
            "30",
        ])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut id = String::new();
    let mut key = None;
    for line in lines.by_ref().map_while(Result::ok) {
        if let Some(v) = line.strip_prefix("AccessKeyId:") {
            id = v.trim().into();
        }
        if let Some(v) = line.strip_prefix("SecretAccessKey:") {
            key = Some((id.clone(), v.trim().to_string()));
            break;
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    let mut server = Server(child);
    support::wait_serving(&mut server.0, port, &log);
    let key = key.expect("the first start prints the admin key");
    let aws_config = work.join("aws-config");
    std::fs::write(
        &aws_config,
        "[default]\nregion = us-east-1\ns3 =\n    addressing_style = path\n",
    )
    .unwrap();
    let w = World {
        data,
        aws_config,
        endpoint: format!("http://127.0.0.1:{port}"),
        key,
    };
    (server, w)
}

/// Every record of the account's log files, read by Python's gzip and json.
fn python_records(w: &World) -> Vec<serde_json::Value> {
    let script = "import gzip, json, sys, pathlib\n\
        out = []\n\
        for p in sorted(pathlib.Path(sys.argv[1]).rglob('*.json.gz')):\n\
        \x20   with gzip.open(p) as f:\n\
        \x20       out.extend(json.load(f)['Records'])\n\
        print(json.dumps(out))\n";
    let dir = w
        .bucket()
        .join(format!("AWSLogs/{ACCOUNT}/CloudTrail/us-east-1"));
    let o = Command::new("python3")
        .args(["-c", script])
        .arg(dir)
        .output_named();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn validate_logs_accepts_the_log_and_names_each_tampered_file() {
    let have = Command::new("python3")
        .args(["-c", "import awscli"])
        .status_named();
    assert!(
        have.success(),
        "this test needs the aws CLI from PyPI: run scripts/test, which installs it"
    );
    let work = tempfile::tempdir().unwrap();
    let started = catalog_time(-120);
    let (server, w) = start(work.path());

    // A workload over several digest periods, each named by a digest.
    for calls in [3, 2, 2] {
        w.period_with_calls(calls);
    }
    let (ok, out, err) = w.validate(&started);
    assert!(ok, "validate-logs failed:\n{out}\n{err}");
    let digests = w.digests();
    let logs: Vec<&String> = digests.iter().flat_map(|d| &d.1).collect();
    assert!(digests.len() >= 3 && logs.len() >= 3, "{digests:?}");
    for (d, _) in &digests {
        assert!(
            out.contains(&format!("Digest file\ts3://trail/{d}\tvalid")),
            "{d} not valid:\n{out}"
        );
    }
    for l in &logs {
        assert!(
            out.contains(&format!("Log file\ts3://trail/{l}\tvalid")),
            "{l} not valid:\n{out}"
        );
    }
    assert!(!err.contains("INVALID"), "{err}");

    // The log files hold what lookup-events returns.
    let o = w.aws(&[
        "cloudtrail",
        "lookup-events",
        "--start-time",
        &started,
        "--output",
        "json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let looked: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let looked: Vec<serde_json::Value> = looked["Events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| serde_json::from_str(e["CloudTrailEvent"].as_str().unwrap()).unwrap())
        .collect();
    assert!(looked.len() >= 7, "{}", looked.len());
    // The last calls (validate-logs' own reads) reach a log file at the node's next
    // delivery (every 5 s): wait for that state rather than race it.
    let mut read = python_records(&w);
    for _ in 0..120 {
        if looked.iter().all(|r| read.contains(r)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
        read = python_records(&w);
    }
    for r in &looked {
        assert!(
            read.contains(r),
            "lookup-events returned a record no log file holds: {r}"
        );
    }
    for r in &read {
        assert!(
            looked.contains(r) || r["eventName"] == "LookupEvents",
            "a log file holds a record lookup-events did not return: {r}"
        );
    }

    // Tampering: a log file of the first digest altered, one of the last deleted, the digest
    // between them deleted.
    let with_logs: Vec<&(String, Vec<String>)> =
        digests.iter().filter(|d| !d.1.is_empty()).collect();
    let (first, middle, last) = (with_logs[0], with_logs[1], with_logs[with_logs.len() - 1]);
    let altered = &first.1[0];
    let deleted_log = &last.1[0];
    let deleted_digest = &middle.0;
    let path = |k: &str| w.bucket().join(k);
    let mut content = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(&std::fs::read(path(altered)).unwrap()[..]),
        &mut content,
    )
    .unwrap();
    let text = String::from_utf8(content)
        .unwrap()
        .replacen("DescribeTrails", "DescribeTrailz", 1);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, text.as_bytes()).unwrap();
    std::fs::write(path(altered), gz.finish().unwrap()).unwrap();
    std::fs::remove_file(path(deleted_log)).unwrap();
    std::fs::remove_file(path(deleted_digest)).unwrap();

    let (ok, out, err) = w.validate(&started);
    assert!(!ok, "validate-logs passed a tampered log:\n{out}\n{err}");
    for want in [
        format!("Log file\ts3://trail/{altered}\tINVALID: hash value doesn't match"),
        format!("Log file\ts3://trail/{deleted_log}\tINVALID: not found"),
        format!("Digest file\ts3://trail/{deleted_digest}\tINVALID: not found"),
    ] {
        assert!(err.contains(&want), "expected {want:?} in:\n{err}");
    }

    // vmie's own check names them too.
    let o = support::vmie(&w.data, &["trail", "verify"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(!o.status.success(), "{out}");
    for want in [
        format!("trail/{altered}: content changed (altered)"),
        format!("trail/{deleted_log}: missing (deleted)"),
        format!("trail/{deleted_digest}: missing (deleted)"),
    ] {
        assert!(out.contains(&want), "expected {want:?} in:\n{out}");
    }
    drop(server);
}

/// Now plus `seconds`, as validate-logs takes times.
fn catalog_time(seconds: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let t = i64::try_from(now).unwrap() + seconds;
    let o = Command::new("date")
        .args(["-u", "-d", &format!("@{t}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output_named();
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}
