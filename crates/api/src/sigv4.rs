//! AWS Signature Version 4, verified on the server side.
//!
//! Both forms are accepted: the `Authorization: AWS4-HMAC-SHA256 Credential=…,
//! SignedHeaders=…, Signature=…` header, and presigned URLs (`X-Amz-Algorithm`,
//! `X-Amz-Credential`, `X-Amz-Date`, `X-Amz-Expires`, `X-Amz-SignedHeaders`,
//! `X-Amz-Signature` in the query). The canonical request is rebuilt from what was received
//! exactly as the published algorithm defines it (normalized, re-encoded path; sorted,
//! strictly encoded query; lower-cased, trimmed, space-collapsed signed headers; SHA-256 of
//! the body), the signing key is derived from the secret through the date, region, service
//! and `aws4_request`, and the signatures are compared in constant time.
//!
//! Checked besides the signature: the credential scope (its date is the request's date, its
//! region and service are ours), `host` among the signed headers, the clock (15 minutes either
//! way for a signed header; for a presigned URL, not before its date less 15 minutes and not
//! after its expiry, at most 7 days), and a declared payload hash equal to the body's.
//!
//! No crate was used: the verifying crates on crates.io pull in an HTTP stack of their own
//! and a fixed tower service shape; the algorithm itself is a page of code over aws-lc-rs.

use aws_lc_rs::{constant_time, digest, hmac};

use engine::request::shown;

/// The only algorithm accepted.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// Largest difference between the request's clock and ours, in seconds.
pub const MAX_SKEW: i64 = 15 * 60;
/// Longest validity of a presigned URL, in seconds (7 days).
pub const MAX_EXPIRES: i64 = 7 * 24 * 3600;
/// Hex SHA-256 of an empty body.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const UNSIGNED: &str = "UNSIGNED-PAYLOAD";
/// Most headers a request may sign.
const MAX_SIGNED_HEADERS: usize = 64;

/// Why a request's authentication was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Neither an `Authorization` header nor a presigned query.
    #[error(
        "the request is not signed: it has no Authorization header and no X-Amz-Signature parameter"
    )]
    Missing,
    /// The authentication parts do not parse.
    #[error("{0}")]
    Malformed(String),
    /// The access key id is not known.
    #[error("the access key id {0} does not exist in our records")]
    UnknownKey(String),
    /// The credential scope is not this service's.
    #[error("{0}")]
    Scope(String),
    /// The signature is wrong.
    #[error(
        "the request signature we calculated does not match the signature you provided; check your secret access key and signing method"
    )]
    Mismatch,
    /// Too old, too early, or past its expiry.
    #[error("{0}")]
    Expired(String),
}

impl AuthError {
    /// The EC2 error code.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing | AuthError::Malformed(_) => "AuthFailure",
            AuthError::UnknownKey(_) => "InvalidClientTokenId",
            AuthError::Scope(_) | AuthError::Mismatch => "SignatureDoesNotMatch",
            AuthError::Expired(_) => "RequestExpired",
        }
    }
}

/// A request as received.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `GET`, `POST`, …
    pub method: &'a str,
    /// The path as sent (percent-encoded), without the query.
    pub path: &'a str,
    /// The query string as sent, without `?`.
    pub query: &'a str,
    /// Headers, names in any case, in the order received.
    pub headers: &'a [(String, String)],
    /// The body.
    pub body: &'a [u8],
}

/// What a request's authentication says.
#[derive(Clone, PartialEq, Eq)]
pub struct Signed {
    /// Access key id.
    pub access_key_id: String,
    /// Scope date, `YYYYMMDD`.
    pub scope_date: String,
    /// Scope region.
    pub region: String,
    /// Scope service.
    pub service: String,
    /// Request time, `YYYYMMDDTHHMMSSZ`.
    pub amz_date: String,
    /// Signed header names (lower case), in the order given.
    pub signed_headers: Vec<String>,
    /// Presigned URL: its validity in seconds.
    pub expires: Option<i64>,
    /// Session token of temporary credentials.
    pub session_token: Option<String>,
    signature: Vec<u8>,
}

