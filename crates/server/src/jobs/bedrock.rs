//! Bedrock asynchronous invocation: `StartAsyncInvoke` (`POST /async-invoke`),
//! `GetAsyncInvoke` (`GET /async-invoke/{invocationArn}`) and `ListAsyncInvokes`
//! (`GET /async-invoke`), in the shapes of botocore's `bedrock-runtime` model.
//!
//! The job runs the model's InvokeModel with `modelInput` as its body and writes the answer
//! to `<s3Uri>/<invocation id>/output.json` in the object store; `GetAsyncInvoke` reports
//! that folder as the output's `s3Uri`, as Bedrock does.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use modelgate_core::CallContext;
use modelgate_store::{JobQuery, JobRecord, JobState, NewJob};
use modelgate_types::Error;
use serde::Deserialize;
use serde_json::{json, Value};

use super::api::{jobs_of, owner};
use super::objects::parse_s3_uri;
use super::{store_error, Jobs};
use crate::app::AppState;
use crate::errors::{body_rejection, json_error, parse_body, BedrockError};

/// The job kind of an async invocation.
pub const KIND: &str = "async_invoke";

fn respond(result: Result<Response, Error>) -> Response {
    crate::errors::respond::<BedrockError>(result)
}

use modelgate_core::keys::rfc3339_ms as iso;

use crate::errors::{aws_constraint as constraint, aws_enum};

/// A 12-character lowercase alphanumeric invocation id.
fn invocation_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..12)
        .map(|_| char::from(ALPHABET[fastrand::usize(..ALPHABET.len())]))
        .collect()
}

fn arn(jobs: &Jobs, id: &str) -> String {
    format!(
        "arn:aws:bedrock:{}:{}:async-invoke/{id}",
        jobs.site.region, jobs.site.account
    )
}

