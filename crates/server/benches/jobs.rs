//! The job queue end to end, in process: jobs enqueued, received by the workers, run through
//! the real router and pipeline against an instant model, and their results recorded.
//!
//! - **throughput**: 5,000 jobs enqueued at once (in chunks of 500), timed until the last one
//!   has its result: jobs per second;
//! - **latency**: one job at a time, from enqueue to its recorded result (p50 / p90 / p99).
//!
//! On SQLite (a temporary file, WAL) and, when `MODELGATE_TEST_POSTGRES_URL` is set, on
//! PostgreSQL (a fresh database). `cargo bench -p modelgate-server --bench jobs`.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a benchmark: failing loudly is right

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{instant_model, report};
use modelgate_core::jobs::JobsConfig;
use modelgate_core::Gateway;
use modelgate_server::app::{self, AppState};
use modelgate_server::jobs::objects::Objects;
use modelgate_server::jobs::Jobs;
use modelgate_store::{BatchStore, JobQueue, NewJob, PostgresStore, SqliteStore};
use serde_json::json;

const THROUGHPUT_JOBS: usize = 5_000;
const LATENCY_SAMPLES: usize = 300;

fn job(batch: &str, i: usize) -> NewJob {
    let body = json!({"model": "m", "max_tokens": 16,
        "messages": [{"role": "user", "content": format!("job {i}")}]});
    NewJob {
        id: format!("{batch}-{i}"),
        kind: "job".into(),
        owner: "anonymous".into(),
        batch_id: Some(batch.into()),
        model: Some("m".into()),
        priority: 5,
        max_receives: 3,
        request: Jobs::request(None, "/v1/chat/completions", &body, &[]).unwrap(),
        meta: json!({}),
        ..NewJob::default()
    }
}

async fn run(name: &str, queue: Arc<dyn JobQueue>, batches: Arc<dyn BatchStore>) {
    let gateway = Arc::new(Gateway::builder().cache(None).build());
    gateway.install(vec![instant_model("m")]);
    let config = JobsConfig {
        concurrency: 64,
        per_model_concurrency: 64,
        ..JobsConfig::default()
    };
    let dir = std::env::temp_dir().join(format!("mg-bench-objects-{}", std::process::id()));
    let jobs = Arc::new(Jobs::new(
        Arc::clone(&queue),
        batches,
        Objects::new(dir),
        config,
        None,
        Default::default(),
        None,
    ));
    let mut state = AppState::new(gateway, 1 << 20);
    state.jobs = Some(Arc::clone(&jobs));
    let _router = app::router(state);
    jobs.start();

    // Throughput.
    let batch = format!("tp-{}", uuid::Uuid::new_v4().simple());
    let all: Vec<NewJob> = (0..THROUGHPUT_JOBS).map(|i| job(&batch, i)).collect();
    let started = Instant::now();
    for chunk in all.chunks(500) {
        jobs.enqueue(chunk).await.unwrap();
    }
    let enqueued = started.elapsed();
    loop {
        let c = queue.batch_counts(&batch).await.unwrap();
        if c.ended() == THROUGHPUT_JOBS as i64 {
            assert_eq!(c.succeeded, THROUGHPUT_JOBS as i64, "{c:?}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed();
    println!(
        "{name}: {THROUGHPUT_JOBS} jobs in {:.2} s = {:.0} jobs/s (enqueue alone {:.0} jobs/s)",
        took.as_secs_f64(),
        THROUGHPUT_JOBS as f64 / took.as_secs_f64(),
        THROUGHPUT_JOBS as f64 / enqueued.as_secs_f64()
    );

    // Latency, one job at a time.
    let batch = format!("lat-{}", uuid::Uuid::new_v4().simple());
    let mut times = Vec::with_capacity(LATENCY_SAMPLES);
    for i in 0..LATENCY_SAMPLES {
        let j = job(&batch, i);
        let t = Instant::now();
        jobs.enqueue(std::slice::from_ref(&j)).await.unwrap();
        loop {
            let got = queue.job(&j.id).await.unwrap().unwrap();
            if got.state.is_terminal() {
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        times.push(t.elapsed());
    }
    times.sort();
    report(&format!("{name}: enqueue to result"), &times);
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = std::env::temp_dir().join(format!("mg-bench-jobs-{}", std::process::id()));
        let sqlite = Arc::new(SqliteStore::open(&dir.join("state.db")).await.unwrap());
        run("sqlite", sqlite.clone(), sqlite).await;
        let _ = std::fs::remove_dir_all(&dir);
        if let Ok(url) = std::env::var("MODELGATE_TEST_POSTGRES_URL") {
            let admin = PostgresStore::connect(&url).await.unwrap();
            let db = format!("mgbench_{}", uuid::Uuid::new_v4().simple());
            sqlx_exec(&admin, &format!("CREATE DATABASE {db}")).await;
            let (base, _) = url.rsplit_once('/').unwrap();
            let pg = Arc::new(
                PostgresStore::connect(&format!("{base}/{db}"))
                    .await
                    .unwrap(),
            );
            run("postgres", pg.clone(), pg.clone()).await;
            pg.pool().close().await;
            sqlx_exec(&admin, &format!("DROP DATABASE {db} WITH (FORCE)")).await;
        } else {
            println!("postgres: skipped (MODELGATE_TEST_POSTGRES_URL is not set)");
        }
    });
}

async fn sqlx_exec(store: &PostgresStore, sql: &str) {
    use sqlx::Executor as _;
    store.pool().execute(sql).await.unwrap();
}