impl std::fmt::Debug for Signed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signed")
            .field("access_key_id", &self.access_key_id)
            .field("scope_date", &self.scope_date)
            .field("region", &self.region)
            .field("service", &self.service)
            .field("amz_date", &self.amz_date)
            .field("expires", &self.expires)
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<present>"),
            )
            .finish_non_exhaustive()
    }
}

fn malformed(m: impl Into<String>) -> AuthError {
    AuthError::Malformed(m.into())
}

fn header<'a>(req: &Request<'a>, name: &str) -> Option<&'a str> {
    req.headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The query's pairs, decoded as the parameters are ([`crate::query::decode_pairs`]).
fn query_pairs(q: &str) -> Vec<(String, String)> {
    crate::query::decode_pairs(q.as_bytes()).collect()
}

/// SigV4 URI encoding: unreserved characters as they are, every other byte `%XX` (upper
/// case); `/` kept when `keep_slash`.
#[must_use]
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &c in s.as_bytes() {
        if c.is_ascii_alphanumeric()
            || matches!(c, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && c == b'/')
        {
            out.push(char::from(c));
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

/// The canonical path: dot segments and empty segments removed, a trailing slash kept, then
/// encoded again (non-S3 services sign the path as sent, encoded once more).
fn canonical_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    let mut p = format!("/{}", parts.join("/"));
    if path.ends_with('/') && p != "/" {
        p.push('/');
    }
    uri_encode(&p, true)
}

fn canonical_query(q: &str, skip_signature: bool) -> String {
    let mut pairs: Vec<(String, String)> = query_pairs(q)
        .into_iter()
        .filter(|(k, _)| !(skip_signature && k == "X-Amz-Signature"))
        .map(|(k, v)| (uri_encode(&k, false), uri_encode(&v, false)))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn canonical_header_value(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The canonical request for `signed_headers` with `payload_hash`.
pub fn canonical_request(
    req: &Request<'_>,
    signed_headers: &[String],
    payload_hash: &str,
    presigned: bool,
) -> Result<String, AuthError> {
    let mut s = String::new();
    s.push_str(req.method);
    s.push('\n');
    s.push_str(&canonical_path(req.path));
    s.push('\n');
    s.push_str(&canonical_query(req.query, presigned));
    s.push('\n');
    for name in signed_headers {
        let values: Vec<String> = req
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| canonical_header_value(v))
            .collect();
        if values.is_empty() {
            return Err(malformed(format!(
                "the signed header {name:?} is not in the request"
            )));
        }
        s.push_str(name);
        s.push(':');
        s.push_str(&values.join(","));
        s.push('\n');
    }
    s.push('\n');
    s.push_str(&signed_headers.join(";"));
    s.push('\n');
    s.push_str(payload_hash);
    Ok(s)
}

/// The SHA-256 of `b`, in lower-case hex.
#[must_use]
pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, b))
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    hmac::sign(&k, data).as_ref().to_vec()
}

/// The signing key for `secret` on `date` (`YYYYMMDD`) in `region` for `service`.
#[must_use]
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k = hmac_sha256(&k, region.as_bytes());
    let k = hmac_sha256(&k, service.as_bytes());
    hmac_sha256(&k, b"aws4_request")
}

fn string_to_sign(amz_date: &str, scope: &str, canonical: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical.as_bytes())
    )
}

fn parse_credential(c: &str) -> Result<(String, String, String, String), AuthError> {
    let parts: Vec<&str> = c.split('/').collect();
    match parts.as_slice() {
        [key, date, region, service, "aws4_request"] if !key.is_empty() => Ok((
            (*key).to_string(),
            (*date).to_string(),
            (*region).to_string(),
            (*service).to_string(),
        )),
        _ => Err(malformed(
            "Credential must be ACCESS_KEY_ID/YYYYMMDD/REGION/SERVICE/aws4_request",
        )),
    }
}

