//! A throwaway PostgreSQL server for tests, benchmarks and the cluster script: `initdb` into a
//! temporary folder, `pg_ctl start` on a free loopback port, stopped and deleted on drop.
//! PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user
//! (through `runuser`), which owns the folder.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A running PostgreSQL server.
#[derive(Debug)]
pub struct TempPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// `postgres://vmie@127.0.0.1:PORT/postgres`.
    pub url: String,
}

fn bindir() -> std::io::Result<PathBuf> {
    if let Ok(o) = Command::new("pg_config").arg("--bindir").output()
        && o.status.success()
    {
        let p = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        if p.join("initdb").exists() {
            return Ok(p);
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    found.pop().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no PostgreSQL server binaries (initdb) found: install the postgresql package",
        )
    })
}

/// `e` naming the program that could not be started, and where the tools come from.
fn named(program: &std::ffi::OsStr, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(
        e.kind(),
        format!(
            "{} could not be started ({e}); PostgreSQL's server tools, runuser and chown are needed: run scripts/test, which installs them",
            program.to_string_lossy()
        ),
    )
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the process's effective user.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn run(bin: &Path, tool: &str, args: &[&str]) -> std::io::Result<()> {
    let exe = bin.join(tool);
    let mut c = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    let o = c
        .args(args)
        .output()
        .map_err(|e| named(c.get_program(), e))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "{tool} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )))
    }
}

impl TempPostgres {
    /// Starts a server; returns when it accepts connections.
    pub fn start() -> std::io::Result<TempPostgres> {
        let bin = bindir()?;
        let dir = tempfile::Builder::new().prefix("vmie-pg-").tempdir()?;
        if is_root() {
            let o = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .map_err(|e| named("chown".as_ref(), e))?;
            if !o.success() {
                return Err(std::io::Error::other("chown to postgres failed"));
            }
        }
        let data = dir.path().join("data");
        let d = data.to_string_lossy().to_string();
        run(
            &bin,
            "initdb",
            &[
                "-D",
                &d,
                "-U",
                "vmie",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            dir.path().display()
        );
        let log = dir.path().join("log").to_string_lossy().to_string();
        run(
            &bin,
            "pg_ctl",
            &["-D", &d, "-o", &opts, "-l", &log, "-w", "start"],
        )?;
        Ok(TempPostgres {
            url: format!("postgres://vmie@127.0.0.1:{port}/postgres"),
            dir,
            bin,
        })
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        let d = self.dir.path().join("data").to_string_lossy().to_string();
        let _ = run(
            &self.bin,
            "pg_ctl",
            &["-D", &d, "-m", "immediate", "-w", "stop"],
        );
    }
}
