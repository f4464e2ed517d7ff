//! The web console in a real browser: headless Chromium driven through ChromeDriver
//! (WebDriver, the `fantoccini` client) against `vmie serve` with the boot check on.
//!
//! alice (a password and an MFA device) signs in with password and TOTP code, uploads a
//! bootable guest disk from the browser, watches its import to completion, opens the boot
//! screenshot, finds her events in the activity log and signs out — after which her old
//! session cookie no longer works. reader (describe-only) sees no import button and is
//! refused when she forges the request; a request without the CSRF token is refused; and
//! five wrong passwords lock carol's sign-in, even for the right password. Every wait is
//! for a state the page shows (the back-off the server names, the task's status), with a
//! generous deadline as a deadlock guard only.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../../bootcheck/tests/support/guests.rs"]
mod guests;
mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use testkit::ToolExt;

use support::{free_port, terminate, wait_port, wait_serving};

const ALICE_PW: &str = "Alice-console-1";
const READER_PW: &str = "Reader-console-2";
const CAROL_PW: &str = "Carol-console-3";

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn admin(data: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vmie"))
        .arg("--data-dir")
        .arg(data)
        .arg("admin")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(s) = stdin {
        c.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    drop(c.stdin.take());
    let o = c.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "vmie admin {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn serve(data: &Path, port: u16, log: &Path) -> Killed {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmie"))
        .arg("--data-dir")
        .arg(data)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--node",
            "console-test",
        ])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    wait_serving(&mut child, port, log);
    // Its standard output is read to the end (a closed pipe would fail its last words).
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || for _ in BufReader::new(out).lines().map_while(Result::ok) {});
    Killed(child)
}

fn base32_decode(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut buf, mut bits) = (0u64, 0);
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'2'..=b'7' => c - b'2' + 26,
            _ => panic!("not base32: {s}"),
        };
        buf = (buf << 5) | u64::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((buf >> bits) & 0xff).unwrap());
        }
    }
    out
}

/// A TOTP code for `secret` that the server has not seen yet: the next 30-second step
/// after `after` (a code is accepted once).
fn code(secret: &[u8], after: &mut u64) -> String {
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        if now / 30 > *after {
            *after = now / 30;
            return api::totp::code(secret, now);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

async fn browser(driver_port: u16, profile: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert("acceptInsecureCerts".into(), json!(true));
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1280,800",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{driver_port}"))
        .await
        .expect("ChromeDriver starts a Chromium session")
}

