//! Generic jobs (`/v1/jobs`): any model call of any door, submitted for later — `202` with the
//! job id and its status URL — then polled, followed over SSE, cancelled; and the admin view
//! of the queue (`/admin/jobs`, the dead-letter queue and its redrive). Errors use the OpenAI
//! shape. Jobs are scoped to the principal that submitted them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use modelgate_core::CallContext;
use modelgate_store::{JobQuery, JobRecord, JobState, NewJob};
use modelgate_types::{Error, ErrorKind};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{runnable_path, store_error, Jobs};
use crate::app::AppState;
use crate::errors::{body_rejection, json_error, parse_body, OpenAiError};

/// Headers a job may carry to its call (never credentials).
const PASSED_HEADERS: &[&str] = &[
    "anthropic-version",
    "anthropic-beta",
    "x-modelgate-guardrail",
    "x-modelgate-cache",
    "cache-control",
];

fn unix_secs(ms: i64) -> i64 {
    ms / 1000
}

/// The public view of a job (also the webhook payload).
pub fn view(job: &JobRecord) -> Value {
    let r = &job.request;
    json!({
        "id": job.id,
        "object": "job",
        "kind": job.kind,
        "status": job.state.as_str(),
        "model": job.model,
        "priority": job.priority,
        "created_at": unix_secs(job.created_ms),
        "started_at": job.started_ms.map(unix_secs),
        "ended_at": job.ended_ms.map(unix_secs),
        "attempts": job.receives,
        "max_attempts": job.max_receives,
        "request": {"method": r["method"], "path": r["path"]},
        "result": job.result,
        "last_error": job.last_error,
        "batch_id": job.batch_id,
        "idempotency_key": job.idem_key,
        "metadata": job.meta.get("metadata").cloned().unwrap_or(Value::Null),
        "callback_url": job.callback,
        "webhook": job.callback.as_ref().map(|_| json!({
            "state": job.hook_state,
            "attempts": job.hook_attempts,
        })),
        "status_url": format!("/v1/jobs/{}", job.id),
    })
}

pub(crate) fn jobs_of(state: &AppState) -> Result<&Arc<Jobs>, Error> {
    state.jobs.as_ref().ok_or_else(|| {
        Error::new(
            ErrorKind::ServiceUnavailable,
            "This gateway runs without a job store.",
        )
    })
}

/// Whose jobs the caller sees: its own.
pub(crate) fn owner(ctx: &CallContext) -> String {
    ctx.principal()
        .map_or_else(|| "anonymous".to_string(), |p| p.id.clone())
}

/// The model a request body or path names.
pub(crate) fn model_of(path: &str, body: &Value) -> Option<String> {
    if let Some(rest) = path.strip_prefix("/model/") {
        let (id, _) = rest.rsplit_once('/')?;
        return Some(
            percent_encoding::percent_decode_str(id)
                .decode_utf8_lossy()
                .into_owned(),
        );
    }
    body["model"].as_str().map(str::to_string)
}

/// Check what a job will call before it is accepted: a path a job may call, a JSON object
/// body that does not ask for a stream, a model this gateway serves.
pub(crate) fn check_call(state: &AppState, path: &str, body: &Value) -> Result<String, Error> {
    if !runnable_path(path) {
        return Err(Error::validation(format!(
            "path: '{path}' is not a model call a job can make (one of /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/messages, /model/{{id}}/invoke, /model/{{id}}/converse)"
        )));
    }
    if !body.is_object() {
        return Err(Error::validation("body: must be a JSON object"));
    }
    if body["stream"].as_bool() == Some(true) {
        return Err(Error::validation(
            "body.stream: a job's answer is stored whole; leave stream out",
        ));
    }
    let model = model_of(path, body).ok_or_else(|| Error::validation("body.model: required"))?;
    state.gateway.resolve(&model)?;
    Ok(model)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Submit {
    path: String,
    body: Value,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    priority: Option<i64>,
    #[serde(default)]
    callback_url: Option<String>,
    #[serde(default)]
    idempotency_key: Option<String>,
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default)]
    max_attempts: Option<i64>,
}

