//! Batches: the OpenAI Files and Batch APIs (`/v1/files`, `/v1/batches`) and Anthropic
//! Message Batches (`/v1/messages/batches`). Each request of a batch is a job (priority 7, so
//! interactive jobs go first); the finaliser notices when a batch's last job has ended and
//! writes its output and error files (OpenAI) or marks it ended (Anthropic, whose results are
//! read from the jobs).
//!
//! A bad line of an OpenAI input file (not JSON, no `custom_id`, a repeated `custom_id`, a
//! `url` other than the batch's endpoint, an unknown model) is reported on its own line of
//! the error file; the other lines still run.

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Multipart, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use modelgate_core::keys::now_ms;
use modelgate_core::CallContext;
use modelgate_store::{BatchRecord, FileRecord, JobQuery, JobRecord, JobState, NewJob};
use modelgate_types::{Error, ErrorKind};
use serde::Deserialize;
use serde_json::{json, Value};

use super::api::{check_call, jobs_of, owner};
use super::{store_error, Jobs};
use crate::app::AppState;
use crate::errors::{body_rejection, json_error, parse_body, AnthropicError, OpenAiError};

const DAY_S: i64 = 86_400;
/// Batch requests wait behind interactive jobs (5).
const BATCH_PRIORITY: i64 = 7;

fn file_uri(jobs: &Jobs, id: &str) -> String {
    format!("s3://{}/{id}", jobs.config.files_bucket)
}

fn file_view(f: &FileRecord) -> Value {
    json!({
        "id": f.id, "object": "file", "bytes": f.bytes, "created_at": f.created_ms / 1000,
        "filename": f.filename, "purpose": f.purpose, "status": "processed", "expires_at": null,
        "status_details": null,
    })
}

fn not_found(what: &str, id: &str) -> Error {
    Error::new(ErrorKind::NotFound, format!("No such {what}: '{id}'"))
}

async fn own_file(jobs: &Jobs, ctx: &CallContext, id: &str) -> Result<FileRecord, Error> {
    jobs.batches
        .file(id)
        .await
        .map_err(store_error)?
        .filter(|f| f.owner == owner(ctx))
        .ok_or_else(|| not_found("File", id))
}

/// Store a file's bytes and metadata.
async fn put_file(
    jobs: &Jobs,
    owner: &str,
    purpose: &str,
    filename: &str,
    bytes: &[u8],
) -> Result<FileRecord, Error> {
    let record = FileRecord {
        id: super::new_id("file-"),
        owner: owner.into(),
        purpose: purpose.into(),
        filename: filename.into(),
        bytes: i64::try_from(bytes.len()).unwrap_or(i64::MAX),
        created_ms: now_ms(),
    };
    jobs.objects
        .put(&file_uri(jobs, &record.id), bytes)
        .await
        .map_err(|e| Error::internal(format!("cannot store the file: {e}")))?;
    jobs.batches
        .insert_file(&record)
        .await
        .map_err(store_error)?;
    Ok(record)
}