/// Waits until `f` gives `Some`, up to `limit` (a deadlock guard, far above the need).
async fn until<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let t0 = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn text_of(c: &Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn fill(c: &Client, id: &str, value: &str) {
    let e = c.find(Locator::Id(id)).await.unwrap();
    e.clear().await.unwrap();
    e.send_keys(value).await.unwrap();
}

/// Clicks the submit button `id` and waits for the page the form's answer loads (the old
/// document is marked first, so a page still showing is never taken for the answer).
async fn submit(c: &Client, id: &str) {
    c.execute(
        "document.documentElement.dataset.old = '1'; return true;",
        vec![],
    )
    .await
    .unwrap();
    c.find(Locator::Id(id))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until("the form's answer", Duration::from_secs(60), || async {
        let v = c
            .execute(
                "return document.readyState === 'complete' && !document.documentElement.dataset.old;",
                vec![],
            )
            .await
            .ok()?;
        (v == serde_json::Value::Bool(true)).then_some(())
    })
    .await;
}

/// Submits the password form; the page's answer (error text, or the URL's path).
async fn password_step(c: &Client, base: &str, account: &str, user: &str, pw: &str) -> String {
    c.goto(&format!("{base}/console/signin")).await.unwrap();
    fill(c, "account", account).await;
    fill(c, "user", user).await;
    fill(c, "password", pw).await;
    submit(c, "signin").await;
    let err = text_of(c, "#signin-error").await;
    if err.is_empty() {
        c.current_url().await.unwrap().path().to_string()
    } else {
        err
    }
}

/// Runs `body` in the page as an async function; its JSON result.
async fn in_page(c: &Client, body: &str) -> serde_json::Value {
    let script = format!(
        "const done = arguments[arguments.length - 1]; (async () => {{ {body} }})().then(done, (e) => done({{error: String(e)}}));"
    );
    c.execute_async(&script, vec![]).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_with_mfa_imports_from_the_browser_and_is_held_to_the_policies() {
    let chromedriver = Command::new("chromedriver").arg("--version").status_named();
    assert!(
        chromedriver.success(),
        "this test needs chromium and chromedriver (Debian packages chromium, chromium-driver): run scripts/test, which installs them"
    );
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let log = work.path().join("server.log");
    let guest = guests::build(work.path(), &guests::GuestSpec::good(guests::Loader::Bios));

    // The first start makes the deployment (certificate, admin); then people are added.
    let port = free_port();
    let mut first = serve(&data, port, &log);
    assert!(terminate(&mut first.0).success());
    drop(first);
    let arn = admin(&data, &["user", "create", "alice"], None);
    let account = arn.trim().split(':').nth(4).unwrap().to_string();
    admin(&data, &["user", "create", "reader"], None);
    admin(&data, &["user", "create", "carol"], None);
    admin(
        &data,
        &[
            "policy",
            "put",
            "everything",
            "--document",
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#,
        ],
        None,
    );
    admin(
        &data,
        &[
            "policy",
            "put",
            "describe-only",
            "--document",
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ec2:Describe*","ec2:Get*"],"Resource":"*"}]}"#,
        ],
        None,
    );
    admin(
        &data,
        &["policy", "attach", "everything", "--user", "alice"],
        None,
    );
    admin(
        &data,
        &["policy", "attach", "describe-only", "--user", "reader"],
        None,
    );
    admin(
        &data,
        &["policy", "attach", "describe-only", "--user", "carol"],
        None,
    );
    for (u, pw) in [
        ("alice", ALICE_PW),
        ("reader", READER_PW),
        ("carol", CAROL_PW),
    ] {
        admin(
            &data,
            &["login-profile", "set", u],
            Some(&format!("{pw}\n")),
        );
    }
    let enrolled = admin(&data, &["mfa", "enable", "alice"], None);
    let secret = enrolled
        .split("secret=")
        .nth(1)
        .and_then(|r| r.split('&').next())
        .expect("the otpauth URI names the secret");
    let secret = base32_decode(secret);
    std::fs::create_dir_all(data.join("buckets/images")).unwrap();

    let port = free_port();
    let _server = serve(&data, port, &log);
    let base = format!("https://127.0.0.1:{port}");
    let driver_port = free_port();
    let _driver = Killed(
        Command::new("chromedriver")
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(driver_port);
    let c = browser(driver_port, &work.path().join("profile")).await;

    // --- alice: password, then a code from her device -------------------------------
    let mut step = 0;
    let at = password_step(&c, &base, &account, "alice", ALICE_PW).await;
    assert_eq!(at, "/console/signin", "the MFA step is on the sign-in page");
    fill(&c, "code", &code(&secret, &mut step)).await;
    submit(&c, "verify").await;
    let path = c.current_url().await.unwrap().path().to_string();
    assert_eq!(
        path,
        "/console/tasks",
        "{}",
        text_of(&c, "#signin-error").await
    );
    let session = c
        .get_all_cookies()
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.name() == "__Host-vmie-console")
        .expect("a session cookie");
    assert_eq!(session.secure(), Some(true));
    assert_eq!(session.http_only(), Some(true));
    assert_eq!(format!("{:?}", session.same_site()), "Some(Strict)");
    assert!(text_of(&c, "#who").await.contains("MFA"));

    // Upload and import from the browser.
    c.find(Locator::Id("import-button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait().for_element(Locator::Id("bucket")).await.unwrap();
    fill(&c, "bucket", "images").await;
    c.find(Locator::Id("file"))
        .await
        .unwrap()
        .send_keys(guest.disk.to_str().unwrap())
        .await
        .unwrap();
    fill(&c, "key", "uploads/guest.raw").await;
    c.find(Locator::Id("start-import"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let task = until("the task page", Duration::from_secs(600), || async {
        let u = c.current_url().await.ok()?;
        let st = text_of(&c, "#status").await;
        assert!(
            !st.contains("Error") && !st.contains("Denied"),
            "the import did not start: {st}"
        );
        u.path().strip_prefix("/console/task/").map(str::to_string)
    })
    .await;
    assert!(task.starts_with("import-ami-"), "{task}");
    assert!(
        std::fs::metadata(data.join("buckets/images/uploads/guest.raw"))
            .unwrap()
            .len()
            == std::fs::metadata(&guest.disk).unwrap().len(),
        "the upload is whole"
    );
    // Watch it to the end (the boot check boots it under QEMU).
    let facts = until("the import's end", Duration::from_secs(3600), || async {
        let f = text_of(&c, "#facts").await;
        (f.contains("completed") || f.contains("deleted")).then_some(f)
    })
    .await;
    assert!(facts.contains("completed"), "the import failed: {facts}");
    let png = until("the boot screenshot", Duration::from_secs(120), || async {
        let e = c.find(Locator::Id("screen")).await.ok()?;
        e.attr("src")
            .await
            .ok()
            .flatten()
            .filter(|s| s.starts_with("data:image/png;base64,"))
    })
    .await;
    let png = base64_decode(png.trim_start_matches("data:image/png;base64,"));
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG screenshot");
    assert!(
        text_of(&c, "#evidence-summary").await.contains("booted"),
        "{}",
        text_of(&c, "#evidence-summary").await
    );
    let image = text_of(&c, "#facts").await;
    let image = image
        .split_whitespace()
        .find(|w| w.starts_with("ami-"))
        .unwrap()
        .to_string();
    c.goto(&format!("{base}/console/image/{image}"))
        .await
        .unwrap();
    until(
        "the image's screenshot",
        Duration::from_secs(60),
        || async {
            let e = c.find(Locator::Id("screen")).await.ok()?;
            e.attr("src")
                .await
                .ok()
                .flatten()
                .filter(|s| s.starts_with("data:image/png"))
        },
    )
    .await;

    // Her events in the activity log (delivered every few seconds).
    c.goto(&format!("{base}/console/events")).await.unwrap();
    for name in ["ImportImage", "ConsoleLogin"] {
        until(name, Duration::from_secs(120), || async {
            c.find(Locator::Css("#attr option[value='EventName']"))
                .await
                .ok()?
                .click()
                .await
                .ok()?;
            fill(&c, "value", name).await;
            c.find(Locator::Css("#events-form button"))
                .await
                .ok()?
                .click()
                .await
                .ok()?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let st = text_of(&c, "#status").await;
            assert!(
                st.is_empty() || st.starts_with("Loading"),
                "the lookup failed: {st}"
            );
            text_of(&c, "#events tbody")
                .await
                .contains(name)
                .then_some(())
        })
        .await;
    }

    // The compliance page: the controls vmie compliance checks, through the API.
    c.goto(&format!("{base}/console/compliance")).await.unwrap();
    until(
        "the compliance controls",
        Duration::from_secs(120),
        || async {
            let t = text_of(&c, "#compliance tbody").await;
            (t.contains("activity-log-verified") && (t.contains("PASS") || t.contains("FAIL")))
                .then_some(())
        },
    )
    .await;
    // A narrow screen: one column, nothing wider than the window but the tables' own
    // scrolling boxes.
    c.set_window_size(390, 844).await.unwrap();
    c.goto(&format!("{base}/console/tasks")).await.unwrap();
    let fits = c
        .execute(
            "return document.documentElement.scrollWidth <= window.innerWidth + 1;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(fits, json!(true), "the tasks page fits a narrow screen");
    c.set_window_size(1280, 800).await.unwrap();

    // Sign out: the session's credentials are gone, even for a copy of the cookie (which
    // opened the console until then).
    assert_eq!(
        landing(&base, session.value()),
        format!("{base}/console/tasks")
    );
    submit(&c, "signout").await;
    assert_eq!(c.current_url().await.unwrap().path(), "/console/signin");
    // A copy of the cookie, sent after sign-out, is sent back to sign in.
    assert_eq!(
        landing(&base, session.value()),
        format!("{base}/console/signin"),
        "a signed-out session's cookie opens nothing"
    );

    // --- reader: describe only ---------------------------------------------------------
    let at = password_step(&c, &base, &account, "reader", READER_PW).await;
    assert_eq!(at, "/console/tasks", "reader signs in without MFA");
    assert!(
        c.find(Locator::Id("import-button")).await.is_err(),
        "no import button for a describe-only user"
    );
    let nav = text_of(&c, "nav").await;
    assert!(
        nav.contains("Images") && !nav.contains("Import") && !nav.contains("Compliance"),
        "reader's menu offers what reader may do: {nav}"
    );
    until("reader's task list", Duration::from_secs(60), || async {
        text_of(&c, "#tasks tbody")
            .await
            .contains(&task)
            .then_some(())
    })
    .await;
    let forged = in_page(
        &c,
        r#"const r = await fetch("/console/api/ec2", {method: "POST",
                headers: {"x-vmie-csrf": document.querySelector('meta[name="csrf"]').content,
                           "content-type": "application/x-www-form-urlencoded"},
                body: "Action=ImportImage&Version=2016-11-15&DiskContainer.1.UserBucket.S3Bucket=images&DiskContainer.1.UserBucket.S3Key=uploads/guest.raw"});
            return {status: r.status, body: await r.text()};"#,
    )
    .await;
    assert_eq!(forged["status"], 403, "{forged}");
    assert!(
        forged["body"]
            .as_str()
            .unwrap()
            .contains("UnauthorizedOperation"),
        "{forged}"
    );
    // Without the CSRF token, even an allowed request is refused.
    let no_token = in_page(
        &c,
        r#"const r = await fetch("/console/api/ec2", {method: "POST",
               headers: {"content-type": "application/x-www-form-urlencoded"},
               body: "Action=DescribeImages&Version=2016-11-15"});
           return {status: r.status, body: await r.text()};"#,
    )
    .await;
    assert_eq!(no_token["status"], 403, "{no_token}");
    assert!(
        no_token["body"]
            .as_str()
            .unwrap()
            .contains("InvalidCsrfToken")
    );
    // A form posted from another site (a page of no origin of ours): the SameSite=Strict
    // cookie does not go with it, nor does a token: reader stays signed in.
    c.goto(&format!(
        "data:text/html,<form id=f method=post action=https://127.0.0.1:{port}/console/signout><input name=csrf value=guess></form>"
    ))
    .await
    .unwrap();
    c.execute(
        "setTimeout(() => document.getElementById('f').submit(), 10); return true;",
        vec![],
    )
    .await
    .unwrap();
    until(
        "the cross-site post's answer",
        Duration::from_secs(30),
        || async {
            let u = c.current_url().await.ok()?;
            (u.host_str() == Some("127.0.0.1")).then_some(())
        },
    )
    .await;
    c.goto(&format!("{base}/console/tasks")).await.unwrap();
    assert_eq!(
        c.current_url().await.unwrap().path(),
        "/console/tasks",
        "a cross-site POST did not sign reader out"
    );
    submit(&c, "signout").await;

    // --- carol: five wrong passwords lock her sign-in ------------------------------------
    let mut counted = 0;
    let mut last = String::new();
    while counted < 5 {
        last = password_step(&c, &base, &account, "carol", "Wrong-password-9").await;
        if last.contains("try again after") {
            // The back-off the server named: not counted, the password not checked.
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        assert!(last.contains("incorrect"), "{last}");
        counted += 1;
    }
    assert!(
        last.contains("locked until"),
        "the fifth failure locks: {last}"
    );
    let right = password_step(&c, &base, &account, "carol", CAROL_PW).await;
    assert!(
        right.contains("locked until") && right.contains("not checked"),
        "a locked sign-in refuses even the right password: {right}"
    );
    c.close().await.unwrap();

    // Every sign-in, success and failure, is in the activity log.
    let o = support::vmie(&data, &["trail", "lookup"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let records: Vec<serde_json::Value> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let logins: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["eventName"] == "ConsoleLogin")
        .collect();
    let ok = |u: &str| {
        logins.iter().any(|r| {
            r["userIdentity"]["userName"] == u && r["responseElements"]["ConsoleLogin"] == "Success"
        })
    };
    assert!(ok("alice") && ok("reader"), "{logins:#?}");
    assert!(
        logins
            .iter()
            .any(|r| r["userIdentity"]["userName"] == "alice"
                && r["additionalEventData"]["MFAUsed"] == "Yes")
    );
    let carol_failed = logins
        .iter()
        .filter(|r| {
            r["userIdentity"]["userName"] == "carol"
                && r["responseElements"]["ConsoleLogin"] == "Failure"
        })
        .count();
    assert!(
        carol_failed >= 6,
        "{carol_failed} failures of carol recorded"
    );
    let text = serde_json::to_string(&records).unwrap();
    for pw in [ALICE_PW, READER_PW, CAROL_PW, "Wrong-password-9"] {
        assert!(!text.contains(pw), "a password reached the activity log");
    }
    assert!(records.iter().any(|r| r["eventName"] == "ConsoleLogout"));
}

/// Where `GET /console/tasks` with the session cookie `value` lands, after redirects.
fn landing(base: &str, value: &str) -> String {
    let probe = "import ssl, sys, urllib.request\n\
                 r = urllib.request.urlopen(urllib.request.Request(sys.argv[1], headers={'Cookie': sys.argv[2]}),\n\
                     context=ssl._create_unverified_context())\n\
                 print(r.geturl())";
    let o = Command::new("python3")
        .args([
            "-c",
            probe,
            &format!("{base}/console/tasks"),
            &format!("__Host-vmie-console={value}"),
        ])
        .output_named();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}
