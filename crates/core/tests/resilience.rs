//! Fault injection through the whole pipeline on a paused clock: retries with backoff and
//! jitter, `Retry-After`, the retry budget, timeouts, the circuit breaker, health checks,
//! fallback chains and streams, against the in-process scripted provider.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use modelgate_core::resilience::{BreakerState, RetryConfig, TimeoutConfig};
use modelgate_core::{CallContext, Gateway, ModelInfo, ModelPolicy, ServedModel};
use modelgate_providers::Provider;
use modelgate_testkit::scripted::{ScriptedProvider, Step};
use modelgate_types::{
    ChatRequest, ContentBlock, ContentBlockDelta, Error, ErrorKind, Message, Role, StopReason,
    StreamEvent,
};
use tokio::time::Instant;

fn info(id: &str) -> ModelInfo {
    ModelInfo {
        id: id.into(),
        owned_by: "test".into(),
        kind: "chat",
        aliases: Vec::new(),
        format: None,
    }
}

fn served(
    id: &str,
    endpoints: &[(&str, &Arc<ScriptedProvider>)],
    policy: ModelPolicy,
) -> ServedModel {
    ServedModel {
        info: info(id),
        endpoints: endpoints
            .iter()
            .map(|(name, p)| (name.to_string(), Arc::clone(p) as Arc<dyn Provider>))
            .collect(),
        policy,
    }
}

fn ctx() -> CallContext {
    CallContext::internal()
}

fn req(model: &str, text: &str) -> ChatRequest {
    ChatRequest {
        model: model.into(),
        messages: vec![Message::text(Role::User, text)],
        ..Default::default()
    }
}

fn text(r: &modelgate_types::ChatResponse) -> String {
    match &r.message.content[0] {
        ContentBlock::Text(t) => t.clone(),
        other => panic!("not text: {other:?}"),
    }
}

