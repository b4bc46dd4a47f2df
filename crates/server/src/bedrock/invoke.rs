//! `POST /model/{modelId}/invoke` and `/invoke-with-response-stream`: model-native bodies.
//!
//! The body's format is detected (`crate::native::detect`), parsed into a canonical request,
//! served by whichever provider serves the model, and rendered back in the same format.
//! InvokeModel answers with the native JSON plus Bedrock's `X-Amzn-Bedrock-Input-Token-Count`,
//! `-Output-Token-Count` and `-Invocation-Latency` headers; the streaming operation sends one
//! `chunk` event per native chunk, `{"bytes": base64(chunk JSON)}`, the last one carrying
//! `amazon-bedrock-invocationMetrics`.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use modelgate_core::config::NativeFormat;
use modelgate_core::guardrails::{GuardrailRequest, StreamMode, TraceMode};
use modelgate_core::model_id;
use modelgate_core::CallContext;
use modelgate_types::{ChatRequest, Error};
use serde_json::Value;

use super::{eventstream, respond};
use crate::app::AppState;
use crate::errors::body_rejection;
use crate::native::{self, Chunker, Invocation};

/// `Content-Type` and `Accept` must be JSON (or absent, which means JSON), as the model says.
fn check_media_types(headers: &HeaderMap, streaming: bool) -> Result<(), Error> {
    let value = |name: header::HeaderName| {
        headers.get(name).and_then(|v| v.to_str().ok()).map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
    };
    if let Some(ct) = value(header::CONTENT_TYPE) {
        if ct != "application/json" {
            return Err(Error::validation(format!(
                "The provided Content-Type '{ct}' is not supported; use application/json."
            )));
        }
    }
    let accept_header = if streaming {
        header::HeaderName::from_static("x-amzn-bedrock-accept")
    } else {
        header::ACCEPT
    };
    if let Some(accept) = value(accept_header) {
        if !matches!(
            accept.as_str(),
            "application/json" | "*/*" | "application/*"
        ) {
            return Err(Error::validation(format!(
                "The provided Accept type '{accept}' is not supported; use application/json."
            )));
        }
    }
    Ok(())
}

