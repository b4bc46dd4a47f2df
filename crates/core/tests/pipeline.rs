//! The pipeline's contract, on a paused clock with the in-process scripted provider: one
//! outcome per call (whole, streamed, failed, cancelled), failures that keep their attempts
//! and fallback reason, gateway refusals that never feed a breaker or fall back, and
//! content-policy fallback for streams.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use modelgate_core::resilience::{BreakerConfig, BreakerState, RetryConfig};
use modelgate_core::{
    Answer, Call, CallContext, Gateway, Layer, ModelInfo, ModelPolicy, Next, Outcome, OutcomeSink,
    ServedModel,
};
use modelgate_providers::Provider;
use modelgate_testkit::scripted::{ScriptedProvider, Step};
use modelgate_types::{
    ChatRequest, ContentBlockDelta, Error, ErrorKind, ErrorSource, Message, Role, StopReason,
    StreamEvent,
};

#[derive(Default)]
struct Capture(Mutex<Vec<Outcome>>);

impl OutcomeSink for Capture {
    fn record(&self, o: &Outcome) {
        self.0.lock().unwrap().push(o.clone());
    }
}

impl Capture {
    fn all(&self) -> Vec<Outcome> {
        self.0.lock().unwrap().clone()
    }
}

fn served(id: &str, p: &Arc<ScriptedProvider>, policy: ModelPolicy) -> ServedModel {
    ServedModel::new(
        ModelInfo {
            id: id.into(),
            owned_by: "test".into(),
            kind: "chat",
            aliases: Vec::new(),
            format: None,
        },
        "scripted",
        Arc::clone(p) as Arc<dyn Provider>,
        policy,
    )
}

fn req(model: &str) -> ChatRequest {
    ChatRequest {
        model: model.into(),
        messages: vec![Message::text(Role::User, "hi")],
        ..Default::default()
    }
}

fn gateway(capture: &Arc<Capture>, models: Vec<ServedModel>) -> Gateway {
    let g = Gateway::builder().sink(capture.clone()).build();
    g.install(models);
    g
}

