//! The durable job queue: records, the [`JobQueue`] trait and the batch / file metadata the
//! batch APIs keep ([`BatchStore`]).
//!
//! Delivery is at least once, result recording exactly once: a worker receives a job with a
//! lease (the job's receive count, which only ever grows) that runs out after the visibility
//! timeout unless the worker heartbeats. Only the holder of the job's current lease can record
//! its result, and a recorded result ends the job, so a second worker that received the job
//! after the first one's lease ran out can never record a second result.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::Result;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting to be received (perhaps not before `visible_ms`: a retry's backoff).
    Queued,
    /// Received by a worker whose lease runs until `visible_ms`.
    Running,
    /// Done, with a result.
    Succeeded,
    /// Done, with an error that retrying would not change (a 4xx answer).
    Failed,
    /// Failed `max_receives` times: in the dead-letter queue with its last error.
    Dead,
    /// Cancelled by its owner.
    Cancelled,
}

impl JobState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }

    /// The state a stored name names.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "succeeded" => JobState::Succeeded,
            "failed" => JobState::Failed,
            "dead" => JobState::Dead,
            "cancelled" => JobState::Cancelled,
            _ => return None,
        })
    }

    /// Whether the job will not run again (unless redriven).
    pub fn is_terminal(self) -> bool {
        !matches!(self, JobState::Queued | JobState::Running)
    }
}

/// How long one step of priority is worth in waiting time: a job waits at most this long per
/// priority step behind more urgent ones, so urgent jobs go first and none starves.
pub const PRIORITY_STEP_MS: i64 = 30_000;

/// A job to enqueue.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NewJob {
    /// Unique id (the gateway makes it).
    pub id: String,
    /// What made it: `job`, `async_invoke`, `batch`.
    pub kind: String,
    /// The principal that submitted it (jobs are scoped to it).
    pub owner: String,
    /// The owner's team.
    pub team: Option<String>,
    /// The batch it belongs to.
    pub batch_id: Option<String>,
    /// The owner's idempotency key: enqueueing the same (owner, kind, key) again returns the
    /// job already there.
    pub idem_key: Option<String>,
    /// The model it calls (per-model worker concurrency; listing).
    pub model: Option<String>,
    /// 0 (most urgent) … 9.
    pub priority: i64,
    /// Receives before it goes to the dead-letter queue.
    pub max_receives: i64,
    /// The request to run; the gateway owns its shape.
    pub request: serde_json::Value,
    /// Where to POST the result when the job ends.
    pub callback: Option<String>,
    /// Anything else the front door keeps (tags, output location…).
    pub meta: serde_json::Value,
}

/// A stored job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRecord {
    /// Unique id.
    pub id: String,
    /// What made it.
    pub kind: String,
    /// Who submitted it.
    pub owner: String,
    /// The owner's team.
    pub team: Option<String>,
    /// Its batch.
    pub batch_id: Option<String>,
    /// Its idempotency key.
    pub idem_key: Option<String>,
    /// The model it calls.
    pub model: Option<String>,
    /// 0 … 9.
    pub priority: i64,
    /// Where it is.
    pub state: JobState,
    /// How many times it was received; also the lease of the current receive.
    pub receives: i64,
    /// Receives before the dead-letter queue.
    pub max_receives: i64,
    /// Queued: not received before; running: when the lease runs out.
    pub visible_ms: i64,
    /// Submitted.
    pub created_ms: i64,
    /// Last changed.
    pub updated_ms: i64,
    /// First received.
    pub started_ms: Option<i64>,
    /// Ended.
    pub ended_ms: Option<i64>,
    /// The request.
    pub request: serde_json::Value,
    /// The result (the answer's status and body).
    pub result: Option<serde_json::Value>,
    /// The last error (of a failed attempt, or the final one).
    pub last_error: Option<String>,
    /// The callback URL.
    pub callback: Option<String>,
    /// The callback's delivery: `pending`, `delivered`, `failed` (none without a callback).
    pub hook_state: Option<String>,
    /// Delivery attempts so far.
    pub hook_attempts: i64,
    /// When the next delivery attempt is due.
    pub hook_due_ms: Option<i64>,
    /// Front-door metadata.
    pub meta: serde_json::Value,
}

impl JobRecord {
    /// The lease the current receive holds.
    pub fn lease(&self) -> i64 {
        self.receives
    }
}

