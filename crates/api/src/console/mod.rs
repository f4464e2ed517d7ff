//! The web console, under `/console/` on the endpoint's own HTTPS listener.
//!
//! Pages are rendered on the server (`pages.rs`); one script and one style sheet, embedded
//! in the binary, fill them from the same API everything else uses: the console's
//! `POST /console/api/{service}` runs the request through the endpoint's own path
//! (`crate::server`: the action table, authorization, the activity log) as the signed-in
//! user, and `/console/s3` sends uploads through the S3 endpoint, signed with the session's
//! credentials. The console has no actions of its own besides signing in and out, which are
//! authentication and are recorded as `ConsoleLogin` and `ConsoleLogout`.
//!
//! Sessions: signing in (`signin.rs`: password, then an MFA code when the user has a
//! device, then a new password when one is due) mints temporary credentials for one hour;
//! the `__Host-vmie-console` cookie (`Secure`, `HttpOnly`, `SameSite=Strict`, path `/`)
//! carries their key id and session token, never a password or secret. Every request that
//! changes something carries a CSRF token derived from the session (an `HMAC` of its token),
//! in the `X-Vmie-Csrf` header or a form field, and a foreign `Origin` is refused.
//! Signing out deletes the session's credentials at once. Every answer forbids framing,
//! caching and sniffing; the Content-Security-Policy allows no inline script and nothing
//! from another origin.

use std::net::IpAddr;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use zeroize::Zeroizing;

use crate::identity::Principal;
use crate::server::{App, Peer};

mod pages;
mod s3;
mod signin;

/// The session cookie.
pub const COOKIE: &str = "__Host-vmie-console";
/// The cookie that ties a sign-in form to the browser that loaded it.
pub const SIGNIN_COOKIE: &str = "__Host-vmie-signin";
/// The header that carries the CSRF token.
pub const CSRF_HEADER: &str = "x-vmie-csrf";
/// Largest form or API body the console reads.
const MAX_FORM: usize = 64 * 1024;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Whether a request is the console's: a path under `/console` that is not signed for S3
/// (a bucket named `console` stays reachable with signed requests).
#[must_use]
pub fn is_console(uri: &Uri, headers: &HeaderMap, domains: &[String]) -> bool {
    let p = uri.path();
    (p == "/console" || p.starts_with("/console/")) && !crate::s3::named_s3(uri, headers, domains)
}

/// Sets the headers every console answer carries.
fn harden(mut r: Response) -> Response {
    let h = r.headers_mut();
    for (k, v) in [
        ("content-security-policy", CSP),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "same-origin"),
        ("cache-control", "no-store"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
        ("strict-transport-security", "max-age=31536000"),
    ] {
        h.insert(
            header::HeaderName::from_static(k),
            HeaderValue::from_static(v),
        );
    }
    r
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

fn redirect(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response()
}

/// A refusal for the script: JSON `{"code", "message"}`.
fn refusal(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({"code": code, "message": message}).to_string(),
    )
        .into_response()
}

/// The value of cookie `name`.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn set_cookie(r: &mut Response, name: &str, value: &str, max_age: i64) {
    let c = format!("{name}={value}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={max_age}");
    if let Ok(v) = HeaderValue::from_str(&c) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// A signed-in session.
pub(crate) struct Session {
    /// Who.
    pub who: Principal,
    /// Its CSRF token.
    pub csrf: String,
}

/// The CSRF token of the session whose token is `token`: an HMAC of the key id under a
/// key derived from the token (which only the cookie carries).
fn csrf_of(id: &str, token: &str) -> String {
    use aws_lc_rs::{digest, hmac};
    let k = digest::digest(
        &digest::SHA256,
        format!("vmie console csrf\0{token}").as_bytes(),
    );
    let key = hmac::Key::new(hmac::HMAC_SHA256, k.as_ref());
    hex::encode(hmac::sign(&key, id.as_bytes()).as_ref())
}

fn same(a: &str, b: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}

/// The session the cookie names, if it is current.
async fn session(app: &App, headers: &HeaderMap) -> Option<Session> {
    let (id, token) = cookie(headers, COOKIE)?.split_once('.')?;
    // Only a session's credentials open the console (a long-term key's id never does).
    if !id.starts_with("ASIA") {
        return None;
    }
    let now = catalog::now_ms() / 1000;
    let who = app
        .env
        .identity
        .principal_of_key(id, Some(token), now)
        .await
        .ok()?;
    Some(Session {
        csrf: csrf_of(id, token),
        who,
    })
}

