//! Fuzz target: arbitrary bytes as a Windows registry hive: base block, cells, subkey lists
//! (lf/lh/li/ri), values and big-data segments; must return `Err` or values, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let len = data.len() as u64;
    let mut c = std::io::Cursor::new(data);
    if let Ok(mut h) = guest::regf::Hive::open(&mut c, len) {
        for path in ["", "Microsoft\\Windows NT\\CurrentVersion", "Microsoft"] {
            if let Ok(k) = h.key(path) {
                let _ = h.values(k);
            }
        }
    }
});
