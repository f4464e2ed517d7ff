//! The console's pages, rendered on the server: the sign-in steps, and for a signed-in
//! user a page per subject whose data the script (`assets/console.js`) fetches through the
//! API as that user. What the page offers follows the user's policies (no import button
//! for a user who may not import); what the user may do is decided by the API, whatever
//! the page offered.

use quick_xml::escape::escape;

use super::Session;
use crate::iam::{Context, Decision, evaluate};
use crate::identity::Principal;
use crate::identity::login::Step;

/// The script every page loads.
pub const SCRIPT: &str = include_str!("assets/console.js");
/// The style sheet.
pub const STYLE: &str = include_str!("assets/console.css");

/// What a sign-in page shows.
#[derive(Debug, Default)]
pub struct SignInView {
    /// A refusal or a hint.
    pub message: Option<String>,
    /// The account given.
    pub account: String,
    /// The user given.
    pub user: String,
    /// A step after the password, with its ticket.
    pub step: Option<(Step, String)>,
}

fn head(title: &str) -> String {
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>{} · vmie console</title><link rel="stylesheet" href="/console/static/console.css"><script src="/console/static/console.js" defer></script>"#,
        escape(title)
    )
}

/// The sign-in form of the step `v` is at.
#[must_use]
pub fn signin(nonce: &str, v: &SignInView) -> String {
    let message = v.message.as_ref().map_or(String::new(), |m| {
        format!(
            r#"<p class="error" role="alert" id="signin-error">{}</p>"#,
            escape(m)
        )
    });
    let csrf = format!(
        r#"<input type="hidden" name="csrf" value="{}">"#,
        escape(nonce)
    );
    let form = match &v.step {
        None => format!(
            r#"<form method="post" action="/console/signin" class="card">{csrf}
<label for="account">Account ID</label><input id="account" name="account" inputmode="numeric" autocomplete="organization" required pattern="[0-9]{{12}}" value="{}">
<label for="user">IAM user name</label><input id="user" name="user" autocomplete="username" required value="{}">
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit" id="signin">Sign in</button></form>"#,
            escape(&v.account),
            escape(&v.user)
        ),
        Some((Step::Code, ticket)) => format!(
            r#"<form method="post" action="/console/signin/code" class="card">{csrf}<input type="hidden" name="ticket" value="{}">
<p>Enter the six-digit code your MFA device shows now.</p>
<label for="code">MFA code</label><input id="code" name="code" inputmode="numeric" autocomplete="one-time-code" required pattern="[0-9]{{6}}" autofocus>
<button type="submit" id="verify">Verify</button></form>"#,
            escape(ticket)
        ),
        Some((Step::NewPassword, ticket)) => format!(
            r#"<form method="post" action="/console/signin/password" class="card">{csrf}<input type="hidden" name="ticket" value="{}">
<p>Your password must be changed before you continue: 8 to 128 characters, with at least three of lower case, upper case, digits and symbols.</p>
<label for="new_password">New password</label><input id="new_password" name="new_password" type="password" autocomplete="new-password" required minlength="8" maxlength="128">
<label for="new_password_again">New password again</label><input id="new_password_again" name="new_password_again" type="password" autocomplete="new-password" required minlength="8" maxlength="128">
<button type="submit" id="change">Change password and sign in</button></form>"#,
            escape(ticket)
        ),
    };
    format!(
        r#"{}</head><body class="signin"><main id="main"><h1>Sign in to the vmie console</h1>{message}{form}</main></body></html>"#,
        head("Sign in")
    )
}

/// Whether `who`'s policies allow `action` (on any resource): what the pages offer. The API
/// decides again, on the resources the request names.
#[must_use]
pub fn allowed(who: &Principal, action: &str) -> bool {
    let ctx = Context::new(action, "*")
        .with("aws:SecureTransport", &["true"])
        .with(
            "aws:MultiFactorAuthPresent",
            &[if who.mfa { "true" } else { "false" }],
        );
    evaluate(&who.policies, &ctx) == Decision::Allow
}

