//! Configuration: a TOML file (`--config FILE` or `$VMIE_CONFIG`), the environment, and flags.
//! A flag wins over its environment variable, which wins over the file, which wins over the
//! built-in default. Every setting has one name in each form: `s3.bucket` in the file is
//! `VMIE_S3_BUCKET` in the environment; a setting that is also a flag (`workers`,
//! `--workers`) takes its file value as the flag's default. [`SETTINGS`] is the reference
//! (`docs/config.md` prints it); unknown keys in the file are refused.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::Path;
use std::sync::OnceLock;

use crate::{CliError, EXIT_USAGE};

/// Every setting: file key, environment variable, meaning.
pub const SETTINGS: &[(&str, &str, &str)] = &[
    (
        "data_dir",
        "VMIE_DATA",
        "this process's data folder (TLS certificate, intermediate volumes, and the embedded defaults' catalog, store and buckets)",
    ),
    ("listen", "VMIE_LISTEN", "serve: address and port"),
    (
        "node",
        "VMIE_NODE",
        "serve: this process's name (activity log, node registry); unique per running process",
    ),
    (
        "workers",
        "VMIE_WORKERS",
        "serve, work: task workers in the process",
    ),
    (
        "region",
        "VMIE_REGION",
        "the region the endpoint serves and ARNs name",
    ),
    (
        "account_id",
        "VMIE_ACCOUNT_ID",
        "the account the command line acts in",
    ),
    (
        "rate_limit",
        "VMIE_RATE_LIMIT",
        "serve: requests a second per user, shared by every node",
    ),
    (
        "sensitive_data",
        "VMIE_SENSITIVE_DATA",
        "serve: warn (default) or reject sensitive data in descriptions and tags",
    ),
    (
        "plain_http",
        "VMIE_PLAIN_HTTP",
        "serve: plain HTTP on a loopback address (tests)",
    ),
    (
        "max_connections",
        "VMIE_MAX_CONNECTIONS",
        "serve: connections open at once (default: the open-files limit less a quarter, at least 256; at most 16384)",
    ),
    (
        "max_connections_per_ip",
        "VMIE_MAX_CONNECTIONS_PER_IP",
        "serve: connections open at once from one IPv4 address or IPv6 /64 (default 256)",
    ),
    (
        "idle_timeout",
        "VMIE_IDLE_TIMEOUT",
        "serve: seconds a connection may stay idle between requests (default 60)",
    ),
    ("tls.cert", "VMIE_TLS_CERT", "serve: certificate (PEM)"),
    ("tls.key", "VMIE_TLS_KEY", "serve: private key (PEM)"),
    (
        "lease_seconds",
        "VMIE_LEASE_SECONDS",
        "a claimed task's lease; a dead node's task is taken over after it",
    ),
    (
        "scratch_dir",
        "VMIE_SCRATCH_DIR",
        "intermediate volumes (default DATA/scratch); local disk, one per process",
    ),
    (
        "bucket_keys",
        "VMIE_BUCKET_KEYS",
        "buckets kept encrypted at rest, comma-separated BUCKET=KMS-KEY (id, ARN or alias; BUCKET alone: alias/aws/s3): every object written there, uploaded or exported, is sealed under the key",
    ),
    (
        "snapshot_zstd_level",
        "VMIE_SNAPSHOT_ZSTD_LEVEL",
        "zstd level of snapshot chunks: 1 (default) to 19, or -1 to -7 (faster imports, larger snapshots); new chunks only",
    ),
    (
        "url_allow",
        "VMIE_URL_ALLOW",
        "networks image URLs may point at despite the address guard (comma-separated CIDRs)",
    ),
    (
        "url_ca_file",
        "VMIE_URL_CA_FILE",
        "extra CA certificates for image URLs (PEM)",
    ),
    (
        "catalog_url",
        "VMIE_CATALOG_URL",
        "the catalog: sqlite://PATH (default DATA/catalog.db) or postgres://USER@HOST:PORT/DB",
    ),
    (
        "buckets",
        "VMIE_BUCKETS",
        "where S3Bucket names point: local (folders DATA/buckets/NAME, the default) or s3 (buckets of the S3 service below)",
    ),
    (
        "s3.bucket",
        "VMIE_S3_BUCKET",
        "keep snapshots, keys and the activity log in this S3 bucket (default: the folder DATA/objects)",
    ),
    (
        "s3.endpoint",
        "VMIE_S3_ENDPOINT",
        "S3-compatible endpoint URL (default: AWS)",
    ),
    (
        "s3.region",
        "VMIE_S3_REGION",
        "S3 region (default us-east-1)",
    ),
    (
        "s3.path_style",
        "VMIE_S3_PATH_STYLE",
        "path-style requests (default: on when an endpoint is given)",
    ),
    (
        "s3.allow_http",
        "VMIE_S3_ALLOW_HTTP",
        "allow a plain-HTTP endpoint (loopback test servers)",
    ),
    (
        "s3.access_key_id",
        "VMIE_S3_ACCESS_KEY_ID",
        "S3 credentials (default: the AWS_* environment, instance profile)",
    ),
    (
        "s3.secret_access_key",
        "VMIE_S3_SECRET_ACCESS_KEY",
        "S3 secret; prefer the environment to the file",
    ),
    (
        "boot_check",
        "VMIE_BOOT_CHECK",
        "boot-check imported images in a sandboxed QEMU: auto (default: when QEMU and the firmware are installed), off, or required",
    ),
    (
        "boot_check_kvm_timeout",
        "VMIE_BOOT_CHECK_KVM_TIMEOUT",
        "boot-check time limit per disk bus with KVM, seconds (default 180)",
    ),
    (
        "boot_check_tcg_timeout",
        "VMIE_BOOT_CHECK_TCG_TIMEOUT",
        "boot-check time limit per disk bus without KVM (TCG emulation), seconds (default 600)",
    ),
    (
        "boot_check_memory",
        "VMIE_BOOT_CHECK_MEMORY",
        "boot-check guest memory, MiB (default 2048)",
    ),
    (
        "boot_check_user",
        "VMIE_BOOT_CHECK_USER",
        "the unprivileged user QEMU runs as when vmie runs as root (default nobody)",
    ),
    (
        "root_key_file",
        "VMIE_ROOT_KEY_FILE",
        "the root key file (default DATA/root.key); or the key itself, hex, in $VMIE_ROOT_KEY (environment only)",
    ),
    (
        "trail.bucket",
        "VMIE_TRAIL_BUCKET",
        "the bucket the activity log's log and digest files are delivered to in CloudTrail's layout (default trail: DATA/buckets/trail, or that bucket of the S3 service with buckets = s3)",
    ),
    (
        "trail.name",
        "VMIE_TRAIL_NAME",
        "the trail's name in its ARN and in digest file names (default vmie)",
    ),
    (
        "trail.digest_interval",
        "VMIE_TRAIL_DIGEST_INTERVAL",
        "serve: seconds a CloudTrail digest period lasts (default 3600)",
    ),
    (
        "trail.key_rotation_days",
        "VMIE_TRAIL_KEY_ROTATION_DAYS",
        "days a digest signing key is used before the next (default 30)",
    ),
];

