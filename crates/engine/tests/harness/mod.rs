//! The engine as the service builds it, over a temporary data folder: local buckets,
//! a local-folder snapshot store with its KMS, and a catalog (SQLite, or the PostgreSQL
//! URL given). Disks are made by real tools (`sfdisk`, `mkfs.ext4`, `qemu-img`, `tar`).

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::missing_panics_doc
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use testkit::ToolExt;

use blockstore::{Backend, BlockStore, StoreOptions};
use catalog::{Catalog, Task, TaskKind};
use engine::{
    Buckets, DiskContainer, Engine, EngineConfig, Sources, Submit, UrlPolicy, UserBucket,
};
use kms::{Kms, KmsConfig, RootKey};

#[path = "../../../guest/tests/common/mod.rs"]
pub mod common;
pub use common::{blank, boot_code, put, s, sfdisk, tool};

pub const ACCOUNT: &str = "111122223333";

pub struct Env {
    pub dir: tempfile::TempDir,
    pub engine: Engine,
}

impl Env {
    pub fn data(&self) -> &Path {
        self.dir.path()
    }
    pub fn bucket(&self, name: &str) -> PathBuf {
        self.data().join("buckets").join(name)
    }
    pub fn scratch(&self) -> PathBuf {
        self.data().join("scratch")
    }
    /// Copies `file` into bucket `src` as `key`.
    pub fn upload(&self, file: &Path, key: &str) {
        let to = self.bucket("src").join(key);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(file, to).unwrap();
    }
    pub fn catalog(&self) -> &Catalog {
        self.engine.catalog()
    }
    /// The `.vol` files in the intermediate-volume folder.
    pub fn volumes(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.scratch())
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

pub fn engine_parts(
    data: &Path,
    catalog: Catalog,
    cfg: EngineConfig,
    policy: &UrlPolicy,
    buckets: Buckets,
) -> Engine {
    let objects = Backend::Local {
        root: data.join("objects"),
    }
    .open()
    .unwrap();
    let root = RootKey::load_or_create(&data.join("root.key")).unwrap();
    let kms = Kms::new(
        objects.clone(),
        "kms",
        Arc::new(root),
        KmsConfig {
            region: "us-east-1".into(),
            account: ACCOUNT.into(),
        },
    );
    let store = BlockStore::new(objects, "snapshots", kms, StoreOptions::default()).unwrap();
    let sources = Sources::new(buckets, policy).unwrap();
    Engine::new(catalog, store, sources, cfg)
}

pub fn config(data: &Path) -> EngineConfig {
    let mut cfg = EngineConfig::new(data.join("scratch"));
    cfg.lease = Duration::from_secs(3);
    cfg.poll = Duration::from_millis(50);
    cfg.threads = 2;
    // The test images are not bootable; crates/engine/tests/booting.rs boots real guests.
    cfg.boot_check.mode = engine::BootCheckMode::Off;
    cfg
}

/// A fresh environment; `tweak` adjusts the configuration (given the catalog, for hooks).
pub async fn env_with(
    catalog_url: Option<&str>,
    policy: &UrlPolicy,
    tweak: impl FnOnce(&mut EngineConfig, &Catalog),
) -> Env {
    env_over(catalog_url, policy, None, tweak).await
}

/// [`env_with`] with buckets elsewhere than the data folder's `buckets/`.
pub async fn env_over(
    catalog_url: Option<&str>,
    policy: &UrlPolicy,
    buckets: Option<Buckets>,
    tweak: impl FnOnce(&mut EngineConfig, &Catalog),
) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    for b in ["src", "out"] {
        std::fs::create_dir_all(data.join("buckets").join(b)).unwrap();
    }
    let url = catalog_url.map_or_else(
        || format!("sqlite://{}", data.join("catalog.db").display()),
        str::to_string,
    );
    let catalog = Catalog::open(&url).await.unwrap();
    let mut cfg = config(data);
    tweak(&mut cfg, &catalog);
    let buckets = buckets.unwrap_or_else(|| Buckets::Local {
        root: data.join("buckets"),
    });
    let engine = engine_parts(data, catalog, cfg, policy, buckets);
    engine.startup().unwrap();
    Env { dir, engine }
}

pub async fn env(catalog_url: Option<&str>) -> Env {
    env_with(catalog_url, &UrlPolicy::default(), |_, _| {}).await
}

