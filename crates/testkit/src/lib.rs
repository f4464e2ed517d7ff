//! # testkit — what vmie's tests share across crates
//!
//! Tests make their disk images with other tools (`qemu-img`, `sfdisk`, `mkfs.*`, …) and drive
//! the service with the `aws` CLI. When such a tool is missing the test must say which one and
//! how to get it, never fail on a bare `NotFound`: [`ToolExt`] runs a [`Command`] and, if it
//! cannot be started, panics naming the program. `scripts/test` installs every tool the tests
//! need (`scripts/test --check` lists the missing ones).

use std::ffi::OsStr;
use std::io;
use std::process::{Child, Command, ExitStatus, Output};

/// The panic of a test whose tool could not be started.
///
/// # Panics
/// Always, naming `program` and what to do.
pub fn missing(program: &OsStr, e: &io::Error) -> ! {
    let name = program.to_string_lossy();
    if e.kind() == io::ErrorKind::NotFound {
        panic!(
            "this test needs the tool `{name}`, which is not installed: run scripts/test, which installs what the tests need (scripts/test --check lists what is missing)"
        );
    }
    panic!("this test needs the tool `{name}`, which could not be started: {e}");
}

/// Running a tool, with a missing one named.
pub trait ToolExt {
    /// Runs it to completion and returns what it printed.
    fn output_named(&mut self) -> Output;
    /// Runs it to completion and returns how it ended.
    fn status_named(&mut self) -> ExitStatus;
    /// Starts it.
    fn spawn_named(&mut self) -> Child;
}

impl ToolExt for Command {
    fn output_named(&mut self) -> Output {
        self.output()
            .unwrap_or_else(|e| missing(self.get_program(), &e))
    }

    fn status_named(&mut self) -> ExitStatus {
        self.status()
            .unwrap_or_else(|e| missing(self.get_program(), &e))
    }

    fn spawn_named(&mut self) -> Child {
        self.spawn()
            .unwrap_or_else(|e| missing(self.get_program(), &e))
    }
}

#[cfg(test)]
mod tests {
    use super::ToolExt;

    #[test]
    fn a_missing_tool_is_named() {
        let r = std::panic::catch_unwind(|| {
            std::process::Command::new("vmie-no-such-tool-7f3a").output_named()
        });
        let e = r.err().and_then(|p| p.downcast::<String>().ok());
        let msg = e.map(|m| *m).unwrap_or_default();
        assert!(
            msg.contains("`vmie-no-such-tool-7f3a`") && msg.contains("scripts/test"),
            "{msg}"
        );
    }

    #[test]
    fn a_present_tool_runs() {
        assert!(std::process::Command::new("true").status_named().success());
    }
}
