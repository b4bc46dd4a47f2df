//! Counters on Redis: one limit, one concurrency cap and one spend total shared by every
//! replica. Each operation is one atomic script or command.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::Script;

use crate::{Admission, Counters, Rate, Result};

/// The GCRA step of [`crate::gcra`], run inside Redis so that concurrent replicas see one
/// bucket. Time is Redis's own clock (`TIME`), so replicas with skewed clocks agree. Lua
/// numbers are doubles, so times are kept in microseconds (exact at today's epoch) with the
/// intervals as fractions. KEYS[1] bucket; ARGV emission_ns, tolerance_ns, cost, force.
/// Returns {allowed, retry_after_us, remaining}.
const GCRA_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local emission = tonumber(ARGV[1]) / 1000
local tolerance = tonumber(ARGV[2]) / 1000
local cost = tonumber(ARGV[3])
local force = ARGV[4] == '1'
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + emission * cost
if new_tat < now then new_tat = now end
local allow_at = new_tat - (tolerance + emission)
local function remaining(x)
  local r = math.floor(((tolerance + emission) - (x - now)) / emission + 1e-9)
  if r < 0 then r = 0 end
  return r
end
if force or cost <= 0 or allow_at <= now then
  local ttl_ms = math.ceil((new_tat - now) / 1000) + 1000
  redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', ttl_ms)
  return {1, 0, remaining(new_tat)}
end
return {0, math.ceil(allow_at - now), remaining(tat)}
";

/// Add to a total, seeding it first when it does not exist. KEYS[1]; ARGV amount, ttl_ms, seed.
const ADD_LUA: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[2])
end
return redis.call('INCRBY', KEYS[1], ARGV[1])
";

/// Take a concurrency slot. KEYS[1]; ARGV max, lease_ms.
const ENTER_LUA: &str = r"
local n = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if n > tonumber(ARGV[1]) then
  redis.call('DECR', KEYS[1])
  return 0
end
return 1
";

/// Give a slot back, never below zero.
const LEAVE_LUA: &str = r"
local n = redis.call('DECR', KEYS[1])
if n <= 0 then redis.call('DEL', KEYS[1]) end
return n
";

/// Counters in Redis, under a key prefix (so several gateways or tests can share a server).
#[derive(Clone)]
pub struct RedisCounters {
    conn: ConnectionManager,
    prefix: String,
    gcra: Script,
    add: Script,
    enter: Script,
    leave: Script,
}

impl std::fmt::Debug for RedisCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCounters")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisCounters {
    /// Connect to `url` (`redis://host:port/db`); every key is put under `prefix`.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self> {
        Ok(Self {
            conn: connect(url).await?,
            prefix: prefix.to_string(),
            gcra: Script::new(GCRA_LUA),
            add: Script::new(ADD_LUA),
            enter: Script::new(ENTER_LUA),
            leave: Script::new(LEAVE_LUA),
        })
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

/// A connection to `url` that reconnects by itself; gives up after 5 s for the first one.
pub(crate) async fn connect(url: &str) -> Result<ConnectionManager> {
    let client = redis::Client::open(url)?;
    tokio::time::timeout(Duration::from_secs(5), ConnectionManager::new(client))
        .await
        .map_err(|_| crate::StoreError::Unavailable(format!("redis at {url}: connect timed out")))?
        .map_err(Into::into)
}

/// Milliseconds for a Redis `PX` / `PEXPIRE` argument (at least 1: Redis refuses 0).
pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[async_trait]
impl Counters for RedisCounters {
    async fn take(&self, key: &str, rate: Rate, cost: i64, force: bool) -> Result<Admission> {
        let mut conn = self.conn.clone();
        let (allowed, retry_us, remaining): (i64, u64, u64) = self
            .gcra
            .key(self.key(key))
            .arg(rate.emission_ns())
            .arg(rate.tolerance_ns())
            .arg(cost)
            .arg(if force { "1" } else { "0" })
            .invoke_async(&mut conn)
            .await?;
        Ok(Admission {
            allowed: allowed == 1,
            retry_after: Duration::from_micros(retry_us),
            remaining,
        })
    }

    async fn enter(&self, key: &str, max: u32, lease: Duration) -> Result<bool> {
        let mut conn = self.conn.clone();
        let ok: i64 = self
            .enter
            .key(self.key(key))
            .arg(max)
            .arg(ms(lease))
            .invoke_async(&mut conn)
            .await?;
        Ok(ok == 1)
    }

    async fn leave(&self, key: &str) -> Result<()> {
        let mut conn = self.conn.clone();
        let _: i64 = self
            .leave
            .key(self.key(key))
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn add(&self, key: &str, amount: i64, ttl: Duration, seed: i64) -> Result<i64> {
        let mut conn = self.conn.clone();
        Ok(self
            .add
            .key(self.key(key))
            .arg(amount)
            .arg(ms(ttl))
            .arg(seed)
            .invoke_async(&mut conn)
            .await?)
    }

    async fn get(&self, key: &str) -> Result<Option<i64>> {
        let mut conn = self.conn.clone();
        Ok(redis::cmd("GET")
            .arg(self.key(key))
            .query_async(&mut conn)
            .await?)
    }
}
