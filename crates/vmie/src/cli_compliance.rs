//! `vmie compliance`: the deployment checked against its controls, each with the remedy
//! when it fails. Exit status 1 when any control fails.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use api::iam::{Context, Decision, Policy, evaluate};
use catalog::iam::PrincipalKind;

use crate::cli_serve::{NODES, NodeInfo};
use crate::print_json;
use crate::{CliError, EXIT_FAILED};
use deployment::Deployment;

/// Days after which an access key that was never used, or not used since, fails.
const KEY_UNUSED_DAYS: i64 = 90;

const VERIFY_REMEDY: &str = "run vmie trail verify for the list; restore the named files from backup and investigate who changed them";
const ROTATION_REMEDY: &str = "vmie kms enable-key-rotation KEY for each";

/// `vmie compliance` options.
#[derive(Debug, Args)]
pub struct ComplianceArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Ask a running server (GetComplianceReport, allowed by `vmie:GetComplianceReport`)
    /// instead of checking the data folder here.
    #[command(flatten)]
    remote: crate::cli_tasks::RemoteOpts,
}

/// One control's result (as checked here, or as a server's report carries it).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Control {
    /// Short name.
    pub control: String,
    /// Passed.
    pub pass: bool,
    /// What was found.
    pub detail: String,
    /// What to do when it failed.
    pub remedy: String,
}

fn control(control: &'static str, pass: bool, detail: String, remedy: &str) -> Control {
    Control {
        control: control.to_string(),
        pass,
        detail,
        remedy: if pass {
            String::new()
        } else {
            remedy.to_string()
        },
    }
}

/// A control that passes when nothing was `found`: `ok` then, else "`what`: the findings".
fn none_found(
    name: &'static str,
    found: &[String],
    ok: String,
    what: &str,
    remedy: &str,
) -> Control {
    let detail = if found.is_empty() {
        ok
    } else {
        format!("{what}: {}", found.join(", "))
    };
    control(name, found.is_empty(), detail, remedy)
}

fn fail(e: impl std::fmt::Display) -> CliError {
    CliError {
        message: e.to_string(),
        exit: EXIT_FAILED,
    }
}

