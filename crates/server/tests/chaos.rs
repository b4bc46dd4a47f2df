//! Chaos at load through the real router: random upstream faults with a healthy fallback must
//! never reach a client, and with every upstream down each request must end in a clean error
//! within the request's total timeout, none left hanging. The figures it prints (run with
//! `--nocapture`) are recorded in `bench/README.md`; the only limits asserted are correctness
//! ones: no client-visible error, a complete error answer, the configured timeout.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: fail loudly

mod common;

use std::time::{Duration, Instant};

use futures::StreamExt;
use modelgate_core::Config;
use modelgate_testkit::{MockUpstream, Reply};
use serde_json::{json, Value};

const REQUESTS: usize = 2000;
const CONCURRENCY: usize = 32;

struct Outcome {
    status: u16,
    served_by: String,
    clean: bool,
    latency: Duration,
}

/// One request; every fourth is streamed. `clean` says the body is a well-formed answer (or,
/// for an error status, a well-formed OpenAI error object) and a stream ended with `[DONE]`
/// and no error event.
async fn call(client: &reqwest::Client, base: &str, i: usize) -> Outcome {
    let stream = i.is_multiple_of(4);
    let started = Instant::now();
    let response = client
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({"model": "chat", "stream": stream,
            "messages": [{"role": "user", "content": format!("question {i}")}]}))
        .send()
        .await
        .expect("the gateway must answer every request (a hang or reset is a failure)");
    let status = response.status().as_u16();
    let served_by = response
        .headers()
        .get("x-modelgate-served-by")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = response.text().await.expect("complete body");
    let clean = if status != 200 {
        serde_json::from_str::<Value>(&body).is_ok_and(|v| v["error"]["message"].is_string())
    } else if stream {
        body.trim_end().ends_with("data: [DONE]") && !body.contains("\"error\"")
    } else {
        serde_json::from_str::<Value>(&body)
            .is_ok_and(|v| v["choices"][0]["message"]["content"].is_string())
    };
    Outcome {
        status,
        served_by,
        clean,
        latency: started.elapsed(),
    }
}

async fn run(base: &str, requests: usize) -> (Vec<Outcome>, Duration) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let started = Instant::now();
    let outcomes = futures::stream::iter(0..requests)
        .map(|i| {
            let client = client.clone();
            async move { call(&client, base, i).await }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    (outcomes, started.elapsed())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn report(name: &str, outcomes: &[Outcome], elapsed: Duration) {
    let mut latencies: Vec<Duration> = outcomes.iter().map(|o| o.latency).collect();
    latencies.sort();
    let count = |by: &str| outcomes.iter().filter(|o| o.served_by == by).count();
    eprintln!(
        "{name}: {} requests in {:.2}s ({:.0}/s) at concurrency {CONCURRENCY}; ok {} / errors {}; \
         served by chat {}, backup {}; latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        outcomes.len(),
        elapsed.as_secs_f64(),
        outcomes.len() as f64 / elapsed.as_secs_f64(),
        outcomes.iter().filter(|o| o.status == 200).count(),
        outcomes.iter().filter(|o| o.status != 200).count(),
        count("chat"),
        count("backup"),
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3,
    );
}

fn config(primary: &str, backup: &str) -> Config {
    Config::parse(
        &format!(
            r#"
[local]
enabled = false

[resilience.timeouts]
total = "5s"

[[providers]]
name = "primary"
type = "openai"
base_url = "{primary}/v1"
connect_timeout = "1s"

[[providers]]
name = "backup"
type = "anthropic"
base_url = "{backup}"
connect_timeout = "1s"

[[models]]
id = "chat"
provider = "primary"
upstream_id = "gpt-4o-mini"
fallbacks = ["backup"]
fallback_cache = false
[models.retry]
max_attempts = 2   # so about 1% of requests (both attempts faulted) reach the fallback

[[models]]
id = "backup"
provider = "backup"
upstream_id = "claude-3-5-haiku-latest"
"#
        ),
        "chaos.toml",
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_percent_upstream_faults_with_a_healthy_fallback_reach_no_client() {
    let primary = MockUpstream::start().await.unwrap();
    let backup = MockUpstream::start().await.unwrap();
    primary.set_default(Reply::text("from the primary").pieces(4));
    backup.set_default(Reply::text("from the backup").pieces(4));
    primary.set_fault_rate(0.1);
    let base = common::serve(config(&primary.url(), &backup.url()), None).await;

    let (outcomes, elapsed) = run(&base, REQUESTS).await;
    report("10% faults", &outcomes, elapsed);
    let failed: Vec<_> = outcomes
        .iter()
        .filter(|o| o.status != 200 || !o.clean)
        .collect();
    assert!(failed.is_empty(), "{} client-visible errors", failed.len());
    // The faults really happened and were absorbed by retries (and, rarely, the fallback).
    assert!(
        primary.calls() > REQUESTS,
        "retries: {} upstream calls",
        primary.calls()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_upstream_down_gives_clean_errors_within_the_timeout() {
    // Two ports nothing listens on.
    let dead = || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let base = common::serve(config(&dead(), &dead()), None).await;
    let (outcomes, elapsed) = run(&base, 500).await;
    report("all down", &outcomes, elapsed);
    for o in &outcomes {
        assert_eq!(o.status, 503, "a clean 503, not a hang or a 500");
        assert!(o.clean, "an OpenAI error object");
        assert!(
            o.latency < Duration::from_secs(5),
            "within the 5 s total timeout"
        );
    }
}
