//! Declarative endpoints (`[[endpoints]]`, `modelgate_core::endpoints`) served from the
//! router's fallback: a path no built-in door takes is looked up in the live set. And
//! `GET /openapi.json`, the OpenAPI 3.1 document of the declarative endpoints and the built-in
//! doors. Errors are OpenAI-shaped (`{"error": {message, type, code}}`).

use std::sync::Arc;

use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use modelgate_core::endpoints::{timed_out, Endpoint, ResponseShape};
use modelgate_core::CallContext;
use modelgate_types::{Error, ErrorKind};
use serde_json::{json, Value};

use crate::app::AppState;
use crate::errors::OpenAiError;

/// Serve `request` when a declarative endpoint has its path; `None` otherwise.
pub async fn serve(state: &AppState, request: Request) -> Result<Response, Request> {
    let Some(endpoint) = state.endpoints.get(request.uri().path()) else {
        return Err(request);
    };
    if request.method().as_str() != endpoint.config.method {
        let e = Error::new(
            ErrorKind::Validation,
            format!(
                "{} {} is not served; the endpoint takes {}.",
                request.method(),
                endpoint.config.path,
                endpoint.config.method
            ),
        )
        .with_code("method_not_allowed");
        let mut r = OpenAiError(e).into_response();
        *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        if let Ok(v) = HeaderValue::from_str(&endpoint.config.method) {
            r.headers_mut().insert(header::ALLOW, v);
        }
        return Ok(r);
    }
    let Some(ctx) = request.extensions().get::<CallContext>().cloned() else {
        return Ok(OpenAiError(Error::internal("no call context")).into_response());
    };
    let job_run = request.extensions().get::<crate::jobs::JobRun>().is_some();
    let result = match axum::body::Bytes::from_request(request, state).await {
        Ok(bytes) => handle(state, &ctx, &endpoint, &bytes, job_run).await,
        Err(r) => Err(crate::errors::body_rejection(r, state.max_body_bytes)),
    };
    Ok(crate::errors::respond::<OpenAiError>(result))
}

async fn handle(
    state: &AppState,
    ctx: &CallContext,
    endpoint: &Arc<Endpoint>,
    bytes: &[u8],
    job_run: bool,
) -> Result<Response, Error> {
    let c = &endpoint.config;
    crate::auth::aws_allowed(
        state,
        ctx,
        "modelgate:InvokeEndpoint",
        &endpoint_arn(state, &c.name),
    )?;
    let mut body: Value = if bytes.is_empty() {
        return Err(
            Error::validation("The request body is empty; send a JSON object.")
                .with_code("invalid_request_body"),
        );
    } else {
        serde_json::from_slice(bytes).map_err(|e| {
            Error::validation(format!("The request body is not JSON: {e}"))
                .with_code("invalid_request_body")
        })?
    };
    endpoint.check_body(&body)?;
    endpoint.with_defaults(&mut body);
    let case = endpoint.case_of(&body);
    let model = endpoint.model_for(case.as_deref());
    if !job_run && endpoint.is_async(&body) {
        return enqueue(state, ctx, endpoint, &body, model).await;
    }
    let variables = endpoint.variables(&body);
    let rendered = match (&endpoint.inline, &c.prompt) {
        (Some(def), _) => def.render(&variables)?,
        (None, Some(name)) => {
            let prompts = crate::prompts::prompts_of(state)?;
            let id = prompts.id_of(name).await?;
            let version = match &c.prompt_version {
                Some(v) => modelgate_core::prompts::parse_version(v, "prompt_version")?,
                None => {
                    prompts
                        .pick(
                            &id,
                            c.prompt_label
                                .as_deref()
                                .unwrap_or(modelgate_core::prompts::PUBLISHED),
                        )
                        .await?
                }
            };
            prompts
                .render_for(
                    ctx,
                    &id,
                    version,
                    &variables,
                    &format!("endpoint:{}", c.name),
                )
                .await?
        }
        (None, None) => return Err(Error::internal("the endpoint has no template")),
    };
    let mut request = rendered.request;
    if let Some(m) = model {
        request.model = m;
    }
    if request.model.is_empty() {
        return Err(Error::internal(format!(
            "The endpoint '{}' has no model for this call (set `model`).",
            c.name
        )));
    }
    if c.response == ResponseShape::Default {
        request.response_format = None;
    }
    if !c.rate_limit.is_empty() {
        ctx.set_route_limit(c.rate_limit);
    }
    let answer = tokio::time::timeout(c.timeout, state.gateway.converse(ctx, request)).await;
    let served = match answer {
        Ok(Ok(served)) => served,
        // The gateway's own refusals (auth, limits, guardrails, bad input) are answered as such.
        Ok(Err(e)) if e.is_final() => return Err(e),
        // Every model failed, or took too long: the canned answer, when there is one.
        Ok(Err(e)) => return degrade(endpoint, case.as_deref(), e),
        Err(_) => return degrade(endpoint, case.as_deref(), timed_out(endpoint)),
    };
    let text = served.value.message.joined_text();
    match c.response {
        ResponseShape::Default => Ok(Json(json!({
            "model_used": served.served_by,
            "response": text,
        }))
        .into_response()),
        ResponseShape::Structured => {
            let parsed: Value = serde_json::from_str(text.trim()).map_err(|e| {
                Error::new(
                    ErrorKind::ModelError,
                    format!("The model's answer is not JSON: {e}"),
                )
            })?;
            endpoint.check_answer(&parsed, rendered.response_schema.as_ref())?;
            let mut r = Json(parsed).into_response();
            if let Ok(v) = HeaderValue::from_str(&served.served_by) {
                r.headers_mut().insert("x-modelgate-model-used", v);
            }
            Ok(r)
        }
    }
}

