//! Console passwords: the rules a new password must meet, and its hash — argon2id (RFC
//! 9106) with a random 16-byte salt and the cost OWASP recommends for it (19 MiB, two
//! passes, one lane), kept as a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`), so a
//! stronger cost later still verifies the old hashes. Hashing and checking run on a
//! blocking thread (tens of milliseconds of memory-hard work each).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use zeroize::Zeroizing;

use crate::error::ApiError;

/// Shortest password accepted.
pub const MIN_LEN: usize = 8;
/// Longest password accepted (IAM's limit).
pub const MAX_LEN: usize = 128;

fn hasher() -> Argon2<'static> {
    // The parameters are constants within argon2's bounds.
    let params = Params::new(19_456, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// IAM's `PasswordPolicyViolation` unless `password` is 8 to 128 printable characters
/// with at least three of: lower case, upper case, digits, symbols.
pub fn check_policy(password: &str) -> Result<(), ApiError> {
    let n = password.chars().count();
    let kinds = [
        password.chars().any(|c| c.is_lowercase()),
        password.chars().any(|c| c.is_uppercase()),
        password.chars().any(|c| c.is_ascii_digit()),
        password
            .chars()
            .any(|c| !c.is_alphanumeric() && !c.is_whitespace()),
    ]
    .iter()
    .filter(|k| **k)
    .count();
    let printable = !password.chars().any(char::is_control);
    if (MIN_LEN..=MAX_LEN).contains(&n) && kinds >= 3 && printable {
        Ok(())
    } else {
        Err(ApiError::client(
            "PasswordPolicyViolation",
            format!(
                "Password does not conform to the account password policy: {MIN_LEN} to {MAX_LEN} printable characters, with at least three of lower case letters, upper case letters, digits and symbols"
            ),
        ))
    }
}

/// Hashes computed at once, at most: each takes 19 MiB, and sign-ins with made-up names
/// (checked against a decoy) must not be able to take the memory of the host.
const AT_ONCE: usize = 4;

fn gate() -> &'static tokio::sync::Semaphore {
    static GATE: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    GATE.get_or_init(|| tokio::sync::Semaphore::new(AT_ONCE))
}

/// The PHC string of `password`'s argon2id hash under a fresh salt.
pub async fn hash(password: Zeroizing<String>) -> Result<String, ApiError> {
    let _turn = gate()
        .acquire()
        .await
        .map_err(|e| ApiError::internal("password hash", &e))?;
    tokio::task::spawn_blocking(move || {
        let mut salt = [0u8; 16];
        kms::aead::random(&mut salt);
        let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
        hasher()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| ApiError::internal("password hash", &e))?
    .map_err(|e| ApiError::internal("password hash", &e))
}

/// A hash of a password nobody has, checked when the user has no login profile so that a
/// sign-in takes as long for an unknown user as for a wrong password.
const DECOY: &str = "$argon2id$v=19$m=19456,t=2,p=1$dm1pZS1kZWNveS1zYWx0$W0eOq4VjSg0HUzN3r5tIAW5lUjq4EiDw3m2W0YJmQWs";

/// Whether `password` matches the PHC string `stored` (`None`: check against a decoy and
/// answer false). A malformed stored hash never matches.
pub async fn verify(password: Zeroizing<String>, stored: Option<String>) -> bool {
    let Ok(_turn) = gate().acquire().await else {
        return false;
    };
    tokio::task::spawn_blocking(move || {
        let decoy = stored.is_none();
        let s = stored.unwrap_or_else(|| DECOY.to_string());
        let Ok(h) = PasswordHash::new(&s) else {
            return false;
        };
        hasher().verify_password(password.as_bytes(), &h).is_ok() && !decoy
    })
    .await
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn z(s: &str) -> Zeroizing<String> {
        Zeroizing::new(s.to_string())
    }

    #[test]
    fn the_policy_wants_length_and_three_kinds() {
        for ok in ["Correct-horse1", "abcDEF123", "aB3$aB3$", "pässWORT-9"] {
            assert!(check_policy(ok).is_ok(), "{ok}");
        }
        for bad in [
            "short1A",
            "alllowercase",
            "ALLUPPER123",
            "lower123456",
            "tab\tTAB123",
            &"aA1".repeat(43),
        ] {
            let e = check_policy(bad).unwrap_err();
            assert_eq!(e.code, "PasswordPolicyViolation", "{bad}");
        }
    }

    #[tokio::test]
    async fn hashes_are_argon2id_salted_and_verify_only_their_password() {
        let a = hash(z("Correct-horse1")).await.unwrap();
        let b = hash(z("Correct-horse1")).await.unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert_ne!(a, b, "a fresh salt each time");
        assert!(!a.contains("Correct-horse1"));
        assert!(verify(z("Correct-horse1"), Some(a.clone())).await);
        assert!(!verify(z("correct-horse1"), Some(a)).await);
        assert!(
            !verify(z("anything"), None).await,
            "the decoy matches nothing"
        );
        assert!(!verify(z("x"), Some("not a hash".into())).await);
        assert!(
            PasswordHash::new(DECOY).is_ok(),
            "the decoy is a well-formed hash"
        );
    }
}
