//! `vmie serve`: the EC2-compatible API over HTTPS, with task workers in the same process.
//!
//! On first start with a data folder it makes what a fresh deployment needs, and says so:
//! a self-signed certificate in `DIR/tls/` (clients pass `DIR/tls/cert.pem` as their CA
//! bundle), a user `admin` with full access whose access key is printed once, and the
//! service role `vmimport` allowed to read and write every bucket.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;

use api::dispatch::Env;
use api::ec2::DEFAULT_ROLE;
use api::identity::{Identity, IdentityError};
use api::server::{ServeConfig, serve};
use api::tls::self_signed;
use catalog::iam::PrincipalKind;

use crate::cli_deploy::account;
use crate::cli_tasks::{EngineOpts, engine_config};
use crate::{CliError, EXIT_FAILED};

/// The policy of the embedded default's `vmimport` role: every bucket of this deployment.
const ROLE_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"Buckets","Effect":"Allow","Action":["s3:GetObject","s3:PutObject","s3:GetBucketLocation","s3:ListBucket"],"Resource":["arn:aws:s3:::*"]}]}"#;

/// `--sensitive-data`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Sensitive {
    /// Accept, log the field name.
    Warn,
    /// Refuse with InvalidParameterValue.
    Reject,
}

/// `vmie serve` options.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address and port to listen on.
    #[arg(long, env = "VMIE_LISTEN", default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// TLS certificate (PEM); default: a self-signed one made in DIR/tls/ on first start.
    #[arg(long, env = "VMIE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "VMIE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve plain HTTP instead of HTTPS (only on a loopback address).
    #[arg(long, env = "VMIE_PLAIN_HTTP", conflicts_with_all = ["tls_cert", "tls_key"])]
    plain_http: bool,
    /// Region this endpoint serves (the SigV4 credential scope must name it).
    #[arg(long, env = "VMIE_REGION", default_value = "us-east-1")]
    region: String,
    /// Requests a second each user may make (bursts of twice as many); 0 for no limit.
    #[arg(long, env = "VMIE_RATE_LIMIT", default_value_t = 50)]
    rate_limit: u32,
    /// Sensitive data (access keys, private keys, card numbers, national ids) in
    /// descriptions and tags: `warn` accepts and logs the field (never the value), `reject`
    /// refuses the request.
    #[arg(long, env = "VMIE_SENSITIVE_DATA", value_enum, default_value = "warn")]
    sensitive_data: Sensitive,
    /// Task workers in this process.
    #[arg(long, env = "VMIE_WORKERS", default_value_t = 2)]
    workers: usize,
    /// This process's name in the activity log and the node registry; unique among the
    /// deployment's running processes (default: `<hostname>-<port>`).
    #[arg(long, env = "VMIE_NODE")]
    node: Option<String>,
    /// Connections open at once at most (default: the open-files limit less a quarter, at
    /// least 256, for the rest of the service; at most 16384). At the cap the connection
    /// idle longest is closed for a new one.
    #[arg(long, env = "VMIE_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Connections open at once from one IPv4 address (or IPv6 /64) at most.
    #[arg(long, env = "VMIE_MAX_CONNECTIONS_PER_IP", default_value_t = api::conn::DEFAULT_PER_IP)]
    max_connections_per_ip: usize,
    /// Seconds a connection may stay idle between requests (and, up to 15, before its
    /// first one).
    #[arg(long, env = "VMIE_IDLE_TIMEOUT", default_value_t = 60)]
    idle_timeout: u64,
    /// Seconds a CloudTrail digest period of the activity log lasts (CloudTrail's is an
    /// hour); every running server writes the digests of ended periods.
    #[arg(long, env = "VMIE_TRAIL_DIGEST_INTERVAL", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    trail_digest_interval: u64,
    #[command(flatten)]
    engine: EngineOpts,
}

fn fail(e: impl std::fmt::Display) -> CliError {
    CliError {
        message: e.to_string(),
        exit: EXIT_FAILED,
    }
}

/// First start: the admin user and the service role.
async fn bootstrap(id: &Identity, account: &str) -> Result<(), CliError> {
    if let Some(k) = id.bootstrap(account).await.map_err(fail)? {
        println!(
            "vmie: created the user admin with full access. Its access key is shown only now:"
        );
        println!("AccessKeyId:     {}", k.access_key_id);
        println!("SecretAccessKey: {}", k.secret_access_key.as_str());
    }
    let cat = id.catalog();
    if !cat
        .principal_exists(account, PrincipalKind::Role, DEFAULT_ROLE)
        .await
        .map_err(fail)?
    {
        // Another process starting on the same catalog may create it first.
        match id.create_role(account, DEFAULT_ROLE).await {
            Err(IdentityError::Catalog(catalog::CatalogError::Conflict(_))) | Ok(()) => {}
            Err(e) => return Err(fail(e)),
        }
        id.put_policy(account, "vmimport-buckets", ROLE_POLICY)
            .await
            .map_err(fail)?;
        cat.attach_policy(
            account,
            PrincipalKind::Role,
            DEFAULT_ROLE,
            "vmimport-buckets",
        )
        .await
        .map_err(fail)?;
        eprintln!(
            "vmie: created the service role {DEFAULT_ROLE}, allowed to read and write every bucket"
        );
    }
    Ok(())
}

