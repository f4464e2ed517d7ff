//! Failed MFA codes (issue 17): counted per device in the catalog, shared by every node —
//! two `Identity` services, as two `vmie serve` processes have, on one SQLite file and on a
//! PostgreSQL server the test starts — with exponential back-off and a lockout after
//! `LOCKOUT_AFTER` failures during which even the right code is refused; cleared by a right
//! code, an administrator's unlock, or re-enrolment. Time is passed in, never waited for.

#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;

use api::identity::{Identity, Principal};
use api::mfa::{LOCKOUT_AFTER, LOCKOUT_MS, delay_ms};
use api::totp;
use catalog::Catalog;
use kms::RootKey;

const ACCOUNT: &str = "111122223333";
/// A time at the start of a 30-second step.
const T0: i64 = 1_800_000_010 - 1_800_000_010 % 30;

fn base32_decode(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
            .iter()
            .position(|x| *x == c)
            .unwrap();
        acc = (acc << 5) | u32::try_from(v).unwrap();
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).unwrap());
        }
    }
    out
}

fn alice() -> Principal {
    Principal {
        account: ACCOUNT.into(),
        user: "alice".into(),
        arn: format!("arn:aws:iam::{ACCOUNT}:user/alice"),
        access_key_id: "AKIAALICE00000000000".into(),
        session_token: None,
        mfa: false,
        policies: Vec::new(),
        role: None,
        session_policy: None,
    }
}

struct Device {
    serial: String,
    secret: Vec<u8>,
}

impl Device {
    fn right(&self, now: i64) -> String {
        totp::code(&self.secret, u64::try_from(now).unwrap())
    }
    /// A code that none of the three steps around `now` accepts.
    fn wrong(&self, now: i64) -> String {
        let t = u64::try_from(now).unwrap();
        let near: Vec<String> = [t - 30, t, t + 30]
            .iter()
            .map(|x| totp::code(&self.secret, *x))
            .collect();
        (0..)
            .map(|i| format!("{i:06}"))
            .find(|c| !near.contains(c))
            .unwrap()
    }
}

async fn enrol(id: &Identity) -> Device {
    id.create_user(ACCOUNT, "alice").await.unwrap();
    let (serial, uri) = id.enable_mfa(ACCOUNT, "alice").await.unwrap();
    let b32 = uri
        .split("secret=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    Device {
        serial,
        secret: base32_decode(b32),
    }
}

/// `Ok(())`, or the refusal's message.
async fn try_code(id: &Identity, d: &Device, code: &str, now: i64) -> Result<(), String> {
    match id
        .get_session_token(&alice(), Some((&d.serial, code)), 900, now)
        .await
    {
        Ok(s) => {
            assert!(s.access_key_id.starts_with("ASIA"));
            Ok(())
        }
        Err((code, message)) => {
            assert_eq!(code, "AccessDenied", "{message}");
            Err(message)
        }
    }
}

async fn failures(c: &Catalog) -> i64 {
    c.mfa_states(ACCOUNT).await.unwrap()[0].failures
}