/// Whether something at `addr` answers plain HTTP (a TLS listener does not).
fn answers_plain_http(addr: SocketAddr) -> std::io::Result<bool> {
    let addr = if addr.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        addr
    };
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.write_all(b"GET /healthz HTTP/1.0\r\nHost: compliance\r\n\r\n")?;
    let mut buf = [0u8; 5];
    let mut got = 0;
    while got < buf.len() {
        match s.read(&mut buf[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    Ok(&buf[..got] == b"HTTP/")
}

async fn listeners(cat: &catalog::Catalog) -> Result<Vec<Control>, CliError> {
    let now = catalog::now_ms();
    let nodes: Vec<(String, NodeInfo)> = cat
        .settings(NODES)
        .await
        .map_err(fail)?
        .into_iter()
        .filter_map(|(n, v)| Some((n, serde_json::from_str::<NodeInfo>(&v).ok()?)))
        .filter(|(_, i)| i.live(now))
        .collect();
    if nodes.is_empty() {
        let d =
            "no vmie serve process is running (none renewed its registry entry in the last 30 s)";
        return Ok(vec![
            control("tls-listeners", true, d.into(), ""),
            control("no-plain-http-off-loopback", true, d.into(), ""),
            control("activity-log-on", true, d.into(), ""),
        ]);
    }
    let mut plain = Vec::new();
    let mut off_loopback = Vec::new();
    let mut unlogged = Vec::new();
    for (name, i) in &nodes {
        let addr: Option<SocketAddr> = i.listen.parse().ok();
        let probe = addr.map(answers_plain_http);
        let is_plain = i.plain_http || matches!(probe, Some(Ok(true)));
        if is_plain {
            plain.push(format!("{name} ({})", i.listen));
            if addr.is_some_and(|a| !a.ip().is_loopback()) {
                off_loopback.push(format!("{name} ({})", i.listen));
            }
        }
        if !i.activity_log {
            unlogged.push(name.clone());
        }
    }
    let names: Vec<String> = nodes
        .iter()
        .map(|(n, i)| format!("{n} ({})", i.listen))
        .collect();
    Ok(vec![
        control(
            "tls-listeners",
            plain.is_empty(),
            if plain.is_empty() {
                format!("every listener refuses plain HTTP: {}", names.join(", "))
            } else {
                format!("plain HTTP answered by {}", plain.join(", "))
            },
            "restart those nodes without --plain-http (TLS is the default)",
        ),
        none_found(
            "no-plain-http-off-loopback",
            &off_loopback,
            "no plain HTTP listener on a non-loopback address".into(),
            "plain HTTP off loopback",
            "stop those nodes and serve TLS",
        ),
        none_found(
            "activity-log-on",
            &unlogged,
            format!("{} running node(s) record every API call", nodes.len()),
            "not recording",
            "restart those nodes with this version of vmie serve",
        ),
    ])
}

fn root_key_file(path: &Path) -> Control {
    use std::os::unix::fs::MetadataExt;
    if std::env::var_os("VMIE_ROOT_KEY").is_some() {
        return control(
            "root-key-file",
            true,
            "the root key comes from $VMIE_ROOT_KEY (keep the environment that holds it private)"
                .into(),
            "",
        );
    }
    match std::fs::metadata(path) {
        Ok(m) => {
            let mode = m.mode() & 0o777;
            // This process's user owns /proc/self.
            let uid = std::fs::metadata("/proc/self").map_or(u32::MAX, |p| p.uid());
            let ok = mode & 0o077 == 0 && m.uid() == uid;
            control(
                "root-key-file",
                ok,
                format!("{} mode {mode:04o}, owner uid {}", path.display(), m.uid()),
                &format!(
                    "chmod 600 {} and chown it to the user vmie runs as",
                    path.display()
                ),
            )
        }
        Err(e) => control(
            "root-key-file",
            false,
            format!("{}: {e}", path.display()),
            "start vmie once (it makes the key), or set VMIE_ROOT_KEY",
        ),
    }
}

async fn identities(cat: &catalog::Catalog, account: &str) -> Result<Vec<Control>, CliError> {
    let with_mfa = cat.mfa_users(account).await.map_err(fail)?;
    let mut admins_without = Vec::new();
    let mut admins = 0;
    for u in cat.users(account).await.map_err(fail)? {
        let policies: Vec<Policy> = cat
            .attached_policies(account, PrincipalKind::User, &u.name)
            .await
            .map_err(fail)?
            .iter()
            .filter_map(|d| Policy::parse(&d.document).ok())
            .collect();
        // An administrator: may manage identities (only `*` or `iam:*` grants that).
        if evaluate(&policies, &Context::new("iam:CreateUser", "*")) == Decision::Allow {
            admins += 1;
            if !with_mfa.contains(&u.name) {
                admins_without.push(u.name);
            }
        }
    }
    let now = catalog::now_ms();
    let limit = KEY_UNUSED_DAYS * 86_400_000;
    let stale: Vec<String> = cat
        .access_keys(account, None)
        .await
        .map_err(fail)?
        .into_iter()
        .filter(|k| k.status == "Active" && now - k.last_used_ms.unwrap_or(k.created_ms) > limit)
        .map(|k| format!("{} ({})", k.access_key_id, k.user_name))
        .collect();
    let mut lockouts = Vec::new();
    for m in cat.mfa_states(account).await.map_err(fail)? {
        let last = api::sigv4::format_iso8601(m.last_failure_ms);
        if api::mfa::locks(m.failures) && m.next_attempt_ms > now {
            lockouts.push(format!(
                "{} (locked until {}, {} invalid codes in a row)",
                m.user,
                api::sigv4::format_iso8601(m.next_attempt_ms),
                m.failures
            ));
        } else if m.failures >= api::mfa::BURST && now - m.last_failure_ms < 86_400_000 {
            lockouts.push(format!(
                "{} ({} invalid codes in a row, the last at {last})",
                m.user, m.failures
            ));
        }
    }
    Ok(vec![
        none_found(
            "mfa-no-lockouts",
            &lockouts,
            "no MFA device is locked or had a burst of invalid codes in the last day".into(),
            "locked or guessed at",
            "find who sent the codes (vmie trail lookup: GetSessionToken records with errorCode AccessDenied, their sourceIPAddress); once the user is confirmed, vmie admin mfa unlock USER, or re-enrol with vmie admin mfa enable USER if the device may be compromised",
        ),
        none_found(
            "admins-have-mfa",
            &admins_without,
            format!("{admins} administrator(s), each with an MFA device"),
            "without MFA",
            "vmie admin mfa enable USER for each, and require aws:MultiFactorAuthPresent in their policies",
        ),
        none_found(
            "access-keys-used-within-90-days",
            &stale,
            "every active access key was used (or made) in the last 90 days".into(),
            "unused for 90 days",
            "vmie admin access-key deactivate ID (then delete) for each",
        ),
    ])
}

/// `encryption-by-default`: the account's EBS encryption-by-default setting.
async fn encryption_by_default(cat: &catalog::Catalog, account: &str) -> Result<Control, CliError> {
    let on = cat
        .setting(account, engine::SETTING_ENCRYPTION_BY_DEFAULT)
        .await
        .map_err(fail)?
        .is_some_and(|v| v == "true");
    Ok(control(
        "encryption-by-default",
        on,
        format!(
            "EBS encryption by default is {}",
            if on { "on" } else { "off" }
        ),
        "aws ec2 enable-ebs-encryption-by-default --endpoint-url …",
    ))
}

/// `activity-log-verified`: the whole activity log verifies, against the catalog's heads.
async fn activity_log(d: &Deployment) -> Result<Control, CliError> {
    let trail = d.trail().map_err(|e| crate::cli_deploy::err(&e))?;
    let r = trail::verify(&trail).await.map_err(fail)?;
    let ok = r.problems.is_empty() && r.digests > 0;
    let detail = if r.digests == 0 {
        "the activity log holds nothing yet".into()
    } else if ok {
        format!(
            "{} digests, {} batches, {} records: intact",
            r.digests, r.batches, r.records
        )
    } else {
        format!(
            "{} problem(s), first: {}",
            r.problems.len(),
            r.problems.first().map_or("", String::as_str)
        )
    };
    Ok(control("activity-log-verified", ok, detail, VERIFY_REMEDY))
}

/// `kms-key-rotation`: every enabled customer key rotates.
async fn key_rotation(env: &Deployment) -> Result<Control, CliError> {
    let keys = env.kms.list_keys().await.map_err(fail)?;
    let unrotated: Vec<String> = keys
        .iter()
        .filter(|k| {
            k.manager == kms::KeyManager::Customer
                && k.state == kms::KeyState::Enabled
                && !k.rotation_enabled
        })
        .map(|k| k.key_id.clone())
        .collect();
    Ok(none_found(
        "kms-key-rotation",
        &unrotated,
        format!("{} key(s); every enabled customer key rotates", keys.len()),
        "rotation off",
        ROTATION_REMEDY,
    ))
}

/// `no-orphaned-volumes`: every intermediate volume on this host belongs to a task whose
/// lease is live.
async fn orphaned_volumes(data_dir: &Path, cat: &catalog::Catalog, account: &str) -> Control {
    let scratch = crate::cli_tasks::scratch_dir(data_dir, None);
    let mut orphans = Vec::new();
    if let Ok(rd) = std::fs::read_dir(&scratch) {
        let now = catalog::now_ms();
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(task) = name.strip_suffix(".vol") else {
                continue;
            };
            let held = cat
                .task(account, task)
                .await
                .is_ok_and(|t| !t.ended() && t.lease_until_ms.is_some_and(|u| u > now));
            if !held {
                orphans.push(name);
            }
        }
    }
    none_found(
        "no-orphaned-volumes",
        &orphans,
        format!("{}: no volume without a running task", scratch.display()),
        "orphaned",
        "start vmie work, wait or serve on this host: each destroys orphaned volumes first",
    )
}

/// Every control, in the order they are printed.
async fn controls(data_dir: &Path) -> Result<Vec<Control>, CliError> {
    // A root key that does not load (for example, readable by others: it is refused)
    // leaves the controls that need it unchecked, and so failing.
    let cfg = crate::cli_deploy::config(data_dir)?;
    let cat = deployment::open_catalog(&cfg)
        .await
        .map_err(|e| crate::cli_deploy::err(&e))?;
    let env = crate::cli_deploy::open(&cfg).await;
    let account = cfg.account.clone();
    let unchecked = |id: &'static str, e: &CliError, remedy: &str| {
        control(id, false, format!("not checked: {}", e.message), remedy)
    };
    let mut out = listeners(&cat).await?;
    out.push(encryption_by_default(&cat, &account).await?);
    out.push(match &env {
        Ok(env) => activity_log(env).await?,
        Err(e) => unchecked("activity-log-verified", e, VERIFY_REMEDY),
    });
    out.push(root_key_file(&cfg.root_key_path()));
    out.extend(identities(&cat, &account).await?);
    out.push(match &env {
        Ok(env) => key_rotation(env).await?,
        Err(e) => unchecked("kms-key-rotation", e, ROTATION_REMEDY),
    });
    out.push(orphaned_volumes(data_dir, &cat, &account).await);
    Ok(out)
}

