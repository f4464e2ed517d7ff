//! Signing in and out of the console: the forms' steps over
//! [`crate::identity::login`], each one recorded in the activity log.

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use zeroize::Zeroizing;

use super::{
    COOKIE, Client, SIGNIN_COOKIE, Session, cookie, csrf_ok, field, html, pages, redirect,
    set_cookie,
};
use crate::audit::ConsoleEvent;
use crate::identity::login::{SignIn, Step};
use crate::server::App;

/// How long a sign-in form stays good (seconds).
const FORM_SECONDS: i64 = 600;

fn random_hex() -> String {
    let mut b = [0u8; 24];
    kms::aead::random(&mut b);
    hex::encode(b)
}

/// `GET /console/signin`: the form, tied to this browser by a cookie it must send back.
pub(super) async fn form(app: &App, headers: &HeaderMap) -> Response {
    if super::session(app, headers).await.is_some() {
        return redirect("/console/tasks");
    }
    let nonce = cookie(headers, SIGNIN_COOKIE)
        .filter(|c| c.len() == 48 && c.bytes().all(|b| b.is_ascii_hexdigit()))
        .map_or_else(random_hex, str::to_string);
    let mut r = html(
        StatusCode::OK,
        pages::signin(&nonce, &pages::SignInView::default()),
    );
    set_cookie(&mut r, SIGNIN_COOKIE, &nonce, FORM_SECONDS);
    r
}

/// `POST /console/signin[/code|/password]`: one step of a sign-in.
pub(super) async fn step(
    app: &App,
    client: &Client,
    headers: &HeaderMap,
    path: &str,
    f: &[(String, Zeroizing<String>)],
) -> Response {
    let nonce = cookie(headers, SIGNIN_COOKIE)
        .unwrap_or_default()
        .to_string();
    if nonce.is_empty() || !csrf_ok(headers, Some(field(f, "csrf")), &nonce) {
        let view = pages::SignInView {
            message: Some(
                "This sign-in form has expired or did not come from this console; try again."
                    .into(),
            ),
            ..Default::default()
        };
        let fresh = random_hex();
        let mut r = html(StatusCode::FORBIDDEN, pages::signin(&fresh, &view));
        set_cookie(&mut r, SIGNIN_COOKIE, &fresh, FORM_SECONDS);
        return r;
    }
    let ticket = field(f, "ticket");
    let attempt = match attempt(app, path, f, &nonce).await {
        Ok(a) => a,
        Err(page) => return page,
    };
    answer(app, client, &nonce, path, ticket, attempt).await
}

/// What one step came to, and whose sign-in it was.
struct Attempt {
    account: String,
    user: String,
    outcome: Result<SignIn, crate::identity::login::Refused>,
}

/// Runs the step `path` of the form `f` (`Err`: a page to show at once).
async fn attempt(
    app: &App,
    path: &str,
    f: &[(String, Zeroizing<String>)],
    nonce: &str,
) -> Result<Attempt, Response> {
    let id = &app.env.identity;
    let now = catalog::now_ms() / 1000;
    let ticket = field(f, "ticket");
    let (account, user, outcome) = match path {
        "signin" => {
            let account = field(f, "account").trim().to_string();
            let user = field(f, "user").trim().to_string();
            let pw = Zeroizing::new(field(f, "password").to_string());
            let o = id.sign_in(&account, &user, pw, now).await;
            (account, user, o)
        }
        _ => {
            let who = id.pending_user(ticket).unwrap_or_default();
            let o = if path == "signin/code" {
                id.sign_in_code(ticket, field(f, "code"), now).await
            } else {
                let pw = Zeroizing::new(field(f, "new_password").to_string());
                if pw.as_str() != field(f, "new_password_again") {
                    return Err(html(
                        StatusCode::OK,
                        pages::signin(
                            nonce,
                            &pages::SignInView {
                                message: Some("The two new passwords differ.".into()),
                                step: Some((Step::NewPassword, ticket.to_string())),
                                ..Default::default()
                            },
                        ),
                    ));
                }
                id.sign_in_new_password(ticket, pw, now).await
            };
            (who.0, who.1, o)
        }
    };
    Ok(Attempt {
        account,
        user,
        outcome,
    })
}

