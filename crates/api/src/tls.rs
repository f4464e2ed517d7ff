//! The listener's certificate: the operator's files, or vmie's own self-signed one, kept
//! current while the server runs.
//!
//! vmie's own certificate ([`self_signed`]) names its issuer and subject `CN=vmie <host>,
//! O=vmie`, covers the listen names as subject alternative names, is valid for
//! [`SELF_SIGNED_DAYS`] days, and is made again — new key, new certificate — when fewer than
//! [`RENEW_BEFORE_DAYS`] days remain, when a listen name is not covered, or when it does not
//! load (for example the placeholder earlier versions made). The key file is 0600 and both
//! files are replaced atomically.
//!
//! A running server checks every [`CHECK_EVERY`] ([`Certs::refresh`]): its own certificate is
//! renewed as above, and the operator's files, when they changed (a renewal by certbot, say),
//! are loaded; new connections get the new certificate, open ones keep theirs. A file that
//! does not load is reported and the current certificate kept.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Lifetime of vmie's own certificate.
pub const SELF_SIGNED_DAYS: i64 = 365;
/// vmie's own certificate is renewed when fewer days than this remain.
pub const RENEW_BEFORE_DAYS: i64 = 30;
/// How often a running server looks at its certificate.
pub const CHECK_EVERY: Duration = Duration::from_secs(3600);
/// The organization vmie's own certificates name.
pub const ORGANIZATION: &str = "vmie";

const DAY: i64 = 86_400;

/// What a certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Start of validity (Unix seconds).
    pub not_before: i64,
    /// End of validity (Unix seconds).
    pub not_after: i64,
    /// Subject common name.
    pub common_name: String,
    /// Subject organization.
    pub organization: String,
    /// Subject alternative names: DNS names, and IP addresses in their usual text form.
    pub names: Vec<String>,
}

fn bad(what: &Path, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("{}: {e}", what.display()))
}

/// Reads the first certificate of the PEM file `path`.
pub fn cert_info(path: &Path) -> io::Result<CertInfo> {
    let pem = std::fs::read(path)?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).map_err(|e| bad(path, e))?;
    let cert = pem.parse_x509().map_err(|e| bad(path, e))?;
    let text = |v: Option<&x509_parser::x509::AttributeTypeAndValue<'_>>| {
        v.and_then(|a| a.as_str().ok()).unwrap_or("").to_string()
    };
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                x509_parser::extensions::GeneralName::DNSName(d) => names.push((*d).to_string()),
                x509_parser::extensions::GeneralName::IPAddress(b) => {
                    if let Ok(a) = <[u8; 4]>::try_from(*b) {
                        names.push(std::net::Ipv4Addr::from(a).to_string());
                    } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                        names.push(std::net::Ipv6Addr::from(a).to_string());
                    }
                }
                _ => {}
            }
        }
    }
    Ok(CertInfo {
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        common_name: text(cert.subject().iter_common_name().next()),
        organization: text(cert.subject().iter_organization().next()),
        names,
    })
}

/// The host name, for the subject of vmie's own certificate.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Writes `bytes` to `path` through a temporary file beside it and a rename, mode `mode`.
fn replace(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let tmp = path.with_extension("pem.new");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    io::Write::write_all(&mut f, bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Makes a new self-signed certificate for `names` valid from `now` (Unix seconds).
fn make(cert: &Path, key: &Path, names: &[String], now: i64) -> io::Result<()> {
    let fail = |e: rcgen::Error| io::Error::other(format!("making the certificate: {e}"));
    let signing = rcgen::KeyPair::generate().map_err(fail)?;
    let mut p = rcgen::CertificateParams::new(names.to_vec()).map_err(fail)?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, format!("vmie {}", host_name()));
    dn.push(rcgen::DnType::OrganizationName, ORGANIZATION);
    p.distinguished_name = dn;
    let at = |t: i64| {
        time::OffsetDateTime::from_unix_timestamp(t)
            .map_err(|e| io::Error::other(format!("the clock: {e}")))
    };
    // A little slack for clients whose clock runs behind.
    p.not_before = at(now - 3600)?;
    p.not_after = at(now + SELF_SIGNED_DAYS * DAY)?;
    let mut serial = [0u8; 16];
    kms::aead::random(&mut serial);
    serial[0] &= 0x7f;
    p.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let made = p.self_signed(&signing).map_err(fail)?;
    if let Some(dir) = key.parent() {
        std::fs::create_dir_all(dir)?;
    }
    replace(key, signing.serialize_pem().as_bytes(), 0o600)?;
    replace(cert, made.pem().as_bytes(), 0o600)
}

/// Why vmie's own certificate at `cert` must be made again at `now`, if it must.
fn renewal_reason(cert: &Path, key: &Path, names: &[String], now: i64) -> Option<String> {
    if !cert.exists() || !key.exists() {
        return Some("none yet".into());
    }
    let info = match cert_info(cert) {
        Ok(i) => i,
        Err(e) => return Some(format!("it does not load ({e})")),
    };
    if load_key(cert, key).is_err() {
        return Some("its key does not load or does not match".into());
    }
    if info.organization != ORGANIZATION {
        return Some(format!("it is not vmie's (subject {:?})", info.common_name));
    }
    if info.not_after - now < RENEW_BEFORE_DAYS * DAY {
        return Some(format!(
            "{} days of validity remain",
            (info.not_after - now).max(0) / DAY
        ));
    }
    let missing: Vec<&String> = names.iter().filter(|n| !info.names.contains(n)).collect();
    if !missing.is_empty() {
        return Some(format!("it does not name {missing:?}"));
    }
    None
}

/// Makes (or renews, see the module's documentation) vmie's own certificate for `names` in
/// `dir` at `now` (Unix seconds): `cert.pem`, `key.pem`. Returns their paths and, when it
/// made a new one, why.
pub fn ensure_self_signed(
    dir: &Path,
    names: &[String],
    now: i64,
) -> io::Result<(PathBuf, PathBuf, Option<String>)> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let why = renewal_reason(&cert, &key, names, now);
    if why.is_some() {
        make(&cert, &key, names, now)?;
    }
    Ok((cert, key, why))
}