/// `POST /v1/jobs`
pub async fn submit(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let jobs = jobs_of(&state)?;
        let body = body.map_err(|r| body_rejection(r, state.max_body_bytes))?;
        let s: Submit = parse_body(&body).map_err(|e| json_error(&e))?;
        let model = check_call(&state, &s.path, &s.body)?;
        for name in s.headers.keys() {
            if !PASSED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                return Err(Error::validation(format!(
                    "headers.{name}: a job may carry only {}",
                    PASSED_HEADERS.join(", ")
                )));
            }
        }
        let priority = s.priority.unwrap_or(5);
        if !(0..=9).contains(&priority) {
            return Err(Error::validation("priority: must be 0 (most urgent) to 9"));
        }
        let max_attempts = s
            .max_attempts
            .unwrap_or(i64::from(jobs.config.max_attempts));
        if !(1..=100).contains(&max_attempts) {
            return Err(Error::validation("max_attempts: must be 1 to 100"));
        }
        if let Some(url) = &s.callback_url {
            jobs.check_callback(url).await?;
        }
        let key = s.idempotency_key.or_else(|| {
            headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        });
        if key.as_ref().is_some_and(|k| k.is_empty() || k.len() > 256) {
            return Err(Error::validation("idempotency_key: 1 to 256 characters"));
        }
        let passed: Vec<(&str, &str)> = s
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let (job, created) = enqueue_call(
            jobs,
            &ctx,
            &s.path,
            &s.body,
            &passed,
            Placement {
                model,
                priority,
                max_attempts,
                idem_key: key,
                callback: s.callback_url,
                metadata: s.metadata,
            },
        )
        .await?;
        let status = if created {
            StatusCode::ACCEPTED
        } else {
            StatusCode::OK
        };
        let location = format!("/v1/jobs/{}", job.id);
        Ok((status, [(header::LOCATION, location)], Json(view(&job))).into_response())
    };
    crate::errors::respond::<OpenAiError>(result.await)
}

/// Where and how a call is queued.
pub(crate) struct Placement {
    pub model: String,
    pub priority: i64,
    pub max_attempts: i64,
    pub idem_key: Option<String>,
    pub callback: Option<String>,
    pub metadata: Option<Value>,
}

/// Queue a checked model call as a job of the caller's.
pub(crate) async fn enqueue_call(
    jobs: &Jobs,
    ctx: &CallContext,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
    p: Placement,
) -> Result<(JobRecord, bool), Error> {
    let request = Jobs::request(ctx.principal(), path, body, headers)?;
    let job = NewJob {
        id: super::new_id("job_"),
        kind: "job".into(),
        owner: owner(ctx),
        team: ctx.principal().and_then(|p| p.team.clone()),
        idem_key: p.idem_key,
        model: Some(p.model),
        priority: p.priority,
        max_receives: p.max_attempts,
        request,
        callback: p.callback,
        meta: json!({"metadata": p.metadata}),
        ..NewJob::default()
    };
    jobs.enqueue(&[job])
        .await?
        .pop()
        .ok_or_else(|| Error::internal("the queue returned no job"))
}

