//! Fuzz target: arbitrary bytes as a raw disk through partition tables, filesystem probes,
//! ext4/FAT reading and OS detection; must return `Err` or a report, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let src: diskfmt::Source = std::sync::Arc::new(data.to_vec());
    if let Ok(disk) = diskfmt::open_as(src, diskfmt::Format::Raw, &diskfmt::Limits::default()) {
        let _ = guest::inspect(std::sync::Arc::from(disk));
    }
});
