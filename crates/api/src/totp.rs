//! Time-based one-time passwords (RFC 6238 over RFC 4226 HOTP, HMAC-SHA1, 30-second steps,
//! 6 digits), as authenticator apps make them, and the `otpauth://` URI that enrols one.

use aws_lc_rs::{constant_time, hmac};

/// Seconds per step.
pub const STEP: u64 = 30;
/// Digits per code.
pub const DIGITS: u32 = 6;

const B32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32 without padding.
#[must_use]
pub fn base32(data: &[u8]) -> String {
    let mut out = String::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in data {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(B32[((acc >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(B32[((acc << (5 - bits)) & 31) as usize]));
    }
    out
}

/// The HOTP value of `secret` at `counter`, `digits` long (RFC 4226 §5.3).
#[must_use]
pub fn hotp(secret: &[u8], counter: u64, digits: u32) -> u32 {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let mac = hmac::sign(&key, &counter.to_be_bytes());
    let h = mac.as_ref();
    let off = usize::from(h[h.len() - 1] & 0x0f);
    let bin = (u32::from(h[off] & 0x7f) << 24)
        | (u32::from(h[off + 1]) << 16)
        | (u32::from(h[off + 2]) << 8)
        | u32::from(h[off + 3]);
    bin % 10u32.pow(digits)
}

/// The code of `secret` at Unix time `now`.
#[must_use]
pub fn code(secret: &[u8], now: u64) -> String {
    format!(
        "{:0width$}",
        hotp(secret, now / STEP, DIGITS),
        width = DIGITS as usize
    )
}

/// Checks `given` against the codes of the step of `now` and its two neighbours (clock
/// drift); returns the step it matched, which the caller must not accept again (replay).
#[must_use]
pub fn verify(secret: &[u8], given: &str, now: u64, after_step: Option<u64>) -> Option<u64> {
    if given.len() != DIGITS as usize || !given.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let step = now / STEP;
    let mut found = None;
    for s in [step.saturating_sub(1), step, step + 1] {
        let want = format!(
            "{:0width$}",
            hotp(secret, s, DIGITS),
            width = DIGITS as usize
        );
        // Every candidate is compared, so the time taken does not say which one matched.
        if constant_time::verify_slices_are_equal(want.as_bytes(), given.as_bytes()).is_ok()
            && after_step.is_none_or(|a| s > a)
        {
            found = Some(s);
        }
    }
    found
}

/// The `otpauth://totp/…` URI an authenticator app enrols from.
#[must_use]
pub fn uri(issuer: &str, account: &str, secret: &[u8]) -> String {
    let enc = |s: &str| crate::sigv4::uri_encode(s, false);
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP}",
        enc(issuer),
        enc(account),
        base32(secret),
        enc(issuer)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_6238_and_4226_vectors() {
        // RFC 6238 Appendix B, SHA-1, 8 digits.
        let secret = b"12345678901234567890";
        for (t, want) in [
            (59u64, 94_287_082u32),
            (1_111_111_109, 7_081_804),
            (1_111_111_111, 14_050_471),
            (1_234_567_890, 89_005_924),
            (2_000_000_000, 69_279_037),
            (20_000_000_000, 65_353_130),
        ] {
            assert_eq!(hotp(secret, t / STEP, 8), want, "T={t}");
        }
        // RFC 4226 Appendix D, 6 digits.
        let d = [
            755_224u32, 287_082, 359_152, 969_429, 338_314, 254_676, 287_922, 162_583, 399_871,
            520_489,
        ];
        for (c, want) in d.iter().enumerate() {
            assert_eq!(hotp(secret, c as u64, 6), *want);
        }
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
    }

    #[test]
    fn codes_are_accepted_once_and_near_their_time() {
        let s = b"vmie test secret 123";
        let now = 1_795_000_000;
        let c = code(s, now);
        let step = verify(s, &c, now, None).unwrap();
        assert_eq!(
            verify(s, &c, now + 30, None),
            Some(step),
            "one step of drift"
        );
        assert_eq!(verify(s, &c, now + 120, None), None, "too late");
        assert_eq!(verify(s, &c, now, Some(step)), None, "no replay");
        assert_eq!(verify(s, "12345", now, None), None);
        assert_eq!(verify(s, "abcdef", now, None), None);
        assert!(
            uri("vmie", "alice@111122223333", s)
                .starts_with("otpauth://totp/vmie:alice%40111122223333?secret=")
        );
    }
}
