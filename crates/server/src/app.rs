//! The HTTP application: shared state, the router, per-request middleware and the server loop
//! with graceful shutdown.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt as _;
use axum::{Json, Router};
use modelgate_core::context::CacheDirectives;
use modelgate_core::outcome::{record_plain, ErrorInfo};
use modelgate_core::{CallContext, Dialect, Gateway, ModelInfo, ServedBy};
use modelgate_types::Error;
use serde_json::json;
use tracing::Instrument as _;

use crate::errors::{BedrockError, OpenAiError};
use crate::{admin, anthropic, bedrock, jobs, openai};

/// State every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The pipeline and model registry.
    pub gateway: Arc<Gateway>,
    /// Request body limit in bytes (for error messages).
    pub max_body_bytes: usize,
    /// Unix time the server started (`created` in `/v1/models`).
    pub started_at: u64,
    /// False once shutdown has begun, so load balancers stop sending traffic.
    pub accepting: Arc<AtomicBool>,
    /// Who may call and how they prove it.
    pub auth: Arc<crate::auth::Auth>,
    /// ARN region and account for policies.
    pub site: modelgate_core::access::Site,
    /// Usage records (for `/admin/usage`).
    pub usage: Option<Arc<dyn modelgate_store::UsageStore>>,
    /// The audit log (for `/admin/audit`).
    pub audit_store: Option<Arc<dyn modelgate_store::AuditStore>>,
    /// Invocation records (for `/admin/invocations`).
    pub invocations: Option<Arc<dyn modelgate_store::InvocationStore>>,
    /// A check that the state store answers (for `/readyz`).
    pub store_ready: Option<crate::state::Ping>,
    /// Prometheus metrics (`/metrics`), when kept.
    pub metrics: Option<Arc<modelgate_core::metrics::Metrics>>,
    /// Whether `/metrics` needs a credential.
    pub metrics_protected: bool,
    /// The share of new traces sampled (`traces.sample_ratio`).
    pub trace_sample_ratio: f64,
    /// Jobs, batches and asynchronous invocation (none without a store).
    pub jobs: Option<Arc<crate::jobs::Jobs>>,
    /// Workflows (none without a store, or when turned off).
    pub flows: Option<Arc<crate::flows::Flows>>,
    /// Stored prompt templates (none without a store).
    pub prompts: Option<Arc<modelgate_core::prompts::Prompts>>,
    /// Stored Responses API responses (none without a store).
    pub responses: Option<Arc<dyn modelgate_store::ResponseStore>>,
    /// The declarative endpoints in force (replaced when the config file changes).
    pub endpoints: Arc<modelgate_core::endpoints::Endpoints>,
    /// The event bus (none without a store).
    pub events: Option<Arc<crate::events::Bus>>,
}

impl AppState {
    /// State for `gateway` with defaults: open access, no store.
    pub fn new(gateway: Arc<Gateway>, max_body_bytes: usize) -> Self {
        Self {
            gateway,
            max_body_bytes,
            started_at: 0,
            accepting: Arc::new(AtomicBool::new(true)),
            auth: Arc::new(crate::auth::Auth::open()),
            site: modelgate_core::access::Site::default(),
            usage: None,
            audit_store: None,
            invocations: None,
            store_ready: None,
            metrics: None,
            metrics_protected: false,
            trace_sample_ratio: 1.0,
            jobs: None,
            prompts: None,
            responses: None,
            endpoints: Arc::default(),
            events: None,
            flows: None,
        }
    }
}

