//! `scripts/test`, the README's test command, on a machine without the tools: its dependency
//! check names every tool the tests need (here with an empty `PATH`, so none is found).

#![allow(clippy::unwrap_used, missing_docs)]

use std::path::Path;
use std::process::Command;

use testkit::ToolExt;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/test");

#[test]
fn the_dependency_check_names_each_missing_tool() {
    let list = Command::new("/bin/bash")
        .args([SCRIPT, "--list"])
        .output_named();
    assert!(list.status.success());
    let tools: Vec<String> = String::from_utf8(list.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    assert!(
        tools.iter().any(|t| t == "qemu-img") && tools.iter().any(|t| t == "aws"),
        "{tools:?}"
    );
    let o = Command::new("/bin/bash")
        .args([SCRIPT, "--check"])
        .env_clear()
        .env("PATH", "/nonexistent")
        .output_named();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    for t in &tools {
        // initdb is found where Debian installs PostgreSQL, and a file by its path, whatever
        // PATH says.
        let found_elsewhere = if t == "initdb" {
            std::fs::read_dir("/usr/lib/postgresql").is_ok_and(|d| {
                d.flatten()
                    .any(|e| Path::new(&e.path()).join("bin/initdb").exists())
            })
        } else if t.starts_with('/') {
            exists(t)
        } else {
            false
        };
        assert!(
            out.contains(&format!("missing: {t} (")) || found_elsewhere,
            "scripts/test --check does not name {t}:\n{out}"
        );
    }
}

/// Whether `pattern` (a path, its last part holding at most one `*`) names a file.
fn exists(pattern: &str) -> bool {
    let p = Path::new(pattern);
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.split_once('*') {
        None => p.exists(),
        Some((pre, post)) => p
            .parent()
            .and_then(|d| std::fs::read_dir(d).ok())
            .is_some_and(|d| {
                d.flatten().any(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.starts_with(pre) && n.ends_with(post)
                })
            }),
    }
}

#[test]
fn the_readme_and_ci_run_the_same_test_command() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let ci = std::fs::read_to_string(format!("{root}/.ci/run")).unwrap();
    assert!(
        readme.contains("`scripts/test`"),
        "the README's test command"
    );
    assert!(ci.contains("scripts/test"), ".ci/run runs scripts/test");
}
