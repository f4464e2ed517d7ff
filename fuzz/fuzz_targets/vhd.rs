//! Fuzz target: arbitrary bytes through the vhd parser; must return `Err` or read, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;
use common::{exercise, limits};

fuzz_target!(|data: &[u8]| {
    let src: diskfmt::Source = std::sync::Arc::new(data.to_vec());
    if let Ok(disk) = diskfmt::open_as(src, diskfmt::Format::Vhd, &limits()) {
        exercise(&*disk);
    }
});
