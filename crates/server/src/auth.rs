//! Authentication on every door and the admin API: `Authorization: Bearer` and `x-api-key`
//! (OpenAI and Anthropic clients, the admin API), SigV4 (AWS SDKs: static `[[auth.sigv4]]`
//! pairs and the pairs issued with each key), and the bootstrap admin credential. The caller
//! found goes into the call context as its principal; the pipeline's policy layers read it
//! from there.
//!
//! With no credentials configured and a loopback listen address the gateway is open (local
//! use); otherwise a call without valid credentials gets 401 (403 with AWS's exception names
//! for Bedrock callers). A key store that cannot be reached fails closed with 503.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use modelgate_core::access::{Audit, Grants};
use modelgate_core::keys::{now_ms, KeyService, ResolvedKey};
use modelgate_core::{CallContext, Dialect, Principal};
use modelgate_store::AuditEvent;
use modelgate_types::{Error, ErrorKind};
use subtle::ConstantTimeEq;

use crate::app::AppState;
use crate::errors::{AnthropicError, BedrockError, OpenAiError};

/// Who may call, and how they prove it.
pub struct Auth {
    /// Issued keys (absent when the gateway runs without a store, in some tests).
    pub keys: Option<Arc<KeyService>>,
    /// The bootstrap admin credential.
    pub admin_key: Option<String>,
    /// Static SigV4 credentials (`[[auth.sigv4]]`).
    pub sigv4: Option<crate::sigv4::Verifier>,
    /// Serve callers without credentials (local use, or `auth.mode = "none"`).
    pub open: AtomicBool,
    /// JWTs from an OIDC issuer.
    pub jwt: Option<crate::jwt::JwtVerifier>,
    /// Audit log of refused authentications.
    pub audit: Audit,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("open", &self.open.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// Open access, no keys: what tests and embedding applications get by default.
    pub fn open() -> Self {
        Self {
            keys: None,
            admin_key: None,
            sigv4: None,
            open: AtomicBool::new(true),
            jwt: None,
            audit: Audit::default(),
        }
    }

    /// Static SigV4 credentials only. As in the server, they are credentials: every caller
    /// must present one.
    pub fn sigv4_only(verifier: crate::sigv4::Verifier) -> Self {
        Self {
            sigv4: Some(verifier),
            open: AtomicBool::new(false),
            ..Self::open()
        }
    }

    /// The gateway now has credentials: stop serving anonymous callers.
    pub fn close(&self) {
        self.open.store(false, Ordering::SeqCst);
    }
}

/// The principal of a resolved key.
pub fn principal_of(key: &ResolvedKey) -> Principal {
    Principal {
        id: key.record.id.clone(),
        team: key.record.team.clone(),
        admin: false,
        grants: Arc::new(Grants::of_key(key)),
    }
}

/// Render an authentication error in the dialect of the door.
pub fn render(dialect: Dialect, e: Error) -> Response {
    match dialect {
        Dialect::Bedrock => BedrockError(e).into_response(),
        Dialect::AwsJson => crate::errors::AwsJsonError(e).into_response(),
        Dialect::Anthropic => AnthropicError(e).into_response(),
        Dialect::OpenAi | Dialect::Modelgate => OpenAiError(e).into_response(),
    }
}

fn unauthenticated(dialect: Dialect, message: &str) -> Error {
    let e = Error::refusal(ErrorKind::Unauthenticated, message);
    match dialect {
        Dialect::Bedrock | Dialect::AwsJson => e.with_code("UnrecognizedClientException"),
        _ => e.with_code("invalid_api_key"),
    }
}

fn store_down(e: &impl std::fmt::Display) -> Error {
    Error::refusal(
        ErrorKind::ServiceUnavailable,
        format!("The credential store is unavailable, so the caller cannot be authenticated: {e}"),
    )
}

/// The bearer token of a request: `Authorization: Bearer …` or `x-api-key`.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.trim());
    }
    let v = headers.get("authorization")?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Paths that never need credentials: probes, the API description (client generators fetch
/// it before they have a key), inbound webhooks (signed) and, unless protected, the metrics.
fn is_public(path: &str, metrics_protected: bool) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/openapi.json")
        || (path == "/metrics" && !metrics_protected)
        // Inbound webhooks: the sender's signature is the credential (checked by the hook).
        || path.starts_with("/hooks/")
}

