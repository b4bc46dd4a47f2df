//! What full observability costs: the same OpenAI chat request through the real router with
//! an instant in-process model, with nothing but the access log (no subscriber installed, as
//! with logging filtered out) versus Prometheus metrics, invocation records (SQLite writer)
//! and OpenTelemetry traces (OTLP/HTTP to a receiver on loopback) — and that again with body
//! capture and masking on every call.
//!
//! - **latency**: one core (a current-thread runtime, the writers and the exporter on it too),
//!   one request at a time: p50 / p90 / p99;
//! - **peak throughput**: two worker threads, 64 requests in flight, 3 s per configuration.
//!
//! `cargo bench -p modelgate-server --bench observability_overhead`. No network between
//! client and gateway: requests go to the router as a service, so the figure is the
//! gateway's own work.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a benchmark: failing loudly is right

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use common::{instant_model, pct};
use modelgate_core::invocations::{CaptureConfig, InvocationLog, InvocationsConfig};
use modelgate_core::metrics::Metrics;
use modelgate_core::traces::{Traces, TracesConfig};
use modelgate_core::usage::PriceCatalog;
use modelgate_core::Gateway;
use modelgate_server::app::{self, AppState};
use modelgate_store::SqliteStore;
use tower::ServiceExt as _;

const MODEL: &str = "gpt-4o-mini";
const WARMUP: usize = 2_000;
const SAMPLES: usize = 20_000;

fn body() -> String {
    serde_json::json!({
        "model": MODEL,
        "max_tokens": 16,
        "temperature": 0.2,
        "messages": [{"role": "user", "content": "Write to jane@example.com: what is the capital of France?"}]
    })
    .to_string()
}

async fn one(router: &axum::Router, body: &str) {
    let req = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(Body::from(body.to_string()))
        .unwrap();
    let res = router.clone().oneshot(req).await.unwrap();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    assert!(
        bytes.starts_with(b"{\"choices\""),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
}

async fn latency(router: &axum::Router) -> Vec<Duration> {
    let body = body();
    let mut times = Vec::with_capacity(SAMPLES);
    for i in 0..WARMUP + SAMPLES {
        let start = Instant::now();
        one(router, &body).await;
        if i >= WARMUP {
            times.push(start.elapsed());
        }
    }
    times.sort();
    times
}

async fn throughput(router: axum::Router) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(3);
    let body = Arc::new(body());
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (router, done, body) = (router.clone(), done.clone(), body.clone());
            tokio::spawn(async move {
                while Instant::now() < stop {
                    one(&router, &body).await;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / 3.0
}

/// An OTLP/HTTP receiver that accepts and counts export requests.
async fn receiver() -> (String, Arc<AtomicU64>) {
    let exports = Arc::new(AtomicU64::new(0));
    let counted = exports.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |_body: axum::body::Bytes| {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::Relaxed);
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, exports)
}

/// What a configuration observes.
#[derive(Clone, Copy)]
struct Observe {
    name: &'static str,
    metrics: bool,
    records: bool,
    traces: bool,
    capture: bool,
}

const CONFIGS: [Observe; 5] = [
    Observe {
        name: "none",
        metrics: false,
        records: false,
        traces: false,
        capture: false,
    },
    Observe {
        name: "metrics",
        metrics: true,
        records: false,
        traces: false,
        capture: false,
    },
    Observe {
        name: "metrics + records",
        metrics: true,
        records: true,
        traces: false,
        capture: false,
    },
    Observe {
        name: "full (metrics + records + traces)",
        metrics: true,
        records: true,
        traces: true,
        capture: false,
    },
    Observe {
        name: "full + body capture",
        metrics: true,
        records: true,
        traces: true,
        capture: true,
    },
];

/// The router observing what `o` asks for.
async fn router(o: Observe, otlp: &str, dir: &std::path::Path) -> axum::Router {
    let mut builder = Gateway::builder().cache(None);
    let mut state_metrics = None;
    let mut state_records = None;
    if o.metrics {
        let m = Arc::new(Metrics::new(PriceCatalog::default()));
        builder = builder.sink(m.clone());
        state_metrics = Some(m);
    }
    if o.records {
        let store = Arc::new(
            SqliteStore::open(&dir.join(format!("state-{}.db", fastrand_name())))
                .await
                .unwrap(),
        );
        let mut config = InvocationsConfig::default();
        if o.capture {
            config.capture = CaptureConfig {
                models: vec!["*".into()],
                ..CaptureConfig::default()
            };
        }
        let (log, _writer) = InvocationLog::spawn(&config, PriceCatalog::default(), store.clone());
        builder = builder.sink(log).capture(config.capture.clone());
        state_records = Some(store as Arc<dyn modelgate_store::InvocationStore>);
    }
    if o.traces {
        let (traces, _exporter) = Traces::spawn(&TracesConfig {
            endpoint: Some(otlp.to_string()),
            ..TracesConfig::default()
        })
        .unwrap()
        .unwrap();
        builder = builder.sink(traces);
    }
    let gateway = Arc::new(builder.build());
    gateway.install(vec![instant_model(MODEL)]);
    let mut state = AppState::new(gateway, 1 << 20);
    state.metrics = state_metrics;
    state.invocations = state_records;
    app::router(state)
}

/// One router per configuration, exporting to `otlp`.
async fn routers(otlp: &str, dir: &std::path::Path) -> Vec<(Observe, axum::Router)> {
    let mut out = Vec::new();
    for o in CONFIGS {
        out.push((o, router(o, otlp, dir).await));
    }
    out
}

fn fastrand_name() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn main() {
    let dir = std::env::temp_dir().join(format!("mg-obs-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let one_core = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    one_core.block_on(async {
        let (otlp, exports) = receiver().await;
        let routers = routers(&otlp, &dir).await;
        for round in 1..=2 {
            let mut base = 0.0;
            for (o, r) in &routers {
                let t = latency(r).await;
                if o.name == "none" {
                    base = pct(&t, 0.99);
                }
                println!(
                    "latency, one core, round {round}, {}: p50 {:.1} µs p90 {:.1} p99 {:.1} (p99 {:+.1}%)",
                    o.name,
                    pct(&t, 0.5),
                    pct(&t, 0.9),
                    pct(&t, 0.99),
                    (pct(&t, 0.99) / base - 1.0) * 100.0
                );
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(exports.load(Ordering::Relaxed) > 0, "spans reached the receiver");
    });
    let two_threads = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    two_threads.block_on(async {
        let (otlp, _) = receiver().await;
        let routers = routers(&otlp, &dir).await;
        for round in 1..=2 {
            let mut base = 0.0;
            for (o, r) in &routers {
                let rate = throughput(r.clone()).await;
                if o.name == "none" {
                    base = rate;
                }
                println!(
                    "peak throughput, two threads, 64 in flight, round {round}, {}: {rate:.0}/s ({:+.1}%)",
                    o.name,
                    (rate / base - 1.0) * 100.0
                );
            }
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
}
