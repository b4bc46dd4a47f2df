//! In-process counters: the embedded default for one machine.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::{gcra, Admission, Counters, Rate, Result};

/// Counters held in this process: GCRA buckets, concurrency slots and totals. Lost on restart
/// — spend totals are re-seeded from the usage records.
#[derive(Debug)]
pub struct MemoryCounters {
    origin: Instant,
    buckets: Mutex<HashMap<String, u64>>,
    slots: Mutex<HashMap<String, u32>>,
    totals: Mutex<HashMap<String, (i64, Instant)>>,
}

impl Default for MemoryCounters {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            buckets: Mutex::default(),
            slots: Mutex::default(),
            totals: Mutex::default(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemoryCounters {
    /// Nanoseconds on this process's monotonic clock (never 0, so 0 can mean "no state").
    fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }

    /// Take from a bucket synchronously (the hot path does not need to await anything).
    pub fn take_now(&self, key: &str, rate: Rate, cost: i64, force: bool) -> Admission {
        let now = self.now_ns();
        let mut buckets = lock(&self.buckets);
        let tat = buckets.get(key).copied().unwrap_or(0);
        let (admission, new_tat) = gcra(rate, tat, now, cost, force);
        if new_tat != tat {
            buckets.insert(key.to_string(), new_tat);
        }
        // Forget buckets that have drained, so the map does not grow with every key ever seen.
        if buckets.len() > 100_000 {
            buckets.retain(|_, t| *t > now);
        }
        admission
    }
}

#[async_trait]
impl Counters for MemoryCounters {
    async fn take(&self, key: &str, rate: Rate, cost: i64, force: bool) -> Result<Admission> {
        Ok(self.take_now(key, rate, cost, force))
    }

    async fn enter(&self, key: &str, max: u32, _lease: Duration) -> Result<bool> {
        let mut slots = lock(&self.slots);
        let n = slots.entry(key.to_string()).or_insert(0);
        if *n >= max {
            return Ok(false);
        }
        *n += 1;
        Ok(true)
    }

    async fn leave(&self, key: &str) -> Result<()> {
        let mut slots = lock(&self.slots);
        if let Some(n) = slots.get_mut(key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                slots.remove(key);
            }
        }
        Ok(())
    }

    async fn add(&self, key: &str, amount: i64, ttl: Duration, seed: i64) -> Result<i64> {
        let now = Instant::now();
        let mut totals = lock(&self.totals);
        let entry = totals
            .entry(key.to_string())
            .and_modify(|(v, expires)| {
                if *expires <= now {
                    *v = seed;
                    *expires = now + ttl;
                }
            })
            .or_insert((seed, now + ttl));
        entry.0 = entry.0.saturating_add(amount);
        Ok(entry.0)
    }

    async fn get(&self, key: &str) -> Result<Option<i64>> {
        let now = Instant::now();
        Ok(lock(&self.totals)
            .get(key)
            .filter(|(_, expires)| *expires > now)
            .map(|(v, _)| *v))
    }
}