/// The rule that turns large synchronous calls into jobs: a `POST` to one of
/// `jobs.async_routes` (or any model call of one of `jobs.async_models`) whose body is longer
/// than `jobs.async_over_chars` characters is queued
/// and answered `202` with the job (its `status_url` to poll), as the seeds' document
/// pipeline does for documents over 10,000 characters. Streams are left alone.
pub async fn async_rule(
    axum::extract::State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(jobs) = state.jobs.clone() else {
        return next.run(request).await;
    };
    let c = &jobs.config;
    let path = request.uri().path().to_string();
    let by_route = c.async_routes.iter().any(|r| r == &path);
    if request.method() != axum::http::Method::POST
        || request.extensions().get::<super::JobRun>().is_some()
        || !(by_route || (!c.async_models.is_empty() && runnable_path(&path)))
    {
        return next.run(request).await;
    }
    let Some(ctx) = request.extensions().get::<CallContext>().cloned() else {
        return next.run(request).await;
    };
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, state.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            let e = Error::new(
                ErrorKind::PayloadTooLarge,
                format!(
                    "The request body exceeds the limit of {} bytes.",
                    state.max_body_bytes
                ),
            )
            .with_code("request_too_large");
            return crate::auth::render(ctx.dialect(), e);
        }
    };
    let chars = String::from_utf8_lossy(&bytes).chars().count();
    let value: Option<Value> = serde_json::from_slice(&bytes).ok();
    let by_model = || {
        value
            .as_ref()
            .and_then(|v| model_of(&path, v))
            .is_some_and(|m| c.async_models.contains(&m))
    };
    let queue = chars > c.async_over_chars
        && value
            .as_ref()
            .is_some_and(|v| v["stream"].as_bool() != Some(true))
        && (by_route || by_model());
    if !queue {
        let request = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
        return next.run(request).await;
    }
    let body = value.unwrap_or_default();
    let result = async {
        let model = check_call(&state, &path, &body)?;
        let version = parts
            .headers
            .get("anthropic-version")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let headers: Vec<(&str, &str)> = version
            .as_deref()
            .map(|v| vec![("anthropic-version", v)])
            .unwrap_or_default();
        let key = parts
            .headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let (job, _) = enqueue_call(
            &jobs,
            &ctx,
            &path,
            &body,
            &headers,
            Placement {
                model,
                priority: 5,
                max_attempts: i64::from(jobs.config.max_attempts),
                idem_key: key,
                callback: None,
                metadata: None,
            },
        )
        .await?;
        let location = format!("/v1/jobs/{}", job.id);
        Ok::<_, Error>(
            (
                StatusCode::ACCEPTED,
                [(header::LOCATION, location)],
                Json(view(&job)),
            )
                .into_response(),
        )
    };
    match result.await {
        Ok(r) => r,
        Err(e) => crate::auth::render(ctx.dialect(), e),
    }
}

async fn own_job(state: &AppState, ctx: &CallContext, id: &str) -> Result<JobRecord, Error> {
    let jobs = jobs_of(state)?;
    jobs.queue
        .job(id)
        .await
        .map_err(store_error)?
        .filter(|j| j.owner == owner(ctx))
        .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("No job with id '{id}'.")))
}

/// `GET /v1/jobs/{id}`
pub async fn get(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Path(id): Path<String>,
) -> Response {
    crate::errors::respond::<OpenAiError>(
        own_job(&state, &ctx, &id)
            .await
            .map(|j| Json(view(&j)).into_response()),
    )
}

/// `GET /v1/jobs/{id}/deliveries`: the webhook delivery attempts.
pub async fn deliveries(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Path(id): Path<String>,
) -> Response {
    let result = async {
        let job = own_job(&state, &ctx, &id).await?;
        let log = jobs_of(&state)?
            .queue
            .deliveries(&job.id)
            .await
            .map_err(store_error)?;
        Ok(Json(json!({"object": "list", "data": log})).into_response())
    };
    crate::errors::respond::<OpenAiError>(result.await)
}

/// `POST /v1/jobs/{id}/cancel`
pub async fn cancel(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Path(id): Path<String>,
) -> Response {
    let result = async {
        let jobs = jobs_of(&state)?;
        let job = jobs
            .queue
            .cancel(&id, Some(&owner(&ctx)))
            .await
            .map_err(store_error)?
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("No job with id '{id}'.")))?;
        Ok(Json(view(&job)).into_response())
    };
    crate::errors::respond::<OpenAiError>(result.await)
}

#[derive(Debug, Deserialize)]
pub struct ListParams {
    status: Option<String>,
    limit: Option<u32>,
    after: Option<String>,
    kind: Option<String>,
}

fn parse_states(s: Option<&str>) -> Result<Vec<JobState>, Error> {
    let Some(s) = s else { return Ok(Vec::new()) };
    s.split(',')
        .map(|p| {
            JobState::parse(p.trim()).ok_or_else(|| {
                Error::validation(format!(
                    "status: '{p}' is not one of queued, running, succeeded, failed, dead, cancelled"
                ))
            })
        })
        .collect()
}