/// Two services over one catalog (`a` and `b`) share the count, the back-off and the lockout.
async fn lockout_is_shared(a: &Identity, b: &Identity) {
    let d = enrol(a).await;
    // A right code works; the count is clear.
    try_code(b, &d, &d.right(T0), T0).await.unwrap();
    assert_eq!(failures(b.catalog()).await, 0);

    // Failure 1 on `a`: the other node holds back too, even the right code, unchecked.
    let mut now = T0 + 60;
    let e = try_code(a, &d, &d.wrong(now), now).await.unwrap_err();
    assert!(e.contains("invalid MFA one time pass code"), "{e}");
    let e = try_code(b, &d, &d.right(now), now).await.unwrap_err();
    assert!(e.contains("too many invalid codes; retry after"), "{e}");
    assert_eq!(
        failures(a.catalog()).await,
        1,
        "a refused wait is not counted"
    );

    // Failures 2 to LOCKOUT_AFTER, alternating nodes, each after its back-off (seconds).
    for f in 2..=LOCKOUT_AFTER {
        now += delay_ms(f - 1) / 1000;
        let node = if f % 2 == 0 { b } else { a };
        let e = try_code(node, &d, &d.wrong(now), now).await.unwrap_err();
        if f < LOCKOUT_AFTER {
            assert!(!e.contains("locked"), "{e}");
        } else {
            assert!(
                e.contains("is locked until") && e.contains("vmie admin mfa unlock alice"),
                "{e}"
            );
        }
    }
    assert_eq!(failures(a.catalog()).await, LOCKOUT_AFTER);

    // Locked: the right code is refused on both nodes until the lockout ends, unchecked.
    let locked_at = now;
    let until = locked_at + LOCKOUT_MS / 1000;
    for t in [locked_at, locked_at + 1, until - 30, until - 1] {
        for node in [a, b] {
            let e = try_code(node, &d, &d.right(t), t).await.unwrap_err();
            assert!(e.contains("the MFA device is locked until"), "{e}");
        }
    }
    assert_eq!(failures(b.catalog()).await, LOCKOUT_AFTER);
    // It ends: the right code works, and the count is cleared.
    try_code(a, &d, &d.right(until), until).await.unwrap();
    assert_eq!(failures(b.catalog()).await, 0);

    // A code is accepted once: a replay is refused and counted.
    let e = try_code(b, &d, &d.right(until), until + 2)
        .await
        .unwrap_err();
    assert!(e.contains("invalid MFA"), "{e}");
    assert_eq!(failures(a.catalog()).await, 1);

    // A lockout grows while failures go on: the next one doubles.
    now = until + 60;
    while failures(a.catalog()).await < LOCKOUT_AFTER + 1 {
        let e = try_code(a, &d, &d.wrong(now), now).await.unwrap_err();
        assert!(
            !e.contains("retry after") && !e.contains("not checked"),
            "{e}"
        );
        now += delay_ms(failures(a.catalog()).await) / 1000;
    }
    let st = &a.catalog().mfa_states(ACCOUNT).await.unwrap()[0];
    assert_eq!(st.failures, LOCKOUT_AFTER + 1);
    assert_eq!(
        st.next_attempt_ms - st.last_failure_ms,
        2 * LOCKOUT_MS,
        "the second lockout is twice the first"
    );

    // An administrator unlocks: the right code works at once.
    assert!(a.catalog().mfa_unlock(ACCOUNT, "alice").await.unwrap());
    let t = st.last_failure_ms / 1000 + 1;
    try_code(b, &d, &d.right(t + 30), t + 30).await.unwrap();

    // Concurrent guesses on both nodes at one instant: one is checked, the rest wait.
    let t = t + 120;
    let wrong = d.wrong(t);
    let guesses = (0..16).map(|i| {
        let node = if i % 2 == 0 { a.clone() } else { b.clone() };
        let (serial, code) = (d.serial.clone(), wrong.clone());
        tokio::spawn(async move {
            match node
                .get_session_token(&alice(), Some((&serial, &code)), 900, t)
                .await
            {
                Ok(_) => "accepted".to_string(),
                Err((_, m)) => m,
            }
        })
    });
    let mut checked = 0;
    for g in guesses.collect::<Vec<_>>() {
        let m = g.await.unwrap();
        assert_ne!(m, "accepted");
        if !m.contains("retry after") {
            checked += 1;
        }
    }
    assert_eq!(checked, 1, "concurrent guesses slipped past the back-off");
    assert_eq!(failures(a.catalog()).await, 1);

    // Re-enrolment clears the count too.
    let d2 = enrol_again(a).await;
    try_code(b, &d2, &d2.right(t), t).await.unwrap();
    assert!(!a.catalog().mfa_unlock(ACCOUNT, "nobody").await.unwrap());
}

async fn enrol_again(id: &Identity) -> Device {
    let (serial, uri) = id.enable_mfa(ACCOUNT, "alice").await.unwrap();
    let b32 = uri
        .split("secret=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    Device {
        serial,
        secret: base32_decode(b32),
    }
}

fn root() -> Arc<RootKey> {
    Arc::new(RootKey::from_hex(&"5a".repeat(32)).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_mfa_codes_lock_the_device_on_every_node_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("catalog.db").display());
    let a = Identity::new(Catalog::open(&url).await.unwrap(), root());
    let b = Identity::new(Catalog::open(&url).await.unwrap(), root());
    lockout_is_shared(&a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_mfa_codes_lock_the_device_on_every_node_postgres() {
    let pg = catalog::pgtest::TempPostgres::start().expect("start PostgreSQL for the test");
    let a = Identity::new(Catalog::open(&pg.url).await.unwrap(), root());
    let b = Identity::new(Catalog::open(&pg.url).await.unwrap(), root());
    lockout_is_shared(&a, &b).await;
}