/// The degradation text for `case` instead of `error`, when the endpoint has one.
fn degrade(endpoint: &Endpoint, case: Option<&str>, error: Error) -> Result<Response, Error> {
    let Some(text) = endpoint.degradation_for(case) else {
        return Err(error);
    };
    tracing::warn!(endpoint = %endpoint.config.name, error = %error.message, "every model failed; answering with the degradation text");
    Ok((
        [("x-modelgate-degraded", "true")],
        Json(json!({"model_used": "degraded", "response": text, "degraded": true})),
    )
        .into_response())
}

/// The resource of an endpoint in policies.
fn endpoint_arn(state: &AppState, name: &str) -> String {
    format!(
        "arn:aws:bedrock:{}:{}:endpoint/{name}",
        state.site.region, state.site.account
    )
}

/// Queue a large call as a job of the caller's: the job calls this same endpoint.
async fn enqueue(
    state: &AppState,
    ctx: &CallContext,
    endpoint: &Endpoint,
    body: &Value,
    model: Option<String>,
) -> Result<Response, Error> {
    let jobs = crate::jobs::api::jobs_of(state)?;
    let (job, _) = crate::jobs::api::enqueue_call(
        jobs,
        ctx,
        &endpoint.config.path,
        body,
        &[],
        crate::jobs::api::Placement {
            model: model.unwrap_or_else(|| format!("endpoint:{}", endpoint.config.name)),
            priority: 5,
            max_attempts: i64::from(jobs.config.max_attempts),
            idem_key: None,
            callback: None,
            metadata: Some(json!({"endpoint": endpoint.config.name})),
        },
    )
    .await?;
    let location = format!("/v1/jobs/{}", job.id);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(crate::jobs::api::view(&job)),
    )
        .into_response())
}

// ---- OpenAPI ----

fn error_schema() -> Value {
    json!({
        "type": "object", "required": ["error"],
        "properties": {"error": {
            "type": "object", "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"}, "type": {"type": "string"},
                "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]},
            }
        }}
    })
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    })
}

fn object() -> Value {
    json!({"type": "object"})
}

/// A built-in door's operation (schemas loose: the dialect's own documentation is the
/// reference).
fn door(summary: &str, tag: &str) -> Value {
    json!({
        "summary": summary, "tags": [tag],
        "requestBody": {"required": true, "content": {"application/json": {"schema": object()}}},
        "responses": {
            "200": {"description": "The answer", "content": {"application/json": {"schema": object()}}},
            "400": {"description": "Invalid request"},
            "401": {"description": "No or bad credentials"},
            "403": {"description": "Not allowed"},
            "429": {"description": "Rate limited"},
        }
    })
}