/// `POST /v1/files` (multipart: `file`, `purpose`)
pub async fn upload(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Response {
    let result = async {
        let jobs = jobs_of(&state)?;
        let mut multipart = multipart.map_err(|e| {
            Error::validation(format!("The upload is not multipart form data: {e}"))
        })?;
        let (mut purpose, mut file) = (None, None);
        while let Some(field) = multipart
            .next_field()
            .await
            .map_err(|e| Error::validation(format!("The upload could not be read: {e}")))?
        {
            match field.name() {
                Some("purpose") => {
                    purpose = Some(
                        field
                            .text()
                            .await
                            .map_err(|e| Error::validation(e.to_string()))?,
                    )
                }
                Some("file") => {
                    let name = field.file_name().unwrap_or("upload.jsonl").to_string();
                    let bytes = field.bytes().await.map_err(|e| {
                        Error::validation(format!("The file could not be read (larger than the server's body limit?): {e}"))
                    })?;
                    file = Some((name, bytes));
                }
                _ => {}
            }
        }
        let purpose = purpose.ok_or_else(|| Error::validation("purpose: required"))?;
        if !matches!(purpose.as_str(), "batch" | "user_data" | "evals") {
            return Err(Error::validation(format!(
                "purpose: '{purpose}' is not supported here (batch, user_data, evals)"
            )));
        }
        let (name, bytes) = file.ok_or_else(|| Error::validation("file: required"))?;
        if bytes.len() as u64 > jobs.config.max_file_bytes {
            return Err(Error::validation(format!(
                "file: {} bytes is over the limit of {} bytes (jobs.max_file_bytes)",
                bytes.len(),
                jobs.config.max_file_bytes
            )));
        }
        if purpose == "batch" && !name.ends_with(".jsonl") {
            return Err(Error::validation(
                "file: a batch input file must be JSONL (.jsonl)",
            ));
        }
        let f = put_file(jobs, &owner(&ctx), &purpose, &name, &bytes).await?;
        Ok(Json(file_view(&f)).into_response())
    };
    crate::errors::respond::<OpenAiError>(result.await)
}

/// `GET /v1/files/{id}`
pub async fn get_file(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Path(id): Path<String>,
) -> Response {
    let result = async {
        let f = own_file(jobs_of(&state)?, &ctx, &id).await?;
        Ok(Json(file_view(&f)).into_response())
    };
    crate::errors::respond::<OpenAiError>(result.await)
}

/// `GET /v1/files/{id}/content`
pub async fn file_content(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Path(id): Path<String>,
) -> Response {
    let result = async {
        let jobs = jobs_of(&state)?;
        let f = own_file(jobs, &ctx, &id).await?;
        let bytes = jobs
            .objects
            .get(&file_uri(jobs, &f.id))
            .await
            .map_err(|e| Error::internal(format!("cannot read the file: {e}")))?;
        Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
    };
    crate::errors::respond::<OpenAiError>(result.await)
}

#[derive(Debug, Deserialize)]
pub struct FileList {
    purpose: Option<String>,
}

/// `GET /v1/files`
pub async fn list_files(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Query(q): Query<FileList>,
) -> Response {
    let result = async {
        let files = jobs_of(&state)?
            .batches
            .files(Some(&owner(&ctx)), q.purpose.as_deref())
            .await
            .map_err(store_error)?;
        let data: Vec<Value> = files.iter().map(file_view).collect();
        Ok(Json(json!({"object": "list", "data": data, "has_more": false})).into_response())
    };
    crate::errors::respond::<OpenAiError>(result.await)
}

/// `DELETE /v1/files/{id}`
pub async fn delete_file(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Path(id): Path<String>,
) -> Response {
    let result = async {
        let jobs = jobs_of(&state)?;
        let f = own_file(jobs, &ctx, &id).await?;
        jobs.batches.delete_file(&f.id).await.map_err(store_error)?;
        jobs.objects
            .delete(&file_uri(jobs, &f.id))
            .await
            .map_err(|e| Error::internal(format!("cannot delete the file: {e}")))?;
        Ok(Json(json!({"id": f.id, "object": "file", "deleted": true})).into_response())
    };
    crate::errors::respond::<OpenAiError>(result.await)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBatch {
    input_file_id: String,
    endpoint: String,
    completion_window: String,
    #[serde(default)]
    metadata: Option<Value>,
}

/// One input line that cannot run.
fn line_error(line: usize, custom_id: Option<&str>, message: impl Into<String>) -> Value {
    json!({"line": line, "custom_id": custom_id, "code": "invalid_request", "message": message.into()})
}

/// The OpenAI batch object: the stored body with counts and times filled in.
fn openai_view(b: &BatchRecord) -> Value {
    let mut v = b.body.clone();
    v["id"] = json!(b.id);
    v["object"] = json!("batch");
    v["status"] = json!(b.state);
    v["created_at"] = json!(b.created_ms / 1000);
    for key in [
        "in_progress_at",
        "finalizing_at",
        "completed_at",
        "cancelling_at",
        "cancelled_at",
        "failed_at",
        "expired_at",
    ] {
        if v.get(key).is_none() {
            v[key] = Value::Null;
        }
    }
    v["expires_at"] = json!(b.created_ms / 1000 + DAY_S);
    if let Some(o) = v.as_object_mut() {
        o.remove("line_errors");
        o.remove("expired");
    }
    v
}

/// One request of a batch as a job of the caller's: its line (1-based) and `custom_id`.
fn batch_job(
    jobs: &Jobs,
    ctx: &CallContext,
    batch_id: &str,
    line: usize,
    custom_id: &str,
    model: String,
    request: Value,
) -> NewJob {
    NewJob {
        id: format!("{batch_id}-{line}"),
        kind: "batch".into(),
        owner: owner(ctx),
        team: ctx.principal().and_then(|p| p.team.clone()),
        batch_id: Some(batch_id.into()),
        model: Some(model),
        priority: BATCH_PRIORITY,
        max_receives: i64::from(jobs.config.max_attempts),
        request,
        meta: json!({"custom_id": custom_id, "line": line}),
        ..NewJob::default()
    }
}

/// A new batch record, `in_progress` from now.
fn new_batch(id: String, kind: &str, owner: String, body: Value) -> BatchRecord {
    let now = now_ms();
    BatchRecord {
        id,
        kind: kind.into(),
        owner,
        state: "in_progress".into(),
        created_ms: now,
        updated_ms: now,
        ended_ms: None,
        body,
    }
}

/// Store a new batch, then its jobs. The batch first: its jobs are found through it, and a
/// crash between the two leaves a batch with fewer jobs, which the finaliser ends (never jobs
/// without a batch).
async fn store_batch(jobs: &Jobs, record: &BatchRecord, new_jobs: &[NewJob]) -> Result<(), Error> {
    jobs.batches
        .insert_batch(record)
        .await
        .map_err(store_error)?;
    jobs.enqueue(new_jobs).await?;
    Ok(())
}

/// `POST /v1/batches`
pub async fn create_batch(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let jobs = jobs_of(&state)?;
        let body = body.map_err(|r| body_rejection(r, state.max_body_bytes))?;
        let c: CreateBatch = parse_body(&body).map_err(|e| json_error(&e))?;
        if c.completion_window != "24h" {
            return Err(Error::validation(
                "completion_window: only '24h' is supported",
            ));
        }
        if !matches!(
            c.endpoint.as_str(),
            "/v1/chat/completions" | "/v1/embeddings" | "/v1/completions"
        ) {
            return Err(Error::validation(format!(
                "endpoint: '{}' is not supported (/v1/chat/completions, /v1/embeddings, /v1/completions)",
                c.endpoint
            )));
        }
        let file = own_file(jobs, &ctx, &c.input_file_id).await?;
        if file.purpose != "batch" {
            return Err(Error::validation(format!(
                "input_file_id: '{}' was uploaded with purpose '{}', not 'batch'",
                file.id, file.purpose
            )));
        }
        let bytes = jobs
            .objects
            .get(&file_uri(jobs, &file.id))
            .await
            .map_err(|e| Error::internal(format!("cannot read the input file: {e}")))?;
        let text = String::from_utf8_lossy(&bytes);
        let id = super::new_id("batch_");
        let mut seen = HashSet::new();
        let (mut new_jobs, mut errors) = (Vec::new(), Vec::new());
        for (i, raw) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let line = i + 1;
            let v: Value = match serde_json::from_str(raw) {
                Ok(v) => v,
                Err(e) => {
                    errors.push(line_error(
                        line,
                        None,
                        format!("line {line} is not JSON: {e}"),
                    ));
                    continue;
                }
            };
            let custom_id = v["custom_id"].as_str();
            let Some(custom_id) = custom_id.filter(|c| !c.is_empty()) else {
                errors.push(line_error(line, None, "custom_id: required"));
                continue;
            };
            if !seen.insert(custom_id.to_string()) {
                errors.push(line_error(
                    line,
                    Some(custom_id),
                    format!("custom_id '{custom_id}' appears more than once"),
                ));
                continue;
            }
            if v["method"].as_str().is_some_and(|m| m != "POST") {
                errors.push(line_error(line, Some(custom_id), "method: only POST"));
                continue;
            }
            if v["url"].as_str() != Some(c.endpoint.as_str()) {
                errors.push(line_error(
                    line,
                    Some(custom_id),
                    format!("url: must be the batch's endpoint {}", c.endpoint),
                ));
                continue;
            }
            let model = match check_call(&state, &c.endpoint, &v["body"]) {
                Ok(m) => m,
                Err(e) => {
                    errors.push(line_error(line, Some(custom_id), e.message));
                    continue;
                }
            };
            let request = Jobs::request(ctx.principal(), &c.endpoint, &v["body"], &[])?;
            new_jobs.push(batch_job(jobs, &ctx, &id, line, custom_id, model, request));
        }
        let total = new_jobs.len() + errors.len();
        if total == 0 {
            return Err(Error::validation("input_file_id: the file has no requests"));
        }
        if total > jobs.config.max_batch_requests {
            return Err(Error::validation(format!(
                "input_file_id: {total} requests is over the limit of {} (jobs.max_batch_requests)",
                jobs.config.max_batch_requests
            )));
        }
        let mut record = new_batch(id, "openai", owner(&ctx), Value::Null);
        record.body = json!({
            "endpoint": c.endpoint, "errors": null, "input_file_id": c.input_file_id,
            "completion_window": c.completion_window, "output_file_id": null,
            "error_file_id": null, "in_progress_at": record.created_ms / 1000,
            "request_counts": {"total": total, "completed": 0, "failed": errors.len()},
            "metadata": c.metadata, "line_errors": errors,
        });
        store_batch(jobs, &record, &new_jobs).await?;
        Ok(Json(openai_view(&record)).into_response())
    };
    crate::errors::respond::<OpenAiError>(result.await)
}

