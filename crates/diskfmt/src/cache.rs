//! A small, thread-safe cache of metadata tables (L2 tables, grain tables) with a byte budget.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::error::Result;

/// Caches immutable tables keyed by their file offset; evicts oldest-first past the budget.
#[derive(Debug)]
pub struct TableCache<T> {
    inner: Mutex<Inner<T>>,
    budget: usize,
}

#[derive(Debug)]
struct Inner<T> {
    map: HashMap<u64, (Arc<T>, usize)>,
    order: VecDeque<u64>,
    used: usize,
}

impl<T> TableCache<T> {
    /// A cache that holds at most `budget` bytes (at least one table is always kept).
    #[must_use]
    pub fn new(budget: usize) -> Self {
        TableCache {
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                order: VecDeque::new(),
                used: 0,
            }),
            budget,
        }
    }

    /// The table at `key`, loaded with `load` (which returns the table and its size in bytes)
    /// on a miss. The lock is not held while loading.
    pub fn get_or_load(
        &self,
        key: u64,
        load: impl FnOnce() -> Result<(T, usize)>,
    ) -> Result<Arc<T>> {
        if let Some((t, _)) = self.lock().map.get(&key) {
            return Ok(Arc::clone(t));
        }
        let (table, bytes) = load()?;
        let table = Arc::new(table);
        let mut g = self.lock();
        if let Some((t, _)) = g.map.get(&key) {
            return Ok(Arc::clone(t));
        }
        while g.used + bytes > self.budget && !g.order.is_empty() {
            if let Some(old) = g.order.pop_front()
                && let Some((_, b)) = g.map.remove(&old)
            {
                g.used -= b;
            }
        }
        g.map.insert(key, (Arc::clone(&table), bytes));
        g.order.push_back(key);
        g.used += bytes;
        Ok(table)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        // A panic while holding the lock cannot leave the map inconsistent in a way that
        // matters for a cache: recover the guard.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
