//! [`EventStore`] in SQL, the same statements on SQLite and PostgreSQL.

use async_trait::async_trait;
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;
use sqlx::Row as _;

use crate::events::{BusEvent, BusEventQuery, BusObject, EventStore, RuleRecord};
use crate::sql::{PoolRow, PostgresStore, SqliteStore};
use crate::Result;

/// Version 10: event bus rules (targets in the body) and events with their deliveries.
pub(crate) const EVENTS: &str = "CREATE TABLE IF NOT EXISTS mg_event_rules (
  owner TEXT NOT NULL, bus TEXT NOT NULL, name TEXT NOT NULL, state TEXT NOT NULL,
  pattern TEXT NOT NULL, version BIGINT NOT NULL, created_ms BIGINT NOT NULL,
  updated_ms BIGINT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (owner, bus, name));
CREATE TABLE IF NOT EXISTS mg_bus_events (
  id TEXT PRIMARY KEY, owner TEXT NOT NULL, bus TEXT NOT NULL, ts_ms BIGINT NOT NULL,
  source TEXT NOT NULL, detail_type TEXT NOT NULL, event TEXT NOT NULL, deliveries TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS mg_bus_events_ts ON mg_bus_events (ts_ms, id);
CREATE INDEX IF NOT EXISTS mg_bus_events_owner ON mg_bus_events (owner, bus, ts_ms);";

/// Version 11: the bus's archives and replays.
pub(crate) const EVENT_OBJECTS: &str = "CREATE TABLE IF NOT EXISTS mg_bus_objects (
  kind TEXT NOT NULL, owner TEXT NOT NULL, name TEXT NOT NULL, updated_ms BIGINT NOT NULL,
  body TEXT NOT NULL, PRIMARY KEY (kind, owner, name));";

