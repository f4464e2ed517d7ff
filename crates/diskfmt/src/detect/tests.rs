//! Detection tests: every signature built byte by byte from its specification.
#![allow(clippy::unwrap_used)]

use super::*;

#[test]
fn test_detect_empty_is_raw() {
    assert_eq!(detect_bytes(&[], &[]).unwrap().format, Format::Raw);
}

#[test]
fn test_detect_qcow2_in_iso_is_refused() {
    let mut head = vec![0u8; PROBE_HEAD];
    head[..4].copy_from_slice(b"QFI\xfb");
    head[0x8001..0x8006].copy_from_slice(b"CD001");
    let err = detect_bytes(&head, &head[head.len() - 512..]).unwrap_err();
    assert_eq!(err.reason_code(), "multiple-formats");
}

#[test]
fn test_detect_vhd_footer_and_copy_is_one_format() {
    let mut head = vec![0u8; 1024];
    head[..8].copy_from_slice(b"conectix");
    head[512..520].copy_from_slice(b"conectix");
    assert_eq!(
        detect_bytes(&head, &head[512..]).unwrap().format,
        Format::Vhd
    );
}

#[test]
fn test_detect_short_file_no_panic() {
    for n in 0..600 {
        let b = vec![b'c'; n];
        let _ = detect_bytes(&b, &b);
    }
}

/// Detection on a whole in-memory file.
fn detect_vec(b: &[u8]) -> Result<Detection> {
    detect(&b.to_vec())
}

/// Asserts `file` is refused as the container `name` with reason code `code`.
fn assert_unread(file: &[u8], name: &str, code: &str) {
    let e = detect_vec(file).unwrap_err();
    assert_eq!(e.reason_code(), code, "{name}: {e}");
    assert_eq!(e.name(), Some(name), "{e}");
    let msg = e.to_string();
    assert!(msg.contains(&format!("{name}: the file is")), "{msg}");
}

/// A 64 KiB file: `header` at 0, zeros after.
fn file_with(header: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 64 << 10];
    b[..header.len()].copy_from_slice(header);
    b
}

/// Parallels header (qemu docs/interop/parallels.txt), 64 bytes, little-endian.
fn parallels_header(magic: &[u8; 16], ext_off: u64) -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[0..16].copy_from_slice(magic); // magic
    h[16..20].copy_from_slice(&2u32.to_le_bytes()); // version: 2
    h[20..24].copy_from_slice(&16u32.to_le_bytes()); // heads
    h[24..28].copy_from_slice(&8u32.to_le_bytes()); // cylinders
    h[28..32].copy_from_slice(&2048u32.to_le_bytes()); // tracks: sectors per cluster (1 MiB)
    h[32..36].copy_from_slice(&4u32.to_le_bytes()); // bat_entries
    h[36..44].copy_from_slice(&8192u64.to_le_bytes()); // nb_sectors: 4 MiB
    h[44..48].copy_from_slice(&0u32.to_le_bytes()); // inuse: closed cleanly
    h[48..52].copy_from_slice(&2048u32.to_le_bytes()); // data_off (sectors)
    h[52..56].copy_from_slice(&0u32.to_le_bytes()); // flags
    h[56..64].copy_from_slice(&ext_off.to_le_bytes()); // ext_off (sectors)
    h
}

#[test]
fn test_detect_parallels_v1_unsupported_format() {
    let f = file_with(&parallels_header(b"WithoutFreeSpace", 0));
    assert_unread(&f, "parallels", "unsupported-format");
}