pub fn sub() -> Submit {
    Submit {
        account: ACCOUNT.into(),
        ..Submit::default()
    }
}

pub fn from_bucket(key: &str) -> DiskContainer {
    DiskContainer {
        user_bucket: Some(UserBucket {
            s3_bucket: "src".into(),
            s3_key: key.into(),
        }),
        ..DiskContainer::default()
    }
}

/// Runs two workers until every task in `ids` has ended; returns them as they ended.
pub async fn run_until_ended(engine: &Engine, ids: &[String]) -> Vec<Task> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let e = engine.clone();
    let workers = tokio::spawn(async move { e.run_workers(2, rx).await });
    let t0 = Instant::now();
    let out = loop {
        let mut all = Vec::new();
        for kind in [
            TaskKind::ImportImage,
            TaskKind::ImportSnapshot,
            TaskKind::ExportImage,
        ] {
            all.extend(engine.catalog().tasks(ACCOUNT, kind, 0).await.unwrap());
        }
        let mine: Vec<Task> = ids
            .iter()
            .map(|id| all.iter().find(|t| &t.id == id).unwrap().clone())
            .collect();
        if mine.iter().all(Task::ended) {
            break mine;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "tasks did not end: {:?}",
            mine.iter()
                .map(|t| (&t.id, &t.status, &t.status_message))
                .collect::<Vec<_>>()
        );
        // Short: tests that print a task's time (remote.rs) measure it with this loop.
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    tx.send(true).unwrap();
    workers.await.unwrap();
    out
}

/// Runs ImportImage `req` to its end, which must be `completed`; returns the image.
pub async fn imported_image(engine: &Engine, req: engine::ImportImageRequest) -> catalog::Image {
    let t = engine.import_image(sub(), req).await.unwrap();
    let done = run_until_ended(engine, std::slice::from_ref(&t.id)).await;
    assert_eq!(
        done[0].status,
        catalog::status::COMPLETED,
        "{}",
        done[0].status_message
    );
    engine
        .catalog()
        .image_of_task(&t.id)
        .await
        .unwrap()
        .unwrap()
}

/// ExportImage of `image` as `format` to `bucket` under `prefix`.
pub fn export_to(
    image: &str,
    format: &str,
    bucket: &str,
    prefix: &str,
) -> engine::ExportImageRequest {
    engine::ExportImageRequest {
        image_id: image.into(),
        disk_image_format: format.into(),
        s3_export_location: engine::ExportLocation {
            s3_bucket: bucket.into(),
            s3_prefix: Some(prefix.into()),
        },
        ..engine::ExportImageRequest::default()
    }
}

/// An ext4 root filesystem with Debian 12, a kernel, `/bin/sh`, and a file full of `marker`.
pub fn linux_root(dir: &Path, marker: &str, mib: u64) -> PathBuf {
    let tree = dir.join("tree");
    for d in ["etc", "boot", "bin", "home/user"] {
        std::fs::create_dir_all(tree.join(d)).unwrap();
    }
    std::fs::write(
        tree.join("etc/os-release"),
        "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n",
    )
    .unwrap();
    std::fs::write(tree.join("boot/vmlinuz-6.1.0-9-amd64"), vec![0x4du8; 8192]).unwrap();
    std::fs::copy("/bin/sh", tree.join("bin/sh")).unwrap();
    let mut secret = String::new();
    while secret.len() < 200_000 {
        secret.push_str(marker);
        secret.push('\n');
    }
    std::fs::write(tree.join("home/user/notes.txt"), secret).unwrap();
    let fs = dir.join("root.ext4");
    tool(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-L",
            "root",
            "-d",
            s(&tree),
            s(&fs),
            &format!("{mib}M"),
        ],
    );
    fs
}

/// A raw MBR disk of `mib` + 1 MiB: boot code and one active Linux partition with
/// [`linux_root`].
pub fn debian_disk(dir: &Path, marker: &str, mib: u64) -> PathBuf {
    let root = linux_root(dir, marker, mib);
    let disk = dir.join("debian.raw");
    blank(&disk, (mib + 1) << 20);
    sfdisk(
        &disk,
        &format!(
            "label: dos\nstart=2048, size={}, type=83, bootable\n",
            mib * 2048
        ),
    );
    put(&disk, &root, 2048 * 512);
    boot_code(&disk);
    disk
}