/// The middleware: find the caller and put it in the call context, or refuse.
pub async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if is_public(request.uri().path(), state.metrics_protected) {
        return next.run(request).await;
    }
    let Some(ctx) = request.extensions().get::<CallContext>().cloned() else {
        return next.run(request).await;
    };
    // A job's call, sent by the workers: it runs as the principal that submitted it.
    if let Some(run) = request.extensions().get::<crate::jobs::JobRun>() {
        ctx.set_principal(run.principal.clone());
        return next.run(request).await;
    }
    let dialect = ctx.dialect();
    let auth = Arc::clone(&state.auth);
    let is_sigv4 = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("AWS4-HMAC-SHA256"));
    let e = if is_sigv4 {
        match sigv4(&state, &auth, request).await {
            Ok((p, request)) => {
                ctx.set_principal(p);
                return next.run(request).await;
            }
            Err(e) => e,
        }
    } else {
        match identify(&auth, request.headers(), dialect).await {
            Ok(p) => {
                ctx.set_principal(p);
                return next.run(request).await;
            }
            Err(e) => e,
        }
    };
    if e.kind == ErrorKind::Unauthenticated {
        auth.audit.record(AuditEvent {
            ts_ms: now_ms(),
            actor: "anonymous".into(),
            action: "modelgate:Authenticate".into(),
            resource: ctx.route().to_string(),
            decision: "deny".into(),
            statement: None,
            source_ip: ctx.source().map(|s| s.ip().to_string()),
            request_id: Some(ctx.request_id().to_string()),
            detail: serde_json::json!({"reason": e.message}),
        });
    }
    render(dialect, e)
}

/// A bearer token, the admin credential, or nothing (open gateway).
async fn identify(auth: &Auth, headers: &HeaderMap, dialect: Dialect) -> Result<Principal, Error> {
    let Some(token) = bearer(headers) else {
        if auth.open.load(Ordering::Relaxed) {
            return Ok(Principal::unrestricted("anonymous", true));
        }
        let message = match dialect {
            Dialect::Bedrock | Dialect::AwsJson => "Missing Authentication Token",
            Dialect::Anthropic => "x-api-key header is required",
            _ => "You didn't provide an API key. Provide it in the Authorization header (Bearer) or x-api-key.",
        };
        let e = Error::refusal(ErrorKind::Unauthenticated, message);
        return Err(match dialect {
            Dialect::Bedrock | Dialect::AwsJson => {
                e.with_code("MissingAuthenticationTokenException")
            }
            _ => e.with_code("missing_api_key"),
        });
    };
    if let Some(admin) = &auth.admin_key {
        if bool::from(admin.as_bytes().ct_eq(token.as_bytes())) {
            return Ok(Principal::unrestricted("admin", true));
        }
    }
    if let Some(jwt) = &auth.jwt {
        if crate::jwt::looks_like_jwt(token) {
            return jwt.verify(token, auth.keys.as_ref()).await;
        }
    }
    let Some(keys) = &auth.keys else {
        if auth.open.load(Ordering::Relaxed) {
            return Ok(Principal::unrestricted("anonymous", true));
        }
        return Err(unauthenticated(dialect, "Invalid API key."));
    };
    match keys.authenticate(token).await {
        Ok(Some(key)) => {
            if let Some(why) = key.unusable(now_ms()) {
                return Err(unauthenticated(dialect, why));
            }
            Ok(principal_of(&key))
        }
        // An open gateway ignores the placeholder keys SDKs insist on sending.
        Ok(None) if auth.open.load(Ordering::Relaxed) => {
            Ok(Principal::unrestricted("anonymous", true))
        }
        Ok(None) => Err(unauthenticated(dialect, "Invalid API key.")),
        Err(e) => Err(store_down(&e)),
    }
}

