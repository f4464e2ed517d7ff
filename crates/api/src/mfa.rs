//! Failed MFA codes: back-off and lockout.
//!
//! Each virtual MFA device counts its failed codes in a row in the catalog, so every node of
//! a deployment enforces one count. After failure number `f` the device checks no code
//! before a delay has passed:
//!
//! | failures in a row | next code checked after |
//! |---|---|
//! | 1, 2, 3, 4 | 1, 2, 4, 8 seconds |
//! | 5 ([`LOCKOUT_AFTER`]) | 15 minutes: the device is **locked** |
//! | 6, 7, … | 30 minutes, 1 hour, … doubling, at most 24 hours |
//!
//! A code sent while the device waits is refused without being checked — even the right one
//! — and is not counted. A right code clears the count; so does an administrator (`vmie admin
//! mfa unlock USER`) or re-enrolling the device. Every refusal is an `AccessDenied`
//! `GetSessionToken` record in the activity log, whose message says when the device is
//! locked; `vmie compliance` lists locked devices and recent bursts of failures.
//!
//! With six-digit codes and three accepted per check (one step of drift), a guesser gets 11
//! checks in the first day and one a day after that: about 1 in 1,000 over a year.

/// Failed codes in a row that lock a device.
pub const LOCKOUT_AFTER: i64 = 5;
/// The first lockout.
pub const LOCKOUT_MS: i64 = 15 * 60 * 1000;
/// The longest lockout.
pub const MAX_LOCKOUT_MS: i64 = 24 * 3600 * 1000;
/// Failures in a row, the last within a day, that `vmie compliance` reports as a burst.
pub const BURST: i64 = 3;

/// How long a device waits after its `failures`-th failed code in a row, in milliseconds.
#[must_use]
pub fn delay_ms(failures: i64) -> i64 {
    if failures < 1 {
        0
    } else if failures < LOCKOUT_AFTER {
        1000 << (failures - 1).min(20)
    } else {
        let doublings = u32::try_from(failures - LOCKOUT_AFTER)
            .unwrap_or(u32::MAX)
            .min(16);
        LOCKOUT_MS
            .saturating_mul(1 << doublings)
            .min(MAX_LOCKOUT_MS)
    }
}

/// Whether `failures` in a row lock the device (rather than hold it back a few seconds).
#[must_use]
pub fn locks(failures: i64) -> bool {
    failures >= LOCKOUT_AFTER
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_then_lock_for_at_most_a_day() {
        let d: Vec<i64> = (0..=14).map(delay_ms).collect();
        assert_eq!(
            d[..8],
            [
                0,
                1000,
                2000,
                4000,
                8000,
                LOCKOUT_MS,
                2 * LOCKOUT_MS,
                4 * LOCKOUT_MS
            ]
        );
        assert_eq!(delay_ms(12), MAX_LOCKOUT_MS);
        assert_eq!(delay_ms(i64::MAX), MAX_LOCKOUT_MS);
        assert!(d.windows(2).all(|w| w[0] <= w[1]));
        assert!(!locks(4) && locks(5));
    }
}