#[test]
fn test_detect_parallels_v2_with_dirty_bitmap_unsupported_format() {
    let mut f = file_with(&parallels_header(b"WithouFreSpacExt", 1));
    // The format extension cluster at sector 1: magic, checksum, then one extension (a
    // dirty bitmap: magic, data size, then its data).
    f[512..520].copy_from_slice(&0xAB23_4CEF_23DC_EA87u64.to_le_bytes()); // extension magic
    f[520..528].copy_from_slice(&0u64.to_le_bytes()); // checksum
    f[528..536].copy_from_slice(&0x2038_5FAE_252C_B34Au64.to_le_bytes()); // dirty bitmap
    f[536..540].copy_from_slice(&32u32.to_le_bytes()); // data size
    f[540..544].copy_from_slice(&0u32.to_le_bytes()); // flags
    assert_unread(&f, "parallels", "unsupported-format");
}

#[test]
fn test_detect_qed_unsupported_format() {
    // qemu docs/interop/qed_spec.txt, little-endian.
    let mut h = vec![0u8; 64];
    h[0..4].copy_from_slice(b"QED\0"); // magic
    h[4..8].copy_from_slice(&65536u32.to_le_bytes()); // cluster_size
    h[8..12].copy_from_slice(&4u32.to_le_bytes()); // table_size (clusters)
    h[12..16].copy_from_slice(&1u32.to_le_bytes()); // header_size (clusters)
    h[16..24].copy_from_slice(&0u64.to_le_bytes()); // features
    h[40..48].copy_from_slice(&65536u64.to_le_bytes()); // l1_table_offset
    h[48..56].copy_from_slice(&(4u64 << 20).to_le_bytes()); // image_size
    assert_unread(&file_with(&h), "qed", "unsupported-format");
}

#[test]
fn test_detect_qcow_version_1_unsupported_format() {
    // qemu block/qcow.c header, big-endian.
    let mut h = vec![0u8; 48];
    h[0..4].copy_from_slice(b"QFI\xfb"); // magic
    h[4..8].copy_from_slice(&1u32.to_be_bytes()); // version 1
    h[24..32].copy_from_slice(&(4u64 << 20).to_be_bytes()); // size
    h[32] = 12; // cluster_bits
    h[33] = 9; // l2_bits
    h[40..48].copy_from_slice(&48u64.to_be_bytes()); // l1_table_offset
    assert_unread(&file_with(&h), "qcow", "unsupported-format");
    // The same magic with version 2 or 3 (or an unknown one, refused by the reader) is qcow2.
    for v in [2u32, 3, 4] {
        h[4..8].copy_from_slice(&v.to_be_bytes());
        assert_eq!(detect_vec(&file_with(&h)).unwrap().format, Format::Qcow2);
    }
}

#[test]
fn test_detect_bochs_unsupported_format() {
    // qemu block/bochs.c: 512-byte header, little-endian.
    let mut h = vec![0u8; 512];
    h[0..22].copy_from_slice(b"Bochs Virtual HD Image"); // magic (32 bytes, NUL padded)
    h[32..39].copy_from_slice(b"Redolog"); // type (16 bytes)
    h[48..55].copy_from_slice(b"Growing"); // subtype (16 bytes)
    h[64..68].copy_from_slice(&0x0002_0000u32.to_le_bytes()); // version 2
    h[68..72].copy_from_slice(&512u32.to_le_bytes()); // header size
    h[72..76].copy_from_slice(&512u32.to_le_bytes()); // catalog entries
    h[76..80].copy_from_slice(&1u32.to_le_bytes()); // bitmap size (sectors)
    h[80..84].copy_from_slice(&(32u32 << 10).to_le_bytes()); // extent size
    h[88..96].copy_from_slice(&(16u64 << 20).to_le_bytes()); // disk size
    assert_unread(&file_with(&h), "bochs", "unsupported-format");
}

#[test]
fn test_detect_cloop_unsupported_format() {
    // qemu block/cloop.c: a 128-byte shell script, then block size and count, big-endian.
    let mut h = vec![0u8; 136];
    let script =
        b"#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n";
    h[..script.len()].copy_from_slice(script);
    h[128..132].copy_from_slice(&65536u32.to_be_bytes()); // block size
    h[132..136].copy_from_slice(&16u32.to_be_bytes()); // number of blocks
    assert_unread(&file_with(&h), "cloop", "unsupported-format");
    // A shell script that is not a cloop image is not recognized (and not a disk).
    let e = detect_vec(b"#!/bin/sh\necho hello\n").unwrap_err();
    assert_eq!(e.reason_code(), "not-a-disk");
}

