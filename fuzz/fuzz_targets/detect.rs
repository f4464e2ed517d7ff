//! Fuzz target: arbitrary bytes through the detect parser; must return `Err` or read, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;
use common::{exercise, limits};

fuzz_target!(|data: &[u8]| {
    let _ = diskfmt::detect::detect_bytes(data, data.get(data.len().saturating_sub(512)..).unwrap_or(data));
    let src: diskfmt::Source = std::sync::Arc::new(data.to_vec());
    if let Ok(disk) = diskfmt::open(src, &limits()) {
        exercise(&*disk);
    }
});