/// How a job ended, recorded by the holder of its lease.
#[derive(Debug, Clone, PartialEq)]
pub enum JobEnd {
    /// It has a result.
    Succeeded(serde_json::Value),
    /// It failed for good, with this result (the error answer) and message.
    Failed(serde_json::Value, String),
    /// It failed in a way retrying would not change and goes to the dead-letter queue at
    /// once, with this result and message (event deliveries: a target that refuses).
    Dead(serde_json::Value, String),
}

/// What became of a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeued {
    /// Queued again, to be received after its backoff.
    Queued,
    /// It had used its receives: in the dead-letter queue.
    Dead,
    /// The lease was not current (another worker has the job, or it was cancelled).
    LeaseLost,
}

/// A filter over jobs.
#[derive(Debug, Clone, Default)]
pub struct JobQuery {
    /// Only this owner's (none: everyone's, for admins).
    pub owner: Option<String>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only these states (empty: all).
    pub states: Vec<JobState>,
    /// Only this batch's.
    pub batch_id: Option<String>,
    /// Submitted at or after.
    pub created_after_ms: Option<i64>,
    /// Submitted before.
    pub created_before_ms: Option<i64>,
    /// Newest first (else oldest first).
    pub descending: bool,
    /// Page after this (created_ms, id) of the previous page's last job.
    pub after: Option<(i64, String)>,
    /// At most this many (capped at 1,000).
    pub limit: u32,
}

/// How many of a batch's jobs are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct JobCounts {
    /// Queued.
    pub queued: i64,
    /// Running.
    pub running: i64,
    /// Succeeded.
    pub succeeded: i64,
    /// Failed.
    pub failed: i64,
    /// Dead-lettered.
    pub dead: i64,
    /// Cancelled.
    pub cancelled: i64,
}

impl JobCounts {
    /// Every job.
    pub fn total(&self) -> i64 {
        self.queued + self.running + self.succeeded + self.failed + self.dead + self.cancelled
    }

    /// Jobs that will not run again.
    pub fn ended(&self) -> i64 {
        self.succeeded + self.failed + self.dead + self.cancelled
    }

    pub(crate) fn add(&mut self, state: JobState, n: i64) {
        match state {
            JobState::Queued => self.queued += n,
            JobState::Running => self.running += n,
            JobState::Succeeded => self.succeeded += n,
            JobState::Failed => self.failed += n,
            JobState::Dead => self.dead += n,
            JobState::Cancelled => self.cancelled += n,
        }
    }
}

/// One attempt to deliver a job's result to its callback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    /// The job.
    pub job_id: String,
    /// 1, 2, 3…
    pub attempt: i64,
    /// When it was made.
    pub ts_ms: i64,
    /// The receiver's HTTP status (none: no answer).
    pub status: Option<i64>,
    /// What went wrong.
    pub error: Option<String>,
    /// How long it took.
    pub latency_ms: i64,
}

/// What the delivery loop decided after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookNext {
    /// Accepted (2xx): done.
    Delivered,
    /// Try again at this time.
    RetryAt(i64),
    /// Out of attempts.
    GiveUp,
}