static FILE: OnceLock<HashMap<&'static str, String>> = OnceLock::new();

fn env_of(key: &str) -> Option<&'static str> {
    SETTINGS.iter().find(|s| s.0 == key).map(|s| s.1)
}

fn flatten(prefix: &str, t: &toml::Table, out: &mut Vec<(String, String)>) -> Result<(), String> {
    for (k, v) in t {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => flatten(&key, t, out)?,
            toml::Value::String(s) => out.push((key, s.clone())),
            toml::Value::Integer(i) => out.push((key, i.to_string())),
            toml::Value::Boolean(b) => out.push((key, b.to_string())),
            toml::Value::Array(a) => {
                let items: Option<Vec<String>> =
                    a.iter().map(|x| x.as_str().map(str::to_string)).collect();
                let items = items.ok_or_else(|| format!("{key}: a list must hold strings"))?;
                out.push((key, items.join(",")));
            }
            _ => return Err(format!("{key}: unsupported value type")),
        }
    }
    Ok(())
}

/// Reads a configuration file into settings by environment name.
pub fn parse(path: &Path, text: &str) -> Result<HashMap<&'static str, String>, CliError> {
    let bad = |m: String| CliError {
        message: format!("{}: {m}", path.display()),
        exit: EXIT_USAGE,
    };
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| bad(e.to_string()))?;
    let mut flat = Vec::new();
    flatten("", &table, &mut flat).map_err(bad)?;
    let mut out = HashMap::new();
    for (k, v) in flat {
        let env = env_of(&k).ok_or_else(|| {
            bad(format!(
                "unknown setting {k}; the settings are {}",
                SETTINGS.iter().map(|s| s.0).collect::<Vec<_>>().join(", ")
            ))
        })?;
        out.insert(env, v);
    }
    Ok(out)
}

