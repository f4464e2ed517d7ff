//! The address guard's table: which IP addresses an image URL may not reach.
//!
//! Built from IANA's special-purpose address registries (IPv4: RFC 6890 and its updates;
//! IPv6: the same registry, plus the IPv6 address space registry), so that nothing but
//! ordinary, globally reachable unicast is fetched from unless an operator allow-lists it:
//!
//! - IPv4: every special-purpose block that is not globally reachable (this network,
//!   private, shared/CGNAT, loopback, link-local with the cloud metadata address, IETF
//!   protocol assignments, documentation, benchmarking, the deprecated 6to4 relay anycast,
//!   reserved `240/4`, limited broadcast) and multicast;
//! - IPv6: anything outside global unicast `2000::/3` is refused as a whole (loopback,
//!   unspecified, IPv4-compatible `::a.b.c.d`, SIIT `::ffff:0:0:0/96`, discard-only
//!   `100::/64`, local-use NAT64 `64:ff9b:1::/48`, SRv6 `5f00::/16`, unique local, link-local,
//!   site-local `fec0::/10`, multicast, and whatever the IETF reserves there later) — except
//!   the two prefixes that carry an IPv4 address to a real IPv4 host, which are judged by
//!   that address: IPv4-mapped `::ffff:a.b.c.d` and NAT64 `64:ff9b::/96`;
//! - inside `2000::/3`: the IETF protocol assignments `2001::/23` (Teredo `2001::/32`, whose
//!   tunnelled client address vmie cannot check, benchmarking, ORCHID, anycast services),
//!   documentation `2001:db8::/32` and `3fff::/20`, and 6to4 `2002::/16`, judged by the IPv4
//!   address it embeds.
//!
//! [`blocked_reason`] gives the reason an address is refused (`None`: it may be fetched
//! from); [`embedded_v4`] the IPv4 address an IPv6 one stands for, when it stands for one.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IPv4 blocks refused: (network, prefix length, reason).
pub const V4_BLOCKED: &[(Ipv4Addr, u8, &str)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8, "unspecified (this network)"),
    (Ipv4Addr::new(10, 0, 0, 0), 8, "private"),
    (
        Ipv4Addr::new(100, 64, 0, 0),
        10,
        "shared address space (CGNAT)",
    ),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "loopback"),
    (
        Ipv4Addr::new(169, 254, 0, 0),
        16,
        "link-local (cloud metadata)",
    ),
    (Ipv4Addr::new(172, 16, 0, 0), 12, "private"),
    (
        Ipv4Addr::new(192, 0, 0, 0),
        24,
        "IETF protocol assignment (192.0.0.0/24)",
    ),
    (
        Ipv4Addr::new(192, 0, 2, 0),
        24,
        "documentation (TEST-NET-1)",
    ),
    (
        Ipv4Addr::new(192, 88, 99, 0),
        24,
        "deprecated 6to4 relay anycast",
    ),
    (Ipv4Addr::new(192, 168, 0, 0), 16, "private"),
    (
        Ipv4Addr::new(198, 18, 0, 0),
        15,
        "benchmarking (198.18.0.0/15)",
    ),
    (
        Ipv4Addr::new(198, 51, 100, 0),
        24,
        "documentation (TEST-NET-2)",
    ),
    (
        Ipv4Addr::new(203, 0, 113, 0),
        24,
        "documentation (TEST-NET-3)",
    ),
    (Ipv4Addr::new(224, 0, 0, 0), 4, "multicast"),
    (Ipv4Addr::new(255, 255, 255, 255), 32, "limited broadcast"),
    (Ipv4Addr::new(240, 0, 0, 0), 4, "reserved (240.0.0.0/4)"),
];

/// IPv6 blocks refused inside global unicast `2000::/3`: (network, prefix length, reason).
/// Teredo comes before the rest of `2001::/23` so that it is named.
pub const V6_BLOCKED_GLOBAL: &[(Ipv6Addr, u8, &str)] = &[
    (
        Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0),
        32,
        "Teredo tunnel (2001::/32)",
    ),
    (
        Ipv6Addr::new(0x2001, 0x2, 0, 0, 0, 0, 0, 0),
        48,
        "benchmarking (2001:2::/48)",
    ),
    (
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
        32,
        "documentation (2001:db8::/32)",
    ),
    (
        Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0),
        23,
        "IETF protocol assignment (2001::/23)",
    ),
    (
        Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0),
        20,
        "documentation (3fff::/20)",
    ),
];

