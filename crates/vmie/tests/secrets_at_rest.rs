//! A presigned URL's signature and security token never rest in the data folder in clear
//! (issue 17): `vmie serve`, started with umask 022, imports a disk from an `https://` server
//! (Python's, with a certificate made by `openssl`) through a URL carrying both; once the
//! task has ended, and again after a clean stop, every file under the data folder —
//! `catalog.db` with its `-wal` and `-shm`, the activity log decompressed — is searched for
//! them; and the folder is 0700 and every file in it 0600 although the umask said 022.

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation, missing_docs)]

mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use support::{free_port, terminate, wait_port, wait_serving};

const SIGNATURE: &str = "5e1a7c0ffee5ba5e0f5ec2e75e1a7c0ffee5ba5e0f5ec2e75e1a7c0ffee5ba5e";
const TOKEN: &str = "FwoGZXIvYXdzEJb//////////wEaDVMXTOKENMARKER9b2d44";

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn need(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .unwrap()
        .status
        .success();
    assert!(found, "this test needs {tool}");
}

fn run(cmd: &mut Command) {
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// An HTTPS file server on 127.0.0.1 serving `dir/www`; returns it, its port and its CA.
fn https_server(dir: &Path) -> (Kill, u16, PathBuf) {
    need("openssl");
    need("python3");
    let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(Command::new("openssl")
        .args(["req", "-x509", "-days", "1", "-subj", "/CN=vmie test CA"])
        .args(ec)
        .args(["-keyout", &p("ca.key"), "-out", &p("ca.pem")]));
    run(Command::new("openssl")
        .args(["req", "-subj", "/CN=localhost"])
        .args(ec)
        .args(["-keyout", &p("key.pem"), "-out", &p("server.csr")]));
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(Command::new("openssl").args([
        "x509",
        "-req",
        "-in",
        &p("server.csr"),
        "-CA",
        &p("ca.pem"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &p("ext.cnf"),
        "-out",
        &p("cert.pem"),
    ]));
    let port = free_port();
    let script = format!(
        "import http.server, ssl, functools\n\
         h = functools.partial(http.server.SimpleHTTPRequestHandler, directory='{}')\n\
         srv = http.server.ThreadingHTTPServer(('127.0.0.1', {port}), h)\n\
         ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
         ctx.load_cert_chain('{}', '{}')\n\
         srv.socket = ctx.wrap_socket(srv.socket, server_side=True)\n\
         srv.serve_forever()\n",
        p("www"),
        p("cert.pem"),
        p("key.pem"),
    );
    let child = Command::new("python3")
        .args(["-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_port(port);
    (Kill(child), port, dir.join("ca.pem"))
}

/// Every file under `root` with its bytes (`.gz` files also decompressed, by `gzip`).
fn contents(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
                if p.extension().is_some_and(|x| x == "gz") {
                    let o = Command::new("gzip").arg("-dc").arg(&p).output().unwrap();
                    assert!(o.status.success(), "gzip -dc {}", p.display());
                    out.push((p.with_extension("gz (decompressed)"), o.stdout));
                }
            }
        }
    }
    out
}

fn assert_nowhere(data: &Path, when: &str) {
    let files = contents(data);
    let names: Vec<String> = files
        .iter()
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for must in ["catalog.db", "catalog.db-wal", "catalog.db-shm"] {
        assert!(
            names.iter().any(|n| n == must)
                || (must != "catalog.db" && when == "after a clean stop"),
            "{must} is not in the data folder {when}: {names:?}"
        );
    }
    for needle in [SIGNATURE, TOKEN, "TOKENMARKER9b2d44"] {
        let hits: Vec<&PathBuf> = files
            .iter()
            .filter(|(_, b)| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
            .map(|(p, _)| p)
            .collect();
        assert!(hits.is_empty(), "{needle} is in {hits:?} {when}");
    }
}

fn assert_private(data: &Path) {
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(data), 0o700, "{}", data.display());
    let mut stack = vec![data.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                assert_eq!(mode(&p), 0o700, "{}", p.display());
                stack.push(p);
            } else {
                assert_eq!(mode(&p), 0o600, "{}", p.display());
            }
        }
    }
}

#[test]
fn a_presigned_urls_secrets_never_rest_in_the_data_folder() {
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(work.path().join("www")).unwrap();
    // A small raw disk (random bytes: nothing to deduplicate or skip).
    let disk: Vec<u8> = (0u32..(2 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(work.path().join("www/d.raw"), &disk).unwrap();
    let (_www, www_port, ca) = https_server(work.path());

    let data = work.path().join("data");
    let port = free_port();
    let log = work.path().join("server.log");
    // The server runs with the usual umask 022.
    let mut child = Command::new("sh")
        .args(["-c", "umask 022; exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_vmie"))
        .arg("--data-dir")
        .arg(&data)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--node",
            "secrets",
        ])
        .args(["--url-allow", "127.0.0.0/8", "--url-ca-file"])
        .arg(&ca)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let mut server = Kill(child);
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
    assert!(id.starts_with("AKIA"), "no admin key printed");
    wait_serving(&mut server.0, port, &log);

    let url = format!(
        "https://127.0.0.1:{www_port}/d.raw?X-Amz-Algorithm=AWS4-HMAC-SHA256\
         &X-Amz-Credential=ASIAEXAMPLE%2F20261129%2Fus-east-1%2Fs3%2Faws4_request\
         &X-Amz-Date=20261129T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host\
         &X-Amz-Security-Token={TOKEN}&X-Amz-Signature={SIGNATURE}"
    );
    // Submitted through the API, run to its end (the command waits).
    let o = Command::new(env!("CARGO_BIN_EXE_vmie"))
        .args([
            "import-snapshot",
            "--format",
            "RAW",
            "--json",
            "--url",
            &url,
        ])
        .args(["--endpoint-url", &format!("https://127.0.0.1:{port}")])
        .arg("--ca-bundle")
        .arg(data.join("tls/cert.pem"))
        .env("AWS_ACCESS_KEY_ID", &id)
        .env("AWS_SECRET_ACCESS_KEY", &secret)
        .env("VMIE_DATA", work.path().join("client-unused"))
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && shown.contains("completed"),
        "{shown}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        !shown.contains(SIGNATURE) && !shown.contains(TOKEN),
        "{shown}"
    );

    // The task has ended; the server still runs with the catalog open.
    assert!(server.0.try_wait().unwrap().is_none());
    assert_nowhere(&data, "after the task ended");
    assert_private(&data);

    assert!(terminate(&mut server.0).success());
    assert_nowhere(&data, "after a clean stop");
    assert_private(&data);
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        !log.contains(SIGNATURE) && !log.contains("TOKENMARKER"),
        "{log}"
    );
}
