//! `/console/s3/{bucket}/{key}?…`: the console's S3 requests (listing buckets and objects,
//! multipart uploads from the browser), sent through the S3 endpoint as the signed-in user
//! — signed with the session's own temporary credentials, so the S3 action table, its
//! authorization and the activity log apply exactly as to any other S3 client. The body
//! streams through (`UNSIGNED-PAYLOAD`); the key and secret never reach the browser.

use axum::body::Body;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::Response;

use super::{Session, refusal};
use crate::server::{App, Peer};
use crate::sigv4;

/// The headers of the browser's request passed on to S3.
const PASSED: &[&str] = &["content-length", "content-type", "content-md5"];

pub(super) async fn proxy(
    app: &App,
    peer: &Peer,
    s: &Session,
    parts: axum::http::request::Parts,
    body: Body,
) -> Response {
    let raw = parts
        .uri
        .path()
        .strip_prefix("/console/s3")
        .unwrap_or_default();
    let Ok(path) = percent_encoding::percent_decode_str(raw).decode_utf8() else {
        return refusal(
            StatusCode::BAD_REQUEST,
            "InvalidURI",
            "the path is not UTF-8",
        );
    };
    let path = if path.is_empty() {
        "/".to_string()
    } else {
        path.into_owned()
    };
    if path.split('/').skip(1).any(|seg| matches!(seg, "." | "..")) || path.contains("//") {
        return refusal(
            StatusCode::BAD_REQUEST,
            "InvalidURI",
            "object keys with empty, . or .. segments cannot be sent from the console",
        );
    }
    let query = parts.uri.query().unwrap_or("");
    let now = catalog::now_ms() / 1000;
    let (Ok(secret), Some(token)) = (
        app.env
            .identity
            .signing_secret(&s.who.access_key_id, now)
            .await,
        s.who.session_token.as_deref(),
    ) else {
        return refusal(
            StatusCode::UNAUTHORIZED,
            "NotSignedIn",
            "Your console session has ended; sign in again.",
        );
    };
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost")
        .to_string();
    let date = sigv4::format_amz_date(now);
    let mut hs: Vec<(String, String)> = vec![
        ("host".into(), host),
        ("x-amz-content-sha256".into(), "UNSIGNED-PAYLOAD".into()),
        ("x-amz-date".into(), date.clone()),
        ("x-amz-security-token".into(), token.to_string()),
    ];
    let names: Vec<String> = hs.iter().map(|(k, _)| k.clone()).collect();
    let signed = sigv4::Request {
        method: parts.method.as_str(),
        path: &path,
        query,
        headers: &hs,
        body: b"",
    };
    let auth = match sigv4::authorization_over(
        &signed,
        "UNSIGNED-PAYLOAD",
        sigv4::Credentials {
            access_key_id: &s.who.access_key_id,
            secret: &secret,
        },
        &app.env.region,
        "s3",
        &date,
        &names,
    ) {
        Ok(a) => a,
        Err(e) => return refusal(StatusCode::BAD_REQUEST, "InvalidRequest", &e.to_string()),
    };
    hs.push(("authorization".into(), auth));
    for name in PASSED {
        if let Some(v) = parts.headers.get(*name).and_then(|v| v.to_str().ok()) {
            hs.push(((*name).to_string(), v.to_string()));
        }
    }
    let uri = if query.is_empty() {
        sigv4::uri_encode(&path, true)
    } else {
        format!("{}?{query}", sigv4::uri_encode(&path, true))
    };
    let mut b = Request::builder().method(parts.method.clone()).uri(uri);
    for (k, v) in &hs {
        if let Ok(v) = HeaderValue::from_str(v) {
            b = b.header(k.as_str(), v);
        }
    }
    let Ok(mut req) = b.body(Body::empty()) else {
        return refusal(
            StatusCode::BAD_REQUEST,
            "InvalidURI",
            "the request could not be made",
        );
    };
    let body = crate::server::s3_body(body, req.headers());
    *req.body_mut() = body;
    app.s3.call(req, peer.addr, peer.secure).await
}