/// Named IPv6 blocks outside `2000::/3` (all of which is refused); the names make refusals
/// readable.
pub const V6_NAMED_OUTSIDE: &[(Ipv6Addr, u8, &str)] = &[
    (Ipv6Addr::UNSPECIFIED, 128, "unspecified"),
    (Ipv6Addr::LOCALHOST, 128, "loopback"),
    (
        Ipv6Addr::new(0, 0, 0, 0, 0xffff, 0, 0, 0),
        96,
        "SIIT IPv4-translated (::ffff:0:0:0/96)",
    ),
    (
        Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0),
        96,
        "IPv4-compatible (deprecated ::a.b.c.d)",
    ),
    (
        Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0),
        48,
        "local-use IPv4/IPv6 translation (64:ff9b:1::/48)",
    ),
    (
        Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0),
        64,
        "discard-only (100::/64)",
    ),
    (
        Ipv6Addr::new(0x5f00, 0, 0, 0, 0, 0, 0, 0),
        16,
        "segment routing (5f00::/16)",
    ),
    (
        Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0),
        7,
        "private (unique local)",
    ),
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10, "link-local"),
    (
        Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0),
        10,
        "site-local (deprecated fec0::/10)",
    ),
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8, "multicast"),
];

fn in_v4(ip: Ipv4Addr, net: Ipv4Addr, len: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

fn in_v6(ip: Ipv6Addr, net: Ipv6Addr, len: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    u128::from(ip) & mask == u128::from(net) & mask
}

fn v4_at(bits: u128, shift: u32) -> Ipv4Addr {
    #[allow(clippy::cast_possible_truncation)]
    Ipv4Addr::from((bits >> shift) as u32)
}

/// The IPv4 address `v6` delivers to, when it is one of the forms that carry one to a real
/// IPv4 host: IPv4-mapped `::ffff:a.b.c.d`, NAT64 `64:ff9b::a.b.c.d` and 6to4
/// `2002:AABB:CCDD::/48`.
#[must_use]
pub fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(v6);
    if let Some(v4) = v6.to_ipv4_mapped() {
        Some(v4)
    } else if in_v6(v6, Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96) {
        Some(v4_at(bits, 0))
    } else if in_v6(v6, Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16) {
        Some(v4_at(bits, 80))
    } else {
        None
    }
}

