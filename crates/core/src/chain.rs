//! Layer 5, the innermost service: the fallback chain, retries with backoff, the circuit
//! breaker and health-checked endpoint choice, and the provider call.
//!
//! For a chat, the chain walks the requested model and then its `fallbacks` in order. Each
//! model is skipped when the input cannot fit its context window; otherwise it gets up to
//! `retry.max_attempts` attempts, each on the next endpoint that is healthy and whose breaker
//! admits it (round robin), under the call's deadline (and, for streams, the first-token
//! timeout), waiting between attempts by exponential backoff with jitter or the upstream's
//! `Retry-After`, while the retry budget allows. A stream counts as answered once its first
//! output is in hand; after that a failure ends it with an error event (the stream observer
//! feeds that end to the breaker through the finisher registered here).
//!
//! Client errors and the gateway's own refusals ([`Error::is_final`]) are never retried,
//! never feed a breaker and never move the call down the chain. Embeddings get retries,
//! breakers and health checks but no fallback chain: another model's vectors live in a
//! different space.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use modelgate_providers::Provider;
use modelgate_types::{
    ChatRequest, ChatResponse, ContentBlock, Error, ErrorKind, StopReason, ToolResultContent,
};
use tokio::time::Instant;

use crate::outcome::{Attempt, ErrorInfo};
use crate::pipeline::{Answer, Call, Layer, Next, Operation, ServedBy};
use crate::registry::{lock, Endpoint, Entry, Registry};
use crate::stream::{open_stream, Opened};

/// The model chain (see the module docs).
pub(crate) struct Chain;

#[async_trait]
impl Layer for Chain {
    async fn call(&self, call: &mut Call, _next: Next<'_>) -> Result<Answer, Error> {
        let entry = call.entry()?;
        let registry = call
            .registry
            .clone()
            .ok_or_else(|| Error::internal("the call reached the model chain unrouted"))?;
        let deadline = call
            .deadline
            .unwrap_or_else(|| Instant::now() + entry.policy.timeouts.total);
        call.recorder.outcome().timeline.chain = Some(Instant::now());
        let trace = call.ctx.trace().clone();
        let mut tried = Tried {
            trace: &trace,
            stats: call.stats_config,
            served: std::mem::take(&mut call.served),
            attempts: Vec::new(),
        };
        let answer = self
            .run(call, &entry, &registry, deadline, &mut tried)
            .await;
        call.served = tried.served;
        call.recorder
            .outcome()
            .timeline
            .attempts
            .extend(tried.attempts);
        answer
    }
}

impl Chain {
    async fn run(
        &self,
        call: &mut Call,
        entry: &Arc<Entry>,
        registry: &Registry,
        deadline: Instant,
        tried: &mut Tried<'_>,
    ) -> Result<Answer, Error> {
        match &call.op {
            Operation::Converse(request) => {
                let walked = walk(
                    registry,
                    entry,
                    request,
                    deadline,
                    tried,
                    |r: &ChatResponse| r.stop_reason == StopReason::ContentFiltered,
                    |_, provider, request| async move { provider.converse(request).await },
                )
                .await;
                let (response, _, endpoint) = walked?;
                endpoint.record(None);
                call.provider = Some(endpoint.provider_name.clone());
                Ok(Answer::Response(response))
            }
            Operation::ConverseStream(request) => {
                let walked = walk(
                    registry,
                    entry,
                    request,
                    deadline,
                    tried,
                    Opened::refused,
                    |model, provider, request| {
                        let first_token = model.policy.timeouts.first_token;
                        async move { open_stream(provider, request, first_token).await }
                    },
                )
                .await;
                let (opened, model, endpoint) = walked?;
                call.provider = Some(endpoint.provider_name.clone());
                call.stream_limits.idle = Some(model.policy.timeouts.idle);
                call.stream_limits.deadline = Some(deadline);
                call.stream_limits.finish_cancelled = model.policy.finish_cancelled_streams;
                // The stream's end (not the client leaving) is the endpoint's verdict.
                call.recorder.on_finish(Box::new(move |f| {
                    if !f.outcome.cancelled {
                        endpoint.record(f.error);
                    }
                }));
                Ok(Answer::Stream(opened.into_stream()))
            }
            Operation::Embed(request) => {
                let call_embed = |provider: Arc<dyn Provider>| {
                    let request = request.clone();
                    async move { provider.embed(request).await }
                };
                let result = attempts(entry, deadline, tried, call_embed).await;
                match result {
                    Ok((response, endpoint, n)) => {
                        endpoint.record(None);
                        tried.served.attempts = n;
                        tried.served.served_by.clone_from(&entry.info.id);
                        call.provider = Some(endpoint.provider_name.clone());
                        Ok(Answer::Embeddings(response))
                    }
                    Err((error, n)) => {
                        tried.served.attempts = n;
                        Err(error)
                    }
                }
            }
            Operation::CountTokens(request) => {
                let endpoint = entry.pick()?;
                call.provider = Some(endpoint.provider_name.clone());
                tried.served.served_by.clone_from(&entry.info.id);
                let n = endpoint.provider.count_tokens(request).await?;
                Ok(Answer::Tokens(n))
            }
        }
    }
}