fn parse_signed_headers(s: &str) -> Result<Vec<String>, AuthError> {
    let names: Vec<String> = s.split(';').map(str::to_string).collect();
    if names.len() > MAX_SIGNED_HEADERS
        || names.iter().any(|n| {
            n.is_empty()
                || n.bytes()
                    .any(|c| c.is_ascii_uppercase() || c <= b' ' || c == b':')
        })
    {
        return Err(malformed(
            "SignedHeaders must be lower-case header names separated by ';'",
        ));
    }
    if !names.iter().any(|n| n == "host") {
        return Err(malformed("the host header must be signed"));
    }
    Ok(names)
}

fn parse_signature(s: &str) -> Result<Vec<u8>, AuthError> {
    match hex::decode(s) {
        Ok(b) if b.len() == 32 => Ok(b),
        _ => Err(malformed("Signature must be 64 hex digits")),
    }
}

/// Reads the authentication of `req` (header or presigned form).
pub fn parse(req: &Request<'_>) -> Result<Signed, AuthError> {
    if let Some(auth) = header(req, "authorization") {
        let rest = auth
            .strip_prefix(ALGORITHM)
            .filter(|r| r.starts_with(' '))
            .ok_or_else(|| malformed(format!("the Authorization header must use {ALGORITHM}")))?;
        let (mut cred, mut sh, mut sig) = (None, None, None);
        for part in rest.split(',') {
            let (k, v) = part.trim().split_once('=').ok_or_else(|| {
                malformed(
                    "the Authorization header must hold Credential=, SignedHeaders= and Signature=",
                )
            })?;
            match k {
                "Credential" => cred = Some(v),
                "SignedHeaders" => sh = Some(v),
                "Signature" => sig = Some(v),
                _ => {
                    return Err(malformed(format!(
                        "unknown Authorization field {:?}",
                        shown(k)
                    )));
                }
            }
        }
        let (Some(cred), Some(sh), Some(sig)) = (cred, sh, sig) else {
            return Err(malformed(
                "the Authorization header must hold Credential=, SignedHeaders= and Signature=",
            ));
        };
        let (access_key_id, scope_date, region, service) = parse_credential(cred)?;
        let amz_date = header(req, "x-amz-date")
            .ok_or_else(|| malformed("the X-Amz-Date header is missing"))?
            .to_string();
        return Ok(Signed {
            access_key_id,
            scope_date,
            region,
            service,
            amz_date,
            signed_headers: parse_signed_headers(sh)?,
            expires: None,
            session_token: header(req, "x-amz-security-token").map(str::to_string),
            signature: parse_signature(sig)?,
        });
    }
    let q = query_pairs(req.query);
    let get = |name: &str| q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let Some(sig) = get("X-Amz-Signature") else {
        return Err(AuthError::Missing);
    };
    if get("X-Amz-Algorithm") != Some(ALGORITHM) {
        return Err(malformed(format!("X-Amz-Algorithm must be {ALGORITHM}")));
    }
    let need = |n: &str| get(n).ok_or_else(|| malformed(format!("the {n} parameter is missing")));
    let (access_key_id, scope_date, region, service) = parse_credential(need("X-Amz-Credential")?)?;
    let expires: i64 = need("X-Amz-Expires")?
        .parse()
        .ok()
        .filter(|e| (1..=MAX_EXPIRES).contains(e))
        .ok_or_else(|| malformed(format!("X-Amz-Expires must be 1 to {MAX_EXPIRES} seconds")))?;
    Ok(Signed {
        access_key_id,
        scope_date,
        region,
        service,
        amz_date: need("X-Amz-Date")?.to_string(),
        signed_headers: parse_signed_headers(need("X-Amz-SignedHeaders")?)?,
        expires: Some(expires),
        session_token: get("X-Amz-Security-Token").map(str::to_string),
        signature: parse_signature(sig)?,
    })
}

