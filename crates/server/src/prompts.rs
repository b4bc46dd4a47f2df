//! Prompt management. Bedrock's API (the `bedrock-agent` service: `CreatePrompt`,
//! `GetPrompt`, `UpdatePrompt`, `DeletePrompt`, `ListPrompts`, `CreatePromptVersion`) in
//! Bedrock's dialect, so boto3's `bedrock-agent` client works with `endpoint_url`; and
//! Modelgate's governance under `/admin/prompts/{id}/…`: the review lifecycle, labels and A/B
//! splits, rendering, the comparison of two versions, and the audit of every use.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use modelgate_core::prompts::{
    caller_of, compare::compare, parse_identifier, parse_version, Label, PromptDef, Prompts, Split,
};
use modelgate_core::CallContext;
use modelgate_store::RenderRecord;
use modelgate_types::{ChatRequest, Error, ErrorKind};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::app::AppState;
use crate::errors::{body_rejection, BedrockError, OpenAiError};

pub(crate) fn prompts_of(state: &AppState) -> Result<&Arc<Prompts>, Error> {
    state.prompts.as_ref().ok_or_else(|| {
        Error::new(
            ErrorKind::ServiceUnavailable,
            "This gateway runs without a prompt store.",
        )
    })
}

use crate::bedrock::aws_body as body_of;

/// The resource a prompt action is about.
fn resource(state: &AppState, id: Option<&str>) -> String {
    match (id.and_then(|i| parse_identifier(i).ok()), &state.prompts) {
        (Some(r), Some(p)) => p.arn(&r.id, None),
        _ => "*".into(),
    }
}

/// Bedrock's actions: callers with AWS-style credentials may use them as they would AWS's;
/// keys with policies need the action allowed.
fn allowed(
    state: &AppState,
    ctx: &CallContext,
    action: &str,
    id: Option<&str>,
) -> Result<(), Error> {
    if ctx.principal().is_none_or(|p| p.grants.unrestricted) {
        return Ok(());
    }
    crate::auth::admin_allowed(state, ctx, action, &resource(state, id))
}

fn aws(result: Result<Response, Error>) -> Response {
    crate::errors::respond::<BedrockError>(result)
}

fn created(v: Value) -> Response {
    (StatusCode::CREATED, Json(v)).into_response()
}

/// `POST /prompts/` (CreatePrompt).
pub async fn create(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    aws(async {
        allowed(&state, &ctx, "bedrock:CreatePrompt", None)?;
        let def: PromptDef = body_of(&state, body)?;
        Ok(created(prompts_of(&state)?.create(def).await?))
    }
    .await)
}

