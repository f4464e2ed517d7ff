//! Scale-out: several `vmie serve` processes on one PostgreSQL catalog and one S3 service
//! (s3s-fs on loopback, holding the source and export buckets, the snapshot store, the keys
//! and the activity log), configured by one file. Imports and exports are submitted with the
//! real aws CLI, spread over the nodes; the node working on the largest import is SIGKILLed
//! in the middle of it. Every task must end completed exactly once, with no duplicate
//! snapshot or image, every export must match its source (`qemu-img compare`), the killed
//! node's volume must be destroyed when it comes back, and no intermediate data may remain.
//!
//! `scripts/cluster-test` runs this with measurements on (`VMIE_CLUSTER_MEASURE=1`): the
//! takeover time, and the throughput of 3 nodes against 1 on the same workload.
//! Sizes: `VMIE_CLUSTER_IMPORTS` (default 20), `VMIE_CLUSTER_EXPORTS` (5),
//! `VMIE_CLUSTER_NODES` (3).

#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    missing_docs
)]

#[path = "../../engine/tests/harness/mod.rs"]
mod harness;
#[path = "../../blockstore/tests/common/mod.rs"]
mod s3;
mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use testkit::ToolExt;

use catalog::Catalog;
use harness::*;
use object_store::ObjectStoreExt;
use support::{free_port, terminate, wait_port, wait_serving};

const MARKER: &str = "VMIE-CLUSTER-MARKER-5d2e";
const ACCOUNT: &str = "000000000000";

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Node {
    name: String,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            terminate(&mut c);
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Cluster {
    config: PathBuf,
    root_key: String,
    tls: Option<(PathBuf, PathBuf)>,
    key: (String, String),
    nodes: Vec<Node>,
    work: PathBuf,
}

impl Cluster {
    /// Starts node `i` (its own data folder, the shared configuration file).
    fn start(&mut self, i: usize) {
        let n = &self.nodes[i];
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmie"));
        // Test images are not bootable; crates/engine/tests/booting.rs boots real guests.
        cmd.env("VMIE_BOOT_CHECK", "off");
        cmd.arg("--config")
            .arg(&self.config)
            .arg("--data-dir")
            .arg(&n.dir)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{}", n.port),
                "--node",
                &n.name,
            ])
            .env("VMIE_ROOT_KEY", &self.root_key)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.work.join(format!("{}.log", n.name)))
                    .unwrap(),
            );
        if let Some((c, k)) = &self.tls {
            cmd.arg("--tls-cert").arg(c).arg("--tls-key").arg(k);
        }
        let mut child = cmd.spawn().unwrap();
        let out = child.stdout.take().unwrap();
        if self.key.0.is_empty() {
            // The first start of the deployment prints the admin key.
            let mut id = String::new();
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(v) = line.strip_prefix("AccessKeyId:") {
                    id = v.trim().to_string();
                }
                if let Some(v) = line.strip_prefix("SecretAccessKey:") {
                    self.key = (id.clone(), v.trim().to_string());
                    break;
                }
            }
        }
        wait_port(n.port);
        if self.tls.is_none() {
            let d = n.dir.join("tls");
            self.tls = Some((d.join("cert.pem"), d.join("key.pem")));
        }
        self.nodes[i].child = Some(child);
    }

    /// `aws ec2 ARGS` against node `i`; the JSON answer.
    fn aws(&self, i: usize, args: &[&str]) -> serde_json::Value {
        aws_ec2(
            &self.nodes[i],
            &self.key,
            &self.tls.as_ref().unwrap().0,
            args,
        )
    }
}