fn json_body(body: &[u8]) -> Result<Value, Error> {
    if body.is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| native::invalid(format!("the body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(native::invalid("the body must be a JSON object"));
    }
    Ok(value)
}

/// Parse a native body for `requested`: the format and what it asks for.
pub(crate) fn invocation(
    state: &AppState,
    requested: &str,
    body: &[u8],
) -> Result<(NativeFormat, Invocation), Error> {
    let value = json_body(body)?;
    let info = state.gateway.resolve(requested)?;
    let format = native::detect(requested, &info, &value)?;
    let invocation = native::parse(format, requested.to_string(), value)?;
    Ok((format, invocation))
}

/// The chat request a native body makes (for CountTokens' `invokeModel` input).
pub(super) fn chat_request(
    state: &AppState,
    requested: &str,
    body: &[u8],
) -> Result<ChatRequest, Error> {
    match invocation(state, requested, body)? {
        (_, Invocation::Chat(request)) => Ok(*request),
        (_, Invocation::Embed(..)) => Err(Error::validation(
            "CountTokens counts the input of text-generation models; this is an embedding model.",
        )),
    }
}

/// The model name Anthropic-format answers carry: the id without ARN or profile prefix.
fn display_model(requested: &str) -> &str {
    model_id::without_profile_prefix(model_id::arn_resource(requested).unwrap_or(requested))
}

/// The guardrail InvokeModel asks for in its headers (`X-Amzn-Bedrock-GuardrailIdentifier`,
/// `-GuardrailVersion`, `-Trace`): both or neither.
fn guardrail_headers(
    state: &AppState,
    ctx: &CallContext,
    headers: &HeaderMap,
) -> Result<(), Error> {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let (id, version) = (
        get("x-amzn-bedrock-guardrailidentifier"),
        get("x-amzn-bedrock-guardrailversion"),
    );
    let (id, version) = match (id, version) {
        (None, None) => return Ok(()),
        (Some(i), Some(v)) => (i, v),
        _ => return Err(Error::validation(
            "X-Amzn-Bedrock-GuardrailIdentifier and X-Amzn-Bedrock-GuardrailVersion go together.",
        )),
    };
    if state.gateway.guardrails().is_none() {
        return Err(Error::validation(
            "This gateway has no guardrails configured; the guardrail headers cannot be honoured.",
        ));
    }
    modelgate_core::guardrails::parse_version(version)?;
    let trace = match get("x-amzn-bedrock-trace") {
        None => TraceMode::Disabled,
        Some(t) => TraceMode::parse(t).ok_or_else(|| {
            crate::errors::aws_enum(t, "trace", &["ENABLED", "DISABLED", "ENABLED_FULL"])
        })?,
    };
    ctx.set_guardrail(GuardrailRequest {
        identifier: id.to_string(),
        version: version.to_string(),
        trace,
        stream_mode: StreamMode::Sync,
        selected: None,
    });
    Ok(())
}

/// `POST /model/{modelId}/invoke`
pub async fn invoke(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Path(model_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    respond(
        async {
            check_media_types(&headers, false)?;
            guardrail_headers(&state, &ctx, &headers)?;
            let body = body.map_err(|r| body_rejection(r, state.max_body_bytes))?;
            let (format, invocation) = invocation(&state, &model_id, &body)?;
            let (json, input, output) = match invocation {
                Invocation::Chat(request) => {
                    let r = state.gateway.converse(&ctx, *request).await?.value;
                    let mut json = native::chat_response(format, display_model(&model_id), &r);
                    // Bedrock's guardrail members of a native body.
                    if ctx.guardrail_request().is_some() {
                        let intervened =
                            r.stop_reason == modelgate_types::StopReason::GuardrailIntervened;
                        json["amazon-bedrock-guardrailAction"] =
                            serde_json::json!(if intervened { "INTERVENED" } else { "NONE" });
                        if let Some(trace) = ctx.guardrail_trace() {
                            json["amazon-bedrock-trace"] =
                                serde_json::json!({ "guardrail": trace });
                        }
                    }
                    (json, r.usage.input_tokens, Some(r.usage.output_tokens))
                }
                Invocation::Embed(request, shape) => {
                    let r = state.gateway.embed(&ctx, request).await?;
                    (native::embed::response(&shape, &r)?, r.input_tokens, None)
                }
            };
            let mut response = (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                json.to_string(),
            )
                .into_response();
            let h = response.headers_mut();
            h.insert("x-amzn-bedrock-input-token-count", HeaderValue::from(input));
            if let Some(output) = output {
                h.insert(
                    "x-amzn-bedrock-output-token-count",
                    HeaderValue::from(output),
                );
            }
            let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            h.insert(
                "x-amzn-bedrock-invocation-latency",
                HeaderValue::from(latency_ms),
            );
            Ok(response)
        }
        .await,
    )
}

/// `POST /model/{modelId}/invoke-with-response-stream`
pub async fn invoke_stream(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Path(model_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(
        async {
            check_media_types(&headers, true)?;
            guardrail_headers(&state, &ctx, &headers)?;
            let body = body.map_err(|r| body_rejection(r, state.max_body_bytes))?;
            let (format, invocation) = invocation(&state, &model_id, &body)?;
            let Invocation::Chat(request) = invocation else {
                return Err(Error::validation(
                    "The model is unsupported for streaming: embedding models answer with InvokeModel.",
                ));
            };
            let events = state.gateway.converse_stream(&ctx, *request).await?.value;
            let mut chunker = Chunker::new(format, display_model(&model_id));
            let body = eventstream::body(
                eventstream::Operation::InvokeWithResponseStream,
                events,
                move |event| {
                    chunker
                        .map(event)
                        .iter()
                        .map(eventstream::chunk_event)
                        .collect()
                },
            );
            Ok(crate::streaming::response(
                eventstream::CONTENT_TYPE,
                &[(
                    header::HeaderName::from_static("x-amzn-bedrock-content-type"),
                    "application/json",
                )],
                body,
            ))
        }
        .await,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        let mut h = HeaderMap::new();
        assert!(check_media_types(&h, false).is_ok());
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        assert!(check_media_types(&h, false).is_ok());
        h.insert(header::ACCEPT, HeaderValue::from_static("text/html"));
        assert_eq!(check_media_types(&h, false).unwrap_err().status(), 400);
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert_eq!(check_media_types(&h, true).unwrap_err().status(), 400);
    }

    #[test]
    fn bodies_must_be_json_objects() {
        assert!(json_body(b"").unwrap().is_object());
        assert_eq!(json_body(b"[1]").unwrap_err().status(), 400);
        assert_eq!(json_body(b"{\"a\":").unwrap_err().status(), 400);
    }

    #[test]
    fn display_model_strips_arn_and_profile() {
        assert_eq!(
            display_model("arn:aws:bedrock:us-east-1:1:inference-profile/us.anthropic.claude-3-haiku-20240307-v1:0"),
            "anthropic.claude-3-haiku-20240307-v1:0"
        );
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Every strict prefix of a valid body is refused with a 400; the whole body parses.
            #[test]
            fn truncated_bodies_are_400(cut in 0usize..400, which in 0usize..7) {
                let (format, body) = native::fuzz::valid_bodies().swap_remove(which);
                let text = body.to_string();
                let cut = cut.min(text.len());
                let result = json_body(&text.as_bytes()[..cut])
                    .and_then(|v| native::parse(format, "m".into(), v));
                if cut == text.len() {
                    prop_assert!(result.is_ok());
                } else {
                    prop_assert_eq!(result.err().map(|e| e.status()), Some(400));
                }
            }

            /// Arbitrary bytes are refused with a 400, never a panic.
            #[test]
            fn random_bytes_are_400(bytes in prop::collection::vec(any::<u8>(), 0..256), which in 0usize..7) {
                let (format, _) = native::fuzz::valid_bodies().swap_remove(which);
                if let Err(e) = json_body(&bytes).and_then(|v| native::parse(format, "m".into(), v)) {
                    prop_assert_eq!(e.status(), 400);
                }
            }
        }
    }
}
