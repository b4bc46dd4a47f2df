//! Workflow state: state machines, executions (the engine's run, its status and the time it
//! next needs the clock), their history events, and the document store workflow tasks write
//! to. One narrow trait, [`ExecutionStore`], with SQLite and PostgreSQL implementations.
//!
//! An execution row carries a `version` that every save checks and bumps, so two replicas
//! applying events to the same execution cannot both win: the loser reloads and applies its
//! event again. While an execution has tasks out, the replica running them holds a lease
//! (`lease_owner`, `lease_until_ms`) it renews; when it stops renewing (a crash), another
//! replica claims the execution and runs the tasks that had not finished.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Result;

/// A state machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineRecord {
    /// Its ARN.
    pub arn: String,
    /// Who created it (a team or key id).
    pub owner: String,
    /// Its name.
    pub name: String,
    /// `STANDARD` or `EXPRESS`.
    pub kind: String,
    /// The ASL definition text.
    pub definition: String,
    /// The role ARN given at creation.
    pub role_arn: String,
    /// Created (Unix ms).
    pub created_ms: i64,
    /// Last updated (Unix ms).
    pub updated_ms: i64,
    /// Changes with every update.
    pub revision: String,
    /// Everything else (logging and tracing configuration, tags, description).
    pub body: Value,
}

/// An execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionRecord {
    /// Its ARN.
    pub arn: String,
    /// The state machine's ARN.
    pub machine_arn: String,
    /// Who started it.
    pub owner: String,
    /// Its name (unique per state machine).
    pub name: String,
    /// `RUNNING`, `SUCCEEDED`, `FAILED`, `TIMED_OUT`, `ABORTED`.
    pub status: String,
    /// The input (JSON text).
    pub input: String,
    /// The output (JSON text), once succeeded.
    pub output: Option<String>,
    /// The error, once failed.
    pub error: Option<String>,
    /// The cause, once failed.
    pub cause: Option<String>,
    /// Started (Unix ms).
    pub start_ms: i64,
    /// Ended (Unix ms).
    pub stop_ms: Option<i64>,
    /// Bumped by every save.
    pub version: i64,
    /// When the run next needs the clock.
    pub wake_ms: Option<i64>,
    /// The replica running its tasks.
    pub lease_owner: Option<String>,
    /// Until when that replica holds them.
    pub lease_until_ms: Option<i64>,
    /// The definition it runs (fixed at start).
    pub definition: String,
    /// The engine's run (null in lists).
    pub run: Value,
    /// Who it runs as, its parent execution, trace header.
    pub meta: Value,
}

/// A history event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// 1, 2, 3… in the execution.
    pub id: i64,
    /// The event before it in its thread.
    pub previous_id: i64,
    /// When (Unix ms).
    pub ts_ms: i64,
    /// `TaskScheduled`, …
    pub kind: String,
    /// The details field name.
    pub field: String,
    /// The details.
    pub details: Value,
}

/// What a save changes.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionChange {
    /// The new status.
    pub status: String,
    /// The output.
    pub output: Option<String>,
    /// The error.
    pub error: Option<String>,
    /// The cause.
    pub cause: Option<String>,
    /// When it ended.
    pub stop_ms: Option<i64>,
    /// The run.
    pub run: Value,
    /// When it next needs the clock.
    pub wake_ms: Option<i64>,
    /// The lease on its tasks (none when no task is out).
    pub lease: Option<(String, i64)>,
}

/// Which executions to list (newest first).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecutionQuery {
    /// Of this state machine.
    pub machine_arn: Option<String>,
    /// Of this owner.
    pub owner: Option<String>,
    /// In this status.
    pub status: Option<String>,
    /// Started before this (start ms, ARN) cursor.
    pub before: Option<(i64, String)>,
    /// At most this many.
    pub limit: usize,
}

/// A document in the built-in document store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    /// Its table.
    pub table: String,
    /// Partition key value.
    pub pk: String,
    /// Sort key value (empty when the table has none).
    pub sk: String,
    /// The item.
    pub item: Value,
    /// Last written (Unix ms).
    pub updated_ms: i64,
}

/// Workflow state.
#[async_trait]
pub trait ExecutionStore: Send + Sync {
    /// Store a new state machine; [`crate::StoreError::Conflict`] if the ARN exists.
    async fn create_machine(&self, m: &MachineRecord) -> Result<()>;
    /// Replace a state machine; false if it does not exist.
    async fn update_machine(&self, m: &MachineRecord) -> Result<bool>;
    /// A state machine.
    async fn machine(&self, arn: &str) -> Result<Option<MachineRecord>>;
    /// State machines (of an owner), by name.
    async fn machines(&self, owner: Option<&str>) -> Result<Vec<MachineRecord>>;
    /// Delete a state machine; false if it did not exist.
    async fn delete_machine(&self, arn: &str) -> Result<bool>;

    /// Store a new execution with its first events; [`crate::StoreError::Conflict`] if the
    /// state machine has an execution of that name.
    async fn create_execution(&self, e: &ExecutionRecord, events: &[EventRecord]) -> Result<()>;
    /// Save a changed execution and its new events, if its version is still `version`
    /// (then it becomes `version + 1`). False if another save came first.
    async fn save_execution(
        &self,
        arn: &str,
        version: i64,
        change: &ExecutionChange,
        events: &[EventRecord],
    ) -> Result<bool>;
    /// An execution with its run.
    async fn execution(&self, arn: &str) -> Result<Option<ExecutionRecord>>;
    /// Executions, newest first, without their runs.
    async fn executions(&self, q: &ExecutionQuery) -> Result<Vec<ExecutionRecord>>;
    /// History events after `after` (ascending), or before `after` (descending; 0: from
    /// the end) when `reverse`.
    async fn history(
        &self,
        arn: &str,
        after: i64,
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<EventRecord>>;
    /// Running executions whose wake-up time has come.
    async fn due_executions(&self, now_ms: i64, limit: usize) -> Result<Vec<String>>;
    /// Take the running executions whose task lease ran out: they are `me`'s until
    /// `now + lease_ms`.
    async fn claim_orphans(
        &self,
        me: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<String>>;
    /// The running executions leased to `me` (a restarted replica with the same id takes
    /// them back at once).
    async fn leased_to(&self, me: &str) -> Result<Vec<String>>;
    /// Extend `me`'s leases to `until_ms`; how many.
    async fn renew_leases(&self, me: &str, until_ms: i64) -> Result<u64>;

    /// Write a document (replacing one with the same keys).
    async fn put_document(&self, owner: &str, doc: &Document) -> Result<()>;
    /// A document.
    async fn document(
        &self,
        owner: &str,
        table: &str,
        pk: &str,
        sk: &str,
    ) -> Result<Option<Document>>;
    /// Delete a document; false if there was none.
    async fn delete_document(&self, owner: &str, table: &str, pk: &str, sk: &str) -> Result<bool>;
    /// Documents of a partition, by sort key (those whose sort key starts with `sk_prefix`).
    async fn query_documents(
        &self,
        owner: &str,
        table: &str,
        pk: &str,
        sk_prefix: &str,
        limit: usize,
    ) -> Result<Vec<Document>>;
}