/// Walk the fallback chain of `entry` until a model answers; see the module docs. `refused`
/// tells a content-policy refusal among answers. What was tried is written into `tried.served`
/// whether the walk succeeds or not.
async fn walk<T, F, Fut>(
    registry: &Registry,
    entry: &Arc<Entry>,
    request: &ChatRequest,
    deadline: Instant,
    tried: &mut Tried<'_>,
    refused: fn(&T) -> bool,
    mut call: F,
) -> Result<(T, Arc<Entry>, Arc<Endpoint>), Error>
where
    F: FnMut(&Entry, Arc<dyn Provider>, ChatRequest) -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let fallbacks = entry.policy.fallbacks.iter().filter_map(|name| {
        let fallback = registry.get(name)?;
        let fits = fallback.check_capabilities(request);
        if let Err(e) = &fits {
            tracing::warn!(model = %entry.info.id, fallback = %name, reason = %e, "fallback skipped");
        }
        fits.ok().map(|()| fallback)
    });
    let chain: Vec<&Arc<Entry>> = std::iter::once(entry).chain(fallbacks).collect();
    let estimate = estimate_tokens(request);
    let mut last_error = None;
    for (i, model) in chain.iter().enumerate() {
        let last = i + 1 == chain.len();
        if Instant::now() >= deadline {
            tried.served.fallback_reason.get_or_insert("timeout");
            last_error = Some(total_timeout());
            break;
        }
        if let Some(window) = model.policy.context_window {
            if estimate > u64::from(window) {
                tried.served.fallback_reason.get_or_insert("context_window");
                last_error = Some(Error::validation(format!(
                    "The input (about {estimate} tokens with the requested output) does not fit the context window of the model '{}' ({window} tokens).",
                    model.info.id
                )).with_code("context_length_exceeded"));
                continue;
            }
        }
        // A fallback answers under its own name; the requested model takes the request as is.
        // What the model cannot take is left out (`Capabilities::fit`), and the answer names
        // it; what it would refuse was checked before the walk (fallbacks that would refuse
        // are skipped).
        let fit = match model.caps.fit(request) {
            Ok(fit) => fit,
            Err(e) => {
                last_error = Some(e);
                continue;
            }
        };
        let adapted;
        let req = if i == 0 && fit.is_empty() {
            request
        } else {
            let mut r = request.clone();
            r.model.clone_from(&model.info.id);
            fit.apply(&mut r);
            adapted = r;
            &adapted
        };
        let attempt = |provider| call(model, provider, req.clone());
        match attempts(model, deadline, tried, attempt).await {
            Ok((value, endpoint, n)) => {
                tried.served.attempts += n;
                if !last && entry.policy.fallback_on_content_policy && refused(&value) {
                    endpoint.record(None);
                    tried.served.fallback_reason.get_or_insert("content_policy");
                    continue;
                }
                tried.served.served_by.clone_from(&model.info.id);
                tried.served.dropped = fit.dropped();
                return Ok((value, Arc::clone(model), endpoint));
            }
            Err((error, n)) => {
                tried.served.attempts += n;
                let why = fallback_reason(&error, entry.policy.fallback_on_content_policy);
                tracing::warn!(
                    model = %model.info.id, kind = ?error.kind, status = error.status(),
                    attempts = n, fallback = ?why.filter(|_| !last), "model failed"
                );
                let Some(why) = why else {
                    return Err(error);
                };
                tried.served.fallback_reason.get_or_insert(why);
                last_error = Some(error);
            }
        }
    }
    Err(last_error.unwrap_or_else(total_timeout))
}

