//! A process started in the sandbox dies with the process that started it, also when that
//! one is SIGKILLed (`PR_SET_PDEATHSIG`): the test runs itself as a helper that starts
//! `sleep` in the sandbox, SIGKILLs the helper, and waits for `sleep` to be gone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const HELPER: &str = "VMIE_BOOTCHECK_DEATHSIG_HELPER";

#[test]
#[ignore = "run by test_sandboxed_child_dies_with_a_sigkilled_parent"]
fn helper_starts_a_sandboxed_sleep() {
    if std::env::var_os(HELPER).is_none() {
        return;
    }
    let user = bootcheck::sandbox::sandbox_user(None).unwrap();
    let child = bootcheck::sandbox::spawn(
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
    println!("SLEEP-PID {}", child.id());
    std::thread::sleep(Duration::from_secs(1000));
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
    let mut helper = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_starts_a_sandboxed_sleep",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(HELPER, "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = BufReader::new(helper.stdout.take().unwrap());
    let pid: u32 = out
        .lines()
        .map_while(Result::ok)
        .find_map(|l| {
            l.strip_prefix("SLEEP-PID ")
                .map(|p| p.trim().parse().unwrap())
        })
        .expect("the helper printed no pid");
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
