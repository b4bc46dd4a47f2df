//! The call context: what the gateway knows about a call before it looks at the body.
//!
//! Made once per HTTP request by the server's middleware (request id, dialect, route, source
//! address, receive time, deadline, principal) and handed to every pipeline stage. It carries
//! the request's `tracing` span, so every log line written while the call runs — the gateway's
//! own warnings included — names the request id.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use tokio::time::Instant;

use crate::pipeline::ServedBy;

/// The API dialect a call came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    /// The OpenAI API (`/v1/chat/completions`, `/v1/embeddings`, …).
    OpenAi,
    /// The Anthropic Messages API (`/v1/messages`).
    Anthropic,
    /// The AWS Bedrock Runtime API (`/model/{id}/…`).
    Bedrock,
    /// Modelgate's own endpoints (health, admin) and calls made from inside (the CLI, tests).
    Modelgate,
}

impl Dialect {
    /// The dialect a request path belongs to.
    pub fn for_path(path: &str) -> Self {
        if path.starts_with("/model/") {
            Dialect::Bedrock
        } else if path.starts_with("/v1/messages") {
            Dialect::Anthropic
        } else if path.starts_with("/v1/") {
            Dialect::OpenAi
        } else {
            Dialect::Modelgate
        }
    }

    /// The name used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::OpenAi => "openai",
            Dialect::Anthropic => "anthropic",
            Dialect::Bedrock => "bedrock",
            Dialect::Modelgate => "modelgate",
        }
    }
}

/// Who is calling. Filled by the server's authentication middleware; `None` when the gateway
/// is embedded without authentication.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The key id, access key id, JWT subject, `admin` or `anonymous` (never a secret).
    pub id: String,
    /// The caller's team, when it has one.
    pub team: Option<String>,
    /// Whether the caller may use the admin API without a policy check.
    pub admin: bool,
    /// What the caller may do: policies, tags, limits, budgets.
    pub grants: std::sync::Arc<crate::access::Grants>,
}

impl Principal {
    /// A caller with full access (open loopback gateway, bootstrap admin, static SigV4 keys).
    pub fn unrestricted(id: impl Into<String>, admin: bool) -> Self {
        Self {
            id: id.into(),
            team: None,
            admin,
            grants: std::sync::Arc::new(crate::access::Grants::unrestricted()),
        }
    }
}

/// What the gateway knows about a call before it reads the body. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct CallContext(Arc<Inner>);

struct Inner {
    request_id: String,
    dialect: Dialect,
    method: String,
    route: String,
    source: Option<SocketAddr>,
    received: Instant,
    received_at: SystemTime,
    deadline: Option<Instant>,
    principal: OnceLock<Principal>,
    span: tracing::Span,
    outcome_recorded: AtomicBool,
    served: Mutex<Option<ServedBy>>,
}

impl std::fmt::Debug for CallContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallContext")
            .field("request_id", &self.0.request_id)
            .field("dialect", &self.0.dialect)
            .field("route", &self.0.route)
            .finish_non_exhaustive()
    }
}

/// Builds a [`CallContext`].
#[derive(Debug)]
pub struct CallContextBuilder {
    request_id: String,
    dialect: Dialect,
    method: String,
    route: String,
    source: Option<SocketAddr>,
    deadline: Option<Instant>,
}

impl CallContextBuilder {
    /// The HTTP method and matched route (e.g. `POST /model/{model_id}/converse`).
    pub fn route(mut self, method: impl Into<String>, route: impl Into<String>) -> Self {
        self.method = method.into();
        self.route = route.into();
        self
    }

    /// The client's address.
    pub fn source(mut self, source: Option<SocketAddr>) -> Self {
        self.source = source;
        self
    }

    /// A deadline for the whole call, earlier than the model's own total timeout.
    pub fn deadline(mut self, deadline: Option<Instant>) -> Self {
        self.deadline = deadline;
        self
    }