#[test]
fn test_detect_dmg_trailer_unsupported_format() {
    // Apple UDIF: a 512-byte "koly" trailer closes the file, big-endian.
    let mut f = vec![0u8; 64 << 10];
    let n = f.len();
    let t = &mut f[n - 512..];
    t[0..4].copy_from_slice(b"koly"); // signature
    t[4..8].copy_from_slice(&4u32.to_be_bytes()); // version
    t[8..12].copy_from_slice(&512u32.to_be_bytes()); // header size
    t[12..16].copy_from_slice(&1u32.to_be_bytes()); // flags
    t[40..48].copy_from_slice(&((64u64 << 10) - 4096).to_be_bytes()); // data fork length
    t[216..224].copy_from_slice(&((64u64 << 10) - 4096).to_be_bytes()); // XML offset
    t[224..232].copy_from_slice(&3584u64.to_be_bytes()); // XML length
    t[492..500].copy_from_slice(&64u64.to_be_bytes()); // sector count
    assert_unread(&f, "dmg", "unsupported-format");
}

#[test]
fn test_detect_luks1_and_luks2_encrypted() {
    // LUKS1 on-disk format 1.2.3, big-endian.
    let mut h = vec![0u8; 592];
    h[0..6].copy_from_slice(b"LUKS\xba\xbe"); // magic
    h[6..8].copy_from_slice(&1u16.to_be_bytes()); // version 1
    h[8..11].copy_from_slice(b"aes"); // cipher name
    h[40..51].copy_from_slice(b"xts-plain64"); // cipher mode
    h[72..78].copy_from_slice(b"sha256"); // hash spec
    h[104..108].copy_from_slice(&4096u32.to_be_bytes()); // payload offset (sectors)
    h[108..112].copy_from_slice(&64u32.to_be_bytes()); // key bytes
    assert_unread(&file_with(&h), "luks", "encrypted");
    // LUKS2 on-disk format: the binary header starts the same way, version 2.
    let mut h = vec![0u8; 512];
    h[0..6].copy_from_slice(b"LUKS\xba\xbe"); // magic
    h[6..8].copy_from_slice(&2u16.to_be_bytes()); // version 2
    h[8..16].copy_from_slice(&16384u64.to_be_bytes()); // header size
    h[16..24].copy_from_slice(&1u64.to_be_bytes()); // sequence id
    h[72..78].copy_from_slice(b"sha256"); // checksum algorithm
    assert_unread(&file_with(&h), "luks", "encrypted");
}

#[test]
fn test_detect_bitlocker_volume_encrypted() {
    let mut h = vec![0u8; 512];
    h[0..3].copy_from_slice(&[0xeb, 0x58, 0x90]); // jump
    h[3..11].copy_from_slice(b"-FVE-FS-"); // OEM name of a BitLocker volume
    h[11..13].copy_from_slice(&512u16.to_le_bytes()); // bytes per sector
    h[510..512].copy_from_slice(&[0x55, 0xaa]); // boot signature
    assert_unread(&file_with(&h), "bitlocker", "encrypted");
}