/// Say on a response which model served it and why the requested one did not:
/// `x-modelgate-served-by`, `x-modelgate-fallback-reason` (when there was a fallback) and
/// `x-modelgate-attempts` — on answers and errors alike, from what the pipeline recorded.
fn served_headers(response: &mut Response, served: &ServedBy) {
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&served.served_by) {
        if !served.served_by.is_empty() {
            h.insert("x-modelgate-served-by", v);
        }
    }
    if let Some(reason) = served.fallback_reason {
        h.insert(
            "x-modelgate-fallback-reason",
            HeaderValue::from_static(reason),
        );
    }
    h.insert("x-modelgate-attempts", HeaderValue::from(served.attempts));
    if !served.dropped.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&served.dropped.join(", ")) {
            h.insert("x-modelgate-dropped-params", v);
        }
    }
    if let Some(d) = &served.routing {
        if let Ok(v) = HeaderValue::from_str(&d.header()) {
            h.insert("x-modelgate-route", v);
        }
    }
    if let Some(c) = &served.cache {
        h.insert(
            "x-modelgate-cache",
            HeaderValue::from_static(c.status.as_str()),
        );
        if let Ok(v) = HeaderValue::from_str(&c.key) {
            h.insert("x-modelgate-cache-key", v);
        }
        if let Some(s) = c.similarity {
            if let Ok(v) = HeaderValue::from_str(&format!("{s:.4}")) {
                h.insert("x-modelgate-cache-similarity", v);
            }
        }
        if let Some(age) = c.age {
            h.insert("age", HeaderValue::from(age.as_secs()));
        }
    }
}

/// Build the router with every front door.
pub fn router(state: AppState) -> Router {
    let jobs = state.jobs.clone();
    let flows = state.flows.clone();
    let router = routes(state);
    // The job workers and workflow model tasks send their calls through this same router.
    if let Some(j) = jobs {
        j.set_router(router.clone());
    }
    if let Some(f) = flows {
        f.set_router(router.clone());
    }
    router
}