/// [`ensure_self_signed`] now; says on standard error when it made one.
pub fn self_signed(dir: &Path, names: &[String]) -> io::Result<(PathBuf, PathBuf)> {
    let (c, k, why) = ensure_self_signed(dir, names, now())?;
    if let Some(why) = why {
        eprintln!(
            "vmie: made a self-signed certificate {} valid for {SELF_SIGNED_DAYS} days ({why})",
            c.display()
        );
    }
    Ok((c, k))
}

fn now() -> i64 {
    catalog::now_ms() / 1000
}

fn load_key(cert: &Path, key: &Path) -> io::Result<CertifiedKey> {
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(cert, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(cert, e))?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, e))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    CertifiedKey::from_der(certs, key_der, &provider).map_err(|e| bad(cert, e))
}

/// Hands every handshake the current certificate.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.read().ok().map(|k| k.clone())
    }
}

/// The listener's certificate and where it comes from.
#[derive(Debug)]
pub struct Certs {
    cert: PathBuf,
    key: PathBuf,
    /// vmie's own, for these names (renewed); `None`: the operator's files (reloaded).
    own: Option<Vec<String>>,
    current: Arc<Current>,
    /// Contents of the files loaded (to see a change).
    loaded: std::sync::Mutex<Vec<u8>>,
}

fn contents(cert: &Path, key: &Path) -> Vec<u8> {
    let mut v = std::fs::read(cert).unwrap_or_default();
    v.extend(std::fs::read(key).unwrap_or_default());
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &v)
        .as_ref()
        .to_vec()
}

impl Certs {
    /// The certificate in `cert` and `key`; `own`: it is vmie's self-signed one for these
    /// names, renewed when due.
    pub fn load(cert: &Path, key: &Path, own: Option<Vec<String>>) -> io::Result<Self> {
        let k = load_key(cert, key)?;
        Ok(Certs {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            own,
            current: Arc::new(Current(RwLock::new(Arc::new(k)))),
            loaded: std::sync::Mutex::new(contents(cert, key)),
        })
    }

