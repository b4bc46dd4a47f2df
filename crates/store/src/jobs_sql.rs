//! [`JobQueue`] and [`BatchStore`] in SQL: the same statements on SQLite (one writer at a time,
//! so a receive's select-then-update cannot race) and PostgreSQL (`FOR UPDATE SKIP LOCKED`,
//! so replicas receiving together take different jobs and never wait on each other).

use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;
use sqlx::Row as _;

use crate::jobs::{
    BatchRecord, BatchStore, Delivery, FileRecord, HookNext, JobCounts, JobEnd, JobQuery, JobQueue,
    JobRecord, JobState, NewJob, Requeued,
};
use crate::sql::{PoolRow, PostgresStore, SqliteStore};
use crate::{now_ms, Result, StoreError};

/// Version 6: jobs, their callback deliveries, batches and files. `max_attempts` is the
/// receives one run may use; `max_receives` the ceiling on the (ever-growing) receive count.
pub(crate) const JOBS: &str = "CREATE TABLE IF NOT EXISTS mg_jobs (
  id TEXT PRIMARY KEY, kind TEXT NOT NULL, owner TEXT NOT NULL, team TEXT, batch_id TEXT,
  idem_key TEXT, model TEXT, priority BIGINT NOT NULL, state TEXT NOT NULL,
  receives BIGINT NOT NULL, max_attempts BIGINT NOT NULL, max_receives BIGINT NOT NULL,
  visible_ms BIGINT NOT NULL, created_ms BIGINT NOT NULL, updated_ms BIGINT NOT NULL,
  started_ms BIGINT, ended_ms BIGINT, request TEXT NOT NULL, result TEXT, last_error TEXT,
  callback TEXT, hook_state TEXT, hook_attempts BIGINT NOT NULL, hook_due_ms BIGINT,
  meta TEXT NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS mg_jobs_idem ON mg_jobs (owner, kind, idem_key);
CREATE INDEX IF NOT EXISTS mg_jobs_ready ON mg_jobs ((visible_ms + priority * 30000)) WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS mg_jobs_leased ON mg_jobs (visible_ms) WHERE state = 'running';
CREATE INDEX IF NOT EXISTS mg_jobs_batch ON mg_jobs (batch_id, state);
CREATE INDEX IF NOT EXISTS mg_jobs_hooks ON mg_jobs (hook_due_ms) WHERE hook_state = 'pending';
CREATE INDEX IF NOT EXISTS mg_jobs_owner ON mg_jobs (owner, kind, created_ms);
CREATE TABLE IF NOT EXISTS mg_job_deliveries (
  job_id TEXT NOT NULL, attempt BIGINT NOT NULL, ts_ms BIGINT NOT NULL, status BIGINT,
  error TEXT, latency_ms BIGINT NOT NULL, PRIMARY KEY (job_id, attempt));
