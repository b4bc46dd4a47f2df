//! One conformance suite, every backend: SQLite (a temporary file), PostgreSQL and Redis (the
//! real servers named by `MODELGATE_TEST_POSTGRES_URL` / `MODELGATE_TEST_REDIS_URL`; `.ci/run`
//! sets both). Without those variables the server-backed cases are skipped locally and fail
//! under `CI`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use modelgate_store::*;
use serde_json::json;

fn unique(tag: &str) -> String {
    format!("{tag}-{}", uuid::Uuid::new_v4().simple())
}

fn server_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{var} must be set under CI so the suite runs against the real server"
            );
            eprintln!("skipping: {var} is not set");
            None
        }
    }
}

async fn sqlite() -> (SqliteStore, tempdir::Dir) {
    let dir = tempdir::Dir::new();
    let store = SqliteStore::open(&dir.path.join("state.db")).await.unwrap();
    (store, dir)
}

async fn postgres() -> Option<PostgresStore> {
    let url = server_url("MODELGATE_TEST_POSTGRES_URL")?;
    Some(PostgresStore::connect(&url).await.unwrap())
}

async fn redis() -> Option<RedisCounters> {
    let url = server_url("MODELGATE_TEST_REDIS_URL")?;
    Some(
        RedisCounters::connect(&url, &format!("{}:", unique("mgtest")))
            .await
            .unwrap(),
    )
}

