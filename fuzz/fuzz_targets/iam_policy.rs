//! Fuzz target: arbitrary bytes as an IAM policy document, parsed and (when accepted)
//! evaluated against a request with condition keys; must refuse or decide, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(doc) = std::str::from_utf8(data) else { return };
    if let Ok(p) = api::iam::Policy::parse(doc) {
        let ctx = api::iam::Context::new("ec2:ImportImage", "arn:aws:ec2:us-east-1::image/ami-1")
            .with("aws:SourceIp", &["10.1.2.3"])
            .with("aws:CurrentTime", &["2026-11-23T12:00:00Z"])
            .with("aws:MultiFactorAuthPresent", &["true"])
            .with("aws:TagKeys", &["a", "b"]);
        let _ = api::iam::evaluate([&p], &ctx);
    }
});
