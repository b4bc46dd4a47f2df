//! `modelgate jobs …` and `modelgate batch run`.
//!
//! `submit` and `batch run` are client actions: they go through a running gateway's
//! `/v1/jobs` (so every job is checked and authorised as any call is). `get`, `list`,
//! `cancel`, `redrive` and `output` are operator actions on the configured store, like
//! `modelgate keys` and `modelgate logs`, and work without a running server.

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use modelgate_core::Config;
use modelgate_store::{JobQuery, JobState};
use serde_json::{json, Value};

use super::api::view;
use super::objects::Objects;

/// Where a client action sends its requests.
#[derive(Debug, Clone)]
pub struct Remote {
    /// The gateway's base URL.
    pub url: String,
    /// The API key, when the gateway needs one.
    pub api_key: Option<String>,
}

impl Remote {
    /// A request to `path` on the gateway, with the API key.
    pub fn request(
        &self,
        client: &reqwest::Client,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        let r = client.request(method, format!("{}{path}", self.url.trim_end_matches('/')));
        match &self.api_key {
            Some(k) => r.bearer_auth(k),
            None => r,
        }
    }

    fn post(&self, client: &reqwest::Client, path: &str) -> reqwest::RequestBuilder {
        self.request(client, reqwest::Method::POST, path)
    }

    fn get(&self, client: &reqwest::Client, path: &str) -> reqwest::RequestBuilder {
        self.request(client, reqwest::Method::GET, path)
    }
}

