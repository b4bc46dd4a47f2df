//! Rendering canonical errors in each caller's dialect — the one place per front door.
//!
//! OpenAI callers get `{"error":{"message","type","param","code"}}`; Bedrock callers get the
//! exception name in `x-amzn-ErrorType`, `{"message"}` and the status botocore's model gives
//! that exception; Anthropic callers get `{"type":"error","error":{…}}`. In every dialect an
//! error that says when to come back (an open circuit, a full queue, an upstream's own
//! `Retry-After`) carries a `Retry-After` header in whole seconds, and the error's
//! classification rides along on the response for the call's outcome.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use modelgate_types::{Error, ErrorKind};
use serde_json::json;

/// The OpenAI `type` for a kind.
pub fn openai_type(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Validation | ErrorKind::PayloadTooLarge | ErrorKind::NotFound => {
            "invalid_request_error"
        }
        ErrorKind::Unauthenticated => "authentication_error",
        ErrorKind::AccessDenied => "permission_error",
        ErrorKind::Throttling => "rate_limit_exceeded",
        ErrorKind::Timeout => "timeout",
        ErrorKind::ModelError | ErrorKind::Internal => "server_error",
        ErrorKind::ServiceUnavailable => "service_unavailable",
    }
}

/// The OpenAI error object for `e` (used in responses and in SSE error events).
pub fn openai_body(e: &Error) -> serde_json::Value {
    json!({
        "error": {
            "message": e.message,
            "type": openai_type(e.kind),
            "param": null,
            "code": e.code,
        }
    })
}

/// What every dialect adds to an error response: `Retry-After` (whole seconds, rounded up)
/// when the error says when to come back, and the classification for the access log.
fn finish(mut response: Response, e: &Error) -> Response {
    if let Some(wait) = e.retry_after {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(axum::http::header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
        .extensions_mut()
        .insert(modelgate_core::outcome::ErrorInfo::from(e));
    response
}

/// An error answered in the OpenAI dialect.
#[derive(Debug)]
pub struct OpenAiError(pub Error);

impl From<Error> for OpenAiError {
    fn from(e: Error) -> Self {
        Self(e)
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        finish(
            (status, axum::Json(openai_body(&self.0))).into_response(),
            &self.0,
        )
    }
}

/// The Bedrock exception name for a kind, as botocore's model names it.
pub fn bedrock_exception(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Validation | ErrorKind::PayloadTooLarge => "ValidationException",
        ErrorKind::Unauthenticated | ErrorKind::AccessDenied => "AccessDeniedException",
        ErrorKind::NotFound => "ResourceNotFoundException",
        ErrorKind::Timeout => "ModelTimeoutException",
        ErrorKind::ModelError => "ModelErrorException",
        ErrorKind::Throttling => "ThrottlingException",
        ErrorKind::Internal => "InternalServerException",
        ErrorKind::ServiceUnavailable => "ServiceUnavailableException",
    }
}

/// The status botocore's model gives the exception of `kind`.
fn bedrock_status(kind: ErrorKind) -> u16 {
    match kind {
        // AWS answers both with AccessDeniedException, which the model gives 403.
        ErrorKind::Unauthenticated | ErrorKind::AccessDenied => 403,
        other => other.status(),
    }
}

/// An error answered in the Bedrock Runtime dialect.
#[derive(Debug)]
pub struct BedrockError(pub Error);

impl From<Error> for BedrockError {
    fn from(e: Error) -> Self {
        Self(e)
    }
}

impl IntoResponse for BedrockError {
    fn into_response(self) -> Response {
        // A conflict (a guardrail name taken, a declared guardrail changed) is 409.
        let conflict = self.0.code == Some("ConflictException");
        let status = if conflict {
            StatusCode::CONFLICT
        } else {
            StatusCode::from_u16(bedrock_status(self.0.kind))
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        };
        let mut response =
            (status, axum::Json(json!({ "message": self.0.message }))).into_response();
        // Authentication failures carry AWS's specific exception (InvalidSignatureException, …),
        // and so does an operation the gateway does not serve (UnknownOperationException).
        let name = match (&self.0.kind, &self.0.code) {
            (ErrorKind::Unauthenticated, Some(code)) => HeaderValue::from_str(code)
                .unwrap_or(HeaderValue::from_static("AccessDeniedException")),
            (ErrorKind::NotFound, Some(code @ "UnknownOperationException")) => {
                HeaderValue::from_static(code)
            }
            _ if conflict => HeaderValue::from_static("ConflictException"),
            _ => HeaderValue::from_static(bedrock_exception(self.0.kind)),
        };
        response.headers_mut().insert("x-amzn-ErrorType", name);
        finish(response, &self.0)
    }
}

/// An error answered in the AWS JSON protocol (`POST /` with `X-Amz-Target`): the exception
/// name in `__type` and in `x-amzn-ErrorType`, `{"message"}`, 400 for the caller's errors.
#[derive(Debug)]
pub struct AwsJsonError(pub Error);

impl From<Error> for AwsJsonError {
    fn from(e: Error) -> Self {
        Self(e)
    }
}

/// An AWS JSON-protocol error response: `code` in `__type` and `x-amzn-ErrorType`.
pub fn aws_json_error(status: StatusCode, code: &str, message: &str) -> Response {
    let mut r = (
        status,
        axum::Json(json!({"__type": code, "message": message})),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(code) {
        r.headers_mut().insert("x-amzn-ErrorType", v);
    }
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/x-amz-json-1.0"),
    );
    r
}

impl IntoResponse for AwsJsonError {
    fn into_response(self) -> Response {
        let code = self.0.code.unwrap_or(match self.0.kind {
            ErrorKind::Unauthenticated => "UnrecognizedClientException",
            ErrorKind::NotFound => "UnknownOperationException",
            kind => bedrock_exception(kind),
        });
        let status = match self.0.kind {
            ErrorKind::AccessDenied => StatusCode::FORBIDDEN,
            ErrorKind::Throttling => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Internal | ErrorKind::ModelError => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        finish(aws_json_error(status, code, &self.0.message), &self.0)
    }
}

/// Anthropic's error `type` and status for a kind.
fn anthropic_kind(kind: ErrorKind) -> (&'static str, u16) {
    match kind {
        ErrorKind::Validation => ("invalid_request_error", 400),
        ErrorKind::Unauthenticated => ("authentication_error", 401),
        ErrorKind::AccessDenied => ("permission_error", 403),
        ErrorKind::NotFound => ("not_found_error", 404),
        ErrorKind::PayloadTooLarge => ("request_too_large", 413),
        ErrorKind::Throttling => ("rate_limit_error", 429),
        ErrorKind::Timeout => ("timeout_error", 504),
        ErrorKind::ModelError | ErrorKind::Internal => ("api_error", 500),
        ErrorKind::ServiceUnavailable => ("overloaded_error", 529),
    }
}

/// The Anthropic error object for `e` (responses and SSE `error` events).
pub fn anthropic_body(e: &Error) -> serde_json::Value {
    json!({"type": "error", "error": {"type": anthropic_kind(e.kind).0, "message": e.message}})
}

/// An error answered in the Anthropic dialect.
#[derive(Debug)]
pub struct AnthropicError(pub Error);

impl From<Error> for AnthropicError {
    fn from(e: Error) -> Self {
        Self(e)
    }
}

/// A handler's outcome: the answer, or the error rendered in dialect `D`.
pub fn respond<D: From<Error> + IntoResponse>(result: Result<Response, Error>) -> Response {
    result.unwrap_or_else(|e| D::from(e).into_response())
}

impl IntoResponse for AnthropicError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(anthropic_kind(self.0.kind).1)
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        finish(
            (status, axum::Json(anthropic_body(&self.0))).into_response(),
            &self.0,
        )
    }
}

