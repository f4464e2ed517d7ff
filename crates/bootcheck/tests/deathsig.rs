//! A process started in the sandbox dies with the process that started it, also when that
//! one is SIGKILLed (`PR_SET_PDEATHSIG`): the test runs itself as a helper that starts
//! `sleep` in the sandbox, SIGKILLs the helper, and waits for `sleep` to be gone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The helper writes the sandboxed child's pid into the file this names.
const HELPER: &str = "VMIE_BOOTCHECK_DEATHSIG_PIDFILE";

#[test]
#[ignore = "run by test_sandboxed_child_dies_with_a_sigkilled_parent"]
fn helper_starts_a_sandboxed_sleep() {
    let Some(pidfile) = std::env::var_os(HELPER) else {
        return;
    };
    let user = bootcheck::sandbox::sandbox_user(None).unwrap();
    let mut child = bootcheck::sandbox::spawn(
        std::path::Path::new("/bin/sleep"),
        &["1000".into()],
        &[],
        user,
        bootcheck::sandbox::ProcLimits {
            cpu_secs: 60,
            address_space: 1 << 30,
            open_files: 64,
        },
    )
    .unwrap();
    let tmp = std::path::PathBuf::from(&pidfile).with_extension("tmp");
    std::fs::write(&tmp, child.id().to_string()).unwrap();
    std::fs::rename(&tmp, &pidfile).unwrap();
    // The test kills this helper long before the child ends.
    let _ = child.wait();
}

fn alive(pid: u32) -> bool {
    // A zombie has been killed already; only a running or sleeping one counts.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

#[test]
fn test_sandboxed_child_dies_with_a_sigkilled_parent() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let mut helper = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_starts_a_sandboxed_sleep",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(HELPER, &pidfile)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the helper to have started its child (a bound on a hang only).
    let t0 = Instant::now();
    let pid: u32 = loop {
        if let Ok(p) = std::fs::read_to_string(&pidfile) {
            break p.trim().parse().unwrap();
        }
        assert!(
            helper.try_wait().unwrap().is_none(),
            "the helper exited before starting its child"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the helper started nothing"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(alive(pid));
    helper.kill().unwrap();
    helper.wait().unwrap();
    // The kernel delivers SIGKILL to the orphan at once; this only bounds a hang.
    let t0 = Instant::now();
    while alive(pid) {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the sandboxed child survived"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