/// Send a request made with [`Remote::request`]: the status and the answer (JSON, or its text
/// as a JSON string).
pub async fn send(
    remote: &Remote,
    request: reqwest::RequestBuilder,
) -> anyhow::Result<(reqwest::StatusCode, Value)> {
    let r = request
        .send()
        .await
        .with_context(|| format!("cannot reach the gateway at {}", remote.url))?;
    let status = r.status();
    let text = r.text().await.context("reading the gateway's answer")?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// The message of an error answer in any dialect (OpenAI's `error.message`, AWS's `message`
/// or `Message`), or the whole body.
pub fn error_message(v: &Value) -> String {
    v["error"]["message"]
        .as_str()
        .or_else(|| v["message"].as_str())
        .or_else(|| v["Message"].as_str())
        .map_or_else(|| v.to_string(), str::to_string)
}

async fn json_or_error(r: reqwest::Response) -> anyhow::Result<Value> {
    let status = r.status();
    let body: Value = r.json().await.context("the gateway's answer is not JSON")?;
    if !status.is_success() {
        anyhow::bail!("{status}: {}", error_message(&body));
    }
    Ok(body)
}

/// `modelgate jobs submit PATH BODY_FILE`: submit one job; prints it.
pub async fn submit(
    remote: &Remote,
    path: &str,
    body_file: &Path,
    priority: Option<i64>,
    callback: Option<String>,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(body_file)
        .with_context(|| format!("cannot read {}", body_file.display()))?;
    let body: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not JSON", body_file.display()))?;
    let client = reqwest::Client::new();
    let mut submit = json!({"path": path, "body": body});
    if let Some(p) = priority {
        submit["priority"] = json!(p);
    }
    if let Some(c) = callback {
        submit["callback_url"] = json!(c);
    }
    let job = json_or_error(
        remote
            .post(&client, "/v1/jobs")
            .json(&submit)
            .send()
            .await?,
    )
    .await?;
    println!("{}", serde_json::to_string_pretty(&job)?);
    Ok(())
}

/// What one finished request of a batch run used.
#[derive(Debug, Default)]
struct Tally {
    done: u64,
    failed: u64,
    input_tokens: u64,
    output_tokens: u64,
    cost_nanos: i64,
}

fn usage_of(body: &Value) -> (u64, u64) {
    let u = &body["usage"];
    let input = u["prompt_tokens"]
        .as_u64()
        .or_else(|| u["input_tokens"].as_u64())
        .unwrap_or(0);
    let output = u["completion_tokens"]
        .as_u64()
        .or_else(|| u["output_tokens"].as_u64())
        .unwrap_or(0);
    (input, output)
}

/// `modelgate batch run FILE.jsonl`: submit every line (OpenAI batch-line format:
/// `{"custom_id", "method", "url", "body"}`) as a job, follow them with a progress bar, write
/// each result as a line of `output` and print a summary. Lines are submitted with an
/// idempotency key of the file's hash and their `custom_id`, so running the same file again
/// picks up the jobs already submitted instead of making new ones.
pub async fn batch_run(
    remote: &Remote,
    config: &Config,
    file: &Path,
    output: Option<&Path>,
    priority: i64,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let digest: String = ring::digest::digest(&ring::digest::SHA256, text.as_bytes())
        .as_ref()
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect();
    let client = reqwest::Client::new();
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .collect();
    let bar = indicatif::ProgressBar::new(lines.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {msg:<10} [{bar:40}] {pos}/{len} {elapsed_precise} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message("submitting");
    let mut submitted: Vec<(String, String)> = Vec::new();
    let mut tally = Tally::default();
    let mut results: Vec<Value> = Vec::new();
    for (i, line) in &lines {
        let v: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                tally.failed += 1;
                results.push(json!({"line": i + 1, "error": format!("not JSON: {e}")}));
                bar.inc(1);
                continue;
            }
        };
        let custom_id = v["custom_id"]
            .as_str()
            .map_or_else(|| format!("line-{}", i + 1), str::to_string);
        let submit = json!({
            "path": v["url"].as_str().unwrap_or("/v1/chat/completions"),
            "body": v["body"],
            "priority": priority,
            "idempotency_key": format!("batch-run-{digest}-{custom_id}"),
        });
        let answer = remote
            .post(&client, "/v1/jobs")
            .json(&submit)
            .send()
            .await?;
        match json_or_error(answer).await {
            Ok(job) => submitted.push((custom_id, job["id"].as_str().unwrap_or_default().into())),
            Err(e) => {
                tally.failed += 1;
                results
                    .push(json!({"custom_id": custom_id, "line": i + 1, "error": e.to_string()}));
                bar.inc(1);
            }
        }
    }
    bar.set_message("running");
    let prices = modelgate_core::usage::PriceCatalog::new(config.prices.clone());
    let mut pending = submitted;
    while !pending.is_empty() {
        let mut still = Vec::new();
        for (custom_id, id) in pending {
            let job = json_or_error(
                remote
                    .get(&client, &format!("/v1/jobs/{id}"))
                    .send()
                    .await?,
            )
            .await?;
            let status = job["status"].as_str().unwrap_or_default();
            if matches!(status, "queued" | "running") {
                still.push((custom_id, id));
                continue;
            }
            bar.inc(1);
            let body = job["result"]["body"].clone();
            if status == "succeeded" {
                tally.done += 1;
                let (input, output) = usage_of(&body);
                tally.input_tokens += input;
                tally.output_tokens += output;
                if let Some(model) = job["model"].as_str() {
                    let usage = modelgate_types::Usage {
                        input_tokens: u32::try_from(input).unwrap_or(u32::MAX),
                        output_tokens: u32::try_from(output).unwrap_or(u32::MAX),
                        ..Default::default()
                    };
                    tally.cost_nanos += prices.cost_of(model, &usage);
                }
            } else {
                tally.failed += 1;
            }
            results.push(
                json!({"custom_id": custom_id, "job_id": id, "status": status,
                "response": job["result"], "error": job["last_error"]}),
            );
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    bar.finish_with_message("done");
    if let Some(path) = output {
        let mut f = std::fs::File::create(path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        for r in &results {
            writeln!(f, "{r}")?;
        }
    }
    #[allow(clippy::cast_precision_loss)]
    let cost = tally.cost_nanos as f64 / 1e9;
    println!(
        "done {}  failed {}  input tokens {}  output tokens {}  cost ${cost:.6}  time {:.1}s",
        tally.done,
        tally.failed,
        tally.input_tokens,
        tally.output_tokens,
        started.elapsed().as_secs_f64()
    );
    if tally.failed > 0 {
        anyhow::bail!("{} of {} requests failed", tally.failed, lines.len());
    }
    Ok(())
}

/// `modelgate jobs get ID`
pub async fn get(jobs: &super::Jobs, id: &str) -> anyhow::Result<()> {
    let job = jobs
        .queue
        .job(id)
        .await?
        .with_context(|| format!("no job '{id}'"))?;
    let mut v = view(&job);
    v["owner"] = json!(job.owner);
    v["deliveries"] = serde_json::to_value(jobs.queue.deliveries(id).await?)?;
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

/// `modelgate jobs list`
pub async fn list(
    jobs: &super::Jobs,
    status: Option<&str>,
    kind: Option<String>,
    limit: u32,
) -> anyhow::Result<()> {
    let states = match status {
        None => Vec::new(),
        Some(s) => s
            .split(',')
            .map(|p| JobState::parse(p.trim()).with_context(|| format!("unknown status '{p}'")))
            .collect::<anyhow::Result<_>>()?,
    };
    let list = jobs
        .queue
        .jobs(&JobQuery {
            kind,
            states,
            descending: true,
            limit,
            ..JobQuery::default()
        })
        .await?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<44} {:<12} {:<10} {:<28} {:>8} {:<20}  LAST_ERROR",
        "ID", "KIND", "STATUS", "MODEL", "ATTEMPTS", "OWNER"
    )?;
    for j in list {
        writeln!(
            out,
            "{:<44} {:<12} {:<10} {:<28} {:>8} {:<20}  {}",
            j.id,
            j.kind,
            j.state.as_str(),
            j.model.as_deref().unwrap_or("-"),
            format!("{}/{}", j.receives, j.max_receives),
            j.owner,
            j.last_error
                .as_deref()
                .unwrap_or("")
                .chars()
                .take(80)
                .collect::<String>()
        )?;
    }
    Ok(())
}

/// `modelgate jobs cancel ID`
pub async fn cancel(jobs: &super::Jobs, id: &str) -> anyhow::Result<()> {
    let job = jobs
        .queue
        .cancel(id, None)
        .await?
        .with_context(|| format!("no job '{id}'"))?;
    println!("{} {}", job.id, job.state.as_str());
    Ok(())
}

/// `modelgate jobs redrive [ID]`
pub async fn redrive(jobs: &super::Jobs, id: Option<&str>) -> anyhow::Result<()> {
    let n = jobs.queue.redrive(id).await?;
    println!("redriven {n}");
    Ok(())
}

/// `modelgate jobs output ID`: a job's answer (an async invocation's output object).
pub async fn output(jobs: &super::Jobs, objects: &Objects, id: &str) -> anyhow::Result<()> {
    let id = if id.starts_with("arn:") {
        format!(
            "{}-{}",
            super::bedrock::KIND,
            id.rsplit('/').next().unwrap_or_default()
        )
    } else {
        id.to_string()
    };
    let job = jobs
        .queue
        .job(&id)
        .await?
        .with_context(|| format!("no job '{id}'"))?;
    if let Some(uri) = super::bedrock::output_uri(&job) {
        let bytes = objects
            .get(&uri)
            .await
            .with_context(|| format!("no output at {uri} (status {})", job.state.as_str()))?;
        std::io::stdout().write_all(&bytes)?;
        println!();
        return Ok(());
    }
    match &job.result {
        Some(r) => println!("{}", serde_json::to_string_pretty(&r["body"])?),
        None => anyhow::bail!("job '{id}' has no result (status {})", job.state.as_str()),
    }
    Ok(())
}