fn routes(state: AppState) -> Router {
    let limit = state.max_body_bytes;
    let router = Router::new()
        // AWS JSON-protocol services (`X-Amz-Target`): Step Functions, EventBridge.
        .route("/", post(crate::flows::api::handle))
        // Health.
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/admin/endpoints", get(admin_endpoints))
        .route("/admin/keys", post(admin::create_key).get(admin::list_keys))
        .route(
            "/admin/keys/{id}",
            get(admin::get_key)
                .patch(admin::update_key)
                .delete(admin::revoke_key),
        )
        .route("/admin/keys/{id}/rotate", post(admin::rotate_key))
        .route("/admin/keys/{id}/revoke", post(admin::revoke_key))
        .route("/admin/teams", get(admin::list_teams))
        .route("/admin/teams/{id}", axum::routing::put(admin::put_team))
        .route("/admin/usage", get(admin::usage))
        .route("/admin/audit", get(admin::audit))
        .route(
            "/admin/cache",
            get(admin::cache_entries).delete(admin::invalidate_cache),
        )
        .route("/admin/invocations", get(admin::invocations))
        .route(
            "/admin/routing",
            get(admin::routing_status).put(admin::change_routing),
        )
        .route("/admin/routing/versions", get(admin::routing_versions))
        .route("/admin/routing/rollback", post(admin::rollback_routing))
        .route("/admin/routing/rollout", post(admin::rollout_routing))
        .route("/admin/routing/stats", get(admin::routing_stats))
        .route("/admin/invocations/{request_id}", get(admin::invocation))
        .route("/admin/events", get(crate::events::admin_list))
        .route("/hooks/{name}", post(crate::events::hooks::receive))
        .route("/admin/jobs", get(jobs::api::admin_list))
        .route("/admin/jobs/redrive", post(jobs::api::admin_redrive))
        .route("/admin/jobs/{id}", get(jobs::api::admin_get))
        // Jobs (any door's model call, later), files and batches.
        .route("/v1/jobs", post(jobs::api::submit).get(jobs::api::list))
        .route("/v1/jobs/{id}", get(jobs::api::get))
        .route("/v1/jobs/{id}/cancel", post(jobs::api::cancel))
        .route("/v1/jobs/{id}/events", get(jobs::api::events))
        .route("/v1/jobs/{id}/deliveries", get(jobs::api::deliveries))
        .route(
            "/v1/files",
            post(jobs::batches::upload).get(jobs::batches::list_files),
        )
        .route(
            "/v1/files/{id}",
            get(jobs::batches::get_file).delete(jobs::batches::delete_file),
        )
        .route("/v1/files/{id}/content", get(jobs::batches::file_content))
        .route(
            "/v1/batches",
            post(jobs::batches::create_batch).get(jobs::batches::list_batches),
        )
        .route("/v1/batches/{id}", get(jobs::batches::get_batch))
        .route("/v1/batches/{id}/cancel", post(jobs::batches::cancel_batch))
        // OpenAI dialect.
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(crate::completions::completions))
        .route("/v1/responses", post(crate::responses::create))
        .route(
            "/v1/responses/{id}",
            get(crate::responses::get).delete(crate::responses::delete),
        )
        .route(
            "/v1/responses/{id}/input_items",
            get(crate::responses::input_items),
        )
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/models", get(openai::list_models))
        .route("/v1/models/{id}", get(openai::get_model))
        // Anthropic dialect.
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
        .route(
            "/v1/messages/batches",
            post(jobs::batches::anthropic_create).get(jobs::batches::anthropic_list),
        )
        .route(
            "/v1/messages/batches/{id}",
            get(jobs::batches::anthropic_get),
        )
        .route(
            "/v1/messages/batches/{id}/cancel",
            post(jobs::batches::anthropic_cancel),
        )
        .route(
            "/v1/messages/batches/{id}/results",
            get(jobs::batches::anthropic_results),
        )
        .merge(bedrock_routes())
        .merge(prompt_routes())
        .route("/openapi.json", get(crate::endpoints::openapi_json))
        .route(
            "/admin/declared-endpoints",
            get(crate::endpoints::admin_list),
        )
        .route(
            "/admin/declared-endpoints/{name}",
            get(crate::endpoints::admin_get)
                .put(crate::endpoints::admin_put)
                .delete(crate::endpoints::admin_delete),
        )
        // Declarative endpoints, else the dialect's 404.
        .fallback(crate::endpoints::fallback)
        .layer(DefaultBodyLimit::max(limit));
    // Large synchronous calls become jobs by rule (`jobs.async_over_chars`), as the
    // authenticated caller; without the rule, calls do not pass through it at all.
    let rule_on = state
        .jobs
        .as_ref()
        .is_some_and(|j| j.config.async_over_chars > 0);
    let router = if rule_on {
        router.layer(axum::middleware::from_fn_with_state(
            state.clone(),
            jobs::api::async_rule,
        ))
    } else {
        router
    };
    router
        // Authentication runs inside the call context (it fills the principal).
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::authenticate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            request_context,
        ))
        .with_state(state)
}

/// Prompt management: the `bedrock-agent` service's prompt operations and Modelgate's
/// governance of them.
fn prompt_routes() -> Router<AppState> {
    use crate::prompts as p;
    Router::new()
        .route("/prompts/", post(p::create).get(p::list))
        .route(
            "/prompts/{id}/",
            get(p::get).put(p::update).delete(p::delete),
        )
        .route("/prompts/{id}/versions", post(p::create_version))
        .route(
            "/admin/prompts/{id}/versions/{version}/{step}",
            post(p::step),
        )
        .route("/admin/prompts/{id}/test", post(p::test))
        .route("/admin/prompts/{id}/render", post(p::render))
        .route("/admin/prompts/{id}/reviews", get(p::reviews))
        .route("/admin/prompts/{id}/renders", get(p::renders))
        .route("/admin/prompts/{id}/stats", get(p::stats))
        .route(
            "/admin/prompts/{id}/labels",
            axum::routing::put(p::set_label),
        )
}

