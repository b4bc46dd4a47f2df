//! Modelgate's state, behind one narrow trait per concern.
//!
//! | concern | trait | embedded default | scale-out |
//! |---|---|---|---|
//! | API keys and teams | [`KeyStore`] | SQLite file | PostgreSQL |
//! | usage records | [`UsageStore`] | SQLite file | PostgreSQL |
//! | audit log | [`AuditStore`] | SQLite file | PostgreSQL |
//! | invocation records | [`InvocationStore`] | SQLite file | PostgreSQL |
//! | counters (rate limits, concurrency, spend) | [`Counters`] | in-process | Redis |
//! | response cache entries | [`CacheStore`] | in-process (LRU by bytes) | Redis |
//! | semantic cache vectors shared by replicas | [`VectorLog`] | (the in-process index) | Redis |
//! | versions of live configuration (routing) | [`ConfigVersions`] | SQLite file | PostgreSQL |
//! | guardrails | [`GuardrailStore`] | SQLite file | PostgreSQL |
//! | prompts | [`PromptStore`] | SQLite file | PostgreSQL |
//! | stored Responses API responses | [`ResponseStore`] | SQLite file | PostgreSQL |
//! | the job queue, results, callback deliveries | [`JobQueue`] | SQLite file (WAL) | PostgreSQL (`SKIP LOCKED`) |
//! | batches and uploaded files' metadata | [`BatchStore`] | SQLite file | PostgreSQL |
//! | event bus rules, targets and events | [`EventStore`] | SQLite file | PostgreSQL |
//!
//! Every implementation passes the one conformance suite in `tests/conformance.rs`. Times are
//! Unix milliseconds; money is nano-dollars (10⁻⁹ USD) so that a few tokens of a cheap model
//! still cost a whole number.

mod cache;
mod counters;
mod events;
mod events_sql;
mod flows;
mod flows_sql;
mod jobs;
mod jobs_sql;
mod records;
mod redis_counters;
mod sql;

use std::time::Duration;

use async_trait::async_trait;

pub use cache::{
    CacheEntryInfo, CacheFilter, CacheKey, CacheStore, MemoryCache, RedisCache, VectorLog,
};
pub use counters::MemoryCounters;
pub use events::*;
pub use flows::*;
pub use jobs::*;
pub use records::*;
pub use redis_counters::RedisCounters;
pub use sql::{PostgresStore, SqliteStore};

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached or failed.
    #[error("storage backend unavailable: {0}")]
    Unavailable(String),
    /// A record with the same unique field exists.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A stored record cannot be read back.
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(d) = &e {
            if d.is_unique_violation() {
                return StoreError::Conflict(d.message().to_string());
            }
        }
        StoreError::Unavailable(e.to_string())
    }
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

/// Result of a storage call.
pub type Result<T> = std::result::Result<T, StoreError>;

/// Unix milliseconds now.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// API keys and teams.
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// Create a team, or replace its settings.
    async fn put_team(&self, team: &TeamRecord) -> Result<()>;
    /// One team.
    async fn team(&self, id: &str) -> Result<Option<TeamRecord>>;
    /// Every team, by id.
    async fn teams(&self) -> Result<Vec<TeamRecord>>;
    /// Store a new key; [`StoreError::Conflict`] when its id, prefix or access key id exists.
    async fn insert_key(&self, key: &KeyRecord) -> Result<()>;
    /// Replace a key's mutable fields (secret hash and lookup ids after a rotation, expiry,
    /// revocation, settings). Returns false when no key has that id.
    async fn update_key(&self, key: &KeyRecord) -> Result<bool>;
    /// A key by id.
    async fn key(&self, id: &str) -> Result<Option<KeyRecord>>;
    /// A key by the lookup prefix of its secret.
    async fn key_by_prefix(&self, prefix: &str) -> Result<Option<KeyRecord>>;
    /// A key by its SigV4 access key id.
    async fn key_by_access_key(&self, access_key_id: &str) -> Result<Option<KeyRecord>>;
    /// Keys, oldest first, of one team or all.
    async fn keys(&self, team: Option<&str>) -> Result<Vec<KeyRecord>>;
    /// Whether any key is not revoked (the gateway then requires credentials).
    async fn has_active_keys(&self) -> Result<bool>;
}

/// Usage records: one per call, written in batches.
#[async_trait]
pub trait UsageStore: Send + Sync + 'static {
    /// Append records (all or none).
    async fn append_usage(&self, records: &[UsageRecord]) -> Result<()>;
    /// Totals over a time range, grouped as asked.
    async fn usage_summary(&self, query: &UsageQuery) -> Result<Vec<UsageRow>>;
    /// Total cost (nano-dollars) since `from_ms` of a key or a team.
    async fn spend_since(&self, scope: &SpendScope, from_ms: i64) -> Result<i64>;
}

/// The append-only audit log.
#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    /// Append events.
    async fn append_audit(&self, events: &[AuditEvent]) -> Result<()>;
    /// Events in a time range, newest first.
    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>>;
}

