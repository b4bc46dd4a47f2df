//! What the response cache costs and saves, through the real router with an instant
//! in-process model (one core, one request at a time, p50 / p90 / p99):
//!
//! - **no cache layer** versus **a miss** (every request new: hash, lookup, store) — the cost
//!   of a miss;
//! - **an exact hit**, in process and with the Redis backend (the real server on
//!   127.0.0.1:6379, or `MODELGATE_BENCH_REDIS_URL`; skipped when it cannot be reached);
//! - **semantic lookup** in an index of 100,000 384-dimensional vectors (the search alone; the
//!   embedding of the request is the embedded model's time, measured in `bench/README.md`).
//!
//! `cargo bench -p modelgate-server --bench cache`.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a benchmark: failing loudly is right

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use common::{instant_model, report};
use modelgate_core::cache::{CacheConfig, ResponseCache};
use modelgate_core::semantic::{SemanticIndex, SemanticQuery};
use modelgate_core::usage::PriceCatalog;
use modelgate_core::Gateway;
use modelgate_server::app::{self, AppState};
use modelgate_store::{CacheKey, CacheStore, MemoryCache, RedisCache};
use tower::ServiceExt as _;

const MODEL: &str = "gpt-4o-mini";
const WARMUP: usize = 2_000;
const SAMPLES: usize = 20_000;

fn body(prompt: &str) -> String {
    serde_json::json!({
        "model": MODEL,
        "max_tokens": 16,
        "temperature": 0,
        "messages": [{"role": "user", "content": prompt}]
    })
    .to_string()
}

async fn one(router: &axum::Router, body: String) -> Option<String> {
    let req = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let res = router.clone().oneshot(req).await.unwrap();
    assert!(res.status().is_success());
    let cache = res
        .headers()
        .get("x-modelgate-cache")
        .map(|v| v.to_str().unwrap().to_string());
    axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    cache
}

fn router(cache: Option<Arc<dyn CacheStore>>) -> axum::Router {
    let cache = cache.map(|store| {
        Arc::new(ResponseCache::new(
            CacheConfig {
                enabled: true,
                ..CacheConfig::default()
            },
            store,
            PriceCatalog::default(),
        ))
    });
    let gateway = Arc::new(Gateway::builder().cache(cache).build());
    gateway.install(vec![instant_model(MODEL)]);
    app::router(AppState::new(gateway, 1 << 20))
}

/// Latency of `SAMPLES` calls; `prompt(i)` is the i-th call's prompt; `expect` the cache
/// header every measured call must carry.
async fn latency(
    router: &axum::Router,
    prompt: impl Fn(usize) -> String,
    expect: Option<&str>,
) -> Vec<Duration> {
    for i in 0..WARMUP {
        one(router, body(&prompt(i))).await;
    }
    let mut times = Vec::with_capacity(SAMPLES);
    for i in WARMUP..WARMUP + SAMPLES {
        let b = body(&prompt(i));
        let t = Instant::now();
        let status = one(router, b).await;
        times.push(t.elapsed());
        assert_eq!(status.as_deref(), expect);
    }
    times.sort();
    times
}

async fn redis() -> Option<Arc<dyn CacheStore>> {
    let url = std::env::var("MODELGATE_BENCH_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("mgbench-{}:", std::process::id());
    match RedisCache::connect(&url, &prefix).await {
        Ok(c) => Some(Arc::new(c)),
        Err(e) => {
            println!("redis at {url} unreachable ({e}); skipping the Redis figures");
            None
        }
    }
}

fn unit(rng: &mut fastrand::Rng, dims: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..dims).map(|_| rng.f32() - 0.5).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

fn semantic() {
    const ENTRIES: usize = 100_000;
    const DIMS: usize = 384;
    let index = SemanticIndex::new(ENTRIES);
    let mut rng = fastrand::Rng::with_seed(7);
    for i in 0..ENTRIES {
        let key = CacheKey {
            namespace: "default".into(),
            model: MODEL.into(),
            scope: "team:bench".into(),
            hash: i as u128,
        };
        index.insert(
            1,
            &key,
            unit(&mut rng, DIMS),
            format!("question {i}"),
            i64::MAX,
        );
    }
    let queries: Vec<Vec<f32>> = (0..200).map(|_| unit(&mut rng, DIMS)).collect();
    let mut times = Vec::new();
    for q in &queries {
        let query = SemanticQuery {
            partition: 1,
            vector: q,
            text: "question",
            threshold: 0.95,
        };
        let t = Instant::now();
        std::hint::black_box(index.search(&query));
        times.push(t.elapsed());
    }
    times.sort();
    report(
        &format!("semantic search, {ENTRIES} vectors of {DIMS} dims, one partition"),
        &times,
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let none = router(None);
        let memory = || Some(Arc::new(MemoryCache::new(256 << 20)) as Arc<dyn CacheStore>);
        let fresh = |i: usize| format!("what is the capital of France? #{i}");
        let same = |_: usize| "what is the capital of France?".to_string();
        for round in 1..=2 {
            println!("round {round}");
            report("no cache layer", &latency(&none, fresh, None).await);
            report(
                "in process, every call a miss",
                &latency(&router(memory()), fresh, Some("miss")).await,
            );
            report(
                "in process, exact hit",
                &latency(&router(memory()), same, Some("hit")).await,
            );
            if let Some(r) = redis().await {
                report(
                    "redis, every call a miss",
                    &latency(&router(Some(Arc::clone(&r))), fresh, Some("miss")).await,
                );
                let hits = router(Some(Arc::clone(&r)));
                one(&hits, body(&same(0))).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                report("redis, exact hit", &latency(&hits, same, Some("hit")).await);
                r.remove(&modelgate_store::CacheFilter::default())
                    .await
                    .unwrap();
            }
        }
    });
    semantic();
}