async fn own_batch(
    jobs: &Jobs,
    ctx: &CallContext,
    id: &str,
    kind: &str,
) -> Result<BatchRecord, Error> {
    jobs.batches
        .batch(id)
        .await
        .map_err(store_error)?
        .filter(|b| b.owner == owner(ctx) && b.kind == kind)
        .ok_or_else(|| not_found("batch", id))
}

/// The live counts of an OpenAI batch that has not ended.
async fn with_counts(jobs: &Jobs, mut b: BatchRecord) -> Result<BatchRecord, Error> {
    if b.ended_ms.is_none() {
        let c = jobs.queue.batch_counts(&b.id).await.map_err(store_error)?;
        let bad = b.body["line_errors"].as_array().map_or(0, Vec::len) as i64;
        b.body["request_counts"] = json!({
            "total": c.total() + bad,
            "completed": c.succeeded,
            "failed": c.failed + c.dead + bad,
        });
    }
    Ok(b)
}

/// `GET /v1/batches/{id}`
pub async fn get_batch(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Path(id): Path<String>,
) -> Response {
    let result = async {
        let jobs = jobs_of(&state)?;
        let b = with_counts(jobs, own_batch(jobs, &ctx, &id, "openai").await?).await?;
        Ok(Json(openai_view(&b)).into_response())
    };
    crate::errors::respond::<OpenAiError>(result.await)
}

