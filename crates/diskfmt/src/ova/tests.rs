//! OVA tests: appliances packed by GNU tar (and Python's tarfile for members tar will not
//! make) around a hand-written OVF, a VMDK made by qemu-img and a manifest made by
//! sha256sum / sha1sum.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use super::Appliance;
use crate::testutil::{qemu_img, read_all, tmp, write_sample_raw};
use crate::{DiskError, FileSource, Limits};

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn ovf_text(href: &str, size: u64, capacity_gib_units: bool, capacity: u64) -> String {
    let (cap, units) = if capacity_gib_units {
        ((capacity >> 20).to_string(), "byte * 2^20")
    } else {
        (capacity.to_string(), "byte")
    };
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!-- made by hand for the vmie tests &amp; nothing else -->
<ovf:Envelope ovf:version="1.0" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
    xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
    xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
    xmlns:vbox="http://www.virtualbox.org/ovf/machine">
  <ovf:References>
    <ovf:File ovf:href="{href}" ovf:id="file1" ovf:size="{size}"/>
  </ovf:References>
  <ovf:DiskSection>
    <ovf:Info>List of the virtual disks used in the package</ovf:Info>
    <ovf:Disk ovf:capacity="{cap}" ovf:capacityAllocationUnits="{units}" ovf:diskId="vmdisk1"
      ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </ovf:DiskSection>
  <ovf:VirtualSystem ovf:id="test-vm">
    <ovf:Info>A virtual machine</ovf:Info>
    <ovf:OperatingSystemSection ovf:id="96">
      <ovf:Info>The kind of installed guest operating system</ovf:Info>
      <ovf:Description>Debian_64 &lt;bookworm&gt;</ovf:Description>
    </ovf:OperatingSystemSection>
    <ovf:VirtualHardwareSection>
      <ovf:Info>Virtual hardware requirements for a virtual machine</ovf:Info>
      <ovf:Item>
        <rasd:Caption>2 virtual CPU</rasd:Caption>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>2</rasd:VirtualQuantity>
      </ovf:Item>
      <ovf:Item>
        <rasd:AllocationUnits>MegaBytes</rasd:AllocationUnits>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>2048</rasd:VirtualQuantity>
      </ovf:Item>
      <ovf:Item>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>AHCI</rasd:ResourceSubType>
        <rasd:ResourceType>20</rasd:ResourceType>
      </ovf:Item>
      <ovf:Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:HostResource>/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </ovf:Item>
    </ovf:VirtualHardwareSection>
  </ovf:VirtualSystem>
</ovf:Envelope>
"#
    )
}

