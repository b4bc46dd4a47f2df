//! The response cache's stored answers: opaque bytes under a structured key, each kept for a
//! time. In process (LRU bounded by bytes) on one machine, or in Redis so that every replica
//! shares one cache. The cache layer (in `modelgate-core`) decides what goes in and checks on
//! every hit that the stored request equals the one asked; this module only keeps bytes.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};
use redis::aio::ConnectionManager;
use serde::Serialize;

use crate::redis_counters::ms;
use crate::{now_ms, Result};

/// Where one stored answer lives: its namespace, the model it answered for, the tenant scope
/// (a key or team id, or `global`) and a 128-bit hash of the canonical request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct CacheKey {
    /// A caller-chosen partition (`default` unless the request names one).
    pub namespace: String,
    /// The configured id of the model the request was routed to.
    pub model: String,
    /// Whose answers these are: `key:<id>`, `team:<id>`, `anonymous` or `global`.
    pub scope: String,
    /// The request's hash (serialised as 32 hex digits).
    #[serde(serialize_with = "hex128")]
    pub hash: u128,
}

fn hex128<S: serde::Serializer>(h: &u128, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{h:032x}"))
}

/// Which entries an inspection or invalidation is about; `None` matches anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheFilter {
    /// Only this namespace.
    pub namespace: Option<String>,
    /// Only this model.
    pub model: Option<String>,
    /// Only this scope.
    pub scope: Option<String>,
    /// Only this request hash.
    pub hash: Option<u128>,
}

impl CacheFilter {
    /// Whether `key` is one of the entries this filter names.
    pub fn matches(&self, key: &CacheKey) -> bool {
        self.matches_parts(&key.namespace, &key.model, &key.scope)
            && self.hash.is_none_or(|h| h == key.hash)
    }

    /// Whether entries of this namespace, model and scope can be ones this filter names
    /// (its hash aside).
    pub fn matches_parts(&self, namespace: &str, model: &str, scope: &str) -> bool {
        self.namespace.as_deref().is_none_or(|n| n == namespace)
            && self.model.as_deref().is_none_or(|m| m == model)
            && self.scope.as_deref().is_none_or(|s| s == scope)
    }
}

/// One stored entry, as inspection lists it (never its content).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CacheEntryInfo {
    /// Its key.
    pub key: CacheKey,
    /// Its size in bytes.
    pub bytes: u64,
    /// When the store drops it (Unix milliseconds).
    pub expires_at_ms: i64,
}

/// Stored answers.
#[async_trait]
pub trait CacheStore: Send + Sync + 'static {
    /// The bytes stored under `key`, unless absent or expired.
    async fn get(&self, key: &CacheKey) -> Result<Option<Bytes>>;
    /// Store `value` under `key` for `keep_for` (replacing what was there).
    async fn put(&self, key: &CacheKey, value: Bytes, keep_for: Duration) -> Result<()>;
    /// Store at once, without IO, when the backend can (in process); `false` when the caller
    /// must use [`CacheStore::put`].
    fn put_now(&self, _key: &CacheKey, _value: &Bytes, _keep_for: Duration) -> bool {
        false
    }
    /// Up to `limit` entries matching `filter` (in no particular order).
    async fn entries(&self, filter: &CacheFilter, limit: usize) -> Result<Vec<CacheEntryInfo>>;
    /// Drop every entry matching `filter`; returns how many were dropped.
    async fn remove(&self, filter: &CacheFilter) -> Result<u64>;
}

/// Bytes an entry is charged beyond its value: the key's strings and the bookkeeping.
const ENTRY_OVERHEAD: usize = 96;

fn charge(key: &CacheKey, value: &Bytes) -> usize {
    ENTRY_OVERHEAD + key.namespace.len() + key.model.len() + key.scope.len() + value.len()
}

struct Memory {
    lru: lru::LruCache<CacheKey, (Bytes, i64)>,
    bytes: usize,
}