/// The durable queue of jobs, their results and their callback deliveries.
#[async_trait]
pub trait JobQueue: Send + Sync + 'static {
    /// Enqueue jobs (all or none). Each comes back with whether it was created; a job whose
    /// (owner, kind, idempotency key) exists comes back as stored, not created.
    async fn enqueue(&self, jobs: &[NewJob]) -> Result<Vec<(JobRecord, bool)>>;
    /// Receive up to `max` visible jobs, most urgent first (priority weighed against waiting
    /// time, [`PRIORITY_STEP_MS`] per step), leased for `visibility`; jobs of the models in
    /// `skip_models` are left for later.
    async fn receive(
        &self,
        max: u32,
        visibility: Duration,
        skip_models: &[String],
    ) -> Result<Vec<JobRecord>>;
    /// Extend a lease; false when it is no longer current.
    async fn heartbeat(&self, id: &str, lease: i64, visibility: Duration) -> Result<bool>;
    /// Record how a job ended; false (nothing recorded) when the lease is no longer current.
    async fn complete(&self, id: &str, lease: i64, end: &JobEnd) -> Result<bool>;
    /// Record how many jobs ended, in one transaction (group commit); for each, whether it
    /// was recorded (its lease was current).
    async fn complete_many(&self, ends: &[(String, i64, JobEnd)]) -> Result<Vec<bool>>;
    /// A failed attempt: queue the job again after `delay`, or dead-letter it when it has
    /// used its receives. With `refund`, the attempt does not count (the model was busy).
    async fn retry(
        &self,
        id: &str,
        lease: i64,
        error: &str,
        delay: Duration,
        refund: bool,
    ) -> Result<Requeued>;
    /// Put a received job back, untouched (the worker has no room for it now): queued again
    /// at once, the receive not counted. False when the lease is no longer current.
    async fn release(&self, id: &str, lease: i64) -> Result<bool>;
    /// Jobs whose lease ran out (their worker died): queued again, or dead-lettered when they
    /// have used their receives. Returns how many.
    async fn requeue_expired(&self) -> Result<u64>;
    /// Cancel a job that has not ended (of `owner`, when given); the job as it now is.
    async fn cancel(&self, id: &str, owner: Option<&str>) -> Result<Option<JobRecord>>;
    /// Cancel every job of a batch that has not ended; returns how many.
    async fn cancel_batch(&self, batch_id: &str) -> Result<u64>;
    /// Queue dead-lettered jobs again with fresh receives: one (`Some(id)`) or all. Returns
    /// how many.
    async fn redrive(&self, id: Option<&str>) -> Result<u64>;
    /// One job.
    async fn job(&self, id: &str) -> Result<Option<JobRecord>>;
    /// Jobs matching `query`.
    async fn jobs(&self, query: &JobQuery) -> Result<Vec<JobRecord>>;
    /// How many of a batch's jobs are in each state.
    async fn batch_counts(&self, batch_id: &str) -> Result<JobCounts>;
    /// Claim up to `max` jobs whose callback delivery is due, for `lease` (another replica
    /// does not take them meanwhile).
    async fn due_hooks(&self, max: u32, lease: Duration) -> Result<Vec<JobRecord>>;
    /// Record a delivery attempt and what comes next.
    async fn record_delivery(&self, delivery: &Delivery, next: HookNext) -> Result<()>;
    /// A job's delivery attempts, oldest first.
    async fn deliveries(&self, job_id: &str) -> Result<Vec<Delivery>>;
}

/// A batch (OpenAI Batch API, Anthropic Message Batches): its metadata; its requests are jobs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatchRecord {
    /// Unique id.
    pub id: String,
    /// `openai` or `anthropic`.
    pub kind: String,
    /// Who created it.
    pub owner: String,
    /// `validating`, `in_progress`, `finalizing`, `completed`, `failed`, `expired`,
    /// `cancelling`, `cancelled`.
    pub state: String,
    /// Created.
    pub created_ms: i64,
    /// Last changed.
    pub updated_ms: i64,
    /// Ended.
    pub ended_ms: Option<i64>,
    /// The front door's own fields (endpoint, files, metadata…).
    pub body: serde_json::Value,
}

/// A stored file (OpenAI Files API): metadata; the bytes live in the object store.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileRecord {
    /// Unique id (`file-…`).
    pub id: String,
    /// Who uploaded it.
    pub owner: String,
    /// `batch`, `batch_output`…
    pub purpose: String,
    /// The name it was uploaded with.
    pub filename: String,
    /// Size.
    pub bytes: i64,
    /// Uploaded.
    pub created_ms: i64,
}

/// Batch and file metadata.
#[async_trait]
pub trait BatchStore: Send + Sync + 'static {
    /// Store a new batch.
    async fn insert_batch(&self, batch: &BatchRecord) -> Result<()>;
    /// Replace a batch's state and body; with `from`, only when its state is one of those
    /// (so a finished batch is not reopened). False when nothing changed.
    async fn update_batch(&self, batch: &BatchRecord, from: &[&str]) -> Result<bool>;
    /// One batch.
    async fn batch(&self, id: &str) -> Result<Option<BatchRecord>>;
    /// Batches of an owner and kind, newest first, after the batch `after` (paging).
    async fn batches(
        &self,
        owner: Option<&str>,
        kind: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<BatchRecord>>;
    /// Batches not ended yet (the finaliser walks them).
    async fn open_batches(&self) -> Result<Vec<BatchRecord>>;
    /// Store a file's metadata.
    async fn insert_file(&self, file: &FileRecord) -> Result<()>;
    /// One file.
    async fn file(&self, id: &str) -> Result<Option<FileRecord>>;
    /// An owner's files, newest first.
    async fn files(&self, owner: Option<&str>, purpose: Option<&str>) -> Result<Vec<FileRecord>>;
    /// Delete a file's metadata; false when there was none.
    async fn delete_file(&self, id: &str) -> Result<bool>;
}
