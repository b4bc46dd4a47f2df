//! `stream-load`: the benchmark harness's streaming client. It opens `--streams` concurrent
//! OpenAI-style streaming chat requests (SSE) against `--url`, and measures, per stream, the
//! time to the first event that carries answer text (TTFT) and the gaps between text events.
//! General-purpose load tools time whole responses, so they cannot see either figure.
//!
//! Options: `--url URL` (a `/chat/completions` endpoint), `--model ID`, `--streams N` (default
//! 100), `--rounds N` (each stream slot runs N requests one after another; default 1),
//! `--header 'Name: value'` (repeatable). Once every stream of the first round has seen its
//! first text it prints `open N` on stderr (the harness samples memory then); at the end it
//! prints one JSON object with the counts and the percentiles in microseconds on stdout.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};

struct Args {
    url: String,
    model: String,
    streams: usize,
    rounds: usize,
    headers: Vec<(String, String)>,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        url: String::new(),
        model: "bench".into(),
        streams: 100,
        rounds: 1,
        headers: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => a.url = value()?,
            "--model" => a.model = value()?,
            "--streams" => a.streams = value()?.parse().map_err(|e| format!("--streams: {e}"))?,
            "--rounds" => a.rounds = value()?.parse().map_err(|e| format!("--rounds: {e}"))?,
            "--header" => {
                let h = value()?;
                let (k, v) = h.split_once(':').ok_or("--header takes 'Name: value'")?;
                a.headers.push((k.trim().into(), v.trim().into()));
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    if a.url.is_empty() {
        return Err("--url is required".into());
    }
    Ok(a)
}

/// What one stream saw.
#[derive(Default)]
struct Seen {
    ttft: Option<Duration>,
    gaps: Vec<Duration>,
    chunks: usize,
    error: Option<String>,
}

/// Whether one SSE event's data carries answer text.
fn has_text(data: &str) -> bool {
    serde_json::from_str::<Value>(data).is_ok_and(|v| {
        v.pointer("/choices/0/delta/content")
            .and_then(Value::as_str)
            .is_some_and(|t| !t.is_empty())
    })
}

async fn one(
    client: &reqwest::Client,
    a: &Args,
    body: &Value,
    opened: &tokio::sync::mpsc::Sender<()>,
) -> Seen {
    let mut seen = Seen::default();
    let start = Instant::now();
    let mut request = client.post(&a.url).json(body);
    for (k, v) in &a.headers {
        request = request.header(k, v);
    }
    let response = match request.send().await {
        Ok(r) if r.status().is_success() => r,
        Ok(r) => {
            seen.error = Some(format!("status {}", r.status()));
            return seen;
        }
        Err(e) => {
            seen.error = Some(e.to_string());
            return seen;
        }
    };
    let mut stream = response.bytes_stream();
    let mut buf = String::new();
    let mut last = start;
    let mut done = false;
    while let Some(piece) = stream.next().await {
        let piece = match piece {
            Ok(p) => p,
            Err(e) => {
                seen.error = Some(e.to_string());
                return seen;
            }
        };
        let now = Instant::now();
        buf.push_str(&String::from_utf8_lossy(&piece));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            for line in event.lines() {
                let Some(data) = line.strip_prefix("data:").map(str::trim) else {
                    continue;
                };
                if data == "[DONE]" {
                    done = true;
                } else if has_text(data) {
                    if seen.ttft.is_none() {
                        seen.ttft = Some(now - start);
                        let _ = opened.try_send(());
                    } else {
                        seen.gaps.push(now - last);
                    }
                    last = now;
                    seen.chunks += 1;
                }
            }
        }
    }
    if !done {
        seen.error = Some("stream ended without [DONE]".into());
    }
    seen
}

fn percentiles(mut v: Vec<Duration>) -> Value {
    if v.is_empty() {
        return Value::Null;
    }
    v.sort_unstable();
    let at = |q: f64| {
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        v[i.min(v.len() - 1)].as_micros() as u64
    };
    json!({"n": v.len(), "p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": at(1.0)})
}

fn main() -> Result<(), String> {
    let a = args()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(a.streams)
            .build()
            .map_err(|e| e.to_string())?;
        let body = json!({
            "model": a.model,
            "stream": true,
            "messages": [{"role": "user", "content": "Tell me a story."}],
        });
        let (opened_tx, mut opened_rx) = tokio::sync::mpsc::channel(a.streams.max(1));
        let a = std::sync::Arc::new(a);
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(a.streams);
        for _ in 0..a.streams {
            let (client, a, body, opened) =
                (client.clone(), a.clone(), body.clone(), opened_tx.clone());
            tasks.push(tokio::spawn(async move {
                let mut all = Vec::with_capacity(a.rounds);
                for _ in 0..a.rounds {
                    all.push(one(&client, &a, &body, &opened).await);
                }
                all
            }));
        }
        drop(opened_tx);
        let streams = a.streams;
        let announce = tokio::spawn(async move {
            let mut n = 0;
            while opened_rx.recv().await.is_some() {
                n += 1;
                if n == streams {
                    eprintln!("open {n}");
                }
            }
        });
        let (mut ttft, mut gaps, mut errors, mut chunks, mut ok) =
            (Vec::new(), Vec::new(), Vec::new(), 0usize, 0usize);
        for t in tasks {
            for seen in t.await.map_err(|e| e.to_string())? {
                chunks += seen.chunks;
                match seen.error {
                    Some(e) => errors.push(e),
                    None => ok += 1,
                }
                ttft.extend(seen.ttft);
                gaps.extend(seen.gaps);
            }
        }
        let _ = announce.await;
        let failed = errors.len();
        errors.sort();
        errors.dedup();
        let report = json!({
            "streams": a.streams,
            "completed": ok,
            "failed": failed,
            "errors": errors,
            "chunks": chunks,
            "elapsed_ms": started.elapsed().as_millis() as u64,
            "ttft_us": percentiles(ttft),
            "gap_us": percentiles(gaps),
        });
        println!("{report}");
        Ok(())
    })
}
