//! What the `vmie` process tests share: running the binary on a data folder, a free port,
//! waiting for a server to listen, and stopping one cleanly.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::Duration;

use testkit::ToolExt;

/// Runs `vmie --data-dir DATA ARGS…`, boot checks off (the tests' images are not bootable;
/// crates/engine/tests/booting.rs boots real guests).
pub fn vmie(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmie"))
        .env("VMIE_BOOT_CHECK", "off")
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .output()
        .unwrap()
}

/// A loopback port nothing listens on (now).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits (up to 20 s) until something accepts connections on the loopback `port`.
pub fn wait_port(port: u16) {
    for _ in 0..400 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on port {port}");
}

/// Waits (up to 60 s) until `child` accepts connections on the loopback `port`; if it exits
/// first, fails with its log.
pub fn wait_serving(child: &mut Child, port: u16, log: &std::path::Path) {
    for _ in 0..1200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the server for port {port} exited ({status}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on port {port}");
}

/// Stops a server with SIGTERM (a clean stop: it writes what it queued) and waits for it.
pub fn terminate(child: &mut Child) -> std::process::ExitStatus {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status_named();
    child.wait().unwrap()
}
