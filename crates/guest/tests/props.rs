//! Property tests of the partition-table readers and filesystem probes: disks made of
//! arbitrary bytes with real signatures planted where the readers look, so that the
//! structures behind the signatures are reached. Whatever the bytes, nothing panics, every
//! partition returned lies inside the disk, and a probe answers or says no.

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation, missing_docs)]

use std::sync::Arc;

use proptest::prelude::*;

/// Signatures and where they go: MBR boot signature, GPT header, FAT/NTFS boot sectors, the
/// ext superblock magic, XFS, swap, LVM, LUKS and ISO 9660.
const PLANTS: &[(usize, &[u8])] = &[
    (510, &[0x55, 0xaa]),
    (512, b"EFI PART"),
    (3, b"NTFS    "),
    (54, b"FAT16   "),
    (82, b"FAT32   "),
    (1024 + 56, &[0x53, 0xef]),
    (0, b"XFSB"),
    (4086, b"SWAPSPACE2"),
    (512, b"LABELONE"),
    (0, b"LUKS\xba\xbe"),
    (32769, b"CD001"),
];

fn disk(bytes: Vec<u8>) -> Arc<dyn diskfmt::Disk> {
    let src: diskfmt::Source = Arc::new(bytes);
    Arc::from(diskfmt::open_as(src, diskfmt::Format::Raw, &diskfmt::Limits::default()).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn prop_tables_and_probes_stay_inside_the_disk(
        mut bytes in proptest::collection::vec(any::<u8>(), 40_000..70_000),
        plants in proptest::collection::vec(0..PLANTS.len(), 0..5),
        type_bytes in proptest::collection::vec(any::<u8>(), 4),
    ) {
        for &p in &plants {
            let (at, sig) = PLANTS[p];
            if at + sig.len() <= bytes.len() {
                bytes[at..at + sig.len()].copy_from_slice(sig);
            }
        }
        // Partition types that lead somewhere: extended (EBR chain), GPT protective, NTFS, Linux.
        for (i, t) in type_bytes.iter().enumerate() {
            bytes[446 + i * 16 + 4] = [0x05, 0x0f, 0xee, 0x07, 0x83][usize::from(*t) % 5];
        }
        let len = bytes.len() as u64;
        let whole = guest::Volume::whole(disk(bytes.clone()));
        if let Ok(t) = guest::partition::read_partitions(&whole) {
            for p in &t.partitions {
                prop_assert!(p.volume.start() + p.volume.len() <= len);
                let _ = guest::probe::probe(&p.volume);
            }
        }
        let _ = guest::probe::probe(&whole);
        let _ = guest::inspect(disk(bytes));
    }
}