#[tokio::test(start_paused = true)]
async fn every_call_records_one_outcome_whole_or_streamed() {
    let capture = Arc::new(Capture::default());
    let p = ScriptedProvider::new("hello there");
    let g = gateway(&capture, vec![served("m", &p, ModelPolicy::default())]);
    let ctx = CallContext::internal();
    g.converse(&ctx, req("m")).await.unwrap();
    let stream = g
        .converse_stream(&CallContext::internal(), req("m"))
        .await
        .unwrap();
    assert_eq!(capture.all().len(), 1, "a stream is recorded when it ends");
    let events: Vec<_> = stream.value.collect().await;
    assert!(events.iter().all(Result::is_ok));
    let all = capture.all();
    assert_eq!(all.len(), 2);
    for o in &all {
        assert_eq!(o.status, 200);
        assert_eq!(o.model_requested.as_deref(), Some("m"));
        assert_eq!(o.model_served.as_deref(), Some("m"));
        assert_eq!(o.provider.as_deref(), Some("scripted"));
        assert_eq!(o.attempts, 1);
        assert!(o.usage_complete && !o.cancelled);
        assert_eq!(o.usage.unwrap().output_tokens, 5);
        assert!(o.time_to_first_token.is_some());
    }
    assert_eq!(all[0].ctx.request_id(), ctx.request_id());
    assert!(!all[0].streamed && all[1].streamed);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_disconnects_mid_stream_is_a_cancelled_outcome_with_the_tokens_so_far() {
    let capture = Arc::new(Capture::default());
    let p = ScriptedProvider::new("x");
    p.set_default(Step::Stall);
    let g = gateway(&capture, vec![served("m", &p, ModelPolicy::default())]);
    let mut stream = g
        .converse_stream(&CallContext::internal(), req("m"))
        .await
        .unwrap()
        .value;
    // The client reads the start and the first delta, then goes away.
    assert!(matches!(
        stream.next().await,
        Some(Ok(StreamEvent::MessageStart { .. }))
    ));
    assert!(matches!(
        stream.next().await,
        Some(Ok(StreamEvent::ContentBlockDelta { .. }))
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(capture.all().is_empty());
    drop(stream);
    let all = capture.all();
    assert_eq!(all.len(), 1);
    let o = &all[0];
    assert!(o.cancelled && o.streamed);
    assert_eq!(o.status, 499);
    assert!(o.error.is_none());
    let usage = o.usage.unwrap();
    assert_eq!((usage.input_tokens, usage.output_tokens), (10, 1));
    assert!(!o.usage_complete);
    assert!(o.duration >= Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_fails_midway_records_the_failure_and_its_full_duration() {
    let capture = Arc::new(Capture::default());
    let p = ScriptedProvider::new("x");
    p.set_default(Step::Cut("partial".into()));
    let g = gateway(&capture, vec![served("m", &p, ModelPolicy::default())]);
    let mut stream = g
        .converse_stream(&CallContext::internal(), req("m"))
        .await
        .unwrap()
        .value;
    let _start = stream.next().await;
    let _partial = stream.next().await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(matches!(stream.next().await, Some(Err(_))));
    let o = capture.all().pop().unwrap();
    assert_eq!(o.status, 503);
    assert_eq!(o.error.unwrap().kind, ErrorKind::ServiceUnavailable);
    assert!(o.duration >= Duration::from_secs(7), "{:?}", o.duration);
    assert!(!o.cancelled);
}

#[tokio::test(start_paused = true)]
async fn a_failed_call_keeps_its_attempts_and_fallback_reason() {
    let capture = Arc::new(Capture::default());
    let big = ScriptedProvider::new("x");
    let small = ScriptedProvider::new("y");
    big.set_default(Step::error(ErrorKind::ServiceUnavailable));
    small.set_default(Step::error(ErrorKind::ServiceUnavailable));
    let policy = ModelPolicy {
        fallbacks: vec!["small".into()],
        ..Default::default()
    };
    let g = gateway(
        &capture,
        vec![
            served("big", &big, policy),
            served("small", &small, ModelPolicy::default()),
        ],
    );
    let ctx = CallContext::internal();
    let e = g.converse(&ctx, req("big")).await.unwrap_err();
    assert_eq!(e.status(), 503);
    let o = capture.all().pop().unwrap();
    assert_eq!(o.attempts, 6, "three on each model");
    assert_eq!(o.fallback_reason, Some("upstream_error"));
    assert_eq!(o.status, 503);
    // The HTTP layer reads the same record for `x-modelgate-attempts` on the error.
    let served = ctx.served().unwrap();
    assert_eq!(
        (served.attempts, served.fallback_reason),
        (6, Some("upstream_error"))
    );
}

/// A stand-in for the policy layers to come (rate limits, budgets, guardrails): refuses
/// every call with the gateway's own 429.
struct Limit;

#[async_trait]
impl Layer for Limit {
    async fn call(&self, _call: &mut Call, _next: Next<'_>) -> Result<Answer, Error> {
        Err(
            Error::refusal(ErrorKind::Throttling, "rate limit of key k exceeded")
                .with_retry_after(Some(Duration::from_secs(1))),
        )
    }
}

#[tokio::test(start_paused = true)]
async fn a_gateway_refusal_never_reaches_the_chain_feeds_a_breaker_or_falls_back() {
    // A refusal made in front of the chain: no provider call, the caller sees the 429.
    let capture = Arc::new(Capture::default());
    let p = ScriptedProvider::new("x");
    let g = Gateway::builder()
        .sink(capture.clone())
        .outer_layer(Arc::new(Limit))
        .build();
    g.install(vec![served("m", &p, ModelPolicy::default())]);
    let e = g
        .converse(&CallContext::internal(), req("m"))
        .await
        .unwrap_err();
    assert_eq!((e.status(), e.source), (429, ErrorSource::Gateway));
    assert_eq!(p.calls(), 0);
    let o = capture.all().pop().unwrap();
    assert_eq!((o.status, o.attempts), (429, 0));
    assert_eq!(o.error.unwrap().source, ErrorSource::Gateway);

    // A refusal that comes back from inside the chain (a per-model limit) is final too: one
    // attempt, no fallback, and the breaker stays closed however often it happens.
    let capture = Arc::new(Capture::default());
    let primary = ScriptedProvider::new("x");
    let backup = ScriptedProvider::new("y");
    primary.set_default(Step::Fail(Error::refusal(
        ErrorKind::Throttling,
        "model limit",
    )));
    let policy = ModelPolicy {
        fallbacks: vec!["backup".into()],
        breaker: BreakerConfig {
            min_requests: 2,
            ..Default::default()
        },
        retry: RetryConfig::default(),
        ..Default::default()
    };
    let g = gateway(
        &capture,
        vec![
            served("primary", &primary, policy),
            served("backup", &backup, ModelPolicy::default()),
        ],
    );
    for _ in 0..20 {
        let e = g
            .converse(&CallContext::internal(), req("primary"))
            .await
            .unwrap_err();
        assert_eq!(e.status(), 429);
    }
    assert_eq!(primary.calls(), 20, "never retried");
    assert_eq!(backup.calls(), 0, "never a fallback");
    assert!(capture.all().iter().all(|o| o.fallback_reason.is_none()));
    let status = g.endpoint_status();
    let primary_status = status.iter().find(|s| s.model == "primary").unwrap();
    assert_eq!(primary_status.breaker, BreakerState::Closed);
    assert_eq!(primary_status.window_failures, 0);
}

#[tokio::test(start_paused = true)]
async fn content_policy_fallback_applies_to_streams() {
    let capture = Arc::new(Capture::default());
    let strict = ScriptedProvider::new("x");
    let lenient = ScriptedProvider::new("the lenient answer");
    strict.set_default(Step::AnswerWith(String::new(), StopReason::ContentFiltered));
    let policy = ModelPolicy {
        fallbacks: vec!["lenient".into()],
        fallback_on_content_policy: true,
        ..Default::default()
    };
    let g = gateway(
        &capture,
        vec![
            served("strict", &strict, policy),
            served("lenient", &lenient, ModelPolicy::default()),
        ],
    );
    let s = g
        .converse_stream(&CallContext::internal(), req("strict"))
        .await
        .unwrap();
    assert_eq!(
        (s.served_by.as_str(), s.fallback_reason),
        ("lenient", Some("content_policy"))
    );
    let text: String = s
        .value
        .filter_map(|e| async move {
            match e.unwrap() {
                StreamEvent::ContentBlockDelta {
                    delta: ContentBlockDelta::Text(t),
                    ..
                } => Some(t),
                _ => None,
            }
        })
        .collect()
        .await;
    assert_eq!(text, "the lenient answer");
    assert_eq!((strict.calls(), lenient.calls()), (1, 1));
    let o = capture.all().pop().unwrap();
    assert_eq!(o.fallback_reason, Some("content_policy"));
    assert_eq!(o.model_served.as_deref(), Some("lenient"));
}

/// A chat provider without tool use (like the embedded model) that records what it was sent.
struct NoTools(Arc<ScriptedProvider>, Mutex<Vec<ChatRequest>>);

#[async_trait]
impl Provider for NoTools {
    fn capabilities(&self) -> modelgate_providers::Capabilities {
        modelgate_providers::Capabilities {
            tools: false,
            ..modelgate_providers::Capabilities::upstream(modelgate_providers::ModelKind::Chat)
        }
    }

    async fn converse_stream(
        &self,
        request: ChatRequest,
    ) -> Result<modelgate_providers::ChatStream, Error> {
        self.1.lock().unwrap().push(request.clone());
        self.0.converse_stream(request).await
    }

    async fn count_tokens(&self, request: &ChatRequest) -> Result<u32, Error> {
        self.0.count_tokens(request).await
    }
}

#[tokio::test(start_paused = true)]
async fn tools_forbidden_by_tool_choice_none_are_dropped_for_a_model_without_tool_use() {
    use modelgate_types::{Tool, ToolChoice, ToolConfig, ToolSpec};
    let provider = Arc::new(NoTools(
        ScriptedProvider::new("plain text"),
        Mutex::new(Vec::new()),
    ));
    let g = Gateway::new();
    g.install(vec![ServedModel::new(
        ModelInfo {
            id: "small".into(),
            owned_by: "test".into(),
            kind: "chat",
            aliases: Vec::new(),
            format: None,
        },
        "local",
        Arc::clone(&provider) as Arc<dyn Provider>,
        ModelPolicy::default(),
    )]);
    let with_tools = |choice| ChatRequest {
        tools: Some(ToolConfig {
            tools: vec![Tool::ToolSpec(ToolSpec {
                name: "get_weather".into(),
                description: None,
                input_schema: serde_json::json!({"json": {"type": "object"}}),
            })],
            tool_choice: choice,
        }),
        ..req("small")
    };
    let r = g
        .converse(&CallContext::internal(), with_tools(Some(ToolChoice::None)))
        .await
        .unwrap();
    assert_eq!(r.value.message.joined_text(), "plain text");
    assert!(
        provider.1.lock().unwrap()[0].tools.is_none(),
        "dropped, not sent"
    );
    // Any other choice still needs tool use: refused as before, nothing sent.
    let e = g
        .converse(&CallContext::internal(), with_tools(None))
        .await
        .unwrap_err();
    assert!(
        e.message.contains("does not support tool use"),
        "{}",
        e.message
    );
    assert_eq!(provider.1.lock().unwrap().len(), 1);
}