    /// The TLS configuration of the listener: TLS 1.3 and 1.2, HTTP/2 and HTTP/1.1, the
    /// current certificate at each handshake.
    pub fn server_config(&self) -> io::Result<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| bad(&self.cert, e))?
            .with_no_client_auth()
            .with_cert_resolver(self.current.clone());
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(cfg)
    }

    /// The certificate handshakes get now.
    #[must_use]
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current.0.read().ok().map(|k| k.clone())
    }

    /// Renews vmie's own certificate when due at `now` (Unix seconds), and loads the files
    /// when they changed. Returns what it did, if anything.
    pub fn refresh(&self, now: i64) -> io::Result<Option<String>> {
        let mut did = None;
        if let Some(names) = &self.own
            && let Some(why) = renewal_reason(&self.cert, &self.key, names, now)
        {
            make(&self.cert, &self.key, names, now)?;
            did = Some(format!("renewed the self-signed certificate ({why})"));
        }
        let now_contents = contents(&self.cert, &self.key);
        let Ok(mut loaded) = self.loaded.lock() else {
            return Ok(did);
        };
        if *loaded != now_contents {
            let k = load_key(&self.cert, &self.key)?;
            if let Ok(mut c) = self.current.0.write() {
                *c = Arc::new(k);
            }
            *loaded = now_contents;
            did.get_or_insert_with(|| "loaded the changed certificate files".into());
        }
        Ok(did)
    }

    /// Calls [`Certs::refresh`] every [`CHECK_EVERY`] until `shutdown` turns true.
    pub async fn run_refresher(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(CHECK_EVERY) => {}
                _ = shutdown.changed() => return,
            }
            let me = self.clone();
            match tokio::task::spawn_blocking(move || me.refresh(now())).await {
                Ok(Ok(Some(what))) => tracing::info!(cert = %self.cert.display(), "TLS: {what}"),
                Ok(Ok(None)) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "TLS: the certificate could not be renewed or loaded; the current one stays");
                }
                Err(e) => tracing::error!(error = %e, "TLS: the certificate check failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const T0: i64 = 1_800_000_000;

    fn names() -> Vec<String> {
        ["localhost", "127.0.0.1", "::1", "vmie.example"]
            .iter()
            .map(|s| (*s).to_string())
            .collect()
    }

    #[test]
    fn own_certificate_has_a_subject_a_year_and_the_listen_names() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, why) = ensure_self_signed(dir.path(), &names(), T0).unwrap();
        assert_eq!(why.as_deref(), Some("none yet"));
        let i = cert_info(&cert).unwrap();
        assert_eq!(i.organization, "vmie");
        assert_eq!(i.common_name, format!("vmie {}", host_name()));
        assert_eq!(i.not_after - T0, 365 * DAY);
        assert!(i.not_before <= T0 && T0 - i.not_before <= 3600);
        for n in names() {
            assert!(i.names.contains(&n), "{n} not in {:?}", i.names);
        }
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&key), 0o600);
        // Kept while it is good.
        let (_, _, why) = ensure_self_signed(dir.path(), &names(), T0 + 300 * DAY).unwrap();
        assert_eq!(why, None);
        assert_eq!(cert_info(&cert).unwrap(), i);
    }

    #[test]
    fn own_certificate_is_renewed_before_expiry_for_new_names_and_over_a_placeholder() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, _) = ensure_self_signed(dir.path(), &names(), T0).unwrap();
        let first_key = std::fs::read(&key).unwrap();
        // 31 days left: kept; 29: renewed, from that day, with a new key.
        let late = T0 + (365 - 31) * DAY;
        assert_eq!(
            ensure_self_signed(dir.path(), &names(), late).unwrap().2,
            None
        );
        let renew_at = T0 + (365 - 29) * DAY;
        let why = ensure_self_signed(dir.path(), &names(), renew_at)
            .unwrap()
            .2;
        assert!(why.unwrap().contains("29 days"));
        assert_eq!(cert_info(&cert).unwrap().not_after, renew_at + 365 * DAY);
        assert_ne!(std::fs::read(&key).unwrap(), first_key);
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // A name it does not cover (the listen address changed).
        let mut more = names();
        more.push("192.0.2.7".into());
        let why = ensure_self_signed(dir.path(), &more, renew_at).unwrap().2;
        assert!(why.unwrap().contains("192.0.2.7"));
        assert!(
            cert_info(&cert)
                .unwrap()
                .names
                .contains(&"192.0.2.7".into())
        );
        // The placeholder of earlier versions (rcgen's simple certificate, thousands of
        // years long) is replaced.
        let old = rcgen::generate_simple_self_signed(names()).unwrap();
        std::fs::write(&cert, old.cert.pem()).unwrap();
        std::fs::write(&key, old.signing_key.serialize_pem()).unwrap();
        let placeholder = cert_info(&cert).unwrap();
        assert!(placeholder.not_after - T0 > 1000 * 365 * DAY);
        let why = ensure_self_signed(dir.path(), &names(), T0).unwrap().2;
        assert!(why.unwrap().contains("not vmie's"));
        assert_eq!(cert_info(&cert).unwrap().organization, "vmie");
    }

    #[test]
    fn a_running_server_serves_the_renewed_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, _) = ensure_self_signed(dir.path(), &names(), T0).unwrap();
        let certs = Certs::load(&cert, &key, Some(names())).unwrap();
        let served = |c: &Certs| c.current().unwrap().cert[0].as_ref().to_vec();
        let before = served(&certs);
        assert_eq!(certs.refresh(T0 + 100 * DAY).unwrap(), None);
        assert_eq!(served(&certs), before);
        let did = certs.refresh(T0 + 340 * DAY).unwrap().unwrap();
        assert!(did.contains("renewed"), "{did}");
        let after = served(&certs);
        assert_ne!(after, before);
        assert_eq!(
            after,
            std::fs::read(&cert)
                .map(|p| {
                    CertificateDer::pem_slice_iter(&p)
                        .next()
                        .unwrap()
                        .unwrap()
                        .as_ref()
                        .to_vec()
                })
                .unwrap()
        );

        // The operator's files: loaded when they change; a broken file keeps the current.
        let other = tempfile::tempdir().unwrap();
        let (c2, k2, _) = ensure_self_signed(other.path(), &names(), T0).unwrap();
        let ops = Certs::load(&c2, &k2, None).unwrap();
        assert_eq!(
            ops.refresh(T0 + 364 * DAY).unwrap(),
            None,
            "not renewed: not vmie's to renew"
        );
        let before = served(&ops);
        std::fs::copy(&cert, &c2).unwrap();
        std::fs::copy(&key, &k2).unwrap();
        assert!(ops.refresh(T0).unwrap().unwrap().contains("loaded"));
        assert_eq!(served(&ops), after);
        assert_ne!(served(&ops), before);
        std::fs::write(&k2, "not a key").unwrap();
        assert!(ops.refresh(T0).is_err());
        assert_eq!(served(&ops), after);
    }
}