/// The job id of an invocation ARN (or of a bare id).
fn id_of_arn(arn: &str) -> Result<String, Error> {
    let id = arn.rsplit_once("async-invoke/").map_or(arn, |(_, id)| id);
    let ok = id.len() == 12
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !ok || (arn.contains(':') && !arn.starts_with("arn:aws")) {
        return Err(constraint(
            arn,
            "invocationArn",
            "Member must satisfy regular expression pattern: arn:aws(-[^:]+)?:bedrock:[a-z0-9-]{1,20}:[0-9]{12}:async-invoke/[a-z0-9]{12}",
        ));
    }
    Ok(format!("{KIND}-{id}"))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct S3Config {
    s3_uri: String,
    #[serde(default)]
    kms_key_id: Option<String>,
    #[serde(default)]
    bucket_owner: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct OutputConfig {
    s3_output_data_config: S3Config,
}

#[derive(Debug, Deserialize)]
struct Tag {
    key: String,
    value: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Start {
    #[serde(default)]
    client_request_token: Option<String>,
    model_id: String,
    model_input: Value,
    output_data_config: OutputConfig,
    #[serde(default)]
    tags: Vec<Tag>,
}

/// `POST /async-invoke`
pub async fn start(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(
        async {
            let jobs = jobs_of(&state)?;
            let body = body.map_err(|r| body_rejection(r, state.max_body_bytes))?;
            let s: Start = parse_body(&body).map_err(|e| json_error(&e))?;
            if let Some(t) = &s.client_request_token {
                if t.is_empty() || t.len() > 256 || !t.bytes().all(|b| (b'!'..=b'~').contains(&b)) {
                    return Err(constraint(
                        t,
                        "clientRequestToken",
                        "Member must satisfy regular expression pattern: [!-~]*",
                    ));
                }
            }
            let out = &s.output_data_config.s3_output_data_config;
            parse_s3_uri(&out.s3_uri).map_err(Error::validation)?;
            if let Some(owner) = &out.bucket_owner {
                if owner.len() != 12 || !owner.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(constraint(
                        owner,
                        "outputDataConfig.s3OutputDataConfig.bucketOwner",
                        "Member must satisfy regular expression pattern: [0-9]{12}",
                    ));
                }
            }
            if s.tags.len() > 200 {
                return Err(Error::validation("tags: at most 200"));
            }
            for t in &s.tags {
                if t.key.is_empty() || t.key.len() > 128 || t.value.len() > 256 {
                    return Err(constraint(
                        &t.key,
                        "tags.member.key",
                        "Member must have length between 1 and 128",
                    ));
                }
            }
            if !s.model_input.is_object() {
                return Err(Error::validation("modelInput: must be a JSON object"));
            }
            // The body must be one the model takes, now rather than in the job.
            let input = serde_json::to_vec(&s.model_input).unwrap_or_default();
            crate::bedrock::invoke_invocation(&state, &s.model_id, &input)?;
            let path = format!(
                "/model/{}/invoke",
                percent_encoding::utf8_percent_encode(
                    &s.model_id,
                    percent_encoding::NON_ALPHANUMERIC
                )
            );
            let request = Jobs::request(ctx.principal(), &path, &s.model_input, &[])?;
            let short = invocation_id();
            let id = format!("{KIND}-{short}");
            let output_uri = format!("{}/{short}", out.s3_uri.trim_end_matches('/'));
            let tags: Vec<Value> = s
                .tags
                .iter()
                .map(|t| json!({"key": t.key, "value": t.value}))
                .collect();
            let job = NewJob {
                id,
                kind: KIND.into(),
                owner: owner(&ctx),
                team: ctx.principal().and_then(|p| p.team.clone()),
                idem_key: s.client_request_token.clone(),
                model: Some(s.model_id.clone()),
                priority: 5,
                max_receives: i64::from(jobs.config.max_attempts),
                request,
                callback: None,
                meta: json!({
                    "modelId": s.model_id,
                    "modelArn": state.site.model_arn(&s.model_id),
                    "outputUri": output_uri,
                    "kmsKeyId": out.kms_key_id,
                    "bucketOwner": out.bucket_owner,
                    "tags": tags,
                }),
                ..NewJob::default()
            };
            let (job, created) = jobs
                .enqueue(&[job])
                .await?
                .pop()
                .ok_or_else(|| Error::internal("the queue returned no job"))?;
            // The same token with a different request is a conflict, as in AWS.
            if !created
                && (job.meta["modelId"] != json!(s.model_id)
                    || job.request["body"] != s.model_input)
            {
                return Err(Error::validation(
                    "The clientRequestToken was used with a different request.",
                )
                .with_code("ConflictException"));
            }
            let short = job.id.trim_start_matches(&format!("{KIND}-")).to_string();
            Ok(Json(json!({"invocationArn": arn(jobs, &short)})).into_response())
        }
        .await,
    )
}

fn status(state: JobState) -> &'static str {
    match state {
        JobState::Queued | JobState::Running => "InProgress",
        JobState::Succeeded => "Completed",
        _ => "Failed",
    }
}

fn summary(jobs: &Jobs, j: &JobRecord) -> Value {
    let short = j.id.trim_start_matches(&format!("{KIND}-"));
    let mut s3 = json!({"s3Uri": j.meta["outputUri"]});
    if let Some(k) = j.meta["kmsKeyId"].as_str() {
        s3["kmsKeyId"] = json!(k);
    }
    if let Some(o) = j.meta["bucketOwner"].as_str() {
        s3["bucketOwner"] = json!(o);
    }
    let mut v = json!({
        "invocationArn": arn(jobs, short),
        "modelArn": j.meta["modelArn"],
        "status": status(j.state),
        "submitTime": iso(j.created_ms),
        "lastModifiedTime": iso(j.updated_ms),
        "outputDataConfig": {"s3OutputDataConfig": s3},
    });
    if let Some(t) = &j.idem_key {
        v["clientRequestToken"] = json!(t);
    }
    if let Some(end) = j.ended_ms {
        v["endTime"] = json!(iso(end));
    }
    if j.state.is_terminal() && j.state != JobState::Succeeded {
        let message = match j.state {
            JobState::Cancelled => "The invocation was cancelled.".to_string(),
            _ => j
                .last_error
                .clone()
                .unwrap_or_else(|| "The invocation failed.".into()),
        };
        v["failureMessage"] = json!(message.chars().take(2048).collect::<String>());
    }
    v
}

/// `GET /async-invoke/{invocationArn}`
pub async fn get(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Path(invocation_arn): Path<String>,
) -> Response {
    respond(
        async {
            let jobs = jobs_of(&state)?;
            let id = id_of_arn(&invocation_arn)?;
            let job = jobs
                .queue
                .job(&id)
                .await
                .map_err(store_error)?
                .filter(|j| j.owner == owner(&ctx))
                .ok_or_else(|| {
                    // botocore's model lists no ResourceNotFound for this operation: AWS
                    // answers an unknown ARN with a ValidationException.
                    Error::validation(format!("Invocation {invocation_arn} not found."))
                })?;
            Ok(Json(summary(jobs, &job)).into_response())
        }
        .await,
    )
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListParams {
    submit_time_after: Option<String>,
    submit_time_before: Option<String>,
    status_equals: Option<String>,
    max_results: Option<String>,
    next_token: Option<String>,
    sort_by: Option<String>,
    sort_order: Option<String>,
}

fn parse_time(v: &str, member: &str) -> Result<i64, Error> {
    let t = humantime::parse_rfc3339_weak(v)
        .or_else(|_| humantime::parse_rfc3339(v))
        .map_err(|_| constraint(v, member, "Member must be an ISO 8601 timestamp"))?;
    Ok(t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
}

/// `GET /async-invoke`
pub async fn list(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Query(p): Query<ListParams>,
) -> Response {
    respond(
        async {
            let jobs = jobs_of(&state)?;
            let states = match p.status_equals.as_deref() {
                None => Vec::new(),
                Some("InProgress") => vec![JobState::Queued, JobState::Running],
                Some("Completed") => vec![JobState::Succeeded],
                Some("Failed") => vec![JobState::Failed, JobState::Dead, JobState::Cancelled],
                Some(other) => {
                    return Err(aws_enum(
                        other,
                        "statusEquals",
                        &["InProgress", "Completed", "Failed"],
                    ))
                }
            };
            if let Some(by) = p.sort_by.as_deref() {
                if by != "SubmissionTime" {
                    return Err(aws_enum(by, "sortBy", &["SubmissionTime"]));
                }
            }
            let descending = match p.sort_order.as_deref() {
                None | Some("Descending") => true,
                Some("Ascending") => false,
                Some(other) => {
                    return Err(aws_enum(other, "sortOrder", &["Ascending", "Descending"]))
                }
            };
            let max = match p.max_results.as_deref() {
                None => 1000,
                Some(m) => match m.parse::<u32>() {
                    Ok(n) if (1..=1000).contains(&n) => n,
                    _ => {
                        return Err(constraint(
                            m,
                            "maxResults",
                            "Member must have value between 1 and 1000",
                        ))
                    }
                },
            };
            let after = match p.next_token.as_deref() {
                None => None,
                Some(t) => {
                    let (ms, id) = t
                        .split_once('.')
                        .and_then(|(ms, id)| Some((ms.parse::<i64>().ok()?, id.to_string())))
                        .ok_or_else(|| Error::validation("The nextToken is not valid."))?;
                    Some((ms, id))
                }
            };
            let mut list = jobs
                .queue
                .jobs(&JobQuery {
                    owner: Some(owner(&ctx)),
                    kind: Some(KIND.into()),
                    states,
                    created_after_ms: p
                        .submit_time_after
                        .as_deref()
                        .map(|v| parse_time(v, "submitTimeAfter"))
                        .transpose()?,
                    created_before_ms: p
                        .submit_time_before
                        .as_deref()
                        .map(|v| parse_time(v, "submitTimeBefore"))
                        .transpose()?,
                    descending,
                    after,
                    limit: max + 1,
                    ..JobQuery::default()
                })
                .await
                .map_err(store_error)?;
            let more = list.len() > max as usize;
            list.truncate(max as usize);
            let mut body = json!({
                "asyncInvokeSummaries": list.iter().map(|j| summary(jobs, j)).collect::<Vec<_>>(),
            });
            if more {
                if let Some(last) = list.last() {
                    body["nextToken"] = json!(format!("{}.{}", last.created_ms, last.id));
                }
            }
            Ok(Json(body).into_response())
        }
        .await,
    )
}

/// `modelgate jobs output`: where an async invocation's output is.
pub fn output_uri(job: &JobRecord) -> Option<String> {
    job.meta["outputUri"]
        .as_str()
        .map(|u| format!("{u}/output.json"))
}
