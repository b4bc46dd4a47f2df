//! The pipeline seen from the HTTP side, against the test kit's mock upstream: `Retry-After`
//! and the served-by headers on errors in all three dialects, and a hostile upstream that
//! tries to exhaust the gateway's memory (a block index of 4294967295, a 1 GB error body, an
//! endless server-sent event) getting clean errors while the process stays small.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: fail loudly

mod common;

use modelgate_core::Config;
use modelgate_testkit::{Hostile, MockUpstream, Reply};
use serde_json::{json, Value};

fn config(upstream: &str, kind: &str, extra: &str) -> Config {
    Config::parse(
        &format!(
            r#"
[local]
enabled = false

[[providers]]
name = "up"
type = "{kind}"
base_url = "{upstream}"
connect_timeout = "1s"
max_event_bytes = 65536
max_response_bytes = 1048576

[[models]]
id = "m"
provider = "up"
upstream_id = "upstream-secret-model-id"
{extra}
"#
        ),
        "pipeline.toml",
    )
    .unwrap()
}

async fn post(url: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn chat(stream: bool) -> Value {
    json!({"model": "m", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn circuit_open_errors_carry_retry_after_and_attempts_in_every_dialect() {
    let mock = MockUpstream::start().await.unwrap();
    mock.set_default(Reply::status(503, "down"));
    let extra = r#"
[models.retry]
max_attempts = 1
[models.breaker]
min_requests = 2
cool_down = "30s"
"#;
    let base = common::serve(config(&format!("{}/v1", mock.url()), "openai", extra), None).await;
    // Two upstream failures open the breaker.
    for _ in 0..2 {
        let r = post(&format!("{base}/v1/chat/completions"), chat(false)).await;
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["x-modelgate-attempts"], "1");
        assert!(
            r.headers().get("retry-after").is_none(),
            "the upstream gave none"
        );
    }
    let calls = mock.calls();
    let answers = [
        post(&format!("{base}/v1/chat/completions"), chat(false)).await,
        post(
            &format!("{base}/v1/messages"),
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await,
        post(
            &format!("{base}/model/m/converse"),
            json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}]}),
        )
        .await,
    ];
    for r in answers {
        let status = r.status().as_u16();
        let h = r.headers().clone();
        let body: Value = r.json().await.unwrap();
        assert!(status == 503 || status == 529, "{status} {body}");
        let wait: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=30).contains(&wait), "Retry-After {wait}");
        assert_eq!(
            h["x-modelgate-attempts"], "0",
            "the open circuit made no attempt"
        );
        assert!(h.get("x-request-id").is_some());
        assert!(body.to_string().contains("circuit breaker"), "{body}");
    }
    assert_eq!(
        mock.calls(),
        calls,
        "no upstream call while the circuit is open"
    );
}

/// The largest resident set this process has had, in bytes (`VmHWM`).
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_upstream_gets_clean_errors_and_memory_stays_bounded() {
    const GB: u64 = 1 << 30;
    let before = peak_rss();
    let anthropic = MockUpstream::start().await.unwrap();
    let base = common::serve(config(&anthropic.url(), "anthropic", ""), None).await;
    let url = format!("{base}/v1/chat/completions");

    // A streamed content block numbered 4294967295: renumbered and answered normally, through
    // a streaming door and through the Bedrock door, whose stream the OpenAI door never sees.
    anthropic.set_default(Reply::hostile(Hostile::BlockIndex(u32::MAX)));
    let r = post(&url, chat(true)).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("hostile") && text.ends_with("data: [DONE]\n\n"),
        "{text}"
    );
    let r = post(
        &format!("{base}/v1/messages"),
        json!({"model": "m", "max_tokens": 5, "stream": true,
               "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    let text = r.text().await.unwrap();
    assert!(
        text.contains("\"index\":0") && !text.contains("4294967295"),
        "{text}"
    );

    // A 1 GB error body: only the first 64 KiB is read; the caller gets a clean error.
    anthropic.set_default(Reply::hostile(Hostile::HugeErrorBody {
        status: 500,
        bytes: GB,
    }));
    let r = post(&url, chat(false)).await;
    assert_eq!(r.status(), 500);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"]["message"].is_string(), "{body}");
    assert!(
        body.to_string().len() < 100_000,
        "the error is not the whole body"
    );

    // A body that never ends: as one endless event of a stream it is refused at the
    // configured 64 KiB; read as a whole JSON answer, at the configured 1 MiB.
    anthropic.set_default(Reply::hostile(Hostile::EndlessEvent { bytes: GB }));
    for (stream, limit) in [(false, "max_response_bytes"), (true, "max_event_bytes")] {
        let r = post(&url, chat(stream)).await;
        let text = r.text().await.unwrap();
        assert!(text.contains(limit), "{text}");
        assert!(
            !text.contains("upstream-secret-model-id"),
            "the upstream id never leaks"
        );
    }

    let grown = peak_rss().saturating_sub(before);
    assert!(
        grown < 256 << 20,
        "peak RSS grew by {} MB while 3 GB were offered",
        grown >> 20
    );
}
