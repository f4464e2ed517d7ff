//! Small text helpers for showing untrusted bytes and digests.

/// Lowercase hexadecimal of `bytes` (digests in manifests and messages).
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Untrusted bytes as printable ASCII: every other byte becomes `?` (a label or creator
/// field from an image must not put control characters on a terminal or into a log).
#[must_use]
pub fn printable(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&c| {
            if c.is_ascii_graphic() || c == b' ' {
                c as char
            } else {
                '?'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_hex_and_printable() {
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
        assert_eq!(printable(b"a\x1b[31mb c\n"), "a?[31mb c?");
    }
}
