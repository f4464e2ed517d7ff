//! Fuzz target: arbitrary bytes as an API request — the first line the `Authorization`
//! header, the second the query string, the rest the form body — through SigV4 parsing and
//! verification, the EC2 Query parameter parser, the activity log's redaction of those
//! parameters, and (the body as JSON) CloudTrail's LookupEvents request and answer; must
//! refuse or answer, never panic.
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
    if let Ok(p) = api::query::Params::parse(body) {
        // Redaction by the table's rules of the action the request names (or none).
        let spec = api::action::Action::spec_of(
            api::action::Service::Ec2,
            p.get("Action").unwrap_or_default(),
        );
        let fp = |v: &str| v.len().to_string();
        let v = api::audit::request_parameters(&p, spec, &fp);
        assert!(v.to_string().len() <= 64 * body.len() + 64, "redaction stays in proportion");
        let _ = api::audit::redact_message(&text, Some(&p), spec, &fp);
    }
    let _ = api::audit::response_elements(&text);
    let _ = api::audit::clean_message(&text);
    if let Ok(l) = api::cloudtrail::parse(body, 1_795_000_000_000) {
        let record = serde_json::json!({"eventTime": query, "eventID": auth_id(&text), "recipientAccountId": "1",
            "resources": [{"ARN": query, "type": query}], "userIdentity": {"userName": query}});
        let _ = api::cloudtrail::answer(&l, "1", &[record]);
    }
});

fn auth_id(t: &str) -> String {
    t.chars().take(40).collect()
}