#[derive(Debug, Deserialize)]
pub struct Page {
    after: Option<String>,
    limit: Option<u32>,
    after_id: Option<String>,
    before_id: Option<String>,
}

/// `GET /v1/batches`
pub async fn list_batches(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Query(p): Query<Page>,
) -> Response {
    let result = async {
        let jobs = jobs_of(&state)?;
        let limit = p.limit.unwrap_or(20).clamp(1, 100);
        let mut list = jobs
            .batches
            .batches(Some(&owner(&ctx)), "openai", p.after.as_deref(), limit + 1)
            .await
            .map_err(store_error)?;
        let more = list.len() > limit as usize;
        list.truncate(limit as usize);
        let mut data = Vec::new();
        for b in list {
            data.push(openai_view(&with_counts(jobs, b).await?));
        }
        Ok(Json(json!({
            "object": "list", "first_id": data.first().map(|b| b["id"].clone()),
            "last_id": data.last().map(|b| b["id"].clone()), "has_more": more, "data": data,
        }))
        .into_response())
    };
    crate::errors::respond::<OpenAiError>(result.await)
}

/// `POST /v1/batches/{id}/cancel`
pub async fn cancel_batch(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Path(id): Path<String>,
) -> Response {
    let result = async {
        let jobs = jobs_of(&state)?;
        let mut b = own_batch(jobs, &ctx, &id, "openai").await?;
        if b.state == "in_progress" {
            b.state = "cancelling".into();
            b.updated_ms = now_ms();
            b.body["cancelling_at"] = json!(b.updated_ms / 1000);
            jobs.batches
                .update_batch(&b, &["in_progress"])
                .await
                .map_err(store_error)?;
            jobs.queue.cancel_batch(&b.id).await.map_err(store_error)?;
        }
        let b = with_counts(
            jobs,
            jobs.batches
                .batch(&id)
                .await
                .map_err(store_error)?
                .unwrap_or(b),
        )
        .await?;
        Ok(Json(openai_view(&b)).into_response())
    };
    crate::errors::respond::<OpenAiError>(result.await)
}