CREATE TABLE IF NOT EXISTS mg_batches (
  id TEXT PRIMARY KEY, kind TEXT NOT NULL, owner TEXT NOT NULL, state TEXT NOT NULL,
  created_ms BIGINT NOT NULL, updated_ms BIGINT NOT NULL, ended_ms BIGINT, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS mg_batches_owner ON mg_batches (kind, owner, created_ms);
CREATE INDEX IF NOT EXISTS mg_batches_open ON mg_batches (created_ms) WHERE ended_ms IS NULL;
CREATE TABLE IF NOT EXISTS mg_files (
  id TEXT PRIMARY KEY, owner TEXT NOT NULL, purpose TEXT NOT NULL, filename TEXT NOT NULL,
  bytes BIGINT NOT NULL, created_ms BIGINT NOT NULL);";

const JOB_COLUMNS: &str = "id, kind, owner, team, batch_id, idem_key, model, priority, state, \
     receives, max_receives, visible_ms, created_ms, updated_ms, started_ms, ended_ms, request, \
     result, last_error, callback, hook_state, hook_attempts, hook_due_ms, meta";

/// The urgency a job is received in: waiting time weighed against priority (the same
/// expression as the `mg_jobs_ready` index, so the index serves the order).
const URGENCY: &str = "(visible_ms + priority * 30000)";

/// `hook_state` when a job ends: pending when it has a callback.
const HOOK_ON_END: &str = "hook_state = CASE WHEN callback IS NULL THEN NULL ELSE 'pending' END";

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// `$n, $n+1, …` for a list bound after `n - 1` other parameters.
fn placeholders(from: usize, count: usize) -> String {
    (from..from + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `UPDATE mg_jobs SET <set>` on the rows `pick` selects (as `picked_id`), returning them.
/// SQLite has one writer at a time, so a subquery is enough; PostgreSQL locks the picked rows
/// first, skipping rows another replica holds, in a materialised CTE (a plain `IN (subquery
/// … LIMIT)` may be run again per row and update more rows than the limit).
fn picked_update(pick: &str, set: &str, skip_locked: &str) -> String {
    if skip_locked.is_empty() {
        format!(
            "UPDATE mg_jobs SET {set} WHERE id IN (SELECT picked_id FROM ({pick})) \
             RETURNING {JOB_COLUMNS}"
        )
    } else {
        format!(
            "WITH picked AS MATERIALIZED ({pick} {skip_locked}) UPDATE mg_jobs SET {set} \
             FROM picked WHERE mg_jobs.id = picked.picked_id RETURNING {JOB_COLUMNS}"
        )
    }
}

/// Results per `UPDATE` (5 parameters each).
const COMPLETE_CHUNK: usize = 200;

/// Record `n` results in one statement: `$1` is the time, then (id, lease, state, result,
/// error) per job; only rows whose lease is current (`receives = lease`, still running) change,
/// and their ids come back.
fn complete_sql(n: usize) -> String {
    let rows: Vec<String> = (0..n)
        .map(|i| {
            let b = 2 + i * 5;
            format!("(${b}, ${}, ${}, ${}, ${})", b + 1, b + 2, b + 3, b + 4)
        })
        .collect();
    format!(
        "UPDATE mg_jobs SET state = v.column3, result = v.column4, \
         last_error = COALESCE(v.column5, last_error), ended_ms = $1, updated_ms = $1, \
         {HOOK_ON_END}, hook_due_ms = $1 FROM (VALUES {}) AS v \
         WHERE mg_jobs.id = v.column1 AND mg_jobs.receives = v.column2 \
         AND mg_jobs.state = 'running' RETURNING id",
        rows.join(", ")
    )
}

/// Jobs per `INSERT` (12 parameters each, well under both engines' limits).
const ENQUEUE_CHUNK: usize = 250;

/// A many-row `INSERT` of `n` jobs: `$1` is the time, then 12 parameters per job; rows whose
/// (owner, kind, idempotency key) exists are left out of what it returns.
fn enqueue_sql(n: usize) -> String {
    let rows: Vec<String> =
        (0..n)
            .map(|i| {
                let p = |k: usize| format!("${}", 2 + i * 12 + k);
                format!(
                "({}, {}, {}, {}, {}, {}, {}, {}, 'queued', 0, {}, {}, $1, $1, $1, {}, {}, 0, {})",
                p(0), p(1), p(2), p(3), p(4), p(5), p(6), p(7), p(8), p(8), p(9), p(10), p(11)
            )
            })
            .collect();
    format!(
        "INSERT INTO mg_jobs (id, kind, owner, team, batch_id, idem_key, model, priority, state, \
         receives, max_attempts, max_receives, visible_ms, created_ms, updated_ms, request, \
         callback, hook_attempts, meta) VALUES {} ON CONFLICT (owner, kind, idem_key) DO NOTHING \
         RETURNING {JOB_COLUMNS}",
        rows.join(", ")
    )
}

macro_rules! sql_jobs {
    ($store:ident, $pool:ty, $skip_locked:literal) => {
        impl $store {
            fn job_from_row(r: &<$pool as PoolRow>::Row) -> Result<JobRecord> {
                let state: String = r.try_get("state")?;
                let request: String = r.try_get("request")?;
                let result: Option<String> = r.try_get("result")?;
                let meta: String = r.try_get("meta")?;
                Ok(JobRecord {
                    id: r.try_get("id")?,
                    kind: r.try_get("kind")?,
                    owner: r.try_get("owner")?,
                    team: r.try_get("team")?,
                    batch_id: r.try_get("batch_id")?,
                    idem_key: r.try_get("idem_key")?,
                    model: r.try_get("model")?,
                    priority: r.try_get("priority")?,
                    state: JobState::parse(&state)
                        .ok_or_else(|| StoreError::Corrupt(format!("job state {state}")))?,
                    receives: r.try_get("receives")?,
                    max_receives: r.try_get("max_receives")?,
                    visible_ms: r.try_get("visible_ms")?,
                    created_ms: r.try_get("created_ms")?,
                    updated_ms: r.try_get("updated_ms")?,
                    started_ms: r.try_get("started_ms")?,
                    ended_ms: r.try_get("ended_ms")?,
                    request: serde_json::from_str(&request)?,
                    result: result.map(|s| serde_json::from_str(&s)).transpose()?,
                    last_error: r.try_get("last_error")?,
                    callback: r.try_get("callback")?,
                    hook_state: r.try_get("hook_state")?,
                    hook_attempts: r.try_get("hook_attempts")?,
                    hook_due_ms: r.try_get("hook_due_ms")?,
                    meta: serde_json::from_str(&meta)?,
                })
            }

            fn batch_from_row(r: &<$pool as PoolRow>::Row) -> Result<BatchRecord> {
                let body: String = r.try_get("body")?;
                Ok(BatchRecord {
                    id: r.try_get("id")?,
                    kind: r.try_get("kind")?,
                    owner: r.try_get("owner")?,
                    state: r.try_get("state")?,
                    created_ms: r.try_get("created_ms")?,
                    updated_ms: r.try_get("updated_ms")?,
                    ended_ms: r.try_get("ended_ms")?,
                    body: serde_json::from_str(&body)?,
                })
            }

            fn file_from_row(r: &<$pool as PoolRow>::Row) -> Result<FileRecord> {
                Ok(FileRecord {
                    id: r.try_get("id")?,
                    owner: r.try_get("owner")?,
                    purpose: r.try_get("purpose")?,
                    filename: r.try_get("filename")?,
                    bytes: r.try_get("bytes")?,
                    created_ms: r.try_get("created_ms")?,
                })
            }
        }

        #[async_trait]
        impl JobQueue for $store {
            async fn enqueue(&self, jobs: &[NewJob]) -> Result<Vec<(JobRecord, bool)>> {
                let existing = format!(
                    "SELECT {JOB_COLUMNS} FROM mg_jobs WHERE owner = $1 AND kind = $2 AND idem_key = $3"
                );
                let now = now_ms();
                let mut out = Vec::with_capacity(jobs.len());
                let mut tx = self.pool.begin().await?;
                // Many rows per statement: one round trip per chunk, not per job.
                for chunk in jobs.chunks(ENQUEUE_CHUNK) {
                    let sql = enqueue_sql(chunk.len());
                    let mut q = sqlx::query(&sql).bind(now);
                    for j in chunk {
                        q = q
                            .bind(&j.id)
                            .bind(&j.kind)
                            .bind(&j.owner)
                            .bind(&j.team)
                            .bind(&j.batch_id)
                            .bind(&j.idem_key)
                            .bind(&j.model)
                            .bind(j.priority.clamp(0, 9))
                            .bind(j.max_receives.max(1))
                            .bind(j.request.to_string())
                            .bind(&j.callback)
                            .bind(j.meta.to_string());
                    }
                    let rows = q.fetch_all(&mut *tx).await?;
                    let mut made = std::collections::HashMap::with_capacity(rows.len());
                    for row in &rows {
                        let job = Self::job_from_row(row)?;
                        made.insert(job.id.clone(), job);
                    }
                    for j in chunk {
                        match made.remove(&j.id) {
                            Some(job) => out.push((job, true)),
                            // Its (owner, kind, idempotency key) was taken: the job there.
                            None => {
                                let row = sqlx::query(&existing)
                                    .bind(&j.owner)
                                    .bind(&j.kind)
                                    .bind(&j.idem_key)
                                    .fetch_one(&mut *tx)
                                    .await?;
                                out.push((Self::job_from_row(&row)?, false));
                            }
                        }
                    }
                }
                tx.commit().await?;
                Ok(out)
            }

            async fn receive(
                &self,
                max: u32,
                visibility: Duration,
                skip_models: &[String],
            ) -> Result<Vec<JobRecord>> {
                let skip = if skip_models.is_empty() {
                    String::new()
                } else {
                    format!(
                        " AND (model IS NULL OR model NOT IN ({}))",
                        placeholders(4, skip_models.len())
                    )
                };
                let set = "state = 'running', receives = receives + 1, visible_ms = $1 + $2, \
                     started_ms = COALESCE(started_ms, $1), updated_ms = $1";
                let pick = format!(
                    "SELECT id AS picked_id FROM mg_jobs WHERE state = 'queued' AND visible_ms <= $1{skip} \
                     ORDER BY {URGENCY} LIMIT $3"
                );
                let sql = picked_update(&pick, set, $skip_locked);
                let now = now_ms();
                let mut q = sqlx::query(&sql).bind(now).bind(ms(visibility)).bind(i64::from(max));
                for m in skip_models {
                    q = q.bind(m);
                }
                let rows = q.fetch_all(&self.pool).await?;
                let mut jobs = rows.iter().map(Self::job_from_row).collect::<Result<Vec<_>>>()?;
                jobs.sort_by_key(|j| (j.created_ms + j.priority * crate::jobs::PRIORITY_STEP_MS, j.created_ms));
                Ok(jobs)
            }

            async fn heartbeat(&self, id: &str, lease: i64, visibility: Duration) -> Result<bool> {
                let now = now_ms();
                let done = sqlx::query(
                    "UPDATE mg_jobs SET visible_ms = $1, updated_ms = $2 \
                     WHERE id = $3 AND receives = $4 AND state = 'running'",
                )
                .bind(now + ms(visibility))
                .bind(now)
                .bind(id)
                .bind(lease)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn complete(&self, id: &str, lease: i64, end: &JobEnd) -> Result<bool> {
                let done = self.complete_many(&[(id.to_string(), lease, end.clone())]).await?;
                Ok(done.first().copied().unwrap_or(false))
            }

            async fn complete_many(&self, ends: &[(String, i64, JobEnd)]) -> Result<Vec<bool>> {
                if ends.is_empty() {
                    return Ok(Vec::new());
                }
                let mut tx = self.pool.begin().await?;
                let mut recorded = std::collections::HashSet::new();
                for chunk in ends.chunks(COMPLETE_CHUNK) {
                    let sql = complete_sql(chunk.len());
                    let mut q = sqlx::query_scalar::<_, String>(&sql).bind(now_ms());
                    for (id, lease, end) in chunk {
                        let (state, result, error) = match end {
                            JobEnd::Succeeded(r) => (JobState::Succeeded, r, None),
                            JobEnd::Failed(r, e) => (JobState::Failed, r, Some(e.clone())),
                            JobEnd::Dead(r, e) => (JobState::Dead, r, Some(e.clone())),
                        };
                        q = q
                            .bind(id.clone())
                            .bind(*lease)
                            .bind(state.as_str())
                            .bind(result.to_string())
                            .bind(error);
                    }
                    recorded.extend(q.fetch_all(&mut *tx).await?);
                }
                tx.commit().await?;
                Ok(ends.iter().map(|(id, _, _)| recorded.contains(id)).collect())
            }

            async fn retry(
                &self,
                id: &str,
                lease: i64,
                error: &str,
                delay: Duration,
                refund: bool,
            ) -> Result<Requeued> {
                let now = now_ms();
                let sql = format!(
                    "UPDATE mg_jobs SET max_receives = max_receives + $1, last_error = $2, \
                     updated_ms = $3, \
                     state = CASE WHEN receives >= max_receives + $1 THEN 'dead' ELSE 'queued' END, \
                     visible_ms = CASE WHEN receives >= max_receives + $1 THEN visible_ms ELSE $4 END, \
                     ended_ms = CASE WHEN receives >= max_receives + $1 THEN $3 ELSE NULL END, \
                     hook_state = CASE WHEN receives >= max_receives + $1 AND callback IS NOT NULL \
                       THEN 'pending' ELSE NULL END, hook_due_ms = $3 \
                     WHERE id = $5 AND receives = $6 AND state = 'running' RETURNING state"
                );
                let row = sqlx::query(&sql)
                    .bind(i64::from(refund))
                    .bind(error)
                    .bind(now)
                    .bind(now + ms(delay))
                    .bind(id)
                    .bind(lease)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(match row {
                    None => Requeued::LeaseLost,
                    Some(r) => {
                        let s: String = r.try_get("state")?;
                        if s == "dead" { Requeued::Dead } else { Requeued::Queued }
                    }
                })
            }

            async fn release(&self, id: &str, lease: i64) -> Result<bool> {
                let now = now_ms();
                let done = sqlx::query(
                    "UPDATE mg_jobs SET state = 'queued', max_receives = max_receives + 1, \
                     visible_ms = $1, updated_ms = $1 \
                     WHERE id = $2 AND receives = $3 AND state = 'running'",
                )
                .bind(now)
                .bind(id)
                .bind(lease)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn requeue_expired(&self) -> Result<u64> {
                let now = now_ms();
                let done = sqlx::query(
                    "UPDATE mg_jobs SET updated_ms = $1, \
                     last_error = 'the worker holding receive ' || CAST(receives AS TEXT) || \
                       ' did not finish within the visibility timeout', \
                     state = CASE WHEN receives >= max_receives THEN 'dead' ELSE 'queued' END, \
                     ended_ms = CASE WHEN receives >= max_receives THEN $1 ELSE NULL END, \
                     hook_state = CASE WHEN receives >= max_receives AND callback IS NOT NULL \
                       THEN 'pending' ELSE NULL END, hook_due_ms = $1 \
                     WHERE state = 'running' AND visible_ms <= $1",
                )
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected())
            }

            async fn cancel(&self, id: &str, owner: Option<&str>) -> Result<Option<JobRecord>> {
                let now = now_ms();
                let sql = format!(
                    "UPDATE mg_jobs SET state = 'cancelled', ended_ms = $1, updated_ms = $1, \
                     {HOOK_ON_END}, hook_due_ms = $1 \
                     WHERE id = $2 AND ($3 IS NULL OR owner = $3) AND state IN ('queued', 'running') \
                     RETURNING {JOB_COLUMNS}"
                );
                let row = sqlx::query(&sql).bind(now).bind(id).bind(owner).fetch_optional(&self.pool).await?;
                if let Some(row) = row {
                    return Self::job_from_row(&row).map(Some);
                }
                Ok(self.job(id).await?.filter(|j| owner.is_none_or(|o| j.owner == o)))
            }

            async fn cancel_batch(&self, batch_id: &str) -> Result<u64> {
                let done = sqlx::query(
                    "UPDATE mg_jobs SET state = 'cancelled', ended_ms = $1, updated_ms = $1 \
                     WHERE batch_id = $2 AND state IN ('queued', 'running')",
                )
                .bind(now_ms())
                .bind(batch_id)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected())
            }

            async fn redrive(&self, id: Option<&str>) -> Result<u64> {
                let now = now_ms();
                let done = sqlx::query(
                    "UPDATE mg_jobs SET state = 'queued', max_receives = receives + max_attempts, \
                     visible_ms = $1, updated_ms = $1, ended_ms = NULL, result = NULL, \
                     hook_state = NULL, hook_due_ms = NULL, hook_attempts = 0 \
                     WHERE state = 'dead' AND ($2 IS NULL OR id = $2)",
                )
                .bind(now)
                .bind(id)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected())
            }

            async fn job(&self, id: &str) -> Result<Option<JobRecord>> {
                let sql = format!("SELECT {JOB_COLUMNS} FROM mg_jobs WHERE id = $1");
                let row = sqlx::query(&sql).bind(id).fetch_optional(&self.pool).await?;
                row.as_ref().map(Self::job_from_row).transpose()
            }

            async fn jobs(&self, q: &JobQuery) -> Result<Vec<JobRecord>> {
                let mut sql = format!(
                    "SELECT {JOB_COLUMNS} FROM mg_jobs WHERE ($1 IS NULL OR owner = $1) \
                     AND ($2 IS NULL OR kind = $2) AND ($3 IS NULL OR batch_id = $3) \
                     AND ($4 IS NULL OR created_ms >= $4) AND ($5 IS NULL OR created_ms < $5)"
                );
                let (cmp, order) = if q.descending { ("<", "DESC") } else { (">", "ASC") };
                sql.push_str(&format!(
                    " AND ($6 IS NULL OR created_ms {cmp} $6 OR (created_ms = $6 AND id {cmp} $7))"
                ));
                if !q.states.is_empty() {
                    sql.push_str(&format!(" AND state IN ({})", placeholders(8, q.states.len())));
                }
                sql.push_str(&format!(
                    " ORDER BY created_ms {order}, id {order} LIMIT {}",
                    q.limit.clamp(1, 1000)
                ));
                let (after_ms, after_id) = q.after.clone().unzip();
                let mut query = sqlx::query(&sql)
                    .bind(&q.owner)
                    .bind(&q.kind)
                    .bind(&q.batch_id)
                    .bind(q.created_after_ms)
                    .bind(q.created_before_ms);
                query = query.bind(after_ms).bind(after_id);
                for s in &q.states {
                    query = query.bind(s.as_str());
                }
                let rows = query.fetch_all(&self.pool).await?;
                rows.iter().map(Self::job_from_row).collect()
            }

            async fn batch_counts(&self, batch_id: &str) -> Result<JobCounts> {
                let rows = sqlx::query(
                    "SELECT state, COUNT(*) AS n FROM mg_jobs WHERE batch_id = $1 GROUP BY state",
                )
                .bind(batch_id)
                .fetch_all(&self.pool)
                .await?;
                let mut counts = JobCounts::default();
                for r in rows {
                    let s: String = r.try_get("state")?;
                    let n: i64 = r.try_get("n")?;
                    if let Some(state) = JobState::parse(&s) {
                        counts.add(state, n);
                    }
                }
                Ok(counts)
            }

            async fn due_hooks(&self, max: u32, lease: Duration) -> Result<Vec<JobRecord>> {
                let now = now_ms();
                let pick = "SELECT id AS picked_id FROM mg_jobs WHERE hook_state = 'pending' \
                     AND hook_due_ms <= $2 ORDER BY hook_due_ms LIMIT $3";
                let sql = picked_update(pick, "hook_due_ms = $1", $skip_locked);
                let rows = sqlx::query(&sql)
                    .bind(now + ms(lease))
                    .bind(now)
                    .bind(i64::from(max))
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(Self::job_from_row).collect()
            }

            async fn record_delivery(&self, d: &Delivery, next: HookNext) -> Result<()> {
                let (state, due) = match next {
                    HookNext::Delivered => ("delivered", None),
                    HookNext::RetryAt(at) => ("pending", Some(at)),
                    HookNext::GiveUp => ("failed", None),
                };
                let mut tx = self.pool.begin().await?;
                sqlx::query(
                    "INSERT INTO mg_job_deliveries (job_id, attempt, ts_ms, status, error, latency_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&d.job_id)
                .bind(d.attempt)
                .bind(d.ts_ms)
                .bind(d.status)
                .bind(&d.error)
                .bind(d.latency_ms)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE mg_jobs SET hook_state = $1, hook_due_ms = $2, hook_attempts = $3 \
                     WHERE id = $4",
                )
                .bind(state)
                .bind(due)
                .bind(d.attempt)
                .bind(&d.job_id)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn deliveries(&self, job_id: &str) -> Result<Vec<Delivery>> {
                let rows = sqlx::query(
                    "SELECT job_id, attempt, ts_ms, status, error, latency_ms FROM mg_job_deliveries \
                     WHERE job_id = $1 ORDER BY attempt",
                )
                .bind(job_id)
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok(Delivery {
                            job_id: r.try_get("job_id")?,
                            attempt: r.try_get("attempt")?,
                            ts_ms: r.try_get("ts_ms")?,
                            status: r.try_get("status")?,
                            error: r.try_get("error")?,
                            latency_ms: r.try_get("latency_ms")?,
                        })
                    })
                    .collect()
            }
        }

        #[async_trait]
        impl BatchStore for $store {
            async fn insert_batch(&self, b: &BatchRecord) -> Result<()> {
                sqlx::query(
                    "INSERT INTO mg_batches (id, kind, owner, state, created_ms, updated_ms, ended_ms, body) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(&b.id)
                .bind(&b.kind)
                .bind(&b.owner)
                .bind(&b.state)
                .bind(b.created_ms)
                .bind(b.updated_ms)
                .bind(b.ended_ms)
                .bind(b.body.to_string())
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn update_batch(&self, b: &BatchRecord, from: &[&str]) -> Result<bool> {
                let guard = if from.is_empty() {
                    String::new()
                } else {
                    format!(" AND state IN ({})", placeholders(6, from.len()))
                };
                let sql = format!(
                    "UPDATE mg_batches SET state = $2, updated_ms = $3, ended_ms = $4, body = $5 \
                     WHERE id = $1{guard}"
                );
                let mut q = sqlx::query(&sql)
                    .bind(&b.id)
                    .bind(&b.state)
                    .bind(b.updated_ms)
                    .bind(b.ended_ms)
                    .bind(b.body.to_string());
                for s in from {
                    q = q.bind(*s);
                }
                let done = q.execute(&self.pool).await?;
                Ok(done.rows_affected() == 1)
            }

            async fn batch(&self, id: &str) -> Result<Option<BatchRecord>> {
                let row = sqlx::query(
                    "SELECT id, kind, owner, state, created_ms, updated_ms, ended_ms, body \
                     FROM mg_batches WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
                row.as_ref().map(Self::batch_from_row).transpose()
            }

            async fn batches(
                &self,
                owner: Option<&str>,
                kind: &str,
                after: Option<&str>,
                limit: u32,
            ) -> Result<Vec<BatchRecord>> {
                let rows = sqlx::query(
                    "SELECT id, kind, owner, state, created_ms, updated_ms, ended_ms, body \
                     FROM mg_batches WHERE kind = $1 AND ($2 IS NULL OR owner = $2) AND ($3 IS NULL \
                     OR (created_ms, id) < (SELECT created_ms, id FROM mg_batches WHERE id = $3)) \
                     ORDER BY created_ms DESC, id DESC LIMIT $4",
                )
                .bind(kind)
                .bind(owner)
                .bind(after)
                .bind(i64::from(limit.clamp(1, 1000)))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(Self::batch_from_row).collect()
            }

            async fn open_batches(&self) -> Result<Vec<BatchRecord>> {
                let rows = sqlx::query(
                    "SELECT id, kind, owner, state, created_ms, updated_ms, ended_ms, body \
                     FROM mg_batches WHERE ended_ms IS NULL ORDER BY created_ms",
                )
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(Self::batch_from_row).collect()
            }

            async fn insert_file(&self, f: &FileRecord) -> Result<()> {
                sqlx::query(
                    "INSERT INTO mg_files (id, owner, purpose, filename, bytes, created_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&f.id)
                .bind(&f.owner)
                .bind(&f.purpose)
                .bind(&f.filename)
                .bind(f.bytes)
                .bind(f.created_ms)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn file(&self, id: &str) -> Result<Option<FileRecord>> {
                let row = sqlx::query(
                    "SELECT id, owner, purpose, filename, bytes, created_ms FROM mg_files WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
                row.as_ref().map(Self::file_from_row).transpose()
            }

            async fn files(&self, owner: Option<&str>, purpose: Option<&str>) -> Result<Vec<FileRecord>> {
                let rows = sqlx::query(
                    "SELECT id, owner, purpose, filename, bytes, created_ms FROM mg_files \
                     WHERE ($1 IS NULL OR owner = $1) AND ($2 IS NULL OR purpose = $2) \
                     ORDER BY created_ms DESC, id DESC LIMIT 10000",
                )
                .bind(owner)
                .bind(purpose)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(Self::file_from_row).collect()
            }

            async fn delete_file(&self, id: &str) -> Result<bool> {
                let done = sqlx::query("DELETE FROM mg_files WHERE id = $1")
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }
        }
    };
}

sql_jobs!(SqliteStore, SqlitePool, "");
sql_jobs!(PostgresStore, PgPool, "FOR UPDATE SKIP LOCKED");
