//! Sources and destinations over the network: buckets on a real S3 server (s3s-fs, on
//! loopback, started here) and images fetched from an `https://` server (Python's, with a
//! certificate made by `openssl`), with the address guard on and off.

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation, missing_docs)]

mod harness;
#[path = "../../blockstore/tests/common/mod.rs"]
mod s3;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use testkit::ToolExt;

use catalog::status;
use engine::{
    Buckets, DiskContainer, ImportImageRequest, ImportSnapshotRequest, StageHook, TaskDetail,
    UrlPolicy,
};
use harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_from_and_export_to_an_s3_server() {
    let s3dir = tempfile::tempdir().unwrap();
    let (url, server) = s3::start_s3(s3dir.path(), "src").await;
    std::fs::create_dir_all(s3dir.path().join("out")).unwrap();
    let buckets = Buckets::S3(s3::s3_config(url, ""));
    let env = env_over(None, &UrlPolicy::default(), Some(buckets), |_, _| {}).await;
    let work = tempfile::tempdir().unwrap();
    let raw = debian_disk(work.path(), "S3-MARKER", 16);
    let vmdk = qemu_convert(&raw, "vmdk", "subformat=streamOptimized", "d.vmdk");
    std::fs::create_dir_all(s3dir.path().join("src/disks")).unwrap();
    std::fs::copy(&vmdk, s3dir.path().join("src/disks/d.vmdk")).unwrap();

    let e = &env.engine;
    let missing = e
        .import_image(
            sub(),
            ImportImageRequest {
                disk_containers: vec![from_bucket("disks/none.vmdk")],
                ..ImportImageRequest::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(missing.code(), "InvalidParameter", "{missing}");
    let mut req = image_from("s3://src/disks/d.vmdk");
    req.disk_containers[0].format = Some("vmdk".into());
    let image = imported_image(e, req).await;

    let x = e
        .export_image(sub(), export_to(&image.id, "VMDK", "out", "vms/"))
        .await
        .unwrap();
    let done = run_until_ended(e, std::slice::from_ref(&x.id)).await;
    assert_eq!(
        done[0].status,
        status::COMPLETED,
        "{}",
        done[0].status_message
    );
    let out = s3dir.path().join(format!("out/vms/{}.vmdk", x.id));
    tool("qemu-img", &["compare", "-f", "raw", s(&raw), s(&out)]);
    assert!(env.volumes().is_empty());
    server.abort();
}

/// A bench figure, not a check of time: the same import-snapshot (best of 3) from a local bucket, from
/// the test S3 server, and from the same server behind a proxy adding 20 ms to every
/// request; all must complete with the same snapshot, and the times and their ratios are
/// printed (`--nocapture`). The test server runs in this same process, on the same two
/// cores as the import: its own throughput, not latency, is most of what separates it from
/// the local bucket; the 20 ms against 0 ms ratio is the cost of latency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_from_a_distant_s3_server_prints_its_time() {
    let s3dir = tempfile::tempdir().unwrap();
    let (url, server) = s3::start_s3_slow(s3dir.path(), "src", Duration::from_millis(20)).await;
    let (near_url, near_server) = s3::start_s3_slow(s3dir.path(), "src", Duration::ZERO).await;
    let work = tempfile::tempdir().unwrap();
    // 288 MiB of data in a 320 MiB qcow2: large enough that the few round trips in series
    // before the first block arrives (the request's look at the object, the task's, the first
    // and last blocks) are not most of the time.
    let (raw, img) = random_qcow2(work.path(), 320, 16..304, 0x5eed);
    put_object(&url, "d.qcow2", std::fs::read(&img).unwrap()).await;

    // Three rounds, the three in turn in each, each import into a new store (a second import
    // of the same data would find its chunks stored); the best of each is printed.
    let mut times = [Duration::MAX; 3];
    let mut contents = Vec::new();
    for (n, remote) in [None, Some(&near_url), Some(&url)]
        .into_iter()
        .enumerate()
        .cycle()
        .take(9)
    {
        let buckets = remote.map(|u| engine::Buckets::S3(s3::s3_config(u.clone(), "")));
        let env = env_over(None, &UrlPolicy::default(), buckets, |_, _| {}).await;
        if remote.is_none() {
            env.upload(&img, "d.qcow2");
        }
        let e = &env.engine;
        let t0 = std::time::Instant::now();
        let t = e
            .import_snapshot(sub(), snapshot_from_bucket("d.qcow2"))
            .await
            .unwrap();
        let done = run_until_ended(e, std::slice::from_ref(&t.id)).await;
        times[n] = times[n].min(t0.elapsed());
        assert_eq!(
            done[0].status,
            status::COMPLETED,
            "{}",
            done[0].status_message
        );
        if contents.len() < 3 {
            let detail = TaskDetail::of(&done[0]);
            let snap = detail.disks[0].snapshot_id.clone().unwrap();
            contents.push(snapshot_bytes(e, &snap).await);
        }
    }
    assert!(
        contents[0] == contents[1] && contents[1] == contents[2],
        "the imports differ"
    );
    assert!(
        contents[0] == std::fs::read(&raw).unwrap(),
        "the import differs from the disk"
    );
    let t: Vec<f64> = times.iter().map(Duration::as_secs_f64).collect();
    println!(
        "import-snapshot of 288 MiB in a qcow2, best of 3: local bucket {:.2} s; test S3 server {:.2} s \
         (ratio {:.2}); the same with 20 ms per request {:.2} s (ratio {:.2} to the local \
         bucket, {:.2} to the server without added latency)",
        t[0],
        t[1],
        t[1] / t[0],
        t[2],
        t[2] / t[0],
        t[2] / t[1]
    );
    server.abort();
    near_server.abort();
}

/// An export into an S3 bucket is made before it is uploaded; on its way it is never on disk
/// in plaintext. The test server holds the upload's first request (the whole image is
/// written by then); meanwhile every temporary file the process holds open in the
/// intermediate volumes' folder (unnamed: visible only as its open handle) is read, and
/// none holds the disk's marker, which a RAW export carries verbatim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_to_s3_is_never_in_plaintext_on_disk() {
    const MARKER: &str = "S3-EXPORT-PLAINTEXT-MARKER-41c7";
    let s3dir = tempfile::tempdir().unwrap();
    let gate = s3::Gate::on_writes(".raw");
    let (url, server) = s3::start_s3_gated(s3dir.path(), "src", Some(gate.clone())).await;
    std::fs::create_dir_all(s3dir.path().join("out")).unwrap();
    let buckets = Buckets::S3(s3::s3_config(url, ""));
    let env = env_over(None, &UrlPolicy::default(), Some(buckets), |_, _| {}).await;
    let work = tempfile::tempdir().unwrap();
    let raw = debian_disk(work.path(), MARKER, 16);
    let vmdk = qemu_convert(&raw, "vmdk", "subformat=streamOptimized", "d.vmdk");
    std::fs::copy(&vmdk, s3dir.path().join("src/d.vmdk")).unwrap();
    let e = &env.engine;
    let image = imported_image(e, image_from("s3://src/d.vmdk")).await;
    let x = e
        .export_image(sub(), export_to(&image.id, "RAW", "out", "vms/"))
        .await
        .unwrap();
    let running = run_until_held(e, &x.id, &gate, "the export ended without uploading").await;
    // The upload waits at the gate: the image is whole in its temporary output.
    let scratch = env.scratch();
    let mut temps = Vec::new();
    for fd in std::fs::read_dir("/proc/self/fd").unwrap() {
        let fd = fd.unwrap().path();
        let Ok(target) = std::fs::read_link(&fd) else {
            continue;
        };
        if target.starts_with(&scratch) {
            let Ok(bytes) = std::fs::read(&fd) else {
                continue;
            };
            temps.push((target, bytes));
        }
    }
    gate.open();
    let biggest = temps.iter().map(|(_, b)| b.len()).max().unwrap_or(0);
    assert!(
        biggest >= 8 << 20,
        "no temporary output holding the export was found in {}: {:?}",
        scratch.display(),
        temps.iter().map(|(p, b)| (p, b.len())).collect::<Vec<_>>()
    );
    for (path, bytes) in &temps {
        assert!(
            !bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()),
            "the export is in plaintext in {}",
            path.display()
        );
    }
    let done = running.await.unwrap();
    assert_eq!(
        done[0].status,
        status::COMPLETED,
        "{}",
        done[0].status_message
    );
    let out = s3dir.path().join(format!("out/vms/{}.raw", x.id));
    tool(
        "qemu-img",
        &["compare", "-f", "raw", "-F", "raw", s(&raw), s(&out)],
    );
    assert!(env.volumes().is_empty());
    server.abort();
}

