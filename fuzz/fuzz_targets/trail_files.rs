//! Fuzz target: arbitrary bytes as the activity log's files (CloudTrail digest, log file,
//! node digest, time); each parses or is refused, never a panic or an unbounded allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = trail::parse_untrusted(data);
});