/// Every job of a batch, in line order.
async fn batch_jobs(jobs: &Jobs, batch_id: &str) -> Result<Vec<JobRecord>, Error> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = jobs
            .queue
            .jobs(&JobQuery {
                batch_id: Some(batch_id.into()),
                after: after.clone(),
                limit: 1000,
                ..JobQuery::default()
            })
            .await
            .map_err(store_error)?;
        let done = page.len() < 1000;
        after = page.last().map(|j| (j.created_ms, j.id.clone()));
        all.extend(page);
        if done {
            break;
        }
    }
    all.sort_by_key(|j| j.meta["line"].as_i64().unwrap_or(0));
    Ok(all)
}

fn error_of(j: &JobRecord, expired: bool) -> (String, String) {
    match j.state {
        JobState::Cancelled if expired => (
            "batch_expired".into(),
            "The batch's 24-hour completion window ended before this request ran.".into(),
        ),
        JobState::Cancelled => (
            "batch_cancelled".into(),
            "The batch was cancelled before this request ran.".into(),
        ),
        _ => (
            "request_failed".into(),
            j.last_error
                .clone()
                .unwrap_or_else(|| "The request failed.".into()),
        ),
    }
}

/// Write an ended OpenAI batch's output and error files; the counts and file ids to record.
async fn write_openai_files(jobs: &Jobs, b: &BatchRecord) -> Result<Value, Error> {
    let all = batch_jobs(jobs, &b.id).await?;
    let (mut out, mut err) = (String::new(), String::new());
    let (mut ok, mut failed) = (0usize, 0usize);
    for j in &all {
        let custom_id = &j.meta["custom_id"];
        let request_id = format!("batch_req_{}", j.id.rsplit('-').next().unwrap_or_default());
        let response = j.result.as_ref().map(
            |r| json!({"status_code": r["status"], "request_id": request_id, "body": r["body"]}),
        );
        if j.state == JobState::Succeeded {
            ok += 1;
            out.push_str(&json!({"id": request_id, "custom_id": custom_id, "response": response, "error": null}).to_string());
            out.push('\n');
        } else {
            failed += 1;
            let (code, message) = error_of(j, b.body["expired"].as_bool() == Some(true));
            err.push_str(
                &json!({"id": request_id, "custom_id": custom_id, "response": response,
                "error": {"code": code, "message": message}})
                .to_string(),
            );
            err.push('\n');
        }
    }
    for e in b.body["line_errors"].as_array().into_iter().flatten() {
        failed += 1;
        err.push_str(&json!({"id": format!("batch_req_line{}", e["line"]), "custom_id": e["custom_id"],
            "response": null, "error": {"code": e["code"], "message": e["message"], "line": e["line"]}}).to_string());
        err.push('\n');
    }
    let output = if out.is_empty() {
        None
    } else {
        Some(
            put_file(
                jobs,
                &b.owner,
                "batch_output",
                &format!("{}_output.jsonl", b.id),
                out.as_bytes(),
            )
            .await?
            .id,
        )
    };
    let errors = if err.is_empty() {
        None
    } else {
        Some(
            put_file(
                jobs,
                &b.owner,
                "batch_output",
                &format!("{}_error.jsonl", b.id),
                err.as_bytes(),
            )
            .await?
            .id,
        )
    };
    Ok(json!({"output_file_id": output, "error_file_id": errors,
        "request_counts": {"total": ok + failed, "completed": ok, "failed": failed}}))
}

