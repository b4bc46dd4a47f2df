//! `/metrics` against a scripted mixed workload on the mock upstream — successes, streams, a
//! retried throttle, upstream errors, a fallback, a client that leaves mid-stream, a bad
//! request and an unknown model: the counters equal what the clients saw and what the mock
//! counted, and no label carries a name a client made up.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: fail loudly

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use modelgate_core::Config;
use modelgate_store::{InvocationQuery, InvocationStore};
use modelgate_testkit::{MockUpstream, Reply};
use serde_json::{json, Value};

fn config(upstream: &str) -> Config {
    Config::parse(
        &format!(
            r#"
[local]
enabled = false

[resilience.retry]
max_attempts = 2
initial_backoff = "1ms"
max_backoff = "2ms"

[resilience.breaker]
enabled = false

[[providers]]
name = "up"
type = "openai"
base_url = "{upstream}"

[[models]]
id = "main"
provider = "up"
upstream_id = "gpt-4o-mini"
fallbacks = ["backup"]

[[models]]
id = "backup"
provider = "up"
upstream_id = "gpt-4o"

[prices.main]
input = 1000.0
output = 2000.0
"#
        ),
        "metrics.toml",
    )
    .unwrap()
}

/// The samples of one metric family: label text → value.
fn samples(text: &str, name: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .map(|l| {
            let (labels, value) = l.rsplit_once(' ').unwrap();
            (labels[name.len()..].to_string(), value.parse().unwrap())
        })
        .collect()
}

fn sum_where(map: &BTreeMap<String, f64>, needles: &[&str]) -> f64 {
    map.iter()
        .filter(|(k, _)| needles.iter().all(|n| k.contains(n)))
        .map(|(_, v)| v)
        .sum()
}

