//! Typed errors that carry their own classification.
//!
//! Retry, circuit-breaker and fallback decisions read [`Error::kind`], [`Error::source`] and
//! [`Error::retryable`]; they never look at message text. Each front door renders an `Error` in
//! its own dialect in exactly one place.

use std::fmt;

/// Where an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorSource {
    /// The caller sent something wrong (bad JSON, unknown model, invalid parameter).
    Client,
    /// The model or upstream provider failed.
    Provider,
    /// Modelgate itself failed.
    Internal,
    /// Modelgate refused the call by policy (authentication, a rate limit or budget, a
    /// guardrail). Such a refusal says nothing about the model: it never feeds a circuit
    /// breaker, is never retried and never sends the call down a fallback chain.
    Gateway,
}

/// What went wrong, in the vocabulary shared by all dialects.
///
/// Each kind has one HTTP status; the Bedrock exception name and the OpenAI / Anthropic error
/// type are derived from it by the front doors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request is malformed or violates a constraint (400).
    Validation,
    /// No credentials, or credentials that are not valid (401).
    Unauthenticated,
    /// Authenticated but not allowed (403).
    AccessDenied,
    /// The model or resource does not exist (404).
    NotFound,
    /// The model took too long (408).
    Timeout,
    /// The request body is larger than the configured limit (413).
    PayloadTooLarge,
    /// The model returned an error while processing the request (424).
    ModelError,
    /// Too many requests: a rate limit, or the model's queue is full (429).
    Throttling,
    /// Something broke inside Modelgate (500).
    Internal,
    /// The model is not available right now (503), e.g. still loading or shutting down.
    ServiceUnavailable,
}

impl ErrorKind {
    /// The HTTP status this kind is answered with.
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::Validation => 400,
            ErrorKind::Unauthenticated => 401,
            ErrorKind::AccessDenied => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::Timeout => 408,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::ModelError => 424,
            ErrorKind::Throttling => 429,
            ErrorKind::Internal => 500,
            ErrorKind::ServiceUnavailable => 503,
        }
    }

    /// The kind's name in logs and metrics (`validation`, `throttling`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Validation => "validation",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::AccessDenied => "access_denied",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Timeout => "timeout",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::ModelError => "model_error",
            ErrorKind::Throttling => "throttling",
            ErrorKind::Internal => "internal",
            ErrorKind::ServiceUnavailable => "service_unavailable",
        }
    }

    /// Whether a request failing with this kind may succeed when sent again unchanged.
    pub fn default_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::Timeout
                | ErrorKind::Throttling
                | ErrorKind::Internal
                | ErrorKind::ServiceUnavailable
        )
    }

    /// The source this kind usually has.
    pub fn default_source(self) -> ErrorSource {
        match self {
            ErrorKind::Validation
            | ErrorKind::Unauthenticated
            | ErrorKind::AccessDenied
            | ErrorKind::NotFound
            | ErrorKind::PayloadTooLarge => ErrorSource::Client,
            ErrorKind::Timeout
            | ErrorKind::ModelError
            | ErrorKind::Throttling
            | ErrorKind::ServiceUnavailable => ErrorSource::Provider,
            ErrorKind::Internal => ErrorSource::Internal,
        }
    }
}

/// A classified error: kind, source, retryability and a message safe to show the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// What went wrong.
    pub kind: ErrorKind,
    /// Who is at fault.
    pub source: ErrorSource,
    /// Whether retrying the same request may succeed.
    pub retryable: bool,
    /// Human-readable message, shown to the caller. Never contains secrets or prompt text.
    pub message: String,
    /// A machine-readable code for dialects that have one (OpenAI `code`), e.g. `model_not_found`.
    pub code: Option<&'static str>,
    /// How long the provider asked callers to wait before retrying (`Retry-After`).
    pub retry_after: Option<std::time::Duration>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

// Written by hand: thiserror would take the `source` field for the error's cause.
impl std::error::Error for Error {}

impl Error {
    /// An error of `kind` with its default source and retryability.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            source: kind.default_source(),
            retryable: kind.default_retryable(),
            message: message.into(),
            code: None,
            retry_after: None,
        }
    }

    /// A 400 validation error.
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Validation, message)
    }

    /// A 404 for a model id nothing serves.
    pub fn model_not_found(model: &str) -> Self {
        Self::new(
            ErrorKind::NotFound,
            format!("The model '{model}' does not exist or is not served by this gateway."),
        )
        .with_code("model_not_found")
    }

    /// A 500 internal error.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// A refusal made by the gateway itself (a rate limit, a policy, a guardrail): never
    /// retried, never a breaker failure, never a reason to fall back.
    pub fn refusal(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            source: ErrorSource::Gateway,
            retryable: false,
            ..Self::new(kind, message)
        }
    }

    /// Whether the caller should see this error as it is, without retries or fallbacks: their
    /// own mistake, or the gateway's refusal.
    pub fn is_final(&self) -> bool {
        matches!(self.source, ErrorSource::Client | ErrorSource::Gateway)
    }

    /// Attach a machine-readable code.
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// The same error, blamed on the provider (an upstream's answer rather than the caller's
    /// request or Modelgate itself).
    pub fn from_provider(mut self) -> Self {
        self.source = ErrorSource::Provider;
        self
    }

    /// An error an upstream answered with: the provider is at fault unless the request itself
    /// was wrong (a validation error, an unknown model or resource, a body too large).
    pub fn upstream(kind: ErrorKind, message: impl Into<String>) -> Self {
        let e = Self::new(kind, message);
        match kind {
            ErrorKind::Validation | ErrorKind::NotFound | ErrorKind::PayloadTooLarge => e,
            _ => e.from_provider(),
        }
    }

    /// Attach the wait the provider asked for.
    pub fn with_retry_after(mut self, wait: Option<std::time::Duration>) -> Self {
        self.retry_after = wait;
        self
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> u16 {
        self.kind.status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_follows_kind() {
        let e = Error::new(ErrorKind::Throttling, "slow down");
        assert_eq!(e.status(), 429);
        assert!(e.retryable);
        assert_eq!(e.source, ErrorSource::Provider);
        let e = Error::validation("bad");
        assert_eq!(e.status(), 400);
        assert!(!e.retryable);
        assert_eq!(e.source, ErrorSource::Client);
        assert_eq!(Error::model_not_found("x").code, Some("model_not_found"));
        assert_eq!(
            Error::upstream(ErrorKind::AccessDenied, "key").source,
            ErrorSource::Provider
        );
        assert_eq!(
            Error::upstream(ErrorKind::Validation, "bad").source,
            ErrorSource::Client
        );
        let limit = Error::refusal(ErrorKind::Throttling, "rate limit");
        assert_eq!(limit.status(), 429);
        assert!(!limit.retryable && limit.is_final());
        assert!(!Error::new(ErrorKind::Throttling, "busy upstream").is_final());
    }
}