/// End the batches whose last job has ended (called every half second by one task per
/// replica; the state change from `in_progress`/`cancelling` to `finalizing` is guarded, so
/// one replica writes a batch's files).
pub async fn finalise(jobs: &Arc<Jobs>) {
    let open = match jobs.batches.open_batches().await {
        Ok(open) => open,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read open batches");
            return;
        }
    };
    for b in open {
        if let Err(e) = finalise_one(jobs, b).await {
            tracing::warn!(error = %e.message, "cannot finalise a batch");
        }
    }
}

async fn finalise_one(jobs: &Arc<Jobs>, mut b: BatchRecord) -> Result<(), Error> {
    let now = now_ms();
    // The completion window (24 hours) is over: what has not run is not run.
    let window = i64::try_from(jobs.config.batch_window.as_millis()).unwrap_or(i64::MAX);
    let expired = b.created_ms.saturating_add(window) <= now && b.state == "in_progress";
    if expired {
        b.body["expired"] = json!(true);
        b.updated_ms = now;
        if !jobs
            .batches
            .update_batch(&b, &["in_progress"])
            .await
            .map_err(store_error)?
        {
            return Ok(());
        }
        jobs.queue.cancel_batch(&b.id).await.map_err(store_error)?;
    }
    let counts = jobs.queue.batch_counts(&b.id).await.map_err(store_error)?;
    if counts.queued + counts.running > 0 {
        return Ok(());
    }
    let expired = b.body["expired"].as_bool() == Some(true);
    let cancelled = matches!(b.state.as_str(), "cancelling" | "canceling");
    let from = b.state.clone();
    if b.kind == "anthropic" {
        b.state = "ended".into();
        b.ended_ms = Some(now);
        b.updated_ms = now;
        jobs.batches
            .update_batch(&b, &[from.as_str()])
            .await
            .map_err(store_error)?;
        return Ok(());
    }
    b.state = "finalizing".into();
    b.updated_ms = now;
    b.body["finalizing_at"] = json!(now / 1000);
    if !jobs
        .batches
        .update_batch(&b, &[from.as_str()])
        .await
        .map_err(store_error)?
    {
        return Ok(());
    }
    let files = write_openai_files(jobs, &b).await?;
    for key in ["output_file_id", "error_file_id", "request_counts"] {
        b.body[key] = files[key].clone();
    }
    let end = now_ms();
    let (state, at) = if expired {
        ("expired", "expired_at")
    } else if cancelled {
        ("cancelled", "cancelled_at")
    } else {
        ("completed", "completed_at")
    };
    b.state = state.into();
    b.body[at] = json!(end / 1000);
    b.ended_ms = Some(end);
    b.updated_ms = end;
    jobs.batches
        .update_batch(&b, &["finalizing"])
        .await
        .map_err(store_error)?;
    Ok(())
}