async fn chat(client: &reqwest::Client, base: &str, body: Value) -> reqwest::Response {
    client
        .post(format!("{base}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn scrape(client: &reqwest::Client, base: &str) -> String {
    let r = client.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

fn ask(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn counters_equal_what_clients_saw_and_the_mock_counted() {
    let mock = MockUpstream::start().await.unwrap();
    let observed = common::serve_observed(config(&format!("{}/v1", mock.url()))).await;
    let base = observed.base.clone();
    let client = reqwest::Client::new();
    let mut statuses: BTreeMap<u16, u32> = BTreeMap::new();
    let mut count = |s: u16| *statuses.entry(s).or_default() += 1;

    // Three whole answers of 10 in / 5 out (the default reply); the first continues a
    // client's trace.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut traced_id = String::new();
    for i in 0..3 {
        let mut req = client
            .post(format!("{base}/v1/chat/completions"))
            .json(&ask("main", false));
        if i == 0 {
            req = req.header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"));
        }
        let r = req.send().await.unwrap();
        if i == 0 {
            traced_id = r.headers()["x-request-id"].to_str().unwrap().to_string();
        }
        count(r.status().as_u16());
        r.bytes().await.unwrap();
    }
    // A stream, read to the end.
    let r = chat(&client, &base, ask("main", true)).await;
    count(r.status().as_u16());
    r.bytes().await.unwrap();
    // A throttle, retried once, then an answer: 2 upstream attempts.
    mock.push(Reply::status(429, "slow down"));
    let r = chat(&client, &base, ask("main", false)).await;
    count(r.status().as_u16());
    r.bytes().await.unwrap();
    // Main fails twice (both attempts); its fallback answers: 3 attempts, one fallback.
    mock.push(Reply::status(500, "boom"));
    mock.push(Reply::status(500, "boom"));
    let r = chat(&client, &base, ask("main", false)).await;
    count(r.status().as_u16());
    r.bytes().await.unwrap();
    // Everything fails: main twice, backup twice — an upstream error.
    for _ in 0..4 {
        mock.push(Reply::status(500, "boom"));
    }
    let r = chat(&client, &base, ask("main", false)).await;
    count(r.status().as_u16());
    r.bytes().await.unwrap();
    // A client that leaves mid-stream.
    mock.push(
        Reply::text("one two three four five six seven eight nine ten")
            .pieces(3)
            .chunk_delay(Duration::from_millis(50)),
    );
    let r = chat(&client, &base, ask("main", true)).await;
    let mut body = r.bytes_stream();
    body.next().await.unwrap().unwrap();
    drop(body);
    // A bad request and an unknown, made-up model.
    let r = chat(&client, &base, json!({"model": "main", "messages": []})).await;
    count(r.status().as_u16());
    let r = chat(&client, &base, ask("made-up-model-name", false)).await;
    count(r.status().as_u16());
    assert_eq!(
        statuses,
        BTreeMap::from([(200, 6), (400, 1), (404, 1), (500, 1)]),
        "what the clients saw"
    );

    // The cancelled call's outcome is recorded when its stream is dropped; give it a moment.
    let mut text = String::new();
    for _ in 0..50 {
        text = scrape(&client, &base).await;
        if sum_where(&samples(&text, "modelgate_errors_total"), &["cancelled"]) == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let requests = samples(&text, "modelgate_requests_total");
    let chat_route = "route=\"/v1/chat/completions\"";
    assert_eq!(sum_where(&requests, &[chat_route, "status=\"200\""]), 6.0);
    assert_eq!(sum_where(&requests, &[chat_route, "status=\"499\""]), 1.0);
    assert_eq!(sum_where(&requests, &[chat_route, "status=\"400\""]), 1.0);
    assert_eq!(sum_where(&requests, &[chat_route, "status=\"404\""]), 1.0);
    assert_eq!(sum_where(&requests, &[chat_route, "status=\"500\""]), 1.0);
    assert!(
        !text.contains("made-up-model-name"),
        "no label from a client's made-up name"
    );
    // The bad request (refused before routing) and the made-up model are `unrouted`.
    assert_eq!(
        sum_where(&requests, &[chat_route, "model=\"unrouted\""]),
        2.0
    );

    let errors = samples(&text, "modelgate_errors_total");
    assert_eq!(sum_where(&errors, &["category=\"upstream\""]), 1.0);
    assert_eq!(sum_where(&errors, &["category=\"validation\""]), 1.0);
    assert_eq!(sum_where(&errors, &["category=\"not_found\""]), 1.0);
    assert_eq!(sum_where(&errors, &["category=\"cancelled\""]), 1.0);

    // Upstream attempts equal the mock's call count; retries are attempts beyond the first.
    let attempts = sum_where(&samples(&text, "modelgate_upstream_attempts_total"), &[]);
    assert_eq!(attempts, mock.calls() as f64);
    // 3 + 1 + 2 + 3 + 4 + 1 (the cancelled stream) = 14.
    assert_eq!(attempts, 14.0);
    let retries = sum_where(&samples(&text, "modelgate_retries_total"), &[]);
    assert_eq!(retries, (1 + 2 + 3) as f64);
    let fallbacks = samples(&text, "modelgate_fallbacks_total");
    assert_eq!(sum_where(&fallbacks, &["model=\"main\""]), 2.0);

    // Tokens: six answers of 10 in / 5 out (the stream's and the fallback's included), plus
    // the cancelled stream's tally (no input count from this upstream before its end, one
    // output token per delta it sent before the client left).
    let tokens = samples(&text, "modelgate_tokens_total");
    let input = sum_where(&tokens, &["kind=\"input\""]);
    let output = sum_where(&tokens, &["kind=\"output\""]);
    assert_eq!(input, 60.0);
    assert!(output > 30.0, "{output}");
    // Cost: [prices.main] for everything `main` served; the fallback's answer (10 in / 5 out)
    // was served by `backup`, which has no price.
    let cost = sum_where(&samples(&text, "modelgate_cost_usd_total"), &[]);
    let want = ((input - 10.0) * 1000.0 + (output - 5.0) * 2000.0) / 1e6;
    assert!((cost - want).abs() < 1e-9, "{cost} != {want}");
    // Histograms have one observation per model call.
    let durations = samples(&text, "modelgate_request_duration_seconds_count");
    assert_eq!(sum_where(&durations, &[]), 10.0);
    // Nothing in flight once every call ended but the scrape itself.
    let in_flight = text
        .lines()
        .find_map(|l| l.strip_prefix("modelgate_in_flight_requests "))
        .unwrap();
    assert_eq!(in_flight, "1");

    // The invocation records tell the same story, call by call (written in batches off the
    // call's path: wait for all ten).
    let mut records = Vec::new();
    for _ in 0..100 {
        records = observed
            .records
            .invocations(&InvocationQuery::default())
            .await
            .unwrap();
        if records.len() >= 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(records.len(), 10, "one record per model call");
    let mut by_status: BTreeMap<i64, f64> = BTreeMap::new();
    for r in &records {
        *by_status.entry(r.status).or_default() += 1.0;
    }
    for (status, n) in &by_status {
        assert_eq!(
            sum_where(&requests, &[chat_route, &format!("status=\"{status}\"")]),
            *n,
            "status {status}"
        );
    }
    let attempts_recorded: i64 = records.iter().map(|r| r.attempts).sum();
    assert_eq!(attempts_recorded as f64, attempts);
    assert_eq!(attempts_recorded, mock.calls() as i64);
    let input_recorded: i64 = records.iter().map(|r| r.input_tokens).sum();
    let output_recorded: i64 = records.iter().map(|r| r.output_tokens).sum();
    assert_eq!(
        (input_recorded as f64, output_recorded as f64),
        (input, output)
    );
    let cost_recorded: i64 = records.iter().map(|r| r.cost_nanos).sum();
    assert!((cost_recorded as f64 / 1e9 - cost).abs() < 1e-9);
    let categories: Vec<&str> = records
        .iter()
        .filter_map(|r| r.error_category.as_deref())
        .collect();
    for c in ["upstream", "validation", "not_found", "cancelled"] {
        assert_eq!(
            categories.iter().filter(|x| **x == c).count() as f64,
            sum_where(&errors, &[&format!("category=\"{c}\"")]),
            "{c}"
        );
    }
    let fallback = records
        .iter()
        .find(|r| r.status == 200 && r.model_served.as_deref() == Some("backup"))
        .expect("the fallback's record");
    assert_eq!(fallback.fallback_reason.as_deref(), Some("upstream_error"));
    assert_eq!(fallback.attempts, 3);
    let cancelled = records.iter().find(|r| r.cancelled).unwrap();
    assert_eq!((cancelled.status, cancelled.streamed), (499, true));
    // The traced call continued the client's trace; every record has a trace id.
    let traced = records.iter().find(|r| r.request_id == traced_id).unwrap();
    assert_eq!(traced.trace_id.as_deref(), Some(trace));
    assert!(records
        .iter()
        .all(|r| r.trace_id.as_ref().is_some_and(|t| t.len() == 32)));
    // Bodies are not captured unless configured.
    assert!(records
        .iter()
        .all(|r| r.request_body.is_none() && r.response_body.is_none()));
    assert_eq!(traced.params["messages"], 1);
}

#[tokio::test]
async fn the_embedded_models_report_their_slots_and_queue() {
    let config = Config::default();
    let parallel = config.local.chat.parallel;
    let observed = common::serve_observed(config).await;
    let base = observed.base.clone();
    let client = reqwest::Client::new();
    let r = chat(
        &client,
        &base,
        json!({"model": "local.smollm2-135m-instruct", "max_tokens": 4,
               "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();
    let chat_model = "model=\"local.smollm2-135m-instruct\"";
    // The engine thread frees the slot just after it sent the answer's last event, so the
    // gauge may lag the response by a moment.
    let mut text = scrape(&client, &base).await;
    for _ in 0..100 {
        if sum_where(
            &samples(&text, "modelgate_local_slots_in_use"),
            &[chat_model],
        ) == 0.0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        text = scrape(&client, &base).await;
    }
    assert_eq!(
        sum_where(&samples(&text, "modelgate_local_slots"), &[chat_model]),
        f64::from(parallel)
    );
    // The one call has ended: nothing generating, nothing waiting.
    assert_eq!(
        sum_where(
            &samples(&text, "modelgate_local_slots_in_use"),
            &[chat_model]
        ),
        0.0
    );
    assert_eq!(
        sum_where(
            &samples(&text, "modelgate_local_queue_depth"),
            &[chat_model]
        ),
        0.0
    );
}