/// An object replaced while an import reads it fails the task rather than mixing two
/// versions: every range is asked `If-Match` the ETag the task began with. The test S3 server
/// holds the read of the object's third 8 MiB block; meanwhile the object is overwritten
/// through the S3 API (same size, other bytes); then the read goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_replaced_during_an_import_fails_the_task() {
    let s3dir = tempfile::tempdir().unwrap();
    let gate = s3::Gate::new("/src/d.qcow2", (16 << 20)..(24 << 20));
    let (url, server) = s3::start_s3_gated(s3dir.path(), "src", Some(gate.clone())).await;
    let work = tempfile::tempdir().unwrap();
    let (_, img) = random_qcow2(work.path(), 48, 0..40, 0x0dd);
    let first = std::fs::read(&img).unwrap();
    put_object(&url, "d.qcow2", first.clone()).await;
    let buckets = engine::Buckets::S3(s3::s3_config(url.clone(), ""));
    let env = env_over(None, &UrlPolicy::default(), Some(buckets), |_, _| {}).await;
    let e = &env.engine;
    let t = e
        .import_snapshot(sub(), snapshot_from_bucket("d.qcow2"))
        .await
        .unwrap();
    let running = run_until_held(
        e,
        &t.id,
        &gate,
        "the import ended before it read the held block",
    )
    .await;
    // The same size, other bytes: only the ETag tells the versions apart.
    let second: Vec<u8> = first.iter().map(|b| b ^ 0x5a).collect();
    put_object(&url, "d.qcow2", second).await;
    gate.open();
    let done = running.await.unwrap();
    assert_eq!(
        done[0].status,
        status::DELETED,
        "{}",
        done[0].status_message
    );
    assert!(
        done[0].status_message.contains("changed while it was read"),
        "{}",
        done[0].status_message
    );
    assert!(env.volumes().is_empty());
    server.abort();
}