// ----- Anthropic Message Batches -----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnthropicRequest {
    custom_id: String,
    params: Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnthropicCreate {
    requests: Vec<AnthropicRequest>,
}

use modelgate_core::keys::rfc3339_ms as iso;

async fn anthropic_view(jobs: &Jobs, b: &BatchRecord, base: &str) -> Result<Value, Error> {
    let c = jobs.queue.batch_counts(&b.id).await.map_err(store_error)?;
    let expired = b.body["expired"].as_bool() == Some(true);
    let processing = if b.ended_ms.is_some() {
        0
    } else {
        c.queued + c.running
    };
    Ok(json!({
        "id": b.id, "type": "message_batch",
        "processing_status": if b.ended_ms.is_some() { "ended" } else if b.state == "canceling" { "canceling" } else { "in_progress" },
        "request_counts": {"processing": processing, "succeeded": c.succeeded,
            "errored": c.failed + c.dead,
            "canceled": if expired { 0 } else { c.cancelled },
            "expired": if expired { c.cancelled } else { 0 }},
        "ended_at": b.ended_ms.map(iso),
        "created_at": iso(b.created_ms),
        "expires_at": iso(b.created_ms + DAY_S * 1000),
        "archived_at": null,
        "cancel_initiated_at": b.body["cancel_initiated_at"].as_i64().map(iso),
        "results_url": b.ended_ms.map(|_| format!("{base}/v1/messages/batches/{}/results", b.id)),
    }))
}

/// The base URL results are linked from (the host the client called).
fn base_url(headers: &axum::http::HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}")
}

/// `POST /v1/messages/batches`
pub async fn anthropic_create(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let jobs = jobs_of(&state)?;
        let body = body.map_err(|r| body_rejection(r, state.max_body_bytes))?;
        let c: AnthropicCreate = parse_body(&body).map_err(|e| json_error(&e))?;
        if c.requests.is_empty() || c.requests.len() > jobs.config.max_batch_requests.min(100_000) {
            return Err(Error::validation(format!(
                "requests: 1 to {} requests",
                jobs.config.max_batch_requests.min(100_000)
            )));
        }
        let id = format!("msgbatch_{}", super::new_id(""));
        let version = headers
            .get("anthropic-version")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("2023-06-01")
            .to_string();
        let mut seen = HashSet::new();
        let mut new_jobs = Vec::with_capacity(c.requests.len());
        for (i, r) in c.requests.iter().enumerate() {
            let ok_id = !r.custom_id.is_empty()
                && r.custom_id.len() <= 64
                && r.custom_id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !ok_id {
                return Err(Error::validation(format!(
                    "requests.{i}.custom_id: 1 to 64 letters, digits, '_' or '-'"
                )));
            }
            if !seen.insert(r.custom_id.as_str()) {
                return Err(Error::validation(format!(
                    "requests.{i}.custom_id: '{}' is used by another request",
                    r.custom_id
                )));
            }
            let model = check_call(&state, "/v1/messages", &r.params)
                .map_err(|e| Error::validation(format!("requests.{i}.params: {}", e.message)))?;
            let request = Jobs::request(
                ctx.principal(),
                "/v1/messages",
                &r.params,
                &[("anthropic-version", version.as_str())],
            )?;
            new_jobs.push(batch_job(
                jobs,
                &ctx,
                &id,
                i + 1,
                &r.custom_id,
                model,
                request,
            ));
        }
        let record = new_batch(id, "anthropic", owner(&ctx), json!({}));
        store_batch(jobs, &record, &new_jobs).await?;
        Ok(Json(anthropic_view(jobs, &record, &base_url(&headers)).await?).into_response())
    };
    crate::errors::respond::<AnthropicError>(result.await)
}

