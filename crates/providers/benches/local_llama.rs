//! Embedded chat model throughput, measured the way `llama-bench` measures llama.cpp:
//! pp512 (prefill of a 512-token prompt) and tg128 (decode of 128 tokens), plus time to first
//! token for a short chat prompt; then the decode rate of grammar-constrained generation (a JSON
//! schema, JSON mode, a forced tool call) against free text on the same prompt. Runs through
//! the real `LocalLlama` provider — template, tokenizer, grammar, engine thread, batching and
//! channels included.
//!
//! `cargo bench -p modelgate-providers --bench local_llama` (model files from
//! `modelgate models pull`; `MODELGATE_HOME` as for the server). Prints one JSON line per
//! figure; `bench/run-local-model.sh` runs this next to llama.cpp's own `llama-bench`.

#![allow(clippy::expect_used)] // a benchmark: failing loudly is the right behaviour

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use modelgate_providers::{LocalLlama, LocalLlamaConfig, LocalLlamaSettings, Provider};
use modelgate_types::{
    ChatRequest, ContentBlockDelta, InferenceConfig, Message, ResponseFormat, Role, StreamEvent,
    Tool, ToolChoice, ToolConfig, ToolSpec,
};

fn data_dir() -> PathBuf {
    if let Some(h) = std::env::var_os("MODELGATE_HOME") {
        return PathBuf::from(h);
    }
    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".local/share/modelgate")
}

struct Run {
    ttft: Duration,
    total: Duration,
    input_tokens: u32,
    output_tokens: u32,
}

/// How a benchmark variant changes the base request.
type Shape = Box<dyn Fn(&mut ChatRequest)>;

fn request(prompt: String, max_tokens: u32) -> ChatRequest {
    ChatRequest {
        model: "bench".into(),
        messages: vec![Message::text(Role::User, prompt)],
        inference: InferenceConfig {
            max_tokens: Some(max_tokens),
            temperature: Some(0.0),
            ..Default::default()
        },
        ..Default::default()
    }
}

async fn run(p: &LocalLlama, prompt: String, max_tokens: u32) -> Run {
    run_request(p, request(prompt, max_tokens)).await
}