/// Runs the workers until task `id` ends, in the background; returns once `gate` holds one
/// of its requests (failing with `ended` if the task ends first).
async fn run_until_held(
    e: &engine::Engine,
    id: &str,
    gate: &s3::Gate,
    ended: &str,
) -> tokio::task::JoinHandle<Vec<catalog::Task>> {
    let (engine, id) = (e.clone(), id.to_string());
    let running = tokio::spawn(async move { run_until_ended(&engine, &[id]).await });
    while gate.waiting() == 0 {
        assert!(!running.is_finished(), "{ended}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    running
}

/// A raw disk of `mib` MiB with random data (it neither compresses nor deduplicates) in the
/// MiBs `data`, and the same as a qcow2.
fn random_qcow2(
    dir: &std::path::Path,
    mib: u64,
    data: std::ops::Range<u64>,
    seed: u64,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let raw = dir.join("d.raw");
    std::fs::File::create(&raw)
        .unwrap()
        .set_len(mib << 20)
        .unwrap();
    fill_random(&raw, data, seed);
    let img = qemu_convert(&raw, "qcow2", "", "d.qcow2");
    (raw, img)
}

/// Puts `bytes` at `key` of the bucket `src` of the test S3 server at `url`, through the S3
/// API as a user would (the server then keeps the object's ETag rather than hashing the
/// whole object again on every ranged read).
async fn put_object(url: &str, key: &str, bytes: Vec<u8>) {
    let objects = blockstore::Backend::S3(s3::s3_config(url.to_string(), "src"))
        .open()
        .unwrap();
    object_store::ObjectStoreExt::put(
        objects.as_ref(),
        &object_store::path::Path::from(key),
        bytes.into(),
    )
    .await
    .unwrap();
}

fn image_from(url: &str) -> ImportImageRequest {
    ImportImageRequest {
        disk_containers: vec![DiskContainer {
            url: Some(url.into()),
            ..DiskContainer::default()
        }],
        ..ImportImageRequest::default()
    }
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An HTTPS file server on 127.0.0.1 serving `dir`, with a certificate for `localhost` and
/// 127.0.0.1; returns it, its port and the certificate (PEM).
fn https_server(dir: &std::path::Path) -> (Server, u16, Vec<u8>) {
    let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    // A CA, and a server certificate it signs.
    let mut ca = vec!["req", "-x509", "-days", "1", "-subj", "/CN=vmie test CA"];
    ca.extend(ec);
    let (ca_key, ca_cert) = (p("ca.key"), p("ca.pem"));
    ca.extend(["-keyout", &ca_key, "-out", &ca_cert]);
    tool("openssl", &ca);
    let mut req = vec!["req", "-subj", "/CN=localhost"];
    req.extend(ec);
    let (key, csr) = (p("key.pem"), p("server.csr"));
    req.extend(["-keyout", &key, "-out", &csr]);
    tool("openssl", &req);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let (cert, ext) = (p("cert.pem"), p("ext.cnf"));
    tool(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_cert,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ],
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Under /ranged/ the server answers Range requests (206, Content-Range, an ETag and
    // If-Match, as S3 does) and notes each one in ranges.log; under /changing/ likewise, but
    // the ETag changes with every request (the image replaced while it is read); elsewhere
    // it is Python's plain file server, which sends whole files only.
    let script = format!(
        r#"import http.server, ssl, functools, os, re
served = [0]
class H(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        part = self.path.split('/')[1]
        if part not in ('ranged', 'changing'):
            return super().do_GET()
        path = self.translate_path(self.path[len(part) + 1:])
        served[0] += 1
        rng = self.headers.get('Range', '')
        if part == 'ranged':
            with open('{log}', 'a') as f:
                f.write(rng + '\n')
        m = re.fullmatch(r'bytes=(\d+)-(\d+)', rng)
        if not os.path.isfile(path) or not m:
            return super().do_GET()
        size = os.path.getsize(path)
        etag = '"%d-%d"' % (size, os.stat(path).st_mtime_ns)
        if part == 'changing':
            etag = '"v%d"' % served[0]
        if self.headers.get('If-Match', etag) != etag:
            self.send_response(412); self.send_header('Content-Length', '0'); self.end_headers(); return
        a, b = int(m[1]), min(int(m[2]), size - 1)
        if a >= size:
            self.send_response(416); self.send_header('Content-Length', '0'); self.end_headers(); return
        with open(path, 'rb') as f:
            f.seek(a); data = f.read(b - a + 1)
        self.send_response(206)
        self.send_header('Content-Range', 'bytes %d-%d/%d' % (a, b, size))
        self.send_header('Content-Length', str(len(data)))
        self.send_header('ETag', etag)
        self.end_headers()
        self.wfile.write(data)
h = functools.partial(H, directory='{d}')
srv = http.server.ThreadingHTTPServer(('127.0.0.1', {port}), h)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain('{c}', '{k}')
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
"#,
        d = s(&dir.join("www")),
        log = s(&dir.join("ranges.log")),
        c = cert,
        k = key,
    );
    let child = Command::new("python3")
        .args(["-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn_named();
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (Server(child), port, std::fs::read(ca_cert).unwrap())
}

fn snapshot_from_bucket(key: &str) -> ImportSnapshotRequest {
    ImportSnapshotRequest {
        disk_container: from_bucket(key),
        ..ImportSnapshotRequest::default()
    }
}

fn snapshot_from_url(u: String) -> ImportSnapshotRequest {
    ImportSnapshotRequest {
        disk_container: DiskContainer {
            url: Some(u),
            ..DiskContainer::default()
        },
        ..ImportSnapshotRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_from_an_https_url() {
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(work.path().join("www")).unwrap();
    let raw = debian_disk(work.path(), "HTTPS-MARKER", 16);
    let qcow = qemu_convert(&raw, "qcow2", "", "d.qcow2");
    std::fs::copy(&qcow, work.path().join("www/d.qcow2")).unwrap();
    // An image of several 8 MiB ranges for the server that answers ranges.
    let big_raw = work.path().join("big.raw");
    std::fs::File::create(&big_raw)
        .unwrap()
        .set_len(40 << 20)
        .unwrap();
    fill_random(&big_raw, 4..36, 0xb16);
    let big = qemu_convert(&big_raw, "qcow2", "", "big.qcow2");
    std::fs::copy(&big, work.path().join("www/big.qcow2")).unwrap();
    let (_server, port, cert) = https_server(work.path());

    // Allowed: the operator lists loopback and trusts the server's certificate.
    let policy = UrlPolicy {
        allow: vec!["127.0.0.0/8".parse().unwrap()],
        ca_pem: Some(cert.clone()),
    };
    // At every stage of every task, the presigned URL's signature is in no file of the
    // data folder: the catalog holds the query only sealed (issue 17).
    let seen = Arc::new(Mutex::new(Vec::new()));
    let env = {
        let seen = seen.clone();
        env_with(None, &policy, move |cfg, _| {
            let data = cfg.scratch_dir.parent().unwrap().to_path_buf();
            cfg.on_stage = Some(StageHook(Arc::new(move |_: &str, stage: &str| {
                let hits = files_containing(&data, b"0123secret", &data.join("buckets"));
                seen.lock().unwrap().push((stage.to_string(), hits));
            })));
        })
        .await
    };
    let e = &env.engine;
    let urls = [
        format!("https://127.0.0.1:{port}/d.qcow2?X-Amz-Signature=0123secret"),
        format!("https://127.0.0.1:{port}/none.qcow2"),
        // From a server that answers ranges: read in place, by ranges (no download first).
        format!("https://127.0.0.1:{port}/ranged/big.qcow2?X-Amz-Signature=0123secret"),
        // An image replaced while it is read (its ETag no longer matches): refused, not mixed.
        format!("https://127.0.0.1:{port}/changing/big.qcow2"),
    ];
    let mut ids = Vec::new();
    for u in urls {
        let t = e
            .import_snapshot(sub(), snapshot_from_url(u))
            .await
            .unwrap();
        ids.push(t.id);
    }
    let ended = run_until_ended(e, &ids).await;
    assert_eq!(
        ended[0].status,
        status::COMPLETED,
        "{}",
        ended[0].status_message
    );
    let d = TaskDetail::of(&ended[0]);
    assert_eq!(
        d.disks[0].url.as_deref(),
        Some(format!("https://127.0.0.1:{port}/d.qcow2").as_str())
    );
    assert_eq!(d.disks[0].format.as_deref(), Some("QCOW2"));
    let snap = d.disks[0].snapshot_id.clone().unwrap();
    let got = snapshot_bytes(e, &snap).await;
    assert!(got == std::fs::read(&raw).unwrap());
    assert_eq!(ended[1].status, status::DELETED);
    assert!(
        ended[1].status_message.contains("answered HTTP 404"),
        "{}",
        ended[1].status_message
    );
    assert_eq!(
        ended[2].status,
        status::COMPLETED,
        "{}",
        ended[2].status_message
    );
    let snap = TaskDetail::of(&ended[2]).disks[0]
        .snapshot_id
        .clone()
        .unwrap();
    assert!(snapshot_bytes(e, &snap).await == std::fs::read(&big_raw).unwrap());
    let ranges = std::fs::read_to_string(work.path().join("ranges.log")).unwrap();
    let ranges: Vec<&str> = ranges.lines().collect();
    assert!(
        ranges.len() >= 3 && ranges.iter().all(|r| r.starts_with("bytes=")),
        "every request of the image asked for a range: {ranges:?}"
    );
    assert_eq!(ranges[0], "bytes=0-8388607", "{ranges:?}");
    assert_eq!(ended[3].status, status::DELETED);
    assert!(
        ended[3]
            .status_message
            .contains("changed while it was read"),
        "{}",
        ended[3].status_message
    );
    for t in &ended {
        let t = e.catalog().task(ACCOUNT, &t.id).await.unwrap();
        let shown = format!("{t:?}");
        assert!(!shown.contains("0123secret"), "{shown}");
    }
    assert!(env.volumes().is_empty(), "{:?}", env.volumes());
    let seen = seen.lock().unwrap().clone();
    assert!(seen.len() >= 2, "{seen:?}");
    assert!(seen.iter().all(|(_, hits)| hits.is_empty()), "{seen:?}");
    // Nor once the tasks ended, the log included.
    let hits = files_containing(env.data(), b"0123secret", &env.bucket("src"));
    assert!(hits.is_empty(), "{hits:?}");

    // Not allowed: loopback by address is refused at once, by name when it resolves; a
    // server whose certificate is not trusted is refused too.
    let guarded = env_with(None, &UrlPolicy::default(), |_, _| {}).await;
    let g = &guarded.engine;
    let r = g
        .import_snapshot(
            sub(),
            snapshot_from_url(format!("https://127.0.0.1:{port}/d.qcow2")),
        )
        .await
        .unwrap_err();
    assert!(r.to_string().contains("loopback"), "{r}");
    let by_name = g
        .import_snapshot(
            sub(),
            snapshot_from_url(format!("https://localhost:{port}/d.qcow2")),
        )
        .await
        .unwrap();
    let trusting = env_with(
        None,
        &UrlPolicy {
            allow: vec!["127.0.0.0/8".parse().unwrap()],
            ca_pem: None,
        },
        |_, _| {},
    )
    .await;
    let untrusted = trusting
        .engine
        .import_snapshot(
            sub(),
            snapshot_from_url(format!("https://127.0.0.1:{port}/d.qcow2")),
        )
        .await
        .unwrap();
    let a = run_until_ended(g, std::slice::from_ref(&by_name.id)).await;
    assert_eq!(a[0].status, status::DELETED);
    assert!(
        a[0].status_message.contains("resolves only to loopback"),
        "{}",
        a[0].status_message
    );
    let b = run_until_ended(&trusting.engine, std::slice::from_ref(&untrusted.id)).await;
    assert_eq!(b[0].status, status::DELETED);
    assert!(
        b[0].status_message.to_lowercase().contains("certificate"),
        "{}",
        b[0].status_message
    );
}