/// A tiny temporary directory (removed on drop), to keep the dependency list short.
mod tempdir {
    pub struct Dir {
        pub path: std::path::PathBuf,
    }
    impl Dir {
        pub fn new() -> Self {
            let path = std::env::temp_dir().join(super::unique("mgstore"));
            std::fs::create_dir_all(&path).unwrap();
            Self { path }
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn key(team: &str) -> KeyRecord {
    KeyRecord {
        id: unique("key"),
        prefix: unique("pfx"),
        hash: "00".repeat(32),
        access_key_id: unique("AKMG"),
        team: Some(team.to_string()),
        created_ms: 1_700_000_000_000,
        expires_ms: None,
        revoked_ms: None,
        body: json!({"name": "ci", "tags": {"env": "test"}}),
    }
}

// ---------------------------------------------------------------------------------------------
// The suite.

async fn keys_round_trip(s: &dyn KeyStore) {
    let team = unique("team");
    s.put_team(&TeamRecord {
        id: team.clone(),
        updated_ms: 1,
        body: json!({"policies": []}),
    })
    .await
    .unwrap();
    s.put_team(&TeamRecord {
        id: team.clone(),
        updated_ms: 2,
        body: json!({"policies": [1]}),
    })
    .await
    .unwrap();
    let t = s.team(&team).await.unwrap().unwrap();
    assert_eq!(
        (t.updated_ms, t.body.clone()),
        (2, json!({"policies": [1]}))
    );
    assert!(s.teams().await.unwrap().iter().any(|x| x.id == team));
    assert!(s.team(&unique("none")).await.unwrap().is_none());

    let mut k = key(&team);
    s.insert_key(&k).await.unwrap();
    assert!(s.has_active_keys().await.unwrap());
    assert_eq!(s.key(&k.id).await.unwrap().as_ref(), Some(&k));
    assert_eq!(s.key_by_prefix(&k.prefix).await.unwrap().as_ref(), Some(&k));
    assert_eq!(
        s.key_by_access_key(&k.access_key_id)
            .await
            .unwrap()
            .as_ref(),
        Some(&k)
    );
    // Unique prefix and access key id.
    let mut dup = key(&team);
    dup.prefix = k.prefix.clone();
    assert!(matches!(
        s.insert_key(&dup).await,
        Err(StoreError::Conflict(_))
    ));
    let mut dup = key(&team);
    dup.access_key_id = k.access_key_id.clone();
    assert!(matches!(
        s.insert_key(&dup).await,
        Err(StoreError::Conflict(_))
    ));
    // Rotation and revocation replace the mutable fields.
    let old_prefix = k.prefix.clone();
    k.prefix = unique("pfx");
    k.hash = "11".repeat(32);
    k.revoked_ms = Some(5);
    k.expires_ms = Some(9);
    assert!(s.update_key(&k).await.unwrap());
    assert!(s.key_by_prefix(&old_prefix).await.unwrap().is_none());
    assert_eq!(s.key_by_prefix(&k.prefix).await.unwrap().as_ref(), Some(&k));
    let mut ghost = key(&team);
    ghost.id = unique("missing");
    assert!(!s.update_key(&ghost).await.unwrap());

    let k2 = KeyRecord {
        created_ms: k.created_ms + 1,
        ..key(&team)
    };
    s.insert_key(&k2).await.unwrap();
    let listed: Vec<String> = s
        .keys(Some(&team))
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(listed, vec![k.id.clone(), k2.id.clone()]);
    assert!(s.keys(None).await.unwrap().len() >= 2);
}

fn record(
    team: &str,
    key: &str,
    model: &str,
    ts_ms: i64,
    tokens: (i64, i64),
    cost: i64,
) -> UsageRecord {
    UsageRecord {
        ts_ms,
        request_id: unique("req"),
        key_id: Some(key.to_string()),
        team: Some(team.to_string()),
        model_requested: model.to_string(),
        model_served: Some(model.to_string()),
        provider: Some("mock".into()),
        route: "/v1/chat/completions".into(),
        operation: "converse".into(),
        status: 200,
        input_tokens: tokens.0,
        output_tokens: tokens.1,
        cache_read_tokens: 1,
        cache_write_tokens: 0,
        cost_nanos: cost,
        latency_ms: 12,
        streamed: false,
        cancelled: false,
    }
}

async fn usage_totals(s: &dyn UsageStore) {
    let team = unique("team");
    let day = 86_400_000;
    let t0 = 20_000 * day;
    let records = vec![
        record(&team, "k1", "m-a", t0 + 5, (10, 5), 100),
        record(&team, "k1", "m-b", t0 + 6, (20, 7), 250),
        record(&team, "k2", "m-a", t0 + day + 1, (3, 1), 9),
        // Outside the range.
        record(&team, "k2", "m-a", t0 + 3 * day, (1000, 1000), 1),
    ];
    s.append_usage(&records).await.unwrap();
    s.append_usage(&[]).await.unwrap();
    let q = |group_by: Vec<GroupBy>| UsageQuery {
        from_ms: t0,
        to_ms: t0 + 2 * day,
        group_by,
        team: Some(team.clone()),
        key_id: None,
    };
    let total = s.usage_summary(&q(vec![])).await.unwrap();
    assert_eq!(total.len(), 1);
    let t = &total[0];
    assert_eq!(
        (
            t.requests,
            t.input_tokens,
            t.output_tokens,
            t.cache_read_tokens,
            t.cost_nanos
        ),
        (3, 33, 13, 3, 359)
    );
    let by_model = s.usage_summary(&q(vec![GroupBy::Model])).await.unwrap();
    let pairs: Vec<(Option<String>, i64)> = by_model
        .iter()
        .map(|r| (r.model.clone(), r.input_tokens))
        .collect();
    assert_eq!(
        pairs,
        vec![(Some("m-a".into()), 13), (Some("m-b".into()), 20)]
    );
    let by_key_day = s
        .usage_summary(&q(vec![GroupBy::Key, GroupBy::Day]))
        .await
        .unwrap();
    let rows: Vec<(Option<String>, Option<i64>, i64)> = by_key_day
        .iter()
        .map(|r| (r.key_id.clone(), r.day, r.requests))
        .collect();
    assert_eq!(
        rows,
        vec![
            (Some("k1".into()), Some(20_000), 2),
            (Some("k2".into()), Some(20_001), 1)
        ]
    );
    assert!(by_key_day
        .iter()
        .all(|r| r.team.is_none() && r.model.is_none()));
    let one_key = s
        .usage_summary(&UsageQuery {
            key_id: Some("k2".into()),
            ..q(vec![GroupBy::Team])
        })
        .await
        .unwrap();
    assert_eq!(one_key.len(), 1);
    assert_eq!(
        (one_key[0].team.as_deref(), one_key[0].requests),
        (Some(team.as_str()), 1)
    );

    assert_eq!(
        s.spend_since(&SpendScope::Team(team.clone()), t0 + day)
            .await
            .unwrap(),
        10
    );
    assert_eq!(
        s.spend_since(&SpendScope::Key(unique("nobody")), 0)
            .await
            .unwrap(),
        0
    );
}

async fn audit_append_only(s: &dyn AuditStore) {
    let actor = unique("actor");
    let event = |ts_ms: i64, decision: &str| AuditEvent {
        ts_ms,
        actor: actor.clone(),
        action: "bedrock:InvokeModel".into(),
        resource: "arn:aws:bedrock:us-east-1::foundation-model/m".into(),
        decision: decision.into(),
        statement: Some("AllowSonnet".into()),
        source_ip: Some("127.0.0.1".into()),
        request_id: Some(unique("req")),
        detail: json!({"reason": "x"}),
    };
    s.append_audit(&[event(10, "allow"), event(20, "deny"), event(30, "allow")])
        .await
        .unwrap();
    let got = s
        .audit(&AuditQuery {
            from_ms: 0,
            to_ms: 25,
            actor: Some(actor.clone()),
            limit: 10,
        })
        .await
        .unwrap();
    let seen: Vec<(i64, String)> = got.iter().map(|e| (e.ts_ms, e.decision.clone())).collect();
    assert_eq!(seen, vec![(20, "deny".into()), (10, "allow".into())]);
    assert_eq!(got[0].detail, json!({"reason": "x"}));
    let limited = s
        .audit(&AuditQuery {
            from_ms: 0,
            to_ms: 100,
            actor: Some(actor),
            limit: 1,
        })
        .await
        .unwrap();
    assert_eq!(limited.len(), 1);
    assert_eq!(limited[0].ts_ms, 30);
}

async fn counters_behave(c: &dyn Counters) {
    // GCRA: 10/s with a burst of 20 lets 20 through at once, then refuses with a wait.
    let rate = Rate {
        per_period: 10,
        period: Duration::from_secs(1),
        burst: 20,
    };
    let bucket = unique("rps");
    let mut allowed = 0;
    let mut waits = Vec::new();
    for _ in 0..30 {
        let a = c.take(&bucket, rate, 1, false).await.unwrap();
        if a.allowed {
            allowed += 1;
        } else {
            waits.push(a.retry_after);
        }
    }
    assert_eq!(allowed, 20);
    assert!(waits
        .iter()
        .all(|w| *w > Duration::ZERO && *w <= Duration::from_millis(101)));
    // Another bucket is unaffected.
    assert!(
        c.take(&unique("rps"), rate, 1, false)
            .await
            .unwrap()
            .allowed
    );

    // Token buckets settle: a forced overshoot blocks, a refund frees.
    let tpm = Rate {
        per_period: 1000,
        period: Duration::from_secs(60),
        burst: 1000,
    };
    let tokens = unique("tpm");
    assert!(c.take(&tokens, tpm, 600, false).await.unwrap().allowed);
    assert!(!c.take(&tokens, tpm, 600, false).await.unwrap().allowed);
    let forced = c.take(&tokens, tpm, 500, true).await.unwrap();
    assert!(forced.allowed);
    assert_eq!(forced.remaining, 0);
    assert!(!c.take(&tokens, tpm, 1, false).await.unwrap().allowed);
    c.take(&tokens, tpm, -1000, true).await.unwrap();
    assert!(c.take(&tokens, tpm, 800, false).await.unwrap().allowed);

    // Concurrency slots.
    let slots = unique("conc");
    let lease = Duration::from_secs(60);
    assert!(c.enter(&slots, 2, lease).await.unwrap());
    assert!(c.enter(&slots, 2, lease).await.unwrap());
    assert!(!c.enter(&slots, 2, lease).await.unwrap());
    c.leave(&slots).await.unwrap();
    assert!(c.enter(&slots, 2, lease).await.unwrap());
    c.leave(&slots).await.unwrap();
    c.leave(&slots).await.unwrap();
    c.leave(&slots).await.unwrap(); // never below zero
    assert!(c.enter(&slots, 1, lease).await.unwrap());

    // Totals: seeded once, then added to; they expire.
    let total = unique("spend");
    assert_eq!(c.get(&total).await.unwrap(), None);
    assert_eq!(c.add(&total, 5, lease, 100).await.unwrap(), 105);
    assert_eq!(c.add(&total, 7, lease, 100).await.unwrap(), 112);
    assert_eq!(c.get(&total).await.unwrap(), Some(112));
    let short = unique("spend");
    c.add(&short, 1, Duration::from_millis(50), 0)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(c.get(&short).await.unwrap(), None);
}

/// Many tasks taking from one bucket at once admit exactly the burst.
async fn counters_are_atomic(c: Arc<dyn Counters>) {
    let rate = Rate {
        per_period: 1,
        period: Duration::from_secs(3600),
        burst: 25,
    };
    let bucket = unique("race");
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let c = Arc::clone(&c);
            let bucket = bucket.clone();
            tokio::spawn(async move { c.take(&bucket, rate, 1, false).await.unwrap().allowed })
        })
        .collect();
    let mut allowed = 0;
    for t in tasks {
        if t.await.unwrap() {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 25);
}

fn invocation(key: &str, ts_ms: i64, status: i64, latency_us: i64) -> InvocationRecord {
    InvocationRecord {
        id: 0,
        ts_ms,
        request_id: unique("req"),
        trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
        key_id: Some(key.to_string()),
        team: Some(format!("{key}-team")),
        source_ip: Some("127.0.0.1".into()),
        dialect: "openai".into(),
        route: "POST /v1/chat/completions".into(),
        operation: Some("converse".into()),
        model_requested: Some("main".into()),
        model_routed: Some("main".into()),
        model_served: Some(if status == 200 { "main" } else { "backup" }.into()),
        provider: Some("up".into()),
        status,
        error_category: (status >= 400).then(|| "upstream".to_string()),
        error_code: None,
        attempts: 2,
        fallback_reason: None,
        input_tokens: 7,
        output_tokens: 3,
        cache_read_tokens: 0,
        cache_write_tokens: 0,
        cost_nanos: 1234,
        latency_us,
        ttft_us: Some(latency_us / 2),
        streamed: false,
        cancelled: false,
        params: json!({"max_tokens": 16, "temperature": 0.5}),
        request_body: Some("{\"messages\":[]}".into()),
        response_body: None,
        routing: Some(json!({"router": "support-bot", "model": "small", "arm": "control"})),
    }
}

async fn invocations_query_page_and_purge(s: &dyn InvocationStore) {
    let key = unique("key");
    let t0 = 1_700_000_000_000;
    let mut written = Vec::new();
    for i in 0..25 {
        let status = if i % 5 == 0 { 502 } else { 200 };
        written.push(invocation(&key, t0 + i * 1000, status, 1000 * (i + 1)));
    }
    s.append_invocations(&written).await.unwrap();
    let mine = |q: InvocationQuery| InvocationQuery {
        key_id: Some(key.clone()),
        ..q
    };

    // Newest first, round-tripped whole, ids increasing with insertion.
    let all = s
        .invocations(&mine(InvocationQuery {
            limit: 100,
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(all.len(), 25);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id));
    let mut first = all.last().unwrap().clone();
    first.id = 0;
    assert_eq!(first, written[0]);

    // Cursor paging visits every record once.
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = s
            .invocations(&mine(InvocationQuery {
                before_id: before,
                limit: 10,
                ..Default::default()
            }))
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        before = page.last().map(|r| r.id);
        seen.extend(page.into_iter().map(|r| r.id));
    }
    assert_eq!(seen, all.iter().map(|r| r.id).collect::<Vec<_>>());

    // Following: oldest first after an id.
    let after = all[5].id;
    let newer = s
        .invocations(&mine(InvocationQuery {
            after_id: Some(after),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(newer.len(), 5);
    assert!(newer.windows(2).all(|w| w[0].id < w[1].id));

    // Filters: status range, error category, latency, time range, model, request id.
    let errors = s
        .invocations(&mine(InvocationQuery {
            status: (500, 599),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(errors.len(), 5);
    assert!(errors.iter().all(|r| r.status == 502));
    let upstream = s
        .invocations(&mine(InvocationQuery {
            error_category: Some("upstream".into()),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(upstream.len(), 5);
    let slow = s
        .invocations(&mine(InvocationQuery {
            min_latency_us: 20_000,
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(slow.len(), 6);
    let window = s
        .invocations(&mine(InvocationQuery {
            from_ms: t0 + 10_000,
            to_ms: t0 + 15_000,
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(window.len(), 5);
    let backup = s
        .invocations(&mine(InvocationQuery {
            model: Some("backup".into()),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(backup.len(), 5);
    let one = s
        .invocations(&InvocationQuery {
            request_id: Some(written[3].request_id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].request_id, written[3].request_id);

    // Purge removes what is older than the cut and nothing newer.
    let removed = s.purge_invocations(t0 + 10_000).await.unwrap();
    assert!(removed >= 10, "removed {removed}");
    let left = s
        .invocations(&mine(InvocationQuery::default()))
        .await
        .unwrap();
    assert_eq!(left.len(), 15);
    assert!(left.iter().all(|r| r.ts_ms >= t0 + 10_000));
}

/// Versions number from 1 per kind, keep who and why, read back newest first, and a writer
/// that expected another latest version is refused; concurrent writers never share a number.
async fn config_versions_behave(s: Arc<dyn ConfigVersions>) {
    let kind = unique("routing");
    assert_eq!(s.version(&kind, None).await.unwrap(), None);
    let v1 = s
        .append_version(
            &kind,
            "file:a.toml",
            "first",
            &json!({"routers": []}),
            Some(0),
        )
        .await
        .unwrap();
    assert_eq!(v1.version, 1);
    let v2 = s
        .append_version(&kind, "key-1", "canary 10%", &json!({"routers": [1]}), None)
        .await
        .unwrap();
    assert_eq!(v2.version, 2);
    let stale = s
        .append_version(&kind, "key-2", "late", &json!({}), Some(1))
        .await;
    assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");
    assert_eq!(s.version(&kind, None).await.unwrap(), Some(v2.clone()));
    assert_eq!(s.version(&kind, Some(1)).await.unwrap(), Some(v1.clone()));
    assert_eq!(s.version(&kind, Some(9)).await.unwrap(), None);
    let listed = s.versions(&kind, 10).await.unwrap();
    assert_eq!(listed, vec![v2.clone(), v1.clone()]);
    assert_eq!(s.versions(&kind, 1).await.unwrap(), vec![v2]);
    // Another kind has its own numbering.
    let other = unique("other");
    let o1 = s
        .append_version(&other, "admin", "", &json!(null), None)
        .await
        .unwrap();
    assert_eq!(o1.version, 1);
    // Eight writers at once: each append either lands with its own number or is refused.
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let (s, kind) = (Arc::clone(&s), kind.clone());
            tokio::spawn(async move {
                s.append_version(&kind, "w", &i.to_string(), &json!(i), None)
                    .await
            })
        })
        .collect();
    let mut numbers = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(v) => numbers.push(v.version),
            Err(StoreError::Conflict(_) | StoreError::Unavailable(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    let mut unique_numbers = numbers.clone();
    unique_numbers.sort_unstable();
    unique_numbers.dedup();
    assert_eq!(unique_numbers.len(), numbers.len());
    assert!(!numbers.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Backends.

#[tokio::test]
async fn sqlite_keys() {
    let (s, _d) = sqlite().await;
    keys_round_trip(&s).await;
}

#[tokio::test]
async fn sqlite_knows_when_no_key_is_active() {
    let (s, _d) = sqlite().await;
    assert!(!s.has_active_keys().await.unwrap());
    let mut k = key("t");
    s.insert_key(&k).await.unwrap();
    assert!(s.has_active_keys().await.unwrap());
    k.revoked_ms = Some(1);
    s.update_key(&k).await.unwrap();
    assert!(!s.has_active_keys().await.unwrap());
}

#[tokio::test]
async fn sqlite_usage() {
    let (s, _d) = sqlite().await;
    usage_totals(&s).await;
}

#[tokio::test]
async fn sqlite_audit() {
    let (s, _d) = sqlite().await;
    audit_append_only(&s).await;
    // Append-only is enforced by the database itself.
    assert!(sqlx::query("DELETE FROM mg_audit")
        .execute(s.pool())
        .await
        .is_err());
}

#[tokio::test]
async fn sqlite_invocations() {
    let (s, _d) = sqlite().await;
    invocations_query_page_and_purge(&s).await;
}

#[tokio::test]
async fn sqlite_reopens_with_its_data_and_migrations_applied_once() {
    let dir = tempdir::Dir::new();
    let path = dir.path.join("state.db");
    let k = key("t");
    {
        let s = SqliteStore::open(&path).await.unwrap();
        s.insert_key(&k).await.unwrap();
    }
    let s = SqliteStore::open(&path).await.unwrap();
    assert_eq!(s.key(&k.id).await.unwrap(), Some(k));
}

#[tokio::test]
async fn sqlite_config_versions() {
    let (s, _d) = sqlite().await;
    config_versions_behave(Arc::new(s)).await;
}

#[tokio::test]
async fn postgres_config_versions() {
    if let Some(s) = postgres().await {
        config_versions_behave(Arc::new(s)).await;
    }
}

#[tokio::test]
async fn memory_counters() {
    counters_behave(&MemoryCounters::default()).await;
    counters_are_atomic(Arc::new(MemoryCounters::default())).await;
}

#[tokio::test]
async fn postgres_keys() {
    if let Some(s) = postgres().await {
        keys_round_trip(&s).await;
    }
}

#[tokio::test]
async fn postgres_usage() {
    if let Some(s) = postgres().await {
        usage_totals(&s).await;
    }
}

#[tokio::test]
async fn postgres_audit() {
    if let Some(s) = postgres().await {
        audit_append_only(&s).await;
        assert!(sqlx::query("UPDATE mg_audit SET decision = 'allow'")
            .execute(s.pool())
            .await
            .is_err());
    }
}

#[tokio::test]
async fn postgres_invocations() {
    if let Some(s) = postgres().await {
        invocations_query_page_and_purge(&s).await;
    }
}

#[tokio::test]
async fn redis_counters() {
    if let Some(c) = redis().await {
        counters_behave(&c).await;
        counters_are_atomic(Arc::new(c)).await;
    }
}

fn cache_key(ns: &str, model: &str, scope: &str, hash: u128) -> CacheKey {
    CacheKey {
        namespace: ns.into(),
        model: model.into(),
        scope: scope.into(),
        hash,
    }
}

/// Entries round-trip as bytes, expire, and are listed and removed by every filter field —
/// with names that hold the characters a Redis pattern would read as globs or separators.
async fn cache_behaves(c: &dyn CacheStore) {
    let model = "anthropic.claude-3:0*[x]?";
    let a = cache_key("default", model, "team:red", 1);
    let b = cache_key("default", model, "team:blue", 2);
    let other = cache_key("blue-ns", "gpt-4o", "key:k1", u128::MAX);
    let hour = Duration::from_secs(3600);
    for k in [&a, &b, &other] {
        let value = bytes::Bytes::from(format!("answer for {}", k.scope).into_bytes());
        c.put(k, value, hour).await.unwrap();
    }
    assert_eq!(
        c.get(&a).await.unwrap().as_deref(),
        Some(&b"answer for team:red"[..])
    );
    assert_eq!(
        c.get(&cache_key("default", model, "team:red", 3))
            .await
            .unwrap(),
        None
    );
    // A pattern character in a name matches only itself.
    assert_eq!(
        c.get(&cache_key(
            "default",
            "anthropic.claude-3:0xxx",
            "team:red",
            1
        ))
        .await
        .unwrap(),
        None
    );

    // Replacing keeps one entry.
    c.put(&a, bytes::Bytes::from_static(b"newer"), hour)
        .await
        .unwrap();
    assert_eq!(c.get(&a).await.unwrap().as_deref(), Some(&b"newer"[..]));

    let by_model = CacheFilter {
        model: Some(model.into()),
        ..Default::default()
    };
    let mut listed = c.entries(&by_model, 100).await.unwrap();
    listed.sort_by_key(|e| e.key.hash);
    assert_eq!(
        listed.iter().map(|e| e.key.clone()).collect::<Vec<_>>(),
        vec![a.clone(), b.clone()]
    );
    assert_eq!(listed[0].bytes, 5);
    assert!(listed[0].expires_at_ms > 0);
    let by_scope = CacheFilter {
        scope: Some("key:k1".into()),
        ..Default::default()
    };
    assert_eq!(c.entries(&by_scope, 100).await.unwrap().len(), 1);
    assert_eq!(
        c.entries(&CacheFilter::default(), 1).await.unwrap().len(),
        1
    );

    // Remove by hash, then by namespace, then everything.
    let by_hash = CacheFilter {
        hash: Some(2),
        ..Default::default()
    };
    assert_eq!(c.remove(&by_hash).await.unwrap(), 1);
    assert_eq!(c.get(&b).await.unwrap(), None);
    let by_ns = CacheFilter {
        namespace: Some("blue-ns".into()),
        ..Default::default()
    };
    assert_eq!(c.remove(&by_ns).await.unwrap(), 1);
    assert_eq!(c.get(&other).await.unwrap(), None);
    assert_eq!(c.remove(&CacheFilter::default()).await.unwrap(), 1);
    assert!(c
        .entries(&CacheFilter::default(), 100)
        .await
        .unwrap()
        .is_empty());

    // Expiry.
    c.put(
        &a,
        bytes::Bytes::from_static(b"brief"),
        Duration::from_millis(50),
    )
    .await
    .unwrap();
    assert!(c.get(&a).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(c.get(&a).await.unwrap(), None);
    assert!(c
        .entries(&CacheFilter::default(), 100)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn memory_cache() {
    cache_behaves(&MemoryCache::new(1 << 20)).await;
    // Bounded by bytes: the least recently used go first.
    let c = MemoryCache::new(1000);
    for i in 0..20u128 {
        let k = cache_key("default", "m", "global", i);
        c.put(
            &k,
            bytes::Bytes::from(vec![0u8; 200]),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
        assert!(c.bytes() <= 1000);
    }
    assert!(c.len() < 20 && !c.is_empty());
    assert!(c
        .get(&cache_key("default", "m", "global", 19))
        .await
        .unwrap()
        .is_some());
    assert!(c
        .get(&cache_key("default", "m", "global", 0))
        .await
        .unwrap()
        .is_none());
    // An entry larger than the whole cache is not stored.
    let big = cache_key("default", "m", "global", 99);
    c.put(
        &big,
        bytes::Bytes::from(vec![0u8; 2000]),
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert!(c.get(&big).await.unwrap().is_none());
}

#[tokio::test]
async fn redis_cache() {
    if let Some(url) = server_url("MODELGATE_TEST_REDIS_URL") {
        let c = RedisCache::connect(&url, &format!("{}:", unique("mgtest")))
            .await
            .unwrap();
        cache_behaves(&c).await;
    }
}

#[tokio::test]
async fn redis_vector_log() {
    let Some(url) = server_url("MODELGATE_TEST_REDIS_URL") else {
        return;
    };
    let log = RedisCache::connect(&url, &format!("{}:", unique("mgtest")))
        .await
        .unwrap();
    let key = cache_key("default", "model:*", "team:red", 0);
    let hour = Duration::from_secs(3600);
    let rec = |s: &str| bytes::Bytes::from(s.to_string().into_bytes());
    for r in ["a", "b", "c"] {
        log.append(&key, 7, rec(r), 3, hour).await.unwrap();
    }
    // Full: a fourth record is not taken.
    log.append(&key, 7, rec("d"), 3, hour).await.unwrap();
    let (start, all) = log.read(&key, 7, 0).await.unwrap();
    assert_eq!((start, all), (0, vec![rec("a"), rec("b"), rec("c")]));
    let (start, tail) = log.read(&key, 7, 2).await.unwrap();
    assert_eq!((start, tail), (2, vec![rec("c")]));
    assert_eq!(log.read(&key, 7, 3).await.unwrap(), (3, vec![]));
    // Another partition, another scope: separate logs.
    assert_eq!(log.read(&key, 8, 0).await.unwrap(), (0, vec![]));
    let blue = cache_key("default", "model:*", "team:blue", 0);
    log.append(&blue, 7, rec("x"), 3, hour).await.unwrap();
    // Dropping red's logs leaves blue's; a reader past the end starts again from 0.
    let red = CacheFilter {
        scope: Some("team:red".into()),
        ..Default::default()
    };
    assert_eq!(log.remove_logs(&red).await.unwrap(), 1);
    log.append(&key, 7, rec("new"), 3, hour).await.unwrap();
    assert_eq!(log.read(&key, 7, 3).await.unwrap(), (0, vec![rec("new")]));
    assert_eq!(log.read(&blue, 7, 0).await.unwrap(), (0, vec![rec("x")]));
    // The logs are not cache entries.
    assert!(log
        .entries(&CacheFilter::default(), 100)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(log.remove_logs(&CacheFilter::default()).await.unwrap(), 2);
}

/// Guardrails: a draft, versions numbered from 1 (concurrently too), unique names among
/// drafts, deletion of one version or all.
async fn guardrails_behave(s: Arc<dyn GuardrailStore>) {
    let id = unique("g").replace('-', "");
    let name = unique("name");
    let body = json!({"name": name, "blockedInputMessaging": "a", "blockedOutputsMessaging": "b"});
    let draft = s.create_guardrail(&id, &name, &body).await.unwrap();
    assert_eq!(draft.version, 0);
    assert!(matches!(
        s.create_guardrail(&format!("{id}x"), &name, &body).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(s
        .create_guardrail_version("nosuch", &body)
        .await
        .unwrap()
        .is_none());
    let v1 = s
        .create_guardrail_version(&id, &body)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v1.version, 1);
    let changed =
        json!({"name": name, "blockedInputMessaging": "changed", "blockedOutputsMessaging": "b"});
    assert!(s
        .update_guardrail(&id, &name, &changed)
        .await
        .unwrap()
        .is_some());
    assert!(s
        .update_guardrail("nosuch", &name, &changed)
        .await
        .unwrap()
        .is_none());
    // Versions are snapshots: version 1 keeps the old body.
    assert_eq!(s.guardrail(&id, 1).await.unwrap().unwrap().body, body);
    assert_eq!(s.guardrail(&id, 0).await.unwrap().unwrap().body, changed);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (s, id, changed) = (Arc::clone(&s), id.clone(), changed.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                match s.create_guardrail_version(&id, &changed).await {
                    Ok(v) => return v.unwrap().version,
                    Err(StoreError::Conflict(_)) => continue,
                    Err(StoreError::Unavailable(e))
                        if e.contains("locked") || e.contains("busy") =>
                    {
                        continue
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }));
    }
    let mut numbers = Vec::new();
    for t in tasks {
        numbers.push(t.await.unwrap());
    }
    numbers.sort_unstable();
    assert_eq!(numbers, vec![2, 3, 4, 5]);
    let all = s.list_guardrails(Some(&id)).await.unwrap();
    assert_eq!(
        all.iter().map(|r| r.version).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4, 5]
    );
    assert!(s
        .list_guardrails(None)
        .await
        .unwrap()
        .iter()
        .any(|r| r.id == id && r.version == 0));
    assert!(s.delete_guardrail(&id, Some(2)).await.unwrap());
    assert!(!s.delete_guardrail(&id, Some(2)).await.unwrap());
    assert!(s.guardrail(&id, 2).await.unwrap().is_none());
    assert!(s.delete_guardrail(&id, None).await.unwrap());
    assert!(s.list_guardrails(Some(&id)).await.unwrap().is_empty());
    // The name is free again.
    s.create_guardrail(&id, &name, &body).await.unwrap();
}

#[tokio::test]
async fn sqlite_guardrails() {
    let (s, _d) = sqlite().await;
    guardrails_behave(Arc::new(s)).await;
}

#[tokio::test]
async fn postgres_guardrails() {
    if let Some(s) = postgres().await {
        guardrails_behave(Arc::new(s)).await;
    }
}

/// Prompts: versions like guardrails but in their own namespace; the review trail and the
/// render records keep their order and survive the prompt's deletion.
async fn prompts_behave(s: Arc<dyn PromptStore>) {
    let id = unique("p").replace('-', "");
    let name = unique("prompt");
    let body = json!({"name": name, "variants": []});
    s.create_prompt(&id, &name, &body).await.unwrap();
    assert!(matches!(
        s.create_prompt(&format!("{id}x"), &name, &body).await,
        Err(StoreError::Conflict(_))
    ));
    let v1 = s.create_prompt_version(&id, &body).await.unwrap().unwrap();
    assert_eq!(v1.version, 1);
    let changed = json!({"name": name, "description": "two"});
    s.update_prompt(&id, &name, &changed)
        .await
        .unwrap()
        .unwrap();
    let v2 = s
        .create_prompt_version(&id, &changed)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v2.version, 2);
    assert_eq!(s.prompt(&id, 1).await.unwrap().unwrap().body, body);
    assert_eq!(
        s.list_prompts(Some(&id))
            .await
            .unwrap()
            .iter()
            .map(|r| r.version)
            .collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    for (version, state, actor) in [
        (1, "submitted", "alice"),
        (1, "approved", "bob"),
        (1, "published", "admin"),
    ] {
        s.add_review(&ReviewRecord {
            prompt_id: id.clone(),
            version,
            state: state.into(),
            actor: actor.into(),
            note: String::new(),
            ts_ms: 1,
        })
        .await
        .unwrap();
    }
    let trail = s.reviews(&id).await.unwrap();
    assert_eq!(
        trail
            .iter()
            .map(|r| (r.state.as_str(), r.actor.as_str()))
            .collect::<Vec<_>>(),
        vec![
            ("submitted", "alice"),
            ("approved", "bob"),
            ("published", "admin")
        ]
    );
    let render = |version: i64, ts_ms: i64| RenderRecord {
        ts_ms,
        prompt_id: id.clone(),
        version,
        caller: "key-1".into(),
        request_id: format!("req-{ts_ms}"),
        source: "endpoint:generate".into(),
        status: 200,
        latency_ms: 12,
        input_tokens: 30,
        output_tokens: 7,
    };
    s.add_renders(&[render(1, 100), render(2, 200), render(2, 300)])
        .await
        .unwrap();
    let recent = s.renders(&id, 150, 10).await.unwrap();
    assert_eq!(recent.len(), 2);
    assert_eq!(recent[0], render(2, 300));
    assert_eq!(s.renders(&id, 0, 1).await.unwrap().len(), 1);
    assert!(s.delete_prompt(&id, None).await.unwrap());
    assert!(s.prompt(&id, 1).await.unwrap().is_none());
    assert_eq!(s.reviews(&id).await.unwrap().len(), 3);
    assert_eq!(s.renders(&id, 0, 10).await.unwrap().len(), 3);
}

#[tokio::test]
async fn sqlite_prompts() {
    let (s, _d) = sqlite().await;
    let s = Arc::new(s);
    prompts_behave(s.clone()).await;
    // Prompts and guardrails are separate namespaces: one name in both.
    s.create_guardrail("gsame", "same", &json!({}))
        .await
        .unwrap();
    s.create_prompt("psame", "same", &json!({})).await.unwrap();
    assert!(s.guardrail("psame", 0).await.unwrap().is_none());
}

#[tokio::test]
async fn postgres_prompts() {
    if let Some(s) = postgres().await {
        prompts_behave(Arc::new(s)).await;
    }
}

/// Stored responses: owner-scoped reads and deletes, replace on the same id, retention purge.
async fn responses_behave(s: Arc<dyn ResponseStore>) {
    let id = unique("resp");
    let owner = unique("key");
    let record = ResponseRecord {
        id: id.clone(),
        owner: owner.clone(),
        created_ms: 1_000,
        previous_id: Some("resp_before".into()),
        input: json!([{"type": "message", "role": "user", "content": "hi \u{1F30D} \"q\""}]),
        response: json!({"id": id, "output": [], "status": "completed"}),
    };
    s.put_response(&record).await.unwrap();
    assert_eq!(s.response(&owner, &id).await.unwrap(), Some(record.clone()));
    // Someone else's id reads as missing, and cannot be deleted by them.
    assert_eq!(s.response("key:other", &id).await.unwrap(), None);
    assert!(!s.delete_response("key:other", &id).await.unwrap());
    // The same id again replaces it (a response finished after it was first stored).
    let done = ResponseRecord {
        response: json!({"id": id, "status": "incomplete"}),
        ..record.clone()
    };
    s.put_response(&done).await.unwrap();
    assert_eq!(s.response(&owner, &id).await.unwrap(), Some(done));
    // A chain comes back newest first in one call, bounded, and stops at a gap.
    let link = |n: u32, previous: Option<String>| ResponseRecord {
        id: format!("{id}-{n}"),
        previous_id: previous,
        ..record.clone()
    };
    let links: Vec<ResponseRecord> = (0..4)
        .map(|n| link(n, (n > 0).then(|| format!("{id}-{}", n - 1))))
        .collect();
    for l in &links {
        s.put_response(l).await.unwrap();
    }
    let ids = |v: Vec<ResponseRecord>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let last = format!("{id}-3");
    assert_eq!(
        ids(s.response_chain(&owner, &last, 10).await.unwrap()),
        [3, 2, 1, 0].map(|n| format!("{id}-{n}"))
    );
    assert_eq!(s.response_chain(&owner, &last, 2).await.unwrap().len(), 2);
    assert!(s
        .response_chain("key:other", &last, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(s.delete_response(&owner, &format!("{id}-1")).await.unwrap());
    let cut = s.response_chain(&owner, &last, 10).await.unwrap();
    assert_eq!(cut.len(), 2);
    assert_eq!(
        cut[1].previous_id.as_deref(),
        Some(format!("{id}-1").as_str())
    );
    assert!(s.delete_response(&owner, &id).await.unwrap());
    assert!(!s.delete_response(&owner, &id).await.unwrap());
    assert_eq!(s.response(&owner, &id).await.unwrap(), None);
    // Retention: only what is older than the cut goes.
    let old = ResponseRecord {
        id: unique("resp"),
        created_ms: 5,
        ..record.clone()
    };
    let new = ResponseRecord {
        id: unique("resp"),
        created_ms: now_ms(),
        ..record
    };
    s.put_response(&old).await.unwrap();
    s.put_response(&new).await.unwrap();
    assert!(s.purge_responses(10).await.unwrap() >= 1);
    assert_eq!(s.response(&owner, &old.id).await.unwrap(), None);
    assert!(s.response(&owner, &new.id).await.unwrap().is_some());
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test]
async fn sqlite_responses() {
    let (s, _d) = sqlite().await;
    responses_behave(Arc::new(s)).await;
}

#[tokio::test]
async fn postgres_responses() {
    if let Some(s) = postgres().await {
        responses_behave(Arc::new(s)).await;
    }
}

/// A PostgreSQL database of its own (dropped at the end), for the queue suite: receiving is
/// global, so jobs left by another run must not be received by this one.
async fn fresh_postgres() -> Option<(PostgresStore, String, String)> {
    let url = server_url("MODELGATE_TEST_POSTGRES_URL")?;
    let admin = PostgresStore::connect(&url).await.unwrap();
    let db = unique("mgq").replace('-', "_");
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(admin.pool())
        .await
        .unwrap();
    let (base, _) = url.rsplit_once('/').unwrap();
    let store = PostgresStore::connect(&format!("{base}/{db}"))
        .await
        .unwrap();
    Some((store, url, db))
}

async fn drop_postgres(url: &str, db: &str) {
    let admin = PostgresStore::connect(url).await.unwrap();
    sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .execute(admin.pool())
        .await
        .unwrap();
}

fn new_job(id: &str, priority: i64) -> NewJob {
    NewJob {
        id: id.into(),
        kind: "job".into(),
        owner: "alice".into(),
        priority,
        max_receives: 3,
        request: json!({"path": "/v1/chat/completions", "n": id}),
        meta: json!({}),
        ..NewJob::default()
    }
}

const VIS: Duration = Duration::from_secs(600);

/// The queue: idempotent enqueue, urgency order, leases that make result recording exactly
/// once, visibility timeouts, the dead-letter queue and redrive, cancellation, skipped models,
/// batch counts, callback deliveries, paging — and concurrent receivers never sharing a job.
async fn queue_behaves(q: Arc<dyn JobQueue>) {
    // Enqueue, idempotently.
    let mut a = new_job("a", 5);
    a.idem_key = Some("key-a".into());
    let made = q
        .enqueue(&[a.clone(), new_job("b", 0), new_job("c", 9)])
        .await
        .unwrap();
    assert!(made.iter().all(|(_, created)| *created));
    assert_eq!(made[0].0.state, JobState::Queued);
    let mut again = a.clone();
    again.id = "a2".into();
    let repeat = q.enqueue(&[again]).await.unwrap();
    assert_eq!((repeat[0].0.id.as_str(), repeat[0].1), ("a", false));
    assert!(q.job("a2").await.unwrap().is_none());
    // Twice in one call: the first is made, the second is it.
    let mut x1 = new_job("x1", 5);
    x1.idem_key = Some("key-x".into());
    let mut x2 = x1.clone();
    x2.id = "x2".into();
    let both = q.enqueue(&[x1, x2]).await.unwrap();
    assert_eq!(
        both.iter()
            .map(|(j, c)| (j.id.as_str(), *c))
            .collect::<Vec<_>>(),
        [("x1", true), ("x1", false)]
    );
    assert_eq!(
        q.cancel("x1", None).await.unwrap().unwrap().state,
        JobState::Cancelled
    );

    // Most urgent first (all three waited the same time).
    let got = q.receive(2, VIS, &[]).await.unwrap();
    assert_eq!(
        got.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
        ["b", "a"]
    );
    assert!(got
        .iter()
        .all(|j| j.state == JobState::Running && j.receives == 1));
    let b = &got[0];
    assert!(q.heartbeat("b", b.lease(), VIS).await.unwrap());
    assert!(!q.heartbeat("b", b.lease() + 1, VIS).await.unwrap());
    // Exactly once: the second recording with the same lease finds nothing to record.
    let end = JobEnd::Succeeded(json!({"status": 200, "body": {"ok": "b"}}));
    assert!(q.complete("b", b.lease(), &end).await.unwrap());
    assert!(!q.complete("b", b.lease(), &end).await.unwrap());
    let b = q.job("b").await.unwrap().unwrap();
    assert_eq!(b.state, JobState::Succeeded);
    assert_eq!(b.result.unwrap()["body"]["ok"], "b");
    assert!(b.ended_ms.is_some() && b.hook_state.is_none());

    // A lease that runs out: the job is received again, and the first worker cannot record.
    let c = q.receive(1, Duration::from_millis(1), &[]).await.unwrap();
    assert_eq!(c[0].id, "c");
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(q.requeue_expired().await.unwrap() >= 1);
    let c2 = q.receive(1, VIS, &[]).await.unwrap();
    assert_eq!((c2[0].id.as_str(), c2[0].receives), ("c", 2));
    assert!(c2[0].last_error.as_deref().unwrap().contains("visibility"));
    assert!(!q.complete("c", c[0].lease(), &end).await.unwrap());
    assert!(q.complete("c", c2[0].lease(), &end).await.unwrap());

    // Many results in one transaction: only current leases are recorded.
    let mut g1 = new_job("g1", 0);
    g1.callback = Some("https://example.com/hook".into());
    q.enqueue(&[g1, new_job("g2", 0)]).await.unwrap();
    let g = q.receive(2, VIS, &[]).await.unwrap();
    assert_eq!(g.len(), 2);
    let failed = JobEnd::Failed(json!({"status": 400}), "bad input".into());
    let done = q
        .complete_many(&[
            ("g1".into(), g[0].lease(), end.clone()),
            ("g2".into(), g[1].lease() + 7, failed.clone()),
            ("nope".into(), 1, end.clone()),
        ])
        .await
        .unwrap();
    assert_eq!(done, [true, false, false]);
    let g1 = q.job("g1").await.unwrap().unwrap();
    assert_eq!(
        (g1.state, g1.hook_state.as_deref()),
        (JobState::Succeeded, Some("pending"))
    );
    assert_eq!(q.job("g2").await.unwrap().unwrap().state, JobState::Running);
    assert_eq!(
        q.complete_many(&[("g2".into(), g[1].lease(), failed)])
            .await
            .unwrap(),
        [true]
    );
    let g2 = q.job("g2").await.unwrap().unwrap();
    assert_eq!(
        (g2.state, g2.last_error.as_deref()),
        (JobState::Failed, Some("bad input"))
    );
    // (g1's webhook is delivered below with the others'.)
    q.record_delivery(
        &Delivery {
            job_id: "g1".into(),
            attempt: 1,
            ts_ms: 1,
            status: Some(200),
            error: None,
            latency_ms: 1,
        },
        HookNext::Delivered,
    )
    .await
    .unwrap();

    // Failed attempts: queued again with backoff, then dead-lettered with the last error.
    let a = &got[1];
    assert_eq!(
        q.retry("a", a.lease(), "boom 1", Duration::ZERO, false)
            .await
            .unwrap(),
        Requeued::Queued
    );
    // A busy model's refusal does not use up a receive.
    let a = q.receive(1, VIS, &[]).await.unwrap().remove(0);
    assert_eq!(
        q.retry("a", a.lease(), "busy", Duration::ZERO, true)
            .await
            .unwrap(),
        Requeued::Queued
    );
    let a = q.receive(1, VIS, &[]).await.unwrap().remove(0);
    assert_eq!(
        q.retry("a", a.lease(), "boom 3", Duration::from_secs(3600), false)
            .await
            .unwrap(),
        Requeued::Queued
    );
    // Backoff: not visible yet.
    assert!(q.receive(1, VIS, &[]).await.unwrap().is_empty());
    assert_eq!(
        q.retry("a", a.lease(), "late", Duration::ZERO, false)
            .await
            .unwrap(),
        Requeued::LeaseLost
    );
    let mut d = new_job("d", 0);
    d.max_receives = 1;
    d.callback = Some("https://example.com/hook".into());
    q.enqueue(&[d]).await.unwrap();
    let d = q.receive(1, VIS, &[]).await.unwrap().remove(0);
    assert_eq!(
        q.retry("d", d.lease(), "the model failed", Duration::ZERO, false)
            .await
            .unwrap(),
        Requeued::Dead
    );
    let d = q.job("d").await.unwrap().unwrap();
    assert_eq!(d.state, JobState::Dead);
    assert_eq!(d.last_error.as_deref(), Some("the model failed"));
    assert_eq!(d.hook_state.as_deref(), Some("pending"));
    // Redrive: runs again with fresh receives, its count still growing.
    assert_eq!(q.redrive(Some("d")).await.unwrap(), 1);
    assert_eq!(q.redrive(Some("d")).await.unwrap(), 0);
    let d = q.receive(1, VIS, &[]).await.unwrap().remove(0);
    assert_eq!((d.id.as_str(), d.receives, d.max_receives), ("d", 2, 2));
    assert!(d.hook_state.is_none());

    // A refusal retrying would not change goes to the dead-letter queue at once, receives
    // left or not, and can be redriven like any dead job.
    let mut e = new_job("dead-now", 0);
    e.max_receives = 5;
    q.enqueue(&[e]).await.unwrap();
    let e = q.receive(1, VIS, &[]).await.unwrap().remove(0);
    let refused = JobEnd::Dead(json!({"status": 404}), "404: no such endpoint".into());
    assert!(q.complete("dead-now", e.lease(), &refused).await.unwrap());
    let e = q.job("dead-now").await.unwrap().unwrap();
    assert_eq!(
        (e.state, e.last_error.as_deref()),
        (JobState::Dead, Some("404: no such endpoint"))
    );
    assert_eq!(e.result, Some(json!({"status": 404})));
    assert_eq!(q.redrive(Some("dead-now")).await.unwrap(), 1);
    assert_eq!(
        q.cancel("dead-now", None).await.unwrap().unwrap().state,
        JobState::Cancelled
    );

    // Cancelling: a running job's worker then cannot record.
    let cancelled = q.cancel("d", Some("alice")).await.unwrap().unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert!(!q.complete("d", d.lease(), &end).await.unwrap());
    assert!(q.cancel("d", Some("mallory")).await.unwrap().is_none());
    assert_eq!(
        q.cancel("d", None).await.unwrap().unwrap().state,
        JobState::Cancelled
    );

    // A released job goes back untouched, its receive not counted against it.
    let mut r = new_job("r", 0);
    r.max_receives = 1;
    q.enqueue(&[r]).await.unwrap();
    let r = q.receive(1, VIS, &[]).await.unwrap().remove(0);
    assert!(q.release("r", r.lease()).await.unwrap());
    assert!(!q.release("r", r.lease()).await.unwrap());
    let r = q.receive(1, VIS, &[]).await.unwrap().remove(0);
    assert_eq!((r.id.as_str(), r.receives, r.max_receives), ("r", 2, 2));
    assert!(q.complete("r", r.lease(), &end).await.unwrap());

    // Skipped models wait.
    let mut e = new_job("e", 0);
    e.model = Some("busy-model".into());
    q.enqueue(&[e]).await.unwrap();
    assert!(q
        .receive(5, VIS, &["busy-model".into()])
        .await
        .unwrap()
        .is_empty());
    assert_eq!(q.receive(5, VIS, &[]).await.unwrap()[0].id, "e");

    // Batches: counts by state, cancelling what has not ended.
    let batch: Vec<NewJob> = (0..5)
        .map(|i| {
            let mut j = new_job(&format!("batch-{i}"), 4);
            j.kind = "batch".into();
            j.batch_id = Some("b1".into());
            j
        })
        .collect();
    q.enqueue(&batch).await.unwrap();
    let first = q.receive(2, VIS, &[]).await.unwrap();
    q.complete(&first[0].id, first[0].lease(), &end)
        .await
        .unwrap();
    let counts = q.batch_counts("b1").await.unwrap();
    assert_eq!(
        (
            counts.succeeded,
            counts.running,
            counts.queued,
            counts.total()
        ),
        (1, 1, 3, 5)
    );
    assert_eq!(q.cancel_batch("b1").await.unwrap(), 4);
    assert_eq!(q.batch_counts("b1").await.unwrap().cancelled, 4);

    // Listing: by owner and state, pages in both directions.
    let page = q
        .jobs(&JobQuery {
            owner: Some("alice".into()),
            kind: Some("batch".into()),
            limit: 2,
            ..JobQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
        ["batch-0", "batch-1"]
    );
    let last = page.last().unwrap();
    let next = q
        .jobs(&JobQuery {
            owner: Some("alice".into()),
            kind: Some("batch".into()),
            after: Some((last.created_ms, last.id.clone())),
            limit: 10,
            ..JobQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(next.len(), 3);
    let done = q
        .jobs(&JobQuery {
            states: vec![JobState::Succeeded, JobState::Dead],
            descending: true,
            limit: 100,
            ..JobQuery::default()
        })
        .await
        .unwrap();
    assert!(done
        .iter()
        .all(|j| matches!(j.state, JobState::Succeeded | JobState::Dead)));
    assert!(done.iter().any(|j| j.id == "b") && done.iter().any(|j| j.id == "c"));
    assert!(q
        .jobs(&JobQuery {
            owner: Some("mallory".into()),
            limit: 10,
            ..JobQuery::default()
        })
        .await
        .unwrap()
        .is_empty());

    // Callback deliveries: claimed once per lease, retried, then delivered.
    let mut h = new_job("h", 0);
    h.callback = Some("https://example.com/hook".into());
    q.enqueue(&[h]).await.unwrap();
    let h = q.receive(1, VIS, &[]).await.unwrap().remove(0);
    assert!(q.complete("h", h.lease(), &end).await.unwrap());
    let due = q.due_hooks(10, Duration::from_secs(60)).await.unwrap();
    assert!(due.iter().any(|j| j.id == "h"));
    assert!(q
        .due_hooks(10, Duration::from_secs(60))
        .await
        .unwrap()
        .iter()
        .all(|j| j.id != "h"));
    let attempt = |n: i64, status: Option<i64>| Delivery {
        job_id: "h".into(),
        attempt: n,
        ts_ms: 1,
        status,
        error: None,
        latency_ms: 3,
    };
    q.record_delivery(&attempt(1, Some(500)), HookNext::RetryAt(0))
        .await
        .unwrap();
    assert!(q
        .due_hooks(10, Duration::from_secs(60))
        .await
        .unwrap()
        .iter()
        .any(|j| j.id == "h" && j.hook_attempts == 1));
    q.record_delivery(&attempt(2, Some(200)), HookNext::Delivered)
        .await
        .unwrap();
    let h = q.job("h").await.unwrap().unwrap();
    assert_eq!(
        (h.hook_state.as_deref(), h.hook_attempts),
        (Some("delivered"), 2)
    );
    let log = q.deliveries("h").await.unwrap();
    assert_eq!(
        log.iter().map(|d| d.status).collect::<Vec<_>>(),
        [Some(500), Some(200)]
    );

    // Concurrent receivers: 200 jobs, four workers, every job received exactly once.
    let many: Vec<NewJob> = (0..200)
        .map(|i| new_job(&format!("m-{i}"), i % 10))
        .collect();
    q.enqueue(&many).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (q, end) = (Arc::clone(&q), end.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                match q.receive(7, VIS, &[]).await {
                    Ok(jobs) if jobs.is_empty() => return mine,
                    Ok(jobs) => {
                        for j in jobs {
                            assert!(q.complete(&j.id, j.lease(), &end).await.unwrap());
                            mine.push(j.id);
                        }
                    }
                    Err(StoreError::Unavailable(e))
                        if e.contains("locked") || e.contains("busy") => {}
                    Err(e) => panic!("{e}"),
                }
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    let before = all.len();
    all.dedup();
    assert_eq!((before, all.len()), (200, 200));
}

/// Batches and files: metadata round trips, guarded state changes, paging.
async fn batches_behave(s: Arc<dyn BatchStore>) {
    let owner = unique("owner");
    let mk = |id: &str, ms: i64| BatchRecord {
        id: id.into(),
        kind: "openai".into(),
        owner: owner.clone(),
        state: "in_progress".into(),
        created_ms: ms,
        updated_ms: ms,
        ended_ms: None,
        body: json!({"endpoint": "/v1/chat/completions"}),
    };
    let (b1, b2) = (unique("batch"), unique("batch"));
    s.insert_batch(&mk(&b1, 1)).await.unwrap();
    s.insert_batch(&mk(&b2, 2)).await.unwrap();
    assert!(s.open_batches().await.unwrap().iter().any(|b| b.id == b1));
    let mut done = mk(&b1, 1);
    done.state = "completed".into();
    done.ended_ms = Some(5);
    assert!(s.update_batch(&done, &["in_progress"]).await.unwrap());
    // A finished batch is not reopened.
    assert!(!s.update_batch(&mk(&b1, 1), &["in_progress"]).await.unwrap());
    assert_eq!(s.batch(&b1).await.unwrap().unwrap().state, "completed");
    let page = s.batches(Some(&owner), "openai", None, 1).await.unwrap();
    assert_eq!(page[0].id, b2);
    let next = s
        .batches(Some(&owner), "openai", Some(&b2), 10)
        .await
        .unwrap();
    assert_eq!(
        next.iter().map(|b| b.id.as_str()).collect::<Vec<_>>(),
        [b1.as_str()]
    );
    assert!(s
        .batches(Some(&owner), "anthropic", None, 10)
        .await
        .unwrap()
        .is_empty());

    let f = FileRecord {
        id: unique("file"),
        owner: owner.clone(),
        purpose: "batch".into(),
        filename: "in.jsonl".into(),
        bytes: 42,
        created_ms: 7,
    };
    s.insert_file(&f).await.unwrap();
    assert_eq!(s.file(&f.id).await.unwrap().unwrap(), f);
    assert_eq!(
        s.files(Some(&owner), Some("batch")).await.unwrap(),
        vec![f.clone()]
    );
    assert!(s.delete_file(&f.id).await.unwrap());
    assert!(!s.delete_file(&f.id).await.unwrap());
}

#[tokio::test]
async fn sqlite_queue() {
    let (s, _d) = sqlite().await;
    let s = Arc::new(s);
    queue_behaves(s.clone()).await;
    batches_behave(s).await;
}

#[tokio::test]
async fn postgres_queue() {
    if let Some((s, url, db)) = fresh_postgres().await {
        let s = Arc::new(s);
        queue_behaves(s.clone()).await;
        batches_behave(s.clone()).await;
        s.pool().close().await;
        drop_postgres(&url, &db).await;
    }
}

fn machine(arn: &str, owner: &str, name: &str) -> MachineRecord {
    MachineRecord {
        arn: arn.into(),
        owner: owner.into(),
        name: name.into(),
        kind: "STANDARD".into(),
        definition: r#"{"StartAt":"A","States":{"A":{"Type":"Succeed"}}}"#.into(),
        role_arn: "arn:aws:iam::000000000000:role/r".into(),
        created_ms: 10,
        updated_ms: 10,
        revision: "r1".into(),
        body: json!({"tags": []}),
    }
}

fn execution(arn: &str, machine: &str, name: &str, start_ms: i64) -> ExecutionRecord {
    ExecutionRecord {
        arn: arn.into(),
        machine_arn: machine.into(),
        owner: "alice".into(),
        name: name.into(),
        status: "RUNNING".into(),
        input: "{}".into(),
        output: None,
        error: None,
        cause: None,
        start_ms,
        stop_ms: None,
        version: 0,
        wake_ms: None,
        lease_owner: None,
        lease_until_ms: None,
        definition: "{}".into(),
        run: json!({"threads": {}}),
        meta: json!({"principal": {"kind": "key", "id": "k1"}}),
    }
}

fn event(id: i64, kind: &str) -> EventRecord {
    EventRecord {
        id,
        previous_id: id - 1,
        ts_ms: 100 + id,
        kind: kind.into(),
        field: "stateEnteredEventDetails".into(),
        details: json!({"name": kind}),
    }
}

/// The execution store's contract: machines, executions with versioned saves and their
/// history, wake-ups, task leases, documents.
async fn executions_behave(s: Arc<dyn ExecutionStore>) {
    let tag = unique("sm");
    let m_arn = format!("arn:aws:states:us-east-1:000000000000:stateMachine:{tag}");
    let m = machine(&m_arn, "alice", &tag);
    s.create_machine(&m).await.unwrap();
    assert!(matches!(
        s.create_machine(&m).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.machine(&m_arn).await.unwrap().unwrap(), m);
    let mut m2 = m.clone();
    m2.definition = r#"{"StartAt":"B","States":{"B":{"Type":"Succeed"}}}"#.into();
    m2.revision = "r2".into();
    m2.updated_ms = 20;
    assert!(s.update_machine(&m2).await.unwrap());
    assert_eq!(s.machine(&m_arn).await.unwrap().unwrap().revision, "r2");
    assert!(s
        .machines(Some("alice"))
        .await
        .unwrap()
        .iter()
        .any(|x| x.arn == m_arn));
    assert!(!s
        .machines(Some("bob"))
        .await
        .unwrap()
        .iter()
        .any(|x| x.arn == m_arn));

    // Executions: unique names per machine, versioned saves, history in order.
    let e_arn = format!("arn:aws:states:us-east-1:000000000000:execution:{tag}:one");
    let e = execution(&e_arn, &m_arn, "one", 1000);
    s.create_execution(
        &e,
        &[event(1, "ExecutionStarted"), event(2, "PassStateEntered")],
    )
    .await
    .unwrap();
    let dup = execution(&format!("{e_arn}-x"), &m_arn, "one", 1001);
    assert!(matches!(
        s.create_execution(&dup, &[]).await,
        Err(StoreError::Conflict(_))
    ));
    let got = s.execution(&e_arn).await.unwrap().unwrap();
    assert_eq!(got, e);
    let change = ExecutionChange {
        status: "RUNNING".into(),
        output: None,
        error: None,
        cause: None,
        stop_ms: None,
        run: json!({"threads": {"0": "waiting"}}),
        wake_ms: Some(5000),
        lease: Some(("replica-a".into(), 9000)),
    };
    let more: Vec<EventRecord> = (3..=1203).map(|i| event(i, "PassStateExited")).collect();
    assert!(s.save_execution(&e_arn, 0, &change, &more).await.unwrap());
    // A stale version loses, and its events are not written.
    assert!(!s
        .save_execution(&e_arn, 0, &change, &[event(1204, "Stale")])
        .await
        .unwrap());
    let got = s.execution(&e_arn).await.unwrap().unwrap();
    assert_eq!(
        (got.version, got.wake_ms, got.run.clone()),
        (1, Some(5000), change.run.clone())
    );
    assert_eq!(got.lease_owner.as_deref(), Some("replica-a"));
    let first = s.history(&e_arn, 0, false, 100).await.unwrap();
    assert_eq!(first.len(), 100);
    assert_eq!(first[0], event(1, "ExecutionStarted"));
    let page2 = s.history(&e_arn, 100, false, 2000).await.unwrap();
    assert_eq!(page2.len(), 1103);
    assert_eq!(page2.last().unwrap().id, 1203);
    let last = s.history(&e_arn, 0, true, 3).await.unwrap();
    assert_eq!(
        last.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![1203, 1202, 1201]
    );
    let before = s.history(&e_arn, 3, true, 10).await.unwrap();
    assert_eq!(before.iter().map(|e| e.id).collect::<Vec<_>>(), vec![2, 1]);

    // Wake-ups and leases.
    assert!(s
        .due_executions(4999, 100)
        .await
        .unwrap()
        .iter()
        .all(|a| a != &e_arn));
    assert!(s.due_executions(5000, 100).await.unwrap().contains(&e_arn));
    assert!(s
        .claim_orphans("replica-b", 8999, 1000, 100)
        .await
        .unwrap()
        .iter()
        .all(|a| a != &e_arn));
    assert_eq!(s.leased_to("replica-a").await.unwrap(), vec![e_arn.clone()]);
    assert!(s.leased_to("replica-b").await.unwrap().is_empty());
    assert_eq!(s.renew_leases("replica-a", 20_000).await.unwrap(), 1);
    assert!(s
        .claim_orphans("replica-b", 19_999, 1000, 100)
        .await
        .unwrap()
        .iter()
        .all(|a| a != &e_arn));
    let claimed = s
        .claim_orphans("replica-b", 20_001, 1000, 100)
        .await
        .unwrap();
    assert!(claimed.contains(&e_arn));
    let got = s.execution(&e_arn).await.unwrap().unwrap();
    assert_eq!(
        (got.lease_owner.as_deref(), got.lease_until_ms),
        (Some("replica-b"), Some(21_001))
    );
    // A claim is taken once.
    assert!(s
        .claim_orphans("replica-c", 20_001, 1000, 100)
        .await
        .unwrap()
        .iter()
        .all(|a| a != &e_arn));

    // Ending it: no more wake-ups.
    let end = ExecutionChange {
        status: "SUCCEEDED".into(),
        output: Some("{\"ok\":true}".into()),
        stop_ms: Some(6000),
        wake_ms: None,
        lease: None,
        ..change.clone()
    };
    assert!(s
        .save_execution(&e_arn, 1, &end, &[event(1204, "ExecutionSucceeded")])
        .await
        .unwrap());
    assert!(s
        .due_executions(i64::MAX, 100)
        .await
        .unwrap()
        .iter()
        .all(|a| a != &e_arn));
    let got = s.execution(&e_arn).await.unwrap().unwrap();
    assert_eq!(
        (got.status.as_str(), got.output.as_deref(), got.stop_ms),
        ("SUCCEEDED", Some("{\"ok\":true}"), Some(6000))
    );

    // Listing: newest first, filters, cursor.
    for i in 0..5 {
        let x = execution(&format!("{e_arn}-{i}"), &m_arn, &format!("n{i}"), 2000 + i);
        s.create_execution(&x, &[event(1, "ExecutionStarted")])
            .await
            .unwrap();
    }
    let q = ExecutionQuery {
        machine_arn: Some(m_arn.clone()),
        limit: 3,
        ..Default::default()
    };
    let page = s.executions(&q).await.unwrap();
    assert_eq!(
        page.iter().map(|x| x.name.as_str()).collect::<Vec<_>>(),
        vec!["n4", "n3", "n2"]
    );
    assert!(page[0].run.is_null());
    let q2 = ExecutionQuery {
        before: Some((page[2].start_ms, page[2].arn.clone())),
        ..q.clone()
    };
    let page = s.executions(&q2).await.unwrap();
    assert_eq!(
        page.iter().map(|x| x.name.as_str()).collect::<Vec<_>>(),
        vec!["n1", "n0", "one"]
    );
    let q3 = ExecutionQuery {
        status: Some("SUCCEEDED".into()),
        limit: 10,
        ..q.clone()
    };
    assert_eq!(s.executions(&q3).await.unwrap().len(), 1);
    let q4 = ExecutionQuery {
        owner: Some("bob".into()),
        limit: 10,
        ..q
    };
    assert!(s.executions(&q4).await.unwrap().is_empty());
    assert!(s.delete_machine(&m_arn).await.unwrap());
    assert!(!s.delete_machine(&m_arn).await.unwrap());

    // Documents: scoped to their owner; put replaces; query by partition and prefix.
    let table = unique("tbl");
    let doc = |pk: &str, sk: &str, v: i64| Document {
        table: table.clone(),
        pk: pk.into(),
        sk: sk.into(),
        item: json!({"v": v}),
        updated_ms: v,
    };
    s.put_document("alice", &doc("p1", "2026-01", 1))
        .await
        .unwrap();
    s.put_document("alice", &doc("p1", "2026-02", 2))
        .await
        .unwrap();
    s.put_document("alice", &doc("p1", "2025-12", 3))
        .await
        .unwrap();
    s.put_document("alice", &doc("p1", "2026-01", 4))
        .await
        .unwrap();
    assert_eq!(
        s.document("alice", &table, "p1", "2026-01").await.unwrap(),
        Some(doc("p1", "2026-01", 4))
    );
    assert_eq!(
        s.document("bob", &table, "p1", "2026-01").await.unwrap(),
        None
    );
    let q = s
        .query_documents("alice", &table, "p1", "2026", 10)
        .await
        .unwrap();
    assert_eq!(q, vec![doc("p1", "2026-01", 4), doc("p1", "2026-02", 2)]);
    assert_eq!(
        s.query_documents("alice", &table, "p1", "", 10)
            .await
            .unwrap()
            .len(),
        3
    );
    assert!(s
        .delete_document("alice", &table, "p1", "2026-01")
        .await
        .unwrap());
    assert!(!s
        .delete_document("alice", &table, "p1", "2026-01")
        .await
        .unwrap());
}

#[tokio::test]
async fn sqlite_executions() {
    let (s, _d) = sqlite().await;
    executions_behave(Arc::new(s)).await;
}

#[tokio::test]
async fn postgres_executions() {
    if let Some((s, url, db)) = fresh_postgres().await {
        let s = Arc::new(s);
        executions_behave(s.clone()).await;
        s.pool().close().await;
        drop_postgres(&url, &db).await;
    }
}

async fn events_behave(s: Arc<dyn EventStore>) {
    let owner = unique("owner");
    let rule = |name: &str, state: &str| RuleRecord {
        owner: owner.clone(),
        bus: "default".into(),
        name: name.into(),
        state: state.into(),
        pattern: r#"{"source":["a"]}"#.into(),
        version: 0,
        created_ms: 1,
        updated_ms: 1,
        body: json!({"targets": []}),
    };
    assert!(s.save_rule(&rule("docs", "ENABLED"), None).await.unwrap());
    assert!(
        !s.save_rule(&rule("docs", "ENABLED"), None).await.unwrap(),
        "a second insert of the same name is refused"
    );
    assert!(s
        .save_rule(&rule("docs-b", "DISABLED"), None)
        .await
        .unwrap());
    assert!(s.save_rule(&rule("other", "ENABLED"), None).await.unwrap());
    let got = s.rule(&owner, "default", "docs").await.unwrap().unwrap();
    assert_eq!(got.version, 1);
    assert!(s
        .rule(&owner, "another-bus", "docs")
        .await
        .unwrap()
        .is_none());
    assert!(s
        .rule("someone-else", "default", "docs")
        .await
        .unwrap()
        .is_none());

    // Versioned updates: the stale writer loses and changes nothing.
    let mut a = got.clone();
    a.body = json!({"targets": [{"Id": "t1"}]});
    a.updated_ms = 2;
    assert!(s.save_rule(&a, Some(1)).await.unwrap());
    let mut b = got.clone();
    b.body = json!({"targets": [{"Id": "t2"}]});
    assert!(!s.save_rule(&b, Some(1)).await.unwrap());
    let now = s.rule(&owner, "default", "docs").await.unwrap().unwrap();
    assert_eq!(
        (now.version, now.body["targets"][0]["Id"].as_str()),
        (2, Some("t1"))
    );

    // Listing: prefix, paging by name, owner scope.
    let names = |v: Vec<RuleRecord>| v.into_iter().map(|r| r.name).collect::<Vec<_>>();
    assert_eq!(
        names(
            s.rules(Some(&owner), Some("default"), Some("docs"), None, 100)
                .await
                .unwrap()
        ),
        ["docs", "docs-b"]
    );
    assert_eq!(
        names(
            s.rules(Some(&owner), None, None, Some("docs"), 1)
                .await
                .unwrap()
        ),
        ["docs-b"]
    );
    assert_eq!(
        s.rules(Some("nobody"), None, None, None, 100)
            .await
            .unwrap()
            .len(),
        0
    );
    assert!(s.delete_rule(&owner, "default", "docs-b").await.unwrap());
    assert!(!s.delete_rule(&owner, "default", "docs-b").await.unwrap());

    // Events: recorded whole, filtered and paged oldest first.
    for (i, dt) in [
        "DocumentUploaded",
        "CustomerInteraction",
        "DocumentUploaded",
    ]
    .iter()
    .enumerate()
    {
        let e = BusEvent {
            id: format!("{owner}-e{i}"),
            owner: owner.clone(),
            bus: "default".into(),
            ts_ms: 1_000 + i as i64,
            source: "com.enterprise.application".into(),
            detail_type: (*dt).into(),
            event: json!({"detail": {"n": i}}),
            deliveries: json!([{"rule": "docs", "target": "t1", "job": format!("job-{i}")}]),
        };
        s.record_event(&e).await.unwrap();
    }
    let one = s.event(&format!("{owner}-e1")).await.unwrap().unwrap();
    assert_eq!(
        (one.detail_type.as_str(), one.event["detail"]["n"].as_i64()),
        ("CustomerInteraction", Some(1))
    );
    assert_eq!(one.deliveries[0]["job"], "job-1");
    let q = BusEventQuery {
        owner: Some(owner.clone()),
        detail_type: Some("DocumentUploaded".into()),
        limit: 1,
        ..Default::default()
    };
    let first = s.events(&q).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].id, format!("{owner}-e0"));
    let next = s
        .events(&BusEventQuery {
            after: Some((first[0].ts_ms, first[0].id.clone())),
            ..q.clone()
        })
        .await
        .unwrap();
    assert_eq!(
        next.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
        [format!("{owner}-e2")]
    );
    let window = BusEventQuery {
        owner: Some(owner.clone()),
        since_ms: Some(1_001),
        until_ms: Some(1_002),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(s.events(&window).await.unwrap().len(), 1);
    assert!(s
        .events(&BusEventQuery {
            owner: Some("nobody".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .is_empty());

    // Retention: events received before the cut-off go — but an archived (owner, bus) keeps
    // what its own cut-off keeps.
    let times = |s: Arc<dyn EventStore>, owner: String| async move {
        s.events(&BusEventQuery {
            owner: Some(owner),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .iter()
        .map(|e| e.ts_ms)
        .collect::<Vec<_>>()
    };
    let keep = [(owner.clone(), "default".to_string(), 1_001)];
    assert!(s.purge_events(1_002, &keep).await.unwrap() >= 1);
    assert_eq!(times(s.clone(), owner.clone()).await, [1_001, 1_002]);
    assert!(s.purge_events(1_002, &[]).await.unwrap() >= 1);
    assert_eq!(times(s.clone(), owner.clone()).await, [1_002]);

    // Archives and replays: small named bodies, created once, replaced, listed, deleted.
    let archive = BusObject {
        kind: "archive".into(),
        owner: owner.clone(),
        name: "all".into(),
        updated_ms: 1,
        body: json!({"bus": "default", "retention_days": 0}),
    };
    assert!(s.put_object(&archive, true).await.unwrap());
    assert!(!s.put_object(&archive, true).await.unwrap());
    let changed = BusObject {
        body: json!({"bus": "default", "retention_days": 7}),
        ..archive.clone()
    };
    assert!(s.put_object(&changed, false).await.unwrap());
    let missing = BusObject {
        name: "none".into(),
        ..archive.clone()
    };
    assert!(!s.put_object(&missing, false).await.unwrap());
    let got = s.object("archive", &owner, "all").await.unwrap().unwrap();
    assert_eq!(got.body["retention_days"], 7);
    assert!(s.object("replay", &owner, "all").await.unwrap().is_none());
    assert_eq!(s.objects("archive", Some(&owner)).await.unwrap().len(), 1);
    assert!(s
        .objects("archive", Some("nobody"))
        .await
        .unwrap()
        .is_empty());
    assert!(s.delete_object("archive", &owner, "all").await.unwrap());
    assert!(!s.delete_object("archive", &owner, "all").await.unwrap());
}

#[tokio::test]
async fn sqlite_events() {
    let (s, _d) = sqlite().await;
    events_behave(Arc::new(s)).await;
}

#[tokio::test]
async fn postgres_events() {
    if let Some(s) = postgres().await {
        events_behave(Arc::new(s)).await;
    }
}