fn once() -> ModelPolicy {
    ModelPolicy {
        retry: RetryConfig {
            max_attempts: 1,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn throttled(after: Option<Duration>) -> Step {
    Step::Fail(
        Error::new(ErrorKind::Throttling, "slow down")
            .from_provider()
            .with_retry_after(after),
    )
}

#[tokio::test(start_paused = true)]
async fn throttled_twice_then_answers_after_three_attempts_with_backoff_and_jitter() {
    let p = ScriptedProvider::new("hello");
    p.push([throttled(None), throttled(None)]);
    let g = Gateway::new();
    g.install(vec![served("m", &[("up", &p)], ModelPolicy::default())]);
    let r = g.converse(&ctx(), req("m", "hi")).await.unwrap();
    assert_eq!(text(&r.value), "hello");
    assert_eq!(
        (r.attempts, r.served_by.as_str(), r.fallback_reason),
        (3, "m", None)
    );
    let t = p.call_times();
    let (first, second) = (t[1] - t[0], t[2] - t[1]);
    // initial 100 ms, factor 2, bounded jitter of at most 20 %.
    assert!(
        first >= Duration::from_millis(100) && first <= Duration::from_millis(120),
        "{first:?}"
    );
    assert!(
        second >= Duration::from_millis(200) && second <= Duration::from_millis(240),
        "{second:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_from_the_upstream_is_honoured() {
    let p = ScriptedProvider::new("ok");
    p.push([throttled(Some(Duration::from_secs(2)))]);
    let g = Gateway::new();
    g.install(vec![served("m", &[("up", &p)], ModelPolicy::default())]);
    let r = g.converse(&ctx(), req("m", "hi")).await.unwrap();
    assert_eq!(r.attempts, 2);
    let t = p.call_times();
    assert_eq!(t[1] - t[0], Duration::from_secs(2));

    // A wait longer than max_backoff (20 s) is not waited for: the request fails at once.
    p.push([throttled(Some(Duration::from_secs(60)))]);
    let start = Instant::now();
    let e = g
        .converse(&ctx(), req("m", "not cached"))
        .await
        .unwrap_err();
    assert_eq!(e.status(), 429);
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn client_and_credential_errors_get_exactly_one_attempt() {
    for kind in [
        ErrorKind::Validation,
        ErrorKind::Unauthenticated,
        ErrorKind::AccessDenied,
    ] {
        let p = ScriptedProvider::new("unused");
        p.push([Step::error(kind)]);
        let g = Gateway::new();
        g.install(vec![served("m", &[("up", &p)], ModelPolicy::default())]);
        let e = g.converse(&ctx(), req("m", "hi")).await.unwrap_err();
        assert_eq!(e.kind, kind);
        assert_eq!(p.calls(), 1, "{kind:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_retry_budget_stops_retry_storms() {
    let p = ScriptedProvider::new("unused");
    p.set_default(Step::error(ErrorKind::ServiceUnavailable));
    let policy = ModelPolicy {
        retry: RetryConfig {
            budget_burst: 2,
            budget_ratio: 0.0,
            ..Default::default()
        },
        breaker: modelgate_core::resilience::BreakerConfig {
            enabled: false,
            ..Default::default()
        },
        ..Default::default()
    };
    let g = Gateway::new();
    g.install(vec![served("m", &[("up", &p)], policy)]);
    for _ in 0..5 {
        assert_eq!(
            g.converse(&ctx(), req("m", "hi"))
                .await
                .unwrap_err()
                .status(),
            503
        );
    }
    // Five first attempts and only the two retries the budget held.
    assert_eq!(p.calls(), 7);
}

#[tokio::test(start_paused = true)]
async fn breaker_opens_at_the_threshold_half_opens_after_the_cool_down_and_closes_on_recovery() {
    let p = ScriptedProvider::new("recovered");
    p.set_default(Step::error(ErrorKind::ServiceUnavailable));
    let g = Gateway::new();
    g.install(vec![served("m", &[("up", &p)], once())]);
    for _ in 0..10 {
        assert_eq!(
            g.converse(&ctx(), req("m", "hi"))
                .await
                .unwrap_err()
                .status(),
            503
        );
    }
    assert_eq!(p.calls(), 10);
    assert_eq!(g.endpoint_status()[0].breaker, BreakerState::Open);
    // Open: the upstream is not touched, and the caller is told when to come back.
    for _ in 0..20 {
        let e = g.converse(&ctx(), req("m", "hi")).await.unwrap_err();
        assert_eq!((e.status(), e.code), (503, Some("circuit_open")));
        assert!(e.retry_after.is_some_and(|w| w <= Duration::from_secs(30)));
    }
    assert_eq!(p.calls(), 10, "an open breaker lets nothing through");

    // Still failing after the cool-down: the probe fails and it opens again.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(g.endpoint_status()[0].breaker, BreakerState::HalfOpen);
    assert_eq!(
        g.converse(&ctx(), req("m", "hi")).await.unwrap_err().code,
        None
    );
    assert_eq!(p.calls(), 11);
    assert_eq!(g.endpoint_status()[0].breaker, BreakerState::Open);

    // The upstream recovers: probes (one request in ten) succeed and three of them close it.
    p.set_default(Step::Answer("recovered".into()));
    tokio::time::sleep(Duration::from_secs(30)).await;
    let mut answered = 0;
    let mut requests = 0;
    while g.endpoint_status()[0].breaker != BreakerState::Closed {
        requests += 1;
        assert!(requests <= 30, "the breaker never closed");
        // Requests the half-open breaker turns away get the cached answer of the first probe.
        match g.converse(&ctx(), req("m", "hi")).await {
            Ok(r) if r.served_by == "m" => answered += 1,
            Ok(r) => assert_eq!(r.served_by, "cache"),
            Err(e) => assert_eq!(e.code, Some("circuit_open")),
        }
    }
    assert_eq!((answered, requests), (3, 21));
    for _ in 0..10 {
        assert_eq!(
            text(&g.converse(&ctx(), req("m", "hi")).await.unwrap().value),
            "recovered"
        );
    }
    assert_eq!(g.endpoint_status()[0].times_opened, 2);
}

#[tokio::test(start_paused = true)]
async fn open_breaker_sends_traffic_straight_to_the_fallback() {
    let primary = ScriptedProvider::new("primary");
    let backup = ScriptedProvider::new("backup");
    primary.set_default(Step::error(ErrorKind::ServiceUnavailable));
    let g = Gateway::new();
    let mut policy = once();
    policy.fallbacks = vec!["small".into()];
    g.install(vec![
        served("big", &[("a", &primary)], policy),
        served("small", &[("b", &backup)], ModelPolicy::default()),
    ]);
    for _ in 0..10 {
        let r = g.converse(&ctx(), req("big", "hi")).await.unwrap();
        assert_eq!(
            (r.served_by.as_str(), r.fallback_reason),
            ("small", Some("upstream_error"))
        );
    }
    for _ in 0..10 {
        let r = g.converse(&ctx(), req("big", "hi")).await.unwrap();
        assert_eq!(
            (r.served_by.as_str(), r.fallback_reason),
            ("small", Some("circuit_open"))
        );
        assert_eq!(r.value.model, "small");
    }
    assert_eq!(primary.calls(), 10);
    assert_eq!(backup.calls(), 20);
}

#[tokio::test(start_paused = true)]
async fn health_checks_take_a_dead_endpoint_out_and_put_it_back() {
    let a = ScriptedProvider::new("a");
    let b = ScriptedProvider::new("b");
    let g = Gateway::new();
    g.install(vec![served(
        "m",
        &[("a", &a), ("b", &b)],
        ModelPolicy::default(),
    )]);
    for _ in 0..4 {
        g.converse(&ctx(), req("m", "hi")).await.unwrap();
    }
    assert_eq!(
        (a.calls(), b.calls()),
        (2, 2),
        "round robin over healthy endpoints"
    );

    a.set_healthy(false);
    // Checks every 30 s; the third failure in a row takes it out.
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert!(g.endpoint_status()[0].health.healthy);
    tokio::time::sleep(Duration::from_secs(30)).await;
    let status = &g.endpoint_status()[0];
    assert_eq!(
        (status.provider.as_str(), status.health.healthy),
        ("a", false)
    );
    assert_eq!(status.health.consecutive_failures, 3);
    for _ in 0..10 {
        assert_eq!(
            text(&g.converse(&ctx(), req("m", "hi")).await.unwrap().value),
            "b"
        );
    }
    assert_eq!(a.calls(), 2);

    a.set_healthy(true);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(g.endpoint_status()[0].health.healthy);
    for _ in 0..4 {
        g.converse(&ctx(), req("m", "hi")).await.unwrap();
    }
    assert_eq!(a.calls(), 4, "back in the rotation");
    assert!(a.health_checks() >= 4);

    // Every endpoint out: the model fails fast without calling anything.
    a.set_healthy(false);
    b.set_healthy(false);
    tokio::time::sleep(Duration::from_secs(91)).await;
    let e = g
        .converse(&ctx(), req("m", "never asked"))
        .await
        .unwrap_err();
    assert_eq!((e.status(), e.code), (503, Some("no_healthy_endpoint")));
    assert_eq!(a.calls() + b.calls(), 18);
}

#[tokio::test(start_paused = true)]
async fn fallback_chain_walks_to_the_next_model_then_the_cached_then_the_static_answer() {
    let primary = ScriptedProvider::new("primary answer");
    let backup = ScriptedProvider::new("backup answer");
    let policy = ModelPolicy {
        fallbacks: vec!["small".into()],
        static_response: Some("We are busy; please try again soon.".into()),
        fallback_cache: true,
        ..Default::default()
    };
    let g = Gateway::new();
    g.install(vec![
        served("big", &[("a", &primary)], policy),
        served("small", &[("b", &backup)], ModelPolicy::default()),
    ]);
    let r = g
        .converse(&ctx(), req("big", "question one"))
        .await
        .unwrap();
    assert_eq!(
        (r.served_by.as_str(), text(&r.value).as_str()),
        ("big", "primary answer")
    );

    primary.set_default(Step::error(ErrorKind::ServiceUnavailable));
    let r = g
        .converse(&ctx(), req("big", "question two"))
        .await
        .unwrap();
    assert_eq!(
        (r.served_by.as_str(), r.fallback_reason),
        ("small", Some("upstream_error"))
    );
    assert_eq!(text(&r.value), "backup answer");
    assert_eq!(r.attempts, 4, "three on the primary, one on the fallback");

    backup.set_default(Step::error(ErrorKind::Throttling));
    let r = g
        .converse(&ctx(), req("big", "question one"))
        .await
        .unwrap();
    assert_eq!(
        (r.served_by.as_str(), r.fallback_reason),
        ("cache", Some("upstream_error"))
    );
    assert_eq!(text(&r.value), "primary answer");

    let r = g
        .converse(&ctx(), req("big", "never asked before"))
        .await
        .unwrap();
    assert_eq!(r.served_by, "static");
    assert_eq!(text(&r.value), "We are busy; please try again soon.");

    // The same levels for a stream.
    let s = g
        .converse_stream(&ctx(), req("big", "never asked before"))
        .await
        .unwrap();
    assert_eq!(s.served_by, "static");
    let events: Vec<StreamEvent> = s.value.map(|e| e.unwrap()).collect().await;
    assert!(events.iter().any(|e| matches!(e, StreamEvent::ContentBlockDelta { delta: ContentBlockDelta::Text(t), .. } if t.contains("busy"))));

    // Without a static answer the caller gets the last error.
    let bare = Gateway::new();
    let p = ScriptedProvider::new("x");
    p.set_default(Step::error(ErrorKind::ServiceUnavailable));
    bare.install(vec![served("m", &[("a", &p)], ModelPolicy::default())]);
    assert_eq!(
        bare.converse(&ctx(), req("m", "hi"))
            .await
            .unwrap_err()
            .status(),
        503
    );
}

#[tokio::test(start_paused = true)]
async fn long_input_goes_to_a_model_with_a_larger_context_window() {
    let short = ScriptedProvider::new("short");
    let long = ScriptedProvider::new("long");
    let policy = ModelPolicy {
        context_window: Some(100),
        fallbacks: vec!["long".into()],
        ..Default::default()
    };
    let big = ModelPolicy {
        context_window: Some(100_000),
        ..Default::default()
    };
    let g = Gateway::new();
    g.install(vec![
        served("short", &[("a", &short)], policy),
        served("long", &[("b", &long)], big),
    ]);
    let r = g.converse(&ctx(), req("short", "hi")).await.unwrap();
    assert_eq!(r.served_by, "short");
    let r = g
        .converse(&ctx(), req("short", &"word ".repeat(200)))
        .await
        .unwrap();
    assert_eq!(
        (r.served_by.as_str(), r.fallback_reason),
        ("long", Some("context_window"))
    );
    assert_eq!(short.calls(), 1);
    // Too long for every model in the chain: the caller's mistake, a 400.
    let e = g
        .converse(&ctx(), req("short", &"word ".repeat(200_000)))
        .await
        .unwrap_err();
    assert_eq!((e.status(), e.code), (400, Some("context_length_exceeded")));
}

#[tokio::test(start_paused = true)]
async fn content_policy_refusals_fall_back_only_when_configured() {
    let strict = ScriptedProvider::new("unused");
    strict.set_default(Step::AnswerWith(String::new(), StopReason::ContentFiltered));
    let other = ScriptedProvider::new("other answer");
    let policy = ModelPolicy {
        fallbacks: vec!["other".into()],
        ..Default::default()
    };
    let mut opted_in = policy.clone();
    opted_in.fallback_on_content_policy = true;
    let g = Gateway::new();
    g.install(vec![
        served("strict", &[("a", &strict)], policy),
        served("strict-opt-in", &[("a", &strict)], opted_in),
        served("other", &[("b", &other)], ModelPolicy::default()),
    ]);
    let r = g.converse(&ctx(), req("strict", "hi")).await.unwrap();
    assert_eq!(
        (r.served_by.as_str(), r.value.stop_reason),
        ("strict", StopReason::ContentFiltered)
    );
    let r = g
        .converse(&ctx(), req("strict-opt-in", "hi"))
        .await
        .unwrap();
    assert_eq!(
        (r.served_by.as_str(), r.fallback_reason),
        ("other", Some("content_policy"))
    );
}

#[tokio::test(start_paused = true)]
async fn streams_are_retried_before_their_first_output_and_never_after() {
    let p = ScriptedProvider::new("whole answer");
    p.push([Step::Cut(String::new())]);
    let g = Gateway::new();
    g.install(vec![served("m", &[("up", &p)], ModelPolicy::default())]);
    let s = g.converse_stream(&ctx(), req("m", "hi")).await.unwrap();
    assert_eq!(s.attempts, 2);
    let events: Vec<_> = s.value.collect().await;
    assert!(events.iter().all(Result::is_ok));

    p.push([Step::Cut("partial".into())]);
    let s = g.converse_stream(&ctx(), req("m", "hi")).await.unwrap();
    let events: Vec<_> = s.value.collect().await;
    let last = events.last().unwrap();
    assert_eq!(
        last.as_ref().unwrap_err().status(),
        503,
        "a mid-stream failure ends in an error"
    );
    assert!(events.iter().any(|e| matches!(e, Ok(StreamEvent::ContentBlockDelta { delta: ContentBlockDelta::Text(t), .. }) if t == "partial")));
    assert_eq!(p.calls(), 3, "no retry once output reached the caller");
}

#[tokio::test(start_paused = true)]
async fn timeouts_total_first_token_and_idle() {
    let p = ScriptedProvider::new("late");
    let short = ModelPolicy {
        timeouts: TimeoutConfig {
            total: Duration::from_secs(10),
            ..Default::default()
        },
        ..Default::default()
    };
    let g = Gateway::new();
    g.install(vec![served("m", &[("up", &p)], short)]);
    p.push([Step::Slow(
        Duration::from_secs(60),
        Box::new(Step::Answer("late".into())),
    )]);
    let start = Instant::now();
    let e = g.converse(&ctx(), req("m", "hi")).await.unwrap_err();
    assert_eq!(e.status(), 408);
    assert_eq!(
        e.message,
        "The model is taking too long to respond. Please try a simpler query."
    );
    assert_eq!(start.elapsed(), Duration::from_secs(10));

    // A stream that starts too slowly is retried; one that stalls ends with a timeout.
    let p = ScriptedProvider::new("prompt answer");
    let g = Gateway::new();
    g.install(vec![served("m", &[("up", &p)], ModelPolicy::default())]);
    p.push([Step::Slow(
        Duration::from_secs(45),
        Box::new(Step::Answer("slow".into())),
    )]);
    let start = Instant::now();
    let s = g.converse_stream(&ctx(), req("m", "hi")).await.unwrap();
    assert_eq!(s.attempts, 2);
    assert!(
        start.elapsed() >= Duration::from_secs(30) && start.elapsed() < Duration::from_secs(31)
    );
    assert!(s.value.collect::<Vec<_>>().await.iter().all(Result::is_ok));

    p.push([Step::Stall]);
    let s = g.converse_stream(&ctx(), req("m", "hi")).await.unwrap();
    let start = Instant::now();
    let events: Vec<_> = s.value.collect().await;
    assert_eq!(start.elapsed(), Duration::from_secs(30));
    let e = events.last().unwrap().as_ref().unwrap_err();
    assert_eq!(e.status(), 408);
    assert!(e.message.contains("idle"));
}