macro_rules! sql_events {
    ($store:ident, $pool:ty) => {
        impl $store {
            fn rule_from_row(r: &<$pool as PoolRow>::Row) -> Result<RuleRecord> {
                let body: String = r.try_get("body")?;
                Ok(RuleRecord {
                    owner: r.try_get("owner")?,
                    bus: r.try_get("bus")?,
                    name: r.try_get("name")?,
                    state: r.try_get("state")?,
                    pattern: r.try_get("pattern")?,
                    version: r.try_get("version")?,
                    created_ms: r.try_get("created_ms")?,
                    updated_ms: r.try_get("updated_ms")?,
                    body: serde_json::from_str(&body)?,
                })
            }

            fn object_from_row(r: &<$pool as PoolRow>::Row) -> Result<BusObject> {
                let body: String = r.try_get("body")?;
                Ok(BusObject {
                    kind: r.try_get("kind")?,
                    owner: r.try_get("owner")?,
                    name: r.try_get("name")?,
                    updated_ms: r.try_get("updated_ms")?,
                    body: serde_json::from_str(&body)?,
                })
            }

            fn bus_event_from_row(r: &<$pool as PoolRow>::Row) -> Result<BusEvent> {
                let event: String = r.try_get("event")?;
                let deliveries: String = r.try_get("deliveries")?;
                Ok(BusEvent {
                    id: r.try_get("id")?,
                    owner: r.try_get("owner")?,
                    bus: r.try_get("bus")?,
                    ts_ms: r.try_get("ts_ms")?,
                    source: r.try_get("source")?,
                    detail_type: r.try_get("detail_type")?,
                    event: serde_json::from_str(&event)?,
                    deliveries: serde_json::from_str(&deliveries)?,
                })
            }
        }

        #[async_trait]
        impl EventStore for $store {
            async fn rule(&self, owner: &str, bus: &str, name: &str) -> Result<Option<RuleRecord>> {
                let row = sqlx::query(
                    "SELECT * FROM mg_event_rules WHERE owner = $1 AND bus = $2 AND name = $3",
                )
                .bind(owner)
                .bind(bus)
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
                row.as_ref().map(Self::rule_from_row).transpose()
            }

            async fn rules(
                &self,
                owner: Option<&str>,
                bus: Option<&str>,
                prefix: Option<&str>,
                after: Option<&str>,
                limit: usize,
            ) -> Result<Vec<RuleRecord>> {
                let rows = sqlx::query(
                    "SELECT * FROM mg_event_rules WHERE ($1 IS NULL OR owner = $1) \
                     AND ($2 IS NULL OR bus = $2) AND ($3 IS NULL OR substr(name, 1, length($3)) = $3) \
                     AND ($4 IS NULL OR name > $4) ORDER BY name, owner, bus LIMIT $5",
                )
                .bind(owner)
                .bind(bus)
                .bind(prefix)
                .bind(after)
                .bind(i64::try_from(limit.min(100_000)).unwrap_or(100_000))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(Self::rule_from_row).collect()
            }

            async fn save_rule(&self, r: &RuleRecord, expected: Option<i64>) -> Result<bool> {
                let body = r.body.to_string();
                let done = match expected {
                    None => sqlx::query(
                        "INSERT INTO mg_event_rules (owner, bus, name, state, pattern, version, \
                         created_ms, updated_ms, body) VALUES ($1, $2, $3, $4, $5, 1, $6, $7, $8) \
                         ON CONFLICT (owner, bus, name) DO NOTHING",
                    )
                    .bind(&r.owner)
                    .bind(&r.bus)
                    .bind(&r.name)
                    .bind(&r.state)
                    .bind(&r.pattern)
                    .bind(r.created_ms)
                    .bind(r.updated_ms)
                    .bind(&body)
                    .execute(&self.pool)
                    .await?,
                    Some(v) => sqlx::query(
                        "UPDATE mg_event_rules SET state = $4, pattern = $5, version = version + 1, \
                         updated_ms = $6, body = $7 WHERE owner = $1 AND bus = $2 AND name = $3 \
                         AND version = $8",
                    )
                    .bind(&r.owner)
                    .bind(&r.bus)
                    .bind(&r.name)
                    .bind(&r.state)
                    .bind(&r.pattern)
                    .bind(r.updated_ms)
                    .bind(&body)
                    .bind(v)
                    .execute(&self.pool)
                    .await?,
                };
                Ok(done.rows_affected() == 1)
            }

            async fn delete_rule(&self, owner: &str, bus: &str, name: &str) -> Result<bool> {
                let done = sqlx::query(
                    "DELETE FROM mg_event_rules WHERE owner = $1 AND bus = $2 AND name = $3",
                )
                .bind(owner)
                .bind(bus)
                .bind(name)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn record_event(&self, e: &BusEvent) -> Result<()> {
                sqlx::query(
                    "INSERT INTO mg_bus_events (id, owner, bus, ts_ms, source, detail_type, event, \
                     deliveries) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(&e.id)
                .bind(&e.owner)
                .bind(&e.bus)
                .bind(e.ts_ms)
                .bind(&e.source)
                .bind(&e.detail_type)
                .bind(e.event.to_string())
                .bind(e.deliveries.to_string())
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn event(&self, id: &str) -> Result<Option<BusEvent>> {
                let row = sqlx::query("SELECT * FROM mg_bus_events WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(Self::bus_event_from_row).transpose()
            }

            async fn events(&self, q: &BusEventQuery) -> Result<Vec<BusEvent>> {
                let (after_ts, after_id) = match &q.after {
                    Some((ts, id)) => (Some(*ts), Some(id.as_str())),
                    None => (None, None),
                };
                let rows = sqlx::query(
                    "SELECT * FROM mg_bus_events WHERE ($1 IS NULL OR owner = $1) \
                     AND ($2 IS NULL OR bus = $2) AND ($3 IS NULL OR source = $3) \
                     AND ($4 IS NULL OR detail_type = $4) AND ($5 IS NULL OR ts_ms >= $5) \
                     AND ($6 IS NULL OR ts_ms < $6) \
                     AND ($7 IS NULL OR ts_ms > $7 OR (ts_ms = $7 AND id > $8)) \
                     ORDER BY ts_ms, id LIMIT $9",
                )
                .bind(q.owner.as_deref())
                .bind(q.bus.as_deref())
                .bind(q.source.as_deref())
                .bind(q.detail_type.as_deref())
                .bind(q.since_ms)
                .bind(q.until_ms)
                .bind(after_ts)
                .bind(after_id)
                .bind(i64::try_from(q.limit.clamp(1, 1000)).unwrap_or(1000))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(Self::bus_event_from_row).collect()
            }

            async fn purge_events(&self, before_ms: i64, keep: &[(String, String, i64)]) -> Result<u64> {
                let mut sql = String::from("DELETE FROM mg_bus_events WHERE ts_ms < $1");
                for i in 0..keep.len() {
                    let b = 2 + i * 3;
                    sql.push_str(&format!(
                        " AND NOT (owner = ${b} AND bus = ${} AND ts_ms >= ${})",
                        b + 1,
                        b + 2
                    ));
                }
                let mut q = sqlx::query(&sql).bind(before_ms);
                for (owner, bus, after) in keep {
                    q = q.bind(owner).bind(bus).bind(*after);
                }
                Ok(q.execute(&self.pool).await?.rows_affected())
            }

            async fn put_object(&self, o: &BusObject, create: bool) -> Result<bool> {
                let sql = if create {
                    "INSERT INTO mg_bus_objects (kind, owner, name, updated_ms, body) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (kind, owner, name) DO NOTHING"
                } else {
                    "UPDATE mg_bus_objects SET updated_ms = $4, body = $5 \
                     WHERE kind = $1 AND owner = $2 AND name = $3"
                };
                let done = sqlx::query(sql)
                    .bind(&o.kind)
                    .bind(&o.owner)
                    .bind(&o.name)
                    .bind(o.updated_ms)
                    .bind(o.body.to_string())
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn object(&self, kind: &str, owner: &str, name: &str) -> Result<Option<BusObject>> {
                let row = sqlx::query(
                    "SELECT * FROM mg_bus_objects WHERE kind = $1 AND owner = $2 AND name = $3",
                )
                .bind(kind)
                .bind(owner)
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
                row.as_ref().map(Self::object_from_row).transpose()
            }

            async fn objects(&self, kind: &str, owner: Option<&str>) -> Result<Vec<BusObject>> {
                let rows = sqlx::query(
                    "SELECT * FROM mg_bus_objects WHERE kind = $1 AND ($2 IS NULL OR owner = $2) \
                     ORDER BY name, owner LIMIT 10000",
                )
                .bind(kind)
                .bind(owner)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(Self::object_from_row).collect()
            }

            async fn delete_object(&self, kind: &str, owner: &str, name: &str) -> Result<bool> {
                let done = sqlx::query(
                    "DELETE FROM mg_bus_objects WHERE kind = $1 AND owner = $2 AND name = $3",
                )
                .bind(kind)
                .bind(owner)
                .bind(name)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }
        }
    };
}

sql_events!(SqliteStore, SqlitePool);
sql_events!(PostgresStore, PgPool);
