//! Shared by every fuzz target: read what the parser exposes, within bounds.

/// Limits small enough that a fuzz run cannot spend long on one input.
pub fn limits() -> diskfmt::Limits {
    diskfmt::Limits {
        max_virtual_size: 1 << 34,
        max_table_size: 16 << 20,
        max_log_size: 16 << 20,
        max_cache_size: 4 << 20,
        ..diskfmt::Limits::default()
    }
}

/// Walks the extent map and reads up to 8 MiB of data and the last bytes of the disk.
pub fn exercise(disk: &dyn diskfmt::Disk) {
    let _ = disk.info();
    let size = disk.virtual_size();
    let mut buf = vec![0u8; 65536];
    if let Ok(extents) = disk.extents(0, size) {
        let mut budget: u64 = 8 << 20;
        for e in extents {
            let mut off = e.offset;
            while off < e.end() && budget > 0 {
                let n = (e.end() - off).min(buf.len() as u64);
                let _ = disk.read_at(&mut buf[..n as usize], off);
                budget = budget.saturating_sub(n);
                off += n;
            }
        }
    }
    let _ = disk.read_at(&mut buf[..7], size.saturating_sub(7));
    let _ = disk.read_at(&mut buf[..7], size.saturating_sub(3));
}
