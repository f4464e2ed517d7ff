//! Fuzz target: arbitrary bytes as an OVA (tar listing, OVF parse, manifest, disk windows);
//! must return `Err` or read, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;
use common::{exercise, limits};

fuzz_target!(|data: &[u8]| {
    let src: diskfmt::Source = std::sync::Arc::new(data.to_vec());
    if let Ok(a) = diskfmt::ova::Appliance::open(src, &limits()) {
        let _ = a.verify(&std::sync::atomic::AtomicU64::new(0));
        for i in 0..a.disks.len().min(4) {
            if let Ok(disk) = a.open_disk(i, &limits()) {
                exercise(&*disk);
            }
        }
    }
    let _ = diskfmt::ova::ovf::parse(data);
});