/// The answer to a step: the session cookie, the next step's form, or the refusal — each
/// recorded in the activity log.
async fn answer(
    app: &App,
    client: &Client,
    nonce: &str,
    path: &str,
    ticket: &str,
    a: Attempt,
) -> Response {
    let Attempt {
        account,
        user,
        outcome,
    } = a;
    let known = known_user(app, &account, &user).await;
    match outcome {
        Ok(SignIn::Done(s, mfa)) => {
            record(app, client, &account, Some(&user), mfa, None);
            let mut r = redirect("/console/tasks");
            let value = format!("{}.{}", s.access_key_id, s.session_token.as_str());
            set_cookie(
                &mut r,
                COOKIE,
                &value,
                crate::identity::login::SESSION_SECONDS,
            );
            set_cookie(&mut r, SIGNIN_COOKIE, "", 0);
            r
        }
        Ok(SignIn::Next(step, ticket)) => html(
            StatusCode::OK,
            pages::signin(
                nonce,
                &pages::SignInView {
                    step: Some((step, ticket)),
                    ..Default::default()
                },
            ),
        ),
        Err(e) => {
            let why = if e.mfa {
                "Failed authentication (MFA code)"
            } else {
                "Failed authentication"
            };
            if known.is_some() || account_exists(app, &account).await {
                record(app, client, &account, known.as_deref(), e.mfa, Some(why));
            } else {
                tracing::info!(source = %client.ip, "console sign-in refused for an unknown account");
            }
            let step = (e.mfa && path == "signin/code").then(|| (Step::Code, ticket.to_string()));
            html(
                StatusCode::UNAUTHORIZED,
                pages::signin(
                    nonce,
                    &pages::SignInView {
                        message: Some(e.message),
                        account: account.clone(),
                        user: if step.is_some() { String::new() } else { user },
                        step,
                    },
                ),
            )
        }
    }
}

/// `user` when it is a user of `account` (else the log withholds the name given).
async fn known_user(app: &App, account: &str, user: &str) -> Option<String> {
    app.env
        .identity
        .catalog()
        .principal_exists(account, catalog::iam::PrincipalKind::User, user)
        .await
        .ok()
        .filter(|e| *e)
        .map(|_| user.to_string())
}

async fn account_exists(app: &App, account: &str) -> bool {
    account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && app
            .env
            .identity
            .catalog()
            .users(account)
            .await
            .is_ok_and(|u| !u.is_empty())
}

fn record(
    app: &App,
    client: &Client,
    account: &str,
    user: Option<&str>,
    mfa: bool,
    error: Option<&str>,
) {
    if let Some(a) = &app.env.audit {
        a.console(&ConsoleEvent {
            name: "ConsoleLogin",
            account,
            user,
            source_ip: client.ip,
            user_agent: &client.agent,
            mfa_used: mfa,
            error,
        });
    }
}

/// `POST /console/signout`: the session's credentials deleted, the cookie cleared.
pub(super) async fn sign_out(app: &App, client: &Client, s: &Session) -> Response {
    let error = app
        .env
        .identity
        .end_session(&s.who.access_key_id)
        .await
        .err()
        .map(|e| e.message);
    if let Some(a) = &app.env.audit {
        a.console(&ConsoleEvent {
            name: "ConsoleLogout",
            account: &s.who.account,
            user: Some(&s.who.user),
            source_ip: client.ip,
            user_agent: &client.agent,
            mfa_used: s.who.mfa,
            error: error.as_deref(),
        });
    }
    let mut r = redirect("/console/signin");
    set_cookie(&mut r, COOKIE, "", 0);
    r
}