/// Catalog settings "account" of the node registry: each `vmie serve` process, its
/// listener, and a heartbeat (what `vmie compliance` checks).
pub const NODES: &str = "vmie:nodes";
/// How often a node renews its registry entry.
const REGISTRY_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// A node's registry entry.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NodeInfo {
    /// Listen address.
    pub listen: String,
    /// Serves TLS.
    pub tls: bool,
    /// Serves plain HTTP.
    pub plain_http: bool,
    /// Process id.
    pub pid: u32,
    /// Records API calls in the activity log.
    pub activity_log: bool,
    /// Start (ms).
    pub started_ms: i64,
    /// Last renewal (ms).
    pub heartbeat_ms: i64,
    /// Stopped cleanly.
    pub stopped: bool,
}

impl NodeInfo {
    /// Whether the node renewed its entry recently enough to be running.
    #[must_use]
    pub fn live(&self, now_ms: i64) -> bool {
        !self.stopped
            && now_ms - self.heartbeat_ms
                < 3 * i64::try_from(REGISTRY_EVERY.as_millis()).unwrap_or(10_000)
    }
}

/// Keeps this node's registry entry fresh until shutdown, then marks it stopped.
async fn register(
    cat: catalog::Catalog,
    node: String,
    mut info: NodeInfo,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        info.heartbeat_ms = catalog::now_ms();
        info.stopped = *shutdown.borrow();
        let v = serde_json::to_string(&info).unwrap_or_default();
        if let Err(e) = cat.set_setting(NODES, &node, &v).await {
            tracing::warn!(error = %e, "node registry: entry not renewed");
        }
        if info.stopped {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(REGISTRY_EVERY) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// The names vmie's own certificate covers: loopback, and — when it listens beyond
/// loopback — the host name and the listen address.
fn cert_names(ip: std::net::IpAddr) -> Vec<String> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if !ip.is_loopback() {
        let host = deployment::hostname();
        if !host.is_empty() && host != "localhost" && !names.contains(&host) {
            names.push(host);
        }
        if !ip.is_unspecified() {
            names.push(ip.to_string());
        }
    }
    names
}

/// The connection limits: the open-files limit raised to its hard limit, the cap below it.
fn connection_limits(a: &ServeArgs) -> api::conn::Limits {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if let (Some(cur), hard) = (lim.current, lim.maximum)
        && hard.is_none_or(|h| h > cur)
    {
        // As many descriptors as the administrator allows (the soft limit is often lower).
        lim.current = Some(hard.unwrap_or(1 << 20).min(1 << 20));
        if setrlimit(Resource::Nofile, lim).is_err() {
            lim = getrlimit(Resource::Nofile);
        }
    }
    let nofile = lim.current.unwrap_or(1 << 20);
    let mut limits = api::conn::Limits::for_open_files(nofile)
        .with_idle(std::time::Duration::from_secs(a.idle_timeout.max(1)));
    let fits = limits.max_connections;
    if let Some(max) = a.max_connections {
        limits.max_connections = max.max(1);
        if max > fits {
            eprintln!(
                "vmie: --max-connections {max} is more than the open-files limit ({nofile}) leaves for connections ({fits}); when descriptors run out, connections wait to be accepted"
            );
        }
    }
    limits.per_ip = a.max_connections_per_ip.max(1);
    eprintln!(
        "vmie: at most {} connections ({} per address), open-files limit {nofile}",
        limits.max_connections, limits.per_ip
    );
    limits
}

/// Runs `vmie serve`; `compliance` runs the deployment's controls for the console's
/// compliance page.
pub fn run(
    a: ServeArgs,
    data_dir: &Path,
    compliance: std::sync::Arc<dyn api::handler::ComplianceSource>,
) -> Result<(), CliError> {
    let node = a
        .node
        .clone()
        .unwrap_or_else(|| format!("{}-{}", deployment::hostname(), a.listen.port()));
    let mut cfg = engine_config(data_dir, &a.engine, Some(node.clone()))?;
    cfg.trail.digest_interval = std::time::Duration::from_secs(a.trail_digest_interval);
    crate::cli_deploy::block_on(async {
        let d = crate::cli_deploy::open(&cfg).await?;
        let node = deployment::node_name(&node);
        let r = serve_deployment(&a, data_dir, &d, &node, compliance).await;
        crate::cli_deploy::flush(&d).await;
        r
    })
}

/// The certificate and key to serve with (`None`: plain HTTP), and the names vmie's own
/// certificate covers when it made one (made on first start in `DIR/tls/`).
fn tls_files(
    a: &ServeArgs,
    data_dir: &Path,
) -> Result<(Option<TlsFiles>, Option<Vec<String>>), CliError> {
    if a.plain_http {
        return Ok((None, None));
    }
    if let (Some(c), Some(k)) = (a.tls_cert.clone(), a.tls_key.clone()) {
        return Ok((Some((c, k)), None));
    }
    let names = cert_names(a.listen.ip());
    let (c, k) = self_signed(&data_dir.join("tls"), &names)
        .map_err(|e| fail(format!("TLS certificate: {e}")))?;
    eprintln!(
        "vmie: TLS certificate {} (pass it to clients as their CA bundle)",
        c.display()
    );
    Ok((Some((c, k)), Some(names)))
}

/// A certificate file and its key file (PEM).
type TlsFiles = (PathBuf, PathBuf);

/// What a serving node runs beside the listener; stopped with it.
struct Background {
    workers: tokio::task::JoinHandle<()>,
    flusher: Option<tokio::task::JoinHandle<()>>,
    registry: tokio::task::JoinHandle<()>,
}

/// Starts the task workers, the activity log's flusher and the node registry's heartbeat,
/// all stopping when `rx` turns true.
fn start_background(
    a: &ServeArgs,
    d: &deployment::Deployment,
    engine: &engine::Engine,
    node: &str,
    tls: bool,
    rx: &tokio::sync::watch::Receiver<bool>,
) -> Background {
    let workers = {
        let (e, rx, n) = (engine.clone(), rx.clone(), a.workers);
        tokio::spawn(async move { e.run_workers(n, rx).await })
    };
    let flusher = d
        .audit
        .clone()
        .map(|au| tokio::spawn(au.run_flusher(crate::cli_deploy::FLUSH_EVERY, rx.clone())));
    let info = NodeInfo {
        listen: a.listen.to_string(),
        tls,
        plain_http: a.plain_http,
        pid: std::process::id(),
        activity_log: d.audit.is_some(),
        started_ms: catalog::now_ms(),
        heartbeat_ms: 0,
        stopped: false,
    };
    let registry = tokio::spawn(register(
        engine.catalog().clone(),
        node.to_string(),
        info,
        rx.clone(),
    ));
    Background {
        workers,
        flusher,
        registry,
    }
}

/// Waits for Ctrl-C, SIGTERM or the listener's end, then stops everything in order: the
/// listener first (it queues its last records), then the workers (their tasks resume
/// elsewhere or at the next start), then the flusher writes the activity log.
async fn until_stopped(
    mut term: tokio::signal::unix::Signal,
    mut server: tokio::task::JoinHandle<std::io::Result<()>>,
    tx: tokio::sync::watch::Sender<bool>,
    bg: Background,
) -> Result<(), CliError> {
    let mut ended = false;
    let r = tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = term.recv() => Ok(()),
        r = &mut server => {
            ended = true;
            r.map_err(fail).and_then(|r| r.map_err(fail))
        }
    };
    eprintln!(
        "vmie: stopping: finishing requests, stopping workers (their tasks resume elsewhere or at the next start), writing the activity log"
    );
    let _ = tx.send(true);
    // The listener stops and queues its last records before the log is flushed.
    if !ended {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), server).await;
    }
    let _ = bg.workers.await;
    if let Some(f) = bg.flusher {
        let _ = f.await;
    }
    let _ = bg.registry.await;
    match &r {
        Ok(()) => eprintln!("vmie: stopped"),
        Err(e) => eprintln!("vmie: stopped: {}", e.message),
    }
    r
}