/// Invocation records: one per call, written in batches, purged after the retention period.
#[async_trait]
pub trait InvocationStore: Send + Sync + 'static {
    /// Append records (all or none); their `id` is assigned by the store.
    async fn append_invocations(&self, records: &[InvocationRecord]) -> Result<()>;
    /// Records matching `query`: newest first, or oldest first after `after_id`.
    async fn invocations(&self, query: &InvocationQuery) -> Result<Vec<InvocationRecord>>;
    /// Delete the records of calls received before `before_ms`; returns how many.
    async fn purge_invocations(&self, before_ms: i64) -> Result<u64>;
}

/// One stored version of a live-configuration document.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ConfigVersion {
    /// What the document configures (`routing`).
    pub kind: String,
    /// 1, 2, 3… per kind.
    pub version: i64,
    /// When it was stored (Unix ms).
    pub ts_ms: i64,
    /// Who stored it: a key id, `admin`, or `file:<path>`.
    pub author: String,
    /// Why, in the author's words (or what the gateway did: `rollback to 3`).
    pub note: String,
    /// The document.
    pub body: serde_json::Value,
}

/// Versions of live configuration: every change is a new numbered version, so any earlier one
/// can be looked at and restored (by storing its body again).
#[async_trait]
pub trait ConfigVersions: Send + Sync + 'static {
    /// Store `body` as the next version of `kind`. With `expected`, refuse with
    /// [`StoreError::Conflict`] unless the latest version is that one (0: none yet), so two
    /// writers never both think theirs follows the same version.
    async fn append_version(
        &self,
        kind: &str,
        author: &str,
        note: &str,
        body: &serde_json::Value,
        expected: Option<i64>,
    ) -> Result<ConfigVersion>;
    /// One version of `kind`, or the latest with `None`.
    async fn version(&self, kind: &str, version: Option<i64>) -> Result<Option<ConfigVersion>>;
    /// The latest `limit` versions of `kind`, newest first.
    async fn versions(&self, kind: &str, limit: u32) -> Result<Vec<ConfigVersion>>;
}

/// One stored version of a versioned resource (a guardrail, a prompt): the working draft
/// (`version` 0, shown as `DRAFT`) or an immutable numbered version.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionedRecord {
    /// The resource id.
    pub id: String,
    /// 0 for the draft, 1… for versions.
    pub version: i64,
    /// The resource's name (unique among drafts of its kind).
    pub name: String,
    /// When the resource (or this version) was created.
    pub created_ms: i64,
    /// When it last changed.
    pub updated_ms: i64,
    /// The definition (`CreateGuardrail`'s or `CreatePrompt`'s shape).
    pub body: serde_json::Value,
}

/// A stored guardrail version.
pub type GuardrailRecord = VersionedRecord;

/// Guardrails and their versions.
#[async_trait]
pub trait GuardrailStore: Send + Sync + 'static {
    /// Create a guardrail's draft; [`StoreError::Conflict`] when the id or name is taken.
    async fn create_guardrail(
        &self,
        id: &str,
        name: &str,
        body: &serde_json::Value,
    ) -> Result<GuardrailRecord>;
    /// Replace a draft; `None` when there is no such guardrail.
    async fn update_guardrail(
        &self,
        id: &str,
        name: &str,
        body: &serde_json::Value,
    ) -> Result<Option<GuardrailRecord>>;
    /// Snapshot the draft as the next numbered version (`body` is the draft with the
    /// version's own description); `None` when there is no such guardrail.
    async fn create_guardrail_version(
        &self,
        id: &str,
        body: &serde_json::Value,
    ) -> Result<Option<GuardrailRecord>>;
    /// One version (0: the draft).
    async fn guardrail(&self, id: &str, version: i64) -> Result<Option<GuardrailRecord>>;
    /// Every draft (with `id`: that guardrail's draft and versions), by id then version.
    async fn list_guardrails(&self, id: Option<&str>) -> Result<Vec<GuardrailRecord>>;
    /// Delete one numbered version, or (`None`) the guardrail with all its versions; false
    /// when nothing matched.
    async fn delete_guardrail(&self, id: &str, version: Option<i64>) -> Result<bool>;
}

/// One step of a prompt version's lifecycle (`submitted`, `approved`, `rejected`, `published`,
/// `retired`), kept forever: the review trail.
#[derive(Debug, Clone, PartialEq)]
pub struct ReviewRecord {
    /// The prompt id.
    pub prompt_id: String,
    /// The version the step is about.
    pub version: i64,
    /// The state the version entered.
    pub state: String,
    /// Who took the step (a key id, `admin`, a JWT subject).
    pub actor: String,
    /// Why (a reviewer's comment, the comparison's summary).
    pub note: String,
    /// When.
    pub ts_ms: i64,
}

/// One use of a prompt version: who rendered it, when, through what, and how the call went.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderRecord {
    /// When the render happened.
    pub ts_ms: i64,
    /// The prompt id.
    pub prompt_id: String,
    /// The version used (0: the draft).
    pub version: i64,
    /// Who called.
    pub caller: String,
    /// The call's request id (joins the invocation record).
    pub request_id: String,
    /// Through what: `converse`, `endpoint:<name>`, `render`, `test`.
    pub source: String,
    /// The call's HTTP status (0 when not known, e.g. a stream still running).
    pub status: i64,
    /// The call's duration.
    pub latency_ms: i64,
    /// Input tokens.
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
}