/// Whether a request that changes something may: its `Origin` (when sent) is this host,
/// and it carries `expected` as the CSRF token (header or form field `given`).
fn csrf_ok(headers: &HeaderMap, given: Option<&str>, expected: &str) -> bool {
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if origin != format!("https://{host}") && origin != format!("http://{host}") {
            return false;
        }
    }
    let given = given.or_else(|| headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()));
    given.is_some_and(|g| same(g, expected))
}

/// Reads a form body (bounded).
async fn form(body: Body) -> Option<Vec<(String, Zeroizing<String>)>> {
    let b = axum::body::to_bytes(body, MAX_FORM).await.ok()?;
    Some(
        form_urlencoded::parse(&b)
            .map(|(k, v)| (k.into_owned(), Zeroizing::new(v.into_owned())))
            .collect(),
    )
}

fn field<'a>(f: &'a [(String, Zeroizing<String>)], name: &str) -> &'a str {
    f.iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

/// Where a request came from and how it identifies itself, for the activity log.
pub(crate) struct Client {
    /// Address.
    pub ip: IpAddr,
    /// `User-Agent`.
    pub agent: String,
}

fn client(peer: &Peer, headers: &HeaderMap) -> Client {
    Client {
        ip: peer.addr,
        agent: headers
            .get(header::USER_AGENT)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default(),
    }
}

/// Serves one console request.
pub(crate) async fn handle(app: &App, peer: &Peer, req: axum::extract::Request) -> Response {
    harden(route(app, peer, req).await)
}