/// Serves the API of the open deployment `d` until a signal or a failure of the listener.
async fn serve_deployment(
    a: &ServeArgs,
    data_dir: &Path,
    d: &deployment::Deployment,
    node: &str,
    compliance: std::sync::Arc<dyn api::handler::ComplianceSource>,
) -> Result<(), CliError> {
    // SIGTERM is ours before anything listens: a stop sent as soon as the port answers (or
    // during start-up) is a graceful stop, never the default kill.
    let term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(fail)?;
    let Some(engine) = d.engine().cloned() else {
        return Err(fail("the deployment was opened without its engine"));
    };
    // Absolute, so that what is printed can be pasted anywhere.
    let data_dir = &std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    eprintln!("vmie: data folder {}", data_dir.display());
    let identity = Identity::new(engine.catalog().clone(), d.root.clone());
    bootstrap(&identity, &account()).await?;
    let (tls, own_cert) = tls_files(a, data_dir)?;
    let limits = connection_limits(a);
    crate::cli_tasks::startup(&engine)?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let bg = start_background(a, d, &engine, node, tls.is_some(), &rx);
    let env = Env {
        engine,
        identity,
        region: a.region.clone(),
        guard: match a.sensitive_data {
            Sensitive::Warn => api::guard::Policy::Warn,
            Sensitive::Reject => api::guard::Policy::Reject,
        },
        audit: d.audit.clone(),
        compliance: Some(compliance),
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    eprintln!(
        "vmie: serving the EC2 API at {scheme}://{} (region {}) with {} worker(s); stop with Ctrl-C or SIGTERM",
        a.listen, a.region, a.workers
    );
    let config = ServeConfig {
        listen: a.listen,
        tls,
        plain_http: a.plain_http,
        rate_limit: a.rate_limit,
        own_cert,
        limits,
    };
    let server = tokio::spawn(serve(env, config, rx));
    until_stopped(term, server, tx, bg).await
}