#[test]
fn test_detect_compressed_files_and_archives() {
    let cases: &[(&str, &[u8])] = &[
        ("gzip", &[0x1f, 0x8b, 0x08, 0x08, 0, 0, 0, 0, 0, 3]), // deflate, FNAME, unix
        ("xz", &[0xfd, b'7', b'z', b'X', b'Z', 0, 0, 4]),      // stream header, CRC64 check
        ("zstd", &[0x28, 0xb5, 0x2f, 0xfd, 0x04, 0x58]),       // frame magic, descriptor
        ("bzip2", b"BZh91AY&SY"),                              // 900k blocks, block magic
        ("lz4", &[0x04, 0x22, 0x4d, 0x18, 0x64, 0x40, 0xa7]),  // frame magic, FLG, BD, HC
        ("zip", b"PK\x03\x04\x14\x00\x00\x00\x08\x00"),        // local header, deflate
        ("7z", &[b'7', b'z', 0xbc, 0xaf, 0x27, 0x1c, 0, 4]),   // signature, version 0.4
        ("rar", b"Rar!\x1a\x07\x01\x00"),                      // RAR 5
    ];
    for (name, header) in cases {
        assert_unread(&file_with(header), name, "compressed");
    }
    // An empty bzip2 stream ends at once: "BZh9" and the end-of-stream magic.
    let empty = [b'B', b'Z', b'h', b'9', 0x17, 0x72, 0x45, 0x38, 0x50, 0x90];
    assert_unread(&file_with(&empty), "bzip2", "compressed");
    // An empty zip archive is only its end record.
    assert_unread(&file_with(b"PK\x05\x06"), "zip", "compressed");
}

#[test]
fn test_detect_bare_ovf_descriptor_unsupported_format() {
    let xml = b"\xef\xbb\xbf<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Envelope xmlns=\"http://schemas.dmtf.org/ovf/envelope/1\"><References/></Envelope>\n";
    assert_unread(&file_with(xml), "ovf", "unsupported-format");
    // Other XML is not an OVF (and, at that size, not a disk).
    let e = detect_vec(b"<?xml version=\"1.0\"?><html/>\n").unwrap_err();
    assert_eq!(e.reason_code(), "not-a-disk");
}

#[test]
fn test_detect_mbr_disk_is_raw() {
    let mut f = vec![0u8; 1 << 20];
    f[0..3].copy_from_slice(&[0xeb, 0x63, 0x90]); // GRUB's jump
    f[446] = 0x80; // bootable partition 1
    f[450] = 0x83; // Linux
    f[454..458].copy_from_slice(&2048u32.to_le_bytes());
    f[458..462].copy_from_slice(&2048u32.to_le_bytes());
    f[510..512].copy_from_slice(&[0x55, 0xaa]);
    assert_eq!(detect_vec(&f).unwrap().format, Format::Raw);
}

#[test]
fn test_detect_not_a_disk_sizes() {
    for (bytes, what) in [
        (&b"hello, vm\n"[..], "10 bytes"),
        (&[][..], "empty"),
        (&[0u8; 4097][..], "4097 bytes"),
    ] {
        let e = detect_vec(bytes).unwrap_err();
        assert_eq!(e.reason_code(), "not-a-disk", "{e}");
        assert!(e.to_string().contains(what), "{e}");
    }
    assert_eq!(detect_vec(&[0u8; 4096]).unwrap().format, Format::Raw);
    // ISO 9660 is read as raw: the same rule.
    let mut iso = vec![0u8; 0x8800 + 100];
    iso[0x8001..0x8006].copy_from_slice(b"CD001");
    assert_eq!(detect_vec(&iso).unwrap_err().reason_code(), "not-a-disk");
    iso.truncate(0x8800);
    assert_eq!(detect_vec(&iso).unwrap().format, Format::Iso);
}

#[test]
fn test_detect_container_and_format_together_refused() {
    // A qcow2 header in front of a DMG trailer: ambiguous.
    let mut f = file_with(b"QFI\xfb\0\0\0\x03");
    let n = f.len();
    f[n - 512..n - 508].copy_from_slice(b"koly");
    let e = detect_vec(&f).unwrap_err();
    assert_eq!(e.reason_code(), "multiple-formats", "{e}");
    assert!(e.to_string().contains("qcow2") && e.to_string().contains("dmg"));
}
