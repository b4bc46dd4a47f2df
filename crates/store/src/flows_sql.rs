//! [`ExecutionStore`] in SQL, the same statements on SQLite and PostgreSQL.

use async_trait::async_trait;
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;
use sqlx::Row as _;

use crate::flows::{
    Document, EventRecord, ExecutionChange, ExecutionQuery, ExecutionRecord, ExecutionStore,
    MachineRecord,
};
use crate::sql::{PoolRow, PostgresStore, SqliteStore};
use crate::{Result, StoreError};

/// Version 7: state machines, executions, their history, and the workflow document store.
pub(crate) const FLOWS: &str = "CREATE TABLE IF NOT EXISTS mg_machines (
  arn TEXT PRIMARY KEY, owner TEXT NOT NULL, name TEXT NOT NULL, kind TEXT NOT NULL,
  definition TEXT NOT NULL, role_arn TEXT NOT NULL, created_ms BIGINT NOT NULL,
  updated_ms BIGINT NOT NULL, revision TEXT NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS mg_machines_owner ON mg_machines (owner, name);
CREATE TABLE IF NOT EXISTS mg_executions (
  arn TEXT PRIMARY KEY, machine_arn TEXT NOT NULL, owner TEXT NOT NULL, name TEXT NOT NULL,
  status TEXT NOT NULL, input TEXT NOT NULL, output TEXT, error TEXT, cause TEXT,
  start_ms BIGINT NOT NULL, stop_ms BIGINT, version BIGINT NOT NULL, wake_ms BIGINT,
  lease_owner TEXT, lease_until_ms BIGINT, definition TEXT NOT NULL, run TEXT NOT NULL,
  meta TEXT NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS mg_executions_name ON mg_executions (machine_arn, name);
CREATE INDEX IF NOT EXISTS mg_executions_list ON mg_executions (machine_arn, start_ms);
CREATE INDEX IF NOT EXISTS mg_executions_wake ON mg_executions (wake_ms) WHERE status = 'RUNNING';
CREATE INDEX IF NOT EXISTS mg_executions_lease ON mg_executions (lease_until_ms) WHERE status = 'RUNNING' AND lease_owner IS NOT NULL;
CREATE TABLE IF NOT EXISTS mg_execution_events (
  execution_arn TEXT NOT NULL, id BIGINT NOT NULL, previous_id BIGINT NOT NULL,
  ts_ms BIGINT NOT NULL, kind TEXT NOT NULL, field TEXT NOT NULL, details TEXT NOT NULL,
  PRIMARY KEY (execution_arn, id));
CREATE TABLE IF NOT EXISTS mg_documents (
  owner TEXT NOT NULL, tbl TEXT NOT NULL, pk TEXT NOT NULL, sk TEXT NOT NULL,
  item TEXT NOT NULL, updated_ms BIGINT NOT NULL, PRIMARY KEY (owner, tbl, pk, sk));";

const EXEC_COLUMNS: &str = "arn, machine_arn, owner, name, status, input, output, error, cause, \
     start_ms, stop_ms, version, wake_ms, lease_owner, lease_until_ms, definition, run, meta";

/// Events per `INSERT` (7 parameters each).
const EVENT_CHUNK: usize = 500;

fn events_sql(n: usize) -> String {
    let rows: Vec<String> = (0..n)
        .map(|i| {
            let b = 2 + i * 6;
            format!(
                "($1, ${b}, ${}, ${}, ${}, ${}, ${})",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5
            )
        })
        .collect();
    format!(
        "INSERT INTO mg_execution_events (execution_arn, id, previous_id, ts_ms, kind, field, details) VALUES {}",
        rows.join(", ")
    )
}

macro_rules! sql_flows {
    ($store:ident, $pool:ty, $db:ty) => {
        impl $store {
            fn machine_from_row(r: &<$pool as PoolRow>::Row) -> Result<MachineRecord> {
                let body: String = r.try_get("body")?;
                Ok(MachineRecord {
                    arn: r.try_get("arn")?,
                    owner: r.try_get("owner")?,
                    name: r.try_get("name")?,
                    kind: r.try_get("kind")?,
                    definition: r.try_get("definition")?,
                    role_arn: r.try_get("role_arn")?,
                    created_ms: r.try_get("created_ms")?,
                    updated_ms: r.try_get("updated_ms")?,
                    revision: r.try_get("revision")?,
                    body: serde_json::from_str(&body)?,
                })
            }

            fn execution_from_row(r: &<$pool as PoolRow>::Row) -> Result<ExecutionRecord> {
                let run: String = r.try_get("run")?;
                let meta: String = r.try_get("meta")?;
                Ok(ExecutionRecord {
                    arn: r.try_get("arn")?,
                    machine_arn: r.try_get("machine_arn")?,
                    owner: r.try_get("owner")?,
                    name: r.try_get("name")?,
                    status: r.try_get("status")?,
                    input: r.try_get("input")?,
                    output: r.try_get("output")?,
                    error: r.try_get("error")?,
                    cause: r.try_get("cause")?,
                    start_ms: r.try_get("start_ms")?,
                    stop_ms: r.try_get("stop_ms")?,
                    version: r.try_get("version")?,
                    wake_ms: r.try_get("wake_ms")?,
                    lease_owner: r.try_get("lease_owner")?,
                    lease_until_ms: r.try_get("lease_until_ms")?,
                    definition: r.try_get("definition")?,
                    run: if run.is_empty() { serde_json::Value::Null } else { serde_json::from_str(&run)? },
                    meta: serde_json::from_str(&meta)?,
                })
            }

            fn event_from_row(r: &<$pool as PoolRow>::Row) -> Result<EventRecord> {
                let details: String = r.try_get("details")?;
                Ok(EventRecord {
                    id: r.try_get("id")?,
                    previous_id: r.try_get("previous_id")?,
                    ts_ms: r.try_get("ts_ms")?,
                    kind: r.try_get("kind")?,
                    field: r.try_get("field")?,
                    details: serde_json::from_str(&details)?,
                })
            }

            fn doc_from_row(r: &<$pool as PoolRow>::Row) -> Result<Document> {
                let item: String = r.try_get("item")?;
                Ok(Document {
                    table: r.try_get("tbl")?,
                    pk: r.try_get("pk")?,
                    sk: r.try_get("sk")?,
                    item: serde_json::from_str(&item)?,
                    updated_ms: r.try_get("updated_ms")?,
                })
            }

            async fn insert_events(tx: &mut sqlx::Transaction<'_, $db>, arn: &str, events: &[EventRecord]) -> Result<()> {
                for chunk in events.chunks(EVENT_CHUNK) {
                    let sql = events_sql(chunk.len());
                    let mut q = sqlx::query(&sql).bind(arn);
                    for e in chunk {
                        q = q
                            .bind(e.id)
                            .bind(e.previous_id)
                            .bind(e.ts_ms)
                            .bind(e.kind.as_str())
                            .bind(e.field.as_str())
                            .bind(e.details.to_string());
                    }
                    q.execute(&mut **tx).await?;
                }
                Ok(())
            }
        }

        #[async_trait]
        impl ExecutionStore for $store {
            async fn create_machine(&self, m: &MachineRecord) -> Result<()> {
                sqlx::query(
                    "INSERT INTO mg_machines (arn, owner, name, kind, definition, role_arn, created_ms, \
                     updated_ms, revision, body) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(&m.arn)
                .bind(&m.owner)
                .bind(&m.name)
                .bind(&m.kind)
                .bind(&m.definition)
                .bind(&m.role_arn)
                .bind(m.created_ms)
                .bind(m.updated_ms)
                .bind(&m.revision)
                .bind(m.body.to_string())
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn update_machine(&self, m: &MachineRecord) -> Result<bool> {
                let done = sqlx::query(
                    "UPDATE mg_machines SET definition = $2, role_arn = $3, updated_ms = $4, \
                     revision = $5, body = $6 WHERE arn = $1",
                )
                .bind(&m.arn)
                .bind(&m.definition)
                .bind(&m.role_arn)
                .bind(m.updated_ms)
                .bind(&m.revision)
                .bind(m.body.to_string())
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn machine(&self, arn: &str) -> Result<Option<MachineRecord>> {
                let row = sqlx::query("SELECT * FROM mg_machines WHERE arn = $1")
                    .bind(arn)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(Self::machine_from_row).transpose()
            }

            async fn machines(&self, owner: Option<&str>) -> Result<Vec<MachineRecord>> {
                let rows = sqlx::query(
                    "SELECT * FROM mg_machines WHERE ($1 IS NULL OR owner = $1) ORDER BY name, arn LIMIT 10000",
                )
                .bind(owner)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(Self::machine_from_row).collect()
            }

            async fn delete_machine(&self, arn: &str) -> Result<bool> {
                let done = sqlx::query("DELETE FROM mg_machines WHERE arn = $1")
                    .bind(arn)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn create_execution(&self, e: &ExecutionRecord, events: &[EventRecord]) -> Result<()> {
                let mut tx = self.pool.begin().await?;
                let sql = format!(
                    "INSERT INTO mg_executions ({EXEC_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, \
                     $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)"
                );
                sqlx::query(&sql)
                    .bind(&e.arn)
                    .bind(&e.machine_arn)
                    .bind(&e.owner)
                    .bind(&e.name)
                    .bind(&e.status)
                    .bind(&e.input)
                    .bind(&e.output)
                    .bind(&e.error)
                    .bind(&e.cause)
                    .bind(e.start_ms)
                    .bind(e.stop_ms)
                    .bind(e.version)
                    .bind(e.wake_ms)
                    .bind(&e.lease_owner)
                    .bind(e.lease_until_ms)
                    .bind(&e.definition)
                    .bind(e.run.to_string())
                    .bind(e.meta.to_string())
                    .execute(&mut *tx)
                    .await?;
                Self::insert_events(&mut tx, &e.arn, events).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn save_execution(&self, arn: &str, version: i64, c: &ExecutionChange, events: &[EventRecord]) -> Result<bool> {
                let mut tx = self.pool.begin().await?;
                let (lease_owner, lease_until) = match &c.lease {
                    Some((o, u)) => (Some(o.as_str()), Some(*u)),
                    None => (None, None),
                };
                let done = sqlx::query(
                    "UPDATE mg_executions SET status = $3, output = $4, error = $5, cause = $6, \
                     stop_ms = $7, run = $8, wake_ms = $9, lease_owner = $10, lease_until_ms = $11, \
                     version = version + 1 WHERE arn = $1 AND version = $2",
                )
                .bind(arn)
                .bind(version)
                .bind(&c.status)
                .bind(&c.output)
                .bind(&c.error)
                .bind(&c.cause)
                .bind(c.stop_ms)
                .bind(c.run.to_string())
                .bind(c.wake_ms)
                .bind(lease_owner)
                .bind(lease_until)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() != 1 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                Self::insert_events(&mut tx, arn, events).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn execution(&self, arn: &str) -> Result<Option<ExecutionRecord>> {
                let sql = format!("SELECT {EXEC_COLUMNS} FROM mg_executions WHERE arn = $1");
                let row = sqlx::query(&sql).bind(arn).fetch_optional(&self.pool).await?;
                row.as_ref().map(Self::execution_from_row).transpose()
            }

            async fn executions(&self, q: &ExecutionQuery) -> Result<Vec<ExecutionRecord>> {
                let sql = "SELECT arn, machine_arn, owner, name, status, input, output, error, cause, \
                     start_ms, stop_ms, version, wake_ms, lease_owner, lease_until_ms, '' AS definition, \
                     '' AS run, meta FROM mg_executions WHERE ($1 IS NULL OR machine_arn = $1) \
                     AND ($2 IS NULL OR owner = $2) AND ($3 IS NULL OR status = $3) \
                     AND ($4 IS NULL OR start_ms < $4 OR (start_ms = $4 AND arn < $5)) \
                     ORDER BY start_ms DESC, arn DESC LIMIT $6";
                let (before_ms, before_arn) = match &q.before {
                    Some((ms, arn)) => (Some(*ms), Some(arn.as_str())),
                    None => (None, None),
                };
                let rows = sqlx::query(sql)
                    .bind(q.machine_arn.as_deref())
                    .bind(q.owner.as_deref())
                    .bind(q.status.as_deref())
                    .bind(before_ms)
                    .bind(before_arn.unwrap_or(""))
                    .bind(i64::try_from(q.limit).unwrap_or(i64::MAX))
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(Self::execution_from_row).collect()
            }

            async fn history(&self, arn: &str, after: i64, reverse: bool, limit: usize) -> Result<Vec<EventRecord>> {
                let sql = if reverse {
                    "SELECT * FROM mg_execution_events WHERE execution_arn = $1 AND ($2 = 0 OR id < $2) ORDER BY id DESC LIMIT $3"
                } else {
                    "SELECT * FROM mg_execution_events WHERE execution_arn = $1 AND id > $2 ORDER BY id ASC LIMIT $3"
                };
                let rows = sqlx::query(sql)
                    .bind(arn)
                    .bind(after)
                    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(Self::event_from_row).collect()
            }

            async fn due_executions(&self, now_ms: i64, limit: usize) -> Result<Vec<String>> {
                let rows = sqlx::query(
                    "SELECT arn FROM mg_executions WHERE status = 'RUNNING' AND wake_ms <= $1 ORDER BY wake_ms LIMIT $2",
                )
                .bind(now_ms)
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(|r| r.try_get("arn").map_err(StoreError::from)).collect()
            }

            async fn claim_orphans(&self, me: &str, now_ms: i64, lease_ms: i64, limit: usize) -> Result<Vec<String>> {
                let rows = sqlx::query(
                    "UPDATE mg_executions SET lease_owner = $1, lease_until_ms = $3 WHERE arn IN \
                     (SELECT arn FROM mg_executions WHERE status = 'RUNNING' AND lease_owner IS NOT NULL \
                     AND lease_until_ms < $2 ORDER BY lease_until_ms LIMIT $4) AND lease_until_ms < $2 \
                     AND status = 'RUNNING' RETURNING arn",
                )
                .bind(me)
                .bind(now_ms)
                .bind(now_ms.saturating_add(lease_ms))
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(|r| r.try_get("arn").map_err(StoreError::from)).collect()
            }

            async fn leased_to(&self, me: &str) -> Result<Vec<String>> {
                let rows = sqlx::query(
                    "SELECT arn FROM mg_executions WHERE lease_owner = $1 AND status = 'RUNNING'",
                )
                .bind(me)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(|r| r.try_get("arn").map_err(StoreError::from)).collect()
            }

            async fn renew_leases(&self, me: &str, until_ms: i64) -> Result<u64> {
                let done = sqlx::query(
                    "UPDATE mg_executions SET lease_until_ms = $2 WHERE lease_owner = $1 AND status = 'RUNNING'",
                )
                .bind(me)
                .bind(until_ms)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected())
            }

            async fn put_document(&self, owner: &str, d: &Document) -> Result<()> {
                sqlx::query(
                    "INSERT INTO mg_documents (owner, tbl, pk, sk, item, updated_ms) VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (owner, tbl, pk, sk) DO UPDATE SET item = excluded.item, updated_ms = excluded.updated_ms",
                )
                .bind(owner)
                .bind(&d.table)
                .bind(&d.pk)
                .bind(&d.sk)
                .bind(d.item.to_string())
                .bind(d.updated_ms)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn document(&self, owner: &str, table: &str, pk: &str, sk: &str) -> Result<Option<Document>> {
                let row = sqlx::query(
                    "SELECT tbl, pk, sk, item, updated_ms FROM mg_documents WHERE owner = $1 AND tbl = $2 AND pk = $3 AND sk = $4",
                )
                .bind(owner)
                .bind(table)
                .bind(pk)
                .bind(sk)
                .fetch_optional(&self.pool)
                .await?;
                row.as_ref().map(Self::doc_from_row).transpose()
            }

            async fn delete_document(&self, owner: &str, table: &str, pk: &str, sk: &str) -> Result<bool> {
                let done = sqlx::query("DELETE FROM mg_documents WHERE owner = $1 AND tbl = $2 AND pk = $3 AND sk = $4")
                    .bind(owner)
                    .bind(table)
                    .bind(pk)
                    .bind(sk)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn query_documents(&self, owner: &str, table: &str, pk: &str, sk_prefix: &str, limit: usize) -> Result<Vec<Document>> {
                let rows = sqlx::query(
                    "SELECT tbl, pk, sk, item, updated_ms FROM mg_documents WHERE owner = $1 AND tbl = $2 AND pk = $3 \
                     AND substr(sk, 1, length(CAST($4 AS TEXT))) = CAST($4 AS TEXT) ORDER BY sk LIMIT $5",
                )
                .bind(owner)
                .bind(table)
                .bind(pk)
                .bind(sk_prefix)
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(Self::doc_from_row).collect()
            }
        }
    };
}

sql_flows!(SqliteStore, SqlitePool, sqlx::Sqlite);
sql_flows!(PostgresStore, PgPool, sqlx::Postgres);