/// Map a body-extraction failure (too large, unreadable) to a canonical error.
pub fn body_rejection(rejection: axum::extract::rejection::BytesRejection, limit: usize) -> Error {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Error::new(
            ErrorKind::PayloadTooLarge,
            format!("The request body exceeds the limit of {limit} bytes."),
        )
        .with_code("request_too_large")
    } else {
        Error::validation(format!("The request body could not be read: {rejection}"))
    }
}

/// AWS's `ValidationException` message for a member that fails its constraint.
pub fn aws_constraint(value: &str, member: &str, rule: &str) -> Error {
    Error::validation(format!(
        "1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: {rule}"
    ))
}

/// [`aws_constraint`] for a member outside its enum.
pub fn aws_enum(value: &str, member: &str, allowed: &[&str]) -> Error {
    aws_constraint(
        value,
        member,
        &format!(
            "Member must satisfy enum value set: [{}]",
            allowed.join(", ")
        ),
    )
}

/// Map a JSON parse failure to a canonical validation error naming the problem.
pub fn json_error(e: &impl std::fmt::Display) -> Error {
    Error::validation(format!("The request body is not valid: {e}")).with_code("invalid_json")
}

/// A request body that does not parse: where (the field path, as `messages[2].content[0].text`)
/// and why.
#[derive(Debug)]
pub struct BodyError {
    path: String,
    inner: serde_json::Error,
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() || self.path == "." {
            write!(f, "{}", self.inner)
        } else {
            write!(f, "{}: {}", self.path, self.inner)
        }
    }
}

/// Parse a JSON body; a failure names the field it is about. The path is tracked only when
/// the plain parse failed, so a good request pays nothing for it.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, BodyError> {
    serde_json::from_slice(body).map_err(|plain| {
        let mut de = serde_json::Deserializer::from_slice(body);
        match serde_path_to_error::deserialize::<_, T>(&mut de) {
            Err(e) => BodyError {
                path: e.path().to_string(),
                inner: e.into_inner(),
            },
            Ok(_) => BodyError {
                path: String::new(),
                inner: plain,
            },
        }
    })
}

#[cfg(test)]
mod body_tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        #[allow(dead_code)]
        messages: Vec<modelgate_types::Message>,
        #[serde(default, rename = "inferenceConfig")]
        #[allow(dead_code)]
        inference: Option<modelgate_types::InferenceConfig>,
    }

    #[test]
    fn a_body_that_does_not_parse_names_the_field() {
        let bad_type = br#"{"messages": [], "inferenceConfig": {"temperature": "hot"}}"#;
        let e = parse_body::<Body>(bad_type).unwrap_err().to_string();
        assert!(
            e.starts_with("inferenceConfig.temperature: invalid type: string \"hot\""),
            "{e}"
        );
        let nested = br#"{"messages": [{"role": "user", "content": [{"text": 5}]}]}"#;
        let e = parse_body::<Body>(nested).unwrap_err().to_string();
        assert!(
            e.starts_with("messages[0].content[0].text: invalid type"),
            "{e}"
        );
        let unknown = br#"{"messages": [], "temprature": 1}"#;
        let e = parse_body::<Body>(unknown).unwrap_err().to_string();
        assert!(e.contains("unknown field `temprature`"), "{e}");
        let not_json = b"{not json";
        let e = parse_body::<Body>(not_json).unwrap_err().to_string();
        assert!(e.contains("key must be a string"), "{e}");
        assert!(parse_body::<Body>(br#"{"messages": []}"#).is_ok());
    }
}