/// `aws ec2 ARGS` against `node` with `key`, trusting the certificate `ca`; the JSON answer.
fn aws_ec2(node: &Node, key: &(String, String), ca: &Path, args: &[&str]) -> serde_json::Value {
    let o = Command::new("aws")
        .args([
            "--endpoint-url",
            &node.endpoint(),
            "--output",
            "json",
            "ec2",
        ])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", &key.0)
        .env("AWS_SECRET_ACCESS_KEY", &key.1)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CA_BUNDLE", ca)
        .env("AWS_MAX_ATTEMPTS", "1")
        .output_named();
    assert!(
        o.status.success(),
        "aws ec2 {args:?} on {}: {}",
        node.name,
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Submits `f(k)` for each k, four at a time, spread over the live nodes; returns ids.
fn submit_all(
    c: &Cluster,
    live: &[usize],
    n: usize,
    f: impl Fn(usize) -> (Vec<String>, &'static str) + Sync,
) -> Vec<String> {
    let ids = std::sync::Mutex::new(vec![String::new(); n]);
    std::thread::scope(|s| {
        for lane in 0..4 {
            let (ids, f) = (&ids, &f);
            s.spawn(move || {
                for k in (lane..n).step_by(4) {
                    let (args, field) = f(k);
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    let r = c.aws(live[k % live.len()], &args);
                    ids.lock().unwrap()[k] = r[field].as_str().unwrap().to_string();
                }
            });
        }
    });
    ids.into_inner().unwrap()
}

/// Waits until every task in `ids` has ended; returns when the last did.
fn wait_all(
    rt: &tokio::runtime::Runtime,
    cat: &Catalog,
    ids: &[String],
    limit: Duration,
) -> Instant {
    let t0 = Instant::now();
    loop {
        let ended = ids
            .iter()
            .filter(|id| rt.block_on(cat.task(ACCOUNT, id)).unwrap().ended())
            .count();
        if ended == ids.len() {
            return Instant::now();
        }
        assert!(
            t0.elapsed() < limit,
            "{ended} of {} tasks ended in {limit:?}",
            ids.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn volumes(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir.join("scratch"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".vol"))
                .collect()
        })
        .unwrap_or_default()
}

/// The configuration file every node of a test cluster reads.
fn cluster_config(w: &Path, catalog_url: &str, s3url: &str) -> PathBuf {
    let config = w.join("cluster.toml");
    std::fs::write(
        &config,
        format!(
            r#"# Every node of the test cluster reads this file.
catalog_url = "{catalog_url}"
buckets = "s3"
lease_seconds = 6
workers = 2
rate_limit = 0

[s3]
bucket = "vmie"
endpoint = "{s3url}"
allow_http = true
path_style = true
access_key_id = "AKIAVMIETEST"
secret_access_key = "vmie-test-secret"
"#
        ),
    )
    .unwrap();
    config
}

/// A root key (hex) shared by the nodes of a test cluster.
fn root_key() -> String {
    let mut next = common::xorshift(u64::from(std::process::id()) | 1);
    (0..32).map(|_| format!("{:02x}", next() as u8)).collect()
}

#[test]
fn nodes_share_one_catalog_and_store_and_survive_a_dead_node() {
    let imports = setting("VMIE_CLUSTER_IMPORTS", 20).max(2);
    let exports = setting("VMIE_CLUSTER_EXPORTS", 5).min(imports - 1);
    let node_count = setting("VMIE_CLUSTER_NODES", 3).max(2);
    let measure = std::env::var("VMIE_CLUSTER_MEASURE").is_ok();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pg = catalog::pgtest::TempPostgres::start().expect("start PostgreSQL");
    let s3root = w.join("s3");
    // Reads of the large image from 64 MiB to 320 MiB (not its end, which the format probe at
    // submission reads) wait at this gate until the test has killed the node doing them: the
    // kill lands mid-import however fast or busy the machine is.
    let gate = s3::Gate::new("/src/big.qcow2", (64 << 20)..(320 << 20));
    let (s3url, _s3) = rt.block_on(s3::start_s3_gated(&s3root, "vmie", Some(gate.clone())));
    for b in ["src", "out", "trail"] {
        std::fs::create_dir_all(s3root.join(b)).unwrap();
    }

    // Sources, made by sfdisk, mkfs and qemu-img, uploaded to the bucket `src` (with PUT:
    // s3s-fs keeps the ETag of what it received; a file merely copied into its folder would
    // be hashed whole on every ranged read): a small Debian disk in three formats, and a
    // large one to kill a node on.
    let src = blockstore::Backend::S3(s3::s3_config(s3url.clone(), "src"))
        .open()
        .unwrap();
    let upload = |file: &Path, key: &str| {
        let data = std::fs::read(file).unwrap();
        rt.block_on(src.put(&object_store::path::Path::from(key), data.into()))
            .unwrap();
    };
    let raw = debian_disk(w, MARKER, 16);
    let formats = [
        ("vmdk", "subformat=streamOptimized"),
        ("qcow2", ""),
        ("vpc", ""),
    ];
    for (fmt, opts) in formats {
        let f = qemu_convert(&raw, fmt, opts, &format!("d.{fmt}"));
        upload(&f, &format!("debian.{fmt}"));
    }
    let bigdir = w.join("big");
    std::fs::create_dir_all(&bigdir).unwrap();
    let big = debian_disk(&bigdir, MARKER, 24);
    fill_random(&big, 32..352, 0x5eed);
    let q = qemu_convert(&big, "qcow2", "", "big.qcow2");
    upload(&q, "big.qcow2");

    // One configuration file for every node; each has its own data folder (certificate,
    // intermediate volumes) and name.
    let config = cluster_config(w, &pg.url, &s3url);
    let mut c = Cluster {
        config,
        root_key: root_key(),
        tls: None,
        key: (String::new(), String::new()),
        nodes: (0..node_count)
            .map(|i| Node {
                name: format!("node{}", i + 1),
                port: free_port(),
                dir: w.join(format!("node{}", i + 1)),
                child: None,
            })
            .collect(),
        work: w.to_path_buf(),
    };
    // The first node bootstraps the deployment (admin, role, certificate); then the others.
    for i in 0..node_count {
        c.start(i);
    }
    assert!(c.key.0.starts_with("AKIA"), "the admin key was printed");
    let cat = rt.block_on(Catalog::open(&pg.url)).unwrap();
    let all: Vec<usize> = (0..node_count).collect();

    // The large import first, then the rest, spread over every node.
    let t_submit = Instant::now();
    let big_id = c.aws(
        0,
        &[
            "import-image",
            "--description",
            "big",
            "--disk-containers",
            "UserBucket={S3Bucket=src,S3Key=big.qcow2}",
        ],
    )["ImportTaskId"]
        .as_str()
        .unwrap()
        .to_string();
    let mut ids = vec![big_id.clone()];
    ids.extend(submit_all(&c, &all[1..], imports - 1, |k| {
        let fmt = formats[k % formats.len()].0;
        (
            vec![
                "import-image".into(),
                "--client-token".into(),
                format!("import-{k}"),
                "--disk-containers".into(),
                format!("UserBucket={{S3Bucket=src,S3Key=debian.{fmt}}}"),
            ],
            "ImportTaskId",
        )
    }));

    // Idempotency is the deployment's, not a node's: the same ClientToken and request on
    // another node answers with the task the first node made.
    let fmt = formats[1 % formats.len()].0;
    let again = c.aws(
        0,
        &[
            "import-image",
            "--client-token",
            "import-1",
            "--disk-containers",
            &format!("UserBucket={{S3Bucket=src,S3Key=debian.{fmt}}}"),
        ],
    );
    assert_eq!(
        again["ImportTaskId"],
        ids[2].as_str(),
        "one task per ClientToken"
    );

    // SIGKILL the node whose worker holds the large import, once it is converting into its
    // intermediate volume and waiting at the gate for the rest of the image.
    let t0 = Instant::now();
    let (victim, attempt) = loop {
        let t = rt.block_on(cat.task(ACCOUNT, &big_id)).unwrap();
        if t.status_message == "converting"
            && gate.waiting() > 0
            && let Some(owner) = &t.lease_owner
            && let Some(i) = c
                .nodes
                .iter()
                .position(|n| owner.contains(&format!("-{}-w", n.pid())))
            && volumes(&c.nodes[i].dir)
                .iter()
                .any(|v| v.starts_with(&big_id))
        {
            break (i, t.attempts);
        }
        assert!(
            !t.ended(),
            "the large import ended at the gate: {}",
            t.status_message
        );
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "the large import never reached the gate"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    c.nodes[victim].kill();
    let t_kill = Instant::now();
    gate.open();
    // Its workers' volumes (the large import's, and any other it was running) remain.
    let left = volumes(&c.nodes[victim].dir);
    assert!(
        left.iter().any(|v| v.starts_with(&big_id)),
        "the dead node left its intermediate volume: {left:?}"
    );
    // Another node takes the task over once the lease runs out.
    let takeover = loop {
        let t = rt.block_on(cat.task(ACCOUNT, &big_id)).unwrap();
        if t.attempts > attempt && t.lease_owner.is_some() {
            break t_kill.elapsed();
        }
        assert!(
            t_kill.elapsed() < Duration::from_secs(120),
            "no node took the task over"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    println!(
        "takeover: {:.1} s after SIGKILL (lease 6 s)",
        takeover.as_secs_f64()
    );

    // The dead node comes back and destroys what it left.
    c.start(victim);
    assert!(volumes(&c.nodes[victim].dir).is_empty());
    let log = std::fs::read_to_string(w.join(format!("{}.log", c.nodes[victim].name))).unwrap();
    assert!(log.contains("destroyed an intermediate volume"), "{log}");

    let t_done = wait_all(&rt, &cat, &ids, Duration::from_secs(900));
    println!(
        "{} imports on {node_count} nodes (one killed mid-import): {:.1} s",
        ids.len(),
        (t_done - t_submit).as_secs_f64()
    );

    let mut spans: Vec<(i64, String)> = ids
        .iter()
        .map(|id| {
            let t = rt.block_on(cat.task(ACCOUNT, id)).unwrap();
            let ev = rt.block_on(cat.events(id)).unwrap();
            let claimed = ev.first().map_or(t.created_ms, |e| e.at_ms);
            (t.ended_ms.unwrap_or(0) - claimed, id.clone())
        })
        .collect();
    spans.sort();
    println!(
        "task times (first event to end): shortest {:.1} s, median {:.1} s, longest {:.1} s ({})",
        spans[0].0 as f64 / 1000.0,
        spans[spans.len() / 2].0 as f64 / 1000.0,
        spans[spans.len() - 1].0 as f64 / 1000.0,
        if spans[spans.len() - 1].1 == big_id {
            "the large one"
        } else {
            "a small one"
        }
    );

    // Every import completed exactly once: one image and one snapshot each, none twice.
    let mut images = std::collections::HashSet::new();
    let mut snapshots = std::collections::HashSet::new();
    for id in &ids {
        let t = rt.block_on(cat.task(ACCOUNT, id)).unwrap();
        assert_eq!(t.status, "completed", "{id}: {}", t.status_message);
        let img = rt.block_on(cat.image_of_task(id)).unwrap().unwrap();
        assert!(images.insert(img.id.clone()));
        let snaps = rt.block_on(cat.snapshots_of_task(id)).unwrap();
        assert_eq!(snaps.len(), 1, "{id}");
        assert!(snapshots.insert(snaps[0].id.clone()));
    }
    assert_eq!(rt.block_on(cat.images(ACCOUNT)).unwrap().len(), ids.len());
    assert_eq!(
        rt.block_on(cat.snapshots(ACCOUNT)).unwrap().len(),
        ids.len()
    );
    let manifests = std::fs::read_dir(s3root.join("vmie/snapshots/manifests"))
        .unwrap()
        .count();
    assert_eq!(
        manifests,
        ids.len(),
        "stored snapshots: no attempt left one behind"
    );
    let described = c.aws(1, &["describe-import-image-tasks"])["ImportImageTasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["Status"] == "completed")
        .count();
    assert_eq!(described, ids.len());

    // Exports of the small images, spread over the nodes, each compared with its source.
    let small: Vec<String> = ids[1..=exports]
        .iter()
        .map(|id| rt.block_on(cat.image_of_task(id)).unwrap().unwrap().id)
        .collect();
    let fmts = ["VMDK", "VHD", "RAW"];
    let xids = submit_all(&c, &all, exports, |k| {
        (
            vec![
                "export-image".into(),
                "--image-id".into(),
                small[k].clone(),
                "--disk-image-format".into(),
                fmts[k % fmts.len()].into(),
                "--s3-export-location".into(),
                "S3Bucket=out,S3Prefix=exports/".into(),
            ],
            "ExportImageTaskId",
        )
    });
    wait_all(&rt, &cat, &xids, Duration::from_secs(600));
    for (k, x) in xids.iter().enumerate() {
        let t = rt.block_on(cat.task(ACCOUNT, x)).unwrap();
        assert_eq!(t.status, "completed", "{x}: {}", t.status_message);
        let ext = fmts[k % fmts.len()].to_lowercase();
        let file = s3root.join(format!("out/exports/{x}.{ext}"));
        let o = Command::new("qemu-img")
            .args(["compare", "-f", "raw"])
            .arg(&raw)
            .arg(&file)
            .output_named();
        assert!(
            o.status.success(),
            "{x}: {}",
            String::from_utf8_lossy(&o.stdout)
        );
    }

    // No intermediate data anywhere; the guest's bytes only in the buckets' plain files.
    for n in &c.nodes {
        assert!(volumes(&n.dir).is_empty(), "{}", n.name);
        let hits = files_containing(&n.dir, MARKER.as_bytes(), &n.dir.join("none"));
        assert!(hits.is_empty(), "plaintext in {hits:?}");
    }
    let hits = files_containing(
        &s3root.join("vmie"),
        MARKER.as_bytes(),
        &s3root.join("none"),
    );
    assert!(hits.is_empty(), "plaintext in the store: {hits:?}");

    if measure {
        throughput(&rt, &cat, &mut c, &s3url);
    }
    for n in &mut c.nodes {
        n.stop();
    }
}

/// The same workload on one node and on every node: import-snapshot of 8 disks of 64 MiB.
fn throughput(rt: &tokio::runtime::Runtime, cat: &Catalog, c: &mut Cluster, s3url: &str) {
    let disk = c.work.join("data.raw");
    blank(&disk, 64 << 20);
    fill_random(&disk, 0..64, 99);
    let q = qemu_convert(&disk, "qcow2", "", "data.qcow2");
    let src = blockstore::Backend::S3(s3::s3_config(s3url.to_string(), "src"))
        .open()
        .unwrap();
    let data = std::fs::read(&q).unwrap();
    rt.block_on(src.put(&object_store::path::Path::from("data.qcow2"), data.into()))
        .unwrap();
    let run = |c: &Cluster, live: &[usize], tag: &str| {
        let t = Instant::now();
        let ids = submit_all(c, live, 8, |k| {
            (
                vec![
                    "import-snapshot".into(),
                    "--client-token".into(),
                    format!("{tag}-{k}"),
                    "--disk-container".into(),
                    "Format=QCOW2,UserBucket={S3Bucket=src,S3Key=data.qcow2}".into(),
                ],
                "ImportTaskId",
            )
        });
        (wait_all(rt, cat, &ids, Duration::from_secs(900)) - t).as_secs_f64()
    };
    for n in &mut c.nodes[1..] {
        n.stop();
    }
    let one = run(c, &[0], "one");
    for i in 1..c.nodes.len() {
        c.start(i);
    }
    let all: Vec<usize> = (0..c.nodes.len()).collect();
    let many = run(c, &all, "all");
    println!(
        "throughput, 8 imports of 64 MiB: 1 node {one:.1} s ({:.1} MiB/s), {} nodes {many:.1} s ({:.1} MiB/s), ratio {:.2}",
        8.0 * 64.0 / one,
        c.nodes.len(),
        8.0 * 64.0 / many,
        one / many
    );
}

/// Nodes started at the same moment on an empty catalog: one creates the `admin` user, its
/// key and the `vmimport` role, the others find them made, and every node serves.
#[test]
fn nodes_started_together_on_an_empty_catalog_all_serve() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pg = catalog::pgtest::TempPostgres::start().expect("start PostgreSQL");
    let (s3url, _s3) = rt.block_on(s3::start_s3(&w.join("s3"), "vmie"));
    std::fs::create_dir_all(w.join("s3/trail")).unwrap();
    let config = cluster_config(w, &pg.url, &s3url);
    let key = root_key();
    let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| Node {
            name: format!("node{}", i + 1),
            port: free_port(),
            dir: w.join(format!("node{}", i + 1)),
            child: None,
        })
        .collect();
    // Every process is spawned before any has had time to look at the catalog.
    for n in &mut nodes {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vmie"))
            .env("VMIE_BOOT_CHECK", "off")
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(&n.dir)
            .args(["serve", "--listen", &format!("127.0.0.1:{}", n.port)])
            .args(["--node", &n.name])
            .env("VMIE_ROOT_KEY", &key)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(w.join(format!("{}.log", n.name))).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let out = out.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                out.lock().unwrap().push(line);
            }
        });
        n.child = Some(child);
    }
    for n in &mut nodes {
        let log = w.join(format!("{}.log", n.name));
        wait_serving(n.child.as_mut().unwrap(), n.port, &log);
    }
    // The key is printed before the listener opens, so it is in the output by now.
    let lines = out.lock().unwrap().clone();
    let field = |name: &str| -> Vec<String> {
        lines
            .iter()
            .filter_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
            .collect()
    };
    let (ids, secrets) = (field("AccessKeyId:"), field("SecretAccessKey:"));
    assert_eq!(
        ids.len(),
        1,
        "exactly one node printed the admin key: {lines:?}"
    );
    assert_eq!(secrets.len(), 1);
    let cat = rt.block_on(Catalog::open(&pg.url)).unwrap();
    let users: Vec<String> = rt
        .block_on(cat.users(ACCOUNT))
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(users, ["admin"]);
    assert_eq!(rt.block_on(cat.roles(ACCOUNT)).unwrap(), ["vmimport"]);
    let keys = rt
        .block_on(cat.access_keys(ACCOUNT, Some("admin")))
        .unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].access_key_id, ids[0]);
    // The printed key works on every node.
    let admin = (ids[0].clone(), secrets[0].clone());
    for n in &nodes {
        let r = aws_ec2(
            n,
            &admin,
            &n.dir.join("tls/cert.pem"),
            &["describe-import-image-tasks"],
        );
        assert!(r["ImportImageTasks"].is_array(), "{}: {r}", n.name);
    }
    for n in &mut nodes {
        n.stop();
    }
}

