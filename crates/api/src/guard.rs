//! The sensitive-data guard on free-form fields (descriptions, tag keys and values): finds
//! what should not be stored in a catalog that many people read — AWS access key ids and
//! secret keys, private key blocks, payment card numbers (Luhn-checked), US social security
//! numbers and UK national insurance numbers — and, per deployment, flags them (`warn`, the
//! default: accepted, reported without the value) or refuses them (`reject`:
//! `InvalidParameterValue` naming the field, never the value).

/// What the guard found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Finding {
    /// An AWS access key id (`AKIA…`, `ASIA…`).
    AccessKeyId,
    /// Something shaped like an AWS secret access key.
    SecretKey,
    /// A PEM private key block.
    PrivateKey,
    /// A payment card number that passes the Luhn check.
    PaymentCard,
    /// A US social security number.
    NationalIdUs,
    /// A UK national insurance number.
    NationalIdUk,
}

impl Finding {
    /// In words.
    #[must_use]
    pub fn describe(self) -> &'static str {
        match self {
            Finding::AccessKeyId => "an AWS access key id",
            Finding::SecretKey => "what looks like a secret access key",
            Finding::PrivateKey => "a private key",
            Finding::PaymentCard => "a payment card number",
            Finding::NationalIdUs => "a US social security number",
            Finding::NationalIdUk => "a UK national insurance number",
        }
    }
}

/// What to do with findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Accept, and record that the field held sensitive data (without the value).
    #[default]
    Warn,
    /// Refuse the request.
    Reject,
}

fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(*d);
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// Runs of digits allowing single spaces or dashes between them, as cards are written.
fn card_numbers(t: &[u8]) -> bool {
    let mut i = 0;
    while i < t.len() {
        if !t[i].is_ascii_digit() || (i > 0 && t[i - 1].is_ascii_alphanumeric()) {
            i += 1;
            continue;
        }
        let mut digits = Vec::new();
        let mut j = i;
        while j < t.len() {
            if t[j].is_ascii_digit() {
                digits.push(t[j] - b'0');
                j += 1;
            } else if (t[j] == b' ' || t[j] == b'-') && t.get(j + 1).is_some_and(u8::is_ascii_digit)
            {
                j += 1;
            } else {
                break;
            }
            if digits.len() > 19 {
                break;
            }
        }
        if (13..=19).contains(&digits.len()) && luhn(&digits) && digits.iter().any(|d| *d != 0) {
            return true;
        }
        i = j.max(i + 1);
    }
    false
}

fn words(t: &str) -> impl Iterator<Item = &str> {
    t.split(|c: char| !(c.is_ascii_alphanumeric() || c == '/' || c == '+' || c == '=' || c == '-'))
        .filter(|w| !w.is_empty())
}

fn ssn(w: &str) -> bool {
    let b = w.as_bytes();
    if b.len() != 11 || b[3] != b'-' || b[6] != b'-' {
        return false;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        w.get(r)?.bytes().try_fold(0u32, |a, c| {
            c.is_ascii_digit().then(|| a * 10 + u32::from(c - b'0'))
        })
    };
    match (num(0..3), num(4..6), num(7..11)) {
        (Some(a), Some(g), Some(s)) => a != 0 && a != 666 && a < 900 && g != 0 && s != 0,
        _ => false,
    }
}

fn nino(w: &str) -> bool {
    let b = w.as_bytes();
    b.len() == 9
        && b[..2]
            .iter()
            .all(|c| c.is_ascii_uppercase() && !b"DFIQUV".contains(c))
        && b[2..8].iter().all(u8::is_ascii_digit)
        && (b'A'..=b'D').contains(&b[8])
}

/// What `text` holds.
#[must_use]
pub fn scan(text: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut add = |f: Finding| {
        if !out.contains(&f) {
            out.push(f);
        }
    };
    if text.contains("-----BEGIN") && text.contains("PRIVATE KEY") {
        add(Finding::PrivateKey);
    }
    if card_numbers(text.as_bytes()) {
        add(Finding::PaymentCard);
    }
    for w in words(text) {
        let b = w.as_bytes();
        if b.len() == 20
            && ["AKIA", "ASIA", "AIDA", "AROA", "AIPA", "ANPA"]
                .iter()
                .any(|p| w.starts_with(p))
            && b.iter()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        {
            add(Finding::AccessKeyId);
        }
        if b.len() == 40
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || *c == b'/' || *c == b'+')
            && b.iter().any(u8::is_ascii_lowercase)
            && b.iter().any(u8::is_ascii_uppercase)
            && b.iter().any(u8::is_ascii_digit)
        {
            add(Finding::SecretKey);
        }
        if ssn(w) {
            add(Finding::NationalIdUs);
        }
        if nino(w) {
            add(Finding::NationalIdUk);
        }
    }
    out
}

/// The free-form fields of a request's parameters: descriptions and tag keys and values.
#[must_use]
pub fn free_form(name: &str) -> bool {
    name.ends_with("Description")
        || (name.contains("Tag.") && (name.ends_with(".Value") || name.ends_with(".Key")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_what_it_should_and_not_what_it_should_not() {
        for (text, want) in [
            ("key AKIAIOSFODNN7EXAMPLE in a note", Finding::AccessKeyId),
            (
                "secret wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY here",
                Finding::SecretKey,
            ),
            (
                "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n-----END OPENSSH PRIVATE KEY-----",
                Finding::PrivateKey,
            ),
            ("card 4111 1111 1111 1111 exp 12/29", Finding::PaymentCard),
            ("card 5500-0000-0000-0004", Finding::PaymentCard),
            ("ssn 123-45-6789", Finding::NationalIdUs),
            ("NI number QQ123456C? no: AB123456C", Finding::NationalIdUk),
        ] {
            assert!(scan(text).contains(&want), "{text}: {:?}", scan(text));
        }
        for clean in [
            "web server image, built 2026-11-23",
            "order 4111 1111 1111 1112",
            "ssn 000-12-3456 or 666-12-3456",
            "import-ami-0123456789abcdef0 snap-0123456789abcdef0",
            "phone +44 20 7946 0958",
            "version 1.2.3-45-6789",
        ] {
            assert!(scan(clean).is_empty(), "{clean}: {:?}", scan(clean));
        }
        assert!(free_form("Description") && free_form("DiskContainer.1.Description"));
        assert!(free_form("TagSpecification.1.Tag.2.Value") && free_form("Tag.1.Key"));
        assert!(!free_form("DiskContainer.1.UserBucket.S3Key"));
    }

    proptest::proptest! {
        #[test]
        fn any_text_is_scanned(t in "\\PC{0,300}") {
            let _ = scan(&t);
        }
    }
}
