//! Keys, usage, audit and invocation records in SQL: SQLite (the embedded default, one file, WAL) and PostgreSQL
//! (many replicas). Both run the same statements; only the schema's column types differ.
//! Migrations are applied at start, inside one transaction, recorded in `mg_schema`.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::Row as _;

use crate::{
    now_ms, AuditEvent, AuditQuery, AuditStore, ConfigVersion, ConfigVersions, GroupBy,
    GuardrailRecord, GuardrailStore, InvocationQuery, InvocationRecord, InvocationStore, KeyRecord,
    KeyStore, PromptStore, RenderRecord, ResponseRecord, ResponseStore, Result, ReviewRecord,
    SpendScope, StoreError, TeamRecord, UsageQuery, UsageRecord, UsageRow, UsageStore,
    VersionedRecord,
};

/// One schema version: its number and the statements that make it.
struct Migration {
    version: i64,
    sqlite: &'static str,
    postgres: &'static str,
}

/// Version 8: prompts (a draft and immutable versions, like guardrails), their append-only
/// lifecycle steps (who submitted, approved, published which version), and every render (who
/// used which version when, and how the call went). `$id` is the engine's auto-increment key.
macro_rules! prompts_ddl {
    ($id:literal) => {
        concat!(
            "CREATE TABLE IF NOT EXISTS mg_prompts (
  id TEXT NOT NULL, version BIGINT NOT NULL, name TEXT NOT NULL, created_ms BIGINT NOT NULL,
  updated_ms BIGINT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (id, version));
CREATE UNIQUE INDEX IF NOT EXISTS mg_prompts_name ON mg_prompts (name) WHERE version = 0;
CREATE TABLE IF NOT EXISTS mg_prompt_reviews (id ",
            $id,
            ", prompt_id TEXT NOT NULL, version BIGINT NOT NULL, state TEXT NOT NULL,
  actor TEXT NOT NULL, note TEXT NOT NULL, ts_ms BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS mg_prompt_reviews_prompt ON mg_prompt_reviews (prompt_id);
CREATE TABLE IF NOT EXISTS mg_prompt_renders (id ",
            $id,
            ", ts_ms BIGINT NOT NULL, prompt_id TEXT NOT NULL, version BIGINT NOT NULL,
  caller TEXT NOT NULL, request_id TEXT NOT NULL, source TEXT NOT NULL, status BIGINT NOT NULL,
  latency_ms BIGINT NOT NULL, input_tokens BIGINT NOT NULL, output_tokens BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS mg_prompt_renders_ts ON mg_prompt_renders (prompt_id, ts_ms);"
        )
    };
}

/// The tables, the same in both engines but for the auto-increment id and the append-only
/// trigger's syntax.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sqlite: r"
CREATE TABLE IF NOT EXISTS mg_teams (id TEXT PRIMARY KEY, updated_ms BIGINT NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS mg_keys (
  id TEXT PRIMARY KEY, prefix TEXT NOT NULL UNIQUE, hash TEXT NOT NULL,
  access_key_id TEXT NOT NULL UNIQUE, team TEXT, created_ms BIGINT NOT NULL,
  expires_ms BIGINT, revoked_ms BIGINT, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS mg_keys_team ON mg_keys (team);
CREATE TABLE IF NOT EXISTS mg_usage (
  id INTEGER PRIMARY KEY AUTOINCREMENT, ts_ms BIGINT NOT NULL, request_id TEXT NOT NULL,
  key_id TEXT, team TEXT, model_requested TEXT NOT NULL, model_served TEXT, provider TEXT,
  route TEXT NOT NULL, operation TEXT NOT NULL, status BIGINT NOT NULL,
  input_tokens BIGINT NOT NULL, output_tokens BIGINT NOT NULL, cache_read_tokens BIGINT NOT NULL,
  cache_write_tokens BIGINT NOT NULL, cost_nanos BIGINT NOT NULL, latency_ms BIGINT NOT NULL,
  streamed BOOLEAN NOT NULL, cancelled BOOLEAN NOT NULL);
CREATE INDEX IF NOT EXISTS mg_usage_ts ON mg_usage (ts_ms);
CREATE INDEX IF NOT EXISTS mg_usage_team_ts ON mg_usage (team, ts_ms);
CREATE INDEX IF NOT EXISTS mg_usage_key_ts ON mg_usage (key_id, ts_ms);
CREATE TABLE IF NOT EXISTS mg_audit (
  id INTEGER PRIMARY KEY AUTOINCREMENT, ts_ms BIGINT NOT NULL, actor TEXT NOT NULL,
  action TEXT NOT NULL, resource TEXT NOT NULL, decision TEXT NOT NULL, statement TEXT,
  source_ip TEXT, request_id TEXT, detail TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS mg_audit_ts ON mg_audit (ts_ms);
CREATE TRIGGER IF NOT EXISTS mg_audit_no_update BEFORE UPDATE ON mg_audit
  BEGIN SELECT RAISE(ABORT, 'mg_audit is append-only'); END;
CREATE TRIGGER IF NOT EXISTS mg_audit_no_delete BEFORE DELETE ON mg_audit
  BEGIN SELECT RAISE(ABORT, 'mg_audit is append-only'); END;
",
        postgres: r"
CREATE TABLE IF NOT EXISTS mg_teams (id TEXT PRIMARY KEY, updated_ms BIGINT NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS mg_keys (
  id TEXT PRIMARY KEY, prefix TEXT NOT NULL UNIQUE, hash TEXT NOT NULL,
  access_key_id TEXT NOT NULL UNIQUE, team TEXT, created_ms BIGINT NOT NULL,
  expires_ms BIGINT, revoked_ms BIGINT, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS mg_keys_team ON mg_keys (team);
CREATE TABLE IF NOT EXISTS mg_usage (
  id BIGSERIAL PRIMARY KEY, ts_ms BIGINT NOT NULL, request_id TEXT NOT NULL,
  key_id TEXT, team TEXT, model_requested TEXT NOT NULL, model_served TEXT, provider TEXT,
  route TEXT NOT NULL, operation TEXT NOT NULL, status BIGINT NOT NULL,
  input_tokens BIGINT NOT NULL, output_tokens BIGINT NOT NULL, cache_read_tokens BIGINT NOT NULL,
  cache_write_tokens BIGINT NOT NULL, cost_nanos BIGINT NOT NULL, latency_ms BIGINT NOT NULL,
  streamed BOOLEAN NOT NULL, cancelled BOOLEAN NOT NULL);
CREATE INDEX IF NOT EXISTS mg_usage_ts ON mg_usage (ts_ms);
CREATE INDEX IF NOT EXISTS mg_usage_team_ts ON mg_usage (team, ts_ms);
CREATE INDEX IF NOT EXISTS mg_usage_key_ts ON mg_usage (key_id, ts_ms);
CREATE TABLE IF NOT EXISTS mg_audit (
  id BIGSERIAL PRIMARY KEY, ts_ms BIGINT NOT NULL, actor TEXT NOT NULL,
  action TEXT NOT NULL, resource TEXT NOT NULL, decision TEXT NOT NULL, statement TEXT,
  source_ip TEXT, request_id TEXT, detail TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS mg_audit_ts ON mg_audit (ts_ms);
CREATE OR REPLACE FUNCTION mg_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
  BEGIN RAISE EXCEPTION 'mg_audit is append-only'; END $$;
DROP TRIGGER IF EXISTS mg_audit_append_only ON mg_audit;
CREATE TRIGGER mg_audit_append_only BEFORE UPDATE OR DELETE ON mg_audit
  FOR EACH ROW EXECUTE FUNCTION mg_audit_append_only();
",
    },
    Migration {
        version: 2,
        sqlite: INVOCATIONS_SQLITE,
        postgres: INVOCATIONS_POSTGRES,
    },
    Migration {
        version: 3,
        sqlite: CONFIG_VERSIONS,
        postgres: CONFIG_VERSIONS,
    },
    Migration {
        version: 4,
        sqlite: INVOCATION_ROUTING,
        postgres: INVOCATION_ROUTING,
    },
    Migration {
        version: 5,
        sqlite: GUARDRAILS,
        postgres: GUARDRAILS,
    },
    Migration {
        version: 6,
        sqlite: crate::jobs_sql::JOBS,
        postgres: crate::jobs_sql::JOBS,
    },
    Migration {
        version: 7,
        sqlite: crate::flows_sql::FLOWS,
        postgres: crate::flows_sql::FLOWS,
    },
    Migration {
        version: 8,
        sqlite: prompts_ddl!("INTEGER PRIMARY KEY AUTOINCREMENT"),
        postgres: prompts_ddl!("BIGSERIAL PRIMARY KEY"),
    },
    Migration {
        version: 9,
        sqlite: RESPONSES,
        postgres: RESPONSES,
    },
    Migration {
        version: 10,
        sqlite: crate::events_sql::EVENTS,
        postgres: crate::events_sql::EVENTS,
    },
    Migration {
        version: 11,
        sqlite: crate::events_sql::EVENT_OBJECTS,
        postgres: crate::events_sql::EVENT_OBJECTS,
    },
];

/// Version 9: stored Responses API responses, each with its owner (the caller's scope), the
/// response it continues, its own input items and the response object.
const RESPONSES: &str = "CREATE TABLE IF NOT EXISTS mg_responses (
  id TEXT PRIMARY KEY, owner TEXT NOT NULL, created_ms BIGINT NOT NULL, previous_id TEXT,
  input TEXT NOT NULL, response TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS mg_responses_created ON mg_responses (created_ms);";

/// Version 5: guardrails, their draft (version 0) and numbered versions; names are unique
/// among drafts.
const GUARDRAILS: &str = "CREATE TABLE IF NOT EXISTS mg_guardrails (
  id TEXT NOT NULL, version BIGINT NOT NULL, name TEXT NOT NULL, created_ms BIGINT NOT NULL,
  updated_ms BIGINT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (id, version));
CREATE UNIQUE INDEX IF NOT EXISTS mg_guardrails_name ON mg_guardrails (name) WHERE version = 0;";

/// Version 4: the routing decision on invocation records.
const INVOCATION_ROUTING: &str = "ALTER TABLE mg_invocations ADD COLUMN routing TEXT;";

/// Version 3: versions of live configuration (routing), append-only by convention: a rollback
/// is a new version with an old body.
const CONFIG_VERSIONS: &str = "CREATE TABLE IF NOT EXISTS mg_config_versions (
  kind TEXT NOT NULL, version BIGINT NOT NULL, ts_ms BIGINT NOT NULL, author TEXT NOT NULL,
  note TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (kind, version));";

/// The columns of `mg_invocations` after its id (the same in both engines).
macro_rules! invocation_columns {
    () => {
        "ts_ms BIGINT NOT NULL, request_id TEXT NOT NULL, trace_id TEXT, key_id TEXT, team TEXT,
  source_ip TEXT, dialect TEXT NOT NULL, route TEXT NOT NULL, operation TEXT,
  model_requested TEXT, model_routed TEXT, model_served TEXT, provider TEXT,
  status BIGINT NOT NULL, error_category TEXT, error_code TEXT, attempts BIGINT NOT NULL,
  fallback_reason TEXT, input_tokens BIGINT NOT NULL, output_tokens BIGINT NOT NULL,
  cache_read_tokens BIGINT NOT NULL, cache_write_tokens BIGINT NOT NULL,
  cost_nanos BIGINT NOT NULL, latency_us BIGINT NOT NULL, ttft_us BIGINT,
  streamed BOOLEAN NOT NULL, cancelled BOOLEAN NOT NULL, params TEXT NOT NULL,
  request_body TEXT, response_body TEXT"
    };
}

/// The indexes of `mg_invocations`: by time (listing, purge), by caller, by request id.
macro_rules! invocation_indexes {
    () => {
        "
CREATE INDEX IF NOT EXISTS mg_invocations_ts ON mg_invocations (ts_ms);
CREATE INDEX IF NOT EXISTS mg_invocations_key ON mg_invocations (key_id, id);
CREATE INDEX IF NOT EXISTS mg_invocations_team ON mg_invocations (team, id);
CREATE INDEX IF NOT EXISTS mg_invocations_request ON mg_invocations (request_id);
"
    };
}

/// Version 2: invocation records.
const INVOCATIONS_SQLITE: &str = concat!(
    "CREATE TABLE IF NOT EXISTS mg_invocations (id INTEGER PRIMARY KEY AUTOINCREMENT, ",
    invocation_columns!(),
    ");",
    invocation_indexes!()
);
const INVOCATIONS_POSTGRES: &str = concat!(
    "CREATE TABLE IF NOT EXISTS mg_invocations (id BIGSERIAL PRIMARY KEY, ",
    invocation_columns!(),
    ");",
    invocation_indexes!()
);

/// The columns an invocation record is read from.
const INVOCATION_SELECT: &str = "SELECT id, ts_ms, request_id, trace_id, key_id, team, \
    source_ip, dialect, route, operation, model_requested, model_routed, model_served, \
    provider, status, error_category, error_code, attempts, fallback_reason, input_tokens, \
    output_tokens, cache_read_tokens, cache_write_tokens, cost_nanos, latency_us, ttft_us, \
    streamed, cancelled, params, request_body, response_body, routing FROM mg_invocations";

const SCHEMA_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS mg_schema (version BIGINT PRIMARY KEY, applied_ms BIGINT NOT NULL)";

/// The SQL of a usage summary: the grouped columns (or NULL), the totals, the filters.
fn usage_sql(group_by: &[GroupBy]) -> String {
    let has = |g: GroupBy| group_by.contains(&g);
    let pick = |g: GroupBy, col: &str, alias: &str| {
        if has(g) {
            format!("{col} AS {alias}")
        } else {
            format!("NULL AS {alias}")
        }
    };
    let mut groups = Vec::new();
    for g in group_by {
        let col = match g {
            GroupBy::Team => "team",
            GroupBy::Key => "key_id",
            GroupBy::Model => "model_requested",
            GroupBy::Day => "(ts_ms / 86400000)",
        };
        if !groups.contains(&col) {
            groups.push(col);
        }
    }
    let group = if groups.is_empty() {
        String::new()
    } else {
        format!(
            " GROUP BY {} ORDER BY {}",
            groups.join(", "),
            groups.join(", ")
        )
    };
    format!(
        "SELECT {}, {}, {}, {}, COUNT(*) AS requests, \
         CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT) AS input_tokens, \
         CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT) AS output_tokens, \
         CAST(COALESCE(SUM(cache_read_tokens), 0) AS BIGINT) AS cache_read_tokens, \
         CAST(COALESCE(SUM(cache_write_tokens), 0) AS BIGINT) AS cache_write_tokens, \
         CAST(COALESCE(SUM(cost_nanos), 0) AS BIGINT) AS cost_nanos \
         FROM mg_usage WHERE ts_ms >= $1 AND ts_ms < $2 \
         AND ($3 IS NULL OR team = $3) AND ($4 IS NULL OR key_id = $4){group}",
        pick(GroupBy::Team, "team", "g_team"),
        pick(GroupBy::Key, "key_id", "g_key"),
        pick(GroupBy::Model, "model_requested", "g_model"),
        pick(GroupBy::Day, "(ts_ms / 86400000)", "g_day"),
    )
}

/// The statements and row mappings both engines share, as a macro because sqlx's generic
/// bounds over `Database` would be longer than the code.
macro_rules! sql_store {
    ($store:ident, $pool:ty, $ddl:ident, $lock:expr) => {
        impl $store {
            /// Apply the migrations not applied yet, in one transaction (after `$lock`, which
            /// serialises replicas that start together).
            async fn migrate(&self) -> Result<()> {
                let mut tx = self.pool.begin().await?;
                if let Some(lock) = $lock {
                    sqlx::query(lock).execute(&mut *tx).await?;
                }
                sqlx::raw_sql(SCHEMA_TABLE).execute(&mut *tx).await?;
                for m in MIGRATIONS {
                    let done = sqlx::query("SELECT version FROM mg_schema WHERE version = $1")
                        .bind(m.version)
                        .fetch_optional(&mut *tx)
                        .await?;
                    if done.is_none() {
                        sqlx::raw_sql(m.$ddl).execute(&mut *tx).await?;
                        sqlx::query("INSERT INTO mg_schema (version, applied_ms) VALUES ($1, $2)")
                            .bind(m.version)
                            .bind(now_ms())
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                tx.commit().await?;
                Ok(())
            }

            /// The connection pool (for health checks).
            pub fn pool(&self) -> &$pool {
                &self.pool
            }

            /// Whether the database answers.
            pub async fn ping(&self) -> Result<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            fn team_from_row(r: &<$pool as PoolRow>::Row) -> Result<TeamRecord> {
                let body: String = r.try_get("body")?;
                Ok(TeamRecord {
                    id: r.try_get("id")?,
                    updated_ms: r.try_get("updated_ms")?,
                    body: serde_json::from_str(&body)?,
                })
            }

            fn key_from_row(row: &<$pool as PoolRow>::Row) -> Result<KeyRecord> {
                let body: String = row.try_get("body")?;
                Ok(KeyRecord {
                    id: row.try_get("id")?,
                    prefix: row.try_get("prefix")?,
                    hash: row.try_get("hash")?,
                    access_key_id: row.try_get("access_key_id")?,
                    team: row.try_get("team")?,
                    created_ms: row.try_get("created_ms")?,
                    expires_ms: row.try_get("expires_ms")?,
                    revoked_ms: row.try_get("revoked_ms")?,
                    body: serde_json::from_str(&body)?,
                })
            }

            async fn key_where(&self, column: &str, value: &str) -> Result<Option<KeyRecord>> {
                let sql = format!(
                    "SELECT id, prefix, hash, access_key_id, team, created_ms, expires_ms, \
                     revoked_ms, body FROM mg_keys WHERE {column} = $1"
                );
                let row = sqlx::query(&sql)
                    .bind(value)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(Self::key_from_row).transpose()
            }
        }

        #[async_trait]
        impl KeyStore for $store {
            async fn put_team(&self, team: &TeamRecord) -> Result<()> {
                sqlx::query(
                    "INSERT INTO mg_teams (id, updated_ms, body) VALUES ($1, $2, $3) \
                     ON CONFLICT (id) DO UPDATE SET updated_ms = excluded.updated_ms, body = excluded.body",
                )
                .bind(&team.id)
                .bind(team.updated_ms)
                .bind(team.body.to_string())
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn team(&self, id: &str) -> Result<Option<TeamRecord>> {
                let row = sqlx::query("SELECT id, updated_ms, body FROM mg_teams WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(Self::team_from_row).transpose()
            }

            async fn teams(&self) -> Result<Vec<TeamRecord>> {
                let rows = sqlx::query("SELECT id, updated_ms, body FROM mg_teams ORDER BY id")
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(Self::team_from_row).collect()
            }

            async fn insert_key(&self, k: &KeyRecord) -> Result<()> {
                sqlx::query(
                    "INSERT INTO mg_keys (id, prefix, hash, access_key_id, team, created_ms, \
                     expires_ms, revoked_ms, body) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(&k.id)
                .bind(&k.prefix)
                .bind(&k.hash)
                .bind(&k.access_key_id)
                .bind(&k.team)
                .bind(k.created_ms)
                .bind(k.expires_ms)
                .bind(k.revoked_ms)
                .bind(k.body.to_string())
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn update_key(&self, k: &KeyRecord) -> Result<bool> {
                let done = sqlx::query(
                    "UPDATE mg_keys SET prefix = $2, hash = $3, access_key_id = $4, team = $5, \
                     expires_ms = $6, revoked_ms = $7, body = $8 WHERE id = $1",
                )
                .bind(&k.id)
                .bind(&k.prefix)
                .bind(&k.hash)
                .bind(&k.access_key_id)
                .bind(&k.team)
                .bind(k.expires_ms)
                .bind(k.revoked_ms)
                .bind(k.body.to_string())
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn key(&self, id: &str) -> Result<Option<KeyRecord>> {
                self.key_where("id", id).await
            }

            async fn key_by_prefix(&self, prefix: &str) -> Result<Option<KeyRecord>> {
                self.key_where("prefix", prefix).await
            }

            async fn key_by_access_key(&self, access_key_id: &str) -> Result<Option<KeyRecord>> {
                self.key_where("access_key_id", access_key_id).await
            }

            async fn has_active_keys(&self) -> Result<bool> {
                let row = sqlx::query("SELECT 1 AS one FROM mg_keys WHERE revoked_ms IS NULL LIMIT 1")
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.is_some())
            }

            async fn keys(&self, team: Option<&str>) -> Result<Vec<KeyRecord>> {
                let rows = sqlx::query(
                    "SELECT id, prefix, hash, access_key_id, team, created_ms, expires_ms, \
                     revoked_ms, body FROM mg_keys WHERE ($1 IS NULL OR team = $1) \
                     ORDER BY created_ms, id",
                )
                .bind(team)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(Self::key_from_row).collect()
            }
        }

        #[async_trait]
        impl UsageStore for $store {
            async fn append_usage(&self, records: &[UsageRecord]) -> Result<()> {
                let mut tx = self.pool.begin().await?;
                for r in records {
                    sqlx::query(
                        "INSERT INTO mg_usage (ts_ms, request_id, key_id, team, model_requested, \
                         model_served, provider, route, operation, status, input_tokens, \
                         output_tokens, cache_read_tokens, cache_write_tokens, cost_nanos, \
                         latency_ms, streamed, cancelled) VALUES ($1, $2, $3, $4, $5, $6, $7, \
                         $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
                    )
                    .bind(r.ts_ms)
                    .bind(&r.request_id)
                    .bind(&r.key_id)
                    .bind(&r.team)
                    .bind(&r.model_requested)
                    .bind(&r.model_served)
                    .bind(&r.provider)
                    .bind(&r.route)
                    .bind(&r.operation)
                    .bind(r.status)
                    .bind(r.input_tokens)
                    .bind(r.output_tokens)
                    .bind(r.cache_read_tokens)
                    .bind(r.cache_write_tokens)
                    .bind(r.cost_nanos)
                    .bind(r.latency_ms)
                    .bind(r.streamed)
                    .bind(r.cancelled)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn usage_summary(&self, q: &UsageQuery) -> Result<Vec<UsageRow>> {
                let sql = usage_sql(&q.group_by);
                let rows = sqlx::query(&sql)
                    .bind(q.from_ms)
                    .bind(q.to_ms)
                    .bind(&q.team)
                    .bind(&q.key_id)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map(|r| {
                        Ok(UsageRow {
                            team: r.try_get("g_team")?,
                            key_id: r.try_get("g_key")?,
                            model: r.try_get("g_model")?,
                            day: r.try_get("g_day")?,
                            requests: r.try_get("requests")?,
                            input_tokens: r.try_get("input_tokens")?,
                            output_tokens: r.try_get("output_tokens")?,
                            cache_read_tokens: r.try_get("cache_read_tokens")?,
                            cache_write_tokens: r.try_get("cache_write_tokens")?,
                            cost_nanos: r.try_get("cost_nanos")?,
                        })
                    })
                    .collect()
            }

            async fn spend_since(&self, scope: &SpendScope, from_ms: i64) -> Result<i64> {
                let (column, value) = match scope {
                    SpendScope::Key(k) => ("key_id", k),
                    SpendScope::Team(t) => ("team", t),
                };
                let sql = format!(
                    "SELECT CAST(COALESCE(SUM(cost_nanos), 0) AS BIGINT) AS s FROM mg_usage \
                     WHERE {column} = $1 AND ts_ms >= $2"
                );
                let row = sqlx::query(&sql)
                    .bind(value)
                    .bind(from_ms)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(row.try_get("s")?)
            }
        }

        #[async_trait]
        impl AuditStore for $store {
            async fn append_audit(&self, events: &[AuditEvent]) -> Result<()> {
                let mut tx = self.pool.begin().await?;
                for e in events {
                    sqlx::query(
                        "INSERT INTO mg_audit (ts_ms, actor, action, resource, decision, \
                         statement, source_ip, request_id, detail) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    )
                    .bind(e.ts_ms)
                    .bind(&e.actor)
                    .bind(&e.action)
                    .bind(&e.resource)
                    .bind(&e.decision)
                    .bind(&e.statement)
                    .bind(&e.source_ip)
                    .bind(&e.request_id)
                    .bind(e.detail.to_string())
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn audit(&self, q: &AuditQuery) -> Result<Vec<AuditEvent>> {
                let rows = sqlx::query(
                    "SELECT ts_ms, actor, action, resource, decision, statement, source_ip, \
                     request_id, detail FROM mg_audit WHERE ts_ms >= $1 AND ts_ms < $2 \
                     AND ($3 IS NULL OR actor = $3) ORDER BY ts_ms DESC, id DESC LIMIT $4",
                )
                .bind(q.from_ms)
                .bind(q.to_ms)
                .bind(&q.actor)
                .bind(q.limit.max(1))
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|r| {
                        let detail: String = r.try_get("detail")?;
                        Ok(AuditEvent {
                            ts_ms: r.try_get("ts_ms")?,
                            actor: r.try_get("actor")?,
                            action: r.try_get("action")?,
                            resource: r.try_get("resource")?,
                            decision: r.try_get("decision")?,
                            statement: r.try_get("statement")?,
                            source_ip: r.try_get("source_ip")?,
                            request_id: r.try_get("request_id")?,
                            detail: serde_json::from_str(&detail)?,
                        })
                    })
                    .collect()
            }
        }

        #[async_trait]
        impl InvocationStore for $store {
            async fn append_invocations(&self, records: &[InvocationRecord]) -> Result<()> {
                // Multi-row inserts (30 columns × 400 rows stays under both engines' limit on
                // bound parameters): one statement per slice, not per record.
                let mut tx = self.pool.begin().await?;
                for slice in records.chunks(400) {
                    let mut q = sqlx::QueryBuilder::new(
                        "INSERT INTO mg_invocations (ts_ms, request_id, trace_id, key_id, team, \
                         source_ip, dialect, route, operation, model_requested, model_routed, \
                         model_served, provider, status, error_category, error_code, attempts, \
                         fallback_reason, input_tokens, output_tokens, cache_read_tokens, \
                         cache_write_tokens, cost_nanos, latency_us, ttft_us, streamed, \
                         cancelled, params, request_body, response_body, routing) ",
                    );
                    q.push_values(slice, |mut b, r| {
                        b.push_bind(r.ts_ms)
                            .push_bind(&r.request_id)
                            .push_bind(&r.trace_id)
                            .push_bind(&r.key_id)
                            .push_bind(&r.team)
                            .push_bind(&r.source_ip)
                            .push_bind(&r.dialect)
                            .push_bind(&r.route)
                            .push_bind(&r.operation)
                            .push_bind(&r.model_requested)
                            .push_bind(&r.model_routed)
                            .push_bind(&r.model_served)
                            .push_bind(&r.provider)
                            .push_bind(r.status)
                            .push_bind(&r.error_category)
                            .push_bind(&r.error_code)
                            .push_bind(r.attempts)
                            .push_bind(&r.fallback_reason)
                            .push_bind(r.input_tokens)
                            .push_bind(r.output_tokens)
                            .push_bind(r.cache_read_tokens)
                            .push_bind(r.cache_write_tokens)
                            .push_bind(r.cost_nanos)
                            .push_bind(r.latency_us)
                            .push_bind(r.ttft_us)
                            .push_bind(r.streamed)
                            .push_bind(r.cancelled)
                            .push_bind(r.params.to_string())
                            .push_bind(&r.request_body)
                            .push_bind(&r.response_body)
                            .push_bind(r.routing.as_ref().map(ToString::to_string));
                    });
                    q.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn invocations(&self, q: &InvocationQuery) -> Result<Vec<InvocationRecord>> {
                let (cursor, order) = match (q.after_id, q.before_id) {
                    (Some(after), _) => (format!("id > {after}"), "ASC"),
                    (None, Some(before)) => (format!("id < {before}"), "DESC"),
                    (None, None) => ("1 = 1".to_string(), "DESC"),
                };
                let sql = format!(
                    "{INVOCATION_SELECT} WHERE ts_ms >= $1 AND ts_ms < $2 \
                     AND ($3 IS NULL OR key_id = $3) AND ($4 IS NULL OR team = $4) \
                     AND ($5 IS NULL OR model_requested = $5 OR model_served = $5 \
                          OR model_routed = $5) \
                     AND status >= $6 AND status <= $7 \
                     AND ($8 IS NULL OR error_category = $8) \
                     AND ($9 IS NULL OR request_id = $9) AND latency_us >= $10 \
                     AND {cursor} ORDER BY id {order} LIMIT $11"
                );
                let rows = sqlx::query(&sql)
                    .bind(q.from_ms)
                    .bind(q.to_ms)
                    .bind(&q.key_id)
                    .bind(&q.team)
                    .bind(&q.model)
                    .bind(q.status.0)
                    .bind(q.status.1)
                    .bind(&q.error_category)
                    .bind(&q.request_id)
                    .bind(q.min_latency_us)
                    .bind(q.limit.max(1))
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map(|r| {
                        let params: String = r.try_get("params")?;
                        Ok(InvocationRecord {
                            id: r.try_get("id")?,
                            ts_ms: r.try_get("ts_ms")?,
                            request_id: r.try_get("request_id")?,
                            trace_id: r.try_get("trace_id")?,
                            key_id: r.try_get("key_id")?,
                            team: r.try_get("team")?,
                            source_ip: r.try_get("source_ip")?,
                            dialect: r.try_get("dialect")?,
                            route: r.try_get("route")?,
                            operation: r.try_get("operation")?,
                            model_requested: r.try_get("model_requested")?,
                            model_routed: r.try_get("model_routed")?,
                            model_served: r.try_get("model_served")?,
                            provider: r.try_get("provider")?,
                            status: r.try_get("status")?,
                            error_category: r.try_get("error_category")?,
                            error_code: r.try_get("error_code")?,
                            attempts: r.try_get("attempts")?,
                            fallback_reason: r.try_get("fallback_reason")?,
                            input_tokens: r.try_get("input_tokens")?,
                            output_tokens: r.try_get("output_tokens")?,
                            cache_read_tokens: r.try_get("cache_read_tokens")?,
                            cache_write_tokens: r.try_get("cache_write_tokens")?,
                            cost_nanos: r.try_get("cost_nanos")?,
                            latency_us: r.try_get("latency_us")?,
                            ttft_us: r.try_get("ttft_us")?,
                            streamed: r.try_get("streamed")?,
                            cancelled: r.try_get("cancelled")?,
                            params: serde_json::from_str(&params)?,
                            request_body: r.try_get("request_body")?,
                            response_body: r.try_get("response_body")?,
                            routing: r
                                .try_get::<Option<String>, _>("routing")?
                                .map(|t| serde_json::from_str(&t))
                                .transpose()?,
                        })
                    })
                    .collect()
            }

            async fn purge_invocations(&self, before_ms: i64) -> Result<u64> {
                // In slices, so a large purge never holds a long write lock.
                let mut total = 0;
                loop {
                    let done = sqlx::query(
                        "DELETE FROM mg_invocations WHERE id IN \
                         (SELECT id FROM mg_invocations WHERE ts_ms < $1 LIMIT 5000)",
                    )
                    .bind(before_ms)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                    total += done;
                    if done < 5000 {
                        return Ok(total);
                    }
                }
            }
        }

        #[async_trait]
        impl ConfigVersions for $store {
            async fn append_version(
                &self,
                kind: &str,
                author: &str,
                note: &str,
                body: &serde_json::Value,
                expected: Option<i64>,
            ) -> Result<ConfigVersion> {
                // One statement, so SQLite takes the write lock at once (a read that turns
                // into a write inside a transaction fails when another writer got there first)
                // and two writers can never both think they follow the same version: the
                // primary key refuses the second. The aggregate always gives one row (0 when
                // the kind has no version yet); `expected` filters it out when it is stale.
                let ts_ms = now_ms();
                let text = body.to_string();
                let row = sqlx::query(
                    "INSERT INTO mg_config_versions (kind, version, ts_ms, author, note, body) \
                     SELECT $1, latest.v + 1, $2, $3, $4, $5 FROM \
                     (SELECT COALESCE(MAX(version), 0) AS v FROM mg_config_versions \
                     WHERE kind = $1) AS latest \
                     WHERE CAST($6 AS BIGINT) IS NULL OR latest.v = CAST($6 AS BIGINT) \
                     RETURNING version",
                )
                .bind(kind)
                .bind(ts_ms)
                .bind(author)
                .bind(note)
                .bind(&text)
                .bind(expected)
                .fetch_optional(&self.pool)
                .await?;
                let Some(row) = row else {
                    let latest = self.version(kind, None).await?.map_or(0, |v| v.version);
                    return Err(StoreError::Conflict(format!(
                        "the latest {kind} version is {latest}, not {}",
                        expected.unwrap_or_default()
                    )));
                };
                Ok(ConfigVersion {
                    kind: kind.to_string(),
                    version: row.try_get("version")?,
                    ts_ms,
                    author: author.to_string(),
                    note: note.to_string(),
                    body: body.clone(),
                })
            }

            async fn version(&self, kind: &str, version: Option<i64>) -> Result<Option<ConfigVersion>> {
                let row = sqlx::query(
                    "SELECT kind, version, ts_ms, author, note, body FROM mg_config_versions \
                     WHERE kind = $1 AND ($2 IS NULL OR version = $2) ORDER BY version DESC LIMIT 1",
                )
                .bind(kind)
                .bind(version)
                .fetch_optional(&self.pool)
                .await?;
                row.as_ref().map(Self::config_version_from_row).transpose()
            }

            async fn versions(&self, kind: &str, limit: u32) -> Result<Vec<ConfigVersion>> {
                let rows = sqlx::query(
                    "SELECT kind, version, ts_ms, author, note, body FROM mg_config_versions \
                     WHERE kind = $1 ORDER BY version DESC LIMIT $2",
                )
                .bind(kind)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(Self::config_version_from_row).collect()
            }
        }

        #[async_trait]
        impl GuardrailStore for $store {
            async fn create_guardrail(&self, id: &str, name: &str, body: &serde_json::Value) -> Result<GuardrailRecord> {
                self.versioned_create("mg_guardrails", id, name, body).await
            }
            async fn update_guardrail(&self, id: &str, name: &str, body: &serde_json::Value) -> Result<Option<GuardrailRecord>> {
                self.versioned_update("mg_guardrails", id, name, body).await
            }
            async fn create_guardrail_version(&self, id: &str, body: &serde_json::Value) -> Result<Option<GuardrailRecord>> {
                self.versioned_snapshot("mg_guardrails", id, body).await
            }
            async fn guardrail(&self, id: &str, version: i64) -> Result<Option<GuardrailRecord>> {
                self.versioned_get("mg_guardrails", id, version).await
            }
            async fn list_guardrails(&self, id: Option<&str>) -> Result<Vec<GuardrailRecord>> {
                self.versioned_list("mg_guardrails", id).await
            }
            async fn delete_guardrail(&self, id: &str, version: Option<i64>) -> Result<bool> {
                self.versioned_delete("mg_guardrails", id, version).await
            }
        }

        #[async_trait]
        impl PromptStore for $store {
            async fn create_prompt(&self, id: &str, name: &str, body: &serde_json::Value) -> Result<VersionedRecord> {
                self.versioned_create("mg_prompts", id, name, body).await
            }
            async fn update_prompt(&self, id: &str, name: &str, body: &serde_json::Value) -> Result<Option<VersionedRecord>> {
                self.versioned_update("mg_prompts", id, name, body).await
            }
            async fn create_prompt_version(&self, id: &str, body: &serde_json::Value) -> Result<Option<VersionedRecord>> {
                self.versioned_snapshot("mg_prompts", id, body).await
            }
            async fn prompt(&self, id: &str, version: i64) -> Result<Option<VersionedRecord>> {
                self.versioned_get("mg_prompts", id, version).await
            }
            async fn list_prompts(&self, id: Option<&str>) -> Result<Vec<VersionedRecord>> {
                self.versioned_list("mg_prompts", id).await
            }
            async fn delete_prompt(&self, id: &str, version: Option<i64>) -> Result<bool> {
                self.versioned_delete("mg_prompts", id, version).await
            }

            async fn add_review(&self, r: &ReviewRecord) -> Result<()> {
                sqlx::query(
                    "INSERT INTO mg_prompt_reviews (prompt_id, version, state, actor, note, ts_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&r.prompt_id)
                .bind(r.version)
                .bind(&r.state)
                .bind(&r.actor)
                .bind(&r.note)
                .bind(r.ts_ms)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn reviews(&self, prompt_id: &str) -> Result<Vec<ReviewRecord>> {
                let rows = sqlx::query(
                    "SELECT prompt_id, version, state, actor, note, ts_ms FROM mg_prompt_reviews \
                     WHERE prompt_id = $1 ORDER BY id",
                )
                .bind(prompt_id)
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok(ReviewRecord {
                            prompt_id: r.try_get("prompt_id")?,
                            version: r.try_get("version")?,
                            state: r.try_get("state")?,
                            actor: r.try_get("actor")?,
                            note: r.try_get("note")?,
                            ts_ms: r.try_get("ts_ms")?,
                        })
                    })
                    .collect()
            }

            async fn add_renders(&self, records: &[RenderRecord]) -> Result<()> {
                let mut tx = self.pool.begin().await?;
                for r in records {
                    sqlx::query(
                        "INSERT INTO mg_prompt_renders (ts_ms, prompt_id, version, caller, request_id, \
                         source, status, latency_ms, input_tokens, output_tokens) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                    )
                    .bind(r.ts_ms)
                    .bind(&r.prompt_id)
                    .bind(r.version)
                    .bind(&r.caller)
                    .bind(&r.request_id)
                    .bind(&r.source)
                    .bind(r.status)
                    .bind(r.latency_ms)
                    .bind(r.input_tokens)
                    .bind(r.output_tokens)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn renders(&self, prompt_id: &str, since_ms: i64, limit: u32) -> Result<Vec<RenderRecord>> {
                let rows = sqlx::query(
                    "SELECT ts_ms, prompt_id, version, caller, request_id, source, status, latency_ms, \
                     input_tokens, output_tokens FROM mg_prompt_renders \
                     WHERE prompt_id = $1 AND ts_ms >= $2 ORDER BY id DESC LIMIT $3",
                )
                .bind(prompt_id)
                .bind(since_ms)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok(RenderRecord {
                            ts_ms: r.try_get("ts_ms")?,
                            prompt_id: r.try_get("prompt_id")?,
                            version: r.try_get("version")?,
                            caller: r.try_get("caller")?,
                            request_id: r.try_get("request_id")?,
                            source: r.try_get("source")?,
                            status: r.try_get("status")?,
                            latency_ms: r.try_get("latency_ms")?,
                            input_tokens: r.try_get("input_tokens")?,
                            output_tokens: r.try_get("output_tokens")?,
                        })
                    })
                    .collect()
            }
        }

        #[async_trait]
        impl ResponseStore for $store {
            async fn put_response(&self, r: &ResponseRecord) -> Result<()> {
                sqlx::query(
                    "INSERT INTO mg_responses (id, owner, created_ms, previous_id, input, response) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO UPDATE SET \
                     owner = excluded.owner, created_ms = excluded.created_ms, \
                     previous_id = excluded.previous_id, input = excluded.input, \
                     response = excluded.response",
                )
                .bind(&r.id)
                .bind(&r.owner)
                .bind(r.created_ms)
                .bind(&r.previous_id)
                .bind(r.input.to_string())
                .bind(r.response.to_string())
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn response(&self, owner: &str, id: &str) -> Result<Option<ResponseRecord>> {
                let mut chain = self.response_chain(owner, id, 1).await?;
                Ok(chain.pop())
            }

            async fn response_chain(&self, owner: &str, id: &str, limit: u32) -> Result<Vec<ResponseRecord>> {
                let rows = sqlx::query(
                    "WITH RECURSIVE chain (id, owner, created_ms, previous_id, input, response, depth) AS ( \
                       SELECT id, owner, created_ms, previous_id, input, response, 1 FROM mg_responses \
                       WHERE id = $1 AND owner = $2 \
                       UNION ALL \
                       SELECT r.id, r.owner, r.created_ms, r.previous_id, r.input, r.response, c.depth + 1 \
                       FROM mg_responses r JOIN chain c ON r.id = c.previous_id \
                       WHERE r.owner = $2 AND c.depth < $3) \
                     SELECT id, owner, created_ms, previous_id, input, response FROM chain ORDER BY depth",
                )
                .bind(id)
                .bind(owner)
                .bind(i32::try_from(limit).unwrap_or(i32::MAX))
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|r| {
                        let input: String = r.try_get("input")?;
                        let response: String = r.try_get("response")?;
                        Ok(ResponseRecord {
                            id: r.try_get("id")?,
                            owner: r.try_get("owner")?,
                            created_ms: r.try_get("created_ms")?,
                            previous_id: r.try_get("previous_id")?,
                            input: serde_json::from_str(&input)?,
                            response: serde_json::from_str(&response)?,
                        })
                    })
                    .collect()
            }

            async fn delete_response(&self, owner: &str, id: &str) -> Result<bool> {
                let done = sqlx::query("DELETE FROM mg_responses WHERE id = $1 AND owner = $2")
                    .bind(id)
                    .bind(owner)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn purge_responses(&self, before_ms: i64) -> Result<u64> {
                let done = sqlx::query("DELETE FROM mg_responses WHERE created_ms < $1")
                    .bind(before_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected())
            }
        }

        /// Versioned resources (guardrails, prompts): a draft (version 0) and immutable
        /// numbered versions, each kind in its own table with the same columns.
        impl $store {
            async fn versioned_create(&self, table: &str, id: &str, name: &str, body: &serde_json::Value) -> Result<VersionedRecord> {
                let now = now_ms();
                sqlx::query(&format!(
                    "INSERT INTO {table} (id, version, name, created_ms, updated_ms, body) \
                     VALUES ($1, 0, $2, $3, $3, $4)"
                ))
                .bind(id)
                .bind(name)
                .bind(now)
                .bind(body.to_string())
                .execute(&self.pool)
                .await?;
                Ok(VersionedRecord { id: id.into(), version: 0, name: name.into(), created_ms: now, updated_ms: now, body: body.clone() })
            }

            async fn versioned_update(&self, table: &str, id: &str, name: &str, body: &serde_json::Value) -> Result<Option<VersionedRecord>> {
                let row = sqlx::query(&format!(
                    "UPDATE {table} SET name = $2, updated_ms = $3, body = $4 \
                     WHERE id = $1 AND version = 0 \
                     RETURNING id, version, name, created_ms, updated_ms, body"
                ))
                .bind(id)
                .bind(name)
                .bind(now_ms())
                .bind(body.to_string())
                .fetch_optional(&self.pool)
                .await?;
                row.as_ref().map(Self::versioned_from_row).transpose()
            }

            async fn versioned_snapshot(&self, table: &str, id: &str, body: &serde_json::Value) -> Result<Option<VersionedRecord>> {
                // One statement: the next number is taken under the primary key, so two
                // concurrent calls never make the same version.
                let row = sqlx::query(&format!(
                    "INSERT INTO {table} (id, version, name, created_ms, updated_ms, body) \
                     SELECT d.id, (SELECT MAX(version) FROM {table} WHERE id = $1) + 1, \
                     d.name, $2, $2, $3 FROM {table} d WHERE d.id = $1 AND d.version = 0 \
                     RETURNING id, version, name, created_ms, updated_ms, body"
                ))
                .bind(id)
                .bind(now_ms())
                .bind(body.to_string())
                .fetch_optional(&self.pool)
                .await?;
                row.as_ref().map(Self::versioned_from_row).transpose()
            }

            async fn versioned_get(&self, table: &str, id: &str, version: i64) -> Result<Option<VersionedRecord>> {
                let row = sqlx::query(&format!(
                    "SELECT id, version, name, created_ms, updated_ms, body FROM {table} \
                     WHERE id = $1 AND version = $2"
                ))
                .bind(id)
                .bind(version)
                .fetch_optional(&self.pool)
                .await?;
                row.as_ref().map(Self::versioned_from_row).transpose()
            }

            async fn versioned_list(&self, table: &str, id: Option<&str>) -> Result<Vec<VersionedRecord>> {
                let rows = sqlx::query(&format!(
                    "SELECT id, version, name, created_ms, updated_ms, body FROM {table} \
                     WHERE ($1 IS NULL AND version = 0) OR id = $1 ORDER BY id, version"
                ))
                .bind(id)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(Self::versioned_from_row).collect()
            }

            async fn versioned_delete(&self, table: &str, id: &str, version: Option<i64>) -> Result<bool> {
                let done = match version {
                    Some(v) => sqlx::query(&format!("DELETE FROM {table} WHERE id = $1 AND version = $2 AND version > 0"))
                        .bind(id)
                        .bind(v)
                        .execute(&self.pool)
                        .await?,
                    None => sqlx::query(&format!("DELETE FROM {table} WHERE id = $1"))
                        .bind(id)
                        .execute(&self.pool)
                        .await?,
                };
                Ok(done.rows_affected() > 0)
            }

            fn versioned_from_row(r: &<$pool as PoolRow>::Row) -> Result<VersionedRecord> {
                let body: String = r.try_get("body")?;
                Ok(VersionedRecord {
                    id: r.try_get("id")?,
                    version: r.try_get("version")?,
                    name: r.try_get("name")?,
                    created_ms: r.try_get("created_ms")?,
                    updated_ms: r.try_get("updated_ms")?,
                    body: serde_json::from_str(&body)?,
                })
            }
        }

        impl $store {
            fn config_version_from_row(r: &<$pool as PoolRow>::Row) -> Result<ConfigVersion> {
                let body: String = r.try_get("body")?;
                Ok(ConfigVersion {
                    kind: r.try_get("kind")?,
                    version: r.try_get("version")?,
                    ts_ms: r.try_get("ts_ms")?,
                    author: r.try_get("author")?,
                    note: r.try_get("note")?,
                    body: serde_json::from_str(&body)?,
                })
            }
        }
    };
}

/// The row type of a pool, for the macros.
pub(crate) trait PoolRow {
    type Row;
}
impl PoolRow for SqlitePool {
    type Row = sqlx::sqlite::SqliteRow;
}
impl PoolRow for PgPool {
    type Row = sqlx::postgres::PgRow;
}

/// The embedded store: one SQLite file in WAL mode.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pub(crate) pool: SqlitePool,
}

impl SqliteStore {
    /// Open (creating when missing) the database file at `path` and apply migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
    }
}

sql_store!(SqliteStore, SqlitePool, sqlite, None::<&str>);

/// The scale-out store: PostgreSQL, shared by every replica.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pub(crate) pool: PgPool,
}

impl PostgresStore {
    /// Connect to `url` (`postgres://user@host:port/db`) and apply migrations (replicas that
    /// start together serialise on an advisory lock).
    pub async fn connect(url: &str) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("bad PostgreSQL url: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
    }
}

sql_store!(
    PostgresStore,
    PgPool,
    postgres,
    Some("SELECT pg_advisory_xact_lock(7271)")
);
