//! docs/formats.md stays true: every named rule of every format, and every container the
//! registry refuses by name, is documented there.

#![allow(clippy::unwrap_used, missing_docs)]

use diskfmt::formats::{qcow2, vdi, vhd, vhdx, vmdk};

#[test]
fn test_every_rule_and_refused_container_is_in_docs_formats_md() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/formats.md");
    let docs = std::fs::read_to_string(path).unwrap();
    let mut missing = Vec::new();
    let formats: [(&str, &[&str]); 5] = [
        ("qcow2", qcow2::rules::ALL),
        ("vmdk", vmdk::rules::ALL),
        ("vhd", vhd::rules::ALL),
        ("vhdx", vhdx::rules::ALL),
        ("vdi", vdi::rules::ALL),
    ];
    for (format, rules) in formats {
        for rule in rules {
            if !docs.contains(&format!("`{rule}`")) {
                missing.push(format!("{format}: {rule}"));
            }
        }
    }
    let containers = diskfmt::registry::UNREAD
        .iter()
        .map(|u| u.what.name)
        .chain([vmdk::SPLIT_EXTENT.name]);
    for name in containers {
        if !docs.contains(&format!("`{name}`")) {
            missing.push(format!("container {name}"));
        }
    }
    assert!(missing.is_empty(), "not in docs/formats.md: {missing:?}");
}