async fn run_request(p: &LocalLlama, req: ChatRequest) -> Run {
    let start = Instant::now();
    let mut first = None;
    let mut s = p.converse_stream(req).await.expect("request accepted");
    let mut usage = None;
    while let Some(e) = s.next().await {
        match e.expect("stream ok") {
            StreamEvent::ContentBlockDelta {
                delta: ContentBlockDelta::Text(t),
                ..
            } if !t.is_empty() && first.is_none() => first = Some(start.elapsed()),
            StreamEvent::Metadata { usage: u, .. } => usage = Some(u),
            _ => {}
        }
    }
    let u = usage.expect("metadata");
    Run {
        ttft: first.unwrap_or_default(),
        total: start.elapsed(),
        input_tokens: u.input_tokens,
        output_tokens: u.output_tokens,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let repeats: usize = std::env::var("BENCH_REPEATS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let path =
        data_dir().join("models/local.smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    let cfg = LocalLlamaConfig {
        model_path: path,
        settings: LocalLlamaSettings {
            parallel: 1,
            default_max_tokens: 128,
            ..LocalLlamaSettings::default()
        },
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let p = LocalLlama::load(cfg).expect("model loads (run `modelgate models pull` first)");
    rt.block_on(async {
        // Warm-up.
        run(&p, "Hello".into(), 8).await;
        // TTFT: a short chat question.
        let mut ttfts = Vec::new();
        for _ in 0..repeats {
            let r = run(&p, "What is the capital of France?".into(), 1).await;
            ttfts.push(r.ttft.as_secs_f64() * 1000.0);
        }
        println!(
            "{{\"figure\":\"ttft_short_prompt_ms\",\"median\":{:.2}}}",
            median(ttfts)
        );
        // pp512: a prompt of ~512 tokens (with the chat template), one output token.
        let words = "the quick brown fox jumps over the lazy dog ".repeat(56);
        let mut pp = Vec::new();
        let mut n_in = 0;
        for _ in 0..repeats {
            let r = run(&p, words.clone(), 1).await;
            n_in = r.input_tokens;
            pp.push(r.input_tokens as f64 / r.ttft.as_secs_f64());
        }
        println!(
            "{{\"figure\":\"prefill_tok_per_s\",\"prompt_tokens\":{n_in},\"median\":{:.1}}}",
            median(pp)
        );
        // tg128: decode rate after the first token, over up to 128 generated tokens.
        let mut tg = Vec::new();
        let mut n_out = 0;
        for _ in 0..repeats {
            let r = run(
                &p,
                "Write a long story about a dragon who learns to paint.".into(),
                128,
            )
            .await;
            n_out = r.output_tokens;
            let decode = (r.total - r.ttft).as_secs_f64();
            tg.push((r.output_tokens.saturating_sub(1)) as f64 / decode);
        }
        println!(
            "{{\"figure\":\"decode_tok_per_s\",\"output_tokens\":{n_out},\"median\":{:.1}}}",
            median(tg)
        );
        // Grammar-constrained decoding against free text, one prompt, up to 128 tokens. A tool
        // call goes out whole at its end, so the decode time is the full run's minus that of
        // the same request cut at one token.
        let person = serde_json::json!({
            "type": "object",
            "properties": {
                "name": {"type": "string", "maxLength": 40},
                "age": {"type": "integer", "minimum": 0, "maximum": 120},
                "role": {"type": "string", "enum": ["admin", "editor", "viewer"]},
                "address": {"type": "object", "properties": {
                    "city": {"type": "string"}, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                    "required": ["city", "zip"]},
                "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3}
            },
            "required": ["name", "age", "role", "address", "tags"]
        });
        let prompt = "Invent a user of a web shop and describe them.";
        let variants: [(&str, Shape); 4] = [
            ("free_text", Box::new(|_| {})),
            ("json_object", Box::new(|r| r.response_format = Some(ResponseFormat::JsonObject))),
            (
                "json_schema",
                Box::new(move |r| {
                    r.response_format = Some(ResponseFormat::JsonSchema {
                        name: "person".into(),
                        description: None,
                        schema: person.clone(),
                        strict: true,
                    })
                }),
            ),
            (
                "tool_call",
                Box::new(|r| {
                    r.tools = Some(ToolConfig {
                        tools: vec![Tool::ToolSpec(ToolSpec {
                            name: "create_user".into(),
                            description: Some("Create a web shop user".into()),
                            input_schema: serde_json::json!({"json": {
                                "type": "object",
                                "properties": {"name": {"type": "string"}, "email": {"type": "string"},
                                               "age": {"type": "integer"}},
                                "required": ["name", "email", "age"]}}),
                        })],
                        tool_choice: Some(ToolChoice::Any(serde_json::json!({}))),
                    })
                }),
            ),
        ];
        for (name, shape) in &variants {
            // The same request cut at one token: prompt (the schema or tools are in it),
            // grammar set-up and the first token, taken off every full run.
            let mut firsts = Vec::new();
            for _ in 0..repeats {
                let mut req = request(prompt.into(), 1);
                shape(&mut req);
                firsts.push(run_request(&p, req).await.total.as_secs_f64());
            }
            let first = median(firsts);
            let mut rates = Vec::new();
            let mut n_out = 0;
            for _ in 0..repeats {
                let mut req = request(prompt.into(), 128);
                shape(&mut req);
                let r = run_request(&p, req).await;
                n_out = r.output_tokens;
                let decode = (r.total.as_secs_f64() - first).max(1e-9);
                rates.push(r.output_tokens.saturating_sub(1) as f64 / decode);
            }
            println!(
                "{{\"figure\":\"constrained_decode_tok_per_s\",\"shape\":\"{name}\",\"output_tokens\":{n_out},\"median\":{:.1}}}",
                median(rates)
            );
        }
    });
}