    /// The context, with its tracing span opened.
    pub fn build(self) -> CallContext {
        let span = tracing::info_span!(
            "request",
            id = %self.request_id,
            dialect = self.dialect.as_str(),
        );
        CallContext(Arc::new(Inner {
            request_id: self.request_id,
            dialect: self.dialect,
            method: self.method,
            route: self.route,
            source: self.source,
            received: Instant::now(),
            received_at: SystemTime::now(),
            deadline: self.deadline,
            principal: OnceLock::new(),
            span,
            outcome_recorded: AtomicBool::new(false),
            served: Mutex::new(None),
        }))
    }
}

impl CallContext {
    /// Start a context for a call in `dialect` with a fresh request id.
    pub fn builder(dialect: Dialect) -> CallContextBuilder {
        Self::builder_with_id(dialect, uuid_v4())
    }

    /// Start a context with a given request id.
    pub fn builder_with_id(dialect: Dialect, request_id: String) -> CallContextBuilder {
        CallContextBuilder {
            request_id,
            dialect,
            method: String::new(),
            route: String::new(),
            source: None,
            deadline: None,
        }
    }

    /// A context for a call made from inside the process (the CLI, tests).
    pub fn internal() -> Self {
        Self::builder(Dialect::Modelgate).build()
    }

    /// The request id (`x-request-id`).
    pub fn request_id(&self) -> &str {
        &self.0.request_id
    }

    /// The dialect the call came in.
    pub fn dialect(&self) -> Dialect {
        self.0.dialect
    }

    /// The HTTP method.
    pub fn method(&self) -> &str {
        &self.0.method
    }

    /// The matched route.
    pub fn route(&self) -> &str {
        &self.0.route
    }

    /// The client's address.
    pub fn source(&self) -> Option<SocketAddr> {
        self.0.source
    }

    /// When the gateway received the call.
    pub fn received(&self) -> Instant {
        self.0.received
    }

    /// The wall-clock time the call was received.
    pub fn received_at(&self) -> SystemTime {
        self.0.received_at
    }

    /// The caller's own deadline, when they gave one.
    pub fn deadline(&self) -> Option<Instant> {
        self.0.deadline
    }

    /// The authenticated caller.
    pub fn principal(&self) -> Option<&Principal> {
        self.0.principal.get()
    }

    /// Record who is calling (once; the authentication layer does this).
    pub fn set_principal(&self, principal: Principal) {
        let _ = self.0.principal.set(principal);
    }

    /// The call's tracing span.
    pub fn span(&self) -> &tracing::Span {
        &self.0.span
    }

    /// Mark that the call's outcome has been (or will be) recorded by the pipeline, so the
    /// HTTP layer does not write a second one. Returns whether it was already marked.
    pub fn claim_outcome(&self) -> bool {
        self.0.outcome_recorded.swap(true, Ordering::SeqCst)
    }

    /// Record how the call was served (the pipeline does, success or failure), so the HTTP
    /// layer can say it in the response headers.
    pub fn set_served(&self, served: ServedBy) {
        *crate::registry::lock(&self.0.served) = Some(served);
    }

    /// How the call was served, once the pipeline has run it.
    pub fn served(&self) -> Option<ServedBy> {
        crate::registry::lock(&self.0.served).clone()
    }

    /// Whether the pipeline took the call's outcome.
    pub fn outcome_claimed(&self) -> bool {
        self.0.outcome_recorded.load(Ordering::SeqCst)
    }
}

fn uuid_v4() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialect_from_path() {
        assert_eq!(Dialect::for_path("/model/x/converse"), Dialect::Bedrock);
        assert_eq!(Dialect::for_path("/v1/messages"), Dialect::Anthropic);
        assert_eq!(
            Dialect::for_path("/v1/messages/count_tokens"),
            Dialect::Anthropic
        );
        assert_eq!(Dialect::for_path("/v1/chat/completions"), Dialect::OpenAi);
        assert_eq!(Dialect::for_path("/healthz"), Dialect::Modelgate);
    }

    #[test]
    fn request_ids_are_uuids_and_the_outcome_is_claimed_once() {
        let ctx = CallContext::internal();
        let id = ctx.request_id();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert_ne!(id, CallContext::internal().request_id());
        assert!(!ctx.claim_outcome());
        assert!(ctx.claim_outcome());
    }
}
