//! Starting QEMU in its sandbox.
//!
//! The child gets: an empty environment, `/` as its folder, no standard input or output,
//! standard error to vmie (bounded by the reader), its own process group, and — when vmie
//! runs as root — the sandbox user's uid and gid with no supplementary groups. Then, after
//! the credentials changed (a change of credentials clears it), in the pre-exec hook:
//! `PR_SET_PDEATHSIG` = SIGKILL (QEMU dies with the thread that started it, also when vmie
//! is SIGKILLed; if vmie already died, the child exits before exec), no core dumps (guest
//! memory never reaches a core file), CPU-time, address-space and open-file limits,
//! `PR_SET_NO_NEW_PRIVS`, and the close-on-exec flag cleared on exactly the descriptors the
//! command line names (every other descriptor of vmie stays closed to it).

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use rustix::process::{Resource, Rlimit};

use crate::error::BootError;

/// QEMU's seccomp filter (`-sandbox`): obsolete system calls, privilege changes, spawning
/// processes and resource-control calls all denied.
pub const QEMU_SECCOMP: &str =
    "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

/// Resource limits of the sandboxed process.
#[derive(Debug, Clone, Copy)]
pub struct ProcLimits {
    /// CPU seconds (soft; the hard limit is 10 s more: SIGXCPU, then SIGKILL).
    pub cpu_secs: u64,
    /// Address space in bytes.
    pub address_space: u64,
    /// Open files.
    pub open_files: u64,
}

/// The uid and gid QEMU runs as: `None` when vmie is not root (it cannot change user, and
/// needs not). `name` defaults to `nobody`; a user that resolves to uid 0 is refused.
pub fn sandbox_user(name: Option<&str>) -> Result<Option<(u32, u32)>, BootError> {
    if !rustix::process::geteuid().is_root() {
        return Ok(None);
    }
    let name = name.unwrap_or("nobody");
    let passwd =
        std::fs::read_to_string("/etc/passwd").map_err(BootError::io("reading /etc/passwd"))?;
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 4 && f[0] == name {
            let (Ok(uid), Ok(gid)) = (f[2].parse::<u32>(), f[3].parse::<u32>()) else {
                break;
            };
            if uid == 0 || gid == 0 {
                return Err(BootError::Unavailable(format!(
                    "the boot-check user {name:?} is root; name an unprivileged user"
                )));
            }
            return Ok(Some((uid, gid)));
        }
    }
    Err(BootError::Unavailable(format!(
        "the boot-check user {name:?} does not exist (vmie runs as root and starts QEMU as this user); create it or set boot_check_user"
    )))
}

/// Starts `program` with `args` in the sandbox, passing `fds` (and only them) on.
pub fn spawn(
    program: &Path,
    args: &[String],
    fds: &[BorrowedFd<'_>],
    user: Option<(u32, u32)>,
    limits: ProcLimits,
) -> Result<Child, BootError> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .env("LC_ALL", "C")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some((uid, gid)) = user {
        // std drops the supplementary groups when it changes the user of a root process.
        cmd.gid(gid).uid(uid);
    }
    let keep: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let parent = rustix::process::getpid();
    let hook = move || -> std::io::Result<()> {
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
        if rustix::process::getppid() != Some(parent) {
            // vmie died between fork and here: do not become an orphan QEMU.
            return Err(std::io::Error::other("parent exited"));
        }
        let set = |r, soft: u64, hard: u64| {
            rustix::process::setrlimit(
                r,
                Rlimit {
                    current: Some(soft),
                    maximum: Some(hard),
                },
            )
        };
        set(Resource::Core, 0, 0)?;
        set(Resource::Cpu, limits.cpu_secs, limits.cpu_secs + 10)?;
        set(Resource::As, limits.address_space, limits.address_space)?;
        set(Resource::Nofile, limits.open_files, limits.open_files)?;
        rustix::thread::set_no_new_privs(true)?;
        for &fd in &keep {
            // SAFETY: `fd` is open in the parent for the whole of `spawn` (the caller's
            // `BorrowedFd`s outlive this call), and fork copied the descriptor table, so the
            // number names the same open file here; it is borrowed only for this call.
            #[allow(unsafe_code)]
            let b = unsafe { BorrowedFd::borrow_raw(fd) };
            rustix::io::fcntl_setfd(b, rustix::io::FdFlags::empty())?;
        }
        Ok(())
    };
    // SAFETY: the hook runs in the child between fork and exec, where only
    // async-signal-safe work is allowed: it makes raw system calls through rustix (prctl,
    // getppid, setrlimit, fcntl), allocates nothing and takes no lock; everything it uses
    // was computed before the fork and moved in.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(hook);
    }
    cmd.spawn()
        .map_err(BootError::io(format!("starting {}", program.display())))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::io::Read;

    #[test]
    fn test_sandbox_passes_only_named_fds_clears_env_and_sets_limits() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let (c, _d) = std::os::unix::net::UnixStream::pair().unwrap();
        let fd = a.as_raw_fd();
        // Another descriptor of vmie (close-on-exec, as Rust opens every one) that the
        // child must not get, numbered above anything the child's shell or `ls` opens
        // itself: a low number would be reused by `ls`'s own directory descriptor and listed
        // (the test then failed whenever `c` happened to be descriptor 3).
        let other = rustix::io::fcntl_dupfd_cloexec(&c, 300).unwrap();
        let script = format!(
            "ls /proc/self/fd; echo env=$(env | grep -v -e '^LC_ALL=' -e '^PWD=' -e '^SHLVL=' -e '^_=' | wc -l); ulimit -c; ulimit -t; grep NoNewPrivs /proc/self/status; echo fd{fd}; echo not{}",
            other.as_raw_fd()
        );
        let user = sandbox_user(None).unwrap();
        let mut child = spawn(
            Path::new("/bin/sh"),
            &["-c".into(), format!("exec 1>&2; {script}")],
            &[a.as_fd()],
            user,
            ProcLimits {
                cpu_secs: 7,
                address_space: 1 << 32,
                open_files: 64,
            },
        )
        .unwrap();
        let mut out = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert!(child.wait().unwrap().success(), "{out}");
        let fds: Vec<&str> = out.lines().take_while(|l| !l.starts_with("env=")).collect();
        assert!(fds.contains(&fd.to_string().as_str()), "{out}");
        assert!(
            !fds.contains(&other.as_raw_fd().to_string().as_str()),
            "{out}"
        );
        assert!(out.contains("env=0"), "{out}");
        assert!(out.contains("\n0\n7\n"), "{out}");
        assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    }

    use std::os::fd::AsFd;
}