/// Overwrites MiB `mibs` of the file at `path` with pseudo-random bytes from `seed`: data
/// that neither compresses nor deduplicates, so that work on it takes measurable time.
pub fn fill_random(path: &Path, mibs: std::ops::Range<u64>, seed: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let mut next = common::xorshift(seed);
    let mut block = vec![0u8; 1 << 20];
    for mib in mibs {
        for x in block.chunks_exact_mut(8) {
            x.copy_from_slice(&next().to_le_bytes());
        }
        f.write_all_at(&block, mib << 20).unwrap();
    }
}

/// A data disk: an ext4 filesystem with files but no operating system.
pub fn data_disk(dir: &Path) -> PathBuf {
    let tree = dir.join("data-tree");
    std::fs::create_dir_all(tree.join("backups")).unwrap();
    std::fs::write(tree.join("backups/db.dump"), vec![7u8; 300_000]).unwrap();
    let fs = dir.join("data.raw");
    tool("mkfs.ext4", &["-q", "-F", "-d", s(&tree), s(&fs), "8M"]);
    fs
}

/// `qemu-img convert` of `raw` to `fmt` with `opts`, as `name` in `dir`.
pub fn qemu_convert(raw: &Path, fmt: &str, opts: &str, name: &str) -> PathBuf {
    let out = raw.parent().unwrap().join(name);
    let mut args = vec!["convert", "-f", "raw", "-O", fmt];
    if !opts.is_empty() {
        args.extend(["-o", opts]);
    }
    args.extend([s(raw), s(&out)]);
    tool("qemu-img", &args);
    out
}

/// An OVA made with `tar`: a hand-written OVF, a stream-optimized VMDK by qemu-img and a
/// SHA-256 manifest by `sha256sum`.
pub fn ova(raw: &Path) -> PathBuf {
    let dir = raw.parent().unwrap().join("ova");
    std::fs::create_dir_all(&dir).unwrap();
    let vmdk = qemu_convert(raw, "vmdk", "subformat=streamOptimized", "ova/disk1.vmdk");
    let vsize = std::fs::metadata(raw).unwrap().len();
    let fsize = std::fs::metadata(&vmdk).unwrap().len();
    let ovf = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData">
  <References><File ovf:href="disk1.vmdk" ovf:id="file1" ovf:size="{fsize}"/></References>
  <DiskSection><Info>disks</Info>
    <Disk ovf:capacity="{vsize}" ovf:capacityAllocationUnits="byte" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <VirtualSystem ovf:id="vm"><Info>A VM</Info><Name>vm</Name>
    <VirtualHardwareSection><Info>hw</Info>
      <Item><rasd:ElementName>SCSI</rasd:ElementName><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>lsilogic</rasd:ResourceSubType><rasd:ResourceType>6</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:ElementName>disk0</rasd:ElementName><rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>4</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#
    );
    std::fs::write(dir.join("vm.ovf"), ovf).unwrap();
    let out = std::process::Command::new("sha256sum")
        .args(["vm.ovf", "disk1.vmdk"])
        .current_dir(&dir)
        .output_named();
    let mf: String = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (h, f) = l.split_once("  ").unwrap();
            format!("SHA256({f})= {h}\n")
        })
        .collect();
    std::fs::write(dir.join("vm.mf"), mf).unwrap();
    let ova = raw.parent().unwrap().join("vm.ova");
    tool(
        "tar",
        &[
            "-C",
            s(&dir),
            "--format=ustar",
            "-cf",
            s(&ova),
            "vm.ovf",
            "disk1.vmdk",
            "vm.mf",
        ],
    );
    ova
}

/// Reads the whole snapshot `id` back through the store.
pub async fn snapshot_bytes(engine: &Engine, id: &str) -> Vec<u8> {
    let r = engine
        .store()
        .open(&kms::Caller::account_root(ACCOUNT), id)
        .await
        .unwrap();
    let mut buf = vec![0u8; r.size() as usize];
    r.read_at(&mut buf, 0).await.unwrap();
    buf
}

/// Every file under `root` (but `skip`) that contains `needle`.
pub fn files_containing(root: &Path, needle: &[u8], skip: &Path) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        if d == skip {
            continue;
        }
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p);
            } else if m.is_file() {
                let data = std::fs::read(&p).unwrap();
                if data.windows(needle.len()).any(|w| w == needle) {
                    hits.push(p);
                }
            }
        }
    }
    hits
}