/// Seconds since the Unix epoch of `YYYYMMDDTHHMMSSZ`.
#[must_use]
pub fn parse_amz_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        s.get(r)?.bytes().try_fold(0i64, |a, c| {
            c.is_ascii_digit().then(|| a * 10 + i64::from(c - b'0'))
        })
    };
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from the civil date (proleptic Gregorian).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// `YYYYMMDDTHHMMSSZ` of `t` seconds since the Unix epoch.
#[must_use]
pub fn format_amz_date(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// ISO 8601 with milliseconds (`2026-11-23T12:00:00.000Z`) of `ms` since the Unix epoch,
/// as EC2 and STS write times.
#[must_use]
pub fn format_iso8601(ms: i64) -> String {
    let s = format_amz_date(ms.div_euclid(1000));
    format!(
        "{}-{}-{}T{}:{}:{}.{:03}Z",
        &s[0..4],
        &s[4..6],
        &s[6..8],
        &s[9..11],
        &s[11..13],
        &s[13..15],
        ms.rem_euclid(1000)
    )
}

/// Checks `s` (from [`parse`]) against `req`, the caller's `secret`, our `region` and
/// `service`, at `now` (seconds since the Unix epoch).
pub fn verify(
    req: &Request<'_>,
    s: &Signed,
    secret: &str,
    region: &str,
    service: &str,
    now: i64,
) -> Result<(), AuthError> {
    let t = parse_amz_date(&s.amz_date)
        .ok_or_else(|| malformed("X-Amz-Date must be YYYYMMDDTHHMMSSZ"))?;
    if s.amz_date.get(..8) != Some(s.scope_date.as_str()) {
        return Err(AuthError::Scope(format!(
            "the credential scope date {} is not the request date {}",
            shown(&s.scope_date),
            shown(&s.amz_date)
        )));
    }
    if s.region != region {
        return Err(AuthError::Scope(format!(
            "the credential should be scoped to a valid region, not {:?}; this endpoint is {region}",
            shown(&s.region)
        )));
    }
    if s.service != service {
        return Err(AuthError::Scope(format!(
            "the credential should be scoped to the service {service}, not {:?}",
            shown(&s.service)
        )));
    }
    match s.expires {
        None if (now - t).abs() > MAX_SKEW => {
            return Err(AuthError::Expired(format!(
                "the request time {} is more than 15 minutes from the server time {}",
                s.amz_date,
                format_amz_date(now)
            )));
        }
        Some(e) if now > t + e => {
            return Err(AuthError::Expired(format!(
                "the presigned URL expired at {}",
                format_amz_date(t + e)
            )));
        }
        Some(_) if now < t - MAX_SKEW => {
            return Err(AuthError::Expired(format!(
                "the presigned URL is dated {}, in the future",
                s.amz_date
            )));
        }
        _ => {}
    }
    let body_hash = sha256_hex(req.body);
    let mut hashes = vec![body_hash.clone()];
    if let Some(declared) = header(req, "x-amz-content-sha256") {
        let ok = declared == body_hash || (declared == UNSIGNED && req.body.is_empty());
        if !ok {
            return Err(AuthError::Mismatch);
        }
        hashes = vec![declared.to_string()];
    } else if s.expires.is_some() && req.body.is_empty() {
        hashes.push(UNSIGNED.into());
    }
    let scope = format!("{}/{}/{}/aws4_request", s.scope_date, s.region, s.service);
    let key = signing_key(secret, &s.scope_date, &s.region, &s.service);
    for h in hashes {
        let creq = canonical_request(req, &s.signed_headers, &h, s.expires.is_some())?;
        let want = hmac_sha256(&key, string_to_sign(&s.amz_date, &scope, &creq).as_bytes());
        if constant_time::verify_slices_are_equal(&want, &s.signature).is_ok() {
            return Ok(());
        }
    }
    Err(AuthError::Mismatch)
}

/// The `Authorization` header value for `req` signed with the given credentials at
/// `amz_date`, over `signed_headers` (which must be in `req`): what a client sends.
pub fn authorization(
    req: &Request<'_>,
    access_key_id: &str,
    secret: &str,
    region: &str,
    service: &str,
    amz_date: &str,
    signed_headers: &[String],
) -> Result<String, AuthError> {
    authorization_over(
        req,
        &sha256_hex(req.body),
        Credentials {
            access_key_id,
            secret,
        },
        region,
        service,
        amz_date,
        signed_headers,
    )
}

/// Whose request is signed.
#[derive(Clone, Copy)]
pub struct Credentials<'a> {
    /// The access key id.
    pub access_key_id: &'a str,
    /// Its secret.
    pub secret: &'a str,
}