/// Finds the configuration file (`--config FILE`, `--config=FILE`, or `$VMIE_CONFIG`) and
/// loads it; called once, before the command line is parsed.
pub fn load(args: &[OsString]) -> Result<(), CliError> {
    let mut path = std::env::var_os("VMIE_CONFIG");
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "--config" {
            path = it.next().cloned();
        } else if let Some(v) = s.strip_prefix("--config=") {
            path = Some(v.into());
        }
    }
    let map = match path {
        Some(p) => {
            let p = Path::new(&p);
            let text = std::fs::read_to_string(p).map_err(|e| CliError {
                message: format!("{}: {e}", p.display()),
                exit: EXIT_USAGE,
            })?;
            parse(p, &text)?
        }
        None => HashMap::new(),
    };
    let _ = FILE.set(map);
    Ok(())
}

/// A setting: its environment variable, else the configuration file's value.
#[must_use]
pub fn var(env: &str) -> Option<String> {
    std::env::var(env)
        .ok()
        .or_else(|| FILE.get().and_then(|m| m.get(env).cloned()))
}

/// A boolean setting (`1`, `true`, `yes`, `on`).
#[must_use]
pub fn flag(env: &str) -> Option<bool> {
    var(env).map(|v| matches!(v.as_str(), "1" | "true" | "yes" | "on"))
}

/// Makes the file's values the defaults of the flags that read the same environment
/// variable, in `cmd` and every subcommand (so a flag, then the environment, win over it).
#[must_use]
pub fn apply(cmd: clap::Command) -> clap::Command {
    let Some(map) = FILE.get() else { return cmd };
    if map.is_empty() {
        return cmd;
    }
    let cmd = cmd.mut_args(|a| {
        let value = a
            .get_env()
            .and_then(|e| e.to_str())
            .and_then(|e| map.get(e));
        match value {
            Some(v) => {
                let v: &'static str = Box::leak(v.clone().into_boxed_str());
                a.default_value(v)
            }
            None => a,
        }
    });
    cmd.mut_subcommands(apply)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn files_map_to_environment_names_and_refuse_unknown_keys() {
        let m = parse(
            Path::new("c.toml"),
            "workers = 4\ncatalog_url = \"postgres://x\"\nurl_allow = [\"10.0.0.0/8\", \"fd00::/8\"]\n[s3]\nbucket = \"b\"\npath_style = true\n",
        )
        .unwrap();
        assert_eq!(m["VMIE_WORKERS"], "4");
        assert_eq!(m["VMIE_CATALOG_URL"], "postgres://x");
        assert_eq!(m["VMIE_URL_ALLOW"], "10.0.0.0/8,fd00::/8");
        assert_eq!(m["VMIE_S3_BUCKET"], "b");
        assert_eq!(m["VMIE_S3_PATH_STYLE"], "true");
        let e = parse(Path::new("c.toml"), "[s3]\nbukcet = \"b\"\n").unwrap_err();
        assert!(
            e.message.contains("unknown setting s3.bukcet"),
            "{}",
            e.message
        );
        assert!(parse(Path::new("c.toml"), "workers = [").is_err());
        assert!(parse(Path::new("c.toml"), "workers = 1.5").is_err());
    }
}

#[cfg(test)]
mod reference {
    #[test]
    fn docs_config_md_lists_every_setting() {
        let doc = include_str!("../../../docs/config.md");
        for (key, env, _) in super::SETTINGS {
            assert!(
                doc.contains(&format!("`{key}`")) && doc.contains(&format!("`{env}`")),
                "docs/config.md does not list {key} / {env}"
            );
        }
    }
}
