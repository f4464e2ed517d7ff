//! Fuzz target: arbitrary bytes as a stored chunk object (what an S3-compatible store hands
//! back); it opens only if authentic, and is otherwise refused — never a panic, never more
//! than the chunk's length allocated.
#![no_main]

use blockstore::chunk::{Origin, decode, decode_into, header};
use kms::aead::AeadKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = AeadKey::new(&[7u8; 32]);
    let _ = header(data);
    let origin = Origin {
        snapshot: "snap-0123456789abcdef".into(),
        index: 3,
    };
    // Sizes the manifest could say: the first byte picks one.
    let len = [0usize, 1, 4096, 65536][usize::from(data.first().copied().unwrap_or(0) % 4)];
    let _ = decode(&key, &origin, "name", data, len);
    let mut obj = data.to_vec();
    let mut dst = vec![0u8; len];
    let _ = decode_into(&key, &origin, "name", &mut obj, &mut dst);
    // A real chunk, then the fuzzer's bytes spliced into it.
    let plain = data.get(..len.min(data.len())).unwrap_or_default();
    let sealed = blockstore::chunk::encode(&key, &origin, "name", plain, 1);
    let back = decode(&key, &origin, "name", &sealed, plain.len());
    assert!(back.is_ok_and(|b| b[..] == *plain));
});
