//! The event bus's state: rules with their targets, and every event put with the deliveries
//! it started. One narrow trait, [`EventStore`], with SQLite and PostgreSQL implementations.
//!
//! Rules belong to their owner (the caller that made them); an owner's events are matched
//! against that owner's rules only. A rule row carries a `version` that every save checks and
//! bumps, so two `PutTargets` racing on one rule cannot lose one another's targets.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Result;

/// A rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleRecord {
    /// Whose it is.
    pub owner: String,
    /// The bus it is on.
    pub bus: String,
    /// Its name (unique per owner and bus).
    pub name: String,
    /// `ENABLED` or `DISABLED`.
    pub state: String,
    /// The event pattern (JSON text).
    pub pattern: String,
    /// Bumped by every save.
    pub version: i64,
    /// Created (Unix ms).
    pub created_ms: i64,
    /// Last changed (Unix ms).
    pub updated_ms: i64,
    /// Everything else: ARN, description, the principal deliveries run as, the targets.
    pub body: Value,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BusEvent {
    /// The event id.
    pub id: String,
    /// Who put it.
    pub owner: String,
    /// The bus.
    pub bus: String,
    /// Received (Unix ms).
    pub ts_ms: i64,
    /// `source`.
    pub source: String,
    /// `detail-type`.
    pub detail_type: String,
    /// The whole event.
    pub event: Value,
    /// The rules it matched and the delivery (job) each target got.
    pub deliveries: Value,
}

/// A filter over events.
#[derive(Debug, Clone, Default)]
pub struct BusEventQuery {
    /// Only this owner's (none: everyone's, for admins).
    pub owner: Option<String>,
    /// Only this bus.
    pub bus: Option<String>,
    /// Only this source.
    pub source: Option<String>,
    /// Only this detail type.
    pub detail_type: Option<String>,
    /// Received at or after.
    pub since_ms: Option<i64>,
    /// Received before.
    pub until_ms: Option<i64>,
    /// Oldest first after this (ts_ms, id) — the last of the previous page.
    pub after: Option<(i64, String)>,
    /// At most this many (capped at 1,000).
    pub limit: usize,
}

/// A small named resource of the bus (an archive, a replay): a JSON body the server owns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BusObject {
    /// `archive` or `replay`.
    pub kind: String,
    /// Whose it is.
    pub owner: String,
    /// Its name (unique per owner and kind).
    pub name: String,
    /// Last changed (Unix ms).
    pub updated_ms: i64,
    /// What it is.
    pub body: Value,
}

/// Rules and events.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// One rule.
    async fn rule(&self, owner: &str, bus: &str, name: &str) -> Result<Option<RuleRecord>>;
    /// An owner's rules on a bus (all buses when `bus` is none), by name, after `after`.
    async fn rules(
        &self,
        owner: Option<&str>,
        bus: Option<&str>,
        prefix: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RuleRecord>>;
    /// Save a rule: insert when `expected` is none (false when it exists), else update it
    /// when its stored version is `expected` (false otherwise). The stored version becomes
    /// the record's version + 1.
    async fn save_rule(&self, rule: &RuleRecord, expected: Option<i64>) -> Result<bool>;
    /// Delete a rule; whether it existed.
    async fn delete_rule(&self, owner: &str, bus: &str, name: &str) -> Result<bool>;
    /// Record an event with its deliveries.
    async fn record_event(&self, e: &BusEvent) -> Result<()>;
    /// One event.
    async fn event(&self, id: &str) -> Result<Option<BusEvent>>;
    /// Events matching a filter, oldest first.
    async fn events(&self, q: &BusEventQuery) -> Result<Vec<BusEvent>>;
    /// Delete events received before `before_ms`, except those of an (owner, bus) in `keep`
    /// received at or after its own cut-off (an archive's longer retention); how many went.
    async fn purge_events(&self, before_ms: i64, keep: &[(String, String, i64)]) -> Result<u64>;
    /// Create (`create`: false when it exists) or replace (false when it does not) an
    /// archive or replay.
    async fn put_object(&self, o: &BusObject, create: bool) -> Result<bool>;
    /// One archive or replay.
    async fn object(&self, kind: &str, owner: &str, name: &str) -> Result<Option<BusObject>>;
    /// The archives or replays of an owner (everyone's when none), by name.
    async fn objects(&self, kind: &str, owner: Option<&str>) -> Result<Vec<BusObject>>;
    /// Delete an archive or replay; whether it existed.
    async fn delete_object(&self, kind: &str, owner: &str, name: &str) -> Result<bool>;
}