/// Why `ip` may not be fetched from, if it may not.
#[must_use]
pub fn blocked_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => V4_BLOCKED
            .iter()
            .find(|(net, len, _)| in_v4(v4, *net, *len))
            .map(|(_, _, why)| *why),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return blocked_reason(IpAddr::V4(v4));
            }
            if in_v6(v6, Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0), 3) {
                return V6_BLOCKED_GLOBAL
                    .iter()
                    .find(|(net, len, _)| in_v6(v6, *net, *len))
                    .map(|(_, _, why)| *why);
            }
            Some(
                V6_NAMED_OUTSIDE
                    .iter()
                    .find(|(net, len, _)| in_v6(v6, *net, *len))
                    .map_or(
                        "reserved (outside global unicast 2000::/3)",
                        |(_, _, why)| *why,
                    ),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The guard's verdict, through the function the URL checks call.
    fn why(s: &str) -> Option<&'static str> {
        crate::source::blocked_reason(s.parse().unwrap())
    }

    #[test]
    fn every_ipv4_block_is_refused_at_both_ends_and_inside() {
        for (net, len, reason) in V4_BLOCKED {
            let first = u32::from(*net);
            let last = first | u32::MAX.checked_shr(u32::from(*len)).unwrap_or(0);
            for a in [first, last] {
                let ip = Ipv4Addr::from(a);
                assert!(blocked_reason(IpAddr::V4(ip)).is_some(), "{ip} ({reason})");
            }
            let mid = Ipv4Addr::from(first + (last - first) / 2);
            assert_eq!(blocked_reason(IpAddr::V4(mid)), Some(*reason), "{mid}");
        }
    }

    #[test]
    fn every_ipv6_block_is_refused() {
        for (net, len, reason) in V6_BLOCKED_GLOBAL.iter().chain(V6_NAMED_OUTSIDE) {
            let first = u128::from(*net);
            let last = first | u128::MAX.checked_shr(u32::from(*len)).unwrap_or(0);
            for a in [first, last] {
                let ip = Ipv6Addr::from(a);
                let got = blocked_reason(IpAddr::V6(ip));
                assert!(got.is_some(), "{ip} ({reason}) is not refused");
            }
        }
    }

    #[test]
    fn the_ranges_issue_17_named_are_refused() {
        for (addr, want) in [
            // IPv4-compatible ::a.b.c.d, even when it names a public address.
            ("::7f00:1", "IPv4-compatible"),
            ("::8.8.8.8", "IPv4-compatible"),
            // 6to4 of a private / loopback / metadata address.
            ("2002:0a00:0001::1", "private"),
            ("2002:7f00:0001::", "loopback"),
            ("2002:a9fe:a9fe::1", "link-local"),
            // SIIT ::ffff:0:a.b.c.d.
            ("::ffff:0:7f00:1", "SIIT"),
            ("::ffff:0:a9fe:a9fe", "SIIT"),
            // Teredo, whatever it embeds.
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
            ("2001::", "Teredo"),
            ("fec0::1", "site-local"),
            ("feff:ffff::1", "site-local"),
            ("192.0.0.1", "IETF protocol assignment"),
            ("192.0.0.170", "IETF protocol assignment"),
            ("198.18.0.1", "benchmarking"),
            ("198.19.255.255", "benchmarking"),
        ] {
            let got = why(addr).unwrap_or_else(|| panic!("{addr} is not refused"));
            assert!(got.contains(want), "{addr}: {got}");
        }
    }

    #[test]
    fn the_rest_of_the_special_purpose_registries_is_refused() {
        for (addr, want) in [
            ("0.1.2.3", "this network"),
            ("10.255.0.1", "private"),
            ("100.64.0.1", "CGNAT"),
            ("100.127.255.254", "CGNAT"),
            ("127.1.2.3", "loopback"),
            ("169.254.169.254", "metadata"),
            ("172.31.0.1", "private"),
            ("192.0.2.55", "TEST-NET-1"),
            ("192.88.99.1", "6to4 relay"),
            ("192.168.1.1", "private"),
            ("198.51.100.7", "TEST-NET-2"),
            ("203.0.113.9", "TEST-NET-3"),
            ("224.0.0.251", "multicast"),
            ("239.255.255.250", "multicast"),
            ("240.0.0.1", "reserved"),
            ("254.1.1.1", "reserved"),
            ("255.255.255.255", "broadcast"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("64:ff9b::10.0.0.1", "private"),
            ("64:ff9b:1::8.8.8.8", "local-use"),
            ("100::1", "discard-only"),
            ("100::ffff:ffff:ffff:ffff", "discard-only"),
            ("100:0:0:1::1", "reserved"),
            ("5f00::1", "segment routing"),
            ("fc00::1", "unique local"),
            ("fd00:ec2::254", "unique local"),
            ("fe80::1", "link-local"),
            ("ff02::1", "multicast"),
            ("2001:2::1", "benchmarking"),
            ("2001:db8::1", "documentation"),
            ("2001:10::1", "IETF protocol assignment"),
            ("2001:1::1", "IETF protocol assignment"),
            ("3fff::1", "documentation"),
            ("3fff:0fff:ffff::1", "documentation"),
            ("4000::1", "reserved"),
            ("e000::1", "reserved"),
        ] {
            let got = why(addr).unwrap_or_else(|| panic!("{addr} is not refused"));
            assert!(got.contains(want), "{addr}: {got}");
        }
    }

    #[test]
    fn ordinary_global_unicast_is_fetched_from() {
        for addr in [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.0",
            "172.32.0.1",
            "192.0.1.255",
            "192.0.3.1",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "2606:4700::1111",
            "2a00:1450:4001::200e",
            "2001:200::1",
            "2620:4f:8000::1",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
            "2002:0808:0808::1",
            "3fff:1000::1",
        ] {
            assert_eq!(why(addr), None, "{addr}");
        }
    }

    #[test]
    fn embedded_addresses_are_read_from_their_place() {
        let e = |s: &str| embedded_v4(s.parse().unwrap());
        assert_eq!(e("2002:c000:0204::1"), Some(Ipv4Addr::new(192, 0, 2, 4)));
        assert_eq!(e("64:ff9b::c000:204"), Some(Ipv4Addr::new(192, 0, 2, 4)));
        assert_eq!(e("::ffff:192.0.2.4"), Some(Ipv4Addr::new(192, 0, 2, 4)));
        assert_eq!(e("2001:db8::1"), None);
        assert_eq!(e("::192.0.2.4"), None);
    }
}
