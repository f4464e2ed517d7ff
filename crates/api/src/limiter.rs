//! Per-principal request rates, shared by every service of the endpoint (the Query and JSON
//! services in `server`, S3 in `s3::auth`).

use std::sync::atomic::{AtomicU64, Ordering};

/// Per-principal request limits: `rate` requests a second, bursts of `2 × rate`. In memory
/// (token buckets) for a single process on SQLite; shared through the catalog (counts per
/// two-second window: at most `2 × rate` in each) when the catalog is PostgreSQL, so every
/// node of a deployment enforces one limit.
#[derive(Debug)]
pub struct Limiter {
    rate: f64,
    buckets: std::sync::Mutex<std::collections::HashMap<String, (f64, std::time::Instant)>>,
    shared: Option<catalog::Catalog>,
    pruned: AtomicU64,
}

/// Length of a shared window.
const WINDOW_MS: i64 = 2000;

impl Limiter {
    /// A limiter of `rate` requests a second per principal (0: no limit), in memory.
    #[must_use]
    pub fn new(rate: u32) -> Self {
        Limiter {
            rate: f64::from(rate),
            buckets: std::sync::Mutex::default(),
            shared: None,
            pruned: AtomicU64::new(0),
        }
    }

    /// A limiter whose counts live in `catalog`, shared with every process using it.
    #[must_use]
    pub fn shared(rate: u32, catalog: catalog::Catalog) -> Self {
        Limiter {
            shared: Some(catalog),
            ..Limiter::new(rate)
        }
    }

    /// Counts a request of `who`; false when it is over the limit.
    pub async fn allow_async(&self, who: &str) -> bool {
        let Some(cat) = &self.shared else {
            return self.allow(who);
        };
        if self.rate <= 0.0 {
            return true;
        }
        let window = catalog::now_ms() / WINDOW_MS * WINDOW_MS;
        let w = u64::try_from(window).unwrap_or(0);
        if self.pruned.swap(w, Ordering::Relaxed) != w
            && let Err(e) = cat.rate_prune(window - 2 * WINDOW_MS).await
        {
            tracing::warn!(error = %e, "rate limits: old windows not pruned");
        }
        match cat.rate_hit(who, window).await {
            // 2 × rate in a two-second window: `rate` a second on average, bursts of 2 × rate.
            #[allow(clippy::cast_precision_loss)]
            Ok(n) => (n as f64) <= 2.0 * self.rate,
            Err(e) => {
                // Fail open: the catalog being slow must not take the API down with it.
                tracing::warn!(error = %e, "rate limits: shared count unavailable");
                true
            }
        }
    }

    /// Takes a token for `who` from its in-memory bucket; false when it is empty.
    pub fn allow(&self, who: &str) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let Ok(mut b) = self.buckets.lock() else {
            return true;
        };
        if b.len() > 100_000 {
            b.clear();
        }
        let now = std::time::Instant::now();
        let burst = self.rate * 2.0;
        let e = b.entry(who.to_string()).or_insert((burst, now));
        e.0 = (e.0 + now.duration_since(e.1).as_secs_f64() * self.rate).min(burst);
        e.1 = now;
        if e.0 >= 1.0 {
            e.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Limiter;

    #[test]
    fn buckets_refill_and_are_per_principal() {
        let l = Limiter::new(5);
        let granted = (0..20).filter(|_| l.allow("a")).count();
        assert_eq!(granted, 10, "a burst of twice the rate");
        assert!(l.allow("b"));
        std::thread::sleep(std::time::Duration::from_millis(450));
        assert!(l.allow("a"), "refilled at the rate");
        assert!((0..100).all(|_| Limiter::new(0).allow("x")));
    }
}