/// Stored answers in this process: least recently used entries go first once the total size
/// would pass the bound; expired entries are dropped when met.
pub struct MemoryCache {
    max_bytes: usize,
    inner: Mutex<Memory>,
}

impl std::fmt::Debug for MemoryCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryCache")
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

impl MemoryCache {
    /// A cache of at most `max_bytes` (keys, values and bookkeeping counted).
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            inner: Mutex::new(Memory {
                lru: lru::LruCache::unbounded(),
                bytes: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Memory> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.lock().lru.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The lookup without the async wrapper (the hot path awaits nothing).
    pub fn get_now(&self, key: &CacheKey) -> Option<Bytes> {
        let mut m = self.lock();
        let (value, expires) = m.lru.get(key)?;
        if *expires > now_ms() {
            return Some(value.clone());
        }
        if let Some((value, _)) = m.lru.pop(key) {
            m.bytes -= charge(key, &value);
        }
        None
    }

    fn insert(&self, key: &CacheKey, value: Bytes, keep_for: Duration) {
        let size = charge(key, &value);
        if size > self.max_bytes {
            return;
        }
        let expires = now_ms().saturating_add(i64::try_from(ms(keep_for)).unwrap_or(i64::MAX));
        let mut m = self.lock();
        if let Some((old, _)) = m.lru.put(key.clone(), (value, expires)) {
            m.bytes -= charge(key, &old);
        }
        m.bytes += size;
        while m.bytes > self.max_bytes {
            let Some((k, (v, _))) = m.lru.pop_lru() else {
                break;
            };
            m.bytes -= charge(&k, &v);
        }
    }
}

#[async_trait]
impl CacheStore for MemoryCache {
    async fn get(&self, key: &CacheKey) -> Result<Option<Bytes>> {
        Ok(self.get_now(key))
    }

    async fn put(&self, key: &CacheKey, value: Bytes, keep_for: Duration) -> Result<()> {
        self.insert(key, value, keep_for);
        Ok(())
    }

    fn put_now(&self, key: &CacheKey, value: &Bytes, keep_for: Duration) -> bool {
        self.insert(key, value.clone(), keep_for);
        true
    }

    async fn entries(&self, filter: &CacheFilter, limit: usize) -> Result<Vec<CacheEntryInfo>> {
        let now = now_ms();
        Ok(self
            .lock()
            .lru
            .iter()
            .filter(|(k, (_, expires))| *expires > now && filter.matches(k))
            .take(limit)
            .map(|(k, (v, expires))| CacheEntryInfo {
                key: k.clone(),
                bytes: v.len() as u64,
                expires_at_ms: *expires,
            })
            .collect())
    }

    async fn remove(&self, filter: &CacheFilter) -> Result<u64> {
        let mut m = self.lock();
        let doomed: Vec<CacheKey> = m
            .lru
            .iter()
            .filter(|(k, _)| filter.matches(k))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &doomed {
            if let Some((v, _)) = m.lru.pop(k) {
                m.bytes -= charge(k, &v);
            }
        }
        Ok(doomed.len() as u64)
    }
}

/// Characters escaped in a Redis key part: the separator, the glob characters `SCAN MATCH`
/// interprets, and `%` itself — so a filter's pattern can only match what it names.
const KEY_PART: &AsciiSet = &CONTROLS
    .add(b':')
    .add(b'*')
    .add(b'?')
    .add(b'[')
    .add(b']')
    .add(b'\\')
    .add(b'%')
    .add(b' ');

fn part(s: &str) -> String {
    utf8_percent_encode(s, KEY_PART).to_string()
}

fn unpart(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// Stored answers in Redis (`SET … PX`), shared by every replica. Keys are
/// `<prefix>cache:<namespace>:<model>:<scope>:<hash>` with each part escaped, so inspection
/// and invalidation by namespace, model or scope are one `SCAN MATCH` pattern. The semantic
/// vector logs ([`VectorLog`]) are lists at `<prefix>sem:<namespace>:<model>:<scope>:<partition>`.
#[derive(Clone)]
pub struct RedisCache {
    conn: ConnectionManager,
    /// `<prefix>cache:`, before every entry's key.
    prefix: String,
    /// `<prefix>sem:`, before every vector log's key.
    logs: String,
}

impl std::fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisCache {
    /// Connect to `url` (`redis://host:port/db`); every key is put under `prefix`.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self> {
        Ok(Self {
            conn: crate::redis_counters::connect(url).await?,
            prefix: format!("{prefix}cache:"),
            logs: format!("{prefix}sem:"),
        })
    }

    fn key(&self, k: &CacheKey) -> String {
        format!(
            "{}{}:{}:{}:{:032x}",
            self.prefix,
            part(&k.namespace),
            part(&k.model),
            part(&k.scope),
            k.hash
        )
    }

    fn pattern(&self, f: &CacheFilter) -> String {
        let p = |v: &Option<String>| v.as_deref().map_or_else(|| "*".to_string(), part);
        format!(
            "{}{}:{}:{}:{}",
            self.prefix,
            p(&f.namespace),
            p(&f.model),
            p(&f.scope),
            f.hash
                .map_or_else(|| "*".to_string(), |h| format!("{h:032x}"))
        )
    }

    fn parse(&self, redis_key: &str) -> Option<CacheKey> {
        let rest = redis_key.strip_prefix(&self.prefix)?;
        let mut parts = rest.split(':');
        let (ns, model, scope, hash) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        Some(CacheKey {
            namespace: unpart(ns),
            model: unpart(model),
            scope: unpart(scope),
            hash: u128::from_str_radix(hash, 16).ok()?,
        })
    }

    /// One `SCAN MATCH pattern` step from `cursor`: the next cursor (0 at the end) and keys.
    async fn scan_step(&self, cursor: u64, pattern: &str) -> Result<(u64, Vec<String>)> {
        let mut conn = self.conn.clone();
        Ok(redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?)
    }

    /// Every Redis key matching `pattern`, up to `limit`.
    async fn scan(&self, pattern: &str, limit: usize) -> Result<Vec<String>> {
        let (mut cursor, mut keys) = (0, Vec::new());
        loop {
            let (next, batch) = self.scan_step(cursor, pattern).await?;
            keys.extend(batch);
            if next == 0 || keys.len() >= limit {
                keys.truncate(limit);
                return Ok(keys);
            }
            cursor = next;
        }
    }

    /// Unlink every key matching `pattern` in one pass of the cursor; how many went.
    async fn unlink_matching(&self, pattern: &str) -> Result<u64> {
        let mut conn = self.conn.clone();
        let (mut cursor, mut removed) = (0, 0u64);
        loop {
            let (next, batch) = self.scan_step(cursor, pattern).await?;
            if !batch.is_empty() {
                removed += redis::cmd("UNLINK")
                    .arg(&batch)
                    .query_async::<u64>(&mut conn)
                    .await?;
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }
}

#[async_trait]
impl CacheStore for RedisCache {
    async fn get(&self, key: &CacheKey) -> Result<Option<Bytes>> {
        let mut conn = self.conn.clone();
        let value: Option<Vec<u8>> = redis::cmd("GET")
            .arg(self.key(key))
            .query_async(&mut conn)
            .await?;
        Ok(value.map(Bytes::from))
    }

    async fn put(&self, key: &CacheKey, value: Bytes, keep_for: Duration) -> Result<()> {
        let mut conn = self.conn.clone();
        redis::cmd("SET")
            .arg(self.key(key))
            .arg(value.as_ref())
            .arg("PX")
            .arg(ms(keep_for))
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    async fn entries(&self, filter: &CacheFilter, limit: usize) -> Result<Vec<CacheEntryInfo>> {
        let keys = self.scan(&self.pattern(filter), limit).await?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for k in &keys {
            pipe.cmd("PTTL").arg(k).cmd("STRLEN").arg(k);
        }
        let mut conn = self.conn.clone();
        let figures: Vec<i64> = pipe.query_async(&mut conn).await?;
        let now = now_ms();
        Ok(keys
            .iter()
            .zip(figures.chunks(2))
            .filter_map(|(k, f)| {
                let (&ttl, &len) = (f.first()?, f.get(1)?);
                // -2: gone since the scan; -1: no expiry (never written by us).
                (ttl >= 0).then_some(())?;
                Some(CacheEntryInfo {
                    key: self.parse(k)?,
                    bytes: u64::try_from(len).unwrap_or(0),
                    expires_at_ms: now.saturating_add(ttl),
                })
            })
            .collect())
    }

    async fn remove(&self, filter: &CacheFilter) -> Result<u64> {
        self.unlink_matching(&self.pattern(filter)).await
    }
}

/// The semantic cache's vectors shared by every replica: per partition (a hash of everything
/// but the matched text), an append-only log of opaque records that each replica reads from
/// where it left off, so every replica's in-process index holds every replica's vectors.
#[async_trait]
pub trait VectorLog: Send + Sync + 'static {
    /// Append `record` to the log of `partition` (whose entries live under `key`'s namespace,
    /// model and scope), unless the log already holds `max_records`; the log is kept
    /// `keep_for` after its last append.
    async fn append(
        &self,
        key: &CacheKey,
        partition: u128,
        record: Bytes,
        max_records: usize,
        keep_for: Duration,
    ) -> Result<()>;
    /// The records of `partition` from position `from` on — or, when the log is shorter than
    /// `from` (it expired or was invalidated and started again), from its start. Returns the
    /// position of the first record returned, and the records.
    async fn read(&self, key: &CacheKey, partition: u128, from: u64) -> Result<(u64, Vec<Bytes>)>;
    /// Drop the logs of the partitions under the namespace, model and scope `filter` names
    /// (its hash is not used: a log holds many entries); how many logs were dropped.
    async fn remove_logs(&self, filter: &CacheFilter) -> Result<u64>;
}

/// Append unless full, then keep the log for a while. KEYS[1]; ARGV record, max, keep_ms.
const APPEND_LUA: &str = r"
if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
";

impl RedisCache {
    fn log_key(&self, k: &CacheKey, partition: u128) -> String {
        format!(
            "{}{}:{}:{}:{partition:032x}",
            self.logs,
            part(&k.namespace),
            part(&k.model),
            part(&k.scope)
        )
    }
}

#[async_trait]
impl VectorLog for RedisCache {
    async fn append(
        &self,
        key: &CacheKey,
        partition: u128,
        record: Bytes,
        max_records: usize,
        keep_for: Duration,
    ) -> Result<()> {
        let mut conn = self.conn.clone();
        redis::Script::new(APPEND_LUA)
            .key(self.log_key(key, partition))
            .arg(record.as_ref())
            .arg(max_records)
            .arg(ms(keep_for))
            .invoke_async::<i64>(&mut conn)
            .await?;
        Ok(())
    }

    async fn read(&self, key: &CacheKey, partition: u128, from: u64) -> Result<(u64, Vec<Bytes>)> {
        let mut conn = self.conn.clone();
        let log = self.log_key(key, partition);
        let (len, records): (u64, Vec<Vec<u8>>) = redis::pipe()
            .cmd("LLEN")
            .arg(&log)
            .cmd("LRANGE")
            .arg(&log)
            .arg(from)
            .arg(-1)
            .query_async(&mut conn)
            .await?;
        if len >= from {
            return Ok((from, records.into_iter().map(Bytes::from).collect()));
        }
        let records: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(&log)
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await?;
        Ok((0, records.into_iter().map(Bytes::from).collect()))
    }

    async fn remove_logs(&self, filter: &CacheFilter) -> Result<u64> {
        let logs = CacheFilter {
            hash: None,
            ..filter.clone()
        };
        // The same escaped parts as the entries', under the logs' prefix.
        let pattern = self.pattern(&logs).replacen(&self.prefix, &self.logs, 1);
        self.unlink_matching(&pattern).await
    }
}