/// [`authorization`] over a payload whose hash is given (`UNSIGNED-PAYLOAD` for a body
/// streamed through, as S3 allows).
pub fn authorization_over(
    req: &Request<'_>,
    payload_hash: &str,
    who: Credentials<'_>,
    region: &str,
    service: &str,
    amz_date: &str,
    signed_headers: &[String],
) -> Result<String, AuthError> {
    let Credentials {
        access_key_id,
        secret,
    } = who;
    let date = amz_date.get(..8).unwrap_or_default();
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let creq = canonical_request(req, signed_headers, payload_hash, false)?;
    let sig = hmac_sha256(
        &signing_key(secret, date, region, service),
        string_to_sign(amz_date, &scope, &creq).as_bytes(),
    );
    Ok(format!(
        "{ALGORITHM} Credential={access_key_id}/{scope}, SignedHeaders={}, Signature={}",
        signed_headers.join(";"),
        hex::encode(sig)
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    // The published SigV4 test suite's example credentials and scope.
    const KEY: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const DATE: &str = "20150830T123600Z";

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| ((*a).to_string(), (*b).to_string()))
            .collect()
    }

    fn now() -> i64 {
        parse_amz_date(DATE).unwrap()
    }

    #[test]
    fn published_vectors_verify() {
        // get-header-value-trim
        let headers = h(&[
            ("Host", "example.amazonaws.com"),
            ("My-Header1", " value1"),
            ("My-Header2", "\"a   b   c\""),
            ("X-Amz-Date", DATE),
            (
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;my-header1;my-header2;x-amz-date, Signature=acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736",
            ),
        ]);
        let req = Request {
            method: "GET",
            path: "/",
            query: "",
            headers: &headers,
            body: b"",
        };
        let s = parse(&req).unwrap();
        assert_eq!(s.access_key_id, KEY);
        verify(&req, &s, SECRET, "us-east-1", "service", now()).unwrap();

        // post-sts-header-before: a session token signed as a header.
        let token = "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==";
        let headers = h(&[
            ("Host", "example.amazonaws.com"),
            ("X-Amz-Date", DATE),
            ("X-Amz-Security-Token", token),
            (
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date;x-amz-security-token, Signature=85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead",
            ),
        ]);
        let req = Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            body: b"",
        };
        let s = parse(&req).unwrap();
        assert_eq!(s.session_token.as_deref(), Some(token));
        verify(&req, &s, SECRET, "us-east-1", "service", now()).unwrap();
    }

    #[test]
    fn canonical_request_of_the_published_post_vanilla_query() {
        let headers = h(&[("Host", "example.amazonaws.com"), ("X-Amz-Date", DATE)]);
        let req = Request {
            method: "POST",
            path: "/",
            query: "Param1=value1",
            headers: &headers,
            body: b"",
        };
        let names = vec!["host".to_string(), "x-amz-date".to_string()];
        assert_eq!(
            canonical_request(&req, &names, EMPTY_SHA256, false).unwrap(),
            format!(
                "POST\n/\nParam1=value1\nhost:example.amazonaws.com\nx-amz-date:{DATE}\n\nhost;x-amz-date\n{EMPTY_SHA256}"
            )
        );
    }

    fn signed_post(body: &[u8], date: &str) -> Vec<(String, String)> {
        let mut headers = h(&[
            ("Host", "vmie.example:8443"),
            (
                "Content-Type",
                "application/x-www-form-urlencoded; charset=utf-8",
            ),
            ("X-Amz-Date", date),
        ]);
        let names: Vec<String> = ["content-type", "host", "x-amz-date"]
            .iter()
            .map(|s| (*s).to_string())
            .collect();
        let req = Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            body,
        };
        let a =
            authorization(&req, "AKIAVMIE", "s3cr3t", "us-east-1", "ec2", date, &names).unwrap();
        headers.push(("Authorization".into(), a));
        headers
    }

    #[test]
    fn tampering_wrong_secret_scope_and_time_are_refused() {
        let body = b"Action=DescribeImportImageTasks&Version=2016-11-15";
        let headers = signed_post(body, DATE);
        let req = Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            body,
        };
        let s = parse(&req).unwrap();
        verify(&req, &s, "s3cr3t", "us-east-1", "ec2", now()).unwrap();
        assert_eq!(
            verify(&req, &s, "other", "us-east-1", "ec2", now()),
            Err(AuthError::Mismatch)
        );
        let tampered = Request {
            body: b"Action=DescribeImportImageTasks&Version=2016-11-16",
            ..req
        };
        assert_eq!(
            verify(&tampered, &s, "s3cr3t", "us-east-1", "ec2", now()),
            Err(AuthError::Mismatch)
        );
        assert_eq!(
            verify(&req, &s, "s3cr3t", "eu-west-1", "ec2", now())
                .unwrap_err()
                .code(),
            "SignatureDoesNotMatch"
        );
        assert_eq!(
            verify(&req, &s, "s3cr3t", "us-east-1", "sts", now())
                .unwrap_err()
                .code(),
            "SignatureDoesNotMatch"
        );
        let late = verify(&req, &s, "s3cr3t", "us-east-1", "ec2", now() + 16 * 60).unwrap_err();
        assert_eq!(late.code(), "RequestExpired");
        verify(&req, &s, "s3cr3t", "us-east-1", "ec2", now() + 14 * 60).unwrap();
        let mut bad = headers.clone();
        bad.last_mut().unwrap().1 = bad.last().unwrap().1.replace("Signature=", "Signature=0");
        let r = Request {
            headers: &bad,
            ..req
        };
        assert_eq!(parse(&r).unwrap_err().code(), "AuthFailure");
        let none = h(&[("Host", "x")]);
        assert_eq!(
            parse(&Request {
                headers: &none,
                ..req
            }),
            Err(AuthError::Missing)
        );
    }

    #[test]
    fn presigned_urls_verify_until_they_expire() {
        let headers = h(&[("Host", "vmie.example:8443")]);
        let base = format!(
            "Action=DescribeImages&Version=2016-11-15&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAVMIE%2F20150830%2Fus-east-1%2Fec2%2Faws4_request&X-Amz-Date={DATE}&X-Amz-Expires=300&X-Amz-SignedHeaders=host"
        );
        let unsigned = Request {
            method: "GET",
            path: "/",
            query: &base,
            headers: &headers,
            body: b"",
        };
        let creq = canonical_request(&unsigned, &["host".to_string()], EMPTY_SHA256, true).unwrap();
        let sig = hmac_sha256(
            &signing_key("s3cr3t", "20150830", "us-east-1", "ec2"),
            string_to_sign(DATE, "20150830/us-east-1/ec2/aws4_request", &creq).as_bytes(),
        );
        let q = format!("{base}&X-Amz-Signature={}", hex::encode(sig));
        let req = Request {
            query: &q,
            ..unsigned
        };
        let s = parse(&req).unwrap();
        assert_eq!(s.expires, Some(300));
        verify(&req, &s, "s3cr3t", "us-east-1", "ec2", now() + 299).unwrap();
        assert_eq!(
            verify(&req, &s, "s3cr3t", "us-east-1", "ec2", now() + 301)
                .unwrap_err()
                .code(),
            "RequestExpired"
        );
        let other = q.replace("DescribeImages", "DeregisterImage");
        let r = Request {
            query: &other,
            ..req
        };
        assert_eq!(
            verify(&r, &parse(&r).unwrap(), "s3cr3t", "us-east-1", "ec2", now()),
            Err(AuthError::Mismatch)
        );
    }

    /// A signed query whose `%2B` is sent as `+` must not verify: the parameters read `+` as
    /// a space, so it would act on another value than the one signed (issue 17, finding 4).
    #[test]
    fn a_plus_sent_for_a_signed_percent_2b_does_not_verify() {
        let headers = h(&[("Host", "vmie.example:8443"), ("X-Amz-Date", DATE)]);
        let signed_q = "Action=DeregisterImage&ImageId=ami-aaa%2Bbbb&Version=2016-11-15";
        let req = Request {
            method: "GET",
            path: "/",
            query: signed_q,
            headers: &headers,
            body: b"",
        };
        let names = vec!["host".to_string(), "x-amz-date".to_string()];
        let auth = authorization(&req, KEY, SECRET, "us-east-1", "ec2", DATE, &names).unwrap();
        let mut with_auth = headers.clone();
        with_auth.push(("Authorization".into(), auth));
        let at = |query: &str| {
            let r = Request {
                query,
                headers: &with_auth,
                ..req
            };
            let s = parse(&r).unwrap();
            verify(&r, &s, SECRET, "us-east-1", "ec2", now())
        };
        at(signed_q).unwrap();
        assert_eq!(
            at("Action=DeregisterImage&ImageId=ami-aaa+bbb&Version=2016-11-15"),
            Err(AuthError::Mismatch)
        );
        // And the parameters read the signed form as the value signed.
        let p = crate::query::Params::parse(signed_q.as_bytes()).unwrap();
        assert_eq!(p.get("ImageId"), Some("ami-aaa+bbb"));
        let p = crate::query::Params::parse(b"ImageId=ami-aaa+bbb").unwrap();
        assert_eq!(p.get("ImageId"), Some("ami-aaa bbb"));
    }

    #[test]
    fn dates_round_trip() {
        for t in [0i64, 951_782_400, 1_440_938_160, 4_102_444_799] {
            assert_eq!(parse_amz_date(&format_amz_date(t)), Some(t));
        }
        assert_eq!(format_amz_date(1_440_938_160), DATE);
        for bad in [
            "",
            "20150830T123600",
            "2015083OT123600Z",
            "20151330T123600Z",
            "20150830T250000Z",
        ] {
            assert_eq!(parse_amz_date(bad), None, "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn hostile_authentication_never_panics(
            auth in "[ -~]{0,300}",
            query in "[ -~]{0,300}",
            path in "[ -~]{0,80}",
        ) {
            let headers = vec![
                ("Host".to_string(), "h".to_string()),
                ("X-Amz-Date".to_string(), DATE.to_string()),
                ("Authorization".to_string(), auth),
            ];
            let req = Request { method: "POST", path: &path, query: &query, headers: &headers, body: b"x" };
            if let Ok(s) = parse(&req) {
                proptest::prop_assert!(verify(&req, &s, SECRET, "us-east-1", "ec2", now()).is_err());
            }
            let q = Request { headers: &headers[..2], ..req };
            if let Ok(s) = parse(&q) {
                proptest::prop_assert!(verify(&q, &s, SECRET, "us-east-1", "ec2", now()).is_err());
            }
        }
    }
}
