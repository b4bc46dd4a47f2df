//! End-to-end tests of the HTTP front doors against the real embedded models.
//!
//! Each test starts the real router on an ephemeral port with the real SmolLM2 and MiniLM
//! models (installed by `modelgate models pull`; `MODELGATE_HOME` points at them) and talks to
//! it over HTTP with reqwest.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: fail loudly

mod common;

use std::sync::Arc;

use futures::StreamExt;
use modelgate_core::Config;
use serde_json::{json, Value};

const CHAT: &str = "local.smollm2-135m-instruct";
const EMBED: &str = "local.all-minilm-l6-v2";

struct Server {
    base: String,
    client: reqwest::Client,
}

async fn start_with(config: Config) -> Server {
    Server {
        base: common::serve(config, None).await,
        client: reqwest::Client::new(),
    }
}

async fn start() -> Server {
    start_with(Config::default()).await
}

impl Server {
    async fn post(&self, path: &str, body: Value) -> (u16, reqwest::header::HeaderMap, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, headers, body)
    }

    async fn post_raw(
        &self,
        path: &str,
        body: Vec<u8>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.json().await.unwrap_or(Value::Null);
        (status, headers, body)
    }

    /// Stream a chat completion; returns the content pieces and the parsed chunks.
    async fn stream_chat(&self, body: Value) -> (Vec<String>, Vec<Value>) {
        let r = self
            .client
            .post(format!("{}/v1/chat/completions", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        let mut raw = String::new();
        let mut bytes = r.bytes_stream();
        while let Some(chunk) = bytes.next().await {
            raw.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        }
        let mut pieces = Vec::new();
        let mut chunks = Vec::new();
        let frames: Vec<&str> = raw.split("\n\n").filter(|f| !f.is_empty()).collect();
        assert_eq!(
            frames.last(),
            Some(&"data: [DONE]"),
            "stream must end with [DONE]"
        );
        for frame in &frames[..frames.len() - 1] {
            let data = frame.strip_prefix("data: ").expect("SSE data frame");
            let v: Value = serde_json::from_str(data).unwrap();
            assert!(v.get("error").is_none(), "unexpected error event: {v}");
            if let Some(c) = v
                .pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
            {
                if !c.is_empty() {
                    pieces.push(c.to_string());
                }
            }
            chunks.push(v);
        }
        (pieces, chunks)
    }
}

fn france(extra: Value) -> Value {
    let mut v = json!({
        "model": CHAT,
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "temperature": 0,
        "max_tokens": 48,
    });
    for (k, val) in extra.as_object().unwrap() {
        v[k] = val.clone();
    }
    v
}

#[tokio::test]
async fn openai_chat_answers_and_stream_matches() {
    let s = start().await;
    let (status, headers, body) = s.post("/v1/chat/completions", france(json!({}))).await;
    assert_eq!(status, 200, "{body}");
    assert!(headers.contains_key("x-request-id"));
    let text = body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(text.contains("Paris"), "answer was {text:?}");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], CHAT);
    let usage = &body["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 5);
    assert!(usage["completion_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );
    let (pieces, chunks) = s
        .stream_chat(france(
            json!({"stream": true, "stream_options": {"include_usage": true}}),
        ))
        .await;
    assert!(pieces.len() > 2, "expected several chunks, got {pieces:?}");
    assert_eq!(
        pieces.concat(),
        text,
        "streamed text must equal the non-streamed text"
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let finish: Vec<&Value> = chunks
        .iter()
        .filter(|c| {
            !c["choices"][0]["finish_reason"].is_null()
                && c["choices"].as_array().is_some_and(|a| !a.is_empty())
        })
        .collect();
    assert_eq!(finish.len(), 1);
    assert_eq!(
        finish[0]["choices"][0]["finish_reason"],
        body["choices"][0]["finish_reason"]
    );
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(
        last["usage"], body["usage"],
        "streamed usage equals non-streamed usage"
    );
}

#[tokio::test]
async fn max_tokens_and_stop_sequences_are_honoured() {
    let s = start().await;
    let (status, _, body) = s
        .post(
            "/v1/chat/completions",
            json!({"model": CHAT, "messages": [{"role": "user", "content": "Count from 1 to 50."}], "max_tokens": 5, "temperature": 0}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["usage"]["completion_tokens"], 5);
    let full = body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    // Stop on a word from the unconstrained answer: the answer ends just before it.
    let (_, _, body) = s.post("/v1/chat/completions", france(json!({}))).await;
    let answer = body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    let at = answer.find("Paris").unwrap();
    let (_, _, body) = s
        .post("/v1/chat/completions", france(json!({"stop": ["Paris"]})))
        .await;
    assert_eq!(
        body["choices"][0]["message"]["content"].as_str().unwrap(),
        &answer[..at]
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert!(!full.is_empty());
}

#[tokio::test]
async fn bedrock_converse_answers() {
    let s = start().await;
    let path = format!("/model/{}/converse", "local.smollm2-135m-instruct");
    let (status, headers, body) = s
        .post(
            &path,
            json!({
                "messages": [{"role": "user", "content": [{"text": "What is the capital of France?"}]}],
                "inferenceConfig": {"maxTokens": 48, "temperature": 0}
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(headers.contains_key("x-amzn-requestid"));
    let text = body["output"]["message"]["content"][0]["text"]
        .as_str()
        .unwrap();
    assert!(text.contains("Paris"), "{text}");
    assert_eq!(body["output"]["message"]["role"], "assistant");
    assert_eq!(body["stopReason"], "end_turn");
    assert!(body["usage"]["inputTokens"].as_u64().unwrap() > 0);
    assert!(body["metrics"]["latencyMs"].is_u64());
}

#[tokio::test]
async fn embeddings_are_unit_vectors_ranking_paraphrases_higher() {
    let s = start().await;
    let (status, _, body) = s
        .post(
            "/v1/embeddings",
            json!({"model": EMBED, "input": [
                "The cat sits on the mat.",
                "A cat is sitting on a rug.",
                "Quarterly revenue grew by eight percent."
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let vecs: Vec<Vec<f64>> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            d["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(vecs.len(), 3);
    for v in &vecs {
        assert_eq!(v.len(), 384);
        let norm: f64 = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "norm {norm}");
    }
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let para = dot(&vecs[0], &vecs[1]);
    let unrelated = dot(&vecs[0], &vecs[2]);
    assert!(
        para > unrelated + 0.2,
        "paraphrase {para} vs unrelated {unrelated}"
    );
    assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() > 10);
}

#[tokio::test]
async fn bad_input_gets_dialect_errors_and_server_keeps_serving() {
    let s = start_with(Config::parse("[server]\nmax_body_bytes = 4096\n", "test").unwrap()).await;
    // OpenAI dialect.
    let (st, _, b) = s
        .post_raw("/v1/chat/completions", b"{not json".to_vec())
        .await;
    assert_eq!(st, 400);
    assert_eq!(b["error"]["type"], "invalid_request_error");
    assert!(b["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not valid"));
    let (st, _, b) = s
        .post(
            "/v1/chat/completions",
            json!({"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(st, 404);
    assert_eq!(b["error"]["code"], "model_not_found");
    let (st, _, b) = s
        .post(
            "/v1/chat/completions",
            json!({"model": CHAT, "messages": []}),
        )
        .await;
    assert_eq!(st, 400, "{b}");
    let (st, _, b) = s
        .post("/v1/chat/completions", france(json!({"max_tokens": 0})))
        .await;
    assert_eq!(st, 400, "{b}");
    let (st, _, b) = s.post_raw("/v1/chat/completions", vec![b' '; 5000]).await;
    assert_eq!(st, 413);
    assert_eq!(b["error"]["code"], "request_too_large");
    let (st, _, b) = s
        .post("/v1/embeddings", json!({"model": CHAT, "input": "x"}))
        .await;
    assert_eq!(st, 400, "{b}");
    // Bedrock dialect.
    let conv = "/model/local.smollm2-135m-instruct/converse";
    let (st, h, b) = s.post_raw(conv, b"{not json".to_vec()).await;
    assert_eq!(st, 400);
    assert_eq!(h["x-amzn-errortype"], "ValidationException");
    assert!(b["message"].is_string());
    let (st, h, _) = s
        .post(
            "/model/anthropic.claude-v9%3A0/converse",
            json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}]}),
        )
        .await;
    assert_eq!(st, 404);
    assert_eq!(h["x-amzn-errortype"], "ResourceNotFoundException");
    let (st, h, _) = s.post(conv, json!({"messages": []})).await;
    assert_eq!(st, 400);
    assert_eq!(h["x-amzn-errortype"], "ValidationException");
    let (st, h, _) = s
        .post(conv, json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}], "inferenceConfig": {"maxTokens": 0}}))
        .await;
    assert_eq!(st, 400);
    assert_eq!(h["x-amzn-errortype"], "ValidationException");
    let (st, h, _) = s.post_raw(conv, vec![b' '; 5000]).await;
    assert_eq!(st, 413);
    assert_eq!(h["x-amzn-errortype"], "ValidationException");
    // Still serving.
    let (st, _, b) = s.post("/v1/chat/completions", france(json!({}))).await;
    assert_eq!(st, 200);
    assert!(b["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .contains("Paris"));
}

#[tokio::test]
async fn health_ready_and_models() {
    let s = start().await;
    let r = s
        .client
        .get(format!("{}/healthz", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r: Value = s
        .client
        .get(format!("{}/readyz", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "ready");
    let r: Value = s
        .client
        .get(format!("{}/v1/models", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = r["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![EMBED, CHAT]);
    let r = s
        .client
        .get(format!("{}/v1/models/nope", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// 16 concurrent streams (4 slots, the rest queued): every one completes, each with the answer
/// to its own question and equal to what the same request gives alone.
#[tokio::test]
async fn sixteen_concurrent_streams_complete_without_interleaving() {
    let s = Arc::new(start().await);
    let questions = [
        ("What is the capital of France?", "Paris"),
        ("What is the capital of Japan?", "Tokyo"),
        ("What is the capital of Italy?", "Rome"),
        ("What is the capital of Germany?", "Berlin"),
    ];
    let body = |q: &str| json!({"model": CHAT, "messages": [{"role": "user", "content": q}], "temperature": 0, "max_tokens": 40, "stream": true});
    // Reference answers, one request at a time.
    let mut expected = Vec::new();
    for (q, city) in &questions {
        let (pieces, _) = s.stream_chat(body(q)).await;
        let text = pieces.concat();
        assert!(text.contains(city), "{q} -> {text}");
        expected.push(text);
    }
    let mut tasks = Vec::new();
    for i in 0..16 {
        let s = Arc::clone(&s);
        let b = body(questions[i % 4].0);
        tasks.push(tokio::spawn(async move {
            (i, s.stream_chat(b).await.0.concat())
        }));
    }
    for t in tasks {
        let (i, text) = t.await.unwrap();
        let (_, city) = questions[i % 4];
        assert!(text.contains(city), "stream {i}: {text:?}");
        for (_, other) in questions.iter().filter(|(_, c)| c != &city) {
            assert!(
                !text.contains(other),
                "stream {i} mixed in {other}: {text:?}"
            );
        }
        assert_eq!(
            text,
            expected[i % 4],
            "stream {i} differs from the same request run alone"
        );
    }
}

#[tokio::test]
async fn full_queue_is_throttled_not_dropped() {
    // Retries off: this is about the queue's own answer (the gateway would retry a 429).
    let cfg = Config::parse(
        "[local.chat]\nparallel = 1\nqueue_depth = 1\n[resilience.retry]\nmax_attempts = 1\n",
        "test",
    )
    .unwrap();
    let s = Arc::new(start_with(cfg).await);
    let long = json!({"model": CHAT, "messages": [{"role": "user", "content": "Write a long story about a dragon."}], "max_tokens": 150, "temperature": 0});
    // Occupy the only slot: a stream whose first content has arrived is surely running.
    let mut running = long.clone();
    running["stream"] = json!(true);
    let r = s
        .client
        .post(format!("{}/v1/chat/completions", s.base))
        .json(&running)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut bytes = r.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("\"content\":\"") || seen.matches("data: ").count() < 3 {
        seen.push_str(std::str::from_utf8(&bytes.next().await.unwrap().unwrap()).unwrap());
    }
    // Five more at once: one fits the queue and waits, the rest are refused with 429.
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let s = Arc::clone(&s);
        let b = long.clone();
        tasks.push(tokio::spawn(async move {
            s.post("/v1/chat/completions", b).await
        }));
    }
    let mut ok = 0;
    let mut throttled = 0;
    for t in tasks {
        let (status, _, body) = t.await.unwrap();
        match status {
            200 => ok += 1,
            429 => {
                assert_eq!(body["error"]["type"], "rate_limit_exceeded");
                throttled += 1;
            }
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    assert!(ok >= 1, "the queued request must complete (ok={ok})");
    assert!(
        throttled >= 3,
        "requests beyond the queue must get 429 (throttled={throttled})"
    );
    // The running stream still finishes cleanly.
    while let Some(chunk) = bytes.next().await {
        seen.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    assert!(seen.ends_with("data: [DONE]\n\n"));
}