/// `aws s3 …` (or `aws s3api …`) against `node`; stdout, or the error when `ok` is false.
fn aws_s3(node: &Node, key: &(String, String), args: &[&str], ok: bool) -> String {
    let config = node.dir.join("aws-config");
    // The aws CLI v1 presigns with SigV2 unless told otherwise; vmie accepts SigV4 only.
    std::fs::write(&config, "[default]\ns3 =\n    signature_version = s3v4\n").unwrap();
    let o = Command::new("aws")
        .args(["--endpoint-url", &node.endpoint(), "--output", "json"])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", &key.0)
        .env("AWS_SECRET_ACCESS_KEY", &key.1)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CA_BUNDLE", node.dir.join("tls/cert.pem"))
        .env("AWS_CONFIG_FILE", &config)
        .env("AWS_MAX_ATTEMPTS", "1")
        .output_named();
    assert_eq!(
        o.status.success(),
        ok,
        "aws {args:?} on {}: {}",
        node.name,
        String::from_utf8_lossy(&o.stderr)
    );
    if ok {
        String::from_utf8_lossy(&o.stdout).into_owned()
    } else {
        String::from_utf8_lossy(&o.stderr).into_owned()
    }
}

/// S3 on the endpoint of a scale-out deployment: its buckets are the S3 service's, reached
/// through the same object-store layer, whichever node is asked. A bucket made on one node
/// is listed on another; an image uploaded in parts through one is imported through the
/// other; an aborted upload leaves nothing in the S3 service; rm and rb empty it again.
#[test]
fn s3_calls_reach_the_buckets_of_a_scale_out_deployment() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pg = catalog::pgtest::TempPostgres::start().expect("start PostgreSQL");
    let s3root = w.join("s3");
    let (s3url, _s3) = rt.block_on(s3::start_s3(&s3root, "vmie"));
    let config = cluster_config(w, &pg.url, &s3url);
    let key = root_key();
    let mut nodes: Vec<Node> = (0..2)
        .map(|i| Node {
            name: format!("node{}", i + 1),
            port: free_port(),
            dir: w.join(format!("node{}", i + 1)),
            child: None,
        })
        .collect();
    let mut admin = (String::new(), String::new());
    let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    for n in &mut nodes {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vmie"))
            .env("VMIE_BOOT_CHECK", "off")
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(&n.dir)
            .args(["serve", "--listen", &format!("127.0.0.1:{}", n.port)])
            .args(["--node", &n.name])
            .env("VMIE_ROOT_KEY", &key)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(w.join(format!("{}.log", n.name))).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let out = out.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                out.lock().unwrap().push(line);
            }
        });
        n.child = Some(child);
        let log = w.join(format!("{}.log", n.name));
        wait_serving(n.child.as_mut().unwrap(), n.port, &log);
    }
    // The key is printed before the listener opens.
    for line in out.lock().unwrap().iter() {
        if let Some(v) = line.strip_prefix("AccessKeyId:") {
            admin.0 = v.trim().into();
        }
        if let Some(v) = line.strip_prefix("SecretAccessKey:") {
            admin.1 = v.trim().into();
        }
    }
    assert!(admin.0.starts_with("AKIA"), "the admin key was printed");
    let (a, b) = (&nodes[0], &nodes[1]);

    aws_s3(a, &admin, &["s3", "mb", "s3://uploads"], true);
    assert!(
        s3root.join("uploads").is_dir(),
        "the bucket is the S3 service's"
    );
    assert!(aws_s3(b, &admin, &["s3", "ls"], true).contains("uploads"));
    // An image in parts through one node, imported through the other.
    let raw = debian_disk(w, MARKER, 24);
    aws_s3(
        a,
        &admin,
        &["s3", "cp", s(&raw), "s3://uploads/images/d.raw"],
        true,
    );
    let head: serde_json::Value = serde_json::from_str(&aws_s3(
        b,
        &admin,
        &[
            "s3api",
            "head-object",
            "--bucket",
            "uploads",
            "--key",
            "images/d.raw",
        ],
        true,
    ))
    .unwrap();
    assert!(
        head["ETag"].as_str().unwrap().ends_with("-4\""),
        "a multipart ETag: {head}"
    );
    assert_eq!(
        std::fs::read(s3root.join("uploads/images/d.raw")).unwrap(),
        std::fs::read(&raw).unwrap()
    );
    let ca = b.dir.join("tls/cert.pem");
    let r = aws_ec2(
        b,
        &admin,
        &ca,
        &[
            "import-image",
            "--disk-containers",
            "Format=RAW,UserBucket={S3Bucket=uploads,S3Key=images/d.raw}",
        ],
    );
    let id = r["ImportTaskId"].as_str().unwrap().to_string();
    let mut done = false;
    for _ in 0..600 {
        let t = aws_ec2(
            a,
            &admin,
            &a.dir.join("tls/cert.pem"),
            &["describe-import-image-tasks", "--import-task-ids", &id],
        );
        let status = t["ImportImageTasks"][0]["Status"]
            .as_str()
            .unwrap()
            .to_string();
        if status == "completed" {
            done = true;
            break;
        }
        assert_eq!(status, "active", "{t}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(done, "{id} did not complete");
    // An aborted upload leaves nothing in the S3 service.
    let up: serde_json::Value = serde_json::from_str(&aws_s3(
        a,
        &admin,
        &[
            "s3api",
            "create-multipart-upload",
            "--bucket",
            "uploads",
            "--key",
            "x.raw",
        ],
        true,
    ))
    .unwrap();
    let upload_id = up["UploadId"].as_str().unwrap();
    aws_s3(
        b,
        &admin,
        &[
            "s3api",
            "upload-part",
            "--bucket",
            "uploads",
            "--key",
            "x.raw",
            "--upload-id",
            upload_id,
            "--part-number",
            "1",
            "--body",
            s(&raw),
        ],
        true,
    );
    aws_s3(
        a,
        &admin,
        &[
            "s3api",
            "abort-multipart-upload",
            "--bucket",
            "uploads",
            "--key",
            "x.raw",
            "--upload-id",
            upload_id,
        ],
        true,
    );
    let left: Vec<_> = walk(&s3root.join("uploads"))
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".vmie-uploads") || p.ends_with("x.raw"))
        .collect();
    assert!(left.is_empty(), "left after abort: {left:?}");
    // rm and rb, then nothing of the bucket remains.
    assert!(aws_s3(b, &admin, &["s3", "rb", "s3://uploads"], false).contains("BucketNotEmpty"));
    aws_s3(
        b,
        &admin,
        &["s3", "rm", "s3://uploads", "--recursive"],
        true,
    );
    aws_s3(a, &admin, &["s3", "rb", "s3://uploads"], true);
    assert!(!aws_s3(b, &admin, &["s3", "ls"], true).contains("uploads"));
    for n in &mut nodes {
        n.stop();
    }
}

/// Every file below `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