/// The Bedrock Runtime dialect.
fn bedrock_routes() -> Router<AppState> {
    Router::new()
        .route("/model/{model_id}/converse", post(bedrock::converse))
        .route(
            "/model/{model_id}/converse-stream",
            post(bedrock::converse_stream),
        )
        .route(
            "/model/{model_id}/count-tokens",
            post(bedrock::count_tokens),
        )
        .route("/model/{model_id}/invoke", post(bedrock::invoke))
        // Asynchronous invocation.
        .route(
            "/async-invoke",
            post(jobs::bedrock::start).get(jobs::bedrock::list),
        )
        .route("/async-invoke/{invocation_arn}", get(jobs::bedrock::get))
        .route(
            "/model/{model_id}/invoke-with-response-stream",
            post(bedrock::invoke_stream),
        )
        // ApplyGuardrail, and the guardrail control plane of the `bedrock` service.
        .route(
            "/guardrail/{id}/version/{version}/apply",
            post(crate::guardrails::apply),
        )
        .route(
            "/guardrails",
            post(crate::guardrails::create).get(crate::guardrails::list),
        )
        .route(
            "/guardrails/{id}",
            get(crate::guardrails::get)
                .put(crate::guardrails::update)
                .delete(crate::guardrails::delete)
                .post(crate::guardrails::create_version),
        )
}

/// `GET /admin/endpoints`: every endpoint's circuit breaker and health-check state.
async fn admin_endpoints(
    State(state): State<AppState>,
    axum::extract::Extension(ctx): axum::extract::Extension<CallContext>,
) -> Response {
    if let Err(e) = crate::auth::admin_allowed(
        &state,
        &ctx,
        "modelgate:GetEndpoints",
        "arn:modelgate:admin:::endpoints",
    ) {
        return OpenAiError(e).into_response();
    }
    Json(json!({ "endpoints": state.gateway.endpoint_status() })).into_response()
}

/// `GET /metrics`: the Prometheus text exposition.
async fn metrics(
    State(state): State<AppState>,
    axum::extract::Extension(ctx): axum::extract::Extension<CallContext>,
) -> Response {
    if state.metrics_protected {
        if let Err(e) = crate::auth::admin_allowed(
            &state,
            &ctx,
            "modelgate:GetMetrics",
            "arn:modelgate:admin:::metrics",
        ) {
            return OpenAiError(e).into_response();
        }
    }
    let Some(m) = &state.metrics else {
        return (StatusCode::NOT_FOUND, "metrics are not kept").into_response();
    };
    let body = m.render(&state.gateway.endpoint_status());
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<AppState>) -> Response {
    let models: Vec<String> = state
        .gateway
        .list()
        .into_iter()
        .map(|m: ModelInfo| m.id)
        .collect();
    let store = match &state.store_ready {
        Some(check) => check().await,
        None => Ok(()),
    };
    if let Err(e) = store {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "store_unavailable", "error": e, "models": models})),
        )
            .into_response();
    }
    if state.accepting.load(Ordering::SeqCst) && state.gateway.is_ready() {
        Json(json!({"status": "ready", "models": models})).into_response()
    } else {
        let status = if state.accepting.load(Ordering::SeqCst) {
            "loading"
        } else {
            "shutting_down"
        };
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": status, "models": models})),
        )
            .into_response()
    }
}

/// Unknown paths: answered in the dialect the path suggests.
pub(crate) async fn not_found(request: Request) -> Response {
    let path = request.uri().path().to_string();
    let e = Error::new(
        modelgate_types::ErrorKind::NotFound,
        format!("No route for {} {path}", request.method()),
    );
    match Dialect::for_path(&path) {
        // A Bedrock Runtime operation this gateway does not serve (yet): AWS's own code, so
        // AWS SDKs raise a named error rather than a bare 404.
        Dialect::Bedrock => BedrockError(e.with_code("UnknownOperationException")).into_response(),
        Dialect::AwsJson => {
            crate::errors::AwsJsonError(e.with_code("UnknownOperationException")).into_response()
        }
        Dialect::Anthropic => crate::errors::AnthropicError(e).into_response(),
        Dialect::OpenAi | Dialect::Modelgate => OpenAiError(e).into_response(),
    }
}