/// The controls of the deployment in `data_dir`, for the endpoint's `GetComplianceReport`
/// (the console's compliance page): the same checks as `vmie compliance`.
#[derive(Debug)]
pub struct Controls {
    /// The data folder.
    pub data_dir: std::path::PathBuf,
}

impl Controls {
    /// The controls of the deployment in `data_dir` (made absolute), to share.
    #[must_use]
    pub fn of(data_dir: &Path) -> std::sync::Arc<dyn api::handler::ComplianceSource> {
        std::sync::Arc::new(Controls {
            data_dir: std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf()),
        })
    }
}

impl api::handler::ComplianceSource for Controls {
    fn report(
        &self,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<serde_json::Value, String>> + Send + '_>,
    > {
        Box::pin(async move {
            let c = controls(&self.data_dir).await.map_err(|e| e.message)?;
            serde_json::to_value(&c).map_err(|e| e.to_string())
        })
    }
}

/// Prints the controls as a table, remedies under the failing ones.
fn print_table(controls: &[Control]) {
    let w = controls.iter().map(|c| c.control.len()).max().unwrap_or(0);
    for c in controls {
        println!(
            "{:<w$}  {}  {}",
            c.control,
            if c.pass { "PASS" } else { "FAIL" },
            c.detail
        );
        if !c.pass {
            println!("{:<w$}        remedy: {}", "", c.remedy);
        }
    }
}

/// Runs `vmie compliance`.
pub fn run(a: &ComplianceArgs, data_dir: &Path) -> Result<(), CliError> {
    let controls = crate::cli_deploy::block_on(async {
        match a.remote.remote()? {
            Some(r) => serde_json::from_value::<Vec<Control>>(r.compliance().await?)
                .map_err(|e| fail(format!("the compliance report does not parse: {e}"))),
            None => controls(data_dir).await,
        }
    })?;
    if a.json {
        print_json(&controls)?;
    } else {
        print_table(&controls);
    }
    let failed = controls.iter().filter(|c| !c.pass).count();
    if failed == 0 {
        Ok(())
    } else {
        Err(fail(format!(
            "{failed} of {} controls failed",
            controls.len()
        )))
    }
}