async fn route(app: &App, peer: &Peer, req: axum::extract::Request) -> Response {
    let (mut parts, body) = req.into_parts();
    // HTTP/2 names the host in the URI (`:authority`), HTTP/1.1 in `Host`: one place for
    // the origin check and the S3 signature.
    if !parts.headers.contains_key(header::HOST)
        && let Some(a) = parts.uri.authority()
        && let Ok(v) = HeaderValue::from_str(a.as_str())
    {
        parts.headers.insert(header::HOST, v);
    }
    let path = parts.uri.path().trim_start_matches("/console");
    let path = path.trim_start_matches('/').to_string();
    let m = parts.method.clone();
    match (m.clone(), path.as_str()) {
        (Method::GET, "static/console.js") => asset("text/javascript", pages::SCRIPT),
        (Method::GET, "static/console.css") => asset("text/css", pages::STYLE),
        (Method::GET, "signin") => signin::form(app, &parts.headers).await,
        (Method::POST, "signin" | "signin/code" | "signin/password") => {
            let f = form(body).await.unwrap_or_default();
            signin::step(
                app,
                &client(peer, &parts.headers),
                &parts.headers,
                &path,
                &f,
            )
            .await
        }
        _ => {
            let Some(s) = session(app, &parts.headers).await else {
                return if m == Method::GET {
                    redirect("/console/signin")
                } else {
                    refusal(
                        StatusCode::UNAUTHORIZED,
                        "NotSignedIn",
                        "Your console session has ended; sign in again.",
                    )
                };
            };
            signed_in(app, peer, s, m, &path, parts, body).await
        }
    }
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

async fn signed_in(
    app: &App,
    peer: &Peer,
    s: Session,
    m: Method,
    path: &str,
    parts: axum::http::request::Parts,
    body: Body,
) -> Response {
    if path == "s3" || path.starts_with("s3/") {
        // Reads too: a listing is the user's data, asked for by the console's script only.
        if !csrf_ok(&parts.headers, None, &s.csrf) {
            return forged(&s, path);
        }
        return s3::proxy(app, peer, &s, parts, body).await;
    }
    if m == Method::GET || m == Method::HEAD {
        return match pages::page(&s, path) {
            Some(body) => html(StatusCode::OK, body),
            None => html(StatusCode::NOT_FOUND, pages::not_found(&s)),
        };
    }
    if path == "signout" {
        let f = form(body).await.unwrap_or_default();
        if !csrf_ok(&parts.headers, Some(field(&f, "csrf")), &s.csrf) {
            return forged(&s, path);
        }
        return signin::sign_out(app, &client(peer, &parts.headers), &s).await;
    }
    if !csrf_ok(&parts.headers, None, &s.csrf) {
        return forged(&s, path);
    }
    if let Some(service) = path.strip_prefix("api/") {
        return api(app, peer, s, service, parts, body).await;
    }
    refusal(StatusCode::NOT_FOUND, "NotFound", "no such console action")
}

fn forged(s: &Session, path: &str) -> Response {
    tracing::warn!(user = %s.who.arn, path = %engine::request::shown(path), "console: a change without its CSRF token refused");
    refusal(
        StatusCode::FORBIDDEN,
        "InvalidCsrfToken",
        "This request did not come from a page of this console (missing or wrong CSRF token); reload the page.",
    )
}

/// `POST /console/api/{service}`: the request, as the signed-in user, through the
/// endpoint's own path (the action table, authorization, the activity log). Query services
/// take a form body (`Action=…&…`); KMS and CloudTrail a JSON body and `X-Amz-Target`.
async fn api(
    app: &App,
    peer: &Peer,
    s: Session,
    service: &str,
    parts: axum::http::request::Parts,
    body: Body,
) -> Response {
    use crate::spec::Service;
    let service = match service {
        "ec2" => Service::Ec2,
        "iam" => Service::Iam,
        "sts" => Service::Sts,
        "kms" => Service::Kms,
        "cloudtrail" => Service::CloudTrail,
        _ => {
            return refusal(
                StatusCode::NOT_FOUND,
                "UnknownService",
                "the console speaks ec2, iam, sts, kms and cloudtrail",
            );
        }
    };
    let peer = Peer {
        addr: peer.addr,
        secure: peer.secure,
    };
    crate::server::ec2_endpoint(
        axum::extract::State(app.clone()),
        axum::extract::Extension(peer),
        parts.method,
        Uri::from_static("/"),
        parts.headers,
        body,
        crate::server::Caller::Console(Box::new(s.who), service),
    )
    .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn a_change_needs_its_token_and_our_origin() {
        let t = csrf_of("ASIAEXAMPLE", "token-1");
        assert_eq!(t.len(), 64);
        assert_ne!(
            t,
            csrf_of("ASIAEXAMPLE", "token-2"),
            "tied to the session token"
        );
        let ours = headers(&[
            ("host", "127.0.0.1:8443"),
            ("origin", "https://127.0.0.1:8443"),
        ]);
        assert!(csrf_ok(&ours, Some(&t), &t));
        assert!(!csrf_ok(&ours, None, &t), "no token");
        assert!(!csrf_ok(&ours, Some("guess"), &t), "a wrong token");
        let with_header = headers(&[("host", "h:1"), (CSRF_HEADER, &t)]);
        assert!(csrf_ok(&with_header, None, &t), "the header carries it");
        for foreign in ["https://evil.example", "null", "https://127.0.0.1:9999"] {
            let h = headers(&[
                ("host", "127.0.0.1:8443"),
                ("origin", foreign),
                (CSRF_HEADER, &t),
            ]);
            assert!(!csrf_ok(&h, None, &t), "origin {foreign}");
        }
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let h = headers(&[
            ("cookie", "a=1; __Host-vmie-console=ASIA.x; b=2"),
            ("cookie", "c=3"),
        ]);
        assert_eq!(cookie(&h, COOKIE), Some("ASIA.x"));
        assert_eq!(cookie(&h, "c"), Some("3"));
        assert_eq!(cookie(&h, "__Host-vmie"), None);
    }

    #[test]
    fn console_paths_unless_signed_for_s3() {
        let d = vec!["localhost".to_string()];
        let u: Uri = "/console/tasks".parse().unwrap();
        assert!(is_console(&u, &HeaderMap::new(), &d));
        assert!(is_console(
            &"/console".parse().unwrap(),
            &HeaderMap::new(),
            &d
        ));
        assert!(!is_console(
            &"/consoles/x".parse().unwrap(),
            &HeaderMap::new(),
            &d
        ));
        let signed = headers(&[(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIAX/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00",
        )]);
        assert!(
            !is_console(&u, &signed, &d),
            "a signed S3 request for the bucket console"
        );
    }

    #[test]
    fn pages_escape_what_they_show() {
        let v = pages::SignInView {
            message: Some("<script>alert(1)</script>".into()),
            account: "\"><img src=x>".into(),
            ..Default::default()
        };
        let p = pages::signin("n", &v);
        assert!(!p.contains("<script>alert") && !p.contains("<img src=x>"));
        assert!(p.contains("&lt;script&gt;"));
        assert!(
            !p.contains("<script>") || p.matches("<script").count() == 1,
            "only our script"
        );
    }
}
