//! What identity and policy cost on the hot path: the same OpenAI chat request through the
//! real router, on one core (a current-thread runtime), with an instant in-process model, twice:
//!
//! - **off**: an open gateway, no policy layers, no usage recording (and, separately, the same
//!   with Prometheus metrics kept);
//! - **on**: a Bearer key checked against the SQLite key store (lookup cached, as in
//!   production), its IAM-grammar policy evaluated (with a parameter condition) and audited,
//!   its rate limit (GCRA), tokens-per-minute and concurrency limits taken and settled, and
//!   the call's usage priced and queued for the SQLite writer.
//!
//! `cargo bench -p modelgate-server --bench policy_overhead` prints p50 / p90 / p99 of each
//! and the difference. No network: requests go to the router as a service, so the figure is
//! the gateway's own work.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a benchmark: failing loudly is right

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use common::{instant_model, pct};
use modelgate_core::access::{Audit, Authorize, Limits, SharedLimits, Site};
use modelgate_core::keys::{KeyService, LimitSpec, Settings};
use modelgate_core::metrics::Metrics;
use modelgate_core::pipeline::PolicyLayers;
use modelgate_core::usage::{PriceCatalog, UsageRecorder};
use modelgate_core::Gateway;
use modelgate_server::app::{self, AppState};
use modelgate_server::auth::Auth;
use modelgate_store::{MemoryCounters, SqliteStore};
use tower::ServiceExt as _;

const MODEL: &str = "anthropic.claude-3-sonnet-20240229-v1:0";
const WARMUP: usize = 2_000;
const SAMPLES: usize = 20_000;

fn body() -> String {
    serde_json::json!({
        "model": MODEL,
        "max_tokens": 16,
        "temperature": 0.2,
        "messages": [{"role": "user", "content": "What is the capital of France?"}]
    })
    .to_string()
}

async fn measure(router: axum::Router, key: Option<&str>) -> Vec<Duration> {
    let body = body();
    let mut times = Vec::with_capacity(SAMPLES);
    for i in 0..WARMUP + SAMPLES {
        let mut req =
            Request::post("/v1/chat/completions").header("content-type", "application/json");
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        let req = req.body(Body::from(body.clone())).unwrap();
        let start = Instant::now();
        let res = router.clone().oneshot(req).await.unwrap();
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap();
        let took = start.elapsed();
        assert!(
            bytes.starts_with(b"{\"choices\""),
            "{}",
            String::from_utf8_lossy(&bytes)
        );
        if i >= WARMUP {
            times.push(took);
        }
    }
    times.sort();
    times
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Off: the open gateway.
        let gateway = Arc::new(Gateway::builder().cache(None).build());
        gateway.install(vec![instant_model(MODEL)]);
        let off = app::router(AppState::new(gateway, 1 << 20));

        // Off plus Prometheus metrics (the outcome sink and the in-flight gauge).
        let with_metrics = {
            let metrics = Arc::new(Metrics::new(PriceCatalog::default()));
            let gateway = Arc::new(
                Gateway::builder()
                    .cache(None)
                    .sink(metrics.clone())
                    .build(),
            );
            gateway.install(vec![instant_model(MODEL)]);
            let mut state = AppState::new(gateway, 1 << 20);
            state.metrics = Some(metrics);
            app::router(state)
        };

        // On: keys, policy, limits and usage on SQLite.
        let dir = std::env::temp_dir().join(format!("mg-bench-{}", std::process::id()));
        let store = Arc::new(SqliteStore::open(&dir.join("state.db")).await.unwrap());
        let counters = Arc::new(MemoryCounters::default());
        let (audit, _audit_task) = Audit::spawn(store.clone());
        let (usage, _usage_task) =
            UsageRecorder::spawn(PriceCatalog::default(), store.clone(), counters.clone());
        let gateway = Arc::new(
            Gateway::builder()
                .cache(None)
                .sink(usage)
                .policy(PolicyLayers {
                    authorize: Arc::new(Authorize::new(Site::default(), audit.clone())),
                    limits: Arc::new(Limits {
                        counters: counters.clone(),
                        usage: Some(store.clone()),
                        shared: SharedLimits::default(),
                    }),
                })
                .build(),
        );
        gateway.install(vec![instant_model(MODEL)]);
        let keys = Arc::new(KeyService::new(store.clone(), b"bench-secret", Duration::from_secs(60)));
        let settings = Settings {
            policies: vec![serde_json::json!({"Statement": [{
                "Sid": "Sonnet", "Effect": "Allow", "Action": "bedrock:InvokeModel",
                "Resource": "arn:aws:bedrock:*::foundation-model/anthropic.claude-3-sonnet*",
                "Condition": {"NumericLessThan": {"bedrock:MaxTokens": "2000"}}}]})],
            limits: LimitSpec {
                rps: Some(1_000_000),
                burst: Some(1_000_000),
                tpm: Some(1_000_000_000),
                concurrent: Some(1_000),
            },
            ..Settings::default()
        };
        let (_, issued) = keys.create(Some("bench".into()), settings, None).await.unwrap();
        let mut state = AppState::new(gateway, 1 << 20);
        let auth = Auth {
            keys: Some(keys),
            ..Auth::open()
        };
        auth.close();
        state.auth = Arc::new(Auth { audit, ..auth });
        let on = app::router(state);

        // Open: the shipped default with no credentials — the policy layers and usage recording
        // are in place, the caller is anonymous and unlimited.
        let open = {
            let counters = Arc::new(MemoryCounters::default());
            let (usage, _task) =
                UsageRecorder::spawn(PriceCatalog::default(), store.clone(), counters.clone());
            let gateway = Arc::new(
                Gateway::builder()
                    .cache(None)
                    .sink(usage)
                    .policy(PolicyLayers {
                        authorize: Arc::new(Authorize::new(Site::default(), Audit::default())),
                        limits: Arc::new(Limits {
                            counters,
                            usage: Some(store.clone()),
                            shared: SharedLimits::default(),
                        }),
                    })
                    .build(),
            );
            gateway.install(vec![instant_model(MODEL)]);
            app::router(AppState::new(gateway, 1 << 20))
        };
        let open_times = measure(open, None).await;
        println!(
            "open (no credentials, layers and usage on): p50 {:.1} µs p99 {:.1} µs",
            pct(&open_times, 0.5),
            pct(&open_times, 0.99)
        );
        let metrics_times = measure(with_metrics, None).await;
        println!(
            "off + metrics: p50 {:.1} µs p99 {:.1} µs",
            pct(&metrics_times, 0.5),
            pct(&metrics_times, 0.99)
        );
        let off_times = measure(off.clone(), None).await;
        let on_times = measure(on.clone(), Some(&issued.key)).await;
        // Second pass, so drift between the two runs shows.
        let off_times2 = measure(off, None).await;
        let on_times2 = measure(on, Some(&issued.key)).await;
        for (label, off, on) in [("run 1", &off_times, &on_times), ("run 2", &off_times2, &on_times2)] {
            println!(
                "{label}: off p50 {:.1} µs p90 {:.1} p99 {:.1} | on p50 {:.1} µs p90 {:.1} p99 {:.1} | added p50 {:.1} µs, p99 {:.1} µs",
                pct(off, 0.5),
                pct(off, 0.9),
                pct(off, 0.99),
                pct(on, 0.5),
                pct(on, 0.9),
                pct(on, 0.99),
                pct(on, 0.5) - pct(off, 0.5),
                pct(on, 0.99) - pct(off, 0.99),
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    });
}