fn digest_of(tool: &str, path: &Path) -> String {
    let o = crate::testutil::output(Command::new(tool).arg(path));
    assert!(o.status.success());
    String::from_utf8(o.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// A folder with `vm.ovf`, `disk1.vmdk` (stream-optimized, by qemu-img, from an 8 MiB sample)
/// and `vm.mf` (SHA256 for the OVF, SHA1 for the disk); returns (folder, source raw).
fn appliance_parts(dir: &Path) -> std::path::PathBuf {
    let raw = dir.join("src.raw");
    write_sample_raw(&raw, 8 << 20);
    let parts = dir.join("parts");
    std::fs::create_dir_all(&parts).unwrap();
    let vmdk = parts.join("disk1.vmdk");
    qemu_img(&[
        "convert",
        "-O",
        "vmdk",
        "-o",
        "subformat=streamOptimized",
        p(&raw),
        p(&vmdk),
    ]);
    let size = std::fs::metadata(&vmdk).unwrap().len();
    std::fs::write(
        parts.join("vm.ovf"),
        ovf_text("disk1.vmdk", size, true, 8 << 20),
    )
    .unwrap();
    write_manifest(&parts, &["vm.ovf", "disk1.vmdk"]);
    raw
}

fn write_manifest(parts: &Path, files: &[&str]) {
    let mut mf = String::new();
    for (i, f) in files.iter().enumerate() {
        let (alg, tool) = if i % 2 == 0 {
            ("SHA256", "sha256sum")
        } else {
            ("SHA1", "sha1sum")
        };
        mf.push_str(&format!(
            "{alg}({f})= {}\n",
            digest_of(tool, &parts.join(f))
        ));
    }
    std::fs::write(parts.join("vm.mf"), mf).unwrap();
}

fn pack(parts: &Path, out: &Path, members: &[&str]) {
    let o = crate::testutil::output(
        Command::new("tar")
            .arg("--format=ustar")
            .arg("-cf")
            .arg(out)
            .arg("-C")
            .arg(parts)
            .args(members),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn open(path: &Path) -> crate::Result<Appliance> {
    Appliance::open(
        Arc::new(FileSource::open(path).unwrap()),
        &Limits::default(),
    )
}

fn open_verified(path: &Path) -> crate::Result<Appliance> {
    let a = open(path)?;
    a.verify(&AtomicU64::new(0))?;
    Ok(a)
}

fn code(e: &DiskError) -> &'static str {
    e.reason_code()
}

#[test]
fn test_ova_tar_made_imports_with_ovf_fields_and_identical_disk() {
    let dir = tmp();
    let raw = appliance_parts(dir.path());
    let parts = dir.path().join("parts");
    let ova = dir.path().join("vm.ova");
    pack(&parts, &ova, &["vm.ovf", "disk1.vmdk", "vm.mf"]);
    let a = open_verified(&ova).unwrap();
    assert_eq!(a.ovf.version, "1");
    assert_eq!(a.ovf.name.as_deref(), Some("test-vm"));
    assert_eq!(a.ovf.os_id, Some(96));
    assert_eq!(
        a.ovf.os_description.as_deref(),
        Some("Debian_64 <bookworm>")
    );
    assert_eq!(a.ovf.cpus, Some(2));
    assert_eq!(a.ovf.memory_mib, Some(2048));
    assert_eq!(a.ovf.controllers.len(), 1);
    assert_eq!(a.ovf.controllers[0].kind, "sata");
    assert_eq!(a.ovf.attached_disks, vec!["vmdisk1".to_string()]);
    assert_eq!(a.disks.len(), 1);
    assert_eq!(a.disks[0].capacity, 8 << 20);
    assert!(a.warnings.is_empty(), "{:?}", a.warnings);
    let disk = a.open_disk(0, &Limits::default()).unwrap();
    assert_eq!(disk.info().format, crate::Format::Vmdk);
    assert_eq!(read_all(&*disk), std::fs::read(&raw).unwrap());
    assert!(a.open_disk(1, &Limits::default()).is_err());
}

#[test]
fn test_ova_pax_and_gnu_long_names_are_read() {
    let dir = tmp();
    appliance_parts(dir.path());
    let parts = dir.path().join("parts");
    let long = format!("{}.vmdk", "d".repeat(150));
    std::fs::rename(parts.join("disk1.vmdk"), parts.join(&long)).unwrap();
    let size = std::fs::metadata(parts.join(&long)).unwrap().len();
    std::fs::write(parts.join("vm.ovf"), ovf_text(&long, size, false, 8 << 20)).unwrap();
    write_manifest(&parts, &["vm.ovf", &long]);
    for format in ["--format=pax", "--format=gnu"] {
        let ova = dir.path().join("long.ova");
        let o = crate::testutil::output(Command::new("tar").args([
            format,
            "-cf",
            p(&ova),
            "-C",
            p(&parts),
            "vm.ovf",
            &long,
            "vm.mf",
        ]));
        assert!(o.status.success());
        let a = open_verified(&ova).unwrap();
        assert_eq!(a.disks[0].file, long, "{format}");
    }
}

#[test]
fn test_ova_tampered_manifest_or_disk_refused_as_mismatch() {
    let dir = tmp();
    appliance_parts(dir.path());
    let parts = dir.path().join("parts");
    // A changed digest.
    let mf = std::fs::read_to_string(parts.join("vm.mf")).unwrap();
    let line = mf.lines().nth(1).unwrap();
    let last = line.chars().last().unwrap();
    let flipped = if last == '0' { '1' } else { '0' };
    let bad = mf.replace(line, &format!("{}{flipped}", &line[..line.len() - 1]));
    std::fs::write(parts.join("vm.mf"), bad).unwrap();
    let ova = dir.path().join("a.ova");
    pack(&parts, &ova, &["vm.ovf", "disk1.vmdk", "vm.mf"]);
    let e = open_verified(&ova).err().unwrap();
    assert_eq!(code(&e), "ova-manifest-mismatch", "{e}");
    assert!(e.to_string().contains("disk1.vmdk"), "{e}");
    // A changed disk byte under the original manifest.
    write_manifest(&parts, &["vm.ovf", "disk1.vmdk"]);
    let mut v = std::fs::read(parts.join("disk1.vmdk")).unwrap();
    v[70_000] ^= 1;
    std::fs::write(parts.join("disk1.vmdk"), v).unwrap();
    pack(&parts, &ova, &["vm.ovf", "disk1.vmdk", "vm.mf"]);
    let e = open_verified(&ova).err().unwrap();
    assert_eq!(code(&e), "ova-manifest-mismatch", "{e}");
    // A manifest leaving a file out.
    write_manifest(&parts, &["vm.ovf"]);
    pack(&parts, &ova, &["vm.ovf", "disk1.vmdk", "vm.mf"]);
    let e = open_verified(&ova).err().unwrap();
    assert_eq!(code(&e), "ova-manifest-mismatch", "{e}");
}

/// Packs members with Python's tarfile: `(name, kind, data)` with kind file/symlink/hardlink/
/// chardev/fifo.
fn pack_py(out: &Path, members: &[(&str, &str, &Path)]) {
    let mut script = String::from(
        "import tarfile,sys\nt=tarfile.open(sys.argv[1],'w',format=tarfile.USTAR_FORMAT)\n",
    );
    for (name, kind, path) in members {
        match *kind {
            // TarInfo.name is set after gettarinfo, which would strip a leading '/'.
            "file" => script.push_str(&format!(
                "i=t.gettarinfo({path:?}); i.name={name:?}; t.addfile(i, open({path:?},'rb'))\n",
                path = p(path)
            )),
            k => {
                let ty = match k {
                    "symlink" => "SYMTYPE",
                    "hardlink" => "LNKTYPE",
                    "chardev" => "CHRTYPE",
                    _ => "FIFOTYPE",
                };
                script.push_str(&format!(
                    "i=tarfile.TarInfo({name:?}); i.type=tarfile.{ty}; i.linkname='/etc/passwd'; t.addfile(i)\n"
                ));
            }
        }
    }
    script.push_str("t.close()\n");
    let o = crate::testutil::output(Command::new("python3").args(["-c", &script, p(out)]));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn test_ova_unsafe_members_refused_with_named_reasons() {
    let dir = tmp();
    appliance_parts(dir.path());
    let parts = dir.path().join("parts");
    let (ovf, vmdk, mf) = (
        parts.join("vm.ovf"),
        parts.join("disk1.vmdk"),
        parts.join("vm.mf"),
    );
    let ova = dir.path().join("x.ova");
    type Members<'a> = Vec<(&'a str, &'a str, &'a Path)>;
    let cases: Vec<(&str, Members<'_>)> = vec![
        (
            "ova-unsafe-name",
            vec![("vm.ovf", "file", &ovf), ("../disk1.vmdk", "file", &vmdk)],
        ),
        (
            "ova-unsafe-name",
            vec![("vm.ovf", "file", &ovf), ("/tmp/disk1.vmdk", "file", &vmdk)],
        ),
        (
            "ova-unsafe-name",
            vec![
                ("vm.ovf", "file", &ovf),
                ("a/../../disk1.vmdk", "file", &vmdk),
            ],
        ),
        (
            "ova-link",
            vec![("vm.ovf", "file", &ovf), ("disk1.vmdk", "symlink", &vmdk)],
        ),
        (
            "ova-link",
            vec![("vm.ovf", "file", &ovf), ("disk1.vmdk", "hardlink", &vmdk)],
        ),
        (
            "ova-special-file",
            vec![("vm.ovf", "file", &ovf), ("disk1.vmdk", "chardev", &vmdk)],
        ),
        (
            "ova-special-file",
            vec![("vm.ovf", "file", &ovf), ("x", "fifo", &vmdk)],
        ),
        (
            "ova-duplicate-member",
            vec![
                ("vm.ovf", "file", &ovf),
                ("disk1.vmdk", "file", &vmdk),
                ("disk1.vmdk", "file", &mf),
            ],
        ),
        (
            "ova-unreferenced-file",
            vec![
                ("vm.ovf", "file", &ovf),
                ("disk1.vmdk", "file", &vmdk),
                ("extra.vmdk", "file", &vmdk),
            ],
        ),
        (
            "ova-missing-file",
            vec![("vm.ovf", "file", &ovf), ("vm.mf", "file", &mf)],
        ),
        ("ova-no-descriptor", vec![("disk1.vmdk", "file", &vmdk)]),
    ];
    for (want, members) in cases {
        pack_py(&ova, &members);
        let e = open_verified(&ova)
            .err()
            .unwrap_or_else(|| panic!("{want}: accepted"));
        assert_eq!(code(&e), want, "{e}");
        assert!(!e.to_string().contains("/etc/passwd"), "{e}");
    }
}

#[test]
fn test_ova_oversized_descriptor_refused_before_parsing() {
    let dir = tmp();
    appliance_parts(dir.path());
    let parts = dir.path().join("parts");
    let mut text = std::fs::read_to_string(parts.join("vm.ovf")).unwrap();
    text.push_str(&format!("<!-- {} -->\n", "x".repeat(2 << 20)));
    std::fs::write(parts.join("vm.ovf"), text).unwrap();
    write_manifest(&parts, &["vm.ovf", "disk1.vmdk"]);
    let ova = dir.path().join("big.ova");
    pack(&parts, &ova, &["vm.ovf", "disk1.vmdk", "vm.mf"]);
    let e = open(&ova).err().unwrap();
    assert_eq!(code(&e), "limit-exceeded", "{e}");
    assert!(e.to_string().contains("descriptor"), "{e}");
}

#[test]
fn test_ova_hostile_descriptors_refused_without_panic() {
    for xml in [
        "<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><Envelope>&e;</Envelope>",
        "<Envelope><References><File ovf:href=\"a\"/></References></Envelope>",
        "<Envelope><DiskSection><Disk ovf:diskId=\"d\" ovf:capacity=\"99999999999999999999\"/></DiskSection></Envelope>",
        "<Envelope><DiskSection><Disk ovf:diskId=\"d\" ovf:capacity=\"4\" ovf:capacityAllocationUnits=\"byte * 2^99\"/></DiskSection></Envelope>",
        "<NotEnvelope/>",
        "<Envelope><a><b></a></b></Envelope>",
        "<Envelope>",
        "",
    ] {
        assert!(super::ovf::parse(xml.as_bytes()).is_err(), "{xml}");
    }
    let deep = format!("<Envelope>{}</Envelope>", "<a>".repeat(100));
    assert!(super::ovf::parse(deep.as_bytes()).is_err());
}

#[test]
fn test_ova_written_by_vmie_is_ordered_verified_and_round_trips() {
    let dir = tmp();
    let raw = dir.path().join("src.raw");
    write_sample_raw(&raw, (8 << 20) + 1536);
    let ova = dir.path().join("my vm.ova");
    let disk = crate::testutil::open_path(&raw).unwrap();
    let f = std::fs::File::create(&ova).unwrap();
    let opts = crate::write::WriteOptions {
        name: Some("my vm.ova".into()),
        temp: Some(crate::write::TempOutputs::files_in(
            dir.path().to_path_buf(),
        )),
        cpus: Some(2),
        memory_mib: Some(4096),
        ..Default::default()
    };
    crate::write_image(&*disk, &f, crate::Format::Ova, &opts, &AtomicU64::new(0)).unwrap();
    drop(f);
    // GNU tar lists the OVF first, then the disk, then the manifest.
    let o = crate::testutil::output(Command::new("tar").args(["-tf", p(&ova)]));
    let list = String::from_utf8(o.stdout).unwrap();
    assert_eq!(
        list.lines().collect::<Vec<_>>(),
        vec!["my_vm.ovf", "my_vm-disk1.vmdk", "my_vm.mf"]
    );
    // Extracted by tar, the disk compares equal and the manifest matches sha256sum.
    let x = dir.path().join("x");
    std::fs::create_dir(&x).unwrap();
    let o = crate::testutil::output(Command::new("tar").args(["-xf", p(&ova), "-C", p(&x)]));
    assert!(o.status.success());
    let vmdk = x.join("my_vm-disk1.vmdk");
    qemu_img(&["compare", "-f", "raw", "-F", "vmdk", p(&raw), p(&vmdk)]);
    let mf = std::fs::read_to_string(x.join("my_vm.mf")).unwrap();
    assert!(mf.contains(&format!(
        "SHA256(my_vm-disk1.vmdk)= {}",
        digest_of("sha256sum", &vmdk)
    )));
    assert!(mf.contains(&format!(
        "SHA256(my_vm.ovf)= {}",
        digest_of("sha256sum", &x.join("my_vm.ovf"))
    )));
    // Well-formed XML by an independent parser, with the structure importers expect.
    let ovf = x.join("my_vm.ovf");
    let check = "import sys,xml.etree.ElementTree as E\nr=E.parse(sys.argv[1]).getroot()\nns={'o':'http://schemas.dmtf.org/ovf/envelope/1'}\nassert r.tag=='{http://schemas.dmtf.org/ovf/envelope/1}Envelope'\nfor s in ['o:References/o:File','o:DiskSection/o:Disk','o:VirtualSystem/o:VirtualHardwareSection/o:Item']:\n    assert r.findall(s,ns), s\n";
    let o = crate::testutil::output(Command::new("python3").args(["-c", check, p(&ovf)]));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // And our own reader takes it back.
    let a = open_verified(&ova).unwrap();
    assert_eq!(a.ovf.cpus, Some(2));
    assert_eq!(a.ovf.memory_mib, Some(4096));
    assert_eq!(a.ovf.controllers[0].subtype.as_deref(), Some("lsilogic"));
    assert_eq!(a.disks[0].capacity, (8 << 20) + 1536);
    assert_eq!(
        read_all(&*a.open_disk(0, &Limits::default()).unwrap()),
        std::fs::read(&raw).unwrap()
    );
}

#[test]
fn test_ova_mutations_do_not_panic() {
    let dir = tmp();
    appliance_parts(dir.path());
    let parts = dir.path().join("parts");
    let ova = dir.path().join("m.ova");
    pack(&parts, &ova, &["vm.ovf", "disk1.vmdk", "vm.mf"]);
    let image = std::fs::read(&ova).unwrap();
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    // Mutations aimed at the headers and the descriptor (the first 8 KiB) and anywhere.
    for round in 0..400u32 {
        let mut m = image.clone();
        let span = if round % 2 == 0 { 8192 } else { m.len() };
        for _ in 0..1 + next() % 6 {
            let i = (next() as usize) % span;
            m[i] = next() as u8;
        }
        if round % 7 == 0 {
            m.truncate((next() as usize) % m.len());
        }
        let src: crate::io::Source = Arc::new(m);
        if let Ok(a) = Appliance::open(src, &Limits::default()) {
            let _ = a.verify(&AtomicU64::new(0));
            if let Ok(d) = a.open_disk(0, &Limits::default()) {
                let mut buf = vec![0u8; 65536];
                let _ = d.read_at(&mut buf, 0);
            }
        }
    }
}