/// Verify a SigV4 signature (the body is read: its hash is signed) against a static or an
/// issued access key.
async fn sigv4(
    state: &AppState,
    auth: &Auth,
    request: Request,
) -> Result<(Principal, Request), Error> {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, state.max_body_bytes)
        .await
        .map_err(|_| {
            Error::new(
                ErrorKind::PayloadTooLarge,
                format!(
                    "The request body exceeds the limit of {} bytes.",
                    state.max_body_bytes
                ),
            )
        })?;
    let access_key = crate::sigv4::access_key_id(&parts.headers).map(str::to_string);
    let mut secret = None;
    let mut principal = None;
    if let Some(ak) = &access_key {
        if let Some(s) = auth.sigv4.as_ref().and_then(|v| v.secret(ak)) {
            secret = Some(s.to_string());
            principal = Some(Principal::unrestricted(ak.clone(), false));
        } else if let Some(keys) = &auth.keys {
            match keys.by_access_key(ak).await {
                Ok(Some(key)) => {
                    if let Some(why) = key.unusable(now_ms()) {
                        return Err(Error::refusal(ErrorKind::Unauthenticated, why)
                            .with_code("UnrecognizedClientException"));
                    }
                    secret = Some(keys.sigv4_secret(ak));
                    principal = Some(principal_of(&key));
                }
                Ok(None) => {}
                Err(e) => return Err(store_down(&e)),
            }
        }
    }
    if principal.is_none() && auth.sigv4.is_none() && auth.open.load(Ordering::Relaxed) {
        // An open gateway ignores the placeholder credentials AWS SDKs sign with.
        return Ok((
            Principal::unrestricted("anonymous", true),
            Request::from_parts(parts, axum::body::Body::from(bytes)),
        ));
    }
    crate::sigv4::verify_with(
        |_| secret,
        &parts.method,
        &parts.uri,
        &parts.headers,
        &bytes,
        std::time::SystemTime::now(),
    )
    .inspect_err(|e| tracing::warn!(code = ?e.code, "rejected a call: bad SigV4 signature"))?;
    let principal =
        principal.ok_or_else(|| Error::internal("a verified signature without a key"))?;
    Ok((
        principal,
        Request::from_parts(parts, axum::body::Body::from(bytes)),
    ))
}

/// Whether the caller of `ctx` may do the admin `action` on `resource`; audited either way.
/// An AWS control-plane action (guardrails, prompts): callers with full AWS-style credentials
/// (static SigV4 keys, an open loopback gateway) may use it as they would AWS's; keys with
/// policies need `action` allowed on `resource`.
pub fn aws_allowed(
    state: &AppState,
    ctx: &CallContext,
    action: &str,
    resource: &str,
) -> Result<(), Error> {
    if ctx.principal().is_none_or(|p| p.grants.unrestricted) {
        return Ok(());
    }
    admin_allowed(state, ctx, action, resource)
}

pub fn admin_allowed(
    state: &AppState,
    ctx: &CallContext,
    action: &str,
    resource: &str,
) -> Result<(), Error> {
    let Some(p) = ctx.principal() else {
        return Ok(());
    };
    let site = &state.site;
    let request = modelgate_core::policy::Request {
        actions: vec![action.to_string()],
        resource: resource.to_string(),
        context: Default::default(),
    };
    let request = modelgate_core::access::common_context(request, ctx, site);
    if p.grants.unrestricted && !p.admin {
        return Err(Error::refusal(
            ErrorKind::AccessDenied,
            format!("User: {} is not authorized to perform: {action} (static SigV4 credentials cannot use the admin API)", p.id),
        ));
    }
    if p.admin {
        state.auth.audit.record(AuditEvent {
            ts_ms: now_ms(),
            actor: p.id.clone(),
            action: action.to_string(),
            resource: resource.to_string(),
            decision: "allow".into(),
            statement: Some("admin".into()),
            source_ip: ctx.source().map(|s| s.ip().to_string()),
            request_id: Some(ctx.request_id().to_string()),
            detail: serde_json::Value::Null,
        });
        return Ok(());
    }
    modelgate_core::access::authorize(ctx, &request, &state.auth.audit)
}