/// `PUT /prompts/{id}/` (UpdatePrompt).
pub async fn update(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    aws(async {
        allowed(&state, &ctx, "bedrock:UpdatePrompt", Some(&id))?;
        let def: PromptDef = body_of(&state, body)?;
        if def.tags.is_some() || def.client_token.is_some() {
            return Err(Error::validation(
                "UpdatePrompt takes neither tags nor clientToken.",
            ));
        }
        Ok(Json(prompts_of(&state)?.update(&id, def).await?).into_response())
    }
    .await)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct VersionBody {
    #[serde(default)]
    description: Option<String>,
    #[serde(default, rename = "clientToken")]
    _client_token: Option<String>,
    #[serde(default)]
    tags: Option<BTreeMap<String, String>>,
}

/// `POST /prompts/{id}/versions` (CreatePromptVersion).
pub async fn create_version(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    aws(async {
        allowed(&state, &ctx, "bedrock:CreatePromptVersion", Some(&id))?;
        let b: VersionBody = body_of(&state, body)?;
        Ok(created(
            prompts_of(&state)?
                .create_version(&id, b.description, b.tags)
                .await?,
        ))
    }
    .await)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetQuery {
    #[serde(default)]
    prompt_version: Option<String>,
}

/// `GET /prompts/{id}/` (GetPrompt).
pub async fn get(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Path(id): Path<String>,
    Query(q): Query<GetQuery>,
) -> Response {
    aws(async {
        allowed(&state, &ctx, "bedrock:GetPrompt", Some(&id))?;
        let p = prompts_of(&state)?
            .get(&id, q.prompt_version.as_deref())
            .await?;
        Ok(Json(p).into_response())
    }
    .await)
}

/// `DELETE /prompts/{id}/` (DeletePrompt).
pub async fn delete(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Path(id): Path<String>,
    Query(q): Query<GetQuery>,
) -> Response {
    aws(async {
        allowed(&state, &ctx, "bedrock:DeletePrompt", Some(&id))?;
        let out = prompts_of(&state)?
            .delete(&id, q.prompt_version.as_deref())
            .await?;
        Ok(Json(out).into_response())
    }
    .await)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    #[serde(default)]
    prompt_identifier: Option<String>,
    #[serde(default)]
    max_results: Option<String>,
    #[serde(default)]
    next_token: Option<String>,
}

/// `GET /prompts/` (ListPrompts).
pub async fn list(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Query(q): Query<ListQuery>,
) -> Response {
    aws(async {
        allowed(&state, &ctx, "bedrock:ListPrompts", None)?;
        let max = q
            .max_results
            .map(|m| {
                m.parse::<usize>()
                    .map_err(|_| Error::validation(format!("maxResults '{m}' is not a number")))
            })
            .transpose()?;
        let out = prompts_of(&state)?
            .list(q.prompt_identifier.as_deref(), max, q.next_token.as_deref())
            .await?;
        Ok(Json(out).into_response())
    }
    .await)
}

// ---- Governance (`/admin/prompts/…`, OpenAI-style errors) ----

fn admin(result: Result<Response, Error>) -> Response {
    crate::errors::respond::<OpenAiError>(result)
}

/// The id of the prompt a governance call names (by name, id or ARN), once the caller is
/// allowed `action` on it.
async fn governed(
    state: &AppState,
    ctx: &CallContext,
    action: &str,
    name_or_id: &str,
) -> Result<String, Error> {
    let id = prompts_of(state)?.id_of(name_or_id).await?;
    crate::auth::admin_allowed(state, ctx, action, &resource(state, Some(&id)))?;
    Ok(id)
}

fn json_body<T: serde::de::DeserializeOwned>(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, Error> {
    let body = body.map_err(|r| body_rejection(r, state.max_body_bytes))?;
    let body = if body.is_empty() {
        &b"{}"[..]
    } else {
        &body[..]
    };
    crate::errors::parse_body(body).map_err(|e| Error::validation(format!("invalid body: {e}")))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StepBody {
    #[serde(default)]
    note: Option<String>,
    /// Publish even when the comparison fails its thresholds (recorded in the note).
    #[serde(default)]
    force: bool,
}

/// `POST /admin/prompts/{id}/versions/{version}/{step}`: `submit`, `approve`, `reject` or
/// `publish` a version. Publishing compares it with the published version first (when
/// `prompts.compare_on_publish`) and refuses when it fails the thresholds, unless `force`.
pub async fn step(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Path((id, version, step)): Path<(String, String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    admin(async {
        let (state_name, action) = match step.as_str() {
            "submit" => ("submitted", "modelgate:SubmitPrompt"),
            "approve" => ("approved", "modelgate:ApprovePrompt"),
            "reject" => ("rejected", "modelgate:RejectPrompt"),
            "publish" => ("published", "modelgate:PublishPrompt"),
            other => {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!("'{other}' is not a lifecycle step (submit, approve, reject, publish)"),
                ))
            }
        };
        let id = governed(&state, &ctx, action, &id).await?;
        let v = parse_version(&version, "version")?;
        let b: StepBody = json_body(&state, body)?;
        let prompts = prompts_of(&state)?;
        let actor = caller_of(&ctx);
        let mut note = b.note.unwrap_or_default();
        let mut comparison = Value::Null;
        if state_name == "published" && prompts.config().compare_on_publish {
            if let Some(old) = prompts
                .labels(&id)
                .await?
                .get(modelgate_core::prompts::PUBLISHED)
                .map(|l| l.version)
                .filter(|old| *old != v)
            {
                // A version that cannot be published anyway is refused before models run.
                let current = prompts.state(&id, v).await?;
                if current.as_deref() == Some("approved")
                    || !prompts.config().require_approval
                {
                    let report = run_comparison(&state, &ctx, &id, old, v).await?;
                    if !report.passed {
                        if !b.force {
                            return Err(Error::refusal(
                                ErrorKind::Validation,
                                format!(
                                    "Version {v} fails the comparison with version {old}: {}. Publish with force to override.",
                                    report.failures.join("; ")
                                ),
                            )
                            .with_code("comparison_failed"));
                        }
                        note = format!(
                            "{note}{}forced past a failed comparison: {}",
                            if note.is_empty() { "" } else { "; " },
                            report.failures.join("; ")
                        );
                    }
                    comparison = serde_json::to_value(&report).unwrap_or_default();
                }
            }
        }
        let record = prompts.transition(&id, v, state_name, &actor, &note).await?;
        Ok(Json(json!({
            "prompt_id": record.prompt_id, "version": record.version, "state": record.state,
            "actor": record.actor, "note": record.note, "ts_ms": record.ts_ms,
            "comparison": comparison,
        }))
        .into_response())
    }
    .await)
}

/// Compare two versions through the gateway's own pipeline (the calls are recorded as uses
/// of source `test`).
async fn run_comparison(
    state: &AppState,
    ctx: &CallContext,
    id: &str,
    old: i64,
    new: i64,
) -> Result<modelgate_core::prompts::compare::Report, Error> {
    let prompts = prompts_of(state)?;
    let (old_def, new_def) = (
        prompts.definition(id, old).await?,
        prompts.definition(id, new).await?,
    );
    let gateway = &state.gateway;
    let principal = ctx.principal().cloned();
    let call = |version: i64, request: ChatRequest| {
        let ctx = CallContext::builder(modelgate_core::Dialect::Modelgate)
            .route("POST", "/admin/prompts/{id}/test")
            .build();
        if let Some(p) = principal.clone() {
            ctx.set_principal(p);
        }
        ctx.set_prompt_use(modelgate_core::context::PromptUse {
            prompt_id: id.to_string(),
            version,
            source: "test".into(),
        });
        async move { gateway.converse(&ctx, request).await.map(|s| s.value) }
    };
    let report = compare(&old_def, old, &new_def, new, call).await;
    Ok(report)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestBody {
    version: String,
    #[serde(default)]
    against: Option<String>,
}

/// `POST /admin/prompts/{id}/test {version, against?}`: compare `version` with `against`
/// (default: the published version, else the one before) on the prompt's examples.
pub async fn test(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    admin(
        async {
            let id = governed(&state, &ctx, "modelgate:TestPrompt", &id).await?;
            let b: TestBody = json_body(&state, body)?;
            let new = parse_version(&b.version, "version")?;
            let prompts = prompts_of(&state)?;
            let old = match b.against {
                Some(a) => parse_version(&a, "against")?,
                None => match prompts
                    .labels(&id)
                    .await?
                    .get(modelgate_core::prompts::PUBLISHED)
                    .map(|l| l.version)
                    .filter(|v| *v != new)
                {
                    Some(v) => v,
                    None if new > 1 => new - 1,
                    None => {
                        return Err(Error::validation(
                            "Nothing to compare version 1 with; give `against`.",
                        ))
                    }
                },
            };
            let report = run_comparison(&state, &ctx, &id, old, new).await?;
            Ok(Json(report).into_response())
        }
        .await,
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RenderBody {
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    variables: Map<String, Value>,
}

/// `POST /admin/prompts/{id}/render {version | label, variables}`: the request a version
/// renders to (Converse's shape), recorded as a use of source `render`.
pub async fn render(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    admin(
        async {
            let id = governed(&state, &ctx, "modelgate:RenderPrompt", &id).await?;
            let b: RenderBody = json_body(&state, body)?;
            let prompts = prompts_of(&state)?;
            let version = match (b.version, b.label) {
                (Some(v), None) => parse_version(&v, "version")?,
                (None, Some(l)) => prompts.pick(&id, &l).await?,
                (None, None) => 0,
                (Some(_), Some(_)) => {
                    return Err(Error::validation("Give a version or a label, not both."))
                }
            };
            let r = prompts
                .definition(&id, version)
                .await?
                .render(&b.variables)?;
            prompts.record_render(RenderRecord {
                ts_ms: modelgate_core::keys::now_ms(),
                prompt_id: id.clone(),
                version,
                caller: caller_of(&ctx),
                request_id: ctx.request_id().to_string(),
                source: "render".into(),
                status: 200,
                latency_ms: 0,
                input_tokens: 0,
                output_tokens: 0,
            });
            let q = &r.request;
            Ok(Json(json!({
                "prompt_id": id, "version": version, "modelId": q.model,
                "system": q.system, "messages": q.messages, "inferenceConfig": q.inference,
                "toolConfig": q.tools, "response_schema": r.response_schema,
            }))
            .into_response())
        }
        .await,
    )
}

/// `GET /admin/prompts/{id}/reviews`: the lifecycle trail, and each version's state.
pub async fn reviews(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Path(id): Path<String>,
) -> Response {
    admin(async {
        let id = governed(&state, &ctx, "modelgate:GetPromptAudit", &id).await?;
        let prompts = prompts_of(&state)?;
        let trail = prompts.reviews(&id).await?;
        let mut states: BTreeMap<i64, String> = BTreeMap::new();
        for r in &trail {
            states.insert(r.version, r.state.clone());
        }
        let trail: Vec<Value> = trail
            .iter()
            .map(|r| json!({"version": r.version, "state": r.state, "actor": r.actor, "note": r.note, "ts_ms": r.ts_ms}))
            .collect();
        Ok(Json(json!({
            "prompt_id": id, "reviews": trail,
            "states": states.iter().map(|(v, s)| (v.to_string(), json!(s))).collect::<Map<_, _>>(),
            "labels": prompts.labels(&id).await?,
        }))
        .into_response())
    }
    .await)
}

#[derive(Deserialize)]
pub struct AuditQuery {
    #[serde(default)]
    since_ms: Option<i64>,
    #[serde(default)]
    limit: Option<u32>,
}

/// `GET /admin/prompts/{id}/renders?since_ms=&limit=`: who used which version when, newest
/// first.
pub async fn renders(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Path(id): Path<String>,
    Query(q): Query<AuditQuery>,
) -> Response {
    admin(
        async {
            let id = governed(&state, &ctx, "modelgate:GetPromptAudit", &id).await?;
            let uses = prompts_of(&state)?
                .renders(
                    &id,
                    q.since_ms.unwrap_or(0),
                    q.limit.unwrap_or(100).min(10_000),
                )
                .await?;
            let uses: Vec<Value> = uses
                .iter()
                .map(|r| {
                    json!({
                        "ts_ms": r.ts_ms, "version": r.version, "caller": r.caller,
                        "request_id": r.request_id, "source": r.source, "status": r.status,
                        "latency_ms": r.latency_ms, "input_tokens": r.input_tokens,
                        "output_tokens": r.output_tokens,
                    })
                })
                .collect();
            Ok(Json(json!({ "prompt_id": id, "renders": uses })).into_response())
        }
        .await,
    )
}

/// `GET /admin/prompts/{id}/stats?since_ms=`: calls, errors, latency and tokens per version.
pub async fn stats(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Path(id): Path<String>,
    Query(q): Query<AuditQuery>,
) -> Response {
    admin(
        async {
            let id = governed(&state, &ctx, "modelgate:GetPromptAudit", &id).await?;
            let out = prompts_of(&state)?
                .stats(&id, q.since_ms.unwrap_or(0))
                .await?;
            Ok(Json(out).into_response())
        }
        .await,
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LabelBody {
    label: String,
    /// `None` removes the label.
    #[serde(default)]
    version: Option<i64>,
    #[serde(default)]
    split: Option<Split>,
}

/// `PUT /admin/prompts/{id}/labels {label, version, split?}`: point a label at a version,
/// with an optional A/B split (`{"version": 3, "weight": 0.2}`); no version removes it.
pub async fn set_label(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    admin(
        async {
            let id = governed(&state, &ctx, "modelgate:LabelPrompt", &id).await?;
            let b: LabelBody = json_body(&state, body)?;
            let value = b.version.map(|version| Label {
                version,
                split: b.split,
            });
            let labels = prompts_of(&state)?
                .set_label(&id, &b.label, value, &caller_of(&ctx))
                .await?;
            Ok(Json(json!({ "prompt_id": id, "labels": labels })).into_response())
        }
        .await,
    )
}

/// `modelgate prompts …` against a running gateway.
pub mod cli {
    use serde_json::{json, Value};

    use crate::jobs::cli::Remote;

    /// Send one request; the answer's JSON, or its error message.
    pub async fn call(
        remote: &Remote,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let client = reqwest::Client::new();
        let mut r = remote.request(&client, method, path);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let (status, v) = crate::jobs::cli::send(remote, r).await?;
        if !status.is_success() {
            anyhow::bail!("{status}: {}", crate::jobs::cli::error_message(&v));
        }
        Ok(v)
    }

    /// The id of a prompt given by name, id or ARN.
    pub async fn id_of(remote: &Remote, name: &str) -> anyhow::Result<String> {
        if modelgate_core::prompts::parse_identifier(name).is_ok() {
            return Ok(name.to_string());
        }
        let mut token: Option<String> = None;
        loop {
            let mut path = "/prompts/?maxResults=1000".to_string();
            if let Some(t) = &token {
                path.push_str(&format!("&nextToken={t}"));
            }
            let page = call(remote, reqwest::Method::GET, &path, None).await?;
            if let Some(p) = page["promptSummaries"]
                .as_array()
                .and_then(|l| l.iter().find(|p| p["name"] == name))
            {
                return Ok(p["id"].as_str().unwrap_or_default().to_string());
            }
            match page["nextToken"].as_str() {
                Some(t) => token = Some(t.to_string()),
                None => anyhow::bail!("no prompt is named '{name}'"),
            }
        }
    }

    /// Print a comparison report as a table; whether it passed.
    pub fn print_report(report: &Value) -> bool {
        println!(
            "{:<16} {:>12} {:>12} {:>9} {:>9} {:>10} {:>8} {:>8}",
            "EXAMPLE", "OLD_MS", "NEW_MS", "OLD_TOK", "NEW_TOK", "SIMILARITY", "OLD_OK", "NEW_OK"
        );
        let ok = |run: &Value| {
            if run["error"].is_string() {
                "error"
            } else if run["schema_valid"] == json!(false) {
                "schema"
            } else {
                "ok"
            }
        };
        for row in report["rows"].as_array().into_iter().flatten() {
            let tokens = |r: &Value| {
                r["input_tokens"].as_u64().unwrap_or(0) + r["output_tokens"].as_u64().unwrap_or(0)
            };
            println!(
                "{:<16} {:>12.1} {:>12.1} {:>9} {:>9} {:>10.3} {:>8} {:>8}",
                row["example"].as_str().unwrap_or_default(),
                row["old"]["latency_ms"].as_f64().unwrap_or(0.0),
                row["new"]["latency_ms"].as_f64().unwrap_or(0.0),
                tokens(&row["old"]),
                tokens(&row["new"]),
                row["similarity"].as_f64().unwrap_or(0.0),
                ok(&row["old"]),
                ok(&row["new"]),
            );
        }
        println!(
            "version {} vs {}: mean similarity {:.3}, latency ratio {:.2}, error rate {:.2}",
            report["new_version"],
            report["old_version"],
            report["mean_similarity"].as_f64().unwrap_or(0.0),
            report["latency_ratio"].as_f64().unwrap_or(0.0),
            report["error_rate"].as_f64().unwrap_or(0.0),
        );
        let passed = report["passed"].as_bool().unwrap_or(false);
        if passed {
            println!("PASSED");
        } else {
            for f in report["failures"].as_array().into_iter().flatten() {
                println!("FAILED: {}", f.as_str().unwrap_or_default());
            }
        }
        passed
    }
}