/// Make the call context of every request — request id (echoed as `x-request-id` and
/// `x-amzn-RequestId`), dialect, route, source address — and run the request inside its
/// tracing span. Model calls record their outcome (and so their access log line) in the
/// pipeline, a stream's at its end; every other request's outcome is recorded here. Bodies
/// and prompts are never logged.
async fn request_context(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| request.uri().path().to_string());
    let source = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    if let Some(m) = &state.metrics {
        m.started();
    }
    let traceparent = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok());
    // `POST /` with `X-Amz-Target` is an AWS JSON-protocol call: its errors (authentication
    // included) are AWS's.
    let dialect = if request.uri().path() == "/" && request.headers().contains_key("x-amz-target") {
        Dialect::AwsJson
    } else {
        Dialect::for_path(request.uri().path())
    };
    let mut ctx = CallContext::builder(dialect)
        .route(request.method().as_str(), route)
        .source(source)
        .traceparent(traceparent)
        .sample_ratio(state.trace_sample_ratio)
        .cache(CacheDirectives::from_headers(request.headers()));
    if let Some(routing) = state.gateway.routing() {
        if let Some(hints) = routing.hints_of(request.headers(), request.uri()) {
            ctx = ctx.routing(hints);
        }
    }
    let ctx = ctx.build();
    if let Some(h) = request.headers().get("x-modelgate-guardrail") {
        if state
            .gateway
            .guardrails()
            .is_some_and(|g| g.config().allow_header)
        {
            let value = h.to_str().unwrap_or_default();
            let (identifier, version) = value.split_once(':').unwrap_or((value, "DRAFT"));
            ctx.set_guardrail(modelgate_core::guardrails::GuardrailRequest {
                identifier: identifier.trim().to_string(),
                version: version.trim().to_string(),
                trace: modelgate_core::guardrails::TraceMode::Disabled,
                stream_mode: modelgate_core::guardrails::StreamMode::Sync,
                selected: None,
            });
        }
    }
    request.extensions_mut().insert(ctx.clone());
    let mut response = next.run(request).instrument(ctx.span().clone()).await;
    if let Ok(value) = HeaderValue::from_str(ctx.request_id()) {
        response.headers_mut().insert("x-request-id", value.clone());
        response.headers_mut().insert("x-amzn-RequestId", value);
    }
    if let Some(served) = ctx.served() {
        served_headers(&mut response, &served);
    }
    let error = response.extensions().get::<ErrorInfo>().cloned();
    record_plain(
        &ctx,
        state.gateway.sinks(),
        response.status().as_u16(),
        error,
    );
    response
}

/// Serve until SIGTERM/SIGINT, then stop accepting, let in-flight requests and streams finish
/// for up to `grace`, and return.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    grace: Duration,
) -> std::io::Result<()> {
    let accepting = Arc::clone(&state.accepting);
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        shutdown_signal().await;
        accepting.store(false, Ordering::SeqCst);
        tracing::info!(
            grace_s = grace.as_secs_f64(),
            "shutdown requested; draining in-flight requests"
        );
        let _ = started_tx.send(());
    };
    // TCP_NODELAY on every accepted connection: without it, Nagle's algorithm holds a small
    // write (a stream chunk) until the previous one is acknowledged, and the client delays
    // that acknowledgement by up to 40 ms, so streamed chunks arrive in bursts.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on a connection");
        }
    });
    let server = axum::serve(listener, app).with_graceful_shutdown(shutdown);
    let deadline = async move {
        if started_rx.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = server => result,
        () = deadline => {
            tracing::warn!("grace period over; closing the connections still open");
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