async fn list_jobs(jobs: &Jobs, owner: Option<String>, p: &ListParams) -> Result<Response, Error> {
    let after = match &p.after {
        Some(id) => {
            let j = jobs
                .queue
                .job(id)
                .await
                .map_err(store_error)?
                .ok_or_else(|| Error::validation(format!("after: no job '{id}'")))?;
            Some((j.created_ms, j.id))
        }
        None => None,
    };
    let limit = p.limit.unwrap_or(20).clamp(1, 1000);
    let mut list = jobs
        .queue
        .jobs(&JobQuery {
            owner,
            kind: p.kind.clone(),
            states: parse_states(p.status.as_deref())?,
            descending: true,
            after,
            limit: limit + 1,
            ..JobQuery::default()
        })
        .await
        .map_err(store_error)?;
    let has_more = list.len() > limit as usize;
    list.truncate(limit as usize);
    let data: Vec<Value> = list.iter().map(view).collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "first_id": list.first().map(|j| &j.id),
        "last_id": list.last().map(|j| &j.id),
        "has_more": has_more,
    }))
    .into_response())
}

/// `GET /v1/jobs`: the caller's jobs, newest first (`status`, `kind`, `limit`, `after`).
pub async fn list(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Query(p): Query<ListParams>,
) -> Response {
    let result = async {
        let jobs = jobs_of(&state)?;
        list_jobs(jobs, Some(owner(&ctx)), &p).await
    };
    crate::errors::respond::<OpenAiError>(result.await)
}

/// `GET /v1/jobs/{id}/events`: the job's view as an SSE `status` event now and at every
/// change, until it ends.
pub async fn events(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Path(id): Path<String>,
) -> Response {
    let first = match own_job(&state, &ctx, &id).await {
        Ok(j) => j,
        Err(e) => return OpenAiError(e).into_response(),
    };
    let Ok(jobs) = jobs_of(&state).map(Arc::clone) else {
        return OpenAiError(Error::internal("no job store")).into_response();
    };
    let stream = futures::stream::unfold(
        (Some(first), None::<(JobState, i64)>, false),
        move |(job, last, ended)| {
            let jobs = Arc::clone(&jobs);
            async move {
                if ended {
                    return None;
                }
                let mut job = job?;
                loop {
                    let key = (job.state, job.updated_ms);
                    if last != Some(key) {
                        let frame =
                            crate::streaming::sse_frame(Some("status"), &view(&job).to_string());
                        let ended = job.state.is_terminal();
                        return Some((
                            Ok::<_, std::convert::Infallible>(Bytes::from(frame)),
                            (Some(job), Some(key), ended),
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    job = jobs.queue.job(&job.id).await.ok().flatten()?;
                }
            }
        },
    );
    crate::streaming::response("text/event-stream", &[], stream)
}

fn admin(state: &AppState, ctx: &CallContext, action: &str) -> Result<(), Error> {
    crate::auth::admin_allowed(
        state,
        ctx,
        &format!("modelgate:{action}"),
        "arn:modelgate:admin:::jobs",
    )
}

/// `GET /admin/jobs`: every caller's jobs (`status=dead` is the dead-letter queue).
pub async fn admin_list(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Query(p): Query<ListParams>,
) -> Response {
    let result = async {
        admin(&state, &ctx, "ListJobs")?;
        list_jobs(jobs_of(&state)?, None, &p).await
    };
    crate::errors::respond::<OpenAiError>(result.await)
}

/// `GET /admin/jobs/{id}`: any job, with its stored request (never credentials).
pub async fn admin_get(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Path(id): Path<String>,
) -> Response {
    let result = async {
        admin(&state, &ctx, "GetJob")?;
        let job = jobs_of(&state)?
            .queue
            .job(&id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("No job with id '{id}'.")))?;
        let mut v = view(&job);
        v["owner"] = json!(job.owner);
        Ok(Json(v).into_response())
    };
    crate::errors::respond::<OpenAiError>(result.await)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redrive {
    #[serde(default)]
    id: Option<String>,
}

/// `POST /admin/jobs/redrive` `{"id": …}` or `{}` for the whole dead-letter queue.
pub async fn admin_redrive(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    body: Bytes,
) -> Response {
    let result = async {
        admin(&state, &ctx, "RedriveJobs")?;
        let r: Redrive = if body.is_empty() {
            Redrive::default()
        } else {
            parse_body(&body).map_err(|e| json_error(&e))?
        };
        let jobs = jobs_of(&state)?;
        let n = jobs
            .queue
            .redrive(r.id.as_deref())
            .await
            .map_err(store_error)?;
        jobs.wake.notify_one();
        Ok(Json(json!({"redriven": n})).into_response())
    };
    crate::errors::respond::<OpenAiError>(result.await)
}