/// The pages: path, title, and the action that makes the page useful (its link is shown
/// only to users allowed it).
const PAGES: &[(&str, &str, &str)] = &[
    ("tasks", "Tasks", "ec2:DescribeImportImageTasks"),
    ("import", "Import", "ec2:ImportImage"),
    ("images", "Images", "ec2:DescribeImages"),
    ("snapshots", "Snapshots", "ec2:DescribeSnapshots"),
    ("events", "Activity log", "cloudtrail:LookupEvents"),
    ("keys", "KMS keys", "kms:ListKeys"),
    ("users", "Users", "iam:ListUsers"),
    ("compliance", "Compliance", "vmie:GetComplianceReport"),
];

fn shell(s: &Session, page: &str, id: &str, title: &str, body: &str) -> String {
    let nav: String = PAGES
        .iter()
        .filter(|(_, _, action)| allowed(&s.who, action))
        .map(|(p, t, _)| {
            let current = if *p == page {
                r#" aria-current="page""#
            } else {
                ""
            };
            format!(r#"<li><a href="/console/{p}"{current}>{t}</a></li>"#)
        })
        .collect();
    let mfa = if s.who.mfa { " · MFA" } else { "" };
    format!(
        r##"{}<meta name="csrf" content="{}"></head><body data-page="{}" data-id="{}" data-region="">
<a class="skip" href="#main">Skip to content</a>
<header><span class="brand">vmie</span><nav aria-label="Console"><ul>{nav}</ul></nav>
<div class="who"><span id="who">{}@{}{mfa}</span><form method="post" action="/console/signout"><input type="hidden" name="csrf" value="{}"><button type="submit" id="signout">Sign out</button></form></div></header>
<main id="main" tabindex="-1"><h1>{}</h1><p id="status" role="status" aria-live="polite"></p>{body}</main></body></html>"##,
        head(title),
        escape(&s.csrf),
        escape(page),
        escape(id),
        escape(&s.who.user),
        escape(&s.who.account),
        escape(&s.csrf),
        escape(title)
    )
}

fn table(id: &str, caption: &str, cols: &[&str]) -> String {
    let th: String = cols
        .iter()
        .map(|c| format!(r#"<th scope="col">{c}</th>"#))
        .collect();
    format!(
        r#"<div class="scroll"><table id="{id}"><caption>{caption}</caption><thead><tr>{th}</tr></thead><tbody></tbody></table></div>"#
    )
}

const EVIDENCE: &str = r#"<section id="evidence" aria-labelledby="evidence-h"><h2 id="evidence-h">Boot check</h2><p id="evidence-summary"></p><figure hidden id="screen-figure"><img id="screen" alt="The guest's screen when the boot check decided"><figcaption>The guest's screen when the boot check decided</figcaption></figure><h3>Serial console</h3><pre id="serial" tabindex="0"></pre></section>"#;

/// The pages that are one table the script fills: path, title, table id, caption, columns.
const TABLES: &[(&str, &str, &str, &[&str])] = &[
    (
        "images",
        "Images",
        "Images of this account",
        &["Image", "Name", "State", "Encryption key", "Guest", "Tags"],
    ),
    (
        "snapshots",
        "Snapshots",
        "Snapshots of this account",
        &[
            "Snapshot",
            "Size (GiB)",
            "State",
            "Encryption key",
            "Description",
            "Tags",
        ],
    ),
    (
        "keys",
        "KMS keys",
        "Keys of this account",
        &[
            "Key",
            "Aliases",
            "State",
            "Description",
            "Automatic rotation",
        ],
    ),
    (
        "users",
        "Users",
        "Users of this account",
        &["User", "Created", "Access keys", "MFA", "Console password"],
    ),
    (
        "compliance",
        "Compliance",
        "The deployment's controls (what vmie compliance checks)",
        &["Control", "Result", "Found", "Remedy"],
    ),
];

/// The page at `path` for the signed-in user (`None`: no such page).
pub fn page(s: &Session, path: &str) -> Option<String> {
    let (page, id) = path.split_once('/').unwrap_or((path, ""));
    let ok_id = id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !ok_id {
        return None;
    }
    Some(match (page, id) {
        ("" | "tasks", "") => tasks(s),
        ("task", id) if !id.is_empty() => {
            let body = format!(
                r#"<dl id="facts"></dl><progress id="progress" max="100" value="0" aria-label="Progress"></progress>{EVIDENCE}"#
            );
            shell(s, "task", id, &format!("Task {id}"), &body)
        }
        ("image", id) if !id.is_empty() => {
            let body = format!(r#"<dl id="facts"></dl>{EVIDENCE}"#);
            shell(s, "image", id, &format!("Image {id}"), &body)
        }
        ("import", "") => import(s),
        ("events", "") => events(s),
        (p, "") => {
            let (p, title, caption, cols) = TABLES.iter().find(|t| t.0 == p)?;
            shell(s, p, "", title, &table(p, caption, cols))
        }
        _ => return None,
    })
}

fn tasks(s: &Session) -> String {
    let import = if allowed(&s.who, "ec2:ImportImage") {
        r#"<p><a class="button" id="import-button" href="/console/import">Import an image</a></p>"#
    } else {
        ""
    };
    let body = format!(
        "{import}{}",
        table(
            "tasks",
            "Import and export tasks, newest first (refreshed every two seconds)",
            &["Task", "Kind", "Status", "Progress", "Details"]
        )
    );
    shell(s, "tasks", "", "Tasks", &body)
}

fn import(s: &Session) -> String {
    if !allowed(&s.who, "ec2:ImportImage") {
        let body = r#"<p class="error" role="alert">You are not allowed to import images (ec2:ImportImage).</p>"#;
        return shell(s, "denied", "", "Import", body);
    }
    let body = r#"<form id="import-form" class="card">
<fieldset><legend>Disk image</legend>
<label for="file">File to upload (VMDK, VHD, VHDX, qcow2, VDI, OVA, raw)</label><input type="file" id="file">
<label for="bucket">Bucket</label><input id="bucket" required list="buckets" autocomplete="off"><datalist id="buckets"></datalist>
<label for="key">Object key (for an upload: where it goes; without a file: an object already in the bucket)</label><input id="key" required autocomplete="off">
<label for="description">Description (optional)</label><input id="description" maxlength="255">
</fieldset>
<button type="submit" id="start-import">Upload and import</button>
<label for="upload-progress">Upload</label><progress id="upload-progress" max="100" value="0"></progress>
</form>"#;
    shell(s, "import", "", "Import an image", body)
}

fn events(s: &Session) -> String {
    let options: String = [
        "EventName",
        "Username",
        "ResourceName",
        "ResourceType",
        "EventSource",
        "AccessKeyId",
        "ReadOnly",
        "EventId",
    ]
    .iter()
    .map(|v| format!(r#"<option value="{v}">{v}</option>"#))
    .collect();
    let body = format!(
        r#"<form id="events-form" class="filters">
<label for="attr">Look up by</label><select id="attr"><option value="">(everything)</option>{options}</select>
<label for="value">Value</label><input id="value">
<label for="start">From</label><input id="start" type="datetime-local">
<label for="end">To</label><input id="end" type="datetime-local">
<button type="submit">Look up</button></form>{}"#,
        table(
            "events",
            "Events, newest first",
            &[
                "Time",
                "Event",
                "User",
                "Source address",
                "Resources",
                "Error"
            ]
        )
    );
    shell(s, "events", "", "Activity log", &body)
}

/// A page that does not exist.
#[must_use]
pub fn not_found(s: &Session) -> String {
    shell(
        s,
        "missing",
        "",
        "Not found",
        r#"<p>There is no such page. <a href="/console/tasks">Tasks</a></p>"#,
    )
}
