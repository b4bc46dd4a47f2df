//! What routing adds to a call, through the real router with instant in-process models (one
//! core, one request at a time, p50 / p90 / p99):
//!
//! - **direct**: the client names a served model (a router table is in force, but the name
//!   is not a virtual model — the cost every call pays);
//! - **weighted**: a 90/10 split, sticky per user (the `user` field);
//! - **least latency**: power of two choices over peak-EWMA figures of two models;
//! - **rules**: a router with five rules (header, metadata, keywords, regex, tokens) that
//!   fall through to the default.
//!
//! `cargo bench -p modelgate-server --bench routing`.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a benchmark: failing loudly is right

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use common::{instant_model, report};
use modelgate_core::routing::{Routing, RoutingDoc, RoutingSettings};
use modelgate_core::usage::PriceCatalog;
use modelgate_core::Gateway;
use modelgate_server::app::{self, AppState};
use tower::ServiceExt as _;

const WARMUP: usize = 2_000;
const SAMPLES: usize = 20_000;

fn routers() -> RoutingDoc {
    serde_json::from_value(serde_json::json!({"routers": [
        {"name": "weighted", "strategy": "weighted", "sticky": "user",
         "targets": [{"model": "a", "weight": 90}, {"model": "b", "weight": 10}]},
        {"name": "fastest", "strategy": "least_latency",
         "targets": [{"model": "a"}, {"model": "b"}]},
        {"name": "ruled", "targets": [{"model": "a"}], "rules": [
            {"header": {"x-model-preference": "quality"}, "model": "b"},
            {"metadata": {"complexity": "high"}, "model": "b"},
            {"keywords": ["refund", "invoice", "chargeback"], "model": "b"},
            {"regex": "(?i)\\bprove\\b", "model": "b"},
            {"min_input_tokens": 4000, "model": "b"}
        ]}
    ]}))
    .unwrap()
}

async fn router() -> axum::Router {
    let routing = Arc::new(Routing::new(
        RoutingSettings::default(),
        None,
        BTreeSet::new(),
        PriceCatalog::default(),
    ));
    let gateway = Arc::new(
        Gateway::builder()
            .cache(None)
            .routing(Arc::clone(&routing))
            .build(),
    );
    gateway.install(vec![instant_model("a"), instant_model("b")]);
    routing.change(routers(), "bench", "", None).await.unwrap();
    app::router(AppState::new(gateway, 1 << 20))
}

fn body(model: &str, i: usize) -> String {
    serde_json::json!({
        "model": model,
        "max_tokens": 16,
        "user": format!("user-{}", i % 1000),
        "messages": [{"role": "user", "content": "what is the capital of France?"}]
    })
    .to_string()
}

async fn one(router: &axum::Router, body: String) {
    let req = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .header("x-model-preference", "speed")
        .body(Body::from(body))
        .unwrap();
    let res = router.clone().oneshot(req).await.unwrap();
    assert!(res.status().is_success());
    axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
}

async fn latency(router: &axum::Router, model: &str) -> Vec<Duration> {
    for i in 0..WARMUP {
        one(router, body(model, i)).await;
    }
    let mut times = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        let b = body(model, i);
        let t = Instant::now();
        one(router, b).await;
        times.push(t.elapsed());
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
        let r = router().await;
        for round in 1..=2 {
            println!("round {round}");
            report("direct (model a)", &latency(&r, "a").await);
            report("weighted 90/10, sticky", &latency(&r, "weighted").await);
            report(
                "least latency (P2C, peak EWMA)",
                &latency(&r, "fastest").await,
            );
            report("five rules, none matching", &latency(&r, "ruled").await);
        }
    });
}
