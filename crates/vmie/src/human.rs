//! Human-readable sizes, as `qemu-img info` prints them.

/// `2 GiB`, `600 MiB`, `1.5 KiB`, `512 B`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut unit = 0usize;
    let mut whole = bytes;
    let mut rem = 0u64;
    while whole >= 1024 && unit < UNITS.len() - 1 {
        rem = whole % 1024;
        whole /= 1024;
        unit += 1;
    }
    if rem == 0 {
        format!("{whole} {}", UNITS[unit])
    } else {
        let tenths = rem * 10 / 1024;
        format!("{whole}.{tenths} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn test_size_units() {
        assert_eq!(super::size(512), "512 B");
        assert_eq!(super::size(2 << 30), "2 GiB");
        assert_eq!(super::size(1536), "1.5 KiB");
    }
}
