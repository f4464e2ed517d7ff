//! Issue 17's engine findings, each failing before its fix: an OVA's disks count against
//! the disk limit before any is decoded (so every snapshot a task can store has an id a
//! retry can derive and discard).

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation, missing_docs)]

mod harness;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use catalog::status;
use engine::{ImportImageRequest, ImportSnapshotRequest};
use harness::*;

/// An OVA made with `tar` holding `n` small stream-optimized VMDKs (by `qemu-img`), an OVF
/// naming each, and a SHA-256 manifest (by `sha256sum`).
fn many_disk_ova(work: &Path, n: usize) -> PathBuf {
    let dir = work.join(format!("ova{n}"));
    std::fs::create_dir_all(&dir).unwrap();
    let raw = work.join("small.raw");
    if !raw.exists() {
        blank(&raw, 1 << 20);
        fill_random(&raw, 0..1, 5);
    }
    let (mut files, mut disks, mut items) = (String::new(), String::new(), String::new());
    let mut names = vec!["vm.ovf".to_string()];
    for i in 1..=n {
        let name = format!("disk{i}.vmdk");
        let vmdk = dir.join(&name);
        tool(
            "qemu-img",
            &[
                "convert",
                "-q",
                "-f",
                "raw",
                "-O",
                "vmdk",
                "-o",
                "subformat=streamOptimized",
                s(&raw),
                s(&vmdk),
            ],
        );
        let size = std::fs::metadata(&vmdk).unwrap().len();
        files.push_str(&format!(
            r#"<File ovf:href="{name}" ovf:id="file{i}" ovf:size="{size}"/>"#
        ));
        disks.push_str(&format!(
            r#"<Disk ovf:capacity="{}" ovf:capacityAllocationUnits="byte" ovf:diskId="vmdisk{i}" ovf:fileRef="file{i}" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>"#,
            1 << 20
        ));
        items.push_str(&format!(
            r#"<Item><rasd:AddressOnParent>{}</rasd:AddressOnParent><rasd:ElementName>disk{i}</rasd:ElementName><rasd:HostResource>ovf:/disk/vmdisk{i}</rasd:HostResource><rasd:InstanceID>{}</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>"#,
            i - 1,
            10 + i
        ));
        names.push(name);
    }
    let ovf = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData">
  <References>{files}</References>
  <DiskSection><Info>disks</Info>{disks}</DiskSection>
  <VirtualSystem ovf:id="vm"><Info>A VM</Info><Name>vm</Name>
    <VirtualHardwareSection><Info>hw</Info>
      <Item><rasd:ElementName>SCSI</rasd:ElementName><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>lsilogic</rasd:ResourceSubType><rasd:ResourceType>6</rasd:ResourceType></Item>
      {items}
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#
    );
    std::fs::write(dir.join("vm.ovf"), ovf).unwrap();
    let out = std::process::Command::new("sha256sum")
        .args(&names)
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "sha256sum failed");
    let mf: String = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (h, f) = l.split_once("  ").unwrap();
            format!("SHA256({f})= {h}\n")
        })
        .collect();
    std::fs::write(dir.join("vm.mf"), mf).unwrap();
    names.push("vm.mf".into());
    let ova = work.join(format!("many{n}.ova"));
    let mut args = vec!["-C", s(&dir), "--format=ustar", "-cf", s(&ova)];
    args.extend(names.iter().map(String::as_str));
    tool("tar", &args);
    ova
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ova_disks_count_against_the_disk_limit_before_decoding() {
    let env = env(None).await;
    let e = &env.engine;
    let work = tempfile::tempdir().unwrap();
    env.upload(&many_disk_ova(work.path(), 17), "many17.ova");
    env.upload(&many_disk_ova(work.path(), 16), "many16.ova");
    env.upload(&many_disk_ova(work.path(), 2), "two.ova");
    let image = |key: &str| ImportImageRequest {
        disk_containers: vec![from_bucket(key)],
        platform: Some("Linux".into()),
        architecture: Some("x86_64".into()),
        ..ImportImageRequest::default()
    };

    // Seventeen disks: one more than an image takes. Refused before a byte is decoded, and
    // nothing stored.
    let t = e.import_image(sub(), image("many17.ova")).await.unwrap();
    let done = run_until_ended(e, std::slice::from_ref(&t.id)).await;
    assert_eq!(done[0].status, status::DELETED);
    assert!(
        done[0].status_message.contains("at most 16 disks")
            && done[0].status_message.contains("count to 17"),
        "{}",
        done[0].status_message
    );
    assert_eq!(e.stats().bytes_imported.load(Ordering::Relaxed), 0);
    assert!(e.store().list().await.unwrap().is_empty());

    // Two disks for import-snapshot: refused before decoding too.
    let snap = ImportSnapshotRequest {
        disk_container: from_bucket("two.ova"),
        ..ImportSnapshotRequest::default()
    };
    let t = e.import_snapshot(sub(), snap).await.unwrap();
    let done = run_until_ended(e, std::slice::from_ref(&t.id)).await;
    assert_eq!(done[0].status, status::DELETED);
    assert!(
        done[0]
            .status_message
            .contains("import-snapshot takes one disk"),
        "{}",
        done[0].status_message
    );
    assert_eq!(e.stats().bytes_imported.load(Ordering::Relaxed), 0);

    // Sixteen: the most an image takes, each a snapshot.
    let t = e.import_image(sub(), image("many16.ova")).await.unwrap();
    let done = run_until_ended(e, std::slice::from_ref(&t.id)).await;
    assert_eq!(
        done[0].status,
        status::COMPLETED,
        "{}",
        done[0].status_message
    );
    let img = e.catalog().image_of_task(&t.id).await.unwrap().unwrap();
    assert_eq!(img.block_devices.len(), 16);
    assert_eq!(e.store().list().await.unwrap().len(), 16);
    assert!(env.volumes().is_empty(), "{:?}", env.volumes());
}
