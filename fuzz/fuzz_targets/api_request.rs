//! Fuzz target: arbitrary bytes as an API request — the first line the `Authorization`
//! header, the second the query string, the rest the form body — through SigV4 parsing and
//! verification and the EC2 Query parameter parser; must refuse or answer, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let auth = parts.next().unwrap_or("").to_string();
    let query = parts.next().unwrap_or("");
    let body = parts.next().unwrap_or("").as_bytes();
    let headers = vec![
        ("Host".to_string(), "localhost:8443".to_string()),
        ("X-Amz-Date".to_string(), "20261123T120000Z".to_string()),
        ("Authorization".to_string(), auth),
    ];
    for h in [&headers[..], &headers[..2]] {
        let req = api::sigv4::Request { method: "POST", path: "/", query, headers: h, body };
        if let Ok(s) = api::sigv4::parse(&req) {
            let _ = api::sigv4::verify(&req, &s, "secret", "us-east-1", "ec2", 1_795_000_000);
        }
    }
    if let Ok(p) = api::query::Params::parse(body) {
        for name in ["DiskContainer", "TagSpecification", "Filter"] {
            if let Ok(items) = p.list(name) {
                for i in &items {
                    let _ = i.strings("Value");
                    let _ = i.list("Tag");
                }
            }
        }
    }
    let _ = api::guard::scan(&text);
});