/// Up to `retry.max_attempts` attempts on `model`'s endpoints; see the module docs.
/// Failures feed the endpoints' breakers; the caller records the success.
async fn attempts<T, F, Fut>(
    model: &Entry,
    deadline: Instant,
    tried: &mut Tried<'_>,
    mut call: F,
) -> Result<(T, Arc<Endpoint>, u32), (Error, u32)>
where
    F: FnMut(Arc<dyn Provider>) -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let retry = &model.policy.retry;
    lock(&model.budget).deposit();
    let mut attempt = 0;
    loop {
        let endpoint = model.pick_with(tried.stats).map_err(|e| (e, attempt))?;
        attempt += 1;
        let span_id = crate::context::span_id();
        let traceparent = tried.trace.header_for(&span_id);
        let start = Instant::now();
        let measured = Arc::clone(&endpoint);
        let in_flight = (
            model.stats.begin(tried.stats),
            measured.stats.begin(tried.stats),
        );
        let pending = modelgate_providers::with_traceparent(
            traceparent,
            call(Arc::clone(&endpoint.provider)),
        );
        let result = match tokio::time::timeout_at(deadline, pending).await {
            Ok(result) => result,
            Err(_) => Err(total_timeout()),
        };
        // The caller's own mistakes and the gateway's refusals say nothing about the model.
        match &result {
            Err(e) if e.is_final() || e.source == modelgate_types::ErrorSource::Client => {
                drop(in_flight);
            }
            r => {
                in_flight.0.end(r.is_ok());
                in_flight.1.end(r.is_ok());
            }
        }
        tried.attempts.push(Attempt {
            span_id,
            model: model.info.id.clone(),
            provider: endpoint.provider_name.clone(),
            system: endpoint.provider.system(),
            start,
            end: Instant::now(),
            error: result.as_ref().err().map(ErrorInfo::from),
            status: result.as_ref().err().map(Error::status),
        });
        let error = match result {
            Ok(value) => return Ok((value, endpoint, attempt)),
            Err(e) => e,
        };
        endpoint.record(Some(&error));
        if !error.retryable || error.is_final() || attempt >= retry.max_attempts {
            return Err((error, attempt));
        }
        let mut wait = retry.backoff(attempt, fastrand::f64());
        if let Some(asked) = error.retry_after {
            if asked > retry.max_backoff {
                return Err((error, attempt));
            }
            wait = wait.max(asked);
        }
        if Instant::now() + wait >= deadline || !lock(&model.budget).withdraw() {
            return Err((error, attempt));
        }
        tracing::debug!(model = %model.info.id, attempt, wait_ms = wait.as_millis() as u64, kind = ?error.kind, "retrying");
        tokio::time::sleep(wait).await;
    }
}

/// What the chain tried for one call: how it was served so far, and each upstream attempt
/// with its span id in the call's trace.
pub(crate) struct Tried<'a> {
    trace: &'a crate::context::TraceContext,
    stats: crate::routing::stats::StatsConfig,
    served: ServedBy,
    attempts: Vec<Attempt>,
}

/// The error of a call that ran out of time.
pub(crate) fn total_timeout() -> Error {
    Error {
        retryable: false,
        ..Error::new(
            ErrorKind::Timeout,
            "The model is taking too long to respond. Please try a simpler query.",
        )
    }
}

/// Why a model's failure sends the request on down the chain, or `None` when it must go back
/// to the caller (their own mistake, or the gateway's refusal).
fn fallback_reason(e: &Error, content_policy: bool) -> Option<&'static str> {
    if e.source == modelgate_types::ErrorSource::Gateway {
        return None;
    }
    match e.code {
        Some("circuit_open") => return Some("circuit_open"),
        Some("no_healthy_endpoint") => return Some("unhealthy"),
        Some("context_length_exceeded") => return Some("context_window"),
        Some("content_filter") if content_policy => return Some("content_policy"),
        _ => {}
    }
    if e.source == modelgate_types::ErrorSource::Client && !e.retryable {
        return None;
    }
    Some(match e.kind {
        ErrorKind::Timeout => "timeout",
        ErrorKind::Throttling => "throttled",
        _ => "upstream_error",
    })
}

/// A rough upper estimate of the tokens a request needs: four bytes of text per token, plus
/// a little per message, plus the requested output.
pub(crate) fn estimate_tokens(request: &ChatRequest) -> u64 {
    let text_bytes = |b: &ContentBlock| -> usize {
        match b {
            ContentBlock::Text(t) => t.len(),
            ContentBlock::ToolUse(t) => t.input.to_string().len() + t.name.len(),
            ContentBlock::ToolResult(r) => r
                .content
                .iter()
                .map(|c| match c {
                    ToolResultContent::Text(t) => t.len(),
                    ToolResultContent::Json(v) => v.to_string().len(),
                    _ => 0,
                })
                .sum(),
            _ => 0,
        }
    };
    let bytes: usize = request
        .system
        .iter()
        .filter_map(|s| s.text())
        .map(str::len)
        .sum::<usize>()
        + request
            .messages
            .iter()
            .flat_map(|m| m.content.iter())
            .map(text_bytes)
            .sum::<usize>();
    let messages = request.messages.len() as u64;
    (bytes as u64).div_ceil(4) + 4 * messages + u64::from(request.inference.max_tokens.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_refusals_and_client_errors_never_fall_back() {
        let refusal = Error::refusal(ErrorKind::Throttling, "rate limit");
        assert_eq!(fallback_reason(&refusal, true), None);
        assert_eq!(fallback_reason(&Error::validation("bad"), true), None);
        let upstream = Error::upstream(ErrorKind::Throttling, "busy");
        assert_eq!(fallback_reason(&upstream, false), Some("throttled"));
    }
}