/// The OpenAPI 3.1 document of the gateway as configured now.
pub fn openapi(state: &AppState) -> Value {
    let mut paths = serde_json::Map::new();
    for (path, e) in state.endpoints.all().iter() {
        let c = &e.config;
        let ok = match (c.response, &e.inline) {
            (ResponseShape::Structured, Some(def)) => def
                .modelgate
                .as_ref()
                .and_then(|g| g.response_schema.clone())
                .unwrap_or_else(object),
            (ResponseShape::Structured, None) => object(),
            (ResponseShape::Default, _) => json!({"$ref": "#/components/schemas/EndpointAnswer"}),
        };
        let mut responses = json!({
            "200": {"description": "The model's answer (or the degradation text when every model failed)",
                    "content": {"application/json": {"schema": ok}}},
            "400": error_response("The body does not match the request schema (every failing field is listed)"),
            "401": error_response("No or bad credentials"),
            "403": error_response("The caller may not invoke this endpoint"),
            "404": error_response("The stored prompt or its label does not exist"),
            "405": error_response("Wrong method"),
            "408": error_response("The call took longer than the endpoint's timeout"),
            "413": error_response("The body is larger than the gateway accepts"),
            "424": error_response("The model's answer does not match the response schema"),
            "429": error_response("Rate limited"),
            "503": error_response("No model is available"),
        });
        if c.async_over_chars.is_some() {
            responses["202"] = json!({
                "description": format!("Inputs over {} characters run as a job; poll its status_url",
                    c.async_over_chars.unwrap_or_default()),
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}},
            });
        }
        let mut op = json!({
            "operationId": c.name,
            "summary": c.description.clone().unwrap_or_else(|| format!("Declarative endpoint {}", c.name)),
            "tags": ["endpoints"],
            "requestBody": {"required": true, "content": {"application/json": {"schema": c.request_schema}}},
            "responses": responses,
        });
        if let Some(d) = &c.description {
            op["description"] = json!(d);
        }
        paths.insert(path.clone(), json!({ c.method.to_ascii_lowercase(): op }));
    }
    for (path, method, summary, tag) in [
        (
            "/v1/chat/completions",
            "post",
            "OpenAI Chat Completions",
            "openai",
        ),
        (
            "/v1/completions",
            "post",
            "OpenAI legacy completions",
            "openai",
        ),
        ("/v1/embeddings", "post", "OpenAI embeddings", "openai"),
        ("/v1/messages", "post", "Anthropic Messages", "anthropic"),
        (
            "/model/{modelId}/converse",
            "post",
            "Bedrock Converse",
            "bedrock",
        ),
        (
            "/model/{modelId}/converse-stream",
            "post",
            "Bedrock ConverseStream (AWS event stream)",
            "bedrock",
        ),
        (
            "/model/{modelId}/invoke",
            "post",
            "Bedrock InvokeModel",
            "bedrock",
        ),
        ("/v1/jobs", "post", "Queue a model call as a job", "jobs"),
        ("/prompts/", "post", "Bedrock CreatePrompt", "prompts"),
    ] {
        let mut op = door(summary, tag);
        if path.contains("{modelId}") {
            op["parameters"] = json!([{"name": "modelId", "in": "path", "required": true, "schema": {"type": "string"}}]);
        }
        paths.insert(path.into(), json!({ method: op }));
    }
    paths.insert(
        "/v1/models".into(),
        json!({"get": {"summary": "Models served", "tags": ["openai"],
            "responses": {"200": {"description": "The list", "content": {"application/json": {"schema": object()}}}}}}),
    );
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Modelgate",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The gateway's declarative endpoints (tag `endpoints`) and its built-in doors.",
        },
        "paths": paths,
        "components": {
            "schemas": {
                "Error": error_schema(),
                "EndpointAnswer": {
                    "type": "object", "required": ["model_used", "response"],
                    "properties": {
                        "model_used": {"type": "string", "description": "The model that answered, or `degraded`"},
                        "response": {"type": "string"},
                        "degraded": {"type": "boolean"},
                    }
                },
                "Job": {
                    "type": "object", "required": ["id", "status", "status_url"],
                    "properties": {"id": {"type": "string"}, "status": {"type": "string"}, "status_url": {"type": "string"}},
                },
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    })
}