/// Prompt templates: versions (a draft and immutable numbered versions, stored like
/// guardrails), their review trail and their render records.
#[async_trait]
pub trait PromptStore: Send + Sync + 'static {
    /// Create a prompt's draft; [`StoreError::Conflict`] when the id or name is taken.
    async fn create_prompt(
        &self,
        id: &str,
        name: &str,
        body: &serde_json::Value,
    ) -> Result<VersionedRecord>;
    /// Replace a draft; `None` when there is no such prompt.
    async fn update_prompt(
        &self,
        id: &str,
        name: &str,
        body: &serde_json::Value,
    ) -> Result<Option<VersionedRecord>>;
    /// Snapshot the draft as the next numbered version; `None` when there is no such prompt.
    async fn create_prompt_version(
        &self,
        id: &str,
        body: &serde_json::Value,
    ) -> Result<Option<VersionedRecord>>;
    /// One version (0: the draft).
    async fn prompt(&self, id: &str, version: i64) -> Result<Option<VersionedRecord>>;
    /// Every draft (with `id`: that prompt's draft and versions), by id then version.
    async fn list_prompts(&self, id: Option<&str>) -> Result<Vec<VersionedRecord>>;
    /// Delete one numbered version, or (`None`) the prompt with all its versions (its review
    /// trail and render records stay); false when nothing matched.
    async fn delete_prompt(&self, id: &str, version: Option<i64>) -> Result<bool>;
    /// Append a lifecycle step.
    async fn add_review(&self, review: &ReviewRecord) -> Result<()>;
    /// A prompt's lifecycle steps, oldest first.
    async fn reviews(&self, prompt_id: &str) -> Result<Vec<ReviewRecord>>;
    /// Record renders (in one transaction).
    async fn add_renders(&self, records: &[RenderRecord]) -> Result<()>;
    /// A prompt's render records since `since_ms`, newest first, at most `limit`.
    async fn renders(
        &self,
        prompt_id: &str,
        since_ms: i64,
        limit: u32,
    ) -> Result<Vec<RenderRecord>>;
}

/// A stored Responses API response (`store: true`).
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseRecord {
    /// `resp_…`.
    pub id: String,
    /// Who may read it: the caller (its key id, `anonymous` when authentication is off);
    /// nobody else sees it.
    pub owner: String,
    /// When it was created (Unix ms).
    pub created_ms: i64,
    /// The response it continues (`previous_response_id`).
    pub previous_id: Option<String>,
    /// Its own input items, as `GET /v1/responses/{id}/input_items` lists them.
    pub input: serde_json::Value,
    /// The response object as it was returned.
    pub response: serde_json::Value,
}

/// Stored Responses API responses, scoped to their owner.
#[async_trait]
pub trait ResponseStore: Send + Sync + 'static {
    /// Store (or replace) a response.
    async fn put_response(&self, record: &ResponseRecord) -> Result<()>;
    /// `owner`'s response `id`; `None` when there is none or it belongs to someone else.
    async fn response(&self, owner: &str, id: &str) -> Result<Option<ResponseRecord>>;
    /// `owner`'s response `id` and the responses it continues, newest first, at most `limit`
    /// (one query, however long the conversation). The walk stops at a response that is
    /// missing or someone else's, so the last record's `previous_id` names it.
    async fn response_chain(
        &self,
        owner: &str,
        id: &str,
        limit: u32,
    ) -> Result<Vec<ResponseRecord>>;
    /// Delete `owner`'s response `id`; false when nothing matched.
    async fn delete_response(&self, owner: &str, id: &str) -> Result<bool>;
    /// Delete responses created before `before_ms` (retention); how many went.
    async fn purge_responses(&self, before_ms: i64) -> Result<u64>;
}

/// Shared counters: rate limits (GCRA), concurrency slots and spend totals.
#[async_trait]
pub trait Counters: Send + Sync + 'static {
    /// Take `cost` units from the GCRA bucket `key` at rate `rate`. With `force`, the units are
    /// taken even when that goes over the limit (settling the real cost of a call), and a
    /// negative `cost` gives units back.
    async fn take(&self, key: &str, rate: Rate, cost: i64, force: bool) -> Result<Admission>;
    /// Take one of `max` concurrency slots of `key`; a slot not given back within `lease`
    /// (a crashed replica) frees itself.
    async fn enter(&self, key: &str, max: u32, lease: Duration) -> Result<bool>;
    /// Give back a slot taken with [`Counters::enter`].
    async fn leave(&self, key: &str) -> Result<()>;
    /// Add `amount` to the total `key` and return the new total. A key that does not exist
    /// starts from `seed()` — the durable figure (spend so far from the usage records) —
    /// and expires after `ttl`.
    async fn add(&self, key: &str, amount: i64, ttl: Duration, seed: i64) -> Result<i64>;
    /// The total `key` holds, if it exists.
    async fn get(&self, key: &str) -> Result<Option<i64>>;
}
