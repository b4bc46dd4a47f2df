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
use modelgate_core::outcome::{record_plain, ErrorInfo};
use modelgate_core::{CallContext, Dialect, Gateway, ModelInfo, ServedBy};
use modelgate_types::Error;
use serde_json::json;
use tracing::Instrument as _;

use crate::errors::{BedrockError, OpenAiError};
use crate::{anthropic, bedrock, openai};

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
    /// SigV4 verification of Bedrock callers; `None` serves unsigned calls.
    pub sigv4: Option<Arc<crate::sigv4::Verifier>>,
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
}

/// Build the router with every front door.
pub fn router(state: AppState) -> Router {
    let limit = state.max_body_bytes;
    Router::new()
        // Health.
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/admin/endpoints", get(admin_endpoints))
        // OpenAI dialect.
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/models", get(openai::list_models))
        .route("/v1/models/{id}", get(openai::get_model))
        // Anthropic dialect.
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
        .merge(bedrock_routes(state.clone()))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            request_context,
        ))
        .with_state(state)
}

/// The Bedrock Runtime dialect, behind SigV4 verification when credentials are configured.
fn bedrock_routes(state: AppState) -> Router<AppState> {
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
        .route(
            "/model/{model_id}/invoke-with-response-stream",
            post(bedrock::invoke_stream),
        )
        .route_layer(axum::middleware::from_fn_with_state(state, require_sigv4))
}

/// Verify the caller's SigV4 signature before a Bedrock handler runs. The body is read here
/// (its hash is part of the signature) and handed on unchanged.
async fn require_sigv4(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(verifier) = state.sigv4.clone() else {
        return next.run(request).await;
    };
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, state.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return BedrockError(Error::new(
                modelgate_types::ErrorKind::PayloadTooLarge,
                format!(
                    "The request body exceeds the limit of {} bytes.",
                    state.max_body_bytes
                ),
            ))
            .into_response()
        }
    };
    match verifier.verify(
        &parts.method,
        &parts.uri,
        &parts.headers,
        &bytes,
        std::time::SystemTime::now(),
    ) {
        Ok(()) => {
            next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await
        }
        Err(e) => {
            tracing::warn!(code = ?e.code, "rejected a Bedrock call: bad SigV4 signature");
            BedrockError(e).into_response()
        }
    }
}

/// `GET /admin/endpoints`: every endpoint's circuit breaker and health-check state.
async fn admin_endpoints(State(state): State<AppState>) -> Response {
    Json(json!({ "endpoints": state.gateway.endpoint_status() })).into_response()
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
async fn not_found(request: Request) -> Response {
    let path = request.uri().path().to_string();
    let e = Error::new(
        modelgate_types::ErrorKind::NotFound,
        format!("No route for {} {path}", request.method()),
    );
    match Dialect::for_path(&path) {
        Dialect::Bedrock => BedrockError(e).into_response(),
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
    let ctx = CallContext::builder(Dialect::for_path(request.uri().path()))
        .route(request.method().as_str(), route)
        .source(source)
        .build();
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