/// `GET /openapi.json`.
pub async fn openapi_json(State(state): State<AppState>) -> Response {
    Json(openapi(&state)).into_response()
}

// ---- The admin API (`/admin/declared-endpoints`) ----

fn admin(result: Result<Response, Error>) -> Response {
    crate::errors::respond::<OpenAiError>(result)
}

fn allowed(state: &AppState, ctx: &CallContext, action: &str, name: &str) -> Result<(), Error> {
    crate::auth::admin_allowed(state, ctx, action, &endpoint_arn(state, name))
}

/// `GET /admin/declared-endpoints`: every declarative endpoint, its source (`file` or
/// `api`) and the stored version.
pub async fn admin_list(
    State(state): State<AppState>,
    axum::Extension(ctx): axum::Extension<CallContext>,
) -> Response {
    admin(
        async {
            allowed(&state, &ctx, "modelgate:ListEndpoints", "*")?;
            let (list, version) = state.endpoints.list();
            let list: Vec<Value> = list
                .into_iter()
                .map(|(source, c)| json!({"source": source, "endpoint": c}))
                .collect();
            Ok(Json(json!({"endpoints": list, "stored_version": version})).into_response())
        }
        .await,
    )
}

/// `GET /admin/declared-endpoints/{name}`.
pub async fn admin_get(
    State(state): State<AppState>,
    axum::Extension(ctx): axum::Extension<CallContext>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    admin(
        async {
            allowed(&state, &ctx, "modelgate:GetEndpoint", &name)?;
            let (list, _) = state.endpoints.list();
            let (source, c) = list
                .into_iter()
                .find(|(_, c)| c.name == name)
                .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("No endpoint '{name}'.")))?;
            Ok(Json(json!({"source": source, "endpoint": c})).into_response())
        }
        .await,
    )
}

/// `PUT /admin/declared-endpoints/{name}` (the `[[endpoints]]` table as JSON): create or
/// replace an endpoint, in force at once on this replica and within `sync_interval` on the
/// others.
pub async fn admin_put(
    State(state): State<AppState>,
    axum::Extension(ctx): axum::Extension<CallContext>,
    axum::extract::Path(name): axum::extract::Path<String>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    admin(
        async {
            allowed(&state, &ctx, "modelgate:PutEndpoint", &name)?;
            let body = body.map_err(|r| crate::errors::body_rejection(r, state.max_body_bytes))?;
            let config: modelgate_core::endpoints::EndpointConfig =
                crate::errors::parse_body(&body)
                    .map_err(|e| Error::validation(format!("invalid endpoint: {e}")))?;
            let actor = modelgate_core::prompts::caller_of(&ctx);
            let version = state.endpoints.change(&name, Some(config), &actor).await?;
            Ok(Json(json!({"name": name, "stored_version": version})).into_response())
        }
        .await,
    )
}

/// `DELETE /admin/declared-endpoints/{name}` (one made through the API).
pub async fn admin_delete(
    State(state): State<AppState>,
    axum::Extension(ctx): axum::Extension<CallContext>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    admin(
        async {
            allowed(&state, &ctx, "modelgate:DeleteEndpoint", &name)?;
            let actor = modelgate_core::prompts::caller_of(&ctx);
            let version = state.endpoints.change(&name, None, &actor).await?;
            Ok(
                Json(json!({"name": name, "deleted": true, "stored_version": version}))
                    .into_response(),
            )
        }
        .await,
    )
}

/// The router's fallback: a declarative endpoint, or the dialect's 404.
pub async fn fallback(State(state): State<AppState>, request: Request) -> Response {
    match serve(&state, request).await {
        Ok(r) => r,
        Err(request) => crate::app::not_found(request).await,
    }
}
