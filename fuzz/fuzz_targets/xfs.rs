//! Fuzz target: arbitrary bytes as an XFS filesystem: superblock, inodes, extent lists and
//! B+trees, directories in every form, symbolic links; must return `Err` or data, never panic.
#![no_main]

use guest::fs::GuestFs;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let src: diskfmt::Source = std::sync::Arc::new(data.to_vec());
    let Ok(disk) = diskfmt::open_as(src, diskfmt::Format::Raw, &diskfmt::Limits::default()) else {
        return;
    };
    if let Ok(fs) = guest::xfs::Xfs::open(guest::Volume::whole(std::sync::Arc::from(disk))) {
        let _ = fs.list_dir("/");
        let _ = fs.read_file("/etc/os-release", 4096);
        let _ = fs.list_dir("/usr/lib/modules");
        let _ = fs.read_file("/bin/sh", 64);
    }
});