/// `GET /v1/messages/batches/{id}`
pub async fn anthropic_get(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    headers: axum::http::HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let result = async {
        let jobs = jobs_of(&state)?;
        let b = own_batch(jobs, &ctx, &id, "anthropic").await?;
        Ok(Json(anthropic_view(jobs, &b, &base_url(&headers)).await?).into_response())
    };
    crate::errors::respond::<AnthropicError>(result.await)
}

/// `GET /v1/messages/batches`
pub async fn anthropic_list(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    headers: axum::http::HeaderMap,
    Query(p): Query<Page>,
) -> Response {
    let result = async {
        let jobs = jobs_of(&state)?;
        let limit = p.limit.unwrap_or(20).clamp(1, 1000);
        if p.before_id.is_some() {
            return Err(Error::validation(
                "before_id: not supported; page with after_id",
            ));
        }
        let mut list = jobs
            .batches
            .batches(
                Some(&owner(&ctx)),
                "anthropic",
                p.after_id.as_deref(),
                limit + 1,
            )
            .await
            .map_err(store_error)?;
        let more = list.len() > limit as usize;
        list.truncate(limit as usize);
        let base = base_url(&headers);
        let mut data = Vec::new();
        for b in &list {
            data.push(anthropic_view(jobs, b, &base).await?);
        }
        Ok(Json(json!({"data": data, "has_more": more,
            "first_id": list.first().map(|b| &b.id), "last_id": list.last().map(|b| &b.id)}))
        .into_response())
    };
    crate::errors::respond::<AnthropicError>(result.await)
}

/// `POST /v1/messages/batches/{id}/cancel`
pub async fn anthropic_cancel(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    headers: axum::http::HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let result = async {
        let jobs = jobs_of(&state)?;
        let mut b = own_batch(jobs, &ctx, &id, "anthropic").await?;
        if b.ended_ms.is_none() && b.state == "in_progress" {
            b.state = "canceling".into();
            b.updated_ms = now_ms();
            b.body["cancel_initiated_at"] = json!(b.updated_ms);
            jobs.batches
                .update_batch(&b, &["in_progress"])
                .await
                .map_err(store_error)?;
            jobs.queue.cancel_batch(&b.id).await.map_err(store_error)?;
        }
        Ok(Json(anthropic_view(jobs, &b, &base_url(&headers)).await?).into_response())
    };
    crate::errors::respond::<AnthropicError>(result.await)
}

/// `GET /v1/messages/batches/{id}/results`: JSONL, one result per request, once ended.
pub async fn anthropic_results(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Path(id): Path<String>,
) -> Response {
    let result = async {
        let jobs = jobs_of(&state)?;
        let b = own_batch(jobs, &ctx, &id, "anthropic").await?;
        if b.ended_ms.is_none() {
            return Err(Error::validation(format!(
                "Batch '{id}' has not ended yet; its results are available once processing_status is 'ended'."
            )));
        }
        let mut out = String::new();
        for j in batch_jobs(jobs, &b.id).await? {
            let result = match j.state {
                JobState::Succeeded => {
                    json!({"type": "succeeded", "message": j.result.as_ref().map(|r| r["body"].clone())})
                }
                JobState::Cancelled if b.body["expired"].as_bool() == Some(true) => {
                    json!({"type": "expired"})
                }
                JobState::Cancelled => json!({"type": "canceled"}),
                _ => {
                    let body = j
                        .result
                        .as_ref()
                        .map(|r| r["body"].clone())
                        .unwrap_or(Value::Null);
                    let error = if body["error"].is_object() {
                        body
                    } else {
                        json!({"type": "error", "error": {"type": "api_error", "message": j.last_error}})
                    };
                    json!({"type": "errored", "error": error})
                }
            };
            out.push_str(&json!({"custom_id": j.meta["custom_id"], "result": result}).to_string());
            out.push('\n');
        }
        Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/binary")],
            out,
        )
            .into_response())
    };
    crate::errors::respond::<AnthropicError>(result.await)
}
